//! Renderers: one [`Plan`] to each VMM's own configuration.
//!
//! Renderers only translate; every decision (device order, tags, packing)
//! is already in the plan, so the three outputs always describe the same
//! machine. What is not in the plan is the machine itself (kernel, memory,
//! network device): [`RenderConfig`].

mod cloud_hypervisor;
mod firecracker;
mod qemu;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::plan::{Plan, Share, ShareDriver, Vmm};
use crate::PlanError;

pub use qemu::ninep_args as qemu_ninep_args;

/// The machine around the volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderConfig {
    /// Guest kernel image.
    pub kernel: PathBuf,
    /// Initramfs (vmshare's init and the guest spec).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Network device; `None` for no network.
    #[serde(default)]
    pub net: Option<NetConfig>,
    /// vsock guest CID; `None` for no vsock device.
    #[serde(default)]
    pub vsock_cid: Option<u32>,
    /// Host directory for the run's sockets and config file.
    pub runtime_dir: PathBuf,
}

/// The guest's network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Host tap device; `None` asks for QEMU's user-mode network (QEMU only).
    #[serde(default)]
    pub tap: Option<String>,
    /// Guest MAC address.
    pub mac: String,
}

/// A VMM invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendered {
    /// The program to run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// A configuration file the arguments refer to (Firecracker's
    /// `--config-file`), with the path to write it to.
    pub config_file: Option<ConfigFile>,
    /// Helper processes to start first (virtiofsd), as argv.
    pub helpers: Vec<Vec<String>>,
}

/// A file the runner writes before starting the VMM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigFile {
    /// Where to write it.
    pub path: PathBuf,
    /// Its JSON content.
    pub content: serde_json::Value,
}

/// Renders `plan` for its VMM.
pub fn render(plan: &Plan, machine: &RenderConfig) -> Result<Rendered, PlanError> {
    if let Some(tap) = machine.net.as_ref().and_then(|n| n.tap.as_deref()) {
        check_tap_name(tap)?;
    }
    check_socket_paths(plan, machine)?;
    match plan.vmm {
        Vmm::Qemu => Ok(qemu::render(plan, machine)),
        Vmm::Firecracker => firecracker::render(plan, machine),
        Vmm::CloudHypervisor => cloud_hypervisor::render(plan, machine),
    }
}

/// Where virtiofsd listens for `share`.
fn virtiofsd_socket(machine: &RenderConfig, share: &Share) -> PathBuf {
    machine
        .runtime_dir
        .join(format!("virtiofsd-{}.sock", share.tag))
}

/// The virtiofsd command serving `share`.
fn virtiofsd(machine: &RenderConfig, share: &Share) -> Vec<String> {
    let mut argv = vec![
        "virtiofsd".to_string(),
        format!(
            "--socket-path={}",
            virtiofsd_socket(machine, share).display()
        ),
        format!("--shared-dir={}", share.host_path.display()),
    ];
    if share.readonly {
        argv.push("--readonly".into());
    }
    argv
}

/// Linux's limit on a Unix socket's path, in bytes, without the NUL
/// (`sizeof(sun_path)` - 1).
pub const MAX_SOCKET_PATH: usize = 107;

/// The sockets the configuration names in the runtime directory (each
/// virtiofsd's, and Firecracker's or Cloud Hypervisor's vsock socket) must
/// fit in `sun_path`: under a long `--runtime-dir` they were rendered as
/// they were, and virtiofsd or the VMM could not bind them.
fn check_socket_paths(plan: &Plan, machine: &RenderConfig) -> Result<(), PlanError> {
    let mut sockets: Vec<(String, PathBuf)> = plan
        .shares
        .iter()
        .filter(|s| s.driver == ShareDriver::Virtiofs)
        .map(|s| {
            (
                format!("{}'s virtiofsd", s.volume),
                virtiofsd_socket(machine, s),
            )
        })
        .collect();
    // QEMU's vhost-vsock device has no host socket.
    if machine.vsock_cid.is_some() && plan.vmm != Vmm::Qemu {
        sockets.push(("the vsock device".into(), vsock_socket(machine)));
    }
    for (what, path) in sockets {
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(PlanError::Machine {
                setting: format!("runtime directory {}", machine.runtime_dir.display()),
                reason: format!(
                    "the socket for {what} ({}) is {len} bytes, and a Unix socket's path is at \
                     most {MAX_SOCKET_PATH}; give a shorter --runtime-dir",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

/// Where the vsock device's host socket lives.
fn vsock_socket(machine: &RenderConfig) -> PathBuf {
    machine.runtime_dir.join("vsock.sock")
}

/// Linux's limit on an interface name, in bytes, without the NUL
/// (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks a tap device name as Linux checks an interface name
/// (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`, and no `/`, `:`,
/// white space (the kernel's `isspace`, which counts byte 0xa0) or NUL.
/// A name Linux could not have was passed on as it was: QEMU and the
/// other VMMs then failed to open the tap, or Firecracker's
/// `host_dev_name` held a name no device has.
pub fn check_tap_name(name: &str) -> Result<(), PlanError> {
    let bad = |reason: String| PlanError::Machine {
        setting: format!("tap device '{}'", name.escape_debug()),
        reason,
    };
    let fix = "give the name of an existing tap device (ip -brief link lists them)";
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(bad(format!(
            "{} bytes long, and a Linux interface name is 1 to {MAX_IFNAME_LEN} bytes; {fix}",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(bad(format!(
            "is not a name Linux allows for an interface; {fix}"
        )));
    }
    let space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0);
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || space(b))
    {
        return Err(bad(format!(
            "a Linux interface name cannot hold '/', ':', white space or NUL; {fix}"
        )));
    }
    Ok(())
}

fn needs_tap(plan: &Plan, net: &NetConfig) -> Result<String, PlanError> {
    net.tap.clone().ok_or_else(|| PlanError::Unsupported {
        volume: "network".into(),
        vmm: plan.vmm.to_string(),
        what: "use QEMU's user-mode network".into(),
        hint:
            "give it a tap device (vmshare plan --tap NAME; vmshare run makes one with --net tap)"
                .into(),
    })
}

/// The document `vmshare plan` prints: the plan and its rendering, under
/// stable keys.
pub fn document(plan: &Plan, rendered: &Rendered) -> serde_json::Value {
    serde_json::json!({ "plan": plan, "render": rendered })
}
