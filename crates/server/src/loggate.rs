//! At most one log line a period for events a client can repeat at will.
//!
//! A client that opens connections in a loop past the limits, or sends
//! garbage and reconnects, made a line each time: 22,000 lines in five
//! seconds in an audit, gigabytes a day. The first line of a period is
//! written; the rest are counted and the count goes into the next line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One kind of event's gate.
#[derive(Debug)]
pub(crate) struct LogGate {
    epoch: Instant,
    period_ms: u64,
    /// Milliseconds from `epoch` before which no line is written.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    pub(crate) fn new(period: Duration) -> LogGate {
        LogGate {
            epoch: Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being the lines held
    /// back since the last one; `None` if this one is to be held back.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_period_and_the_count_of_the_rest() {
        let g = LogGate::new(Duration::from_millis(50));
        assert_eq!(g.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(g.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(g.allow(), Some(5));
        assert_eq!(g.allow(), None);
    }
}
