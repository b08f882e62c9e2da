//! MOUNT v3 (RFC 1813 §5) details.

use vmshare_wire::Decoder;

/// Longest MOUNT dirpath (`MNTPATHLEN`).
pub const MNTPATHLEN: u32 = 1024;
/// Longest host name in MOUNT DUMP (`MNTNAMLEN`).
pub const MNTNAMLEN: u32 = 255;

/// MOUNT status codes (`mountstat3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
#[repr(u32)]
pub enum MountStat {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    NameTooLong = 63,
    NotSupp = 10004,
    ServerFault = 10006,
}

/// Decoded MOUNT v3 calls.
#[derive(Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum MountCall<'a> {
    Null,
    Mnt(&'a [u8]),
    Dump,
    Umnt(&'a [u8]),
    UmntAll,
    Export,
}

/// Paths as text in debug logs (`Mnt("/data")`), not byte values.
impl std::fmt::Debug for MountCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = |p: &[u8]| p.escape_ascii().to_string();
        match self {
            MountCall::Null => f.write_str("Null"),
            MountCall::Mnt(p) => f.debug_tuple("Mnt").field(&path(p)).finish(),
            MountCall::Dump => f.write_str("Dump"),
            MountCall::Umnt(p) => f.debug_tuple("Umnt").field(&path(p)).finish(),
            MountCall::UmntAll => f.write_str("UmntAll"),
            MountCall::Export => f.write_str("Export"),
        }
    }
}

/// Why MOUNT arguments could not be decoded.
pub use crate::nfs3::DecodeError;

/// Decodes MOUNT v3 arguments.
pub fn decode_mount(proc_: u32, args: &[u8]) -> Result<MountCall<'_>, DecodeError> {
    let d = &mut Decoder::new(args);
    Ok(match proc_ {
        0 => MountCall::Null,
        1 => MountCall::Mnt(d.string(MNTPATHLEN)?),
        2 => MountCall::Dump,
        3 => MountCall::Umnt(d.string(MNTPATHLEN)?),
        4 => MountCall::UmntAll,
        5 => MountCall::Export,
        p => return Err(DecodeError::NoSuchProcedure(p)),
    })
}
