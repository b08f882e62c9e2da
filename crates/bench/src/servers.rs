//! Starting, watching and stopping the servers under test.
//!
//! Both listen on 127.0.0.1 only, on ports picked free at start; both
//! export a directory under the same base directory (so on the same
//! filesystem). ganesha needs an rpcbind to register with (it exits with
//! "Cannot register NFS V3 on TCP" otherwise), so one is started if none
//! answers on 127.0.0.1:111, and stopped at the end.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmshare_proto::nfs3::FileHandle;

use crate::client::{Conn, Result};

/// Process ids this benchmark started, for the watchdog to kill.
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn remember(pid: u32) {
    if let Ok(mut v) = CHILDREN.lock() {
        v.push(pid);
    }
}

fn forget(pid: u32) {
    if let Ok(mut v) = CHILDREN.lock() {
        v.retain(|p| *p != pid);
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; a stale pid at worst gets
        // ESRCH (the pids here are our own unreaped children).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Stops a child: SIGTERM, up to `grace` to exit, then SIGKILL.
fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        forget(child.id());
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            forget(child.id());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    forget(child.id());
}

/// A free TCP port on 127.0.0.1 (bound and released; the servers bind it
/// right after).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A server under test.
#[derive(Debug)]
pub struct Server {
    /// "vmshare" or "ganesha".
    pub name: &'static str,
    child: Child,
    /// NFS address.
    pub nfs: SocketAddr,
    /// MOUNT address.
    pub mount: SocketAddr,
    /// Path to give to MNT.
    pub mount_path: String,
    /// The server's log file.
    pub log: PathBuf,
}

impl Server {
    /// The server's process id (whose CPU time and memory are measured).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until MNT answers, then returns the export's root handle.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<FileHandle> {
        let t = Instant::now();
        let mut last = String::new();
        while t.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited during start ({st}); see {}",
                    self.name,
                    self.log.display()
                ));
            }
            match Conn::connect(self.mount, 7).and_then(|mut c| c.mount(&self.mount_path)) {
                Ok(fh) => return Ok(fh),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "{} not ready after {timeout:?}: {last}; see {}",
            self.name,
            self.log.display()
        ))
    }

    /// Stops the server (SIGTERM, then SIGKILL after 15 s).
    pub fn stop(&mut self) {
        stop(&mut self.child, Duration::from_secs(15));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `vmshare serve` exporting `export` as /bench.
pub fn start_vmshare(bin: &Path, base: &Path, export: &Path) -> Result<Server> {
    let port = free_port()?;
    let state = base.join("vmshare-state");
    fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
    let log = base.join("vmshare.log");
    let logf = fs::File::create(&log).map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(bin)
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--export")
        // VMSHARE_BENCH_OPTIONS=sync adds export options (what `sync`
        // costs); the default, `async`, is what ganesha does.
        .arg(format!(
            "{} /bench *(rw,insecure,no_root_squash{})",
            export.display(),
            std::env::var("VMSHARE_BENCH_OPTIONS")
                .ok()
                .filter(|o| !o.is_empty())
                .map(|o| format!(",{o}"))
                .unwrap_or_default()
        ))
        .arg("--state-dir")
        .arg(&state)
        // VMSHARE_BENCH_LOG=debug logs each call's time (with --keep).
        .env(
            "RUST_LOG",
            std::env::var("VMSHARE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    remember(child.id());
    Ok(Server {
        name: "vmshare",
        child,
        nfs: addr,
        mount: addr,
        mount_path: "/bench".into(),
        log,
    })
}

/// Starts `ganesha.nfsd` in the foreground with a config written to
/// `base/ganesha.conf`: one NFSv3-only, TCP-only VFS export of `export`,
/// root not squashed, NLM and RQUOTA off, bound to 127.0.0.1.
pub fn start_ganesha(bin: &Path, base: &Path, export: &Path) -> Result<Server> {
    let nfs_port = free_port()?;
    let mnt_port = free_port()?;
    let recov = base.join("ganesha-recovery");
    fs::create_dir_all(&recov).map_err(|e| e.to_string())?;
    let conf = base.join("ganesha.conf");
    let text = format!(
        r#"# Written by vmshare-bench.
NFS_CORE_PARAM {{
    Protocols = 3;
    Bind_addr = 127.0.0.1;
    NFS_Port = {nfs_port};
    MNT_Port = {mnt_port};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = "{recov}"; }}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = /bench;
    Tag = bench;
    Protocols = 3;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    MaxRead = 1048576;
    MaxWrite = 1048576;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"#,
        recov = recov.display(),
        export = export.display(),
    );
    fs::File::create(&conf)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", conf.display()))?;
    let log = base.join("ganesha.log");
    let out = fs::File::create(base.join("ganesha.stderr")).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-F")
        .arg("-L")
        .arg(&log)
        .arg("-f")
        .arg(&conf)
        .arg("-p")
        .arg(base.join("ganesha.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    remember(child.id());
    Ok(Server {
        name: "ganesha",
        child,
        nfs: SocketAddr::from(([127, 0, 0, 1], nfs_port)),
        mount: SocketAddr::from(([127, 0, 0, 1], mnt_port)),
        mount_path: export.display().to_string(),
        log,
    })
}

/// An rpcbind started for ganesha, stopped when dropped.
#[derive(Debug)]
pub struct Rpcbind(Option<Child>);

impl Drop for Rpcbind {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            stop(c, Duration::from_secs(5));
        }
    }
}

/// Makes sure an rpcbind answers on 127.0.0.1:111, starting `rpcbind -f`
/// if none does. (`rpcbind -h 127.0.0.1`, which would keep its UDP port on
/// loopback, aborts with a double free in Debian's 1.2.6, so it is not
/// used.)
pub fn ensure_rpcbind() -> Result<Rpcbind> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 111));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Ok(Rpcbind(None));
    }
    let _ = fs::create_dir_all("/run/rpcbind");
    let child = Command::new("rpcbind")
        .arg("-f")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting rpcbind (needed by ganesha): {e}"))?;
    remember(child.id());
    let mut rb = Rpcbind(Some(child));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(rb);
        }
        if let Some(c) = rb.0.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                forget(c.id());
                rb.0 = None;
                return Err(format!("rpcbind exited: {st}"));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("rpcbind does not answer on 127.0.0.1:111".into())
}

/// CPU seconds (user + system, all threads) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name, which is in parentheses and may
    // contain spaces: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let (utime, stime) = (ticks(11), ticks(12));
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    (utime + stime) as f64 / hz
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples VmRSS of a process every 10 ms and keeps the largest.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// The largest VmRSS seen so far, in KiB.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops sampling; returns the largest VmRSS seen, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}
