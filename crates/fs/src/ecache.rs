//! READDIRPLUS entries answered without a `statx` each, for a bounded time.
//!
//! A READDIRPLUS entry carries the object's handle and attributes. Looking
//! them up costs a `statx` by name per entry, about 0.8 µs here against
//! 0.25 µs for the entry's share of `getdents`: most of a listing's time,
//! and the reason listing rates were capped near ganesha's (which answers
//! from a 60-second attribute cache). This cache keeps what the last
//! lookups found, in two parts:
//!
//! * **Names**: (directory, name) → the object's inode and handle, valid
//!   while the directory's ctime is unchanged. Every change to a directory
//!   (create, remove, rename, on the host or through NFS) moves its ctime,
//!   so a name is never answered with an object it no longer names. A
//!   kernel with coarse timestamps can give two changes within one clock
//!   tick the same ctime, so a directory changed within the last
//!   [`SETTLE`] is never cached (git's "racy clean" rule).
//! * **Attributes**: inode → attributes, for at most the configured time
//!   (1 s by default, `--attr-cache-ms`). Every time the server stats an
//!   object for any call it refreshes the entry, so a listing never shows
//!   attributes older than ones already sent for that object, and changes
//!   made through this server show at once. Changes made on the host (or
//!   by another server) show within that time, on top of the client's own
//!   attribute cache (3 to 60 s for the Linux client).
//!
//! Both parts are bounded: a shard is emptied when it reaches
//! [`SHARD_CAP`] entries (see there for the number). GETATTR, LOOKUP and
//! everything else stay uncached.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vmshare_proto::nfs3::{Fattr, FileHandle};

use crate::hcache::{KeyHasher, SHARDS, SHARD_CAP};

/// A directory changed more recently than this is not cached: its ctime
/// may not move for a change within the same clock tick.
pub(crate) const SETTLE: Duration = Duration::from_millis(50);

/// Export id, device, inode.
type InodeKey = (u32, u64, u64);
/// Export id, directory device and inode, hash of the name.
type NameKey = (u32, u64, u64, u64);

/// A ctime as (seconds, nanoseconds).
pub(crate) type Ctime = (i64, i64);

#[derive(Debug)]
struct Named {
    name: Box<[u8]>,
    dir_ctime: Ctime,
    dev: u64,
    ino: u64,
    fh: FileHandle,
}

#[derive(Debug)]
struct Seen {
    attr: Fattr,
    ctime: Ctime,
    at: Instant,
}

type Shard<K, V> = Mutex<HashMap<K, V, BuildHasherDefault<KeyHasher>>>;

/// The entry cache; see the module documentation.
#[derive(Debug)]
pub(crate) struct EntryCache {
    ttl: Duration,
    /// Hashes names with a key of this process's: the guest picks them,
    /// and with the cache's unkeyed hash it could pick 1,800 that all fall
    /// in one bucket of one shard, making every lookup there walk them
    /// under the shard's lock (a review measured lookups 14 times
    /// slower). Inode numbers, the other keys, are the filesystem's.
    names_key: std::collections::hash_map::RandomState,
    names: [Shard<NameKey, Named>; SHARDS],
    attrs: [Shard<InodeKey, Seen>; SHARDS],
}

fn shard_of(ino: u64, extra: u64) -> usize {
    // Below SHARDS, so the conversion cannot fail.
    usize::try_from((ino ^ extra) % SHARDS as u64).unwrap_or(0)
}

/// Inserts into a bounded shard, emptying it first when full.
fn insert<K: std::hash::Hash + Eq, V>(shard: &Shard<K, V>, key: K, value: V) {
    if let Ok(mut m) = shard.lock() {
        if m.len() >= SHARD_CAP && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(key, value);
    }
}

/// Whether a directory with this ctime has not changed for [`SETTLE`].
fn settled(ctime: Ctime) -> bool {
    let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return false;
    };
    let (Ok(s), Ok(ns)) = (u64::try_from(ctime.0), u32::try_from(ctime.1)) else {
        return false;
    };
    let Some(then) = Duration::from_secs(s).checked_add(Duration::from_nanos(u64::from(ns))) else {
        return false;
    };
    now.checked_sub(then).is_some_and(|age| age >= SETTLE)
}

impl EntryCache {
    /// A cache whose attributes live `ttl` (zero: nothing is cached).
    pub(crate) fn new(ttl: Duration) -> EntryCache {
        EntryCache {
            ttl,
            names_key: std::collections::hash_map::RandomState::new(),
            names: std::array::from_fn(|_| Mutex::default()),
            attrs: std::array::from_fn(|_| Mutex::default()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The handle and attributes of `name` in the directory (`dir_dev`,
    /// `dir_ino`) whose ctime is now `dir_ctime`, if still known at `now`.
    /// The caller reads the clock: a listing asks for hundreds of entries,
    /// and a clock reading for each was 2-3% of the server's time in four
    /// clients' READDIRPLUS.
    pub(crate) fn get(
        &self,
        export: u32,
        (dir_dev, dir_ino, dir_ctime): (u64, u64, Ctime),
        name: &[u8],
        now: Instant,
    ) -> Option<(FileHandle, Fattr)> {
        if !self.enabled() {
            return None;
        }
        let h = self.names_key.hash_one(name);
        let (dev, ino, fh) = {
            let m = self.names[shard_of(dir_ino, h)].lock().ok()?;
            let n = m.get(&(export, dir_dev, dir_ino, h))?;
            if n.dir_ctime != dir_ctime || *n.name != *name {
                return None;
            }
            (n.dev, n.ino, n.fh)
        };
        let m = self.attrs[shard_of(ino, 0)].lock().ok()?;
        let seen = m.get(&(export, dev, ino))?;
        (now.saturating_duration_since(seen.at) < self.ttl).then_some((fh, seen.attr))
    }

    /// Remembers that `name` in the directory names (`dev`, `ino`), with
    /// this handle and these attributes, all just looked up.
    pub(crate) fn put(
        &self,
        export: u32,
        (dir_dev, dir_ino, dir_ctime): (u64, u64, Ctime),
        name: &[u8],
        (dev, ino, ctime): (u64, u64, Ctime),
        fh: FileHandle,
        attr: &Fattr,
    ) {
        if !self.enabled() {
            return;
        }
        self.saw(export, (dev, ino, ctime), attr);
        if !settled(dir_ctime) {
            return;
        }
        let h = self.names_key.hash_one(name);
        let named = Named {
            name: name.into(),
            dir_ctime,
            dev,
            ino,
            fh,
        };
        insert(
            &self.names[shard_of(dir_ino, h)],
            (export, dir_dev, dir_ino, h),
            named,
        );
    }

    /// Records attributes the server just read for an object, unless the
    /// cache already holds a later state of it (by ctime): so that calls
    /// racing on two threads cannot put an older state back.
    pub(crate) fn saw(&self, export: u32, (dev, ino, ctime): (u64, u64, Ctime), attr: &Fattr) {
        if !self.enabled() {
            return;
        }
        let Ok(mut m) = self.attrs[shard_of(ino, 0)].lock() else {
            return;
        };
        let key = (export, dev, ino);
        if m.get(&key).is_some_and(|s| s.ctime > ctime) {
            return;
        }
        if m.len() >= SHARD_CAP && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(
            key,
            Seen {
                attr: *attr,
                ctime,
                at: Instant::now(),
            },
        );
    }

    /// Drops an object's attributes after a change the server did not
    /// stat it after (a name of it removed or renamed).
    pub(crate) fn forget(&self, export: u32, dev: u64, ino: u64) {
        if let Ok(mut m) = self.attrs[shard_of(ino, 0)].lock() {
            m.remove(&(export, dev, ino));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmshare_proto::nfs3::FileType;

    /// Names hash under a key of each cache's own, so a guest cannot
    /// work out names that collide: with the unkeyed hash every cache
    /// hashed a name alike, and 1,800 chosen names filled one bucket.
    #[test]
    fn name_hashes_are_keyed() {
        let (a, b) = (EntryCache::new(SETTLE), EntryCache::new(SETTLE));
        let differ = (0..4u8)
            .filter(|i| a.names_key.hash_one([b'n', *i]) != b.names_key.hash_one([b'n', *i]))
            .count();
        assert_eq!(differ, 4);
    }

    fn attr(size: u64) -> Fattr {
        Fattr {
            ftype: FileType::Reg,
            mode: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            size,
            used: 0,
            rdev: (0, 0),
            fsid: 1,
            fileid: 7,
            atime: Default::default(),
            mtime: Default::default(),
            ctime: Default::default(),
        }
    }

    fn fh() -> FileHandle {
        FileHandle::new(b"handle").expect("handle")
    }

    fn old_dir(ctime_s: i64) -> (u64, u64, Ctime) {
        (1, 2, (ctime_s, 0))
    }

    #[test]
    fn a_name_lives_while_its_directory_is_unchanged() {
        let c = EntryCache::new(Duration::from_secs(60));
        let fh = fh();
        c.put(1, old_dir(1000), b"a", (1, 7, (5, 0)), fh, &attr(10));
        assert_eq!(
            c.get(1, old_dir(1000), b"a", Instant::now())
                .map(|x| x.1.size),
            Some(10)
        );
        // The directory changed: the name may name something else now.
        assert!(c.get(1, old_dir(1001), b"a", Instant::now()).is_none());
        // Another name, another export: not this entry.
        assert!(c.get(1, old_dir(1000), b"b", Instant::now()).is_none());
        assert!(c.get(2, old_dir(1000), b"a", Instant::now()).is_none());
    }

    #[test]
    fn a_directory_changed_just_now_is_not_cached() {
        let c = EntryCache::new(Duration::from_secs(60));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
        let dir = (1, 2, (now.as_secs() as i64, i64::from(now.subsec_nanos())));
        c.put(1, dir, b"a", (1, 7, (5, 0)), fh(), &attr(10));
        assert!(c.get(1, dir, b"a", Instant::now()).is_none());
    }

    #[test]
    fn attributes_expire_refresh_and_never_go_back() {
        let c = EntryCache::new(Duration::from_millis(100));
        let fh = fh();
        c.put(1, old_dir(1000), b"a", (1, 7, (5, 0)), fh, &attr(10));
        // A later state seen by another call replaces it...
        c.saw(1, (1, 7, (6, 0)), &attr(20));
        assert_eq!(
            c.get(1, old_dir(1000), b"a", Instant::now())
                .map(|x| x.1.size),
            Some(20)
        );
        // ...and an earlier one does not.
        c.saw(1, (1, 7, (5, 0)), &attr(10));
        assert_eq!(
            c.get(1, old_dir(1000), b"a", Instant::now())
                .map(|x| x.1.size),
            Some(20)
        );
        c.forget(1, 1, 7);
        assert!(c.get(1, old_dir(1000), b"a", Instant::now()).is_none());
        c.saw(1, (1, 7, (7, 0)), &attr(30));
        std::thread::sleep(Duration::from_millis(150));
        assert!(c.get(1, old_dir(1000), b"a", Instant::now()).is_none());
    }

    #[test]
    fn a_zero_time_caches_nothing() {
        let c = EntryCache::new(Duration::ZERO);
        c.put(1, old_dir(1000), b"a", (1, 7, (5, 0)), fh(), &attr(1));
        assert!(c.get(1, old_dir(1000), b"a", Instant::now()).is_none());
    }

    #[test]
    fn both_parts_stay_bounded_without_growing_their_tables() {
        let c = EntryCache::new(Duration::from_secs(60));
        for i in 0..(SHARD_CAP * SHARDS * 3) as u64 {
            let name = format!("f{i}");
            c.put(
                1,
                old_dir(1000),
                name.as_bytes(),
                (1, i, (5, 0)),
                fh(),
                &attr(1),
            );
        }
        for s in &c.names {
            let m = s.lock().expect("unpoisoned");
            assert!(m.len() <= SHARD_CAP && m.capacity() <= SHARD_CAP);
        }
        for s in &c.attrs {
            let m = s.lock().expect("unpoisoned");
            assert!(m.len() <= SHARD_CAP && m.capacity() <= SHARD_CAP);
        }
    }
}
