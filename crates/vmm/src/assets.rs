//! Guest assets: the kernel to boot and the initramfs that is the guest's
//! whole root filesystem (busybox, the vmshare binary as `/init`, the
//! modules volumes need).
//!
//! The base initramfs is built once per set of inputs and cached under the
//! state directory, keyed by a hash of everything that goes into it; a run
//! only appends a small archive with its spec and files (the kernel unpacks
//! concatenated archives in order).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use vmshare_init::protocol::{ConsoleSpec, CONSOLE_SPEC_PATH};
use vmshare_plan::guest::{GuestSpec, GUEST_SPEC_PATH};

use crate::cpio::CpioWriter;
use crate::modules::ModuleIndex;
use crate::{GuestFile, StateDir, VmmError};

/// Modules every guest loads: the virtio-mmio transport of `-M microvm`
/// and the serial ports that carry CMD's streams.
pub const MODULES_BASE: &[&str] = &["virtio_mmio", "virtio_console"];
/// Modules for a network interface.
pub const MODULES_NET: &[&str] = &["virtio_net"];
/// Modules for NFSv3 volumes (sunrpc, lockd... come as dependencies).
pub const MODULES_NFS: &[&str] = &["nfsv3"];
/// Modules for block-device volumes and images.
pub const MODULES_BLOCK: &[&str] = &["virtio_blk", "ext4", "erofs"];
/// Module for writable layers over read-only directories.
pub const MODULES_OVERLAY: &[&str] = &["overlay"];
/// Modules for 9p and virtio-fs shares.
pub const MODULES_SHARES: &[&str] = &["9p", "9pnet_virtio", "virtiofs"];

/// Every module group; all are packed into the base initramfs so that the
/// cached archive serves every run, and each run loads only what it uses.
const ALL_MODULES: [&[&str]; 6] = [
    MODULES_BASE,
    MODULES_NET,
    MODULES_NFS,
    MODULES_BLOCK,
    MODULES_OVERLAY,
    MODULES_SHARES,
];

/// Bump when the layout of the base initramfs changes, to invalidate
/// caches.
const FORMAT: &str = "vmshare-initramfs-1";

/// Default busybox: Debian's busybox-static.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// A kernel image and its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The bzImage.
    pub image: PathBuf,
    /// Its release string (`6.1.0-26-amd64`), which names its modules.
    pub version: String,
    /// `/lib/modules/<version>`.
    pub modules_dir: PathBuf,
}

impl Kernel {
    /// `explicit` (`--kernel`), else the newest `/boot/vmlinuz-*`. The
    /// release is read from the image's own header, so a kernel anywhere
    /// finds its modules under `/lib/modules`.
    pub fn find(explicit: Option<&Path>) -> Result<Kernel, VmmError> {
        let image = match explicit {
            Some(p) => p.to_path_buf(),
            None => newest_boot_kernel()?,
        };
        let version = bzimage_version(&image)?;
        let modules_dir = PathBuf::from("/lib/modules").join(&version);
        if !modules_dir.join("modules.dep").exists() {
            return Err(VmmError::NoKernel(format!(
                "{} is release {version} but {} has no modules.dep (install its modules, or pass --kernel)",
                image.display(),
                modules_dir.display()
            )));
        }
        Ok(Kernel {
            image,
            version,
            modules_dir,
        })
    }
}

fn newest_boot_kernel() -> Result<PathBuf, VmmError> {
    let hint = "install Debian's linux-image-amd64 or pass --kernel PATH";
    let entries = std::fs::read_dir("/boot")
        .map_err(|e| VmmError::NoKernel(format!("/boot: {e} ({hint})")))?;
    let mut kernels: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    kernels
        .pop()
        .ok_or_else(|| VmmError::NoKernel(format!("no /boot/vmlinuz-* ({hint})")))
}

/// Orders "6.1.0-9" before "6.1.0-26": digit runs compare as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match out.last_mut() {
                Some((d, run)) if *d == digit => run.push(c),
                _ => out.push((digit, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for ((da, ra), (db, rb)) in ca.iter().zip(cb.iter()) {
        let ord = if *da && *db {
            let (ta, tb) = (ra.trim_start_matches('0'), rb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            ra.cmp(rb)
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The release string of a kernel image: an x86 bzImage's, from its
/// setup header (`kernel_version` field at 0x20e, an offset from 0x200),
/// or an uncompressed ELF `vmlinux`'s (what Firecracker boots), from its
/// banner.
fn bzimage_version(image: &Path) -> Result<String, VmmError> {
    let data = std::fs::read(image)
        .map_err(|e| VmmError::NoKernel(format!("{}: {e}", image.display())))?;
    let bad = || {
        VmmError::NoKernel(format!(
            "{} is neither an x86 bzImage nor an ELF vmlinux with a version string",
            image.display()
        ))
    };
    let text = if data.starts_with(b"\x7fELF") {
        elf_banner_version(&data).ok_or_else(bad)?
    } else {
        if data.get(0x202..0x206) != Some(b"HdrS") {
            return Err(bad());
        }
        let off = usize::from(u16::from_le_bytes([data[0x20e], data[0x20f]])) + 0x200;
        data.get(off..off + 256).ok_or_else(bad)?
    };
    let end = text
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .ok_or_else(bad)?;
    let version = std::str::from_utf8(&text[..end]).map_err(|_| bad())?;
    if version.is_empty() {
        return Err(bad());
    }
    Ok(version.to_string())
}

/// What follows the first `Linux version ` that a release number follows
/// (the kernel's `linux_banner`), up to 256 bytes.
fn elf_banner_version(data: &[u8]) -> Option<&[u8]> {
    const BANNER: &[u8] = b"Linux version ";
    let mut at = 0;
    while let Some(found) = data[at..].windows(BANNER.len()).position(|w| w == BANNER) {
        let start = at + found + BANNER.len();
        let rest = &data[start..data.len().min(start + 256)];
        if rest.first().is_some_and(u8::is_ascii_digit) {
            return Some(rest);
        }
        at = start;
    }
    None
}

/// A kernel plus the cached base initramfs built for it.
#[derive(Debug)]
pub struct Assets {
    /// The kernel to boot.
    pub kernel: Kernel,
    /// The cached base initramfs.
    pub initramfs: PathBuf,
    index: ModuleIndex,
}

impl Assets {
    /// Finds the kernel and builds (or reuses) the base initramfs with
    /// `init_binary` (a static vmshare) as `/init` and `busybox`.
    pub fn prepare(
        state: &StateDir,
        kernel: Option<&Path>,
        init_binary: &Path,
        busybox: &Path,
    ) -> Result<Assets, VmmError> {
        let kernel = Kernel::find(kernel)?;
        let (index, modules) = base_inputs(&kernel, init_binary, busybox)?;
        let key = cache_key(&kernel, init_binary, busybox, &modules, &index)?;
        let initramfs = state.cache_dir().join(format!("initramfs-{key}.cpio"));
        // It holds the guest's init, which sees every volume: one that
        // another user could have written is made again. (A process-wide
        // umask of 0 once left them 0666.)
        if !trusted(&initramfs) {
            let _ = std::fs::remove_file(&initramfs);
        }
        if !initramfs.exists() {
            build_base(&initramfs, &kernel, init_binary, busybox, &modules, &index)?;
            prune_cache(&state.cache_dir(), &initramfs);
        }
        Ok(Assets {
            kernel,
            initramfs,
            index,
        })
    }

    /// Guest paths of the module files for `names` and their
    /// dependencies, in load order: what goes into `GuestSpec::modules`.
    pub fn module_load_order(&self, names: &[&str]) -> Result<Vec<String>, VmmError> {
        let rels = self.index.resolve(names)?;
        Ok(rels
            .iter()
            .map(|r| guest_module_path(&self.kernel, r))
            .collect())
    }

    /// Writes the initramfs of one run: the base archive followed by one
    /// with the spec, the console wiring and `files`.
    pub fn write_run_initramfs(
        &self,
        out: &Path,
        spec: &GuestSpec,
        console: &ConsoleSpec,
        files: &[GuestFile],
    ) -> Result<(), VmmError> {
        std::fs::copy(&self.initramfs, out)
            .map_err(|e| VmmError::io(format!("writing {}", out.display()), e))?;
        append_run_archive(out, spec, console, files)
    }
}

/// The module groups a guest of `spec` loads (see the `MODULES_*`
/// groups), for [`Assets::module_load_order`]: the base, the network's
/// when `spec.network` is set, and what its mounts and root filesystem
/// need.
pub fn module_names(spec: &GuestSpec) -> Vec<&'static str> {
    let mut names: Vec<&str> = MODULES_BASE.to_vec();
    if spec.network.is_some() {
        names.extend_from_slice(MODULES_NET);
    }
    // The root filesystem's own layer, then the overlay over it.
    let rootfs = spec.rootfs.as_ref().map(|r| &r.lower);
    if rootfs.is_some() {
        names.extend_from_slice(MODULES_OVERLAY);
    }
    for m in spec.mounts.iter().chain(rootfs) {
        let group: &[&str] = match m.fstype.as_str() {
            "nfs" => MODULES_NFS,
            "ext4" | "erofs" => MODULES_BLOCK,
            "overlay" => MODULES_OVERLAY,
            "9p" | "virtiofs" => MODULES_SHARES,
            _ => &[],
        };
        names.extend_from_slice(group);
    }
    // Mount points inside read-only filesystems are made with overlay.
    if spec
        .mounts
        .iter()
        .any(|m| m.readonly || m.fstype != "tmpfs")
    {
        names.extend_from_slice(MODULES_OVERLAY);
    }
    names
}

/// Writes to `out` a whole initramfs for a guest that vmshare does not
/// start (`vmshare plan --write-initrd`, for Firecracker or Cloud
/// Hypervisor): the base archive [`Assets::prepare`] caches (`init_binary`
/// as `/init`, `busybox`, `kernel`'s modules), built here and not cached,
/// then `spec` with its `modules` filled in as [`crate::GuestRun`] fills
/// them, and a console spec without ports (CMD on the serial console).
/// The file is whole or not there: it is written beside `out` and renamed
/// over it. Returns the spec as written.
pub fn write_standalone_initramfs(
    out: &Path,
    kernel: &Kernel,
    init_binary: &Path,
    busybox: &Path,
    spec: &GuestSpec,
) -> Result<GuestSpec, VmmError> {
    let (index, modules) = base_inputs(kernel, init_binary, busybox)?;
    let name = out
        .file_name()
        .map_or_else(|| "initrd".into(), |n| n.to_string_lossy().into_owned());
    let tmp = out.with_file_name(format!(".{name}.vmshare-{}", std::process::id()));
    let write = || -> Result<GuestSpec, VmmError> {
        build_base(&tmp, kernel, init_binary, busybox, &modules, &index)?;
        let assets = Assets {
            kernel: kernel.clone(),
            initramfs: tmp.clone(),
            index,
        };
        let mut spec = spec.clone();
        spec.modules = assets.module_load_order(&module_names(&spec))?;
        let console = ConsoleSpec {
            stdin: false,
            serial: true,
        };
        append_run_archive(&tmp, &spec, &console, &[])?;
        std::fs::rename(&tmp, out)
            .map_err(|e| VmmError::io(format!("writing {}", out.display()), e))?;
        Ok(spec)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// What every base archive is made of besides the two binaries, which are
/// checked here: `kernel`'s module index and the files of every module
/// group with their dependencies.
fn base_inputs(
    kernel: &Kernel,
    init_binary: &Path,
    busybox: &Path,
) -> Result<(ModuleIndex, Vec<String>), VmmError> {
    crate::elf::check_static(init_binary)?;
    crate::elf::check_static(busybox)?;
    let index = ModuleIndex::load(&kernel.modules_dir)?;
    let names: Vec<&str> = ALL_MODULES.iter().flat_map(|g| g.iter().copied()).collect();
    let modules = index.resolve(&names)?;
    Ok((index, modules))
}

/// Appends to the archive at `out` one with the spec, the console wiring
/// and `files` (the kernel unpacks concatenated archives in order).
fn append_run_archive(
    out: &Path,
    spec: &GuestSpec,
    console: &ConsoleSpec,
    files: &[GuestFile],
) -> Result<(), VmmError> {
    let io = |e| VmmError::io(format!("writing {}", out.display()), e);
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(out)
        .map_err(io)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(file));
    w.dir("/vmshare", 0o755).map_err(io)?;
    w.file(GUEST_SPEC_PATH, 0o644, &to_json(spec)?)
        .map_err(io)?;
    w.file(CONSOLE_SPEC_PATH, 0o644, &to_json(console)?)
        .map_err(io)?;
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        for dir in Path::new(&f.path).ancestors().skip(1) {
            let d = dir.to_string_lossy().to_string();
            if d != "/" && !d.is_empty() && dirs.insert(d.clone()) {
                w.dir(&d, 0o755).map_err(io)?;
            }
        }
    }
    for f in files {
        w.file(&f.path, f.mode, &f.contents).map_err(io)?;
    }
    w.finish().map_err(io)?.flush().map_err(io)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, VmmError> {
    serde_json::to_vec(value)
        .map_err(|e| VmmError::io("encoding the guest spec", std::io::Error::other(e)))
}

fn guest_module_path(kernel: &Kernel, rel: &str) -> String {
    let rel = rel
        .strip_suffix(".xz")
        .or_else(|| rel.strip_suffix(".zst"))
        .or_else(|| rel.strip_suffix(".gz"))
        .unwrap_or(rel);
    format!("/lib/modules/{}/{rel}", kernel.version)
}

fn cache_key(
    kernel: &Kernel,
    init_binary: &Path,
    busybox: &Path,
    modules: &[String],
    index: &ModuleIndex,
) -> Result<String, VmmError> {
    let mut h = blake3::Hasher::new();
    h.update(FORMAT.as_bytes());
    h.update(kernel.version.as_bytes());
    for path in [init_binary, busybox] {
        let bytes = std::fs::read(path)
            .map_err(|e| VmmError::io(format!("reading {}", path.display()), e))?;
        h.update(&bytes);
    }
    for m in modules {
        h.update(m.as_bytes());
        let meta = std::fs::metadata(index.host_path(m))
            .map_err(|e| VmmError::io(format!("module {m}"), e))?;
        h.update(&meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        h.update(&mtime.map(|d| d.as_nanos()).unwrap_or(0).to_le_bytes());
    }
    Ok(h.finalize().to_hex()[..16].to_string())
}

fn build_base(
    out: &Path,
    kernel: &Kernel,
    init_binary: &Path,
    busybox: &Path,
    modules: &[String],
    index: &ModuleIndex,
) -> Result<(), VmmError> {
    // Unique per call, not only per process: two runs in one process (the
    // test harness runs two at a time) may build the same archive at once,
    // and a shared temporary file would be renamed away under the other.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = out.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let init = std::fs::read(init_binary)
        .map_err(|e| VmmError::io(format!("reading {}", init_binary.display()), e))?;
    let bb = std::fs::read(busybox)
        .map_err(|e| VmmError::io(format!("reading {}", busybox.display()), e))?;
    let applets = busybox_applets(busybox)?;
    let mut module_files = Vec::new();
    for rel in modules {
        module_files.push((
            guest_module_path(kernel, rel),
            read_module(&index.host_path(rel))?,
        ));
    }
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut w = CpioWriter::new(std::io::BufWriter::new(file));
        for (dir, mode) in [
            ("/bin", 0o755),
            ("/sbin", 0o755),
            ("/usr", 0o755),
            ("/usr/bin", 0o755),
            ("/usr/sbin", 0o755),
            ("/etc", 0o755),
            ("/dev", 0o755),
            ("/proc", 0o555),
            ("/sys", 0o555),
            ("/run", 0o755),
            ("/tmp", 0o1777),
            ("/root", 0o700),
            ("/mnt", 0o755),
            ("/vmshare", 0o755),
            ("/lib", 0o755),
        ] {
            w.dir(dir, mode)?;
        }
        w.char_dev("/dev/console", 0o600, 5, 1)?;
        w.char_dev("/dev/null", 0o666, 1, 3)?;
        w.file("/init", 0o755, &init)?;
        w.symlink("/bin/vmshare", "/init")?;
        w.file("/bin/busybox", 0o755, &bb)?;
        for applet in &applets {
            if applet != "bin/busybox" {
                w.symlink(&format!("/{applet}"), "/bin/busybox")?;
            }
        }
        w.file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )?;
        w.file("/etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n")?;
        let mut dirs = std::collections::BTreeSet::new();
        for (guest, data) in &module_files {
            for dir in Path::new(guest)
                .ancestors()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                let d = dir.to_string_lossy().to_string();
                if d != "/" && dirs.insert(d.clone()) {
                    w.dir(&d, 0o755)?;
                }
            }
            w.file(guest, 0o644, data)?;
        }
        w.finish()?.flush()?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        VmmError::io(format!("writing {}", out.display()), e)
    })
}

/// A module's bytes, decompressed on the host: finit_module with in-kernel
/// decompression is not available on every kernel (Debian's 6.1 has it
/// off), and decompressing once here costs nothing per boot.
fn read_module(path: &Path) -> Result<Vec<u8>, VmmError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        return std::fs::read(path).map_err(|e| VmmError::io(format!("reading {name}"), e));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .map_err(|_| VmmError::MissingTool {
            tool: tool.into(),
            hint: format!("needed to decompress {name}"),
        })?;
    if !out.status.success() {
        return Err(VmmError::io(
            format!(
                "{tool} -dc {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            std::io::ErrorKind::InvalidData.into(),
        ));
    }
    Ok(out.stdout)
}

/// busybox's applets as paths relative to / (`bin/sh`, `usr/bin/md5sum`).
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, VmmError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| {
            VmmError::io(
                format!(
                    "running {} --list-full (install busybox-static)",
                    busybox.display()
                ),
                e,
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains('/'))
        .map(str::to_string)
        .collect())
}

/// Keeps the cache from growing with every rebuild of vmshare: only the
/// newest few base archives stay.
/// Whether `path` is a file of this user's that no one else may write.
fn trusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_file() && m.uid() == rustix::process::geteuid().as_raw() && m.mode() & 0o022 == 0
    })
}

fn prune_cache(dir: &Path, keep: &Path) {
    const KEEP: usize = 4;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != keep && p.extension().is_some_and(|x| x == "cpio"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    old.sort();
    let excess = (old.len() + 1).saturating_sub(KEEP);
    for (_, p) in old.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_of_kernel_names() {
        let mut v = vec![
            "vmlinuz-6.1.0-26-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "vmlinuz-5.10.0-30-amd64",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "vmlinuz-5.10.0-30-amd64",
                "vmlinuz-6.1.0-9-amd64",
                "vmlinuz-6.1.0-26-amd64"
            ]
        );
    }

    /// Firecracker boots an uncompressed vmlinux, whose release is in its
    /// banner, not in a bzImage header.
    #[test]
    fn an_elf_vmlinux_has_its_release_read_from_the_banner() {
        let dir = std::env::temp_dir().join(format!("vmshare-vmlinux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("vmlinux");
        let mut data = b"\x7fELF\x02\x01\x01".to_vec();
        data.extend(vec![0u8; 4096]);
        data.extend(b"Linux version %s\0Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\0");
        std::fs::write(&image, &data).unwrap();
        let version = bzimage_version(&image);
        std::fs::write(&image, b"\x7fELF no banner").unwrap();
        let none = bzimage_version(&image);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(version.unwrap(), "6.1.0-56-amd64");
        assert!(none.unwrap_err().to_string().contains("nor an ELF vmlinux"));
    }

    #[test]
    fn host_kernel_is_found_with_its_version() {
        let k = Kernel::find(None).unwrap();
        let name = k.image.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(name, format!("vmlinuz-{}", k.version));
        assert!(k.modules_dir.join("modules.dep").exists());
    }
}
