//! `vmshare run`: `docker run -v` for a microVM. Reads volumes from the
//! same front ends as `vmshare plan` (docker options, an OCI config.json,
//! `FILESYSTEM_*`), plans them, builds copy-volume images, serves the
//! planned NFS exports from an in-process server bound only where this VM
//! reaches it, boots the VM with [`vmshare_vmm::GuestRun`] and the plan's
//! disks, writes copy volumes back, and exits with the command's status.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use vmshare_plan::plan::{plan, Plan, PlanConfig, ShareDriver, Vmm};
use vmshare_plan::sync::{self, Snapshot};
use vmshare_plan::{image, AccessMode, SystemHost};
use vmshare_server::{
    ClientMatch, ClientRule, ExportConfig, ExportOptions, Server, ServerConfig, Squash,
};
use vmshare_vmm::netns::{TapNetwork, TAP_GUEST_ADDR, TAP_HOST_ADDR};
use vmshare_vmm::{GuestNetwork, GuestRun, Sink, StateDir, StdinSource};

use crate::process::{guest_process, ProcessArgs};
use crate::volumes::{self, FrontEnds};

mod other_vmm;
pub(crate) mod rootfs;
mod terminal;

use rootfs::Rootfs;

/// Arguments of `vmshare run`.
#[derive(Debug, clap::Args)]
// `-h` is docker's --hostname: as help it printed the usage and exited 0,
// and a script ported from docker believed its command had run.
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// -v, --mount, --tmpfs, --oci, --from-env.
    #[command(flatten)]
    front: FrontEnds,
    /// -e, --env-file, -w, -u and CMD.
    #[command(flatten)]
    process: ProcessArgs,
    /// Keep stdin open: the command reads this process's stdin.
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Run the command on a pseudo-terminal in the guest (its output,
    /// stderr included, comes on stdout). With -i the host's terminal is in
    /// raw mode during the run and stdin must be a terminal, as in docker.
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// Name of the VM (its host name unless --hostname is given).
    #[arg(long)]
    name: Option<String>,
    /// The guest's host name (default: --name, else `vmshare`).
    #[arg(short = 'h', long = "hostname", value_name = "NAME")]
    hostname: Option<String>,
    /// Guest memory: bytes or with a unit b, k, m, g (default 512m).
    #[arg(short = 'm', long, value_name = "SIZE")]
    memory: Option<String>,
    /// vCPUs (fractions round up).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Guest kernel (default: the newest /boot/vmlinuz-*).
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Run the command in this root filesystem: a directory (served over
    /// NFS) or an ext4/erofs image (the first disk). Never changed: it is
    /// mounted read-only under a tmpfs overlay, so writes outside volumes
    /// are lost at exit, as in docker. Default: vmshare's busybox initramfs.
    #[arg(long, value_name = "DIR|IMAGE")]
    rootfs: Option<PathBuf>,
    /// Hypervisor: qemu. firecracker and cloud-hypervisor are refused with
    /// what this host lacks for them; `vmshare plan --vmm X` prints their
    /// configuration.
    #[arg(long, default_value = "qemu", value_parser = ["qemu", "firecracker", "cloud-hypervisor"])]
    vmm: String,
    /// Guest network: user (QEMU user mode, no root) or tap (a network
    /// namespace with a TAP device; root).
    #[arg(long, default_value = "user", value_parser = ["user", "tap"])]
    net: String,
    /// Who owns what the guest's root writes on a volume when -u is not
    /// given: `dir` (the host directory's owner) or `root`.
    #[arg(long, default_value = "dir", value_parser = ["dir", "root"])]
    volume_owner: String,
    /// State directory (cache, named volumes, run directories).
    #[arg(long, env = "VMSHARE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print a timeline of the run on stderr.
    #[arg(long)]
    verbose: bool,
}

/// The signal that interrupted vmshare (0: none), set by the handler.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
}

/// Runs the subcommand.
pub fn main(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let verbose = args.verbose;
    let say = move |text: &str| {
        if verbose {
            eprintln!("[{:>8.3}s] {text}", t0.elapsed().as_secs_f64());
        }
    };
    let state = StateDir::resolve(args.state_dir.as_deref())?;
    let vmm: Vmm = args.vmm.parse()?;
    if vmm != Vmm::Qemu {
        return Err(other_vmm::refusal(vmm, &state, &plan_args(&args)).into());
    }
    terminal::check(args.interactive, args.tty)?;
    let rootfs = match &args.rootfs {
        Some(r) => Some(Rootfs::resolve(r, &std::env::current_dir()?)?),
        None => None,
    };
    for dir in state.clean_stale_runs() {
        say(&format!("cleaned up after a killed run: {dir}"));
    }
    let cwd = std::env::current_dir()?;
    let front = volumes::read(&args.front, &cwd)?;
    let specs = front.specs;
    for n in &front.notes {
        say(n);
    }
    let process = guest_process(
        &args.process,
        front.process,
        args.front.oci.as_deref(),
        "vmshare run [OPTIONS] -- CMD [ARGS...]",
    )?;
    // As docker with an OCI bundle: the command line's name over the
    // spec's.
    let hostname = args
        .hostname
        .clone()
        .or_else(|| args.name.clone())
        .or(front.hostname)
        .unwrap_or_else(|| "vmshare".into());
    check_hostname(&hostname)?;
    let memory_mib = parse_memory(args.memory.as_deref())?;
    let cpus = parse_cpus(args.cpus)?;
    if let Some(k) = &args.kernel {
        if !k.is_file() {
            return Err(format!("--kernel {}: no such file", k.display()).into());
        }
    }
    // Removed again if the run fails before the guest boots.
    let created = create_missing_sources(&specs, &say)?;
    // Copy-volume images are built in a run directory of this run's own
    // (removed at exit, swept if vmshare is killed), so that concurrent
    // runs never share an image.
    let image_run = state.new_run()?;
    let mut config = PlanConfig::new(Vmm::Qemu, state.volumes_dir(), image_run.path());
    config
        .root_disks
        .extend(rootfs.as_ref().and_then(Rootfs::root_disk));
    let plan = plan(&specs, &config, &SystemHost)?;
    check_supported(&plan)?;
    for w in ninep_warnings(&plan, rustix::process::geteuid().as_raw()) {
        eprintln!("vmshare: {w}");
    }
    for n in &plan.notes {
        say(n);
    }
    say(&format!(
        "plan: {} NFS export(s), {} disk(s), {} guest mount(s)",
        plan.nfs_exports.len(),
        plan.block_devices.len(),
        plan.mounts.len()
    ));
    let baselines = build_images(&plan, &say)?;

    // The namespace is recorded in a run directory of its own, kept until
    // the end, so that a killed vmshare's namespace is found and deleted.
    let tap_run = if args.net == "tap" {
        Some(state.new_run()?)
    } else {
        None
    };
    let tap = match &tap_run {
        Some(r) => Some(Arc::new(TapNetwork::create(r)?)),
        None => None,
    };
    if let Some(t) = &tap {
        say(&format!("network namespace {} with a TAP device", t.name()));
    }

    // The NFS server: exactly this VM's exports, reachable only from it.
    let rootfs_dir = matches!(rootfs, Some(Rootfs::Dir(_)));
    let (server, server_ip) = if plan.nfs_exports.is_empty() && !rootfs_dir {
        (None, IpAddr::V4(Ipv4Addr::LOCALHOST))
    } else {
        let (client, guest_sees) = match &tap {
            Some(_) => (IpAddr::V4(TAP_GUEST_ADDR), IpAddr::V4(TAP_HOST_ADDR)),
            None => (
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                vmshare_vmm::USER_NET_HOST.parse()?,
            ),
        };
        // A user from the OCI spec counts as given when it is not root.
        let user_given = args.process.user.is_some() || process.uid != 0;
        let mut exports = exports(&plan, client, user_given, &args.volume_owner)?;
        exports.extend(rootfs.as_ref().and_then(|r| r.export(client)));
        // Volumes are shared live, and the guest mounts them with
        // actimeo=1 so that host changes show within a second: listings
        // are not served from the server's attribute cache on top of that.
        //
        // On loopback (user networking), QEMU connects for the guest, and
        // so could any user of the host, claiming to be root: only
        // sockets of this process's user, held by its child QEMU, are
        // served. Behind a tap, the guest's own kernel connects, in a
        // namespace no one else enters.
        let limits = vmshare_server::Limits {
            local_peer_uid: tap.is_none().then(|| rustix::process::geteuid().as_raw()),
            // And of those, only QEMU's (a child of this process): the
            // guest reaches every port of the host's loopback, another
            // run's server too, whose uid check its QEMU passes.
            local_peer_child: tap.is_none(),
            ..vmshare_server::Limits::default()
        };
        let cfg = ServerConfig {
            attr_cache: std::time::Duration::ZERO,
            limits,
            ..ServerConfig::new(
                exports,
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                state.path().join("server"),
            )
        };
        let bound = match &tap {
            Some(t) => Server::from_listener(t.bind_tcp(0)?, cfg)?,
            None => Server::bind(cfg)?,
        };
        let addr = bound.local_addr();
        say(&format!("NFS server up on {addr}"));
        (Some((bound.spawn()?, addr.port())), guest_sees)
    };
    let port = server.as_ref().map(|(_, p)| *p).unwrap_or(0);

    let mut run = GuestRun::command(process.args.clone())
        .stdout(Sink::Inherit)
        .stderr(Sink::Inherit)
        .stdin(if args.interactive {
            StdinSource::Inherit
        } else {
            StdinSource::Null
        })
        .state_dir(state.clone())
        .memory_mib(memory_mib)
        .cpus(cpus)
        .interrupt(&INTERRUPTED);
    if let Some(k) = &args.kernel {
        run = run.kernel(k);
    }
    // In the plan's order: the guest names them vda, vdb... in that order.
    for d in &plan.block_devices {
        run = run.disk(&d.id, &d.image, d.readonly);
    }
    for s in &plan.shares {
        run = run.share(s.clone());
    }
    // Always a network, as docker gives one (it was there only for an NFS
    // server: `--tmpfs` alone or `--rootfs IMAGE` had none).
    run = run.network(match &tap {
        Some(t) => GuestNetwork::Tap(t.clone()),
        None => GuestNetwork::User,
    });
    if verbose {
        let offset = t0.elapsed();
        run = run
            .on_event(move |e| eprintln!("[{:>8.3}s] {}", (offset + e.at).as_secs_f64(), e.text));
    }
    let spec = run.spec_mut();
    spec.hostname = hostname;
    spec.mounts = plan.guest_mounts(server_ip, port);
    spec.verbose = verbose;
    spec.process = process;

    spec.rootfs = rootfs.map(|r| r.guest(&plan, server_ip, port));
    if args.tty {
        let p = &mut spec.process;
        p.tty = true;
        p.console_size = terminal::window_size();
        if !p.env.iter().any(|e| e.starts_with("TERM=")) {
            p.env.push(terminal::term_env());
        }
    }
    // Raw only while the VM runs: errors before and after print normally.
    let raw = match (args.interactive, args.tty) {
        (true, true) => Some(terminal::RawMode::enable()?),
        _ => None,
    };
    install_signal_handlers();
    // Resizes go on only from a terminal whose size the guest got.
    if let Some(size) = run.spec_mut().process.console_size {
        match terminal::watch_window_size(size) {
            Ok(sizes) => run = run.window_sizes(sizes),
            Err(e) => say(&format!("{e}; the guest's terminal keeps its first size")),
        }
    }
    created.keep();
    let result = run.run();
    drop(raw);
    if let Some((s, _)) = server {
        s.shutdown();
        say("NFS server stopped");
    }
    drop(tap);
    drop(tap_run);
    let out = result?;
    for e in &out.errors {
        eprintln!("vmshare: {e}");
    }
    say(&format!("exit status {}", out.status));
    // The guest has stopped, so its images are complete: write copy
    // volumes back. A failure here fails the run even if CMD succeeded,
    // since the host does not have what the guest wrote.
    sync_copy_volumes(&plan, &baselines, image_run.path(), &say)?;
    Ok(ExitCode::from(u8::try_from(out.status).unwrap_or(255)))
}

/// The options `vmshare plan` takes the same way, for hints.
/// CMD and its options come last, as `vmshare plan --write-initrd` puts
/// them into the guest's initramfs.
fn plan_args(args: &Args) -> Vec<String> {
    let mut out = args.front.to_args();
    if let Some(r) = &args.rootfs {
        if r.is_file() {
            out.extend(["--root-disk".into(), r.display().to_string()]);
        }
    }
    if let Some(k) = &args.kernel {
        out.extend(["--kernel".into(), k.display().to_string()]);
    }
    // Only what was given, and only if it reads: the refusal comes before
    // -m and --cpus are checked, and each has its own error.
    if let (Some(_), Ok(mib)) = (&args.memory, parse_memory(args.memory.as_deref())) {
        out.extend(["--memory".into(), mib.to_string()]);
    }
    if let (Some(_), Ok(cpus)) = (args.cpus, parse_cpus(args.cpus)) {
        out.extend(["--cpus".into(), cpus.to_string()]);
    }
    out.extend(args.process.to_args());
    out
}

/// Builds the plan's images (copy volumes) before boot, after taking a
/// snapshot of each host directory that will be written back, so that a
/// change made on the host while the VM runs is detected at exit.
fn build_images(plan: &Plan, say: &dyn Fn(&str)) -> Result<Vec<Snapshot>, String> {
    let baselines = plan
        .sync_back
        .iter()
        .map(|s| Snapshot::take(&s.host_path).map_err(|e| format!("copy volume {}: {e}", s.volume)))
        .collect::<Result<Vec<_>, _>>()?;
    for img in &plan.images {
        let start = Instant::now();
        image::build_image(&img.output, img.format, &img.contents, None, &mut |_| {})
            .map_err(|e| format!("building {}: {e}", img.output.display()))?;
        say(&format!(
            "built {} from {} director{} in {} ms",
            img.output.display(),
            img.contents.len(),
            if img.contents.len() == 1 { "y" } else { "ies" },
            start.elapsed().as_millis()
        ));
    }
    Ok(baselines)
}

/// Writes each read-write copy volume back to its host directory, or,
/// when the host directory changed meanwhile, leaves it alone and keeps
/// the guest's version beside it (`HOST.vmshare-guest-N`). Every volume is
/// tried; the first failure is returned, later ones are said on stderr.
fn sync_copy_volumes(
    plan: &Plan,
    baselines: &[Snapshot],
    scratch: &Path,
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let mut first_error = None;
    for (i, (s, baseline)) in plan.sync_back.iter().zip(baselines).enumerate() {
        let guest = scratch.join(format!("guest{i}"));
        // The image is in the run's directory, removed at exit: kept
        // beside the host directory, the guest's work is not lost with it.
        let keep_image = || {
            let kept = kept_path(&s.host_path, ".ext4");
            match std::fs::copy(&s.image, &kept) {
                Ok(_) => format!("the guest's image is kept as {}", kept.display()),
                Err(k) => format!(
                    "keeping the guest's image as {} failed too: {k}",
                    kept.display()
                ),
            }
        };
        let result = image::extract_ext4(&s.image, &s.subdir, &guest)
            .map_err(|e| {
                format!("copy volume {}: reading the guest's version: {e}; the host directory is left as it was, and {}", s.volume, keep_image())
            })
            .and_then(|()| {
                let kept = kept_path(&s.host_path, "");
                sync::sync_back(&s.host_path, &guest, baseline, &kept).map_err(|e| {
                    if e.guest_version_kept() {
                        format!("copy volume {}: {e}", s.volume)
                    } else {
                        format!("copy volume {}: {e}; {}", s.volume, keep_image())
                    }
                })
            });
        match result {
            Ok(r) => say(&format!(
                "copy volume {}: {} written, {} removed on the host",
                s.volume, r.written, r.removed
            )),
            // The first is returned, and said by the caller; said here as
            // well, it was printed twice.
            Err(e) if first_error.is_some() => eprintln!("vmshare: {e}"),
            Err(e) => first_error = Some(e),
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// A free name beside `host` for the guest's version of a copy volume
/// (`suffix` is `.ext4` for its image, kept when it could not be read).
fn kept_path(host: &Path, suffix: &str) -> PathBuf {
    let base = host.as_os_str().to_string_lossy();
    let base = base.trim_end_matches('/');
    (1..)
        .map(|n| PathBuf::from(format!("{base}.vmshare-guest-{n}{suffix}")))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| PathBuf::from(format!("{base}.vmshare-guest{suffix}")))
}

/// docker creates a missing `-v` source as a directory, docker-vm-runner
/// a missing writable share; so does vmshare ([`volumes::missing_sources`]
/// says which).
fn create_missing_sources(
    specs: &[vmshare_plan::VolumeSpec],
    say: &dyn Fn(&str),
) -> Result<Created, String> {
    let mut created = Created(Vec::new());
    for (s, path) in volumes::missing_sources(specs) {
        // Each level made, outermost first, to remove innermost first.
        let mut missing: Vec<PathBuf> = path
            .ancestors()
            .take_while(|p| std::fs::symlink_metadata(p).is_err())
            .map(Path::to_path_buf)
            .collect();
        missing.reverse();
        std::fs::create_dir_all(path).map_err(|e| {
            format!(
                "volume {}: creating missing host directory {}: {e}",
                s.name,
                path.display()
            )
        })?;
        created.0.extend(missing);
        say(&format!(
            "created missing host directory {} ({})",
            path.display(),
            volumes::created_like(s).unwrap_or_default()
        ));
    }
    Ok(created)
}

/// Host directories made for missing sources: removed again (when still
/// empty) if the run stops before the guest boots, so that a refused run
/// leaves nothing behind.
struct Created(Vec<PathBuf>);

impl Created {
    /// The guest is about to boot: the directories stay, as docker's do.
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn check_supported(plan: &Plan) -> Result<(), String> {
    if let Some(s) = plan
        .shares
        .iter()
        .find(|s| s.driver == ShareDriver::Virtiofs)
    {
        return Err(format!("volume {}: virtio-fs needs virtiofsd, which vmshare run does not start; use FILESYSTEM_DRIVER=9p or nfs", s.volume));
    }
    Ok(())
}

/// What a user other than root (`euid`) is told, once per share, about a
/// read-write 9p share in `passthrough` mode (docker-vm-runner's default).
/// QEMU makes each file and directory and then gives it to the guest
/// user that made it, which only root can do for another user: run as
/// nobody, every create by the guest's root failed with EPERM in the
/// guest while the run itself looked fine, and nothing said why.
fn ninep_warnings(plan: &Plan, euid: u32) -> Vec<String> {
    if euid == 0 {
        return Vec::new();
    }
    plan.shares
        .iter()
        .filter(|s| s.driver == ShareDriver::NineP)
        .filter(|s| s.access == AccessMode::Passthrough && !s.readonly)
        .map(|s| {
            format!(
                "volume {}: 9p passthrough needs root on the host: run as uid {euid}, QEMU can \
                 create files and directories in {} only for guest uid {euid} (any other guest \
                 user, root included, gets EPERM); FILESYSTEM_ACCESSMODE=mapped or squash lets \
                 every guest user write",
                s.volume,
                s.host_path.display()
            )
        })
        .collect()
}

/// One export per planned NFS export, for this VM's address only.
/// Identity: with -u, guest ids pass through (root still squashed); without,
/// the guest's root becomes the owner of the host directory unless
/// `--volume-owner root`.
fn exports(
    plan: &Plan,
    client: IpAddr,
    user_given: bool,
    owner: &str,
) -> Result<Vec<ExportConfig>, String> {
    let mut out = Vec::new();
    for e in &plan.nfs_exports {
        if e.create {
            std::fs::create_dir_all(&e.host_path).map_err(|err| {
                format!(
                    "volume {}: creating {}: {err}",
                    e.volume,
                    e.host_path.display()
                )
            })?;
        }
        let meta = std::fs::metadata(&e.host_path)
            .map_err(|err| format!("volume {}: {}: {err}", e.volume, e.host_path.display()))?;
        let squash = if owner == "root" && !user_given {
            Squash::None
        } else {
            Squash::Root
        };
        let options = ExportOptions {
            writable: !e.readonly,
            squash,
            anonuid: meta.uid(),
            anongid: meta.gid(),
            // QEMU user networking connects from unprivileged ports.
            secure: false,
            // As a bind mount: a change is durable when the program asks
            // (fsync of a file; COMMIT), not after every one.
            sync: false,
            // The guest's root acts as the directory's owner, root for a
            // directory root owns (one vmshare made for a missing
            // source): it made setuid-root programs and 0666 nodes of the
            // host's disks there, for any host user to run or open.
            nosuid_nodev: true,
        };
        let prefix = if client.is_ipv4() { 32 } else { 128 };
        out.push(ExportConfig {
            path: e.host_path.clone(),
            mount_path: e.export_path.clone(),
            clients: vec![ClientRule {
                client: ClientMatch::Net {
                    addr: client,
                    prefix,
                },
                options,
            }],
            single_file: e.single_file.as_ref().map(OsString::from),
        });
    }
    Ok(out)
}

/// The least memory a guest boots in: the kernel unpacks the initramfs
/// (modules, busybox, vmshare) into memory first, and with 128 MiB or 144
/// MiB it panicked ("System is deadlocked on memory"); 150 MiB booted.
const MIN_MEMORY_MIB: u32 = 192;

/// `-m`, as docker sizes are written (`vmshare_plan::size`).
fn parse_memory(text: Option<&str>) -> Result<u32, String> {
    let Some(text) = text else { return Ok(512) };
    let bytes =
        vmshare_plan::size::parse_bytes(text).map_err(|why| format!("--memory {text}: {why}"))?;
    let mib = u32::try_from(bytes >> 20).map_err(|_| format!("--memory {text}: too large"))?;
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "--memory {text}: at least {MIN_MEMORY_MIB}m (the kernel unpacks its initramfs into it)"
        ));
    }
    Ok(mib)
}

/// vCPUs: fractions round up, as a VM has whole CPUs; more than the host
/// has is refused, as docker refuses it (under TCG a guest with many more
/// vCPUs than cores did not finish booting).
fn parse_cpus(n: Option<f64>) -> Result<u32, String> {
    let Some(n) = n else { return Ok(1) };
    let host = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let host_f = f64::from(u32::try_from(host).unwrap_or(u32::MAX));
    if !n.is_finite() || n <= 0.0 || n.ceil() > host_f {
        return Err(format!(
            "--cpus {n}: from 0.01 to {host}, the CPUs this host has"
        ));
    }
    // In 1..=host just above, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(n.ceil() as u32)
}

/// A host name the guest can take: letters, digits, `-` and `.`, at most
/// 64 bytes (what sethostname(2) takes). Checked before boot: a name the
/// guest then refused failed the run after a full boot.
pub(crate) fn check_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "host name {name:?} (--name, -h or the OCI hostname): 1 to 64 letters, digits, '-' and '.'"
        ))
    }
}

fn install_signal_handlers() {
    // Forwarded to CMD, as docker forwards them; left at their defaults
    // SIGUSR1, SIGUSR2 and SIGQUIT killed vmshare and left the VM's run
    // directory behind.
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: on_signal only stores to an atomic, which is
        // async-signal-safe; the handler stays valid for the whole process.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_as_docker_takes_them() {
        assert!(check_hostname("web-1.local").is_ok());
        for bad in ["", "bad name!", &"x".repeat(65)] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_and_cpus() {
        assert_eq!(parse_memory(Some("1g")), Ok(1024));
        assert_eq!(parse_memory(Some("256m")), Ok(256));
        assert_eq!(parse_memory(Some("268435456")), Ok(256));
        assert_eq!(parse_memory(Some("1.5g")), Ok(1536));
        assert_eq!(parse_memory(Some("512MiB")), Ok(512));
        assert_eq!(parse_memory(Some("2GB")), Ok(2048));
        for bad in ["64m", "128m", "1x", "-1g", "nan", ""] {
            assert!(parse_memory(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(parse_cpus(Some(0.1)), Ok(1));
        assert_eq!(parse_cpus(None), Ok(1));
        for bad in [0.0, -1.0, f64::NAN, 10_000.0] {
            assert!(parse_cpus(Some(bad)).is_err(), "{bad}");
        }
    }
}
