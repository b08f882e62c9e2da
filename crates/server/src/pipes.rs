//! Pipes for READ replies that never pass through the server's memory.
//!
//! A large READ's data goes from the file into a pipe with `splice(2)`
//! (the pipe takes references to page-cache pages, it copies nothing),
//! and from the pipe to the socket the same way. Against `pread` + `send`
//! that saves two of the three copies a byte makes on its way to a local
//! client. Pipes are kept in a pool: making one and growing it to 1 MiB
//! costs three syscalls. A pipe goes back only when it has been drained;
//! one left holding data (its connection died mid-reply) is closed.
//!
//! Only so many pipes are out at once ([`Pipes::new`]); beyond that a READ
//! is copied. The reply budget does not bound them: a spliced reply is
//! charged the bytes it carries, so a 64 KiB READ that finds one byte
//! holds a pipe, two descriptors, for some 600 bytes of budget, and a
//! client that read no replies held one per call in flight (768
//! descriptors from six connections).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;

/// Pipes kept for reuse; more may exist while replies are in flight
/// (up to the pool's cap).
const KEEP: usize = 32;

/// What a pipe should hold: the largest READ.
const WANT: usize = vmshare_proto::MAX_IO as usize;

#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    write: OwnedFd,
    /// Bytes it can hold (what the kernel granted).
    pub(crate) room: usize,
}

impl Pipe {
    fn new() -> Option<Pipe> {
        use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC).ok()?;
        // Beyond /proc/sys/fs/pipe-max-size only root may grow a pipe;
        // whatever size it keeps, READs up to that size use it.
        let _ = fcntl_setpipe_size(&write, WANT);
        let room = fcntl_getpipe_size(&write).ok()?;
        Some(Pipe { read, write, room })
    }

    pub(crate) fn write_end(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }
}

/// The pool.
#[derive(Debug)]
pub(crate) struct Pipes {
    free: Mutex<Vec<Pipe>>,
    /// Leases not yet dropped.
    out: AtomicUsize,
    max_out: usize,
}

impl Pipes {
    /// A pool that lends at most `max_out` pipes at once.
    pub(crate) fn new(max_out: usize) -> Arc<Pipes> {
        Arc::new(Pipes {
            free: Mutex::new(Vec::new()),
            out: AtomicUsize::new(0),
            max_out,
        })
    }

    /// A drained pipe, or `None` when `max_out` are lent or none can be
    /// made (out of fds): the caller then copies.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Lease> {
        self.out
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_out).then_some(n + 1)
            })
            .ok()?;
        let Some(pipe) = lock(&self.free).pop().or_else(Pipe::new) else {
            self.out.fetch_sub(1, Ordering::AcqRel);
            return None;
        };
        Some(Lease {
            pipe: Some(pipe),
            pool: Arc::clone(self),
            drained: true,
        })
    }
}

/// A pipe borrowed from the pool; returns to it when dropped drained.
#[derive(Debug)]
pub(crate) struct Lease {
    pipe: Option<Pipe>,
    pool: Arc<Pipes>,
    /// Whether the pipe is empty (set by whoever fills and drains it).
    pub(crate) drained: bool,
}

impl Lease {
    pub(crate) fn pipe(&self) -> Option<&Pipe> {
        self.pipe.as_ref()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(p) = self.pipe.take() {
            if self.drained {
                let mut free = lock(&self.pool.free);
                if free.len() < KEEP {
                    free.push(p);
                }
            }
        }
        self.pool.out.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_than_the_cap_are_lent_at_once() {
        let pipes = Pipes::new(2);
        let a = pipes.take().expect("a pipe");
        let b = pipes.take().expect("a pipe");
        assert!(pipes.take().is_none(), "a third pipe lent");
        drop(a);
        let c = pipes.take().expect("a pipe after one came back");
        // A pipe closed rather than kept (not drained) frees its place too.
        let mut b = b;
        b.drained = false;
        drop(b);
        assert!(pipes.take().is_some());
        drop(c);
    }
}
