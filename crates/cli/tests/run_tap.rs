//! `--net tap`: the VM on a TAP device in a network namespace of its own,
//! the NFS server listening inside that namespace; and cleanup after a
//! vmshare that was killed. Needs root (namespaces); skipped otherwise
//! unless in CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, scratch_dir, text, vol};

fn can_make_namespaces() -> bool {
    common::needs::root_or_skip("--net tap needs root")
}

fn vmshare_namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("vmshare-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn tap_network_with_the_server_inside_the_namespace() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    if !can_make_namespaces() {
        return;
    }
    let dir = scratch_dir("tap");
    std::fs::write(dir.join("f"), "over tap\n").unwrap();
    let out = h.vmshare(&[
        "run",
        "--verbose",
        "--net",
        "tap",
        "-v",
        &vol(&dir, "/data"),
        "--",
        "sh",
        "-c",
        "cat /data/f; echo back > /data/g; grep ' /data ' /proc/mounts",
    ]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("over tap\n"), "{stdout}");
    // The guest mounted from the TAP side's address, not through QEMU's
    // user networking.
    assert!(stdout.contains("172.30.0.1:/v0 /data nfs"), "{stdout}");
    assert_eq!(std::fs::read_to_string(dir.join("g")).unwrap(), "back\n");
    // --verbose names the namespace; it must be gone now.
    let stderr = text(&out.stderr);
    let ns = stderr
        .split_whitespace()
        .find(|w| w.starts_with("vmshare-"))
        .unwrap_or_else(|| panic!("no namespace in the timeline: {stderr}"));
    assert!(
        !vmshare_namespaces().iter().any(|n| n == ns),
        "namespace {ns} left behind"
    );
}

/// SIGKILL vmshare mid-run: QEMU dies with it (PDEATHSIG) and the next run
/// deletes the namespace and the run directory that were left.
#[test]
fn a_killed_run_is_cleaned_up_by_the_next() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    if !can_make_namespaces() {
        return;
    }
    let mut child = h.spawn_vmshare(
        &["run", "--net", "tap", "--", "sleep", "600"],
        Stdio::null(),
    );
    let runs = h.state.path().join("runs");
    let pid = child.id();
    // Wait until its QEMU is up (a run dir of this pid with qemu.pid).
    let start = Instant::now();
    let qemu_pid = loop {
        let found = std::fs::read_dir(&runs).unwrap().flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with(&format!("{pid}-")) {
                return None;
            }
            std::fs::read_to_string(e.path().join("qemu.pid")).ok()
        });
        if let Some(q) = found {
            break q.trim().parse::<u32>().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "QEMU never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let ours: Vec<String> = vmshare_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&format!("vmshare-{pid}-")))
        .collect();
    assert_eq!(ours.len(), 1, "expected this run's namespace");
    child.kill().unwrap();
    child.wait().unwrap();

    // QEMU follows its parent.
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{qemu_pid}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{qemu_pid}/stat")).unwrap_or_default();
        if state.contains(") Z") {
            break; // A zombie waiting for init to reap it: dead.
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "QEMU outlived vmshare"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The namespace is still there, until the next run sweeps it.
    assert!(vmshare_namespaces().contains(&ours[0]));
    let out = h.vmshare(&["run", "--", "true"]);
    assert_exit(&out, 0);
    assert!(
        !vmshare_namespaces().contains(&ours[0]),
        "namespace not cleaned up"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{pid}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "run directories left: {leftovers:?}");
}
