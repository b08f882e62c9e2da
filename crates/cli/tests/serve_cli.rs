#![allow(clippy::unwrap_used)]
//! `vmshare serve`'s command line: what it refuses before it starts, and
//! how it says so.

use std::process::Command;

fn serve(args: &[&str]) -> std::process::Output {
    let state = std::env::temp_dir().join(format!("vmshare-serve-cli-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--export",
            "/tmp",
            "--state-dir",
        ])
        .arg(&state)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&state);
    out
}

/// Limits out of their range are refused with the range (exit 125, as
/// every bad command line), before anything listens: 0 had been taken as
/// 1 in silence, 100,000 workers said "listening" and then aborted when
/// the threads ran out of memory, 12,000 connections let clients abort
/// the server the same way, and a huge poll window let one idle client
/// keep a CPU busy.
#[test]
fn limits_out_of_range_are_refused_with_the_range() {
    for (args, range) in [
        (&["--workers", "0"][..], "1 to 1024"),
        (&["--workers", "100000"], "1 to 1024"),
        (&["--max-connections", "0"], "1 to 4096"),
        (&["--max-connections", "12000"], "1 to 4096"),
        (&["--max-connections-per-client", "0"], "1 to 4096"),
        (&["--poll-us", "999999999999"], "0 to 10000"),
        (&["--max-in-flight", "0"], "1 to 4096"),
        (&["--memory-budget", "0"], "4 to 65536"),
        (&["--workers", "many"], "not a whole number"),
    ] {
        let out = serve(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(range), "{args:?}: {err}");
        assert!(!err.contains("listening"), "{args:?}: {err}");
    }
}
