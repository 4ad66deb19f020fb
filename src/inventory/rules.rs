//! Rules that span fields of an inventory, each refused at the field that
//! breaks it; then the typed [`Inventory`].

use super::model::{HostDef, InventoryDef, Transport};
use super::{Host, Inventory};
use crate::case::Hypervisor;
use crate::lab::{libvirtd, network};
use crate::yaml::scalar::{HypervisorName, Ident};
use crate::yaml::{did_you_mean, distinct, list, FieldPath, Invalid};
use std::fmt::Display;
use std::net::IpAddr;

pub(super) fn validate(def: InventoryDef) -> Result<Inventory, Invalid> {
    check_hosts(&def)?;
    let pairs = check_pairs(&def)?;
    if def.simulated {
        check_simulated(&def)?;
    }
    let inventory = Inventory {
        name: def.name.0,
        simulated: def.simulated,
        storage: def.storage,
        observer: def.observer.0,
        hosts: def.hosts.into_iter().map(host).collect(),
        pairs,
        file: None,
    };
    check_backends(&inventory)?;
    Ok(inventory)
}

fn host(def: HostDef) -> Host {
    Host {
        name: def.name.0,
        uri: def.uri.text,
        migration_address: def.migration_address.0,
        bridge: def.bridge.0,
        pool: def.pool.0,
        backends: def.backends.into_iter().map(|b| b.0).collect(),
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
        check_real_backends(def.simulated, h, &at)?;
        check_transport(def.simulated, h, at)?;
    }
    Ok(())
}

/// A real host is driven through libvirt's QEMU driver, the one its URI
/// reaches: the Xen rows run on nested Xen hosts and openvz by CRIU, both
/// of which migsuite builds only in a simulated lab.
fn check_real_backends(simulated: bool, h: &HostDef, at: &FieldPath) -> Result<(), Invalid> {
    if simulated {
        return Ok(());
    }
    let kvm = |b: &HypervisorName| matches!(b.0, Hypervisor::KvmFv | Hypervisor::KvmPv);
    match h.backends.iter().position(|b| !kvm(b)) {
        Some(j) => Err(Invalid {
            path: at.clone().key("backends").index(j),
            message: format!(
                "a real host runs kvm-fv and kvm-pv (libvirt's QEMU driver, which its URI \
                 reaches); {} runs only in a simulated lab (`simulated: true`), where migsuite \
                 builds it",
                h.backends[j].0
            ),
        }),
        None => Ok(()),
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
/// addressing plan (`network`, by each host's place in `hosts`): the
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
    let observer = IpAddr::from(network::OBSERVER_ADDR);
    if def.observer.0 != observer {
        return Err(Invalid {
            path: FieldPath::default().key("observer"),
            message: format!(
                "the simulated lab's observer listens at {observer} (src/lab/network.rs), not {}",
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
                libvirtd::uri_at(network::management_addr(i)),
            ),
            (
                "migration_address",
                h.migration_address.to_string(),
                network::link_addr(i).to_string(),
            ),
            (
                "bridge",
                h.bridge.0.clone(),
                network::HOST_BRIDGE.to_string(),
            ),
        ];
        for (key, given, wanted) in expected {
            if given != wanted {
                return Err(Invalid {
                    path: at.clone().key(key),
                    message: format!(
                        "the simulated lab gives its host number {} the {key} `{wanted}` \
                         (src/lab/network.rs), not `{given}`",
                        i + 1
                    ),
                });
            }
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

/// A pair whose hosts share no backend could run no case.
fn check_backends(inventory: &Inventory) -> Result<(), Invalid> {
    for (j, pair) in inventory.pairs().enumerate() {
        if pair.backends().is_empty() {
            let [a, b] = pair.hosts;
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
