//! `vmshare run --vmm firecracker|cloud-hypervisor`: refused, precisely.
//!
//! `vmshare run` launches QEMU only. Firecracker and Cloud Hypervisor
//! need KVM (they have no emulator to fall back on), and launching them
//! is not written yet, so the refusal says what this host lacks for them,
//! in the order it would matter (the VMM's binary on `PATH`, then a usable
//! `/dev/kvm`), and gives the `vmshare plan` command that prints their
//! configuration for the same volumes.

use std::path::{Path, PathBuf};

use vmshare_plan::plan::Vmm;
use vmshare_vmm::kvm::{self, Accel};
use vmshare_vmm::StateDir;

/// The program each VMM is started as.
fn binary(vmm: Vmm) -> &'static str {
    match vmm {
        Vmm::Qemu => vmshare_vmm::qemu::DEFAULT_QEMU,
        Vmm::Firecracker => "firecracker",
        Vmm::CloudHypervisor => "cloud-hypervisor",
    }
}

/// The message refusing `--vmm vmm` (not QEMU). `plan_args` are the
/// volume options to repeat in the `vmshare plan` hint.
pub(crate) fn refusal(vmm: Vmm, state: &StateDir, plan_args: &[String]) -> String {
    let program = binary(vmm);
    let missing = match find_on_path(program) {
        None => format!("`{program}` is not on PATH"),
        Some(found) => match kvm_problem(vmm, state) {
            Err(problem) => format!("found {}, but {problem}", found.display()),
            Ok(kvm) => format!(
                "found {} and {kvm}, but vmshare run launches only QEMU so far",
                found.display()
            ),
        },
    };
    // Neither has a user-mode network: volumes served over NFS need a tap
    // device (TAP, the user's to make), or the hinted command fails. The
    // guest needs vmshare's init and its mount table, with the server it
    // mounts from, in an initramfs: without one it mounted nothing.
    let mut hint = format!(
        "vmshare plan --vmm {vmm} --tap TAP --guest-ip GUEST_IP/LEN \
         --nfs-server HOST_IP --nfs-port PORT --write-initrd initrd.cpio"
    );
    for a in plan_args {
        hint.push(' ');
        hint.push_str(&shell_quote(a));
    }
    format!(
        "--vmm {vmm}: {missing}; `{hint}` prints {vmm}'s configuration and writes the initramfs \
         its guest boots with (serve the plan's nfs_exports with `vmshare serve` at HOST_IP:PORT); \
         vmshare run boots QEMU (with KVM or without)"
    )
}

/// Why KVM cannot run a guest here (`Err`), or how far it is known to
/// work (`Ok`): the ioctl probe, then what a KVM test guest found earlier
/// (`vmshare run` boots one once per host boot, since some hosts pass the
/// ioctls and still fail to run a guest). Boots nothing itself.
fn kvm_problem(vmm: Vmm, state: &StateDir) -> Result<&'static str, String> {
    kvm::probe().map_err(|reason| format!("KVM is not usable ({reason})"))?;
    match vmshare_vmm::recorded_kvm_verdict(state) {
        Some(Accel::Tcg { reason }) => Err(format!(
            "KVM does not run guests on this host ({reason}); QEMU falls back to TCG, {vmm} cannot"
        )),
        Some(Accel::Kvm) => Ok("KVM runs guests here"),
        None => Ok("/dev/kvm creates a VM and a vCPU"),
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Quotes an argument for a shell command line only when it needs it.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_arguments_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/srv/data:/data:ro"), "/srv/data:/data:ro");
        assert_eq!(shell_quote("/my dir:/d"), "'/my dir:/d'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
