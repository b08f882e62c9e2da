//! The kernel-facing chores of PID 1: pseudo filesystems, modules, host
//! name, kernel log, power-off.

use std::ffi::CString;
use std::io::Write;

use rustix::mount::MountFlags;

use crate::InitError;

/// Mounts what every program expects to find. `/dev` is devtmpfs so that
/// device nodes (virtio ports, disks) appear without udev.
pub(crate) fn mount_kernel_filesystems() -> Result<(), InitError> {
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let table: [(&str, &str, MountFlags, &str); 6] = [
        ("/proc", "proc", nosuid_nodev_noexec, ""),
        ("/sys", "sysfs", nosuid_nodev_noexec, ""),
        ("/dev", "devtmpfs", MountFlags::NOSUID, "mode=0755"),
        (
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "mode=0620,ptmxmode=0666",
        ),
        (
            "/dev/shm",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=1777",
        ),
        (
            "/run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=0755",
        ),
    ];
    for (target, fstype, flags, data) in table {
        std::fs::create_dir_all(target)
            .map_err(|e| InitError::sys(format!("creating {target}"), e))?;
        let data = CString::new(data).map_err(|e| InitError::sys("mount data", e.into()))?;
        match rustix::mount::mount(fstype, target, fstype, flags, data.as_c_str()) {
            // devtmpfs may already be mounted by the kernel (DEVTMPFS_MOUNT).
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => {
                return Err(InitError::sys(
                    format!("mounting {fstype} on {target}"),
                    e.into(),
                ))
            }
        }
    }
    // Programs look for these; they are cheap to provide.
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, link);
    }
    Ok(())
}

/// Loads each module file in the order given (the host put dependencies
/// first), with the parameters the kernel command line gives it, as
/// modprobe passes them: Firecracker describes its devices to a kernel
/// without ACPI as `virtio_mmio.device=...`, which a `virtio_mmio` loaded
/// as a module never saw. A module already present (built in, or loaded
/// twice) is fine.
pub(crate) fn load_modules(modules: &[String]) -> Result<(), InitError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for path in modules {
        let file = std::fs::File::open(path)
            .map_err(|e| InitError::sys(format!("opening module {path}"), e))?;
        let params = CString::new(module_params(&cmdline, path)).unwrap_or_default();
        match rustix::system::finit_module(&file, &params, 0) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(InitError::sys(format!("loading module {path}"), e.into())),
        }
    }
    Ok(())
}

/// The parameters `cmdline` gives the module in file `path`: its
/// `NAME.PARAM=VALUE` words (`-` and `_` alike in NAME, as the kernel
/// takes them), as `PARAM=VALUE` separated by spaces.
fn module_params(cmdline: &str, path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let name = file.split('.').next().unwrap_or(file).replace('-', "_");
    cmdline
        .split_whitespace()
        .filter_map(|word| word.split_once('.'))
        .filter(|(module, _)| module.replace('-', "_") == name)
        .map(|(_, param)| param)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn set_hostname(name: &str) -> Result<(), InitError> {
    rustix::system::sethostname(name.as_bytes())
        .map_err(|e| InitError::sys(format!("setting host name {name:?}"), e.into()))?;
    let _ = std::fs::write("/etc/hostname", format!("{name}\n"));
    Ok(())
}

/// Writes a line to the kernel log, which ends up in the host's console
/// log: the last resort when the control port is not there (yet).
pub(crate) fn kmsg(line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(line.trim_end().as_bytes());
    }
}

/// Stops the VM. The host starts QEMU with `-no-reboot` and the kernel
/// with `reboot=t`, so a restart request ends QEMU at once, on every
/// machine type, without depending on ACPI power-off support; so it ends
/// Firecracker. `power_off_first` (the spec's `power_off`) asks for a
/// power-off first, for a VMM that takes a restart request as one (Cloud
/// Hypervisor).
pub(crate) fn power_off(power_off_first: bool) -> ! {
    use rustix::system::RebootCommand;
    rustix::fs::sync();
    let order = if power_off_first {
        [RebootCommand::PowerOff, RebootCommand::Restart]
    } else {
        [RebootCommand::Restart, RebootCommand::PowerOff]
    };
    loop {
        for command in order {
            let _ = rustix::system::reboot(command);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Writes a line on the kernel's console whatever the log level: what a
/// user watching a serial console must see (CMD's exit status).
pub(crate) fn console_line(line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = f.write_all(format!("{}\n", line.trim_end()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_gets_its_parameters_from_the_command_line() {
        let cmdline = "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 \
                       virtio-mmio.device=4K@0xd0001000:6 virtio_mmio_x.y=1 nfs.nfs4_unique_id=a\n";
        let path = "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio_mmio.ko";
        assert_eq!(
            module_params(cmdline, path),
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6"
        );
        assert_eq!(module_params(cmdline, "/lib/modules/x/nfsv3.ko"), "");
        assert_eq!(
            module_params(cmdline, "/lib/modules/x/nfs.ko"),
            "nfs4_unique_id=a"
        );
    }
}
