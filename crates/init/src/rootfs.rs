//! `--rootfs`: switch init into another root filesystem before the
//! volumes are mounted.
//!
//! The root filesystem (an NFS export of a host directory, or a disk
//! image) is mounted read-only and becomes the lower layer of an overlay
//! whose upper layer is a tmpfs, so the command can write anywhere while
//! the image or directory stays exactly as it was, as with docker. Init
//! then gives the new root `/proc`, `/sys` and `/dev` and chroots itself
//! into it: the volumes, the working directory and CMD's `PATH` lookup all
//! happen inside it with no path rewriting, and init keeps running from
//! the initramfs's binary, already loaded, so the root filesystem needs
//! nothing of vmshare's (no init, no mount helpers, no libraries).
//!
//! chroot rather than pivot_root: the initramfs is the kernel's rootfs,
//! which cannot be pivoted away from, and the VM holds nothing to hide
//! from CMD.

use std::ffi::CString;
use std::path::Path;

use rustix::mount::MountFlags;
use vmshare_plan::guest::{GuestRootfs, ROOTFS_DIR};

use crate::{mounts, InitError};

/// Mounts the root filesystem's layers and chroots init into the result.
pub(crate) fn enter(rootfs: &GuestRootfs) -> Result<(), InitError> {
    let fail = |what: String| InitError::Mount(format!("--rootfs: {what}"));
    mounts::mount(&rootfs.lower)?;
    let base = Path::new(ROOTFS_DIR);
    let (rw, root) = (base.join("rw"), base.join("root"));
    let (upper, work) = (rw.join("upper"), rw.join("work"));
    mkdir(&rw).map_err(|e| fail(format!("creating {}: {e}", rw.display())))?;
    mount("tmpfs", &rw, "tmpfs", MountFlags::empty(), "mode=0755").map_err(|e| {
        fail(format!(
            "the writable layer (tmpfs on {}): {e}",
            rw.display()
        ))
    })?;
    for d in [&upper, &work, &root] {
        mkdir(d).map_err(|e| fail(format!("creating {}: {e}", d.display())))?;
    }
    let layers = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.lower.target,
        upper.display(),
        work.display()
    );
    mount("overlay", &root, "overlay", MountFlags::empty(), &layers).map_err(|e| {
        fail(format!(
            "overlay of {} ({}) with a tmpfs upper layer: {e}",
            rootfs.lower.source, rootfs.lower.fstype
        ))
    })?;

    // What every program expects, whatever the image has: new proc and
    // sysfs instances, and init's /dev (devtmpfs, with /dev/pts and
    // /dev/shm) bound in whole.
    let kernel = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    for (dir, source, fstype, flags) in [
        ("proc", "proc", "proc", kernel),
        ("sys", "sysfs", "sysfs", kernel),
        ("dev", "/dev", "none", MountFlags::BIND | MountFlags::REC),
    ] {
        let target = root.join(dir);
        mkdir(&target).map_err(|e| fail(format!("creating /{dir} in the root: {e}")))?;
        mount(source, &target, fstype, flags, "")
            .map_err(|e| fail(format!("mounting /{dir} in the root: {e}")))?;
    }

    std::env::set_current_dir(&root)
        .map_err(|e| fail(format!("entering {}: {e}", root.display())))?;
    rustix::process::chroot(".").map_err(|e| fail(format!("chroot: {e}")))?;
    std::env::set_current_dir("/").map_err(|e| fail(format!("chdir /: {e}")))?;
    Ok(())
}

fn mkdir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> std::io::Result<()> {
    let data =
        CString::new(data).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::mount::mount(source, target, fstype, flags, data.as_c_str())?;
    Ok(())
}
