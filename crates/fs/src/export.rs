//! Export configuration: which host directory is served, under which mount
//! path, to which clients, with which options.

use std::net::IpAddr;
use std::path::PathBuf;

/// How guest identities are mapped to host identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Squash {
    /// uid 0 / gid 0 become the anonymous ids (exports(5) default).
    #[default]
    Root,
    /// Identities pass through unchanged.
    None,
    /// Every identity becomes the anonymous ids.
    All,
}

/// Options of one client rule (exports(5) spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// `ro` when false.
    pub writable: bool,
    /// Identity mapping.
    pub squash: Squash,
    /// Host uid that squashed callers become (`anonuid`, default 65534).
    pub anonuid: u32,
    /// Host gid that squashed callers become (`anongid`, default 65534).
    pub anongid: u32,
    /// `secure`: only accept calls from source ports below 1024.
    pub secure: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { writable: true, squash: Squash::Root, anonuid: 65534, anongid: 65534, secure: true }
    }
}

/// Which clients a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMatch {
    /// `*`: everyone.
    Any,
    /// An address with a prefix length (a single address has the full length).
    Net {
        /// Network address.
        addr: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
}

/// One `CLIENT(options)` item of an export line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    /// Who it applies to.
    pub client: ClientMatch,
    /// What they get.
    pub options: ExportOptions,
}

/// One export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Host directory served.
    pub path: PathBuf,
    /// Path clients mount (`/data`); defaults to the host path.
    pub mount_path: String,
    /// Rules, first match wins; no match means no access.
    pub clients: Vec<ClientRule>,
    /// Serve only this one name in the export's root directory: the way a
    /// single host file is exported without its siblings.
    pub single_file: Option<std::ffi::OsString>,
}
