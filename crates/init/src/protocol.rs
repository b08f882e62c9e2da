//! The wire between the host (`vmshare run`, the test harness) and the guest
//! init, besides the [`GuestSpec`](vmshare_plan::GuestSpec).
//!
//! CMD's stdout and stderr each get their own virtio-serial port, so that
//! they stay apart and kernel messages (which go to the serial console)
//! never mix into them. A third port carries short text lines both ways:
//! init's timeline and errors and the exit status to the host, signals and
//! window sizes to pass on to CMD. An exit status on its own port cannot be
//! faked or garbled by whatever CMD prints, unlike a marker in the output.
//!
//! A line is a kind, a space and the kind's fields. Each side ignores a
//! kind it does not know (and fields after those it knows), so a message
//! is added without a version number: a peer that predates it drops it,
//! which must do no harm. `resize` came after the others that way.

use serde::{Deserialize, Serialize};
use vmshare_plan::guest::ConsoleSize;

/// Where the host puts the [`ConsoleSpec`] in the guest's initramfs.
pub const CONSOLE_SPEC_PATH: &str = "/vmshare/console.json";

/// virtio-serial port name of CMD's stdout.
pub const PORT_STDOUT: &str = "vmshare.stdout";
/// virtio-serial port name of CMD's stderr.
pub const PORT_STDERR: &str = "vmshare.stderr";
/// virtio-serial port name of CMD's stdin (present with `-i` only).
pub const PORT_STDIN: &str = "vmshare.stdin";
/// virtio-serial port name of the control channel.
pub const PORT_CONTROL: &str = "vmshare.control";

/// Which ports the host wired up; the guest waits for exactly these, since
/// virtio-serial announces ports one by one and never says "that was all".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConsoleSpec {
    /// A [`PORT_STDIN`] port exists and is CMD's stdin; otherwise CMD reads
    /// `/dev/null`, as under `docker run` without `-i`.
    #[serde(default)]
    pub stdin: bool,
    /// There are no ports and no host at their other end: CMD's stdin,
    /// stdout and stderr are the kernel's console (`/dev/console`, the
    /// serial port), init's errors go to the kernel log and its exit
    /// status to the console. For guests that vmshare does not start
    /// (`vmshare plan --write-initrd`): Firecracker has no virtio-serial
    /// device, and what `vmshare plan` renders for the other VMMs has
    /// none. Nobody answers there, so the clock stays the RTC's and no
    /// signals come to forward. (Waiting for ports that never came, init
    /// failed after 30 s and mounted nothing.)
    #[serde(default)]
    pub serial: bool,
}

/// One line on the control port, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Guest to host: a step of init's timeline (sent when the spec asks
    /// for `verbose`).
    Event(String),
    /// Guest to host: CMD has been started (the guest booted and every
    /// volume is mounted). Ends the host's boot timeout.
    Started,
    /// Guest to host: init could not do what the spec asked; CMD did not
    /// run (or its result is unusable). The text is meant for the user.
    Error(String),
    /// Guest to host: CMD's exit status, docker style (128+N for signal N).
    /// The last message init sends.
    Exit(i32),
    /// Host to guest: deliver this signal to CMD.
    Signal(i32),
    /// Host to guest: the host terminal now has this size; with `-t`, give
    /// it to CMD's pty (whose foreground process group then gets SIGWINCH).
    /// An init that predates it ignores it.
    Resize(ConsoleSize),
    /// Guest to host: what time is it? Sent once at boot; see
    /// [`Message::Clock`].
    ClockAsk,
    /// Host to guest: the host's wall-clock time (`CLOCK_REALTIME`) when
    /// it read the [`Message::ClockAsk`]. The guest's own clock starts
    /// from the emulated RTC, whole seconds: up to a second behind the
    /// host, whose time the NFS server stamps files with, so a file just
    /// written looked "in the future" to make. A host that predates it
    /// does not answer, and the guest keeps the RTC's time.
    Clock {
        /// Seconds since the epoch.
        secs: i64,
        /// Nanoseconds, below 10^9.
        nanos: u32,
    },
}

impl Message {
    /// The line to send, newline included. Newlines inside a text become
    /// spaces so that one message is always one line.
    pub fn encode(&self) -> String {
        let flat = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Message::Event(t) => format!("event {}\n", flat(t)),
            Message::Error(t) => format!("error {}\n", flat(t)),
            Message::Started => "started\n".to_string(),
            Message::Exit(c) => format!("exit {c}\n"),
            Message::Signal(s) => format!("signal {s}\n"),
            Message::Resize(size) => format!("resize {} {}\n", size.height, size.width),
            Message::ClockAsk => "clock\n".to_string(),
            Message::Clock { secs, nanos } => format!("clock {secs} {nanos}\n"),
        }
    }

    /// Parses one line (without its newline); `None` for anything else, so
    /// that a newer peer's extra messages are ignored rather than fatal.
    pub fn decode(line: &str) -> Option<Message> {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "event" => Some(Message::Event(rest.to_string())),
            "error" => Some(Message::Error(rest.to_string())),
            "started" => Some(Message::Started),
            // The first field only: fields a later version adds after it
            // are ignored, as for `resize` (an `exit` or `signal` with one
            // more had been dropped whole, its status or signal with it).
            "exit" => first_field(rest)?.parse().ok().map(Message::Exit),
            "signal" => first_field(rest)?.parse().ok().map(Message::Signal),
            "clock" if rest.trim().is_empty() => Some(Message::ClockAsk),
            "clock" => {
                let mut fields = rest.split_whitespace();
                let secs = fields.next()?.parse().ok()?;
                let nanos = fields.next()?.parse().ok().filter(|n| *n < 1_000_000_000)?;
                Some(Message::Clock { secs, nanos })
            }
            "resize" => {
                let mut fields = rest.split_whitespace().map(str::parse);
                match (fields.next(), fields.next()) {
                    (Some(Ok(height)), Some(Ok(width))) => {
                        Some(Message::Resize(ConsoleSize { height, width }))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// A message's first field, if it has one.
fn first_field(rest: &str) -> Option<&str> {
    rest.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_stay_on_one_line() {
        for m in [
            Message::Event("mounted /data".into()),
            Message::Error("two\nlines".into()),
            Message::Exit(-1),
            Message::Started,
            Message::Exit(137),
            Message::Signal(15),
            Message::Resize(ConsoleSize {
                height: 50,
                width: 132,
            }),
            Message::ClockAsk,
            Message::Clock {
                secs: 1_795_000_000,
                nanos: 999_999_999,
            },
        ] {
            let line = m.encode();
            assert_eq!(line.matches('\n').count(), 1);
            let back = Message::decode(line.trim_end_matches('\n'));
            let expected = match m {
                Message::Error(_) => Message::Error("two lines".into()),
                other => other,
            };
            assert_eq!(back, Some(expected));
        }
        assert_eq!(Message::decode("exit notanumber"), None);
        assert_eq!(Message::decode("hello"), None);
    }

    /// Fields past those a side knows are ignored, as for `resize`, so
    /// that a later version may add some.
    #[test]
    fn exit_and_signal_ignore_fields_added_later() {
        assert_eq!(Message::decode("exit 3 extra"), Some(Message::Exit(3)));
        assert_eq!(
            Message::decode("signal 15 group"),
            Some(Message::Signal(15))
        );
        assert_eq!(Message::decode("exit"), None);
        assert_eq!(Message::decode("signal x 1"), None);
    }

    /// A resize is rows then columns; fields a later version may add are
    /// ignored, a size that is not two numbers is no message.
    #[test]
    fn resize_lines() {
        let size = |height, width| Some(Message::Resize(ConsoleSize { height, width }));
        assert_eq!(Message::decode("resize 24 80"), size(24, 80));
        assert_eq!(Message::decode("resize 24 80 640 480"), size(24, 80));
        assert_eq!(Message::decode("resize 24"), None);
        assert_eq!(Message::decode("resize 24 x"), None);
        assert_eq!(Message::decode("resize 70000 80"), None);
    }
}
