//! `vmshare run -t` on the host: the guest's pty gets the host terminal's
//! size and `TERM`, and later sizes as the terminal is resized
//! ([`watch_window_size`]); with `-i -t` the host terminal is put in raw
//! mode for the run, so that every key (Ctrl-C, Ctrl-D, arrows) goes to the
//! guest's pty as it is and the guest's line discipline does the echo and
//! the signals, as with `docker run -it`.
//!
//! The terminal is restored when [`RawMode`] is dropped, which covers every
//! return from `vmshare run` (success, error, a forwarded SIGINT/SIGTERM/
//! SIGHUP, which end the run normally), and by a panic hook, since release
//! builds abort on panic without unwinding.

use std::io::IsTerminal;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Mutex};

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::pipe::PipeFlags;
use rustix::termios::{OptionalActions, Termios};
use vmshare_plan::guest::ConsoleSize;

/// docker's error for `-i -t` without a terminal on stdin.
pub(crate) const NOT_A_TTY: &str = "the input device is not a TTY";

/// The settings to put back, for the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Checks `-i`/`-t` against what stdin is, as docker does: `-i -t` needs
/// a terminal on stdin (an error otherwise); `-t` alone runs the command on
/// a guest pty whatever the host has.
pub(crate) fn check(interactive: bool, tty: bool) -> Result<(), String> {
    if interactive && tty && !std::io::stdin().is_terminal() {
        return Err(format!(
            "-i -t: {NOT_A_TTY} (drop -t to pipe input into the command, as with docker)"
        ));
    }
    Ok(())
}

/// The host terminal's size (stdout's, else stdin's or stderr's), if any
/// of them is a terminal that knows its size.
pub(crate) fn window_size() -> Option<ConsoleSize> {
    let sizes = [
        rustix::termios::tcgetwinsize(std::io::stdout()),
        rustix::termios::tcgetwinsize(std::io::stdin()),
        rustix::termios::tcgetwinsize(std::io::stderr()),
    ];
    sizes
        .into_iter()
        .flatten()
        .find(|w| w.ws_row > 0 && w.ws_col > 0)
        .map(|w| ConsoleSize {
            height: w.ws_row,
            width: w.ws_col,
        })
}

/// The write end of the SIGWINCH self-pipe, -1 until there is one.
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

/// The SIGWINCH handler: one byte into the self-pipe, nothing else.
extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let byte = 0u8;
    // SAFETY: write(2) and errno are async-signal-safe; the pipe is
    // non-blocking (a full pipe already holds a wake-up) and never closed;
    // errno is put back so that the interrupted code does not see ours.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, std::ptr::from_ref(&byte).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// Follows the host terminal's size for the rest of the process: a
/// SIGWINCH handler writes to a pipe, and a thread woken by it reads the
/// size ([`window_size`]: TIOCGWINSZ) and sends it when it differs from
/// the last one sent, starting from `initial` (the size the guest's pty
/// starts with). The thread looks once at start too, for a resize between
/// reading `initial` and installing the handler.
pub(crate) fn watch_window_size(
    initial: ConsoleSize,
) -> Result<mpsc::Receiver<ConsoleSize>, String> {
    let failed = |what: &str, e: Errno| format!("-t: {what} for terminal resizes: {e}");
    let (wake, write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| failed("making a pipe", e))?;
    rustix::fs::fcntl_setfl(&write, OFlags::NONBLOCK)
        .map_err(|e| failed("a non-blocking pipe", e))?;
    // Kept open for good: a handler may be running in another thread.
    WINCH_PIPE.store(write.into_raw_fd(), Ordering::SeqCst);
    // SAFETY: on_winch only does async-signal-safe work (see there); the
    // handler stays valid for the whole process. signal() restarts
    // interrupted system calls (glibc's BSD semantics).
    unsafe {
        libc::signal(
            libc::SIGWINCH,
            on_winch as extern "C" fn(libc::c_int) as libc::sighandler_t,
        )
    };
    let (tx, sizes) = mpsc::channel();
    std::thread::spawn(move || follow(initial, &wake, &tx));
    Ok(sizes)
}

/// The watch thread: until the run is over (nobody receives).
fn follow(mut last: ConsoleSize, wake: &OwnedFd, tx: &mpsc::Sender<ConsoleSize>) {
    let mut buf = [0u8; 64];
    loop {
        if let Some(size) = window_size() {
            if size != last {
                last = size;
                if tx.send(size).is_err() {
                    return;
                }
            }
        }
        match rustix::io::read(wake, &mut buf) {
            Ok(0) => return,
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// `TERM=` for the guest: the host's, or `xterm` (docker's) without one.
pub(crate) fn term_env() -> String {
    let term = std::env::var("TERM")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "xterm".into());
    format!("TERM={term}")
}

/// stdin's terminal in raw mode until dropped.
#[derive(Debug)]
pub(crate) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode (input, echo, signals, output
    /// processing: cfmakeraw), at once so that keys typed ahead are kept.
    pub(crate) fn enable() -> Result<RawMode, String> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)
            .map_err(|e| format!("-i -t: reading the terminal's settings: {e}"))?;
        if let Ok(mut s) = SAVED.lock() {
            *s = Some(saved.clone());
        }
        install_panic_hook();
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, OptionalActions::Now, &raw)
            .map_err(|e| format!("-i -t: putting the terminal in raw mode: {e}"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore(std::io::stdin(), &self.saved);
        if let Ok(mut s) = SAVED.lock() {
            *s = None;
        }
    }
}

fn restore(fd: impl AsFd, saved: &Termios) {
    let _ = rustix::termios::tcsetattr(fd, OptionalActions::Now, saved);
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: a panic while the lock is held must not deadlock.
            if let Ok(Some(saved)) = SAVED.try_lock().as_deref() {
                restore(std::io::stdin(), saved);
            }
            previous(info);
        }));
    });
}
