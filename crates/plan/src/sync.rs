//! Writing a copy volume back at exit, refusing when the host changed.
//!
//! At start the runner takes a [`Snapshot`] of the host directory just
//! before building the image. At exit it extracts the guest's version
//! ([`crate::image::extract_ext4`]) and calls [`sync_back`]: if the host
//! directory no longer matches the snapshot, someone changed it while the
//! VM ran, and overwriting would lose their work, so both versions are kept
//! and the user decides. Files are compared by kind, size, mode and
//! modification time in whole seconds, as rsync does by default (debugfs
//! restores times to the second), and by contents where those match.
//!
//! What the extraction cannot carry back: FIFOs, sockets and devices (the
//! host's stay as they are, made or removed in the guest or not, unless
//! the guest put a file, link or directory under their name), hard
//! links (each name comes back as a file of its own), holes (a sparse
//! file comes back allocated), and the set-id and sticky bits of entries
//! whose permissions the guest changed.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a sync-back did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The host directory changed while the VM ran.
    #[error("{} changed on the host while the VM ran ({changed}); left it as it is and kept the guest's version in {}; merge them by hand", .host.display(), .kept.display())]
    HostChanged {
        /// The host directory.
        host: PathBuf,
        /// The first path that differs.
        changed: String,
        /// Where the guest's version now is.
        kept: PathBuf,
    },
    /// The write-back failed after it had changed the host directory.
    #[error("{}: the write-back stopped partway ({source}), so it holds some of the guest's changes and not the others; {}", .host.display(), match .kept_error {
        None => format!("the guest's whole version is kept in {}; merge them by hand", .kept.display()),
        Some(why) => format!("keeping the guest's version in {} failed too: {why}", .kept.display()),
    })]
    Partial {
        /// The host directory.
        host: PathBuf,
        /// Why it stopped.
        source: Box<SyncError>,
        /// Where the guest's version now is.
        kept: PathBuf,
        /// Why it could not be kept there, if it could not.
        kept_error: Option<Box<SyncError>>,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl SyncError {
    /// Whether the guest's version was kept beside the host directory
    /// (when not, the caller keeps it some other way, or it is lost).
    pub fn guest_version_kept(&self) -> bool {
        matches!(
            self,
            SyncError::HostChanged { .. }
                | SyncError::Partial {
                    kept_error: None,
                    ..
                }
        )
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Io { what, source }
}

const DIR: u32 = 0o040000;
const REG: u32 = 0o100000;
const LNK: u32 = 0o120000;

/// Whether debugfs rdump extracts entries of this kind (it skips FIFOs,
/// sockets and devices).
fn is_dumped_kind(kind: u32) -> bool {
    matches!(kind, DIR | REG | LNK)
}

/// Whether two files hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> Result<bool, SyncError> {
    use std::io::Read;
    let open = |p: &Path| std::fs::File::open(p).map_err(io(format!("reading {}", p.display())));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa
            .read(&mut ba)
            .map_err(io(format!("reading {}", a.display())))?;
        if n == 0 {
            // Equal sizes were checked; the other must end here too.
            return Ok(fb
                .read(&mut bb[..1])
                .map_err(io(format!("reading {}", b.display())))?
                == 0);
        }
        let mut got = 0;
        while got < n {
            let m = fb
                .read(&mut bb[got..n])
                .map_err(io(format!("reading {}", b.display())))?;
            if m == 0 {
                return Ok(false);
            }
            got += m;
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Puts the guest's `from` at `to` by a rename over it, with its times and
/// (as root) its owner. Not by writing into `to`: a host file hard-linked
/// to another name had both names changed, where the guest had replaced
/// only one.
fn replace_file(from: &Path, to: &Path) -> Result<(), SyncError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    // A short name of its own beside `to`, made new (O_EXCL, which
    // follows no link): named after the guest's file, one of 250 bytes
    // gave a name too long, and the write-back stopped halfway. Numbered
    // on from the last one used, not from 0 each time: a guest that
    // left thousands of names `.vmshare-sync-N` beside thousands of
    // changed files would have had each of them tried for each file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut made = None;
    for _ in 0..u32::MAX {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".vmshare-sync-{n}"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => {
                made = Some((tmp, f));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(format!("writing {}", tmp.display()))(e)),
        }
    }
    let Some((tmp, out)) = made else {
        return Err(io(format!("writing into {}", dir.display()))(
            std::io::ErrorKind::AlreadyExists.into(),
        ));
    };
    let written = fill(from, &tmp, out).and_then(|()| {
        std::fs::rename(&tmp, to).map_err(io(format!("replacing {}", to.display())))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `tmp` (open as `out`) as a copy of `from`: its bytes, mode,
/// times and, as root, owner.
fn fill(from: &Path, tmp: &Path, mut out: std::fs::File) -> Result<(), SyncError> {
    let md = std::fs::symlink_metadata(from).map_err(io(format!("stat {}", from.display())))?;
    let mut src = std::fs::File::open(from).map_err(io(format!("reading {}", from.display())))?;
    std::io::copy(&mut src, &mut out).map_err(io(format!("writing {}", tmp.display())))?;
    out.set_permissions(md.permissions())
        .map_err(io(format!("chmod {}", tmp.display())))?;
    let times = std::fs::FileTimes::new()
        .set_accessed(md.accessed().unwrap_or(std::time::SystemTime::UNIX_EPOCH))
        .set_modified(md.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH));
    out.set_times(times)
        .map_err(io(format!("setting the times of {}", tmp.display())))?;
    // Only root gives a file away; anyone else keeps it as their own.
    match std::os::unix::fs::fchown(&out, Some(md.uid()), Some(md.gid())) {
        Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
            Err(io(format!("chown {}", tmp.display()))(e))
        }
        _ => Ok(()),
    }
}

/// What one entry looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: u32,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
}

/// The state of a directory tree, by relative path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot(BTreeMap<PathBuf, Entry>);

impl Snapshot {
    /// Records `dir`'s tree (not following symlinks).
    pub fn take(dir: &Path) -> Result<Snapshot, SyncError> {
        let mut map = BTreeMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            for e in std::fs::read_dir(&abs).map_err(io(format!("reading {}", abs.display())))? {
                let e = e.map_err(io(format!("reading {}", abs.display())))?;
                let m = e
                    .metadata()
                    .map_err(io(format!("stat {}", e.path().display())))?;
                let path = rel.join(e.file_name());
                if m.is_dir() {
                    stack.push(path.clone());
                }
                let size = if m.is_dir() { 0 } else { m.len() };
                map.insert(
                    path,
                    Entry {
                        kind: m.mode() & 0o170000,
                        mode: m.mode() & 0o7777,
                        size,
                        mtime: (m.mtime(), m.mtime_nsec()),
                    },
                );
            }
        }
        Ok(Snapshot(map))
    }

    /// The first path that differs from `other`, if any.
    fn first_difference(&self, other: &Snapshot) -> Option<PathBuf> {
        let a = self.0.iter();
        let mut b = other.0.iter();
        for (pa, ea) in a {
            match b.next() {
                Some((pb, eb)) if pa == pb && ea == eb => {}
                Some((pb, _)) => return Some(pa.min(pb).clone()),
                None => return Some(pa.clone()),
            }
        }
        b.next().map(|(p, _)| p.clone())
    }
}

/// What a sync-back changed on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Files and links written.
    pub written: usize,
    /// Entries removed because the guest removed them.
    pub removed: usize,
}

/// Makes `host` equal to `guest` (the extracted image) if `host` still
/// matches `baseline`; otherwise moves `guest` to `kept` and fails with
/// [`SyncError::HostChanged`].
pub fn sync_back(
    host: &Path,
    guest: &Path,
    baseline: &Snapshot,
    kept: &Path,
) -> Result<SyncReport, SyncError> {
    let now = Snapshot::take(host)?;
    if let Some(changed) = now.first_difference(baseline) {
        keep(guest, kept)?;
        return Err(SyncError::HostChanged {
            host: host.to_path_buf(),
            changed: changed.display().to_string(),
            kept: kept.to_path_buf(),
        });
    }
    let theirs = Snapshot::take(guest)?;
    // Entries are changed one by one: stopped partway (a full disk, a
    // file the host made immutable), the host directory is part old, part
    // new, and the guest's version, in the run's directory, would go with
    // it at exit.
    apply(host, guest, &now, &theirs).map_err(|source| SyncError::Partial {
        host: host.to_path_buf(),
        source: Box::new(source),
        kept: kept.to_path_buf(),
        kept_error: keep(guest, kept).err().map(Box::new),
    })
}

/// Moves the guest's version `guest` to `kept`, beside the host
/// directory: by a rename, or, when that is on another filesystem than
/// the run's directory (where a rename fails with EXDEV), by a copy.
fn keep(guest: &Path, kept: &Path) -> Result<(), SyncError> {
    let what = || format!("keeping the guest's version in {}", kept.display());
    match std::fs::rename(guest, kept) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {}
        r => return r.map_err(io(what())),
    }
    let tree = Snapshot::take(guest)?;
    std::fs::create_dir(kept).map_err(io(what()))?;
    // Parents before children; each directory's mode once it is filled
    // (one without write permission could not be filled as a user).
    let mut dirs = vec![(kept.to_path_buf(), guest.to_path_buf())];
    for (rel, entry) in &tree.0 {
        let (from, to) = (guest.join(rel), kept.join(rel));
        match entry.kind {
            DIR => {
                std::fs::create_dir(&to).map_err(io(format!("creating {}", to.display())))?;
                dirs.push((to, from));
            }
            LNK => {
                let target =
                    std::fs::read_link(&from).map_err(io(format!("reading {}", from.display())))?;
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(io(format!("linking {}", to.display())))?;
            }
            REG => {
                let out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&to)
                    .map_err(io(format!("writing {}", to.display())))?;
                fill(&from, &to, out)?;
            }
            _ => {}
        }
    }
    for (to, from) in dirs.iter().rev() {
        let mode = std::fs::symlink_metadata(from)
            .map_err(io(format!("stat {}", from.display())))?
            .permissions();
        std::fs::set_permissions(to, mode).map_err(io(format!("chmod {}", to.display())))?;
    }
    Ok(())
}

/// `remove_dir_all`, also through directories without write permission,
/// which a user other than root cannot empty (root's CAP_DAC_OVERRIDE
/// passes them): a guest's tree (a Go module cache is all 0555), in the
/// host directory it replaced or in the run directory it was read back
/// into, was left behind. On a refusal every directory below `path` gets
/// owner read, write and search, without following links, and the
/// removal is tried again.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // A stack, not recursion: the guest chose how deep it is.
            let mut dirs = vec![path.to_path_buf()];
            while let Some(dir) = dirs.pop() {
                let Ok(m) = std::fs::symlink_metadata(&dir) else {
                    continue;
                };
                if !m.is_dir() {
                    continue;
                }
                let mode = m.permissions().mode() & 0o7777;
                if mode & 0o700 != 0o700 {
                    let _ = std::fs::set_permissions(
                        &dir,
                        std::fs::Permissions::from_mode(mode | 0o700),
                    );
                }
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(e.path());
                    }
                }
            }
            std::fs::remove_dir_all(path)
        }
        r => r,
    }
}

/// Fails unless the directory `host/rel` is written into is one, not a
/// symlink. The guest's tree cannot name a path through one of its links
/// (the extraction holds each name once), but on a host filesystem that
/// folds case, its `A -> /etc` and `a/passwd` are one name there, and the
/// second was written through the first, as whoever runs vmshare. The
/// parent alone is looked at: entries come parents first, and each
/// directory entry, once done, is a real directory on the host (made, or
/// found one without following links), so the ancestors were checked in
/// their turn. By name, with nothing else changing the host directory
/// meanwhile: its snapshot matched just before.
fn no_link_on_the_way(host: &Path, rel: &Path) -> Result<(), SyncError> {
    let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let at = host.join(parent);
    let md = std::fs::symlink_metadata(&at).map_err(io(format!("stat {}", at.display())))?;
    if !md.is_dir() {
        return Err(io(format!("writing under {}", at.display()))(
            std::io::Error::other(
                "not a directory but a link or a file; refusing to write through it",
            ),
        ));
    }
    Ok(())
}

/// Makes `host` (whose tree is `now`) equal to `guest` (whose tree is
/// `theirs`), entry by entry.
///
/// Run by a user other than root, a directory without write permission
/// (a Go module cache is all 0555) could be neither emptied nor filled,
/// and one the guest made read-only, chmodded before its entries were
/// written, refused them: each such directory is opened (u+wx) for the
/// write-back and given its mode at the end, the host's own where the
/// guest left its permissions alone, and the guest's where it changed
/// them, children before parents.
fn apply(
    host: &Path,
    guest: &Path,
    now: &Snapshot,
    theirs: &Snapshot,
) -> Result<SyncReport, SyncError> {
    let mut modes = DirModes::default();
    let result = apply_entries(host, guest, now, theirs, &mut modes);
    let restored = modes.finish();
    let report = result?;
    restored?;
    Ok(report)
}

/// Directory modes to set once the write-back is done.
#[derive(Default)]
struct DirModes {
    /// Directories opened for the write-back, with the mode they had.
    opened: Vec<(PathBuf, u32)>,
    /// Directories that get the guest's mode, parents before children.
    final_modes: Vec<(PathBuf, u32)>,
}

impl DirModes {
    /// Makes `dir` writable and searchable by its owner, if it is not.
    /// Its mode goes back in [`finish`](Self::finish).
    fn open(&mut self, dir: &Path) -> Result<(), SyncError> {
        // Root too: it would not need the permission, but whether it acts
        // as root is the thread's filesystem identity, which it cannot ask
        // cheaply; the mode goes back all the same.
        if self.opened.iter().any(|(p, _)| p == dir) {
            return Ok(());
        }
        let mode = std::fs::symlink_metadata(dir)
            .map_err(io(format!("stat {}", dir.display())))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o300 != 0o300 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700))
                .map_err(io(format!("chmod u+rwx {}", dir.display())))?;
            self.opened.push((dir.to_path_buf(), mode));
        }
        Ok(())
    }

    /// Puts back the modes of the directories opened (those still there),
    /// then sets the guest's, children first; the first failure is
    /// returned, after every mode has been tried.
    fn finish(self) -> Result<(), SyncError> {
        let mut first = None;
        let opened = self.opened.iter().rev();
        for (dir, mode) in opened.chain(self.final_modes.iter().rev()) {
            // Through a descriptor of the directory itself, never by a
            // path that may now be a link: a directory opened here and
            // then replaced by the guest's `d -> /etc` would have given
            // /etc the old directory's mode. Gone or not a directory any
            // more (removed, replaced), it is left alone.
            let Ok(d) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc_flags::NOFOLLOW_DIRECTORY)
                .open(dir)
            else {
                continue;
            };
            if let Err(e) = d.set_permissions(std::fs::Permissions::from_mode(*mode)) {
                first.get_or_insert_with(|| io(format!("chmod {}", dir.display()))(e));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Open flags, from rustix's values (this crate has no libc).
mod libc_flags {
    /// `O_NOFOLLOW | O_DIRECTORY`: a directory, and not through a link.
    pub(super) const NOFOLLOW_DIRECTORY: i32 =
        (rustix::fs::OFlags::NOFOLLOW.bits() | rustix::fs::OFlags::DIRECTORY.bits()) as i32;
}

/// What [`apply`] does, with the directories' modes left to `modes`.
fn apply_entries(
    host: &Path,
    guest: &Path,
    now: &Snapshot,
    theirs: &Snapshot,
    modes: &mut DirModes,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let parent = |p: &Path| p.parent().unwrap_or(host).to_path_buf();
    // Removals first, deepest paths first, so directories empty out. The
    // extraction (debugfs rdump) leaves out FIFOs, sockets and devices,
    // so their absence says nothing: they stay (a host FIFO the guest
    // never touched was deleted), unless the guest put something else
    // under their name (a directory found the FIFO in its way, and the
    // write-back stopped halfway).
    for (rel, entry) in now.0.iter().rev() {
        let gone = match theirs.0.get(rel) {
            None => is_dumped_kind(entry.kind),
            Some(t) => t.kind != entry.kind,
        };
        if gone {
            let p = host.join(rel);
            modes.open(&parent(&p))?;
            let r = if entry.kind == DIR {
                remove_tree(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(io(format!("removing {}", p.display())))?;
            report.removed += 1;
        }
    }
    // Then additions and changes, parents before children.
    for (rel, entry) in &theirs.0 {
        let (from, to) = (guest.join(rel), host.join(rel));
        no_link_on_the_way(host, rel)?;
        let before = now.0.get(rel).filter(|n| n.kind == entry.kind);
        // Extracted images keep whole seconds only: compare at that grain,
        // and the contents when that says nothing changed (a same-size
        // edit whose time was put back, as `cp -p`, `tar x` or `touch -r`
        // leave it, was lost).
        let same = match before {
            Some(n) if n.size == entry.size && n.mtime.0 == entry.mtime.0 => match entry.kind {
                REG => same_contents(&from, &to)?,
                LNK => std::fs::read_link(&from).ok() == std::fs::read_link(&to).ok(),
                _ => true,
            },
            _ => false,
        };
        let changes = match entry.kind {
            // Not `is_dir`, which follows a link: the mode set at the end
            // would have gone to the link's target.
            DIR => !std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()),
            LNK | REG => !same,
            _ => false,
        };
        if changes {
            modes.open(&parent(&to))?;
        }
        match entry.kind {
            DIR if changes => {
                std::fs::create_dir(&to).map_err(io(format!("creating {}", to.display())))?;
            }
            LNK if changes => {
                let target =
                    std::fs::read_link(&from).map_err(io(format!("reading {}", from.display())))?;
                let _ = std::fs::remove_file(&to);
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(io(format!("linking {}", to.display())))?;
                report.written += 1;
            }
            REG if changes => {
                replace_file(&from, &to)?;
                report.written += 1;
            }
            _ => {}
        }
        if entry.kind == LNK {
            continue;
        }
        // The extraction drops set-id and sticky bits (a directory of mode
        // 1777 came back 0777): a host entry whose permission bits the
        // guest left alone keeps its mode whole.
        let kept = before.is_some_and(|n| n.mode & 0o777 == entry.mode & 0o777);
        if entry.kind == DIR {
            if !kept {
                modes.final_modes.push((to, entry.mode));
            }
        } else if !kept {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(entry.mode))
                .map_err(io(format!("chmod {}", to.display())))?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the host folds case, a guest's `A -> /etc` and `a/passwd`
    /// meet in one host name; nothing is written through a link on the
    /// way (no case-folding filesystem here: the link is made directly).
    #[test]
    fn nothing_is_written_through_a_link_on_the_way() {
        let t = std::env::temp_dir().join(format!("vmshare-sync-link-{}", std::process::id()));
        let host = t.join("host");
        std::fs::create_dir_all(host.join("dir")).unwrap();
        std::fs::create_dir_all(t.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.join("elsewhere"), host.join("link")).unwrap();
        std::fs::write(host.join("file"), "x").unwrap();
        assert!(no_link_on_the_way(&host, Path::new("dir/f")).is_ok());
        assert!(no_link_on_the_way(&host, Path::new("top")).is_ok());
        let e = no_link_on_the_way(&host, Path::new("link/passwd")).unwrap_err();
        assert!(
            e.to_string().contains("refusing to write through it"),
            "{e}"
        );
        assert!(no_link_on_the_way(&host, Path::new("file/x")).is_err());
        std::fs::remove_dir_all(&t).unwrap();
    }
}
