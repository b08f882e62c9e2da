//! The duplicate request cache.
//!
//! A client that sees no reply (lost connection, slow server) resends the
//! call with the same XID. Running a REMOVE twice turns a success into
//! ENOENT, so for the procedures `vmshare_proto::is_nonidempotent` names the
//! finished reply is kept and replayed. A retransmission whose original is
//! still running is dropped: the original's reply will answer it.
//!
//! The key holds the client's IP address but not its port: the Linux client
//! resends with the same XID after a reconnect, which may come from another
//! port. It also holds the caller's identity (uid, gid, groups; not the
//! AUTH_SYS stamp, which Linux renews per transmission), so that a call of
//! another user is run, not answered with someone else's reply. Two
//! different calls on one host would have to share the XID, procedure,
//! identity, argument length and the checksum of the first 256 argument
//! bytes to collide.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use vmshare_wire::rpc::Credential;

use crate::lock;

/// How many argument bytes the checksum covers (as nfsd does).
const SUM_BYTES: usize = 256;

/// Identifies one call of one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DrcKey {
    xid: u32,
    prog: u32,
    vers: u32,
    proc_: u32,
    ip: IpAddr,
    args_len: usize,
    sum: u64,
}

impl DrcKey {
    pub(crate) fn new(
        xid: u32,
        prog: u32,
        vers: u32,
        proc_: u32,
        ip: IpAddr,
        cred: &Credential,
        args: &[u8],
    ) -> DrcKey {
        let mut h = DefaultHasher::new();
        match cred {
            Credential::None => 0u8.hash(&mut h),
            Credential::Sys(a) => (1u8, a.uid, a.gid, &a.gids).hash(&mut h),
        }
        args.get(..SUM_BYTES).unwrap_or(args).hash(&mut h);
        DrcKey {
            xid,
            prog,
            vers,
            proc_,
            ip,
            args_len: args.len(),
            sum: h.finish(),
        }
    }
}

/// What to do with a call that may be a retransmission.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// First time seen: run it, then call [`Drc::finish`].
    New,
    /// The original is still running: drop this copy.
    InProgress,
    /// Already answered: send these bytes (a whole record, mark included).
    Replay(Arc<[u8]>),
}

#[derive(Debug)]
enum State {
    InProgress,
    Done(Arc<[u8]>),
}

#[derive(Debug)]
struct Entry {
    state: State,
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<DrcKey, Entry>,
    /// Least recently used first.
    order: BTreeMap<u64, DrcKey>,
    next_seq: u64,
    bytes: usize,
}

/// A bounded LRU cache of replies to non-idempotent calls.
#[derive(Debug)]
pub(crate) struct Drc {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

impl Drc {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Drc {
        Drc {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_bytes,
        }
    }

    /// Looks `key` up; a new key is recorded as in progress.
    pub(crate) fn begin(&self, key: &DrcKey) -> Lookup {
        if self.max_entries == 0 {
            return Lookup::New;
        }
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(e) = inner.map.get_mut(key) {
            inner.order.remove(&e.seq);
            e.seq = seq;
            inner.order.insert(seq, key.clone());
            return match &e.state {
                State::InProgress => Lookup::InProgress,
                State::Done(r) => Lookup::Replay(Arc::clone(r)),
            };
        }
        inner.map.insert(
            key.clone(),
            Entry {
                state: State::InProgress,
                seq,
            },
        );
        inner.order.insert(seq, key.clone());
        self.evict(inner);
        Lookup::New
    }

    /// Forgets a call started with [`Drc::begin`] that will have no reply
    /// (its connection closed before it ran): left "in progress", it
    /// would swallow every retransmission, and the client would wait
    /// forever.
    pub(crate) fn forget(&self, key: &DrcKey) {
        if self.max_entries == 0 {
            return;
        }
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        if let Some(e) = inner.map.remove(key) {
            inner.order.remove(&e.seq);
            if let State::Done(r) = e.state {
                inner.bytes -= r.len();
            }
        }
    }

    /// Records the reply to a call started with [`Drc::begin`].
    pub(crate) fn finish(&self, key: &DrcKey, reply: &[u8]) {
        if self.max_entries == 0 {
            return;
        }
        if reply.len() > self.max_bytes {
            // Too big to keep: forget the call rather than leave it "in
            // progress".
            self.forget(key);
            return;
        }
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let reply: Arc<[u8]> = Arc::from(reply);
        inner.bytes += reply.len();
        if let Some(old) = inner.map.insert(
            key.clone(),
            Entry {
                state: State::Done(reply),
                seq,
            },
        ) {
            inner.order.remove(&old.seq);
            if let State::Done(r) = old.state {
                inner.bytes -= r.len();
            }
        }
        inner.order.insert(seq, key.clone());
        self.evict(inner);
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.map.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some((_, key)) = inner.order.pop_first() else {
                break;
            };
            if let Some(e) = inner.map.remove(&key) {
                if let State::Done(r) = e.state {
                    inner.bytes -= r.len();
                }
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NFSv3 procedure `proc_` (XID 1) from 10.0.0.`host`.
    fn key_of(proc_: u32, host: u8, cred: &Credential, args: &[u8]) -> DrcKey {
        DrcKey::new(
            1,
            100_003,
            3,
            proc_,
            IpAddr::from([10, 0, 0, host]),
            cred,
            args,
        )
    }

    fn key(xid: u32) -> DrcKey {
        DrcKey {
            xid,
            ..key_of(12, 1, &Credential::None, b"args")
        }
    }

    #[test]
    fn replays_the_original_reply() {
        let drc = Drc::new(10, 1000);
        assert_eq!(drc.begin(&key(1)), Lookup::New);
        assert_eq!(drc.begin(&key(1)), Lookup::InProgress);
        drc.finish(&key(1), b"reply-1");
        assert_eq!(
            drc.begin(&key(1)),
            Lookup::Replay(Arc::from(&b"reply-1"[..]))
        );
    }

    fn sys(uid: u32, stamp: u32) -> Credential {
        Credential::Sys(vmshare_wire::rpc::AuthSys {
            stamp,
            machine_name: b"guest".to_vec(),
            uid,
            gid: uid,
            gids: vec![uid],
        })
    }

    #[test]
    fn key_covers_the_caller_but_not_the_stamp() {
        let drc = Drc::new(10, 1000);
        let k = |cred: &Credential| key_of(8, 1, cred, b"args");
        assert_eq!(drc.begin(&k(&sys(0, 1))), Lookup::New);
        drc.finish(&k(&sys(0, 1)), b"root's reply");
        // Another user, same XID and arguments: its own call, run.
        assert_eq!(drc.begin(&k(&sys(1000, 1))), Lookup::New);
        assert_eq!(drc.begin(&k(&Credential::None)), Lookup::New);
        // The same user retransmitting with a new stamp: the replay.
        assert_eq!(
            drc.begin(&k(&sys(0, 2))),
            Lookup::Replay(Arc::from(&b"root's reply"[..]))
        );
    }

    #[test]
    fn a_forgotten_call_runs_again() {
        let drc = Drc::new(10, 1000);
        assert_eq!(drc.begin(&key(1)), Lookup::New);
        drc.forget(&key(1));
        assert_eq!(drc.begin(&key(1)), Lookup::New);
    }

    #[test]
    fn key_covers_address_and_arguments() {
        let drc = Drc::new(10, 1000);
        assert_eq!(drc.begin(&key(1)), Lookup::New);
        let none = &Credential::None;
        assert_eq!(drc.begin(&key_of(12, 2, none, b"args")), Lookup::New);
        assert_eq!(drc.begin(&key_of(12, 1, none, b"argz")), Lookup::New);
        assert_eq!(drc.begin(&key_of(13, 1, none, b"args")), Lookup::New);
    }

    #[test]
    fn evicts_least_recently_used_by_count() {
        let drc = Drc::new(3, 1000);
        for x in 0..3 {
            drc.begin(&key(x));
            drc.finish(&key(x), b"r");
        }
        // Touch 0 so that 1 is the oldest.
        assert!(matches!(drc.begin(&key(0)), Lookup::Replay(_)));
        drc.begin(&key(3));
        assert_eq!(drc.len(), 3);
        assert_eq!(drc.begin(&key(1)), Lookup::New);
    }

    #[test]
    fn evicts_by_bytes() {
        let drc = Drc::new(100, 10);
        drc.begin(&key(0));
        drc.finish(&key(0), b"123456");
        drc.begin(&key(1));
        drc.finish(&key(1), b"123456");
        assert_eq!(drc.begin(&key(0)), Lookup::New);
        assert!(matches!(drc.begin(&key(1)), Lookup::Replay(_)));
    }

    #[test]
    fn oversized_reply_is_forgotten() {
        let drc = Drc::new(100, 4);
        drc.begin(&key(0));
        drc.finish(&key(0), b"too long");
        assert_eq!(drc.begin(&key(0)), Lookup::New);
    }
}
