//! NFSACL v3, the side protocol (program 100227) through which a Linux
//! NFSv3 client reads POSIX ACLs.
//!
//! Why serve it at all: the client assumes it is there, and when a server
//! answers PROG_UNAVAIL its `get_inode_acl` fails with EOPNOTSUPP. Most of
//! the client never asks, but overlayfs checks permissions on its lower
//! layer through ACLs, so an overlay over an NFS directory (a `--rootfs
//! DIR`) refused every file a non-root user did not own. GETACL answers
//! "no ACL beyond the mode bits", which sends the client back to the mode;
//! the server still checks every access with the caller's identity. SETACL
//! is refused with NOTSUPP, which `setfacl` reports as such.

use vmshare_wire::Decoder;

use crate::nfs3::{DecodeError, FileHandle};

/// The ACL mask bits of GETACL/SETACL: the access ACL, its entry count,
/// the default ACL, its entry count.
pub const MASK_ALL: u32 = 0xf;

/// Decoded NFSACL v3 calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AclCall {
    Null,
    GetAcl {
        fh: FileHandle,
        mask: u32,
    },
    /// Refused whatever it carries; only the handle is read, for the
    /// attributes of the reply.
    SetAcl {
        fh: FileHandle,
    },
}

/// Decodes NFSACL v3 arguments.
pub fn decode_acl(proc_: u32, args: &[u8]) -> Result<AclCall, DecodeError> {
    let d = &mut Decoder::new(args);
    Ok(match proc_ {
        0 => AclCall::Null,
        1 => AclCall::GetAcl {
            fh: FileHandle::decode(d)?,
            mask: d.u32()?,
        },
        2 => AclCall::SetAcl {
            fh: FileHandle::decode(d)?,
        },
        p => return Err(DecodeError::NoSuchProcedure(p)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmshare_wire::Encoder;

    #[test]
    fn getacl_args_decode_and_cut_args_fail() {
        let mut e = Encoder::default();
        e.opaque(&[7; 20]).u32(0x5);
        let full = e.into_inner();
        match decode_acl(1, &full) {
            Ok(AclCall::GetAcl { fh, mask }) => {
                assert_eq!(fh.as_bytes(), &[7; 20]);
                assert_eq!(mask, 5);
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..full.len() {
            assert!(decode_acl(1, &full[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            decode_acl(3, &[]),
            Err(DecodeError::NoSuchProcedure(3))
        ));
    }
}
