//! `vmshare image build` through the real binary: what it says when mkfs
//! fails because of something in the tree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_exit, needs, scratch_dir};

/// `vmshare image build SRC -o OUT` as nobody, with a copy of the binary
/// in `dir` (which nobody can reach, where the build's may not be).
fn build_as_nobody(dir: &Path, src: &Path, out: &Path) -> std::process::Output {
    let bin = dir.join("vmshare");
    std::fs::copy(env!("CARGO_BIN_EXE_vmshare"), &bin).unwrap();
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["image", "build"])
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// mkfs.ext4 says "Permission denied while populating file system" and
/// no more when the user building cannot read a file; the message now
/// names the file.
#[test]
fn a_file_the_user_cannot_read_is_named() {
    if !needs::root_or_skip("needs root to build as nobody")
        || !needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("image-unreadable");
    let (src, out) = (dir.join("src"), dir.join("out"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(src.join("public"), "pub\n").unwrap();
    std::fs::write(src.join("secret"), "secret\n").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    for d in [&dir, &src, &out] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let built = build_as_nobody(&dir, &src, &out.join("x.ext4"));
    assert_exit(&built, 125);
    let err = String::from_utf8_lossy(&built.stderr);
    assert!(
        err.contains(&format!(
            "{}: cannot be read by this user",
            src.join("secret").display()
        )),
        "{err}"
    );
    assert!(!out.join("x.ext4").exists(), "no half-built image is left");
}

/// A tree behind a directory the user cannot search was called "not a
/// directory"; the message now says permission was denied.
#[test]
fn a_tree_the_user_cannot_reach_is_said_to_be_so() {
    if !needs::root_or_skip("needs root to build as nobody")
        || !needs::tool_or_skip("setpriv", "util-linux")
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch_dir("image-unreachable");
    let (locked, out) = (dir.join("locked"), dir.join("out"));
    std::fs::create_dir_all(locked.join("tree")).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    for d in [&dir, &out] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let built = build_as_nobody(&dir, &locked.join("tree"), &out.join("x.erofs"));
    assert_exit(&built, 125);
    let err = String::from_utf8_lossy(&built.stderr);
    assert!(
        err.contains("Permission denied") && !err.contains("not a directory"),
        "{err}"
    );
}

/// mkfs.erofs 1.5 (Debian 12's) fails on a 255-byte name, a valid one,
/// with "No such file or directory"; the message now names the file and
/// what to do. A mkfs.erofs without that limit builds the image.
#[test]
fn a_name_mkfs_erofs_cannot_store_is_named() {
    if !needs::tool_or_skip("mkfs.erofs", "erofs-utils") {
        return;
    }
    let dir = scratch_dir("image-long-name");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let long = "n".repeat(255);
    std::fs::write(src.join(&long), "x").unwrap();
    let built = Command::new(env!("CARGO_BIN_EXE_vmshare"))
        .args(["image", "build"])
        .arg(&src)
        .arg("-o")
        .arg(dir.join("x.erofs"))
        .output()
        .unwrap();
    if built.status.success() {
        eprintln!("this mkfs.erofs stores 255-byte names");
        return;
    }
    assert_exit(&built, 125);
    let err = String::from_utf8_lossy(&built.stderr);
    assert!(
        err.contains(&long) && err.contains("cannot store a name of 255 bytes"),
        "{err}"
    );
}
