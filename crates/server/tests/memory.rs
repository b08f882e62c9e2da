#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Hostile clients cannot grow the server's memory beyond its budgets.
//!
//! A test binary of its own, with one test, so that the RSS measured is
//! the server's and not other tests'.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vmshare_server::Limits;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}

const MIB: u64 = 1024;

#[test]
fn many_clients_with_big_records_stay_within_budget() {
    // Every client here comes from 127.0.0.1: the per-address cap would
    // refuse most of them before the budgets are reached, which are what
    // this test is about.
    let limits = Limits {
        max_connections_per_client: Limits::default().max_connections,
        ..Limits::default()
    };
    let budget_kib = ((limits.request_budget + limits.reply_budget) >> 10) as u64;
    let server = start("memory", limits);
    let addr = server.local_addr();
    let mut probe = connect(addr);
    send(&mut probe, &call(1, NFS, 3, 0, &[]));
    assert!(recv(&mut probe).is_some());
    let base = status_kib("VmRSS:");

    // Phase 1: 100 clients each announce a 1 MiB record and send half of it,
    // then stall. Unbounded, that would pin 50 MiB.
    let half = Arc::new(vec![0u8; 512 * 1024]);
    let mut stallers = Vec::new();
    for _ in 0..100 {
        let half = Arc::clone(&half);
        stallers.push(std::thread::spawn(move || {
            let mut s = connect(addr);
            s.set_write_timeout(Some(Duration::from_secs(4)))
                .expect("timeout");
            let _ = s.write_all(&vmshare_wire::record::mark(1 << 20));
            let _ = s.write_all(&half);
            s
        }));
    }
    let stallers: Vec<_> = stallers
        .into_iter()
        .map(|t| t.join().expect("staller"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let stalled_rss = status_kib("VmRSS:");

    // Meanwhile another client is still served: stalled partial records are
    // dropped once others wait for memory.
    let t = Instant::now();
    let mut good = connect(addr);
    send(&mut good, &call(2, NFS, 3, 0, &[]));
    assert!(
        recv(&mut good).is_some(),
        "a well-behaved client was not served"
    );
    let waited = t.elapsed();
    drop(stallers);

    // Phase 2: 16 clients each send 16 complete 1 MiB WRITE-sized records
    // (garbage arguments, answered at once) as fast as they can.
    // Each with its own XID: the same XID and arguments from one address
    // is a retransmission, which the duplicate request cache may drop
    // while the first is still running.
    let filler = Arc::new(vec![0xeeu8; 1 << 20]);
    let writers: Vec<_> = (0..16u32)
        .map(|w| {
            let filler = Arc::clone(&filler);
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let mut r = s.try_clone().expect("clone");
                let reader =
                    std::thread::spawn(move || (0..16).filter(|_| recv(&mut r).is_some()).count());
                for i in 0..16u32 {
                    // One shared filler, so the client side holds little.
                    let head = call(1000 + w * 16 + i, NFS, 3, 7, &[]);
                    let sent = s
                        .write_all(&vmshare_wire::record::mark(1 << 20))
                        .and_then(|()| s.write_all(&head))
                        .and_then(|()| s.write_all(&filler[head.len()..]));
                    if sent.is_err() {
                        break;
                    }
                }
                reader.join().expect("reader")
            })
        })
        .collect();
    let answered: usize = writers.into_iter().map(|t| t.join().expect("writer")).sum();
    let peak = status_kib("VmHWM:");
    eprintln!(
        "base {base} KiB, stalled {stalled_rss} KiB, peak {peak} KiB, budget {budget_kib} KiB, \
         good client waited {waited:?}, answered {answered}/256"
    );
    assert_eq!(answered, 256);
    assert!(
        waited < Duration::from_secs(5),
        "good client waited {waited:?}"
    );
    // The client side of this test holds ~2.5 MiB of buffers and up to 232
    // threads with the server's (stacks, allocator arenas): measured peaks
    // range from budget + 0 to budget + 8 MiB on a loaded machine. Without
    // the budgets, phase 1 alone would add 50 MiB.
    assert!(
        stalled_rss < base + budget_kib / 2 + 6 * MIB,
        "stalled: {stalled_rss} KiB vs base {base} KiB"
    );
    assert!(
        peak < base + budget_kib + 12 * MIB,
        "peak: {peak} KiB vs base {base} KiB"
    );
    server.shutdown();
}
