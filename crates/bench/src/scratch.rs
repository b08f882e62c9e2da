//! A fresh ext4 filesystem for the exports, made for the run.
//!
//! Why not a directory of the host's disk: on a disk that has seen many
//! runs, the block group a new directory lands in decides the rate. On
//! this machine a CREATE under /var/tmp took 1 ms in the kernel, under
//! /tmp 0.2 ms and under /root 15 µs, all on one ext4 filesystem, and two
//! servers' exports, made one after the other, can land in different
//! groups. A filesystem made for the run, on a loop device over a file in
//! /dev/shm, is the same for both servers and for every run: the table
//! then compares the servers, not where their directories fell. It is
//! still ext4 with its journal, so COMMIT still waits for a journal
//! commit (but not for a disk). `--dir` runs on any directory instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::client::Result;

/// Mounted scratch filesystems, for the watchdog to remove on its way out.
static MOUNTED: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());

/// A loop-mounted ext4 image, unmounted and deleted on drop.
pub struct Scratch {
    mountpoint: PathBuf,
    image: PathBuf,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Scratch {
    /// Makes and mounts an ext4 filesystem of `bytes` bytes (rounded up to
    /// a MiB) backed by a file in /dev/shm. Needs root and mkfs.ext4.
    pub fn make(bytes: u64) -> Result<Scratch> {
        let id = std::process::id();
        let image = PathBuf::from(format!("/dev/shm/vmshare-bench-{id}.ext4"));
        let mountpoint = std::env::temp_dir().join(format!("vmshare-bench-{id}-fs"));
        let file =
            std::fs::File::create(&image).map_err(|e| format!("{}: {e}", image.display()))?;
        let cleanup_image = |e: String| {
            let _ = std::fs::remove_file(&image);
            e
        };
        file.set_len(bytes.div_ceil(1 << 20) << 20)
            .map_err(|e| cleanup_image(format!("{}: {e}", image.display())))?;
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image)).map_err(cleanup_image)?;
        std::fs::create_dir_all(&mountpoint)
            .map_err(|e| cleanup_image(format!("{}: {e}", mountpoint.display())))?;
        if let Err(e) = run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mountpoint))
        {
            let _ = std::fs::remove_dir(&mountpoint);
            return Err(cleanup_image(e));
        }
        if let Ok(mut m) = MOUNTED.lock() {
            m.push((mountpoint.clone(), image.clone()));
        }
        Ok(Scratch { mountpoint, image })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

fn remove(mountpoint: &Path, image: &Path) {
    if let Err(e) = run(Command::new("umount").arg(mountpoint)) {
        eprintln!("vmshare-bench: {e}");
        return;
    }
    let _ = std::fs::remove_dir(mountpoint);
    let _ = std::fs::remove_file(image);
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut m) = MOUNTED.lock() {
            m.retain(|(p, _)| *p != self.mountpoint);
        }
        remove(&self.mountpoint, &self.image);
    }
}

/// Unmounts and deletes every scratch filesystem still mounted (the
/// watchdog calls this after killing the servers).
pub fn remove_all() {
    let left = MOUNTED.lock().map(|mut m| std::mem::take(&mut *m));
    for (mountpoint, image) in left.unwrap_or_default() {
        remove(&mountpoint, &image);
    }
}
