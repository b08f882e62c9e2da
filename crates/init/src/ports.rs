//! Finding the host's virtio-serial ports by name. Without udev there are
//! no `/dev/virtio-ports/NAME` links; sysfs has the names and devtmpfs the
//! nodes, and ports show up a little after the driver loads.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::protocol::{self, ConsoleSpec, Message};
use crate::InitError;

/// How long to wait for the host's ports. Generous: under TCG on a busy
/// host the driver's work queue can lag by seconds.
const PORT_TIMEOUT: Duration = Duration::from_secs(30);

/// CMD's three standard streams.
#[derive(Debug)]
pub(crate) struct Stdio {
    pub(crate) stdin: Option<File>,
    pub(crate) stdout: File,
    pub(crate) stderr: File,
}

/// The control port.
#[derive(Debug)]
pub(crate) struct Control {
    file: File,
}

impl Control {
    pub(crate) fn send(&mut self, message: &Message) {
        // A write blocks until QEMU took the bytes, so once this returns
        // the host has them even if the VM stops right after.
        let _ = self.file.write_all(message.encode().as_bytes());
    }

    pub(crate) fn try_clone(&self) -> Option<File> {
        self.file.try_clone().ok()
    }

    /// Asks the host for its time and waits up to `wait` for the answer:
    /// the host's time and how long the round trip took. Reads byte by
    /// byte, so that nothing after the answer is taken from whoever reads
    /// the port next; other lines before it are dropped (the host sends
    /// nothing else before CMD starts).
    pub(crate) fn ask_clock(&mut self, wait: Duration) -> Option<(Message, Duration)> {
        use rustix::event::{poll, PollFd, PollFlags};
        use std::io::Read;
        let asked = Instant::now();
        self.send(&Message::ClockAsk);
        let mut line = Vec::new();
        loop {
            let left = wait.checked_sub(asked.elapsed())?;
            let timeout = rustix::time::Timespec::try_from(left).ok()?;
            let mut fds = [PollFd::new(&self.file, PollFlags::IN)];
            if poll(&mut fds, Some(&timeout)).ok()? == 0 {
                return None;
            }
            let mut byte = [0u8; 1];
            if self.file.read(&mut byte).ok()? == 0 {
                return None;
            }
            if byte[0] != b'\n' {
                // A line longer than any clock line is not one.
                if line.len() < 64 {
                    line.push(byte[0]);
                }
                continue;
            }
            let took = asked.elapsed();
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            if let Some(m @ Message::Clock { .. }) = Message::decode(&text) {
                return Some((m, took));
            }
        }
    }
}

impl Stdio {
    /// The kernel's console, for each of the three (a serial console, with
    /// [`ConsoleSpec::serial`]).
    pub(crate) fn console() -> Result<Stdio, InitError> {
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/dev/console")
                .map_err(|e| InitError::sys("opening /dev/console", e))
        };
        Ok(Stdio {
            stdin: Some(open(false)?),
            stdout: open(true)?,
            stderr: open(true)?,
        })
    }
}

#[derive(Debug)]
pub(crate) struct Ports {
    pub(crate) stdio: Stdio,
    pub(crate) control: Control,
}

impl Ports {
    pub(crate) fn open(console: &ConsoleSpec) -> Result<Ports, InitError> {
        let control = Control {
            file: open_port(protocol::PORT_CONTROL)?,
        };
        let stdin = if console.stdin {
            Some(open_port(protocol::PORT_STDIN)?)
        } else {
            None
        };
        let stdout = open_port(protocol::PORT_STDOUT)?;
        let stderr = open_port(protocol::PORT_STDERR)?;
        Ok(Ports {
            stdio: Stdio {
                stdin,
                stdout,
                stderr,
            },
            control,
        })
    }
}

fn open_port(name: &str) -> Result<File, InitError> {
    let deadline = Instant::now() + PORT_TIMEOUT;
    loop {
        if let Some(dev) = find_port(name) {
            // The node appears with the sysfs entry, but give devtmpfs a
            // chance if it lags.
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&dev)
            {
                Ok(f) => return Ok(f),
                Err(e) if Instant::now() > deadline => {
                    return Err(InitError::sys(format!("opening port {name} ({dev})"), e))
                }
                Err(_) => {}
            }
        }
        if Instant::now() > deadline {
            return Err(InitError::sys(
                format!("waiting for virtio-serial port {name} (is virtio_console loaded?)"),
                std::io::Error::from(std::io::ErrorKind::TimedOut),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn find_port(name: &str) -> Option<String> {
    let dir = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for entry in dir.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim_end() == name {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}
