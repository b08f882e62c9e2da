//! `vmshare run -v`: the issue's volume cases end to end, through the real
//! binary, a real QEMU guest and the in-process NFS server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, scratch_dir, text, vol};

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

/// The seeds' failing case: append from the VM, both lines on the host.
#[test]
fn seed_case_append_from_the_vm() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("seed");
    write(&dir.join("data.txt"), "initial\n");
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&dir, "/data"),
        "--",
        "sh",
        "-c",
        "echo \"modified from the VM\" >> /data/data.txt",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("data.txt")).unwrap(),
        "initial\nmodified from the VM\n"
    );
    assert_eq!(text(&out.stdout), "", "only CMD's output by default");
    assert_eq!(text(&out.stderr), "");
}

/// `--tmpfs` and `--mount type=tmpfs` reach the guest with their size,
/// mode and flags, docker's `dirsync` included (it was refused).
#[test]
fn tmpfs_volumes_have_their_size_mode_and_flags() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.vmshare(&[
        "run",
        "--tmpfs",
        "/t:size=1m,mode=1770,noexec,dirsync",
        "--mount",
        "type=tmpfs,dst=/u,tmpfs-size=2m",
        "--",
        "sh",
        "-c",
        "grep -E ' /(t|u) ' /proc/mounts; stat -c %a /t",
    ]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let line = |target: &str| {
        stdout
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("no {target} in {stdout}"))
            .to_string()
    };
    let t = line("/t");
    for want in ["noexec", "dirsync", "size=1024k", "mode=1770"] {
        assert!(t.split([' ', ',']).any(|o| o == want), "{want}: {t}");
    }
    assert!(line("/u").contains("size=2048k"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("1770"), "{stdout}");
}

/// BM-001: a read-only bind is readable.
#[test]
fn bm001_read_only_bind_is_readable() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("bm001");
    write(&dir.join("hello.txt"), "hello from the host\n");
    std::fs::create_dir(dir.join("sub")).unwrap();
    write(&dir.join("sub/deep.txt"), "deep\n");
    let out = h.vmshare(&[
        "run",
        "-v",
        &format!("{}:ro", vol(&dir, "/data")),
        "--",
        "sh",
        "-c",
        "cat /data/hello.txt /data/sub/deep.txt",
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "hello from the host\ndeep\n");
}

/// BM-003: a write to a `:ro` volume fails with EROFS and the host file is
/// unchanged.
#[test]
fn bm003_read_only_refuses_writes_with_erofs() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("bm003");
    write(&dir.join("keep.txt"), "original\n");
    let script = "echo changed > /data/keep.txt; echo rc=$?; touch /data/new; echo rc=$?";
    let out = h.vmshare(&[
        "run",
        "-v",
        &format!("{}:ro", vol(&dir, "/data")),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "rc=1\nrc=1\n");
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert!(!dir.join("new").exists());
}

/// A `:ro` volume stays read-only when another volume is mounted inside
/// it at a directory it does not have: the guest makes that mount point
/// in a layer over the volume, and that layer is read-only too (it took
/// writes, which went to guest memory and were lost). The inner volume is
/// writable, and neither host directory gets what the guest could not
/// write. The outer target has a comma, which overlayfs's options need
/// escaped.
#[test]
fn a_read_only_volume_with_a_volume_inside_stays_read_only() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("ro-nested");
    let (outer, inner) = (dir.join("outer"), dir.join("inner"));
    std::fs::create_dir_all(&outer).unwrap();
    std::fs::create_dir_all(&inner).unwrap();
    write(&outer.join("keep.txt"), "original\n");
    let script = "echo changed > /d,ata/keep.txt; echo rc=$?; touch /d,ata/new; echo rc=$?; \
                  echo in > /d,ata/sub/f; echo rc=$?; mkdir /d,ata/d; echo rc=$?";
    let out = h.vmshare(&[
        "run",
        "-v",
        &format!("{}:ro", vol(&outer, "/d,ata")),
        "-v",
        &vol(&inner, "/d,ata/sub"),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "rc=1\nrc=1\nrc=0\nrc=1\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(outer.join("keep.txt")).unwrap(),
        "original\n"
    );
    assert!(!outer.join("new").exists() && !outer.join("d").exists());
    assert_eq!(std::fs::read_to_string(inner.join("f")).unwrap(), "in\n");
}

/// A volume on `/etc` still gives the guest its `/etc/hosts` and
/// `/etc/resolv.conf`, bind-mounted over the volume's as docker does (a
/// guest had none). What the volume has under those names is left as it
/// was; where it had none, the mount point is an empty file, as docker's.
#[test]
fn a_volume_on_etc_keeps_the_guests_name_files() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("etc-volume");
    write(&dir.join("hosts"), "# the host's own\n");
    write(&dir.join("app.conf"), "setting\n");
    let out = h.vmshare(&[
        "run",
        "-h",
        "named",
        "-v",
        &vol(&dir, "/etc"),
        "--",
        "sh",
        "-c",
        "cat /etc/app.conf; grep -c named /etc/hosts; grep -c nameserver /etc/resolv.conf",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "setting\n1\n1\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hosts")).unwrap(),
        "# the host's own\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        ""
    );
}

/// BM-002: a read-write volume is live both ways while the VM runs, for
/// new files and for a file the guest has already read and the host then
/// rewrites in place (same inode, same size: only the times tell the
/// guest's cache that its pages are old).
#[test]
fn bm002_read_write_live_both_ways() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("bm002");
    write(&dir.join("edit.txt"), "v1-host\n");
    // The guest announces itself, then waits (up to 120 s) for the host's
    // answer to show up through NFS, and prints it. It publishes with a
    // rename, as careful writers do: the create and the data reach the
    // server in separate calls, so waiting for the name alone could read
    // an empty file.
    let script = "cat /data/edit.txt; \
                  echo from-guest > /data/guest.tmp; mv /data/guest.tmp /data/guest.txt; \
                  i=0; while [ ! -s /data/host.txt ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
                  cat /data/host.txt /data/edit.txt";
    let child = h.spawn_vmshare(
        &["run", "-v", &vol(&dir, "/data"), "--", "sh", "-c", script],
        Stdio::null(),
    );
    wait_for_guest_file(&dir.join("guest.txt"));
    // Seen on the host while the VM still runs.
    assert_eq!(
        std::fs::read_to_string(dir.join("guest.txt")).unwrap(),
        "from-guest\n"
    );
    let seen_at = Instant::now();
    // In place: the same inode, truncated and written again.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("edit.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"v2-host\n"))
        .unwrap();
    write(&dir.join("host.tmp"), "from-host\n");
    std::fs::rename(dir.join("host.tmp"), dir.join("host.txt")).unwrap();
    let out = common::wait_with_watchdog(child, Duration::from_secs(300));
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "v1-host\nfrom-host\nv2-host\n");
    eprintln!(
        "host change seen by the guest within {:?}",
        seen_at.elapsed()
    );
}

/// BM-004: three volumes at once, each its own content, one read-only.
#[test]
fn bm004_three_volumes_at_once() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dirs: Vec<_> = (0..3).map(|i| scratch_dir(&format!("bm004-{i}"))).collect();
    for (i, d) in dirs.iter().enumerate() {
        write(&d.join("id"), &format!("volume {i}\n"));
    }
    let script = "cat /a/id /b/id /c/id && echo written > /b/out";
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&dirs[0], "/a"),
        "-v",
        &vol(&dirs[1], "/b"),
        "-v",
        &format!("{}:ro", vol(&dirs[2], "/c")),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "volume 0\nvolume 1\nvolume 2\n");
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("out")).unwrap(),
        "written\n"
    );
}

/// A single file as a volume exposes only that file, not its siblings.
#[test]
fn single_file_volume_hides_its_siblings() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("single-file");
    write(&dir.join("app.yaml"), "key: value\n");
    write(&dir.join("secret.txt"), "TOP SECRET\n");
    let script = "cat /etc/app.yaml; \
                  grep -rs 'TOP SECRET' / --exclude-dir=proc --exclude-dir=sys && echo LEAKED; \
                  ls -a /run/vmshare/* 2>/dev/null; true";
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&dir.join("app.yaml"), "/etc/app.yaml"),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("key: value\n"), "stdout: {stdout}");
    assert!(
        !stdout.contains("LEAKED"),
        "the sibling was readable: {stdout}"
    );
    assert!(
        !stdout.contains("secret.txt"),
        "the sibling was listed: {stdout}"
    );
}

/// A single-file volume follows the host's file when the host replaces it
/// with a rename, as editors and `sed -i` save: the guest's bind mount
/// pins one NFS inode, and read "Stale file handle" until it exited.
#[test]
fn single_file_volume_follows_a_file_the_host_replaces() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("single-file-replaced");
    let sig = scratch_dir("single-file-signals");
    write(&dir.join("app.yaml"), "first\n");
    let script = "cat /etc/app.yaml; touch /sig/ready; \
                  i=0; while [ ! -e /sig/go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; \
                  sleep 3; cat /etc/app.yaml; echo from-guest >> /etc/app.yaml";
    let child = h.spawn_vmshare(
        &[
            "run",
            "-v",
            &vol(&dir.join("app.yaml"), "/etc/app.yaml"),
            "-v",
            &vol(&sig, "/sig"),
            "--",
            "sh",
            "-c",
            script,
        ],
        Stdio::null(),
    );
    wait_for_guest_file(&sig.join("ready"));
    write(&dir.join("app.yaml.tmp"), "second\n");
    std::fs::rename(dir.join("app.yaml.tmp"), dir.join("app.yaml")).unwrap();
    write(&sig.join("go"), "");
    let out = common::wait_with_watchdog(child, Duration::from_secs(300));
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "first\nsecond\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.yaml")).unwrap(),
        "second\nfrom-guest\n"
    );
}

/// A single-file volume whose host file is removed for a while and made
/// again (`rm` then `cp`, `git checkout`): while it is gone the guest
/// cannot open it, and once it is back the guest reads the new one. The
/// server answered STALE while the name was missing, and the guest's
/// client then called the file stale for good: "Stale file handle" for
/// the rest of the run.
#[test]
fn single_file_volume_comes_back_after_the_host_removes_it() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("single-file-removed");
    let sig = scratch_dir("single-file-removed-signals");
    write(&dir.join("app.yaml"), "first\n");
    let wait = |name: &str| {
        format!(
            "i=0; while [ ! -e /sig/{name} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; "
        )
    };
    let script = format!(
        "cat /etc/app.yaml; touch /sig/ready; {}\
         sleep 3; cat /etc/app.yaml >/dev/null 2>&1 || echo gone; touch /sig/seen; {}\
         sleep 3; cat /etc/app.yaml; echo from-guest >> /etc/app.yaml",
        wait("removed"),
        wait("back")
    );
    let child = h.spawn_vmshare(
        &[
            "run",
            "-v",
            &vol(&dir.join("app.yaml"), "/etc/app.yaml"),
            "-v",
            &vol(&sig, "/sig"),
            "--",
            "sh",
            "-c",
            &script,
        ],
        Stdio::null(),
    );
    let wait_for = |name: &str| wait_for_guest_file(&sig.join(name));
    wait_for("ready");
    std::fs::remove_file(dir.join("app.yaml")).unwrap();
    write(&sig.join("removed"), "");
    wait_for("seen");
    write(&dir.join("app.yaml"), "second\n");
    write(&sig.join("back"), "");
    let out = common::wait_with_watchdog(child, Duration::from_secs(300));
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "first\ngone\nsecond\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.yaml")).unwrap(),
        "second\nfrom-guest\n"
    );
}

/// A SIGTERM to vmshare that CMD ignores: 10 s later CMD gets SIGKILL, as
/// `docker stop` sends, and the guest still unmounts, so a file CMD
/// removed while holding it open leaves no `.nfsXXXX` on the host and the
/// run ends 137. QEMU was killed at once instead: the `.nfs` file stayed
/// and the run ended 125 as a failed guest.
#[test]
fn an_ignored_sigterm_ends_in_sigkill_and_leaves_no_nfs_files() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("ignored-sigterm");
    write(&dir.join("held"), "x\n");
    let script = "trap '' TERM; exec 3</d/held; rm /d/held; touch /d/ready; \
                  while :; do sleep 1; done";
    let child = h.spawn_vmshare(
        &["run", "-v", &vol(&dir, "/d"), "--", "sh", "-c", script],
        Stdio::null(),
    );
    wait_for_guest_file(&dir.join("ready"));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let out = common::wait_with_watchdog(child, Duration::from_secs(120));
    assert_exit(&out, 137);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["ready".to_string()],
        "left on the host: {names:?}"
    );
}

/// A named volume is created on first use and keeps its content for the
/// next run.
#[test]
fn named_volume_survives_to_a_second_run() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let name = format!("e2e-named-{}", std::process::id());
    let volume = format!("{name}:/store");
    let first = h.vmshare(&[
        "run",
        "-v",
        &volume,
        "--",
        "sh",
        "-c",
        "echo kept > /store/f",
    ]);
    assert_exit(&first, 0);
    let second = h.vmshare(&["run", "-v", &volume, "--", "cat", "/store/f"]);
    assert_exit(&second, 0);
    assert_eq!(text(&second.stdout), "kept\n");
    let on_host = h.state.volumes_dir().join(&name);
    assert_eq!(
        std::fs::read_to_string(on_host.join("f")).unwrap(),
        "kept\n"
    );
    std::fs::remove_dir_all(on_host).unwrap();
}

/// A program of the host's to run in a guest, which sees the host's /usr
/// through read-only volumes ([`run_in_work`]). That needs a merged /usr
/// (Debian 12), where /usr holds the libraries too. `None`, after saying
/// so, when the host lacks either; CI has both.
fn host_program(name: &str) -> Option<String> {
    let merged = std::fs::read_link("/lib").is_ok_and(|l| l == Path::new("usr/lib"));
    let found = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists());
    if !merged || found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {name} under /usr and a merged /usr"
        );
        eprintln!("SKIPPED: needs {name} under /usr and a merged /usr");
        return None;
    }
    found
}

/// A scratch directory anyone may write: the guest's user gets it as
/// /work.
fn world_writable(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    dir
}

/// `sh -c script` in a guest as uid 1000, with the host's /usr for
/// [`host_program`], `work` as /work (and HOME), and `more` arguments
/// before the command.
fn run_in_work(h: &common::Harness, work: &Path, more: &[&str], script: &str) -> Output {
    let work = vol(work, "/work");
    let mut args = vec!["run"];
    args.extend([
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/usr/lib64:/lib64:ro",
    ]);
    args.extend(["-v", &work, "-e", "HOME=/work", "-u", "1000:1000"]);
    args.extend(more);
    args.extend(["--", "sh", "-c", script]);
    h.vmshare(&args)
}

/// Real programs' ways with files, run in the guest as an ordinary user:
/// the host's git makes a repository and a commit in a volume, and a
/// root-owned binary of mode 0711 in the volume runs. git creates each
/// object read-only and then writes it, which the server refused until the
/// owner could write their own file whatever its mode; the guest reads a
/// binary to run it, which the server refused without read permission
/// until execute permission was enough.
#[test]
fn git_commits_and_exec_only_binaries_run_in_a_volume() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let Some(git) = host_program("git") else {
        return;
    };
    let dir = world_writable("git");
    std::fs::copy("/usr/bin/true", dir.join("tool")).unwrap();
    std::fs::set_permissions(
        dir.join("tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let script = format!(
        "set -e; cd /work; {git} init -q r; cd r; echo hello > a; mkdir d; echo x > d/b; \
         {git} add -A; {git} -c user.name=t -c user.email=t@t commit -qm first; {git} fsck --strict; \
         /work/tool; echo tool-ran"
    );
    let out = run_in_work(&h, &dir, &[], &script);
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("tool-ran"));
    // The host's git reads what the guest's wrote.
    let host_git = |args: &[&str]| {
        let o = std::process::Command::new(&git)
            .arg("-C")
            .arg(dir.join("r"))
            .args(["-c", "safe.directory=*"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    host_git(&["fsck", "--strict"]);
    assert_eq!(host_git(&["log", "--format=%s"]), "first\n");
    assert_eq!(host_git(&["show", "HEAD:d/b"]), "x\n");
}

/// Random writes, truncates, reads and mmap writes through the guest's
/// kernel client agree with a model of the file's bytes (`data/fsx.py`),
/// and the host ends up with the bytes the model holds. The kernel client
/// caches pages and attributes and trusts the server's WCC data to keep
/// them: a wrong post-operation size or change time shows up here as a
/// stale read, a lost write or a wrong length after a reopen.
#[test]
fn random_io_through_the_kernel_client_matches_a_model() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let Some(python) = host_program("python3") else {
        return;
    };
    let dir = world_writable("fsx");
    let tools = scratch_dir("fsx-tools");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fsx.py"),
        tools.join("fsx.py"),
    )
    .unwrap();
    let script =
        format!("set -e; cd /work; for seed in 1 2 3; do {python} /tools/fsx.py $seed 1500; done");
    let out = run_in_work(&h, &dir, &["-v", &vol(&tools, "/tools:ro")], &script);
    assert_exit(&out, 0);
    let lines: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("fsx "))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 3, "three runs: {}", text(&out.stdout));
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let [_, name, len, sha] = f[..] else {
            panic!("unexpected line {line:?}");
        };
        let host = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(host.len().to_string(), len, "{name}: length on the host");
        let o = std::process::Command::new("sha256sum")
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert_eq!(
            text(&o.stdout).split(' ').next(),
            Some(sha),
            "{name}: bytes on the host"
        );
    }
}

/// Waits for the guest to make `path`, for up to 240 s (a guest booting
/// under TCG on a busy machine).
fn wait_for_guest_file(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the guest never made {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The guest's root acts as the volume's owner, root for a directory root
/// owns (as one vmshare made for a missing source): it made a setuid-root
/// program and a 0666 device node (here of /dev/null's numbers; one of
/// the host's disk went as well) on the host, for any host user to run or
/// open, and kept a host setuid program's bit while it rewrote it. As on
/// a `nosuid,nodev` mount, set-id bits are now dropped (a directory keeps
/// its set-group-ID, which only passes on its group), device nodes are
/// refused, and FIFOs are still made.
#[test]
fn a_guest_makes_no_setuid_programs_or_device_nodes_on_the_host() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("nosuid");
    write(&dir.join("old"), "#!/bin/sh\n");
    std::fs::set_permissions(dir.join("old"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&dir, "/v"),
        "--",
        "sh",
        "-c",
        "cd /v && echo x > s && chmod 4755 s && echo y > g && chmod 2755 g && \
         mkdir d && chmod 2775 d && echo evil >> old && mkfifo p && \
         if mknod n c 1 3; then echo made a node; fi",
    ]);
    assert_exit(&out, 0);
    assert!(text(&out.stderr).contains("mknod"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let mode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().mode() & 0o7777;
    assert_eq!(mode("s"), 0o755);
    assert_eq!(mode("g"), 0o755);
    assert_eq!(mode("d"), 0o2775);
    assert_eq!(mode("old"), 0o755);
    assert_eq!(
        std::fs::read_to_string(dir.join("old")).unwrap(),
        "#!/bin/sh\nevil\n"
    );
    assert!(std::fs::symlink_metadata(dir.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(dir.join("n")).is_err());
}
