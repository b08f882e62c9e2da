//! What the guest init is told to do: the contract between the host side
//! (`vmshare run`) and PID 1 in the guest (`vmshare init`).
//!
//! The host writes a [`GuestSpec`] as JSON to [`GUEST_SPEC_PATH`] inside a
//! small per-run initramfs appended to the cached base one. A file rather
//! than the kernel command line because twenty volumes with NFS options do
//! not fit the 2 KiB x86 command line, and because JSON keeps arguments with
//! spaces and quotes intact. Field names are stable: old inits must keep
//! reading new specs, so only ever add optional fields.

use serde::{Deserialize, Serialize};

/// Where the host puts the spec in the guest's initramfs.
pub const GUEST_SPEC_PATH: &str = "/vmshare/spec.json";

/// Everything the guest init needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GuestSpec {
    /// Host name to set.
    #[serde(default)]
    pub hostname: String,
    /// Kernel modules to load, as paths inside the initramfs, in dependency
    /// order (dependencies first).
    #[serde(default)]
    pub modules: Vec<String>,
    /// Network configuration; `None` leaves networking down.
    #[serde(default)]
    pub network: Option<GuestNet>,
    /// Mounts to perform, in order (a bind from a staging mount comes after
    /// the mount it binds from).
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// The command to run.
    pub process: GuestProcess,
    /// Print a timeline of init's steps to the console.
    #[serde(default)]
    pub verbose: bool,
    /// Mount the volumes in and run the command inside this root
    /// filesystem instead of the initramfs; `None`: the initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<GuestRootfs>,
    /// End the VM with a power-off rather than a reboot request. A reboot
    /// request ends QEMU started with `-no-reboot` and Firecracker (with
    /// `reboot=k`); Cloud Hypervisor boots the guest again, which then ran
    /// CMD again, forever. It powers off through ACPI.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub power_off: bool,
}

/// Where init finds a root filesystem for `--rootfs` (mounting it at
/// [`ROOTFS_LOWER`]) and puts its writable layer.
pub const ROOTFS_DIR: &str = "/run/vmshare/rootfs";
/// The read-only lower layer's mount point (in the initramfs).
pub const ROOTFS_LOWER: &str = "/run/vmshare/rootfs/lower";

/// A root filesystem for the command, docker style: the image or
/// directory is never changed, because it is mounted read-only and the
/// root is an overlay of it with a tmpfs upper layer (writes are lost when
/// the VM stops). The guest init stays the initramfs's, so the root
/// filesystem needs nothing of vmshare's; the volumes are mounted under it
/// and `/proc`, `/sys` and `/dev` are there too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRootfs {
    /// The root filesystem itself, mounted read-only at its `target`
    /// ([`ROOTFS_LOWER`]): an NFS export of a host directory or a disk.
    pub lower: GuestMount,
}

/// Static IPv4 configuration of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    /// Interface name, e.g. `eth0`.
    pub interface: String,
    /// Address with prefix length, e.g. `10.0.2.15/24`.
    pub address: String,
    /// Default gateway, if any.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Name servers for `/etc/resolv.conf` (none: the file is left alone).
    #[serde(default)]
    pub dns: Vec<String>,
}

/// One mount(2) call in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GuestMount {
    /// What the volume is called in messages (the user's `-v` text).
    #[serde(default)]
    pub name: String,
    /// mount(2) source: `10.0.2.2:/v0`, `/dev/vdb`, a tag, or a path for binds.
    pub source: String,
    /// Absolute target path in the guest.
    pub target: String,
    /// Filesystem type (`nfs`, `ext4`, `erofs`, `overlay`, `9p`,
    /// `virtiofs`, `tmpfs`), or `bind` for a bind mount.
    pub fstype: String,
    /// Filesystem-specific data passed as text (for NFS:
    /// `vers=3,proto=tcp,port=P,mountport=P,mountproto=tcp,nolock,addr=IP`).
    #[serde(default)]
    pub data: String,
    /// Mount read-only.
    #[serde(default)]
    pub readonly: bool,
    /// Extra generic flags: `nosuid`, `nodev`, `noexec`, `noatime`,
    /// `relatime`, `sync`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// The target is a file, not a directory: create an empty file to
    /// mount on (bind mounts of a single file).
    #[serde(default)]
    pub file: bool,
    /// Retry with backoff on failure (network filesystems).
    #[serde(default)]
    pub retry: bool,
    /// Directories to create before mounting (the OCI `mkdir/` prefix:
    /// the target, an overlay's `upperdir` and `workdir`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mkdir: Vec<String>,
}

/// The command, and the identity and environment it runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GuestProcess {
    /// argv; `args[0]` is looked up in `PATH` if it has no `/`.
    pub args: Vec<String>,
    /// Environment as `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (created if missing, as docker does).
    #[serde(default)]
    pub cwd: Option<String>,
    /// User ID.
    #[serde(default)]
    pub uid: u32,
    /// Group ID.
    #[serde(default)]
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Run the process on a pseudo-terminal (its stdin, stdout, stderr and
    /// controlling terminal), whose output goes to the stdout port.
    #[serde(default)]
    pub tty: bool,
    /// The terminal's size at start, with `tty` (OCI's `consoleSize`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<ConsoleSize>,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSize {
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
}
