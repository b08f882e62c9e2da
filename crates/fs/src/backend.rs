//! [`FsBackend`]: NFSv3 procedures on the host filesystem.
//!
//! Confinement rests on three rules, in the manner of virtiofsd's
//! passthrough filesystem:
//! 1. Every object is reached from a file descriptor, never a path: a
//!    handle is turned into an `O_PATH` descriptor, and a name is resolved
//!    one component at a time relative to its directory's descriptor with
//!    `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//!    and `O_NOFOLLOW`. No symlink is ever followed on the server; the guest
//!    follows its own links.
//! 2. Names are checked before use: no `/`, no NUL, not empty, at most 255
//!    bytes; `.` and `..` only where they mean something (LOOKUP), and `..`
//!    of an export's root is the root itself.
//! 3. Handles are signed ([`crate::handle`]): the only handles accepted are
//!    ones this server gave out for objects it found inside the export.
//!
//! Operations run as the mapped caller ([`crate::cred`]), so the kernel's
//! permission checks decide what a guest user may do.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use rustix::fs::{
    AtFlags, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, UTIME_NOW, UTIME_OMIT,
};
use vmshare_proto::backend::*;
use vmshare_proto::mount::MountStat;
use vmshare_proto::nfs3::*;
use vmshare_proto::{NfsStat, MAX_IO};

use crate::attr::{self, fattr, status, status_rx};
use crate::closer::Closer;
use crate::cred::{as_server, CredGuard, Identity};
use crate::ecache::{Ctime, EntryCache};
use crate::export::{ExportConfig, ExportOptions};
use crate::handle::HandleCodec;
use crate::hcache::HandleCache;
use crate::sys;
use crate::FsError;

/// Most `O_PATH` descriptors kept for handles already seen, and most kept
/// open for I/O (per handle, identity and mode), where the open-file limit
/// allows (see [`fd_budget`]). 7/8 of 16,384, the most a table of 16,384
/// buckets holds before it doubles: at 16,384 each table had 32,768
/// buckets, half of them empty, for 1.5 MiB more each (the handle key
/// makes a bucket about 90 bytes).
const PATH_CACHE_MAX: usize = 14_336;
const IO_CACHE_MAX: usize = 14_336;
/// Descriptors left to everything but the two caches: sockets, READ
/// pipes, directories being listed, the state directory. Under a limit
/// below 1,638 they get 5/8 of it instead.
const FD_RESERVE: u64 = 1024;

/// How many descriptors each cache may keep under an open-file limit of
/// `limit`: what the reserve leaves, split evenly, each at least 16 and at
/// most its maximum. Caches sized without regard to the limit ran the
/// server out of descriptors on a host whose limit is low (4,096 is
/// common), and every open then failed; a fixed I/O cache of 1,024
/// reopened a file through /proc for nearly every READ once a guest's
/// working set was larger (the benchmark's 2,000 files: 7 µs a READ in
/// the server, against 1-2 for a GETATTR). Under a very low limit (256)
/// the caches had kept 64 each whatever the limit, and with 120
/// connections the opens calls need failed: EMFILE reached guests as EIO.
fn fd_budget(limit: Option<u64>) -> (usize, usize) {
    let limit = limit.unwrap_or(4096);
    let reserve = FD_RESERVE.min(limit.saturating_mul(5) / 8);
    let usable = limit.saturating_sub(reserve) / 2;
    let each = usize::try_from(usable).unwrap_or(usize::MAX).max(16);
    (each.min(PATH_CACHE_MAX), each.min(IO_CACHE_MAX))
}

/// At most one log line a period for each key (a client address, or
/// `()` for an event that is no client's): when each last had a line,
/// and how many were held back since.
#[derive(Debug)]
struct LineGate<K> {
    clients: HashMap<K, (Instant, u64)>,
}

impl<K> Default for LineGate<K> {
    fn default() -> Self {
        LineGate {
            clients: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> LineGate<K> {
    /// One line a client per period.
    const PERIOD: Duration = Duration::from_secs(10);
    /// Clients remembered; past it those whose period is over are
    /// forgotten, and if none is, the oldest.
    const CLIENTS: usize = 256;

    /// `Some(held back)` if a line for `ip` may be written now.
    fn allow(&mut self, ip: K, now: Instant) -> Option<u64> {
        if let Some((last, held)) = self.clients.get_mut(&ip) {
            if now.duration_since(*last) < Self::PERIOD {
                *held = held.saturating_add(1);
                return None;
            }
            *last = now;
            return Some(std::mem::take(held));
        }
        if self.clients.len() >= Self::CLIENTS {
            self.clients
                .retain(|_, (last, _)| now.duration_since(*last) < Self::PERIOD);
            if self.clients.len() >= Self::CLIENTS {
                let oldest = self
                    .clients
                    .iter()
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.clients.remove(&k);
                }
            }
        }
        self.clients.insert(ip, (now, 0));
        Some(0)
    }
}

/// Takes an arbitrary `1/parts` of a cache's entries out, to be closed.
fn evict_share<K: Copy + Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>, parts: usize) -> Vec<V> {
    let keys: Vec<K> = m
        .keys()
        .take(m.len().div_ceil(parts.max(1)))
        .copied()
        .collect();
    keys.iter().filter_map(|k| m.remove(k)).collect()
}
/// How long READDIRPLUS answers from attributes looked up before, unless
/// set otherwise ([`FsBackend::with_attr_cache`]).
pub const DEFAULT_ATTR_CACHE: Duration = Duration::from_secs(1);
/// Buffer for one `getdents64` call.
const DIRENT_BUF: usize = 32 * 1024;
/// The smallest read: room for the longest record (19 bytes of header, a
/// 255-byte name and its NUL) and then some.
const DIRENT_MIN: usize = 512;

/// One export, opened.
#[derive(Debug)]
struct Export {
    cfg: ExportConfig,
    id: u32,
    root: Arc<OwnedFd>,
    root_dev: u64,
    root_ino: u64,
    fsid: u64,
    /// A descriptor on each filesystem met inside the export, by
    /// compressed device number: `open_by_handle_at` needs one to decode a
    /// handle of that filesystem.
    mounts: RwLock<HashMap<u32, Arc<OwnedFd>>>,
}

/// An object reached from a handle.
#[derive(Debug, Clone)]
struct Node {
    export: Arc<Export>,
    /// The handle it was reached by.
    fh: FileHandle,
    fd: Arc<OwnedFd>,
    opts: ExportOptions,
    /// Attributes when the handle was resolved, just before the operation.
    st: Stat,
}

type IoKey = (FileHandle, IoWho);
/// Who a descriptor was opened for, and how: uid, gid, a keyed hash of
/// the supplementary groups, write. The open is where the kernel checked
/// permission, so a descriptor is lent only to the same identity.
type IoWho = (u32, u32, u64, bool);
/// The file's mode, owner and group when a descriptor was opened: it is
/// lent only while they are unchanged, so that a chmod or chown made any
/// way (this handle, another export's, the host) is checked again at the
/// next open. A change of ACL leaves them as they were and is caught by
/// [`Checked`] instead.
type IoPerm = (u32, u32, u32);

fn io_perm(st: &Stat) -> IoPerm {
    (st.st_mode, st.st_uid, st.st_gid)
}

/// When a cached descriptor's access was last checked, told by the file's
/// ctime then: a change of ACL on the host (`setfacl` taking a user's
/// write away) leaves mode, owner and group as they were, but not the
/// ctime. A descriptor whose file has the same ctime as at its last check
/// is lent without another; any other is checked again first, as knfsd
/// checks every call.
///
/// Timestamps may be coarse (a jiffy, 4 ms at HZ=250, on many kernels and
/// filesystems; this host's 6.18 moved the ctime on at every change in
/// the tests), so an ACL changed in the same tick as the ctime that was
/// seen could leave it unchanged. As git does for its "racily clean"
/// index entries, a ctime seen within [`Checked::RACY`] of the check is
/// not trusted: the next use checks again, until the file has been left
/// alone that long. A file being written by someone other than its owner
/// is so checked at each WRITE, one `access` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checked {
    ctime: (i64, u64),
    trusted: bool,
}

impl Checked {
    /// Longer than a jiffy at any HZ (10 ms at HZ=100), the coarsest
    /// stamp of the filesystems that have ACLs (ext4, XFS, btrfs, tmpfs).
    const RACY: Duration = Duration::from_millis(20);

    /// Access was checked just now, after `st` was taken.
    fn now(st: &Stat) -> Checked {
        let ctime = (st.st_ctime, st.st_ctime_nsec);
        let ns = |(s, n): (i64, u64)| i128::from(s) * 1_000_000_000 + i128::from(n);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        // A clock set back makes the difference negative: not trusted,
        // which is the safe side.
        let racy = i128::try_from(Self::RACY.as_nanos()).unwrap_or(i128::MAX);
        let trusted = now.saturating_sub(ns(ctime)) >= racy;
        Checked { ctime, trusted }
    }

    /// Whether a file now carrying `st` needs no new check.
    fn holds_for(&self, st: &Stat) -> bool {
        self.trusted && self.ctime == (st.st_ctime, st.st_ctime_nsec)
    }
}

/// One cached descriptor.
#[derive(Debug)]
struct IoEntry {
    who: IoWho,
    perm: IoPerm,
    checked: Checked,
    f: Arc<File>,
}

/// Descriptors open for I/O, by handle, then by [`IoWho`].
/// Grouped by handle so that forgetting a file (REMOVE, SETATTR) looks at
/// its own few entries: a scan of the whole cache under its lock, once
/// the cache held thousands, cost REMOVE with four clients 40% of its
/// rate.
#[derive(Debug, Default)]
struct IoCache {
    by_fh: HashMap<FileHandle, Vec<IoEntry>>,
    entries: usize,
}

impl IoCache {
    /// The entry for `key` opened when the file had `perm`, or with
    /// `or_rw`, the same identity's read-write one when there is no
    /// read-only one.
    fn get(&self, key: &IoKey, perm: IoPerm, or_rw: bool) -> Option<&IoEntry> {
        let (fh, (uid, gid, groups, write)) = *key;
        let list = self.by_fh.get(&fh)?;
        let find = |w: bool| {
            list.iter()
                .find(|e| e.who == (uid, gid, groups, w) && e.perm == perm)
        };
        find(write).or_else(|| or_rw.then(|| find(true)).flatten())
    }

    /// Records a new check of `f`, still cached for `fh`.
    fn checked(&mut self, fh: &FileHandle, f: &Arc<File>, checked: Checked) {
        if let Some(e) = self
            .by_fh
            .get_mut(fh)
            .and_then(|l| l.iter_mut().find(|e| Arc::ptr_eq(&e.f, f)))
        {
            e.checked = checked;
        }
    }

    /// Inserts `f`, opened when the file had `perm`; returns what it
    /// replaced.
    fn insert(
        &mut self,
        key: IoKey,
        perm: IoPerm,
        checked: Checked,
        f: Arc<File>,
    ) -> Option<Arc<File>> {
        let (fh, who) = key;
        // Nearly every file has one entry: a list of one, not the four
        // a first push reserves (288 bytes a file, 4 MiB in a full cache).
        let list = self
            .by_fh
            .entry(fh)
            .or_insert_with(|| Vec::with_capacity(1));
        if let Some(slot) = list.iter_mut().find(|e| e.who == who) {
            slot.perm = perm;
            slot.checked = checked;
            return Some(std::mem::replace(&mut slot.f, f));
        }
        list.push(IoEntry {
            who,
            perm,
            checked,
            f,
        });
        self.entries += 1;
        None
    }

    /// Takes out every descriptor of `fh`.
    fn remove(&mut self, fh: &FileHandle) -> Vec<Arc<File>> {
        let gone: Vec<Arc<File>> = self
            .by_fh
            .remove(fh)
            .map(|l| l.into_iter().map(|e| e.f).collect())
            .unwrap_or_default();
        self.entries = self.entries.saturating_sub(gone.len());
        gone
    }

    /// Takes out the descriptors of every file whose handle `doomed` picks.
    fn forget_where(&mut self, doomed: impl Fn(&FileHandle) -> bool) -> Vec<Arc<File>> {
        let picked: Vec<FileHandle> = self.by_fh.keys().filter(|fh| doomed(fh)).copied().collect();
        picked.iter().flat_map(|fh| self.remove(fh)).collect()
    }

    /// Takes out the descriptors of an arbitrary `1/parts` of the files.
    fn evict(&mut self, parts: usize) -> Vec<Arc<File>> {
        let gone: Vec<Arc<File>> = evict_share(&mut self.by_fh, parts)
            .into_iter()
            .flatten()
            .map(|e| e.f)
            .collect();
        self.entries = self.entries.saturating_sub(gone.len());
        gone
    }
}

/// Where a handle was found: its directory's handle and its name there.
#[derive(Debug, Clone)]
struct Origin {
    parent: FileHandle,
    name: Box<[u8]>,
    /// When it was last used ([`Origins::clock`]).
    tick: u64,
    /// Read or written through (or a directory of such a file): kept
    /// before any handle only looked up.
    io: bool,
}

/// The origins kept, in two classes, each forgotten least recently used
/// first: handles only looked up go before those read or written.
///
/// A file a guest holds open is read or written now and then; a walk
/// (`ls -R`, `find`, `du`) looks up many files and reads none. With the
/// origins dropped in no order, a walk of 100,000 files made files opened
/// before it STALE, and an append through one was lost. A use counts for
/// the handle's directories too, each stamped newer than the handle
/// beneath it: a directory outlives the handles found through it, which
/// could not be found again without it.
#[derive(Debug, Default)]
struct Origins {
    map: HashMap<FileHandle, Origin>,
    clock: u64,
}

impl Origins {
    /// Marks `fh` and its directories used now, and read or written if
    /// `io`. Stops at one already so marked within the last `fresh`
    /// ticks: its directories were marked then.
    fn used(&mut self, fh: &FileHandle, fresh: u64, io: bool) {
        /// Deeper than real trees, as in [`FsBackend::reopen_by_origin`].
        const MAX_DEPTH: usize = 256;
        let mut cur = *fh;
        for _ in 0..MAX_DEPTH {
            let Some(o) = self.map.get_mut(&cur) else {
                return;
            };
            if o.tick.saturating_add(fresh) > self.clock && (o.io || !io) {
                return;
            }
            self.clock += 1;
            o.tick = self.clock;
            o.io |= io;
            cur = o.parent;
        }
    }

    /// Forgets an eighth: the least recently used of those only looked
    /// up, then, if they are too few, of the others.
    fn shed(&mut self) {
        let n = self.map.len().div_ceil(8);
        // Ticks are unique and far below 2^63.
        let key = |o: &Origin| (u64::from(o.io) << 63) | o.tick;
        let mut keys: Vec<u64> = self.map.values().map(key).collect();
        if n == 0 || n > keys.len() {
            return;
        }
        let (_, &mut cut, _) = keys.select_nth_unstable(n - 1);
        self.map.retain(|_, o| key(o) > cut);
    }

    /// How recently marked a record must be for [`Self::used`] to stop
    /// at it, for `cap` records kept: a sixteenth of the clock's window.
    fn fresh(cap: usize) -> u64 {
        u64::try_from(cap / 16).unwrap_or(u64::MAX)
    }

    /// Records that `fh` was found as `name` in `parent`, keeping at most
    /// `cap` records.
    fn insert(&mut self, fh: FileHandle, parent: FileHandle, name: &[u8], cap: usize) {
        if self.map.len() >= cap && !self.map.contains_key(&fh) {
            self.shed();
        }
        self.clock += 1;
        let tick = self.clock;
        let io = self.map.get(&fh).is_some_and(|o| o.io);
        self.map.insert(
            fh,
            Origin {
                parent,
                name: name.into(),
                tick,
                io,
            },
        );
        self.used(&parent, Self::fresh(cap), false);
    }
}

/// How many origins are kept for each descriptor `paths` may hold, and
/// at most: an origin costs about 200 bytes (two 65-byte handles, the
/// map's overhead, the name; computed), a descriptor a slot of the
/// process's limit, so many more handles can be found again than kept
/// open, and 65,536 of them stay under 16 MiB.
const ORIGINS_PER_PATH: usize = 4;
const ORIGINS_MAX: usize = 65_536;

/// An object a name referred to before the name was removed or renamed.
struct Named {
    export: u32,
    dev: u64,
    ino: u64,
    /// Its handle, when that name was its last one.
    last: Option<FileHandle>,
}

/// What [`FsBackend::reload`] changed, by mount path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Exports served now that were not before.
    pub added: Vec<String>,
    /// Exports no longer served: their handles are STALE.
    pub removed: Vec<String>,
    /// Exports kept, with other options or clients.
    pub changed: Vec<String>,
    /// Exports kept as they were.
    pub unchanged: usize,
    /// Descriptors the caches held inside removed exports, now closed
    /// (once calls still using them end).
    pub closed: usize,
}

/// The backend serving a set of exports from the host filesystem.
#[derive(Debug)]
pub struct FsBackend {
    /// Replaced whole by [`Self::reload`]; a call keeps the export it
    /// resolved (its `Node`'s) until it ends.
    exports: RwLock<Arc<[Arc<Export>]>>,
    codec: HandleCodec,
    /// Whether this process can act as other users (it is root).
    switch_ids: bool,
    /// Whether this process may open files by handle (CAP_DAC_READ_SEARCH).
    /// Without it a handle resolves only while its descriptor is kept in
    /// `paths`, so every lookup keeps one.
    by_handle: bool,
    paths: Mutex<HashMap<FileHandle, Arc<OwnedFd>>>,
    /// Without `by_handle`: where each handle was found (its directory's
    /// handle and its name), to open it again once its descriptor has
    /// left `paths`. See [`Self::reopen_by_origin`].
    origins: Mutex<Origins>,
    io: Mutex<IoCache>,
    /// Keys the hash of a caller's groups in [`IoWho`]. Random per process,
    /// so that no one can choose a group list that collides with another's.
    groups_hasher: std::hash::RandomState,
    path_cache_max: usize,
    io_cache_max: usize,
    /// Handles made for READDIRPLUS entries, by inode.
    by_inode: HandleCache,
    /// READDIRPLUS entries' handles and attributes, for a bounded time.
    entries: EntryCache,
    /// Serialises WRITEs to one file (striped by handle).
    write_locks: [Mutex<()>; WRITE_STRIPES],
    /// Closes what the caches evict, off the request path.
    closer: Closer,
    /// `/proc/self/fd`, to reopen `O_PATH` descriptors for I/O under the
    /// caller's identity (a permission check by the kernel).
    proc_fd: OwnedFd,
    write_verf: AtomicU64,
    /// When a refused MNT was last logged (seconds since the epoch).
    mount_refusals: Mutex<LineGate<std::net::IpAddr>>,
    /// Gates the line [`Self::shed_fds`] writes.
    shed_log: Mutex<LineGate<()>>,
}

fn compress_dev(dev: u64) -> u32 {
    let (maj, min) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    (maj << 20) ^ min
}

/// An export's id in its handles: its mount path, and the directory it
/// serves. A handle outlives the server (the key is kept), so it must not
/// outlive the export: `vmshare run` names its exports `/v0`, `/v1`..., and
/// with the mount path alone a handle a guest kept from one run opened the
/// same file in a later run whose `/v0` was another directory, with that
/// export's options (rw, say) applied to it.
///
/// And what it shows of that directory: a single-file export serves one
/// name of it, and handles a guest kept from a run that exported the
/// whole directory (read-only, say) under the same mount path reached the
/// file's siblings and their subdirectories, writable. An export of the
/// whole directory has the id it always had.
fn export_id(mount_path: &str, root: &Stat, single_file: Option<&OsStr>) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(mount_path.as_bytes());
    h.update(&[0]);
    h.update(&root.st_dev.to_le_bytes());
    h.update(&root.st_ino.to_le_bytes());
    if let Some(name) = single_file {
        h.update(&[1]);
        h.update(name.as_bytes());
    }
    let b = h.finalize();
    let b = b.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks a name for creating or looking up one entry.
fn check_name(name: &[u8]) -> Result<&OsStr, NfsStat> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(NfsStat::Acces);
    }
    if name.len() > 255 {
        return Err(NfsStat::NameTooLong);
    }
    Ok(OsStr::from_bytes(name))
}

/// Like [`check_name`], and also refuses `.` and `..`, which cannot be
/// created, removed or renamed.
fn check_new_name(name: &[u8]) -> Result<&OsStr, NfsStat> {
    let n = check_name(name)?;
    if name == b"." || name == b".." {
        return Err(NfsStat::Exist);
    }
    Ok(n)
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Opens one name in a directory without following anything.
fn open_child(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat2(dir, name, flags, Mode::empty(), beneath()) {
        // A mount point inside the export: RESOLVE_NO_XDEV refused to cross
        // it; cross it deliberately (still one component, still no links).
        Err(rustix::io::Errno::XDEV) => {
            let r = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            Ok(rustix::fs::openat2(dir, name, flags, Mode::empty(), r)?)
        }
        r => Ok(r?),
    }
}

/// Stripes of the per-file WRITE lock.
const WRITE_STRIPES: usize = 64;

/// The stripe of `fh`'s WRITE lock, locked.
fn lock_stripe<'a>(
    locks: &'a [Mutex<()>; WRITE_STRIPES],
    fh: &FileHandle,
) -> std::sync::MutexGuard<'a, ()> {
    // The handle ends in its MAC, whose bytes are as good as random and
    // cannot be chosen by a client: no hashing needed.
    let i = usize::from(fh.as_bytes().last().copied().unwrap_or(0)) % WRITE_STRIPES;
    locks[i]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The device number of `major:minor`, if Linux can hold it: 12 bits of
/// major and 20 of minor, as mknod(2) takes them. Larger numbers were cut
/// to other ones, and the guest got a device it did not ask for (4096:0
/// became 0:0, which overlayfs reads as a deleted file); knfsd answers
/// INVAL for them too.
fn device(major: u32, minor: u32) -> Result<u64, NfsStat> {
    if major > 0xfff || minor > 0xf_ffff {
        return Err(NfsStat::Inval);
    }
    Ok(rustix::fs::makedev(major, minor))
}

/// Writes as much of `data` at `offset` as the file takes: all of it, or
/// the part written before the filesystem refused more (full, or the
/// file at its largest size). A short count is what RFC 1813 lets a WRITE
/// answer, and what knfsd answers: the client sends the rest and meets
/// the error then. Failing the call instead would report nothing written
/// for a file that had grown. An error before any byte is the call's.
/// `mode` without what an export with `nosuid_nodev` never sets:
/// set-user-ID, and set-group-ID except on a directory (where it only
/// passes the group on to new entries).
fn without_setid(opts: &ExportOptions, mode: u32, dir: bool) -> u32 {
    if !opts.nosuid_nodev {
        return mode;
    }
    let mut mode = mode & !libc::S_ISUID;
    if !dir {
        mode &= !libc::S_ISGID;
    }
    mode
}

fn write_most(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while let Some(rest) = data.get(done..).filter(|r| !r.is_empty()) {
        match f.write_at(rest, offset + done as u64) {
            Ok(0) if done == 0 => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// READ's result for `done` bytes read at `offset` of a file of `size`.
/// The largest file the export's filesystem holds, for FSINFO: the Linux
/// client refuses a write past it with EFBIG itself instead of sending
/// it. ext4 (extents) stops at 2^32 - 1 blocks, 16 TiB less one block
/// for 4 KiB blocks; the other filesystems Linux exports (xfs, btrfs,
/// tmpfs) go to i64's limit.
fn max_file_size(fd: &OwnedFd) -> u64 {
    const EXT4_SUPER_MAGIC: u64 = 0xef53;
    let max = i64::MAX.unsigned_abs();
    match rustix::fs::fstatfs(fd) {
        Ok(s) if u64::try_from(s.f_type) == Ok(EXT4_SUPER_MAGIC) => u64::try_from(s.f_bsize)
            .ok()
            .filter(|&b| b > 0)
            .map_or(max, |b| ((1u64 << 32) - 1).saturating_mul(b)),
        _ => max,
    }
}

fn read_ok(attr: Fattr, size: u64, offset: u64, done: usize) -> ReadOk {
    ReadOk {
        attr,
        count: u32::try_from(done).unwrap_or(0),
        eof: offset.saturating_add(done as u64) >= size,
    }
}

/// The descriptors among `held` whose file has no link left, by address
/// (see [`FsBackend::close_unlinked`]).
fn unlinked<T: AsFd>(held: &[Arc<T>]) -> HashSet<*const T> {
    held.iter()
        .filter(|f| rustix::fs::fstat(f.as_fd()).is_ok_and(|st| st.st_nlink == 0))
        .map(Arc::as_ptr)
        .collect()
}

/// The directory above `dir`, as an `O_PATH` descriptor.
fn parent_of(dir: &OwnedFd) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        "..",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn stat(fd: &OwnedFd) -> Result<Stat, NfsStat> {
    rustix::fs::fstat(fd).map_err(status_rx)
}

fn timespec(t: &SetTime) -> Timespec {
    match t {
        SetTime::DontChange => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        SetTime::ServerTime => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        SetTime::ClientTime(t) => Timespec {
            tv_sec: i64::from(t.seconds),
            tv_nsec: i64::from(t.nseconds.min(999_999_999)),
        },
    }
}

/// `statx` of `name` in `dir`, not following a symlink: the basic stats
/// and the birth time (which checks the handle cache).
fn statx_name(dir: &Node, name: &[u8]) -> rustix::io::Result<rustix::fs::Statx> {
    use rustix::fs::StatxFlags;
    rustix::fs::statx(
        &*dir.fd,
        OsStr::from_bytes(name),
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
}

/// The birth time, when the filesystem gives one.
fn statx_birth(st: &rustix::fs::Statx) -> Option<crate::hcache::Birth> {
    (st.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec))
}

fn statx_dev(st: &rustix::fs::Statx) -> u64 {
    rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor)
}

/// Device, inode and ctime: what the READDIRPLUS cache keys and orders by.
fn inode_of(st: &Stat) -> (u64, u64, Ctime) {
    let nsec = i64::try_from(st.st_ctime_nsec).unwrap_or(0);
    (st.st_dev, st.st_ino, (st.st_ctime, nsec))
}

fn is_reg(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Opens the export `cfg` describes, refusing one whose id or mount path
/// is among `others`' (already opened). Also says whether this process
/// may open the export's files by handle.
fn open_export(
    cfg: ExportConfig,
    codec: &HandleCodec,
    others: &[Arc<Export>],
) -> Result<(Export, bool), FsError> {
    let err = |source: io::Error| FsError::Export {
        path: cfg.path.display().to_string(),
        source,
    };
    let root = rustix::fs::open(
        &cfg.path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    let st = rustix::fs::fstat(&root).map_err(|e| err(e.into()))?;
    let id = export_id(&cfg.mount_path, &st, cfg.single_file.as_deref());
    if others
        .iter()
        .any(|e| e.id == id || e.cfg.mount_path == cfg.mount_path)
    {
        return Err(FsError::Duplicate {
            mount_path: cfg.mount_path.clone(),
        });
    }
    // open_by_handle_at wants a real descriptor on the filesystem, not an
    // O_PATH one.
    let mount_fd = rustix::fs::open(
        &cfg.path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e.into()))?;
    // NFS names files by handle: a filesystem that cannot make them
    // (procfs, some FUSE filesystems) cannot be served, and is better
    // refused here than by every MNT.
    let k = sys::handle_of(root.as_fd()).map_err(|e| {
        err(io::Error::other(format!(
            "its filesystem gives no file handles, which NFS needs \
             (name_to_handle_at: {e})"
        )))
    })?;
    // Without CAP_DAC_READ_SEARCH (not root) the kernel opens no handle:
    // every object must then be reached by name and kept.
    let by_handle = !matches!(
        sys::open_by_handle(mount_fd.as_fd(), &k, libc::O_PATH),
        Err(e) if e.raw_os_error() == Some(libc::EPERM)
    );
    let mut mounts = HashMap::new();
    mounts.insert(compress_dev(st.st_dev), Arc::new(mount_fd));
    let fsid = codec.digest64(cfg.mount_path.as_bytes());
    let export = Export {
        cfg,
        id,
        root: Arc::new(root),
        root_dev: st.st_dev,
        root_ino: st.st_ino,
        fsid,
        mounts: RwLock::new(mounts),
    };
    Ok((export, by_handle))
}

fn is_dir(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl FsBackend {
    /// Opens every export and loads (or creates) the handle key in
    /// `state_dir`.
    pub fn new(exports: Vec<ExportConfig>, state_dir: &Path) -> Result<FsBackend, FsError> {
        let (path_cache_max, io_cache_max) = fd_budget(sys::raise_nofile_limit());
        let codec = HandleCodec::load_or_create(state_dir).map_err(|source| {
            if source.kind() == io::ErrorKind::InvalidData {
                FsError::Key(source.to_string())
            } else {
                FsError::State {
                    path: state_dir.display().to_string(),
                    source,
                }
            }
        })?;
        let mut opened: Vec<Arc<Export>> = Vec::with_capacity(exports.len());
        let mut by_handle = true;
        for cfg in exports {
            let (export, handles_open) = open_export(cfg, &codec, &opened)?;
            by_handle &= handles_open;
            opened.push(Arc::new(export));
        }
        let proc_fd = rustix::fs::open(
            "/proc/self/fd",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::State {
            path: "/proc/self/fd".into(),
            source: e.into(),
        })?;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| FsError::State {
            path: "random".into(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(FsBackend {
            exports: RwLock::new(opened.into()),
            codec,
            switch_ids: rustix::process::geteuid().is_root(),
            by_handle,
            paths: Mutex::new(HashMap::new()),
            origins: Mutex::new(Origins::default()),
            io: Mutex::new(IoCache::default()),
            groups_hasher: std::hash::RandomState::new(),
            path_cache_max,
            io_cache_max,
            by_inode: HandleCache::new(),
            entries: EntryCache::new(DEFAULT_ATTR_CACHE),
            write_locks: std::array::from_fn(|_| Mutex::new(())),
            closer: Closer::new(),
            proc_fd,
            write_verf: AtomicU64::new(u64::from_ne_bytes(seed)),
            mount_refusals: Mutex::new(LineGate::default()),
            shed_log: Mutex::new(LineGate::default()),
        })
    }

    /// Serves as a process without CAP_DAC_READ_SEARCH does, keeping at
    /// most `kept` descriptors of looked-up objects: for testing that
    /// mode as root, on a cache small enough to overflow.
    #[doc(hidden)]
    #[must_use]
    pub fn as_if_unprivileged(mut self, kept: usize) -> FsBackend {
        self.by_handle = false;
        self.path_cache_max = kept.max(1);
        self
    }

    /// Sets how long READDIRPLUS may answer with attributes looked up
    /// earlier (zero: never; see the `ecache` module). Changes made through
    /// this server show at once whatever the time; ones made on the host
    /// show within it.
    #[must_use]
    pub fn with_attr_cache(mut self, ttl: Duration) -> FsBackend {
        self.entries = EntryCache::new(ttl);
        self
    }

    /// The exports served now.
    pub fn exports(&self) -> Vec<ExportConfig> {
        self.current_exports()
            .iter()
            .map(|e| e.cfg.clone())
            .collect()
    }

    fn current_exports(&self) -> Arc<[Arc<Export>]> {
        Arc::clone(
            &self
                .exports
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn export_by_id(&self, id: u32) -> Option<Arc<Export>> {
        self.exports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }

    /// Serves `exports` from now on instead of the current ones, as
    /// `exportfs -r` does for knfsd: an export kept (the same mount path
    /// on the same directory) keeps its handles and takes the new options
    /// and clients with the next call; a removed one's handles are STALE
    /// and the descriptors the caches hold inside it are closed, so that
    /// its filesystem can be unmounted; a new one is opened as at start.
    /// A directory replaced on the host since it was opened (removed and
    /// made again) is served anew.
    ///
    /// Nothing changes unless every export opens: the error says which
    /// did not.
    pub fn reload(&self, exports: Vec<ExportConfig>) -> Result<Reloaded, FsError> {
        // As at start: the exports are the admin's, opened as the server,
        // whichever caller this thread acted for last.
        as_server(self.switch_ids);
        let old = self.current_exports();
        let mut opened: Vec<Arc<Export>> = Vec::with_capacity(exports.len());
        for cfg in exports {
            let (mut export, _) = open_export(cfg, &self.codec, &opened)?;
            // Kept: what it learnt of the filesystems inside it stays.
            if let Some(was) = old.iter().find(|e| e.id == export.id) {
                let mounts = was
                    .mounts
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                export.mounts = RwLock::new(mounts);
            }
            opened.push(Arc::new(export));
        }
        let mut report = Reloaded::default();
        for e in &opened {
            match old.iter().find(|o| o.id == e.id) {
                None => report.added.push(e.cfg.mount_path.clone()),
                Some(o) if o.cfg != e.cfg => report.changed.push(e.cfg.mount_path.clone()),
                Some(_) => report.unchanged += 1,
            }
        }
        let gone: Vec<u32> = old
            .iter()
            .filter(|o| !opened.iter().any(|e| e.id == o.id))
            .map(|o| {
                report.removed.push(o.cfg.mount_path.clone());
                o.id
            })
            .collect();
        *self
            .exports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = opened.into();
        if !gone.is_empty() {
            report.closed = self.forget_exports(&gone);
        }
        Ok(report)
    }

    /// Drops what the caches hold for handles of the exports `gone`;
    /// returns how many descriptors that closes.
    fn forget_exports(&self, gone: &[u32]) -> usize {
        let of_gone =
            |fh: &FileHandle| matches!(self.codec.decode(fh), Ok(d) if gone.contains(&d.export_id));
        let mut dropped: Vec<Arc<OwnedFd>> = Vec::new();
        if let Ok(mut m) = self.paths.lock() {
            let doomed: Vec<FileHandle> = m.keys().filter(|fh| of_gone(fh)).copied().collect();
            for fh in doomed {
                dropped.extend(m.remove(&fh));
            }
        }
        if let Ok(mut o) = self.origins.lock() {
            o.map.retain(|fh, _| !of_gone(fh));
        }
        let files = self
            .io
            .lock()
            .map(|mut io| io.forget_where(of_gone))
            .unwrap_or_default();
        // Closed here, with no lock held; a call still running keeps its
        // own reference, and the last one closes.
        dropped.len() + files.len()
    }

    /// Whether operations run as the mapped caller. False when the server
    /// is not root: then every operation runs as the server's user.
    pub fn switches_identity(&self) -> bool {
        self.switch_ids
    }

    /// Whether handles are opened by the kernel (so they outlive this
    /// process and its caches), or only resolve while this process keeps
    /// the object's descriptor (without CAP_DAC_READ_SEARCH).
    pub fn opens_by_handle(&self) -> bool {
        self.by_handle
    }

    /// How many descriptors the caches keep at most, all told: the rest
    /// of the open-file limit is the server's, for connections and the
    /// descriptors calls open while they run.
    pub fn cached_descriptors(&self) -> usize {
        self.path_cache_max.saturating_add(self.io_cache_max)
    }

    /// How many objects' descriptors are kept at most: without
    /// [`Self::opens_by_handle`], how many handles stay valid at once.
    pub fn kept_objects(&self) -> usize {
        self.path_cache_max
    }

    /// The options that apply to `addr` in `export`, if any rule admits it.
    fn options_for(&self, export: &Export, c: &Caller<'_>) -> Result<ExportOptions, NfsStat> {
        let opts = export.cfg.options_for(c.addr.ip()).ok_or(NfsStat::Acces)?;
        if opts.secure && c.addr.port() >= 1024 {
            return Err(NfsStat::Perm);
        }
        Ok(opts)
    }

    fn fileid(&self, export: &Export, st: &Stat) -> u64 {
        self.fileid_of(export, st.st_dev, st.st_ino)
    }

    fn fileid_of(&self, export: &Export, dev: u64, ino: u64) -> u64 {
        if export.cfg.single_file.is_some() && (dev, ino) != (export.root_dev, export.root_ino) {
            // The one file of a single-file export, whichever inode has its
            // name (see `single_file_now`): one fileid, or the Linux client
            // would call its inode stale when the host replaces the file.
            export.root_ino ^ (1 << 62)
        } else if dev == export.root_dev {
            ino
        } else {
            // Another filesystem mounted inside the export: keep its inode
            // numbers from colliding with the export's own.
            ino ^ (u64::from(compress_dev(dev)) << 40)
        }
    }

    /// An object's NFS attributes, from a stat just made; also refreshes
    /// what the READDIRPLUS cache holds for it.
    fn attrs(&self, export: &Export, st: &Stat) -> Fattr {
        let a = fattr(st, self.fileid(export, st), export.fsid);
        self.entries.saw(export.id, inode_of(st), &a);
        a
    }

    fn post_op(&self, n: &Node) -> PostOpAttr {
        rustix::fs::fstat(&*n.fd)
            .ok()
            .map(|st| self.attrs(&n.export, &st))
    }

    /// READ's common start: the file opened for reading under the
    /// caller's identity, its attributes and size just before the read.
    /// The attributes stand for after it too: a read changes nothing the
    /// client checks (atime aside).
    fn open_for_read(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> Result<(Arc<File>, Fattr, u64), Fail<PostOpAttr>> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let st = n.st;
        let attr = self.attrs(&n.export, &st);
        let fail = |s: NfsStat| Fail::new(s, Some(attr));
        if is_dir(&st) {
            return Err(fail(NfsStat::IsDir));
        }
        if !is_reg(&st) {
            return Err(fail(NfsStat::Inval));
        }
        let f = {
            let _g = self.become_(c, &n).map_err(fail)?;
            self.io_file(c, fh, &n, false).map_err(fail)?
        };
        Ok((f, attr, u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Whether the current (caller's) identity may access `fd`'s object as
    /// `mode`: faccessat2 on the descriptor itself, or through
    /// `/proc/self/fd` on kernels before 5.8.
    fn may(&self, fd: &OwnedFd, mode: rustix::fs::Access) -> rustix::io::Result<()> {
        let direct = sys::access_fd(fd.as_fd(), mode)
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO));
        match direct {
            // Kernels before 5.8 (no faccessat2, or no AT_EMPTY_PATH).
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
                let name = fd.as_raw_fd().to_string();
                rustix::fs::accessat(&self.proc_fd, name.as_str(), mode, AtFlags::EACCESS)
            }
            r => r,
        }
    }

    fn pre_op(&self, n: &Node) -> Option<WccAttr> {
        self.post_op(n).map(|a| a.wcc())
    }

    /// Resolves a handle to an object, checking the caller's access to its
    /// export. Runs with the server's own identity (before any switch).
    fn node(&self, c: &Caller<'_>, fh: &FileHandle) -> Result<Node, NfsStat> {
        match self.node_by_handle(c, fh) {
            Err(NfsStat::Stale) => self.single_file_now(c, fh),
            r => r,
        }
    }

    /// In a single-file export, a handle whose file is gone names the file
    /// that has its name now. The guest bind-mounts that one file
    /// (`vmshare run -v FILE:...`), so its NFS inode is pinned: a host that
    /// saves the file by writing a new one and renaming it over the old
    /// (editors, `sed -i`, configuration tools) left the guest with
    /// "Stale file handle" until it exited. With a fileid that stays the
    /// same too ([`Self::fileid_of`]), the guest sees the new contents as
    /// it sees any change made on the host.
    ///
    /// While no regular file has the name (the host removed it and has not
    /// made it again yet: `rm` then `cp`, `git checkout`), the answer is
    /// NOENT, not STALE: the Linux client marks an inode it was told is
    /// STALE as such for good, so the guest read "Stale file handle" for
    /// the rest of the run even once the file was back.
    fn single_file_now(&self, c: &Caller<'_>, fh: &FileHandle) -> Result<Node, NfsStat> {
        let d = self.codec.decode(fh).map_err(|_| NfsStat::Stale)?;
        let export = self.export_by_id(d.export_id).ok_or(NfsStat::Stale)?;
        let name = export.cfg.single_file.as_ref().ok_or(NfsStat::Stale)?;
        let opts = self.options_for(&export, c).map_err(|_| NfsStat::Stale)?;
        as_server(self.switch_ids);
        let fd = match self.open_child(export.root.as_fd(), name) {
            Ok(fd) => fd,
            Err(NfsStat::NoEnt) => return Err(NfsStat::NoEnt),
            Err(_) => return Err(NfsStat::Stale),
        };
        let st = stat(&fd).map_err(|_| NfsStat::Stale)?;
        if !is_reg(&st) || st.st_nlink == 0 {
            return Err(NfsStat::NoEnt);
        }
        let fd = Arc::new(fd);
        self.remember(*fh, fd.clone());
        // Descriptors opened for I/O were the old file's.
        self.forget_io(fh);
        Ok(Node {
            export: export.clone(),
            fh: *fh,
            fd,
            opts,
            st,
        })
    }

    /// [`Self::node`] by the handle alone.
    fn node_by_handle(&self, c: &Caller<'_>, fh: &FileHandle) -> Result<Node, NfsStat> {
        let d = self.codec.decode(fh)?;
        let export = self.export_by_id(d.export_id).ok_or(NfsStat::Stale)?;
        let export = &export;
        let opts = self.options_for(export, c)?;
        let cached = self.paths.lock().ok().and_then(|m| m.get(fh).cloned());
        let fd = match cached {
            Some(fd) => fd,
            None => {
                // open_by_handle_at needs CAP_DAC_READ_SEARCH, which a
                // thread acting as a guest user does not have.
                as_server(self.switch_ids);
                let mount = self.mount_fd(export, d.dev)?;
                let open = || {
                    sys::open_by_handle(mount.as_fd(), &d.kernel, libc::O_PATH | libc::O_NOFOLLOW)
                };
                if !self.by_handle {
                    // No handle opens without the capability: where it
                    // was found is the only way back to it.
                    return match self.reopen_by_origin(export, fh, 0) {
                        Some(fd) => self.finish_node(export, fh, fd, opts),
                        None => Err(NfsStat::Stale),
                    };
                }
                let opened = self.open_retrying(io::Error::raw_os_error, open);
                let fd = opened.map_err(|e| {
                    match e.raw_os_error() {
                        // Deleted, or a handle this kernel cannot decode.
                        Some(libc::ESTALE) | Some(libc::ENOENT) | Some(libc::EINVAL) => {
                            NfsStat::Stale
                        }
                        // Not root: no handle opens, and this one's
                        // descriptor is no longer kept (a restart, or
                        // evicted). The client looks the name up again.
                        Some(libc::EPERM) => NfsStat::Stale,
                        _ => status(&e),
                    }
                })?;
                let fd = Arc::new(fd);
                self.remember(*fh, fd.clone());
                fd
            }
        };
        self.finish_node(export, fh, fd, opts)
    }

    fn finish_node(
        &self,
        export: &Arc<Export>,
        fh: &FileHandle,
        fd: Arc<OwnedFd>,
        opts: ExportOptions,
    ) -> Result<Node, NfsStat> {
        let st = stat(&fd)?;
        if st.st_nlink == 0 {
            // Deleted (on the host, or by another client) while a cached
            // descriptor kept the inode alive: the object is gone.
            if let Ok(mut m) = self.paths.lock() {
                m.remove(fh);
            }
            return Err(NfsStat::Stale);
        }
        Ok(Node {
            export: export.clone(),
            fh: *fh,
            fd,
            opts,
            st,
        })
    }

    /// Without CAP_DAC_READ_SEARCH, a handle whose descriptor has left
    /// `paths` is opened again where it was found: its directory (found
    /// the same way, up to the export's root) and its name there. It is
    /// the same object only if the handle made from what that name holds
    /// now is the same handle; a name the host has since renamed or
    /// reused gives STALE. Before this, a guest that had touched more
    /// files than the server keeps open got "Stale file handle" for
    /// directories and files whose names never changed (its current
    /// directory, a build's tree), since evicted descriptors were lost.
    fn reopen_by_origin(
        &self,
        export: &Arc<Export>,
        fh: &FileHandle,
        depth: usize,
    ) -> Option<Arc<OwnedFd>> {
        /// Deeper than real trees; each level is one open.
        const MAX_DEPTH: usize = 256;
        if depth > MAX_DEPTH {
            return None;
        }
        let origin = self.origins.lock().ok()?.map.get(fh).cloned();
        let Some(origin) = origin else {
            // The export's root has no origin: it is always open.
            let st = stat(&export.root).ok()?;
            let root = self.handle_for(export, &export.root, &st).ok()?;
            return (root == *fh).then(|| {
                self.remember(*fh, export.root.clone());
                export.root.clone()
            });
        };
        let parent = self.paths.lock().ok()?.get(&origin.parent).cloned();
        let parent = match parent {
            Some(fd) => fd,
            None => self.reopen_by_origin(export, &origin.parent, depth + 1)?,
        };
        let fd = self
            .open_child(parent.as_fd(), OsStr::from_bytes(&origin.name))
            .ok()?;
        let st = stat(&fd).ok()?;
        let again = self.handle_for(export, &fd, &st).ok()?;
        (again == *fh).then(|| {
            let fd = Arc::new(fd);
            self.remember(*fh, fd.clone());
            self.origin_used(fh, false);
            fd
        })
    }

    /// Without handle opens: records a use of `fh`, a READ or WRITE (or
    /// an open's ACCESS) if `io` (see [`Origins`]), which keeps its
    /// origin and its directories' longer.
    fn origin_used(&self, fh: &FileHandle, io: bool) {
        if self.by_handle {
            return;
        }
        let fresh = Origins::fresh(self.origins_cap());
        if let Ok(mut m) = self.origins.lock() {
            m.used(fh, fresh, io);
        }
    }

    fn origins_cap(&self) -> usize {
        self.path_cache_max
            .saturating_mul(ORIGINS_PER_PATH)
            .min(ORIGINS_MAX)
    }

    /// Records where `fh` was found, for [`Self::reopen_by_origin`].
    fn found_at(&self, fh: FileHandle, dir: &Node, name: &[u8]) {
        if self.by_handle || name == b"." || name == b".." {
            return;
        }
        let cap = self.origins_cap();
        if let Ok(mut m) = self.origins.lock() {
            m.insert(fh, dir.fh, name, cap);
        }
    }

    fn mount_fd(&self, export: &Export, dev: u32) -> Result<Arc<OwnedFd>, NfsStat> {
        if let Some(fd) = export.mounts.read().ok().and_then(|m| m.get(&dev).cloned()) {
            return Ok(fd);
        }
        // A filesystem mounted inside the export that this process has not
        // met since it started: find it in the mount table.
        self.scan_mounts(export);
        export
            .mounts
            .read()
            .ok()
            .and_then(|m| m.get(&dev).cloned())
            .ok_or(NfsStat::Stale)
    }

    fn scan_mounts(&self, export: &Export) {
        let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        // Without a trailing slash, so that an export of `/` finds its
        // mounts too.
        let path = export.cfg.path.as_os_str().as_bytes();
        let root = path.strip_suffix(b"/").unwrap_or(path);
        for line in table.lines() {
            let Some(point) = line.split(' ').nth(4) else {
                continue;
            };
            let point = unescape_mountinfo(point);
            if !point.starts_with(root) || point.get(root.len()) != Some(&b'/') {
                continue;
            }
            // Beneath the export's root and through no symbolic link, as
            // any name a guest sends: the guest may have renamed a
            // directory on the way and put a link in its place. Mount
            // points are crossed, which is what this is for.
            let Some(rel) = point.get(root.len() + 1..).map(OsStr::from_bytes) else {
                continue;
            };
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let Ok(fd) = rustix::fs::openat2(&*export.root, rel, flags, Mode::empty(), resolve)
            else {
                continue;
            };
            if let (Ok(st), Ok(mut m)) = (rustix::fs::fstat(&fd), export.mounts.write()) {
                m.entry(compress_dev(st.st_dev))
                    .or_insert_with(|| Arc::new(fd));
            }
        }
    }

    fn remember(&self, fh: FileHandle, fd: Arc<OwnedFd>) {
        if let Ok(mut m) = self.paths.lock() {
            if m.len() >= self.path_cache_max {
                // Handles are rebuilt from their bytes on a miss, so
                // dropping entries costs a syscall, not correctness.
                self.closer.later(evict_share(&mut m, 8));
            }
            if let Some(old) = m.insert(fh, fd) {
                self.closer.later(old);
            }
        }
    }

    /// The handle of an object just reached from `parent`'s export.
    fn handle_for(&self, export: &Export, fd: &OwnedFd, st: &Stat) -> Result<FileHandle, NfsStat> {
        let k = sys::handle_of(fd.as_fd()).map_err(|e| status(&e))?;
        let dev = compress_dev(st.st_dev);
        let known = export
            .mounts
            .read()
            .map(|m| m.contains_key(&dev))
            .unwrap_or(true);
        if !known && is_dir(st) {
            // The first object met on a filesystem mounted inside the
            // export: keep a descriptor to decode its handles later.
            if let Ok(f) = self.reopen(fd, OFlags::RDONLY | OFlags::DIRECTORY) {
                if let Ok(mut m) = export.mounts.write() {
                    m.entry(dev).or_insert_with(|| Arc::new(OwnedFd::from(f)));
                }
            }
        }
        self.codec
            .encode(export.id, dev, &k)
            .ok_or(NfsStat::NotSupp)
    }

    fn identity(&self, c: &Caller<'_>, n: &Node) -> Identity {
        Identity::map(c.cred, &n.opts)
    }

    fn become_(&self, c: &Caller<'_>, n: &Node) -> Result<CredGuard, NfsStat> {
        CredGuard::become_(&self.identity(c, n), self.switch_ids).map_err(|e| status(&e))
    }

    /// Whether the directory `fd` is the export's root or beneath it,
    /// found by walking up with `..` to the root or to the filesystem's
    /// top. Only LOOKUP of `..` needs it, and directories are rarely
    /// deep, so the walk costs little where it happens.
    fn within_export(&self, export: &Export, fd: &OwnedFd) -> Result<bool, NfsStat> {
        /// Further than any real tree; a cycle cannot happen, but a bound
        /// costs nothing.
        const MAX_DEPTH: usize = 4096;
        let root = (export.root_dev, export.root_ino);
        let mut st = stat(fd)?;
        let mut cur: Option<OwnedFd> = None;
        for _ in 0..MAX_DEPTH {
            if (st.st_dev, st.st_ino) == root {
                return Ok(true);
            }
            let up = parent_of(cur.as_ref().unwrap_or(fd)).map_err(status_rx)?;
            let up_st = stat(&up)?;
            if (up_st.st_dev, up_st.st_ino) == (st.st_dev, st.st_ino) {
                // `/`: its `..` is itself.
                return Ok(false);
            }
            st = up_st;
            cur = Some(up);
        }
        Ok(false)
    }

    fn is_root(&self, n: &Node) -> bool {
        rustix::fs::fstat(&*n.fd)
            .map(|st| st.st_dev == n.export.root_dev && st.st_ino == n.export.root_ino)
            .unwrap_or(false)
    }

    /// In a single-file export, the root directory shows one name only and
    /// cannot be changed.
    fn visible(&self, dir: &Node, name: &[u8]) -> bool {
        match &dir.export.cfg.single_file {
            Some(only) if self.is_root(dir) => {
                name == only.as_bytes() || name == b"." || name == b".."
            }
            _ => true,
        }
    }

    /// Whether the export lets `n` (or, for a directory, its entries) be
    /// changed: not on a read-only export, and never the root of a
    /// single-file export, which is the file's host directory.
    fn may_change(&self, n: &Node) -> Result<(), NfsStat> {
        if !n.opts.writable {
            return Err(NfsStat::RoFs);
        }
        if n.export.cfg.single_file.is_some() && self.is_root(n) {
            return Err(NfsStat::Acces);
        }
        Ok(())
    }

    /// On a `sync` export, makes what a call changed in `n` (a directory's
    /// entries, an object's attributes) durable before it is answered, as
    /// knfsd's `sync` does (its `commit_metadata`): the Linux client sends
    /// nothing for a guest's `fsync` of a directory, because NFSv3 changes
    /// are synchronous; without this a "write, fsync, rename, fsync the
    /// directory" in a guest was not safe across a host crash.
    fn commit_metadata(&self, n: &Node) -> Result<(), NfsStat> {
        if !n.opts.sync {
            return Ok(());
        }
        self.sync_object(&n.export, &n.fd, &n.st)
    }

    /// `fsync`s the object at `fd`, as the server. An `O_PATH` descriptor
    /// cannot be synced, so a file or directory is reopened read-only; a
    /// FIFO, socket, device or symlink cannot be opened for that without
    /// side effects, so the export's root is synced instead, which on
    /// ext4 (one journal for the filesystem) commits their change too.
    fn sync_object(&self, export: &Export, fd: &OwnedFd, st: &Stat) -> Result<(), NfsStat> {
        as_server(self.switch_ids);
        let file = if is_reg(st) || is_dir(st) {
            self.reopen(fd, OFlags::RDONLY)?
        } else {
            self.reopen(&export.root, OFlags::RDONLY | OFlags::DIRECTORY)?
        };
        file.sync_all().map_err(|e| status(&e))
    }

    /// Reopens an `O_PATH` descriptor for I/O as the current (switched)
    /// identity, which makes the kernel check the caller's permission.
    fn reopen(&self, fd: &OwnedFd, flags: OFlags) -> Result<File, NfsStat> {
        let name = fd.as_raw_fd().to_string();
        let open = || {
            rustix::fs::openat(
                &self.proc_fd,
                name.as_str(),
                flags | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )
        };
        let f = self
            .open_retrying(|e: &rustix::io::Errno| Some(e.raw_os_error()), open)
            .map_err(status_rx)?;
        Ok(File::from(f))
    }

    /// [`open_child`], making room in the caches if descriptors ran out.
    fn open_child(&self, dir: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, NfsStat> {
        self.open_retrying(io::Error::raw_os_error, || open_child(dir, name))
            .map_err(|e| status(&e))
    }

    /// Runs `open`, and once more if it failed for want of descriptors
    /// (after [`Self::shed_fds`] made room).
    fn open_retrying<T, E>(
        &self,
        errno: impl Fn(&E) -> Option<i32>,
        open: impl Fn() -> Result<T, E>,
    ) -> Result<T, E> {
        match open() {
            Err(e) if self.shed_fds(errno(&e).unwrap_or(0)) => open(),
            r => r,
        }
    }

    /// Whether an open failed for want of descriptors (EMFILE, ENFILE); if
    /// so, half of each descriptor cache is closed, here and now, so that
    /// the caller's one retry can succeed. The budget leaves a reserve, but
    /// other users of the process's or the system's table can still take
    /// it: the caches give way rather than the guest's call failing.
    fn shed_fds(&self, errno: i32) -> bool {
        if errno != libc::EMFILE && errno != libc::ENFILE {
            return false;
        }
        let mut dropped = 0;
        if let Ok(mut m) = self.io.lock() {
            let gone = m.evict(2);
            dropped += gone.len();
            drop(m);
            drop(gone);
        }
        if let Ok(mut m) = self.paths.lock() {
            let gone = evict_share(&mut m, 2);
            dropped += gone.len();
            drop(m);
            drop(gone);
        }
        // At most a line every ten seconds: with many clients at a low
        // limit this ran at 6,000 lines a second.
        let held_back = self
            .shed_log
            .lock()
            .ok()
            .and_then(|mut log| log.allow((), Instant::now()));
        if let Some(held_back) = held_back {
            tracing::warn!(
                dropped,
                held_back,
                "out of file descriptors: closed cached ones (raise the open-file limit; \
                 `held_back`: lines like this one not written since the last)"
            );
        }
        true
    }

    /// Says why a MNT was refused: the client only sees EACCES or EPERM,
    /// and the reason (usually `secure` behind a NAT) is the server's to
    /// tell. At most one line every ten seconds for each client address,
    /// with how many were held back since, so that a client retrying in a
    /// loop can neither flood the log nor hide another client's refusal.
    fn refused_mount(&self, c: &Caller<'_>, export: &Export, why: &str) {
        let now = Instant::now();
        let Ok(mut log) = self.mount_refusals.lock() else {
            return;
        };
        if let Some(held_back) = log.allow(c.addr.ip(), now) {
            drop(log);
            tracing::warn!(
                client = %c.addr,
                export = %export.cfg.mount_path,
                held_back,
                "refused MNT: {why} (`held_back`: refusals of this client not logged since the \
                 last line)"
            );
        }
    }

    /// The I/O cache's key: the object and the caller's mapped identity,
    /// all of it. (It once held only the number of groups, and a caller
    /// could read through a descriptor opened for a group it is not in.)
    fn io_key(&self, c: &Caller<'_>, fh: &FileHandle, n: &Node, write: bool) -> IoKey {
        use std::hash::BuildHasher;
        let id = self.identity(c, n);
        let groups = self.groups_hasher.hash_one(&id.groups);
        (*fh, (id.uid, id.gid, groups, write))
    }

    fn io_file(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        n: &Node,
        write: bool,
    ) -> Result<Arc<File>, NfsStat> {
        // A file read or written is one a guest has open: kept findable.
        self.origin_used(fh, true);
        let key = self.io_key(c, fh, n, write);
        // `n.st` is from just before this call: taken before the open, so
        // a chmod racing with the open leaves the old mode here, and the
        // next call opens again.
        let perm = io_perm(&n.st);
        // A read may use the caller's read-write descriptor: opening it
        // for O_RDWR checked read permission too.
        let cached = self
            .io
            .lock()
            .ok()
            .and_then(|m| m.get(&key, perm, !write).map(|e| (e.f.clone(), e.checked)));
        if let Some((f, checked)) = cached {
            // The key holds the caller's mapped uid.
            if checked.holds_for(&n.st) || self.unrestricted(key.1 .0, n) {
                return Ok(f);
            }
            // The file changed since the last check (or too recently to
            // tell): checked again, as this caller. Refused, the open
            // below decides, with the overrides an open has.
            let how = if write {
                rustix::fs::Access::WRITE_OK
            } else {
                rustix::fs::Access::READ_OK
            };
            if self.may(&n.fd, how).is_ok() {
                let now = Checked::now(&n.st);
                if let Ok(mut m) = self.io.lock() {
                    m.checked(fh, &f, now);
                }
                return Ok(f);
            }
        }
        let flags = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let f = match self.reopen(&n.fd, flags) {
            Err(NfsStat::Acces) if self.overrides(c, n, write) => {
                Arc::new(self.reopen_overriding(c, n, flags)?)
            }
            r => Arc::new(r?),
        };
        self.keep_io(key, perm, Checked::now(&n.st), f.clone());
        Ok(f)
    }

    fn keep_io(&self, key: IoKey, perm: IoPerm, checked: Checked, f: Arc<File>) {
        if let Ok(mut m) = self.io.lock() {
            // An eighth, not all: a guest cycling through more files than
            // the cache holds still finds some of them open.
            if m.entries >= self.io_cache_max {
                self.closer.later(m.evict(8));
            }
            if let Some(old) = m.insert(key, perm, checked, f) {
                self.closer.later(old);
            }
        }
    }

    /// Whether no permission bits or ACL can refuse `n` to the caller
    /// mapped to `uid`: its owner, whom knfsd lets read and write whatever
    /// the mode (see [`Self::overrides`]). A cached descriptor needs no
    /// new check for it. (Not root as such: a server without
    /// CAP_DAC_OVERRIDE, in a container, is refused like anyone.)
    fn unrestricted(&self, uid: u32, n: &Node) -> bool {
        self.switch_ids && uid == n.st.st_uid
    }

    /// Whether the caller (as whom this thread runs) may have `n` open for
    /// I/O although its mode bits refuse it, as knfsd allows:
    /// - the owner may read and write their own file whatever its mode. A
    ///   process that created a file read-only (git writes every object
    ///   so; tar and `cp -p` read-only files) or did `fchmod(fd, 0)` goes
    ///   on with the descriptor it holds: the guest checked permission at
    ///   open, and the server sees only the WRITEs. The owner could grant
    ///   themselves the access with a chmod anyway;
    /// - whoever may execute a regular file may read it: the guest kernel
    ///   reads a binary of mode 0711 to run it, with the caller's
    ///   credentials. Locally, `exec` needs only the x bit.
    fn overrides(&self, c: &Caller<'_>, n: &Node, write: bool) -> bool {
        if self.owns(c, n) {
            return true;
        }
        if !self.switch_ids || write || !is_reg(&n.st) {
            return false;
        }
        self.may(&n.fd, rustix::fs::Access::EXEC_OK).is_ok()
    }

    /// Whether the caller, mapped, owns `n` (as `n.st` last saw it), with
    /// the server able to act for others at all.
    fn owns(&self, c: &Caller<'_>, n: &Node) -> bool {
        self.switch_ids && self.identity(c, n).uid == n.st.st_uid
    }

    /// Opens `n` as the server, for a caller that [`Self::overrides`] its
    /// mode bits; the call then goes on as the caller.
    fn reopen_overriding(&self, c: &Caller<'_>, n: &Node, flags: OFlags) -> Result<File, NfsStat> {
        as_server(self.switch_ids);
        let f = self.reopen(&n.fd, flags);
        let back = CredGuard::become_(&self.identity(c, n), self.switch_ids);
        let f = f?;
        back.map_err(|e| status(&e))?;
        Ok(f)
    }

    /// Forgets I/O descriptors of `fh` after its permissions changed, so
    /// that the next access is checked again.
    fn forget_io(&self, fh: &FileHandle) {
        if let Ok(mut m) = self.io.lock() {
            let gone = m.remove(fh);
            drop(m);
            if !gone.is_empty() {
                self.closer.later(gone);
            }
        }
    }

    /// What `name` in `dir` refers to, looked up before a REMOVE, RMDIR or
    /// RENAME changes it, so that [`Self::forget`] can drop what the caches
    /// hold of it afterwards. Best effort: `None` when it cannot be told.
    fn named(&self, dir: &Node, name: &OsStr) -> Option<Named> {
        let st = statx_name(dir, name.as_bytes()).ok()?;
        let is_dir = u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR;
        let last = st.stx_nlink <= 1 || is_dir;
        Some(Named {
            export: dir.export.id,
            dev: statx_dev(&st),
            ino: st.stx_ino,
            last: last
                .then(|| self.handle_by_name(dir, name.as_bytes(), &st).ok())
                .flatten(),
        })
    }

    /// The handle of `name` in `dir`, whose `statx` is `st`: from the
    /// handle cache when this incarnation of the inode was seen before,
    /// else made with `name_to_handle_at` (and remembered).
    fn handle_by_name(
        &self,
        dir: &Node,
        name: &[u8],
        st: &rustix::fs::Statx,
    ) -> Result<FileHandle, NfsStat> {
        let (export, dev, birth) = (dir.export.id, statx_dev(st), statx_birth(st));
        if let Some(fh) = birth.and_then(|b| self.by_inode.get(export, dev, st.stx_ino, b)) {
            return Ok(fh);
        }
        // The handle and the check come from one lookup of the name. By
        // name twice (`st`, then name_to_handle_at), a rename in between
        // paired one file's handle with another's inode in the cache, and
        // every later LOOKUP of that inode answered with the wrong file.
        let (fd, now) = self.open_statx(dir, name)?;
        if (now.stx_ino, statx_dev(&now), statx_birth(&now)) != (st.stx_ino, dev, birth) {
            // The name changed hands since `st` was taken: its attributes
            // are not this object's. The client asks again a little later.
            return Err(NfsStat::Jukebox);
        }
        self.make_handle(export, fd.as_fd(), st)
    }

    /// `name` in `dir` opened (`O_PATH`, never following it), and what
    /// that descriptor refers to.
    fn open_statx(&self, dir: &Node, name: &[u8]) -> Result<(OwnedFd, rustix::fs::Statx), NfsStat> {
        use rustix::fs::StatxFlags;
        let fd = self.open_child(dir.fd.as_fd(), OsStr::from_bytes(name))?;
        let st = rustix::fs::statx(
            &fd,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(status_rx)?;
        Ok((fd, st))
    }

    /// The handle of the object `fd` refers to, whose `statx` is `st`,
    /// made and remembered in the handle cache.
    fn make_handle(
        &self,
        export: u32,
        fd: BorrowedFd<'_>,
        st: &rustix::fs::Statx,
    ) -> Result<FileHandle, NfsStat> {
        let dev = statx_dev(st);
        let k = sys::handle_of(fd).map_err(|e| status(&e))?;
        let fh = self
            .codec
            .encode(export, compress_dev(dev), &k)
            .ok_or(NfsStat::NotSupp)?;
        if let Some(b) = statx_birth(st) {
            self.by_inode.put(export, dev, st.stx_ino, b, fh);
        }
        Ok(fh)
    }

    /// Forgets the attributes cached for an object whose name was removed
    /// or renamed (its link count or ctime changed), and, when that was its
    /// last name, the descriptors the caches hold for it: an open
    /// descriptor, even an `O_PATH` one, keeps a deleted file's blocks
    /// allocated on the host until it is closed.
    fn forget(&self, named: Option<Named>) {
        let Some(named) = named else {
            return;
        };
        self.entries.forget(named.export, named.dev, named.ino);
        let Some(fh) = named.last else {
            return;
        };
        self.forget_io(&fh);
        if let Some(old) = self.paths.lock().ok().and_then(|mut m| m.remove(&fh)) {
            self.closer.later(old);
        }
    }

    fn verifier(&self) -> Verifier {
        self.write_verf.load(Ordering::Relaxed).to_be_bytes()
    }

    /// Data the client was told is written may be lost: a new verifier
    /// makes it send its uncommitted pages again.
    fn bump_verifier(&self) {
        self.write_verf
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    }

    fn cookie_verf(&self, n: &Node) -> Verifier {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&n.st.st_dev.to_be_bytes());
        b[8..].copy_from_slice(&n.st.st_ino.to_be_bytes());
        self.codec.digest64(&b).to_be_bytes()
    }

    /// Looks up one name in `dir` (already validated) and builds its handle.
    fn child(&self, dir: &Node, name: &[u8]) -> Result<(FileHandle, Arc<OwnedFd>, Stat), NfsStat> {
        let fd = if name == b"." || (name == b".." && self.is_root(dir)) {
            dir.fd.clone()
        } else if name == b".." {
            let fd = parent_of(&dir.fd).map_err(status_rx)?;
            // A directory the host moved out of the export keeps its
            // handle (as knfsd's do), but its parent is outside: without
            // this check, `..` after `..` walked up to the host's `/`.
            if !self.within_export(&dir.export, &fd)? {
                return Err(NfsStat::Acces);
            }
            Arc::new(fd)
        } else {
            Arc::new(self.open_child(dir.fd.as_fd(), OsStr::from_bytes(name))?)
        };
        let st = stat(&fd)?;
        let fh = self.handle_for(&dir.export, &fd, &st)?;
        self.remember(fh, fd.clone());
        self.found_at(fh, dir, name);
        Ok((fh, fd, st))
    }

    /// A READDIRPLUS entry's handle and attributes, looked up for an entry
    /// the entry cache did not have, and remembered for the next listing.
    ///
    /// Two ways, chosen by how the handle cache has done lately
    /// ([`HandleCache::mostly_misses`]):
    /// - **By name first**: one `statx` by name, and the handle from the
    ///   handle cache. A miss then opens the name (`O_PATH`), checks it
    ///   is still the inode that `statx` saw, and makes the handle from
    ///   that descriptor ([`Self::handle_by_name`]): five system calls.
    /// - **Opened first**: the name opened, attributes and handle both from
    ///   that one descriptor, closed: four system calls on a miss, three
    ///   on a hit.
    ///
    /// Listing a directory larger than the caches, or one never listed,
    /// misses nearly every time, and opened first it ran 10-25% faster
    /// (20,000 entries, one and four clients; docs/benchmarks.md); a hit
    /// costs one call by name and three opened first.
    ///
    /// A name that leads onto another filesystem (a mount point) takes the
    /// full [`Self::child`] path, which registers that filesystem for
    /// decoding its handles later.
    fn entry_plus(&self, dir: &Node, name: &[u8]) -> Result<(FileHandle, Fattr), NfsStat> {
        let looked_up = if !self.by_handle {
            // Only a kept descriptor will resolve the handle later.
            None
        } else if self.by_inode.mostly_misses() {
            self.entry_opened(dir, name)?
        } else {
            let st = statx_name(dir, name).map_err(status_rx)?;
            if statx_dev(&st) == dir.st.st_dev {
                let fh = self.handle_by_name(dir, name, &st)?;
                Some((st, fh))
            } else {
                None
            }
        };
        let Some((st, fh)) = looked_up else {
            let (fh, _, st) = self.child(dir, name)?;
            return Ok((fh, self.attrs(&dir.export, &st)));
        };
        let dev = statx_dev(&st);
        let attrs = attr::fattr_statx(
            &st,
            self.fileid_of(&dir.export, dev, st.stx_ino),
            dir.export.fsid,
        );
        let ctime = (st.stx_ctime.tv_sec, i64::from(st.stx_ctime.tv_nsec));
        self.entries.put(
            dir.export.id,
            inode_of(&dir.st),
            name,
            (dev, st.stx_ino, ctime),
            fh,
            &attrs,
        );
        Ok((fh, attrs))
    }

    /// [`Self::entry_plus`] opened first: the attributes and the handle of
    /// what one `O_PATH` descriptor of `name` refers to, so no rename can
    /// pair one file's handle with another's attributes. `None` when the
    /// name leads onto another filesystem.
    fn entry_opened(
        &self,
        dir: &Node,
        name: &[u8],
    ) -> Result<Option<(rustix::fs::Statx, FileHandle)>, NfsStat> {
        let (fd, st) = self.open_statx(dir, name)?;
        let dev = statx_dev(&st);
        if dev != dir.st.st_dev {
            return Ok(None);
        }
        let export = dir.export.id;
        let cached = statx_birth(&st).and_then(|b| self.by_inode.get(export, dev, st.stx_ino, b));
        let fh = match cached {
            Some(fh) => fh,
            None => self.make_handle(export, fd.as_fd(), &st)?,
        };
        Ok(Some((st, fh)))
    }

    /// Common tail of CREATE, MKDIR, SYMLINK, MKNOD: the new object's
    /// handle and attributes, and the directory's WCC data.
    fn created(&self, dir: &Node, name: &OsStr, before: Option<WccAttr>) -> Created {
        self.created_stat(dir, name, before).0
    }

    /// [`Self::created`], with the `stat` the handle was made from.
    fn created_stat(
        &self,
        dir: &Node,
        name: &OsStr,
        before: Option<WccAttr>,
    ) -> (Created, Option<Stat>) {
        let after = self.post_op(dir);
        let dir_wcc = WccData { before, after };
        match self.child(dir, name.as_bytes()) {
            Ok((fh, fd, st)) => {
                // The directory was committed with its new entry; the
                // object's own attributes, set after it was made, are
                // committed too (as knfsd commits both). Its name is
                // durable already, so a failure here is only logged.
                if dir.opts.sync {
                    if let Err(s) = self.sync_object(&dir.export, &fd, &st) {
                        tracing::warn!(status = ?s, "sync export: committing a new object failed");
                    }
                }
                (
                    Created {
                        fh: Some(fh),
                        attr: Some(self.attrs(&dir.export, &st)),
                        dir_wcc,
                    },
                    Some(st),
                )
            }
            Err(_) => (
                Created {
                    fh: None,
                    attr: None,
                    dir_wcc,
                },
                None,
            ),
        }
    }

    /// The owner a new object may be given: what `a` asks for, less what
    /// the caller could not set. Only root gives a file away, and others
    /// may pick only a group of their own (chown(2)'s rules). Asked for
    /// anyway, the object would be made and the chown then refused: a
    /// CREATE that answers PERM and leaves a file behind, whose retry
    /// finds EXIST. knfsd drops the owner of a non-root caller's new
    /// object likewise (`nfsd_create_setattr`).
    fn new_owner(&self, c: &Caller<'_>, d: &Node, a: &Sattr) -> Sattr {
        if a.uid.is_none() && a.gid.is_none() {
            return *a;
        }
        let (uid, gid, groups) = if self.switch_ids {
            let id = self.identity(c, d);
            (id.uid, id.gid, id.groups)
        } else {
            // Not root: every call runs as this process.
            let groups = rustix::process::getgroups().unwrap_or_default();
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
                groups.into_iter().map(|g| g.as_raw()).collect(),
            )
        };
        if uid == 0 {
            return *a;
        }
        Sattr {
            uid: a.uid.filter(|&u| u == uid),
            gid: a.gid.filter(|&g| g == gid || groups.contains(&g)),
            ..*a
        }
    }

    /// Sets `a` on the object just made as `name` in `d`, if it asks for
    /// anything. If that fails, the object is removed again: a creation
    /// either succeeds or leaves nothing (a client retrying it would find
    /// EXIST, and the error would not say that the object is there).
    fn set_new_attrs(&self, d: &Node, name: &OsStr, a: &Sattr) -> Result<(), NfsStat> {
        if *a == Sattr::default() {
            return Ok(());
        }
        let fd = self.open_child(d.fd.as_fd(), name)?;
        self.apply_sattr(&fd, a, None).inspect_err(|_| {
            self.unmake(d, name, &fd);
        })
    }

    /// Removes `name` from `d` if it is still the object `made` (just
    /// created by this call, whose attributes could not be set). Best
    /// effort: the error the caller gets is the one that made it undo.
    fn unmake(&self, d: &Node, name: &OsStr, made: &OwnedFd) {
        let (Ok(own), Ok(now)) = (
            rustix::fs::fstat(made),
            rustix::fs::statat(&*d.fd, name, AtFlags::SYMLINK_NOFOLLOW),
        ) else {
            return;
        };
        if own.st_dev == now.st_dev && own.st_ino == now.st_ino {
            let flags = if is_dir(&now) {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            // Ignored: nothing better to answer than the first error.
            let _ = rustix::fs::unlinkat(&*d.fd, name, flags);
        }
    }

    /// Applies `a` to `fd` as the current caller. `owner` is the caller
    /// and the node when the caller owns it: then a truncation its mode
    /// refuses is made all the same, as for a WRITE (see
    /// [`Self::overrides`]): `ftruncate` on a descriptor the guest
    /// opened before a chmod, or on a file it created read-only.
    fn apply_sattr(
        &self,
        fd: &OwnedFd,
        a: &Sattr,
        owner: Option<(&Caller<'_>, &Node)>,
    ) -> Result<(), NfsStat> {
        // The size first, as knfsd does: it is what fails most (a
        // directory, a size past the filesystem's limit, no write
        // permission), and failing first it leaves the rest unchanged.
        if let Some(size) = a.size {
            let st = stat(fd)?;
            if is_dir(&st) {
                return Err(NfsStat::IsDir);
            }
            if !is_reg(&st) {
                return Err(NfsStat::Inval);
            }
            // Past any file's largest size (ftruncate would read it as
            // negative and answer EINVAL), as knfsd caps and answers it.
            if i64::try_from(size).is_err() {
                return Err(NfsStat::FBig);
            }
            let f = match (self.reopen(fd, OFlags::WRONLY), owner) {
                (Err(NfsStat::Acces), Some((c, n))) => {
                    self.reopen_overriding(c, n, OFlags::WRONLY)?
                }
                (r, _) => r?,
            };
            rustix::fs::ftruncate(&f, size).map_err(status_rx)?;
        }
        // The truncation set the modification time to now, which is all
        // a "server time" mtime asks for. Asking again would be an
        // explicit time change, which only the owner may make: the Linux
        // client sends size + mtime for open(O_TRUNC) and `>`, and a
        // writer of a file it did not own had its file emptied and then
        // EPERM. knfsd skips that second change too.
        let mtime = match (a.size, &a.mtime) {
            (Some(_), SetTime::ServerTime) => &SetTime::DontChange,
            (_, m) => m,
        };
        if a.uid.is_some() || a.gid.is_some() {
            let uid = a.uid.map(rustix::fs::Uid::from_raw);
            let gid = a.gid.map(rustix::fs::Gid::from_raw);
            rustix::fs::chownat(
                fd,
                "",
                uid,
                gid,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(status_rx)?;
        }
        let name = fd.as_raw_fd().to_string();
        if let Some(mut mode) = a.mode {
            let st = stat(fd)?;
            let kind = st.st_mode & libc::S_IFMT;
            // A change of owner takes a file's set-id bits away, as the
            // chown above did, also when the same call gives a mode:
            // as knfsd has it, the mode asked for loses them too
            // (setgid only where it means set-group-ID, with group
            // execute), so one SETATTR cannot hand a file to another
            // user with setuid kept.
            if (a.uid.is_some() || a.gid.is_some()) && kind != libc::S_IFDIR {
                mode &= !libc::S_ISUID;
                if mode & libc::S_IXGRP != 0 {
                    mode &= !libc::S_ISGID;
                }
            }
            if kind == libc::S_IFLNK {
                // Linux has no symlink permissions; nothing to change.
            } else {
                rustix::fs::chmodat(
                    &self.proc_fd,
                    name.as_str(),
                    Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(status_rx)?;
            }
        }
        if a.atime != SetTime::DontChange || *mtime != SetTime::DontChange {
            let ts = Timestamps {
                last_access: timespec(&a.atime),
                last_modification: timespec(mtime),
            };
            rustix::fs::utimensat(&self.proc_fd, name.as_str(), &ts, AtFlags::empty())
                .map_err(status_rx)?;
        }
        Ok(())
    }

    fn dir_op<T>(
        &self,
        c: &Caller<'_>,
        dirfh: &FileHandle,
        name: &[u8],
        f: impl FnOnce(&Node, &OsStr) -> Result<T, NfsStat>,
    ) -> Result<(Node, Option<WccAttr>, T), Fail<WccData>> {
        // Modes come from the client; a umask must not alter them.
        sys::clear_thread_umask();
        let dir = self.node(c, dirfh).map_err(Fail::from)?;
        // A read-only export answers ROFS to every change, a malformed
        // name included (it had answered EXIST for `.`).
        let name = self
            .may_change(&dir)
            .and_then(|()| check_new_name(name))
            .map_err(|s| {
                Fail::new(
                    s,
                    WccData {
                        before: None,
                        after: self.post_op(&dir),
                    },
                )
            })?;
        let before = self.pre_op(&dir);
        let r = (|| {
            let v = {
                let _g = self.become_(c, &dir)?;
                f(&dir, name)?
            };
            self.commit_metadata(&dir)?;
            Ok(v)
        })();
        match r {
            Ok(v) => Ok((dir, before, v)),
            Err(s) => Err(Fail::new(
                s,
                WccData {
                    before,
                    after: self.post_op(&dir),
                },
            )),
        }
    }
}

impl FsBackend {
    /// The failure of a REMOVE or RMDIR of `.` or `..` in `dir`.
    /// Refuses a change to `.` or `..` in `dir` with `s`, or with ROFS on
    /// a read-only export, as every change there is.
    fn refuse_dots(&self, c: &Caller<'_>, dir: &FileHandle, s: NfsStat) -> Fail<WccData> {
        match self.node(c, dir) {
            Ok(d) => Fail::new(
                self.may_change(&d).err().unwrap_or(s),
                WccData {
                    before: None,
                    after: self.post_op(&d),
                },
            ),
            Err(e) => Fail::from(e),
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

thread_local! {
    /// The writeback the last UNSTABLE WRITE on this thread left to start
    /// once its reply is out (see [`FsBackend::after_reply`]).
    ///
    /// The descriptor is held weakly: waiting for a reply must not keep a
    /// file open that the descriptor cache has let go (a file removed in
    /// between must not stay allocated on the host). Gone, its writeback
    /// is left to the kernel.
    static DEFERRED: std::cell::RefCell<Option<(Weak<File>, u64, usize)>> =
        const { std::cell::RefCell::new(None) };
}

/// Leaves a writeback for [`FsBackend::after_reply`]; one still left from
/// an earlier WRITE (a caller that does not call it) starts now.
fn defer_writeback(f: &Arc<File>, offset: u64, len: usize) {
    let before = DEFERRED.with(|d| d.borrow_mut().replace((Arc::downgrade(f), offset, len)));
    if let Some((f, offset, len)) = before {
        start_writeback(&f, offset, len);
    }
}

fn start_writeback(f: &Weak<File>, offset: u64, len: usize) {
    if let Some(f) = f.upgrade() {
        sys::start_writeback(f.as_fd(), offset, len);
    }
}

impl FsBackend {
    /// Work that a call on this thread left for after its reply was sent:
    /// starting the writeback of an UNSTABLE WRITE. The client's COMMIT is
    /// then on its way while the writeback is submitted, instead of after
    /// it; one client's 4 KiB write+commit went from 3,950-4,450 to
    /// 4,500-4,800 files a second (`docs/server.md`, "Writes"). The
    /// writeback is only a hint, so a
    /// caller that never calls this loses nothing but speed.
    pub fn after_reply(&self) {
        if let Some((f, offset, len)) = DEFERRED.with(|d| d.borrow_mut().take()) {
            start_writeback(&f, offset, len);
        }
    }

    /// Closes the cached descriptors of files and directories removed on
    /// the host (no link left), so that their space is freed: a file the
    /// host deleted stayed allocated while the server ran, and a full disk
    /// stayed full. knfsd's file cache drops a file once its last link
    /// goes, too. A guest that still uses such a handle then gets STALE,
    /// as from knfsd; a file the guest removes while it holds it open is
    /// renamed by its client (`.nfsXXXX`), not unlinked, so it stays.
    ///
    /// The server calls this every few seconds. The caches are copied
    /// under their locks and checked outside them (one `fstat` a
    /// descriptor), so requests never wait on the scan.
    pub fn close_unlinked(&self) {
        // Only the descriptors are copied (8 bytes each, not the handles),
        // and only the dead ones are looked for again under the lock, by
        // address: the copies are held until then, so no address can be
        // freed and reused by another entry in between.
        let held: Vec<Arc<OwnedFd>> = self
            .paths
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let dead = unlinked(&held);
        if !dead.is_empty() {
            if let Ok(mut m) = self.paths.lock() {
                let gone: Vec<FileHandle> = m
                    .iter()
                    .filter(|(_, fd)| dead.contains(&Arc::as_ptr(fd)))
                    .map(|(fh, _)| *fh)
                    .collect();
                let closed: Vec<_> = gone.iter().filter_map(|fh| m.remove(fh)).collect();
                self.closer.later(closed);
            }
        }
        let held: Vec<Arc<File>> = self
            .io
            .lock()
            .map(|m| {
                m.by_fh
                    .values()
                    .flatten()
                    .map(|e| Arc::clone(&e.f))
                    .collect()
            })
            .unwrap_or_default();
        let dead = unlinked(&held);
        if !dead.is_empty() {
            if let Ok(mut m) = self.io.lock() {
                let gone: Vec<FileHandle> = m
                    .by_fh
                    .iter()
                    .filter(|(_, l)| l.iter().any(|e| dead.contains(&Arc::as_ptr(&e.f))))
                    .map(|(fh, _)| *fh)
                    .collect();
                let closed: Vec<_> = gone.iter().flat_map(|fh| m.remove(fh)).collect();
                self.closer.later(closed);
            }
        }
    }
}

impl Backend for FsBackend {
    fn getattr(&self, c: &Caller<'_>, fh: &FileHandle) -> Result<Fattr, NfsStat> {
        let n = self.node(c, fh)?;
        Ok(self.attrs(&n.export, &n.st))
    }

    fn setattr(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        attrs: &Sattr,
        guard: Option<NfsTime>,
    ) -> NfsResult<WccData, WccData> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let before_attr = self.post_op(&n);
        let before = before_attr.map(|a| a.wcc());
        let fail = |s: NfsStat| {
            Fail::new(
                s,
                WccData {
                    before,
                    after: self.post_op(&n),
                },
            )
        };
        // ROFS on a read-only export; and the root of a single-file export
        // is a host directory the guest must not chmod or chown.
        self.may_change(&n).map_err(fail)?;
        if let (Some(g), Some(a)) = (guard, before_attr) {
            if g != a.ctime {
                return Err(fail(NfsStat::NotSync));
            }
        }
        let attrs = &Sattr {
            mode: attrs.mode.map(|m| without_setid(&n.opts, m, is_dir(&n.st))),
            ..*attrs
        };
        let applied = {
            let _g = self.become_(c, &n).map_err(fail)?;
            self.apply_sattr(&n.fd, attrs, self.owns(c, &n).then_some((c, &n)))
        };
        // Also when a later part failed: the mode may be changed already.
        if attrs.mode.is_some() || attrs.uid.is_some() || attrs.gid.is_some() {
            self.forget_io(fh);
        }
        applied.map_err(fail)?;
        self.commit_metadata(&n).map_err(fail)?;
        Ok(WccData {
            before,
            after: self.post_op(&n),
        })
    }

    fn lookup(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
    ) -> NfsResult<LookupOk, PostOpAttr> {
        let d = self.node(c, dir).map_err(Fail::from)?;
        let fail = |s: NfsStat| Fail::new(s, self.post_op(&d));
        let name_ok = check_name(name).map_err(fail)?;
        if !self.visible(&d, name) {
            return Err(fail(NfsStat::NoEnt));
        }
        if !is_dir(&d.st) {
            return Err(fail(NfsStat::NotDir));
        }
        let (fh, attr) = {
            let _g = self.become_(c, &d).map_err(fail)?;
            if name == b"." || name == b".." {
                // Search permission on the directory, as the caller. For
                // other names the walk from the directory checks it.
                self.may(&d.fd, rustix::fs::Access::EXEC_OK)
                    .map_err(|e| fail(status_rx(e)))?;
                // Nothing more is the caller's to be allowed: the walk
                // up that checks `..` is still inside the export is the
                // server's, or a caller that may not search a directory
                // above (one that mounted below it) could not `cd ..`.
                as_server(self.switch_ids);
                let (fh, _fd, st) = self.child(&d, name_ok.as_bytes()).map_err(fail)?;
                (fh, self.attrs(&d.export, &st))
            } else {
                // By name, without opening the object: most LOOKUPs are
                // a stat storm (ls -l, a build's include search), and an
                // object used next gets its descriptor then.
                self.entry_plus(&d, name_ok.as_bytes()).map_err(fail)?
            }
        };
        // A LOOKUP changes nothing: the directory's attributes from just
        // before it stand for after it.
        Ok(LookupOk {
            fh,
            attr: Some(attr),
            dir_attr: Some(self.attrs(&d.export, &d.st)),
        })
    }

    fn access(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        mask: u32,
    ) -> NfsResult<(PostOpAttr, u32), PostOpAttr> {
        use rustix::fs::Access;
        let n = self.node(c, fh).map_err(Fail::from)?;
        let a = self.post_op(&n);
        let dir = a.map(|a| a.ftype == FileType::Dir).unwrap_or(false);
        // The Linux client asks ACCESS of a file when a program opens it
        // (a walk asks it of directories only): kept findable as a file
        // read or written is, until the program gets to its I/O.
        if !dir {
            self.origin_used(fh, true);
        }
        let _g = self.become_(c, &n).map_err(|s| Fail::new(s, a))?;
        let can = |m: Access| self.may(&n.fd, m).is_ok();
        let mut granted = 0;
        if mask & access::READ != 0 && can(Access::READ_OK) {
            granted |= access::READ;
        }
        if mask & (access::MODIFY | access::EXTEND | access::DELETE) != 0
            && n.opts.writable
            && can(Access::WRITE_OK)
        {
            granted |=
                mask & (access::MODIFY | access::EXTEND | if dir { access::DELETE } else { 0 });
        }
        if mask & (access::LOOKUP | access::EXECUTE) != 0 && can(Access::EXEC_OK) {
            granted |= mask & if dir { access::LOOKUP } else { access::EXECUTE };
        }
        Ok((a, granted))
    }

    fn readlink(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, Vec<u8>), PostOpAttr> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let a = self.post_op(&n);
        if a.map(|a| a.ftype) != Some(FileType::Lnk) {
            return Err(Fail::new(NfsStat::Inval, a));
        }
        let target = rustix::fs::readlinkat(&*n.fd, "", Vec::new())
            .map_err(|e| Fail::new(status_rx(e), a))?;
        Ok((a, target.into_bytes()))
    }

    fn read(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> NfsResult<ReadOk, PostOpAttr> {
        let (f, attr, size) = self.open_for_read(c, fh)?;
        if i64::try_from(offset).is_err() {
            // No file reaches past i64 (pread would say EINVAL): the end.
            return Ok(read_ok(attr, size, offset, 0));
        }
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset.saturating_add(done as u64)) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Fail::new(status(&e), Some(attr))),
            }
        }
        Ok(read_ok(attr, size, offset, done))
    }

    fn read_to_pipe(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        offset: u64,
        count: usize,
        pipe: BorrowedFd<'_>,
    ) -> Option<NfsResult<ReadOk, PostOpAttr>> {
        use rustix::pipe::{splice, SpliceFlags};
        let (f, attr, size) = match self.open_for_read(c, fh) {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let mut pos = offset;
        let mut done = 0;
        while done < count {
            // NONBLOCK: the pipe has room for `count`; never wait on it.
            match splice(
                &*f,
                Some(&mut pos),
                pipe,
                None,
                count - done,
                SpliceFlags::NONBLOCK,
            ) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(rustix::io::Errno::INTR) => {}
                // Nothing spliced yet: the copying path may still work
                // (a filesystem without splice support).
                Err(_) if done == 0 => return None,
                Err(_) => break,
            }
        }
        Some(Ok(read_ok(attr, size, offset, done)))
    }

    fn write(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        offset: u64,
        stable: StableHow,
        data: &[u8],
    ) -> NfsResult<WriteOk, WccData> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let st = n.st;
        let before = Some(self.attrs(&n.export, &st).wcc());
        let fail = |s: NfsStat| {
            Fail::new(
                s,
                WccData {
                    before,
                    after: self.post_op(&n),
                },
            )
        };
        if !n.opts.writable {
            return Err(fail(NfsStat::RoFs));
        }
        if is_dir(&st) {
            return Err(fail(NfsStat::IsDir));
        }
        if !is_reg(&st) {
            return Err(fail(NfsStat::Inval));
        }
        // More than FSINFO's wtmax (which fits in a record) gets a short
        // write, which the client follows with the rest.
        let data = data.get(..MAX_IO as usize).unwrap_or(data);
        let end = offset.checked_add(data.len() as u64);
        if end.is_none_or(|e| i64::try_from(e).is_err()) {
            return Err(fail(NfsStat::FBig));
        }
        let f = {
            let _g = self.become_(c, &n).map_err(fail)?;
            self.io_file(c, fh, &n, true).map_err(fail)?
        };
        // The kernel clears a written file's set-id bits unless the writer
        // has CAP_FSETID, which this server writing as root has: with
        // `nosuid_nodev`, a caller acting as root kept a setuid-root
        // program's bits while it rewrote the program.
        let mode = st.st_mode & 0o7777;
        let stripped = without_setid(&n.opts, mode, false);
        if stripped != mode {
            rustix::fs::fchmod(&*f, Mode::from_raw_mode(stripped))
                .map_err(|e| fail(status_rx(e)))?;
        }
        let done;
        {
            // One WRITE at a time per file: the kernel serialises buffered
            // writes to a file on its inode lock anyway, and its waiters
            // spin on that lock while the holder copies a MiB, burning a
            // core that the client and the network need. Here they sleep.
            let _one = lock_stripe(&self.write_locks, fh);
            done = write_most(&f, data, offset).map_err(|e| fail(status(&e)))?;
        }
        let data = data.get(..done).unwrap_or(data);
        let committed = match stable {
            StableHow::Unstable => {
                // Started once the reply is out (`after_reply`). The
                // COMMIT that follows (for a small file, within a round
                // trip) then finds the data on its way to the disk,
                // its blocks allocated in the journal transaction that is
                // already open, and several clients' COMMITs share one
                // journal commit more often. See docs/server.md.
                defer_writeback(&f, offset, data.len());
                StableHow::Unstable
            }
            StableHow::DataSync => {
                if let Err(e) = rustix::fs::fdatasync(&*f) {
                    self.bump_verifier();
                    return Err(fail(status_rx(e)));
                }
                StableHow::DataSync
            }
            StableHow::FileSync => {
                if let Err(e) = rustix::fs::fsync(&*f) {
                    self.bump_verifier();
                    return Err(fail(status_rx(e)));
                }
                StableHow::FileSync
            }
        };
        let after = rustix::fs::fstat(&*f)
            .ok()
            .map(|s| self.attrs(&n.export, &s));
        Ok(WriteOk {
            wcc: WccData { before, after },
            count: u32::try_from(data.len()).unwrap_or(0),
            committed,
            verf: self.verifier(),
        })
    }

    fn create(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        how: &CreateHow,
    ) -> NfsResult<Created, WccData> {
        let (d, before, opened) = self.dir_op(c, dir, name, |d, name| {
            let base = OFlags::CREATE
                | OFlags::RDWR
                | OFlags::NOFOLLOW
                | OFlags::NOCTTY
                | OFlags::CLOEXEC
                | OFlags::NONBLOCK;
            let attrs = match how {
                CreateHow::Unchecked(a) | CreateHow::Guarded(a) => self.new_owner(c, d, a),
                CreateHow::Exclusive(_) => Sattr::default(),
            };
            let mode = without_setid(&d.opts, attrs.mode.unwrap_or(0o644), false);
            let mode = Mode::from_raw_mode(mode & 0o7777);
            // Always exclusive at first, so that what this call made is
            // known, and is what a failure removes again.
            let made = rustix::fs::openat2(&*d.fd, name, base | OFlags::EXCL, mode, beneath());
            match made {
                Ok(fd) => {
                    let mut rest = attrs;
                    rest.mode = None;
                    if let CreateHow::Exclusive(v) = how {
                        // Keep the verifier in the times, as nfsd does, so a
                        // retransmission can recognise its own file.
                        let (a, m) = verifier_times(v);
                        rest.atime = SetTime::ClientTime(a);
                        rest.mtime = SetTime::ClientTime(m);
                    }
                    if rest != Sattr::default() {
                        if let Err(e) = self.apply_sattr(&fd, &rest, None) {
                            self.unmake(d, name, &fd);
                            return Err(e);
                        }
                    }
                    Ok(Some(fd))
                }
                Err(rustix::io::Errno::EXIST) => match how {
                    CreateHow::Guarded(_) => Err(NfsStat::Exist),
                    CreateHow::Unchecked(_) => {
                        // UNCHECKED over an existing regular file opens it
                        // and applies only a size, as knfsd does: the
                        // truncation of an O_TRUNC open. Over anything
                        // else (a directory, a link, a FIFO): EXIST.
                        // Opened as a path: a file the caller may not
                        // write is still found, and its truncation is
                        // checked on its own.
                        let fd = self.open_child(d.fd.as_fd(), name)?;
                        if !is_reg(&rustix::fs::fstat(&fd).map_err(status_rx)?) {
                            return Err(NfsStat::Exist);
                        }
                        if let CreateHow::Unchecked(Sattr {
                            size: Some(size), ..
                        }) = how
                        {
                            let only_size = Sattr {
                                size: Some(*size),
                                ..Sattr::default()
                            };
                            self.apply_sattr(&fd, &only_size, None)?;
                        }
                        Ok(None)
                    }
                    CreateHow::Exclusive(v) => {
                        let st = rustix::fs::statat(&*d.fd, name, AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(status_rx)?;
                        let (a, m) = verifier_times(v);
                        let ours = is_reg(&st)
                            && st.st_size == 0
                            && i64::from(a.seconds) == st.st_atime
                            && i64::from(m.seconds) == st.st_mtime;
                        if ours {
                            Ok(None)
                        } else {
                            Err(NfsStat::Exist)
                        }
                    }
                },
                Err(e) => Err(status_rx(e)),
            }
        })?;
        let (created, st) = self.created_stat(&d, OsStr::from_bytes(name), before);
        if let (Some(fd), Some(fh), Some(st)) = (opened, created.fh, st) {
            // The descriptor CREATE opened, read-write and as the caller,
            // serves the caller's WRITEs that follow (a guest creating a
            // file writes it next) instead of a reopen each. Only if the
            // name still leads to the file it made: the handle is the
            // name's.
            if let Ok(own) = rustix::fs::fstat(&fd) {
                if own.st_dev == st.st_dev && own.st_ino == st.st_ino && is_reg(&own) {
                    let key = self.io_key(c, &fh, &d, true);
                    let checked = Checked::now(&own);
                    self.keep_io(key, io_perm(&own), checked, Arc::new(File::from(fd)));
                }
            }
        }
        Ok(created)
    }

    fn mkdir(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        attrs: &Sattr,
    ) -> NfsResult<Created, WccData> {
        let (d, before, ()) = self.dir_op(c, dir, name, |d, name| {
            let mode = without_setid(&d.opts, attrs.mode.unwrap_or(0o755), true);
            let mode = Mode::from_raw_mode(mode & 0o7777);
            rustix::fs::mkdirat(&*d.fd, name, mode).map_err(status_rx)?;
            // A directory has no size to set: dropped, as knfsd does.
            self.set_new_attrs(
                d,
                name,
                &Sattr {
                    mode: None,
                    size: None,
                    ..self.new_owner(c, d, attrs)
                },
            )
        })?;
        Ok(self.created(&d, OsStr::from_bytes(name), before))
    }

    fn symlink(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        attrs: &Sattr,
        target: &[u8],
    ) -> NfsResult<Created, WccData> {
        let (d, before, ()) = self.dir_op(c, dir, name, |d, name| {
            if target.is_empty() || target.contains(&0) {
                return Err(NfsStat::Inval);
            }
            // The target is stored as text and never followed here.
            rustix::fs::symlinkat(OsStr::from_bytes(target), &*d.fd, name).map_err(status_rx)?;
            // A symlink takes only an owner.
            let owner = self.new_owner(c, d, attrs);
            self.set_new_attrs(
                d,
                name,
                &Sattr {
                    uid: owner.uid,
                    gid: owner.gid,
                    ..Sattr::default()
                },
            )
        })?;
        Ok(self.created(&d, OsStr::from_bytes(name), before))
    }

    fn mknod(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        name: &[u8],
        kind: &MknodKind,
    ) -> NfsResult<Created, WccData> {
        use rustix::fs::FileType as T;
        let (d, before, ()) = self.dir_op(c, dir, name, |d, name| {
            let (t, a, dev) = match kind {
                MknodKind::Chr(a, (ma, mi)) => (T::CharacterDevice, a, device(*ma, *mi)?),
                MknodKind::Blk(a, (ma, mi)) => (T::BlockDevice, a, device(*ma, *mi)?),
                MknodKind::Sock(a) => (T::Socket, a, 0),
                MknodKind::Fifo(a) => (T::Fifo, a, 0),
                MknodKind::Other(_) => return Err(NfsStat::BadType),
            };
            // A device node made by a caller acting as root gives whoever
            // can reach it on the host that device (a 0666 node of the
            // host's disk): as on a `nodev` mount, only FIFOs and sockets.
            if d.opts.nosuid_nodev && matches!(t, T::CharacterDevice | T::BlockDevice) {
                return Err(NfsStat::Perm);
            }
            let mode = without_setid(&d.opts, a.mode.unwrap_or(0o644), false);
            let mode = Mode::from_raw_mode(mode & 0o7777);
            rustix::fs::mknodat(&*d.fd, name, t, mode, dev).map_err(status_rx)?;
            // The owner and times asked for, as for any new object (the
            // mode went to mknodat, and a special file has no size).
            self.set_new_attrs(
                d,
                name,
                &Sattr {
                    mode: None,
                    size: None,
                    ..self.new_owner(c, d, a)
                },
            )
        })?;
        Ok(self.created(&d, OsStr::from_bytes(name), before))
    }

    fn remove(&self, c: &Caller<'_>, dir: &FileHandle, name: &[u8]) -> NfsResult<WccData, WccData> {
        if name == b"." || name == b".." {
            // ACCES, as knfsd answers (EXIST is not among REMOVE's errors).
            return Err(self.refuse_dots(c, dir, NfsStat::Acces));
        }
        let (d, before, ()) = self.dir_op(c, dir, name, |d, name| {
            let gone = self.named(d, name);
            rustix::fs::unlinkat(&*d.fd, name, AtFlags::empty()).map_err(status_rx)?;
            self.forget(gone);
            Ok(())
        })?;
        Ok(WccData {
            before,
            after: self.post_op(&d),
        })
    }

    fn rmdir(&self, c: &Caller<'_>, dir: &FileHandle, name: &[u8]) -> NfsResult<WccData, WccData> {
        // As rmdir(2) answers.
        if name == b"." {
            return Err(self.refuse_dots(c, dir, NfsStat::Inval));
        }
        if name == b".." {
            return Err(self.refuse_dots(c, dir, NfsStat::NotEmpty));
        }
        let (d, before, ()) = self.dir_op(c, dir, name, |d, name| {
            let gone = self.named(d, name);
            rustix::fs::unlinkat(&*d.fd, name, AtFlags::REMOVEDIR).map_err(status_rx)?;
            self.forget(gone);
            Ok(())
        })?;
        Ok(WccData {
            before,
            after: self.post_op(&d),
        })
    }

    fn rename(
        &self,
        c: &Caller<'_>,
        from_dir: &FileHandle,
        from: &[u8],
        to_dir: &FileHandle,
        to: &[u8],
    ) -> NfsResult<RenameWcc, RenameWcc> {
        let fd = self.node(c, from_dir).map_err(Fail::from)?;
        let td = self.node(c, to_dir).map_err(Fail::from)?;
        let fb = self.pre_op(&fd);
        let tb = self.pre_op(&td);
        let wcc = |this: &Self| RenameWcc {
            from: WccData {
                before: fb,
                after: this.post_op(&fd),
            },
            to: WccData {
                before: tb,
                after: this.post_op(&td),
            },
        };
        let r = (|| {
            if fd.export.id != td.export.id {
                return Err(NfsStat::XDev);
            }
            self.may_change(&fd)?;
            self.may_change(&td)?;
            // `.` and `..` cannot be moved or replaced: INVAL, as
            // rename(2) answers for them (EXIST would say a target is in
            // the way).
            if [from, to].iter().any(|n| *n == b"." || *n == b"..") {
                return Err(NfsStat::Inval);
            }
            let from = check_new_name(from)?;
            let to = check_new_name(to)?;
            let _g = self.become_(c, &fd)?;
            // The target, if any, loses that name; the object moved gets a
            // new ctime.
            let moved = self.named(&fd, from);
            let replaced = self.named(&td, to);
            rustix::fs::renameat(&*fd.fd, from, &*td.fd, to).map_err(status_rx)?;
            self.forget(moved.map(|m| Named { last: None, ..m }));
            self.forget(replaced);
            if !self.by_handle {
                // Its origin is the new name now (found again by it).
                let _ = self.child(&td, to.as_bytes());
            }
            Ok(())
        })()
        .and_then(|()| {
            self.commit_metadata(&fd)?;
            if fd.fh != td.fh {
                self.commit_metadata(&td)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(wcc(self)),
            Err(s) => Err(Fail::new(s, wcc(self))),
        }
    }

    fn link(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        dir: &FileHandle,
        name: &[u8],
    ) -> NfsResult<LinkData, LinkData> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let d = self.node(c, dir).map_err(Fail::from)?;
        let before = self.pre_op(&d);
        let data = |this: &Self| LinkData {
            attr: this.post_op(&n),
            dir_wcc: WccData {
                before,
                after: this.post_op(&d),
            },
        };
        let r = (|| {
            if n.export.id != d.export.id {
                return Err(NfsStat::XDev);
            }
            self.may_change(&d)?;
            let name = check_new_name(name)?;
            let _g = self.become_(c, &d)?;
            // Linking through /proc/self/fd needs no CAP_DAC_READ_SEARCH,
            // unlike AT_EMPTY_PATH, so the caller's identity suffices.
            let src = n.fd.as_raw_fd().to_string();
            rustix::fs::linkat(
                &self.proc_fd,
                src.as_str(),
                &*d.fd,
                name,
                AtFlags::SYMLINK_FOLLOW,
            )
            .map_err(status_rx)
        })()
        .and_then(|()| {
            // The new name, and the object's link count.
            self.commit_metadata(&d)?;
            self.commit_metadata(&n)
        });
        match r {
            Ok(()) => Ok(data(self)),
            Err(s) => Err(Fail::new(s, data(self))),
        }
    }

    fn readdir(
        &self,
        c: &Caller<'_>,
        dir: &FileHandle,
        cookie: u64,
        verf: Verifier,
        sink: &mut dyn DirSink,
    ) -> NfsResult<ReaddirOk, PostOpAttr> {
        let d = self.node(c, dir).map_err(Fail::from)?;
        // A listing changes nothing: the attributes from just before it
        // stand for after it.
        let dir_attr = Some(self.attrs(&d.export, &d.st));
        let fail = |s: NfsStat| Fail::new(s, dir_attr);
        if dir_attr.map(|a| a.ftype) != Some(FileType::Dir) {
            return Err(fail(NfsStat::NotDir));
        }
        let my_verf = self.cookie_verf(&d);
        if cookie != 0 && verf != my_verf && verf != [0; 8] {
            return Err(fail(NfsStat::BadCookie));
        }
        let root_fileid = self.fileid(&d.export, &stat(&d.export.root).map_err(fail)?);
        let at_root = self.is_root(&d);
        let _g = self.become_(c, &d).map_err(fail)?;
        let f = self
            .reopen(&d.fd, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(fail)?;
        // A cookie the filesystem cannot seek to (past i64, say) was not
        // one of its own.
        if i64::try_from(cookie).is_err() {
            return Err(fail(NfsStat::BadCookie));
        }
        rustix::fs::seek(&f, rustix::fs::SeekFrom::Start(cookie)).map_err(|e| {
            fail(match e {
                rustix::io::Errno::INVAL => NfsStat::BadCookie,
                e => status_rx(e),
            })
        })?;
        // Sized by the first read, the largest: the reply only fills up.
        let mut buf = Vec::new();
        let plus = sink.plus();
        // One clock reading for the cache's freshness test of every entry.
        let now = std::time::Instant::now();
        // Entries may come from the cache only for a caller who could look
        // them up: one with search permission on the directory.
        let cached_ok = plus && self.may(&d.fd, rustix::fs::Access::EXEC_OK).is_ok();
        let dir_key = inode_of(&d.st);
        // Dirent bytes read and reply bytes they became, for the next
        // read's size.
        let (mut read, mut sent) = (0usize, 0usize);
        loop {
            // Read about as many entries as fit in what is left of the
            // reply. Entries read and not sent are walked again by the
            // next call (ext4 hashes every name of the block it starts
            // in), so the first read stays under what can fit, and the
            // next ones follow how much reply the entries so far made.
            // A host dirent is 24 bytes and the name; an NFS entry about
            // as much, and with attributes and a handle three times (long
            // names) to six times (short ones) that.
            let room = sink.room();
            let want = room
                .saturating_mul(read)
                .checked_div(sent)
                .unwrap_or(room / if plus { 6 } else { 1 })
                .clamp(DIRENT_MIN, DIRENT_BUF);
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let window = buf.get_mut(..want).unwrap_or_default();
            let n = sys::getdents(f.as_fd(), window).map_err(|e| fail(status(&e)))?;
            read += n;
            if n == 0 {
                return Ok(ReaddirOk {
                    dir_attr,
                    verf: my_verf,
                    eof: true,
                });
            }
            for e in sys::parse_dirents(&buf[..n]) {
                // A name no local filesystem gives (a `/`, a NUL), as a
                // crafted disk image or a network filesystem mounted in
                // the export might: it would reach outside the directory
                // when looked up by name below.
                if check_name(e.name).is_err() || !self.visible(&d, e.name) {
                    continue;
                }
                let dots = e.name == b"." || e.name == b"..";
                // The fileid GETATTR gives: on a filesystem mounted inside
                // the export, its inode numbers are mapped off the
                // export's own.
                let fileid = if at_root && e.name == b".." {
                    root_fileid
                } else {
                    self.fileid_of(&d.export, d.st.st_dev, e.ino)
                };
                let cached = if cached_ok && !dots {
                    self.entries.get(d.export.id, dir_key, e.name, now)
                } else {
                    None
                };
                let (attr, fh, fileid) = if let Some((fh, a)) = cached {
                    (Some(a), Some(fh), a.fileid)
                } else if plus && !dots {
                    match self.entry_plus(&d, e.name) {
                        Ok((fh, a)) => (Some(a), Some(fh), a.fileid),
                        Err(_) => (None, None, fileid),
                    }
                } else {
                    (None, None, fileid)
                };
                let entry = DirEntry {
                    fileid,
                    name: e.name,
                    cookie: e.off,
                    attr,
                    fh,
                };
                if !sink.push(&entry) {
                    return Ok(ReaddirOk {
                        dir_attr,
                        verf: my_verf,
                        eof: false,
                    });
                }
            }
            sent += room.saturating_sub(sink.room());
        }
    }

    fn fsstat(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, FsStat), PostOpAttr> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let a = self.post_op(&n);
        let s = rustix::fs::fstatvfs(&*n.fd).map_err(|e| Fail::new(status_rx(e), a))?;
        let bs = s.f_frsize.max(1);
        Ok((
            a,
            FsStat {
                tbytes: s.f_blocks.saturating_mul(bs),
                fbytes: s.f_bfree.saturating_mul(bs),
                abytes: s.f_bavail.saturating_mul(bs),
                tfiles: s.f_files,
                ffiles: s.f_ffree,
                afiles: s.f_favail,
                invarsec: 0,
            },
        ))
    }

    fn fsinfo(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, FsInfo), PostOpAttr> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        Ok((
            self.post_op(&n),
            FsInfo {
                rtmax: MAX_IO,
                rtpref: MAX_IO,
                rtmult: 4096,
                wtmax: MAX_IO,
                wtpref: MAX_IO,
                wtmult: 4096,
                dtpref: 64 * 1024,
                maxfilesize: max_file_size(&n.fd),
                time_delta: NfsTime {
                    seconds: 0,
                    nseconds: 1,
                },
                // LINK | SYMLINK | HOMOGENEOUS | CANSETTIME
                properties: 0x1b,
            },
        ))
    }

    fn pathconf(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
    ) -> NfsResult<(PostOpAttr, PathConf), PostOpAttr> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let a = self.post_op(&n);
        let s = rustix::fs::fstatvfs(&*n.fd).map_err(|e| Fail::new(status_rx(e), a))?;
        Ok((
            a,
            PathConf {
                linkmax: 32_000,
                name_max: u32::try_from(s.f_namemax).unwrap_or(255).min(255),
                no_trunc: true,
                chown_restricted: true,
                case_insensitive: false,
                case_preserving: true,
            },
        ))
    }

    fn commit(
        &self,
        c: &Caller<'_>,
        fh: &FileHandle,
        _offset: u64,
        _count: u32,
    ) -> NfsResult<(WccData, Verifier), WccData> {
        let n = self.node(c, fh).map_err(Fail::from)?;
        let st = n.st;
        let before = Some(self.attrs(&n.export, &st).wcc());
        let fail = |s: NfsStat| {
            Fail::new(
                s,
                WccData {
                    before,
                    after: self.post_op(&n),
                },
            )
        };
        if !n.opts.writable {
            // Nothing can have been written through this export.
            return Err(fail(NfsStat::RoFs));
        }
        if !is_reg(&st) {
            return Err(fail(if is_dir(&st) {
                NfsStat::IsDir
            } else {
                NfsStat::Inval
            }));
        }
        // fsync needs no particular access mode: the descriptor this
        // caller's WRITEs went through when it is still open, else the
        // server's own (which avoids refusing a commit for a file the
        // caller may write but not read).
        let key = self.io_key(c, fh, &n, true);
        let f = match self
            .io
            .lock()
            .ok()
            .and_then(|m| m.get(&key, io_perm(&n.st), false).map(|e| e.f.clone()))
        {
            Some(f) => f,
            None => {
                as_server(self.switch_ids);
                Arc::new(self.reopen(&n.fd, OFlags::RDONLY).map_err(fail)?)
            }
        };
        if let Err(e) = rustix::fs::fsync(&*f) {
            self.bump_verifier();
            return Err(fail(status_rx(e)));
        }
        Ok((
            WccData {
                before,
                after: self.post_op(&n),
            },
            self.verifier(),
        ))
    }

    fn mount(&self, c: &Caller<'_>, path: &[u8]) -> Result<FileHandle, MountStat> {
        let path = std::str::from_utf8(path).map_err(|_| MountStat::NoEnt)?;
        // `//data/`, `/./data` and `/data` are one path, as the exports
        // file reads them (`..` is not resolved by text: it is left to the
        // walk beneath the export, which refuses to leave it).
        let mut tidy = String::with_capacity(path.len());
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            tidy.push('/');
            tidy.push_str(part);
        }
        if tidy.is_empty() {
            tidy.push('/');
        }
        let trimmed = tidy.as_str();
        // The longest export whose mount path is a prefix at a component
        // boundary; the rest is resolved beneath it. Only the mount path:
        // an export given one is not found by its host path, which a guest
        // could otherwise probe for (the host's layout is none of its
        // business). Without one, the mount path is the host path.
        let mut best: Option<(&Arc<Export>, &str)> = None;
        let exports = self.current_exports();
        for e in exports.iter() {
            let prefix = e.cfg.mount_path.as_str();
            if prefix.is_empty() {
                continue;
            }
            let rest = if trimmed == prefix {
                Some("")
            } else {
                trimmed
                    .strip_prefix(prefix)
                    .filter(|r| r.starts_with('/') || prefix == "/")
            };
            if let Some(rest) = rest {
                if best.map(|(_, r)| rest.len() < r.len()).unwrap_or(true) {
                    best = Some((e, rest));
                }
            }
        }
        let (export, rest) = best.ok_or(MountStat::NoEnt)?;
        // MNT resolves the path as the server (the export's admin chose it),
        // not as whichever caller this thread served last.
        as_server(self.switch_ids);
        let Some(opts) = export.cfg.options_for(c.addr.ip()) else {
            self.refused_mount(
                c,
                export,
                "no client rule of the export admits this address",
            );
            return Err(MountStat::Acces);
        };
        if opts.secure && c.addr.port() >= 1024 {
            self.refused_mount(
                c,
                export,
                "the export is `secure` and the source port is not below 1024 (a client \
                 behind NAT, such as QEMU user networking, needs `insecure`)",
            );
            return Err(MountStat::Perm);
        }
        // The directory this export opened at start was removed on the
        // host: its handles are all stale, and a new directory of that
        // name is another one. Said, rather than a handle every call of
        // which is STALE.
        if rustix::fs::fstat(&*export.root).map_or(true, |st| st.st_nlink == 0) {
            self.refused_mount(
                c,
                export,
                "the export's directory was removed on the host after the server started; \
                 send the server SIGHUP (or restart it) to serve the one there now",
            );
            return Err(MountStat::NoEnt);
        }
        let rest = rest.trim_start_matches('/');
        let fd = if rest.is_empty() {
            export.root.clone()
        } else if export.cfg.single_file.is_some() {
            return Err(MountStat::NoEnt);
        } else {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let r = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            Arc::new(
                rustix::fs::openat2(&*export.root, rest, flags, Mode::empty(), r).map_err(|e| {
                    match e {
                        rustix::io::Errno::NOTDIR => MountStat::NotDir,
                        rustix::io::Errno::ACCESS => MountStat::Acces,
                        _ => MountStat::NoEnt,
                    }
                })?,
            )
        };
        let st = rustix::fs::fstat(&*fd).map_err(|_| MountStat::Io)?;
        let fh = self
            .handle_for(export, &fd, &st)
            .map_err(|_| MountStat::ServerFault)?;
        self.remember(fh, fd);
        Ok(fh)
    }

    fn export_list(&self) -> Vec<ExportEntry> {
        self.current_exports()
            .iter()
            .map(|e| ExportEntry {
                dir: e.cfg.mount_path.clone().into_bytes(),
                groups: e
                    .cfg
                    .clients
                    .iter()
                    .map(|r| r.client.to_string().into_bytes())
                    .collect(),
            })
            .collect()
    }
}

/// Splits an exclusive-create verifier into the access and modification
/// times that store it.
fn verifier_times(v: &Verifier) -> (NfsTime, NfsTime) {
    let a = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) & 0x7fff_ffff;
    let m = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) & 0x7fff_ffff;
    (
        NfsTime {
            seconds: a,
            nseconds: 0,
        },
        NfsTime {
            seconds: m,
            nseconds: 0,
        },
    )
}

#[cfg(test)]
mod line_gate_tests {
    use super::*;

    /// One client retrying in a loop is logged once a period with the
    /// count of the rest, and does not hide another client's refusal (a
    /// single gate for everyone had).
    #[test]
    fn each_client_gets_its_own_line_a_period() {
        let mut log = LineGate::<std::net::IpAddr>::default();
        let t0 = Instant::now();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert_eq!(log.allow(a, t0), Some(0));
        for _ in 0..5 {
            assert_eq!(log.allow(a, t0), None);
        }
        assert_eq!(log.allow(b, t0), Some(0), "another client is not held back");
        let later = t0 + LineGate::<std::net::IpAddr>::PERIOD;
        assert_eq!(log.allow(a, later), Some(5));
        assert_eq!(log.allow(a, later), None);
        // Bounded: many addresses do not grow it past its size.
        for i in 0..1000u32 {
            let ip = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            assert_eq!(log.allow(ip, later), Some(0));
        }
        assert!(log.clients.len() <= LineGate::<std::net::IpAddr>::CLIENTS);
    }
}

#[cfg(test)]
mod fd_budget_tests {
    use super::*;

    /// The caches take what the reserve leaves, split evenly; under a
    /// low limit the reserve is 5/8 of it, so that connections keep room.
    #[test]
    fn the_caches_leave_room_under_every_limit() {
        assert_eq!(fd_budget(Some(1 << 20)), (PATH_CACHE_MAX, IO_CACHE_MAX));
        assert_eq!(fd_budget(Some(4096)), (1536, 1536));
        assert_eq!(fd_budget(Some(2048)), (512, 512));
        assert_eq!(fd_budget(Some(1024)), (192, 192));
        assert_eq!(fd_budget(Some(256)), (48, 48));
        // Never none: a cache of 16 still serves.
        assert_eq!(fd_budget(Some(20)), (16, 16));
        // Unknown: taken as a common default.
        assert_eq!(fd_budget(None), fd_budget(Some(4096)));
    }
}
