#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The server's housekeeping: a file the host removes is closed within a
//! few seconds, so that its space is freed, with no call from the client.

mod common;

use std::time::{Duration, Instant};

use common::{mount_data, nfs_call, recv, send};
use vmshare_proto::nfs3::Nfs3Call;
use vmshare_server::Limits;

/// Descriptors of this process (the server runs in it) open on `path`
/// after its removal.
fn open_on(path: &std::path::Path) -> usize {
    let deleted = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.as_os_str() == deleted.as_str())
        .count()
}

#[test]
fn a_file_removed_on_the_host_is_closed_by_the_server() {
    let dir = common::state_dir("housekeeping");
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("mkdir");
    let file = export.join("big");
    std::fs::write(&file, vec![7u8; 1 << 20]).expect("write");
    let server = common::serve_export(&export, Limits::default());
    let mut s = common::connect(server.local_addr());
    let root = mount_data(&mut s);
    let fh = common::lookup(&mut s, root, b"big");
    let read = Nfs3Call::Read {
        fh,
        offset: 0,
        count: 4096,
    };
    send(&mut s, &nfs_call(3, &read));
    recv(&mut s).expect("READ reply");

    std::fs::remove_file(&file).expect("rm");
    assert!(open_on(&file) > 0, "the server holds the file it served");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_on(&file) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open_on(&file), 0, "still open 10 s after its removal");
    server.shutdown();
}
