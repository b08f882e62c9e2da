//! `:ro` is the server's to enforce, not only the guest's: a guest that
//! mounts a read-only export read-write still gets EROFS. Also the worked
//! example of driving the harness with a server of one's own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{nfs_options, scratch_dir, GuestMount, GuestNetwork};
use vmshare_server::{
    ClientMatch, ClientRule, ExportConfig, ExportOptions, Server, ServerConfig, Squash,
};

#[test]
fn read_only_export_refuses_a_read_write_mount_with_erofs() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("server-ro");
    std::fs::write(dir.join("keep.txt"), "original\n").unwrap();
    let export = ExportConfig {
        path: dir.clone(),
        mount_path: "/v0".into(),
        clients: vec![ClientRule {
            client: ClientMatch::Net {
                addr: [127, 0, 0, 1].into(),
                prefix: 32,
            },
            options: ExportOptions {
                writable: false,
                squash: Squash::None,
                anonuid: 0,
                anongid: 0,
                secure: false,
                sync: false,
                nosuid_nodev: false,
            },
        }],
        single_file: None,
    };
    let server = Server::bind(ServerConfig::new(
        vec![export],
        SocketAddr::from(([127, 0, 0, 1], 0)),
        h.state.path().join("server-test"),
    ))
    .unwrap();
    let port = server.local_addr().port();
    let running = server.spawn().unwrap();

    let mut run = h
        .guest(["sh", "-c", "cat /data/keep.txt; echo changed > /data/keep.txt; echo rc=$?; mkdir /data/d; echo rc=$?"])
        .network(GuestNetwork::User);
    run.spec_mut().mounts.push(GuestMount {
        name: "ro-export".into(),
        source: "10.0.2.2:/v0".into(),
        target: "/data".into(),
        fstype: "nfs".into(),
        data: nfs_options("10.0.2.2", port),
        readonly: false, // The guest asks for read-write on purpose.
        flags: vec![],
        file: false,
        retry: true,
        mkdir: Vec::new(),
    });
    let out = h.run(run);
    running.shutdown();
    assert_eq!(
        out.status, 0,
        "errors: {:?}\nconsole:\n{}",
        out.errors, out.console
    );
    assert_eq!(out.stdout_str(), "original\nrc=1\nrc=1\n");
    assert!(
        out.stderr_str().contains("Read-only file system"),
        "stderr: {}",
        out.stderr_str()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert!(!dir.join("d").exists());
}
