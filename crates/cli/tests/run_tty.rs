//! `vmshare run -t` and `-i -t`: the command on a guest pseudo-terminal;
//! with `-i -t` on a host terminal (a pty the test owns), raw mode while
//! the VM runs and the terminal's settings back afterwards, whichever way
//! the run ends, and the terminal's resizes passed on to the command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{assert_exit, assert_refused, text};
use rustix::pty::OpenptFlags;
use rustix::termios::{LocalModes, Winsize};

/// With -t, stdout is a terminal in the guest, `tty` names a /dev/pts
/// device, TERM comes from the host, and stderr comes through the
/// terminal (so on stdout), as with docker. Without -t, none of that.
#[test]
fn t_gives_the_command_a_terminal() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let script = "test -t 1 && echo tty-yes; tty; echo \"TERM=$TERM\"; echo to-stderr >&2";
    let out = h
        .vmshare_cmd()
        .env("TERM", "vt220")
        .args(["run", "-t", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert_eq!(lines.len(), 4, "{stdout:?}");
    assert_eq!(lines[0], "tty-yes");
    assert!(lines[1].starts_with("/dev/pts/"), "{stdout:?}");
    assert_eq!(&lines[2..], ["TERM=vt220", "to-stderr"]);
    assert_eq!(text(&out.stderr), "");

    let out = h.vmshare(&["run", "--", "sh", "-c", "test -t 1 && echo tty-yes; tty"]);
    assert_exit(&out, 1);
    assert_eq!(text(&out.stdout), "not a tty\n");
}

/// -i -t needs a terminal on stdin, as with docker; refused before boot.
#[test]
fn i_t_without_a_terminal_is_refused() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.vmshare(&["run", "-i", "-t", "--", "true"]);
    assert_refused(&out, "the input device is not a TTY");
}

/// On a host terminal, -i -t: the guest's pty has the host's size, keys
/// pass through raw (the guest echoes, Ctrl-C is a byte the guest's line
/// discipline turns into SIGINT), and the terminal is restored after the
/// run ends by Ctrl-C, by a SIGTERM to vmshare, and by an error.
#[test]
fn i_t_on_a_terminal_is_raw_and_restored() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let script = "echo ready; stty size; read line; echo \"got:$line\"; sleep 100";

    // Ctrl-C typed at the terminal.
    let mut t = Terminal::open(33, 101);
    let child = t.spawn(&h, &["run", "-i", "-t", "--", "sh", "-c", script]);
    t.expect("ready");
    assert!(!t.canonical(), "the host terminal is not in raw mode");
    t.type_keys(b"hello\r");
    let seen = t.expect("got:hello");
    assert!(seen.contains("33 101"), "{seen:?}");
    assert_eq!(seen.matches("hello").count(), 2, "echoed once: {seen:?}");
    t.type_keys(b"\x03");
    let out = t.wait(child);
    assert_exit(&out, 130);
    assert!(t.canonical(), "terminal left in raw mode after Ctrl-C");

    // SIGTERM to vmshare: forwarded, the run ends, the terminal is back.
    let mut t = Terminal::open(24, 80);
    let child = t.spawn(&h, &["run", "-i", "-t", "--", "sh", "-c", script]);
    t.expect("ready");
    assert!(!t.canonical());
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = t.wait(child);
    assert_exit(&out, 143);
    assert!(t.canonical(), "terminal left in raw mode after SIGTERM");

    // An error while the terminal is raw: the kernel is looked for when
    // the VM is prepared (TCG forced, so no KVM test guest is tried with
    // a kernel that does not exist).
    let t = Terminal::open(24, 80);
    let mut cmd = t.command(&h, &["run", "-i", "-t", "--kernel", "/no/such/vmlinuz"]);
    let child = cmd
        .args(["--", "true"])
        .env("VMSHARE_ACCEL", "tcg")
        .spawn()
        .unwrap();
    let out = common::wait_with_watchdog(child, Duration::from_secs(300));
    assert_refused(&out, "/no/such/vmlinuz");
    assert!(t.canonical(), "terminal left in raw mode after an error");
}

/// -i -t on a host terminal resized during the run: the kernel sends
/// SIGWINCH to vmshare (the terminal's foreground process), vmshare passes
/// the new size to the guest, whose pty takes it, so the command gets
/// SIGWINCH and sees the new size; every resize, not only the first.
#[test]
fn resizing_the_terminal_reaches_the_command() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let script = "trap 'echo \"size:$(stty size)\"' WINCH; stty size; echo ready; \
                  while :; do sleep 0.2; done";
    let mut t = Terminal::open(24, 80);
    let child = t.spawn(&h, &["run", "-i", "-t", "--", "sh", "-c", script]);
    let seen = t.expect("ready");
    assert!(seen.contains("24 80"), "{seen:?}");
    // The guest is up: the new size has only to cross the control port.
    let soon = Duration::from_secs(60);
    t.resize(50, 132);
    t.expect_within("size:50 132", soon);
    t.resize(30, 90);
    t.expect_within("size:30 90", soon);
    t.type_keys(b"\x03");
    let out = t.wait(child);
    assert_exit(&out, 130);
    assert!(t.canonical(), "terminal left in raw mode");
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A pty standing in for the user's terminal: vmshare gets the terminal
/// end as stdin, stdout and controlling terminal (as under a shell, so
/// the kernel signals it on a resize); the test types into and reads from
/// the master.
struct Terminal {
    master: File,
    terminal: File,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
    /// vmshare processes started with [`spawn`](Self::spawn) and not yet
    /// waited for: killed if the test fails meanwhile.
    spawned: Vec<u32>,
}

impl Terminal {
    fn open(rows: u16, cols: u16) -> Terminal {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let terminal = File::from(rustix::pty::ioctl_tiocgptpeer(&master, flags).unwrap());
        rustix::termios::tcsetwinsize(&terminal, winsize(rows, cols)).unwrap();
        let master = File::from(master);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Terminal {
            master,
            terminal,
            output,
            seen: String::new(),
            spawned: Vec::new(),
        }
    }

    /// `vmshare ARGS` on this terminal (stderr piped), in a session of
    /// its own whose controlling terminal this is.
    fn command(&self, h: &common::Harness, args: &[&str]) -> Command {
        let mut c = h.vmshare_cmd();
        c.args(args)
            .stdin(self.terminal.try_clone().unwrap())
            .stdout(self.terminal.try_clone().unwrap())
            .stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec and only makes
        // async-signal-safe system calls (setsid, ioctl); stdin is the
        // terminal by then.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    fn spawn(&mut self, h: &common::Harness, args: &[&str]) -> Child {
        let child = self.command(h, args).spawn().unwrap();
        self.spawned.push(child.id());
        child
    }

    /// Waits for a process from [`spawn`](Self::spawn) (killed after 300 s).
    fn wait(&mut self, child: Child) -> std::process::Output {
        let pid = child.id();
        let out = common::wait_with_watchdog(child, Duration::from_secs(300));
        self.spawned.retain(|p| *p != pid);
        out
    }

    /// Reads until `needle` has been printed (the guest boots under TCG
    /// meanwhile); returns all output so far.
    fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, Duration::from_secs(240))
    }

    fn expect_within(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("{needle:?} never came; the terminal showed {:?}", self.seen),
            }
        }
        self.seen.clone()
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Resizes the terminal as a terminal emulator does, on the master:
    /// the kernel sends SIGWINCH to the terminal's foreground process group.
    fn resize(&self, rows: u16, cols: u16) {
        rustix::termios::tcsetwinsize(&self.master, winsize(rows, cols)).unwrap();
    }

    /// Whether the terminal is in its normal (canonical, echoing) mode.
    fn canonical(&self) -> bool {
        let t = rustix::termios::tcgetattr(&self.terminal).unwrap();
        t.local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO)
    }
}

impl Drop for Terminal {
    /// A failed expectation leaves vmshare waiting on a command that loops
    /// or sleeps; SIGKILL ends it (and its QEMU, by PDEATHSIG) rather than
    /// leave it behind the test binary.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for pid in &self.spawned {
            let pid = rustix::process::Pid::from_raw(i32::try_from(*pid).unwrap()).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
