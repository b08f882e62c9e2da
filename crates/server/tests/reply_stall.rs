#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Clients that send calls and never read the replies hold the replies'
//! bytes. They must not hold the reply memory every other client needs for
//! long: once others wait for it, a connection whose replies have not moved
//! for two seconds is closed. (Before, they were closed only after the send
//! timeout, and meanwhile no call of any client was answered.) Nor may
//! clients that read or send at a trickle, which never stall, hold it for
//! long, or keep a client on their own address (every guest behind QEMU's
//! user network is 127.0.0.1) from being served.
//!
//! A test binary of its own: it fills the server's budgets.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vmshare_proto::nfs3::{FileHandle, Nfs3Call, StableHow};
use vmshare_server::Limits;

/// A server (send timeout 120 s) exporting one file `f` of `size` bytes,
/// and the file's handle.
fn serve_one_file(name: &str, size: usize) -> (vmshare_server::RunningServer, FileHandle) {
    let dir = state_dir(name);
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export dir");
    std::fs::write(export.join("f"), vec![7u8; size]).expect("file");
    let limits = Limits {
        send_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let server = serve_export(&export, limits);
    let mut s = connect(server.local_addr());
    let root = mount_data(&mut s);
    let fh = lookup(&mut s, root, b"f");
    (server, fh)
}

/// A connection whose receive buffer is tiny, so that the server's replies
/// pile up on its side.
fn hoarder(addr: SocketAddr) -> TcpStream {
    hoarder_from(addr, None)
}

/// [`hoarder`], from the local address `src` if given.
fn hoarder_from(addr: SocketAddr, src: Option<&str>) -> TcpStream {
    socket_from(addr, src, Some(4096))
}

/// A connection from the local address `src` if given, with a receive
/// buffer of `rcvbuf` bytes if given.
fn socket_from(addr: SocketAddr, src: Option<&str>, rcvbuf: Option<usize>) -> TcpStream {
    use rustix::net::{bind, connect, socket, sockopt, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    if let Some(n) = rcvbuf {
        sockopt::set_socket_recv_buffer_size(&fd, n).expect("SO_RCVBUF");
    }
    if let Some(src) = src {
        let from: SocketAddr = format!("{src}:0").parse().expect("source address");
        bind(&fd, &from).expect("bind the source address");
    }
    connect(&fd, &addr).expect("connect");
    TcpStream::from(fd)
}

/// Hoarders on one address that never read their 1 MiB READ replies fill
/// the reply budget. A client on another address still has its 1 MiB READs
/// answered at once, from the reserve that an address holding nothing may
/// take, instead of after the pressure rule closed hoarders (two seconds a
/// wave: the first READ took 2-8 s with 60 hoarders). Nor do hoarders' calls
/// park the workers: each waits for reply memory on its own reader.
#[test]
fn another_address_reads_at_once_while_hoarders_fill_the_reply_budget() {
    let (server, fh) = serve_one_file("reply-reserve", 2 << 20);
    let addr = server.local_addr();
    let read = |xid: u32| {
        nfs_call(
            xid,
            &Nfs3Call::Read {
                fh,
                offset: 0,
                count: 1 << 20,
            },
        )
    };
    let mut hoarders = Vec::new();
    for c in 0..24u32 {
        let mut h = hoarder_from(addr, Some("127.0.0.2"));
        let mut batch = Vec::new();
        for i in 0..16u32 {
            batch.extend_from_slice(&framed(&read(10_000 + 100 * c + i)));
        }
        h.write_all(&batch).expect("hoarder's calls");
        hoarders.push(h);
    }
    std::thread::sleep(Duration::from_millis(500));

    let mut honest = connect_from(addr, "127.0.0.3");
    let t = Instant::now();
    for i in 0..5 {
        send(&mut honest, &read(20 + i));
        let r = recv(&mut honest).expect("READ reply");
        assert!(r.len() > 1 << 20, "a whole 1 MiB READ");
    }
    let took = t.elapsed();
    // A READ takes milliseconds here; the pressure rule would have made
    // the first alone wait two seconds.
    assert!(
        took < Duration::from_millis(1500),
        "five 1 MiB READs beside {} hoarders took {took:?}",
        hoarders.len()
    );
    drop(hoarders);
    server.shutdown();
}

#[test]
fn clients_that_never_read_replies_do_not_stall_the_others() {
    // The send timeout (120 s) is far longer than the bound asserted
    // below: only the pressure rule can answer the honest client in time.
    let budget = Limits::default().reply_budget;
    let (server, fh) = serve_one_file("reply-stall", 128 * 1024);
    let addr = server.local_addr();

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

/// Reads 2 KB from each of `streams` every half second until `stop`: a
/// client that takes every byte, slowly enough to hold its replies'
/// memory for minutes, and so never "stalls".
fn trickle_reader(streams: Vec<TcpStream>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for s in &streams {
            s.set_nonblocking(true).expect("nonblocking");
        }
        while !stop.load(Ordering::Relaxed) {
            for mut s in &streams {
                let _ = std::io::Read::read(&mut s, &mut buf);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// `n` hoarders from `src`, each with 16 pipelined 1 MiB READs of `fh`,
/// reading their replies at a trickle.
fn trickling_hoarders(
    addr: SocketAddr,
    src: &str,
    fh: FileHandle,
    n: u32,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let mut hoarders = Vec::new();
    for c in 0..n {
        let mut h = hoarder_from(addr, Some(src));
        let mut batch = Vec::new();
        for i in 0..16u32 {
            let read = Nfs3Call::Read {
                fh,
                offset: 0,
                count: 1 << 20,
            };
            batch.extend_from_slice(&framed(&nfs_call(10_000 + 100 * c + i, &read)));
        }
        h.write_all(&batch).expect("hoarder's calls");
        hoarders.push(h);
    }
    trickle_reader(hoarders, Arc::clone(stop))
}

/// An ordinary connection from `src` (60 s read timeout).
fn connect_from(addr: SocketAddr, src: &str) -> TcpStream {
    let s = socket_from(addr, Some(src), None);
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s
}

/// Hoarders that read their 1 MiB replies at a trickle fill the reply
/// budget from the address a guest shares with them. The guest, which has
/// taken every reply it was sent, still has its READs answered at once
/// from the reserve. (It waited for the hoarders to be closed, which never
/// came: they keep moving bytes. A real guest's sixteen `O_DIRECT` 1 MiB
/// reads took 142 s beside 60 of them.)
#[test]
fn a_client_on_the_hoarders_address_that_takes_its_replies_reads_at_once() {
    let (server, fh) = serve_one_file("reply-trickle-same", 2 << 20);
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = trickling_hoarders(addr, "127.0.0.4", fh, 24, &stop);
    std::thread::sleep(Duration::from_millis(500));

    let mut guest = connect_from(addr, "127.0.0.4");
    // What a mount does first: small calls, their replies taken.
    send(&mut guest, &call(1, NFS, 3, 0, &[]));
    assert!(recv(&mut guest).is_some(), "NULL answered");
    let t = Instant::now();
    for i in 0..5 {
        let read = Nfs3Call::Read {
            fh,
            offset: 0,
            count: 1 << 20,
        };
        send(&mut guest, &nfs_call(20 + i, &read));
        let r = recv(&mut guest).expect("READ reply");
        assert!(r.len() > 1 << 20, "a whole 1 MiB READ");
    }
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    assert!(
        took < Duration::from_millis(1500),
        "five 1 MiB READs beside 24 trickling hoarders on the same address took {took:?}"
    );
    server.shutdown();
}

/// A client that has not yet shown that it takes its replies (its first
/// call is a 1 MiB READ) waits for reply memory beside trickling hoarders
/// on its address; while it waits, hoarders whose replies move slower
/// than the server's floor are closed, and it is answered.
#[test]
fn trickling_readers_are_closed_while_others_wait_for_reply_memory() {
    let (server, fh) = serve_one_file("reply-trickle-closed", 2 << 20);
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = trickling_hoarders(addr, "127.0.0.5", fh, 24, &stop);
    std::thread::sleep(Duration::from_millis(500));

    let mut newcomer = connect_from(addr, "127.0.0.5");
    let t = Instant::now();
    let read = Nfs3Call::Read {
        fh,
        offset: 0,
        count: 1 << 20,
    };
    send(&mut newcomer, &nfs_call(30, &read));
    let answered = recv(&mut newcomer).is_some_and(|r| r.len() > 1 << 20);
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    // Each hoarder's reply moves at 4 KB/s: past two seconds of pressure
    // it is below the floor (256 KiB/s), and the first hoarders go.
    // Without the floor they were never closed: they keep taking bytes,
    // so neither the pressure rule nor the 120 s send timeout fired.
    assert!(
        answered && took < Duration::from_secs(20),
        "a first 1 MiB READ beside trickling hoarders: answered {answered} after {took:?}"
    );
    server.shutdown();
}

/// The same for requests: connections that send 1 MiB WRITE records at a
/// trickle hold the request budget. A client on their address whose last
/// record arrived at pace still has its 1 MiB WRITEs read at once. (Before,
/// the first took 10 s, until the trickling senders were closed.)
#[test]
fn a_client_on_the_trickling_senders_address_writes_at_once() {
    let (server, fh) = serve_one_file("request-trickle-same", 4096);
    let addr = server.local_addr();
    let data = vec![5u8; 1 << 20];
    let write = |xid| {
        framed(&nfs_call(
            xid,
            &Nfs3Call::Write {
                fh,
                offset: 0,
                stable: StableHow::Unstable,
                data: &data,
            },
        ))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for c in 0..24u32 {
        let s = connect_from(addr, "127.0.0.6");
        senders.push((s, write(40_000 + c)));
    }
    let stop2 = Arc::clone(&stop);
    let trickle = std::thread::spawn(move || {
        let mut at = 0;
        while !stop2.load(Ordering::Relaxed) {
            for (s, record) in &mut senders {
                if let Some(chunk) = record.get(at..(at + 2048).min(record.len())) {
                    let _ = s.write_all(chunk);
                }
            }
            at += 2048;
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    std::thread::sleep(Duration::from_secs(1));

    let mut guest = connect_from(addr, "127.0.0.6");
    send(&mut guest, &call(1, NFS, 3, 0, &[]));
    assert!(recv(&mut guest).is_some(), "NULL answered");
    let t = Instant::now();
    for i in 0..5 {
        guest.write_all(&write(50 + i)).expect("WRITE sent");
        let r = recv(&mut guest).expect("WRITE reply");
        assert_eq!(parse(&r).xid, 50 + i);
    }
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = trickle.join();
    assert!(
        took < Duration::from_millis(1500),
        "five 1 MiB WRITEs beside 24 trickling senders on the same address took {took:?}"
    );
    server.shutdown();
}
