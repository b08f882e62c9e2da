//! Static IPv4 set-up with the classic socket ioctls: a handful of calls,
//! no netlink code and no `ip` binary in the guest.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use vmshare_plan::guest::{GuestMount, GuestNet};

use crate::InitError;

const INTERFACE_TIMEOUT: Duration = Duration::from_secs(20);

/// Brings up `lo`, which every guest has, with or without a network:
/// programs talk to 127.0.0.1 (it was down in a guest without one).
pub(crate) fn loopback_up() -> Result<(), InitError> {
    Socket::new()?.up("lo")
}

/// Brings up `lo` and the interface with the address (and default route)
/// given.
pub(crate) fn configure(net: &GuestNet) -> Result<(), InitError> {
    let (addr, prefix) = parse_cidr(&net.address).ok_or_else(|| {
        InitError::sys(
            format!("network address {:?} (expected a.b.c.d/len)", net.address),
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    let sock = Socket::new()?;
    sock.up("lo")?;
    wait_for_interface(&net.interface)?;
    sock.set_addr(&net.interface, libc::SIOCSIFADDR, addr)?;
    sock.set_addr(&net.interface, libc::SIOCSIFNETMASK, netmask(prefix))?;
    sock.up(&net.interface)?;
    if let Some(gw) = &net.gateway {
        let gw: Ipv4Addr = gw.parse().map_err(|_| {
            InitError::sys(
                format!("gateway {gw:?}"),
                std::io::ErrorKind::InvalidInput.into(),
            )
        })?;
        sock.default_route(gw)?;
    }
    Ok(())
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, p) = s.split_once('/').unwrap_or((s, "32"));
    let prefix: u8 = p.parse().ok()?;
    (prefix <= 32).then_some(())?;
    Some((a.parse().ok()?, prefix))
}

fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(bits)
}

fn wait_for_interface(name: &str) -> Result<(), InitError> {
    let deadline = Instant::now() + INTERFACE_TIMEOUT;
    while !std::path::Path::new("/sys/class/net").join(name).exists() {
        if Instant::now() > deadline {
            return Err(InitError::sys(
                format!("waiting for network interface {name} (is virtio_net loaded?)"),
                std::io::ErrorKind::TimedOut.into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        // AF_INET is 2: it fits every sa_family_t.
        #[allow(clippy::cast_possible_truncation)]
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // sockaddr is plain old data; this is how the ioctl interface is meant
    // to be used.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// glibc's `struct rtentry` (not in the libc crate for glibc targets).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

struct Socket(std::os::fd::OwnedFd);

impl Socket {
    fn new() -> Result<Socket, InitError> {
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(InitError::sys(
                "socket(AF_INET)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a freshly created descriptor owned by nobody else.
        Ok(Socket(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    fn ifreq(name: &str) -> Result<libc::ifreq, InitError> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(InitError::sys(
                format!("interface name {name:?}"),
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    }

    fn ioctl<T>(&self, what: &str, request: libc::c_ulong, arg: &mut T) -> Result<(), InitError> {
        use std::os::fd::AsRawFd;
        // SAFETY: each caller passes the structure type the request expects
        // (ifreq or rtentry), borrowed mutably for the duration of the call.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), request, arg as *mut T) };
        if r < 0 {
            return Err(InitError::sys(
                what.to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn set_addr(
        &self,
        name: &str,
        request: libc::c_ulong,
        addr: Ipv4Addr,
    ) -> Result<(), InitError> {
        let mut req = Socket::ifreq(name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        self.ioctl(&format!("setting {addr} on {name}"), request, &mut req)
    }

    fn up(&self, name: &str) -> Result<(), InitError> {
        let mut req = Socket::ifreq(name)?;
        self.ioctl(
            &format!("reading flags of {name}"),
            libc::SIOCGIFFLAGS,
            &mut req,
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        // IFF_UP is 1: it fits the short the ioctl uses.
        #[allow(clippy::cast_possible_truncation)]
        let up = libc::IFF_UP as libc::c_short;
        req.ifr_ifru.ifru_flags = flags | up;
        self.ioctl(&format!("bringing up {name}"), libc::SIOCSIFFLAGS, &mut req)
    }

    fn default_route(&self, gw: Ipv4Addr) -> Result<(), InitError> {
        let mut rt = RtEntry {
            rt_pad1: 0,
            rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_gateway: sockaddr_in(gw),
            rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
            rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY),
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: std::ptr::null_mut(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        self.ioctl(
            &format!("adding default route via {gw}"),
            libc::SIOCADDRT,
            &mut rt,
        )
    }
}

/// `/etc/hosts` (localhost, and the host name at the guest's address) and,
/// when the network names servers, `/etc/resolv.conf`: their paths and
/// contents, as docker writes them for a container. Without them names
/// did not resolve (only `nslookup NAME 10.0.2.3` did) and `hostname -i`
/// failed.
fn name_files(hostname: &str, net: Option<&GuestNet>) -> Vec<(&'static str, String)> {
    let addr = net
        .and_then(|n| parse_cidr(&n.address))
        .map_or_else(|| "127.0.1.1".to_string(), |(a, _)| a.to_string());
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if !hostname.is_empty() {
        hosts.push_str(&format!("{addr}\t{hostname}\n"));
    }
    let mut files = vec![("/etc/hosts", hosts)];
    if let Some(n) = net.filter(|n| !n.dns.is_empty()) {
        let text: String = n.dns.iter().map(|s| format!("nameserver {s}\n")).collect();
        files.push(("/etc/resolv.conf", text));
    }
    files
}

/// Writes the name files (see [`name_files`]) in the root CMD runs in (a
/// `--rootfs` has a writable layer over it), before the volumes, so that
/// a volume on either file wins.
pub(crate) fn write_name_files(hostname: &str, net: Option<&GuestNet>) -> Result<(), InitError> {
    for (path, text) in name_files(hostname, net) {
        std::fs::create_dir_all("/etc")
            .and_then(|()| std::fs::write(path, text))
            .map_err(|e| InitError::sys(format!("writing {path}"), e))?;
    }
    Ok(())
}

/// Where the name files are kept for [`cover_name_files`].
const NAME_FILES_DIR: &str = "/run/vmshare/names";

/// After the volumes: where one covers `/etc` (a volume on `/etc` itself)
/// and none is on the file, the name files are bind-mounted over what it
/// has, as docker mounts its own over a container's `/etc`. Without this
/// such a guest had no `/etc/hosts` at all. As with docker, the mount
/// point is an empty file made in the volume when it has none (in a
/// read-only volume, in a layer over it).
pub(crate) fn cover_name_files(
    mounts: &[GuestMount],
    hostname: &str,
    net: Option<&GuestNet>,
) -> Result<(), InitError> {
    for (path, text) in name_files(hostname, net) {
        let target = Path::new(path);
        let covered = mounts.iter().any(|m| {
            let t = Path::new(&m.target);
            target.starts_with(t) && t != target && t != Path::new("/")
        });
        let own = mounts.iter().any(|m| Path::new(&m.target) == target);
        if !covered || own {
            continue;
        }
        let fail = |e: std::io::Error| InitError::sys(format!("mounting the guest's {path}"), e);
        let kept = Path::new(NAME_FILES_DIR).join(target.file_name().unwrap_or_default());
        std::fs::create_dir_all(NAME_FILES_DIR).map_err(fail)?;
        std::fs::write(&kept, text).map_err(fail)?;
        crate::mounts::make_mount_point(target, true).map_err(fail)?;
        rustix::mount::mount_bind(&kept, target).map_err(|e| fail(e.into()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_and_netmask() {
        assert_eq!(
            parse_cidr("10.0.2.15/24"),
            Some((Ipv4Addr::new(10, 0, 2, 15), 24))
        );
        assert_eq!(parse_cidr("10.0.2.15/33"), None);
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
