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
            "dirsync" => MountFlags::DIRSYNC,
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
/// volume, a file). Where a parent is read-only (a `:ro` volume, an erofs
/// image), the read-only filesystem gets a tmpfs-backed overlay that holds
/// the new mount point without changing what was there, and the overlay
/// is made read-only again once it does: left writable, a `:ro` volume
/// with another volume inside it took writes, which went to guest memory
/// and were lost.
pub(crate) fn make_mount_point(target: &Path, file: bool) -> std::io::Result<()> {
    match create(target, file) {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            let table = std::fs::read("/proc/self/mounts")?;
            let dir = nearest_existing(target);
            let (root, ours) = match mount_of(&table, &dir) {
                Some((root, options)) => {
                    let ours = options.contains(&format!("upperdir={OVERLAY_DIR}/"));
                    (root, ours)
                }
                None => (dir, false),
            };
            if ours {
                remount(&root, false)?;
            } else {
                overlay_writable(&root)?;
            }
            let made = create(target, file);
            remount(&root, true)?;
            made
        }
        other => other,
    }
}

/// A path as overlayfs reads it from mount data, which the kernel splits
/// at commas (and `lowerdir` at colons): a backslash before either, or
/// before a backslash, keeps it in the path. A volume at `/a,b` would
/// otherwise be read as `/a` and an option `b`.
fn overlay_escaped(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The mount point of the filesystem `dir` is on, and its options, from
/// a `/proc/self/mounts` table: the last-mounted of the longest targets
/// that contain `dir`.
fn mount_of(table: &[u8], dir: &Path) -> Option<(PathBuf, String)> {
    mount_table(table)
        .into_iter()
        .filter(|m| dir.starts_with(&m.target))
        .map(|m| (m.target, m.options))
        .fold(None, |best: Option<(PathBuf, String)>, m| match best {
            Some(b) if b.0.components().count() > m.0.components().count() => Some(b),
            _ => Some(m),
        })
}

/// One line of `/proc/self/mounts`.
struct MountLine {
    target: PathBuf,
    fstype: String,
    options: String,
}

/// The lines of a `/proc/self/mounts` table, in mount order, with the
/// target's escapes undone.
fn mount_table(table: &[u8]) -> Vec<MountLine> {
    table
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let mut f = l.split(|&b| b == b' ');
            let (_, target, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(MountLine {
                target: unescape(target),
                fstype: String::from_utf8_lossy(fstype).into_owned(),
                options: String::from_utf8_lossy(options).into_owned(),
            })
        })
        .collect()
}

/// A mounts-table field with the kernel's octal escapes (`\040` for a
/// space) undone.
fn unescape(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Makes the mount at `root` read-only or writable (the mount, not the
/// filesystem: only this view of it).
fn remount(root: &Path, readonly: bool) -> std::io::Result<()> {
    let mut flags = MountFlags::BIND;
    if readonly {
        flags |= MountFlags::RDONLY;
    }
    rustix::mount::mount_remount(root, flags, "")?;
    Ok(())
}

fn create(target: &Path, file: bool) -> std::io::Result<()> {
    // Said here, as docker says it: the mount itself would fail with
    // ENOTDIR, and creating the directory with "File exists".
    match std::fs::metadata(target) {
        Ok(m) if file && m.is_dir() => {
            return Err(std::io::Error::other(format!(
                "{} is a directory in the guest: a file cannot be mounted on a directory",
                target.display()
            )))
        }
        Ok(m) if !file && !m.is_dir() => {
            return Err(std::io::Error::other(format!(
                "{} is a file in the guest: a directory cannot be mounted on a file",
                target.display()
            )))
        }
        Ok(_) => return Ok(()),
        Err(_) => {}
    }
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
    let mut data = b"lowerdir=".to_vec();
    data.extend(overlay_escaped(dir));
    data.extend_from_slice(b",upperdir=");
    data.extend(overlay_escaped(&upper));
    data.extend_from_slice(b",workdir=");
    data.extend(overlay_escaped(&work));
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
/// before power-off. Best effort: a busy mount is left to `sync`. Targets
/// are read with their escapes undone: one with a space (`\040` in the
/// table) used to be missed, its flush left to `sync`.
pub(crate) fn unmount_all() {
    let Ok(table) = std::fs::read("/proc/self/mounts") else {
        return;
    };
    let flushed = mount_table(&table)
        .into_iter()
        .filter(|m| FLUSHED_TYPES.contains(&m.fstype.as_str()));
    for m in flushed.collect::<Vec<_>>().iter().rev() {
        let _ = rustix::mount::unmount(&m.target, UnmountFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory volume over a guest file, or a file volume over a
    /// guest directory, is said as such (it read "File exists").
    #[test]
    fn a_mount_point_of_the_other_kind_is_named() {
        let dir = std::env::temp_dir().join(format!("vmshare-mp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("f"), "").unwrap();
        let on_file = create(&dir.join("f"), false).unwrap_err().to_string();
        let on_dir = create(&dir.join("d"), true).unwrap_err().to_string();
        let made = (
            create(&dir.join("new/dir"), false),
            create(&dir.join("new/file"), true),
            create(&dir.join("d"), false),
            create(&dir.join("f"), true),
        );
        let kinds = (dir.join("new/dir").is_dir(), dir.join("new/file").is_file());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            on_file.ends_with("f is a file in the guest: a directory cannot be mounted on a file"),
            "{on_file}"
        );
        assert!(
            on_dir.ends_with(
                "d is a directory in the guest: a file cannot be mounted on a directory"
            ),
            "{on_dir}"
        );
        assert!(
            made.0.is_ok() && made.1.is_ok() && made.2.is_ok() && made.3.is_ok(),
            "{made:?}"
        );
        assert_eq!(kinds, (true, true));
    }

    #[test]
    fn overlay_paths_keep_commas_colons_and_backslashes() {
        assert_eq!(overlay_escaped(Path::new("/data")), b"/data");
        assert_eq!(
            overlay_escaped(Path::new("/a,b:c\\d")),
            b"/a\\,b\\:c\\\\d".to_vec()
        );
    }

    #[test]
    fn the_mount_holding_a_directory_is_the_longest_and_latest() {
        let table = b"rootfs / rootfs rw 0 0\n\
10.0.2.2:/v0 /ro nfs ro,vers=3 0 0\n\
overlay /ro overlay rw,lowerdir=/ro,upperdir=/run/vmshare/overlay/0/upper 0 0\n\
10.0.2.2:/v1 /ro/in\\040ner nfs rw 0 0\n\
/dev/vda /rot ext4 ro 0 0\n";
        let (root, options) = mount_of(table, Path::new("/ro/sub/dir")).unwrap();
        assert_eq!(root, Path::new("/ro"));
        assert!(
            options.contains("upperdir=/run/vmshare/overlay/"),
            "{options}"
        );
        let (root, _) = mount_of(table, Path::new("/ro/in ner/x")).unwrap();
        assert_eq!(root, Path::new("/ro/in ner"));
        let (root, _) = mount_of(table, Path::new("/rot")).unwrap();
        assert_eq!(
            root,
            Path::new("/rot"),
            "a component boundary, not a prefix"
        );
        let (root, _) = mount_of(table, Path::new("/etc")).unwrap();
        assert_eq!(root, Path::new("/"));
        assert_eq!(unescape(b"a\\134b\\999"), Path::new("a\\b\\999"));
        // unmount_all finds a target with a space by its real path.
        let nfs: Vec<PathBuf> = mount_table(table)
            .into_iter()
            .filter(|m| m.fstype == "nfs")
            .map(|m| m.target)
            .collect();
        assert_eq!(nfs, [Path::new("/ro"), Path::new("/ro/in ner")]);
    }
}
