//! `vmshare serve` as a process, the way users run it: started, waited for
//! until it says it is listening, its log kept, killed on drop. A file of
//! its own so that tests without the VM harness (`nfs_libnfs.rs`,
//! `rpc_tools.rs`) can include it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

/// A running `vmshare serve` and its log so far.
pub struct Serve {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `cmd` (`vmshare serve ...`, or a wrapper that execs it, such
    /// as `ip netns exec`) and returns once its log has the "listening"
    /// line, rather than after a guess of a sleep. Panics with the log if
    /// it exits first. The log is read on until the server exits, so it
    /// never blocks on a full pipe.
    pub fn start(mut cmd: Command) -> Serve {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning vmshare serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let keep = |log: &Mutex<String>, l: &str| {
            if let Ok(mut log) = log.lock() {
                log.push_str(l);
                log.push('\n');
            }
        };
        let serve = Serve {
            child,
            log: Arc::clone(&log),
        };
        loop {
            match lines.next() {
                Some(Ok(l)) => {
                    keep(&log, &l);
                    if l.contains("listening") {
                        break;
                    }
                }
                _ => panic!("vmshare serve exited before listening:\n{}", serve.log()),
            }
        }
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep(&log, &l);
            }
        });
        serve
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGHUP (reload the exports), then waits up to ten seconds
    /// for a log line containing one of `outcomes`; returns the log.
    #[allow(dead_code)] // Not every test that includes this reloads.
    pub fn hangup(&self, outcomes: &[&str]) -> String {
        let before = self.log().len();
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::HUP,
        )
        .expect("SIGHUP to the server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            let new = log.get(before..).unwrap_or_default();
            if outcomes.iter().any(|o| new.contains(o)) {
                return log;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {outcomes:?} after SIGHUP:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops the server with SIGTERM, as a user would, and returns how it
    /// exited.
    #[allow(dead_code)] // Not every test that includes this stops it so.
    pub fn terminate(&mut self) -> ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        )
        .expect("SIGTERM to the server");
        self.child.wait().expect("wait for the server")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Harmless after `terminate`: the child has been waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
