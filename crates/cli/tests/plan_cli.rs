//! `vmshare plan` front ends through the real binary (no VM): an OCI
//! config combined with docker options, as `vmshare run` reads them too.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{assert_exit, scratch_dir};

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
/// paths become absolute; bad machine values are refused.
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
    for bad in [
        &["--cpus", "0"][..],
        &["--memory", "0"],
        &["--vsock-cid", "2"],
        &["--mac", "zz"],
    ] {
        let out = plan(bad);
        assert!(!out.status.success(), "{bad:?} was taken");
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
    assert_exit(&out, 125);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs 20"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
