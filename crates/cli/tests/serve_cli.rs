#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `vmshare serve`'s command line: what it refuses before it starts, and
//! how it says so.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

#[path = "common/serve.rs"]
mod serve;

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

/// NFS NULL over `s`, true if a successful reply came back.
fn null_call(s: &mut TcpStream) -> bool {
    // Record mark, xid, CALL, RPC 2, NFS 3, NULL, AUTH_NONE, empty verifier.
    let words: [u32; 11] = [0x8000_0028, 7, 0, 2, 100_003, 3, 0, 0, 0, 0, 0];
    let call: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reply = [0u8; 28];
    s.write_all(&call).is_ok()
        && s.read_exact(&mut reply).is_ok()
        && reply[4..8] == 7u32.to_be_bytes()
        && reply[24..28] == [0, 0, 0, 0]
}

/// Under a tiny open-file limit the server says at start how many
/// connections it has room for, and turns away the ones past it rather
/// than running out of descriptors (which had made `accept` fail, with
/// clients hanging in the backlog, and calls fail with EIO): those it
/// holds are served, the rest are closed, and once clients leave a fresh
/// one is served.
#[test]
fn a_tiny_open_file_limit_is_said_at_start_and_connections_past_it_are_turned_away() {
    let state = std::env::temp_dir().join(format!("vmshare-serve-fds-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=40:40")
        .arg(env!("CARGO_BIN_EXE_vmshare"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--export", "/tmp", "--state-dir"])
        .arg(&state)
        .env("RUST_LOG", "info");
    let server = serve::Serve::start(cmd);
    assert!(
        server
            .log()
            .contains("open_file_limit=40 connections=4 asked=256"),
        "{}",
        server.log()
    );
    let mut held: Vec<TcpStream> = (0..60)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    // The first connections were taken and are served; later ones closed.
    assert!(null_call(&mut held[0]), "{}", server.log());
    let turned_away = held
        .iter_mut()
        .skip(4)
        .map(|s| !null_call(s))
        .filter(|&t| t)
        .count();
    assert!(turned_away > 0, "{}", server.log());
    assert!(
        !server.log().contains("out of file descriptors"),
        "{}",
        server.log()
    );
    held.clear();
    // The server learns of the closes as its readers see them: a client
    // turned away meanwhile tries again, as the Linux client does.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let served = loop {
        let mut fresh = TcpStream::connect(("127.0.0.1", port)).unwrap();
        if null_call(&mut fresh) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served, "{}", server.log());
    drop(server);
    let _ = std::fs::remove_dir_all(&state);
}
