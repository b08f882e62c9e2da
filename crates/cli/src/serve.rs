//! `vmshare serve`: serve host directories over NFSv3 until SIGINT/SIGTERM;
//! SIGHUP reads the exports again.
//!
//! Exports come from `--export` (one exports-file line each, for quick use)
//! and `--exports FILE`; both are parsed completely before anything is
//! bound, so a typo stops the server instead of serving something else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing::{error, info, warn};
use vmshare_fs::exports_file::ExportSet;
use vmshare_server::{Limits, Server, ServerConfig};

/// Arguments of `vmshare serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address for NFS, and for MOUNT and the portmapper unless they get
    /// their own listener.
    #[arg(long, default_value = "127.0.0.1:2049", value_parser = listen_addr)]
    listen: SocketAddr,

    /// A separate listener for MOUNT (e.g. 0.0.0.0:20048, or :20048 for
    /// every address).
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    mount_listen: Option<SocketAddr>,

    /// A separate listener for the portmapper (e.g. 0.0.0.0:111, so that a
    /// stock client finds the ports without `port=`/`mountport=`).
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    portmap_listen: Option<SocketAddr>,

    /// An export, written like an exports-file line: `HOST_PATH [MOUNT_PATH]
    /// [CLIENT(options)...]`. Without clients it is `*(rw,insecure)`:
    /// read-write to everyone, with root squashing, from any source port
    /// (a guest behind QEMU's NAT has no privileged one). Repeatable.
    #[arg(long = "export", value_name = "SPEC")]
    exports: Vec<String>,

    /// An exports file (exports(5) shape; see docs/server.md). Repeatable.
    #[arg(long = "exports", value_name = "FILE")]
    exports_files: Vec<PathBuf>,

    /// Where the file handle key is kept, so that handles survive restarts.
    /// Default: /var/lib/vmshare as root, else $XDG_STATE_HOME/vmshare,
    /// ~/.local/state/vmshare, or $TMPDIR/vmshare-state-UID without a home.
    #[arg(long, value_name = "DIR", env = "VMSHARE_STATE_DIR")]
    state_dir: Option<PathBuf>,

    /// Threads running calls (many calls wait on the disk).
    #[arg(long, default_value_t = Limits::default().workers, value_parser = count_parser(1, MAX_WORKERS))]
    workers: usize,

    /// Open connections allowed at once.
    #[arg(long, default_value_t = Limits::default().max_connections, value_parser = count_parser(1, MAX_CONNECTIONS))]
    max_connections: usize,

    /// Open connections allowed at once from one client address (guests
    /// behind one NAT share it).
    #[arg(long, default_value_t = Limits::default().max_connections_per_client, value_parser = count_parser(1, MAX_CONNECTIONS))]
    max_connections_per_client: usize,

    /// Calls in flight per connection.
    #[arg(long, default_value_t = Limits::default().max_in_flight, value_parser = count_parser(1, MAX_IN_FLIGHT))]
    max_in_flight: usize,

    /// MiB of request and reply buffers, all clients together (split
    /// evenly between requests and replies).
    #[arg(long, value_name = "MIB", default_value_t = (Limits::default().request_budget + Limits::default().reply_budget) >> 20, value_parser = count_parser(MIN_BUDGET_MIB, MAX_BUDGET_MIB))]
    memory_budget: usize,

    /// Microseconds a connection, having answered everything, polls for
    /// the client's next call before it sleeps: a waking thread costs a
    /// client that waits for each answer more than most calls take. The
    /// window adapts to each client, and 0 turns polling off.
    #[arg(long, value_name = "MICROS", default_value_t = Limits::default().poll_window.as_micros() as usize, value_parser = count_parser(0, MAX_POLL_US))]
    poll_us: usize,

    /// Never move a connection's reader thread to the CPU its client's
    /// packets arrive on. By default, while several clients are at work,
    /// each reader follows its client, so that the two wake each other
    /// on one CPU instead of across CPUs.
    #[arg(long)]
    no_follow_cpu: bool,

    /// Milliseconds a directory listing (READDIRPLUS) may show an entry's
    /// attributes as they were looked up earlier, instead of a statx per
    /// entry. Changes made through the server show at once; changes made on
    /// the host show within this time (on top of the client's own attribute
    /// cache, 3-60 s for Linux). 0 looks every entry up every time.
    #[arg(long, value_name = "MS", default_value_t = vmshare_fs::backend::DEFAULT_ATTR_CACHE.as_millis() as u64)]
    attr_cache_ms: u64,
}

/// Bounds of the limits on the command line. 0 had been taken as 1 in
/// silence, and a huge worker count started, said it was listening and
/// then aborted when the threads ran the process out of memory.
const MAX_WORKERS: usize = 1024;
/// Each connection has two threads, and each thread a few memory maps:
/// at about 8,000 connections the process met the kernel's map limit
/// (`vm.max_map_count`), and a thread that could not start aborted it.
const MAX_CONNECTIONS: usize = 4096;
/// A longer poll window let one idle client keep a CPU busy.
const MAX_POLL_US: usize = 10_000;
const MAX_IN_FLIGHT: usize = 4096;
/// A quarter of it holds a largest record (1 MiB and its header) with
/// room to spare, in each of the request and reply halves.
const MIN_BUDGET_MIB: usize = 4;
const MAX_BUDGET_MIB: usize = 65_536;

/// A parser for a count in `lo..=hi`, saying the range when it is not.
fn count_parser(lo: usize, hi: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| {
        let n: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))?;
        if (lo..=hi).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is out of range: {lo} to {hi}"))
        }
    }
}

/// A listening address: `IP:PORT`, `:PORT` for every IPv4 address, or a
/// host name such as `localhost:2049` (its first address).
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            .map_err(|_| format!("{s:?}: the port is not a number from 0 to 65535"));
    }
    let mut found = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: not IP:PORT, :PORT or HOST:PORT ({e})"))?;
    found
        .next()
        .ok_or_else(|| format!("{s:?}: the name has no address"))
}

/// Where the handle key is kept when `--state-dir` is not given.
///
/// A service account often has no home: su and setpriv leave HOME at
/// `/nonexistent`, and systemd may give none. Such a user gets a
/// directory of its own under the temporary directory, said in the log,
/// rather than a failure to create `/nonexistent/.local/state`.
/// `HandleCodec` refuses it if someone else made it first.
fn default_state_dir(root: bool) -> PathBuf {
    if root {
        return PathBuf::from("/var/lib/vmshare");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("vmshare");
    }
    let home_dir = |d: &std::ffi::OsStr| !d.is_empty() && std::path::Path::new(d).is_dir();
    if let Some(h) = std::env::var_os("HOME").filter(|d| home_dir(d)) {
        return PathBuf::from(h).join(".local/state/vmshare");
    }
    let dir = std::env::temp_dir().join(format!(
        "vmshare-state-{}",
        rustix::process::geteuid().as_raw()
    ));
    warn!(
        state_dir = %dir.display(),
        "no home directory (HOME is unset or not a directory): keeping the handle key in a \
         temporary directory; if it is removed (a reboot may), every handle given out goes \
         stale; give --state-dir to keep it elsewhere"
    );
    dir
}

/// Sets up logging from `RUST_LOG` (default `info`) unless the binary
/// already did. Colours only on a terminal: a server's log usually goes to
/// a file or the journal, where escape codes are noise.
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread it starts
/// afterwards, so that they can be taken synchronously with [`wait_signal`]
/// instead of killing the process mid-write.
fn block_signals() -> Result<libc::sigset_t, std::io::Error> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully
    // before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, exclusively borrowed sigset_t; the calls
    // only write to it, and pthread_sigmask only reads it and changes this
    // thread's mask (no old mask requested).
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(set)
}

/// Waits for one of the signals in `set` (blocked by [`block_signals`]).
fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is an initialised sigset_t and `sig` a valid out
        // pointer for the duration of the call.
        let rc = unsafe { libc::sigwait(set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

/// Every export `--export` and `--exports` name, read whole: at start, and
/// again at each SIGHUP.
fn read_exports(args: &Args) -> Result<Vec<vmshare_fs::ExportConfig>, Box<dyn std::error::Error>> {
    let mut set = ExportSet::new();
    for (n, spec) in args.exports.iter().enumerate() {
        set.add_spec(spec, n + 1)?;
    }
    for file in &args.exports_files {
        set.add_file(file)?;
    }
    let exports = set.into_exports();
    if exports.is_empty() {
        return Err("nothing to serve: give --export PATH or --exports FILE".into());
    }
    Ok(exports)
}

/// Runs the subcommand.
pub fn main(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    init_logging();
    let exports = read_exports(&args)?;
    let root = rustix::process::geteuid().is_root();
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(root));
    if !root {
        warn!(
            "not running as root: calls cannot take on the callers' identities, so every file is \
             created as this user and permission checks are this user's, not the guest's; \
             squash options have no effect on ownership"
        );
    }
    let half = args.memory_budget.saturating_mul(1 << 20) / 2;
    let limits = Limits {
        workers: args.workers,
        max_connections: args.max_connections,
        max_connections_per_client: args.max_connections_per_client,
        max_in_flight: args.max_in_flight,
        request_budget: half,
        reply_budget: half,
        poll_window: std::time::Duration::from_micros(args.poll_us as u64),
        follow_cpu: !args.no_follow_cpu,
        ..Limits::default()
    };
    let config = ServerConfig {
        mount_listen: args.mount_listen,
        portmap_listen: args.portmap_listen,
        limits,
        attr_cache: std::time::Duration::from_millis(args.attr_cache_ms),
        ..ServerConfig::new(exports, args.listen, state_dir)
    };
    // Before any server thread exists, so that they all inherit the mask.
    let signals = block_signals()?;
    let running = Server::bind(config)?.spawn()?;
    let sig = loop {
        match wait_signal(&signals) {
            // unfs3 and knfsd users reach for it to reload the exports;
            // killing the server (SIGHUP's default) would break every
            // guest's mount instead.
            // As unfs3 and knfsd's `exportfs -r` do: the exports files
            // and `--export`s are read again. A reload that fails changes
            // nothing: killing the server (SIGHUP's default) or serving
            // half a file would break the guests' mounts instead.
            libc::SIGHUP => match read_exports(&args) {
                Ok(exports) => {
                    if let Err(e) = running.reload_exports(exports) {
                        error!("SIGHUP: {e}; still serving the exports as they were");
                    }
                }
                Err(e) => error!("SIGHUP: {e}; still serving the exports as they were"),
            },
            sig => break sig,
        }
    };
    info!(signal = sig, "stopping");
    running.shutdown();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::listen_addr;

    #[test]
    fn listen_addresses_in_the_forms_people_write() {
        assert_eq!(
            listen_addr("10.0.0.1:2049").ok(),
            "10.0.0.1:2049".parse().ok()
        );
        assert_eq!(listen_addr(":20048").ok(), "0.0.0.0:20048".parse().ok());
        assert_eq!(listen_addr("[::1]:111").ok(), "[::1]:111".parse().ok());
        let local = listen_addr("localhost:2049").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 2049);
        for bad in [":70000", "nowhere", ":x"] {
            assert!(listen_addr(bad).is_err(), "{bad}");
        }
    }
}
