//! Shared harness of vmshare's end-to-end tests: boot a real QEMU microVM
//! with the real kernel, busybox and the `vmshare` binary under test as the
//! guest's init, run a command, look at what it did.
//!
//! Use from a test file (`crates/cli/tests/<name>.rs`):
//!
//! ```ignore
//! mod common;
//!
//! #[test]
//! fn script_runs() {
//!     let Some(h) = common::Harness::new() else { return };   // skipped (not in CI) when QEMU is missing
//!     let out = h.run(h.guest(["sh", "/test.sh"]).file("/test.sh", 0o755, "echo hi\n"));
//!     assert_eq!((out.status, out.stdout_str().as_str()), (0, "hi\n"));
//! }
//! ```
//!
//! [`Harness::guest`] returns a [`vmshare_vmm::GuestRun`] already pointed at
//! the binary under test and a state directory shared by all tests (so the
//! initramfs is built once); chain more settings on it:
//! - `.file(path, mode, bytes)`: put a file (a script) into the guest;
//! - `.network(GuestNetwork::User)`: eth0 = 10.0.2.15, the host's 127.0.0.1
//!   is 10.0.2.2 (bind a server on 127.0.0.1:0 and mount from 10.0.2.2);
//! - `.spec_mut().mounts.push(GuestMount { .. })`: mounts done by the guest
//!   init before the command (NFS: `fstype: "nfs"`, `source:
//!   "10.0.2.2:/v0"`, `data: common::nfs_options(port)`, `retry: true`);
//! - `.stdin(StdinSource::Bytes(..))`, `.timeout(..)`, `.memory_mib(..)`.
//!
//! [`Harness::run`] returns the [`vmshare_vmm::GuestOutput`] (status,
//! stdout, stderr, init errors, console log, timeline) and panics with the
//! console tail when the VM fails to boot, hangs or panics.
#![allow(dead_code)] // Each test file uses its own subset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cpio;
pub mod needs;
pub mod nobody;
pub mod scratch;
pub mod serve;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[allow(unused_imports)]
pub use scratch::scratch_dir;

#[allow(unused_imports)]
pub use vmshare_plan::guest::{GuestMount, GuestSpec};
#[allow(unused_imports)]
pub use vmshare_vmm::{GuestNetwork, GuestOutput, GuestRun, StateDir, StdinSource};

/// Everything a VM test needs, found once.
pub struct Harness {
    /// The `vmshare` binary under test (static; becomes the guest's init).
    pub vmshare: PathBuf,
    /// State directory shared by the tests (asset cache, run dirs).
    pub state: StateDir,
}

impl Harness {
    /// `None` (with a message) when QEMU or a kernel is missing and we are
    /// not in CI; in CI (`CI` set) a missing tool fails the test instead.
    pub fn new() -> Option<Harness> {
        Harness::with_tools(&[])
    }

    /// [`new`](Self::new), also needing these programs on `PATH`, each
    /// given with the Debian package that has it:
    /// `&[("mkfs.erofs", "erofs-utils")]`.
    pub fn with_tools(tools: &[(&str, &str)]) -> Option<Harness> {
        let mut missing = missing_tools();
        for (tool, package) in tools {
            if !on_path(tool) {
                missing.push(format!("{tool} (apt-get install {package})"));
            }
        }
        if !missing.is_empty() {
            let msg = format!("VM test needs: {}", missing.join(", "));
            if std::env::var_os("CI").is_some() {
                panic!("{msg} (CI must install them)");
            }
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let state = StateDir::at(state_path()).expect("test state directory");
        Some(Harness {
            vmshare: PathBuf::from(env!("CARGO_BIN_EXE_vmshare")),
            state,
        })
    }

    /// A guest run of `args`, with this harness's binary and state dir
    /// and generous time limits (CI runs QEMU under TCG on shared cores).
    pub fn guest<I, S>(&self, args: I) -> GuestRun
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GuestRun::command(args)
            .init_binary(&self.vmshare)
            .state_dir(self.state.clone())
            .boot_timeout(Duration::from_secs(180))
            .timeout(Duration::from_secs(300))
    }

    /// Runs it; panics with the guest console tail if the VM did not
    /// report an exit status.
    pub fn run(&self, run: GuestRun) -> GuestOutput {
        match run.run() {
            Ok(out) => out,
            Err(e) => panic!("guest run failed: {e}"),
        }
    }

    /// `vmshare` as a process, with this harness's state dir.
    pub fn vmshare_cmd(&self) -> Command {
        let mut c = Command::new(&self.vmshare);
        c.env("VMSHARE_STATE_DIR", self.state.path());
        c
    }

    /// Starts `vmshare <args>` with stdout and stderr piped.
    pub fn spawn_vmshare(&self, args: &[&str], stdin: Stdio) -> Child {
        self.vmshare_cmd()
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning vmshare")
    }

    /// Runs `vmshare <args>` to completion (killed after 300 s) and returns
    /// its status and output.
    pub fn vmshare(&self, args: &[&str]) -> Output {
        wait_with_watchdog(
            self.spawn_vmshare(args, Stdio::null()),
            Duration::from_secs(300),
        )
    }
}

/// `HOST:GUEST`, the `-v` argument.
pub fn vol(host: &std::path::Path, guest: &str) -> String {
    format!("{}:{guest}", host.display())
}

/// Waits for `child`, killing it if it runs longer than `limit`.
pub fn wait_with_watchdog(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    });
    let out = child.wait_with_output().expect("waiting for vmshare");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    out
}

/// Text of an output stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Panics with everything vmshare printed unless it exited with `code`.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "vmshare exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Panics unless vmshare refused (exit 125) saying `needle` on stderr.
pub fn assert_refused(out: &Output, needle: &str) {
    assert_exit(out, 125);
    let err = text(&out.stderr);
    assert!(err.contains(needle), "no {needle:?} in: {err}");
}

/// NFSv3 mount options for the guest's in-kernel client talking to a
/// vmshare server on `port` at the host (10.0.2.2 with user networking).
pub fn nfs_options(addr: &str, port: u16) -> String {
    format!("vers=3,proto=tcp,port={port},mountport={port},mountproto=tcp,nolock,addr={addr}")
}

fn state_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmshare-state")
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("qemu-system-x86_64 (apt-get install qemu-system-x86)".to_string());
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        missing.push("/bin/busybox (apt-get install busybox-static)".to_string());
    }
    let has_kernel = std::fs::read_dir("/boot")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !has_kernel {
        missing.push("/boot/vmlinuz-* (apt-get install linux-image-amd64)".to_string());
    }
    missing
}
