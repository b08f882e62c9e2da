//! `-t`: CMD on a pseudo-terminal.
//!
//! The guest has no terminal of its own (its console is a serial log), so
//! init makes one: a pty whose slave end is CMD's stdin, stdout, stderr
//! and controlling terminal (CMD starts a session and takes it with
//! `TIOCSCTTY`, see [`crate::process`]), sized as the host's terminal was
//! at start and resized when the host's is (a `resize` on the control
//! port, see [`Window`]). Init copies the master's output to the stdout
//! port, and the stdin port (with `-i`) into the master, where the pty's
//! line discipline does what a terminal does: echo, line editing, Ctrl-C to
//! SIGINT. Like a docker container with `-t`, CMD's stderr goes to the
//! terminal too, hence to the host's stdout.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::Duration;

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use vmshare_plan::guest::ConsoleSize;

use crate::ports::Stdio;
use crate::InitError;

/// How long init waits for CMD's last output after CMD and everything it
/// left are gone (the master then reads what is buffered, then EIO).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A pseudo-terminal pair, before CMD starts.
#[derive(Debug)]
pub(crate) struct Pty {
    master: File,
    slave: File,
}

impl Pty {
    /// Opens a pty (in the current root's `/dev/pts`, so `tty` in CMD names
    /// a device that exists there) of `size`, when given.
    pub(crate) fn open(size: Option<ConsoleSize>) -> Result<Pty, InitError> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let sys = |what: &str| {
            let what = what.to_string();
            move |e: rustix::io::Errno| InitError::sys(format!("-t: {what}"), e.into())
        };
        let master = rustix::pty::openpt(flags).map_err(sys("opening /dev/ptmx"))?;
        rustix::pty::unlockpt(&master).map_err(sys("unlocking the pty"))?;
        let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)
            .map_err(sys("opening the pty's terminal end"))?;
        if let Some(s) = size {
            set_size(&master, s).map_err(sys("setting the window size"))?;
        }
        Ok(Pty {
            master: File::from(master),
            slave: File::from(slave),
        })
    }

    /// CMD's standard streams: the terminal end, three times.
    pub(crate) fn child_stdio(&self) -> Result<Stdio, InitError> {
        let copy = || {
            self.slave
                .try_clone()
                .map_err(|e| InitError::sys("-t: duplicating the pty", e))
        };
        Ok(Stdio {
            stdin: Some(copy()?),
            stdout: copy()?,
            stderr: copy()?,
        })
    }

    /// Starts copying between the pty and the ports, once CMD has its
    /// copies of the terminal end. Init's own copy is closed here, so that
    /// the master reads end of file (EIO) when CMD and its children are
    /// gone.
    pub(crate) fn forward(self, stdin: Option<File>, stdout: File) -> Forwarder {
        let Pty { master, slave } = self;
        drop(slave);
        let window = master.try_clone().ok().map(|master| Window { master });
        if let (Some(mut from), Ok(mut to)) = (stdin, master.try_clone()) {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
            });
        }
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            copy_output(master, stdout);
            let _ = done.send(());
        });
        Forwarder { finished, window }
    }
}

/// The output copy running.
#[derive(Debug)]
pub(crate) struct Forwarder {
    finished: mpsc::Receiver<()>,
    window: Option<Window>,
}

impl Forwarder {
    /// The handle that resizes the terminal, once (`None` if the master
    /// could not be duplicated: CMD then keeps its first size).
    pub(crate) fn take_window(&mut self) -> Option<Window> {
        self.window.take()
    }

    /// Waits until the terminal's output has reached the stdout port. Call
    /// after every process holding the terminal has been killed.
    pub(crate) fn finish(self) {
        let _ = self.finished.recv_timeout(DRAIN_TIMEOUT);
    }
}

/// The pty's size, changed on the master as a terminal emulator does, so
/// that the kernel sends SIGWINCH to the terminal's foreground process
/// group (only when the size really changes).
#[derive(Debug)]
pub(crate) struct Window {
    master: File,
}

impl Window {
    pub(crate) fn resize(&self, size: ConsoleSize) {
        // A failure cannot be fixed from here and must not end the run:
        // CMD keeps the size it had.
        let _ = set_size(&self.master, size);
    }
}

fn set_size(master: impl AsFd, size: ConsoleSize) -> rustix::io::Result<()> {
    let ws = Winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, ws)
}

/// Copies until the master says no terminal end is open any more (EIO).
fn copy_output(mut master: File, mut to: File) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
