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
//! - at most [`Pollers`]' cap of readers poll at once, and a polling
//!   reader yields its CPU on every round, so it uses only time nothing
//!   else wants.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// The server-wide cap on readers polling at once.
#[derive(Debug)]
pub(crate) struct Pollers {
    max_window: Duration,
    cap: usize,
    active: AtomicUsize,
}

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
        }
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
pub(crate) struct Linger {
    /// How long the next wait polls; zero while the client's calls come
    /// too far apart to be caught.
    window: Duration,
    /// When the current wait began, if it counts towards adapting.
    since: Option<Instant>,
    /// Whether the current wait saw input while polling.
    hit: bool,
}

impl Linger {
    pub(crate) fn new(pollers: &Pollers) -> Linger {
        Linger {
            window: pollers.max_window,
            since: None,
            hit: false,
        }
    }

    /// Polls `fd` for input for up to the current window, then returns
    /// (input ready or not: the caller's blocking read comes next).
    pub(crate) fn wait(&mut self, pollers: &Pollers, fd: BorrowedFd<'_>) {
        let start = Instant::now();
        self.since = Some(start);
        self.hit = false;
        if self.window.is_zero() {
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
    pub(crate) fn arrived(&mut self, pollers: &Pollers, at: Instant) {
        let Some(since) = self.since.take() else {
            return;
        };
        if self.hit {
            return;
        }
        let max = pollers.max_window;
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

    fn lingering(window_us: u64) -> (Pollers, Linger) {
        let p = Pollers::new(Duration::from_micros(window_us), 1);
        let l = Linger::new(&p);
        (p, l)
    }

    fn miss(p: &Pollers, l: &mut Linger, gap_us: u64) {
        let since = Instant::now();
        l.since = Some(since);
        l.hit = false;
        l.arrived(p, since + Duration::from_micros(gap_us));
    }

    #[test]
    fn far_apart_calls_stop_polling_and_close_ones_restart_it() {
        let (p, mut l) = lingering(64);
        for _ in 0..4 {
            miss(&p, &mut l, 10_000);
        }
        assert_eq!(l.window, Duration::ZERO);
        miss(&p, &mut l, 40);
        assert_eq!(l.window, Duration::from_micros(16));
        miss(&p, &mut l, 40);
        miss(&p, &mut l, 40);
        assert_eq!(l.window, Duration::from_micros(64));
    }

    #[test]
    fn a_hit_keeps_the_window_and_a_skipped_wait_changes_nothing() {
        let (p, mut l) = lingering(64);
        l.since = Some(Instant::now());
        l.hit = true;
        l.arrived(&p, Instant::now() + Duration::from_secs(1));
        assert_eq!(l.window, Duration::from_micros(64));
        l.skip();
        l.arrived(&p, Instant::now() + Duration::from_secs(1));
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
        let (p, mut l) = lingering(200_000);
        let (a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // Nothing to read: returns once the window has passed.
        let t = Instant::now();
        l.wait(&p, a.as_fd());
        assert!(!l.hit);
        assert!(t.elapsed() >= Duration::from_millis(200));
        // Input ready: returns at once, as a hit.
        b.write_all(b"x").expect("write");
        let t = Instant::now();
        l.wait(&p, a.as_fd());
        assert!(l.hit);
        assert!(t.elapsed() < Duration::from_millis(200));
    }
}
