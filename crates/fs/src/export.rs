//! Export configuration: which host directory is served, under which mount
//! path, to which clients, with which options.

use std::net::IpAddr;
use std::path::PathBuf;

/// How guest identities are mapped to host identities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Squash {
    /// uid 0 / gid 0 become the anonymous ids (exports(5) default).
    #[default]
    Root,
    /// Identities pass through unchanged.
    None,
    /// Every identity becomes the anonymous ids.
    All,
}

/// Options of one client rule (exports(5) spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// `ro` when false.
    pub writable: bool,
    /// Identity mapping.
    pub squash: Squash,
    /// Host uid that squashed callers become (`anonuid`, default 65534).
    pub anonuid: u32,
    /// Host gid that squashed callers become (`anongid`, default 65534).
    pub anongid: u32,
    /// `secure`: only accept calls from source ports below 1024.
    pub secure: bool,
    /// `sync`: a change to the namespace or to attributes (CREATE, MKDIR,
    /// SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK, SETATTR) is on stable
    /// storage before it is answered, as knfsd's `sync` does. `async`
    /// (the default here, see `docs/server.md`) answers once the host's
    /// filesystem has made it.
    pub sync: bool,
    /// No set-id programs and no device nodes, as a `nosuid,nodev` mount
    /// keeps them from counting: a mode asked with set-user-ID (or, on a
    /// file, set-group-ID) loses it, a WRITE to a set-id file clears its
    /// bits, and MKNOD of a device is refused. For clients that must not
    /// hand host users more than they have: a caller the export lets act
    /// as root otherwise made setuid-root programs and world-writable
    /// nodes of the host's disks. Not in exports(5); `vmshare run` sets it.
    pub nosuid_nodev: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            writable: true,
            squash: Squash::Root,
            anonuid: 65534,
            anongid: 65534,
            secure: true,
            sync: false,
            nosuid_nodev: false,
        }
    }
}

/// Which clients a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMatch {
    /// `*`: everyone.
    Any,
    /// An address with a prefix length (a single address has the full length).
    Net {
        /// Network address.
        addr: IpAddr,
        /// Prefix length in bits.
        prefix: u8,
    },
}

/// One `CLIENT(options)` item of an export line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    /// Who it applies to.
    pub client: ClientMatch,
    /// What they get.
    pub options: ExportOptions,
}

/// One export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Host directory served.
    pub path: PathBuf,
    /// Path clients mount (`/data`); defaults to the host path.
    pub mount_path: String,
    /// Rules; no match means no access. Which of several matching rules
    /// applies is exports(5)'s: see [`ExportConfig::options_for`].
    pub clients: Vec<ClientRule>,
    /// Serve only this one name in the export's root directory: the way a
    /// single host file is exported without its siblings.
    pub single_file: Option<std::ffi::OsString>,
}

/// The prefix length of a single address of `addr`'s family: 32 or 128.
pub(crate) fn host_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl ClientMatch {
    /// exports(5)'s order among rules that match one client, lowest first:
    /// a single address (a network of one, however it was written), a
    /// network, everyone.
    fn precedence(&self) -> u8 {
        match self {
            ClientMatch::Net { addr, prefix } if *prefix >= host_prefix(addr) => 0,
            ClientMatch::Net { .. } => 1,
            ClientMatch::Any => 2,
        }
    }

    /// Whether `ip` is covered. An IPv4 client and its IPv4-mapped IPv6
    /// form (how a `[::]` listener sees it) are the same client, for a
    /// rule written either way: `::ffff:127.0.0.1` had been accepted and
    /// then matched no one.
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = match (self, ip) {
            (
                ClientMatch::Net {
                    addr: IpAddr::V6(_),
                    ..
                },
                IpAddr::V4(v4),
            ) => IpAddr::V6(v4.to_ipv6_mapped()),
            (
                ClientMatch::Net {
                    addr: IpAddr::V4(_),
                    ..
                },
                IpAddr::V6(v6),
            ) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        match (self, ip) {
            (ClientMatch::Any, _) => true,
            (
                ClientMatch::Net {
                    addr: IpAddr::V4(net),
                    prefix,
                },
                IpAddr::V4(ip),
            ) => {
                let p = u32::from((*prefix).min(32));
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(*net) & mask == u32::from(ip) & mask
            }
            (
                ClientMatch::Net {
                    addr: IpAddr::V6(net),
                    prefix,
                },
                IpAddr::V6(ip),
            ) => {
                let p = u32::from((*prefix).min(128));
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(*net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for ClientMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientMatch::Any => f.write_str("*"),
            ClientMatch::Net { addr, prefix } => {
                if *prefix == host_prefix(addr) {
                    write!(f, "{addr}")
                } else {
                    write!(f, "{addr}/{prefix}")
                }
            }
        }
    }
}

impl ExportConfig {
    /// An export of `path`, mounted as `mount_path`, for `clients`.
    pub fn new(
        path: impl Into<PathBuf>,
        mount_path: impl Into<String>,
        clients: Vec<ClientRule>,
    ) -> Self {
        ExportConfig {
            path: path.into(),
            mount_path: mount_path.into(),
            clients,
            single_file: None,
        }
    }

    /// The options of the rule that applies to `ip`, by exports(5)'s
    /// precedence: a rule for that one address before a network, a network
    /// before `*`, and among rules of one kind the first written.
    ///
    /// Line order alone would read `*(rw) 10.0.0.5(ro)` as read-write for
    /// 10.0.0.5: the opposite of what the same line means to knfsd, and
    /// the kind of surprise an access list must not have.
    pub fn options_for(&self, ip: IpAddr) -> Option<ExportOptions> {
        self.clients
            .iter()
            .filter(|r| r.client.matches(ip))
            .min_by_key(|r| r.client.precedence())
            .map(|r| r.options.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let net = ClientMatch::Net {
            addr: "10.0.0.0".parse().expect("ip"),
            prefix: 8,
        };
        assert!(net.matches("10.2.3.4".parse().expect("ip")));
        assert!(!net.matches("11.0.0.1".parse().expect("ip")));
        assert!(net.matches("::ffff:10.9.9.9".parse().expect("ip")));
        let one = ClientMatch::Net {
            addr: "127.0.0.1".parse().expect("ip"),
            prefix: 32,
        };
        assert!(!one.matches("127.0.0.2".parse().expect("ip")));
        assert_eq!(one.to_string(), "127.0.0.1");
        assert!(ClientMatch::Any.matches("::1".parse().expect("ip")));
    }

    /// A rule written as an IPv4-mapped IPv6 address or network covers the
    /// IPv4 client, which is how the server sees a peer: it had matched
    /// no one.
    #[test]
    fn mapped_rules_match_ipv4_clients() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let one = ClientMatch::Net {
            addr: ip("::ffff:127.0.0.1"),
            prefix: 128,
        };
        assert!(one.matches(ip("127.0.0.1")));
        assert!(one.matches(ip("::ffff:127.0.0.1")));
        assert!(!one.matches(ip("127.0.0.2")));
        let net = ClientMatch::Net {
            addr: ip("::ffff:10.0.0.0"),
            prefix: 104,
        };
        assert!(net.matches(ip("10.1.2.3")));
        assert!(!net.matches(ip("11.1.2.3")));
        let all = ClientMatch::Net {
            addr: ip("::"),
            prefix: 0,
        };
        assert!(all.matches(ip("192.0.2.1")) && all.matches(ip("2001:db8::1")));
        let v6 = ClientMatch::Net {
            addr: ip("2001:db8::"),
            prefix: 32,
        };
        assert!(!v6.matches(ip("192.0.2.1")));
    }

    fn rule(client: &str, writable: bool) -> ClientRule {
        let client = match client.split_once('/') {
            _ if client == "*" => ClientMatch::Any,
            Some((a, p)) => ClientMatch::Net {
                addr: a.parse().expect("ip"),
                prefix: p.parse().expect("prefix"),
            },
            None => {
                let addr: IpAddr = client.parse().expect("ip");
                let prefix = host_prefix(&addr);
                ClientMatch::Net { addr, prefix }
            }
        };
        ClientRule {
            client,
            options: ExportOptions {
                writable,
                ..ExportOptions::default()
            },
        }
    }

    /// Whether `ip` may write, or `None` when no rule admits it.
    fn writable(rules: Vec<ClientRule>, ip: &str) -> Option<bool> {
        ExportConfig::new("/x", "/x", rules)
            .options_for(ip.parse().expect("ip"))
            .map(|o| o.writable)
    }

    #[test]
    fn an_address_beats_a_network_beats_everyone_whatever_the_order() {
        let orders = [
            vec![
                rule("*", true),
                rule("10.0.0.0/8", true),
                rule("10.0.0.5", false),
            ],
            vec![
                rule("10.0.0.5", false),
                rule("*", true),
                rule("10.0.0.0/8", true),
            ],
        ];
        for rules in orders {
            assert_eq!(writable(rules.clone(), "10.0.0.5"), Some(false));
            assert_eq!(writable(rules.clone(), "::ffff:10.0.0.5"), Some(false));
            assert_eq!(writable(rules, "10.0.0.6"), Some(true));
        }
        // A network of one is a single address, however it is written.
        let rules = vec![rule("10.0.0.0/8", true), rule("10.0.0.5/32", false)];
        assert_eq!(writable(rules, "10.0.0.5"), Some(false));
        // A network before everyone.
        let rules = vec![rule("*", false), rule("10.0.0.0/8", true)];
        assert_eq!(writable(rules.clone(), "10.9.9.9"), Some(true));
        assert_eq!(writable(rules, "192.168.0.1"), Some(false));
        // Among rules of one kind, the first written.
        let rules = vec![rule("10.0.0.0/8", false), rule("10.1.0.0/16", true)];
        assert_eq!(writable(rules, "10.1.2.3"), Some(false));
        let rules = vec![rule("fe80::/10", true), rule("2001:db8::/32", false)];
        assert_eq!(writable(rules.clone(), "fe80::1"), Some(true));
        assert_eq!(writable(rules, "10.0.0.1"), None);
    }
}
