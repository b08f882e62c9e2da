//! The host filesystem backend of vmshare's NFS server.
//!
//! It implements [`vmshare_proto::Backend`] over host directories, and is
//! where a guest's requests meet the host: confinement beneath each export
//! ([`backend`]), signed handles that survive restarts ([`handle`]), the
//! caller's identity after squashing ([`cred`]), and the translation of
//! host attributes and errors ([`attr`]). It never sees XDR.
#![deny(missing_docs)]
// Failure arms carry WCC data by value on purpose: replies are built without
// allocating, and the data is a few hundred bytes on the stack.
#![allow(clippy::result_large_err)]

pub mod attr;
pub mod backend;
mod closer;
pub mod cred;
mod ecache;
pub mod export;
pub mod exports_file;
pub mod handle;
mod hcache;
mod sys;

pub use backend::{FsBackend, Reloaded};
pub use export::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};

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
    /// The state directory (handle key) could not be used.
    #[error("state {path}: {source} (the server keeps its file handle key there; check the directory's permissions)")]
    State {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The handle key found is not safe to use, or damaged.
    #[error("{0}")]
    Key(String),
    /// Two exports share one mount path.
    #[error("two exports are mounted as {mount_path}; give each a distinct mount path")]
    Duplicate {
        /// The mount path.
        mount_path: String,
    },
}
