#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A client that never reads its replies must not make the server hold
//! more READ pipes (two descriptors each) than the descriptor budget
//! (`fixed_descriptors`) allows for: the reply budget's count of 1 MiB
//! READs. A spliced reply is charged only the bytes it carries, so a
//! 64 KiB READ that finds one byte holds a pipe for about 600 bytes of
//! reply budget.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use vmshare_proto::nfs3::Nfs3Call;
use vmshare_server::Limits;

fn pipe_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("pipe:"))
        .count()
}

#[test]
fn a_client_that_reads_nothing_cannot_pin_a_pipe_per_call() {
    let dir = state_dir("pipe-leases");
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export dir");
    std::fs::write(export.join("one"), b"x").expect("one");
    let limits = Limits::default();
    let budget_pipes = limits.reply_budget / vmshare_proto::MAX_IO as usize + 2;
    let server = serve_export(&export, limits);
    let mut s = connect(server.local_addr());
    let root = mount_data(&mut s);
    let one = lookup(&mut s, root, b"one");
    let before = pipe_fds();
    // Spliced READs (64 KiB asked, one byte found) until every socket
    // buffer on the way back is full and replies wait in the server.
    let mut batch = Vec::new();
    for xid in 0..1000 {
        batch.extend(framed(&nfs_call(
            xid,
            &Nfs3Call::Read {
                fh: one,
                offset: 0,
                count: 64 * 1024,
            },
        )));
    }
    let mut conns = Vec::new();
    for _ in 0..6 {
        let c = connect(server.local_addr());
        c.set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut w = c.try_clone().expect("clone");
        let batch = batch.clone();
        std::thread::spawn(move || {
            for _ in 0..60 {
                if w.write_all(&batch).is_err() {
                    return;
                }
            }
        });
        conns.push(c);
    }
    let mut held = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        held = held.max(pipe_fds().saturating_sub(before));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "at most {held} pipe descriptors held; the budget allows {}",
        2 * budget_pipes
    );
    assert!(
        held <= 2 * budget_pipes,
        "{held} pipe descriptors held for clients that read nothing; the descriptor budget \
         allows {}",
        2 * budget_pipes
    );
    drop(conns);
}
