//! Tests that need a handler with side effects, plugged in through the
//! crate-internal [`Handler`] seam. Test code only: its `expect`s fail a
//! test, never the server.
#![cfg(test)]

use super::*;
use std::io::{Read, Write};
use std::sync::atomic::AtomicU32;
use vmshare_wire::record::mark;
use vmshare_wire::rpc::{encode_call, encode_reply_header, parse_reply};
use vmshare_wire::{AcceptStat, Credential, ReplyBody};

/// Answers every call with a counter of calls run; XID 6 is slow.
#[derive(Default)]
struct Counting {
    runs: AtomicU32,
}

impl Handler for Counting {
    fn handle(&self, _client: &Client, call: &CallHeader<'_>, out: &mut Encoder) {
        if call.xid == 6 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        encode_reply_header(out, call.xid, ReplyBody::Accepted(AcceptStat::Success));
        out.u32(n);
    }
}

fn start(handler: Arc<Counting>) -> RunningServer {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let addrs = BoundAddrs {
        nfs: addr,
        mount: None,
        portmap: None,
    };
    Server::with_handler(
        handler,
        vec![(Role::Nfs, l)],
        addrs,
        Vec::new(),
        Limits::default(),
    )
    .spawn()
    .expect("spawn")
}

const CREATE: u32 = 8;
const WRITE: u32 = 7;
const GETATTR: u32 = 1;

fn send_call(s: &mut TcpStream, xid: u32, proc_: u32, args: &[u8]) {
    let mut e = Encoder::default();
    e.u32(0);
    encode_call(&mut e, xid, 100_003, 3, proc_, &Credential::None);
    e.fixed(args);
    let len = u32::try_from(e.len() - 4).expect("len");
    e.patch_bytes(0, &mark(len));
    s.write_all(e.as_slice()).expect("send");
}

fn recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut m = [0u8; 4];
    s.read_exact(&mut m).ok()?;
    let mut body = vec![0u8; (u32::from_be_bytes(m) & 0x7fff_ffff) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn counter(reply: &[u8]) -> (u32, u32) {
    let r = parse_reply(reply).expect("reply");
    let n = r
        .results
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .expect("counter");
    (r.xid, n)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

#[test]
fn retransmitted_create_gets_the_original_reply() {
    let h = Arc::new(Counting::default());
    let server = start(Arc::clone(&h));
    let mut s = connect(server.local_addr());
    send_call(&mut s, 5, CREATE, b"dirfh+name");
    let first = recv(&mut s).expect("reply");
    send_call(&mut s, 5, CREATE, b"dirfh+name");
    let second = recv(&mut s).expect("reply");
    assert_eq!(first, second);
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    // After a reconnect (new source port) the cache still answers.
    drop(s);
    let mut s = connect(server.local_addr());
    send_call(&mut s, 5, CREATE, b"dirfh+name");
    assert_eq!(recv(&mut s).expect("reply"), first);
    assert_eq!(h.runs.load(Ordering::SeqCst), 1);
    // Other arguments under the same XID are another call.
    send_call(&mut s, 5, CREATE, b"dirfh+other");
    assert_eq!(counter(&recv(&mut s).expect("reply")), (5, 2));
}

#[test]
fn idempotent_calls_are_not_cached() {
    let h = Arc::new(Counting::default());
    let server = start(Arc::clone(&h));
    let mut s = connect(server.local_addr());
    send_call(&mut s, 9, GETATTR, b"fh");
    assert_eq!(counter(&recv(&mut s).expect("reply")), (9, 1));
    send_call(&mut s, 9, GETATTR, b"fh");
    assert_eq!(counter(&recv(&mut s).expect("reply")), (9, 2));
}

#[test]
fn retransmission_of_a_running_call_is_dropped() {
    let h = Arc::new(Counting::default());
    let server = start(Arc::clone(&h));
    let mut s = connect(server.local_addr());
    // A FILE_SYNC WRITE, which runs on a worker even when it is alone (a
    // lone CREATE runs on the reader, which then reads its retransmission
    // only once it is done, and answers that from the cache).
    let mut write = Encoder::default();
    write.opaque(b"fh").u64(0).u32(4).u32(2).opaque(b"data");
    send_call(&mut s, 6, WRITE, write.as_slice());
    std::thread::sleep(Duration::from_millis(50));
    send_call(&mut s, 6, WRITE, write.as_slice());
    send_call(&mut s, 7, GETATTR, b"fast");
    let mut got = [
        counter(&recv(&mut s).expect("reply")),
        counter(&recv(&mut s).expect("reply")),
    ];
    got.sort_unstable();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![6, 7]);
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(recv(&mut s).is_none(), "the duplicate was answered");
    assert_eq!(h.runs.load(Ordering::SeqCst), 2);
}

#[test]
fn server_handles_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Server>();
    assert_send_sync::<RunningServer>();
    assert_send_sync::<ServerConfig>();
}

/// Connections are capped to what the open-file limit leaves once the
/// caches are full, never below the floor, and not touched when it
/// leaves enough.
#[test]
fn connections_fit_the_open_file_limit() {
    let asked = Limits::default();
    let fixed = fixed_descriptors(&asked);
    let roomy = fit_connections(asked.clone(), 1000, Some(1 << 20));
    assert_eq!(roomy.max_connections, asked.max_connections);
    assert_eq!(
        roomy.max_connections_per_client,
        asked.max_connections_per_client
    );
    let tight = fit_connections(asked.clone(), 96, Some(96 + fixed + 40));
    assert_eq!(tight.max_connections, 40);
    assert_eq!(tight.max_connections_per_client, 40);
    let starved = fit_connections(asked.clone(), 96, Some(100));
    assert_eq!(starved.max_connections, MIN_CONNECTIONS);
    let unknown = fit_connections(asked.clone(), 96, None);
    assert_eq!(unknown.max_connections, asked.max_connections);
}
