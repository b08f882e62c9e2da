//! The host filesystem backend of vmshare's NFS server (in progress).
#![deny(missing_docs)]

pub mod export;

pub use export::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};

use std::path::Path;

/// Error of the filesystem layer at setup time (per-request errors are NFS
/// status codes, not this).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An export could not be opened.
    #[error("export {path}: {source}")]
    Export {
        /// The host path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The backend serving a set of exports from the host filesystem.
#[derive(Debug)]
pub struct FsBackend {
    exports: Vec<ExportConfig>,
}

impl FsBackend {
    /// Opens every export and loads (or creates) the handle key in
    /// `state_dir`.
    pub fn new(exports: Vec<ExportConfig>, _state_dir: &Path) -> Result<FsBackend, FsError> {
        Ok(FsBackend { exports })
    }

    /// The exports served.
    pub fn exports(&self) -> &[ExportConfig] {
        &self.exports
    }
}
