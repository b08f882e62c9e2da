#![allow(clippy::unwrap_used)]
//! The errors the issue lists, each one line that says what to do.

use vmshare_plan::host::ImagesAreFiles;
use vmshare_plan::plan::{plan, PlanConfig, Vmm};
use vmshare_plan::{env, oci, PlanError};

fn oci_error(mounts: &str) -> String {
    let json = format!("{{\"mounts\": [{mounts}]}}");
    let result = oci::parse_config(&json).and_then(|o| {
        plan(
            &o.volumes,
            &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
            &ImagesAreFiles,
        )
        .map(|_| ())
    });
    let e = result.unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

#[test]
fn oci_errors() {
    let e = oci_error(r#"{"type": "bind", "source": "data", "destination": "/d"}"#);
    assert!(
        e.ends_with("source 'data' is relative; give an absolute host path"),
        "{e}"
    );
    let e =
        oci_error(r#"{"type": "bind", "source": "/h", "destination": "/d", "options": ["frob"]}"#);
    assert!(
        e.contains("unknown option 'frob'; bind mounts take ro, rw"),
        "{e}"
    );
    let e = oci_error(
        r#"{"type": "erofs", "source": "/l.erofs"},
           {"type": "format/overlay", "destination": "/m", "options": ["lowerdir={{ mount 0 }}:{{ mount 5 }}"]}"#,
    );
    assert!(
        e.ends_with(
            "'{{ mount 5 }}' refers to mount 5, but there are only 2 mounts (counting from 0)"
        ),
        "{e}"
    );
    let e = oci_error(
        r#"{"type": "format/overlay", "destination": "/m", "options": ["lowerdir={{ mount 1 }}"]},
           {"type": "erofs", "source": "/l.erofs"}"#,
    );
    assert!(e.contains("it comes later"), "{e}");
    let e = oci_error(
        r#"{"type": "overlay", "destination": "/m", "options": ["lowerdir={{ mount 0 }}"]}"#,
    );
    assert!(
        e.contains("without the format/ prefix; write type format/overlay"),
        "{e}"
    );
    let e = oci_error(
        r#"{"type": "tmpfs", "source": "tmpfs", "destination": "/a"},
           {"type": "bind", "source": "/h", "destination": "/a/"}"#,
    );
    assert!(e.starts_with("two mounts on /a"), "{e}");
    let e = oci_error(r#"{"type": "nfs", "source": "/h", "destination": "/a"}"#);
    assert!(e.contains("unsupported type 'nfs'"), "{e}");
}

/// What runtimes write that the runtime spec allows: a property it does
/// not define is ignored (it was refused), and type "none" with `rbind`
/// is a bind mount, as runc reads it.
#[test]
fn oci_mounts_as_runtimes_write_them() {
    let json = r#"{"mounts": [
        {"type": "bind", "source": "/h", "destination": "/d", "colour": 1},
        {"type": "none", "source": "/g", "destination": "/g", "options": ["rbind", "ro"]}
    ]}"#;
    let o = oci::parse_config(json).unwrap();
    let p = plan(
        &o.volumes,
        &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
        &ImagesAreFiles,
    )
    .unwrap();
    assert_eq!(p.nfs_exports.len(), 2);
    assert!(p.nfs_exports[1].readonly);
}

#[test]
fn oci_templates_count_the_spec_indexes_even_after_skipping_system_mounts() {
    let json = r#"{"mounts": [
        {"type": "proc", "source": "proc", "destination": "/proc"},
        {"type": "erofs", "source": "/l0.erofs"},
        {"type": "format/overlay", "destination": "/m", "options": ["lowerdir={{ mount 1 }}"]}
    ]}"#;
    let o = oci::parse_config(json).unwrap();
    assert_eq!(o.volumes.len(), 2);
    assert_eq!(o.notes.len(), 1);
    let p = plan(
        &o.volumes,
        &PlanConfig::new(Vmm::Qemu, "/v", "/s"),
        &ImagesAreFiles,
    )
    .unwrap();
    // The overlay (after its tmpfs writable layer) names mount 1 of the
    // spec, which is volume 0.
    assert_eq!(
        p.mounts[2].mount.data,
        "lowerdir=/run/vmshare/m0,upperdir=/run/vmshare/layer1/upper,workdir=/run/vmshare/layer1/work"
    );
    let e = oci::parse_config(&json.replace("mount 1", "mount 0")).unwrap_err();
    assert!(
        e.to_string()
            .contains("system mount the guest init provides"),
        "{e}"
    );
}

#[test]
fn env_errors() {
    let cases: [(&[(&str, &str)], &str); 8] = [
        (
            &[("FILESYSTEM_SOURCE", "share"), ("FILESYSTEM_TARGET", "t")],
            "FILESYSTEM_SOURCE: 'share' is relative",
        ),
        (&[("FILESYSTEM_SOURCE", "/s")], "FILESYSTEM_TARGET: missing"),
        (
            &[
                ("FILESYSTEM_SOURCE", "/s"),
                ("FILESYSTEM_TARGET", "t"),
                ("FILESYSTEM_DRIVER", "virtiofs"),
                ("FILESYSTEM_ACCESSMODE", "mapped"),
            ],
            "virtiofs only supports passthrough; use FILESYSTEM_DRIVER=9p",
        ),
        (
            &[
                ("FILESYSTEM2_SOURCE", "/s"),
                ("FILESYSTEM2_TARGET", "t"),
                ("FILESYSTEM2_DRIVER", "smb"),
            ],
            "FILESYSTEM2_DRIVER: 'smb' is not",
        ),
        (
            &[
                ("FILESYSTEM_SOURCE", "/s"),
                ("FILESYSTEM_TARGET", "t"),
                ("FILESYSTEM_READONLY", "maybe"),
            ],
            "FILESYSTEM_READONLY",
        ),
        (
            &[("FILESYSTEM_MODE", "x")],
            "FILESYSTEM_MODE: unknown variable",
        ),
        (
            &[("FILESYSTEM1_SOURCE", "/s")],
            "FILESYSTEM1_SOURCE: the first share is FILESYSTEM_*",
        ),
        (&[("FILESYSTEM02_SOURCE", "/s")], "no 1, no leading zeros"),
    ];
    for (vars, want) in cases {
        let e = env::parse_env(vars.iter().copied())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    assert!(env::parse_env([("PATH", "/bin"), ("FILESYSTEMS", "x")])
        .unwrap()
        .is_empty());
}

#[test]
fn long_or_duplicate_tags_are_refused() {
    let long = "t".repeat(37);
    let specs = env::parse_env([
        ("FILESYSTEM_SOURCE", "/a"),
        ("FILESYSTEM_TARGET", long.as_str()),
        ("FILESYSTEM_DRIVER", "9p"),
    ])
    .unwrap();
    let e = plan(
        &specs,
        &PlanConfig::new(Vmm::Qemu, "/v", "/s"),
        &ImagesAreFiles,
    )
    .unwrap_err();
    assert!(
        matches!(e, PlanError::BadTag { .. }) && e.to_string().contains("1 to 36 bytes"),
        "{e}"
    );
    let t36 = "t".repeat(36);
    let specs = env::parse_env([
        ("FILESYSTEM_SOURCE", "/a"),
        ("FILESYSTEM_TARGET", t36.as_str()),
        ("FILESYSTEM_DRIVER", "9p"),
    ])
    .unwrap();
    assert!(plan(
        &specs,
        &PlanConfig::new(Vmm::Qemu, "/v", "/s"),
        &ImagesAreFiles
    )
    .is_ok());
}

/// One ext4 image mounted through two disks, one of them writable, would
/// be corrupted; twice read-only is fine.
#[test]
fn an_image_is_attached_twice_only_read_only() {
    use std::path::Path;
    let attach = |opts: &str| {
        let cwd = Path::new("/work");
        let specs = [
            vmshare_plan::docker::parse_mount(
                &format!("type=ext4,src=/i/db.ext4,dst=/x{opts}"),
                cwd,
            )
            .unwrap(),
            vmshare_plan::docker::parse_mount(
                &format!("type=ext4,src=/i/db.ext4,dst=/y{opts}"),
                cwd,
            )
            .unwrap(),
        ];
        plan(
            &specs,
            &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
            &ImagesAreFiles,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let e = attach("").unwrap_err();
    assert!(e.contains("already attached as /dev/vda"), "{e}");
    assert!(attach(",readonly").is_ok());
}

/// tmpfs options are checked before boot: tmpfs refused a bad one with
/// EINVAL when the guest mounted it. The atime flags runtimes write
/// (`strictatime`, `nodiratime`) are mount flags, not tmpfs data.
#[test]
fn tmpfs_options_are_checked_before_boot() {
    let check = |text: &str| {
        let spec = vmshare_plan::docker::parse_tmpfs(text).unwrap();
        plan(
            &[spec],
            &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
            &ImagesAreFiles,
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert!(check("/t:size=64m,mode=1777,uid=1000,strictatime,nodiratime,noexec").is_ok());
    assert!(check("/t:size=50%").is_ok());
    for bad in ["/t:size=bogus", "/t:size=-1", "/t:mode=0o777", "/t:frob"] {
        let e = check(bad).unwrap_err();
        assert!(e.contains("is not one tmpfs takes"), "{bad}: {e}");
    }
}

/// An overlay's options are checked before boot too: overlayfs answered a
/// missing lowerdir, or an upperdir without a workdir, with a bare EINVAL
/// after the guest had booted.
#[test]
fn overlay_options_are_checked_before_boot() {
    let overlay = |options: &str| {
        format!(
            r#"{{"type": "overlay", "source": "overlay", "destination": "/x", "options": [{options}]}}"#
        )
    };
    let e = oci_error(&overlay(r#""upperdir=/u", "workdir=/w""#));
    assert!(e.ends_with("an overlay needs lowerdir=DIR[:DIR...]"), "{e}");
    let e = oci_error(&overlay(r#""lowerdir=/etc:/bin", "upperdir=/tmp/u""#));
    assert!(e.contains("upperdir and workdir go together"), "{e}");
    let json = format!(
        "{{\"mounts\": [{}]}}",
        overlay(r#""lowerdir=/etc:/bin", "upperdir=/u", "workdir=/w""#)
    );
    let o = oci::parse_config(&json).unwrap();
    assert!(plan(
        &o.volumes,
        &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
        &ImagesAreFiles
    )
    .is_ok());
}

/// runc joins a mount's options with commas, so one option string may
/// hold several. Read as one, "lowerdir=..,upperdir=/u,workdir=/w" hid
/// its upperdir: a tmpfs layer was added after it, its upperdir won, and
/// the writes meant for /u were dropped at exit.
#[test]
fn oci_options_joined_by_commas_are_several_options() {
    let json = r#"{"mounts": [{"type": "overlay", "source": "overlay", "destination": "/r",
        "options": ["lowerdir=/a:/b,upperdir=/u,workdir=/w", "ro,nosuid"]}]}"#;
    let o = oci::parse_config(json).unwrap();
    assert!(o.volumes[0].readonly, "ro inside a joined string counts");
    let p = plan(
        &o.volumes,
        &PlanConfig::new(Vmm::Qemu, "/v", "/s"),
        &ImagesAreFiles,
    )
    .unwrap();
    assert_eq!(p.mounts.len(), 1, "no tmpfs layer: {:?}", p.mounts);
    assert_eq!(
        p.mounts[0].mount.data,
        "lowerdir=/a:/b,upperdir=/u,workdir=/w"
    );
    assert!(
        p.notes.iter().all(|n| !n.contains("no upperdir")),
        "{:?}",
        p.notes
    );
}

/// A read-only overlay of one lower layer and no upperdir was planned as
/// given, and the guest's kernel refused it ("at least 2 lowerdir are
/// needed while upperdir nonexistent"). It gets the tmpfs layer too,
/// mounted read-only; two lower layers need none.
#[test]
fn a_read_only_overlay_of_one_layer_mounts() {
    let json = |lower: &str| {
        format!(
            r#"{{"mounts": [{{"type": "erofs", "source": "/l0.erofs"}},
            {{"type": "erofs", "source": "/l1.erofs"}},
            {{"type": "format/overlay", "destination": "/r", "options": ["lowerdir={lower}", "ro"]}}]}}"#
        )
    };
    let planned = |lower: &str| {
        let o = oci::parse_config(&json(lower)).unwrap();
        plan(
            &o.volumes,
            &PlanConfig::new(Vmm::Qemu, "/v", "/s"),
            &ImagesAreFiles,
        )
        .unwrap()
    };
    let p = planned("{{ mount 0 }}");
    let overlay = p.mounts.last().unwrap();
    assert!(overlay.mount.readonly);
    assert_eq!(
        overlay.mount.data,
        "lowerdir=/run/vmshare/m0,upperdir=/run/vmshare/layer2/upper,workdir=/run/vmshare/layer2/work"
    );
    assert!(
        p.notes.iter().all(|n| !n.contains("dropped")),
        "{:?}",
        p.notes
    );
    let p = planned("{{ mount 1 }}:{{ mount 0 }}");
    assert_eq!(
        p.mounts.last().unwrap().mount.data,
        "lowerdir=/run/vmshare/m1:/run/vmshare/m0"
    );
}
