//! [`GuestRun`]: boot a microVM, run one command in it, get its result.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmshare_init::protocol::{self, ConsoleSpec, Message};
use vmshare_plan::guest::{ConsoleSize, GuestNet, GuestProcess, GuestSpec};
use vmshare_plan::plan::{Share, ShareDriver};

use crate::assets::{self, Assets};
use crate::channels::{self, AcceptError, Listeners};
pub use crate::channels::{Sink, StdinSource};
use crate::kvm::Accel;
use crate::netns::TapNetwork;
use crate::qemu::{self, QemuConfig, QemuDisk, QemuNet};
use crate::{StateDir, VmmError};

/// Lines of console shown in errors.
const CONSOLE_TAIL_LINES: usize = 40;
/// How long a guest may take to power off after reporting its exit.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// How long CMD gets after a signal that asks for a stop before it is
/// sent SIGKILL, as `docker stop` does.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a guest whose CMD was sent SIGKILL gets to unmount, sync and
/// report its exit before QEMU is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// A file to put into the guest's root filesystem (e.g. a test script).
#[derive(Debug, Clone)]
pub struct GuestFile {
    /// Absolute path in the guest; missing parent directories are made.
    pub path: String,
    /// Permission bits (`0o755` for a script).
    pub mode: u32,
    /// Contents.
    pub contents: Vec<u8>,
}

/// How the guest is networked. The guest is always `eth0`.
#[derive(Debug, Clone)]
pub enum GuestNetwork {
    /// QEMU user networking: no root needed; the guest is 10.0.2.15/24 and
    /// reaches the host's 127.0.0.1 as 10.0.2.2 (connections arrive at the
    /// host from 127.0.0.1 with unprivileged source ports).
    User,
    /// A TAP device in a network namespace (see [`TapNetwork`]); QEMU runs
    /// in the namespace; the guest is [`crate::netns::TAP_GUEST_ADDR`].
    Tap(Arc<TapNetwork>),
}

impl GuestNetwork {
    /// How the guest init configures `eth0` on this network
    /// ([`GuestSpec::network`]).
    pub fn guest_net(&self) -> GuestNet {
        match self {
            GuestNetwork::User => GuestNet {
                interface: "eth0".into(),
                address: USER_NET_GUEST.into(),
                gateway: Some(USER_NET_HOST.into()),
                // QEMU's user network answers DNS here.
                dns: vec![USER_NET_DNS.into()],
            },
            GuestNetwork::Tap(_) => GuestNet {
                interface: "eth0".into(),
                address: format!(
                    "{}/{}",
                    crate::netns::TAP_GUEST_ADDR,
                    crate::netns::TAP_PREFIX
                ),
                gateway: None,
                // Nothing beyond the /30 link is routed.
                dns: Vec::new(),
            },
        }
    }
}

/// Guest address with user networking.
pub const USER_NET_GUEST: &str = "10.0.2.15/24";
/// The host as the guest sees it with user networking.
pub const USER_NET_HOST: &str = "10.0.2.2";
/// QEMU user networking's DNS server, as the guest sees it.
pub const USER_NET_DNS: &str = "10.0.2.3";

/// One step of the timeline, host side or guest side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Time since [`GuestRun::run`] was called.
    pub at: Duration,
    /// What happened.
    pub text: String,
}

/// What a finished run returns.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// CMD's exit status, docker style: 0-255, 128+N for signal N, 125 when
    /// the guest init failed (see `errors`), 126/127 when CMD could not be
    /// executed or found.
    pub status: i32,
    /// CMD's stdout (empty with [`Sink::Inherit`]).
    pub stdout: Vec<u8>,
    /// CMD's stderr (empty with [`Sink::Inherit`]).
    pub stderr: Vec<u8>,
    /// Errors reported by the guest init (a volume that did not mount...).
    pub errors: Vec<String>,
    /// The end of the kernel console (serial) log: its last MiB at most.
    pub console: String,
    /// Timeline of the run.
    pub timeline: Vec<Event>,
    /// The accelerator used.
    pub accel: Accel,
}

impl GuestOutput {
    /// stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

type EventHook = Box<dyn FnMut(&Event) + Send>;

/// Boots a QEMU microVM with the vmshare init, runs one command, returns
/// its status and output. Built with chained setters; [`run`](Self::run)
/// consumes it.
///
/// Defaults: the newest `/boot/vmlinuz-*`, `/proc/self/exe` as the guest
/// init (tests must pass the static `vmshare` binary with
/// [`init_binary`](Self::init_binary)), no network, 512 MiB, 1 vCPU, 120 s
/// to boot (from start until CMD runs), no overall limit, stdout and
/// stderr captured, stdin `/dev/null`.
///
/// `spec.modules` is filled in from the mounts' filesystem types and the
/// network; `spec.network` from [`network`](Self::network) unless already
/// set.
pub struct GuestRun {
    spec: GuestSpec,
    files: Vec<GuestFile>,
    init_binary: Option<PathBuf>,
    busybox: PathBuf,
    kernel: Option<PathBuf>,
    qemu: PathBuf,
    state: Option<StateDir>,
    network: Option<GuestNetwork>,
    disks: Vec<QemuDisk>,
    shares: Vec<Share>,
    memory_mib: u32,
    cpus: u32,
    boot_timeout: Duration,
    timeout: Option<Duration>,
    stdin: StdinSource,
    stdout: Sink,
    stderr: Sink,
    on_event: Option<EventHook>,
    interrupt: Option<&'static AtomicI32>,
    window_sizes: Option<mpsc::Receiver<ConsoleSize>>,
    accel: Option<Accel>,
}

impl std::fmt::Debug for GuestRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRun")
            .field("spec", &self.spec)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl GuestRun {
    /// A run of `spec`.
    pub fn new(spec: GuestSpec) -> GuestRun {
        GuestRun {
            spec,
            files: Vec::new(),
            init_binary: None,
            busybox: PathBuf::from(assets::DEFAULT_BUSYBOX),
            kernel: None,
            qemu: PathBuf::from(qemu::DEFAULT_QEMU),
            state: None,
            network: None,
            disks: Vec::new(),
            shares: Vec::new(),
            memory_mib: 512,
            cpus: 1,
            boot_timeout: Duration::from_secs(120),
            timeout: None,
            stdin: StdinSource::Null,
            stdout: Sink::Capture,
            stderr: Sink::Capture,
            on_event: None,
            interrupt: None,
            window_sizes: None,
            accel: None,
        }
    }

    /// A run of `args` as root in `/`, nothing mounted.
    pub fn command<I, S>(args: I) -> GuestRun
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let process = GuestProcess {
            args: args.into_iter().map(Into::into).collect(),
            ..GuestProcess::default()
        };
        GuestRun::new(GuestSpec {
            hostname: "vmshare".into(),
            process,
            ..GuestSpec::default()
        })
    }

    /// The spec, to adjust (mounts, env, user...).
    pub fn spec_mut(&mut self) -> &mut GuestSpec {
        &mut self.spec
    }

    /// Puts a file into the guest.
    pub fn file(
        mut self,
        path: impl Into<String>,
        mode: u32,
        contents: impl Into<Vec<u8>>,
    ) -> Self {
        self.files.push(GuestFile {
            path: path.into(),
            mode,
            contents: contents.into(),
        });
        self
    }

    /// The static vmshare binary that becomes the guest's `/init`.
    pub fn init_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.init_binary = Some(path.into());
        self
    }

    /// A kernel other than the newest `/boot/vmlinuz-*`.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// A static busybox other than `/bin/busybox`.
    pub fn busybox(mut self, path: impl Into<PathBuf>) -> Self {
        self.busybox = path.into();
        self
    }

    /// A QEMU binary other than `qemu-system-x86_64` from `PATH`.
    pub fn qemu(mut self, path: impl Into<PathBuf>) -> Self {
        self.qemu = path.into();
        self
    }

    /// The state directory (cache and run directories); default
    /// [`StateDir::resolve`]`(None)`.
    pub fn state_dir(mut self, state: StateDir) -> Self {
        self.state = Some(state);
        self
    }

    /// Gives the guest a network interface.
    pub fn network(mut self, network: GuestNetwork) -> Self {
        self.network = Some(network);
        self
    }

    /// Attaches `image` as the next virtio-blk disk: the first call is
    /// `/dev/vda` in the guest, the next `/dev/vdb`, and so on, so attach
    /// in the plan's `block_devices` order. `id` names the QEMU drive.
    pub fn disk(
        mut self,
        id: impl Into<String>,
        image: impl Into<PathBuf>,
        readonly: bool,
    ) -> Self {
        self.disks.push(QemuDisk {
            id: id.into(),
            image: image.into(),
            readonly,
        });
        self
    }

    /// Attaches a planned 9p share (the guest mounts its `tag`). Only 9p:
    /// [`run`](Self::run) refuses a virtio-fs share, since it does not
    /// start virtiofsd.
    pub fn share(mut self, share: Share) -> Self {
        self.shares.push(share);
        self
    }

    /// Guest memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// vCPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus.max(1);
        self
    }

    /// Longest time from start until the guest runs CMD.
    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.boot_timeout = t;
        self
    }

    /// Longest time for the whole run; the VM is killed after it.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// CMD's stdin.
    pub fn stdin(mut self, s: StdinSource) -> Self {
        self.stdin = s;
        self
    }

    /// Where CMD's stdout goes.
    pub fn stdout(mut self, s: Sink) -> Self {
        self.stdout = s;
        self
    }

    /// Where CMD's stderr goes.
    pub fn stderr(mut self, s: Sink) -> Self {
        self.stderr = s;
        self
    }

    /// Called for each timeline event as it happens (`--verbose`).
    pub fn on_event(mut self, hook: impl FnMut(&Event) + Send + 'static) -> Self {
        self.on_event = Some(Box::new(hook));
        self
    }

    /// Each time the value becomes non-zero, that signal is forwarded to
    /// CMD (and the value reset), as docker forwards every signal. A
    /// SIGTERM or SIGHUP, or a third SIGINT (Ctrl-C pressed again and
    /// again), asks for a stop:
    /// if CMD has not exited [`STOP_GRACE`] later, it is sent SIGKILL (as
    /// `docker stop` does), and if the guest has not stopped
    /// [`KILL_GRACE`] after that, QEMU is killed.
    /// (A CMD that traps a Ctrl-C and carries on was killed 10 s later.)
    pub fn interrupt(mut self, flag: &'static AtomicI32) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// The host terminal's sizes as it is resized, for CMD's pty (with
    /// `spec.process.tty`): once CMD runs, the latest size received is
    /// sent to the guest, whose init sets it on the pty, so that CMD gets
    /// SIGWINCH. Sizes that arrive while the guest boots wait until then.
    pub fn window_sizes(mut self, sizes: mpsc::Receiver<ConsoleSize>) -> Self {
        self.window_sizes = Some(sizes);
        self
    }

    /// Forces an accelerator instead of probing (see [`detect_accel`]).
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = Some(accel);
        self
    }

    /// Boots, runs, waits. `Ok` whenever the guest init reported an exit
    /// status (check [`GuestOutput::errors`] when it is 125); `Err` when
    /// the VM could not be started, hung, or stopped without a status.
    pub fn run(mut self) -> Result<GuestOutput, VmmError> {
        let t0 = Instant::now();
        if let Some(s) = self
            .shares
            .iter()
            .find(|s| s.driver == ShareDriver::Virtiofs)
        {
            return Err(VmmError::MissingTool {
                tool: "virtiofsd".into(),
                hint: format!(
                    "share {} is virtio-fs, which vmshare run does not start; share it over 9p or NFS",
                    s.volume
                ),
            });
        }
        let mut timeline = Timeline {
            t0,
            events: Vec::new(),
            hook: self.on_event.take(),
        };
        let state = match self.state.take() {
            Some(s) => s,
            None => StateDir::resolve(None)?,
        };
        let run = state.new_run()?;
        let init_binary = match self.init_binary.take() {
            Some(p) => p,
            None => std::fs::read_link("/proc/self/exe")
                .map_err(|e| VmmError::io("finding /proc/self/exe", e))?,
        };
        let accel = match self.accel.take() {
            Some(a) => a,
            None => detect_accel(&state, &init_binary, self.kernel.as_deref(), &self.busybox),
        };
        match &accel {
            Accel::Kvm => timeline.push("accelerator: KVM".into()),
            Accel::Tcg { reason } => {
                timeline.push(format!("accelerator: TCG (KVM not usable: {reason})"))
            }
        }
        let assets = Assets::prepare(&state, self.kernel.as_deref(), &init_binary, &self.busybox)?;
        timeline.push(format!("assets ready (kernel {})", assets.kernel.version));

        self.fill_spec(&assets)?;
        let console_spec = ConsoleSpec {
            stdin: !matches!(self.stdin, StdinSource::Null),
            serial: false,
        };
        let initrd = run.path().join("initrd.cpio");
        assets.write_run_initramfs(&initrd, &self.spec, &console_spec, &self.files)?;

        let mut names = vec![
            protocol::PORT_STDOUT,
            protocol::PORT_STDERR,
            protocol::PORT_CONTROL,
        ];
        if console_spec.stdin {
            names.push(protocol::PORT_STDIN);
        }
        let listeners = Listeners::bind(run.path(), &names)?;
        let console_log = run.path().join("console.log");
        let config = QemuConfig {
            binary: self.qemu.clone(),
            accel: accel.clone(),
            kernel: assets.kernel.image.clone(),
            initrd,
            cmdline: qemu::kernel_cmdline(&accel),
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            console_log: console_log.clone(),
            ports: listeners.qemu_ports(),
            net: match &self.network {
                None => None,
                Some(GuestNetwork::User) => Some(QemuNet::User),
                Some(GuestNetwork::Tap(_)) => Some(QemuNet::Tap {
                    ifname: crate::netns::TAP_NAME.into(),
                }),
            },
            disks: self.disks.clone(),
            shares: self.shares.clone(),
        };
        let qemu_stderr = run.path().join("qemu.stderr");
        let netns = match &self.network {
            Some(GuestNetwork::Tap(t)) => Some(t.ns_fd()),
            _ => None,
        };
        let mut child = config.spawn(&qemu_stderr, netns)?;
        run.record("qemu.pid", &child.id().to_string())?;
        timeline.push("QEMU started".into());

        let qemu_failed = |child: &mut std::process::Child, message: &str| {
            let _ = child.kill();
            let _ = child.wait();
            VmmError::Qemu {
                message: message.to_string(),
                stderr: read_tail(&qemu_stderr, QEMU_STDERR_KEEP),
            }
        };
        let streams = match listeners.accept(&mut child, Duration::from_secs(30)) {
            Ok(s) => s,
            Err(AcceptError::Io(e)) => {
                let _ = qemu_failed(&mut child, "");
                return Err(e);
            }
            Err(AcceptError::QemuExited) => {
                return Err(qemu_failed(&mut child, "QEMU exited while starting"))
            }
            Err(AcceptError::Timeout) => {
                return Err(qemu_failed(
                    &mut child,
                    "QEMU did not connect the guest's serial ports within 30 s",
                ))
            }
        };

        // Bounded: a guest sending faster than the loop below takes its
        // messages waits, instead of queueing them here without end.
        let (tx, rx) = mpsc::sync_channel(256);
        let (out_buf, err_buf) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let mut pumps = Vec::new();
        let broken_pipe = Arc::new(AtomicBool::new(false));
        let mut control_tx = None;
        let mut stdin_go: Option<mpsc::Sender<()>> = None;
        for (name, stream) in streams {
            match name.as_str() {
                protocol::PORT_STDOUT => pumps.push(channels::pump_output(
                    stream,
                    self.stdout.clone(),
                    false,
                    out_buf.clone(),
                    broken_pipe.clone(),
                )),
                protocol::PORT_STDERR => pumps.push(channels::pump_output(
                    stream,
                    self.stderr.clone(),
                    true,
                    err_buf.clone(),
                    broken_pipe.clone(),
                )),
                protocol::PORT_STDIN => {
                    let (go, wait) = mpsc::channel();
                    stdin_go = Some(go);
                    channels::pump_stdin(stream, self.stdin.clone(), wait)
                }
                _ => {
                    control_tx = stream.try_clone().ok();
                    pumps.push(channels::pump_control(stream, tx.clone()));
                }
            }
        }
        drop(tx);

        // The main loop: control messages, QEMU's exit, deadlines, Ctrl-C.
        let boot_deadline = t0 + self.boot_timeout;
        let deadline = self.timeout.map(|t| t0 + t);
        let (mut started, mut status, mut errors) = (false, None, Vec::new());
        let mut signalled_at: Option<Instant> = None;
        let mut killed_at: Option<Instant> = None;
        let mut interrupts = 0u32;
        let mut interrupted_boot: Option<i32> = None;
        let mut pipe_told = false;
        let mut exited_at: Option<Instant> = None;
        let mut failure: Option<String> = None;
        let (mut console_checked, mut console_cut) = (Instant::now(), false);
        let mut handle = |m: Message, timeline: &mut Timeline, started: &mut bool| match m {
            Message::Event(text) => timeline.push(text),
            Message::Started => {
                *started = true;
                if let Some(go) = stdin_go.take() {
                    let _ = go.send(());
                }
                timeline.push("command started".into());
            }
            Message::Error(text) => {
                timeline.push(format!("guest error: {text}"));
                // Init reports a handful; a guest sending them without end
                // is held to a number.
                if errors.len() < MAX_GUEST_ERRORS {
                    errors.push(text);
                }
            }
            Message::Exit(code) => status = Some(code),
            Message::Signal(_) | Message::Resize(_) | Message::ClockAsk | Message::Clock { .. } => {
            }
        };
        let window_sizes = self.window_sizes.take();
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Message::ClockAsk) => {
                    // At once: the guest's clock is this one plus
                    // however long the answer takes to get there.
                    send(&mut control_tx, &host_clock());
                    continue;
                }
                Ok(m) => {
                    if matches!(m, Message::Exit(_)) {
                        exited_at.get_or_insert_with(Instant::now);
                    }
                    handle(m, &mut timeline, &mut started);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let now = Instant::now();
            if now > console_checked + Duration::from_secs(1) {
                console_checked = now;
                // QEMU's own complaints, which a guest can provoke, are
                // held to the same bound.
                let _ = cut_log(&qemu_stderr);
                if matches!(cut_log(&console_log), Ok(true)) && !console_cut {
                    console_cut = true;
                    timeline.push(format!(
                        "the guest's console passed {} MiB; it is cut to its last {} MiB as it goes",
                        CONSOLE_CAP >> 20,
                        CONSOLE_KEEP >> 20
                    ));
                }
            }
            if !started && now > boot_deadline {
                failure = Some(format!(
                    "the guest did not start the command within {} s (boot hung? see the console)",
                    self.boot_timeout.as_secs()
                ));
            } else if deadline.is_some_and(|d| now > d) {
                failure = Some(format!(
                    "the run took longer than {} s",
                    self.timeout.unwrap_or_default().as_secs()
                ));
            } else if exited_at.is_none() && signalled_at.is_some_and(|s| now > s + STOP_GRACE) {
                // CMD carried on after the signal (it traps or ignores it):
                // SIGKILL, as `docker stop` sends, so the init still ends
                // the rest, closes their files, syncs and unmounts. Killing
                // QEMU at once left the guest's `.nfsXXXX` files (removed
                // while open) on the host, and the run ended as a failure.
                match killed_at {
                    None => {
                        timeline.push(
                            "the command did not stop after the signal; sending it SIGKILL".into(),
                        );
                        send(&mut control_tx, &Message::Signal(libc::SIGKILL));
                        killed_at = Some(now);
                    }
                    Some(k) if now > k + KILL_GRACE => {
                        failure = Some(
                            "the guest did not stop after the signal, nor after SIGKILL; QEMU \
                             was killed"
                                .into(),
                        );
                    }
                    Some(_) => {}
                }
            }
            // The init reports the exit status only after it has unmounted
            // the volumes and synced, so from then on nothing of the guest's
            // is left to lose. A guest kernel that then fails to power off
            // (seen under TCG on a loaded host) must not hold the run.
            if let (Some(since), None) = (exited_at, &failure) {
                if now > since + POWER_OFF_GRACE {
                    timeline.push(
                        "the guest reported its exit but did not power off; QEMU was stopped"
                            .into(),
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
            if failure.is_some() {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            let mut sig = self
                .interrupt
                .map_or(0, |flag| flag.swap(0, Ordering::SeqCst));
            if sig == 0 && !pipe_told && broken_pipe.load(Ordering::SeqCst) {
                // Whoever read CMD's output is gone (`vmshare run -- yes |
                // head -2`): CMD gets the SIGPIPE it would get on the host,
                // instead of running, unread, forever.
                pipe_told = true;
                sig = libc::SIGPIPE;
            }
            if sig != 0 {
                if sig == libc::SIGINT {
                    interrupts += 1;
                }
                timeline.push(format!("forwarding signal {sig} to the command"));
                send(&mut control_tx, &Message::Signal(sig));
                if !started {
                    // No CMD yet to take it: the run ends as CMD would
                    // have, 128+N, not as a failed boot ("kernel panic?",
                    // and the last failed console overwritten).
                    timeline.push("interrupted while booting; QEMU stopped".into());
                    interrupted_boot.get_or_insert(sig);
                    let _ = child.kill();
                }
                let stop =
                    matches!(sig, libc::SIGTERM | libc::SIGHUP | libc::SIGPIPE) || interrupts >= 3;
                if stop && signalled_at.is_none() {
                    signalled_at = Some(now);
                }
            }
            // Before CMD runs its pty may not exist yet, nor init be
            // reading the port; of the sizes since, only the last matters.
            if started {
                if let Some(size) = window_sizes.as_ref().and_then(|w| w.try_iter().last()) {
                    timeline.push(format!(
                        "terminal resized to {} rows, {} columns",
                        size.height, size.width
                    ));
                    send(&mut control_tx, &Message::Resize(size));
                }
            }
        }
        let qemu_status = child.wait().ok();
        // The control pump may wait for room in the queue: keep taking
        // messages until every pump has read its stream to the end.
        while pumps.iter().any(|p| !p.is_finished()) {
            for m in rx.try_iter() {
                handle(m, &mut timeline, &mut started);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for p in pumps {
            let _ = p.join();
        }
        for m in rx.try_iter() {
            handle(m, &mut timeline, &mut started);
        }
        timeline.push("VM stopped".into());

        let console = read_tail(&console_log, CONSOLE_KEEP);
        let take = |b: Arc<Mutex<Vec<u8>>>| {
            b.lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default()
        };
        let status = status.or(interrupted_boot.map(|sig| 128 + sig));
        match (status, failure) {
            (Some(status), None) => Ok(GuestOutput {
                status,
                stdout: take(out_buf),
                stderr: take(err_buf),
                errors,
                console,
                timeline: timeline.events,
                accel,
            }),
            (_, failure) => {
                let message = failure.unwrap_or_else(|| {
                    let how = qemu_status.map(|s| s.to_string()).unwrap_or_default();
                    let mut m = format!(
                        "the VM stopped before the command finished (QEMU {how}; kernel panic?)"
                    );
                    if !errors.is_empty() {
                        m.push_str(&format!("; guest init said: {}", errors.join("; ")));
                    }
                    let qemu_said = read_tail(&qemu_stderr, QEMU_STDERR_KEEP);
                    if !qemu_said.trim().is_empty() {
                        m.push_str(&format!("\n--- QEMU stderr ---\n{}", tail(&qemu_said, 10)));
                    }
                    m
                });
                let log = keep_console(&state, &console_log, run.id());
                Err(VmmError::Guest {
                    message,
                    log,
                    tail: tail(&console, CONSOLE_TAIL_LINES),
                })
            }
        }
    }

    fn fill_spec(&mut self, assets: &Assets) -> Result<(), VmmError> {
        if let (Some(net), None) = (&self.network, &self.spec.network) {
            self.spec.network = Some(net.guest_net());
        }
        self.spec.modules = assets.module_load_order(&assets::module_names(&self.spec))?;
        Ok(())
    }
}

/// Environment variable forcing the accelerator (`kvm` or `tcg`).
pub const ACCEL_ENV: &str = "VMSHARE_ACCEL";

/// KVM when it really runs a guest here, else TCG with the reason.
///
/// The ioctl probe ([`crate::kvm::probe`]) is not enough: without nested
/// virtualisation some hosts create VMs and vCPUs fine and then QEMU
/// aborts setting MSRs or the guest hangs. So when the ioctls pass, a
/// tiny guest is booted under KVM once per host boot (keyed by the boot
/// id) and the verdict is cached in the state directory.
/// `VMSHARE_ACCEL=kvm|tcg` skips all of it.
pub fn detect_accel(
    state: &StateDir,
    init_binary: &Path,
    kernel: Option<&Path>,
    busybox: &Path,
) -> Accel {
    match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => {
            return Accel::Tcg {
                reason: format!("{ACCEL_ENV}=tcg"),
            }
        }
        _ => {}
    }
    if let Accel::Tcg { reason } = Accel::detect() {
        return Accel::Tcg { reason };
    }
    let cache = kvm_verdict_path(state);
    if let Some(verdict) = recorded_kvm_verdict(state) {
        return verdict;
    }
    let mut probe = GuestRun::command(["true"])
        .init_binary(init_binary)
        .busybox(busybox)
        .state_dir(state.clone())
        .accel(Accel::Kvm)
        .memory_mib(128)
        .boot_timeout(Duration::from_secs(20));
    if let Some(k) = kernel {
        probe = probe.kernel(k);
    }
    let verdict = match probe.run() {
        Ok(out) if out.status == 0 => Accel::Kvm,
        Ok(out) => Accel::Tcg {
            reason: format!("a KVM test guest exited with {}", out.status),
        },
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            Accel::Tcg {
                reason: format!("a KVM test guest failed ({first})"),
            }
        }
    };
    let text = match &verdict {
        Accel::Kvm => "ok".to_string(),
        Accel::Tcg { reason } => format!("broken: {reason}"),
    };
    let _ = write_verdict(&cache, &text);
    verdict
}

/// Writes the verdict whole under a new name and renames it into place,
/// 0644 whatever the umask (and replacing a file another umask made
/// writable to everyone): the file decides whether vmshare uses KVM.
fn write_verdict(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Where [`detect_accel`] keeps its verdict for this host boot.
fn kvm_verdict_path(state: &StateDir) -> PathBuf {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    state
        .cache_dir()
        .join(format!("kvm-probe-{}", boot_id.trim()))
}

/// The verdict of [`detect_accel`]'s KVM test guest since this host
/// booted, if one ran with this state directory: [`Accel::Kvm`] when a
/// guest ran under KVM, TCG with the reason when it failed. Boots nothing.
pub fn recorded_kvm_verdict(state: &StateDir) -> Option<Accel> {
    use std::os::unix::fs::MetadataExt;
    let path = kvm_verdict_path(state);
    // One that another user could have written is not believed: the test
    // guest runs again and writes it anew.
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.is_file()
        || meta.mode() & 0o022 != 0
        || meta.uid() != rustix::process::geteuid().as_raw()
    {
        return None;
    }
    let verdict = std::fs::read_to_string(&path).ok()?;
    Some(match verdict.strip_prefix("broken: ") {
        Some(reason) => Accel::Tcg {
            reason: reason.to_string(),
        },
        None => Accel::Kvm,
    })
}

/// Writes one message to the guest's control port (lost, like the port,
/// when the guest has gone).
fn send(control: &mut Option<std::os::unix::net::UnixStream>, message: &Message) {
    use std::io::Write;
    if let Some(c) = control.as_mut() {
        let _ = c.write_all(message.encode().as_bytes());
    }
}

/// The host's wall-clock time, for a guest that asked it.
fn host_clock() -> Message {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Message::Clock {
        secs: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        nanos: now.subsec_nanos(),
    }
}

struct Timeline {
    t0: Instant,
    events: Vec<Event>,
    hook: Option<EventHook>,
}

impl Timeline {
    /// Every event goes to the hook (`--verbose` prints them as they
    /// come); the first [`MAX_EVENTS`] are kept. The guest sends most of
    /// them, and it could send them without end.
    fn push(&mut self, text: String) {
        let e = Event {
            at: self.t0.elapsed(),
            text,
        };
        if let Some(h) = self.hook.as_mut() {
            h(&e);
        }
        if self.events.len() < MAX_EVENTS {
            self.events.push(e);
        }
    }
}

/// Timeline events kept in [`GuestOutput::timeline`]; a run has about 30.
const MAX_EVENTS: usize = 1024;
/// Guest errors kept in [`GuestOutput::errors`]; a run has at most a few.
const MAX_GUEST_ERRORS: usize = 64;

/// The console log's size past which it is cut down, checked every
/// second. A guest writes its serial console as fast as it likes, and
/// QEMU's file chardev sets no limit: `cat /dev/zero > /dev/ttyS0` in a
/// guest filled the host's disk, and the log was then read whole into
/// memory.
const CONSOLE_CAP: u64 = 16 << 20;
/// What is kept of the log when it is cut, and read back at the end.
const CONSOLE_KEEP: u64 = 1 << 20;
/// What is read back of QEMU's stderr for an error message.
const QEMU_STDERR_KEEP: u64 = 64 << 10;

/// Cuts a log QEMU writes (the console, its stderr) to its last
/// [`CONSOLE_KEEP`] bytes, after a line that says so, once it is over
/// [`CONSOLE_CAP`]; `Ok(true)` if it did.
/// QEMU appends (`append=on`), so what it writes meanwhile lands after
/// the cut; a few bytes written between the read and the truncation are
/// lost with the rest.
fn cut_log(path: &Path) -> std::io::Result<bool> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len <= CONSOLE_CAP {
        return Ok(false);
    }
    let kept = tail_bytes(&mut f, len, CONSOLE_KEEP)?;
    f.set_len(0)?;
    let mut out = format!(
        "[vmshare: {} bytes of the guest's console cut here]\n",
        len - kept.len() as u64
    )
    .into_bytes();
    out.extend_from_slice(&kept);
    f.write_all(&out)?;
    Ok(true)
}

/// The last `max` bytes of a file of `len` bytes, from the start of a line
/// where one begins within them.
fn tail_bytes(f: &mut std::fs::File, len: u64, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let from = len.saturating_sub(max);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    if from > 0 {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            buf.drain(..=i);
        }
    }
    Ok(buf)
}

/// The end of the console log as text: at most `max` bytes, however much
/// the guest wrote.
fn read_tail(path: &Path, max: u64) -> String {
    let tail = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        tail_bytes(&mut f, len, max)
    });
    tail.map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How many failed runs' consoles are kept in `STATE/failed-consoles`.
const KEPT_CONSOLES: usize = 8;

/// The run directory goes away with the run; a failed run's console is
/// copied out for a post-mortem. Each failed run keeps its own copy,
/// named by its run id, so that two runs failing at once do not write
/// into one file; the oldest copies beyond [`KEPT_CONSOLES`] are removed.
/// `last-failed-console.log` is then replaced whole (a copy renamed over
/// it), so it is always one run's complete log, the latest to fail.
fn keep_console(state: &StateDir, log: &Path, run_id: &str) -> PathBuf {
    let dir = state.path().join("failed-consoles");
    if std::fs::create_dir_all(&dir).is_err() {
        return log.to_path_buf();
    }
    let kept = dir.join(format!("{run_id}.log"));
    // The owner's alone, as the state directory is: copies took QEMU's
    // 0644, and the guest may have printed anything.
    let copy = |from: &Path, to: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::copy(from, to)?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
    };
    if copy(log, &kept).is_err() {
        return log.to_path_buf();
    }
    prune_consoles(&dir, KEPT_CONSOLES);
    let tmp = state.path().join(format!(".last-failed-console.{run_id}"));
    if copy(&kept, &tmp).is_ok()
        && std::fs::rename(&tmp, state.path().join("last-failed-console.log")).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
    kept
}

/// Removes all but the `keep` most recently modified logs in `dir`.
fn prune_consoles(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    logs.sort();
    let excess = logs.len().saturating_sub(keep);
    for (_, path) in logs.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the cap the log is cut to its last lines, from a line's start,
    /// after a line saying how much went; under it nothing changes.
    #[test]
    fn the_console_log_is_cut_to_its_tail() {
        let dir = std::env::temp_dir().join(format!("vmshare-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("console.log");
        std::fs::write(&log, "boot\n").unwrap();
        assert!(!cut_log(&log).unwrap());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "boot\n");
        let line = "0123456789abcdef0123456789abcdef0123456789abcdef012345678\n";
        let mut big = String::new();
        while (big.len() as u64) <= CONSOLE_CAP {
            big.push_str(line);
        }
        big.push_str("the last line\n");
        std::fs::write(&log, &big).unwrap();
        assert!(cut_log(&log).unwrap());
        let cut = std::fs::read_to_string(&log).unwrap();
        assert!(cut.len() as u64 <= CONSOLE_KEEP + 100, "{}", cut.len());
        let (first, rest) = cut.split_once('\n').unwrap();
        assert!(
            first.starts_with("[vmshare: ")
                && first.ends_with("bytes of the guest's console cut here]"),
            "{first}"
        );
        assert!(rest.starts_with(line), "{}", &rest[..80]);
        assert!(rest.ends_with("the last line\n"));
        // What is read back is bounded the same way.
        std::fs::write(&log, &big).unwrap();
        let back = read_tail(&log, CONSOLE_KEEP);
        assert!(back.len() as u64 <= CONSOLE_KEEP && back.starts_with(line));
        assert_eq!(read_tail(&dir.join("none"), CONSOLE_KEEP), "");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The KVM verdict decides how guests boot: it is never left writable
    /// to others, also where an earlier run under umask 0 made it so.
    #[test]
    fn the_kvm_verdict_is_written_0644_over_a_world_writable_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vmshare-verdict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kvm-probe-x");
        std::fs::write(&path, "ok").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let state = StateDir::at(&dir).unwrap();
        let recorded = kvm_verdict_path(&state);
        std::fs::write(&recorded, "ok").unwrap();
        std::fs::set_permissions(&recorded, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            recorded_kvm_verdict(&state),
            None,
            "a verdict others may write"
        );
        write_verdict(&recorded, "ok").unwrap();
        assert_eq!(recorded_kvm_verdict(&state), Some(Accel::Kvm));
        std::fs::remove_file(&recorded).unwrap();
        write_verdict(&path, "broken: no /dev/kvm").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        let text = std::fs::read_to_string(&path).unwrap();
        let left = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("kvm-probe-x"))
            })
            .count();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(mode, 0o644);
        assert_eq!(text, "broken: no /dev/kvm");
        assert_eq!(left, 1, "no temporary file left");
    }

    /// Each failed run keeps its own console log, the latest is also
    /// `last-failed-console.log`, and only the newest few are kept.
    #[test]
    fn failed_consoles_are_kept_per_run() {
        let tmp = std::env::temp_dir().join(format!("vmshare-consoles-{}", std::process::id()));
        let state = StateDir::at(&tmp).unwrap();
        let src = tmp.join("console.src");
        let mut kept = Vec::new();
        for i in 0..KEPT_CONSOLES + 3 {
            std::fs::write(&src, format!("console of run {i}\n")).unwrap();
            let k = keep_console(&state, &src, &format!("1-{i:02}"));
            // Distinct modification times, so that pruning is ordered.
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&k)
                .unwrap()
                .set_modified(t)
                .unwrap();
            kept.push(k);
        }
        let last = std::fs::read_to_string(tmp.join("last-failed-console.log")).unwrap();
        assert_eq!(last, format!("console of run {}\n", KEPT_CONSOLES + 2));
        assert_eq!(
            std::fs::read_to_string(&kept[1]).ok(),
            None,
            "the oldest logs are pruned"
        );
        let newest = kept.last().unwrap();
        assert!(newest.starts_with(tmp.join("failed-consoles")));
        assert_eq!(
            std::fs::read_to_string(&kept[3]).unwrap(),
            "console of run 3\n"
        );
        let left = std::fs::read_dir(tmp.join("failed-consoles"))
            .unwrap()
            .count();
        assert_eq!(left, KEPT_CONSOLES);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    /// `vmshare run --vmm firecracker` reports what the KVM test guest
    /// found without booting one: nothing before it ran, its reason after.
    #[test]
    fn kvm_verdict_is_read_back_without_probing() {
        let tmp = std::env::temp_dir().join(format!("vmshare-kvm-verdict-{}", std::process::id()));
        let state = StateDir::at(&tmp).unwrap();
        assert_eq!(recorded_kvm_verdict(&state), None);
        std::fs::write(
            kvm_verdict_path(&state),
            "broken: a KVM test guest failed (x)",
        )
        .unwrap();
        assert_eq!(
            recorded_kvm_verdict(&state),
            Some(Accel::Tcg {
                reason: "a KVM test guest failed (x)".into()
            })
        );
        std::fs::write(kvm_verdict_path(&state), "ok").unwrap();
        assert_eq!(recorded_kvm_verdict(&state), Some(Accel::Kvm));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
