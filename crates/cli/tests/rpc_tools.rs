#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The stock ONC RPC tools against `vmshare serve`: `showmount` (nfs-common)
//! and `rpcinfo` (rpcbind), both built on libtirpc, which asks rpcbind v4
//! and v3 over TCP and falls back to portmap v2 only over UDP. They can only
//! ask port 111, so the server runs in a network namespace of the test's
//! own, listening on the IPv6 wildcard: IPv4 and IPv6 clients both.

#[path = "common/needs.rs"]
mod needs;
#[path = "common/scratch.rs"]
mod scratch;
#[path = "common/serve.rs"]
mod serve;

use std::process::Command;

use serve::Serve;

use vmshare_vmm::netns::TapNetwork;
use vmshare_vmm::StateDir;

/// Whether a line of `text` starts with the words of `row`, however the
/// tool aligned its columns.
fn has_row(text: &str, row: &[&str]) -> bool {
    text.lines()
        .any(|l| l.split_whitespace().take(row.len()).eq(row.iter().copied()))
}

#[test]
fn showmount_and_rpcinfo_find_everything_over_ipv4_and_ipv6() {
    if !needs::tool_or_skip("showmount", "nfs-common")
        || !needs::tool_or_skip("rpcinfo", "rpcbind")
        || !needs::tool_or_skip("ip", "iproute2")
    {
        return;
    }
    if !needs::root_or_skip("a network namespace needs root") {
        return;
    }
    let top = scratch::scratch_dir("rpc-tools");
    let (data, other) = (top.join("data"), top.join("other"));
    for d in [&data, &other] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let state = StateDir::at(top.join("state")).expect("state dir");
    let run = state.new_run().expect("run dir");
    let net = TapNetwork::create(&run).expect("namespace");
    let in_ns = |prog: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", net.name(), prog]);
        c
    };

    let mut cmd = in_ns(env!("CARGO_BIN_EXE_vmshare"));
    cmd.args([
        "serve",
        "--listen",
        "[::]:2049",
        "--mount-listen",
        "[::]:20048",
        "--portmap-listen",
        "[::]:111",
        "--export",
        &format!("{} /data 10.0.0.0/8(rw) 127.0.0.1(ro)", data.display()),
        "--export",
        &format!("{} /other", other.display()),
        "--state-dir",
    ])
    .arg(top.join("server-state"))
    .env("RUST_LOG", "info");
    let _server = Serve::start(cmd);

    let run_tool = |args: &[&str]| {
        let out = in_ns(args[0]).args(&args[1..]).output().expect("tool");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };

    for host in ["127.0.0.1", "::1"] {
        // EXPORT, with each export's client list, found through rpcbind
        // v4 GETADDR (MOUNT has a port of its own here).
        let (ok, text) = run_tool(&["showmount", "-e", host]);
        assert!(ok, "showmount -e {host}: {text}");
        assert!(has_row(&text, &["/data", "10.0.0.0/8,127.0.0.1"]), "{text}");
        assert!(has_row(&text, &["/other", "*"]), "{text}");
        // NULL to a program found through GETADDR, for a version served
        // and for one that is not.
        let (ok, text) = run_tool(&["rpcinfo", "-t", host, "nfs", "3"]);
        assert!(ok && text.contains("version 3 ready and waiting"), "{text}");
        let (ok, text) = run_tool(&["rpcinfo", "-t", host, "mountd"]);
        assert!(ok && text.contains("100005 version 3 ready"), "{text}");
        let (ok, text) = run_tool(&["rpcinfo", "-t", host, "nfs", "4"]);
        assert!(!ok && text.contains("not available"), "{text}");
        // What is not served is not registered.
        let (ok, text) = run_tool(&["rpcinfo", "-t", host, "nlockmgr", "4"]);
        assert!(!ok && text.contains("not registered"), "{text}");
    }

    // rpcbind v4 DUMP, asked over IPv6: every program, at the address the
    // client reached for tcp6.
    let (ok, text) = run_tool(&["rpcinfo", "::1"]);
    assert!(ok, "{text}");
    for row in [
        ["100003", "3", "tcp6", "::1.8.1", "nfs"],
        ["100005", "3", "tcp6", "::1.78.80", "mountd"],
        ["100005", "3", "tcp", "0.0.0.0.78.80", "mountd"],
        ["100000", "4", "tcp6", "::1.0.111", "portmapper"],
    ] {
        assert!(has_row(&text, &row), "{row:?} missing from:\n{text}");
    }
    // Portmap v2 DUMP (IPv4 only).
    let (ok, text) = run_tool(&["rpcinfo", "-p", "127.0.0.1"]);
    assert!(ok, "{text}");
    for row in [
        ["100003", "3", "tcp", "2049", "nfs"],
        ["100005", "3", "tcp", "20048", "mountd"],
        ["100000", "2", "tcp", "111", "portmapper"],
    ] {
        assert!(has_row(&text, &row), "{row:?} missing from:\n{text}");
    }
    assert!(!text.contains("udp"), "{text}");
}
