//! The host end of the guest's virtio-serial ports: a Unix socket per port
//! that QEMU connects to at start-up, and a thread per stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmshare_init::protocol::Message;

use crate::VmmError;

/// Where one of CMD's output streams goes on the host.
#[derive(Debug, Clone, Default)]
pub enum Sink {
    /// Kept in memory and returned in [`GuestOutput`](crate::GuestOutput).
    #[default]
    Capture,
    /// Written through to this process's own stdout or stderr as it comes.
    Inherit,
}

/// What CMD reads on stdin.
#[derive(Debug, Clone, Default)]
pub enum StdinSource {
    /// `/dev/null`, as `docker run` without `-i`.
    #[default]
    Null,
    /// This process's stdin, streamed (`-i`).
    Inherit,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
}

/// Listening sockets for the ports, created before QEMU starts.
pub(crate) struct Listeners {
    ports: Vec<(String, PathBuf, UnixListener)>,
}

impl Listeners {
    pub(crate) fn bind(dir: &Path, names: &[&str]) -> Result<Listeners, VmmError> {
        let mut ports = Vec::new();
        for name in names {
            let path = dir.join(format!("{name}.sock"));
            let l = UnixListener::bind(&path)
                .map_err(|e| VmmError::io(format!("listening on {}", path.display()), e))?;
            l.set_nonblocking(true)
                .map_err(|e| VmmError::io("non-blocking listener", e))?;
            ports.push((name.to_string(), path, l));
        }
        Ok(Listeners { ports })
    }

    /// Port names and socket paths, for QEMU's command line.
    pub(crate) fn qemu_ports(&self) -> Vec<(String, PathBuf)> {
        self.ports
            .iter()
            .map(|(n, p, _)| (n.clone(), p.clone()))
            .collect()
    }

    /// Waits for QEMU to connect every port. QEMU connects while it starts,
    /// before the guest runs, so this fails fast when QEMU itself fails.
    pub(crate) fn accept(
        self,
        qemu: &mut Child,
        timeout: Duration,
    ) -> Result<Vec<(String, UnixStream)>, AcceptError> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for (name, _, l) in self.ports {
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false)
                            .map_err(|e| AcceptError::Io(VmmError::io("socket mode", e)))?;
                        out.push((name, s));
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return Err(AcceptError::Io(VmmError::io(
                            format!("accepting port {name}"),
                            e,
                        )))
                    }
                }
                if let Ok(Some(_)) = qemu.try_wait() {
                    return Err(AcceptError::QemuExited);
                }
                if Instant::now() > deadline {
                    return Err(AcceptError::Timeout);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(out)
    }
}

/// Why the ports did not get connected.
pub(crate) enum AcceptError {
    Io(VmmError),
    QemuExited,
    Timeout,
}

/// Copies a guest output stream to its sink until QEMU closes it. If the
/// sink's reader has gone (EPIPE), `broken` is set and the rest is read
/// and dropped, so that the guest is never blocked on a full port.
pub(crate) fn pump_output(
    mut from: UnixStream,
    sink: Sink,
    stderr: bool,
    captured: Arc<Mutex<Vec<u8>>>,
    broken: Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut gone = false;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let written = match sink {
                _ if gone => Ok(()),
                Sink::Capture => {
                    if let Ok(mut c) = captured.lock() {
                        c.extend_from_slice(&buf[..n]);
                    }
                    Ok(())
                }
                Sink::Inherit if stderr => {
                    let mut e = std::io::stderr().lock();
                    e.write_all(&buf[..n]).and_then(|()| e.flush())
                }
                Sink::Inherit => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&buf[..n]).and_then(|()| o.flush())
                }
            };
            if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
                gone = true;
                broken.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
}

/// Feeds CMD's stdin once `go` fires; closing the socket is the guest's
/// end of file. Waiting matters: the guest kernel discards whatever
/// reaches a virtio-serial port before the guest opens it, so input must
/// not flow before init has opened the port (it says so by reporting that
/// CMD started).
pub(crate) fn pump_stdin(
    mut to: UnixStream,
    source: StdinSource,
    go: std::sync::mpsc::Receiver<()>,
) {
    std::thread::spawn(move || {
        if go.recv().is_err() {
            return;
        }
        match source {
            StdinSource::Null => {}
            StdinSource::Bytes(b) => {
                let _ = to.write_all(&b);
            }
            StdinSource::Inherit => {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
        // Closed now, the socket would hang up on QEMU, whose chardev then
        // drops what it has not yet passed to the guest (which takes it
        // only as fast as CMD reads): `wc -c` of 100,000 bytes counted
        // 4,096. Shut for writing, QEMU reads the rest and then the end of
        // file; it closes its end after that (or when the VM stops), and
        // this waits for that before letting go.
        let mut sink = [0u8; 64];
        while matches!(to.read(&mut sink), Ok(n) if n > 0) {}
    });
}

/// Turns control-port lines into messages for the main loop.
pub(crate) fn pump_control(from: UnixStream, tx: Sender<Message>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            if let Some(m) = Message::decode(&line) {
                if tx.send(m).is_err() {
                    return;
                }
            }
        }
    })
}
