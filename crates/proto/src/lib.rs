//! NFSv3 (RFC 1813), MOUNT v3, and portmap v2 with rpcbind v3/v4 (RFC
//! 1833): the procedures'
//! arguments and results as Rust types, their XDR codecs, and a
//! [`Dispatcher`] that decodes a call, runs it against a [`Backend`] and
//! encodes the reply.
//!
//! The backend never sees XDR and the codec never touches a file: the
//! filesystem crate implements [`Backend`]; the server crate owns sockets
//! and hands records to [`Dispatcher::handle_call`].
#![deny(missing_docs)]
// Failure arms carry WCC data by value on purpose: replies are built without
// allocating, and the data is a few hundred bytes on the stack.
#![allow(clippy::result_large_err)]
#![forbid(unsafe_code)]

pub mod acl;
pub mod backend;
pub mod dispatch;
pub mod mount;
pub mod nfs3;
pub mod rpcbind;

pub use backend::{Backend, Caller, Fail};
pub use dispatch::{Client, Dispatcher, MAX_IO, MOUNT_DUMP_MAX_REPLY, SPLICE_MIN};
pub use nfs3::{FileHandle, NfsStat};
pub use rpcbind::Ports;

/// ONC RPC program numbers served.
pub mod programs {
    /// Portmapper / rpcbind.
    pub const PORTMAP: u32 = 100_000;
    /// NFS.
    pub const NFS: u32 = 100_003;
    /// MOUNT.
    pub const MOUNT: u32 = 100_005;
    /// NFSACL (Sun's POSIX ACL side protocol of NFSv3).
    pub const NFSACL: u32 = 100_227;
}

/// Whether a procedure changes state, so that a retransmission must get the
/// original reply from the duplicate request cache rather than run again
/// (the set nfsd caches: SETATTR, WRITE, CREATE, MKDIR, SYMLINK, MKNOD,
/// REMOVE, RMDIR, RENAME, LINK).
pub fn is_nonidempotent(prog: u32, vers: u32, proc_: u32) -> bool {
    prog == programs::NFS && vers == 3 && matches!(proc_, 2 | 7..=15)
}

/// Whether a call forces data to stable storage: COMMIT, and WRITE asked
/// to be FILE_SYNC or DATA_SYNC. Such a call waits for the disk (an
/// fsync), for milliseconds on a real one; the server runs it beside the
/// client's other calls, never in their way.
pub fn forces_sync(prog: u32, vers: u32, proc_: u32, args: &[u8]) -> bool {
    const WRITE: u32 = 7;
    const COMMIT: u32 = 21;
    if prog != programs::NFS || vers != 3 {
        return false;
    }
    match proc_ {
        COMMIT => true,
        WRITE => matches!(
            nfs3::decode_call(WRITE, args),
            Ok(nfs3::Nfs3Call::Write { stable, .. }) if stable != nfs3::StableHow::Unstable
        ),
        _ => false,
    }
}

/// Decodes the arguments of any procedure served, discarding the result:
/// the entry point for fuzzing every argument decoder at once.
pub fn fuzz_decode(prog: u32, vers: u32, proc_: u32, args: &[u8]) -> bool {
    match (prog, vers) {
        (programs::NFS, 3) => nfs3::decode_call(proc_, args).is_ok(),
        (programs::MOUNT, 3) => mount::decode_mount(proc_, args).is_ok(),
        (programs::PORTMAP, 2) => rpcbind::decode_portmap(proc_, args).is_ok(),
        (programs::PORTMAP, 3 | 4) => rpcbind::decode_rpcbind(vers, proc_, args).is_ok(),
        (programs::NFSACL, 3) => acl::decode_acl(proc_, args).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmshare_wire::Encoder;

    fn write_args(stable: u32) -> Vec<u8> {
        let mut e = Encoder::default();
        e.opaque(b"handle")
            .u64(0)
            .u32(4)
            .u32(stable)
            .opaque(b"data");
        e.as_slice().to_vec()
    }

    #[test]
    fn only_commit_and_stable_writes_force_a_sync() {
        assert!(forces_sync(programs::NFS, 3, 21, b""));
        assert!(!forces_sync(programs::NFS, 3, 7, &write_args(0)));
        assert!(forces_sync(programs::NFS, 3, 7, &write_args(1)));
        assert!(forces_sync(programs::NFS, 3, 7, &write_args(2)));
        // Undecodable arguments are answered at once with GARBAGE_ARGS.
        assert!(!forces_sync(programs::NFS, 3, 7, b"\0\0"));
        assert!(!forces_sync(programs::NFS, 3, 8, b""));
        assert!(!forces_sync(programs::MOUNT, 3, 21, b""));
    }
}
