//! Running CMD: identity, environment, working directory, standard streams;
//! then reaping (PID 1 inherits every orphan) and forwarding signals.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio as StdStdio};
use std::time::{Duration, Instant};

use vmshare_plan::guest::GuestSpec;

use crate::ports::Stdio;
use crate::protocol::Message;
use crate::tty::Window;
use crate::{InitError, EXIT_INIT_FAILED, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts CMD. Returns its pid.
pub(crate) fn spawn(spec: &GuestSpec, stdio: Stdio) -> Result<i32, InitError> {
    let p = &spec.process;
    let Some((program, args)) = p.args.split_first() else {
        return Err(InitError::Exec {
            message: "no command given".into(),
            status: EXIT_INIT_FAILED,
        });
    };
    let cwd = p.cwd.clone().unwrap_or_else(|| "/".into());
    // docker creates a missing working directory; so do we (as root, before
    // the identity changes, like docker).
    // A file there made that "File exists"; docker says ENOTDIR.
    if std::fs::metadata(&cwd).is_ok_and(|m| !m.is_dir()) {
        return Err(InitError::sys(
            format!("working directory {cwd}"),
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    std::fs::create_dir_all(&cwd)
        .map_err(|e| InitError::sys(format!("creating working directory {cwd}"), e))?;

    let mut command = Command::new(program);
    command.args(args).env_clear().current_dir(&cwd);
    for (key, value) in environment(spec) {
        command.env(key, value);
    }
    command.stdin(match stdio.stdin {
        Some(f) => StdStdio::from(f),
        None => StdStdio::null(),
    });
    command
        .stdout(StdStdio::from(stdio.stdout))
        .stderr(StdStdio::from(stdio.stderr));

    let (uid, gid, tty) = (p.uid, p.gid, p.tty);
    let groups: Vec<libc::gid_t> = p.additional_gids.clone();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (setsid, ioctl, setgroups,
    // setgid, setuid) on data captured by value; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // A session of its own, so that signals meant for CMD's
            // process group never reach init. With -t, stdin is the pty's
            // terminal end: the session takes it as its controlling
            // terminal, so that Ctrl-C and hang-ups reach CMD.
            if libc::setsid() < 0
                || (tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0)
                || libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(gid) < 0
                || libc::setuid(uid) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => i32::try_from(child.id()).map_err(|_| InitError::Exec {
            message: "child pid out of range".into(),
            status: EXIT_INIT_FAILED,
        }),
        Err(e) => {
            let status = match e.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                std::io::ErrorKind::PermissionDenied => EXIT_NOT_EXECUTABLE,
                _ => EXIT_INIT_FAILED,
            };
            Err(InitError::Exec {
                message: format!("{program}: {e}"),
                status,
            })
        }
    }
}

/// docker's environment: what the user gave, plus PATH, HOSTNAME and HOME
/// when the user did not set them.
fn environment(spec: &GuestSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .process
        .env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let home = if spec.process.uid == 0 { "/root" } else { "/" };
    for (key, value) in [
        ("PATH", DEFAULT_PATH),
        ("HOSTNAME", spec.hostname.as_str()),
        ("HOME", home),
    ] {
        if !value.is_empty() && !env.iter().any(|(k, _)| k == key) {
            env.push((key.to_string(), value.to_string()));
        }
    }
    env
}

/// Reaps every child until CMD exits; meanwhile does what the host asks
/// on the control port: signals for CMD, and with `-t` (`window`) the
/// terminal's size. Returns CMD's status docker style.
pub(crate) fn wait(
    child: i32,
    control: Option<File>,
    window: Option<Window>,
) -> Result<i32, InitError> {
    if let Some(control) = control {
        std::thread::spawn(move || obey_host(child, control, window));
    }
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(InitError::sys("waiting for the command", e));
        }
        if pid == child {
            if libc::WIFEXITED(status) {
                return Ok(libc::WEXITSTATUS(status));
            }
            if libc::WIFSIGNALED(status) {
                return Ok(128 + libc::WTERMSIG(status));
            }
        }
    }
}

fn obey_host(child: i32, control: File, window: Option<Window>) {
    for line in BufReader::new(control).lines() {
        let Ok(line) = line else { return };
        match Message::decode(&line) {
            Some(Message::Signal(sig)) => {
                // SAFETY: kill has no memory effects; a stale pid only fails.
                unsafe { libc::kill(child, sig) };
            }
            Some(Message::Resize(size)) => {
                if let Some(w) = &window {
                    w.resize(size);
                }
            }
            _ => {}
        }
    }
}

/// Ends whatever CMD left running (docker does the same when the main
/// process exits) and reaps it, giving up after a few seconds so a process
/// stuck in the kernel cannot keep the VM up.
pub(crate) fn kill_all() {
    // SAFETY: kill(-1) from PID 1 signals every other process; no memory
    // is involved.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`, a valid local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: nothing left.
        }
        if pid == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
