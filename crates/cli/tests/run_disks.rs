//! `vmshare run` with block-device volumes: `--mount type=ext4|erofs`
//! images and copy volumes (`-v HOST:GUEST:copy`), through the real
//! binary and a real QEMU guest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{assert_exit, scratch_dir, text, vol};
use vmshare_plan::image::{build_image, extract_ext4};
use vmshare_plan::plan::ImageContent;
use vmshare_plan::ImageFormat;

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

/// An image of `dir` at `out`.
fn image(dir: &Path, out: &Path, format: ImageFormat) -> PathBuf {
    let _ = std::fs::remove_file(out);
    let contents = [ImageContent {
        host_path: dir.to_path_buf(),
        subdir: String::new(),
    }];
    build_image(out, format, &contents, None, &mut |_| {}).unwrap();
    out.to_path_buf()
}

/// An ext4 image mounted read-write takes the guest's writes (read back on
/// the host from the image); an erofs image is readable and refuses writes.
/// The erofs image holds a 1 GiB sparse file in little room (its holes
/// are not written out) and reads it back whole, and two identical files.
/// The ext4 image is the plan's first disk and the erofs one its second:
/// mounting each with its own filesystem type only works if the guest's
/// /dev/vda and /dev/vdb follow the plan's order.
#[test]
fn ext4_rw_and_erofs_ro_images() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("disks-images");
    let (rw, ro) = (dir.join("rw"), dir.join("ro"));
    std::fs::create_dir(&rw).unwrap();
    std::fs::create_dir(&ro).unwrap();
    write(&rw.join("hello"), "from the ext4 image\n");
    write(&ro.join("hello"), "from the erofs image\n");
    let sparse = std::fs::File::create(ro.join("sparse")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end\n", (1 << 30) - 4).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"mid\n", 1 << 29).unwrap();
    let body: String = (0..20_000).map(|i| format!("{i}\n")).collect();
    write(&ro.join("twin1"), &body);
    write(&ro.join("twin2"), &body);
    let ext4 = image(&rw, &dir.join("rw.ext4"), ImageFormat::Ext4);
    let erofs = image(&ro, &dir.join("ro.erofs"), ImageFormat::Erofs);
    let erofs_size = std::fs::metadata(&erofs).unwrap().len();
    assert!(erofs_size < 8 << 20, "erofs image of {erofs_size} bytes");
    let script = "cat /x/hello /y/hello; \
                  echo written in the guest > /x/new.txt; echo rc=$?; \
                  echo nope > /y/new.txt 2>/dev/null; echo rc=$?; \
                  grep -E ' /(x|y) ' /proc/mounts | cut -d' ' -f1-3; \
                  stat -c 'size=%s' /y/sparse; tail -c 4 /y/sparse; \
                  dd if=/y/sparse bs=1M skip=512 count=1 2>/dev/null | head -c 4; \
                  dd if=/y/sparse bs=1M skip=100 count=1 2>/dev/null | tr -d '\\0' | wc -c; \
                  cmp /y/twin1 /y/twin2 && tail -n 1 /y/twin2";
    let out = h.vmshare(&[
        "run",
        "--mount",
        &format!("type=ext4,source={},target=/x", ext4.display()),
        "--mount",
        &format!("type=erofs,source={},target=/y", erofs.display()),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("from the ext4 image\nfrom the erofs image\nrc=0\nrc=1\n"),
        "stdout: {stdout}"
    );
    assert!(stdout.contains("/dev/vda /x ext4\n"), "stdout: {stdout}");
    assert!(stdout.contains("/dev/vdb /y erofs\n"), "stdout: {stdout}");
    assert!(
        stdout.ends_with("size=1073741824\nend\nmid\n0\n19999\n"),
        "stdout: {stdout}"
    );

    let back = dir.join("back");
    extract_ext4(&ext4, "", &back).unwrap();
    assert_eq!(
        std::fs::read_to_string(back.join("new.txt")).unwrap(),
        "written in the guest\n"
    );
}

/// A copy volume: the guest's change is on the host after `vmshare run`
/// exits, and a file the guest deleted is gone.
#[test]
fn copy_volume_syncs_back_at_exit() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("disks-copy");
    write(&dir.join("data.txt"), "initial\n");
    write(&dir.join("old.txt"), "delete me\n");
    let out = h.vmshare(&[
        "run",
        "-v",
        &format!("{}:copy", vol(&dir, "/data")),
        "--",
        "sh",
        "-c",
        "echo 'modified in the VM' >> /data/data.txt && rm /data/old.txt && cat /data/data.txt",
    ]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout), "initial\nmodified in the VM\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("data.txt")).unwrap(),
        "initial\nmodified in the VM\n"
    );
    assert!(!dir.join("old.txt").exists());
}

/// A copy volume whose host directory changes while the VM runs is not
/// written back: the host keeps its version, the guest's is kept beside
/// it, and vmshare fails saying so.
#[test]
fn copy_volume_changed_on_the_host_keeps_both() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("disks-copy-conflict").join("vol");
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("data.txt"), "initial\n");
    let arg = format!("{}:copy", vol(&dir, "/data"));
    let mut child = h.spawn_vmshare(
        &[
            "run",
            "-i",
            "-v",
            &arg,
            "--",
            "sh",
            "-c",
            "echo guest > /data/data.txt && echo ready && read line",
        ],
        Stdio::piped(),
    );
    // The image was built before boot, so the guest is running on a copy.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    write(&dir.join("host.txt"), "made on the host meanwhile\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let out = common::wait_with_watchdog(child, Duration::from_secs(300));
    assert_exit(&out, 125);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("changed on the host"), "stderr: {stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.join("data.txt")).unwrap(),
        "initial\n"
    );
    let kept = PathBuf::from(format!("{}.vmshare-guest-1", dir.display()));
    assert!(
        stderr.contains(&kept.display().to_string()),
        "stderr: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(kept.join("data.txt")).unwrap(),
        "guest\n"
    );
}

/// Twenty copy-in volumes plus three image volumes exceed QEMU microvm's
/// device budget, so the copies are packed into one image: all twenty are
/// readable in the guest, all from one device.
#[test]
fn twenty_copy_volumes_packed_into_one_disk() {
    let Some(h) = common::Harness::new() else {
        return;
    };
    let dir = scratch_dir("disks-packed");
    let mut args: Vec<String> = vec!["run".into()];
    for i in 0..20 {
        let d = dir.join(format!("c{i}"));
        std::fs::create_dir(&d).unwrap();
        write(&d.join("id"), &format!("copy {i}\n"));
        args.push("-v".into());
        args.push(format!("{}:ro,copy", vol(&d, &format!("/c/{i:02}"))));
    }
    let layer = dir.join("layer");
    std::fs::create_dir(&layer).unwrap();
    write(&layer.join("id"), "layer\n");
    for i in 0..3 {
        let img = image(&layer, &dir.join(format!("l{i}.erofs")), ImageFormat::Erofs);
        args.push("--mount".into());
        args.push(format!("type=erofs,source={},target=/l{i}", img.display()));
    }
    args.extend(["--", "sh", "-c"].map(String::from));
    args.push(
        "cat /c/*/id /l2/id; awk '$2 ~ /^\\/c\\// {print $1}' /proc/mounts | sort -u | wc -l"
            .into(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = h.vmshare(&args);
    assert_exit(&out, 0);
    let expected: String = (0..20)
        .map(|i| format!("copy {i}\n"))
        .chain(["layer\n".to_string(), "1\n".to_string()])
        .collect();
    assert_eq!(text(&out.stdout), expected);
}

/// Run by a user other than root (as `nobody` here), a copy volume comes
/// back with what the guest's root made in it, as that user's files:
/// debugfs cannot give them to root and says so for each, which the
/// read-back counted as errors, refusing every such volume. The run's
/// directory goes at exit, also with a read-only directory in the tree,
/// whose extracted copy that user could not empty: it was left in
/// `STATE/runs` after every such run.
#[test]
fn a_copy_volume_comes_back_for_a_user_other_than_root() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if common::Harness::new().is_none() {
        return;
    }
    let Some(nobody) = common::nobody::Nobody::new("copy") else {
        return;
    };
    let dir = nobody.base.join("vol");
    std::fs::create_dir_all(dir.join("ro")).unwrap();
    write(&dir.join("data.txt"), "initial\n");
    write(&dir.join("ro/kept.txt"), "kept\n");
    nobody.give();
    std::fs::set_permissions(dir.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = nobody.vmshare();
    cmd.args(["run", "-v", &format!("{}:copy", vol(&dir, "/data")), "--"])
        .args([
            "sh",
            "-c",
            "echo new > /data/new.txt; echo more >> /data/data.txt",
        ]);
    let out = nobody.run(cmd);
    assert_exit(&out, 0);
    assert_eq!(
        std::fs::read_to_string(dir.join("data.txt")).unwrap(),
        "initial\nmore\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(std::fs::metadata(dir.join("new.txt")).unwrap().uid(), 65534);
    assert_eq!(
        std::fs::read_to_string(dir.join("ro/kept.txt")).unwrap(),
        "kept\n"
    );
    let runs = nobody.home.join(".local/state/vmshare/runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", runs.display());
}
