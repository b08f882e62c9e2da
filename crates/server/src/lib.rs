//! The vmshare NFS server: listeners, connections, limits and the duplicate
//! request cache, on plain threads.
//!
//! ```ignore
//! let server = Server::bind(ServerConfig::new(exports, "127.0.0.1:0".parse()?, state_dir))?;
//! let addr = server.local_addr();     // NFS, MOUNT and portmap share this port
//! let running = server.spawn()?;      // serves on background threads
//! running.shutdown();                 // stops accepting, closes connections, joins
//! ```
//!
//! Threads, not async: the filesystem backend switches per-thread
//! credentials around each operation, so every call runs on an OS thread of
//! its own. Each connection has a reader thread that frames records and a
//! writer thread for replies that do not fit the socket buffer; a shared
//! pool of workers runs the calls. Memory is bounded by [`Limits`]: record
//! size, calls in flight per connection, connections, and two byte budgets
//! shared by all connections (see `docs/server.md`).
#![deny(missing_docs)]

mod affinity;
mod budget;
mod bufs;
mod conn;
mod drc;
mod linger;
mod loggate;
mod pipes;
mod pool;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vmshare_proto::{Client, Dispatcher, Ports};
use vmshare_wire::rpc::CallHeader;
use vmshare_wire::Encoder;

pub use vmshare_fs::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};

use budget::Budget;
use conn::Conn;
use drc::Drc;
use pool::Scheduler;

/// Error of the server layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The filesystem backend could not be set up.
    #[error(transparent)]
    Fs(#[from] vmshare_fs::FsError),
    /// The server was built without a filesystem backend (tests).
    #[error("this server has no exports to change")]
    NoExports,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let what = what.into();
    move |source| ServerError::Io { what, source }
}

/// Caps that bound what clients can make the server hold.
///
/// The defaults keep peak RSS under about 32 MiB with 1 MiB READ/WRITE
/// records: 10 MiB of request buffers plus 10 MiB of replies, whatever the
/// number of clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest RPC record accepted (all fragments together); a larger one
    /// closes the connection. Must exceed the 1 MiB wtmax plus headers.
    pub max_record: u32,
    /// Calls read but not yet answered, per connection; at the cap the
    /// reader stops reading, which pushes back through TCP.
    pub max_in_flight: usize,
    /// Open connections; further ones are accepted and closed at once.
    pub max_connections: usize,
    /// Open connections from one client address, so that one guest cannot
    /// take every slot (the Linux client opens one, or up to 16 with
    /// `nconnect`). Guests behind one NAT, as QEMU's user networking
    /// puts them, share an address and so this cap.
    pub max_connections_per_client: usize,
    /// Worker threads running calls (many calls block in fsync, so more
    /// than the number of cores).
    pub workers: usize,
    /// Bytes of request buffers held at once by all connections together.
    pub request_budget: usize,
    /// Bytes of replies built or waiting to be sent, all connections
    /// together.
    pub reply_budget: usize,
    /// A connection with no call for this long, and none in flight, is
    /// closed.
    pub idle_timeout: Duration,
    /// At a connection limit, a connection idle at least this long is
    /// closed (the one idle longest) to admit a new one, instead of the
    /// new one being refused. The Linux client reconnects by itself at
    /// its next call; knfsd closes its oldest connection likewise.
    pub evict_idle: Duration,
    /// A record must arrive completely within this time of its first byte,
    /// so that a client that stalls mid-record cannot pin its buffer.
    pub record_timeout: Duration,
    /// A reply that cannot be sent within this time (the client stopped
    /// reading) closes the connection.
    pub send_timeout: Duration,
    /// Replies kept in the duplicate request cache (0 turns it off).
    pub drc_entries: usize,
    /// Bytes of replies kept in the duplicate request cache.
    pub drc_bytes: usize,
    /// Longest time a connection's reader, having answered everything,
    /// polls for the client's next call before it sleeps (zero: never
    /// poll). The window adapts to each client; see `docs/server.md`.
    pub poll_window: Duration,
    /// Readers polling at once, all connections together.
    pub max_pollers: usize,
    /// Whether, while several clients are at work, each connection's
    /// reader moves to the CPU its client's packets arrive on (see
    /// `docs/server.md`).
    pub follow_cpu: bool,
    /// Only connections from a local socket owned by this uid (as
    /// `/proc/net/tcp` says) are served: for a server on loopback that is
    /// for one local program (`vmshare run`'s QEMU), not for every user of
    /// the host, who could otherwise mount its exports and claim to be
    /// root. `None`: any peer the exports admit.
    pub local_peer_uid: Option<u32>,
    /// With `local_peer_uid`: only a local socket that a child process of
    /// this one holds (`vmshare run`'s QEMU, found by the socket's inode
    /// among the children's descriptors). QEMU's user networking lets its
    /// guest reach every port on the host's 127.0.0.1, another run's
    /// server among them: a guest mounted the volumes of every other
    /// `vmshare run` of the same user, which its QEMU's socket, of that
    /// user, passed the uid check for.
    pub local_peer_child: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record: (1 << 20) + 4096,
            max_in_flight: 64,
            max_connections: 256,
            max_connections_per_client: 64,
            workers: 16,
            request_budget: 10 << 20,
            reply_budget: 10 << 20,
            idle_timeout: Duration::from_secs(300),
            evict_idle: Duration::from_secs(5),
            record_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            drc_entries: 4096,
            drc_bytes: 1 << 20,
            poll_window: Duration::from_micros(50),
            // Half the CPUs: polling is for time nothing else wants.
            max_pollers: std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1),
            follow_cpu: true,
            local_peer_uid: None,
            local_peer_child: false,
        }
    }
}

/// Everything needed to start a server.
///
/// Build it with [`ServerConfig::new`], or with struct-update syntax over
/// `Default::default()` (which has no exports, listens on 127.0.0.1:2049
/// and has an empty state directory: always set `state_dir`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Exports served.
    pub exports: Vec<ExportConfig>,
    /// Address for NFS, and for MOUNT and portmap unless they have their
    /// own (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory for the handle key and other state kept across restarts.
    pub state_dir: PathBuf,
    /// A separate listener for MOUNT (for example port 20048).
    pub mount_listen: Option<SocketAddr>,
    /// A separate listener for the portmapper (for example port 111).
    pub portmap_listen: Option<SocketAddr>,
    /// Caps on what clients can make the server hold.
    pub limits: Limits,
    /// How long READDIRPLUS may answer with attributes looked up earlier;
    /// see [`vmshare_fs::FsBackend::with_attr_cache`].
    pub attr_cache: Duration,
}

impl ServerConfig {
    /// A configuration with one shared listener and the default limits.
    pub fn new(exports: Vec<ExportConfig>, listen: SocketAddr, state_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            exports,
            listen,
            state_dir,
            mount_listen: None,
            portmap_listen: None,
            limits: Limits::default(),
            attr_cache: vmshare_fs::backend::DEFAULT_ATTR_CACHE,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new(
            Vec::new(),
            SocketAddr::from(([127, 0, 0, 1], 2049)),
            PathBuf::new(),
        )
    }
}

/// The addresses actually bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundAddrs {
    /// NFS (and MOUNT and portmap when they have no listener of their own).
    pub nfs: SocketAddr,
    /// MOUNT's own listener, if configured.
    pub mount: Option<SocketAddr>,
    /// The portmapper's own listener, if configured.
    pub portmap: Option<SocketAddr>,
}

/// Runs one parsed call; the seam between sockets and the protocol layer
/// (tests plug in handlers with side effects to exercise the cache).
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, client: &Client, call: &CallHeader<'_>, out: &mut Encoder);
    /// As `handle`, but a large READ may leave its data in `pipe`: returns
    /// how many bytes (see `Dispatcher::handle_call_piped`).
    fn handle_piped(
        &self,
        client: &Client,
        call: &CallHeader<'_>,
        out: &mut Encoder,
        _pipe: std::os::fd::BorrowedFd<'_>,
        _room: usize,
    ) -> usize {
        self.handle(client, call, out);
        0
    }
    /// Runs on the same thread once the reply has been handed to the
    /// connection: work that need not delay the answer.
    fn after_reply(&self) {}
    /// Runs every [`HOUSEKEEPING_EVERY`] on a thread of its own.
    fn housekeeping(&self) {}
    /// Serves `exports` from now on (`FsBackend::reload`).
    fn reload(&self, _exports: Vec<ExportConfig>) -> Result<vmshare_fs::Reloaded, ServerError> {
        Err(ServerError::NoExports)
    }
}

/// How often [`Handler::housekeeping`] runs: how long a file removed on
/// the host may stay open in the server (knfsd's file cache takes about
/// two seconds).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3);

/// The fewest connections the server admits, whatever the open-file limit.
const MIN_CONNECTIONS: usize = 4;

/// The soft open-file limit (the backend has raised it to the hard one).
fn nofile_limit() -> Option<usize> {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    lim.current.and_then(|n| usize::try_from(n).ok())
}

/// Descriptors the server holds besides connections and the backend's
/// caches: listeners, stdio, logs, pollers and the like; the READ pipes in
/// use (two descriptors each; the reply budget bounds how many large READs
/// are answered at once); and what each worker may have open while a call
/// runs (a directory being listed, the two directories of a RENAME, a
/// file opened around its I/O). Generous on purpose: under a limit of 256
/// the process peaked at 248 descriptors with 88 connections.
fn fixed_descriptors(limits: &Limits) -> usize {
    48 + 2 * max_pipes(limits) + 3 * limits.workers
}

/// READ pipes lent at once (see `pipes`): as many as the reply budget
/// holds 1 MiB READs, and two more.
fn max_pipes(limits: &Limits) -> usize {
    limits.reply_budget / vmshare_proto::MAX_IO as usize + 2
}

/// `limits` with at most as many connections as the open-file limit
/// leaves room for once the caches are full, and a warning if that is
/// fewer than asked. Beyond it, the opens that calls make failed for want
/// of descriptors and guests got EIO (120 connections under a limit of
/// 256); a connection refused is retried by the client, an EIO is not.
fn fit_connections(mut limits: Limits, cached: usize, nofile: Option<usize>) -> Limits {
    let Some(nofile) = nofile else {
        return limits;
    };
    let room = nofile
        .saturating_sub(cached)
        .saturating_sub(fixed_descriptors(&limits));
    if room < limits.max_connections {
        let fit = room.max(MIN_CONNECTIONS);
        warn!(
            open_file_limit = nofile,
            connections = fit,
            asked = limits.max_connections,
            "the open-file limit leaves room for `connections` connections at once, not \
             `asked`; more are refused and their clients retry (raise the limit: ulimit -n, or \
             LimitNOFILE= in a systemd unit)"
        );
        limits.max_connections = fit;
        limits.max_connections_per_client = limits.max_connections_per_client.min(fit);
    }
    limits
}

impl Handler for Dispatcher<vmshare_fs::FsBackend> {
    fn handle(&self, client: &Client, call: &CallHeader<'_>, out: &mut Encoder) {
        self.handle_call(client, call, out);
    }

    fn handle_piped(
        &self,
        client: &Client,
        call: &CallHeader<'_>,
        out: &mut Encoder,
        pipe: std::os::fd::BorrowedFd<'_>,
        room: usize,
    ) -> usize {
        self.handle_call_piped(client, call, out, pipe, room)
    }

    fn after_reply(&self) {
        self.backend().after_reply();
    }

    fn housekeeping(&self) {
        self.backend().close_unlinked();
    }

    fn reload(&self, exports: Vec<ExportConfig>) -> Result<vmshare_fs::Reloaded, ServerError> {
        Ok(self.backend().reload(exports)?)
    }
}

/// Locks a mutex, ignoring poisoning: every structure guarded here stays
/// consistent between statements, and a poisoned lock must not turn one
/// bug into a server-wide panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by every thread of a server.
pub(crate) struct Shared {
    handler: Arc<dyn Handler>,
    limits: Limits,
    stop: AtomicBool,
    request_budget: Arc<Budget>,
    reply_budget: Arc<Budget>,
    drc: Drc,
    sched: Scheduler,
    pipes: Arc<pipes::Pipes>,
    bufs: Arc<bufs::BufPool>,
    pollers: linger::Pollers,
    placement: affinity::Placement,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_conn: AtomicU64,
    /// Connection threads still running (they are not joined one by one).
    live: Mutex<usize>,
    live_cv: Condvar,
    /// Start of [`Shared::ms`]'s clock.
    epoch: Instant,
    log_gates: LogGates,
}

/// Gates for log lines a client can provoke at will (see `loggate`).
#[derive(Debug)]
struct LogGates {
    refused: loggate::LogGate,
    evicted: loggate::LogGate,
    closing: loggate::LogGate,
    stalled: loggate::LogGate,
    /// `accept` failing (out of descriptors), or a connection's threads
    /// not starting: a flood of connections repeats them at will.
    no_room: loggate::LogGate,
}

impl LogGates {
    fn new() -> LogGates {
        let every = || loggate::LogGate::new(Duration::from_secs(10));
        LogGates {
            refused: every(),
            evicted: every(),
            closing: every(),
            stalled: every(),
            no_room: every(),
        }
    }
}

impl Shared {
    /// Milliseconds since the server was made: a cheap clock for
    /// timestamps kept in atomics.
    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// How long a partial record may make no progress while others wait
    /// for request memory.
    fn pressure_stall(&self) -> Duration {
        self.limits.record_timeout.min(Duration::from_secs(2))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Counts a connection thread as live until dropped.
struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    fn new(shared: &Arc<Shared>) -> LiveGuard {
        *lock(&shared.live) += 1;
        LiveGuard(Arc::clone(shared))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut n = lock(&self.0.live);
        *n = n.saturating_sub(1);
        drop(n);
        self.0.live_cv.notify_all();
    }
}

/// What a listener serves (all listeners answer every program; the role
/// only names it in logs and picks the ports GETPORT advertises).
#[derive(Debug, Clone, Copy)]
enum Role {
    Nfs,
    Mount,
    Portmap,
}

/// A bound server, not yet serving.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<(Role, TcpListener)>,
    addrs: BoundAddrs,
    exports: Vec<ExportConfig>,
}

/// A server serving on background threads. Dropping it shuts it down too.
#[derive(Debug)]
pub struct RunningServer {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
    addrs: BoundAddrs,
}

fn bind_listener(addr: SocketAddr, what: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).map_err(io_err(format!("bind {what} listener on {addr}")))
}

impl Server {
    /// Binds the listener(s) and prepares the exports.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let listener = bind_listener(config.listen, "NFS")?;
        Server::from_listener(listener, config)
    }

    /// Serves NFS on an already bound listener (`config.listen` is ignored;
    /// the MOUNT and portmap listeners, if configured, are bound here). Lets
    /// a runner create the socket inside another network namespace.
    pub fn from_listener(
        listener: TcpListener,
        config: ServerConfig,
    ) -> Result<Server, ServerError> {
        let mut listeners = Vec::new();
        listener
            .set_nonblocking(false)
            .map_err(io_err("make listener blocking"))?;
        let nfs = listener.local_addr().map_err(io_err("listener address"))?;
        listeners.push((Role::Nfs, listener));
        let mut addrs = BoundAddrs {
            nfs,
            mount: None,
            portmap: None,
        };
        if let Some(a) = config.mount_listen {
            let l = bind_listener(a, "MOUNT")?;
            addrs.mount = Some(l.local_addr().map_err(io_err("listener address"))?);
            listeners.push((Role::Mount, l));
        }
        if let Some(a) = config.portmap_listen {
            let l = bind_listener(a, "portmap")?;
            addrs.portmap = Some(l.local_addr().map_err(io_err("listener address"))?);
            listeners.push((Role::Portmap, l));
        }
        let ports = Ports {
            nfs,
            mount: addrs.mount.unwrap_or(nfs),
            portmap: addrs.portmap.unwrap_or(nfs),
        };
        let backend = vmshare_fs::FsBackend::new(config.exports.clone(), &config.state_dir)?
            .with_attr_cache(config.attr_cache);
        if !backend.opens_by_handle() {
            warn!(
                kept = backend.kept_objects(),
                "this process cannot open files by handle (that needs CAP_DAC_READ_SEARCH): it \
                 keeps up to `kept` files open and finds others again by the name it saw them \
                 under; a handle whose name the host changed, or that the server has forgotten, \
                 or any handle after a restart, gets STALE, and the client looks the name up \
                 again, which fails for a file open in the guest"
            );
        }
        let limits = fit_connections(config.limits, backend.cached_descriptors(), nofile_limit());
        let handler = Arc::new(Dispatcher::new(backend, ports));
        Ok(Server::with_handler(
            handler,
            listeners,
            addrs,
            config.exports,
            limits,
        ))
    }

    fn with_handler(
        handler: Arc<dyn Handler>,
        listeners: Vec<(Role, TcpListener)>,
        addrs: BoundAddrs,
        exports: Vec<ExportConfig>,
        limits: Limits,
    ) -> Server {
        let shared = Arc::new(Shared {
            handler,
            stop: AtomicBool::new(false),
            request_budget: Budget::new(limits.request_budget),
            reply_budget: Budget::new(limits.reply_budget),
            drc: Drc::new(limits.drc_entries, limits.drc_bytes),
            sched: Scheduler::default(),
            pipes: pipes::Pipes::new(max_pipes(&limits)),
            bufs: bufs::BufPool::new(limits.max_record as usize),
            pollers: linger::Pollers::new(limits.poll_window, limits.max_pollers),
            placement: affinity::Placement::new(limits.follow_cpu),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            live: Mutex::new(0),
            live_cv: Condvar::new(),
            epoch: Instant::now(),
            log_gates: LogGates::new(),
            limits,
        });
        Server {
            shared,
            listeners,
            addrs,
            exports,
        }
    }

    /// The NFS address actually bound (with the chosen port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs.nfs
    }

    /// Every address bound.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Serves on background threads.
    pub fn spawn(self) -> Result<RunningServer, ServerError> {
        let Server {
            shared,
            listeners,
            addrs,
            exports,
        } = self;
        tune_malloc();
        log_exports(&exports);
        info!(
            nfs = %addrs.nfs,
            mount = %addrs.mount.unwrap_or(addrs.nfs),
            portmap = %addrs.portmap.unwrap_or(addrs.nfs),
            "listening"
        );
        let mut running = RunningServer {
            shared: Arc::clone(&shared),
            listeners: Vec::new(),
            threads: Vec::new(),
            addrs,
        };
        for i in 0..shared.limits.workers.max(1) {
            let s = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("nfs-worker-{i}"))
                .spawn(move || pool::worker_main(&s))
                .map_err(io_err("spawn worker thread"))?;
            running.threads.push(t);
        }
        let s = Arc::clone(&shared);
        let t = std::thread::Builder::new()
            .name("nfs-housekeeping".into())
            .spawn(move || housekeeping_main(&s))
            .map_err(io_err("spawn housekeeping thread"))?;
        running.threads.push(t);
        for (role, listener) in listeners {
            let clone = listener.try_clone().map_err(io_err("clone listener"))?;
            running.listeners.push(clone);
            let s = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("nfs-accept-{role:?}").to_lowercase())
                .spawn(move || accept_main(&s, role, &listener))
                .map_err(io_err("spawn accept thread"))?;
            running.threads.push(t);
        }
        Ok(running)
    }
}

/// Calls the handler's housekeeping every [`HOUSEKEEPING_EVERY`] until the
/// server stops (checked often, so that a stop is not held up).
fn housekeeping_main(shared: &Shared) {
    let mut next = Instant::now() + HOUSEKEEPING_EVERY;
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next {
            shared.handler.housekeeping();
            next = Instant::now() + HOUSEKEEPING_EVERY;
        }
    }
}

/// Tunes glibc's allocator for a bounded RSS. Process-wide, set once.
///
/// - **Every large buffer from mmap, returned on free.** By default glibc
///   raises its mmap threshold to the size of the largest buffer freed, so
///   after the first 1 MiB WRITE every later one comes from a per-thread
///   arena, and each arena keeps megabytes of freed buffers resident:
///   measured, 30 MiB of RSS for a 10 MiB budget. A fixed threshold keeps
///   RSS at what the budgets allow, at the price of page faults on each
///   large buffer (the pool in `bufs` keeps a few for streaming writers).
/// - **Two arenas, not glibc's eight per CPU.** The caches' entries are
///   made and dropped by whichever thread ran the call, and each arena
///   keeps its own freed chunks: with a guest that had touched 80,000
///   files, peak RSS was 27.5-28 MiB with the default and 23.2-23.6 MiB
///   with two. The calls' own small allocations come from each thread's
///   cache (glibc's tcache) without taking an arena's lock; the benchmark's
///   four-client rates did not move.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator tuning; M_MMAP_THRESHOLD
            // takes a byte count and any value in range is valid.
            let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
            if ok != 1 {
                debug!("mallopt(M_MMAP_THRESHOLD) failed");
            }
            // SAFETY: as above; M_ARENA_MAX takes a count of arenas, and
            // lowering it leaves arenas already made in use.
            let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
            if ok != 1 {
                debug!("mallopt(M_ARENA_MAX) failed");
            }
        });
    }
}

/// `10.0.0.0/8(rw,no_root_squash) *(ro,root_squash)`, for the start-up log.
fn describe_rules(rules: &[ClientRule]) -> String {
    let mut out = Vec::new();
    for r in rules {
        let who = match &r.client {
            ClientMatch::Any => "*".to_string(),
            ClientMatch::Net { addr, prefix } => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if *prefix >= full {
                    addr.to_string()
                } else {
                    format!("{addr}/{prefix}")
                }
            }
        };
        let o = &r.options;
        let squash = match o.squash {
            Squash::Root => "root_squash",
            Squash::None => "no_root_squash",
            Squash::All => "all_squash",
        };
        out.push(format!(
            "{who}({},{squash},anonuid={},anongid={},{},{})",
            if o.writable { "rw" } else { "ro" },
            o.anonuid,
            o.anongid,
            if o.secure { "secure" } else { "insecure" },
            if o.sync { "sync" } else { "async" },
        ));
    }
    out.join(" ")
}

fn accept_main(shared: &Arc<Shared>, role: Role, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => start_connection(shared, role, stream, peer),
            Err(e) => {
                // Out of descriptors or memory: back off instead of
                // spinning. New clients wait in the backlog meanwhile, so
                // an operator needs to hear of it; connected ones go on.
                if let Some(held_back) = shared.log_gates.no_room.allow() {
                    let hint = match e.raw_os_error() {
                        Some(libc::EMFILE) | Some(libc::ENFILE) => {
                            "out of file descriptors: new clients wait until some close \
                             (raise the open-file limit: ulimit -n, or LimitNOFILE= in a \
                             systemd unit)"
                        }
                        _ => "new clients wait until it succeeds",
                    };
                    warn!(?role, error = %e, held_back, "cannot accept a connection: {hint}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// How often a blocked reader wakes to check its deadlines.
fn read_tick(limits: &Limits) -> Duration {
    (limits.record_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Makes room for a connection from `peer` within the limits: at a limit,
/// the connection idle longest (at least `Limits::evict_idle`) among those it
/// counts is closed, as knfsd does; idle connections would otherwise keep
/// every new client out until the idle timeout. `false` if none is idle.
fn admit(shared: &Shared, peer: SocketAddr) -> bool {
    let now = shared.ms(Instant::now());
    let victim = {
        let conns = lock(&shared.conns);
        // Connections being closed are on their way out.
        let open = || conns.values().filter(|c| !c.is_closed());
        let ip = peer.ip();
        let (count, from_peer) = (open().count(), open().filter(|c| c.peer.ip() == ip).count());
        let (limit, same_address) = if from_peer >= shared.limits.max_connections_per_client {
            ("from this address", true)
        } else if count >= shared.limits.max_connections {
            ("in all", false)
        } else {
            return true;
        };
        let oldest = open()
            .filter(|c| !same_address || c.peer.ip() == ip)
            .filter_map(|c| c.idle_ms(now).map(|idle| (idle, c)))
            .filter(|(idle, _)| u128::from(*idle) >= shared.limits.evict_idle.as_millis())
            .max_by_key(|(idle, _)| *idle)
            .map(|(idle, c)| (idle, Arc::clone(c)));
        match oldest {
            Some(v) => v,
            None => {
                if let Some(held_back) = shared.log_gates.refused.allow() {
                    warn!(
                        %peer,
                        limit,
                        per_address = shared.limits.max_connections_per_client,
                        total = shared.limits.max_connections,
                        held_back,
                        "too many connections, none idle; refusing one (`held_back`: refusals \
                         not logged since the last line)"
                    );
                }
                return false;
            }
        }
    };
    let (idle, conn) = victim;
    if let Some(held_back) = shared.log_gates.evicted.allow() {
        info!(
            %peer,
            closed = conn.id,
            closed_peer = %conn.peer,
            idle_ms = idle,
            held_back,
            "at the connection limit: closing the connection idle longest to admit a new one \
             (its client reconnects when it needs to)"
        );
    }
    conn.close();
    true
}

fn start_connection(shared: &Arc<Shared>, role: Role, stream: TcpStream, peer: SocketAddr) {
    if let Some(uid) = shared.limits.local_peer_uid {
        let socket = stream
            .local_addr()
            .ok()
            .and_then(|local| peer_socket(peer, local));
        let owner = socket.map(|(uid, _)| uid);
        let child = || socket.is_some_and(|(_, inode)| held_by_a_child(inode));
        if owner != Some(uid) || (shared.limits.local_peer_child && !child()) {
            if let Some(held_back) = shared.log_gates.refused.allow() {
                warn!(
                    %peer,
                    owner = ?owner,
                    expected = uid,
                    held_back,
                    "refusing a connection whose socket is not this server's client's (another \
                     user of the host, another of its programs, or not local)"
                );
            }
            return;
        }
    }
    if !admit(shared, peer) {
        return;
    }
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(read_tick(&shared.limits))))
        .and_then(|()| stream.set_write_timeout(Some(conn::WRITE_TICK)))
        .and_then(|()| stream.local_addr());
    let local = match setup {
        Ok(local) => local,
        Err(e) => {
            debug!(%peer, error = %e, "socket setup failed");
            return;
        }
    };
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let conn = Conn::new(id, peer, local, stream, shared.ms(Instant::now()));
    lock(&shared.conns).insert(id, Arc::clone(&conn));
    debug!(conn = id, %peer, ?role, "connection accepted");
    let live = LiveGuard::new(shared);
    let s = Arc::clone(shared);
    let c = Arc::clone(&conn);
    let spawned = std::thread::Builder::new()
        .name(format!("nfs-conn-{id}"))
        .stack_size(1024 * 1024)
        .spawn(move || {
            let _live = live;
            let w = Arc::clone(&c);
            let writer = std::thread::Builder::new()
                .name(format!("nfs-send-{id}"))
                .stack_size(64 * 1024)
                .spawn({
                    let s = Arc::clone(&s);
                    move || w.writer_main(&s)
                });
            match writer {
                Ok(writer) => {
                    conn::Reader::new(&s, &c).run();
                    let _ = writer.join();
                }
                Err(e) => {
                    if let Some(held_back) = s.log_gates.no_room.allow() {
                        warn!(
                            conn = id,
                            error = %e,
                            held_back,
                            "cannot start writer thread; closing connection"
                        );
                    }
                    c.close();
                }
            }
            lock(&s.conns).remove(&id);
        });
    if let Err(e) = spawned {
        if let Some(held_back) = shared.log_gates.no_room.allow() {
            warn!(
                conn = id,
                error = %e,
                held_back,
                "cannot start connection thread; closing connection"
            );
        }
        conn.close();
        lock(&shared.conns).remove(&id);
    }
}

/// Whether a child process of this one has the socket `inode` open.
fn held_by_a_child(inode: u64) -> bool {
    // A socket no longer held by anyone (closed meanwhile) shows inode 0.
    if inode == 0 {
        return false;
    }
    let want = format!("socket:[{inode}]");
    children().into_iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
    })
}

/// This process's children: from each thread's `children` list where the
/// kernel has them (CONFIG_PROC_CHILDREN, as Debian's), which costs a read
/// per thread; else by the parent of every process on the host, which
/// costs a read per process, for every connection a guest makes.
fn children() -> Vec<u32> {
    let listed = std::fs::read_dir("/proc/self/task").ok().and_then(|tasks| {
        let mut pids = Vec::new();
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).ok()?;
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        Some(pids)
    });
    if let Some(pids) = listed {
        return pids;
    }
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(me))
        .collect()
}

/// The parent of process `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces and parentheses itself:
    // the fields are those after the last `)`, state first, then ppid.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The uid owning the local socket at `peer` connected to `local`, and
/// its inode, from `/proc/net/tcp` (or `tcp6`) of this network namespace;
/// `None` if it is not a local socket.
fn peer_socket(peer: SocketAddr, local: SocketAddr) -> Option<(u32, u64)> {
    // The kernel prints addresses as the in-memory words of the network-
    // order address, each as %08X, and ports as %04X.
    fn hex(addr: SocketAddr) -> String {
        let octets: Vec<u8> = match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let mut s: String = octets
            .chunks(4)
            .map(|c| {
                let w = [c[0], c[1], c[2], c[3]];
                format!("{:08X}", u32::from_ne_bytes(w))
            })
            .collect();
        s.push_str(&format!(":{:04X}", addr.port()));
        s
    }
    let table = if peer.is_ipv4() && local.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    // The peer's socket, from its side: its address is ours' remote one.
    let (want_local, want_remote) = if table.ends_with('6') {
        let v6 = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
            v6 => v6,
        };
        (hex(v6(peer)), hex(v6(local)))
    } else {
        (hex(peer), hex(local))
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&want_local.as_str()) && f.get(2) == Some(&want_remote.as_str()))
            .then(|| Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?)))
            .flatten()
    })
}

/// One line per export: what `serve` prints at start and after a reload.
fn log_exports(exports: &[ExportConfig]) {
    for e in exports {
        match &e.single_file {
            None => info!(
                host_path = ?e.path,
                mount_path = ?e.mount_path,
                clients = %describe_rules(&e.clients),
                "export"
            ),
            // Only `vmshare run` makes these (a file volume): the export
            // is the file's directory, but the client sees just the file.
            Some(name) => info!(
                host_path = ?e.path,
                mount_path = ?e.mount_path,
                clients = %describe_rules(&e.clients),
                only = %name.to_string_lossy(),
                "export"
            ),
        }
    }
}

impl RunningServer {
    /// Serves `exports` from now on instead of those given at start or
    /// at the last reload (see `FsBackend::reload`): connections and
    /// calls carry on, kept exports keep their handles. Logs the new
    /// table, as at start. On an error nothing changes.
    pub fn reload_exports(
        &self,
        exports: Vec<ExportConfig>,
    ) -> Result<vmshare_fs::Reloaded, ServerError> {
        let r = self.shared.handler.reload(exports.clone())?;
        log_exports(&exports);
        info!(
            added = ?r.added,
            removed = ?r.removed,
            changed = ?r.changed,
            unchanged = r.unchanged,
            descriptors_closed = r.closed,
            "exports reloaded"
        );
        Ok(r)
    }

    /// The NFS address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs.nfs
    }

    /// Every address served.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Stops serving and waits for the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Shutting a listening socket down makes a blocked accept() return
        // (EINVAL on Linux), which works even for a socket bound in another
        // network namespace, where connecting to it to wake it would not.
        for l in &self.listeners {
            let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Read);
        }
        self.shared.sched.stop();
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).values().cloned().collect();
        for c in conns {
            c.close();
        }
        self.shared.request_budget.wake_all();
        self.shared.reply_budget.wake_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut live = lock(&self.shared.live);
        while *live > 0 {
            let now = Instant::now();
            if now >= deadline {
                warn!(
                    threads = *live,
                    "connection threads still running after shutdown"
                );
                break;
            }
            live = match self.shared.live_cv.wait_timeout(live, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        drop(live);
        info!("server stopped");
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
