//! The host filesystem backend of vmshare's NFS server (in progress).
#![deny(missing_docs)]

pub mod export;

pub use export::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};
