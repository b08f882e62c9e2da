//! `vmshare run` as a command: exit status, ownership, refusals,
//! concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;

use common::{assert_exit, assert_refused, scratch_dir, text, vol};

#[test]
fn exit_status_passes_through() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.vmshare(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_exit(&out, 7);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
}

#[test]
fn env_workdir_and_missing_command() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let env_file = scratch_dir("envfile").join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let out = h.vmshare(&[
        "run",
        "-e",
        "GREETING=hello world",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/work/dir",
        "--name",
        "box1",
        "--",
        "sh",
        "-c",
        "echo \"$GREETING|$FROM_FILE|$(pwd)|$(hostname)\"",
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "hello world|yes|/work/dir|box1\n");
    let missing = h.vmshare(&["run", "--", "no-such-command"]);
    assert_exit(&missing, 127);
    assert!(
        text(&missing.stderr).contains("no-such-command"),
        "{}",
        text(&missing.stderr)
    );
}

/// A working directory or a volume target that is a file in the guest
/// (or the reverse) is said as such, as docker says it; both read "File
/// exists".
#[test]
fn a_workdir_or_a_target_of_the_wrong_kind_is_named() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let out = h.vmshare(&["run", "-w", "/bin/busybox", "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("working directory /bin/busybox: Not a directory"),
        "{}",
        text(&out.stderr)
    );
    let dir = scratch_dir("wrong-kind");
    let out = h.vmshare(&["run", "-v", &vol(&dir, "/bin/busybox"), "--", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "/bin/busybox is a file in the guest: a directory cannot be mounted on a file"
        ),
        "{}",
        text(&out.stderr)
    );
}

/// With -u the process has those ids and its files belong to them on the
/// host; without, the guest's root writes as the directory's owner. A
/// user may overwrite (`>`, a truncation) a file it may write but does
/// not own: that had emptied the file and then failed with EPERM.
#[test]
fn user_ids_and_default_owner_on_volumes() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: ownership test needs root to chown its directories");
        return;
    }
    let as_user = scratch_dir("owner-u");
    std::fs::set_permissions(&as_user, std::fs::Permissions::from_mode(0o777)).unwrap();
    let shared = as_user.join("shared.txt");
    std::fs::write(&shared, "keep me\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = h.vmshare(&[
        "run",
        "-u",
        "1000:1000",
        "-v",
        &vol(&as_user, "/data"),
        "--",
        "sh",
        "-c",
        "id -u; id -g; touch /data/mine; echo replaced > /data/shared.txt; echo rc=$?",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "1000\n1000\nrc=0\n",
        "{}",
        text(&out.stderr)
    );
    let m = std::fs::metadata(as_user.join("mine")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), "replaced\n");
    assert_eq!(std::fs::metadata(&shared).unwrap().uid(), 0);

    let owned = scratch_dir("owner-default");
    std::os::unix::fs::chown(&owned, Some(4321), Some(4322)).unwrap();
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&owned, "/data"),
        "--",
        "sh",
        "-c",
        "id -u; touch /data/byroot",
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "0\n");
    let m = std::fs::metadata(owned.join("byroot")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (4321, 4322),
        "root in the guest must not be root on the host"
    );
}

/// Refusals happen before anything boots, with a message naming the
/// problem, and exit status 125.
#[test]
fn bad_volumes_are_refused_clearly() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("refusals");
    let cases: [(&[&str], &str); 4] = [
        (&["-v", &vol(&dir, "/proc")], "/proc"),
        (&["-v", &vol(&dir, "/dev/shm")], "/dev/shm"),
        (&["-v", &vol(&dir, "relative")], "relative"),
        (&["-v", &vol(&dir, "/same"), "--tmpfs", "/same"], "/same"),
    ];
    for (volume_args, needle) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(volume_args);
        args.extend_from_slice(&["--", "true"]);
        let out = h.vmshare(&args);
        assert_exit(&out, 125);
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A missing host directory is created, as docker does.
    let missing = dir.join("created/by/vmshare");
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&missing, "/data"),
        "--",
        "sh",
        "-c",
        "echo x > /data/f",
    ]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_to_string(missing.join("f")).unwrap(), "x\n");
}

/// Two runs at once each get their own server port and VM and do not see
/// each other's volumes.
#[test]
fn two_runs_at_once() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dirs: Vec<_> = (0..2)
        .map(|i| scratch_dir(&format!("concurrent-{i}")))
        .collect();
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            h.spawn_vmshare(
                &[
                    "run",
                    "-v",
                    &vol(d, "/data"),
                    "--",
                    "sh",
                    "-c",
                    &format!("echo run{i} > /data/who; ls /data"),
                ],
                Stdio::null(),
            )
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = common::wait_with_watchdog(child, Duration::from_secs(300));
        assert_exit(&out, 0);
        assert_eq!(text(&out.stdout), "who\n");
        assert_eq!(
            std::fs::read_to_string(dirs[i].join("who")).unwrap(),
            format!("run{i}\n")
        );
    }
}

/// stdin reaches the command with -i, whole, and ends with end of file.
/// From a file, the input ends on the host at once, long before a command
/// that sleeps first has read it: closing the socket to QEMU then dropped
/// what the guest had not taken yet (`wc -c` of 100,000 bytes counted
/// 4,096).
#[test]
fn interactive_stdin() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("stdin");
    let input = dir.join("input");
    let line = "piped text\n";
    let lines = 30_000;
    std::fs::write(&input, line.repeat(lines)).unwrap();
    let child = h.spawn_vmshare(
        &[
            "run",
            "-i",
            "--",
            "sh",
            "-c",
            "sleep 2; tr a-z A-Z | uniq -c; echo done",
        ],
        Stdio::from(std::fs::File::open(&input).unwrap()),
    );
    let out = common::wait_with_watchdog(child, Duration::from_secs(300));
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        [&lines.to_string(), "PIPED", "TEXT", "done"]
    );
}

/// `--vmm firecracker|cloud-hypervisor` is refused before anything starts,
/// saying what this host lacks in the order it matters (the VMM on PATH,
/// then KVM) and giving the `vmshare plan` command for the same volumes
/// and CMD, which, its placeholders filled in, prints a configuration
/// whose initramfs it writes (the `-v` source does not exist: the plan
/// takes it as run would create it).
#[test]
fn other_vmms_are_refused_with_what_is_missing() {
    let dir = scratch_dir("other-vmm");
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let refusal = |vmm: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .env("PATH", &bin)
            .env("VMSHARE_STATE_DIR", dir.join("state"))
            .args([
                "run",
                "--vmm",
                vmm,
                "-v",
                "/srv/my data:/data",
                "--",
                "true",
            ])
            .output()
            .unwrap();
        assert_exit(&out, 125);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        let hint = format!(
            "vmshare plan --vmm {vmm} --tap TAP --guest-ip GUEST_IP/LEN --nfs-server HOST_IP \
             --nfs-port PORT --write-initrd initrd.cpio -v '/srv/my data:/data' -- true"
        );
        assert!(
            err.contains(&format!(
                "`{hint}` prints {vmm}'s configuration and writes the initramfs its guest boots with"
            )),
            "{err}"
        );
        err
    };
    for vmm in ["firecracker", "cloud-hypervisor"] {
        let err = refusal(vmm);
        assert!(err.contains(&format!("`{vmm}` is not on PATH")), "{err}");
        // Writing the initramfs needs a kernel and busybox.
        if let Some(h) = common::Harness::new() {
            check_hint(&h, &dir, &err);
        }

        let fake = bin.join(vmm);
        std::fs::write(&fake, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = refusal(vmm);
        let found = format!("found {}", fake.display());
        // A fresh state directory has no KVM test guest's verdict, so the
        // ioctl probe decides.
        let kvm = match vmshare_vmm::kvm::probe() {
            Err(reason) => format!("{found}, but KVM is not usable ({reason})"),
            Ok(()) => format!(
                "{found} and /dev/kvm creates a VM and a vCPU, but vmshare run launches only QEMU so far"
            ),
        };
        assert!(err.contains(&kvm), "{err}\nexpected: {kvm}");
    }
}

/// Runs the `vmshare plan` command that refusal `err` gives, its
/// placeholders filled in: it prints a configuration naming the
/// initramfs it wrote, whose guest mounts the volume from the server given.
fn check_hint(h: &common::Harness, dir: &std::path::Path, err: &str) {
    let hint = err.split('`').nth(3).unwrap();
    let filled = hint
        .replacen("vmshare", h.vmshare.to_str().unwrap(), 1)
        .replace("TAP", "tap0")
        .replace("GUEST_IP/LEN", "172.16.0.2/24")
        .replace("HOST_IP", "172.16.0.1")
        .replace("PORT", "2049");
    let out = std::process::Command::new("sh")
        .current_dir(dir)
        .args(["-c", &filled])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["guest_spec"]["mounts"][0]["source"], "172.16.0.1:/v0");
    let initrd = dir.join("initrd.cpio");
    assert!(
        text(&out.stdout).contains(initrd.to_str().unwrap()),
        "the configuration does not name {}",
        initrd.display()
    );
    std::fs::remove_file(&initrd).unwrap();
}

/// A run refused before boot leaves no host directory behind (a `-v`
/// source, or a `FILESYSTEM_SOURCE`, is made only for a run that boots),
/// and a `--mount` bind of a missing source is an error, as in docker:
/// only `-v` creates one.
#[test]
fn refused_runs_leave_nothing_behind() {
    let dir = scratch_dir("refused-runs");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .env("VMSHARE_STATE_DIR", dir.join("state"))
            .arg("run")
            .args(args)
            .args(["--", "true"])
            .output()
            .unwrap()
    };
    let a = dir.join("a");
    let b = dir.join("b/deep");
    let image = dir.join("missing.ext4");
    let mount = format!("type=ext4,src={},dst=/d", image.display());
    let mount_missing_image = mount.clone();
    let cases: [(Vec<String>, &str); 3] = [
        (
            vec![
                "-v".into(),
                vol(&a, "/a"),
                "-v".into(),
                vol(&b, "/b"),
                "--memory".into(),
                "10m".into(),
            ],
            "at least 192m",
        ),
        (
            vec!["-v".into(), vol(&a, "/a"), "--mount".into(), mount],
            "does not exist",
        ),
        (
            vec![
                "-v".into(),
                vol(&a, "/a"),
                "--kernel".into(),
                "/nonexistent".into(),
            ],
            "--kernel /nonexistent",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_exit(&out, 125);
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !a.exists() && !dir.join("b").exists(),
            "{args:?} left a directory"
        );
    }
    let share = dir.join("share");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .env("VMSHARE_STATE_DIR", dir.join("state"))
        .env("FILESYSTEM_SOURCE", &share)
        .args([
            "run",
            "--from-env",
            "--mount",
            &mount_missing_image,
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_refused(&out, "does not exist");
    assert!(!share.exists(), "a refused run left {}", share.display());
    let missing = dir.join("not-there");
    let out = run(&[
        "--mount",
        &format!("type=bind,src={},dst=/data", missing.display()),
    ]);
    assert_refused(&out, "does not exist");
    assert!(!missing.exists());
}

/// A docker option vmshare does not have (`--rm`) is an error before
/// anything boots, exit 125, not the start of CMD (which booted a VM to
/// fail with "--rm: No such file or directory").
#[test]
fn unknown_options_are_refused_before_boot() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .env(
            "VMSHARE_STATE_DIR",
            scratch_dir("unknown-option").join("state"),
        )
        .args(["run", "--rm", "-e", "X=1", "--", "sh", "-c", "echo $X"])
        .output()
        .unwrap();
    assert_refused(&out, "unexpected argument '--rm'");
}

/// A guest has a network, `lo` up, `/etc/hosts` and `/etc/resolv.conf`
/// even without a volume, as a container has them: a run with no NFS
/// volume had no network at all, and no guest had either file.
#[test]
fn a_guest_has_a_network_and_its_name_files_without_volumes() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    // `-h` is docker's --hostname, which wins over --name.
    let out = h.vmshare(&[
        "run",
        "--name",
        "web1",
        "-h",
        "front",
        "--",
        "sh",
        "-c",
        "hostname; hostname -i; grep -c nameserver /etc/resolv.conf; ip -o link show lo | grep -c UP",
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "front\n10.0.2.15\n1\n1\n");
}

/// `vmshare run -- yes | head -2` ends: when whoever reads CMD's output
/// goes away, CMD gets SIGPIPE, as on the host, and vmshare exits 141
/// (it ran on, unread, at full CPU).
#[test]
fn a_reader_that_goes_away_ends_the_command_with_sigpipe() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let mut child = h.spawn_vmshare(&["run", "--", "yes"], Stdio::null());
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 4];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"y\ny\n");
    drop(out);
    let done = common::wait_with_watchdog(child, Duration::from_secs(120));
    assert_eq!(done.status.code(), Some(141), "{}", text(&done.stderr));
}

/// The guest's clock is the host's, whose time the NFS server stamps
/// files with: a file just written on a volume is never newer than the
/// guest's time right after (make's "Clock skew detected"), and not much
/// older. The guest had started from the RTC's whole seconds, up to a
/// second behind.
#[test]
fn the_guest_clock_is_the_hosts() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("clock");
    let out = h.vmshare(&[
        "run",
        "-v",
        &vol(&dir, "/data"),
        "--",
        "sh",
        "-c",
        "touch /data/on-host; touch /tmp/in-guest; stat -c '%Y %y' /data/on-host /tmp/in-guest",
    ]);
    assert_exit(&out, 0);
    // "SECONDS DATE TIME.NANOS ZONE" → nanoseconds since the epoch.
    let ns = |line: &str| -> i128 {
        let mut f = line.split_whitespace();
        let secs: i128 = f.next().unwrap().parse().unwrap();
        let frac = f.nth(1).unwrap().split_once('.').unwrap().1;
        secs * 1_000_000_000 + frac.parse::<i128>().unwrap()
    };
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (host, guest) = (ns(lines[0]), ns(lines[1]));
    assert!(
        guest >= host,
        "the guest's clock is {} ms behind the host's",
        (host - guest) / 1_000_000
    );
    assert!(
        guest - host < 500_000_000,
        "the guest's clock is {} ms ahead",
        (guest - host) / 1_000_000
    );
}

/// A user with no home of its own (su and setpriv leave HOME at
/// /nonexistent, as for nobody) was told only that creating
/// `/nonexistent/.local/state/vmshare/cache` was denied; the message now
/// says it is the default state directory and how to give another. No
/// guest boots: the run stops before.
#[test]
fn a_user_without_a_home_is_told_how_to_give_a_state_directory() {
    if !common::needs::root_or_skip("needs root to run vmshare as nobody")
        || !common::needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    let dir = scratch_dir("run-no-home");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("vmshare");
    std::fs::copy(env!("CARGO_BIN_EXE_vmshare"), &bin).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["run", "--", "true"])
        .env("HOME", "/nonexistent")
        .env_remove("XDG_STATE_HOME")
        .env_remove("VMSHARE_STATE_DIR")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&out, 125);
    let err = text(&out.stderr);
    assert!(
        err.contains("/nonexistent/.local/state/vmshare")
            && err.contains("--state-dir DIR or set VMSHARE_STATE_DIR"),
        "{err}"
    );
}
