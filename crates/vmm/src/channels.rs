//! The host end of the guest's virtio-serial ports: a Unix socket per port
//! that QEMU connects to at start-up, and a thread per stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::SyncSender;
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

/// The longest control line taken. The guest writes these lines, and a
/// guest is not trusted: one that wrote without a newline grew this
/// process without bound (`BufRead::lines`). Init's own lines are a few
/// hundred bytes.
pub(crate) const MAX_CONTROL_LINE: usize = 8 * 1024;

/// Turns control-port lines into messages for the main loop. A line over
/// [`MAX_CONTROL_LINE`] is read to its end and dropped, and one that is
/// not UTF-8 is read with replacement characters (it stopped the pump,
/// and with it the exit status).
pub(crate) fn pump_control(from: UnixStream, tx: SyncSender<Message>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            match read_line_bounded(&mut reader, &mut line, MAX_CONTROL_LINE) {
                Ok(Line::Whole) => {}
                Ok(Line::TooLong) => continue,
                Ok(Line::End) | Err(_) => return,
            }
            if let Some(m) = Message::decode(&String::from_utf8_lossy(&line)) {
                if tx.send(m).is_err() {
                    return;
                }
            }
        }
    })
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line, in the buffer without its newline (the last one may have
    /// none).
    Whole,
    /// A line longer than the bound, read to its end and not kept.
    TooLong,
    /// The end of the stream.
    End,
}

/// Reads one line into `line` (cleared first), holding at most `max`
/// bytes of it whatever the peer sends.
pub(crate) fn read_line_bounded(
    r: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    line.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Whole,
            });
        }
        any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Whole });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<(Line, String)> {
        let mut r = std::io::BufReader::with_capacity(4, input);
        let mut line = Vec::new();
        let mut out = Vec::new();
        loop {
            let l = read_line_bounded(&mut r, &mut line, max).unwrap();
            if l == Line::End {
                return out;
            }
            out.push((l, String::from_utf8_lossy(&line).into_owned()));
        }
    }

    /// A line over the bound is dropped whole, read to its newline, and
    /// the next one is read as usual, however the reads split them.
    #[test]
    fn lines_are_bounded_and_the_stream_goes_on() {
        let got = lines(b"exit 3\nstarted\n", 8);
        assert_eq!(
            got,
            [
                (Line::Whole, "exit 3".into()),
                (Line::Whole, "started".into())
            ]
        );
        let got = lines(b"error 0123456789abcdef\nexit 1\nlast", 8);
        assert_eq!(
            got,
            [
                (Line::TooLong, String::new()),
                (Line::Whole, "exit 1".into()),
                (Line::Whole, "last".into())
            ]
        );
        let got = lines(b"12345678\n123456789", 8);
        assert_eq!(
            got,
            [
                (Line::Whole, "12345678".into()),
                (Line::TooLong, String::new())
            ]
        );
        assert!(lines(b"", 8).is_empty());
    }

    /// A guest that writes one line without end costs the bound, not the
    /// line: the buffer never holds more than `max` bytes.
    #[test]
    fn an_endless_line_is_held_to_the_bound() {
        let mut endless =
            std::io::Read::chain(std::io::repeat(b'x').take(10 << 20), &b"\nexit 0\n"[..]);
        let mut r = BufReader::new(&mut endless);
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut r, &mut line, MAX_CONTROL_LINE).unwrap(),
            Line::TooLong
        );
        assert!(
            line.capacity() <= 2 * MAX_CONTROL_LINE,
            "{}",
            line.capacity()
        );
        assert_eq!(
            read_line_bounded(&mut r, &mut line, MAX_CONTROL_LINE).unwrap(),
            Line::Whole
        );
        assert_eq!(line, b"exit 0");
    }
}
