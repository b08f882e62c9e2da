#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The server over a real TCP socket: framing, pipelining, bad input, caps.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use vmshare_server::Limits;
use vmshare_wire::rpc::RejectReply;
use vmshare_wire::{AcceptStat, ReplyBody};

#[test]
fn unknown_program_gets_prog_unavail() {
    let server = start("prog-unavail", Limits::default());
    let mut s = connect(server.local_addr());
    send(&mut s, &call(77, UNKNOWN_PROG, 1, 0, &[]));
    let reply = recv(&mut s).expect("reply");
    let r = parse(&reply);
    assert_eq!(r.xid, 77);
    assert_eq!(r.body, ReplyBody::Accepted(AcceptStat::ProgUnavail));
    server.shutdown();
}

#[test]
fn wrong_rpc_version_is_denied() {
    let server = start("rpc-mismatch", Limits::default());
    let mut s = connect(server.local_addr());
    let mut payload = call(5, NFS, 3, 0, &[]);
    payload[8..12].copy_from_slice(&3u32.to_be_bytes());
    send(&mut s, &payload);
    let reply = recv(&mut s).expect("reply");
    assert_eq!(
        parse(&reply).body,
        ReplyBody::Denied(RejectReply::RpcMismatch)
    );
}

#[test]
fn multi_fragment_record_is_joined() {
    let server = start("fragments", Limits::default());
    let mut s = connect(server.local_addr());
    let payload = call(9, UNKNOWN_PROG, 1, 0, &[0u8; 40]);
    let (a, rest) = payload.split_at(5);
    let (b, c) = rest.split_at(17);
    let mut stream = Vec::new();
    for (part, last) in [(a, false), (b, false), (&[][..], false), (c, true)] {
        let len = u32::try_from(part.len()).expect("len");
        stream.extend_from_slice(&(len | if last { 0x8000_0000 } else { 0 }).to_be_bytes());
        stream.extend_from_slice(part);
    }
    // Byte by byte, to exercise partial reads of marks and payloads.
    for byte in stream {
        s.write_all(&[byte]).expect("write");
    }
    let reply = recv(&mut s).expect("reply");
    assert_eq!(parse(&reply).xid, 9);
}

#[test]
fn fifty_pipelined_calls_get_fifty_replies() {
    let server = start("pipeline", Limits::default());
    let mut s = connect(server.local_addr());
    let mut batch = Vec::new();
    for xid in 1000..1050 {
        batch.extend_from_slice(&framed(&call(xid, UNKNOWN_PROG, 1, 0, &[])));
    }
    s.write_all(&batch).expect("write");
    let mut xids: Vec<u32> = (0..50)
        .map(|_| parse(&recv(&mut s).expect("reply")).xid)
        .collect();
    xids.sort_unstable();
    assert_eq!(xids, (1000..1050).collect::<Vec<_>>());
}

#[test]
fn in_flight_cap_does_not_lose_calls() {
    let limits = Limits {
        max_in_flight: 2,
        workers: 1,
        ..Limits::default()
    };
    let server = start("inflight", limits);
    let mut s = connect(server.local_addr());
    let mut batch = Vec::new();
    for xid in 0..200 {
        batch.extend_from_slice(&framed(&call(xid, UNKNOWN_PROG, 1, 0, &[])));
    }
    s.write_all(&batch).expect("write");
    for _ in 0..200 {
        recv(&mut s).expect("reply");
    }
}

#[test]
fn huge_mark_closes_only_that_connection() {
    let server = start("huge-mark", Limits::default());
    let mut good = connect(server.local_addr());
    let mut bad = connect(server.local_addr());
    bad.write_all(&0x7fff_ffffu32.to_be_bytes()).expect("write");
    assert!(is_closed(&mut bad));
    send(&mut good, &call(1, UNKNOWN_PROG, 1, 0, &[]));
    assert_eq!(parse(&recv(&mut good).expect("reply")).xid, 1);
}

#[test]
fn many_small_fragments_hit_the_record_cap() {
    let limits = Limits {
        max_record: 64 * 1024,
        ..Limits::default()
    };
    let server = start("frag-flood", limits);
    let mut bad = connect(server.local_addr());
    let mut frag = 1000u32.to_be_bytes().to_vec();
    frag.extend_from_slice(&[0u8; 1000]);
    let mut closed = false;
    for _ in 0..100 {
        if bad.write_all(&frag).is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed || is_closed(&mut bad));
}

#[test]
fn http_garbage_closes_the_connection() {
    let server = start("garbage", Limits::default());
    let mut bad = connect(server.local_addr());
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert!(is_closed(&mut bad));
}

#[test]
fn a_record_that_is_not_a_call_is_dropped() {
    let server = start("not-a-call", Limits::default());
    let mut s = connect(server.local_addr());
    // Too short to hold a header, then a REPLY, then an empty record, then
    // a real call: only the call is answered.
    send(&mut s, &[1, 2, 3]);
    send(&mut s, &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    s.write_all(&0x8000_0000u32.to_be_bytes()).expect("write");
    send(&mut s, &call(42, UNKNOWN_PROG, 1, 0, &[]));
    assert_eq!(parse(&recv(&mut s).expect("reply")).xid, 42);
}

#[test]
fn a_stalled_record_times_out() {
    let limits = Limits {
        record_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start("stall", limits);
    let mut staller = connect(server.local_addr());
    staller
        .write_all(&framed(&[0u8; 100])[..50])
        .expect("write");
    let t = Instant::now();
    assert!(is_closed(&mut staller));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    let mut good = connect(server.local_addr());
    send(&mut good, &call(3, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut good).is_some());
}

#[test]
fn idle_connection_is_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = start("idle", limits);
    let mut s = connect(server.local_addr());
    send(&mut s, &call(3, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut s).is_some());
    assert!(is_closed(&mut s));
}

/// A TCP connection to `addr` from the local address `from`.
fn connect_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    rustix::net::bind(&fd, &SocketAddr::new(from, 0)).expect("bind");
    rustix::net::connect(&fd, &addr).expect("connect");
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

#[test]
fn one_address_cannot_take_every_connection() {
    let limits = Limits {
        max_connections_per_client: 2,
        ..Limits::default()
    };
    let server = start("conn-cap-per-client", limits);
    let addr = server.local_addr();
    let one: IpAddr = "127.0.0.1".parse().expect("ip");
    let other: IpAddr = "127.0.0.2".parse().expect("ip");
    let mut a = connect_from(one, addr);
    let mut b = connect_from(one, addr);
    for s in [&mut a, &mut b] {
        send(s, &call(1, UNKNOWN_PROG, 1, 0, &[]));
        assert!(recv(s).is_some());
    }
    let mut c = connect_from(one, addr);
    assert!(is_closed(&mut c), "a third from the same address");
    let mut d = connect_from(other, addr);
    send(&mut d, &call(2, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut d).is_some(), "another address is served");
    send(&mut a, &call(3, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut a).is_some(), "the first two still are");
}

#[test]
fn connection_cap_refuses_extra_connections() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = start("conn-cap", limits);
    let mut a = connect(server.local_addr());
    let mut b = connect(server.local_addr());
    // Make sure both are registered before the third arrives.
    for s in [&mut a, &mut b] {
        send(s, &call(1, UNKNOWN_PROG, 1, 0, &[]));
        assert!(recv(s).is_some());
    }
    let mut c = connect(server.local_addr());
    assert!(is_closed(&mut c));
    drop(a);
    // The slot frees once the server notices the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = connect(server.local_addr());
        send(&mut d, &call(2, UNKNOWN_PROG, 1, 0, &[]));
        if recv(&mut d).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    send(&mut b, &call(3, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut b).is_some());
}

/// At the connection limit, the connection idle longest (past
/// `evict_idle`) is closed to admit a new one, as knfsd does; one in use is
/// not. Before, idle connections kept every new client out until the
/// 5-minute idle timeout.
#[test]
fn an_idle_connection_makes_way_for_a_new_one_at_the_limit() {
    let limits = Limits {
        max_connections: 2,
        evict_idle: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = start("conn-evict", limits);
    let addr = server.local_addr();
    let mut idle = connect(addr);
    let mut busy = connect(addr);
    for s in [&mut idle, &mut busy] {
        send(s, &call(1, UNKNOWN_PROG, 1, 0, &[]));
        assert!(recv(s).is_some());
    }
    let mut early = connect(addr);
    assert!(is_closed(&mut early), "none idle yet: refused");
    std::thread::sleep(Duration::from_millis(400));
    send(&mut busy, &call(2, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut busy).is_some());
    let mut new = connect(addr);
    send(&mut new, &call(3, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut new).is_some(), "the new connection is admitted");
    assert!(is_closed(&mut idle), "the idle one made way");
    send(&mut busy, &call(4, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut busy).is_some(), "the busy one stays");
}

/// With `local_peer_uid`, only connections from local sockets owned by
/// that uid are served: `vmshare run`'s server on loopback is for its own
/// QEMU, not for every user of the host (who could claim to be root).
#[test]
fn only_the_local_peer_uid_is_served_when_asked() {
    let me = rustix::process::geteuid().as_raw();
    for (uid, served) in [(me, true), (me.wrapping_add(1), false)] {
        let limits = Limits {
            local_peer_uid: Some(uid),
            ..Limits::default()
        };
        let server = start(&format!("peer-uid-{served}"), limits);
        let mut s = connect(server.local_addr());
        if served {
            send(&mut s, &call(1, UNKNOWN_PROG, 1, 0, &[]));
            assert!(recv(&mut s).is_some(), "its own user is served");
        } else {
            assert!(is_closed(&mut s), "another user's socket is refused");
        }
    }
}

/// With `local_peer_child` too, only a socket a child process holds is
/// served: `vmshare run`'s server is for its own QEMU, not for another
/// run's (of the same user), whose guest reaches the host's loopback too
/// and mounted this run's volumes. Here the test process itself is the
/// other program, and a child `bash` connecting with `/dev/tcp` the
/// server's own.
#[test]
fn only_a_child_process_is_served_when_asked() {
    let me = rustix::process::geteuid().as_raw();
    let limits = Limits {
        local_peer_uid: Some(me),
        local_peer_child: true,
        ..Limits::default()
    };
    let server = start("peer-child", limits);
    let addr = server.local_addr();
    let mut s = connect(addr);
    assert!(is_closed(&mut s), "a program not its child is refused");
    let request = framed(&call(1, UNKNOWN_PROG, 1, 0, &[]));
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && head -c {len} >&3 && \
             timeout 10 head -c 4 <&3 | wc -c",
            port = addr.port(),
            len = request.len()
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bash");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&request)
        .expect("request");
    let out = child.wait_with_output().expect("bash");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "4",
        "its child is served (a reply's record mark came back)"
    );
    server.shutdown();
}

#[test]
fn shutdown_is_prompt_with_clients_connected() {
    let server = start("shutdown", Limits::default());
    let addr = server.local_addr();
    let mut idle = connect(addr);
    let mut staller = connect(addr);
    staller
        .write_all(&framed(&[0u8; 100])[..10])
        .expect("write");
    send(&mut idle, &call(1, UNKNOWN_PROG, 1, 0, &[]));
    assert!(recv(&mut idle).is_some());
    let t = Instant::now();
    server.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(is_closed(&mut idle));
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
}

#[test]
fn from_listener_serves_a_given_socket() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let config = vmshare_server::ServerConfig::new(
        Vec::new(),
        "0.0.0.0:1".parse().expect("addr"),
        state_dir("from-listener"),
    );
    let server = vmshare_server::Server::from_listener(l, config).expect("server");
    let addr = server.local_addr();
    let server = server.spawn().expect("spawn");
    let mut s = connect(addr);
    send(&mut s, &call(8, UNKNOWN_PROG, 1, 0, &[]));
    assert_eq!(parse(&recv(&mut s).expect("reply")).xid, 8);
    server.shutdown();
}

/// Every listener answers, and the portmapper reports each program at its
/// own: GETPORT (v2) and GETADDR (rpcbind v4) for MOUNT give the MOUNT
/// listener, and the portmapper gives its own port, not NFS's.
#[test]
fn separate_mount_and_portmap_listeners() {
    use vmshare_wire::{Decoder, Encoder};
    let config = vmshare_server::ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        mount_listen: Some("127.0.0.1:0".parse().expect("addr")),
        portmap_listen: Some("127.0.0.1:0".parse().expect("addr")),
        state_dir: state_dir("separate"),
        ..Default::default()
    };
    let server = vmshare_server::Server::bind(config)
        .expect("bind")
        .spawn()
        .expect("spawn");
    let addrs = server.addrs();
    let (mount, portmap) = (addrs.mount.expect("mount"), addrs.portmap.expect("portmap"));
    for addr in [addrs.nfs, mount, portmap] {
        let mut s = connect(addr);
        send(&mut s, &call(8, UNKNOWN_PROG, 1, 0, &[]));
        assert_eq!(parse(&recv(&mut s).expect("reply")).xid, 8);
    }

    let mut s = connect(portmap);
    let mut ask = |xid: u32, vers: u32, proc_: u32, args: &Encoder| {
        send(&mut s, &call(xid, PORTMAP, vers, proc_, args.as_slice()));
        let reply = recv(&mut s).expect("reply");
        let r = parse(&reply);
        assert_eq!(r.body, ReplyBody::Accepted(AcceptStat::Success));
        r.results.to_vec()
    };
    let getport = |prog: u32, vers: u32| {
        let mut e = Encoder::default();
        e.u32(prog).u32(vers).u32(6).u32(0);
        e
    };
    let port = |b: Vec<u8>| Decoder::new(&b).u32().expect("port");
    assert_eq!(
        port(ask(1, 2, 3, &getport(NFS, 3))),
        u32::from(addrs.nfs.port())
    );
    assert_eq!(
        port(ask(2, 2, 3, &getport(MOUNT, 3))),
        u32::from(mount.port())
    );
    assert_eq!(
        port(ask(3, 2, 3, &getport(PORTMAP, 2))),
        u32::from(portmap.port())
    );

    let mut e = Encoder::default();
    e.u32(MOUNT).u32(3).string(b"tcp").string(b"").string(b"");
    let results = ask(4, 4, 3, &e);
    let uaddr = Decoder::new(&results).string(64).expect("uaddr").to_vec();
    let [hi, lo] = mount.port().to_be_bytes();
    assert_eq!(
        String::from_utf8_lossy(&uaddr),
        format!("127.0.0.1.{hi}.{lo}")
    );

    // Versions 2 to 4 are served; others get the range.
    send(&mut s, &call(5, PORTMAP, 5, 0, &[]));
    let reply = recv(&mut s).expect("reply");
    assert_eq!(
        parse(&reply).body,
        ReplyBody::Accepted(AcceptStat::ProgMismatch { low: 2, high: 4 })
    );
}

#[test]
fn nfs_null_round_trip() {
    let server = start("null", Limits::default());
    let mut s = connect(server.local_addr());
    send(&mut s, &call(11, NFS, 3, 0, &[]));
    let reply = recv(&mut s).expect("reply");
    let r = parse(&reply);
    assert_eq!(
        (r.xid, r.body),
        (11, ReplyBody::Accepted(AcceptStat::Success))
    );
    assert!(r.results.is_empty());
    // NFS v2 is not served.
    send(&mut s, &call(12, NFS, 2, 0, &[]));
    let reply = recv(&mut s).expect("reply");
    assert!(matches!(
        parse(&reply).body,
        ReplyBody::Accepted(AcceptStat::ProgMismatch { .. })
    ));
    // Nor is procedure 99.
    send(&mut s, &call(13, NFS, 3, 99, &[]));
    let reply = recv(&mut s).expect("reply");
    assert_eq!(
        parse(&reply).body,
        ReplyBody::Accepted(AcceptStat::ProcUnavail)
    );
    // Truncated GETATTR arguments.
    send(&mut s, &call(14, NFS, 3, 1, &[0, 0, 0, 200]));
    let reply = recv(&mut s).expect("reply");
    assert_eq!(
        parse(&reply).body,
        ReplyBody::Accepted(AcceptStat::GarbageArgs)
    );
}

/// Round trips per second of NULL calls, one outstanding per connection:
/// the server's own per-call cost. `cargo test --release -p vmshare-server
/// --test transport -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_null_round_trips() {
    let server = start("bench", Limits::default());
    for clients in [1usize, 4] {
        let addr = server.local_addr();
        let t = Instant::now();
        let total: usize = (0..clients)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = connect(addr);
                    let mut n = 0;
                    while t.elapsed() < Duration::from_secs(2) {
                        send(&mut s, &call(n, NFS, 3, 0, &[]));
                        recv(&mut s).expect("reply");
                        n += 1;
                    }
                    n as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("client"))
            .sum();
        eprintln!(
            "{clients} client(s): {:.0} calls/s",
            total as f64 / t.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn a_client_that_never_reads_replies_is_dropped_without_stalling_others() {
    let limits = Limits {
        send_timeout: Duration::from_millis(500),
        workers: 2,
        ..Limits::default()
    };
    let server = start("not-reading", limits);
    let addr = server.local_addr();
    let bad = connect(addr);
    bad.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut w = bad.try_clone().expect("clone");
    // ~12 MB of replies to fill every socket buffer on the way back.
    let flood = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for xid in 0..1000 {
            batch.extend_from_slice(&framed(&call(xid, NFS, 3, 0, &[])));
        }
        for _ in 0..300 {
            if w.write_all(&batch).is_err() {
                return true;
            }
        }
        false
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut good = connect(addr);
    for xid in 0..20 {
        send(&mut good, &call(xid, NFS, 3, 0, &[]));
        assert!(recv(&mut good).is_some());
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "good client took {:?}",
        t.elapsed()
    );
    assert!(
        flood.join().expect("flood"),
        "the server kept reading from a client that reads nothing"
    );
    drop(bad);
}
