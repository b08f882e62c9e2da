//! Handles already made, by inode, for READDIRPLUS.
//!
//! A READDIRPLUS entry needs attributes and a handle. Unless the entry
//! cache (`ecache`) still holds both, the attributes cost one `statx` by
//! name. The handle never changes while the inode lives, and making it
//! costs opening the name, checking that it is still that inode,
//! `name_to_handle_at` on the descriptor, a close and a MAC. So handles
//! are kept by (export, device, inode), checked against the
//! inode's birth time: an inode number freed and reused gets a new birth
//! time, so a handle of the dead file is never handed out for the new one.
//! On filesystems that do not report a birth time nothing is cached.
//! How often lookups have lately missed also decides how a READDIRPLUS
//! entry is looked up ([`HandleCache::mostly_misses`]).
//!
//! The cache is bounded: each shard is emptied when it reaches
//! [`SHARD_CAP`] entries, which is cheaper than an LRU and, for a cache
//! that only saves work, just as correct.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use vmshare_proto::nfs3::FileHandle;

/// Entries a shard holds before it is emptied: the most a hash table of
/// 2,048 buckets takes (7/8 of them) before it doubles. A cap of 2,048, as
/// before, made every full shard a table of 4,096 buckets, half of them
/// empty: 12% more entries for twice the memory (about 120 bytes a
/// bucket here). With the entry cache's two tables, that was the
/// difference between 21 and 32 MiB of peak RSS once a guest had touched
/// 32,000 files.
pub(crate) const SHARD_CAP: usize = 1792;
pub(crate) const SHARDS: usize = 8;

/// Export id, device, inode.
type Key = (u32, u64, u64);

/// An inode's birth time: seconds, nanoseconds.
pub(crate) type Birth = (i64, u32);

type Map = HashMap<Key, (Birth, FileHandle), BuildHasherDefault<KeyHasher>>;

/// A multiply-rotate hash of the key's integers. SipHash's defence against
/// chosen keys is not needed: inode numbers are picked by the filesystem,
/// not by the guest. (Measured with perf: the cache lookup is 3-4% of a
/// READDIRPLUS either way; the statx around it is the cost.)
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Bounds of [`HandleCache`]'s meter of recent hits and misses.
const METER_MAX: i32 = 64;

#[derive(Debug)]
pub(crate) struct HandleCache {
    shards: [Mutex<Map>; SHARDS],
    /// Recent lookups: up one for a hit, down two for a miss, within
    /// ±[`METER_MAX`]. Below zero, more than a third of them missed, where
    /// opening a READDIRPLUS entry first becomes the cheaper way (see
    /// `FsBackend::entry_plus`). Shared by every listing: the caches are.
    meter: AtomicI32,
}

impl HandleCache {
    pub(crate) fn new() -> HandleCache {
        HandleCache {
            shards: std::array::from_fn(|_| Mutex::new(Map::default())),
            meter: AtomicI32::new(0),
        }
    }

    /// Whether lookups have lately missed more than a third of the time.
    pub(crate) fn mostly_misses(&self) -> bool {
        self.meter.load(Ordering::Relaxed) < 0
    }

    /// A load and, unless the meter is at its bound, a store: not an
    /// atomic update, so two threads counting at once may lose one count,
    /// which a heuristic can afford; a hit on a full meter writes nothing.
    fn count(&self, hit: bool) {
        let m = self.meter.load(Ordering::Relaxed);
        let next = if hit {
            (m + 1).min(METER_MAX)
        } else {
            (m - 2).max(-METER_MAX)
        };
        if next != m {
            self.meter.store(next, Ordering::Relaxed);
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Map> {
        // Inode numbers of files made together are consecutive: the low
        // bits spread them.
        let i = usize::from(key.2.to_le_bytes()[0]) % SHARDS;
        &self.shards[i]
    }

    /// The handle of this incarnation of the inode, if known.
    pub(crate) fn get(&self, export: u32, dev: u64, ino: u64, birth: Birth) -> Option<FileHandle> {
        let key = (export, dev, ino);
        let found = self
            .shard(&key)
            .lock()
            .ok()
            .and_then(|map| match map.get(&key) {
                Some((b, fh)) if *b == birth => Some(*fh),
                _ => None,
            });
        self.count(found.is_some());
        found
    }

    pub(crate) fn put(&self, export: u32, dev: u64, ino: u64, birth: Birth, fh: FileHandle) {
        let key = (export, dev, ino);
        if let Ok(mut map) = self.shard(&key).lock() {
            if map.len() >= SHARD_CAP && !map.contains_key(&key) {
                map.clear();
            }
            map.insert(key, (birth, fh));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fh(b: u8) -> FileHandle {
        FileHandle::new(&[b; 20]).expect("small handle")
    }

    #[test]
    fn birth_time_must_match() {
        let c = HandleCache::new();
        c.put(1, 2, 3, (10, 5), fh(7));
        assert_eq!(c.get(1, 2, 3, (10, 5)), Some(fh(7)));
        // The inode number was reused by a newer file.
        assert_eq!(c.get(1, 2, 3, (11, 0)), None);
        // Another export or device.
        assert_eq!(c.get(9, 2, 3, (10, 5)), None);
        assert_eq!(c.get(1, 9, 3, (10, 5)), None);
    }

    #[test]
    fn the_meter_says_when_more_than_a_third_miss() {
        let c = HandleCache::new();
        c.put(1, 1, 1, (0, 0), fh(1));
        assert!(!c.mostly_misses());
        // One miss in three: at the edge, not below it.
        for _ in 0..30 {
            c.get(1, 1, 1, (0, 0));
            c.get(1, 1, 1, (0, 0));
            c.get(1, 1, 2, (0, 0));
        }
        assert!(!c.mostly_misses());
        // Half of them missing: below.
        for _ in 0..30 {
            c.get(1, 1, 1, (0, 0));
            c.get(1, 1, 2, (0, 0));
        }
        assert!(c.mostly_misses());
        // Bounded: a long run of misses is undone by a short run of hits.
        for _ in 0..10_000 {
            c.get(1, 1, 2, (0, 0));
        }
        for _ in 0..(METER_MAX + 1) {
            c.get(1, 1, 1, (0, 0));
        }
        assert!(!c.mostly_misses());
    }

    #[test]
    fn stays_bounded_without_growing_its_tables() {
        let c = HandleCache::new();
        for ino in 0..(SHARD_CAP * SHARDS * 3) as u64 {
            c.put(1, 1, ino, (0, 0), fh(1));
        }
        for s in &c.shards {
            let m = s.lock().expect("unpoisoned");
            assert!(m.len() <= SHARD_CAP, "{} entries", m.len());
            // The table never doubled past the size that holds the cap.
            assert!(m.capacity() <= SHARD_CAP, "table for {}", m.capacity());
        }
    }
}
