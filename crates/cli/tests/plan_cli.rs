//! `vmshare plan` front ends through the real binary (no VM): an OCI
//! config combined with docker options, as `vmshare run` reads them too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::{assert_exit, assert_refused, scratch_dir};

/// A real (empty) erofs image at `path`: images are taken by what their
/// superblock says, so an empty file is refused.
fn erofs_image(path: &std::path::Path) {
    let empty = path.with_extension("d");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args(["image", "build"])
        .arg(&empty)
        .arg("-o")
        .arg(path)
        .output()
        .unwrap();
    assert_exit(&out, 0);
}

/// The OCI mounts come first, so their `{{ mount N }}` templates name
/// OCI mounts even when `-v` volumes are given too; relative sources are
/// taken from the config's directory; a read-write overlay without an
/// upperdir gets a tmpfs writable layer before it.
#[test]
fn oci_with_docker_volumes() {
    let dir = scratch_dir("plan-oci-docker");
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("layers")).unwrap();
    for l in ["a.erofs", "b.erofs"] {
        erofs_image(&bundle.join("layers").join(l));
    }
    let host = dir.join("host");
    std::fs::create_dir(&host).unwrap();
    let config = serde_json::json!({"mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"type": "erofs", "source": "layers/a.erofs"},
        {"type": "erofs", "source": "./layers/b.erofs"},
        {"type": "format/overlay", "destination": "/merged",
         "options": ["lowerdir={{ overlay 2 1 }}"]}
    ]});
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .current_dir(&dir)
        .args(["plan", "--oci", "bundle/config.json", "-v"])
        .arg(format!("{}:/data", host.display()))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &doc["plan"];
    let images: Vec<&str> = plan["block_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["image"].as_str().unwrap())
        .collect();
    let layers = bundle.join("layers");
    assert_eq!(
        images,
        [
            layers.join("a.erofs").to_str().unwrap(),
            layers.join("b.erofs").to_str().unwrap()
        ]
    );
    let mounts: Vec<(&str, &str, &str)> = plan["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["target"].as_str().unwrap(),
                m["fstype"].as_str().unwrap(),
                m["data"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("/run/vmshare/m0", "erofs", ""),
            ("/run/vmshare/m1", "erofs", ""),
            ("/run/vmshare/layer2", "tmpfs", "mode=0755"),
            (
                "/merged",
                "overlay",
                "lowerdir=/run/vmshare/m1:/run/vmshare/m0,\
                 upperdir=/run/vmshare/layer2/upper,workdir=/run/vmshare/layer2/work"
            ),
            ("/data", "nfs", ""),
        ]
    );
    assert_eq!(
        plan["mounts"][3]["mkdir"],
        serde_json::json!(["/run/vmshare/layer2/upper", "/run/vmshare/layer2/work"])
    );
}

/// What the audit of `vmshare plan` found, through the real binary: a
/// single-file volume given as a symbolic link is its target (the server
/// never follows links, so the guest got a link to a host path); the QEMU
/// command line ends the VM when the guest init reboots (`-no-reboot`),
/// doubles commas in paths, and has no vsock device unless asked; relative
/// paths become absolute; bad machine values (a tap name Linux cannot
/// have, an all-zero MAC, NFS port 0, a comma Cloud Hypervisor would split
/// at) are refused with exit 125 and a reason.
#[test]
fn plan_configs_start_as_given() {
    let dir = scratch_dir("plan-audit");
    std::fs::write(dir.join("real.conf"), "x").unwrap();
    std::os::unix::fs::symlink(dir.join("real.conf"), dir.join("link.conf")).unwrap();
    let comma = dir.join("with,comma");
    std::fs::create_dir(&comma).unwrap();
    let plan = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .current_dir(&dir)
            .arg("plan")
            .args(args)
            .output()
            .unwrap()
    };
    let out = plan(&[
        "-v",
        "./link.conf:/etc/app.conf",
        "-v",
        "./with,comma:/c:copy",
        "--runtime-dir",
        "rd",
        "--kernel",
        "k",
    ]);
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let export = &doc["plan"]["nfs_exports"][0];
    assert_eq!(export["single_file"], "real.conf");
    let args: Vec<&str> = doc["render"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"-no-reboot"), "{args:?}");
    assert!(!args.iter().any(|a| a.contains("vsock")), "{args:?}");
    let kernel = dir.join("k");
    assert!(args.contains(&kernel.to_str().unwrap()), "{args:?}");
    let drive = args.iter().find(|a| a.contains("file=")).unwrap();
    assert!(
        drive.contains(&format!("file={}/", dir.join("rd").display()))
            && !drive.contains("file=rd"),
        "{drive}"
    );
    // Each refused with exit 125 and a message saying why.
    for (bad, why) in [
        (&["--cpus", "0"][..], "--cpus"),
        (&["--memory", "0"], "--memory"),
        (&["--vsock-cid", "2"], "--vsock-cid"),
        (&["--mac", "zz"], "not a MAC address"),
        (&["--mac", "00:00:00:00:00:00"], "all-zero"),
        (&["--mac", "01:00:5e:00:00:01"], "multicast"),
        (
            &["--nfs-server", "10.0.2.2", "--nfs-port", "0"],
            "--nfs-port",
        ),
        (&["--tap", ""], "1 to 15"),
        (&["--tap", "averyveryverylongtapname"], "24 bytes long"),
        (
            &[
                "--vmm",
                "cloud-hypervisor",
                "--tap",
                "tap,0",
                "-v",
                "/etc:/x",
            ],
            "tap name with a comma",
        ),
        (
            &[
                "--vmm",
                "cloud-hypervisor",
                "--runtime-dir",
                "rt,1",
                "--vsock-cid",
                "3",
            ],
            "vsock: cloud-hypervisor cannot take a path with a comma",
        ),
    ] {
        let out = plan(bad);
        assert_exit(&out, 125);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{bad:?}: {stderr}");
    }
}

/// Only devices the configuration has count against the VMM's budget:
/// Firecracker without a tap or NFS gets no network, and no vsock unless
/// asked, so its 19 devices can all be disks.
#[test]
fn the_device_budget_counts_what_is_rendered() {
    let dir = scratch_dir("plan-budget");
    let mut args: Vec<String> = vec!["plan".into(), "--vmm".into(), "firecracker".into()];
    let layer = dir.join("layer.erofs");
    erofs_image(&layer);
    for i in 0..19 {
        let image = dir.join(format!("l{i}.erofs"));
        std::fs::copy(&layer, &image).unwrap();
        args.push("--mount".into());
        args.push(format!("type=erofs,src={},dst=/l{i}", image.display()));
    }
    let plan = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .args(&args)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = plan(&[]);
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["plan"]["devices_used"], 19);
    let config = &doc["render"]["config_file"]["content"];
    let config: serde_json::Value = match config.as_str() {
        Some(text) => serde_json::from_str(text).unwrap(),
        None => config.clone(),
    };
    assert_eq!(config["drives"].as_array().unwrap().len(), 19);
    assert!(config.get("vsock").is_none() && config.get("network-interfaces").is_none());
    // A vsock device is one more than Firecracker has room for.
    let out = plan(&["--vsock-cid", "3"]);
    assert_refused(&out, "needs 20");
}

/// `--from-env` read the environment with `std::env::vars`, which panics
/// (exit 134) on any variable that is not UTF-8, even one it never looks
/// at. Unrelated variables are now left alone, and a `FILESYSTEM_*` one
/// that is not UTF-8 is an error naming it.
#[test]
fn from_env_survives_an_environment_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let plan = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmshare"));
        c.args(["plan", "--from-env"])
            .env_clear()
            .env("UNRELATED", latin1);
        c
    };
    let out = plan().output().unwrap();
    assert_exit(&out, 0);
    let out = plan()
        .env("FILESYSTEM_SOURCE", "/etc")
        .env("FILESYSTEM_TARGET", "etc")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("/etc"));
    let out = plan()
        .env("FILESYSTEM_SOURCE", latin1)
        .env("FILESYSTEM_TARGET", "t")
        .output()
        .unwrap();
    assert_exit(&out, 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FILESYSTEM_SOURCE") && err.contains("not UTF-8"),
        "{err}"
    );
}

/// The plan was printed with println!, which panics (exit 134, with a
/// backtrace) when standard output fails. A full disk is an error with
/// a message; a reader that stops early ends the plan quietly.
#[test]
fn a_failing_standard_output_is_an_error_not_a_panic() {
    let file = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args(["plan", "--tmpfs", "/t"])
        .stdout(file)
        .output()
        .unwrap();
    assert_exit(&out, 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writing the plan to standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let mut args = vec!["plan".to_string()];
    for i in 0..3000 {
        args.extend(["--tmpfs".to_string(), format!("/t/{i}")]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then stop reading, as `| head -c 10` does.
    let mut first = [0u8; 10];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// `--mount type=ext4|erofs` takes an image by its superblock, as
/// `--root-disk` and `--rootfs` do: an erofs image given as ext4 had been
/// attached read-write and mounted as ext4, and a file that is no image
/// at all went to the guest too.
#[test]
fn an_image_of_another_type_or_none_is_refused() {
    let dir = scratch_dir("plan-image-types");
    let erofs = dir.join("x.erofs");
    erofs_image(&erofs);
    let junk = dir.join("junk.ext4");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let plan = |mount: String| {
        Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .args(["plan", "--mount", &mount])
            .output()
            .unwrap()
    };
    let out = plan(format!("type=ext4,src={},dst=/x", erofs.display()));
    assert_exit(&out, 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is an erofs image, not ext4; give type=erofs"),
        "{err}"
    );
    let out = plan(format!("type=ext4,src={},dst=/x", junk.display()));
    assert_exit(&out, 125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("neither an ext4 nor an erofs image"), "{err}");
    assert_exit(
        &plan(format!("type=erofs,src={},dst=/x", erofs.display())),
        0,
    );
}

/// docker's sizes and modes for a tmpfs, which `vmshare plan` (and
/// `vmshare run`, through the same front end) refused: `tmpfs-size` as
/// docker's `units.RAMInBytes` reads it, and an octal mode with a leading
/// zero.
#[test]
fn tmpfs_sizes_and_modes_as_docker_writes_them() {
    for (args, data) in [
        (
            &["--mount", "type=tmpfs,dst=/x,tmpfs-size=64MiB"][..],
            "size=64m",
        ),
        (
            &["--mount", "type=tmpfs,dst=/x,tmpfs-size=64mb"],
            "size=64m",
        ),
        (
            &["--mount", "type=tmpfs,dst=/x,tmpfs-size=1.5g"],
            "size=1536m",
        ),
        (
            &["--mount", "type=tmpfs,dst=/x,tmpfs-size=1t"],
            "size=1024g",
        ),
        (
            &["--mount", "type=tmpfs,dst=/x,tmpfs-mode=01777"],
            "mode=1777",
        ),
        (&["--tmpfs", "/x:mode=01777"], "mode=01777"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .arg("plan")
            .args(args)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["plan"]["mounts"][0]["data"], data, "{args:?}");
    }
}

/// Copy volumes that collide on the real file system: the runtime
/// directory (not made yet) inside the copied tree, and one tree copied
/// read-write twice, once through a symbolic link.
#[test]
fn overlapping_copy_volumes_are_refused() {
    let dir = scratch_dir("plan-copies");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::os::unix::fs::symlink(&src, dir.join("link")).unwrap();
    let plan = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .current_dir(&dir)
            .arg("plan")
            .args(args)
            .output()
            .unwrap()
    };
    let out = plan(&["-v", "./src:/c:copy", "--runtime-dir", "src/rt"]);
    assert_exit(&out, 125);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the tree it copies"), "{stderr}");
    let out = plan(&[
        "-v",
        "./link/a:/c:copy",
        "-v",
        "./src:/d:copy",
        "--runtime-dir",
        "rt",
    ]);
    assert_exit(&out, 125);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("which holds it"), "{stderr}");
    let out = plan(&[
        "-v",
        "./link/a:/c:ro,copy",
        "-v",
        "./src:/d:copy",
        "--runtime-dir",
        "rt",
    ]);
    assert_exit(&out, 0);
}

/// A volume inside another that a later front end mounts would be hidden;
/// the planner's advice, "list the outer one first", cannot be followed
/// across front ends (OCI, then docker's options, then FILESYSTEM_*), so
/// the message says what can: give both through one front end.
#[test]
fn a_volume_hidden_across_front_ends_gets_advice_that_works() {
    let dir = scratch_dir("plan-front-ends");
    std::fs::write(
        dir.join("config.json"),
        r#"{"mounts":[{"destination":"/a/b","type":"bind","source":"/etc"}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .current_dir(&dir)
        .args(["plan", "--oci", "config.json", "-v", "/usr:/a"])
        .output()
        .unwrap();
    assert_exit(&out, 125);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--oci mounts come first, then -v/--mount/--tmpfs")
            && stderr.contains("put the mount on /a in config.json's mounts, before 'mounts[0]")
            && stderr.contains("or give /a/b as a -v or --mount instead")
            && !stderr.contains("first\n"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .env_clear()
        .env("FILESYSTEM_SOURCE", "/usr")
        .env("FILESYSTEM_TARGET", "/a")
        .args(["plan", "--from-env", "-v", "/etc:/a/b"])
        .output()
        .unwrap();
    assert_exit(&out, 125);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("give the volume on /a as a -v or --mount instead")
            && stderr
                .contains("or give /a/b as a FILESYSTEM<N>_* share numbered after the one on /a"),
        "{stderr}"
    );
    // Within one front end the planner's advice stands: OCI mounts keep
    // the config's order.
    std::fs::write(
        dir.join("config.json"),
        r#"{"mounts":[{"destination":"/a/b","type":"bind","source":"/etc"},
                      {"destination":"/a","type":"bind","source":"/usr"}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .current_dir(&dir)
        .args(["plan", "--oci", "config.json"])
        .output()
        .unwrap();
    assert_exit(&out, 125);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("list 'mounts[1] (bind /usr on /a)' first"),
        "{stderr}"
    );
}

/// What docker refuses, refused the same way through the binary: one
/// `-v` option of each kind, no empty `--mount` field, `volume-*` and
/// `bind-*` keys only with their type, a propagation that is one, a
/// file given with a final `/`, and a one-character volume name.
#[test]
fn docker_refusals_are_kept() {
    let dir = scratch_dir("plan-docker-refusals");
    let file = dir.join("file.txt");
    std::fs::write(&file, "hi").unwrap();
    let file_slash = format!("{}/:/x", file.display());
    for (args, why) in [
        (&["-v", "/etc:/x:ro,ro"][..], "'ro' given twice"),
        (&["-v", "/etc:/x:ro,rw"], "'ro' and 'rw' both set"),
        (&["-v", "/etc:/x:z,Z"], "'z' and 'Z' both set"),
        (
            &["-v", "/etc:/x:cached,delegated"],
            "both set the consistency",
        ),
        (&["-v", "a:/x"], "too short for a volume name"),
        (&["-v", &file_slash], "asks for a directory"),
        (
            &["--mount", "type=bind,src=/etc,dst=/x,,"],
            "an empty field",
        ),
        (
            &["--mount", "type=bind,src=/etc,dst=/x,volume-nocopy"],
            "needs type=volume",
        ),
        (
            &[
                "--mount",
                "type=volume,src=v1,dst=/x,bind-propagation=rprivate",
            ],
            "needs type=bind",
        ),
        (
            &[
                "--mount",
                "type=bind,src=/etc,dst=/x,bind-propagation=bogus",
            ],
            "is not a propagation; use private or rprivate",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .args(["plan", "--volume-store"])
            .arg(dir.join("store"))
            .args(args)
            .output()
            .unwrap();
        assert_exit(&out, 125);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

/// `vmshare run -v /missing:/x` creates `/missing`, as docker does, and
/// the `vmshare plan` command it suggests for another VMM refused the
/// same volume. The plan now takes it as the directory run would make,
/// says so on stderr, and creates nothing; a `--mount` bind of a missing
/// source stays refused, as docker refuses it.
#[test]
fn a_missing_v_source_is_planned_as_run_would_create_it() {
    let dir = scratch_dir("plan-missing-source");
    let missing = dir.join("not").join("yet");
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args(["plan", "--vmm", "firecracker", "--tap", "tap0", "-v"])
        .arg(format!("{}:/data", missing.display()))
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let export = &doc["plan"]["nfs_exports"][0];
    assert_eq!(export["host_path"], missing.to_str().unwrap());
    assert_eq!(export["single_file"], serde_json::Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} does not exist; vmshare run creates it as a directory",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(
        std::fs::symlink_metadata(dir.join("not")).is_err(),
        "vmshare plan created {}",
        dir.join("not").display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args(["plan", "--mount"])
        .arg(format!("type=bind,src={},dst=/data", missing.display()))
        .output()
        .unwrap();
    assert_refused(&out, "does not exist on the host");
}

/// Run by a user other than root, a source behind a directory that user
/// cannot search was said not to exist on the host ("create it or fix
/// the path"), though it may well exist: the message now says permission
/// was denied on the way to it.
#[test]
fn a_source_the_user_cannot_reach_is_not_called_missing() {
    if !common::needs::root_or_skip("needs root to plan as nobody")
        || !common::needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("plan-unreachable-source");
    let locked = dir.join("locked");
    std::fs::create_dir_all(locked.join("data")).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("vmshare");
    std::fs::copy(env!("CARGO_BIN_EXE_vmshare"), &bin).unwrap();
    for volume in ["", ":copy"] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["plan", "-v"])
            .arg(format!("{}:/data{volume}", locked.join("data").display()))
            .output()
            .unwrap();
        assert_exit(&out, 125);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission denied") && !err.contains("does not exist"),
            "{err}"
        );
    }
}

/// A named volume is planned where `vmshare run` keeps it for the user
/// planning: run by a user other than root, `vmshare plan` planned
/// /var/lib/vmshare/volumes/NAME, which that user's runs never use, while
/// `vmshare run` keeps it in ~/.local/state/vmshare/volumes. Nothing is
/// created.
#[test]
fn a_named_volume_is_planned_in_the_users_state_directory() {
    if !common::needs::root_or_skip("needs root to plan as nobody")
        || !common::needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("plan-named-volume-user");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("vmshare");
    std::fs::copy(env!("CARGO_BIN_EXE_vmshare"), &bin).unwrap();
    let home = dir.join("home");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["plan", "-v", "myvol:/data"])
        .env("HOME", &home)
        .env_remove("XDG_STATE_HOME")
        .env_remove("VMSHARE_STATE_DIR")
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["plan"]["nfs_exports"][0]["host_path"],
        home.join(".local/state/vmshare/volumes/myvol")
            .to_str()
            .unwrap()
    );
    assert!(!home.exists(), "vmshare plan created {}", home.display());
}

/// docker-vm-runner creates a missing `FILESYSTEM_SOURCE` unless the
/// share is read-only, and takes the tag from its last name when
/// `FILESYSTEM_TARGET` is unset; `vmshare plan` plans what `vmshare run`
/// would then do. Both were refused.
#[test]
fn a_missing_filesystem_source_is_planned_unless_read_only() {
    let dir = scratch_dir("plan-missing-env-source");
    let missing = dir.join("shared");
    let plan = |readonly: &str| {
        Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .env("FILESYSTEM_SOURCE", &missing)
            .env("FILESYSTEM_READONLY", readonly)
            .args(["plan", "--from-env", "--vmm", "qemu"])
            .output()
            .unwrap()
    };
    let out = plan("0");
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["plan"]["nfs_exports"][0]["host_path"],
        missing.to_str().unwrap()
    );
    assert_eq!(doc["plan"]["mounts"][0]["target"], "/mnt/shared");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("as docker-vm-runner does for a FILESYSTEM_SOURCE that is not read-only"),
        "{stderr}"
    );
    assert!(
        !missing.exists(),
        "vmshare plan created {}",
        missing.display()
    );
    let out = plan("1");
    assert_refused(&out, "does not exist on the host");
}

/// Firecracker boots an ELF vmlinux (bzImage support is recent): a
/// bzImage named as its kernel gets a note saying so, an ELF file none.
#[test]
fn firecracker_is_told_when_its_kernel_is_no_elf() {
    let dir = scratch_dir("plan-fc-kernel");
    let bz = dir.join("bzImage");
    let mut image = vec![0u8; 0x300];
    image[..2].copy_from_slice(b"MZ");
    image[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&bz, &image).unwrap();
    let elf = dir.join("vmlinux");
    std::fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
    let plan = |kernel: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .args(["plan", "--vmm", "firecracker", "--kernel"])
            .arg(kernel)
            .output()
            .unwrap();
        assert_exit(&out, 0);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (doc["plan"]["notes"].to_string(), stderr)
    };
    let (notes, stderr) = plan(&bz);
    assert!(notes.contains("is not an ELF vmlinux"), "{notes}");
    assert!(stderr.contains("is not an ELF vmlinux"), "{stderr}");
    let (notes, stderr) = plan(&elf);
    assert!(
        !notes.contains("ELF") && !stderr.contains("ELF"),
        "{notes} {stderr}"
    );
}

/// The plan's initramfs, for a guest's mount table: the audit found that
/// a guest started from `vmshare plan --vmm firecracker`'s configuration
/// mounted nothing, since nothing put vmshare's init and the mounts into
/// it. With `--write-initrd` the configuration names the file written,
/// and the file is what the kernel unpacks: this vmshare as `/init`,
/// busybox, the modules of the kernel the configuration boots, and a
/// spec whose mounts come from the server given, on the tap network
/// given, running CMD on the serial console.
#[test]
fn write_initrd_gives_the_configuration_a_guest_that_mounts_its_volumes() {
    let Some(_h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("plan-write-initrd");
    std::fs::create_dir(dir.join("data")).unwrap();
    std::fs::write(dir.join("app.conf"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .current_dir(&dir)
        .args([
            "plan",
            "--vmm",
            "firecracker",
            "--tap",
            "tap0",
            "--guest-ip",
            "172.16.0.2/24",
            "--nfs-server",
            "172.16.0.1",
            "--nfs-port",
            "2049",
            "--write-initrd",
            "initrd.cpio",
            "-v",
            "./data:/data",
            "-v",
            "./app.conf:/etc/app.conf:ro",
            "--tmpfs",
            "/scratch",
            "-e",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "ls /data",
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = &doc["render"]["config_file"]["content"];
    let initrd = dir.join("initrd.cpio");
    assert_eq!(
        config["boot-source"]["initrd_path"],
        initrd.to_str().unwrap()
    );
    let boot_args = config["boot-source"]["boot_args"].as_str().unwrap();
    assert!(boot_args.contains("rdinit=/init"), "{boot_args}");
    let kernel = config["boot-source"]["kernel_image_path"].as_str().unwrap();
    let release = kernel.rsplit_once("vmlinuz-").unwrap().1;

    let tree = common::cpio::unpack(&std::fs::read(&initrd).unwrap());
    let init = &tree["init"];
    assert_eq!(init.mode, 0o100_755);
    assert!(
        init.data == std::fs::read(env!("CARGO_BIN_EXE_vmshare")).unwrap(),
        "/init is not this vmshare"
    );
    assert!(tree.contains_key("bin/busybox"));
    let console: serde_json::Value =
        serde_json::from_slice(&tree["vmshare/console.json"].data).unwrap();
    assert_eq!(console["serial"], true);
    let spec: serde_json::Value = serde_json::from_slice(&tree["vmshare/spec.json"].data).unwrap();
    assert_eq!(spec, doc["guest_spec"]);
    let mounts: Vec<(&str, &str, &str)> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["source"].as_str().unwrap(),
                m["target"].as_str().unwrap(),
                m["fstype"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            ("172.16.0.1:/v0", "/data", "nfs"),
            ("tmpfs", "/scratch", "tmpfs"),
            ("172.16.0.1:/v1", "/run/vmshare/v1", "nfs"),
            ("/run/vmshare/v1/app.conf", "/etc/app.conf", "bind"),
        ]
    );
    let nfs = spec["mounts"][0]["data"].as_str().unwrap();
    assert!(
        nfs.contains("port=2049,mountport=2049") && nfs.contains("addr=172.16.0.1"),
        "{nfs}"
    );
    assert_eq!(spec["network"]["address"], "172.16.0.2/24");
    assert_eq!(
        spec["process"]["args"],
        serde_json::json!(["sh", "-c", "ls /data"])
    );
    assert_eq!(spec["process"]["env"], serde_json::json!(["GREETING=hi"]));
    // Every module the guest loads is in the archive, the booted kernel's.
    let modules = spec["modules"].as_array().unwrap();
    assert!(modules.len() >= 3, "{modules:?}");
    for m in modules {
        let m = m.as_str().unwrap();
        assert!(
            m.starts_with(&format!("/lib/modules/{release}/")),
            "{m} is not a module of {kernel}"
        );
        assert!(tree.contains_key(&m[1..]), "{m} is not in the initramfs");
    }
}

/// What `--write-initrd` cannot do without is refused, with exit 125, the
/// option to give, and no file written: the NFS server for NFS volumes,
/// an IPv4 one on the guest's network, the guest's address on a tap, a
/// command; and the guest's command is refused without an initramfs to
/// put it in.
#[test]
fn write_initrd_refuses_what_the_guest_could_not_use() {
    let Some(_h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("plan-write-initrd-refusals");
    let tap = ["--vmm", "firecracker", "--tap", "tap0", "-v", "/etc:/x"];
    let ip = ["--guest-ip", "172.16.0.2/24"];
    let server = ["--nfs-server", "172.16.0.1", "--nfs-port", "2049"];
    let cmd = ["--", "true"];
    let write = ["--write-initrd", "initrd.cpio"];
    let cases: [(Vec<&str>, &str); 9] = [
        (
            [&tap[..], &ip, &write, &cmd].concat(),
            "give --nfs-server ADDR --nfs-port PORT",
        ),
        (
            [&tap[..], &server, &write, &cmd].concat(),
            "--guest-ip A.B.C.D/LEN",
        ),
        (
            [
                &tap[..],
                &ip,
                &["--nfs-server", "fd00::1", "--nfs-port", "2049"],
                &write,
                &cmd,
            ]
            .concat(),
            "IPv4 only",
        ),
        (
            [
                &tap[..],
                &ip,
                &["--nfs-server", "10.9.9.9", "--nfs-port", "2049"],
                &write,
                &cmd,
            ]
            .concat(),
            "not on the guest's network 172.16.0.2/24",
        ),
        (
            [
                &tap[..],
                &["--guest-ip", "172.16.0.2"],
                &server,
                &write,
                &cmd,
            ]
            .concat(),
            "prefix length",
        ),
        ([&tap[..], &ip, &server, &write].concat(), "no command"),
        ([&tap[..], &cmd].concat(), "give --write-initrd PATH"),
        (
            [&["-v", "/etc:/x"][..], &ip, &server, &write, &cmd].concat(),
            "QEMU's user network gives it",
        ),
        (
            [
                &tap[..],
                &ip,
                &server,
                &write,
                &["--initrd", "other.cpio"],
                &cmd,
            ]
            .concat(),
            "cannot be used with",
        ),
    ];
    for (args, why) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_vmshare"))
            .current_dir(&dir)
            .arg("plan")
            .args(&args)
            .output()
            .unwrap();
        assert_exit(&out, 125);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
        assert!(
            !dir.join("initrd.cpio").exists(),
            "{args:?} wrote an initramfs"
        );
    }
}
