#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! READDIR and READDIRPLUS on the wire: entries are encoded straight into
//! the reply, after room for a head that is filled in at the end, so the
//! head, the entry list and the client's size limit are checked here on
//! the bytes a client receives.

mod common;

use std::collections::BTreeMap;

use common::*;
use vmshare_proto::nfs3::{FileHandle, Nfs3Call, FATTR_SIZE};
use vmshare_server::Limits;
use vmshare_wire::{AcceptStat, Decoder, ReplyBody};

const FILES: u32 = 500;
const NFS3ERR_TOOSMALL: u32 = 10_005;

fn name(i: usize) -> String {
    // Lengths 7 to 46, so that entries of every padding come up.
    format!("f{i:05}-{}", "x".repeat(i % 40))
}

/// One page of a listing: the entries' (name, cookie, has attributes and
/// a handle), and eof.
struct Page {
    entries: Vec<(String, u64, bool)>,
    verf: [u8; 8],
    eof: bool,
}

fn page(results: &[u8], plus: bool) -> Page {
    let mut d = Decoder::new(results);
    assert_eq!(d.u32().expect("status"), 0, "listing failed");
    assert!(d.bool().expect("dir attributes follow"));
    d.fixed::<FATTR_SIZE>().expect("dir fattr");
    let verf = d.fixed::<8>().expect("verifier");
    let mut entries = Vec::new();
    while d.bool().expect("entry follows") {
        let fileid = d.u64().expect("fileid");
        let n = String::from_utf8(d.string(255).expect("name").to_vec()).expect("utf-8");
        let cookie = d.u64().expect("cookie");
        let mut full = false;
        if plus {
            let attr = d.bool().expect("attributes follow");
            if attr {
                let fattr = d.fixed::<FATTR_SIZE>().expect("fattr");
                // fattr3: type, mode, nlink, uid, gid, size, used, rdev (2
                // words), fsid, fileid.
                let id = u64::from_be_bytes(fattr[52..60].try_into().expect("8 bytes"));
                assert_eq!(id, fileid, "{n}: the entry's fileid and its attributes'");
            }
            let fh = d.bool().expect("handle follows");
            if fh {
                FileHandle::new(d.opaque(64).expect("handle")).expect("handle");
            }
            full = attr && fh;
        }
        entries.push((n, cookie, full));
    }
    let eof = d.bool().expect("eof");
    assert_eq!(d.remaining(), 0, "bytes after eof");
    Page { entries, verf, eof }
}

fn results(reply: &[u8]) -> Vec<u8> {
    let r = parse(reply);
    assert!(
        matches!(r.body, ReplyBody::Accepted(AcceptStat::Success)),
        "{:?}",
        r.body
    );
    r.results.to_vec()
}

/// Lists the whole directory in pages of at most `limit` bytes, checking
/// each page's size; every name with how often it came.
fn list(
    s: &mut std::net::TcpStream,
    dir: FileHandle,
    plus: bool,
    limit: u32,
) -> BTreeMap<String, usize> {
    let (mut cookie, mut verf) = (0, [0; 8]);
    let mut seen = BTreeMap::new();
    for xid in 100.. {
        let c = if plus {
            Nfs3Call::Readdirplus {
                dir,
                cookie,
                verf,
                dircount: limit / 8,
                maxcount: limit,
            }
        } else {
            Nfs3Call::Readdir {
                dir,
                cookie,
                verf,
                count: limit,
            }
        };
        send(s, &nfs_call(xid, &c));
        let r = results(&recv(s).expect("reply"));
        assert!(
            r.len() <= limit as usize,
            "a page of {} bytes, over the limit of {limit}",
            r.len()
        );
        let p = page(&r, plus);
        assert!(
            !p.entries.is_empty() || p.eof,
            "an empty page before the end"
        );
        for (n, c, full) in &p.entries {
            if plus && n != "." && n != ".." {
                assert!(full, "{n}: READDIRPLUS without attributes or handle");
            }
            *seen.entry(n.clone()).or_insert(0) += 1;
            cookie = *c;
        }
        verf = p.verf;
        if p.eof {
            break;
        }
        assert!(xid < 100 + FILES, "the listing does not end");
    }
    seen
}

#[test]
fn listings_fit_the_limit_and_name_every_entry_once() {
    let dir = state_dir("readdir");
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export dir");
    for i in 0..FILES as usize {
        std::fs::write(export.join(name(i)), b"x").expect("file");
    }
    // And one name as long as a name can be, for the smallest reads.
    let long = "L".repeat(255);
    std::fs::write(export.join(&long), b"x").expect("file");
    let server = serve_export(&export, Limits::default());
    let mut s = connect(server.local_addr());
    let root = mount_data(&mut s);

    let mut want: BTreeMap<String, usize> = (0..FILES as usize).map(|i| (name(i), 1)).collect();
    want.insert(".".into(), 1);
    want.insert("..".into(), 1);
    want.insert(long, 1);
    for (plus, limit) in [(true, 4096), (true, 65_536), (false, 1024), (false, 8192)] {
        assert_eq!(
            list(&mut s, root, plus, limit),
            want,
            "plus {plus}, limit {limit}"
        );
    }

    // A limit too small for even one entry: NFS3ERR_TOOSMALL, with the
    // directory's attributes and nothing else.
    let c = Nfs3Call::Readdirplus {
        dir: root,
        cookie: 0,
        verf: [0; 8],
        dircount: 16,
        maxcount: 128,
    };
    send(&mut s, &nfs_call(7, &c));
    let r = results(&recv(&mut s).expect("reply"));
    let mut d = Decoder::new(&r);
    assert_eq!(d.u32().expect("status"), NFS3ERR_TOOSMALL);
    assert!(d.bool().expect("attributes follow"));
    d.fixed::<FATTR_SIZE>().expect("fattr");
    assert_eq!(d.remaining(), 0);
    server.shutdown();
}
