#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The MOUNT protocol on the wire: MNT against the client lists, and the
//! bookkeeping procedures (DUMP, UMNT, UMNTALL, EXPORT) that `showmount`
//! and a client's unmount use.

mod common;

use std::net::TcpStream;

use common::*;
use vmshare_server::{
    ClientMatch, ClientRule, ExportConfig, ExportOptions, RunningServer, Server, ServerConfig,
};
use vmshare_wire::{Decoder, Encoder};

const MNT: u32 = 1;
const DUMP: u32 = 2;
const UMNT: u32 = 3;
const UMNTALL: u32 = 4;
const EXPORT: u32 = 5;

fn rule(client: ClientMatch) -> ClientRule {
    ClientRule {
        client,
        options: ExportOptions {
            secure: false,
            ..ExportOptions::default()
        },
    }
}

/// `/data` for everyone (with a rule for a network listed too), and
/// `/private` for one address that is not this test's.
fn serve(root: &std::path::Path) -> RunningServer {
    for d in ["data/sub", "private"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let net = ClientMatch::Net {
        addr: "10.0.0.0".parse().expect("ip"),
        prefix: 8,
    };
    let other = ClientMatch::Net {
        addr: "192.0.2.7".parse().expect("ip"),
        prefix: 32,
    };
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: root.join("state"),
        exports: vec![
            ExportConfig::new(
                root.join("data"),
                "/data",
                vec![rule(net), rule(ClientMatch::Any)],
            ),
            ExportConfig::new(root.join("private"), "/private", vec![rule(other)]),
        ],
        ..Default::default()
    };
    Server::bind(config).expect("bind").spawn().expect("spawn")
}

/// Calls MOUNT procedure `proc_` with `args`; the results after the header.
fn mount_call(s: &mut TcpStream, xid: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    send(s, &call(xid, MOUNT, 3, proc_, args));
    let reply = recv(s).expect("a reply");
    parse(&reply).results.to_vec()
}

fn path_arg(path: &str) -> Vec<u8> {
    let mut e = Encoder::default();
    e.string(path.as_bytes());
    e.into_inner()
}

/// MNT's status (0 is MNT3_OK).
fn mnt(s: &mut TcpStream, xid: u32, path: &str) -> u32 {
    let res = mount_call(s, xid, MNT, &path_arg(path));
    Decoder::new(&res).u32().expect("status")
}

/// DUMP's list of (host, directory).
fn dump(s: &mut TcpStream, xid: u32) -> Vec<(String, String)> {
    let res = mount_call(s, xid, DUMP, &[]);
    let mut d = Decoder::new(&res);
    let mut out = Vec::new();
    while d.bool().expect("list") {
        let host = d.string(1024).expect("host");
        let dir = d.string(1024).expect("dir");
        out.push((
            String::from_utf8(host.to_vec()).expect("utf8"),
            String::from_utf8(dir.to_vec()).expect("utf8"),
        ));
    }
    assert_eq!(d.remaining(), 0, "bytes after the mount list");
    out
}

#[test]
fn mnt_dump_umnt_umntall_and_export() {
    let root = state_dir("mount-protocol");
    let _ = std::fs::remove_dir_all(&root);
    let server = serve(&root);
    let mut s = connect(server.local_addr());

    // MNT honours the client lists: this test is not 192.0.2.7.
    assert_eq!(mnt(&mut s, 1, "/private"), 13, "MNT3ERR_ACCES");
    assert_eq!(mnt(&mut s, 2, "/nowhere"), 2, "MNT3ERR_NOENT");
    assert_eq!(mnt(&mut s, 3, "/data/missing"), 2, "MNT3ERR_NOENT");
    assert!(dump(&mut s, 4).is_empty(), "refused mounts are not listed");

    assert_eq!(mnt(&mut s, 5, "/data"), 0);
    assert_eq!(mnt(&mut s, 6, "/data/sub"), 0);
    // A second MNT of one path is listed once.
    assert_eq!(mnt(&mut s, 7, "/data"), 0);
    let host = "127.0.0.1".to_string();
    assert_eq!(
        dump(&mut s, 8),
        [
            (host.clone(), "/data".to_string()),
            (host.clone(), "/data/sub".to_string())
        ]
    );

    // UMNT removes that one path; its reply is empty.
    assert!(mount_call(&mut s, 9, UMNT, &path_arg("/data")).is_empty());
    assert_eq!(dump(&mut s, 10), [(host.clone(), "/data/sub".to_string())]);
    // UMNTALL removes the rest of this client's.
    assert_eq!(mnt(&mut s, 11, "/data"), 0);
    assert!(mount_call(&mut s, 12, UMNTALL, &[]).is_empty());
    assert!(dump(&mut s, 13).is_empty());

    // EXPORT: every export with its client list, as `showmount -e` shows.
    let res = mount_call(&mut s, 14, EXPORT, &[]);
    let mut d = Decoder::new(&res);
    let mut exports = Vec::new();
    while d.bool().expect("exports") {
        let dir = String::from_utf8(d.string(1024).expect("dir").to_vec()).expect("utf8");
        let mut groups = Vec::new();
        while d.bool().expect("groups") {
            groups.push(String::from_utf8(d.string(1024).expect("group").to_vec()).expect("utf8"));
        }
        exports.push((dir, groups));
    }
    assert_eq!(d.remaining(), 0, "bytes after the export list");
    assert_eq!(
        exports,
        [
            (
                "/data".to_string(),
                vec!["10.0.0.0/8".to_string(), "*".to_string()]
            ),
            ("/private".to_string(), vec!["192.0.2.7".to_string()]),
        ]
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&root);
}
