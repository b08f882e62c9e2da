//! A minimal RPC-over-TCP client for driving a real server.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use vmshare_server::{Limits, RunningServer, Server, ServerConfig};
use vmshare_wire::record::mark;
use vmshare_wire::rpc::{encode_call, parse_reply, ParsedReply};
use vmshare_wire::{Credential, Encoder};

pub const NFS: u32 = 100_003;
pub const UNKNOWN_PROG: u32 = 200_999;

pub fn state_dir(name: &str) -> PathBuf {
    // Under cargo's scratch directory for integration tests, so that the
    // servers' state (a handle key each) is not left in /tmp.
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vmshare-server-test-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

pub fn start(name: &str, limits: Limits) -> RunningServer {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: state_dir(name),
        limits,
        ..Default::default()
    };
    Server::bind(config).expect("bind").spawn().expect("spawn")
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// The payload of a call record (no mark).
pub fn call(xid: u32, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut e = Encoder::default();
    encode_call(&mut e, xid, prog, vers, proc_, &Credential::None);
    e.fixed(args);
    e.into_inner()
}

/// Mark plus payload, as one fragment.
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = mark(u32::try_from(payload.len()).expect("len")).to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn send(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(&framed(payload)).expect("send");
}

/// Reads one reply record; `None` when the server closed the connection.
pub fn recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut m = [0u8; 4];
        if s.read_exact(&mut m).is_err() {
            return None;
        }
        let raw = u32::from_be_bytes(m);
        let len = (raw & 0x7fff_ffff) as usize;
        let start = out.len();
        out.resize(start + len, 0);
        s.read_exact(&mut out[start..]).ok()?;
        if raw & 0x8000_0000 != 0 {
            return Some(out);
        }
    }
}

pub fn parse(bytes: &[u8]) -> ParsedReply<'_> {
    parse_reply(bytes).expect("a well-formed reply")
}

/// Whether the server closed the connection (EOF or reset) within the
/// stream's read timeout.
pub fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

pub const MOUNT: u32 = 100_005;
pub const PORTMAP: u32 = 100_000;

/// The payload of an NFSv3 call (AUTH_NONE).
pub fn nfs_call(xid: u32, call: &vmshare_proto::nfs3::Nfs3Call<'_>) -> Vec<u8> {
    let mut e = Encoder::default();
    let proc_ = vmshare_proto::nfs3::procedure_number(call);
    encode_call(&mut e, xid, NFS, 3, proc_, &Credential::None);
    vmshare_proto::nfs3::encode_call(&mut e, call);
    e.into_inner()
}

/// A server exporting `export` as `/data` to anyone, without squashing,
/// with these limits; its state goes beside the export.
pub fn serve_export(export: &std::path::Path, limits: Limits) -> RunningServer {
    use vmshare_server::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};
    let options = ExportOptions {
        secure: false,
        squash: Squash::None,
        ..ExportOptions::default()
    };
    let rules = vec![ClientRule {
        client: ClientMatch::Any,
        options,
    }];
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: export.with_extension("state"),
        exports: vec![ExportConfig::new(export, "/data", rules)],
        limits,
        ..Default::default()
    };
    Server::bind(config).expect("bind").spawn().expect("spawn")
}

/// The handle in a MNT or LOOKUP reply that must have succeeded.
pub fn handle(reply: &[u8], what: &str) -> vmshare_proto::nfs3::FileHandle {
    let p = parse(reply);
    let mut d = vmshare_wire::Decoder::new(p.results);
    assert_eq!(d.u32().expect("status"), 0, "{what} failed");
    vmshare_proto::nfs3::FileHandle::new(d.opaque(64).expect("handle")).expect("handle")
}

/// LOOKUP of `name` in `dir` on `s` (XID 2): its handle.
#[allow(dead_code)] // Not every test binary that includes this looks up.
pub fn lookup(
    s: &mut TcpStream,
    dir: vmshare_proto::nfs3::FileHandle,
    name: &[u8],
) -> vmshare_proto::nfs3::FileHandle {
    let call = vmshare_proto::nfs3::Nfs3Call::Lookup(vmshare_proto::nfs3::DirOpArgs { dir, name });
    send(s, &nfs_call(2, &call));
    handle(&recv(s).expect("LOOKUP reply"), "LOOKUP")
}

/// MNT of `/data` on `s`: the export's root handle.
pub fn mount_data(s: &mut TcpStream) -> vmshare_proto::nfs3::FileHandle {
    let mut path = Encoder::default();
    path.string(b"/data");
    send(s, &call(1, MOUNT, 3, 1, path.as_slice()));
    handle(&recv(s).expect("MNT reply"), "MNT")
}
