//! Pipes for READ replies that never pass through the server's memory.
//!
//! A large READ's data goes from the file into a pipe with `splice(2)`
//! (the pipe takes references to page-cache pages, it copies nothing),
//! and from the pipe to the socket the same way. Against `pread` + `send`
//! that saves two of the three copies a byte makes on its way to a local
//! client. Pipes are kept in a pool: making one and growing it to 1 MiB
//! costs three syscalls. A pipe goes back only when it has been drained;
//! one left holding data (its connection died mid-reply) is closed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::lock;

/// Pipes kept for reuse; more may exist while replies are in flight
/// (the reply budget bounds those).
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
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    free: Mutex<Vec<Pipe>>,
}

impl Pipes {
    /// A drained pipe, or `None` when none can be made (out of fds): the
    /// caller then copies.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Lease> {
        let pipe = lock(&self.free).pop().or_else(Pipe::new)?;
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
    }
}
