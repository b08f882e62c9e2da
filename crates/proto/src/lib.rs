//! NFSv3 (RFC 1813), MOUNT v3 and portmap v2 (RFC 1833): the procedures'
//! arguments and results as Rust types, their XDR codecs, and a
//! [`Dispatcher`] that decodes a call, runs it against a [`Backend`] and
//! encodes the reply.
//!
//! The backend never sees XDR and the codec never touches a file: the
//! filesystem crate implements [`Backend`]; the server crate owns sockets
//! and hands records to [`Dispatcher::handle_call`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod dispatch;

pub use dispatch::{Client, Dispatcher, Ports};

/// ONC RPC program numbers served.
pub mod programs {
    /// Portmapper / rpcbind.
    pub const PORTMAP: u32 = 100_000;
    /// NFS.
    pub const NFS: u32 = 100_003;
    /// MOUNT.
    pub const MOUNT: u32 = 100_005;
}

/// Whether a procedure changes state, so that a retransmission must get the
/// original reply from the duplicate request cache rather than run again
/// (the set nfsd caches: SETATTR, WRITE, CREATE, MKDIR, SYMLINK, MKNOD,
/// REMOVE, RMDIR, RENAME, LINK).
pub fn is_nonidempotent(prog: u32, vers: u32, proc_: u32) -> bool {
    prog == programs::NFS && vers == 3 && matches!(proc_, 2 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 15)
}
