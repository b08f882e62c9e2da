//! The QEMU `-M microvm` launcher: the command line, and a process that
//! dies with vmshare.
//!
//! microvm has no PCI and no firmware to speak of, which is what makes a
//! Debian kernel boot in seconds even under TCG; its virtio devices are
//! virtio-mmio, announced to the kernel through ACPI (Debian's kernel has
//! no `virtio_mmio.device=` command line support).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use vmshare_plan::plan::Share;
use vmshare_plan::render::qemu_ninep_args;

use crate::kvm::Accel;
use crate::VmmError;

/// Default QEMU binary, looked up in `PATH`.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// The guest's network backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuNet {
    /// QEMU user networking (slirp): no root, the host is 10.0.2.2.
    User,
    /// An existing TAP device (in the namespace QEMU runs in).
    Tap {
        /// Its name.
        ifname: String,
    },
}

/// A raw image attached as a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuDisk {
    /// Drive id (the plan's `vda`, `vdb`...).
    pub id: String,
    /// Host image file.
    pub image: PathBuf,
    /// Attach read-only (the guest gets EROFS on write).
    pub readonly: bool,
}

/// Everything QEMU is started with.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// bzImage.
    pub kernel: PathBuf,
    /// The run's initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Where the serial console (kernel log) goes.
    pub console_log: PathBuf,
    /// virtio-serial ports: name and the host Unix socket QEMU connects to.
    pub ports: Vec<(String, PathBuf)>,
    /// Network, if any.
    pub net: Option<QemuNet>,
    /// Block devices, in the order the guest must name them (`vda` first).
    pub disks: Vec<QemuDisk>,
    /// The plan's shares, attached over virtio-9p with the planner's own
    /// arguments (virtio-fs would need virtiofsd, which is not started
    /// here: [`crate::GuestRun`] refuses such shares).
    pub shares: Vec<Share>,
}

/// Kernel command line for a vmshare guest. An oops panics, and a panic
/// ends the VM at once: a guest whose kernel hit a BUG while init
/// unmounted the volumes hung, and `vmshare run` with it, until killed.
/// Under TCG the kernel's TSC
/// calibration can hang or misjudge on a busy host, so it is told the
/// host's TSC frequency instead of measuring it.
pub fn kernel_cmdline(accel: &Accel) -> String {
    let mut c = String::from(
        "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic reboot=t rdinit=/init \
         8250.nr_uarts=1 cryptomgr.notests random.trust_cpu=on",
    );
    if let (Accel::Tcg { .. }, Some(khz)) = (accel, host_tsc_khz()) {
        c.push_str(&format!(" tsc_early_khz={khz} tsc=reliable no_timer_check"));
    }
    c
}

/// The host CPU's frequency in kHz, from /proc/cpuinfo.
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    let khz = (mhz * 1000.0).round();
    (1.0..1e9).contains(&khz).then_some(())?;
    // The range check above makes the conversion exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(khz as u64)
}

impl QemuConfig {
    /// The arguments (without the program name).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: String| a.push(s.into());
        push("-M".into());
        push(format!(
            "microvm,accel={},acpi=on,x-option-roms=off,rtc=on",
            self.accel.qemu_name()
        ));
        push("-cpu".into());
        push(if self.accel == Accel::Kvm {
            "host".into()
        } else {
            "max".into()
        });
        push("-m".into());
        push(format!("{}M", self.memory_mib));
        push("-smp".into());
        push(self.cpus.to_string());
        for fixed in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            push(fixed.into());
        }
        push("-kernel".into());
        push(self.kernel.display().to_string());
        push("-initrd".into());
        push(self.initrd.display().to_string());
        push("-append".into());
        push(self.cmdline.clone());
        push("-chardev".into());
        // Appending, so that the runner can cut the log down while QEMU
        // writes it (`run::cut_log`): QEMU's writes then land at the
        // new end, not past a hole at the old one.
        push(format!(
            "file,id=con,path={},append=on",
            chardev_path(&self.console_log)
        ));
        push("-serial".into());
        push("chardev:con".into());
        push("-device".into());
        push(format!(
            "virtio-serial-device,max_ports={}",
            self.ports.len() + 1
        ));
        for (i, (name, sock)) in self.ports.iter().enumerate() {
            push("-chardev".into());
            push(format!("socket,id=port{i},path={}", chardev_path(sock)));
            push("-device".into());
            push(format!(
                "virtserialport,chardev=port{i},name={name},nr={}",
                i + 1
            ));
        }
        match &self.net {
            Some(QemuNet::User) => {
                push("-netdev".into());
                push("user,id=net0".into());
            }
            Some(QemuNet::Tap { ifname }) => {
                push("-netdev".into());
                push(format!(
                    "tap,id=net0,ifname={ifname},script=no,downscript=no"
                ));
            }
            None => {}
        }
        if self.net.is_some() {
            push("-device".into());
            push("virtio-net-device,netdev=net0".into());
        }
        // The guest names virtio-blk disks in probe order, which follows
        // the command line order among block devices; the plan's `vda`,
        // `vdb`... rely on it (checked by `crates/cli/tests/run_disks.rs`).
        // writeback: a guest fsync or unmount flushes to the image file.
        for d in &self.disks {
            push("-drive".into());
            push(format!(
                "file={},if=none,id={},format=raw,cache=writeback{}",
                chardev_path(&d.image),
                d.id,
                if d.readonly { ",readonly=on" } else { "" }
            ));
            push("-device".into());
            push(format!("virtio-blk-device,drive={}", d.id));
        }
        for (i, s) in self.shares.iter().enumerate() {
            for arg in qemu_ninep_args(i, s) {
                push(arg);
            }
        }
        a
    }

    /// Starts QEMU, optionally inside a network namespace. It gets
    /// `PR_SET_PDEATHSIG`, so it is killed if vmshare dies (the death
    /// signal fires when the spawning *thread* exits: call this from the
    /// thread that waits for the VM). Its stderr goes to `stderr_log`.
    pub fn spawn(
        &self,
        stderr_log: &std::path::Path,
        netns: Option<&OwnedFd>,
    ) -> Result<Child, VmmError> {
        // Appending, as the console log, so that the runner can cut it
        // down while QEMU writes (a guest can make QEMU complain).
        // (A run's directory is new: there is nothing to append to.)
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
            .map_err(|e| VmmError::io(format!("creating {}", stderr_log.display()), e))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // A process group of its own: a Ctrl-C at the terminal (or a
        // signal to vmshare's group) is vmshare's to forward to CMD, and
        // reached QEMU too, which quit on it ("terminating on signal 2")
        // before the guest could run CMD's trap.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let ns = netns.map(AsRawFd::as_raw_fd);
        // SAFETY: the closure runs in the forked child before exec and
        // makes only async-signal-safe system calls (prctl, setns) on
        // integers captured by value.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = ns {
                    if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VmmError::MissingTool {
                tool: self.binary.display().to_string(),
                hint: "install Debian's qemu-system-x86 package".into(),
            },
            _ => VmmError::io(format!("starting {}", self.binary.display()), e),
        })
    }
}

/// QEMU option values separate on commas; a literal comma is doubled.
fn chardev_path(p: &std::path::Path) -> String {
    p.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_wires_ports_and_net() {
        let cfg = QemuConfig {
            binary: DEFAULT_QEMU.into(),
            accel: Accel::Tcg {
                reason: "test".into(),
            },
            kernel: "/boot/k".into(),
            initrd: "/run/initrd".into(),
            cmdline: kernel_cmdline(&Accel::Tcg {
                reason: String::new(),
            }),
            memory_mib: 256,
            cpus: 1,
            console_log: "/run/a,b/c.log".into(),
            ports: vec![("vmshare.stdout".into(), "/run/o.sock".into())],
            net: Some(QemuNet::User),
            disks: vec![QemuDisk {
                id: "vda".into(),
                image: "/img/a,b.erofs".into(),
                readonly: true,
            }],
            shares: vec![Share {
                volume: "v".into(),
                tag: "data".into(),
                host_path: "/srv/a,b".into(),
                driver: vmshare_plan::plan::ShareDriver::NineP,
                access: vmshare_plan::AccessMode::Mapped,
                readonly: false,
            }],
        };
        let args: Vec<String> = cfg
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("microvm,accel=tcg"));
        assert!(joined.contains("file,id=con,path=/run/a,,b/c.log,append=on"));
        assert!(joined.contains("-initrd /run/initrd"));
        assert!(joined.contains("virtserialport,chardev=port0,name=vmshare.stdout,nr=1"));
        assert!(joined.contains("-netdev user,id=net0 -device virtio-net-device,netdev=net0"));
        assert!(joined.contains(
            "-drive file=/img/a,,b.erofs,if=none,id=vda,format=raw,cache=writeback,readonly=on -device virtio-blk-device,drive=vda"
        ));
        assert!(joined.contains(
            "-fsdev local,id=fs0,path=/srv/a,,b,security_model=mapped-xattr -device virtio-9p-device,fsdev=fs0,mount_tag=data"
        ));
        assert!(cfg.cmdline.contains("tsc_early_khz="), "{}", cfg.cmdline);
    }
}
