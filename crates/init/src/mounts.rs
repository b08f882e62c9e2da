//! Volume mounts: mount(2) with text options (the kernel's NFS client
//! parses `vers=3,proto=tcp,port=...,addr=...` itself, so no mount.nfs),
//! mount points made where none exist, retries for network filesystems.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use vmshare_plan::guest::GuestMount;

use crate::InitError;

/// How long a network mount keeps retrying. The server is up before the VM
/// boots, so this only covers a slow guest network coming up.
const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Where writable layers over read-only directories live.
const OVERLAY_DIR: &str = "/run/vmshare/overlay";

/// Filesystems to unmount (and so flush) before power-off.
const FLUSHED_TYPES: [&str; 7] = ["nfs", "nfs4", "ext4", "erofs", "overlay", "9p", "virtiofs"];

/// Performs one mount; returns how long it took.
pub(crate) fn mount(m: &GuestMount) -> Result<Duration, InitError> {
    let start = Instant::now();
    let fail = |what: String| InitError::Mount(format!("volume {}: {what}", display_name(m)));
    if !m.target.starts_with('/') {
        return Err(fail(format!(
            "target {:?} is not an absolute path",
            m.target
        )));
    }
    // The OCI mkdir/ prefix: the target, an overlay's upperdir and workdir.
    for dir in &m.mkdir {
        make_mount_point(Path::new(dir), false)
            .map_err(|e| fail(format!("creating {dir}: {e}")))?;
    }
    let target = Path::new(&m.target);
    make_mount_point(target, m.file).map_err(|e| fail(format!("making mount point: {e}")))?;

    let bind = m.fstype == "bind";
    let mut flags = generic_flags(&m.flags);
    if bind {
        flags |= MountFlags::BIND;
    } else if m.readonly {
        flags |= MountFlags::RDONLY;
    }
    let fstype = if bind { "none" } else { m.fstype.as_str() };
    let data = CString::new(m.data.as_str())
        .map_err(|_| fail("mount options contain a NUL byte".into()))?;

    let mut delay = Duration::from_millis(20);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match rustix::mount::mount(m.source.as_str(), target, fstype, flags, data.as_c_str()) {
            Ok(()) => break,
            Err(e) if m.retry && retryable(e) && start.elapsed() + delay < RETRY_BUDGET => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let server = server_of(m).map(|s| format!("; {s}")).unwrap_or_default();
                return Err(fail(format!(
                    "mount {} on {} ({}) failed after {tries} tries in {:.1} s: {} ({}){server}",
                    m.source,
                    m.target,
                    m.fstype,
                    start.elapsed().as_secs_f64(),
                    std::io::Error::from(e),
                    errno_name(e),
                )));
            }
        }
    }
    // A bind mount takes its read-only flag, and nosuid, nodev, noexec and
    // the atime flags, only on a remount: made at once, they were dropped
    // (a single-file volume's `noexec` did nothing).
    let extra = generic_flags(&m.flags);
    if bind && (m.readonly || !extra.is_empty()) {
        let mut again = MountFlags::BIND | extra;
        if m.readonly {
            again |= MountFlags::RDONLY;
        }
        rustix::mount::mount_remount(target, again, c"").map_err(|e| {
            fail(format!(
                "applying {} to the bind mount on {}: {e}",
                if m.readonly { "ro" } else { "its flags" },
                m.target
            ))
        })?;
    }
    Ok(start.elapsed())
}

fn display_name(m: &GuestMount) -> &str {
    if m.name.is_empty() {
        &m.target
    } else {
        &m.name
    }
}

fn generic_flags(names: &[String]) -> MountFlags {
    names.iter().fold(MountFlags::empty(), |acc, f| {
        acc | match f.as_str() {
            "nosuid" => MountFlags::NOSUID,
            "nodev" => MountFlags::NODEV,
            "noexec" => MountFlags::NOEXEC,
            "noatime" => MountFlags::NOATIME,
            "relatime" => MountFlags::RELATIME,
            "strictatime" => MountFlags::STRICTATIME,
            "nodiratime" => MountFlags::NODIRATIME,
            "lazytime" => MountFlags::LAZYTIME,
            "sync" => MountFlags::SYNCHRONOUS,
            _ => MountFlags::empty(),
        }
    })
}

/// Errors that say "this will never work" are reported at once.
fn retryable(e: Errno) -> bool {
    !matches!(
        e,
        Errno::INVAL | Errno::NODEV | Errno::PERM | Errno::ACCESS | Errno::NOENT | Errno::NOTDIR
    )
}

/// "NFS server 10.0.2.2 port 2049", from the mount's text options.
fn server_of(m: &GuestMount) -> Option<String> {
    let opt = |key: &str| {
        m.data
            .split(',')
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let addr = opt("addr")?;
    let port = opt("port").unwrap_or("2049");
    Some(format!(
        "{} server {addr} port {port}",
        m.fstype.to_uppercase()
    ))
}

fn errno_name(e: Errno) -> &'static str {
    match e {
        Errno::CONNREFUSED => "ECONNREFUSED",
        Errno::TIMEDOUT => "ETIMEDOUT",
        Errno::HOSTUNREACH => "EHOSTUNREACH",
        Errno::NETUNREACH => "ENETUNREACH",
        Errno::ACCESS => "EACCES",
        Errno::PERM => "EPERM",
        Errno::NOENT => "ENOENT",
        Errno::NOTDIR => "ENOTDIR",
        Errno::IO => "EIO",
        Errno::INVAL => "EINVAL",
        Errno::NODEV => "ENODEV",
        Errno::ROFS => "EROFS",
        Errno::AGAIN => "EAGAIN",
        Errno::PROTONOSUPPORT => "EPROTONOSUPPORT",
        _ => "errno",
    }
}

/// Makes sure `target` exists as a directory (or, for a single-file
/// volume, a file). Where a parent is read-only, a tmpfs-backed overlay
/// over the nearest existing directory makes it writable without changing
/// what was there.
fn make_mount_point(target: &Path, file: bool) -> std::io::Result<()> {
    match create(target, file) {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            overlay_writable(&nearest_existing(target))?;
            create(target, file)
        }
        other => other,
    }
}

fn create(target: &Path, file: bool) -> std::io::Result<()> {
    if file {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if target.exists() {
            return Ok(());
        }
        std::fs::File::create(target).map(drop)
    } else {
        std::fs::create_dir_all(target)
    }
}

fn nearest_existing(target: &Path) -> PathBuf {
    let mut dir = target.to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            break;
        }
    }
    dir
}

fn overlay_writable(dir: &Path) -> std::io::Result<()> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = PathBuf::from(OVERLAY_DIR).join(n.to_string());
    let (upper, work) = (base.join("upper"), base.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.display(),
        upper.display(),
        work.display()
    );
    let data =
        CString::new(data).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::mount::mount(
        "overlay",
        dir,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )?;
    Ok(())
}

/// Unmounts the volumes, newest first, so that network filesystems flush
/// before power-off. Best effort: a busy mount is left to `sync`.
pub(crate) fn unmount_all() {
    let Ok(table) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let targets: Vec<&str> = table
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
            FLUSHED_TYPES.contains(&fstype).then_some(target)
        })
        .collect();
    for target in targets.iter().rev() {
        let _ = rustix::mount::unmount(*target, UnmountFlags::empty());
    }
}
