//! The portmapper: portmap v2 and rpcbind v3 and v4 (RFC 1833), answering
//! for this server's own programs and nothing else.
//!
//! Version 2 is what the Linux kernel asks over IPv4 when a mount names no
//! port. Versions 3 and 4 are there for everyone else:
//! - the kernel asks rpcbind v4, then v3, for a server addressed over IPv6
//!   (version 2 has no way to say "IPv6");
//! - libtirpc's tools (`showmount`, `rpcinfo`) ask v4 then v3 over TCP, and
//!   fall back to version 2 only over UDP, which this server does not
//!   serve: without v3/v4, `showmount -e` finds nothing.
//!
//! Registration (SET, UNSET) is refused: this is not a general rpcbind, and
//! a guest must not be able to change where another client is sent. The
//! forwarding procedures (CALLIT, BCAST, INDIRECT) are not offered at all:
//! they turn a portmapper into a relay and an amplifier. Nor are the
//! address-format conversions (UADDR2TADDR, TADDR2UADDR, whose `netbuf`
//! is the caller's own machine's format) or GETSTAT.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use vmshare_wire::{Decoder, Encoder, XdrError};

use crate::nfs3::DecodeError;
use crate::programs::{MOUNT, NFS, NFSACL, PORTMAP};

/// Longest netid, universal address or owner accepted in an rpcbind call.
/// The protocol leaves them unbounded; the longest real ones ("tcp6", an
/// IPv6 address with its port, a user name) are far shorter.
pub const RPCB_STRING_MAX: u32 = 255;

/// `IPPROTO_TCP`, as portmap v2 names the transport.
pub const IPPROTO_TCP: u32 = 6;

/// Decoded portmap v2 calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PortmapCall {
    Null,
    Set,
    Unset,
    GetPort { prog: u32, vers: u32, prot: u32 },
    Dump,
}

/// Decodes portmap v2 arguments.
pub fn decode_portmap(proc_: u32, args: &[u8]) -> Result<PortmapCall, DecodeError> {
    let d = &mut Decoder::new(args);
    let mapping = |d: &mut Decoder<'_>| -> Result<(u32, u32, u32, u32), XdrError> {
        Ok((d.u32()?, d.u32()?, d.u32()?, d.u32()?))
    };
    Ok(match proc_ {
        0 => PortmapCall::Null,
        1 => {
            mapping(d)?;
            PortmapCall::Set
        }
        2 => {
            mapping(d)?;
            PortmapCall::Unset
        }
        3 => {
            let (prog, vers, prot, _port) = mapping(d)?;
            PortmapCall::GetPort { prog, vers, prot }
        }
        4 => PortmapCall::Dump,
        p => return Err(DecodeError::NoSuchProcedure(p)),
    })
}

/// The `rpcb` structure of rpcbind v3/v4: what a lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpcb<'a> {
    /// Program number.
    pub prog: u32,
    /// Version number.
    pub vers: u32,
    /// Transport, as a netid (`tcp`, `tcp6`, `udp`...).
    pub netid: &'a [u8],
    /// A universal address; in a lookup, the caller's (unused here).
    pub addr: &'a [u8],
    /// Owner (unused here).
    pub owner: &'a [u8],
}

impl<'a> Rpcb<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, XdrError> {
        Ok(Rpcb {
            prog: d.u32()?,
            vers: d.u32()?,
            netid: d.string(RPCB_STRING_MAX)?,
            addr: d.string(RPCB_STRING_MAX)?,
            owner: d.string(RPCB_STRING_MAX)?,
        })
    }
}

/// Decoded rpcbind v3 and v4 calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcbindCall<'a> {
    /// NULL.
    Null,
    /// SET or UNSET: refused.
    Register,
    /// GETADDR (v3, v4): one transport's address for the program, of the
    /// version asked if served, else of another version (so that the
    /// client learns from the program itself which versions it serves).
    GetAddr(Rpcb<'a>),
    /// GETVERSADDR (v4): like GETADDR, for the version asked only.
    GetVersAddr(Rpcb<'a>),
    /// GETADDRLIST (v4): the program's address on every transport.
    GetAddrList(Rpcb<'a>),
    /// DUMP: every registration.
    Dump,
    /// GETTIME: the server's clock, in seconds since 1970.
    GetTime,
}

/// Decodes rpcbind v3 or v4 (`vers`) arguments.
pub fn decode_rpcbind(vers: u32, proc_: u32, args: &[u8]) -> Result<RpcbindCall<'_>, DecodeError> {
    let d = &mut Decoder::new(args);
    Ok(match (vers, proc_) {
        (_, 0) => RpcbindCall::Null,
        (_, 1 | 2) => {
            Rpcb::decode(d)?;
            RpcbindCall::Register
        }
        (_, 3) => RpcbindCall::GetAddr(Rpcb::decode(d)?),
        (4, 9) => RpcbindCall::GetVersAddr(Rpcb::decode(d)?),
        (_, 4) => RpcbindCall::Dump,
        (_, 6) => RpcbindCall::GetTime,
        (4, 11) => RpcbindCall::GetAddrList(Rpcb::decode(d)?),
        (_, p) => return Err(DecodeError::NoSuchProcedure(p)),
    })
}

/// A transport this server can be reached over, as rpcbind names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Netid {
    Tcp,
    Tcp6,
}

impl Netid {
    fn parse(s: &[u8]) -> Option<Netid> {
        match s {
            b"tcp" => Some(Netid::Tcp),
            b"tcp6" => Some(Netid::Tcp6),
            _ => None,
        }
    }

    fn name(self) -> &'static [u8] {
        match self {
            Netid::Tcp => b"tcp",
            Netid::Tcp6 => b"tcp6",
        }
    }

    /// The protocol family, as GETADDRLIST reports it.
    fn family(self) -> &'static [u8] {
        match self {
            Netid::Tcp => b"inet",
            Netid::Tcp6 => b"inet6",
        }
    }
}

/// Where each program this server runs listens: what the portmapper
/// reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// NFS v3 (and NFSACL, which shares its port).
    pub nfs: SocketAddr,
    /// MOUNT v3.
    pub mount: SocketAddr,
    /// The portmapper.
    pub portmap: SocketAddr,
}

impl Default for Ports {
    fn default() -> Self {
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        Ports {
            nfs: any,
            mount: any,
            portmap: any,
        }
    }
}

/// The owner rpcbind v3/v4 reports for every registration.
const OWNER: &[u8] = b"vmshare";

/// `NC_TPI_COTS_ORD`: a connection-oriented transport with orderly release
/// (TCP), as GETADDRLIST describes transports.
const NC_TPI_COTS_ORD: u32 = 3;

impl Ports {
    /// The programs and versions served, each with its listener.
    fn services(&self) -> [(u32, u32, SocketAddr); 6] {
        [
            (NFS, 3, self.nfs),
            (NFSACL, 3, self.nfs),
            (MOUNT, 3, self.mount),
            (PORTMAP, 4, self.portmap),
            (PORTMAP, 3, self.portmap),
            (PORTMAP, 2, self.portmap),
        ]
    }

    /// Where `prog` listens: its version `vers`, or failing that (unless
    /// `exact`) any version, as rpcbind answers, so that `rpcinfo -t HOST
    /// PROG` and a client asking for a version not served reach the
    /// program and hear PROG_MISMATCH with the versions it has.
    fn find(&self, prog: u32, vers: u32, exact: bool) -> Option<SocketAddr> {
        let services = self.services();
        let of_prog = || services.iter().filter(|&&(p, _, _)| p == prog);
        of_prog()
            .find(|&&(_, v, _)| v == vers)
            .or_else(|| of_prog().find(|_| !exact))
            .map(|&(_, _, a)| a)
    }

    /// Answers a portmap v2 call.
    pub fn portmap(&self, call: PortmapCall, out: &mut Encoder) {
        match call {
            PortmapCall::Null => {}
            PortmapCall::Set | PortmapCall::Unset => {
                out.bool(false);
            }
            PortmapCall::GetPort { prog, vers, prot } => {
                // Version 2 speaks of IPv4 only; a listener that IPv4
                // clients cannot reach has no port to give.
                let port = match self.find(prog, vers, false) {
                    Some(a) if prot == IPPROTO_TCP && reaches(a, Netid::Tcp) => a.port(),
                    _ => 0,
                };
                out.u32(u32::from(port));
            }
            PortmapCall::Dump => {
                for (prog, vers, addr) in self.services() {
                    if reaches(addr, Netid::Tcp) {
                        out.bool(true)
                            .u32(prog)
                            .u32(vers)
                            .u32(IPPROTO_TCP)
                            .u32(u32::from(addr.port()));
                    }
                }
                out.bool(false);
            }
        }
    }

    /// Answers an rpcbind v3/v4 call that reached the server on `local`
    /// (the connection's own address, which stands in for a listener bound
    /// to a wildcard address); `now_secs` is asked only by GETTIME.
    pub fn rpcbind(
        &self,
        call: RpcbindCall<'_>,
        local: SocketAddr,
        now_secs: impl FnOnce() -> u32,
        out: &mut Encoder,
    ) {
        match call {
            RpcbindCall::Null => {}
            RpcbindCall::Register => {
                out.bool(false);
            }
            RpcbindCall::GetAddr(q) | RpcbindCall::GetVersAddr(q) => {
                let exact = matches!(call, RpcbindCall::GetVersAddr(_));
                // The empty string is "not registered".
                let uaddr = self
                    .find(q.prog, q.vers, exact)
                    .zip(Netid::parse(q.netid))
                    .and_then(|(a, n)| universal(a, n, local));
                out.string(uaddr.as_deref().unwrap_or_default().as_bytes());
            }
            RpcbindCall::GetAddrList(q) => {
                if let Some(a) = self.find(q.prog, q.vers, true) {
                    for n in [Netid::Tcp, Netid::Tcp6] {
                        if let Some(u) = universal(a, n, local) {
                            out.bool(true)
                                .string(u.as_bytes())
                                .string(n.name())
                                .u32(NC_TPI_COTS_ORD)
                                .string(n.family())
                                .string(b"tcp");
                        }
                    }
                }
                out.bool(false);
            }
            RpcbindCall::Dump => {
                for (prog, vers, addr) in self.services() {
                    for n in [Netid::Tcp, Netid::Tcp6] {
                        if let Some(u) = universal(addr, n, local) {
                            out.bool(true)
                                .u32(prog)
                                .u32(vers)
                                .string(n.name())
                                .string(u.as_bytes())
                                .string(OWNER);
                        }
                    }
                }
                out.bool(false);
            }
            RpcbindCall::GetTime => {
                out.u32(now_secs());
            }
        }
    }
}

/// Whether a listener bound to `bound` takes connections over `netid`. A
/// socket bound to the IPv6 wildcard takes IPv4 too (Linux's default, which
/// the server does not change).
fn reaches(bound: SocketAddr, netid: Netid) -> bool {
    match (bound.ip(), netid) {
        (IpAddr::V4(_), n) => n == Netid::Tcp,
        (IpAddr::V6(ip), _) if ip.is_unspecified() => true,
        (IpAddr::V6(ip), n) => ip.to_ipv4_mapped().is_some() == (n == Netid::Tcp),
    }
}

/// An IPv4 address as itself, not as the IPv6 form a dual-stack socket
/// reports it in.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The universal address (RFC 1833 §2.2: the address as text, then the
/// port's two bytes in decimal) at which a client on `netid` reaches a
/// listener bound to `bound`, asked through a connection to `local`. A
/// wildcard listener is reported at the address the client already
/// reached, when that is of the family asked for.
fn universal(bound: SocketAddr, netid: Netid, local: SocketAddr) -> Option<String> {
    if !reaches(bound, netid) {
        return None;
    }
    let ip = match (unmap(bound.ip()), netid, unmap(local.ip())) {
        (ip, _, _) if !ip.is_unspecified() => ip,
        (_, Netid::Tcp, here @ IpAddr::V4(_)) | (_, Netid::Tcp6, here @ IpAddr::V6(_)) => here,
        (_, Netid::Tcp, _) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, Netid::Tcp6, _) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let [hi, lo] = bound.port().to_be_bytes();
    Some(format!("{ip}.{hi}.{lo}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn getaddr(ports: &Ports, prog: u32, vers: u32, netid: &str, local: &str) -> String {
        lookup(ports, prog, vers, netid, local, false)
    }

    fn getversaddr(ports: &Ports, prog: u32, vers: u32, netid: &str) -> String {
        lookup(ports, prog, vers, netid, "10.0.0.1:111", true)
    }

    fn lookup(
        ports: &Ports,
        prog: u32,
        vers: u32,
        netid: &str,
        local: &str,
        exact: bool,
    ) -> String {
        let mut out = Encoder::default();
        let q = Rpcb {
            prog,
            vers,
            netid: netid.as_bytes(),
            addr: b"",
            owner: b"",
        };
        let call = if exact {
            RpcbindCall::GetVersAddr(q)
        } else {
            RpcbindCall::GetAddr(q)
        };
        ports.rpcbind(call, addr(local), || 0, &mut out);
        let mut d = Decoder::new(out.as_slice());
        let s = String::from_utf8_lossy(d.string(RPCB_STRING_MAX).expect("string")).into_owned();
        assert_eq!(d.remaining(), 0);
        s
    }

    /// Each row: program, version, netid asked, the address the client
    /// reached, and the universal address expected ("" is "not there").
    fn check(ports: &Ports, rows: &[(u32, u32, &str, &str, &str)]) {
        for &(prog, vers, netid, local, want) in rows {
            assert_eq!(
                getaddr(ports, prog, vers, netid, local),
                want,
                "{prog} v{vers} {netid} via {local}"
            );
        }
    }

    #[test]
    fn universal_addresses_name_the_port_in_two_bytes() {
        let ports = Ports {
            nfs: addr("10.0.0.1:2049"),
            mount: addr("10.0.0.1:20048"),
            portmap: addr("10.0.0.1:111"),
        };
        let at = "10.0.0.1:111";
        check(
            &ports,
            &[
                (NFS, 3, "tcp", at, "10.0.0.1.8.1"),
                (MOUNT, 3, "tcp", at, "10.0.0.1.78.80"),
                (PORTMAP, 4, "tcp", at, "10.0.0.1.0.111"),
                // Another version: where the program is, so that it can
                // say which versions it serves.
                (NFS, 4, "tcp", at, "10.0.0.1.8.1"),
                // Not served: a program, a transport.
                (100_021, 4, "tcp", at, ""),
                (NFS, 3, "udp", at, ""),
                // An IPv4 listener cannot be reached over IPv6.
                (NFS, 3, "tcp6", at, ""),
            ],
        );
        // GETVERSADDR wants the version itself.
        assert_eq!(getversaddr(&ports, NFS, 4, "tcp"), "");
        assert_eq!(getversaddr(&ports, NFS, 3, "tcp"), "10.0.0.1.8.1");
    }

    #[test]
    fn a_wildcard_listener_is_reported_where_the_client_came_in() {
        let ports = Ports {
            nfs: addr("0.0.0.0:2049"),
            mount: addr("[::]:2049"),
            portmap: addr("[::]:111"),
        };
        check(
            &ports,
            &[
                (NFS, 3, "tcp", "172.30.0.1:111", "172.30.0.1.8.1"),
                (NFS, 3, "tcp6", "172.30.0.1:111", ""),
                // Over IPv6 to a dual-stack portmapper: the IPv4
                // wildcard's address is not known, so it is the wildcard.
                (NFS, 3, "tcp", "[fd00::1]:111", "0.0.0.0.8.1"),
                (MOUNT, 3, "tcp6", "[fd00::1]:111", "fd00::1.8.1"),
                // An IPv4 client of a dual-stack socket arrives on a
                // mapped address.
                (MOUNT, 3, "tcp", "[::ffff:10.1.2.3]:111", "10.1.2.3.8.1"),
                (MOUNT, 3, "tcp6", "[::ffff:10.1.2.3]:111", "::.8.1"),
            ],
        );
    }

    #[test]
    fn v2_answers_only_for_what_ipv4_reaches() {
        let ports = Ports {
            nfs: addr("[fd00::1]:2049"),
            mount: addr("127.0.0.1:635"),
            portmap: addr("127.0.0.1:111"),
        };
        let port = |prog, vers, prot| {
            let mut out = Encoder::default();
            ports.portmap(PortmapCall::GetPort { prog, vers, prot }, &mut out);
            Decoder::new(out.as_slice()).u32().expect("port")
        };
        assert_eq!(port(MOUNT, 3, IPPROTO_TCP), 635);
        assert_eq!(port(PORTMAP, 2, IPPROTO_TCP), 111);
        assert_eq!(port(NFS, 3, IPPROTO_TCP), 0, "an IPv6-only listener");
        assert_eq!(port(MOUNT, 3, 17), 0, "UDP");
        // Another version of a program served: its port, as rpcbind
        // answers (the program then says which versions it has).
        assert_eq!(port(MOUNT, 1, IPPROTO_TCP), 635);
        assert_eq!(port(100_021, 4, IPPROTO_TCP), 0, "a program not served");
    }

    #[test]
    fn dump_lists_every_program_on_every_transport_that_reaches_it() {
        let ports = Ports {
            nfs: addr("[::]:2049"),
            mount: addr("[::]:2049"),
            portmap: addr("127.0.0.1:111"),
        };
        let mut out = Encoder::default();
        ports.rpcbind(RpcbindCall::Dump, addr("127.0.0.1:111"), || 0, &mut out);
        let mut d = Decoder::new(out.as_slice());
        let mut rows = Vec::new();
        while d.bool().expect("more") {
            let r = Rpcb::decode(&mut d).expect("rpcb");
            rows.push(format!(
                "{} {} {} {} {}",
                r.prog,
                r.vers,
                String::from_utf8_lossy(r.netid),
                String::from_utf8_lossy(r.addr),
                String::from_utf8_lossy(r.owner)
            ));
        }
        assert_eq!(d.remaining(), 0);
        assert_eq!(
            rows,
            [
                "100003 3 tcp 127.0.0.1.8.1 vmshare",
                "100003 3 tcp6 ::.8.1 vmshare",
                "100227 3 tcp 127.0.0.1.8.1 vmshare",
                "100227 3 tcp6 ::.8.1 vmshare",
                "100005 3 tcp 127.0.0.1.8.1 vmshare",
                "100005 3 tcp6 ::.8.1 vmshare",
                "100000 4 tcp 127.0.0.1.0.111 vmshare",
                "100000 3 tcp 127.0.0.1.0.111 vmshare",
                "100000 2 tcp 127.0.0.1.0.111 vmshare",
            ]
        );
    }

    #[test]
    fn getaddrlist_describes_each_transport() {
        let ports = Ports {
            nfs: addr("[::]:2049"),
            ..Ports::default()
        };
        let q = Rpcb {
            prog: NFS,
            vers: 3,
            netid: b"",
            addr: b"",
            owner: b"",
        };
        let mut out = Encoder::default();
        ports.rpcbind(
            RpcbindCall::GetAddrList(q),
            addr("[::1]:111"),
            || 0,
            &mut out,
        );
        let mut d = Decoder::new(out.as_slice());
        let mut rows = Vec::new();
        while d.bool().expect("more") {
            let maddr = d.string(RPCB_STRING_MAX).expect("maddr").to_vec();
            let netid = d.string(RPCB_STRING_MAX).expect("netid").to_vec();
            let sem = d.u32().expect("semantics");
            let fam = d.string(RPCB_STRING_MAX).expect("family").to_vec();
            let proto = d.string(RPCB_STRING_MAX).expect("proto").to_vec();
            rows.push(
                [maddr, netid, sem.to_string().into_bytes(), fam, proto]
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .join(" "),
            );
        }
        assert_eq!(
            rows,
            ["0.0.0.0.8.1 tcp 3 inet tcp", "::1.8.1 tcp6 3 inet6 tcp"]
        );
    }

    #[test]
    fn registration_and_forwarding_are_not_offered() {
        let mut rpcb = Encoder::default();
        rpcb.u32(NFS)
            .u32(3)
            .string(b"tcp")
            .string(b"1.2.3.4.0.1")
            .string(b"x");
        assert_eq!(
            decode_rpcbind(4, 1, rpcb.as_slice()),
            Ok(RpcbindCall::Register)
        );
        let mut out = Encoder::default();
        Ports::default().rpcbind(RpcbindCall::Register, addr("127.0.0.1:111"), || 0, &mut out);
        assert_eq!(out.as_slice(), [0, 0, 0, 0], "SET answers false");
        // CALLIT/BCAST, UADDR2TADDR, TADDR2UADDR; INDIRECT, GETSTAT in v4.
        for (vers, p) in [
            (3, 5),
            (4, 5),
            (3, 7),
            (3, 8),
            (4, 10),
            (4, 12),
            (3, 9),
            (3, 11),
        ] {
            assert_eq!(
                decode_rpcbind(vers, p, rpcb.as_slice()),
                Err(DecodeError::NoSuchProcedure(p)),
                "v{vers} procedure {p}"
            );
        }
    }

    #[test]
    fn rpcbind_strings_are_bounded() {
        let mut e = Encoder::default();
        e.u32(NFS)
            .u32(3)
            .string(&[b'x'; RPCB_STRING_MAX as usize + 1]);
        assert!(matches!(
            decode_rpcbind(3, 3, e.as_slice()),
            Err(DecodeError::Garbage(XdrError::TooLong { .. }))
        ));
        // A length that claims more than was sent.
        let mut e = Encoder::default();
        e.u32(NFS).u32(3).u32(200);
        assert!(matches!(
            decode_rpcbind(4, 9, e.as_slice()),
            Err(DecodeError::Garbage(_))
        ));
    }
}
