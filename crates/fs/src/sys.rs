//! The few syscalls that neither std nor rustix wrap in the form needed.
//! This module owns most of the crate's `unsafe`; each call says why it is
//! sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Largest kernel file handle we accept; NFSv3's 64-byte handle must hold
/// it plus our header and MAC.
pub const MAX_KERNEL_HANDLE: usize = 40;

/// A kernel file handle (`struct file_handle` payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHandle {
    /// `handle_type`.
    pub kind: i32,
    /// Length of `bytes` in use.
    pub len: usize,
    /// `f_handle`.
    pub bytes: [u8; MAX_KERNEL_HANDLE],
}

#[repr(C)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; 128],
}

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: the kernel handle of the
/// object `fd` refers to (an `O_PATH` fd is fine; symlinks are not
/// followed).
pub fn handle_of(fd: BorrowedFd<'_>) -> io::Result<KernelHandle> {
    name_to_handle(fd, c"", libc::AT_EMPTY_PATH)
}

fn name_to_handle(
    dir: BorrowedFd<'_>,
    path: &std::ffi::CStr,
    flags: libc::c_int,
) -> io::Result<KernelHandle> {
    let mut raw = RawHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `path` is a valid NUL-terminated string, `raw` is a properly
    // sized and aligned `struct file_handle` whose `handle_bytes` says how
    // much room `f_handle` has, and `mount_id` is a valid out pointer; the
    // kernel writes only within those. Neither flag value makes it follow
    // a final symlink.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            dir.as_raw_fd(),
            path.as_ptr(),
            &mut raw as *mut RawHandle,
            &mut mount_id as *mut libc::c_int,
            flags,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = raw.handle_bytes as usize;
    if len > MAX_KERNEL_HANDLE {
        return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
    }
    let mut bytes = [0u8; MAX_KERNEL_HANDLE];
    bytes[..len].copy_from_slice(&raw.f_handle[..len]);
    Ok(KernelHandle {
        kind: raw.handle_type,
        len,
        bytes,
    })
}

/// `open_by_handle_at(mount_fd, handle, flags)`. Needs
/// `CAP_DAC_READ_SEARCH`, so it must run with the server's own
/// credentials, not a caller's.
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    h: &KernelHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let mut raw = RawHandle {
        handle_bytes: 0,
        handle_type: h.kind,
        f_handle: [0; 128],
    };
    let len = h.len.min(MAX_KERNEL_HANDLE);
    raw.f_handle[..len].copy_from_slice(&h.bytes[..len]);
    raw.handle_bytes = libc::c_uint::try_from(len).unwrap_or(0);
    // SAFETY: `raw` is a valid `struct file_handle` with `handle_bytes`
    // within `f_handle`; the kernel only reads it. The returned fd, if
    // any, is new and owned by nobody else.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            &raw as *const RawHandle,
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` was just returned by the kernel and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Per-thread filesystem identity. glibc's `setgroups` changes every
/// thread of the process (it broadcasts, as POSIX requires), so the raw
/// syscalls are used: each worker thread serves a different caller.
pub fn set_thread_fs_ids(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    // SAFETY: setfsgid/setfsuid take plain integers and only change this
    // thread's credentials; they cannot fail in a way that corrupts memory.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
    }
    // SAFETY: `groups` is a valid slice of `gid_t` for its whole length.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_setfsuid, uid);
    }
    // setfsuid reports no errors; reading the value back (an invalid id
    // leaves it unchanged and returns the current one) is the only check.
    // SAFETY: -1 (as u32::MAX) is never a valid id, so this only queries.
    let now_uid = unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) };
    // SAFETY: as above.
    let now_gid = unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) };
    if now_uid != i64::from(uid) || now_gid != i64::from(gid) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    match resource_cap_for(uid == 0) {
        // Root without it is only root with quotas.
        Err(_) if uid == 0 => Ok(()),
        r => r,
    }
}

/// The kernel drops the filesystem capabilities when fsuid leaves 0, but
/// not CAP_SYS_RESOURCE, which lets writes pass disk quotas and use the
/// blocks ext4 reserves for root. As knfsd does, a caller other than root
/// works without it; root gets it back (if the server has it at all).
fn resource_cap_for(root: bool) -> io::Result<()> {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    let mut caps = capabilities(None)?;
    let want = root && caps.permitted.contains(CapabilitySet::SYS_RESOURCE);
    if caps.effective.contains(CapabilitySet::SYS_RESOURCE) != want {
        caps.effective.set(CapabilitySet::SYS_RESOURCE, want);
        set_capabilities(None, caps)?;
    }
    Ok(())
}

/// `faccessat2(fd, "", mode, AT_EACCESS | AT_EMPTY_PATH)`: whether the
/// current (switched) identity may access the object `fd` refers to, an
/// `O_PATH` descriptor included. rustix refuses `AT_EMPTY_PATH` here, and
/// the alternative, a path through /proc/self/fd, costs a walk through
/// procfs on every check.
pub fn access_fd(fd: BorrowedFd<'_>, mode: rustix::fs::Access) -> io::Result<()> {
    // SAFETY: the path is a valid NUL-terminated (empty) string, `fd` is a
    // live descriptor for the call's duration, and the other arguments are
    // plain integers; the kernel writes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode.bits(),
            libc::AT_EACCESS | libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE)`: starts
/// writeback of a range without waiting for it. A hint, so it reports
/// nothing: whatever fails here fails again, and is reported, in the
/// fsync that COMMIT makes.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: usize) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain integers and a descriptor that is live for the call;
    // the kernel reads and writes no memory of ours.
    unsafe {
        libc::sync_file_range(fd.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// One `getdents64` call into `buf`; returns the bytes filled (0 at end).
pub fn getdents(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, which is what
    // the kernel is told; it writes whole records only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EIO))
}

/// One parsed `linux_dirent64` record.
#[derive(Debug)]
pub struct RawDirent<'a> {
    /// Inode number.
    pub ino: u64,
    /// Offset of the next entry (the telldir cookie after this one).
    pub off: u64,
    /// Name without the NUL.
    pub name: &'a [u8],
}

/// Parses the records `getdents64` wrote, checking every length against
/// the buffer (the kernel's data, but a parser that trusts nothing is
/// cheap).
pub fn parse_dirents(buf: &[u8]) -> impl Iterator<Item = RawDirent<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let hdr = buf.get(pos..pos + 19)?;
        let ino = u64::from_ne_bytes(hdr[0..8].try_into().ok()?);
        let off = u64::from_ne_bytes(hdr[8..16].try_into().ok()?);
        let reclen = usize::from(u16::from_ne_bytes(hdr[16..18].try_into().ok()?));
        if reclen < 19 {
            return None;
        }
        let rec = buf.get(pos..pos + reclen)?;
        let name_area = &rec[19..];
        let nul = name_area
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_area.len());
        pos += reclen;
        Some(RawDirent {
            ino,
            off,
            name: &name_area[..nul],
        })
    })
}

/// Raises the soft open-file limit to the hard limit (the caches keep
/// many descriptors open) and returns the limit now in force, or `None`
/// if it cannot be read.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out pointer for `getrlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid, initialised `rlimit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
    }
    Some(lim.rlim_cur)
}

thread_local! {
    /// Whether this thread has a umask of its own, cleared.
    static OWN_UMASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives the calling thread a umask of its own, 0, once: new objects then
/// get exactly the mode the client asked for. Not the process's umask: a
/// process-wide 0 made everything else `vmshare run` wrote (its cached
/// guest init among it) writable by every user of the host.
pub fn clear_thread_umask() {
    if OWN_UMASK.with(|c| c.replace(true)) {
        return;
    }
    // SAFETY: CLONE_FS gives this thread its own copy of the filesystem
    // context (root, working directory, umask); unlike CLONE_FILES it
    // leaves the descriptor table shared, so no descriptor any thread
    // holds is affected.
    match unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) } {
        Ok(()) => {
            rustix::process::umask(rustix::fs::Mode::empty());
        }
        // Then the process's umask applies to new objects' modes, which is
        // safer than clearing it for the whole process.
        Err(e) => {
            tracing::warn!(error = %e, "unshare(CLONE_FS) failed; new files' modes follow the umask")
        }
    }
}
