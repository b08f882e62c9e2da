#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `vmshare serve` under a low open-file limit. Each connection is a
//! descriptor, and so is every file a call opens: with more connections
//! than the limit leaves room for, opens failed with EMFILE and guests got
//! EIO for LOOKUP, READ and WRITE. The server now admits only as many
//! connections as fit and says so at start; a client turned away
//! reconnects (the Linux client does), and no call fails.
//!
//! A test binary of its own: 120 clients at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmshare_proto::nfs3::{encode_call, procedure_number, DirOpArgs, FileHandle, Nfs3Call};
use vmshare_proto::nfs3::{StableHow, Verifier};
use vmshare_wire::rpc::{encode_call as encode_rpc, parse_reply, Credential};
use vmshare_wire::{Decoder, Encoder};

#[path = "common/serve.rs"]
mod serve;

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;

/// One client connection that reconnects when the server turns it away.
struct Client {
    /// The local address connections come from.
    src: &'static str,
    port: u16,
    s: Option<TcpStream>,
    xid: u32,
    reconnects: usize,
}

impl Client {
    fn new(src: &'static str, port: u16, first_xid: u32) -> Client {
        Client {
            src,
            port,
            s: None,
            xid: first_xid,
            reconnects: 0,
        }
    }

    /// Sends one call and returns its reply's results, reconnecting and
    /// sending again for as long as the connection is closed under it.
    fn call(&mut self, prog: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "never answered: proc {proc_}");
            self.xid += 1;
            let mut e = Encoder::default();
            encode_rpc(&mut e, self.xid, prog, 3, proc_, &Credential::None);
            e.fixed(args);
            if let Some(reply) = self.exchange(&e.into_inner()) {
                let p = parse_reply(&reply).expect("a well-formed reply");
                assert_eq!(p.xid, self.xid);
                return p.results.to_vec();
            }
            self.s = None;
            self.reconnects += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exchange(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if self.s.is_none() {
            let s = connect_from(self.src, self.port)?;
            s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
            self.s = Some(s);
        }
        let s = self.s.as_mut()?;
        let len = u32::try_from(payload.len()).unwrap();
        let mut record = (0x8000_0000 | len).to_be_bytes().to_vec();
        record.extend_from_slice(payload);
        s.write_all(&record).ok()?;
        let mut mark = [0u8; 4];
        s.read_exact(&mut mark).ok()?;
        let mut reply = vec![0u8; (u32::from_be_bytes(mark) & 0x7fff_ffff) as usize];
        s.read_exact(&mut reply).ok()?;
        Some(reply)
    }

    /// An NFS call's status and the rest of its results.
    fn nfs(&mut self, call: &Nfs3Call<'_>) -> (u32, Vec<u8>) {
        let mut e = Encoder::default();
        encode_call(&mut e, call);
        let results = self.call(NFS, procedure_number(call), e.as_slice());
        let status = Decoder::new(&results).u32().expect("status");
        (status, results)
    }
}

/// A connection to the server from `src`.
fn connect_from(src: &str, port: u16) -> Option<TcpStream> {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).ok()?;
    let from: std::net::SocketAddr = format!("{src}:0").parse().ok()?;
    bind(&fd, &from).ok()?;
    connect(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], port))).ok()?;
    Some(TcpStream::from(fd))
}

/// The handle after the status (and, for LOOKUP, nothing else first).
fn handle_in(results: &[u8]) -> FileHandle {
    let mut d = Decoder::new(results);
    assert_eq!(d.u32().unwrap(), 0);
    FileHandle::new(d.opaque(64).unwrap()).unwrap()
}

fn tree(root: &Path) {
    for d in 0..200 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for g in 0..5 {
            std::fs::write(dir.join(format!("g{g}")), b"x").unwrap();
        }
    }
    // The calls are AUTH_NONE, the anonymous user: let it write.
    use std::os::unix::fs::PermissionsExt;
    for f in 0..500 {
        let path = root.join(format!("f{f}"));
        std::fs::write(&path, b"y").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

#[test]
fn a_low_open_file_limit_turns_clients_away_instead_of_failing_their_calls() {
    let base = std::env::temp_dir().join(format!("vmshare-fd-limit-{}", std::process::id()));
    let export = base.join("export");
    tree(&export);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=256:256")
        .arg(env!("CARGO_BIN_EXE_vmshare"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--export")
        .arg(format!(
            "{} /data *(rw,no_root_squash,insecure)",
            export.display()
        ))
        .arg("--state-dir")
        .arg(base.join("state"))
        .env("RUST_LOG", "info");
    let server = serve::Serve::start(cmd);
    // Said at start, with the number.
    let log = server.log();
    let said = log
        .lines()
        .find(|l| l.contains("the open-file limit leaves room for"))
        .unwrap_or_else(|| panic!("no word of the limit at start:\n{log}"));
    assert!(said.contains("open_file_limit=256"), "{said}");

    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let reconnects = Arc::new(Mutex::new(0usize));
    let threads: Vec<_> = (0..120u32)
        .map(|t| {
            let errors = Arc::clone(&errors);
            let reconnects = Arc::clone(&reconnects);
            std::thread::spawn(move || {
                // Two addresses, as two guests: one address may hold at
                // most 64 connections whatever the limit.
                let src = if t % 2 == 0 { "127.0.0.1" } else { "127.0.0.2" };
                let mut c = Client::new(src, port, t << 20);
                let mut path = Encoder::default();
                path.string(b"/data");
                let root = handle_in(&c.call(MOUNT, 1, path.as_slice()));
                let fail = |what: &str, status: u32| {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("{what}: status {status}"));
                };
                for k in 0..30u32 {
                    let d = format!("d{}", (t * 7 + k) % 200);
                    let (st, res) = c.nfs(&Nfs3Call::Lookup(DirOpArgs {
                        dir: root,
                        name: d.as_bytes(),
                    }));
                    if st != 0 {
                        fail("LOOKUP dir", st);
                        continue;
                    }
                    let dir = handle_in(&res);
                    let (st, _) = c.nfs(&Nfs3Call::Readdirplus {
                        dir,
                        cookie: 0,
                        verf: Verifier::default(),
                        dircount: 4096,
                        maxcount: 32_768,
                    });
                    if st != 0 {
                        fail("READDIRPLUS", st);
                    }
                    for g in 0..5 {
                        let name = format!("g{g}");
                        let (st, res) = c.nfs(&Nfs3Call::Lookup(DirOpArgs {
                            dir,
                            name: name.as_bytes(),
                        }));
                        if st != 0 {
                            fail("LOOKUP file", st);
                            continue;
                        }
                        let (st, _) = c.nfs(&Nfs3Call::Read {
                            fh: handle_in(&res),
                            offset: 0,
                            count: 100,
                        });
                        if st != 0 {
                            fail("READ", st);
                        }
                    }
                    let f = format!("f{}", (t * 13 + k) % 500);
                    let (st, res) = c.nfs(&Nfs3Call::Lookup(DirOpArgs {
                        dir: root,
                        name: f.as_bytes(),
                    }));
                    if st != 0 {
                        fail("LOOKUP f", st);
                        continue;
                    }
                    let (st, _) = c.nfs(&Nfs3Call::Write {
                        fh: handle_in(&res),
                        offset: 0,
                        stable: StableHow::FileSync,
                        data: b"content",
                    });
                    if st != 0 {
                        fail("WRITE", st);
                    }
                }
                *reconnects.lock().unwrap() += c.reconnects;
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{} calls failed, e.g. {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(5)],
        server.log()
    );
    // The limit was reached: some clients were turned away and came back.
    assert!(*reconnects.lock().unwrap() > 0, "{}", server.log());
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
}
