//! `vmshare plan`: prints the launch plan and the VMM configuration for a
//! set of volumes, without starting anything, so a volume description can
//! be checked against a hypervisor before a run.

use std::path::PathBuf;
use std::process::ExitCode;

use vmshare_plan::plan::{plan, PlanConfig, RootDisk, Vmm};
use vmshare_plan::render::{document, render, NetConfig, RenderConfig};
use vmshare_plan::{ImageFormat, SystemHost};

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
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Host tap device (QEMU uses its user-mode network without one).
    #[arg(long)]
    tap: Option<String>,
    /// Guest MAC address.
    #[arg(long, default_value = "06:00:0a:00:02:0f")]
    mac: String,
    /// Guest vsock CID.
    #[arg(long, default_value_t = 3)]
    vsock_cid: u32,
    /// NFS server address as the guest sees it; with --nfs-port, also print the final guest mounts.
    #[arg(long, requires = "nfs_port")]
    nfs_server: Option<std::net::IpAddr>,
    /// NFS server port (NFS and MOUNT on one port).
    #[arg(long, requires = "nfs_server")]
    nfs_port: Option<u16>,
    /// Explain the planner's decisions on stderr (packing, skipped mounts).
    #[arg(long)]
    verbose: bool,
}

fn parse_vmm(s: &str) -> Result<Vmm, String> {
    s.parse()
}

/// Runs the subcommand.
pub fn main(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cwd = std::env::current_dir()?;
    let volumes::Volumes {
        specs, mut notes, ..
    } = volumes::read(&args.front, &cwd)?;
    let mut config = PlanConfig::new(args.vmm, &args.volume_store, &args.runtime_dir);
    config.root_disks = args
        .root_disks
        .iter()
        .map(|image| {
            let erofs = image.extension().is_some_and(|e| e == "erofs");
            RootDisk {
                image: image.clone(),
                format: if erofs {
                    ImageFormat::Erofs
                } else {
                    ImageFormat::Ext4
                },
                readonly: erofs,
            }
        })
        .collect();
    let mut p = plan(&specs, &config, &SystemHost)?;
    notes.append(&mut p.notes);
    p.notes = notes;
    let machine = RenderConfig {
        kernel: args.kernel,
        initrd: args.initrd,
        memory_mib: args.memory,
        vcpus: args.cpus,
        net: Some(NetConfig {
            tap: args.tap,
            mac: args.mac,
        }),
        vsock_cid: Some(args.vsock_cid),
        runtime_dir: args.runtime_dir,
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
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
