#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A second, independent NFS client: libnfs's `nfs-cp`/`nfs-ls` (a user-space
//! implementation sharing no code with the kernel's) against `vmshare serve`
//! started as a process, the way users run it.

#[path = "common/needs.rs"]
mod needs;
#[path = "common/scratch.rs"]
mod scratch;

#[path = "common/serve.rs"]
mod serve;

use std::path::Path;
use std::process::Command;

use serve::Serve;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn serve(exports: &[&str], state: &Path) -> (Serve, u16) {
    serve_in(Command::new(env!("CARGO_BIN_EXE_vmshare")), exports, state)
}

/// `vmshare serve` started by `cmd`, which runs the binary itself or a
/// wrapper around it.
fn serve_in(mut cmd: Command, exports: &[&str], state: &Path) -> (Serve, u16) {
    let port = free_port();
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--state-dir",
    ])
    .arg(state);
    for e in exports {
        cmd.args(["--export", e]);
    }
    cmd.env("RUST_LOG", "info");
    (Serve::start(cmd), port)
}

/// Whether libnfs's `nfs-cp` and `nfs-ls` are here; says so when not.
fn libnfs_or_skip() -> bool {
    needs::tool_or_skip("nfs-cp", "libnfs-utils") && needs::tool_or_skip("nfs-ls", "libnfs-utils")
}

fn url(port: u16, path: &str) -> String {
    format!("nfs://127.0.0.1{path}?nfsport={port}&mountport={port}")
}

#[test]
fn libnfs_copies_and_lists() {
    if !libnfs_or_skip() {
        return;
    }
    let top = scratch::scratch_dir("libnfs");
    let (data, ro) = (top.join("data"), top.join("ro"));
    std::fs::create_dir_all(data.join("sub")).expect("mkdir");
    std::fs::create_dir_all(&ro).expect("mkdir");
    std::fs::write(data.join("hello.txt"), "hello from the host\n").expect("write");
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| i.wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    std::fs::write(top.join("big.src"), &big).expect("write");
    let e1 = format!("{} /data *(rw,insecure,no_root_squash)", data.display());
    let e2 = format!("{} /ro *(ro,insecure)", ro.display());
    let (_server, port) = serve(&[&e1, &e2], &top.join("state"));

    let ls = Command::new("nfs-ls")
        .arg(url(port, "/data"))
        .output()
        .expect("nfs-ls");
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success(),
        "nfs-ls failed: {}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(
        listing.contains("hello.txt") && listing.contains("sub"),
        "{listing}"
    );

    // Write through NFS (multi-MiB, unaligned length), read back through NFS.
    let up = Command::new("nfs-cp")
        .arg(top.join("big.src"))
        .arg(url(port, "/data/big.bin"))
        .output()
        .expect("nfs-cp");
    assert!(
        up.status.success(),
        "upload: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(std::fs::read(data.join("big.bin")).expect("read"), big);
    let down = Command::new("nfs-cp")
        .arg(url(port, "/data/big.bin"))
        .arg(top.join("big.back"))
        .output()
        .expect("nfs-cp");
    assert!(
        down.status.success(),
        "download: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(std::fs::read(top.join("big.back")).expect("read"), big);

    // The read-only export refuses the same upload and keeps nothing.
    let denied = Command::new("nfs-cp")
        .arg(top.join("big.src"))
        .arg(url(port, "/ro/x"))
        .output()
        .expect("nfs-cp");
    assert!(!denied.status.success());
    assert!(!ro.join("x").exists());
    // An export that does not exist is refused at MOUNT.
    let none = Command::new("nfs-ls")
        .arg(url(port, "/nope"))
        .output()
        .expect("nfs-ls");
    assert!(!none.status.success());
}

/// A regular file given as an export is served alone, as `vmshare run`
/// serves a file volume: the client sees a directory with that file and
/// none of its siblings, and a host that saves the file anew (a new file
/// renamed over it) is seen through the same name.
#[test]
fn a_file_export_shows_that_file_alone() {
    if !libnfs_or_skip() {
        return;
    }
    let top = scratch::scratch_dir("libnfs-file");
    let etc = top.join("etc");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(etc.join("app.conf"), "first\n").expect("write");
    std::fs::write(etc.join("secret.key"), "not for the guest\n").expect("write");
    let spec = format!("{} /conf *(ro,insecure)", etc.join("app.conf").display());
    let (server, port) = serve(&[&spec], &top.join("state"));
    let listed = Command::new("nfs-ls")
        .arg(url(port, "/conf"))
        .output()
        .expect("nfs-ls");
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", server.log());
    assert!(listing.contains("app.conf"), "{listing}");
    assert!(!listing.contains("secret"), "{listing}");
    let read = |to: &str| {
        let out = Command::new("nfs-cp")
            .arg(url(port, "/conf/app.conf"))
            .arg(top.join(to))
            .output()
            .expect("nfs-cp");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(top.join(to)).expect("read")
    };
    assert_eq!(read("copy1"), "first\n");
    let denied = Command::new("nfs-cp")
        .arg(url(port, "/conf/secret.key"))
        .arg(top.join("stolen"))
        .output()
        .expect("nfs-cp");
    assert!(!denied.status.success());
    assert!(!top.join("stolen").exists());
    std::fs::write(etc.join("app.conf.new"), "second\n").expect("write");
    std::fs::rename(etc.join("app.conf.new"), etc.join("app.conf")).expect("rename");
    assert_eq!(read("copy2"), "second\n");
}

/// SIGHUP reads the exports file again, as unfs3 and `exportfs -r` do:
/// a new export mounts, a changed one takes its new options, and a file
/// with a mistake changes nothing.
#[test]
fn sighup_reloads_the_exports_file() {
    if !libnfs_or_skip() {
        return;
    }
    let top = scratch::scratch_dir("libnfs-reload");
    let (a, b) = (top.join("a"), top.join("b"));
    std::fs::create_dir_all(&a).expect("mkdir");
    std::fs::create_dir_all(&b).expect("mkdir");
    std::fs::write(b.join("in-b.txt"), "b\n").expect("write");
    std::fs::write(top.join("up.txt"), "uploaded\n").expect("write");
    let file = top.join("exports");
    std::fs::write(
        &file,
        format!("{} /a *(rw,insecure,no_root_squash)\n", a.display()),
    )
    .expect("write");
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmshare"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-dir")
        .arg(top.join("state"))
        .arg("--exports")
        .arg(&file)
        .env("RUST_LOG", "info");
    let server = Serve::start(cmd);
    let ls = |path: &str| {
        Command::new("nfs-ls")
            .arg(url(port, path))
            .output()
            .expect("nfs-ls")
    };
    let upload = |path: &str| {
        Command::new("nfs-cp")
            .arg(top.join("up.txt"))
            .arg(url(port, path))
            .output()
            .expect("nfs-cp")
            .status
            .success()
    };
    assert!(upload("/a/one.txt"), "{}", server.log());
    assert!(!ls("/b").status.success());

    std::fs::write(
        &file,
        format!(
            "{} /a *(ro,insecure)\n{} /b *(rw,insecure)\n",
            a.display(),
            b.display()
        ),
    )
    .expect("write");
    let log = server.hangup(&["exports reloaded", "still serving"]);
    assert!(log.contains("exports reloaded"), "{log}");
    let listed = ls("/b");
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("in-b.txt"),
        "{}\n{log}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(!upload("/a/two.txt"), "/a is read-only now");
    assert!(!a.join("two.txt").exists());

    // A mistake on line 2: the error names it, and nothing changes.
    std::fs::write(
        &file,
        format!(
            "{} /a *(rw,insecure)\n{} /b *(rw,insecure,bogus)\n",
            a.display(),
            b.display()
        ),
    )
    .expect("write");
    let log = server.hangup(&["exports reloaded", "still serving"]);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("still serving"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        line.contains(&format!("{}:2", file.display())) && line.contains("bogus"),
        "{line}"
    );
    assert!(!upload("/a/three.txt"), "still read-only");
    assert!(ls("/b").status.success());
}

/// Under an open-file limit far below the number of files a guest reads,
/// every read still succeeds: the descriptor caches are sized from the
/// limit, and give way when descriptors run out. (They used to be fixed at
/// 16,384 + 1,024 descriptors, so that past the limit every open failed.)
#[test]
fn more_files_than_the_open_file_limit_are_all_served() {
    if !needs::tool_or_skip("nfs-cp", "libnfs-utils")
        || !needs::tool_or_skip("prlimit", "util-linux")
    {
        return;
    }
    let top = scratch::scratch_dir("libnfs-nofile");
    let data = top.join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    const LIMIT: usize = 128;
    const FILES: usize = 3 * LIMIT;
    for i in 0..FILES {
        std::fs::write(data.join(format!("f{i}")), format!("file {i}\n")).expect("write");
    }
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={LIMIT}:{LIMIT}"))
        .arg(env!("CARGO_BIN_EXE_vmshare"));
    let e = format!("{} /data *(rw,insecure,no_root_squash)", data.display());
    let (_server, port) = serve_in(cmd, &[&e], &top.join("state"));
    let back = top.join("back");
    for i in 0..FILES {
        let out = Command::new("nfs-cp")
            .arg(url(port, &format!("/data/f{i}")))
            .arg(&back)
            .output()
            .expect("nfs-cp");
        assert!(
            out.status.success(),
            "file {i} of {FILES}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&back).expect("read"),
            format!("file {i}\n")
        );
        let _ = std::fs::remove_file(&back);
    }
}

/// `secure` refuses a client on an unprivileged port, as exports(5) says,
/// and the server's log says why (the client sees only EPERM); `--export
/// PATH` with no clients is `insecure`, for guests behind QEMU's NAT. libnfs
/// binds a reserved port when run as root, so the unprivileged client is
/// libnfs run as nobody.
#[test]
fn secure_refuses_unprivileged_ports_and_says_why() {
    if !needs::tool_or_skip("nfs-ls", "libnfs-utils")
        || !needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    if !needs::root_or_skip("needs root to be both a privileged and an unprivileged client") {
        return;
    }
    let top = scratch::scratch_dir("libnfs-secure");
    let (sec, open) = (top.join("sec"), top.join("open"));
    for d in [&sec, &open] {
        std::fs::create_dir_all(d).expect("mkdir");
        std::fs::write(d.join("hello.txt"), "hi\n").expect("write");
    }
    let e1 = format!("{} /sec *(rw)", sec.display());
    let e2 = open.display().to_string();
    let (server, port) = serve(&[&e1, &e2], &top.join("state"));
    let ls = |path: &str, as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "nfs-ls"]);
            c
        } else {
            Command::new("nfs-ls")
        };
        let out = cmd.arg(url(port, path)).output().expect("nfs-ls");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success() && text.contains("hello.txt"), text)
    };
    let (ok, text) = ls("/sec", false);
    assert!(ok, "root, reserved port: {text}");
    let (ok, text) = ls("/sec", true);
    assert!(!ok, "nobody, unprivileged port, secure export: {text}");
    let open_path = open.display().to_string();
    let (ok, text) = ls(&open_path, true);
    assert!(ok, "nobody, --export PATH: {text}");
    // The log line comes from the server's thread; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !server.log().contains("refused MNT") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = server.log();
    assert!(
        log.contains("refused MNT: the export is `secure` and the source port is not below 1024")
            && log.contains("export=/sec"),
        "{log}"
    );
}

/// A service account without a home (su and setpriv leave HOME at
/// /nonexistent) and no --state-dir: the server failed to start, trying
/// to create /nonexistent/.local/state. It now keeps its key in a
/// directory of its own under the temporary directory and says so.
#[test]
fn a_server_user_without_a_home_keeps_its_key_in_the_temporary_directory() {
    if !needs::tool_or_skip("nfs-ls", "libnfs-utils")
        || !needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    if !needs::root_or_skip("needs root to start the server as nobody") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let top = std::env::temp_dir().join(format!("vmshare-nohome-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let (data, tmp) = (top.join("data"), top.join("tmp"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    std::fs::write(data.join("here.txt"), "here\n").expect("write");
    std::os::unix::fs::chown(&tmp, Some(65534), Some(65534)).expect("chown");
    for d in [&top, &data] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let bin = top.join("vmshare");
    std::fs::copy(env!("CARGO_BIN_EXE_vmshare"), &bin).expect("copy the binary");
    let port = free_port();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--export",
        ])
        .arg(format!("{} /data *(ro,insecure)", data.display()))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/nonexistent")
        .env("TMPDIR", &tmp)
        .env("RUST_LOG", "info");
    let server = Serve::start(cmd);
    let out = Command::new("nfs-ls")
        .arg(url(port, "/data"))
        .output()
        .expect("nfs-ls");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("here.txt"), "{listing}\n{}", server.log());
    assert!(
        server.log().contains("no home directory"),
        "the log says where the key is: {}",
        server.log()
    );
    assert!(
        tmp.join("vmshare-state-65534/handle-key").is_file(),
        "{}",
        server.log()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&top);
}

/// A server that is not root cannot open files by handle (that needs
/// CAP_DAC_READ_SEARCH): it must reach every object by name and keep it.
/// Files that were in the export before it started answered PERM to
/// everything after their LOOKUP. Run as nobody, from a copy of the binary
/// in /tmp, which nobody can reach wherever the build is.
#[test]
fn a_server_not_running_as_root_serves_the_files_already_there() {
    if !needs::tool_or_skip("nfs-cp", "libnfs-utils")
        || !needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    if !needs::root_or_skip("needs root to start the server as nobody") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let top = std::env::temp_dir().join(format!("vmshare-nonroot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let data = top.join("data");
    std::fs::create_dir_all(data.join("sub")).expect("mkdir");
    std::fs::write(data.join("top.txt"), "at the top\n").expect("write");
    std::fs::write(data.join("sub/deep.txt"), "further down\n").expect("write");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).expect("chown");
    for d in [&top, &data, &data.join("sub")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let bin = top.join("vmshare");
    std::fs::copy(env!("CARGO_BIN_EXE_vmshare"), &bin).expect("copy the binary");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin);
    let e = format!("{} /data *(ro,insecure)", data.display());
    let (server, port) = serve_in(cmd, &[&e], &state);
    let back = top.join("back");
    for (path, want) in [
        ("/data/top.txt", "at the top\n"),
        ("/data/sub/deep.txt", "further down\n"),
    ] {
        let out = Command::new("nfs-cp")
            .arg(url(port, path))
            .arg(&back)
            .output()
            .expect("nfs-cp");
        assert!(
            out.status.success(),
            "{path}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        assert_eq!(std::fs::read_to_string(&back).expect("read"), want);
        let _ = std::fs::remove_file(&back);
    }
    assert!(
        server.log().contains("cannot open files by handle"),
        "the log says what not being root costs: {}",
        server.log()
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&top);
}
