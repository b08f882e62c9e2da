//! One client connection: a reader thread that frames records, and a
//! writer that sends replies as workers finish them.
//!
//! Replies leave in completion order, not request order (RPC pairs them by
//! XID). A worker whose reply fits in the socket buffer sends it itself with
//! a non-blocking send, which saves a thread switch per call; whatever does
//! not fit goes to the connection's writer thread, so that a client that
//! stops reading stalls only its own writer, never a worker.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;
use vmshare_wire::record::{RecordAssembler, RecordError};
use vmshare_wire::rpc::peek_call;

use crate::affinity::Follow;
use crate::budget::Charge;
use crate::bufs::Record;
use crate::linger::Linger;
use crate::pipes::Lease;
use crate::pool::Job;
use crate::{lock, Shared};

/// First buffer size for a record; most calls are far smaller than a WRITE.
const FIRST_CHUNK: usize = 16 * 1024;

/// Records at least this large are read into pooled buffers (see
/// [`crate::bufs`]).
const POOLED_MIN: usize = 128 * 1024;

/// Bytes read off the socket ahead of the record being assembled. A call
/// other than a WRITE is a few hundred bytes: one read(2) then brings in
/// its mark and body, and often the calls pipelined behind it, instead of
/// one read for the mark and another for the body. A fixed buffer per
/// connection, so the connection cap bounds it.
const READ_AHEAD: usize = 16 * 1024;

/// Bytes to send: built for this call, or a cached reply replayed.
#[derive(Debug)]
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Shared(s) => s,
        }
    }
}

/// A reply record waiting to be (fully) sent.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) bytes: Bytes,
    pub(crate) sent: usize,
    /// READ data waiting in a pipe, sent after `bytes` and followed by
    /// zero padding to a multiple of four (`bytes` starts with the record
    /// mark counting all of it).
    pub(crate) spliced: Option<(Lease, usize)>,
    /// Released once the bytes are gone.
    pub(crate) _charge: Option<Charge>,
    /// The in-flight slot of the call this answers, freed with the reply.
    pub(crate) _slot: Slot,
}

#[derive(Debug, Default)]
struct Out {
    queue: VecDeque<Outgoing>,
    /// Someone (a worker or the writer thread) is sending: only one may.
    writing: bool,
    closed: bool,
}

/// State shared by a connection's reader, writer and the workers.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    /// The server's end: the address the client reached.
    pub(crate) local: SocketAddr,
    stream: TcpStream,
    closed: AtomicBool,
    out: Mutex<Out>,
    out_cv: Condvar,
    inflight: Mutex<Inflight>,
    inflight_cv: Condvar,
    /// When the last call arrived, in [`Shared::ms`] (at accept: when the
    /// connection was made), to find the longest-idle connection.
    last_call_ms: AtomicU64,
    /// Whether a reply has been sent whole, into the socket at least.
    replied: AtomicBool,
}

/// One call counted against the connection's in-flight cap until dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Conn>);

/// Calls in flight on a connection, and whether its reader waits for one
/// to finish (a wake-up is a system call: made only when someone waits).
#[derive(Debug, Default)]
struct Inflight {
    n: usize,
    reader_waits: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut f = lock(&self.0.inflight);
        f.n = f.n.saturating_sub(1);
        let wake = f.reader_waits;
        drop(f);
        if wake {
            self.0.inflight_cv.notify_all();
        }
    }
}

/// Bytes in `stream`'s send queue that the peer has not acknowledged
/// (`SIOCOUTQ`), or `None` if the kernel would not say.
fn unacked(stream: &TcpStream) -> Option<usize> {
    use rustix::ioctl::{ioctl, Getter, Opcode};
    // SIOCOUTQ has TIOCOUTQ's number (linux/sockios.h); ioctl numbers are
    // 32 bits, whatever type libc gives them.
    #[allow(clippy::cast_possible_truncation)]
    const SIOCOUTQ: Opcode = libc::TIOCOUTQ as Opcode;
    // SAFETY: SIOCOUTQ on a TCP socket writes one `int`, which is what the
    // getter gives it to fill; the socket is a live fd borrowed for the call.
    let n = unsafe { ioctl(stream, Getter::<SIOCOUTQ, libc::c_int>::new()) }.ok()?;
    usize::try_from(n).ok()
}

enum SendResult {
    Done,
    WouldBlock,
    Failed,
}

/// How long a blocking send waits before it looks at the clock: the
/// socket's send timeout (set in `start_connection`).
pub(crate) const WRITE_TICK: Duration = Duration::from_millis(250);

/// The slowest a record may move, on average, while other calls wait for
/// the memory it holds: a 1 MiB WRITE or READ reply at this rate takes
/// 4 s. Over loopback, a tap or virtio a busy client still moves megabytes
/// a second; one slower than this is holding bytes others need.
const MIN_RATE: u128 = 256 * 1024;

/// Whether `moved` bytes in `age` is below [`MIN_RATE`] on average.
fn below_min_rate(moved: usize, age: Duration) -> bool {
    (moved as u128) * 1_000_000 < MIN_RATE * age.as_micros()
}

/// How one reply is moving, to tell a client that reads slowly from one
/// that stopped reading, and either from one that reads too slowly to be
/// left holding reply memory that others wait for.
pub(crate) struct Progress<'a> {
    shared: &'a Shared,
    started: Instant,
    last: Instant,
    sent: usize,
}

impl<'a> Progress<'a> {
    fn new(shared: &'a Shared) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            shared,
            started: now,
            last: now,
            sent: 0,
        }
    }

    /// `n` more bytes went out. A client that takes every byte but at a
    /// trickle never stalls; while others wait for reply memory it is cut
    /// off like a stalled one. (60 connections draining 2 KB every half
    /// second kept every other client on their address from getting a
    /// 1 MiB READ answered: their address held bytes, so the budget's
    /// reserve was not theirs.)
    fn made(&mut self, n: usize) -> std::io::Result<()> {
        self.last = Instant::now();
        self.sent = self.sent.saturating_add(n);
        self.check_rate()
    }

    fn check_rate(&self) -> std::io::Result<()> {
        let age = self.started.elapsed();
        if age >= self.shared.pressure_stall()
            && below_min_rate(self.sent, age)
            && self.shared.reply_budget.has_waiters()
        {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "reply taken too slowly while other calls wait for reply memory",
            ));
        }
        Ok(())
    }

    /// A send failed with `e`: fine to retry after a tick or an interrupt,
    /// unless the client has stalled for too long.
    fn waited(&self, e: std::io::Error) -> std::io::Result<()> {
        if !matches!(
            e.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
        ) {
            return Err(e);
        }
        let idle = self.last.elapsed();
        if idle >= self.shared.limits.send_timeout {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "no reply bytes taken for the send timeout",
            ));
        }
        if idle >= self.shared.pressure_stall() && self.shared.reply_budget.has_waiters() {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "no reply bytes taken while other calls wait for reply memory",
            ));
        }
        self.check_rate()?;
        if self.shared.stop.load(Ordering::Acquire) {
            return Err(std::io::Error::other("server stopping"));
        }
        Ok(())
    }
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        stream: TcpStream,
        now_ms: u64,
    ) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            peer,
            local,
            stream,
            closed: AtomicBool::new(false),
            out: Mutex::new(Out::default()),
            out_cv: Condvar::new(),
            inflight: Mutex::new(Inflight::default()),
            inflight_cv: Condvar::new(),
            replied: AtomicBool::new(false),
            last_call_ms: AtomicU64::new(now_ms),
        })
    }

    /// How long the connection has been idle at `now_ms`: no call in
    /// flight (so no reply unsent) and none arrived since. `None` if busy.
    pub(crate) fn idle_ms(&self, now_ms: u64) -> Option<u64> {
        if self.is_closed() || self.inflight() > 0 {
            return None;
        }
        Some(now_ms.saturating_sub(self.last_call_ms.load(Ordering::Relaxed)))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Notes that a reply went out whole. Written once: the flag shares a
    /// cache line with what every thread of the connection reads, and
    /// replies are the hot path.
    fn mark_replied(&self) {
        if !self.replied.load(Ordering::Relaxed) {
            self.replied.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the client has taken every reply it was sent: it has been
    /// sent one, nothing waits to be sent, and the socket holds nothing the
    /// client has not acknowledged. Such a connection may use the reply
    /// budget's reserve although its address holds bytes (see
    /// [`crate::budget`]): hoarders that read at a trickle never pass, and
    /// a guest beside them behind the same NAT address does between its
    /// calls. A reply merely sent does not count: the socket's buffer takes
    /// a 1 MiB reply from a client that reads none of it.
    pub(crate) fn takes_replies(&self) -> bool {
        if !self.replied.load(Ordering::Relaxed) {
            return false;
        }
        // Asked under the budget's lock: `try_lock` keeps the two locks
        // from ever waiting on each other (busy means sending: not proven).
        match self.out.try_lock() {
            Ok(out) if !out.writing && out.queue.is_empty() => {}
            _ => return false,
        }
        unacked(&self.stream) == Some(0)
    }

    /// Shuts the socket down (waking the reader and writer) and drops the
    /// replies not yet sent. Idempotent.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        let dropped = {
            let mut out = lock(&self.out);
            out.closed = true;
            std::mem::take(&mut out.queue)
        };
        drop(dropped);
        self.out_cv.notify_all();
        self.inflight_cv.notify_all();
    }

    /// Queues a reply; sends it at once when nothing else is being sent.
    pub(crate) fn send(&self, mut item: Outgoing) {
        let mut out = lock(&self.out);
        if out.closed {
            return;
        }
        // Spliced data is sent with blocking writes: the writer thread's.
        if out.writing || !out.queue.is_empty() || item.spliced.is_some() {
            out.queue.push_back(item);
            drop(out);
            self.out_cv.notify_all();
            return;
        }
        out.writing = true;
        drop(out);
        let result = self.send_nonblocking(&mut item);
        let mut out = lock(&self.out);
        out.writing = false;
        match result {
            SendResult::Done => {
                self.mark_replied();
                let more = !out.queue.is_empty();
                drop(out);
                drop(item);
                if more {
                    self.out_cv.notify_all();
                }
            }
            SendResult::WouldBlock => {
                if !out.closed {
                    out.queue.push_front(item);
                }
                drop(out);
                self.out_cv.notify_all();
            }
            SendResult::Failed => {
                drop(out);
                self.close();
            }
        }
    }

    fn send_nonblocking(&self, item: &mut Outgoing) -> SendResult {
        use rustix::net::{send, SendFlags};
        loop {
            let rest = item.bytes.as_slice().get(item.sent..).unwrap_or_default();
            if rest.is_empty() {
                return SendResult::Done;
            }
            match send(
                &self.stream,
                rest,
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(n) => item.sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => return SendResult::WouldBlock,
                Err(e) => {
                    debug!(conn = self.id, error = %e, "send failed");
                    return SendResult::Failed;
                }
            }
        }
    }

    /// The writer thread: sends what workers could not, with blocking
    /// writes that wake every [`WRITE_TICK`] to see whether the client has
    /// stalled: no progress for the send timeout, or for the much shorter
    /// pressure limit while other calls wait for reply memory. A client
    /// that does not read its replies holds their bytes; without the
    /// second rule a few such clients held the whole reply budget for the
    /// send timeout, and every other client's calls waited behind them.
    pub(crate) fn writer_main(&self, shared: &Shared) {
        loop {
            let batch = {
                let mut out = lock(&self.out);
                loop {
                    if out.closed {
                        return;
                    }
                    if !out.writing && !out.queue.is_empty() {
                        break;
                    }
                    out = match self.out_cv.wait(out) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
                out.writing = true;
                std::mem::take(&mut out.queue)
            };
            for mut item in batch {
                let mut progress = Progress::new(shared);
                let rest = item.bytes.as_slice().get(item.sent..).unwrap_or_default();
                let sent = match item.spliced.as_mut() {
                    None => self.write_ticking(rest, &mut progress),
                    Some((lease, len)) => self.send_spliced(rest, lease, *len, &mut progress),
                };
                if let Err(e) = sent {
                    if let Some(held_back) = shared.log_gates.stalled.allow() {
                        tracing::info!(
                            conn = self.id,
                            peer = %self.peer,
                            error = %e,
                            held_back,
                            "client not reading its replies; closing (`held_back`: lines like \
                             this one not written since the last)"
                        );
                    }
                    self.close();
                    return;
                }
                self.mark_replied();
            }
            lock(&self.out).writing = false;
        }
    }

    /// Writes all of `buf`, blocking, giving up when `progress` says the
    /// client stalled.
    fn write_ticking(&self, mut buf: &[u8], progress: &mut Progress<'_>) -> std::io::Result<()> {
        while !buf.is_empty() {
            match (&self.stream).write(buf) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = buf.get(n..).unwrap_or_default();
                    progress.made(n)?;
                }
                Err(e) => progress.waited(e)?,
            }
        }
        Ok(())
    }

    /// Sends `head`, then `len` bytes from the lease's pipe, then the XDR
    /// padding, as one record; blocking, bounded as [`Self::write_ticking`].
    fn send_spliced(
        &self,
        head: &[u8],
        lease: &mut Lease,
        len: usize,
        progress: &mut Progress<'_>,
    ) -> std::io::Result<()> {
        use rustix::net::{send, SendFlags};
        use rustix::pipe::{splice, SpliceFlags};
        let Some(pipe) = lease.pipe() else {
            return Err(std::io::Error::other("spliced reply without a pipe"));
        };
        let mut head = head;
        while !head.is_empty() {
            match send(&self.stream, head, SendFlags::MORE | SendFlags::NOSIGNAL) {
                Ok(n) => {
                    head = head.get(n..).unwrap_or_default();
                    progress.made(n)?;
                }
                Err(e) => progress.waited(e.into())?,
            }
        }
        let pad = (4 - len % 4) % 4;
        let mut left = len;
        while left > 0 {
            let more = if pad > 0 {
                SpliceFlags::MORE
            } else {
                SpliceFlags::empty()
            };
            match splice(&pipe.read, None, &self.stream, None, left, more) {
                Ok(0) => return Err(std::io::Error::other("pipe ran dry mid-reply")),
                Ok(n) => {
                    left = left.saturating_sub(n);
                    progress.made(n)?;
                }
                Err(e) => progress.waited(e.into())?,
            }
        }
        lease.drained = true;
        self.write_ticking(&[0u8; 3][..pad], progress)
    }

    /// Counts one more call in flight.
    fn take_slot(self: &Arc<Self>) -> Slot {
        lock(&self.inflight).n += 1;
        Slot(Arc::clone(self))
    }

    /// Waits until fewer than `max` calls are in flight; false when the
    /// connection closed meanwhile.
    fn wait_for_room(&self, max: usize, stop: &AtomicBool) -> bool {
        let mut f = lock(&self.inflight);
        while f.n >= max {
            if self.is_closed() || stop.load(Ordering::Acquire) {
                f.reader_waits = false;
                return false;
            }
            f.reader_waits = true;
            f = match self.inflight_cv.wait_timeout(f, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        f.reader_waits = false;
        !self.is_closed()
    }

    fn inflight(&self) -> usize {
        lock(&self.inflight).n
    }
}

/// Why a reader stopped.
#[derive(Debug)]
#[allow(dead_code)] // The payloads are read through `Debug`, in the log.
enum End {
    /// The client closed the connection between records.
    Eof,
    /// The client closed it in the middle of a record.
    Truncated,
    /// The server is stopping or the connection was closed.
    Closed,
    /// No call and nothing in flight for the idle timeout.
    Idle,
    /// A record did not arrive completely within the record timeout.
    Stalled,
    /// A partial record made no progress while others waited for memory.
    StalledUnderPressure,
    /// A record was larger than allowed.
    TooLarge(RecordError),
    /// The socket failed.
    Io(std::io::Error),
}

/// Reads records off one connection and queues them for the workers.
pub(crate) struct Reader<'a> {
    shared: &'a Shared,
    conn: &'a Arc<Conn>,
    asm: RecordAssembler,
    idle_since: Instant,
    /// When the record being received began (its first byte), moved
    /// forward by the time the reader itself waited for the budget.
    started: Option<Instant>,
    /// Bytes of the current record received so far (marks included).
    received: usize,
    /// Read-ahead buffer (allocated on first use) and its unread bytes.
    ahead: Vec<u8>,
    ahead_at: usize,
    ahead_end: usize,
    linger: Linger<'a>,
    follow: Follow<'a>,
    sync_gate: SyncGate,
    /// Whether the last record arrived no slower than [`MIN_RATE`]: the
    /// next one may then take the request budget's reserve although the
    /// address holds bytes (the reply side's rule, [`Conn::takes_replies`],
    /// for requests: hoarders trickling WRITEs from the address of a
    /// guest held its 1 MiB WRITEs up to 10 s).
    kept_pace: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(shared: &'a Shared, conn: &'a Arc<Conn>) -> Reader<'a> {
        Reader {
            shared,
            conn,
            asm: RecordAssembler::new(shared.limits.max_record),
            idle_since: Instant::now(),
            started: None,
            received: 0,
            ahead: Vec::new(),
            ahead_at: 0,
            ahead_end: 0,
            linger: Linger::new(&shared.pollers, conn.id),
            follow: Follow::new(&shared.placement),
            sync_gate: SyncGate::default(),
            kept_pace: false,
        }
    }

    pub(crate) fn run(mut self) {
        let end = loop {
            if !self
                .conn
                .wait_for_room(self.shared.limits.max_in_flight, &self.shared.stop)
            {
                break End::Closed;
            }
            // With every reply out, the client's next call is what comes.
            if self.ahead_at == self.ahead_end && self.conn.inflight() == 0 {
                self.linger.wait(self.conn.stream.as_fd());
            } else {
                self.linger.skip();
            }
            match self.read_record() {
                Ok((record, charge)) => {
                    // Before `arrived`, which makes this the latest call.
                    let crowded = self.shared.pollers.others_busy(self.conn.id);
                    self.follow.update(self.conn.stream.as_fd(), crowded);
                    self.linger
                        .arrived(self.started.unwrap_or_else(Instant::now));
                    let now = Instant::now();
                    self.idle_since = now;
                    self.conn
                        .last_call_ms
                        .store(self.shared.ms(now), Ordering::Relaxed);
                    self.shared.bufs.trim_if_idle(now);
                    // A lone call runs here when it is quick (see `Kind`):
                    // handing it to a worker costs two thread switches,
                    // which is most of the time of a GETATTR. With calls
                    // already in flight or queued behind it, the workers
                    // take it, so that a pipelining client keeps its
                    // parallelism.
                    let (kind, write) = classify(&record);
                    self.sync_gate.saw(record.len(), write);
                    let lone = self.ahead_at == self.ahead_end && self.conn.inflight() == 0;
                    let inline = match kind {
                        Kind::Quick => lone,
                        // `admit` restarts the count of bytes written.
                        Kind::Sync => self.sync_gate.admit(now) && lone && crowded,
                        Kind::Large => false,
                    };
                    // A call going to the workers takes its reply's
                    // memory here, so that a worker never waits for it: a
                    // client that does not read its replies would
                    // otherwise park every worker on the budget, and
                    // other clients' calls behind them.
                    let reply = if inline {
                        None
                    } else {
                        match crate::pool::reply_charge(self.shared, self.conn, &record) {
                            Some(c) => Some(c),
                            None => break End::Closed,
                        }
                    };
                    let slot = self.conn.take_slot();
                    let job = Job {
                        conn: Arc::clone(self.conn),
                        record,
                        charge,
                        reply,
                        slot,
                    };
                    if inline {
                        crate::pool::run(self.shared, job);
                        if kind == Kind::Sync && !self.sync_gate.ran(now, Instant::now()) {
                            debug!(
                                conn = self.conn.id,
                                micros = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX),
                                "a sync on the reader was slow; syncs go to the workers for a while"
                            );
                        }
                    } else {
                        self.shared.sched.push(job);
                    }
                }
                Err(end) => break end,
            }
        };
        match end {
            End::Eof | End::Closed => {
                debug!(conn = self.conn.id, peer = %self.conn.peer, "connection closed")
            }
            End::Idle => {
                debug!(conn = self.conn.id, peer = %self.conn.peer, "idle connection closed")
            }
            // Clients often end a connection with a reset (libnfs always
            // does): an ordinary end, not worth a line at info level.
            End::Io(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                debug!(conn = self.conn.id, peer = %self.conn.peer, error = %e, "connection reset by the client")
            }
            other => {
                if let Some(held_back) = self.shared.log_gates.closing.allow() {
                    tracing::info!(
                        conn = self.conn.id,
                        peer = %self.conn.peer,
                        reason = ?other,
                        held_back,
                        "closing connection (`held_back`: lines like this one not written since \
                         the last)"
                    )
                }
            }
        }
        self.conn.close();
        self.shared.sched.purge(self.conn.id);
    }

    fn aborted(&self) -> bool {
        self.conn.is_closed() || self.shared.stop.load(Ordering::Acquire)
    }

    /// Whether the record being received has taken too long: past the
    /// record timeout, or past the much shorter pressure limit while other
    /// connections wait for request memory. A record over loopback or
    /// virtio arrives in milliseconds; one that trickles in while others
    /// wait is holding bytes they need (a dropped client reconnects and
    /// retransmits).
    fn overdue(&self, now: Instant) -> Option<End> {
        let started = self.started?;
        let age = now.saturating_duration_since(started);
        if age >= self.shared.limits.record_timeout {
            return Some(End::Stalled);
        }
        if age >= self.shared.pressure_stall()
            && below_min_rate(self.received, age)
            && self.shared.request_budget.has_waiters()
        {
            return Some(End::StalledUnderPressure);
        }
        None
    }

    /// Reads some bytes into `buf`, waiting through read-timeout ticks
    /// until data, end of stream, or a deadline.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        loop {
            if self.aborted() {
                return Err(End::Closed);
            }
            match (&self.conn.stream).read(buf) {
                Ok(0) => {
                    return Err(if self.started.is_some() {
                        End::Truncated
                    } else {
                        End::Eof
                    })
                }
                Ok(n) => {
                    let now = Instant::now();
                    self.received = self.received.saturating_add(n);
                    if self.started.is_none() {
                        self.started = Some(now);
                    } else if let Some(end) = self.overdue(now) {
                        return Err(end);
                    }
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    let now = Instant::now();
                    if let Some(end) = self.overdue(now) {
                        return Err(end);
                    }
                    if self.started.is_none() {
                        if self.conn.inflight() > 0 {
                            self.idle_since = now;
                        } else if now.duration_since(self.idle_since)
                            >= self.shared.limits.idle_timeout
                        {
                            return Err(End::Idle);
                        }
                    }
                }
                Err(e) => {
                    return Err(if self.aborted() {
                        End::Closed
                    } else {
                        End::Io(e)
                    })
                }
            }
        }
    }

    /// Reads into `dst` from the read-ahead buffer, or from the socket:
    /// straight into `dst` when it is at least as large as the buffer (the
    /// body of a WRITE), through the buffer otherwise.
    fn read_buffered(&mut self, dst: &mut [u8]) -> Result<usize, End> {
        if self.ahead_at == self.ahead_end {
            if dst.len() >= READ_AHEAD {
                return self.read_some(dst);
            }
            if self.ahead.is_empty() {
                self.ahead = vec![0; READ_AHEAD];
            }
            let mut ahead = std::mem::take(&mut self.ahead);
            let got = self.read_some(&mut ahead);
            self.ahead = ahead;
            self.ahead_at = 0;
            self.ahead_end = got?;
        }
        let avail = self
            .ahead
            .get(self.ahead_at..self.ahead_end)
            .unwrap_or_default();
        let n = avail.len().min(dst.len());
        if let (Some(d), Some(src)) = (dst.get_mut(..n), avail.get(..n)) {
            d.copy_from_slice(src);
        }
        self.ahead_at += n;
        Ok(n)
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<(), End> {
        while !buf.is_empty() {
            let n = self.read_buffered(buf)?;
            buf = buf.get_mut(n..).unwrap_or_default();
        }
        Ok(())
    }

    /// Reads one whole record, joining its fragments.
    ///
    /// Each fragment's length is charged to the shared budget before its
    /// payload is read, so that a reader never holds part of what it needs
    /// while waiting for the rest (readers holding half-records and all
    /// waiting to grow would deadlock). The buffer itself still grows only
    /// as bytes arrive, doubling, capped at the end of the fragment.
    fn read_record(&mut self) -> Result<(Record, Charge), End> {
        // Bytes already read ahead are this record's first ones.
        let early = self.ahead_end - self.ahead_at;
        self.started = (early > 0).then(Instant::now);
        self.received = early;
        let mut record: Vec<u8> = Vec::new();
        let mut pooled = false;
        let mut filled = 0usize;
        let mut charge = self.shared.request_budget.charge(self.conn.peer.ip());
        loop {
            let mut mark = [0u8; 4];
            self.read_exact(&mut mark)?;
            let frag = match self.asm.fragment(mark) {
                Ok(f) => f,
                Err(RecordError::Empty) => {
                    // Nothing to answer; not worth a disconnect.
                    let early = self.ahead_end - self.ahead_at;
                    self.started = (early > 0).then(Instant::now);
                    self.received = early;
                    continue;
                }
                Err(e) => return Err(End::TooLarge(e)),
            };
            let len = frag.len as usize;
            let conn = self.conn;
            let stop = &self.shared.stop;
            // Holding earlier fragments while waiting is hold-and-wait
            // again: bound that wait (Linux never sends more than one
            // fragment, so this only bites unusual clients under load).
            let holding = filled > 0;
            let give_up = Instant::now() + self.shared.pressure_stall();
            let abort = || {
                conn.is_closed()
                    || stop.load(Ordering::Acquire)
                    || (holding && Instant::now() >= give_up)
            };
            // A large record (a WRITE) is read into a pooled full-size
            // buffer, charged in full.
            let pool = &self.shared.bufs;
            let frag_end = filled + len;
            let to_pool = !pooled && frag_end >= POOLED_MIN && frag_end <= pool.size();
            let extra = if to_pool { pool.size() - frag_end } else { 0 };
            let proven = !holding && self.kept_pace;
            let waited = match charge.grow(len + extra, &|| proven, &abort) {
                Some(w) => w,
                None if holding && !self.aborted() => return Err(End::StalledUnderPressure),
                None => return Err(End::Closed),
            };
            // Waiting for the budget is the server's doing, not the
            // client's: do not count it against the record.
            if let Some(s) = self.started.as_mut() {
                *s += waited;
            }
            if to_pool {
                let mut big = pool.take();
                if let (Some(dst), Some(src)) = (big.get_mut(..filled), record.get(..filled)) {
                    dst.copy_from_slice(src);
                }
                record = big;
                pooled = true;
            }
            while filled < frag_end {
                if filled == record.len() {
                    let target = frag_end.min(record.len().saturating_mul(2).max(FIRST_CHUNK));
                    record.reserve_exact(target - record.len());
                    record.resize(target, 0);
                }
                let end = frag_end.min(record.len());
                let n = match record.get_mut(filled..end) {
                    Some(window) => self.read_buffered(window)?,
                    None => return Err(End::Closed),
                };
                filled += n;
            }
            if frag.last {
                self.kept_pace = self.started.is_none_or(|s| {
                    let age = s.elapsed();
                    age < self.shared.pressure_stall() || !below_min_rate(self.received, age)
                });
                if pooled {
                    let pool = Arc::clone(&self.shared.bufs);
                    return Ok((Record::new(record, filled, Some(pool)), charge));
                }
                record.truncate(filled);
                return Ok((Record::new(record, filled, None), charge));
            }
        }
    }
}

/// Records larger than this (a WRITE's data) are not run on the reader:
/// copying them into the page cache takes long enough that a client's
/// next calls should run beside it.
const INLINE_MAX: usize = 64 * 1024;

/// Where a lone call may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// On the reader: anything quick. Handing a call to a worker costs
    /// two thread switches, and after an inline call the reader can poll
    /// for the client's next one (see [`crate::linger`]): CREATE and
    /// REMOVE from one client went from about 11,000 and 14,000 calls a
    /// second to 15,000 and 25,000.
    Quick,
    /// A call that forces data to the disk (COMMIT, a stable WRITE): on
    /// the reader only when [`SyncGate`] lets it.
    Sync,
    /// On a worker: a large WRITE, stable or not.
    Large,
}

/// Where `record` may run, and whether it is an NFS WRITE.
fn classify(record: &[u8]) -> (Kind, bool) {
    const WRITE: u32 = 7;
    // The worker parses the call in full; only where it goes is read here.
    let Some(c) = peek_call(record) else {
        // Answered with a denial, or not at all: quick either way.
        return (Kind::Quick, false);
    };
    let write = c.prog == vmshare_proto::programs::NFS && c.vers == 3 && c.proc_ == WRITE;
    let kind = if record.len() > INLINE_MAX {
        Kind::Large
    } else if vmshare_proto::forces_sync(c.prog, c.vers, c.proc_, c.args) {
        Kind::Sync
    } else {
        Kind::Quick
    };
    (kind, write)
}

/// Whether a connection's calls that force data to the disk may run on
/// its reader.
///
/// With several clients at work on two CPUs, handing a COMMIT to a worker
/// costs a wake-up and two thread switches on CPUs that are already busy.
/// Running it on the reader took four clients' WRITE + COMMIT of 4 KiB
/// files from about 10,000 to 11,200-12,500 files a second
/// (`vmshare-bench --only vmshare --clients 4`; `docs/server.md`). The price is that the connection reads nothing until
/// the fsync returns: the client's other calls wait behind it instead of
/// running beside it. So a sync runs on the reader only
/// - while other connections are busy too (alone, a client's COMMIT on a
///   worker was as fast, and the reader can poll for its next call);
/// - when the connection has written little since its last sync
///   ([`SyncGate::WRITTEN_MAX`]): a client flushing a large file waits
///   on a worker, for as long as its disk takes, without holding up the
///   rest of its calls;
/// - and when its last syncs on the reader were quick. One that took
///   longer than [`SyncGate::SLOW`] (the disk, or another tenant's flush
///   sharing the journal commit) sends the connection's syncs to the
///   workers for a while, twice as long each time it happens again.
#[derive(Debug)]
struct SyncGate {
    /// WRITE bytes received since the last sync call.
    written: usize,
    closed_until: Option<Instant>,
    backoff: Duration,
}

impl Default for SyncGate {
    fn default() -> Self {
        SyncGate {
            written: 0,
            closed_until: None,
            backoff: Self::BACKOFF_MIN,
        }
    }
}

impl SyncGate {
    const WRITTEN_MAX: usize = 1 << 20;
    const SLOW: Duration = Duration::from_millis(20);
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    const BACKOFF_MAX: Duration = Duration::from_secs(10);

    /// A record of `len` bytes arrived: a WRITE if `write`.
    fn saw(&mut self, len: usize, write: bool) {
        if write {
            self.written = self.written.saturating_add(len);
        }
    }

    /// Whether the sync call that has just arrived may run on the reader;
    /// it starts a new count of bytes written.
    fn admit(&mut self, now: Instant) -> bool {
        let written = std::mem::take(&mut self.written);
        written <= Self::WRITTEN_MAX && self.closed_until.is_none_or(|t| now >= t)
    }

    /// A sync on the reader that started at `start` has ended at `end`;
    /// returns whether it was quick.
    fn ran(&mut self, start: Instant, end: Instant) -> bool {
        if end.saturating_duration_since(start) > Self::SLOW {
            self.closed_until = Some(end + self.backoff);
            self.backoff = (self.backoff * 2).min(Self::BACKOFF_MAX);
            return false;
        }
        self.backoff = (self.backoff / 2).max(Self::BACKOFF_MIN);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmshare_wire::Encoder;

    fn call(proc_: u32, args: &[u8]) -> Vec<u8> {
        let mut e = Encoder::default();
        vmshare_wire::rpc::encode_call(
            &mut e,
            1,
            vmshare_proto::programs::NFS,
            3,
            proc_,
            &vmshare_wire::rpc::Credential::None,
        );
        e.fixed(args);
        e.into_inner()
    }

    fn write_args(stable: u32, len: u32) -> Vec<u8> {
        let mut e = Encoder::default();
        e.opaque(&[7; 32]).u64(0).u32(len).u32(stable);
        e.opaque(&vec![0; len as usize]);
        e.into_inner()
    }

    #[test]
    fn calls_are_classified_by_what_they_may_cost() {
        assert_eq!(classify(&call(1, &[0; 36])), (Kind::Quick, false));
        assert_eq!(classify(&call(21, &[0; 48])), (Kind::Sync, false));
        assert_eq!(
            classify(&call(7, &write_args(0, 4096))),
            (Kind::Quick, true)
        );
        assert_eq!(classify(&call(7, &write_args(2, 4096))), (Kind::Sync, true));
        // Large goes to a worker even when stable.
        assert_eq!(
            classify(&call(7, &write_args(2, 1 << 20))),
            (Kind::Large, true)
        );
        assert_eq!(
            classify(&call(7, &write_args(0, 1 << 20))),
            (Kind::Large, true)
        );
        assert_eq!(classify(b"garbage"), (Kind::Quick, false));
    }

    #[test]
    fn a_sync_after_much_writing_goes_to_a_worker() {
        let mut g = SyncGate::default();
        let now = Instant::now();
        g.saw(4200, true);
        g.saw(100_000, false);
        assert!(g.admit(now), "little written");
        for _ in 0..300 {
            g.saw(4200, true);
        }
        assert!(!g.admit(now), "more than WRITTEN_MAX written");
        // The count starts again at each sync.
        g.saw(4200, true);
        assert!(g.admit(now));
    }

    #[test]
    fn slow_syncs_close_the_gate_for_longer_each_time() {
        let mut g = SyncGate::default();
        let t0 = Instant::now();
        let slow = SyncGate::SLOW + Duration::from_millis(1);
        assert!(g.ran(t0, t0 + Duration::from_millis(1)));
        assert!(!g.ran(t0, t0 + slow));
        let end = t0 + slow;
        assert!(!g.admit(end));
        assert!(!g.admit(end + SyncGate::BACKOFF_MIN - Duration::from_millis(1)));
        assert!(g.admit(end + SyncGate::BACKOFF_MIN));
        // Slow again: closed twice as long.
        let t1 = end + SyncGate::BACKOFF_MIN;
        assert!(!g.ran(t1, t1 + slow));
        let end = t1 + slow;
        assert!(!g.admit(end + SyncGate::BACKOFF_MIN));
        assert!(g.admit(end + SyncGate::BACKOFF_MIN * 2));
        // Quick ones bring the backoff back down, never below its floor.
        for _ in 0..10 {
            assert!(g.ran(end, end));
        }
        assert_eq!(g.backoff, SyncGate::BACKOFF_MIN);
        for _ in 0..20 {
            g.ran(end, end + slow);
        }
        assert_eq!(g.backoff, SyncGate::BACKOFF_MAX);
    }
}
