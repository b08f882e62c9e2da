//! `--net tap`: a network namespace per VM holding a TAP device, so that
//! the VM's NIC and the NFS server meet on a link nobody else is on.
//!
//! The namespace is what makes this safe to run many times at once and
//! easy to clean: the fixed addresses below exist only inside it, nothing
//! on the host's own network changes, and deleting the namespace removes
//! the TAP with it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::process::Command;

use crate::{RunDir, VmmError};

/// The host (server) side of the link, inside the namespace.
pub const TAP_HOST_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
/// The guest's address.
pub const TAP_GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
/// Prefix length of the link.
pub const TAP_PREFIX: u8 = 30;
/// The TAP device's name inside the namespace.
pub const TAP_NAME: &str = "vmtap0";

/// A namespace with a TAP device in it, deleted on drop.
#[derive(Debug)]
pub struct TapNetwork {
    name: String,
    ns: OwnedFd,
}

impl TapNetwork {
    /// Creates namespace `vmshare-<run id>` with an up TAP device
    /// addressed [`TAP_HOST_ADDR`]/[`TAP_PREFIX`]. Needs root (or
    /// CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2. Recorded in the run
    /// directory so a crashed run's namespace is deleted by the next run.
    pub fn create(run: &RunDir) -> Result<TapNetwork, VmmError> {
        let name = format!("vmshare-{}", run.id());
        run.record("netns", &name)?;
        ip(&["netns", "add", &name])?;
        let net = TapNetwork {
            ns: open_ns(&name)?,
            name,
        };
        let n = net.name.as_str();
        let addr = format!("{TAP_HOST_ADDR}/{TAP_PREFIX}");
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "tuntap", "add", "dev", TAP_NAME, "mode", "tap"])?;
        ip(&["-n", n, "addr", "add", &addr, "dev", TAP_NAME])?;
        ip(&["-n", n, "link", "set", TAP_NAME, "up"])?;
        Ok(net)
    }

    /// The namespace's name (`ip netns` spelling).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace, for `setns` (QEMU is started inside it).
    pub fn ns_fd(&self) -> &OwnedFd {
        &self.ns
    }

    /// Binds a TCP listener inside the namespace on the TAP side's address
    /// (port 0 picks a free one). `setns` is per thread, so a short-lived
    /// thread enters the namespace, binds, and hands the socket back; the
    /// socket stays in the namespace it was created in.
    pub fn bind_tcp(&self, port: u16) -> Result<TcpListener, VmmError> {
        let ns = self
            .ns
            .try_clone()
            .map_err(|e| VmmError::io("duplicating namespace fd", e))?;
        let addr = SocketAddr::from((TAP_HOST_ADDR, port));
        let joined = std::thread::spawn(move || -> std::io::Result<TcpListener> {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )?;
            TcpListener::bind(addr)
        })
        .join();
        match joined {
            Ok(r) => {
                r.map_err(|e| VmmError::io(format!("binding {addr} in namespace {}", self.name), e))
            }
            Err(_) => Err(VmmError::Network("the namespace thread panicked".into())),
        }
    }
}

impl Drop for TapNetwork {
    fn drop(&mut self) {
        delete_stale(&self.name);
    }
}

fn open_ns(name: &str) -> Result<OwnedFd, VmmError> {
    let path = format!("/run/netns/{name}");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| VmmError::io(format!("opening {path}"), e))
}

fn ip(args: &[&str]) -> Result<(), VmmError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|_| VmmError::MissingTool {
            tool: "ip".into(),
            hint: "install iproute2; --net tap needs it".into(),
        })?;
    if !out.status.success() {
        return Err(VmmError::Network(format!(
            "ip {}: {} (--net tap needs root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Deletes a namespace (and the TAP inside it); quiet if it is gone.
pub(crate) fn delete_stale(name: &str) {
    if name.starts_with("vmshare-") && !name.contains('/') {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
    }
}
