//! `vmshare run --rootfs DIR|IMAGE`, the host's part: what the path is,
//! how it reaches the guest, and what the guest init is told.
//!
//! An image (ext2/3/4 or erofs, told apart by its superblock) is attached
//! read-only as the plan's root disk, so it is `/dev/vda` and volume
//! disks follow it. A directory is exported read-only by the run's own
//! NFS server and mounted like a volume. Either way the guest init
//! mounts it read-only under a tmpfs-backed overlay and chroots into that
//! (`crates/init/src/rootfs.rs`): the command can write anywhere, and
//! the directory or image is never changed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use vmshare_plan::guest::{GuestMount, GuestRootfs, ROOTFS_LOWER};
use vmshare_plan::image::detect_format;
use vmshare_plan::plan::{nfs_mount_data, DiskRole, Plan, RootDisk};
use vmshare_plan::ImageFormat;
use vmshare_server::{ClientMatch, ClientRule, ExportConfig, ExportOptions, Squash};

/// The NFS export path of a `--rootfs` directory (volumes are `/v0`...).
const EXPORT_PATH: &str = "/rootfs";

/// The root filesystem given with `--rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rootfs {
    /// A host directory, served over NFS.
    Dir(PathBuf),
    /// An image file (or block device), attached as a disk.
    Image {
        /// The file.
        path: PathBuf,
        /// Its filesystem.
        format: ImageFormat,
    },
}

impl Rootfs {
    /// What `arg` (relative to `cwd`) is. The one-line errors name the path
    /// and what would have been accepted.
    pub(crate) fn resolve(arg: &Path, cwd: &Path) -> Result<Rootfs, String> {
        let path = cwd.join(arg);
        let shown = arg.display();
        let meta = std::fs::metadata(&path).map_err(|e| format!("--rootfs {shown}: {e}"))?;
        let path = std::fs::canonicalize(&path).map_err(|e| format!("--rootfs {shown}: {e}"))?;
        if meta.is_dir() {
            return Ok(Rootfs::Dir(path));
        }
        let image = meta.is_file() || {
            use std::os::unix::fs::FileTypeExt;
            meta.file_type().is_block_device()
        };
        let format = if image {
            detect_format(&path).map_err(|e| format!("--rootfs {shown}: {e}"))?
        } else {
            None
        };
        match format {
            Some(format) => Ok(Rootfs::Image { path, format }),
            None => Err(format!(
                "--rootfs {shown}: neither a directory nor an ext4 or erofs image (build one with `vmshare image build DIR -o root.erofs`)"
            )),
        }
    }

    /// The root disk for the planner, which puts it before volume disks.
    /// Always read-only: writes go to the guest's tmpfs layer.
    pub(crate) fn root_disk(&self) -> Option<RootDisk> {
        match self {
            Rootfs::Dir(_) => None,
            Rootfs::Image { path, format } => Some(RootDisk {
                image: path.clone(),
                format: *format,
                readonly: true,
            }),
        }
    }

    /// The NFS export a directory needs, for `client` only. Read-only and
    /// without root squash, so that the guest's root reads the tree as the
    /// host's root does (a root filesystem has root-only files).
    pub(crate) fn export(&self, client: IpAddr) -> Option<ExportConfig> {
        let Rootfs::Dir(dir) = self else { return None };
        Some(ExportConfig {
            path: dir.clone(),
            mount_path: EXPORT_PATH.into(),
            clients: vec![ClientRule {
                client: ClientMatch::Net {
                    addr: client,
                    prefix: if client.is_ipv4() { 32 } else { 128 },
                },
                options: ExportOptions {
                    writable: false,
                    squash: Squash::None,
                    anonuid: 65534,
                    anongid: 65534,
                    // QEMU user networking connects from unprivileged ports.
                    secure: false,
                    // Read-only: nothing to commit.
                    sync: false,
                    nosuid_nodev: false,
                },
            }],
            single_file: None,
        })
    }

    /// What the guest init mounts as the root's read-only layer: the
    /// export from `server:port` (with the options volumes get), or the
    /// plan's root disk.
    pub(crate) fn guest(&self, plan: &Plan, server: IpAddr, port: u16) -> GuestRootfs {
        let mut lower = GuestMount {
            target: ROOTFS_LOWER.into(),
            readonly: true,
            ..GuestMount::default()
        };
        match self {
            Rootfs::Dir(dir) => {
                lower.name = format!("--rootfs {}", dir.display());
                lower.source = format!("{server}:{EXPORT_PATH}");
                lower.fstype = "nfs".into();
                lower.data = nfs_mount_data(server, port);
                lower.retry = true;
            }
            Rootfs::Image { path, format } => {
                lower.name = format!("--rootfs {}", path.display());
                lower.source = plan
                    .block_devices
                    .iter()
                    .find(|d| d.role == DiskRole::Root)
                    .map(|d| d.device.clone())
                    .unwrap_or_else(|| "/dev/vda".into());
                lower.fstype = format.fstype().into();
                // The disk is read-only: an ext4 journal left to replay
                // must not stop the mount.
                if *format == ImageFormat::Ext4 {
                    lower.data = "noload".into();
                }
            }
        }
        GuestRootfs { lower }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_are_no_rootfs_get_one_clear_line() {
        let dir = std::env::temp_dir().join(format!("vmshare-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tree")).unwrap();
        std::fs::write(dir.join("notes.txt"), "x".repeat(4096)).unwrap();
        assert_eq!(
            Rootfs::resolve(Path::new("tree"), &dir),
            Ok(Rootfs::Dir(dir.join("tree").canonicalize().unwrap()))
        );
        let missing = Rootfs::resolve(Path::new("nope"), &dir).unwrap_err();
        assert!(
            missing.starts_with("--rootfs nope: No such file"),
            "{missing}"
        );
        let text = Rootfs::resolve(Path::new("notes.txt"), &dir).unwrap_err();
        assert!(
            text.contains("neither a directory nor an ext4 or erofs image"),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let dev = Rootfs::resolve(Path::new("/dev/null"), &dir).unwrap_err();
        assert!(dev.contains("neither"), "{dev}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
