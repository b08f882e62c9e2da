#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Golden tests: every input under `tests/golden/` planned and rendered for
//! every VMM, compared with `<input>.<vmm>.golden.json`. `UPDATE_GOLDEN=1`
//! rewrites the expected files; review the diff before committing.

use std::path::{Path, PathBuf};

use vmshare_plan::host::ImagesAreFiles;
use vmshare_plan::plan::{plan, PlanConfig, RootDisk, Vmm};
use vmshare_plan::render::{document, render, NetConfig, RenderConfig};
use vmshare_plan::{docker, env, oci, ImageFormat, PlanError, VolumeSpec};

const VMMS: [Vmm; 3] = [Vmm::Qemu, Vmm::Firecracker, Vmm::CloudHypervisor];

fn machine() -> RenderConfig {
    RenderConfig {
        kernel: "/usr/lib/vmshare/vmlinuz".into(),
        initrd: Some("/run/user/1000/vmshare/run1/initrd.img".into()),
        memory_mib: 512,
        vcpus: 2,
        net: Some(NetConfig {
            tap: Some("vmtap0".into()),
            mac: "06:00:0a:00:02:0f".into(),
        }),
        vsock_cid: Some(3),
        runtime_dir: "/run/user/1000/vmshare/run1".into(),
    }
}

/// One input read: the volumes, root disks and front-end notes.
type Loaded = (Vec<VolumeSpec>, Vec<RootDisk>, Vec<String>);

fn load(path: &Path) -> Result<Loaded, PlanError> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    if name.ends_with(".oci.json") {
        let o = oci::parse_config(&text)?;
        return Ok((o.volumes, Vec::new(), o.notes));
    }
    if name.ends_with(".env") {
        let vars = text.lines().filter_map(|l| l.split_once('='));
        return Ok((env::parse_env(vars)?, Vec::new(), Vec::new()));
    }
    assert!(name.ends_with(".docker"), "unknown input kind: {name}");
    let (mut v, mut m, mut t, mut roots) = (vec![], vec![], vec![], vec![]);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (flag, value) = line.split_once(' ').unwrap();
        match flag {
            "-v" => v.push(value.to_string()),
            "--mount" => m.push(value.to_string()),
            "--tmpfs" => t.push(value.to_string()),
            "--root" => roots.push(RootDisk {
                image: value.into(),
                format: if value.ends_with(".erofs") {
                    ImageFormat::Erofs
                } else {
                    ImageFormat::Ext4
                },
                readonly: true,
            }),
            other => panic!("{name}: unknown flag {other}"),
        }
    }
    let specs = docker::parse_args(&v, &m, &t, Path::new("/home/user/project"))?;
    Ok((specs, roots, Vec::new()))
}

fn run_case(path: &Path, vmm: Vmm) -> serde_json::Value {
    let result = load(path).and_then(|(specs, roots, front_notes)| {
        let mut config = PlanConfig::new(
            vmm,
            "/var/lib/vmshare/volumes",
            "/run/user/1000/vmshare/run1",
        );
        config.root_disks = roots;
        let mut p = plan(&specs, &config, &ImagesAreFiles)?;
        p.notes.splice(0..0, front_notes);
        let r = render(&p, &machine())?;
        Ok(document(&p, &r))
    });
    result.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
}

fn inputs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".oci.json") || n.ends_with(".env") || n.ends_with(".docker")
        })
        .collect();
    v.sort();
    v
}

/// Each case's expected output, for other tests to inspect.
pub fn golden_path(input: &Path, vmm: Vmm) -> PathBuf {
    PathBuf::from(format!("{}.{vmm}.golden.json", input.display()))
}

#[test]
fn golden_outputs_match() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let cases = inputs();
    assert!(cases.len() >= 10, "golden inputs missing");
    for input in &cases {
        for vmm in VMMS {
            let got = serde_json::to_string_pretty(&run_case(input, vmm)).unwrap() + "\n";
            let want_path = golden_path(input, vmm);
            if update {
                std::fs::write(&want_path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&want_path).unwrap_or_default();
            if got != want {
                failures.push(format!("{} (got:\n{got})", want_path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatch; rerun with UPDATE_GOLDEN=1 and review:\n{}",
        failures.join("\n")
    );
}
