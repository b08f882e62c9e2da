//! From volumes to a launch plan: exports, devices, shares, guest mounts.
//!
//! The plan is the single description every renderer and the runner work
//! from, and it is serialised as it is for `vmshare plan`, so its field names
//! are a stable interface (see `docs/plan.md`). Values only known at run
//! time (the NFS server's address and port) are not in it: the runner fills
//! them in with [`Plan::guest_mounts`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::docker::depth;
use crate::guest::GuestMount;
use crate::host::{HostFacts, HostKind};
use crate::spec::{
    check_target, AccessMode, ImageFormat, Source, Transport, VolumeSpec, GENERIC_FLAGS,
};
use crate::PlanError;

/// Guest directory under which staging mounts are made.
pub const STAGING_DIR: &str = "/run/vmshare";

/// The kernel's limit on a virtio-fs or 9p tag, in bytes.
pub const MAX_TAG_LEN: usize = 36;

/// The hypervisors the planner renders for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vmm {
    /// QEMU's `microvm` machine.
    Qemu,
    /// Firecracker.
    Firecracker,
    /// Cloud Hypervisor.
    CloudHypervisor,
}

impl Vmm {
    /// How many devices (disks, shares, network, vsock) the VMM can attach.
    ///
    /// Firecracker on x86_64 gives each virtio-mmio device one of 19 legacy
    /// interrupts and has no hotplug; QEMU's microvm has 24 virtio-mmio
    /// transports with its second IOAPIC; Cloud Hypervisor puts devices on
    /// one PCI segment of 32 slots, one taken by the host bridge.
    pub fn device_budget(self) -> usize {
        match self {
            Vmm::Firecracker => 19,
            Vmm::Qemu => 24,
            Vmm::CloudHypervisor => 31,
        }
    }

    /// Whether virtio-fs (through virtiofsd) is available.
    pub fn has_virtiofs(self) -> bool {
        matches!(self, Vmm::Qemu | Vmm::CloudHypervisor)
    }

    /// Whether virtio-9p is available.
    pub fn has_9p(self) -> bool {
        matches!(self, Vmm::Qemu)
    }

    /// The kernel command line every plan for this VMM starts from.
    fn base_cmdline(self) -> &'static str {
        match self {
            Vmm::Qemu => "console=ttyS0 reboot=t panic=-1 oops=panic",
            Vmm::Firecracker => "console=ttyS0 reboot=k panic=-1 oops=panic pci=off",
            Vmm::CloudHypervisor => "console=ttyS0 reboot=k panic=-1 oops=panic",
        }
    }
}

impl fmt::Display for Vmm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vmm::Qemu => "qemu",
            Vmm::Firecracker => "firecracker",
            Vmm::CloudHypervisor => "cloud-hypervisor",
        })
    }
}

impl FromStr for Vmm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(Vmm::Qemu),
            "firecracker" => Ok(Vmm::Firecracker),
            "cloud-hypervisor" => Ok(Vmm::CloudHypervisor),
            other => Err(format!(
                "unknown VMM '{other}'; use firecracker, cloud-hypervisor or qemu"
            )),
        }
    }
}

/// What the planner is told besides the volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    /// The hypervisor to plan for.
    pub vmm: Vmm,
    /// Host directory holding named volumes (`NAME` is `volume_store/NAME`).
    pub volume_store: PathBuf,
    /// Per-run host directory where copy-volume images are built.
    pub state_dir: PathBuf,
    /// Disks attached before any volume (the container's root layers).
    #[serde(default)]
    pub root_disks: Vec<RootDisk>,
    /// The guest has a network interface even when no volume is served
    /// over NFS (a plan with an NFS volume always has one).
    #[serde(default = "yes")]
    pub network: bool,
    /// The guest has a vsock device.
    #[serde(default = "yes")]
    pub vsock: bool,
    /// Words appended to the kernel command line.
    #[serde(default)]
    pub extra_cmdline: Vec<String>,
}

fn yes() -> bool {
    true
}

impl PlanConfig {
    /// A configuration with a network and a vsock device and no root disks.
    pub fn new(vmm: Vmm, volume_store: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Self {
        PlanConfig {
            vmm,
            volume_store: volume_store.into(),
            state_dir: state_dir.into(),
            root_disks: Vec::new(),
            network: true,
            vsock: true,
            extra_cmdline: Vec::new(),
        }
    }
}

/// A root-filesystem disk: always allocated before volume disks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDisk {
    /// Host image file.
    pub image: PathBuf,
    /// Its filesystem.
    pub format: ImageFormat,
    /// Attach read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// The launch plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The hypervisor it is for.
    pub vmm: Vmm,
    /// Directories (or single files) the NFS server must export.
    pub nfs_exports: Vec<NfsExport>,
    /// Block devices in attachment order: root disks, then volume disks.
    pub block_devices: Vec<BlockDevice>,
    /// virtio-fs and 9p shares.
    pub shares: Vec<Share>,
    /// Images to build before boot (copy volumes).
    pub images: Vec<ImageBuild>,
    /// Copy volumes to write back to the host at exit.
    pub sync_back: Vec<SyncBack>,
    /// The guest's mounts, in order.
    pub mounts: Vec<PlannedMount>,
    /// Kernel command line.
    pub kernel_cmdline: String,
    /// Devices the plan attaches, against the VMM's budget.
    pub devices_used: usize,
    /// The VMM's device budget.
    pub device_budget: usize,
    /// Decisions worth telling the user about (`--verbose`).
    pub notes: Vec<String>,
}

/// One NFS export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NfsExport {
    /// The volume as the user wrote it.
    pub volume: String,
    /// Path the guest mounts: `/v0`, `/v1`, ...
    pub export_path: String,
    /// Host directory served (a single file's parent directory).
    pub host_path: PathBuf,
    /// Serve read-only.
    pub readonly: bool,
    /// Serve only this name inside `host_path`: a single-file volume.
    pub single_file: Option<String>,
    /// The runner creates `host_path` first (a named volume's first use).
    pub create: bool,
}

/// Why a block device is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskRole {
    /// A root-filesystem disk.
    Root,
    /// A user image (`type=ext4|erofs`).
    Volume,
    /// An image built from one copy volume.
    Copy,
    /// One image holding several copy volumes, one subdirectory each.
    Packed,
}

/// One virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Guest device name without `/dev/` (`vda`); also the drive id.
    pub id: String,
    /// Guest device path (`/dev/vda`).
    pub device: String,
    /// Host image file.
    pub image: PathBuf,
    /// Filesystem in the image.
    pub format: ImageFormat,
    /// Attach read-only.
    pub readonly: bool,
    /// Why it is there.
    pub role: DiskRole,
}

/// virtio-fs or 9p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareDriver {
    /// virtio-fs through virtiofsd.
    Virtiofs,
    /// virtio-9p.
    #[serde(rename = "9p")]
    NineP,
}

/// One virtio-fs or 9p share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The volume as the user wrote it.
    pub volume: String,
    /// Mount tag (unique, at most 36 bytes).
    pub tag: String,
    /// Host directory.
    pub host_path: PathBuf,
    /// Transport.
    pub driver: ShareDriver,
    /// Ownership mapping (always `passthrough` for virtio-fs).
    pub access: AccessMode,
    /// Read-only.
    pub readonly: bool,
}

/// An image the runner builds before boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuild {
    /// Output image file.
    pub output: PathBuf,
    /// Filesystem to build.
    pub format: ImageFormat,
    /// What goes in: host directories and where in the image.
    pub contents: Vec<ImageContent>,
}

/// One host directory copied into an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageContent {
    /// Host directory.
    pub host_path: PathBuf,
    /// Directory inside the image (`""` for its root).
    pub subdir: String,
}

/// A copy volume to write back at exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBack {
    /// The volume as the user wrote it.
    pub volume: String,
    /// Host directory to update.
    pub host_path: PathBuf,
    /// Image holding the guest's version.
    pub image: PathBuf,
    /// Directory inside the image (`""` for its root).
    pub subdir: String,
}

/// One guest mount, with what the runner has to fill in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMount {
    /// The mount, complete except for NFS server details.
    #[serde(flatten)]
    pub mount: GuestMount,
    /// For NFS mounts: the export path; [`Plan::guest_mounts`] turns it into
    /// `ADDR:EXPORT` and adds the server options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs_export: Option<String>,
}

/// The NFS mount data for a server at `addr:port`, where one port carries
/// both NFS and MOUNT (no portmapper round trip, no lock manager).
///
/// `actimeo=1` and `lookupcache=positive`: a volume is shared live with the
/// host, so a change made on the host must show in the guest within about a
/// second, not after the client's default 3-60 s attribute cache; and a
/// file created on the host must not hide behind a cached "no such file".
/// The price is one GETATTR per open file per second, which the server
/// answers from an fstat.
pub fn nfs_mount_data(addr: IpAddr, port: u16) -> String {
    // `tcp` names IPv4 to the kernel, which refuses it with an IPv6
    // address ("proto mismatch").
    let tcp = if addr.is_ipv6() { "tcp6" } else { "tcp" };
    format!(
        "vers=3,proto={tcp},port={port},mountport={port},mountproto={tcp},nolock,actimeo=1,lookupcache=positive,addr={addr}"
    )
}

impl Plan {
    /// The guest mount table for an NFS server reachable from the guest at
    /// `server:port`: what goes into [`crate::GuestSpec::mounts`].
    pub fn guest_mounts(&self, server: IpAddr, port: u16) -> Vec<GuestMount> {
        self.mounts
            .iter()
            .map(|p| {
                let mut m = p.mount.clone();
                if let Some(export) = &p.nfs_export {
                    // The kernel takes the server up to the first colon
                    // unless it is in brackets.
                    m.source = match server {
                        IpAddr::V4(v4) => format!("{v4}:{export}"),
                        IpAddr::V6(v6) => format!("[{v6}]:{export}"),
                    };
                    let base = nfs_mount_data(server, port);
                    m.data = if m.data.is_empty() {
                        base
                    } else {
                        format!("{base},{}", m.data)
                    };
                }
                m
            })
            .collect()
    }
}

/// Refuses two volumes on one guest path.
pub fn check_duplicates(specs: &[VolumeSpec]) -> Result<(), PlanError> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for s in specs {
        let Some(t) = &s.target else { continue };
        let t = check_target(&s.name, t)?;
        if let Some(first) = seen.insert(t.clone(), &s.name) {
            return Err(PlanError::DuplicateTarget {
                target: t,
                first: first.to_string(),
                second: s.name.clone(),
            });
        }
    }
    Ok(())
}

/// The Linux name of the `index`-th virtio disk: `vda`..`vdz`, `vdaa`...
pub fn disk_name(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b"abcdefghijklmnopqrstuvwxyz"[n % 26]);
        n /= 26;
    }
    letters.reverse();
    format!("vd{}", String::from_utf8_lossy(&letters))
}

/// What each volume becomes, decided before devices are numbered.
enum Kind {
    Nfs {
        dir: PathBuf,
        file: Option<String>,
        create: bool,
    },
    Share {
        driver: ShareDriver,
        access: AccessMode,
        path: PathBuf,
    },
    Image {
        path: PathBuf,
        format: ImageFormat,
    },
    Copy {
        path: PathBuf,
    },
    Tmpfs,
    Derived {
        fstype: String,
        source: String,
    },
}

/// Plans `specs` (in mount order) for `config`, asking `host` what the host
/// paths are.
pub fn plan(
    specs: &[VolumeSpec],
    config: &PlanConfig,
    host: &dyn HostFacts,
) -> Result<Plan, PlanError> {
    check_duplicates(specs)?;
    let targets = checked_targets(specs)?;
    check_order(specs, &targets)?;
    let vmm = config.vmm;
    let kinds: Vec<Kind> = specs
        .iter()
        .map(|s| classify(s, vmm, &config.volume_store, host))
        .collect::<Result<_, _>>()?;
    check_copies(specs, &kinds, config, host)?;
    check_under_files(specs, &kinds, &targets)?;

    // Device budget: pack copy volumes into one disk rather than fail.
    let copies = kinds
        .iter()
        .filter(|k| matches!(k, Kind::Copy { .. }))
        .count();
    let network = config.network || kinds.iter().any(|k| matches!(k, Kind::Nfs { .. }));
    let fixed = config.root_disks.len()
        + usize::from(network)
        + usize::from(config.vsock)
        + kinds
            .iter()
            .filter(|k| matches!(k, Kind::Share { .. } | Kind::Image { .. }))
            .count();
    let budget = vmm.device_budget();
    let mut notes = Vec::new();
    let pack = copies >= 2 && fixed + copies > budget;
    let devices_used = fixed + if pack { 1 } else { copies };
    if pack {
        notes.push(format!(
            "{copies} copy volumes would need {} of {vmm}'s {budget} devices; packing them into one image and bind-mounting its subdirectories",
            fixed + copies
        ));
    }
    if devices_used > budget {
        return Err(PlanError::TooManyDevices {
            vmm: vmm.to_string(),
            needed: devices_used,
            available: budget,
        });
    }

    let mut b = Builder::new(config);
    b.asked = specs.iter().filter_map(|s| s.tag.clone()).collect();
    for (i, ((spec, kind), target)) in specs.iter().zip(&kinds).zip(&targets).enumerate() {
        let location = match target {
            Some(t) => t.clone(),
            None => format!("{STAGING_DIR}/m{i}"),
        };
        b.add(i, spec, kind, location, pack, specs)?;
    }
    let mut cmdline = vmm.base_cmdline().to_string();
    for w in &config.extra_cmdline {
        cmdline.push(' ');
        cmdline.push_str(w);
    }
    notes.extend(b.notes);
    Ok(Plan {
        vmm,
        nfs_exports: b.exports,
        block_devices: b.disks,
        shares: b.shares,
        images: b.images,
        sync_back: b.sync_back,
        mounts: b.mounts,
        kernel_cmdline: cmdline,
        devices_used,
        device_budget: budget,
        notes,
    })
}

/// A mount listed before one on its parent directory would be hidden.
fn check_order(specs: &[VolumeSpec], targets: &[Option<String>]) -> Result<(), PlanError> {
    match hidden_pair(targets) {
        Some((i, j)) => Err(PlanError::HiddenByLater {
            inner: specs[i].name.clone(),
            outer: specs[j].name.clone(),
            parent: targets[j].clone().unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// The first volume that a later one would hide, mounting on its target
/// or a parent of it: `(inner, outer)`, indexes into `specs`. [`plan()`]
/// refuses such a list, advising to list `outer` first; a caller that
/// merges front ends in a fixed order (`vmshare plan`, `vmshare run`)
/// asks first, because there the user cannot reorder across them and
/// needs other advice.
pub fn first_hidden(specs: &[VolumeSpec]) -> Result<Option<(usize, usize)>, PlanError> {
    Ok(hidden_pair(&checked_targets(specs)?))
}

/// Each volume's target, checked ([`check_target`]) and normalised.
fn checked_targets(specs: &[VolumeSpec]) -> Result<Vec<Option<String>>, PlanError> {
    specs
        .iter()
        .map(|s| {
            s.target
                .as_deref()
                .map(|t| check_target(&s.name, t))
                .transpose()
        })
        .collect()
}

fn hidden_pair(targets: &[Option<String>]) -> Option<(usize, usize)> {
    for (i, inner) in targets.iter().enumerate() {
        let Some(inner) = inner else { continue };
        for (j, outer) in targets.iter().enumerate().skip(i + 1) {
            let Some(outer) = outer else { continue };
            if Path::new(inner).starts_with(outer) {
                return Some((i, j));
            }
        }
    }
    None
}

/// Copy volumes whose images and write-backs would collide, refused as
/// `vmshare image build` refuses an output inside its source: an image
/// built in a runtime directory inside the tree it copies (it would copy
/// itself), and two read-write copies of one tree, or of a tree and one
/// inside it, whose two images would each be written back into it at
/// exit. Read-only copies (`ro,copy`) are never written back and may
/// overlap. Paths are compared with links resolved.
fn check_copies(
    specs: &[VolumeSpec],
    kinds: &[Kind],
    config: &PlanConfig,
    host: &dyn HostFacts,
) -> Result<(), PlanError> {
    let copies: Vec<(&VolumeSpec, &PathBuf, PathBuf)> = specs
        .iter()
        .zip(kinds)
        .filter_map(|(s, k)| match k {
            Kind::Copy { path } => Some((s, path, real_path(host, path))),
            _ => None,
        })
        .collect();
    let images = real_path(host, &config.state_dir);
    if let Some((spec, path, _)) = copies.iter().find(|(_, _, real)| images.starts_with(real)) {
        return Err(PlanError::CopyHoldsItsImage {
            volume: spec.name.clone(),
            path: (*path).clone(),
            dir: config.state_dir.clone(),
        });
    }
    let written: Vec<_> = copies.iter().filter(|(s, _, _)| !s.readonly).collect();
    for (i, (a, a_path, a_real)) in written.iter().enumerate() {
        for (b, b_path, b_real) in written.iter().skip(i + 1) {
            let (what, hint) = if a_real == b_real {
                (
                    format!("copy the same directory, {}", a_path.display()),
                    "copy it once, or make one ro,copy".to_string(),
                )
            } else if b_real.starts_with(a_real) {
                (
                    format!(
                        "copy {} and {} inside it",
                        a_path.display(),
                        b_path.display()
                    ),
                    format!("copy only {}, or make one ro,copy", a_path.display()),
                )
            } else if a_real.starts_with(b_real) {
                (
                    format!(
                        "copy {} and {}, which holds it",
                        a_path.display(),
                        b_path.display()
                    ),
                    format!("copy only {}, or make one ro,copy", b_path.display()),
                )
            } else {
                continue;
            };
            return Err(PlanError::OverlappingCopies {
                first: a.name.clone(),
                second: b.name.clone(),
                what,
                hint,
            });
        }
    }
    Ok(())
}

/// Nothing can be mounted under a single file: the guest's mkdir or
/// mount under `-v /etc/hosts:/a` failed with ENOTDIR after boot.
fn check_under_files(
    specs: &[VolumeSpec],
    kinds: &[Kind],
    targets: &[Option<String>],
) -> Result<(), PlanError> {
    let files = kinds
        .iter()
        .zip(targets)
        .enumerate()
        .filter_map(|(i, (k, t))| match (k, t) {
            (Kind::Nfs { file: Some(_), .. }, Some(t)) => Some((i, t)),
            _ => None,
        });
    for (f, file_target) in files {
        let under = targets.iter().enumerate().find(|(i, t)| {
            *i != f
                && t.as_deref()
                    .is_some_and(|t| Path::new(t).starts_with(file_target))
        });
        if let Some((i, _)) = under {
            return Err(PlanError::UnderFile {
                inner: specs[i].name.clone(),
                file: specs[f].name.clone(),
                parent: file_target.clone(),
            });
        }
    }
    Ok(())
}

/// `path` with links resolved as far as it exists: a runtime directory
/// not made yet is its nearest existing parent, resolved, and the rest.
fn real_path(host: &dyn HostFacts, path: &Path) -> PathBuf {
    let path = crate::spec::normalize(path);
    for existing in path.ancestors() {
        if host.kind(existing) != HostKind::Missing {
            let real = crate::spec::normalize(&host.resolve(existing));
            return match path.strip_prefix(existing) {
                Ok(rest) if !rest.as_os_str().is_empty() => real.join(rest),
                _ => real,
            };
        }
    }
    path
}

fn classify(
    spec: &VolumeSpec,
    vmm: Vmm,
    store: &Path,
    host: &dyn HostFacts,
) -> Result<Kind, PlanError> {
    let name = &spec.name;
    let absolute = |p: &Path| {
        if p.is_absolute() {
            Ok(())
        } else {
            Err(PlanError::RelativeSource {
                volume: name.clone(),
                source_path: p.display().to_string(),
            })
        }
    };
    let wrong = |path: &Path, found: HostKind, needed: &'static str| PlanError::WrongKind {
        volume: name.clone(),
        path: path.to_path_buf(),
        found: found.describe(),
        needed,
    };
    let missing = |path: &Path| PlanError::MissingSource {
        volume: name.clone(),
        path: path.to_path_buf(),
    };
    // A `/` at the end of a source (`-v /etc/hosts/:/x`) asks for a
    // directory: docker's bind of a file so written fails (ENOTDIR), and
    // here it mounted the file. Past this check the path is used without it.
    let kind_of = |path: &Path| -> Result<(PathBuf, HostKind), PlanError> {
        let dir_only = path.as_os_str().as_bytes().ends_with(b"/");
        let path = crate::spec::normalize(path);
        let kind = host.kind(&path);
        if kind == HostKind::Unreachable {
            return Err(PlanError::UnreachableSource {
                volume: name.clone(),
                path,
            });
        }
        if dir_only && matches!(kind, HostKind::File | HostKind::Other) {
            return Err(wrong(
                &path,
                kind,
                "the '/' at the end of the source asks for a directory; drop it",
            ));
        }
        Ok((path, kind))
    };
    Ok(match &spec.source {
        Source::Host { path, transport } => {
            absolute(path)?;
            let (path, kind) = kind_of(path)?;
            let path = &path;
            match transport {
                Transport::Nfs => match kind {
                    HostKind::Dir => Kind::Nfs {
                        dir: path.clone(),
                        file: None,
                        create: false,
                    },
                    HostKind::File => {
                        // The file a link names, as docker's bind mount
                        // resolves it: the server never follows links, so
                        // exporting the link itself gave the guest a link
                        // to a host path (`-v /etc/resolv.conf:...` on a
                        // host where it is a link to systemd's).
                        let path = &host.resolve(path);
                        let (Some(parent), Some(file)) = (path.parent(), path.file_name()) else {
                            return Err(wrong(path, kind, "a volume needs a directory or a file"));
                        };
                        Kind::Nfs {
                            dir: parent.to_path_buf(),
                            file: Some(file.to_string_lossy().into_owned()),
                            create: false,
                        }
                    }
                    HostKind::Missing => return Err(missing(path)),
                    // Unreachable: refused by `kind_of` already.
                    HostKind::Other | HostKind::Unreachable => {
                        return Err(wrong(path, kind, "a volume needs a directory or a file"))
                    }
                },
                Transport::Virtiofs | Transport::NineP { .. } => {
                    let (driver, access, what, ok) = match transport {
                        Transport::NineP { access } => (
                            ShareDriver::NineP,
                            *access,
                            "share a directory over 9p",
                            vmm.has_9p(),
                        ),
                        _ => (
                            ShareDriver::Virtiofs,
                            AccessMode::Passthrough,
                            "share a directory over virtio-fs",
                            vmm.has_virtiofs(),
                        ),
                    };
                    if !ok {
                        return Err(PlanError::Unsupported {
                            volume: name.clone(),
                            vmm: vmm.to_string(),
                            what: what.to_string(),
                            hint: "serve it over NFS instead (-v HOST:GUEST, or FILESYSTEM_DRIVER=nfs)".to_string(),
                        });
                    }
                    match kind {
                        HostKind::Dir => {}
                        HostKind::Missing => return Err(missing(path)),
                        _ => {
                            return Err(wrong(
                                path,
                                kind,
                                "shares need a directory; share its parent or use NFS",
                            ))
                        }
                    }
                    Kind::Share {
                        driver,
                        access,
                        path: path.clone(),
                    }
                }
            }
        }
        Source::Named { volume } => Kind::Nfs {
            dir: store.join(volume),
            file: None,
            create: true,
        },
        Source::Copy { path } => {
            absolute(path)?;
            let (path, kind) = kind_of(path)?;
            let path = &path;
            match kind {
                HostKind::Dir => Kind::Copy { path: path.clone() },
                HostKind::Missing => return Err(missing(path)),
                k => {
                    return Err(wrong(
                        path,
                        k,
                        "copy volumes need a directory; bind a single file with -v HOST:GUEST",
                    ))
                }
            }
        }
        Source::Tmpfs => {
            let (_, data) = split_options(spec);
            if let Some(bad) = data.iter().find(|o| !crate::spec::is_tmpfs_data(o)) {
                return Err(PlanError::Syntax {
                    volume: name.clone(),
                    reason: format!(
                        "tmpfs option '{bad}' is not one tmpfs takes (size=64m or 50%, mode=1777, \
                         uid=, gid=, nr_inodes=, huge=, or {})",
                        GENERIC_FLAGS.join(", ")
                    ),
                });
            }
            Kind::Tmpfs
        }
        Source::Image { path, format } => {
            absolute(path)?;
            let (path, kind) = kind_of(path)?;
            let path = &path;
            match kind {
                HostKind::File => {
                    // By its superblock, as --root-disk and --rootfs are:
                    // an erofs image given as type=ext4 had been attached
                    // read-write and mounted as ext4.
                    let found = host.image_format(path);
                    let problem = match found {
                        Some(Some(f)) if f != *format => Some(format!(
                            "{} is an {} image, not {}; give type={}",
                            path.display(),
                            f.fstype(),
                            format.fstype(),
                            f.fstype()
                        )),
                        Some(None) => Some(format!(
                            "{} is neither an ext4 nor an erofs image (no superblock of \
                             either); build one with `vmshare image build`",
                            path.display()
                        )),
                        _ => None,
                    };
                    if let Some(reason) = problem {
                        return Err(PlanError::Syntax {
                            volume: name.clone(),
                            reason,
                        });
                    }
                    Kind::Image {
                        path: path.clone(),
                        format: *format,
                    }
                }
                HostKind::Missing => {
                    return Err(PlanError::MissingImage {
                        volume: name.clone(),
                        path: path.clone(),
                    })
                }
                k => {
                    return Err(wrong(
                        path,
                        k,
                        "an image volume needs an image file; build one with `vmshare image build`",
                    ))
                }
            }
        }
        Source::Derived { fstype, source } => {
            if fstype == "overlay" {
                check_overlay(name, spec)?;
            }
            Kind::Derived {
                fstype: fstype.clone(),
                source: source.clone(),
            }
        }
    })
}

/// What overlayfs refuses with a bare EINVAL, said before boot: it needs
/// `lowerdir`, and `upperdir` and `workdir` come together (neither: a
/// read-write overlay gets a tmpfs writable layer).
fn check_overlay(name: &str, spec: &VolumeSpec) -> Result<(), PlanError> {
    let (_, data) = split_options(spec);
    let given = |key: &str| {
        data.iter()
            .any(|o| o.strip_prefix(key).is_some_and(|v| !v.is_empty()))
    };
    let reason = if !given("lowerdir=") {
        "an overlay needs lowerdir=DIR[:DIR...]"
    } else if given("upperdir=") != given("workdir=") {
        "an overlay's upperdir and workdir go together: give both, or neither for a tmpfs writable layer"
    } else {
        return Ok(());
    };
    Err(PlanError::Syntax {
        volume: name.to_string(),
        reason: reason.into(),
    })
}

/// Accumulates the plan while walking the volumes in order.
struct Builder<'a> {
    config: &'a PlanConfig,
    exports: Vec<NfsExport>,
    disks: Vec<BlockDevice>,
    shares: Vec<Share>,
    images: Vec<ImageBuild>,
    sync_back: Vec<SyncBack>,
    mounts: Vec<PlannedMount>,
    notes: Vec<String>,
    /// Where each earlier volume is mounted, for `{{ mount N }}`.
    locations: Vec<String>,
    tags: BTreeSet<String>,
    /// Every tag a volume asks for, so that a generated `vmshare<N>` never
    /// takes one that a later volume names (which was then refused as
    /// "used by another share", a share the user never tagged).
    asked: BTreeSet<String>,
    /// The packed image's disk index and staging directory, once made.
    packed: Option<(usize, String)>,
}

impl<'a> Builder<'a> {
    fn new(config: &'a PlanConfig) -> Self {
        let mut b = Builder {
            config,
            exports: Vec::new(),
            disks: Vec::new(),
            shares: Vec::new(),
            images: Vec::new(),
            sync_back: Vec::new(),
            mounts: Vec::new(),
            notes: Vec::new(),
            locations: Vec::new(),
            tags: BTreeSet::new(),
            asked: BTreeSet::new(),
            packed: None,
        };
        for r in &config.root_disks {
            let readonly = r.readonly || r.format == ImageFormat::Erofs;
            b.disk(r.image.clone(), r.format, readonly, DiskRole::Root);
        }
        b
    }

    fn disk(
        &mut self,
        image: PathBuf,
        format: ImageFormat,
        readonly: bool,
        role: DiskRole,
    ) -> String {
        let id = disk_name(self.disks.len());
        let device = format!("/dev/{id}");
        self.disks.push(BlockDevice {
            id,
            device: device.clone(),
            image,
            format,
            readonly,
            role,
        });
        device
    }

    fn add(
        &mut self,
        index: usize,
        spec: &VolumeSpec,
        kind: &Kind,
        location: String,
        pack: bool,
        specs: &[VolumeSpec],
    ) -> Result<(), PlanError> {
        let (flags, data) = split_options(spec);
        let data: Vec<String> = data
            .iter()
            .map(|d| self.resolve(spec, d, specs))
            .collect::<Result<_, _>>()?;
        let nodata = |this: &Self| -> Result<(), PlanError> {
            match data.first() {
                Some(o) => Err(PlanError::UnknownOption {
                    volume: spec.name.clone(),
                    option: o.clone(),
                    hint: format!(
                        "{} mounts take only ro, rw and {}",
                        this.describe(kind),
                        GENERIC_FLAGS.join(", ")
                    ),
                }),
                None => Ok(()),
            }
        };
        let mut mount = GuestMount {
            name: spec.name.clone(),
            source: String::new(),
            target: location.clone(),
            fstype: String::new(),
            data: data.join(","),
            readonly: spec.readonly,
            flags,
            file: false,
            retry: false,
            mkdir: if spec.mkdir {
                vec![location.clone()]
            } else {
                Vec::new()
            },
        };
        match kind {
            Kind::Nfs { dir, file, create } => {
                nodata(self)?;
                let export = format!("/v{}", self.exports.len());
                self.exports.push(NfsExport {
                    volume: spec.name.clone(),
                    export_path: export.clone(),
                    host_path: dir.clone(),
                    readonly: spec.readonly,
                    single_file: file.clone(),
                    create: *create,
                });
                mount.source = export.clone();
                mount.fstype = "nfs".into();
                mount.retry = true;
                if let Some(file) = file {
                    let staging = format!("{STAGING_DIR}{export}");
                    let mut stage = mount.clone();
                    stage.target = staging.clone();
                    stage.flags.clear();
                    stage.mkdir.clear();
                    self.mounts.push(PlannedMount {
                        mount: stage,
                        nfs_export: Some(export),
                    });
                    mount.source = format!("{staging}/{file}");
                    mount.fstype = "bind".into();
                    mount.retry = false;
                    mount.file = true;
                    self.mounts.push(PlannedMount {
                        mount,
                        nfs_export: None,
                    });
                } else {
                    self.mounts.push(PlannedMount {
                        mount,
                        nfs_export: Some(export),
                    });
                }
            }
            Kind::Share {
                driver,
                access,
                path,
            } => {
                nodata(self)?;
                let tag = self.tag(spec, index)?;
                self.shares.push(Share {
                    volume: spec.name.clone(),
                    tag: tag.clone(),
                    host_path: path.clone(),
                    driver: *driver,
                    access: *access,
                    readonly: spec.readonly,
                });
                mount.source = tag;
                match driver {
                    ShareDriver::Virtiofs => mount.fstype = "virtiofs".into(),
                    ShareDriver::NineP => {
                        mount.fstype = "9p".into();
                        mount.data = "trans=virtio,version=9p2000.L,msize=262144".into();
                    }
                }
                self.mounts.push(PlannedMount {
                    mount,
                    nfs_export: None,
                });
            }
            Kind::Image { path, format } => {
                let readonly = spec.readonly || *format == ImageFormat::Erofs;
                // One filesystem mounted through two disks, one of them
                // writable, is corrupted: each guest-side mount caches its
                // own view of the blocks.
                if let Some(other) = self
                    .disks
                    .iter()
                    .find(|d| d.image == *path && !(d.readonly && readonly))
                {
                    return Err(PlanError::Syntax {
                        volume: spec.name.clone(),
                        reason: format!(
                            "{} is already attached as {}; an image may be attached twice \
                             only read-only (add readonly to both)",
                            path.display(),
                            other.device
                        ),
                    });
                }
                mount.source = self.disk(path.clone(), *format, readonly, DiskRole::Volume);
                mount.fstype = format.fstype().into();
                mount.readonly = readonly;
                self.mounts.push(PlannedMount {
                    mount,
                    nfs_export: None,
                });
            }
            Kind::Copy { path } => {
                nodata(self)?;
                if pack {
                    let (disk, staging) = match &self.packed {
                        Some(p) => p.clone(),
                        None => {
                            let image = self.config.state_dir.join("packed.ext4");
                            let device = self.disk(
                                image.clone(),
                                ImageFormat::Ext4,
                                false,
                                DiskRole::Packed,
                            );
                            let staging = format!("{STAGING_DIR}/packed");
                            self.images.push(ImageBuild {
                                output: image,
                                format: ImageFormat::Ext4,
                                contents: Vec::new(),
                            });
                            self.mounts.push(staging_mount(
                                "packed copy volumes".into(),
                                device,
                                staging.clone(),
                                "ext4",
                                "",
                            ));
                            let p = (self.images.len() - 1, staging);
                            self.packed = Some(p.clone());
                            p
                        }
                    };
                    let subdir = format!("v{index}");
                    let image = self.images[disk].output.clone();
                    self.images[disk].contents.push(ImageContent {
                        host_path: path.clone(),
                        subdir: subdir.clone(),
                    });
                    if !spec.readonly {
                        self.sync_back.push(SyncBack {
                            volume: spec.name.clone(),
                            host_path: path.clone(),
                            image,
                            subdir: subdir.clone(),
                        });
                    }
                    mount.source = format!("{staging}/{subdir}");
                    mount.fstype = "bind".into();
                } else {
                    let image = self.config.state_dir.join(format!("copy{index}.ext4"));
                    self.images.push(ImageBuild {
                        output: image.clone(),
                        format: ImageFormat::Ext4,
                        contents: vec![ImageContent {
                            host_path: path.clone(),
                            subdir: String::new(),
                        }],
                    });
                    if !spec.readonly {
                        self.sync_back.push(SyncBack {
                            volume: spec.name.clone(),
                            host_path: path.clone(),
                            image: image.clone(),
                            subdir: String::new(),
                        });
                    }
                    mount.source = self.disk(image, ImageFormat::Ext4, false, DiskRole::Copy);
                    mount.fstype = "ext4".into();
                }
                self.mounts.push(PlannedMount {
                    mount,
                    nfs_export: None,
                });
            }
            Kind::Tmpfs => {
                mount.source = "tmpfs".into();
                mount.fstype = "tmpfs".into();
                self.mounts.push(PlannedMount {
                    mount,
                    nfs_export: None,
                });
            }
            Kind::Derived { fstype, source } => {
                mount.source = self.resolve(spec, source, specs)?;
                mount.fstype = fstype.clone();
                if spec.mkdir {
                    for d in &data {
                        if let Some(dir) = d
                            .strip_prefix("upperdir=")
                            .or_else(|| d.strip_prefix("workdir="))
                        {
                            mount.mkdir.push(dir.to_string());
                        }
                    }
                }
                let has_upper = data.iter().any(|d| d.starts_with("upperdir="));
                let lowers = data
                    .iter()
                    .find_map(|d| d.strip_prefix("lowerdir="))
                    .map_or(0, layer_count);
                // Without an upperdir the kernel wants two lower layers
                // ("at least 2 lowerdir are needed while upperdir
                // nonexistent"): a read-only overlay of one layer gets the
                // tmpfs layer too, and being mounted read-only, never
                // writes to it. It had been planned as given and failed
                // in the guest with EINVAL.
                if fstype == "overlay" && !has_upper && (!spec.readonly || lowers < 2) {
                    self.writable_layer(index, spec, &mut mount);
                }
                self.mounts.push(PlannedMount {
                    mount,
                    nfs_export: None,
                });
            }
        }
        self.locations.push(location);
        Ok(())
    }

    /// docker's container layer, for a read-write overlay that names no
    /// `upperdir`: a tmpfs of its own holding `upper` and `work`, mounted
    /// before the overlay. The guest's writes land in memory, the lower
    /// layers (erofs images) are never written, and the changes are gone
    /// when the VM stops, as a `docker run --rm` container's are.
    fn writable_layer(&mut self, index: usize, spec: &VolumeSpec, overlay: &mut GuestMount) {
        let layer = format!("{STAGING_DIR}/layer{index}");
        let (upper, work) = (format!("{layer}/upper"), format!("{layer}/work"));
        self.mounts.push(staging_mount(
            format!("writable layer of {}", spec.name),
            "tmpfs".into(),
            layer.clone(),
            "tmpfs",
            "mode=0755",
        ));
        let dirs = format!("upperdir={upper},workdir={work}");
        overlay.data = if overlay.data.is_empty() {
            dirs
        } else {
            format!("{},{dirs}", overlay.data)
        };
        overlay.mkdir.extend([upper, work]);
        if spec.readonly {
            return;
        }
        self.notes.push(format!(
            "{}: no upperdir, so writes go to a tmpfs layer at {layer} and are dropped when the VM stops (as a container's); add ro for a read-only overlay, or give upperdir and workdir to keep them",
            spec.name
        ));
    }

    fn describe(&self, kind: &Kind) -> &'static str {
        match kind {
            Kind::Nfs { .. } => "NFS",
            Kind::Share {
                driver: ShareDriver::Virtiofs,
                ..
            } => "virtio-fs",
            Kind::Share { .. } => "9p",
            Kind::Copy { .. } => "copy volume",
            _ => "these",
        }
    }

    /// The share's tag: the one asked for, or `vmshare<N>`.
    fn tag(&mut self, spec: &VolumeSpec, index: usize) -> Result<String, PlanError> {
        let bad = |tag: &str, reason: &str| PlanError::BadTag {
            volume: spec.name.clone(),
            tag: tag.to_string(),
            reason: reason.to_string(),
        };
        let tag = match &spec.tag {
            Some(t) => {
                if t.is_empty() || t.len() > MAX_TAG_LEN {
                    return Err(bad(
                        t,
                        "must be 1 to 36 bytes long (the guest kernel's limit); shorten it",
                    ));
                }
                if !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    return Err(bad(
                        t,
                        "may hold only letters, digits, '_', '-' and '.'; rename it",
                    ));
                }
                if self.tags.contains(t) {
                    return Err(bad(
                        t,
                        "is used by another share; give each share its own tag",
                    ));
                }
                t.clone()
            }
            None => {
                let mut n = index;
                while self.tags.contains(&format!("vmshare{n}"))
                    || self.asked.contains(&format!("vmshare{n}"))
                {
                    n += 1;
                }
                format!("vmshare{n}")
            }
        };
        self.tags.insert(tag.clone());
        Ok(tag)
    }

    /// Replaces `{{ mount N }}` and `{{ overlay A B }}` with where earlier
    /// volumes are mounted.
    fn resolve(
        &self,
        spec: &VolumeSpec,
        text: &str,
        specs: &[VolumeSpec],
    ) -> Result<String, PlanError> {
        for_each_template(&spec.name, text, |reference, words| {
            let index = |w: &str| -> Result<usize, PlanError> {
                let n: usize = w.parse().map_err(|_| PlanError::Syntax {
                    volume: spec.name.clone(),
                    reason: format!("'{reference}': '{w}' is not a mount index"),
                })?;
                match self.locations.get(n) {
                    Some(_) => Ok(n),
                    None => Err(PlanError::BadReference {
                        volume: spec.name.clone(),
                        reference: reference.to_string(),
                        index: n,
                        reason: if n < specs.len() {
                            "it comes later; a mount can only use mounts listed before it".into()
                        } else {
                            format!("there are only {} mounts (counting from 0)", specs.len())
                        },
                    }),
                }
            };
            match words {
                [_, n] => Ok(self.locations[index(n)?].clone()),
                [_, a, b] => {
                    let (a, b) = (index(a)?, index(b)?);
                    let dirs: Vec<&str> = if a <= b {
                        (a..=b).map(|i| self.locations[i].as_str()).collect()
                    } else {
                        (b..=a).rev().map(|i| self.locations[i].as_str()).collect()
                    };
                    Ok(dirs.join(":"))
                }
                _ => Ok(String::new()),
            }
        })
    }
}

/// Rewrites each `{{ ... }}` in `text` with `f(reference, words)`, after
/// checking it is `{{ mount N }}` or `{{ overlay A B }}`.
pub(crate) fn for_each_template(
    name: &str,
    text: &str,
    mut f: impl FnMut(&str, &[&str]) -> Result<String, PlanError>,
) -> Result<String, PlanError> {
    let syntax = |reason: String| PlanError::Syntax {
        volume: name.to_string(),
        reason,
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(syntax(format!(
                "unclosed '{{{{' in '{text}'; write {{{{ mount N }}}}"
            )));
        };
        let expr = after[..end].trim();
        let reference = format!("{{{{ {expr} }}}}");
        let words: Vec<&str> = expr.split_whitespace().collect();
        match words.as_slice() {
            ["mount", _] | ["overlay", _, _] => out.push_str(&f(&reference, &words)?),
            _ => {
                return Err(syntax(format!(
                    "unknown template '{reference}'; use {{{{ mount N }}}} or {{{{ overlay A B }}}}"
                )))
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A read-write mount the plan adds itself (not a user's volume), under
/// [`STAGING_DIR`].
fn staging_mount(
    name: String,
    source: String,
    target: String,
    fstype: &str,
    data: &str,
) -> PlannedMount {
    PlannedMount {
        mount: GuestMount {
            name,
            source,
            target,
            fstype: fstype.into(),
            data: data.into(),
            readonly: false,
            flags: Vec::new(),
            file: false,
            retry: false,
            mkdir: Vec::new(),
        },
        nfs_export: None,
    }
}

/// Splits a volume's options into generic mount flags and filesystem data.
fn split_options(spec: &VolumeSpec) -> (Vec<String>, Vec<String>) {
    spec.options
        .iter()
        .cloned()
        .partition(|o| GENERIC_FLAGS.contains(&o.as_str()))
}

/// How many layers an overlay `lowerdir` value names: they are separated
/// by `:`, and `\:` is a colon within one.
fn layer_count(lowerdir: &str) -> usize {
    let mut count = 1;
    let mut escaped = false;
    for c in lowerdir.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ':' => count += 1,
            _ => {}
        }
    }
    count
}

/// Docker's order for mounts given in any order: parents first.
pub fn sort_by_depth(specs: &mut [VolumeSpec]) {
    specs.sort_by_key(|s| s.target.as_deref().map_or(0, depth));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::parse_args;
    use crate::host::FakeHost;
    use std::net::Ipv4Addr;

    fn config(vmm: Vmm) -> PlanConfig {
        PlanConfig::new(
            vmm,
            "/var/lib/vmshare/volumes",
            "/run/user/1000/vmshare/run1",
        )
    }

    fn docker(volumes: &[&str]) -> Vec<VolumeSpec> {
        let v: Vec<String> = volumes.iter().map(|s| s.to_string()).collect();
        parse_args(&v, &[], &[], Path::new("/home/u")).unwrap()
    }

    #[test]
    fn nfs_directory_file_and_named_volume() {
        let host = FakeHost::new().with("/etc/app.conf", HostKind::File);
        let specs = docker(&[
            "/srv/data:/data",
            "/etc/app.conf:/etc/app.conf:ro",
            "cache:/cache",
        ]);
        let p = plan(&specs, &config(Vmm::Firecracker), &host).unwrap();
        assert_eq!(p.nfs_exports.len(), 3);
        let e = &p.nfs_exports[2];
        assert_eq!(e.export_path, "/v2");
        assert_eq!(e.host_path, Path::new("/etc"));
        assert_eq!(e.single_file.as_deref(), Some("app.conf"));
        assert!(e.readonly);
        assert!(p.nfs_exports[1].create);
        assert_eq!(
            p.nfs_exports[1].host_path,
            Path::new("/var/lib/vmshare/volumes/cache")
        );
        assert!(p.block_devices.is_empty());

        let mounts = p.guest_mounts(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2)), 2049);
        let summary: Vec<(String, String, String, bool)> = mounts
            .iter()
            .map(|m| {
                (
                    m.source.clone(),
                    m.target.clone(),
                    m.fstype.clone(),
                    m.readonly,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("10.0.2.2:/v0".into(), "/data".into(), "nfs".into(), false),
                ("10.0.2.2:/v1".into(), "/cache".into(), "nfs".into(), false),
                (
                    "10.0.2.2:/v2".into(),
                    "/run/vmshare/v2".into(),
                    "nfs".into(),
                    true
                ),
                (
                    "/run/vmshare/v2/app.conf".into(),
                    "/etc/app.conf".into(),
                    "bind".into(),
                    true
                ),
            ]
        );
        assert_eq!(
            mounts[0].data,
            "vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,actimeo=1,lookupcache=positive,addr=10.0.2.2"
        );
        assert!(mounts[0].retry && !mounts[0].file);
        assert!(mounts[3].file && !mounts[3].retry && mounts[3].data.is_empty());
        // An IPv6 server: in brackets in the source, and the v6 transports
        // (the kernel refuses `proto=tcp` with an IPv6 address).
        let v6 = p.guest_mounts("fd00::2".parse().unwrap(), 2049);
        assert_eq!(v6[0].source, "[fd00::2]:/v0");
        assert!(
            v6[0].data.contains("proto=tcp6,") && v6[0].data.contains("mountproto=tcp6,"),
            "{}",
            v6[0].data
        );
    }

    #[test]
    fn missing_host_path_is_an_error() {
        let specs = docker(&["/nope:/data"]);
        let e = plan(&specs, &config(Vmm::Qemu), &FakeHost::strict()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-v /nope:/data: /nope does not exist on the host; create it or fix the path"
        );
    }

    #[test]
    fn later_parent_mount_would_hide_earlier_child() {
        let mut specs = docker(&["/a:/data", "/b:/data/sub"]);
        specs.reverse();
        let e = plan(&specs, &config(Vmm::Qemu), &FakeHost::new()).unwrap_err();
        assert!(e.to_string().contains("list '-v /a:/data' first"), "{e}");
    }

    #[test]
    fn disk_names_follow_the_kernel() {
        let names: Vec<String> = [0, 1, 25, 26, 27, 51, 52, 701, 702]
            .iter()
            .map(|i| disk_name(*i))
            .collect();
        assert_eq!(
            names,
            ["vda", "vdb", "vdz", "vdaa", "vdab", "vdaz", "vdba", "vdzz", "vdaaa"]
        );
    }
}
