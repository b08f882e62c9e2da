//! Polling briefly for a client's next call before sleeping.
//!
//! A client that waits for each answer before it sends its next call (a
//! guest running `stat` over a tree, or opening files one by one) sends
//! that call a few microseconds after the answer reaches it. If the
//! connection's reader has gone to sleep by then, the call must wake it,
//! and when its CPU has gone idle that wake-up costs far more than the
//! call itself: in a VM whose idle vCPUs halt, as here, a blocking
//! ping-pong over loopback takes 54 µs per round trip, and 21 µs when the
//! answering side polls for the next message instead (`bench/nfs.sh`
//! shows LOOKUP and 4 KiB READ from one client going from about 16,000 to
//! 28,000 calls a second).
//!
//! Polling spends CPU, so it is bounded three ways:
//! - only a connection with nothing in flight polls (its reply is out, so
//!   the next thing on the wire is the client's next call);
//! - the window adapts per connection, as the kernel's haltpoll does: a
//!   client whose calls come further apart than the longest window stops
//!   being polled for, and one whose calls come close together starts
//!   again;
//! - at most [`Pollers`]' cap of readers poll at once, none when another
//!   connection had a call within the last [`BUSY`] (with several clients
//!   at work the CPUs are busy too and a wake-up is cheap: polling then
//!   only takes CPU from them), and a polling reader yields its CPU on
//!   every round, so it uses only time nothing else wants.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// The server-wide cap on readers polling at once.
#[derive(Debug)]
pub(crate) struct Pollers {
    max_window: Duration,
    cap: usize,
    active: AtomicUsize,
    /// When the latest call arrived on any connection (µs since `epoch`),
    /// and on which; and when the latest call on any other connection
    /// than that one did ([`NONE`]: no such call yet). Without the second,
    /// a connection whose own call happened to be the latest would take
    /// the server for idle while three others were at work, and poll.
    epoch: Instant,
    last_call_us: AtomicU64,
    last_conn: AtomicU64,
    other_call_us: AtomicU64,
}

/// No call yet (as a time or a connection).
const NONE: u64 = u64::MAX;

/// Another connection with a call this recent means other clients are at
/// work: no polling.
pub(crate) const BUSY: Duration = Duration::from_micros(500);

/// A polling place taken from [`Pollers`], given back on drop.
struct Turn<'a>(&'a AtomicUsize);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pollers {
    /// Readers poll for at most `max_window`, `cap` of them at once (a
    /// zero window or cap turns polling off).
    pub(crate) fn new(max_window: Duration, cap: usize) -> Pollers {
        Pollers {
            max_window,
            cap,
            active: AtomicUsize::new(0),
            epoch: Instant::now(),
            last_call_us: AtomicU64::new(NONE),
            last_conn: AtomicU64::new(NONE),
            other_call_us: AtomicU64::new(NONE),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(NONE - 1)
    }

    /// Connection `conn` has a call.
    ///
    /// The three stores are not one atomic step: two connections' calls
    /// racing here can leave a time that belongs to the other connection,
    /// off by the microseconds between them. A heuristic can take that.
    pub(crate) fn call_on(&self, conn: u64) {
        let now = self.now_us();
        let before = self.last_conn.swap(conn, Ordering::Relaxed);
        if before != conn {
            let then = self.last_call_us.load(Ordering::Relaxed);
            self.other_call_us.store(then, Ordering::Relaxed);
        }
        self.last_call_us.store(now, Ordering::Relaxed);
    }

    /// Whether a connection other than `conn` had a call within [`BUSY`].
    pub(crate) fn others_busy(&self, conn: u64) -> bool {
        let at = if self.last_conn.load(Ordering::Relaxed) == conn {
            self.other_call_us.load(Ordering::Relaxed)
        } else {
            self.last_call_us.load(Ordering::Relaxed)
        };
        at != NONE && u128::from(self.now_us().saturating_sub(at)) < BUSY.as_micros()
    }

    fn enter(&self) -> Option<Turn<'_>> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Turn(&self.active))
    }
}

/// One connection's polling state.
#[derive(Debug)]
pub(crate) struct Linger<'a> {
    pollers: &'a Pollers,
    conn: u64,
    /// How long the next wait polls; zero while the client's calls come
    /// too far apart to be caught.
    window: Duration,
    /// When the current wait began, if it counts towards adapting.
    since: Option<Instant>,
    /// Whether the current wait saw input while polling.
    hit: bool,
}

impl<'a> Linger<'a> {
    pub(crate) fn new(pollers: &'a Pollers, conn: u64) -> Linger<'a> {
        Linger {
            pollers,
            conn,
            window: pollers.max_window,
            since: None,
            hit: false,
        }
    }

    /// Polls `fd` for input for up to the current window, then returns
    /// (input ready or not: the caller's blocking read comes next).
    pub(crate) fn wait(&mut self, fd: BorrowedFd<'_>) {
        let pollers = self.pollers;
        let start = Instant::now();
        self.since = Some(start);
        self.hit = false;
        if self.window.is_zero() || pollers.others_busy(self.conn) {
            return;
        }
        let Some(_turn) = pollers.enter() else {
            return;
        };
        let until = start + self.window;
        loop {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            // A zero timeout: look, never sleep.
            match poll(&mut fds, Some(&Timespec::default())) {
                Ok(n) if n > 0 => {
                    self.hit = true;
                    return;
                }
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                // The read that follows meets the error and reports it.
                Err(_) => return,
            }
            if Instant::now() >= until {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// A wait that does not count (the call came from read-ahead, or
    /// others were in flight).
    pub(crate) fn skip(&mut self) {
        self.since = None;
    }

    /// Adapts the window to when the call that ended the wait began to
    /// arrive.
    pub(crate) fn arrived(&mut self, at: Instant) {
        self.pollers.call_on(self.conn);
        let Some(since) = self.since.take() else {
            return;
        };
        if self.hit {
            return;
        }
        let max = self.pollers.max_window;
        let gap = at.saturating_duration_since(since);
        self.window = if gap <= max {
            // Missed, but a longer window would have caught it. The gap
            // after a blocking read includes the wake-up, so a client
            // that is fast again shows as a gap within `max`.
            (self.window * 2).clamp(max / 4, max)
        } else if self.window <= max / 8 {
            Duration::ZERO
        } else {
            self.window / 2
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pollers(window_us: u64) -> Pollers {
        Pollers::new(Duration::from_micros(window_us), 1)
    }

    fn miss(l: &mut Linger<'_>, gap_us: u64) {
        let since = Instant::now();
        l.since = Some(since);
        l.hit = false;
        l.arrived(since + Duration::from_micros(gap_us));
    }

    #[test]
    fn far_apart_calls_stop_polling_and_close_ones_restart_it() {
        let p = pollers(64);
        let mut l = Linger::new(&p, 1);
        for _ in 0..4 {
            miss(&mut l, 10_000);
        }
        assert_eq!(l.window, Duration::ZERO);
        miss(&mut l, 40);
        assert_eq!(l.window, Duration::from_micros(16));
        miss(&mut l, 40);
        miss(&mut l, 40);
        assert_eq!(l.window, Duration::from_micros(64));
    }

    #[test]
    fn a_hit_keeps_the_window_and_a_skipped_wait_changes_nothing() {
        let p = pollers(64);
        let mut l = Linger::new(&p, 1);
        l.since = Some(Instant::now());
        l.hit = true;
        l.arrived(Instant::now() + Duration::from_secs(1));
        assert_eq!(l.window, Duration::from_micros(64));
        l.skip();
        l.arrived(Instant::now() + Duration::from_secs(1));
        assert_eq!(l.window, Duration::from_micros(64));
    }

    #[test]
    fn the_cap_bounds_pollers() {
        let p = Pollers::new(Duration::from_micros(10), 1);
        let first = p.enter();
        assert!(first.is_some());
        assert!(p.enter().is_none());
        drop(first);
        assert!(p.enter().is_some());
        assert!(Pollers::new(Duration::from_micros(10), 0).enter().is_none());
    }

    #[test]
    fn wait_returns_on_input_and_after_the_window_without_it() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let p = pollers(200_000);
        let mut l = Linger::new(&p, 1);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // Nothing to read: returns once the window has passed.
        let t = Instant::now();
        l.wait(a.as_fd());
        assert!(!l.hit);
        assert!(t.elapsed() >= Duration::from_millis(200));
        // Input ready: returns at once, as a hit.
        b.write_all(b"x").expect("write");
        let t = Instant::now();
        l.wait(a.as_fd());
        assert!(l.hit);
        assert!(t.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn no_polling_while_other_clients_are_at_work() {
        use std::os::fd::AsFd;
        let p = pollers(200_000);
        let mut other = Linger::new(&p, 2);
        let mut l = Linger::new(&p, 1);
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        other.arrived(Instant::now());
        let t = Instant::now();
        l.wait(a.as_fd());
        assert!(t.elapsed() < Duration::from_millis(200), "it polled");
        // This connection's own calls do not count; the other's age.
        l.arrived(Instant::now());
        std::thread::sleep(BUSY);
        let t = Instant::now();
        l.wait(a.as_fd());
        assert!(t.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn others_stay_busy_when_this_connection_had_the_latest_call() {
        let p = pollers(64);
        assert!(!p.others_busy(1), "no calls yet");
        p.call_on(1);
        assert!(!p.others_busy(1), "only its own call");
        assert!(p.others_busy(2));
        p.call_on(2);
        p.call_on(1);
        p.call_on(1);
        assert!(p.others_busy(1), "2's call is recent, though 1's is later");
        assert!(p.others_busy(2));
        std::thread::sleep(BUSY);
        assert!(!p.others_busy(1));
        assert!(!p.others_busy(2));
    }
}
