//! The smallest end-to-end run: boot, run a shell command, get its output
//! and exit status back unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[test]
fn stdout_stderr_and_exit_status_pass_through() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.run(h.guest(["sh", "-c", "echo hi; echo oops >&2; exit 7"]));
    assert_eq!(out.stdout_str(), "hi\n", "console:\n{}", out.console);
    assert_eq!(out.stderr_str(), "oops\n");
    assert_eq!(out.status, 7);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

/// A volume that cannot be mounted stops the run before CMD with an error
/// naming the volume, the server address and port, and the errno.
#[test]
fn unmountable_volume_names_server_port_and_errno() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    // A port nobody listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut run = h
        .guest(["echo", "must not run"])
        .network(common::GuestNetwork::User);
    run.spec_mut().mounts.push(common::GuestMount {
        name: "/srv/data:/data".into(),
        source: "10.0.2.2:/v0".into(),
        target: "/data".into(),
        fstype: "nfs".into(),
        data: common::nfs_options("10.0.2.2", port),
        readonly: false,
        flags: vec![],
        file: false,
        retry: false,
        mkdir: Vec::new(),
    });
    let out = h.run(run);
    assert_eq!(out.status, 125);
    assert_eq!(out.stdout_str(), "");
    let error = out.errors.join("\n");
    for needle in [
        "/srv/data:/data",
        "10.0.2.2",
        &format!("port {port}"),
        "ECONNREFUSED",
    ] {
        assert!(error.contains(needle), "{needle:?} missing from: {error}");
    }
}

/// A guest that writes its serial console without end costs the host a
/// bounded log, not its disk: QEMU's file chardev has no limit, and the
/// whole log was read into memory at the end. Past 16 MiB the log is cut
/// to its last MiB (the timeline says so), and what comes back is at most
/// that MiB, ending with what the guest wrote last.
#[test]
fn a_guest_flooding_its_console_gets_a_bounded_log() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.run(h.guest([
        "sh",
        "-c",
        "yes 0123456789012345678901234567890123456789 | head -c 18000000 > /dev/ttyS0; \
         echo the-last-line > /dev/ttyS0; exit 5",
    ]));
    assert_eq!(out.status, 5, "{:?}", out.errors);
    assert!(
        out.timeline
            .iter()
            .any(|e| e.text.starts_with("the guest's console passed 16 MiB")),
        "{:?}",
        out.timeline
    );
    assert!(out.console.len() <= 1 << 20, "{}", out.console.len());
    assert!(
        out.console.contains("the-last-line"),
        "{}",
        &out.console[out.console.len().saturating_sub(500)..]
    );
}
