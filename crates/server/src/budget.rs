//! A byte budget shared by every connection.
//!
//! Per-connection caps alone do not bound the process: 256 connections each
//! allowed 1 MiB of request buffers is 256 MiB. The budget is what keeps peak
//! RSS near its configured size whatever the number of clients: a reader
//! charges the buffer capacity it is about to fill, a worker charges the reply
//! it is about to build, and the charge is released when the bytes are gone.
//!
//! Charges are counted per client address too, for one rule: an address
//! that holds nothing may take a reserve that addresses already holding
//! bytes may not. Clients that send calls and never read the replies fill
//! the budget; without the reserve another client's 1 MiB READ waited
//! until they were found stalled and closed (two seconds a wave, several
//! waves for 60 such connections), while with it the newcomer is served
//! at once.
//!
//! An address is not a client, though: every guest behind QEMU's user
//! network reaches the host as 127.0.0.1. So a caller may also show that
//! its connection is proven ([`Charge::grow`]): the server's caller
//! says what that means (a client that has taken every reply it was sent),
//! and a proven connection may take the reserve too. Hoarders that read at
//! a trickle always have replies outstanding; the guest beside them on the
//! same address keeps being served from the reserve while they are found
//! and closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// Requests up to this size may use the budget's headroom.
const SMALL: usize = 64 * 1024;

/// What an address holding nothing may take beyond what others may: one
/// largest READ or WRITE and its headers.
const RESERVE: usize = (1 << 20) + SMALL;

/// How often a blocked acquirer re-checks whether it should give up.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Used {
    total: usize,
    /// Bytes charged per client address (absent: none).
    by_addr: HashMap<IpAddr, usize>,
}

impl Used {
    fn add(&mut self, addr: IpAddr, n: usize) {
        self.total = self.total.saturating_add(n);
        let held = self.by_addr.entry(addr).or_insert(0);
        *held = held.saturating_add(n);
    }

    fn sub(&mut self, addr: IpAddr, n: usize) {
        self.total = self.total.saturating_sub(n);
        if let Some(held) = self.by_addr.get_mut(&addr) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.by_addr.remove(&addr);
            }
        }
    }
}

/// A pool of bytes with a cap.
#[derive(Debug)]
pub(crate) struct Budget {
    cap: usize,
    used: Mutex<Used>,
    freed: Condvar,
    /// Acquirers blocked right now: a sign of memory pressure.
    waiting: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap,
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Bytes currently charged.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        lock(&self.used).total
    }

    /// An empty charge for a client at `addr`, to be grown.
    pub(crate) fn charge(self: &Arc<Self>, addr: IpAddr) -> Charge {
        Charge {
            budget: Arc::clone(self),
            addr,
            bytes: 0,
        }
    }

    /// Whether someone is waiting for room.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Wakes blocked acquirers so that they re-check their abort condition.
    pub(crate) fn wake_all(&self) {
        self.freed.notify_all();
    }

    fn release(&self, addr: IpAddr, n: usize) {
        if n == 0 {
            return;
        }
        lock(&self.used).sub(addr, n);
        // A waker is a system call; most releases have no one to wake. A
        // waiter counts itself under the lock before it sleeps, so one
        // that missed this release's count sees the bytes freed instead.
        if self.has_waiters() {
            self.freed.notify_all();
        }
    }

    /// What a request of `n` bytes from an address holding `held` may fill
    /// the budget up to. Large requests may not take the last eighth: that
    /// headroom keeps small calls (a GETATTR, a NULL) flowing while big
    /// records from slow or hostile clients fill the rest. Nor, from an
    /// address that holds bytes already, the [`RESERVE`] before it, which
    /// is for addresses holding none and for proven connections.
    fn limit(&self, n: usize, held: usize, proven: bool) -> usize {
        if n <= SMALL {
            return self.cap;
        }
        let large = self.cap - self.cap / 8;
        if held == 0 || proven {
            large
        } else {
            // A budget too small for a reserve keeps none.
            large.saturating_sub(RESERVE).max(large / 2)
        }
    }

    /// Waits until `n` more bytes fit, or `abort` says to stop. A request
    /// larger than the whole budget is let through once nothing else is
    /// charged, so that it cannot wait forever.
    fn acquire(
        &self,
        addr: IpAddr,
        n: usize,
        proven: &dyn Fn() -> bool,
        abort: &dyn Fn() -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        let mut used = lock(&self.used);
        let mut counted = false;
        let result = loop {
            let held = used.by_addr.get(&addr).copied().unwrap_or(0);
            let fits = |proven| used.total.saturating_add(n) <= self.limit(n, held, proven);
            // `proven` may cost a system call: asked only when it decides.
            if used.total == 0 || fits(false) || (held > 0 && fits(true) && proven()) {
                used.add(addr, n);
                break Some(start.elapsed());
            }
            if abort() {
                break None;
            }
            if !counted {
                counted = true;
                self.waiting.fetch_add(1, Ordering::Relaxed);
            }
            used = match self.freed.wait_timeout(used, POLL) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        };
        if counted {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        result
    }

    fn force(&self, addr: IpAddr, n: usize) {
        lock(&self.used).add(addr, n);
    }
}

/// Bytes charged to a [`Budget`], released on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    addr: IpAddr,
    bytes: usize,
}

impl Charge {
    /// Grows the charge by `n` bytes, waiting for room. If `proven` says so
    /// when it matters, the charge may take the reserve although its
    /// address holds bytes. Returns how long it waited, or `None` if
    /// `abort` stopped the wait (the charge is unchanged).
    pub(crate) fn grow(
        &mut self,
        n: usize,
        proven: &dyn Fn() -> bool,
        abort: &dyn Fn() -> bool,
    ) -> Option<Duration> {
        let waited = self.budget.acquire(self.addr, n, proven, abort)?;
        self.bytes = self.bytes.saturating_add(n);
        Some(waited)
    }

    /// Sets the charge to exactly `n` bytes without waiting. Used once a
    /// buffer's real size is known: the overshoot is bounded by the estimate
    /// error of the (few) workers, and blocking here could deadlock a worker
    /// that already holds the bytes.
    pub(crate) fn set(&mut self, n: usize) {
        if n > self.bytes {
            self.budget.force(self.addr, n - self.bytes);
        } else {
            self.budget.release(self.addr, self.bytes - n);
        }
        self.bytes = n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.addr, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const NO: &dyn Fn() -> bool = &|| false;

    #[test]
    fn charges_are_released_on_drop() {
        let b = Budget::new(100);
        let mut c = b.charge(A);
        assert!(c.grow(60, NO, &|| false).is_some());
        assert_eq!(b.used(), 60);
        c.set(10);
        assert_eq!(b.used(), 10);
        drop(c);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn full_budget_blocks_until_abort() {
        let b = Budget::new(100);
        let mut c1 = b.charge(A);
        assert!(c1.grow(80, NO, &|| false).is_some());
        let mut c2 = b.charge(A);
        assert!(c2.grow(30, NO, &|| true).is_none());
        assert_eq!(b.used(), 80);
    }

    #[test]
    fn headroom_is_kept_for_small_requests() {
        let b = Budget::new(800 * 1024);
        let mut big = b.charge(A);
        assert!(big.grow(600 * 1024, NO, &|| false).is_some());
        let mut big2 = b.charge(A);
        assert!(
            big2.grow(150 * 1024, NO, &|| true).is_none(),
            "a large request took the headroom"
        );
        let mut small = b.charge(A);
        assert!(small.grow(60 * 1024, NO, &|| true).is_some());
    }

    #[test]
    fn oversized_request_passes_alone() {
        let b = Budget::new(10);
        let mut c = b.charge(A);
        assert!(c.grow(50, NO, &|| true).is_some());
    }

    #[test]
    fn waiter_wakes_when_bytes_are_freed() {
        let b = Budget::new(100);
        let mut c1 = b.charge(A);
        assert!(c1.grow(100, NO, &|| false).is_some());
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || {
            let mut c2 = b2.charge(A);
            c2.grow(50, NO, &|| false).is_some()
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(c1);
        assert!(t.join().unwrap_or(false));
    }

    const MIB: usize = 1 << 20;

    /// 1 MiB charges from `addr`, unproven, until no more fit.
    fn fill(b: &Arc<Budget>, addr: IpAddr) -> Vec<Charge> {
        let mut hoard = Vec::new();
        loop {
            let mut c = b.charge(addr);
            if c.grow(MIB, NO, &|| true).is_none() {
                return hoard;
            }
            hoard.push(c);
        }
    }

    #[test]
    fn an_address_holding_nothing_may_take_the_reserve() {
        let b = Budget::new(10 * MIB);
        // One address fills what it may with 1 MiB calls...
        let hoard = fill(&b, A);
        assert!(b.used() <= 10 * MIB - 10 * MIB / 8 - RESERVE + MIB);
        // ... and another still gets one at once.
        let mut newcomer = b.charge(B);
        assert!(
            newcomer.grow(MIB, NO, &|| true).is_some(),
            "the reserve was taken"
        );
        // Having one, it waits like everyone else.
        let mut second = b.charge(B);
        assert!(second.grow(MIB, NO, &|| true).is_none());
        drop(hoard);
        assert_eq!(b.used(), MIB);
    }

    #[test]
    fn a_proven_caller_may_take_the_reserve_on_a_busy_address() {
        let b = Budget::new(10 * MIB);
        let _hoard = fill(&b, A);
        // Asked only when it decides: a small call fits without it.
        let asked = std::cell::Cell::new(0);
        let proven = || {
            asked.set(asked.get() + 1);
            true
        };
        let mut small = b.charge(A);
        assert!(small.grow(4096, &proven, &|| true).is_some());
        assert_eq!(asked.get(), 0, "asked for a call that fits anyway");
        drop(small);
        // Unproven, a large one waits; proven, it takes the reserve.
        let mut unproven = b.charge(A);
        assert!(unproven.grow(MIB, NO, &|| true).is_none());
        let mut guest = b.charge(A);
        assert!(guest.grow(MIB, &proven, &|| true).is_some());
        assert_eq!(asked.get(), 1);
        // The reserve is then spent, for the proven too.
        let mut again = b.charge(A);
        assert!(again.grow(MIB, &proven, &|| true).is_none());
    }
}
