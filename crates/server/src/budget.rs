//! A byte budget shared by every connection.
//!
//! Per-connection caps alone do not bound the process: 256 connections each
//! allowed 1 MiB of request buffers is 256 MiB. The budget is what keeps peak
//! RSS near its configured size whatever the number of clients: a reader
//! charges the buffer capacity it is about to fill, a worker charges the reply
//! it is about to build, and the charge is released when the bytes are gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// Requests up to this size may use the budget's headroom.
const SMALL: usize = 64 * 1024;

/// How often a blocked acquirer re-checks whether it should give up.
const POLL: Duration = Duration::from_millis(50);

/// A pool of bytes with a cap.
#[derive(Debug)]
pub(crate) struct Budget {
    cap: usize,
    used: Mutex<usize>,
    freed: Condvar,
    /// Acquirers blocked right now: a sign of memory pressure.
    waiting: AtomicUsize,
}

impl Budget {
    pub(crate) fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap,
            used: Mutex::new(0),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Bytes currently charged.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        *lock(&self.used)
    }

    /// An empty charge, to be grown.
    pub(crate) fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: Arc::clone(self),
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

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut used = lock(&self.used);
        *used = used.saturating_sub(n);
        drop(used);
        // A waker is a system call; most releases have no one to wake. A
        // waiter counts itself under the lock before it sleeps, so one
        // that missed this release's count sees the bytes freed instead.
        if self.has_waiters() {
            self.freed.notify_all();
        }
    }

    /// Waits until `n` more bytes fit, or `abort` says to stop. A request
    /// larger than the whole budget is let through once nothing else is
    /// charged, so that it cannot wait forever. Large requests may not take
    /// the last eighth of the budget: that headroom keeps small calls (a
    /// GETATTR, a NULL) flowing while big records from slow or hostile
    /// clients fill the rest.
    fn acquire(&self, n: usize, abort: &dyn Fn() -> bool) -> Option<Duration> {
        let limit = if n > SMALL {
            self.cap - self.cap / 8
        } else {
            self.cap
        };
        let start = Instant::now();
        let mut used = lock(&self.used);
        let mut counted = false;
        let result = loop {
            if *used == 0 || used.saturating_add(n) <= limit {
                *used = used.saturating_add(n);
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

    fn force(&self, n: usize) {
        let mut used = lock(&self.used);
        *used = used.saturating_add(n);
    }
}

/// Bytes charged to a [`Budget`], released on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Grows the charge by `n` bytes, waiting for room. Returns how long it
    /// waited, or `None` if `abort` stopped the wait (the charge is unchanged).
    pub(crate) fn grow(&mut self, n: usize, abort: &dyn Fn() -> bool) -> Option<Duration> {
        let waited = self.budget.acquire(n, abort)?;
        self.bytes = self.bytes.saturating_add(n);
        Some(waited)
    }

    /// Sets the charge to exactly `n` bytes without waiting. Used once a
    /// buffer's real size is known: the overshoot is bounded by the estimate
    /// error of the (few) workers, and blocking here could deadlock a worker
    /// that already holds the bytes.
    pub(crate) fn set(&mut self, n: usize) {
        if n > self.bytes {
            self.budget.force(n - self.bytes);
        } else {
            self.budget.release(self.bytes - n);
        }
        self.bytes = n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_released_on_drop() {
        let b = Budget::new(100);
        let mut c = b.charge();
        assert!(c.grow(60, &|| false).is_some());
        assert_eq!(b.used(), 60);
        c.set(10);
        assert_eq!(b.used(), 10);
        drop(c);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn full_budget_blocks_until_abort() {
        let b = Budget::new(100);
        let mut c1 = b.charge();
        assert!(c1.grow(80, &|| false).is_some());
        let mut c2 = b.charge();
        assert!(c2.grow(30, &|| true).is_none());
        assert_eq!(b.used(), 80);
    }

    #[test]
    fn headroom_is_kept_for_small_requests() {
        let b = Budget::new(800 * 1024);
        let mut big = b.charge();
        assert!(big.grow(600 * 1024, &|| false).is_some());
        let mut big2 = b.charge();
        assert!(
            big2.grow(150 * 1024, &|| true).is_none(),
            "a large request took the headroom"
        );
        let mut small = b.charge();
        assert!(small.grow(60 * 1024, &|| true).is_some());
    }

    #[test]
    fn oversized_request_passes_alone() {
        let b = Budget::new(10);
        let mut c = b.charge();
        assert!(c.grow(50, &|| true).is_some());
    }

    #[test]
    fn waiter_wakes_when_bytes_are_freed() {
        let b = Budget::new(100);
        let mut c1 = b.charge();
        assert!(c1.grow(100, &|| false).is_some());
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || {
            let mut c2 = b2.charge();
            c2.grow(50, &|| false).is_some()
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(c1);
        assert!(t.join().unwrap_or(false));
    }
}
