//! `vmshare run --from-env` with a 9p share in QEMU's `mapped-xattr`
//! security model (FILESYSTEM_DRIVER=9p FILESYSTEM_ACCESSMODE=mapped),
//! through the real binary and a real QEMU guest.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{assert_exit, scratch_dir, text, wait_with_watchdog, Harness};

/// `vmshare run --from-env -- sh -c SCRIPT` sharing `share` over 9p,
/// mapped, under the tag `hostshare` (so at /mnt/hostshare).
fn run_mapped(h: &Harness, share: &Path, script: &str) -> Output {
    let child = h
        .vmshare_cmd()
        .env("FILESYSTEM_SOURCE", share)
        .env("FILESYSTEM_TARGET", "hostshare")
        .env("FILESYSTEM_DRIVER", "9p")
        .env("FILESYSTEM_ACCESSMODE", "mapped")
        .args(["run", "--from-env", "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_watchdog(child, Duration::from_secs(300))
}

/// A 4-byte little-endian id from a `user.virtfs.*` xattr.
fn virtfs_id(path: &Path, name: &str) -> u32 {
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(path, name, &mut buf[..])
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    assert_eq!(n, 4, "{}: {name} is {n} bytes", path.display());
    u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])
}

/// The guest creates a file and a directory and chowns them to 1234:5678;
/// the guest sees 1234:5678. On the host they belong to whoever ran QEMU
/// (this test's user, not the share's owner 4242:4243 nor 1234:5678), with
/// QEMU's private modes (0600 files, 0700 directories), and the guest's
/// owner and mode are in `user.virtfs.*` xattrs. A second run sees them.
#[test]
fn mapped_9p_keeps_guest_ownership_in_xattrs() {
    let Some(h) = Harness::new() else {
        return;
    };
    let share = scratch_dir("9p-mapped").join("share");
    std::fs::create_dir(&share).unwrap();
    std::os::unix::fs::chown(&share, Some(4242), Some(4243)).unwrap();

    let out = run_mapped(
        &h,
        &share,
        "cd /mnt/hostshare && echo hello > f && mkdir d && chown 1234:5678 f d && \
         stat -c '%n %u:%g %a' f d && grep ' /mnt/hostshare ' /proc/mounts | cut -d' ' -f1-3",
    );
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "f 1234:5678 644\nd 1234:5678 755\nhostshare /mnt/hostshare 9p\n"
    );

    let (file, dir) = (share.join("f"), share.join("d"));
    let runner = (rustix::process::geteuid(), rustix::process::getegid());
    for (path, host_mode, guest_mode) in [
        (&file, 0o600, libc::S_IFREG | 0o644),
        (&dir, 0o700, libc::S_IFDIR | 0o755),
    ] {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (runner.0.as_raw(), runner.1.as_raw(), host_mode),
            "{}: host owner and mode",
            path.display()
        );
        assert_eq!(virtfs_id(path, "user.virtfs.uid"), 1234);
        assert_eq!(virtfs_id(path, "user.virtfs.gid"), 5678);
        assert_eq!(virtfs_id(path, "user.virtfs.mode"), guest_mode);
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello\n");

    let again = run_mapped(
        &h,
        &share,
        "cd /mnt/hostshare && stat -c '%n %u:%g %a' f d && cat f",
    );
    assert_exit(&again, 0);
    assert_eq!(
        text(&again.stdout),
        "f 1234:5678 644\nd 1234:5678 755\nhello\n"
    );
}

/// Run by a user other than root (nobody here), a read-write 9p share in
/// `passthrough` mode lets QEMU create files only for that user's own
/// uid: the guest's root gets EPERM. vmshare says so before boot, naming
/// the share and what to use instead; before, the run looked fine and
/// only the guest's writes failed.
#[test]
fn passthrough_9p_run_by_a_user_other_than_root_says_what_it_cannot_do() {
    if Harness::new().is_none() {
        return;
    }
    let Some(nobody) = common::nobody::Nobody::new("9p") else {
        return;
    };
    let share = nobody.base.join("share");
    std::fs::create_dir_all(&share).unwrap();
    nobody.give();
    let mut cmd = nobody.vmshare();
    cmd.env("FILESYSTEM_SOURCE", &share)
        .env("FILESYSTEM_TARGET", "hostshare")
        .env("FILESYSTEM_DRIVER", "9p")
        .args(["run", "--from-env", "--", "sh", "-c"])
        .arg("touch /mnt/hostshare/x 2>/dev/null || echo refused");
    let out = nobody.run(cmd);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), "refused");
    let err = text(&out.stderr);
    assert!(
        err.contains("9p passthrough needs root on the host")
            && err.contains(&share.display().to_string())
            && err.contains("FILESYSTEM_ACCESSMODE=mapped"),
        "stderr: {err}"
    );
}
