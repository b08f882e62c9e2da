//! Writing a copy volume back at exit, refusing when the host changed.
//!
//! At start the runner takes a [`Snapshot`] of the host directory just
//! before building the image. At exit it extracts the guest's version
//! ([`crate::image::extract_ext4`]) and calls [`sync_back`]: if the host
//! directory no longer matches the snapshot, someone changed it while the
//! VM ran, and overwriting would lose their work, so both versions are kept
//! and the user decides. Files are compared by kind, size, mode and
//! modification time in whole seconds, as rsync does by default (debugfs
//! restores times to the second).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Io { what, source }
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
        std::fs::rename(guest, kept).map_err(io(format!(
            "keeping the guest's version in {}",
            kept.display()
        )))?;
        return Err(SyncError::HostChanged {
            host: host.to_path_buf(),
            changed: changed.display().to_string(),
            kept: kept.to_path_buf(),
        });
    }
    let theirs = Snapshot::take(guest)?;
    let mut report = SyncReport::default();
    // Removals first, deepest paths first, so directories empty out.
    for (rel, entry) in now.0.iter().rev() {
        let gone = match theirs.0.get(rel) {
            None => true,
            Some(t) => t.kind != entry.kind,
        };
        if gone {
            let p = host.join(rel);
            let r = if entry.kind == 0o040000 {
                std::fs::remove_dir_all(&p)
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
        // Extracted images keep whole seconds only: compare at that grain.
        let same = now.0.get(rel).is_some_and(|n| {
            n.kind == entry.kind && n.size == entry.size && n.mtime.0 == entry.mtime.0
        });
        match entry.kind {
            0o040000 if !to.is_dir() => {
                std::fs::create_dir(&to).map_err(io(format!("creating {}", to.display())))?;
            }
            0o120000 if !same => {
                let target =
                    std::fs::read_link(&from).map_err(io(format!("reading {}", from.display())))?;
                let _ = std::fs::remove_file(&to);
                std::os::unix::fs::symlink(&target, &to)
                    .map_err(io(format!("linking {}", to.display())))?;
                report.written += 1;
            }
            0o100000 if !same => {
                std::fs::copy(&from, &to).map_err(io(format!("writing {}", to.display())))?;
                report.written += 1;
            }
            _ => {}
        }
        if entry.kind != 0o120000 {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(entry.mode))
                .map_err(io(format!("chmod {}", to.display())))?;
        }
    }
    Ok(report)
}
