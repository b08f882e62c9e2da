//! `vmshare plan`: prints the launch plan and the VMM configuration for a
//! set of volumes, without starting anything, so a volume description can
//! be checked against a hypervisor before a run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use vmshare_plan::plan::{plan, PlanConfig, RootDisk, Vmm};
use vmshare_plan::render::{document, render, NetConfig, RenderConfig};
use vmshare_plan::SystemHost;

use crate::volumes::{self, FrontEnds};

/// Arguments of `vmshare plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Hypervisor to plan for: firecracker, cloud-hypervisor or qemu.
    #[arg(long, default_value = "qemu", value_parser = parse_vmm)]
    vmm: Vmm,
    /// -v, --mount, --tmpfs, --oci, --from-env.
    #[command(flatten)]
    front: FrontEnds,
    /// Root-filesystem disk image (.erofs or .ext4), attached before volume disks.
    #[arg(long = "root-disk", value_name = "IMAGE")]
    root_disks: Vec<PathBuf>,
    /// Directory holding named volumes.
    #[arg(long, default_value = "/var/lib/vmshare/volumes")]
    volume_store: PathBuf,
    /// Per-run directory for built images, sockets and config files.
    #[arg(long, default_value = "/run/vmshare/run")]
    runtime_dir: PathBuf,
    /// Guest kernel.
    #[arg(long, default_value = "/usr/lib/vmshare/vmlinuz")]
    kernel: PathBuf,
    /// Guest initramfs.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Guest memory in MiB (at least 128).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(128..))]
    memory: u32,
    /// Guest vCPUs (1 to 32, Firecracker's most).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    cpus: u32,
    /// Host tap device (QEMU uses its user-mode network without one).
    #[arg(long)]
    tap: Option<String>,
    /// Guest MAC address.
    #[arg(long, default_value = "06:00:0a:00:02:0f", value_parser = parse_mac)]
    mac: String,
    /// A vsock device with this guest CID (3 or more; none by default:
    /// vmshare's guest does not use one, and two VMs must not share a CID).
    // 4294967295 is VMADDR_CID_ANY, which no guest can have.
    #[arg(long, value_parser = clap::value_parser!(u32).range(3..4_294_967_295))]
    vsock_cid: Option<u32>,
    /// NFS server address as the guest sees it; with --nfs-port, also print the final guest mounts.
    #[arg(long, requires = "nfs_port")]
    nfs_server: Option<std::net::IpAddr>,
    /// NFS server port (NFS and MOUNT on one port).
    // Port 0 is no port: the guest's mount would fail.
    #[arg(long, requires = "nfs_server", value_parser = clap::value_parser!(u16).range(1..))]
    nfs_port: Option<u16>,
    /// Explain the planner's decisions on stderr (packing, skipped mounts).
    #[arg(long)]
    verbose: bool,
}

fn parse_vmm(s: &str) -> Result<Vmm, String> {
    s.parse()
}

/// Six hex pairs separated by colons, as every VMM takes them, naming one
/// interface: not multicast (the low bit of the first byte set) and not
/// all zeros (neither is a valid address for one interface to Linux's
/// `is_valid_ether_addr`).
fn parse_mac(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    let multicast = parts
        .first()
        .and_then(|p| u8::from_str_radix(p, 16).ok())
        .is_some_and(|b| b & 1 == 1);
    let zero = parts
        .iter()
        .all(|p| u8::from_str_radix(p, 16).is_ok_and(|b| b == 0));
    if ok && zero {
        Err(format!(
            "{s:?} is the all-zero address, which names no interface; give another (as 06:00:0a:00:02:0f)"
        ))
    } else if ok && multicast {
        Err(format!(
            "{s:?} is a multicast address; a guest's MAC has an even first byte (as 06:00:0a:00:02:0f)"
        ))
    } else if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a MAC address (six hex pairs, as 06:00:0a:00:02:0f)"
        ))
    }
}

/// Runs the subcommand.
pub fn main(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cwd = std::env::current_dir()?;
    // The configuration is read by a VMM started who knows where: paths in
    // it must not depend on this directory.
    let abs = |p: &PathBuf| cwd.join(p);
    let volumes::Volumes {
        specs, mut notes, ..
    } = volumes::read(&args.front, &cwd)?;
    let runtime_dir = abs(&args.runtime_dir);
    let mut config = PlanConfig::new(args.vmm, abs(&args.volume_store), &runtime_dir);
    // Only the devices the configuration will have count against the
    // VMM's budget: a network when there is a tap or QEMU's user network
    // (the plan adds one for NFS), a vsock when asked for.
    config.network = args.tap.is_some() || args.vmm == Vmm::Qemu;
    config.vsock = args.vsock_cid.is_some();
    // As `vmshare run --rootfs IMAGE` attaches it: by what the image is, not
    // its name, and never written (the guest's writes go to a tmpfs layer).
    config.root_disks = args
        .root_disks
        .iter()
        .map(|image| {
            let image = abs(image);
            let format = vmshare_plan::image::detect_format(&image)
                .map_err(|e| format!("--root-disk {}: {e}", image.display()))?
                .ok_or_else(|| {
                    format!(
                        "--root-disk {}: neither an ext4 nor an erofs image",
                        image.display()
                    )
                })?;
            Ok(RootDisk {
                image,
                format,
                readonly: true,
            })
        })
        .collect::<Result<_, String>>()?;
    // `vmshare run` creates a missing `-v` source as docker does; the
    // plan is of that run, so it takes them as directories, makes none,
    // and says which.
    let host = volumes::AfterCreating::new(SystemHost, &specs);
    let creates: Vec<String> = volumes::missing_sources(&specs)
        .into_iter()
        .map(|(s, path)| {
            format!(
                "{}: {} does not exist; vmshare run creates it as a directory (as docker does for -v), and it is planned as one",
                s.name,
                path.display()
            )
        })
        .collect();
    let mut p = plan(&specs, &config, &host)?;
    notes.extend(creates.iter().cloned());
    notes.append(&mut p.notes);
    p.notes = notes;
    // Firecracker and Cloud Hypervisor have no user-mode network: without
    // a tap, a plan that needs no network (no NFS) gets none.
    let wants_net = args.tap.is_some() || args.vmm == Vmm::Qemu || !p.nfs_exports.is_empty();
    let net = wants_net.then_some(NetConfig {
        tap: args.tap,
        mac: args.mac,
    });
    let machine = RenderConfig {
        kernel: abs(&args.kernel),
        initrd: args.initrd.as_ref().map(abs),
        memory_mib: args.memory,
        vcpus: args.cpus,
        net,
        vsock_cid: args.vsock_cid,
        runtime_dir,
    };
    let rendered = render(&p, &machine)?;
    let mut doc = document(&p, &rendered);
    if let (Some(ip), Some(port)) = (args.nfs_server, args.nfs_port) {
        doc["guest_mounts"] = serde_json::to_value(p.guest_mounts(ip, port))?;
    }
    if args.verbose {
        for n in &p.notes {
            eprintln!("vmshare plan: {n}");
        }
        eprintln!(
            "vmshare plan: {} of {}'s {} devices used",
            p.devices_used, p.vmm, p.device_budget
        );
    }
    if !args.verbose {
        // Said whether asked or not: the host must have these before
        // anything started from this plan runs.
        for c in &creates {
            eprintln!("vmshare plan: {c}");
        }
    }
    let text = serde_json::to_string_pretty(&doc)?;
    // Not println!, which panics when standard output fails (a full
    // disk, or a reader that stopped early).
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // The reader (`| head`) wants no more: no message, and the status
        // a shell reports for a writer that SIGPIPE ended.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::from(141)),
        Err(e) => Err(format!("writing the plan to standard output: {e}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_mac_is_six_pairs_and_unicast() {
        assert_eq!(
            parse_mac("06:00:0A:00:02:0F"),
            Ok("06:00:0a:00:02:0f".into())
        );
        for bad in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "06:00:0a:00:02",
            "06-00-0a-00-02-0f",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
