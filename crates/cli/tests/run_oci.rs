//! `vmshare run --oci config.json`: the mounts and process of an OCI
//! runtime spec, through the real binary and a real QEMU guest. Layers are
//! erofs images made with `vmshare image build` (real mkfs.erofs), merged
//! by a `format/overlay` mount as nerdbox and containerd's mount manager
//! describe them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{assert_exit, scratch_dir, text, vol, Harness};

const TOOLS: &[(&str, &str)] = &[("mkfs.erofs", "erofs-utils")];

/// Writes `files` (name, contents) under `dir`.
fn tree(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).unwrap();
    }
}

/// `vmshare image build DIR -o OUT`.
fn build_layer(h: &Harness, dir: &Path, out: &Path) -> PathBuf {
    let built = h.vmshare(&[
        "image",
        "build",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_exit(&built, 0);
    out.to_path_buf()
}

/// Two erofs layers under one `format/overlay` whose lowerdir names both
/// (`{{ overlay 2 1 }}`: the app layer on top, counting the skipped proc
/// mount), CMD, env and working directory from the config's process, and a
/// docker `-v` over the overlay. The guest sees the merged tree with the
/// upper layer's version of a file in both; its writes to the overlay go
/// to a tmpfs layer, so the images stay byte for byte the same and a second
/// run starts from the layers again.
#[test]
fn overlay_of_two_erofs_layers() {
    let Some(h) = Harness::with_tools(TOOLS) else {
        return;
    };
    let dir = scratch_dir("oci-overlay");
    let bundle = dir.join("bundle");
    tree(
        &dir.join("base"),
        &[("base-only", "from base\n"), ("shared", "base version\n")],
    );
    tree(
        &dir.join("app"),
        &[("app-only", "from app\n"), ("shared", "app version\n")],
    );
    std::fs::create_dir_all(bundle.join("layers")).unwrap();
    // One layer given relative to the bundle, one absolute.
    let base = build_layer(&h, &dir.join("base"), &bundle.join("layers/base.erofs"));
    let app = build_layer(&h, &dir.join("app"), &dir.join("app.erofs"));
    let before = (std::fs::read(&base).unwrap(), std::fs::read(&app).unwrap());
    let out_dir = dir.join("out");
    std::fs::create_dir(&out_dir).unwrap();

    let script = "cat base-only app-only shared; echo \"$FROM_CONFIG $OVERRIDDEN\"; pwd; \
                  echo written > new && cat new; \
                  echo changed > shared && cat shared; \
                  rm base-only && ls; \
                  grep -E ' /merged |erofs' /proc/mounts | cut -d' ' -f1-4 | sed 's/,.*//'; \
                  cp shared out/seen";
    let config = serde_json::json!({
        "ociVersion": "1.2.0",
        "hostname": "oci-box",
        "process": {
            "args": ["sh", "-c", script],
            "env": ["FROM_CONFIG=config", "OVERRIDDEN=config"],
            "cwd": "/merged",
            "user": {"uid": 0, "gid": 0}
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"type": "erofs", "source": "layers/base.erofs", "options": ["ro"]},
            {"type": "erofs", "source": app.to_str().unwrap(), "options": ["ro"]},
            {"type": "format/overlay", "source": "overlay", "destination": "/merged",
             "options": ["lowerdir={{ overlay 2 1 }}"]},
            // One layer, read-only: the kernel wants two without an
            // upperdir, so it gets a tmpfs one, mounted read-only.
            {"type": "format/overlay", "source": "overlay", "destination": "/base",
             "options": ["lowerdir={{ mount 1 }}", "ro"]}
        ]
    });
    let config_path = bundle.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let config_arg = config_path.to_str().unwrap();
    let out = h.vmshare(&[
        "run",
        "--oci",
        config_arg,
        "-v",
        &vol(&out_dir, "/merged/out"),
        "-e",
        "OVERRIDDEN=cli",
    ]);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "from base\nfrom app\napp version\n\
         config cli\n/merged\n\
         written\nchanged\n\
         app-only\nnew\nout\nshared\n\
         /dev/vda /run/vmshare/m0 erofs ro\n\
         /dev/vdb /run/vmshare/m1 erofs ro\n\
         overlay /merged overlay rw\n"
    );
    // The -v volume over the overlay reached the host.
    assert_eq!(
        std::fs::read_to_string(out_dir.join("seen")).unwrap(),
        "changed\n"
    );
    // The layers were never written.
    assert!(
        std::fs::read(&base).unwrap() == before.0 && std::fs::read(&app).unwrap() == before.1,
        "an erofs layer changed"
    );

    // A second run starts from the layers: the first run's changes were
    // in its own tmpfs layer. The spec's host name is the guest's.
    let again = h.vmshare(&[
        "run",
        "--oci",
        config_arg,
        "--",
        "sh",
        "-c",
        "ls /merged; cat /merged/shared; hostname; cat /base/shared; \
         touch /base/new 2>/dev/null || echo read-only",
    ]);
    assert_exit(&again, 0);
    assert_eq!(
        text(&again.stdout),
        "app-only\nbase-only\nshared\napp version\noci-box\nbase version\nread-only\n"
    );
}

/// Bad configs are refused with one line naming the problem, exit status
/// 125, and no VM started (the --verbose timeline never reaches QEMU).
#[test]
fn bad_oci_configs_are_refused_before_boot() {
    let Some(h) = Harness::new() else {
        return;
    };
    let dir = scratch_dir("oci-refusals");
    std::fs::write(dir.join("layer.erofs"), b"not looked at").unwrap();
    let cases: [(serde_json::Value, &[&str], String); 4] = [
        (
            serde_json::json!({"mounts": [
                {"type": "erofs", "source": "layer.erofs"},
                {"type": "format/overlay", "destination": "/m",
                 "options": ["lowerdir={{ mount 0 }}:{{ mount 3 }}"]}
            ]}),
            &["--", "true"],
            "'{{ mount 3 }}' refers to mount 3, but there are only 2 mounts (counting from 0)"
                .into(),
        ),
        (
            serde_json::json!({"mounts": [
                {"type": "erofs", "source": "missing.erofs", "destination": "/l"}
            ]}),
            &["--", "true"],
            format!("{}", dir.join("missing.erofs").display()),
        ),
        (
            serde_json::json!({"process": {"cwd": "/"}, "mounts": []}),
            &[],
            "has no process.args; give CMD".into(),
        ),
        (
            serde_json::json!({"process": {"args": ["true"], "cwd": "work"}}),
            &[],
            "process.cwd: 'work' is not absolute".into(),
        ),
    ];
    let config = dir.join("config.json");
    for (json, cmd, needle) in cases {
        std::fs::write(&config, json.to_string()).unwrap();
        let mut args = vec!["run", "--verbose", "--oci", config.to_str().unwrap()];
        args.extend_from_slice(cmd);
        let out = h.vmshare(&args);
        assert_exit(&out, 125);
        let stderr = text(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("vmshare:"))
            .collect();
        assert_eq!(errors.len(), 1, "{json}: {stderr}");
        assert!(errors[0].contains(&needle), "{json}: {stderr}");
        assert!(
            !stderr.contains("QEMU") && !stderr.contains("accelerator"),
            "{json}: something was started: {stderr}"
        );
    }
}

/// A bind mount's `noexec` (here a single file's, from an OCI spec) holds:
/// a bind mount takes such flags only on a remount, and they were dropped.
#[test]
fn a_bind_mounts_noexec_holds() {
    let Some(h) = Harness::new() else {
        return;
    };
    let dir = scratch_dir("oci-noexec");
    let script = dir.join("f.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = serde_json::json!({"mounts": [{
        "type": "bind",
        "source": script.to_str().unwrap(),
        "destination": "/usr/local/bin/f.sh",
        "options": ["noexec"]
    }]});
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let out = h.vmshare(&[
        "run",
        "--oci",
        dir.join("config.json").to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "/usr/local/bin/f.sh; echo rc=$?; cat /usr/local/bin/f.sh | head -1",
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "rc=126\n#!/bin/sh\n");
}
