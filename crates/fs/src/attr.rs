//! Host `stat` to NFS attributes, and host errors to NFS status codes.

use std::io;

use rustix::fs::{FileType as HostType, Stat};
use vmshare_proto::nfs3::{Fattr, FileType, NfsTime};
use vmshare_proto::NfsStat;

/// Converts a host time to NFSv3's unsigned 32-bit seconds, clamping what
/// does not fit (before 1970, after 2106) rather than wrapping. A clamped
/// time has no fraction: 1960-01-01 00:00:00.5 showed as 1970-01-01
/// 00:00:00.5, a time the file never had, which `cp -p` then copied.
pub fn nfs_time(sec: i64, nsec: u64) -> NfsTime {
    match u32::try_from(sec) {
        Ok(seconds) => NfsTime {
            seconds,
            nseconds: u32::try_from(nsec.min(999_999_999)).unwrap_or(0),
        },
        Err(_) => NfsTime {
            seconds: if sec < 0 { 0 } else { u32::MAX },
            nseconds: 0,
        },
    }
}

/// The NFS file type of a host mode.
pub fn file_type(mode: u32) -> FileType {
    match HostType::from_raw_mode(mode) {
        HostType::Directory => FileType::Dir,
        HostType::Symlink => FileType::Lnk,
        HostType::BlockDevice => FileType::Blk,
        HostType::CharacterDevice => FileType::Chr,
        HostType::Socket => FileType::Sock,
        HostType::Fifo => FileType::Fifo,
        _ => FileType::Reg,
    }
}

/// Builds `fattr3` from a host stat; `fileid` and `fsid` are computed by
/// the caller (they depend on the export, not just the inode).
pub fn fattr(st: &Stat, fileid: u64, fsid: u64) -> Fattr {
    let rdev = st.st_rdev;
    Fattr {
        ftype: file_type(st.st_mode),
        mode: st.st_mode & 0o7777,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        size: u64::try_from(st.st_size).unwrap_or(0),
        used: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
        rdev: (rustix::fs::major(rdev), rustix::fs::minor(rdev)),
        fsid,
        fileid,
        atime: nfs_time(st.st_atime, st.st_atime_nsec),
        mtime: nfs_time(st.st_mtime, st.st_mtime_nsec),
        ctime: nfs_time(st.st_ctime, st.st_ctime_nsec),
    }
}

/// Builds `fattr3` from a host statx, as [`fattr`] does from a stat.
pub fn fattr_statx(st: &rustix::fs::Statx, fileid: u64, fsid: u64) -> Fattr {
    let mode = u32::from(st.stx_mode);
    let t = |t: &rustix::fs::StatxTimestamp| nfs_time(t.tv_sec, u64::from(t.tv_nsec));
    Fattr {
        ftype: file_type(mode),
        mode: mode & 0o7777,
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        used: st.stx_blocks.saturating_mul(512),
        rdev: (st.stx_rdev_major, st.stx_rdev_minor),
        fsid,
        fileid,
        atime: t(&st.stx_atime),
        mtime: t(&st.stx_mtime),
        ctime: t(&st.stx_ctime),
    }
}

/// Maps a host errno to the closest NFSv3 status. The Linux client turns
/// unknown codes into EIO, so each errno it can act on is named.
pub fn status_of_errno(errno: i32) -> NfsStat {
    match errno {
        libc::EPERM => NfsStat::Perm,
        libc::ENOENT => NfsStat::NoEnt,
        libc::EIO => NfsStat::Io,
        libc::ENXIO => NfsStat::NxIo,
        libc::EACCES => NfsStat::Acces,
        libc::EEXIST => NfsStat::Exist,
        libc::EXDEV => NfsStat::XDev,
        libc::ENODEV => NfsStat::NoDev,
        libc::ENOTDIR => NfsStat::NotDir,
        libc::EISDIR => NfsStat::IsDir,
        libc::EINVAL => NfsStat::Inval,
        libc::EFBIG => NfsStat::FBig,
        libc::ENOSPC => NfsStat::NoSpc,
        libc::EROFS => NfsStat::RoFs,
        libc::EMLINK => NfsStat::MLink,
        libc::ENAMETOOLONG => NfsStat::NameTooLong,
        libc::ENOTEMPTY => NfsStat::NotEmpty,
        libc::EDQUOT => NfsStat::DQuot,
        libc::ESTALE => NfsStat::Stale,
        // A symlink met where O_NOFOLLOW forbade following one: the object
        // is not of the type the operation needs.
        libc::ELOOP => NfsStat::Inval,
        libc::EOPNOTSUPP => NfsStat::NotSupp,
        libc::EOVERFLOW => NfsStat::FBig,
        libc::ETXTBSY | libc::EBUSY => NfsStat::Acces,
        libc::ENOMEM => NfsStat::ServerFault,
        _ => NfsStat::Io,
    }
}

/// [`status_of_errno`] for an `io::Error`.
pub fn status(e: &io::Error) -> NfsStat {
    e.raw_os_error().map_or(NfsStat::Io, status_of_errno)
}

/// [`status_of_errno`] for a rustix error.
pub fn status_rx(e: rustix::io::Errno) -> NfsStat {
    status_of_errno(e.raw_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_clamp() {
        let t = |seconds, nseconds| NfsTime { seconds, nseconds };
        assert_eq!(nfs_time(-5, 500_000_000), t(0, 0));
        assert_eq!(nfs_time(1 << 40, 7), t(u32::MAX, 0));
        assert_eq!(nfs_time(5, 7), t(5, 7));
        assert_eq!(nfs_time(i64::from(u32::MAX), 7), t(u32::MAX, 7));
        assert!(nfs_time(0, 2_000_000_000).nseconds < 1_000_000_000);
    }

    #[test]
    fn errnos_map() {
        assert_eq!(status_of_errno(libc::EROFS), NfsStat::RoFs);
        assert_eq!(status_of_errno(libc::ENOTEMPTY), NfsStat::NotEmpty);
        assert_eq!(status_of_errno(libc::EXDEV), NfsStat::XDev);
        assert_eq!(status_of_errno(12345), NfsStat::Io);
    }
}
