//! The worker pool: complete records in, replies out.
//!
//! Calls run on plain OS threads because the filesystem backend switches
//! per-thread credentials around each operation. Workers take calls
//! round-robin across connections rather than first-in-first-out, so that
//! a client with 64 calls queued does not make another client's single
//! call wait behind all of them.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tracing::{debug, error};
use vmshare_proto::{is_nonidempotent, programs, Client, SPLICE_MIN};
use vmshare_wire::rpc::{encode_reply_header, parse_call, CallError};
use vmshare_wire::{AcceptStat, Decoder, Encoder, ReplyBody};

use crate::budget::Charge;
use crate::bufs::Record;
use crate::conn::{Bytes, Conn, Outgoing, Slot};
use crate::drc::{DrcKey, Lookup};
use crate::{lock, Shared};

/// A complete record from a client.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) conn: Arc<Conn>,
    pub(crate) record: Record,
    /// The record's bytes in the request budget.
    pub(crate) charge: Charge,
    /// The reply's bytes, when the reader took them (see
    /// [`reply_charge`]); else the call takes them where it runs.
    pub(crate) reply: Option<Charge>,
    pub(crate) slot: Slot,
}

/// The reply budget charge for `record`'s reply, waited for; `None` if the
/// connection closed or the server stopped meanwhile.
pub(crate) fn reply_charge(shared: &Shared, conn: &Conn, record: &[u8]) -> Option<Charge> {
    let max = shared.limits.max_record as usize;
    let hint = match vmshare_wire::rpc::peek_call(record) {
        Some(c) => reply_hint(c.prog, c.vers, c.proc_, c.args, max),
        None => 64,
    };
    let mut c = shared.reply_budget.charge(conn.peer.ip());
    let abort = || conn.is_closed() || shared.stop.load(Ordering::Acquire);
    c.grow(hint, &|| conn.takes_replies(), &abort).map(|_| c)
}

#[derive(Debug, Default)]
struct Queues {
    /// Connections with calls waiting, each listed once.
    ready: VecDeque<u64>,
    pending: HashMap<u64, VecDeque<Job>>,
    stopped: bool,
    /// Workers waiting for a call: a wake-up is a system call, made only
    /// when one waits.
    idle: usize,
}

/// The queue between readers and workers.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    queues: Mutex<Queues>,
    cv: Condvar,
}

impl Scheduler {
    pub(crate) fn push(&self, job: Job) {
        let mut q = lock(&self.queues);
        if q.stopped {
            return;
        }
        let id = job.conn.id;
        let list = q.pending.entry(id).or_default();
        let was_empty = list.is_empty();
        list.push_back(job);
        if was_empty {
            q.ready.push_back(id);
        }
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.cv.notify_one();
        }
    }

    /// The next call to run, or `None` once stopped.
    fn pop(&self) -> Option<Job> {
        let mut q = lock(&self.queues);
        loop {
            if q.stopped {
                return None;
            }
            if let Some(id) = q.ready.pop_front() {
                let Some(list) = q.pending.get_mut(&id) else {
                    continue;
                };
                let job = list.pop_front();
                if list.is_empty() {
                    q.pending.remove(&id);
                } else {
                    q.ready.push_back(id);
                }
                if let Some(job) = job {
                    return Some(job);
                }
                continue;
            }
            q.idle += 1;
            q = match self.cv.wait(q) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            q.idle -= 1;
        }
    }

    /// Drops the calls of a closed connection that no worker took yet.
    pub(crate) fn purge(&self, conn: u64) {
        let dropped = {
            let mut q = lock(&self.queues);
            q.ready.retain(|&id| id != conn);
            q.pending.remove(&conn)
        };
        drop(dropped);
    }

    pub(crate) fn stop(&self) {
        let dropped = {
            let mut q = lock(&self.queues);
            q.stopped = true;
            q.ready.clear();
            std::mem::take(&mut q.pending)
        };
        drop(dropped);
        self.cv.notify_all();
    }
}

pub(crate) fn worker_main(shared: &Shared) {
    while let Some(job) = shared.sched.pop() {
        run(shared, job);
    }
}

/// NFSv3 READ.
const READ: u32 = 6;

/// A guess at the reply size, charged before the call runs so that READs
/// wait for room instead of overshooting the budget. Only READ, the
/// READDIRs and MOUNT DUMP can be large; everything else fits in a page
/// (EXPORT's size comes from the server's own configuration, and whatever
/// a reply takes beyond its guess is charged when it is built).
fn reply_hint(prog: u32, vers: u32, proc_: u32, args: &[u8], max: usize) -> usize {
    const SMALL: usize = 4096;
    const HEADERS: usize = 512;
    /// MOUNT's DUMP procedure.
    const DUMP: u32 = 2;
    if prog == programs::MOUNT && proc_ == DUMP {
        return vmshare_proto::MOUNT_DUMP_MAX_REPLY.saturating_add(HEADERS);
    }
    if prog != programs::NFS || vers != 3 {
        return SMALL;
    }
    let mut d = Decoder::new(args);
    let count = match proc_ {
        // READ: fh, offset, count.
        6 => d.opaque(64).and_then(|_| d.u64()).and_then(|_| d.u32()),
        // READDIR: fh, cookie, verifier, count.
        16 => d
            .opaque(64)
            .and_then(|_| d.u64())
            .and_then(|_| d.fixed::<8>())
            .and_then(|_| d.u32()),
        // READDIRPLUS: fh, cookie, verifier, dircount, maxcount.
        17 => d
            .opaque(64)
            .and_then(|_| d.u64())
            .and_then(|_| d.fixed::<8>())
            .and_then(|_| d.u32())
            .and_then(|_| d.u32()),
        _ => return SMALL,
    };
    match count {
        Ok(c) => (c as usize).saturating_add(HEADERS).clamp(SMALL, max),
        Err(_) => SMALL,
    }
}

fn finish_record(enc: Encoder) -> Vec<u8> {
    finish_record_with(enc, 0)
}

/// Patches the record mark at the start of `enc` for its bytes plus
/// `extra` sent after them.
fn finish_record_with(mut enc: Encoder, extra: usize) -> Vec<u8> {
    let total = enc.len().saturating_sub(4).saturating_add(extra);
    let len = u32::try_from(total).unwrap_or(u32::MAX >> 1);
    enc.patch_bytes(0, &vmshare_wire::record::mark(len));
    enc.into_inner()
}

/// Runs one call and sends its reply (on a worker, or inline on the
/// connection's reader).
pub(crate) fn run(shared: &Shared, job: Job) {
    let Job {
        conn,
        record,
        charge,
        reply,
        slot,
    } = job;
    if conn.is_closed() || shared.stop.load(Ordering::Acquire) {
        return;
    }
    let started = Instant::now();
    let call = match parse_call(&record) {
        Ok(c) => c,
        Err(CallError::Unanswerable(e)) => {
            debug!(conn = conn.id, error = %e, "dropping a record that is not an RPC call");
            return;
        }
        Err(CallError::Deny { xid, reply }) => {
            debug!(conn = conn.id, xid, ?reply, "call denied");
            let mut enc = Encoder::with_capacity(64);
            enc.u32(0);
            encode_reply_header(&mut enc, xid, ReplyBody::Denied(reply));
            let bytes = finish_record(enc);
            conn.send(Outgoing {
                bytes: Bytes::Owned(bytes),
                sent: 0,
                _charge: None,
                spliced: None,
                _slot: slot,
            });
            return;
        }
    };
    let (xid, prog, vers, proc_) = (call.xid, call.prog, call.vers, call.proc_);
    let drc_key = is_nonidempotent(prog, vers, proc_).then(|| {
        DrcKey::new(
            xid,
            prog,
            vers,
            proc_,
            conn.peer.ip(),
            &call.cred,
            call.args,
        )
    });
    if let Some(key) = &drc_key {
        match shared.drc.begin(key) {
            Lookup::New => {}
            Lookup::InProgress => {
                debug!(
                    conn = conn.id,
                    xid, proc_, "retransmission of a call in progress; dropped"
                );
                return;
            }
            Lookup::Replay(bytes) => {
                debug!(
                    conn = conn.id,
                    xid, proc_, "retransmission answered from the reply cache"
                );
                conn.send(Outgoing {
                    bytes: Bytes::Shared(bytes),
                    sent: 0,
                    _charge: None,
                    spliced: None,
                    _slot: slot,
                });
                return;
            }
        }
    }
    let max = shared.limits.max_record as usize;
    let hint = reply_hint(prog, vers, proc_, call.args, max);
    let mut reply_charge = match reply {
        Some(c) => c,
        None => {
            let mut c = shared.reply_budget.charge(conn.peer.ip());
            let abort = || conn.is_closed() || shared.stop.load(Ordering::Acquire);
            if c.grow(hint, &|| conn.takes_replies(), &abort).is_none() {
                if let Some(key) = &drc_key {
                    shared.drc.forget(key);
                }
                return;
            }
            c
        }
    };
    // A large READ's data may go through a pipe instead of `enc`.
    let mut lease =
        (prog == programs::NFS && vers == 3 && proc_ == READ && hint >= SPLICE_MIN as usize)
            .then(|| shared.pipes.take())
            .flatten();
    let mut enc = Encoder::with_capacity(if lease.is_some() { 512 } else { hint });
    enc.u32(0);
    let client = Client {
        addr: conn.peer,
        local: conn.local,
    };
    let handled = catch_unwind(AssertUnwindSafe(|| {
        match lease.as_ref().and_then(|l| l.pipe()) {
            Some(p) => shared
                .handler
                .handle_piped(&client, &call, &mut enc, p.write_end(), p.room),
            None => {
                shared.handler.handle(&client, &call, &mut enc);
                0
            }
        }
    }));
    let mut piped = match handled {
        Ok(n) => n,
        Err(_) => {
            error!(
                conn = conn.id,
                xid, prog, vers, proc_, "call handler panicked; answering SYSTEM_ERR"
            );
            system_err(&mut enc, xid);
            0
        }
    };
    if let Some(l) = lease.as_mut() {
        // The pipe must hold exactly what the reply says follows, or the
        // record would be corrupt and the pipe unfit to reuse.
        let held = l
            .pipe()
            .and_then(|p| rustix::io::ioctl_fionread(&p.read).ok());
        if held != Some(piped as u64) {
            error!(
                conn = conn.id,
                xid,
                ?held,
                piped,
                "READ pipe out of step; answering SYSTEM_ERR"
            );
            l.drained = false;
            system_err(&mut enc, xid);
            piped = 0;
        } else {
            l.drained = piped == 0;
        }
    }
    drop(call);
    drop(record);
    drop(charge);
    let bytes = if piped > 0 {
        let pad = (4 - piped % 4) % 4;
        finish_record_with(enc, piped + pad)
    } else {
        finish_record(enc)
    };
    reply_charge.set(bytes.capacity() + piped);
    if let Some(key) = &drc_key {
        shared.drc.finish(key, &bytes);
    }
    debug!(
        conn = conn.id,
        xid,
        prog,
        vers,
        proc_,
        status = %ReplyStatus {
            reply: &bytes,
            has_status: results_open_with_status(prog, proc_),
        },
        reply_len = bytes.len() + piped,
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "call done"
    );
    conn.send(Outgoing {
        bytes: Bytes::Owned(bytes),
        sent: 0,
        spliced: lease.filter(|_| piped > 0).map(|l| (l, piped)),
        _charge: Some(reply_charge),
        _slot: slot,
    });
    shared.handler.after_reply();
}

/// Whether the results of `proc_` of `prog` begin with a status word:
/// every NFS procedure but NULL, and MOUNT's MNT. MOUNT's EXPORT and DUMP
/// begin with a list ("value follows", 1), UMNT and UMNTALL return
/// nothing, and portmap's GETPORT a port.
fn results_open_with_status(prog: u32, proc_: u32) -> bool {
    match prog {
        programs::NFS => proc_ != 0,
        programs::MOUNT => proc_ == 1,
        _ => false,
    }
}

/// What a reply says, for the debug log: for an accepted call whose
/// results begin with a status (see [`results_open_with_status`]) that
/// status (`status=13` is NFS3ERR_ACCES), `ok` for other accepted calls;
/// else `denied` or the `accept_stat`. Formatted only when the line is
/// written.
struct ReplyStatus<'a> {
    reply: &'a [u8],
    has_status: bool,
}

impl std::fmt::Display for ReplyStatus<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Past the record mark.
        let record = self.reply.get(4..).unwrap_or_default();
        match vmshare_wire::rpc::parse_reply(record) {
            Ok(r) => match r.body {
                ReplyBody::Accepted(AcceptStat::Success) if !self.has_status => f.write_str("ok"),
                ReplyBody::Accepted(AcceptStat::Success) => match Decoder::new(r.results).u32() {
                    Ok(first) => write!(f, "{first}"),
                    Err(_) => f.write_str("-"),
                },
                ReplyBody::Accepted(a) => write!(f, "{a:?}"),
                ReplyBody::Denied(d) => write!(f, "denied {d:?}"),
            },
            Err(_) => f.write_str("?"),
        }
    }
}

/// Replaces whatever was encoded with a SYSTEM_ERR reply.
fn system_err(enc: &mut Encoder, xid: u32) {
    *enc = Encoder::with_capacity(64);
    enc.u32(0);
    encode_reply_header(enc, xid, ReplyBody::Accepted(AcceptStat::SystemErr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_hint_follows_count() {
        let mut e = Encoder::default();
        e.opaque(&[1; 32]).u64(0).u32(65536);
        assert_eq!(
            reply_hint(programs::NFS, 3, 6, e.as_slice(), 1 << 20),
            65536 + 512
        );
        let mut e = Encoder::default();
        e.opaque(&[1; 32]).u64(0).u32(u32::MAX);
        assert_eq!(
            reply_hint(programs::NFS, 3, 6, e.as_slice(), 1 << 20),
            1 << 20
        );
        assert_eq!(reply_hint(programs::NFS, 3, 6, &[0xff; 3], 1 << 20), 4096);
        assert_eq!(reply_hint(programs::MOUNT, 3, 1, &[], 1 << 20), 4096);
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    /// The debug log's status: the first result word of a successful
    /// call, `-` when there is none, the RPC outcome otherwise.
    #[test]
    fn the_debug_logs_status_reads_the_reply() {
        let reply = |body: ReplyBody, results: &[u32]| {
            let mut enc = Encoder::with_capacity(64);
            enc.u32(0);
            encode_reply_header(&mut enc, 7, body);
            for r in results {
                enc.u32(*r);
            }
            finish_record(enc)
        };
        let status = |reply: &[u8], prog: u32, proc_: u32| {
            ReplyStatus {
                reply,
                has_status: results_open_with_status(prog, proc_),
            }
            .to_string()
        };
        let ok = ReplyBody::Accepted(AcceptStat::Success);
        assert_eq!(status(&reply(ok, &[13, 1]), programs::NFS, 1), "13");
        assert_eq!(status(&reply(ok, &[]), programs::NFS, 1), "-");
        assert_eq!(status(&reply(ok, &[0]), programs::MOUNT, 1), "0");
        // MOUNT EXPORT's list begins with "value follows" (1), which had
        // been logged as status=1; NFS NULL and GETPORT have no status.
        assert_eq!(status(&reply(ok, &[1, 5]), programs::MOUNT, 5), "ok");
        assert_eq!(status(&reply(ok, &[]), programs::NFS, 0), "ok");
        assert_eq!(status(&reply(ok, &[2049]), programs::PORTMAP, 3), "ok");
        let unavail = ReplyBody::Accepted(AcceptStat::ProcUnavail);
        assert_eq!(
            status(&reply(unavail, &[]), programs::NFS, 99),
            "ProcUnavail"
        );
        assert_eq!(status(&[0, 0], programs::NFS, 1), "?");
    }
}
