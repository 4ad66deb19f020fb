//! The inventory file as written: serde structs mirroring the YAML one to
//! one, and the scalars that refuse a bad value where it is written. Rules
//! that span fields are `rules`'.

use crate::yaml::scalar::{deserialize_scalar, keyword, keyword_enum, HypervisorName, Ident};
use crate::yaml::scalar::{Mtu, Reject, Scalar};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InventoryDef {
    pub name: Ident,
    /// Left out: a real lab, whose addresses are other machines'.
    #[serde(default)]
    pub simulated: bool,
    pub storage: Storage,
    pub observer: Address,
    /// A real lab's places, which a simulated lab's network fixes
    /// (`crate::lab::network`): the guest's address on the LAN, ...
    #[serde(default)]
    pub guest: Option<GuestAddress>,
    /// ... the migration network's MTU, which migsuite does not set there, ...
    #[serde(default)]
    pub link_mtu: Option<Mtu>,
    /// ... and the hosts' agents' key and the monitor they report to.
    #[serde(default)]
    pub heartbeat: Option<HeartbeatDef>,
    pub hosts: Vec<HostDef>,
    /// Each a list rather than a pair type, so that a pair of the wrong
    /// length is refused with a message of ours, at its place.
    pub pairs: Vec<Vec<Ident>>,
    /// The suites that gate this lab. Optional rather than empty by
    /// default, so that `gate: []` is refused rather than taken for none.
    #[serde(default)]
    pub gate: Option<Vec<Ident>>,
}

keyword_enum!(
    /// Where a guest's disk lives, which decides what a migration copies.
    pub Storage("storage") {
        /// Each host has a pool of its own: the disk migrates with the guest.
        Local = "local",
        /// The hosts of a pair see one pool: only memory and state migrate.
        Shared = "shared",
    }
);

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `name`, `uri`, `migration_address`, `bridge`, `pool`, `backends`"
)]
pub(super) struct HostDef {
    pub name: Ident,
    pub uri: LibvirtUri,
    /// Allows qemu+tcp:// to another machine, which has no authentication.
    #[serde(default)]
    pub insecure: bool,
    pub migration_address: Address,
    /// Where a real host's `migsuite host-agent` takes orders.
    #[serde(default)]
    pub agent: Option<Address>,
    pub bridge: InterfaceName,
    pub pool: PoolName,
    pub backends: Vec<HypervisorName>,
    /// How the runner logs in to a real host as root: what openvz needs,
    /// whose CRIU runs on the host itself.
    #[serde(default)]
    pub ssh: Option<SshDestination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `key` and `monitor`")]
pub(super) struct HeartbeatDef {
    pub key: KeyPath,
    /// The runner's address the agents send their heartbeats to.
    pub monitor: Address,
}

/// The lab's heartbeat key file, on the runner's machine.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct KeyPath(pub PathBuf);

impl Scalar for KeyPath {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an absolute path like /etc/migsuite/lab.key")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        if v.starts_with('/') {
            Ok(KeyPath(PathBuf::from(v)))
        } else {
            Err(Reject::Invalid(format!(
                "`{v}` is not an absolute path: give the key file's whole path, e.g. \
                 /etc/migsuite/lab.key, so that the runner reads it wherever it is started"
            )))
        }
    }
}

/// The guest's IPv4 address with its prefix length: `192.0.2.100/24`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct GuestAddress(pub Ipv4Addr, pub u8);

const GUEST_EXAMPLE: &str = "192.0.2.100/24";

impl Scalar for GuestAddress {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an IPv4 address and prefix length like {GUEST_EXAMPLE}")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let parsed = v.split_once('/').and_then(|(addr, len)| {
            Some((addr.parse::<Ipv4Addr>().ok()?, len.parse::<u8>().ok()?))
        });
        match parsed {
            // The guest's agent configures IPv4 only; a /31 or /32 leaves
            // no room for the observer beside it.
            Some((addr, len)) if (8..=30).contains(&len) => Ok(GuestAddress(addr, len)),
            _ => Err(Reject::Invalid(format!(
                "`{v}` is not an IPv4 address with a prefix length from 8 to 30, e.g. \
                 {GUEST_EXAMPLE}: the guest takes that address on the LAN its hosts' bridges join"
            ))),
        }
    }
}

/// An IP address. Not a host name: the address picks the network a stream
/// crosses, and a name can resolve to another one (the management
/// network's, say) and silently measure the wrong link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Address(pub IpAddr);

impl Scalar for Address {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an IP address like 10.251.0.1")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        v.parse().map(Address).map_err(|_| {
            Reject::Invalid(format!(
                "`{v}` is not an IP address, e.g. 10.251.0.1 or fd00::1: give the address \
                 itself, not a host name, so that the network used is the one meant"
            ))
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How libvirt reaches a host's daemon: the scheme of its URI.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Transport {
    /// This machine's daemon, through its UNIX socket.
    Local,
    Ssh,
    Tls,
    /// Plain TCP: no authentication, no encryption.
    Tcp,
}

const TRANSPORTS: [(&str, Transport); 4] = [
    ("qemu+ssh", Transport::Ssh),
    ("qemu+tls", Transport::Tls),
    ("qemu+tcp", Transport::Tcp),
    ("qemu", Transport::Local),
];

/// A libvirt URI of QEMU's system daemon: `qemu+ssh://root@lab-a/system`,
/// `qemu:///system`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LibvirtUri {
    /// As the `url` crate writes it back (scheme in lowercase).
    pub text: String,
    pub transport: Transport,
    /// None for `Local`; an IPv6 address is in brackets.
    pub host: Option<String>,
}

impl LibvirtUri {
    /// Whether the daemon is on this machine's loopback (a name other than
    /// `localhost` could be anywhere).
    pub fn is_loopback(&self) -> bool {
        self.host.as_deref().is_none_or(|host| {
            host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    }
}

const URI_EXAMPLE: &str = "qemu+ssh://root@lab-a/system";

impl Scalar for LibvirtUri {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a libvirt URI like {URI_EXAMPLE}")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let url = url::Url::parse(v).map_err(|e| {
            Reject::Invalid(format!(
                "`{v}` is not a libvirt URI ({e}), e.g. {URI_EXAMPLE}"
            ))
        })?;
        let transport = keyword(url.scheme(), "libvirt transport", &TRANSPORTS)?;
        let host = url.host_str().filter(|h| !h.is_empty()).map(str::to_owned);
        match (transport, &host) {
            (Transport::Local, Some(host)) => {
                return Err(Reject::Invalid(format!(
                    "to libvirt, qemu:// with a host means TLS to `{host}`: write \
                     qemu+tls://{host}/system, or qemu:///system for this machine"
                )))
            }
            (Transport::Ssh | Transport::Tls | Transport::Tcp, None) => {
                return Err(Reject::Invalid(format!(
                    "{}:// needs a host, e.g. {URI_EXAMPLE}; qemu:///system is this machine",
                    url.scheme()
                )))
            }
            _ => {}
        }
        if url.path() != "/system" {
            return Err(Reject::Invalid(format!(
                "path `{}`: migsuite drives QEMU's system daemon, which owns the bridges and \
                 storage pools, so the path is /system, e.g. {URI_EXAMPLE}",
                url.path()
            )));
        }
        Ok(LibvirtUri {
            text: url.to_string(),
            transport,
            host,
        })
    }
}

impl fmt::Display for LibvirtUri {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A network interface name as Linux takes it: the bridge guests join.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct InterfaceName(pub String);

/// Linux's IFNAMSIZ less the terminating NUL.
const MAX_INTERFACE_NAME: usize = 15;

impl Scalar for InterfaceName {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a network interface name like br0")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let valid = !v.is_empty()
            && v.len() <= MAX_INTERFACE_NAME
            && v != "."
            && v != ".."
            && !v.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
        if valid {
            Ok(InterfaceName(v.to_owned()))
        } else {
            Err(Reject::Invalid(format!(
                "`{v}` is not a network interface name: Linux takes 1 to {MAX_INTERFACE_NAME} \
                 characters, none of them `/`, `:` or white space, e.g. br0"
            )))
        }
    }
}

/// The name of a libvirt storage pool on the host.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PoolName(pub String);

impl Scalar for PoolName {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a libvirt storage pool name like default")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        if !v.trim().is_empty() && !v.contains('/') {
            Ok(PoolName(v.to_owned()))
        } else {
            Err(Reject::Invalid(format!(
                "`{v}` is not a storage pool name: give the pool's name as \
                 `virsh pool-list` shows it (a pool is named, not given by its path)"
            )))
        }
    }
}

/// How the runner logs in to a host as root over ssh: `root@192.0.2.1`
/// (the user may be left to the runner's ssh configuration).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SshDestination(pub String);

impl Scalar for SshDestination {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an ssh destination like root@192.0.2.1")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let (user, host) = v.rsplit_once('@').unwrap_or(("root", v));
        let word = |s: &str, extra: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        if word(user, "._-")
            && word(host, ".-:")
            && !user.starts_with('-')
            && !host.starts_with('-')
        {
            Ok(SshDestination(v.to_owned()))
        } else {
            Err(Reject::Invalid(format!(
                "`{v}` is not an ssh destination: give `root@` and the host's address or name, \
                 e.g. root@192.0.2.1 (the runner logs in as root there, by key)"
            )))
        }
    }
}

deserialize_scalar!(
    SshDestination,
    Address,
    LibvirtUri,
    InterfaceName,
    PoolName,
    KeyPath,
    GuestAddress
);
