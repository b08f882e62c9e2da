//! Keeping a busy connection's reader on the CPU its client runs on.
//!
//! A client that waits for each answer and the reader of its connection
//! wake each other twice per call. When the two sit on different CPUs,
//! each wake-up is an interrupt to the other CPU, which in a VM whose idle
//! vCPUs halt costs more than the call itself; on one CPU it is a plain
//! switch, since only one of the pair runs at a time. With several clients
//! at work, the scheduler leaves the pairs wherever earlier work put them,
//! and which pairs it splits decides the rate (`docs/benchmarks.md`: four
//! clients' GETATTR rate varied from 60,000 to 100,000 a second between
//! runs, from where the pairs landed).
//!
//! The socket says where its client is: `SO_INCOMING_CPU` is the CPU that
//! processed the connection's latest packet, which for loopback and TAP
//! traffic is the sender's own CPU (a QEMU or vhost thread for a guest).
//! While other connections are busy, a reader moves itself there. A lone
//! client is better served the other way round, by a reader polling on
//! another CPU ([`crate::linger`]): pinned, one client's GETATTRs fell
//! from about 42,000 to 20,000 a second. So a reader whose client is alone
//! goes back to the CPUs it started with.
//!
//! Only the reader's own thread moves; workers stay free, and an affinity
//! the kernel refuses (a CPU outside the process's cpuset) is not retried.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::net::sockopt::socket_incoming_cpu;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// How long a pinned reader stays pinned after it last saw other
/// connections at work. "Others at work" is judged from the latest call
/// on any connection, which at times is this connection's own even with
/// several clients busy; without this, such a reader would move back and
/// forth.
const STAY: Duration = Duration::from_millis(20);

/// How often a crowded reader asks its socket where the client is: a
/// `getsockopt` on every call would add a system call to each GETATTR,
/// and a client that moves is followed within this time anyway.
const LOOK_EVERY: Duration = Duration::from_millis(1);

/// The server-wide view: which CPUs readers may use, and how many are
/// pinned to each.
///
/// A CPU takes at most its share of the readers that are following
/// (rounded up). A pinned reader anchors its client too: waking it, the
/// reader pulls the client to its own CPU, so without a share three of
/// four pairs could stay on one CPU of two, which is what the benchmark's
/// CPU-heavy READDIRPLUS phase showed (one client finishing three times
/// later than another). A reader over the share stays free and lets the
/// scheduler place it.
#[derive(Debug)]
pub(crate) struct Placement {
    /// The CPUs readers start with (`None`: following is off).
    home: Option<CpuSet>,
    cpus: usize,
    /// Readers that saw others at work within [`STAY`].
    following: AtomicUsize,
    /// Readers pinned to each CPU, by CPU number.
    pinned: Box<[AtomicUsize]>,
}

impl Placement {
    /// Following on or off; the calling thread's CPUs are every reader's
    /// home (readers are spawned from threads that keep it).
    pub(crate) fn new(enabled: bool) -> Placement {
        let home = enabled
            .then(|| sched_getaffinity(None).ok())
            .flatten()
            // With one CPU allowed there is nowhere to move.
            .filter(|set| set.count() > 1);
        let top = home
            .as_ref()
            .and_then(|h| (0..CpuSet::MAX_CPU).rev().find(|&c| h.is_set(c)))
            .map_or(0, |c| c + 1);
        Placement {
            cpus: home.as_ref().map_or(1, |h| h.count() as usize),
            home,
            following: AtomicUsize::new(0),
            pinned: (0..top).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Whether one more reader may be pinned to `cpu`.
    fn has_room(&self, cpu: usize) -> bool {
        let share = self.following.load(Ordering::Relaxed).div_ceil(self.cpus);
        self.pinned
            .get(cpu)
            .is_some_and(|n| n.load(Ordering::Relaxed) < share.max(1))
    }
}

/// One reader thread's placement.
#[derive(Debug)]
pub(crate) struct Follow<'a> {
    place: &'a Placement,
    /// The CPU the thread is pinned to, if any.
    pinned: Option<usize>,
    /// When the thread last saw other connections at work; `Some` while
    /// it counts in [`Placement::following`].
    crowded_at: Option<Instant>,
    /// When the thread last asked its socket for the client's CPU.
    looked_at: Option<Instant>,
}

impl<'a> Follow<'a> {
    /// Placement for the calling thread, a connection's reader.
    pub(crate) fn new(place: &'a Placement) -> Follow<'a> {
        Follow {
            place,
            pinned: None,
            crowded_at: None,
            looked_at: None,
        }
    }

    /// Moves the calling thread next to the client of `sock` when
    /// `crowded` (other connections are at work), and back home when it
    /// has not been for a while.
    pub(crate) fn update(&mut self, sock: BorrowedFd<'_>, crowded: bool) {
        if self.place.home.is_none() {
            return;
        }
        self.update_at(sock, crowded, Instant::now());
    }

    fn update_at(&mut self, sock: BorrowedFd<'_>, crowded: bool, now: Instant) {
        if !crowded {
            let stale = self
                .crowded_at
                .is_some_and(|t| now.saturating_duration_since(t) >= STAY);
            if stale {
                self.crowded_at = None;
                self.place.following.fetch_sub(1, Ordering::Relaxed);
                self.unpin();
            }
            return;
        }
        if self.crowded_at.replace(now).is_none() {
            self.place.following.fetch_add(1, Ordering::Relaxed);
        }
        if self
            .looked_at
            .is_some_and(|t| now.saturating_duration_since(t) < LOOK_EVERY)
        {
            return;
        }
        self.looked_at = Some(now);
        let Ok(cpu) = socket_incoming_cpu(sock) else {
            return;
        };
        let Ok(cpu) = usize::try_from(cpu) else {
            return;
        };
        if self.pinned == Some(cpu) {
            return;
        }
        let home_has = self
            .place
            .home
            .as_ref()
            .is_some_and(|h| cpu < CpuSet::MAX_CPU && h.is_set(cpu));
        if !home_has || !self.place.has_room(cpu) {
            // Pinned where the client no longer is, or not allowed there:
            // free, the scheduler places it.
            self.unpin();
            return;
        }
        let mut set = CpuSet::new();
        set.set(cpu);
        if sched_setaffinity(None, &set).is_ok() {
            self.release();
            if let Some(n) = self.place.pinned.get(cpu) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            self.pinned = Some(cpu);
        }
    }

    /// Gives up the pinned CPU's count, without moving.
    fn release(&mut self) {
        if let Some(n) = self.pinned.take().and_then(|c| self.place.pinned.get(c)) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn unpin(&mut self) {
        if self.pinned.is_none() {
            return;
        }
        self.release();
        if let Some(home) = &self.place.home {
            // Failing leaves the thread on one CPU, which is still correct.
            let _ = sched_setaffinity(None, home);
        }
    }
}

impl Drop for Follow<'_> {
    fn drop(&mut self) {
        // The thread ends with its connection; only the counts remain.
        self.release();
        if self.crowded_at.take().is_some() {
            self.place.following.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        // A packet in, so the socket knows the CPU it came in on.
        a.write_all(b"x").expect("write");
        (a, b)
    }

    fn mask() -> CpuSet {
        sched_getaffinity(None).expect("getaffinity")
    }

    /// Runs `f` on a thread of its own, whose affinity it may change.
    fn on_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().expect("test thread");
    }

    /// A crowded reader ends up on the CPU its client's packets came in
    /// on; uncrowded for a while, it gets its whole set back.
    #[test]
    fn follows_the_client_only_while_crowded() {
        on_thread(|| {
            let home = mask();
            let place = Placement::new(true);
            let (_client, server) = pair();
            let mut f = Follow::new(&place);
            if home.count() < 2 {
                // Nowhere to move: following is off.
                assert!(place.home.is_none());
                return;
            }
            let t = Instant::now();
            f.update_at(server.as_fd(), true, t);
            let pinned = mask();
            assert_eq!(pinned.count(), 1, "pinned to one CPU");
            let cpu = socket_incoming_cpu(server.as_fd()).expect("incoming cpu") as usize;
            assert!(pinned.is_set(cpu));
            assert_eq!(place.pinned[cpu].load(Ordering::Relaxed), 1);
            // A moment without others does not move it back...
            f.update_at(server.as_fd(), false, t + STAY / 2);
            assert_eq!(mask(), pinned);
            // ...a while does.
            f.update_at(server.as_fd(), false, t + STAY);
            assert_eq!(mask(), home);
            assert_eq!(place.pinned[cpu].load(Ordering::Relaxed), 0);
            assert_eq!(place.following.load(Ordering::Relaxed), 0);
        });
    }

    /// Two following readers whose clients share a CPU, on a two-CPU
    /// home: only one is pinned there, the other stays free.
    #[test]
    fn a_cpu_takes_only_its_share() {
        on_thread(|| {
            let place = Placement::new(true);
            let Some(home) = place.home else {
                return;
            };
            // Both clients' packets come in on this thread's CPU.
            let (_c1, s1) = pair();
            let (_c2, s2) = pair();
            let raw = socket_incoming_cpu(s1.as_fd()).expect("incoming cpu");
            if socket_incoming_cpu(s2.as_fd()).ok() != Some(raw) || home.count() != 2 {
                return;
            }
            let cpu = raw as usize;
            let mut a = Follow::new(&place);
            let mut b = Follow::new(&place);
            let t = Instant::now();
            // Both count as following before either pins: a share of one.
            a.crowded_at = Some(t);
            place.following.fetch_add(1, Ordering::Relaxed);
            b.update_at(s2.as_fd(), true, t);
            a.update_at(s1.as_fd(), true, t);
            assert_eq!(place.pinned[cpu].load(Ordering::Relaxed), 1);
            assert_eq!(b.pinned, Some(cpu));
            assert_eq!(a.pinned, None);
            drop(b);
            assert_eq!(place.pinned[cpu].load(Ordering::Relaxed), 0);
            assert_eq!(place.following.load(Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn disabled_never_moves() {
        on_thread(|| {
            let home = mask();
            let place = Placement::new(false);
            let (_client, server) = pair();
            let mut f = Follow::new(&place);
            f.update(server.as_fd(), true);
            assert_eq!(mask(), home);
        });
    }
}
