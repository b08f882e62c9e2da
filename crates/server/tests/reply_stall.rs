//! Clients that send calls and never read the replies hold the replies'
//! bytes. They must not hold the reply memory every other client needs for
//! long: once others wait for it, a connection whose replies have not moved
//! for two seconds is closed. (Before, they were closed only after the send
//! timeout, and meanwhile no call of any client was answered.)
//!
//! A test binary of its own: it fills the server's reply budget.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use vmshare_proto::nfs3::{DirOpArgs, Nfs3Call};
use vmshare_server::Limits;

/// A connection whose receive buffer is tiny, so that the server's replies
/// pile up on its side.
fn hoarder(addr: SocketAddr) -> TcpStream {
    use rustix::net::{connect, socket, sockopt, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_recv_buffer_size(&fd, 4096).expect("SO_RCVBUF");
    connect(&fd, &addr).expect("connect");
    TcpStream::from(fd)
}

#[test]
fn clients_that_never_read_replies_do_not_stall_the_others() {
    let dir = state_dir("reply-stall");
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export dir");
    std::fs::write(export.join("f"), vec![7u8; 128 * 1024]).expect("file");
    let limits = Limits {
        // Far longer than the bound asserted below: only the pressure rule
        // can answer the honest client in time.
        send_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let budget = limits.reply_budget;
    let server = serve_export(&export, limits);
    let addr = server.local_addr();

    let mut s = connect(addr);
    let root = mount_data(&mut s);
    let lookup = Nfs3Call::Lookup(DirOpArgs {
        dir: root,
        name: b"f",
    });
    send(&mut s, &nfs_call(2, &lookup));
    let fh = handle(&recv(&mut s).expect("LOOKUP reply"), "LOOKUP");

    // Enough hoarders, each with 64 READs of 65,000 bytes in flight, to
    // ask for many times the reply budget: the kernel takes up to a few
    // MiB of each connection's replies into its send buffer, uncharged.
    let per_conn = 64 * 65_000;
    let n = (12 * budget).div_ceil(per_conn).max(8);
    let mut hoarders = Vec::new();
    for c in 0..n {
        let mut h = hoarder(addr);
        let mut batch = Vec::new();
        for i in 0..64u32 {
            let read = Nfs3Call::Read {
                fh,
                offset: 0,
                count: 65_000,
            };
            let xid = 1000 + i + 100 * u32::try_from(c).expect("xid");
            batch.extend_from_slice(&framed(&nfs_call(xid, &read)));
        }
        h.write_all(&batch).expect("hoarder's calls");
        hoarders.push(h);
    }
    std::thread::sleep(Duration::from_secs(1));

    let mut honest = connect(addr);
    honest
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let t = Instant::now();
    send(&mut honest, &call(3, NFS, 3, 0, &[]));
    let answered = recv(&mut honest).is_some();
    let took = t.elapsed();
    // The old code answered after the send timeout (30 s by default, 120
    // here); the pressure rule closes hoarders after about 2 s.
    assert!(
        answered && took < Duration::from_secs(20),
        "an honest NULL with {n} hoarding clients: answered {answered} after {took:?}"
    );
    // And hoarders were closed (the first ones stalled first): the server
    // says so with an EOF or a reset once the replies it sent are read.
    let mut closed = 0;
    for h in &mut hoarders {
        if closed > 0 {
            break;
        }
        h.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut sink = vec![0u8; 1 << 20];
        loop {
            match std::io::Read::read(h, &mut sink) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    closed += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    assert!(closed > 0, "no hoarding connection was closed");
    drop(hoarders);
    server.shutdown();
}
