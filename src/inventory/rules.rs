//! Rules that span fields of an inventory, each refused at the field that
//! breaks it; then the typed [`Inventory`].

use super::model::{HostDef, InventoryDef, Transport};
use super::simulated;
use super::{Host, Inventory};
use crate::yaml::scalar::Ident;
use crate::yaml::{did_you_mean, distinct, list, FieldPath, Invalid};
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

pub(super) fn validate(def: InventoryDef) -> Result<Inventory, Invalid> {
    check_hosts(&def)?;
    let pairs = check_pairs(&def)?;
    check_backends(&def, &pairs)?;
    let gate = check_gate(&def)?;
    let inventory = if def.simulated {
        check_simulated(&def)?;
        // Its hosts are the file's, with the rows they list.
        let built = Inventory::simulated(&def.name.0, def.storage, &[]);
        Inventory {
            hosts: def
                .hosts
                .into_iter()
                .zip(0u8..)
                .map(|(h, i)| host(h, simulated::management_addr(i).into()))
                .collect(),
            pairs,
            gate,
            ..built
        }
    } else {
        let real = check_real(&def)?;
        check_migration_addresses(&def, &pairs)?;
        Inventory {
            name: def.name.0,
            simulated: false,
            storage: def.storage,
            observer: def.observer.0,
            guest: real.guest,
            monitor: real.monitor,
            heartbeat_key: Some(real.key),
            link_mtu: Some(real.link_mtu),
            hosts: def
                .hosts
                .into_iter()
                .zip(real.agents)
                .map(|(h, agent)| host(h, agent))
                .collect(),
            pairs,
            gate,
            file: None,
        }
    };
    Ok(inventory)
}

fn host(def: HostDef, agent: IpAddr) -> Host {
    Host {
        name: def.name.0,
        uri: def.uri.text,
        migration_address: def.migration_address.0,
        agent,
        bridge: def.bridge.0,
        pool: def.pool.0,
        backends: def.backends.into_iter().map(|b| b.0).collect(),
        ssh: def.ssh.map(|s| s.0),
    }
}

fn check_hosts(def: &InventoryDef) -> Result<(), Invalid> {
    if def.hosts.is_empty() {
        return Err(Invalid {
            path: FieldPath::default().key("hosts"),
            message: "must list the lab's hosts; a pair needs two".into(),
        });
    }
    for (i, h) in def.hosts.iter().enumerate() {
        let at = FieldPath::default().key("hosts").index(i);
        let earlier = &def.hosts[..i];
        // The first earlier host whose `key` equals this one's.
        let taken = |value: &dyn Display, same: &dyn Fn(&HostDef) -> bool, key: &str, why: &str| {
            match earlier.iter().position(same) {
                Some(first) => Err(Invalid {
                    path: at.clone().key(key),
                    message: format!("`{value}` is also hosts[{first}].{key}; {why}"),
                }),
                None => Ok(()),
            }
        };
        taken(
            &h.name,
            &|e| e.name == h.name,
            "name",
            "each host needs a name of its own",
        )?;
        taken(
            &h.uri,
            &|e| e.uri.text == h.uri.text,
            "uri",
            "two hosts behind one daemon are one host",
        )?;
        taken(
            &h.migration_address,
            &|e| e.migration_address == h.migration_address,
            "migration_address",
            "each host needs its own end of the migration link",
        )?;
        distinct(
            &h.backends,
            at.clone().key("backends"),
            "name each backend once",
        )?;
        check_ssh_only_real(def.simulated, h, &at)?;
        check_transport(def.simulated, h, at)?;
    }
    Ok(())
}

/// A simulated host is this machine's: nothing to log in to. (Which rows
/// need a real host's `ssh` is the backends' to say:
/// [`Inventory::checked`].)
fn check_ssh_only_real(simulated: bool, h: &HostDef, at: &FieldPath) -> Result<(), Invalid> {
    match h.ssh {
        Some(_) if simulated => Err(Invalid {
            path: at.clone().key("ssh"),
            message: "a simulated host is a namespace of this machine, not logged in to: \
                      remove `ssh`"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// qemu+tcp:// authenticates nobody: whoever reaches the daemon runs VMs as
/// root. It is safe only where nobody else can reach it.
fn check_transport(simulated: bool, h: &HostDef, at: FieldPath) -> Result<(), Invalid> {
    // A simulated lab's daemons live in network namespaces on this machine,
    // reachable from the runner's namespace only.
    let exposed = h.uri.transport == Transport::Tcp && !simulated && !h.uri.is_loopback();
    if exposed && !h.insecure {
        let host = h.uri.host.as_deref().unwrap_or_default();
        return Err(Invalid {
            path: at.key("uri"),
            message: format!(
                "qemu+tcp:// has no authentication: anyone who reaches {host} could run VMs \
                 there as root; use qemu+ssh://root@{host}/system or qemu+tls://{host}/system, \
                 or say `insecure: true` for a lab network nobody else reaches"
            ),
        });
    }
    if h.insecure && !exposed {
        return Err(Invalid {
            path: at.key("insecure"),
            message: format!(
                "`insecure: true` allows qemu+tcp:// to another machine of a real lab; \
                 `{}` is not that, so remove it",
                h.uri
            ),
        });
    }
    Ok(())
}

/// The most hosts a simulated lab numbers on its /24 networks.
const SIMULATED_HOSTS_MAX: usize = 200;

/// A simulated lab is built by `crate::lab` on this machine with its own
/// addressing plan (`simulated`, by each host's place in `hosts`): the
/// inventory must describe that plan, or its figures would be labelled with
/// addresses nothing used. Each pair gets a switch of its own.
fn check_simulated(def: &InventoryDef) -> Result<(), Invalid> {
    let hosts_at = FieldPath::default().key("hosts");
    if def.hosts.len() > SIMULATED_HOSTS_MAX {
        return Err(Invalid {
            path: hosts_at,
            message: format!(
                "a simulated lab numbers its hosts' addresses from 1 to {SIMULATED_HOSTS_MAX}; \
                 this one has {} hosts",
                def.hosts.len()
            ),
        });
    }
    let real_only = [
        ("guest", def.guest.is_some()),
        ("link_mtu", def.link_mtu.is_some()),
        ("heartbeat", def.heartbeat.is_some()),
    ];
    let given = real_only
        .iter()
        .filter(|(_, given)| *given)
        .map(|(key, _)| FieldPath::default().key(*key))
        .chain(
            (def.hosts.iter().enumerate())
                .filter(|(_, h)| h.agent.is_some())
                .map(|(i, _)| FieldPath::default().key("hosts").index(i).key("agent")),
        )
        .next();
    if let Some(path) = given {
        return Err(Invalid {
            message: format!(
                "`{path}` is a real lab's: a simulated lab's guest address, link MTU, \
                 heartbeats and agents are the ones migsuite builds (src/inventory/simulated.rs), \
                 so remove it"
            ),
            path,
        });
    }
    let observer = IpAddr::from(simulated::OBSERVER_ADDR);
    if def.observer.0 != observer {
        return Err(Invalid {
            path: FieldPath::default().key("observer"),
            message: format!(
                "the simulated lab's observer listens at {observer} (src/inventory/simulated.rs), not {}",
                def.observer
            ),
        });
    }
    for (i, h) in (0u8..).zip(&def.hosts) {
        let at = hosts_at.clone().index(usize::from(i));
        let expected = [
            (
                "uri",
                h.uri.text.clone(),
                simulated::uri_at(simulated::management_addr(i)),
            ),
            (
                "migration_address",
                h.migration_address.to_string(),
                simulated::link_addr(i).to_string(),
            ),
            (
                "bridge",
                h.bridge.0.clone(),
                simulated::HOST_BRIDGE.to_string(),
            ),
        ];
        for (key, given, wanted) in expected {
            if given != wanted {
                return Err(Invalid {
                    path: at.clone().key(key),
                    message: format!(
                        "the simulated lab gives its host number {} the {key} `{wanted}` \
                         (src/inventory/simulated.rs), not `{given}`",
                        i + 1
                    ),
                });
            }
        }
    }
    Ok(())
}

/// What a real lab must say that a simulated lab's network fixes.
struct RealPlaces {
    guest: (Ipv4Addr, u8),
    link_mtu: u32,
    key: PathBuf,
    monitor: IpAddr,
    /// Each host's agent, in the order of `hosts`.
    agents: Vec<IpAddr>,
}

fn check_real(def: &InventoryDef) -> Result<RealPlaces, Invalid> {
    let missing = |path: FieldPath, example: &str, what: &str| Invalid {
        path,
        message: format!("a real lab gives {what}, e.g. `{example}`"),
    };
    let top = FieldPath::default();
    let guest = def.guest.ok_or_else(|| {
        missing(
            top.clone().key("guest"),
            "guest: 192.0.2.100/24",
            "the guest's address on the LAN its hosts' bridges join",
        )
    })?;
    let link_mtu = def.link_mtu.ok_or_else(|| {
        missing(
            top.clone().key("link_mtu"),
            "link_mtu: 1500",
            "its migration network's MTU (migsuite does not change a real link's)",
        )
    })?;
    let heartbeat = def.heartbeat.as_ref().ok_or_else(|| {
        missing(
            top.clone().key("heartbeat"),
            "heartbeat: { key: /etc/migsuite/lab.key, monitor: 198.51.100.254 }",
            "the key its hosts' agents seal heartbeats with and the runner's address they \
             send them to",
        )
    })?;
    let on_guest_lan = |addr: Ipv4Addr| {
        let mask = u32::MAX << (32 - u32::from(guest.1));
        u32::from(addr) & mask == u32::from(guest.0) & mask
    };
    match def.observer.0 {
        IpAddr::V4(observer) if observer == guest.0 => {
            return Err(Invalid {
                path: top.key("observer"),
                message: format!(
                "`{observer}` is the guest's own address (`guest`): the observer is the runner's"
            ),
            })
        }
        IpAddr::V4(observer) if on_guest_lan(observer) => {}
        observer => {
            return Err(Invalid {
                path: top.key("observer"),
                message: format!(
                    "`{observer}` is not on the guest's network ({}/{}): the guest reports to \
                     the observer directly, with no router between",
                    guest.0, guest.1
                ),
            })
        }
    }
    // The guest's agent, which speaks IPv4, plays a forger at it.
    if let IpAddr::V6(monitor) = heartbeat.monitor.0 {
        return Err(Invalid {
            path: top.key("heartbeat").key("monitor"),
            message: format!(
                "`{monitor}` is IPv6: give the runner's IPv4 address, which the guest's agent \
                 (IPv4 only) checks it cannot fool"
            ),
        });
    }
    // One guest address, observer and monitor: one case at a time.
    if def.pairs.len() > 1 {
        return Err(Invalid {
            path: top.key("pairs").index(1),
            message: "a real lab's inventory gives one guest address, observer and monitor, \
                      which serve one case at a time: one pair per inventory (another pair \
                      gets an inventory of its own, with its own addresses, for another runner)"
                .into(),
        });
    }
    let mut agents = Vec::new();
    for (i, h) in def.hosts.iter().enumerate() {
        let agent = h.agent.ok_or_else(|| {
            missing(
                top.clone().key("hosts").index(i).key("agent"),
                "agent: 198.51.100.1",
                "each host's address where its `migsuite host-agent` takes orders",
            )
        })?;
        agents.push(agent.0);
    }
    Ok(RealPlaces {
        guest: (guest.0, guest.1),
        link_mtu: link_mtu.0,
        key: heartbeat.key.0.clone(),
        monitor: heartbeat.monitor.0,
        agents,
    })
}

/// A real host's migration address is where the other host of its pair
/// sends the stream, and where their agents measure the network: one
/// address of this host's on a network, of the other host's family.
fn check_migration_addresses(def: &InventoryDef, pairs: &[[usize; 2]]) -> Result<(), Invalid> {
    for (i, h) in def.hosts.iter().enumerate() {
        let addr = h.migration_address.0;
        if addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() {
            return Err(Invalid {
                path: FieldPath::default()
                    .key("hosts")
                    .index(i)
                    .key("migration_address"),
                message: format!(
                    "`{addr}` is no address of this host's on the migration network (it is \
                     loopback, unspecified or multicast): give the address of its interface \
                     there, where the other host's stream arrives"
                ),
            });
        }
    }
    for (j, &[a, b]) in pairs.iter().enumerate() {
        let (a, b) = (&def.hosts[a], &def.hosts[b]);
        if a.migration_address.0.is_ipv4() != b.migration_address.0.is_ipv4() {
            return Err(Invalid {
                path: FieldPath::default().key("pairs").index(j),
                message: format!(
                    "hosts `{}` ({}) and `{}` ({}) have migration addresses of different \
                     families, so neither's stream could reach the other: give both IPv4 or \
                     both IPv6",
                    a.name, a.migration_address, b.name, b.migration_address
                ),
            });
        }
    }
    Ok(())
}

/// Each pair two different hosts of the lab, and no host in two pairs: a
/// host runs one measured case at a time. Returns the pairs as indices of
/// the hosts.
fn check_pairs(def: &InventoryDef) -> Result<Vec<[usize; 2]>, Invalid> {
    let pairs_at = FieldPath::default().key("pairs");
    if def.pairs.is_empty() {
        return Err(Invalid {
            path: pairs_at,
            message: "must list at least one pair of hosts, e.g. `- [a, b]`".into(),
        });
    }
    let names: Vec<&Ident> = def.hosts.iter().map(|h| &h.name).collect();
    let mut pairs: Vec<[usize; 2]> = Vec::new();
    for (j, pair) in def.pairs.iter().enumerate() {
        let at = pairs_at.clone().index(j);
        let [a, b] = pair.as_slice() else {
            return Err(Invalid {
                path: at,
                message: format!(
                    "a pair names two hosts, e.g. `[a, b]`; this one names {}",
                    pair.len()
                ),
            });
        };
        if a == b {
            return Err(Invalid {
                path: at.index(1),
                message: format!("a pair needs two different hosts; `{a}` is named twice"),
            });
        }
        let mut indices = [0; 2];
        for (k, name) in [a, b].into_iter().enumerate() {
            let Some(i) = names.iter().position(|n| *n == name) else {
                let known: Vec<&str> = names.iter().map(|n| n.0.as_str()).collect();
                return Err(Invalid {
                    path: at.index(k),
                    message: format!(
                        "`{name}` is not a host of this lab{}; hosts: {}",
                        did_you_mean(&name.0, &known),
                        list(&names)
                    ),
                });
            };
            if let Some(earlier) = pairs.iter().position(|p| p.contains(&i)) {
                return Err(Invalid {
                    path: at.index(k),
                    message: format!(
                        "host `{name}` is already in pairs[{earlier}]: a host runs one measured \
                         case at a time, so it belongs to one pair"
                    ),
                });
            }
            indices[k] = i;
        }
        pairs.push(indices);
    }
    Ok(pairs)
}

/// The suites that gate the lab, each named once; whether they exist is
/// [`Inventory::check_gate`]'s, beside the suites.
fn check_gate(def: &InventoryDef) -> Result<Vec<String>, Invalid> {
    let Some(gate) = &def.gate else {
        return Ok(Vec::new());
    };
    distinct(
        gate,
        FieldPath::default().key("gate"),
        "name each suite once",
    )?;
    Ok(gate.iter().map(|suite| suite.0.clone()).collect())
}

/// A pair whose hosts share no backend could run no case.
fn check_backends(def: &InventoryDef, pairs: &[[usize; 2]]) -> Result<(), Invalid> {
    for (j, &[a, b]) in pairs.iter().enumerate() {
        let (a, b) = (&def.hosts[a], &def.hosts[b]);
        if !a.backends.iter().any(|x| b.backends.contains(x)) {
            return Err(Invalid {
                path: FieldPath::default().key("pairs").index(j),
                message: format!(
                    "hosts `{}` ({}) and `{}` ({}) share no backend, so no case could run on \
                     this pair",
                    a.name,
                    list(&a.backends),
                    b.name,
                    list(&b.backends)
                ),
            });
        }
    }
    Ok(())
}
