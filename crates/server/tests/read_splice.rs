#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Large READs, whose data the server splices from the file through a pipe
//! to the socket: the bytes, the count, EOF and the XDR padding must be
//! exactly those of a copied reply, also with many in flight on one
//! connection and with short reads at the end of the file.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use vmshare_proto::nfs3::{Nfs3Call, FATTR_SIZE};
use vmshare_server::Limits;
use vmshare_wire::{AcceptStat, Decoder, ReplyBody};

const SIZE: usize = 3 * 1024 * 1024 + 5;

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(7919) >> 3).to_le_bytes()[0]
}

/// The accepted results of a reply, checked for SUCCESS.
fn results(reply: &[u8]) -> (u32, Vec<u8>) {
    let r = parse(reply);
    assert!(
        matches!(r.body, ReplyBody::Accepted(AcceptStat::Success)),
        "{:?}",
        r.body
    );
    (r.xid, r.results.to_vec())
}

struct Read {
    count: u32,
    eof: bool,
    data: Vec<u8>,
}

fn read_res(results: &[u8]) -> Read {
    let mut d = Decoder::new(results);
    assert_eq!(d.u32().expect("status"), 0, "READ failed");
    assert!(d.bool().expect("attr follows"));
    d.fixed::<FATTR_SIZE>().expect("fattr");
    let count = d.u32().expect("count");
    let eof = d.bool().expect("eof");
    let data = d.opaque(1 << 21).expect("data").to_vec();
    assert_eq!(d.remaining(), 0, "bytes after the data");
    Read { count, eof, data }
}

#[test]
fn spliced_reads_carry_exact_bytes_and_padding() {
    let dir = state_dir("splice-export");
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export dir");
    let data: Vec<u8> = (0..SIZE).map(pattern).collect();
    std::fs::write(export.join("big"), &data).expect("file");
    let server = serve_export(&export, Limits::default());
    let mut s = connect(server.local_addr());
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let root = mount_data(&mut s);
    let fh = lookup(&mut s, root, b"big");

    // (offset, count): whole MiBs, an odd length at an odd offset (padding
    // 3), a read running past EOF (5 bytes back, padding 3), one at EOF.
    let reads: [(u64, u32); 6] = [
        (0, 1 << 20),
        (1 << 20, 1 << 20),
        (7, 65_537),
        (2 << 20, 1 << 20),
        (3 << 20, 1 << 20),
        (SIZE as u64, 1 << 20),
    ];
    // All in flight at once, so replies (spliced or not) interleave on
    // the connection and a framing mistake would garble the next one.
    let mut batch = Vec::new();
    for (i, (offset, count)) in reads.iter().enumerate() {
        let c = Nfs3Call::Read {
            fh,
            offset: *offset,
            count: *count,
        };
        batch.extend_from_slice(&framed(&nfs_call(100 + u32::try_from(i).expect("xid"), &c)));
    }
    s.write_all(&batch).expect("send reads");
    for _ in 0..reads.len() {
        let (xid, r) = results(&recv(&mut s).expect("READ reply"));
        let (offset, count) = reads[(xid - 100) as usize];
        let got = read_res(&r);
        let start = usize::try_from(offset).unwrap_or(SIZE).min(SIZE);
        let end = (start + count as usize).min(SIZE);
        assert_eq!(got.count as usize, end - start, "count at {offset}");
        assert_eq!(got.data.len(), end - start, "data length at {offset}");
        assert!(got.data == data[start..end], "data differs at {offset}");
        assert_eq!(got.eof, end == SIZE, "eof at {offset}");
    }
    // The connection is still in step.
    send(&mut s, &call(999, NFS, 3, 0, &[]));
    assert_eq!(results(&recv(&mut s).expect("NULL reply")).0, 999);
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
