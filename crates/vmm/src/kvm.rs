//! Whether hardware virtualisation really works here. `/dev/kvm` existing
//! proves little: without nested virtualisation it opens, and only creating
//! a VM or a vCPU fails. The probe goes that far.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const KVMIO: libc::c_ulong = 0xAE;
const KVM_GET_API_VERSION: libc::c_ulong = KVMIO << 8;
const KVM_CREATE_VM: libc::c_ulong = (KVMIO << 8) | 0x01;
const KVM_CREATE_VCPU: libc::c_ulong = (KVMIO << 8) | 0x41;
/// The only KVM API version there has ever been.
const KVM_API_VERSION: libc::c_int = 12;

/// The accelerator QEMU is told to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's emulator, with why KVM was not usable.
    Tcg {
        /// Why not KVM.
        reason: String,
    },
}

impl Accel {
    /// Probes KVM once; TCG with the reason when it is not usable.
    pub fn detect() -> Accel {
        match probe() {
            Ok(()) => Accel::Kvm,
            Err(reason) => Accel::Tcg { reason },
        }
    }

    /// QEMU's name for it.
    pub fn qemu_name(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg { .. } => "tcg",
        }
    }
}

/// Opens `/dev/kvm`, checks the API version, creates a VM and a vCPU.
/// `Err` says which step failed and why.
pub fn probe() -> Result<(), String> {
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and touches no memory.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != KVM_API_VERSION {
        return Err(format!(
            "KVM API version {version}, expected {KVM_API_VERSION}"
        ));
    }
    // SAFETY: KVM_CREATE_VM takes the machine type (0 = default) by value
    // and returns a new descriptor or -1.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return Err(format!(
            "KVM_CREATE_VM: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a fresh descriptor that nothing else owns.
    let vm = unsafe { OwnedFd::from_raw_fd(vm) };
    // SAFETY: KVM_CREATE_VCPU takes the vCPU id by value and returns a new
    // descriptor or -1.
    let vcpu = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0) };
    if vcpu < 0 {
        return Err(format!(
            "KVM_CREATE_VCPU: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vcpu` is a fresh descriptor that nothing else owns; wrapping
    // it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(vcpu) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_and_detect_agrees() {
        // Whatever this machine has, probe and detect must agree, and a
        // failure must say something.
        match (probe(), Accel::detect()) {
            (Ok(()), Accel::Kvm) => {}
            (Err(reason), Accel::Tcg { reason: r2 }) => {
                assert!(!reason.is_empty());
                assert_eq!(reason, r2);
            }
            other => panic!("probe and detect disagree: {other:?}"),
        }
    }
}
