//! The one input model every front end produces.
//!
//! Front ends differ in spelling, not in meaning: a docker `-v`, an OCI bind
//! mount and a `FILESYSTEM_SOURCE` all become a [`VolumeSpec`] whose
//! [`Source`] says where the data is and how it should reach the guest. The
//! planner then decides devices, exports and guest mounts from these alone.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

use crate::PlanError;

/// One volume, as the user described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The user's own text (`-v /a:/b:ro`), used in every message.
    pub name: String,
    /// Where the data comes from.
    pub source: Source,
    /// Absolute guest path. `None` mounts only at a staging directory, which
    /// OCI `format/` mounts can refer to (an overlay's erofs layers).
    #[serde(default)]
    pub target: Option<String>,
    /// Mount read-only.
    #[serde(default)]
    pub readonly: bool,
    /// Mount options other than `ro`/`rw`: generic flags (`noatime`,
    /// `nosuid`, ...) and filesystem data (`size=64m`, `lowerdir=...`).
    #[serde(default)]
    pub options: Vec<String>,
    /// Create the target directory (and, for overlay, `upperdir`/`workdir`)
    /// before mounting: the OCI `mkdir/` type prefix.
    #[serde(default)]
    pub mkdir: bool,
    /// The virtio-fs/9p tag asked for (`FILESYSTEM_TARGET`); `None` lets the
    /// planner choose one.
    #[serde(default)]
    pub tag: Option<String>,
}

/// Where a volume's data lives and how it reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A host path shared live.
    Host {
        /// Absolute host path (directory or single file).
        path: PathBuf,
        /// How it is shared.
        #[serde(default)]
        transport: Transport,
    },
    /// A docker-style named volume: a directory in the host's volume store,
    /// created on first use, served over NFS.
    Named {
        /// The volume name.
        volume: String,
    },
    /// A host directory copied into a disk image before boot and written
    /// back at exit, for hypervisors without a live path.
    Copy {
        /// Absolute host directory.
        path: PathBuf,
    },
    /// A tmpfs in guest memory.
    Tmpfs,
    /// A filesystem image attached as a block device.
    Image {
        /// Absolute host path of the image file.
        path: PathBuf,
        /// Its filesystem.
        format: ImageFormat,
    },
    /// A mount built from other mounts (OCI `format/overlay`): `source` and
    /// the options may hold `{{ mount N }}` templates, resolved at planning.
    Derived {
        /// Filesystem type, e.g. `overlay`.
        fstype: String,
        /// mount(2) source text, e.g. `overlay`.
        source: String,
    },
}

/// How a live host path reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// vmshare's NFSv3 server over the guest network: works on every VMM.
    #[default]
    Nfs,
    /// virtio-fs through virtiofsd (QEMU, Cloud Hypervisor).
    Virtiofs,
    /// virtio-9p (QEMU only).
    #[serde(rename = "9p")]
    NineP {
        /// How guest ownership maps to the host.
        access: AccessMode,
    },
}

/// How guest file ownership maps to the host on a 9p share (the
/// `FILESYSTEM_ACCESSMODE` values of docker-vm-runner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Guest ids are host ids.
    #[default]
    Passthrough,
    /// Guest ownership and modes are kept in host xattrs; host files keep the
    /// user's owner.
    Mapped,
    /// Ownership changes are ignored; files belong to the host user.
    Squash,
}

/// Filesystem of a block-device volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// Read-write ext4.
    Ext4,
    /// Read-only, compressed erofs.
    Erofs,
}

impl ImageFormat {
    /// The kernel's filesystem type name.
    pub fn fstype(self) -> &'static str {
        match self {
            ImageFormat::Ext4 => "ext4",
            ImageFormat::Erofs => "erofs",
        }
    }
}

/// Generic mount flags the guest init turns into mount(2) flags; every other
/// option is filesystem data.
pub const GENERIC_FLAGS: &[&str] = &[
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "sync",
    "dirsync",
    "suid",
    "dev",
    "exec",
    // The defaults, accepted as docker's --tmpfs accepts them: each asks
    // for what a mount has anyway.
    "async",
    "atime",
    "diratime",
    "norelatime",
    "nostrictatime",
    "nomand",
    "defaults",
];

/// Whether `opt` is something tmpfs takes as data: `size`, `nr_blocks`
/// and `nr_inodes` (a number, with the kernel's k, m, g, t, p or e, or,
/// for `size`, %), `mode` (octal, at most 7777, leading zeros allowed:
/// `01777`), `uid`, `gid`, `huge`. Checked before boot: tmpfs refused
/// anything else with EINVAL when the guest mounted it.
pub fn is_tmpfs_data(opt: &str) -> bool {
    let Some((key, value)) = opt.split_once('=') else {
        return false;
    };
    let number = |v: &str, percent: bool| {
        let v = v
            .strip_suffix(['k', 'm', 'g', 't', 'p', 'e', 'K', 'M', 'G', 'T', 'P', 'E'])
            .or_else(|| v.strip_suffix('%').filter(|_| percent))
            .unwrap_or(v);
        !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())
    };
    match key {
        "size" => number(value, true),
        "nr_blocks" | "nr_inodes" => number(value, false),
        "mode" => {
            !value.is_empty()
                && value.chars().all(|c| ('0'..='7').contains(&c))
                && u32::from_str_radix(value, 8).is_ok_and(|m| m <= 0o7777)
        }
        "uid" | "gid" => value.parse::<u32>().is_ok(),
        "huge" => matches!(
            value,
            "never" | "always" | "within_size" | "advise" | "deny" | "force"
        ),
        _ => false,
    }
}

/// Removes `.`, `..` and repeated slashes without touching the disk, so that
/// `/a/../proc` is recognised as `/proc` and `/data/` equals `/data`.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
                if out.as_os_str().is_empty() && path.is_absolute() {
                    out.push("/");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(if path.is_absolute() { "/" } else { "." });
    }
    out
}

/// Guest paths the init mounts itself or needs to stay as they are.
const RESERVED_TREES: &[&str] = &["/proc", "/sys", "/dev", "/run/vmshare"];

/// Linux's longest name of one path component, in bytes (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Linux's longest path, in bytes, with its NUL (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Checks a guest target and returns it normalised: absolute, within
/// Linux's name and path limits (the guest's mount failed with
/// ENAMETOOLONG after boot), and not a directory the guest system owns
/// (`/`, `/proc`, `/sys`, `/dev` and everything under them, `/run`).
pub fn check_target(volume: &str, target: &str) -> Result<String, PlanError> {
    if !target.starts_with('/') {
        return Err(PlanError::RelativeTarget {
            volume: volume.to_string(),
            target: target.to_string(),
        });
    }
    let norm = normalize(Path::new(target));
    let text = norm.to_string_lossy().into_owned();
    let too_long = |reason: String| PlanError::Syntax {
        volume: volume.to_string(),
        reason,
    };
    if let Some(long) = norm
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .find(|c| c.len() > NAME_MAX)
    {
        let start: String = long.chars().take(16).collect();
        return Err(too_long(format!(
            "the target's name '{start}...' is {} bytes, and a Linux name is at most {NAME_MAX} \
             (the guest's mount would fail with ENAMETOOLONG); shorten it",
            long.len()
        )));
    }
    if text.len() >= PATH_MAX {
        return Err(too_long(format!(
            "the target is {} bytes, and a Linux path is at most {} (the guest's mount would \
             fail with ENAMETOOLONG); shorten it",
            text.len(),
            PATH_MAX - 1
        )));
    }
    if text.contains('\0') {
        return Err(too_long(
            "the target holds a NUL byte, which ends a path for the kernel; remove it".into(),
        ));
    }
    let reserved =
        text == "/" || text == "/run" || RESERVED_TREES.iter().any(|r| norm.starts_with(r));
    if reserved {
        return Err(PlanError::ReservedTarget {
            volume: volume.to_string(),
            target: text,
        });
    }
    Ok(text)
}

/// Resolves a host path: absolute paths are normalised, relative ones are
/// taken from `cwd` (as docker does for `./dir`). A `/` at the end is
/// kept: it asks for a directory, which the planner checks (docker's bind
/// of `/etc/hosts/` fails; dropped here, the file was mounted).
pub fn host_path(cwd: &Path, path: &str) -> PathBuf {
    let mut out = normalize(&cwd.join(path));
    if path.ends_with('/') && out != Path::new("/") {
        // Pushing an empty component adds the separator.
        out.push("");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_removes_dots_and_stays_under_root() {
        assert_eq!(normalize(Path::new("/a/./b//c/")), Path::new("/a/b/c"));
        assert_eq!(normalize(Path::new("/a/../../proc")), Path::new("/proc"));
        assert_eq!(normalize(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn host_paths_keep_a_final_slash() {
        let cwd = Path::new("/home/u");
        let text = |p: &str| host_path(cwd, p).to_string_lossy().into_owned();
        assert_eq!(text("/etc/hosts/"), "/etc/hosts/");
        assert_eq!(text("./a/../b/"), "/home/u/b/");
        assert_eq!(text("/etc/hosts"), "/etc/hosts");
        assert_eq!(text("/"), "/");
        assert_eq!(text("./"), "/home/u/");
    }

    #[test]
    fn reserved_targets_are_refused_even_when_disguised() {
        for t in [
            "/",
            "/proc",
            "/sys/kernel",
            "/dev/shm",
            "/run",
            "/x/../dev",
            "/run/vmshare/v0",
        ] {
            assert!(
                matches!(check_target("v", t), Err(PlanError::ReservedTarget { .. })),
                "{t} accepted"
            );
        }
        assert_eq!(
            check_target("v", "/run/user/1").as_deref(),
            Ok("/run/user/1")
        );
        assert_eq!(check_target("v", "/data/").as_deref(), Ok("/data"));
        assert_eq!(check_target("v", "/devices").as_deref(), Ok("/devices"));
        // Linux's limits: 255 bytes a name, 4095 a path.
        let name = |n: usize| "a".repeat(n);
        assert!(check_target("v", &format!("/{}", name(255))).is_ok());
        let e = check_target("v", &format!("/x/{}/y", name(256))).unwrap_err();
        assert!(
            e.to_string()
                .contains("is 256 bytes, and a Linux name is at most 255"),
            "{e}"
        );
        let path = |len: usize| format!("/{}", vec![name(99); len / 100].join("/"));
        assert_eq!(path(4000).len(), 4000);
        assert!(check_target("v", &path(4000)).is_ok());
        let e = check_target("v", &path(4100)).unwrap_err();
        assert!(
            e.to_string()
                .contains("is 4100 bytes, and a Linux path is at most 4095"),
            "{e}"
        );
        assert!(check_target("v", "/a\0b").is_err());
        assert!(matches!(
            check_target("v", "data"),
            Err(PlanError::RelativeTarget { .. })
        ));
    }
}
