//! `vmshare run --rootfs DIR|IMAGE`: the command runs inside another root
//! filesystem, with the volumes mounted in it, while the directory or
//! image stays exactly as it was (writes go to a tmpfs layer), through the
//! real binary and a real QEMU guest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::{assert_exit, scratch_dir, text, vol};

/// The marker only the test root filesystem has (the initramfs has no
/// /etc/os-release).
const MARKER: &str = "ID=vmshare-test-rootfs\n";

/// What every test here runs in the guest: the marker, then a write to
/// /etc, then the volume both ways, then what the root has and lacks.
const SCRIPT: &str = "cat /etc/os-release; \
     echo changed > /etc/os-release && echo new > /etc/added && cat /etc/os-release; \
     cat /data/from-host; echo from-guest > /data/from-guest; \
     test -e /init || echo no-initramfs-init; \
     test -r /proc/self/status && test -c /dev/null && test -d /sys/kernel && test -e /dev/pts/ptmx && echo kernel-filesystems";

/// What [`SCRIPT`] prints when all is well.
const EXPECTED: &str =
    "ID=vmshare-test-rootfs\nchanged\nhost\nno-initramfs-init\nkernel-filesystems\n";

/// A root filesystem of Debian's static busybox: /bin/busybox, a link per
/// applet, and the marker. No /proc, /sys, /dev, /init or vmshare.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in text(&list.stdout).lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/os-release"), MARKER).unwrap();
    root
}

/// A volume directory with a file from the host.
fn volume(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("from-host"), "host\n").unwrap();
    data
}

/// The root filesystem is as it was: marker intact, nothing added.
fn assert_unchanged(root: &Path) {
    assert_eq!(
        std::fs::read_to_string(root.join("etc/os-release")).unwrap(),
        MARKER
    );
    for added in ["etc/added", "proc", "sys", "dev", "data"] {
        assert!(!root.join(added).exists(), "{added} appeared in the rootfs");
    }
}

/// The mkfs tools `vmshare image build` needs; `false` (skip) when
/// missing outside CI.
fn have_mkfs() -> bool {
    let missing: Vec<String> = [("mkfs.erofs", "erofs-utils"), ("mkfs.ext4", "e2fsprogs")]
        .into_iter()
        .filter(|(tool, package)| vmshare_plan::image::find_tool(tool, package).is_err())
        .map(|(tool, package)| format!("{tool} (apt-get install {package})"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("image test needs: {}", missing.join(", "));
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg} (CI must install them)"
    );
    eprintln!("SKIPPED: {msg}");
    false
}

/// A host directory as the root: the command sees its files, writes to
/// /etc stay in the guest, the volume works both ways inside it, /proc,
/// /sys and /dev are there, and the initramfs is not visible.
#[test]
fn directory_rootfs_with_a_volume() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("rootfs-dir");
    let root = busybox_rootfs(&dir);
    let data = volume(&dir);
    let out = h.vmshare(&[
        "run",
        "--rootfs",
        root.to_str().unwrap(),
        "-v",
        &vol(&data, "/data"),
        "--",
        "sh",
        "-c",
        SCRIPT,
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), EXPECTED);
    assert_unchanged(&root);
    assert_eq!(
        std::fs::read_to_string(data.join("from-guest")).unwrap(),
        "from-guest\n"
    );
}

/// The same tree as erofs and as ext4 images built by `vmshare image
/// build`: each is the guest's /dev/vda, so a volume image after it is
/// /dev/vdb; the ext4 image's bytes do not change although the guest
/// wrote to its root.
#[test]
fn erofs_and_ext4_image_rootfs() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    if !have_mkfs() {
        return;
    }
    let dir = scratch_dir("rootfs-images");
    let tree = busybox_rootfs(&dir);
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("id"), "volume disk\n").unwrap();
    let extra_img = dir.join("extra.erofs");
    let build = |from: &Path, to: &Path| {
        let out = h.vmshare(&[
            "image",
            "build",
            from.to_str().unwrap(),
            "-o",
            to.to_str().unwrap(),
        ]);
        assert_exit(&out, 0);
    };
    build(&extra, &extra_img);
    for name in ["root.erofs", "root.ext4"] {
        let image = dir.join(name);
        build(&tree, &image);
        let before = std::fs::read(&image).unwrap();
        let data = volume(&dir.join(name.replace('.', "-")));
        let script = format!(
            "{SCRIPT}; cat /extra/id; grep -o '^/dev/vd[a-z]* /extra [a-z0-9]*' /proc/mounts"
        );
        let out = h.vmshare(&[
            "run",
            "--rootfs",
            image.to_str().unwrap(),
            "-v",
            &vol(&data, "/data"),
            "--mount",
            &format!("type=erofs,source={},target=/extra", extra_img.display()),
            "--",
            "sh",
            "-c",
            &script,
        ]);
        assert_exit(&out, 0);
        assert_eq!(
            text(&out.stdout),
            format!("{EXPECTED}volume disk\n/dev/vdb /extra erofs\n"),
            "{name}"
        );
        assert_eq!(
            std::fs::read_to_string(data.join("from-guest")).unwrap(),
            "from-guest\n"
        );
        assert!(
            std::fs::read(&image).unwrap() == before,
            "{name} changed on the host"
        );
    }
    assert_unchanged(&tree);
}

/// A path that is neither a directory nor an image is refused before boot
/// with one line; a root without the command is the command's problem:
/// 127, as docker says when CMD is not in the image.
#[test]
fn bad_rootfs_and_missing_command() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("rootfs-bad");
    let text_file = dir.join("notes.img");
    std::fs::write(&text_file, "not a filesystem\n".repeat(200)).unwrap();
    for (path, needle) in [
        (dir.join("missing"), "No such file or directory"),
        (text_file, "neither a directory nor an ext4 or erofs image"),
    ] {
        let out = h.vmshare(&["run", "--rootfs", path.to_str().unwrap(), "--", "true"]);
        assert_exit(&out, 125);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--rootfs") && err.contains(needle), "{err}");
    }
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = h.vmshare(&[
        "run",
        "--rootfs",
        empty.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "true",
    ]);
    assert_exit(&out, 127);
    assert!(text(&out.stderr).contains("sh"), "{}", text(&out.stderr));
}

/// A user other than root: fine in an image root; in a directory root,
/// fine on files the user owns, while a file it does not own fails with
/// the known limit spelled out (overlayfs asks NFS for POSIX ACLs, which
/// vmshare's server does not serve) rather than a bare EOPNOTSUPP.
#[test]
fn non_root_user_in_a_rootfs() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    if !rustix::process::geteuid().is_root() || !have_mkfs() {
        eprintln!("SKIPPED: needs root (to chown the tree) and the mkfs tools");
        return;
    }
    let dir = scratch_dir("rootfs-user");
    let root = busybox_rootfs(&dir);
    let image = dir.join("root.erofs");
    assert_exit(
        &h.vmshare(&[
            "image",
            "build",
            root.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
        ]),
        0,
    );
    let run = |rootfs: &Path| {
        h.vmshare(&[
            "run",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "-u",
            "1000:1000",
            "--",
            "sh",
            "-c",
            "id -u; cat /etc/os-release",
        ])
    };
    let expected = format!("1000\n{MARKER}");
    let out = run(&image);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), expected);

    // A directory root is an overlay over NFS: overlayfs checks a
    // non-owner's access through POSIX ACLs, which the guest fetches with
    // NFSACL; without the server's answers this open failed (EOPNOTSUPP).
    let out = run(&root);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), expected);
}
