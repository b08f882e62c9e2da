//! The guest init: the static `vmshare` binary as PID 1 of a microVM.
//!
//! It does, in order: mount the kernel filesystems, load the modules the
//! host listed, bring up the network, enter the `--rootfs` root filesystem
//! if there is one, mount the volumes, run CMD (on a pty with `-t`),
//! forward its exit status, and power off. Everything it needs comes from
//! two JSON files the host packs into the initramfs
//! ([`vmshare_plan::guest`] and [`protocol::ConsoleSpec`]), so a guest
//! image needs no tools of its own: no `mount.nfs`, libtirpc,
//! `/etc/netconfig` or `/etc/services`.
//!
//! It never panics on purpose and never returns: every failure becomes an
//! `error` line on the control port and an exit status, then a power-off,
//! because a PID 1 that exits panics the kernel and hides the reason.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod mounts;
mod net;
mod ports;
mod process;
pub mod protocol;
mod rootfs;
mod sys;
mod tty;

use std::process::ExitCode;
use std::time::Instant;

use protocol::{ConsoleSpec, Message};
use vmshare_plan::guest::{GuestSpec, GUEST_SPEC_PATH};

/// Exit status when init itself failed before or around CMD (docker uses
/// 125 for "the runtime failed").
pub const EXIT_INIT_FAILED: i32 = 125;
/// Exit status when CMD exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit status when CMD is not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Error of the guest init. Each message names the thing that failed so the
/// user can act on it from the host.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A system call needed to set up the guest failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spec in the initramfs is missing or unreadable.
    #[error("reading {path}: {reason} (was this initramfs built by vmshare?)")]
    Spec {
        /// Which file.
        path: &'static str,
        /// Why it could not be used.
        reason: String,
    },
    /// A volume could not be mounted.
    #[error("{0}")]
    Mount(String),
    /// CMD could not be started.
    #[error("{message}")]
    Exec {
        /// What went wrong, with the command name.
        message: String,
        /// The docker-style exit status to report.
        status: i32,
    },
}

impl InitError {
    fn sys(what: impl Into<String>, source: std::io::Error) -> Self {
        InitError::Sys {
            what: what.into(),
            source,
        }
    }

    fn status(&self) -> i32 {
        match self {
            InitError::Exec { status, .. } => *status,
            _ => EXIT_INIT_FAILED,
        }
    }
}

/// Runs as PID 1: sets up the guest, runs CMD, powers off. Returns only
/// when not PID 1 (it refuses to reboot a host by accident).
pub fn main() -> ExitCode {
    if !rustix::process::getpid().is_init() {
        eprintln!("vmshare init: runs only as PID 1 inside a vmshare guest");
        return ExitCode::from(2);
    }
    let mut init = Init {
        start: Instant::now(),
        control: None,
        verbose: false,
        power_off: false,
    };
    let status = match init.run() {
        Ok(status) => status,
        Err(e) => {
            init.send(Message::Error(e.to_string()));
            e.status()
        }
    };
    init.finish(status)
}

/// State shared by the steps: where to report to.
struct Init {
    start: Instant,
    control: Option<ports::Control>,
    verbose: bool,
    /// The spec's `power_off`: how to end the VM.
    power_off: bool,
}

impl Init {
    fn run(&mut self) -> Result<i32, InitError> {
        sys::mount_kernel_filesystems()?;
        let spec: GuestSpec = read_json(GUEST_SPEC_PATH)?;
        let console: ConsoleSpec = read_json(protocol::CONSOLE_SPEC_PATH)?;
        self.verbose = spec.verbose;
        self.power_off = spec.power_off;
        // virtio_console must be loaded before the ports can be found; the
        // rest of the modules follow once errors can be reported.
        sys::load_modules(&spec.modules)?;
        let stdio = if console.serial {
            self.event("modules loaded; CMD is on the console");
            ports::Stdio::console()?
        } else {
            let ports = ports::Ports::open(&console)?;
            self.control = Some(ports.control);
            self.event("modules loaded, ports open");
            ports.stdio
        };
        self.set_clock();
        if !spec.hostname.is_empty() {
            sys::set_hostname(&spec.hostname)?;
        }
        net::loopback_up()?;
        if let Some(network) = &spec.network {
            net::configure(network)?;
            self.event(&format!(
                "network {} {}",
                network.interface, network.address
            ));
        }
        if let Some(rootfs) = &spec.rootfs {
            rootfs::enter(rootfs)?;
            self.event(&format!(
                "root filesystem {} ({}) with a tmpfs upper layer",
                rootfs.lower.source, rootfs.lower.fstype
            ));
        }
        net::write_name_files(&spec.hostname, spec.network.as_ref())?;
        if spec.rootfs.is_none() {
            // The initramfs's root comes up 1777, so any `-u` user could
            // create files in `/`; a container's root is 0755.
            rustix::fs::chmod("/", rustix::fs::Mode::from_raw_mode(0o755))
                .map_err(|e| InitError::sys("chmod /".to_string(), e.into()))?;
        }
        for m in &spec.mounts {
            let took = mounts::mount(m)?;
            self.event(&format!(
                "mounted {} on {} ({} ms)",
                m.source,
                m.target,
                took.as_millis()
            ));
        }
        net::cover_name_files(&spec.mounts, &spec.hostname, spec.network.as_ref())?;
        let control = self.control.as_ref().and_then(|c| c.try_clone());
        let (child, mut terminal) = start(&spec, stdio)?;
        self.send(Message::Started);
        self.event(&format!("started {:?}", spec.process.args));
        let window = terminal.as_mut().and_then(tty::Forwarder::take_window);
        let status = process::wait(child, control, window)?;
        if let Some(t) = terminal {
            // What CMD left holds the terminal open; once it is gone the
            // terminal's last output can be drained to the host.
            process::kill_all();
            t.finish();
        }
        self.event(&format!("command exited with {status}"));
        Ok(status)
    }

    /// Sets the guest's clock to the host's, as the NFS server stamps
    /// files with the host's time. The kernel started from the emulated
    /// RTC, which has whole seconds: up to a second behind, so a file the
    /// guest had just written was "in the future" to make ("Clock skew
    /// detected"). The host's time is taken as of the end of the round
    /// trip, so the guest is at most that round trip ahead, never behind.
    fn set_clock(&mut self) {
        /// The host answers at once; under TCG a round trip is a few ms.
        const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
        let Some(control) = self.control.as_mut() else {
            return;
        };
        let Some((Message::Clock { secs, nanos }, took)) = control.ask_clock(WAIT) else {
            self.event("the host gave no time; the clock is the RTC's");
            return;
        };
        let host = rustix::time::Timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos),
        };
        let Some(now) = rustix::time::Timespec::try_from(took)
            .ok()
            .and_then(|t| host.checked_add(t))
        else {
            self.event("the host's time is out of range; the clock is the RTC's");
            return;
        };
        let text = match rustix::time::clock_settime(rustix::time::ClockId::Realtime, now) {
            Ok(()) => format!(
                "clock set from the host's (round trip {} us)",
                took.as_micros()
            ),
            Err(e) => format!("setting the clock from the host's: {e}"),
        };
        self.event(&text);
    }

    /// Timeline entries go to the host always (it shows them with
    /// `--verbose`, and keeps them for error reports); with `verbose` they
    /// also go to the kernel log.
    fn event(&mut self, text: &str) {
        let ms = self.start.elapsed().as_millis();
        if self.verbose {
            sys::kmsg(&format!("<5>vmshare-init: +{ms}ms {text}"));
        }
        self.send(Message::Event(format!("guest +{ms}ms: {text}")));
    }

    fn send(&mut self, message: Message) {
        if let Message::Error(text) = &message {
            sys::kmsg(&format!("<3>vmshare-init: {text}"));
        }
        match (&mut self.control, &message) {
            (Some(c), _) => c.send(&message),
            // Without a control port the console is the only witness: an
            // error is in the kernel log already, the exit status is said
            // on the console, and events were logged if asked for.
            (None, Message::Exit(status)) => {
                sys::console_line(&format!("vmshare init: exit status {status}"))
            }
            (None, _) => {}
        }
    }

    fn finish(mut self, status: i32) -> ! {
        process::kill_all();
        mounts::unmount_all();
        rustix::fs::sync();
        self.event("synced, powering off");
        self.send(Message::Exit(status));
        sys::power_off(self.power_off)
    }
}

/// Starts CMD on the ports, or with `-t` on a pty whose output is copied
/// to the stdout port (and the stdin port into it).
fn start(
    spec: &GuestSpec,
    stdio: ports::Stdio,
) -> Result<(i32, Option<tty::Forwarder>), InitError> {
    if !spec.process.tty {
        return Ok((process::spawn(spec, stdio)?, None));
    }
    let pty = tty::Pty::open(spec.process.console_size)?;
    let child = process::spawn(spec, pty.child_stdio()?)?;
    Ok((child, Some(pty.forward(stdio.stdin, stdio.stdout))))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &'static str) -> Result<T, InitError> {
    let text = std::fs::read(path).map_err(|e| InitError::Spec {
        path,
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&text).map_err(|e| InitError::Spec {
        path,
        reason: e.to_string(),
    })
}
