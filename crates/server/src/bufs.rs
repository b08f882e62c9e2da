//! Buffers for large records (WRITEs), kept for reuse.
//!
//! A fresh 1 MiB buffer per WRITE meant fresh pages per WRITE: mapped,
//! faulted in, zeroed by the kernel, unmapped again. Measured here, a
//! pwrite from freshly mapped memory cost five times the CPU of one from a
//! reused buffer, and the server's sequential writes used 1.7x ganesha's
//! CPU. A few full-size buffers are therefore kept; small records still
//! get buffers of their own size.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::lock;

/// Buffers kept while idle (each `max_record` bytes).
const KEEP: usize = 8;

/// The pool; every buffer in it is `size` bytes long.
#[derive(Debug)]
pub(crate) struct BufPool {
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    pub(crate) fn new(size: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            size,
            free: Mutex::new(Vec::new()),
        })
    }

    /// A buffer of `size` bytes (contents unspecified).
    pub(crate) fn take(&self) -> Vec<u8> {
        lock(&self.free).pop().unwrap_or_else(|| vec![0; self.size])
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn put(&self, buf: Vec<u8>) {
        if buf.len() == self.size {
            let mut free = lock(&self.free);
            if free.len() < KEEP {
                free.push(buf);
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
}
