#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Properties over random volume sets: device names, tags and export paths
//! are never reused, devices keep their allocation order (root disks, then
//! volumes in mount order) and the device budget holds.

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::PathBuf;

use vmshare_plan::host::ImagesAreFiles;
use vmshare_plan::plan::{disk_name, plan, DiskRole, PlanConfig, RootDisk, Vmm};
use vmshare_plan::{AccessMode, ImageFormat, PlanError, Source, Transport, VolumeSpec};

fn source(kind: u8, i: usize, tag_len: usize) -> (Source, Option<String>) {
    let dir = PathBuf::from(format!("/srv/d{i}"));
    match kind % 7 {
        0 => (
            Source::Host {
                path: dir,
                transport: Transport::Nfs,
            },
            None,
        ),
        1 => (
            Source::Named {
                volume: format!("vol{i}"),
            },
            None,
        ),
        2 => (Source::Copy { path: dir }, None),
        3 => (
            Source::Image {
                path: format!("/img/{i}.ext4").into(),
                format: ImageFormat::Ext4,
            },
            None,
        ),
        4 => (
            Source::Image {
                path: format!("/img/{i}.erofs").into(),
                format: ImageFormat::Erofs,
            },
            None,
        ),
        5 => (
            Source::Host {
                path: dir,
                transport: Transport::Virtiofs,
            },
            None,
        ),
        _ => (
            Source::Host {
                path: dir,
                transport: Transport::NineP {
                    access: AccessMode::Mapped,
                },
            },
            // Some shares ask for a tag, possibly one the planner would pick.
            (tag_len > 0).then(|| format!("vmshare{}", tag_len % 5)),
        ),
    }
}

fn specs() -> impl Strategy<Value = (Vec<VolumeSpec>, usize, Vmm)> {
    let vmm = prop_oneof![
        Just(Vmm::Qemu),
        Just(Vmm::Firecracker),
        Just(Vmm::CloudHypervisor)
    ];
    (
        prop::collection::vec((0u8..7, 0usize..6), 0..40),
        0usize..3,
        vmm,
    )
        .prop_map(|(kinds, roots, vmm)| {
            let specs = kinds
                .iter()
                .enumerate()
                .map(|(i, (k, t))| {
                    let (source, tag) = source(*k, i, *t);
                    VolumeSpec {
                        name: format!("v{i}"),
                        source,
                        target: Some(format!("/m/{i}")),
                        readonly: i % 3 == 0,
                        options: Vec::new(),
                        mkdir: false,
                        tag,
                    }
                })
                .collect();
            (specs, roots, vmm)
        })
}

proptest! {
    #[test]
    fn plans_never_reuse_names_and_keep_order((specs, roots, vmm) in specs()) {
        let mut config = PlanConfig::new(vmm, "/vols", "/state");
        config.root_disks = (0..roots)
            .map(|i| RootDisk { image: format!("/root/{i}.erofs").into(), format: ImageFormat::Erofs, readonly: true })
            .collect();
        let p = match plan(&specs, &config, &ImagesAreFiles) {
            Ok(p) => p,
            // Refusals must be the documented ones, never a panic.
            Err(PlanError::Unsupported { .. } | PlanError::TooManyDevices { .. } | PlanError::BadTag { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        };
        // Device names: vda, vdb, ... in order, none reused.
        for (i, d) in p.block_devices.iter().enumerate() {
            prop_assert_eq!(&d.id, &disk_name(i));
            prop_assert_eq!(&d.device, &format!("/dev/{}", disk_name(i)));
        }
        // Root disks first, in the given order.
        let root_images: Vec<PathBuf> = p.block_devices.iter().take_while(|d| d.role == DiskRole::Root).map(|d| d.image.clone()).collect();
        prop_assert_eq!(root_images, config.root_disks.iter().map(|r| r.image.clone()).collect::<Vec<_>>());
        prop_assert!(p.block_devices.iter().skip(roots).all(|d| d.role != DiskRole::Root));
        // Volume disks follow the order of their first guest mount.
        let mount_devices: Vec<&str> = p.mounts.iter().filter(|m| m.mount.source.starts_with("/dev/vd")).map(|m| m.mount.source.as_str()).collect();
        let mut sorted = mount_devices.clone();
        sorted.sort_by_key(|d| (d.len(), d.to_string()));
        prop_assert_eq!(mount_devices, sorted);
        // Tags: unique and within the kernel's limit.
        let tags: BTreeSet<&str> = p.shares.iter().map(|s| s.tag.as_str()).collect();
        prop_assert_eq!(tags.len(), p.shares.len());
        prop_assert!(p.shares.iter().all(|s| !s.tag.is_empty() && s.tag.len() <= 36));
        // Export paths unique.
        let exports: BTreeSet<&str> = p.nfs_exports.iter().map(|e| e.export_path.as_str()).collect();
        prop_assert_eq!(exports.len(), p.nfs_exports.len());
        // Budget holds, and what is counted is what is attached.
        prop_assert!(p.devices_used <= p.device_budget);
        prop_assert_eq!(p.devices_used, p.block_devices.len() + p.shares.len() + 2);
        // Every volume has its mount at its target.
        for s in &specs {
            let target = s.target.as_deref().unwrap();
            prop_assert!(p.mounts.iter().any(|m| m.mount.target == target));
        }
    }
}
