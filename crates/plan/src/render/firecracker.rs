//! Firecracker's `--config-file`: the API's PUT bodies under their resource
//! names. Drives use `cache_type: Writeback` so a guest fsync becomes a
//! host fsync; with the default (`Unsafe`) flushes are dropped and an ext4
//! volume could lose acknowledged writes when the host crashes.

use serde_json::{json, Value};

use super::{needs_tap, vsock_socket, ConfigFile, RenderConfig, Rendered};
use crate::plan::Plan;
use crate::PlanError;

pub(super) fn render(plan: &Plan, m: &RenderConfig) -> Result<Rendered, PlanError> {
    if let Some(s) = plan.shares.first() {
        return Err(PlanError::Unsupported {
            volume: s.volume.clone(),
            vmm: "firecracker".into(),
            what: "share directories (no virtio-fs or 9p)".into(),
            hint: "serve it over NFS instead (-v HOST:GUEST)".into(),
        });
    }
    let mut boot = json!({
        "kernel_image_path": m.kernel.display().to_string(),
        "boot_args": plan.kernel_cmdline,
    });
    if let Some(i) = &m.initrd {
        boot["initrd_path"] = json!(i.display().to_string());
    }
    let drives: Vec<Value> = plan
        .block_devices
        .iter()
        .map(|d| {
            json!({
                "drive_id": d.id,
                "path_on_host": d.image.display().to_string(),
                "is_root_device": false,
                "is_read_only": d.readonly,
                "cache_type": "Writeback",
            })
        })
        .collect();
    let mut config = json!({
        "boot-source": boot,
        "drives": drives,
        "machine-config": {
            "vcpu_count": m.vcpus,
            "mem_size_mib": m.memory_mib,
            "smt": false,
        },
    });
    if let Some(net) = &m.net {
        config["network-interfaces"] = json!([{
            "iface_id": "eth0",
            "host_dev_name": needs_tap(plan, net)?,
            "guest_mac": net.mac,
        }]);
    }
    if let Some(cid) = m.vsock_cid {
        config["vsock"] = json!({
            "guest_cid": cid,
            "uds_path": vsock_socket(m).display().to_string(),
        });
    }
    let path = m.runtime_dir.join("firecracker.json");
    Ok(Rendered {
        program: "firecracker".into(),
        args: vec![
            "--no-api".into(),
            "--config-file".into(),
            path.display().to_string(),
        ],
        config_file: Some(ConfigFile {
            path,
            content: config,
        }),
        helpers: Vec::new(),
    })
}
