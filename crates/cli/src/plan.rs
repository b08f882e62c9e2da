//! `vmshare plan`: prints the launch plan and the VMM configuration for a
//! set of volumes, without starting anything, so a volume description can
//! be checked against a hypervisor before a run.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use vmshare_plan::plan::{plan, PlanConfig, RootDisk, Vmm};
use vmshare_plan::render::{document, render, NetConfig, RenderConfig};
use vmshare_plan::SystemHost;
use vmshare_vmm::assets::{self, Kernel};

use crate::process::ProcessArgs;
use crate::volumes::{self, FrontEnds};

mod initrd;

/// The kernel a configuration names when none is given (and no initramfs
/// is written, whose modules must be the kernel's).
const DEFAULT_KERNEL: &str = "/usr/lib/vmshare/vmlinuz";

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
    /// Directory holding named volumes [default: `volumes` in the state
    /// directory, as vmshare run: $VMSHARE_STATE_DIR, /var/lib/vmshare as
    /// root, else $XDG_STATE_HOME/vmshare or ~/.local/state/vmshare].
    #[arg(long)]
    volume_store: Option<PathBuf>,
    /// Per-run directory for built images, sockets and config files.
    #[arg(long, default_value = "/run/vmshare/run")]
    runtime_dir: PathBuf,
    /// Guest kernel [default: /usr/lib/vmshare/vmlinuz; with
    /// --write-initrd, the newest /boot/vmlinuz-*, as vmshare run, since
    /// the initramfs holds its modules].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs, named in the configuration as it is.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Write to PATH an initramfs for this plan's guest, and name it in the
    /// configuration: vmshare's static init, busybox and the kernel's
    /// modules, with the guest's mount table, network and CMD (run on the
    /// serial console). Needs --nfs-server and --nfs-port when volumes
    /// are served over NFS, and --guest-ip with --tap.
    #[arg(long, value_name = "PATH", conflicts_with = "initrd")]
    write_initrd: Option<PathBuf>,
    /// With --write-initrd and --tap: the guest's address on the tap's
    /// network, A.B.C.D/LEN.
    #[arg(long, value_name = "A.B.C.D/LEN", requires = "write_initrd", value_parser = parse_cidr)]
    guest_ip: Option<(Ipv4Addr, u8)>,
    /// With --guest-ip: the guest's default gateway, when the NFS server
    /// is not on the tap's network.
    #[arg(long, value_name = "A.B.C.D", requires = "guest_ip")]
    guest_gateway: Option<Ipv4Addr>,
    /// -e, --env-file, -w, -u and CMD: the guest's command, with
    /// --write-initrd.
    #[command(flatten)]
    process: ProcessArgs,
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

/// An IPv4 address with its prefix length, `A.B.C.D/LEN` (the guest init
/// configures IPv4 only).
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("{s:?} is not an IPv4 address with a prefix length (as 172.16.0.2/24)");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(1..=32).contains(&len) {
        return Err(format!("{s:?}: the prefix length is 1 to 32"));
    }
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(format!("{s:?}: not an address one interface can have"));
    }
    Ok((addr, len))
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
        specs,
        mut notes,
        process,
        hostname,
    } = volumes::read(&args.front, &cwd)?;
    let runtime_dir = abs(&args.runtime_dir);
    // Where `vmshare run` keeps this user's named volumes: a user other
    // than root was planned /var/lib/vmshare/volumes/NAME, which its runs
    // never use (nor could it write there). Named, not created.
    let volume_store = match &args.volume_store {
        Some(v) => abs(v),
        None => abs(&vmshare_vmm::StateDir::default_root()
            .unwrap_or_else(|| PathBuf::from("/var/lib/vmshare")))
        .join("volumes"),
    };
    let mut config = PlanConfig::new(args.vmm, volume_store, &runtime_dir);
    // The initramfs holds the kernel's modules: the configuration must
    // name that kernel, found as `vmshare run` finds it.
    let initrd_kernel = match &args.write_initrd {
        Some(_) => {
            config.extra_cmdline.extend(initrd::CMDLINE.map(String::from));
            Some(Kernel::find(args.kernel.as_ref().map(abs).as_deref())?)
        }
        None if !args.process.is_empty() => {
            return Err("CMD, -e, --env-file, -w and -u are the guest's command, which goes into the initramfs: give --write-initrd PATH".into())
        }
        None => None,
    };
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
    // `vmshare run` creates a missing `-v` source as docker does (and a
    // writable FILESYSTEM_* one as docker-vm-runner does); the
    // plan is of that run, so it takes them as directories, makes none,
    // and says which.
    let host = volumes::AfterCreating::new(SystemHost, &specs);
    let creates: Vec<String> = volumes::missing_sources(&specs)
        .into_iter()
        .map(|(s, path)| {
            format!(
                "{}: {} does not exist; vmshare run creates it as a directory ({}), and it is planned as one",
                s.name,
                path.display(),
                volumes::created_like(s).unwrap_or_default()
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
        tap: args.tap.clone(),
        mac: args.mac.clone(),
    });
    let kernel = match &initrd_kernel {
        Some(k) => k.image.clone(),
        None => abs(args
            .kernel
            .as_ref()
            .unwrap_or(&PathBuf::from(DEFAULT_KERNEL))),
    };
    // Said on stderr whether asked or not, as the sources to create are.
    let mut warnings = Vec::new();
    if args.vmm == Vmm::Firecracker && kernel.exists() && !assets::is_elf_kernel(&kernel) {
        warnings.push(format!(
            "{} is not an ELF vmlinux: Firecracker boots an uncompressed ELF kernel (bzImage \
             support is recent); give --kernel a vmlinux (the kernel source's \
             scripts/extract-vmlinux makes one from a bzImage)",
            kernel.display()
        ));
    }
    p.notes.extend(warnings.iter().cloned());
    let machine = RenderConfig {
        kernel,
        initrd: args.write_initrd.as_ref().or(args.initrd.as_ref()).map(abs),
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
    // Last, once everything else has been checked: nothing is written
    // for a plan that is refused.
    if let (Some(out), Some(kernel), Some(initrd)) =
        (&args.write_initrd, &initrd_kernel, &machine.initrd)
    {
        let spec = initrd::guest_spec(&args, &p, &machine, process, hostname)?;
        let spec = initrd::write(initrd, kernel, &spec)
            .map_err(|e| format!("--write-initrd {}: {e}", out.display()))?;
        doc["guest_spec"] = serde_json::to_value(spec)?;
    }
    if args.verbose {
        for n in &p.notes {
            eprintln!("vmshare plan: {n}");
        }
        eprintln!(
            "vmshare plan: {} of {}'s {} devices used",
            p.devices_used, p.vmm, p.device_budget
        );
    } else {
        // Said whether asked or not: the host must have these before
        // anything started from this plan runs.
        for c in creates.iter().chain(&warnings) {
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

    #[test]
    fn a_guest_ip_is_an_ipv4_address_with_a_prefix() {
        assert_eq!(
            parse_cidr("172.16.0.2/24"),
            Ok((Ipv4Addr::new(172, 16, 0, 2), 24))
        );
        for bad in [
            "172.16.0.2",
            "172.16.0.2/0",
            "172.16.0.2/33",
            "fd00::2/64",
            "0.0.0.0/8",
            "224.0.0.1/4",
            "255.255.255.255/32",
            "172.16.0.2/x",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
