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
