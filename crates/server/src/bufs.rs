//! Buffers for large records (WRITEs), kept for reuse.
//!
//! A fresh 1 MiB buffer per WRITE meant fresh pages per WRITE: mapped,
//! faulted in, zeroed by the kernel, unmapped again. Measured here, a
//! pwrite from freshly mapped memory cost five times the CPU of one from a
//! reused buffer, and the server's sequential writes used 1.7x ganesha's
//! CPU. A few full-size buffers are therefore kept; small records still
//! get buffers of their own size.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lock;

/// Buffers kept while idle (each `max_record` bytes).
const KEEP: usize = 8;

/// Kept buffers are let go once no large record has come for this long.
/// Eight 1 MiB buffers are a quarter of the server's memory target: kept
/// after a guest's one big copy, they sat on top of everything its later
/// small-file work needed (36 MiB of peak RSS with 80,000 files touched).
/// A streaming writer takes one every millisecond or so and never sees
/// them go.
const IDLE_FOR: Duration = Duration::from_secs(1);

/// The pool; every buffer in it is `size` bytes long.
#[derive(Debug)]
pub(crate) struct BufPool {
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
    /// How many buffers `free` holds, readable without its lock, so that
    /// the check for idle buffers costs every call one load.
    kept: AtomicUsize,
    epoch: Instant,
    /// Milliseconds from `epoch` to the latest `take`.
    last_take_ms: AtomicU64,
}

impl BufPool {
    pub(crate) fn new(size: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            size,
            free: Mutex::new(Vec::new()),
            kept: AtomicUsize::new(0),
            epoch: Instant::now(),
            last_take_ms: AtomicU64::new(0),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A buffer of `size` bytes (contents unspecified).
    pub(crate) fn take(&self) -> Vec<u8> {
        self.last_take_ms
            .store(self.ms(Instant::now()), Ordering::Relaxed);
        let mut free = lock(&self.free);
        let buf = free.pop();
        self.kept.store(free.len(), Ordering::Relaxed);
        drop(free);
        buf.unwrap_or_else(|| vec![0; self.size])
    }

    /// Lets the kept buffers go if none was taken in the last
    /// [`IDLE_FOR`] before `now`.
    pub(crate) fn trim_if_idle(&self, now: Instant) {
        if self.kept.load(Ordering::Relaxed) == 0 {
            return;
        }
        let idle_ms = self
            .ms(now)
            .saturating_sub(self.last_take_ms.load(Ordering::Relaxed));
        if u128::from(idle_ms) < IDLE_FOR.as_millis() {
            return;
        }
        let mut free = lock(&self.free);
        let gone = std::mem::take(&mut *free);
        self.kept.store(0, Ordering::Relaxed);
        drop(free);
        // Unmapped outside the lock.
        drop(gone);
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn put(&self, buf: Vec<u8>) {
        if buf.len() == self.size {
            let mut free = lock(&self.free);
            if free.len() < KEEP {
                free.push(buf);
                self.kept.store(free.len(), Ordering::Relaxed);
            }
        }
    }
}

/// A complete record: the first `len` bytes of its buffer.
#[derive(Debug)]
pub(crate) struct Record {
    buf: Vec<u8>,
    len: usize,
    /// Where the buffer goes back to, if it came from the pool.
    pool: Option<Arc<BufPool>>,
}

impl Record {
    pub(crate) fn new(buf: Vec<u8>, len: usize, pool: Option<Arc<BufPool>>) -> Record {
        Record { buf, len, pool }
    }
}

impl Deref for Record {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.put(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_and_stay_bounded() {
        let pool = BufPool::new(64);
        let records: Vec<Record> = (0..KEEP + 3)
            .map(|_| Record::new(pool.take(), 10, Some(Arc::clone(&pool))))
            .collect();
        assert!(records.iter().all(|r| r.len() == 10));
        drop(records);
        assert_eq!(lock(&pool.free).len(), KEEP);
        // A buffer of another size is not taken in.
        drop(Record::new(vec![0; 5], 5, Some(Arc::clone(&pool))));
        assert_eq!(lock(&pool.free).len(), KEEP);
    }

    #[test]
    fn idle_buffers_are_let_go_and_busy_ones_kept() {
        let pool = BufPool::new(64);
        drop(Record::new(pool.take(), 10, Some(Arc::clone(&pool))));
        let taken = Instant::now();
        // Within the idle time: kept.
        pool.trim_if_idle(taken);
        assert_eq!(lock(&pool.free).len(), 1);
        // Long after the last take: gone, and the pool still works.
        pool.trim_if_idle(taken + IDLE_FOR + Duration::from_millis(50));
        assert_eq!(lock(&pool.free).len(), 0);
        assert_eq!(pool.kept.load(Ordering::Relaxed), 0);
        drop(Record::new(pool.take(), 10, Some(Arc::clone(&pool))));
        assert_eq!(lock(&pool.free).len(), 1);
    }
}
