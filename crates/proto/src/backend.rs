//! The seam between the protocol and a filesystem: [`Backend`].
//!
//! Results mirror RFC 1813's `*res` unions: `Ok` carries the success arm,
//! [`Fail`] carries the status and the data the failure arm still returns
//! (post-op attributes, WCC data), because the Linux client uses those even
//! on errors to keep its cache right.

use std::net::SocketAddr;
use vmshare_wire::rpc::Credential;

use crate::mount::MountStat;
use crate::nfs3::{
    CreateHow, Fattr, FileHandle, MknodKind, NfsStat, NfsTime, PostOpAttr, Sattr, StableHow,
    Verifier, WccData,
};

/// Who is calling.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Peer address; the backend applies the export's client rules to it.
    pub addr: SocketAddr,
    /// The credential as sent; the backend squashes or maps it.
    pub cred: &'a Credential,
}

/// A failed procedure: the status and what the failure arm carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail<T> {
    /// Why it failed (never `NfsStat::Ok`).
    pub status: NfsStat,
    /// WCC or post-op data for the reply.
    pub data: T,
}

impl<T> Fail<T> {
    /// A failure with `data`.
    pub fn new(status: NfsStat, data: T) -> Self {
        Fail { status, data }
    }
}

impl<T: Default> From<NfsStat> for Fail<T> {
    fn from(status: NfsStat) -> Self {
        Fail {
            status,
            data: T::default(),
        }
    }
}

/// Success of LOOKUP.
#[derive(Debug, Clone, Copy)]
pub struct LookupOk {
    /// The object found.
    pub fh: FileHandle,
    /// Its attributes.
    pub attr: PostOpAttr,
    /// The directory's attributes.
    pub dir_attr: PostOpAttr,
}

/// Success of CREATE, MKDIR, SYMLINK and MKNOD.
#[derive(Debug, Clone, Copy, Default)]
pub struct Created {
    /// The new object's handle.
    pub fh: Option<FileHandle>,
    /// Its attributes.
    pub attr: PostOpAttr,
    /// The directory's WCC data.
    pub dir_wcc: WccData,
}

/// Success of READ; the data was written into the caller's buffer.
#[derive(Debug, Clone, Copy)]
pub struct ReadOk {
    /// File attributes after the read (always sent: the client uses them
    /// to validate its cache, and a fixed-size header lets the data be read
    /// straight into the reply).
    pub attr: Fattr,
    /// Bytes read.
    pub count: u32,
    /// Whether the read reached the end of the file.
    pub eof: bool,
}

/// Success of WRITE.
#[derive(Debug, Clone, Copy)]
pub struct WriteOk {
    /// The file's WCC data.
    pub wcc: WccData,
    /// Bytes written.
    pub count: u32,
    /// How stable the data now is (at least what was asked).
    pub committed: StableHow,
    /// The server's write verifier.
    pub verf: Verifier,
}

/// Both directories' WCC data for RENAME.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenameWcc {
    /// Source directory.
    pub from: WccData,
    /// Target directory.
    pub to: WccData,
}

/// LINK's result data (on success and failure alike).
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkData {
    /// The file's attributes.
    pub attr: PostOpAttr,
    /// The directory's WCC data.
    pub dir_wcc: WccData,
}

/// One directory entry offered to a [`DirSink`].
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// File ID (inode number as the client sees it).
    pub fileid: u64,
    /// Entry name.
    pub name: &'a [u8],
    /// Cookie to resume *after* this entry.
    pub cookie: u64,
    /// Attributes (READDIRPLUS only).
    pub attr: PostOpAttr,
    /// Handle (READDIRPLUS only).
    pub fh: Option<FileHandle>,
}

/// Receives directory entries and enforces the reply's size limit.
pub trait DirSink {
    /// Whether the caller wants attributes and handles (READDIRPLUS).
    fn plus(&self) -> bool;
    /// Offers an entry; `false` means it did not fit and the listing must
    /// stop before it (it will be asked for again with the previous cookie).
    fn push(&mut self, entry: &DirEntry<'_>) -> bool;
    /// Bytes left in the reply, so that a backend reads ahead only about
    /// as many entries as can still fit.
    fn room(&self) -> usize {
        usize::MAX
    }
}

/// Success of READDIR/READDIRPLUS (the entries went to the sink).
#[derive(Debug, Clone, Copy)]
pub struct ReaddirOk {
    /// Directory attributes.
    pub dir_attr: PostOpAttr,
    /// Cookie verifier.
    pub verf: Verifier,
    /// Whether the listing reached the end.
    pub eof: bool,
}

/// FSSTAT results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FsStat {
    pub tbytes: u64,
    pub fbytes: u64,
    pub abytes: u64,
    pub tfiles: u64,
    pub ffiles: u64,
    pub afiles: u64,
    pub invarsec: u32,
}

/// FSINFO results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FsInfo {
    pub rtmax: u32,
    pub rtpref: u32,
    pub rtmult: u32,
    pub wtmax: u32,
    pub wtpref: u32,
    pub wtmult: u32,
    pub dtpref: u32,
    pub maxfilesize: u64,
    pub time_delta: NfsTime,
    pub properties: u32,
}

/// PATHCONF results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PathConf {
    pub linkmax: u32,
    pub name_max: u32,
    pub no_trunc: bool,
    pub chown_restricted: bool,
    pub case_insensitive: bool,
    pub case_preserving: bool,
}

/// One export as listed by MOUNT's EXPORT procedure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// The path clients mount.
    pub dir: Vec<u8>,
    /// Client patterns allowed (`*`, addresses, CIDRs).
    pub groups: Vec<Vec<u8>>,
}

/// Convenience alias for procedure results.
pub type NfsResult<T, F> = Result<T, Fail<F>>;

/// A filesystem served over NFSv3. Every method runs on a worker thread and
/// may block; implementations must be safe to call concurrently.
#[allow(missing_docs)]
pub trait Backend: Send + Sync {
    fn getattr(&self, c: &Caller<'_>, fh: &FileHandle) -> Result<Fattr, NfsStat>;
    fn setattr(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        attrs: &Sattr,
        guard: Option<NfsTime>,
    ) -> NfsResult<WccData, WccData>;
    fn lookup(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
    ) -> NfsResult<LookupOk, PostOpAttr>;
    /// Returns the attributes and the subset of `mask` granted.
    fn access(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        mask: u32,
    ) -> NfsResult<(PostOpAttr, u32), PostOpAttr>;
    fn readlink(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, Vec<u8>), PostOpAttr>;
    /// Reads up to `buf.len()` bytes at `offset` into `buf`.
    fn read(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> NfsResult<ReadOk, PostOpAttr>;
    /// Moves up to `count` bytes at `offset` into the pipe `pipe` (which
    /// has room for them) without copying them through the server's
    /// memory; `ReadOk::count` says how many went in. `None`: this backend
    /// cannot, use [`Backend::read`].
    fn read_to_pipe(
        &self,
        _c: &Caller<'_>,
        _fh: &FileHandle,
        _offset: u64,
        _count: usize,
        _pipe: std::os::fd::BorrowedFd<'_>,
    ) -> Option<NfsResult<ReadOk, PostOpAttr>> {
        None
    }
    fn write(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        offset: u64,
        stable: StableHow,
        data: &[u8],
    ) -> NfsResult<WriteOk, WccData>;
    fn create(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        how: &CreateHow,
    ) -> NfsResult<Created, WccData>;
    fn mkdir(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        attrs: &Sattr,
    ) -> NfsResult<Created, WccData>;
    fn symlink(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        attrs: &Sattr,
        target: &[u8],
    ) -> NfsResult<Created, WccData>;
    fn mknod(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        kind: &MknodKind,
    ) -> NfsResult<Created, WccData>;
    fn remove(&self, c: &Caller<'_>, dir: &FileHandle, name: &[u8]) -> NfsResult<WccData, WccData>;
    fn rmdir(&self, c: &Caller<'_>, dir: &FileHandle, name: &[u8]) -> NfsResult<WccData, WccData>;
    fn rename(
        &self,
        c: &Caller<'_>,
        from_dir: &FileHandle,
        from: &[u8],
        to_dir: &FileHandle,
        to: &[u8],
    ) -> NfsResult<RenameWcc, RenameWcc>;
    fn link(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        dir: &FileHandle,
        name: &[u8],
    ) -> NfsResult<LinkData, LinkData>;
    fn readdir(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        cookie: u64,
        verf: Verifier,
        sink: &mut dyn DirSink,
    ) -> NfsResult<ReaddirOk, PostOpAttr>;
    fn fsstat(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, FsStat), PostOpAttr>;
    fn fsinfo(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, FsInfo), PostOpAttr>;
    fn pathconf(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, PathConf), PostOpAttr>;
    fn commit(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        offset: u64,
        count: u32,
    ) -> NfsResult<(WccData, Verifier), WccData>;
    /// MOUNT MNT: the root handle of the export clients mount at `path`.
    fn mount(&self, c: &Caller<'_>, path: &[u8]) -> Result<FileHandle, MountStat>;
    /// MOUNT EXPORT: the export list.
    fn export_list(&self) -> Vec<ExportEntry>;
}
