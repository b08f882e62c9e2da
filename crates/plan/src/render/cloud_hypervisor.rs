//! Cloud Hypervisor's command line. virtio-fs needs shared guest memory
//! (`--memory shared=on`); it has no 9p.

use super::{needs_tap, virtiofsd, virtiofsd_socket, vsock_socket, RenderConfig, Rendered};
use crate::plan::{Plan, ShareDriver};
use crate::PlanError;

pub(super) fn render(plan: &Plan, m: &RenderConfig) -> Result<Rendered, PlanError> {
    if let Some(s) = plan.shares.iter().find(|s| s.driver == ShareDriver::NineP) {
        return Err(PlanError::Unsupported {
            volume: s.volume.clone(),
            vmm: "cloud-hypervisor".into(),
            what: "share directories over 9p".into(),
            hint: "use FILESYSTEM_DRIVER=virtiofs or nfs".into(),
        });
    }
    // Its option parser splits values at commas, with no escape: every
    // path that goes into a `key=value,...` option is checked, the vsock
    // socket too (`--vsock cid=3,socket=/rt,1/vsock.sock` was rendered).
    let paths = plan
        .block_devices
        .iter()
        .map(|d| (d.id.clone(), d.image.clone()))
        .chain(
            plan.shares
                .iter()
                .map(|s| (s.volume.clone(), virtiofsd_socket(m, s))),
        )
        .chain(m.vsock_cid.map(|_| ("vsock".to_string(), vsock_socket(m))));
    for (what, path) in paths {
        if path.to_string_lossy().contains(',') {
            return Err(PlanError::Unsupported {
                volume: what,
                vmm: "cloud-hypervisor".into(),
                what: format!("take a path with a comma ({})", path.display()),
                hint: "rename it, or use --runtime-dir without commas".into(),
            });
        }
    }
    let shared = if plan.shares.is_empty() {
        ""
    } else {
        ",shared=on"
    };
    let mut args = vec!["--kernel".to_string(), m.kernel.display().to_string()];
    if let Some(i) = &m.initrd {
        args.extend(["--initramfs".into(), i.display().to_string()]);
    }
    args.extend([
        "--cmdline".into(),
        plan.kernel_cmdline.clone(),
        "--cpus".into(),
        format!("boot={}", m.vcpus),
        "--memory".into(),
        format!("size={}M{shared}", m.memory_mib),
        "--serial".into(),
        "tty".into(),
        "--console".into(),
        "off".into(),
    ]);
    if !plan.block_devices.is_empty() {
        args.push("--disk".into());
        for d in &plan.block_devices {
            let ro = if d.readonly { ",readonly=on" } else { "" };
            args.push(format!("path={},id={}{ro}", d.image.display(), d.id));
        }
    }
    let mut helpers = Vec::new();
    if !plan.shares.is_empty() {
        args.push("--fs".into());
        for (i, s) in plan.shares.iter().enumerate() {
            helpers.push(virtiofsd(m, s));
            args.push(format!(
                "tag={},socket={},id=fs{i}",
                s.tag,
                virtiofsd_socket(m, s).display()
            ));
        }
    }
    if let Some(net) = &m.net {
        let tap = needs_tap(plan, net)?;
        // Linux allows a comma in an interface name; this parser does not.
        if tap.contains(',') {
            return Err(PlanError::Unsupported {
                volume: "network".into(),
                vmm: "cloud-hypervisor".into(),
                what: format!("take a tap name with a comma ({tap})"),
                hint: "rename the tap device (ip link set NAME name NEW)".into(),
            });
        }
        args.extend(["--net".into(), format!("tap={tap},mac={}", net.mac)]);
    }
    if let Some(cid) = m.vsock_cid {
        args.extend([
            "--vsock".into(),
            format!("cid={cid},socket={}", vsock_socket(m).display()),
        ]);
    }
    Ok(Rendered {
        program: "cloud-hypervisor".into(),
        args,
        config_file: None,
        helpers,
    })
}
