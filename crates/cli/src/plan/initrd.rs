//! `vmshare plan --write-initrd`: the initramfs that makes a guest started
//! from the printed configuration mount its volumes. It is `vmshare
//! run`'s, built by the same code (`vmshare_vmm::assets`): the static
//! vmshare binary as `/init`, busybox, the kernel's modules, and the guest
//! spec; only what `run` learns at run time is given here instead (the NFS
//! server the guest reaches, the guest's address), and CMD runs on the
//! serial console, since no VMM that `vmshare plan` renders for has
//! vmshare's virtio-serial ports.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use vmshare_plan::guest::{GuestNet, GuestSpec};
use vmshare_plan::oci::OciProcess;
use vmshare_plan::plan::{DiskRole, Plan, Vmm};
use vmshare_plan::render::RenderConfig;
use vmshare_vmm::assets::{self, Kernel};
use vmshare_vmm::{GuestNetwork, VmmError};

use super::Args;
use crate::process::guest_process;
use crate::run::check_hostname;
use crate::run::rootfs::Rootfs;

/// What the kernel command line carries besides the plan's own: run
/// vmshare's `/init` from the initramfs whatever else the line says, and
/// keep the kernel's messages off the console CMD writes to, as `vmshare
/// run` does (errors still show).
pub(super) const CMDLINE: [&str; 2] = ["rdinit=/init", "quiet"];

/// The guest spec of `plan` for the machine rendered: its mounts with the
/// NFS server `--nfs-server`/`--nfs-port`, the network the configuration
/// gives it, CMD, and the first `--root-disk` as its root filesystem (as
/// `vmshare run --rootfs IMAGE`). Every refusal names the option to give.
pub(super) fn guest_spec(
    args: &Args,
    plan: &Plan,
    machine: &RenderConfig,
    oci: Option<OciProcess>,
    oci_hostname: Option<String>,
) -> Result<GuestSpec, String> {
    let process = guest_process(
        &args.process,
        oci,
        args.front.oci.as_deref(),
        "vmshare plan --write-initrd PATH [OPTIONS] -- CMD [ARGS...]",
    )?;
    let hostname = oci_hostname.unwrap_or_else(|| "vmshare".into());
    check_hostname(&hostname)?;
    let network = guest_network(args, machine)?;
    let server = nfs_server(args, plan)?;
    let (ip, port) = server.unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let rootfs = plan
        .block_devices
        .iter()
        .find(|d| d.role == DiskRole::Root)
        .map(|d| {
            Rootfs::Image {
                path: d.image.clone(),
                format: d.format,
            }
            .guest(plan, ip, port)
        });
    Ok(GuestSpec {
        hostname,
        network,
        mounts: plan.guest_mounts(ip, port),
        process,
        rootfs,
        power_off: plan.vmm == Vmm::CloudHypervisor,
        ..GuestSpec::default()
    })
}

/// Writes the initramfs of `spec` to `out` for `kernel`, with this
/// program as `/init` (as `vmshare run` puts it there) and busybox;
/// returns the spec as written (its modules filled in).
pub(super) fn write(out: &Path, kernel: &Kernel, spec: &GuestSpec) -> Result<GuestSpec, VmmError> {
    let init = std::fs::read_link("/proc/self/exe").map_err(|e| VmmError::Io {
        what: "finding this program (/proc/self/exe), the guest's init".into(),
        source: e,
    })?;
    assets::write_standalone_initramfs(out, kernel, &init, Path::new(assets::DEFAULT_BUSYBOX), spec)
}

/// How the guest configures `eth0`: QEMU's user network as `vmshare run`
/// has it, a tap network at `--guest-ip`, or none when the configuration
/// has no network device.
fn guest_network(args: &Args, machine: &RenderConfig) -> Result<Option<GuestNet>, String> {
    let Some(net) = &machine.net else {
        return match args.guest_ip {
            Some(_) => Err(format!(
                "--guest-ip: the {} configuration has no network (give --tap, or drop --guest-ip)",
                args.vmm
            )),
            None => Ok(None),
        };
    };
    match (&net.tap, args.guest_ip) {
        (None, None) => Ok(Some(GuestNetwork::User.guest_net())),
        (None, Some(_)) => Err(format!(
            "--guest-ip is the guest's address on a tap (--tap); QEMU's user network gives it {}",
            vmshare_vmm::USER_NET_GUEST
        )),
        (Some(tap), None) => Err(format!(
            "--write-initrd with --tap {tap}: give the guest's address on that network with --guest-ip A.B.C.D/LEN"
        )),
        (Some(_), Some((addr, len))) => Ok(Some(GuestNet {
            interface: "eth0".into(),
            address: format!("{addr}/{len}"),
            gateway: args.guest_gateway.map(|g| g.to_string()),
            dns: Vec::new(),
        })),
    }
}

/// The NFS server the guest mounts from, when the plan has NFS volumes:
/// `--nfs-server` and `--nfs-port` are then required, IPv4 (the guest's
/// only network), and with `--guest-ip` on its subnet unless
/// `--guest-gateway` routes to it.
fn nfs_server(args: &Args, plan: &Plan) -> Result<Option<(IpAddr, u16)>, String> {
    if plan.nfs_exports.is_empty() {
        return Ok(None);
    }
    let volumes: Vec<&str> = plan.nfs_exports.iter().map(|e| e.volume.as_str()).collect();
    let (Some(server), Some(port)) = (args.nfs_server, args.nfs_port) else {
        return Err(format!(
            "--write-initrd: the guest mounts {} over NFS and must be told where the server is: \
             give --nfs-server ADDR --nfs-port PORT (where `vmshare serve` listens, as the guest reaches it)",
            volumes.join(", ")
        ));
    };
    let IpAddr::V4(v4) = server else {
        return Err(format!(
            "--nfs-server {server}: the guest's network is IPv4 only; give the server's IPv4 address"
        ));
    };
    if let (Some((addr, len)), None) = (args.guest_ip, args.guest_gateway) {
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        if u32::from(addr) & mask != u32::from(v4) & mask {
            return Err(format!(
                "--nfs-server {v4} is not on the guest's network {addr}/{len}: give an address on it, \
                 or the guest's route to it with --guest-gateway"
            ));
        }
        if addr == v4 {
            return Err(format!(
                "--nfs-server {v4} is the guest's own address (--guest-ip): give the host's end of the tap"
            ));
        }
    }
    Ok(Some((server, port)))
}
