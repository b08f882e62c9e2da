#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Linux kernel NFS client is the judge: a QEMU microVM (Debian's
//! kernel, TCG here) mounts exports of an in-process vmshare server and
//! runs the operations a real workload does; the host then checks what
//! landed on disk.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{GuestMount, GuestNetwork};
use vmshare_server::{
    ClientMatch, ClientRule, ExportConfig, ExportOptions, Server, ServerConfig, Squash,
};

fn export(path: &Path, mount: &str, opts: ExportOptions) -> ExportConfig {
    ExportConfig::new(
        path,
        mount,
        vec![ClientRule {
            client: ClientMatch::Any,
            options: opts,
        }],
    )
}

/// A scratch directory for a test, and its `data` directory, made.
fn data_dir(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let top = common::scratch_dir(test);
    let data = top.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    (top, data)
}

/// The md5 of a host file, as md5sum prints it.
fn host_md5(p: &Path) -> String {
    let o = std::process::Command::new("md5sum")
        .arg(p)
        .output()
        .expect("md5sum");
    String::from_utf8_lossy(&o.stdout)
        .split(' ')
        .next()
        .unwrap_or("")
        .to_string()
}

/// The guest's stdout, once it is known to have exited 0; else a panic
/// with its output and the server's log.
fn guest_stdout(out: &common::GuestOutput, log: &str) -> String {
    let stdout = out.stdout_str();
    assert_eq!(
        out.status,
        0,
        "stdout:\n{stdout}\nstderr:\n{}\nerrors: {:?}\nserver log:\n{log}",
        out.stderr_str(),
        out.errors
    );
    stdout.to_string()
}

fn nfs_mount(name: &str, export: &str, target: &str, port: u16) -> GuestMount {
    GuestMount {
        name: name.into(),
        source: format!("10.0.2.2:{export}"),
        target: target.into(),
        fstype: "nfs".into(),
        data: common::nfs_options("10.0.2.2", port),
        readonly: false,
        flags: vec![],
        file: false,
        retry: true,
        mkdir: Vec::new(),
    }
}

const SCRIPT: &str = r#"
set -e
cd /mnt/rw
# write / read / append with checksums
dd if=/dev/urandom of=rand.bin bs=65536 count=48 2>/dev/null
md5sum rand.bin | cut -d' ' -f1 > rand.md5
echo first > app.txt
echo second >> app.txt
cat app.txt | md5sum | cut -d' ' -f1 > app.md5
# create, rename across directories and over an existing file, remove
mkdir -p d1/d2 gone
echo a > d1/a; echo b > d1/d2/b; echo old > target
mv d1/a d1/d2/a-moved
mv d1/d2/b target
rm d1/d2/a-moved
rmdir gone
# hard link, symlink, readlink
echo linked > orig; ln orig hard; ln -s orig soft
test "$(readlink soft)" = orig
test "$(cat soft)" = linked
# a symlink to /etc made in the guest: followed by the guest only
ln -s /etc etc
mkdir -p /etc; echo guest > /etc/vmshare-marker
test "$(cat /mnt/rw/etc/vmshare-marker)" = guest
# chmod / chown / utimes / truncate
echo perms > perms; chmod 640 perms
echo own > own; chown 1234:2345 own
echo t > times; touch -d '2001-02-03 04:05:06' times
dd if=/dev/zero of=trunc bs=1000 count=5 2>/dev/null; truncate -s 1234 trunc
# a sparse file with data past 4 GiB
dd if=/dev/urandom of=chunk bs=4096 count=1 2>/dev/null
dd if=chunk of=sparse bs=4096 seek=1310720 2>/dev/null
md5sum chunk | cut -d' ' -f1 > chunk.md5
dd if=sparse of=back bs=4096 skip=1310720 count=1 2>/dev/null
cmp chunk back
# the host-made directory of 10000 entries, listed completely
echo "big=$(ls /mnt/rw/big | wc -l)"
# the read-only export refuses writes with EROFS
cat /mnt/ro/ro.txt
if (echo x > /mnt/ro/new) 2> /tmp/ro.err; then echo "ro-write-succeeded"; fi
cat /tmp/ro.err
grep -q "Read-only file system" /tmp/ro.err && echo "ro=EROFS"
# root is squashed on the squashing export
echo sq > /mnt/sq/by-root
# a file its creator made read-only, written through the creating
# descriptor, as git writes its objects (squashed root is not privileged)
(umask 0222; echo made-ro > /mnt/sq/made-ro)
sync
echo done
"#;

#[test]
fn kernel_client_workload() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let top = common::scratch_dir("nfs_kernel");
    let (rw, ro, sq) = (top.join("rw"), top.join("ro"), top.join("sq"));
    for d in [&rw, &ro, &sq] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::create_dir(rw.join("big")).expect("mkdir");
    for i in 0..10_000 {
        std::fs::write(rw.join("big").join(format!("entry-{i:05}")), "").expect("write");
    }
    std::fs::write(ro.join("ro.txt"), "read-only content\n").expect("write");
    std::fs::set_permissions(&sq, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");

    let open = ExportOptions {
        secure: false,
        squash: Squash::None,
        ..ExportOptions::default()
    };
    let exports = vec![
        export(&rw, "/rw", open.clone()),
        export(
            &ro,
            "/ro",
            ExportOptions {
                writable: false,
                ..open.clone()
            },
        ),
        export(
            &sq,
            "/sq",
            ExportOptions {
                squash: Squash::Root,
                anonuid: 4321,
                anongid: 4321,
                ..open
            },
        ),
    ];
    let server = Server::bind(ServerConfig::new(
        exports,
        "127.0.0.1:0".parse().expect("addr"),
        top.join("state"),
    ))
    .expect("bind");
    let port = server.local_addr().port();
    let running = server.spawn().expect("spawn");

    let mut run = h.guest(["sh", "-c", SCRIPT]).network(GuestNetwork::User);
    run.spec_mut().mounts.extend([
        nfs_mount("rw", "/rw", "/mnt/rw", port),
        nfs_mount("ro", "/ro", "/mnt/ro", port),
        nfs_mount("sq", "/sq", "/mnt/sq", port),
    ]);
    let out = h.run(run);
    running.shutdown();
    let stdout = out.stdout_str();
    assert_eq!(
        out.status,
        0,
        "stdout:\n{stdout}\nstderr:\n{}\nerrors: {:?}",
        out.stderr_str(),
        out.errors
    );

    // Data written in the guest is on the host, bit for bit.
    let read = |p: &str| {
        std::fs::read_to_string(rw.join(p))
            .expect(p)
            .trim()
            .to_string()
    };
    assert_eq!(host_md5(&rw.join("rand.bin")), read("rand.md5"));
    assert_eq!(
        std::fs::metadata(rw.join("rand.bin")).expect("stat").len(),
        48 * 65536
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("app.txt")).expect("read"),
        "first\nsecond\n"
    );
    // Renames and removes.
    assert_eq!(read("target"), "b");
    assert!(
        !rw.join("d1/d2/a-moved").exists()
            && !rw.join("gone").exists()
            && !rw.join("d1/d2/b").exists()
    );
    // Links.
    assert_eq!(
        std::fs::metadata(rw.join("orig")).expect("stat").ino(),
        std::fs::metadata(rw.join("hard")).expect("stat").ino()
    );
    assert_eq!(
        std::fs::read_link(rw.join("soft")).expect("readlink"),
        Path::new("orig")
    );
    // The guest's /etc symlink is stored as a link, never followed here.
    assert_eq!(
        std::fs::read_link(rw.join("etc")).expect("readlink"),
        Path::new("/etc")
    );
    assert!(!Path::new("/etc/vmshare-marker").exists());
    // Attributes.
    assert_eq!(
        std::fs::metadata(rw.join("perms")).expect("stat").mode() & 0o7777,
        0o640
    );
    let own = std::fs::metadata(rw.join("own")).expect("stat");
    assert_eq!((own.uid(), own.gid()), (1234, 2345));
    assert_eq!(
        std::fs::metadata(rw.join("times")).expect("stat").mtime(),
        981_173_106
    );
    assert_eq!(
        std::fs::metadata(rw.join("trunc")).expect("stat").len(),
        1234
    );
    // Sparse past 4 GiB: right size, few blocks, right data at the end.
    let sp = std::fs::metadata(rw.join("sparse")).expect("stat");
    assert_eq!(sp.len(), 1_310_721 * 4096);
    assert!(
        sp.blocks() < 1024,
        "sparse file was filled: {} blocks",
        sp.blocks()
    );
    assert_eq!(host_md5(&rw.join("chunk")), read("chunk.md5"));
    // Listing, read-only, squashing.
    assert!(stdout.contains("big=10000"), "{stdout}");
    assert!(stdout.contains("read-only content"), "{stdout}");
    assert!(
        stdout.contains("ro=EROFS") && !stdout.contains("ro-write-succeeded"),
        "{stdout}"
    );
    assert!(!ro.join("new").exists());
    let sqf = std::fs::metadata(sq.join("by-root")).expect("stat");
    assert_eq!((sqf.uid(), sqf.gid()), (4321, 4321));
    // The owner wrote its read-only file (the server lets the owner
    // write whatever the mode, as knfsd does).
    let ro_made = std::fs::metadata(sq.join("made-ro")).expect("stat");
    assert_eq!((ro_made.uid(), ro_made.mode() & 0o777), (4321, 0o444));
    assert_eq!(
        std::fs::read_to_string(sq.join("made-ro")).expect("read"),
        "made-ro\n"
    );
    assert!(stdout.contains("done"));
}

/// A guest with a hard mount carries on after the server is restarted: same
/// port, same state directory (handle key), new process state. The guest
/// holds a file open and a directory handle across the restart.
#[test]
fn hard_mount_survives_server_restart() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let (top, data) = data_dir("nfs_restart");
    let open = ExportOptions {
        secure: false,
        squash: Squash::None,
        ..ExportOptions::default()
    };
    let cfg = |port: u16| {
        ServerConfig::new(
            vec![export(&data, "/data", open.clone())],
            format!("127.0.0.1:{port}").parse().expect("addr"),
            top.join("state"),
        )
    };
    let server = Server::bind(cfg(0)).expect("bind");
    let port = server.local_addr().port();
    let first = server.spawn().expect("spawn");

    // The guest writes, announces itself, waits for the host's "go" (which
    // only exists after the restart), then uses the file it kept open.
    let script = r#"
set -e
cd /mnt/data
mkdir dir
exec 3> dir/kept.txt
echo before >&3
echo ready > ready
i=0
while [ ! -e go ]; do sleep 0.2; i=$((i+1)); [ $i -lt 600 ] || exit 9; done
echo after >&3
exec 3>&-
echo more > dir/new.txt
cat dir/kept.txt
"#;
    let mut run = h.guest(["sh", "-c", script]).network(GuestNetwork::User);
    let mut m = nfs_mount("data", "/data", "/mnt/data", port);
    // Reconnect quickly: the default timeo=600 (60 s) only delays the test.
    m.data.push_str(",hard,timeo=20,retrans=3");
    run.spec_mut().mounts.push(m);
    let guest = std::thread::spawn(move || h.run(run));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !data.join("ready").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "guest never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    first.shutdown();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let second = Server::bind(cfg(port))
        .expect("rebind the same port")
        .spawn()
        .expect("spawn");
    std::fs::write(data.join("go"), "").expect("write");
    let out = guest.join().expect("guest thread");
    second.shutdown();
    assert_eq!(
        out.status,
        0,
        "stdout:\n{}\nstderr:\n{}\nerrors: {:?}",
        out.stdout_str(),
        out.stderr_str(),
        out.errors
    );
    assert_eq!(
        std::fs::read_to_string(data.join("dir/kept.txt")).expect("read"),
        "before\nafter\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("dir/new.txt")).expect("read"),
        "more\n"
    );
    assert!(out.stdout_str().contains("before\nafter"));
}

/// A stock client: the guest mounts with neither `port=` nor `mountport=`
/// nor `proto=`, so the kernel asks the portmapper on port 111 for MOUNT's
/// and NFS's ports. NFS listens on 20049, which the guest can only learn
/// from the portmapper. It runs as `vmshare serve` in a network namespace
/// of the test's own (port 111 on the host may be rpcbind's), on a TAP
/// link without NAT, so the kernel client's reserved source ports reach the
/// server, and the export's client is written out (`*(rw)`), which gives
/// it exports(5)'s defaults: `secure` and `root_squash` are tested too.
///
/// The server listens on the IPv6 wildcard, and the guest mounts the export
/// twice: over IPv4, where the kernel asks portmap v2 GETPORT, and over
/// IPv6 between the link's link-local addresses, where it asks rpcbind v4
/// GETADDR (v2 cannot describe IPv6) and NFS runs over `tcp6`.
#[test]
fn stock_client_finds_the_ports_through_the_portmapper() {
    use std::process::Command;
    use vmshare_vmm::netns::{TapNetwork, TAP_HOST_ADDR};

    let Some(h) = common::Harness::new() else {
        return;
    };
    if !common::needs::root_or_skip("a network namespace needs root") {
        return;
    }
    let (top, data) = data_dir("nfs_portmap");
    std::fs::write(data.join("hello"), "from the host\n").expect("write");
    // Root is squashed to 65534, which must be able to create files here.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");

    let run = h.state.new_run().expect("run directory");
    let net = std::sync::Arc::new(TapNetwork::create(&run).expect("namespace"));
    // A link-local address the guest can name (the TAP's own is derived
    // from a random MAC); `nodad` makes it usable at once.
    let ip6 = Command::new("ip")
        .args(["-n", net.name(), "-6", "addr", "add", "fe80::1/64"])
        .args(["dev", vmshare_vmm::netns::TAP_NAME, "nodad"])
        .status()
        .expect("ip -6 addr add");
    assert!(ip6.success(), "ip -6 addr add: {ip6}");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", net.name()])
        .arg(&h.vmshare)
        .args([
            "serve",
            "--listen",
            "[::]:20049",
            "--portmap-listen",
            "[::]:111",
            "--export",
            &format!("{} /data *(rw)", data.display()),
            "--state-dir",
        ])
        .arg(top.join("state"));
    let mut server = common::serve::Serve::start(cmd);
    let start = server.log();
    assert!(start.contains("portmap=[::]:111"), "{start}");
    assert!(
        start.contains("*(rw,root_squash,anonuid=65534,anongid=65534,secure,async)"),
        "{start}"
    );

    let script = r#"
set -e
cat /mnt/data/hello
echo guest > /mnt/data/by-guest
grep ' /mnt/data ' /proc/mounts
cat /mnt/data6/by-guest
echo over-ipv6 > /mnt/data6/by-guest6
grep ' /mnt/data6 ' /proc/mounts
"#;
    let mut guest = h
        .guest(["sh", "-c", script])
        .network(GuestNetwork::Tap(net.clone()));
    guest.spec_mut().mounts.push(GuestMount {
        data: format!("vers=3,nolock,addr={TAP_HOST_ADDR}"),
        source: format!("{TAP_HOST_ADDR}:/data"),
        ..nfs_mount("data", "/data", "/mnt/data", 0)
    });
    // The guest's own link-local address appears once its interface is up
    // and duplicate detection is done; init retries the mount until then.
    guest.spec_mut().mounts.push(GuestMount {
        data: "vers=3,nolock,addr=fe80::1%eth0".into(),
        source: "[fe80::1]:/data".into(),
        ..nfs_mount("data6", "/data", "/mnt/data6", 0)
    });
    let out = h.run(guest);

    let status = server.terminate();
    let log = server.log();
    drop(net);
    drop(run);

    let stdout = guest_stdout(&out, &log);
    assert!(stdout.starts_with("from the host\n"), "{stdout}");
    // What went over IPv4 is read back over IPv6.
    assert!(stdout.contains("\nguest\n"), "{stdout}");
    // Mounted over TCP with no port given: nothing listens on 2049 in the
    // namespace, so the kernel can only have found 20049 by asking.
    for (target, proto) in [("/mnt/data", "tcp"), ("/mnt/data6", "tcp6")] {
        let mounts = stdout
            .lines()
            .find(|l| l.contains(&format!(" {target} ")))
            .unwrap_or("");
        let opts: Vec<&str> = mounts.split([',', ' ']).collect();
        for opt in [format!("proto={proto}"), format!("mountproto={proto}")] {
            assert!(opts.contains(&opt.as_str()), "{opt} missing from {mounts}");
        }
        assert!(!opts.iter().any(|o| o.starts_with("port=")), "{mounts}");
    }
    // root_squash applied through a `secure` export.
    let f = std::fs::metadata(data.join("by-guest")).expect("stat");
    assert_eq!((f.uid(), f.gid()), (65534, 65534));
    assert_eq!(
        std::fs::read_to_string(data.join("by-guest")).expect("read"),
        "guest\n"
    );
    let f = std::fs::metadata(data.join("by-guest6")).expect("stat");
    assert_eq!((f.uid(), f.gid()), (65534, 65534));
    assert_eq!(
        std::fs::read_to_string(data.join("by-guest6")).expect("read"),
        "over-ipv6\n"
    );
    assert!(status.success(), "server exit {status}:\n{log}");
}

/// Write stability as the kernel client uses it. A small file is flushed at
/// its close in one WRITE asked FILE_SYNC, and when the reply says the data
/// is durable the client sends no COMMIT: a server that wrote it UNSTABLE,
/// or answered so, would be sent one. A file written in several WRITEs is
/// written UNSTABLE and committed. Every byte arrives either way. The
/// guest marks each part with a LOOKUP of a name that does not exist,
/// which the server's debug log shows between the calls. (This is also
/// why the benchmark has a row for WRITE FILE_SYNC: docs/benchmarks.md.)
#[test]
fn small_files_are_written_file_sync_and_large_ones_committed() {
    use std::process::Command;

    let Some(h) = common::Harness::new() else {
        return;
    };
    let (top, data) = data_dir("nfs_small_commit");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut cmd = Command::new(&h.vmshare);
    cmd.env("RUST_LOG", "info,vmshare_proto=debug")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--export",
            &format!("{} /data *(rw,no_root_squash,insecure)", data.display()),
            "--state-dir",
        ])
        .arg(top.join("state"));
    let mut server = common::serve::Serve::start(cmd);

    let script = r#"
set -e
cd /mnt/data
dd if=/dev/urandom of=large bs=1M count=3 2>/dev/null
ls marker-small-begin 2>/dev/null || true
for i in 1 2 3 4 5 6 7 8; do echo "small file $i" > small-$i; done
ls marker-small-end 2>/dev/null || true
md5sum large | cut -d' ' -f1
"#;
    let mut guest = h.guest(["sh", "-c", script]).network(GuestNetwork::User);
    guest
        .spec_mut()
        .mounts
        .push(nfs_mount("data", "/data", "/mnt/data", port));
    let out = h.run(guest);
    let status = server.terminate();
    let log = server.log();
    let stdout = guest_stdout(&out, &log);
    assert!(status.success(), "server exit {status}:\n{log}");

    for i in 1..=8 {
        assert_eq!(
            std::fs::read_to_string(data.join(format!("small-{i}"))).expect("read"),
            format!("small file {i}\n")
        );
    }
    assert_eq!(
        stdout.trim(),
        host_md5(&data.join("large")),
        "the large file's data"
    );

    // The calls, in the order the server decoded them.
    let calls: Vec<&str> = log.lines().filter(|l| l.contains(" nfs ")).collect();
    let at = |name: &str| {
        calls
            .iter()
            .position(|l| l.contains(&format!("name: \"{name}\"")))
            .unwrap_or_else(|| panic!("no LOOKUP of {name} in the log:\n{log}"))
    };
    let (begin, end) = (at("marker-small-begin"), at("marker-small-end"));
    let count = |from: usize, to: usize, what: &str| {
        calls[from..to]
            .iter()
            .filter(|l| l.contains(&format!("call={what} ")))
            .count()
    };
    assert!(
        count(0, begin, "Commit") >= 1,
        "the large file was not committed:\n{log}"
    );
    assert!(
        count(begin, end, "Write") >= 8,
        "the small files' WRITEs are not in the log:\n{log}"
    );
    let small_writes = calls[begin..end]
        .iter()
        .filter(|l| l.contains("call=Write "));
    for l in small_writes {
        assert!(
            l.contains("offset: 0,") && l.contains("stable: FileSync"),
            "a small file's WRITE: {l}"
        );
    }
    assert_eq!(
        count(begin, end, "Commit"),
        0,
        "a small file written FILE_SYNC was committed:\n{log}"
    );
}
