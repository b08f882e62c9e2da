//! Facts about the host file system, behind a trait.
//!
//! Planning needs to know whether a source is a directory, a file or
//! missing (a single file is exported through its parent; a missing image
//! is an error). Asking through [`HostFacts`] keeps the planner free of I/O:
//! tests and `vmshare plan` goldens pass a [`FakeHost`], the runner passes
//! [`SystemHost`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::ImageFormat;

/// What a host path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// Something else (socket, device...).
    Other,
    /// Nothing there.
    Missing,
    /// Not to be looked at by this user: a directory on the way to it is
    /// not searchable (EACCES), which only a user other than root meets.
    Unreachable,
}

impl HostKind {
    /// A phrase for messages.
    pub fn describe(self) -> &'static str {
        match self {
            HostKind::Dir => "a directory",
            HostKind::File => "a file",
            HostKind::Other => "neither a file nor a directory",
            HostKind::Missing => "missing",
            HostKind::Unreachable => "not reachable by this user",
        }
    }
}

/// Answers questions about host paths.
pub trait HostFacts {
    /// What `path` is, following symlinks.
    fn kind(&self, path: &Path) -> HostKind;

    /// `path` with every symbolic link in it resolved (as a bind mount
    /// resolves its source). The default: `path` itself.
    fn resolve(&self, path: &Path) -> PathBuf {
        path.to_path_buf()
    }

    /// The image format of the file at `path`, read from its superblock:
    /// `Some(None)` for a file that is neither ext4 nor erofs, `None`
    /// when this host cannot tell (the default: made-up hosts).
    fn image_format(&self, _path: &Path) -> Option<Option<ImageFormat>> {
        None
    }
}

/// The real host: `stat(2)` and nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl HostFacts for SystemHost {
    fn kind(&self, path: &Path) -> HostKind {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => HostKind::Dir,
            Ok(m) if m.is_file() => HostKind::File,
            Ok(_) => HostKind::Other,
            // Told apart from a missing path: run by a user other than
            // root, `-v /root/x:/x` was said not to exist on the host.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => HostKind::Unreachable,
            Err(_) => HostKind::Missing,
        }
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
    }

    fn image_format(&self, path: &Path) -> Option<Option<ImageFormat>> {
        crate::image::detect_format(path).ok()
    }
}

/// A made-up host for tests and examples: paths not listed are
/// directories, unless [`FakeHost::strict`] is set.
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    kinds: BTreeMap<PathBuf, HostKind>,
    strict: bool,
}

impl FakeHost {
    /// A host where every path is a directory.
    pub fn new() -> Self {
        FakeHost::default()
    }

    /// A host where unlisted paths are missing.
    pub fn strict() -> Self {
        FakeHost {
            kinds: BTreeMap::new(),
            strict: true,
        }
    }

    /// Declares what `path` is.
    pub fn with(mut self, path: impl Into<PathBuf>, kind: HostKind) -> Self {
        self.kinds.insert(path.into(), kind);
        self
    }

    /// Declares files: image paths ending in `.ext4`/`.erofs`/`.img` are
    /// files; everything else stays a directory.
    pub fn images_are_files() -> ImagesAreFiles {
        ImagesAreFiles
    }
}

impl HostFacts for FakeHost {
    fn kind(&self, path: &Path) -> HostKind {
        match self.kinds.get(path) {
            Some(k) => *k,
            None if self.strict => HostKind::Missing,
            None => HostKind::Dir,
        }
    }
}

/// A made-up host where paths with an image-like extension (`ext4`, `erofs`,
/// `img`, `raw`) or any other extension are files and the rest are
/// directories: the natural reading of the examples in docs and goldens.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImagesAreFiles;

impl HostFacts for ImagesAreFiles {
    fn kind(&self, path: &Path) -> HostKind {
        if path.extension().is_some() {
            HostKind::File
        } else {
            HostKind::Dir
        }
    }
}
