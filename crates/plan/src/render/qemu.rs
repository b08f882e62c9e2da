//! QEMU `microvm`: every device is virtio-mmio (`*-device` drivers), and
//! virtio-fs needs guest memory shared with virtiofsd, hence the memfd
//! memory backend.

use super::{virtiofsd, virtiofsd_socket, RenderConfig, Rendered};
use crate::plan::{Plan, Share, ShareDriver};
use crate::spec::AccessMode;

/// 9p `security_model` for each access mode: `mapped-xattr` keeps guest
/// ownership in xattrs so host files keep the user's owner.
fn security_model(access: AccessMode) -> &'static str {
    match access {
        AccessMode::Passthrough => "passthrough",
        AccessMode::Mapped => "mapped-xattr",
        AccessMode::Squash => "none",
    }
}

/// The `-fsdev` and `-device` arguments that attach `share` over 9p as the
/// machine's `index`-th share. `vmshare run`'s QEMU launcher attaches its
/// shares with these too, so a plan and a run describe the same device.
/// Commas in the host path are doubled, as QEMU option values need.
pub fn ninep_args(index: usize, share: &Share) -> [String; 4] {
    let ro = if share.readonly { ",readonly=on" } else { "" };
    [
        "-fsdev".into(),
        format!(
            "local,id=fs{index},path={},security_model={}{ro}",
            share.host_path.display().to_string().replace(',', ",,"),
            security_model(share.access)
        ),
        "-device".into(),
        format!("virtio-9p-device,fsdev=fs{index},mount_tag={}", share.tag),
    ]
}

/// A path as a QEMU option value: commas doubled, or QEMU reads the rest
/// as further options (`file=/img/with,comma` opened `/img/with`).
fn qemu_value(p: &std::path::Path) -> String {
    p.display().to_string().replace(',', ",,")
}

pub(super) fn render(plan: &Plan, m: &RenderConfig) -> Rendered {
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.to_string());
        args.push(b);
    };
    let virtiofs = plan
        .shares
        .iter()
        .any(|s| s.driver == ShareDriver::Virtiofs);
    let mut machine = "microvm,isa-serial=on,rtc=on".to_string();
    if virtiofs {
        machine.push_str(",memory-backend=mem");
    }
    push("-M", machine);
    push("-m", format!("{}M", m.memory_mib));
    push("-smp", m.vcpus.to_string());
    let mut helpers = Vec::new();
    // vmshare's guest init ends the VM with a reboot (microvm has no ACPI
    // to power off with): -no-reboot makes that an exit, not a new boot.
    let mut rest = vec![
        "-nodefaults".to_string(),
        "-no-user-config".into(),
        "-nographic".into(),
        "-no-reboot".into(),
    ];
    rest.extend(["-serial".into(), "stdio".into()]);
    rest.extend(["-kernel".into(), m.kernel.display().to_string()]);
    if let Some(i) = &m.initrd {
        rest.extend(["-initrd".into(), i.display().to_string()]);
    }
    rest.extend(["-append".into(), plan.kernel_cmdline.clone()]);
    if virtiofs {
        rest.extend([
            "-object".into(),
            format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                m.memory_mib
            ),
        ]);
    }
    for d in &plan.block_devices {
        let ro = if d.readonly { ",readonly=on" } else { "" };
        rest.extend([
            "-drive".into(),
            format!(
                "id={},file={},format=raw,if=none,cache=writeback{ro}",
                d.id,
                qemu_value(&d.image)
            ),
            "-device".into(),
            format!("virtio-blk-device,drive={}", d.id),
        ]);
    }
    for (i, s) in plan.shares.iter().enumerate() {
        match s.driver {
            ShareDriver::NineP => rest.extend(ninep_args(i, s)),
            ShareDriver::Virtiofs => {
                helpers.push(virtiofsd(m, s));
                rest.extend([
                    "-chardev".into(),
                    format!(
                        "socket,id=fs{i},path={}",
                        qemu_value(&virtiofsd_socket(m, s))
                    ),
                    "-device".into(),
                    format!("vhost-user-fs-device,chardev=fs{i},tag={}", s.tag),
                ]);
            }
        }
    }
    if let Some(net) = &m.net {
        let backend = match &net.tap {
            Some(tap) => format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                tap.replace(',', ",,")
            ),
            None => "user,id=net0".to_string(),
        };
        rest.extend([
            "-netdev".into(),
            backend,
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={}", net.mac),
        ]);
    }
    if let Some(cid) = m.vsock_cid {
        rest.extend([
            "-device".into(),
            format!("vhost-vsock-device,guest-cid={cid}"),
        ]);
    }
    args.extend(rest);
    Rendered {
        program: "qemu-system-x86_64".into(),
        args,
        config_file: None,
        helpers,
    }
}
