//! What `vmshare plan` prints, started as printed: the QEMU command line
//! of a plan with `--write-initrd` boots a guest that mounts its volumes
//! from a `vmshare serve` serving the plan's exports, and runs CMD on the
//! serial console. QEMU stands in for Firecracker and Cloud Hypervisor,
//! which need KVM; the initramfs and the init's serial-console mode are
//! the same for all three.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::serve::Serve;
use common::{assert_exit, scratch_dir, text, Harness};

/// The NFS port a `vmshare serve` started on port 0 says it listens on.
fn listening_port(log: &str) -> u16 {
    let line = log.lines().find(|l| l.contains("listening")).unwrap();
    let after = line.split("nfs=127.0.0.1:").nth(1).unwrap();
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[test]
fn a_guest_booted_from_the_plan_mounts_its_volumes() {
    let Some(h) = Harness::new() else {
        return;
    };
    let dir = scratch_dir("plan-boot");
    let (rw, ro) = (dir.join("rw"), dir.join("ro"));
    std::fs::create_dir(&rw).unwrap();
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(rw.join("in.txt"), "from the host\n").unwrap();
    std::fs::write(ro.join("ro.txt"), "read-only\n").unwrap();

    // The plan's exports are /v0, /v1... in volume order; the guest
    // reaches the host's 127.0.0.1 as 10.0.2.2 through QEMU's user network,
    // from unprivileged ports. Its root writes as this user, as with
    // `vmshare run`.
    let ids = format!(
        "anonuid={},anongid={}",
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw()
    );
    let mut serve = Command::new(&h.vmshare);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("state"))
        .args(["--export"])
        .arg(format!("{} /v0 127.0.0.1(rw,insecure,{ids})", rw.display()))
        .args(["--export"])
        .arg(format!("{} /v1 127.0.0.1(ro,insecure,{ids})", ro.display()))
        .env("RUST_LOG", "info");
    let server = Serve::start(serve);
    let port = listening_port(&server.log()).to_string();

    let script = "cat /data/in.txt /ro/ro.txt; echo from the guest > /data/out.txt; \
                  echo x > /ro/no.txt || echo refused; grep -c ' nfs ' /proc/mounts";
    let out = h.vmshare(&[
        "plan",
        "--vmm",
        "qemu",
        "-v",
        &format!("{}:/data", rw.display()),
        "-v",
        &format!("{}:/ro:ro", ro.display()),
        "--nfs-server",
        "10.0.2.2",
        "--nfs-port",
        &port,
        "--write-initrd",
        dir.join("initrd.cpio").to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_exit(&out, 0);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exports: Vec<(&str, &str)> = doc["plan"]["nfs_exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["export_path"].as_str().unwrap(),
                e["host_path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        exports,
        [("/v0", rw.to_str().unwrap()), ("/v1", ro.to_str().unwrap())]
    );
    let render = &doc["render"];
    let mut args: Vec<String> = render["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    // Under TCG the guest kernel is told the host's TSC frequency, as
    // `vmshare run` tells it, or calibrating it can hang on a busy host.
    if let Some(khz) = vmshare_vmm::qemu::host_tsc_khz() {
        let append = args.iter().position(|a| a == "-append").unwrap() + 1;
        args[append].push_str(&format!(" tsc_early_khz={khz} tsc=reliable no_timer_check"));
    }
    let qemu = Command::new(render["program"].as_str().unwrap())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = common::wait_with_watchdog(qemu, Duration::from_secs(180));
    // The console is a terminal: its lines end in \r\n.
    let console = text(&run.stdout).replace('\r', "");
    assert!(
        run.status.success(),
        "QEMU: {:?}\n{}\n{console}\n--- server ---\n{}",
        run.status,
        text(&run.stderr),
        server.log()
    );
    for want in [
        "from the host\nread-only\n",
        "refused\n2\n",
        "vmshare init: exit status 0",
    ] {
        assert!(
            console.contains(want),
            "{want:?} not on the console:\n{console}\n--- server ---\n{}",
            server.log()
        );
    }
    assert_eq!(
        std::fs::read_to_string(rw.join("out.txt")).unwrap(),
        "from the guest\n"
    );
    assert!(!ro.join("no.txt").exists());
}
