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

// Placeholder until the real backend lands: every procedure answers
// SERVERFAULT, so the server layer can be built and tested against it.
mod placeholder {
    use super::FsBackend;
    use vmshare_proto::backend::*;
    use vmshare_proto::mount::MountStat;
    use vmshare_proto::nfs3::*;

    const F: NfsStat = NfsStat::ServerFault;
    impl Backend for FsBackend {
        fn getattr(&self, _: &Caller<'_>, _: &FileHandle) -> Result<Fattr, NfsStat> { Err(F) }
        fn setattr(&self, _: &Caller<'_>, _: &FileHandle, _: &Sattr, _: Option<NfsTime>) -> NfsResult<WccData, WccData> { Err(F.into()) }
        fn lookup(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8]) -> NfsResult<LookupOk, PostOpAttr> { Err(F.into()) }
        fn access(&self, _: &Caller<'_>, _: &FileHandle, _: u32) -> NfsResult<(PostOpAttr, u32), PostOpAttr> { Err(F.into()) }
        fn readlink(&self, _: &Caller<'_>, _: &FileHandle) -> NfsResult<(PostOpAttr, Vec<u8>), PostOpAttr> { Err(F.into()) }
        fn read(&self, _: &Caller<'_>, _: &FileHandle, _: u64, _: &mut [u8]) -> NfsResult<ReadOk, PostOpAttr> { Err(F.into()) }
        fn write(&self, _: &Caller<'_>, _: &FileHandle, _: u64, _: StableHow, _: &[u8]) -> NfsResult<WriteOk, WccData> { Err(F.into()) }
        fn create(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8], _: &CreateHow) -> NfsResult<Created, WccData> { Err(F.into()) }
        fn mkdir(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8], _: &Sattr) -> NfsResult<Created, WccData> { Err(F.into()) }
        fn symlink(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8], _: &Sattr, _: &[u8]) -> NfsResult<Created, WccData> { Err(F.into()) }
        fn mknod(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8], _: &MknodKind) -> NfsResult<Created, WccData> { Err(F.into()) }
        fn remove(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8]) -> NfsResult<WccData, WccData> { Err(F.into()) }
        fn rmdir(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8]) -> NfsResult<WccData, WccData> { Err(F.into()) }
        fn rename(&self, _: &Caller<'_>, _: &FileHandle, _: &[u8], _: &FileHandle, _: &[u8]) -> NfsResult<RenameWcc, RenameWcc> { Err(F.into()) }
        fn link(&self, _: &Caller<'_>, _: &FileHandle, _: &FileHandle, _: &[u8]) -> NfsResult<LinkData, LinkData> { Err(F.into()) }
        fn readdir(&self, _: &Caller<'_>, _: &FileHandle, _: u64, _: Verifier, _: &mut dyn DirSink) -> NfsResult<ReaddirOk, PostOpAttr> { Err(F.into()) }
        fn fsstat(&self, _: &Caller<'_>, _: &FileHandle) -> NfsResult<(PostOpAttr, FsStat), PostOpAttr> { Err(F.into()) }
        fn fsinfo(&self, _: &Caller<'_>, _: &FileHandle) -> NfsResult<(PostOpAttr, FsInfo), PostOpAttr> { Err(F.into()) }
        fn pathconf(&self, _: &Caller<'_>, _: &FileHandle) -> NfsResult<(PostOpAttr, PathConf), PostOpAttr> { Err(F.into()) }
        fn commit(&self, _: &Caller<'_>, _: &FileHandle, _: u64, _: u32) -> NfsResult<(WccData, Verifier), WccData> { Err(F.into()) }
        fn mount(&self, _: &Caller<'_>, _: &[u8]) -> Result<FileHandle, MountStat> { Err(MountStat::ServerFault) }
        fn export_list(&self) -> Vec<ExportEntry> { Vec::new() }
    }
}
