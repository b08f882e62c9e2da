#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The errors the issue lists, each one line that says what to do.

use vmshare_plan::host::ImagesAreFiles;
use vmshare_plan::plan::{plan, PlanConfig, Vmm};
use vmshare_plan::spec::{AccessMode, Source, Transport};
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
    let cases: [(&[(&str, &str)], &str); 14] = [
        (
            &[("FILESYSTEM_SOURCE", "share"), ("FILESYSTEM_TARGET", "t")],
            "FILESYSTEM_SOURCE: 'share' is relative",
        ),
        (
            &[("FILESYSTEM_SOURCE", "/")],
            "FILESYSTEM_TARGET: missing, and SOURCE '/' has no last name",
        ),
        (
            &[("FILESYSTEM_SOURCE", "/srv/my share")],
            "FILESYSTEM_TARGET: missing, and SOURCE's last name 'my share' is not a tag",
        ),
        (
            &[("FILESYSTEM_READONLY", "1")],
            "FILESYSTEM_SOURCE: missing",
        ),
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
            "FILESYSTEM_READONLY: 'maybe' is not one of 1, true, yes, on (read-only) or 0, false, no, off",
        ),
        // A relative target is a tag, one name: `.` mounted a share
        // tagged `.` on /mnt.
        (
            &[
                ("FILESYSTEM_SOURCE", "/s"),
                ("FILESYSTEM_TARGET", "."),
                ("FILESYSTEM_DRIVER", "9p"),
            ],
            "FILESYSTEM_TARGET: '.' is neither a tag",
        ),
        (
            &[("FILESYSTEM_SOURCE", "/s"), ("FILESYSTEM_TARGET", "..")],
            "FILESYSTEM_TARGET: '..' is neither a tag",
        ),
        (
            &[("FILESYSTEM_SOURCE", "/s"), ("FILESYSTEM_TARGET", "./x")],
            "nor an absolute guest path; write e.g. data or /data",
        ),
        (
            &[("FILESYSTEM_SOURCE", "/s"), ("FILESYSTEM_TARGET", "a/b")],
            "'a/b' is neither a tag",
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
    let specs = env::parse_env([
        ("FILESYSTEM_SOURCE", "/s"),
        ("FILESYSTEM_TARGET", "my.tag-1"),
        ("FILESYSTEM_READONLY", "yes"),
    ])
    .unwrap();
    assert_eq!(specs[0].target.as_deref(), Some("/mnt/my.tag-1"));
    assert!(specs[0].readonly);
}

/// As in docker-vm-runner: without `_TARGET` the tag is the source's last
/// name, and a group with nothing set (an empty `${VAR:-}` in a compose
/// file) is no share. Both were errors here.
#[test]
fn env_target_from_source_and_empty_groups_skipped() {
    let specs = env::parse_env([
        ("FILESYSTEM_SOURCE", "/srv/share/"),
        ("FILESYSTEM_DRIVER", "9p"),
        ("FILESYSTEM2_SOURCE", ""),
        ("FILESYSTEM2_TARGET", " "),
        ("FILESYSTEM2_READONLY", "0"),
        ("FILESYSTEM3_READONLY", "no"),
        ("FILESYSTEM4_SOURCE", "/data"),
        ("FILESYSTEM4_TARGET", "/in/guest"),
    ])
    .unwrap();
    assert_eq!(specs.len(), 2, "{specs:?}");
    assert_eq!(specs[0].target.as_deref(), Some("/mnt/share"));
    assert_eq!(specs[0].tag.as_deref(), Some("share"));
    assert!(
        specs[0].name.contains("TARGET from SOURCE's name"),
        "{}",
        specs[0].name
    );
    assert_eq!(specs[1].target.as_deref(), Some("/in/guest"));
    assert!(specs[1].name.starts_with("FILESYSTEM4_SOURCE=/data"));
}

/// docker-vm-runner reads `_DRIVER`, `_ACCESSMODE` and `_READONLY` with
/// `.strip().lower()`: `9P`, `Mapped` and `True` work there and were
/// refused here.
#[test]
fn env_words_as_docker_vm_runner_reads_them() {
    let specs = env::parse_env([
        ("FILESYSTEM_SOURCE", "/s"),
        ("FILESYSTEM_TARGET", "share"),
        ("FILESYSTEM_DRIVER", "9P"),
        ("FILESYSTEM_ACCESSMODE", " Mapped "),
        ("FILESYSTEM_READONLY", "True"),
        ("FILESYSTEM2_SOURCE", "/t"),
        ("FILESYSTEM2_TARGET", "t"),
        ("FILESYSTEM2_DRIVER", "VirtioFS"),
    ])
    .unwrap();
    assert_eq!(
        specs[0].source,
        Source::Host {
            path: "/s".into(),
            transport: Transport::NineP {
                access: AccessMode::Mapped
            }
        }
    );
    assert!(specs[0].readonly);
    assert_eq!(
        specs[1].source,
        Source::Host {
            path: "/t".into(),
            transport: Transport::Virtiofs
        }
    );
    // The advice names the share's own variable.
    let e = env::parse_env([
        ("FILESYSTEM2_SOURCE", "/s"),
        ("FILESYSTEM2_TARGET", "t"),
        ("FILESYSTEM2_ACCESSMODE", "squash"),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("use FILESYSTEM2_DRIVER=9p"), "{e}");
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

/// A share given no tag gets `vmshare<N>`; one that a later share asks
/// for by name is not taken, so the two do not collide (the later one
/// was refused as "used by another share"). Two shares asking for one
/// tag stay refused.
#[test]
fn generated_tags_leave_the_asked_ones_alone() {
    // Two 9p shares, of /a and /b, with these targets, planned for QEMU.
    let two_shares = |first: &str, second: &str| {
        let specs = env::parse_env([
            ("FILESYSTEM_SOURCE", "/a"),
            ("FILESYSTEM_TARGET", first),
            ("FILESYSTEM_DRIVER", "9p"),
            ("FILESYSTEM2_SOURCE", "/b"),
            ("FILESYSTEM2_TARGET", second),
            ("FILESYSTEM2_DRIVER", "9p"),
        ])
        .unwrap();
        plan(
            &specs,
            &PlanConfig::new(Vmm::Qemu, "/v", "/s"),
            &ImagesAreFiles,
        )
    };
    let p = two_shares("/in/a", "vmshare0").unwrap();
    let tags: Vec<&str> = p.shares.iter().map(|s| s.tag.as_str()).collect();
    assert_eq!(tags, ["vmshare1", "vmshare0"]);
    let e = two_shares("t", "t").unwrap_err();
    // A tag names its mount point too, so this is two mounts on one.
    assert!(e.to_string().contains("two mounts on /mnt/t"), "{e}");
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
    // docker's --tmpfs takes any mount flag: dirsync, and the defaults.
    assert!(check("/t:dirsync,async,atime,diratime,norelatime,defaults").is_ok());
    // The kernel reads a mode as octal, leading zero or not, and a size
    // with any of memparse's suffixes.
    assert!(check("/t:mode=01777,size=1t").is_ok());
    for bad in [
        "/t:size=bogus",
        "/t:size=-1",
        "/t:mode=0o777",
        "/t:mode=17777",
        "/t:frob",
    ] {
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

/// What the machine settings would have rendered wrongly: a tap name
/// Linux cannot have went to every VMM as it was, a comma in it was not
/// doubled for QEMU and split Cloud Hypervisor's `--net`, and a runtime
/// directory with a comma split its `--vsock` (its parser has no escape).
#[test]
fn machine_settings_the_vmm_would_misread_are_refused() {
    use vmshare_plan::render::{render, NetConfig, RenderConfig};
    let specs = vmshare_plan::docker::parse_args(
        &["/srv/data:/data".into()],
        &[],
        &[],
        std::path::Path::new("/"),
    )
    .unwrap();
    let machine = |tap: &str, runtime_dir: &str| RenderConfig {
        kernel: "/k".into(),
        initrd: None,
        memory_mib: 512,
        vcpus: 1,
        net: Some(NetConfig {
            tap: Some(tap.into()),
            mac: "06:00:0a:00:02:0f".into(),
        }),
        vsock_cid: Some(3),
        runtime_dir: runtime_dir.into(),
    };
    let rendered = |vmm: Vmm, tap: &str, runtime_dir: &str| {
        let p = plan(
            &specs,
            &PlanConfig::new(vmm, "/vols", "/state"),
            &ImagesAreFiles,
        )
        .unwrap();
        render(&p, &machine(tap, runtime_dir)).map_err(|e| e.to_string())
    };
    for vmm in [Vmm::Qemu, Vmm::Firecracker, Vmm::CloudHypervisor] {
        for bad in [
            "",
            "averyveryverylongtapname",
            "tap/0",
            "tap:0",
            "tap 0",
            ".",
            "..",
        ] {
            let e = rendered(vmm, bad, "/rt").unwrap_err();
            assert!(e.starts_with("tap device '"), "{vmm} {bad:?}: {e}");
            assert!(e.contains("ip -brief link"), "{vmm} {bad:?}: {e}");
        }
        // Fifteen bytes is Linux's most.
        assert!(rendered(vmm, "abcdefghijklmno", "/rt").is_ok(), "{vmm}");
    }
    let qemu = rendered(Vmm::Qemu, "tap,0", "/rt").unwrap();
    assert!(
        qemu.args
            .iter()
            .any(|a| a.contains("ifname=tap,,0,script=no")),
        "{:?}",
        qemu.args
    );
    let e = rendered(Vmm::CloudHypervisor, "tap,0", "/rt").unwrap_err();
    assert!(
        e.starts_with("network: cloud-hypervisor cannot take a tap name with a comma (tap,0)"),
        "{e}"
    );
    let e = rendered(Vmm::CloudHypervisor, "tap0", "/rt,1").unwrap_err();
    assert_eq!(
        e,
        "vsock: cloud-hypervisor cannot take a path with a comma (/rt,1/vsock.sock); \
         rename it, or use --runtime-dir without commas"
    );
    assert!(rendered(Vmm::CloudHypervisor, "tap0", "/rt").is_ok());
}

/// A socket in the runtime directory longer than `sun_path` holds was
/// rendered as it was: virtiofsd, or Firecracker's and Cloud Hypervisor's
/// vsock, could not bind it.
#[test]
fn sockets_too_long_for_sun_path_are_refused() {
    use vmshare_plan::render::{render, RenderConfig, MAX_SOCKET_PATH};
    let specs = env::parse_env([
        ("FILESYSTEM_SOURCE", "/srv/data"),
        ("FILESYSTEM_TARGET", "share"),
        ("FILESYSTEM_DRIVER", "virtiofs"),
    ])
    .unwrap();
    let machine = |runtime_dir: String, vsock: bool| RenderConfig {
        kernel: "/k".into(),
        initrd: None,
        memory_mib: 512,
        vcpus: 1,
        net: None,
        vsock_cid: vsock.then_some(3),
        runtime_dir: runtime_dir.into(),
    };
    let rendered = |vmm: Vmm, specs: &[vmshare_plan::VolumeSpec], rt: String, vsock: bool| {
        let p = plan(
            specs,
            &PlanConfig::new(vmm, "/vols", "/state"),
            &ImagesAreFiles,
        )
        .unwrap();
        render(&p, &machine(rt, vsock)).map_err(|e| e.to_string())
    };
    // "/virtiofsd-share.sock" is 21 bytes.
    let dir = |len: usize| format!("/{}", "r".repeat(len - 1));
    for vmm in [Vmm::Qemu, Vmm::CloudHypervisor] {
        assert!(
            rendered(vmm, &specs, dir(MAX_SOCKET_PATH - 21), false).is_ok(),
            "{vmm}"
        );
        let e = rendered(vmm, &specs, dir(MAX_SOCKET_PATH - 20), false).unwrap_err();
        assert!(
            e.contains("virtiofsd (/rrr") && e.contains("is 108 bytes, and a Unix socket's path is at most 107; give a shorter --runtime-dir"),
            "{vmm}: {e}"
        );
    }
    // "/vsock.sock" is 11 bytes; QEMU's vhost-vsock has no socket.
    let e = rendered(Vmm::Firecracker, &[], dir(MAX_SOCKET_PATH - 10), true).unwrap_err();
    assert!(e.contains("the vsock device"), "{e}");
    assert!(rendered(Vmm::Firecracker, &[], dir(MAX_SOCKET_PATH - 11), true).is_ok());
    assert!(rendered(Vmm::Qemu, &[], dir(200), true).is_ok());
}

/// Copy volumes whose images or write-backs collide: an image built in a
/// runtime directory inside the tree it copies (`vmshare image build`
/// refuses that output), and two read-write copies of one tree, whose
/// images would both be written back into it at exit. Read-only copies
/// are never written back and may overlap.
#[test]
fn overlapping_copy_volumes_are_refused() {
    use std::path::Path;
    let check = |volumes: &[&str], state: &str| {
        let v: Vec<String> = volumes.iter().map(|s| s.to_string()).collect();
        let specs = vmshare_plan::docker::parse_args(&v, &[], &[], Path::new("/")).unwrap();
        plan(
            &specs,
            &PlanConfig::new(Vmm::Qemu, "/vols", state),
            &vmshare_plan::FakeHost::new(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    for copy in ["/p:/c:copy", "/p:/c:ro,copy"] {
        let e = check(&[copy], "/p/rt").unwrap_err();
        assert_eq!(
            e,
            format!(
                "-v {copy}: its image would be built in /p/rt, inside /p, the tree it copies \
                 (and so into its own copy); put the runtime directory elsewhere \
                 (vmshare plan --runtime-dir, vmshare run --state-dir)"
            )
        );
    }
    assert!(check(&["/p:/c:copy"], "/p").is_err());
    assert!(check(&["/p:/c:copy"], "/prt").is_ok());

    let e = check(&["/src:/c:copy", "/src/:/d:copy"], "/rt").unwrap_err();
    assert_eq!(
        e,
        "'-v /src:/c:copy' and '-v /src/:/d:copy' copy the same directory, /src, and both \
         are written back at exit, one over the other's changes; copy it once, or make one ro,copy"
    );
    let e = check(&["/src/a:/c:copy", "/src:/d:copy"], "/rt").unwrap_err();
    assert!(
        e.starts_with(
            "'-v /src/a:/c:copy' and '-v /src:/d:copy' copy /src/a and /src, which holds it"
        ) && e.ends_with("copy only /src, or make one ro,copy"),
        "{e}"
    );
    let e = check(&["/src:/c:copy", "/src/a:/d:copy"], "/rt").unwrap_err();
    assert!(e.contains("copy /src and /src/a inside it"), "{e}");
    // Nothing comes back from a read-only copy; /srcs is not inside /src.
    assert!(check(&["/src:/c:copy", "/src/a:/d:ro,copy"], "/rt").is_ok());
    assert!(check(&["/src:/c:ro,copy", "/src:/d:ro,copy"], "/rt").is_ok());
    assert!(check(&["/src:/c:copy", "/srcs:/d:copy"], "/rt").is_ok());
}

/// A `/` at the end of a source asks for a directory, as docker's bind
/// of `/etc/hosts/` fails: the file was mounted. A directory so written,
/// or a file without it, is as before.
#[test]
fn a_final_slash_asks_for_a_directory() {
    use std::path::Path;
    use vmshare_plan::host::HostKind;
    let host = vmshare_plan::FakeHost::new()
        .with("/etc/hosts", HostKind::File)
        .with("/i/db.ext4", HostKind::File);
    let check = |volume: &str, mount: &str| {
        let words = |w: &str| -> Vec<String> { w.split_whitespace().map(String::from).collect() };
        let specs =
            vmshare_plan::docker::parse_args(&words(volume), &words(mount), &[], Path::new("/"))
                .unwrap();
        plan(
            &specs,
            &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
            &host,
        )
    };
    let e = check("/etc/hosts/:/x", "").unwrap_err().to_string();
    assert_eq!(
        e,
        "-v /etc/hosts/:/x: /etc/hosts is a file, but the '/' at the end of the source asks \
         for a directory; drop it"
    );
    let e = check("", "type=bind,src=/etc/hosts/,dst=/x")
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("asks for a directory; drop it"), "{e}");
    let e = check("", "type=ext4,src=/i/db.ext4/,dst=/x")
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("asks for a directory; drop it"), "{e}");
    let p = check("/etc/hosts:/x", "").unwrap();
    assert_eq!(p.nfs_exports[0].single_file.as_deref(), Some("hosts"));
    let p = check("/etc/:/x", "").unwrap();
    assert_eq!(p.nfs_exports[0].host_path.as_os_str(), "/etc");
}

/// Nothing can be mounted under a single file (the guest's mount failed
/// with ENOTDIR after boot), and a target longer than Linux allows is
/// refused before boot too (ENAMETOOLONG), from every front end.
#[test]
fn targets_the_guest_could_not_mount_on() {
    use std::path::Path;
    use vmshare_plan::host::HostKind;
    let host = vmshare_plan::FakeHost::new().with("/etc/hosts", HostKind::File);
    let check = |volumes: &[&str]| {
        let v: Vec<String> = volumes.iter().map(|s| s.to_string()).collect();
        vmshare_plan::docker::parse_args(&v, &[], &[], Path::new("/"))
            .and_then(|specs| {
                plan(
                    &specs,
                    &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
                    &host,
                )
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = check(&["/etc/hosts:/a", "/etc:/a/b"]).unwrap_err();
    assert_eq!(
        e,
        "'-v /etc:/a/b' would be mounted under '-v /etc/hosts:/a', which puts a single file \
         on /a; a mount point must be a directory: give '-v /etc:/a/b' a target outside /a, \
         or bind a directory there"
    );
    // Beside a file, or a file under a directory, is fine.
    assert!(check(&["/etc/hosts:/a", "/etc:/ab"]).is_ok());
    assert!(check(&["/etc:/a", "/etc/hosts:/a/hosts"]).is_ok());

    let long = format!("/{}", "a".repeat(300));
    let e = check(&[&format!("/etc:{long}")]).unwrap_err();
    assert!(
        e.contains("is 300 bytes, and a Linux name is at most 255"),
        "{e}"
    );
    let specs =
        env::parse_env([("FILESYSTEM_SOURCE", "/s"), ("FILESYSTEM_TARGET", &long)]).unwrap();
    let e = plan(
        &specs,
        &PlanConfig::new(Vmm::Qemu, "/vols", "/state"),
        &host,
    )
    .unwrap_err();
    assert!(e.to_string().contains("ENAMETOOLONG"), "{e}");
    let e = oci_error(&format!(
        r#"{{"type": "tmpfs", "source": "tmpfs", "destination": "{long}"}}"#
    ));
    assert!(e.contains("ENAMETOOLONG"), "{e}");
}
