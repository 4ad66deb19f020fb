//! Lab inventories: YAML files (`suites/labs/*.yaml`) naming a lab's hosts, how
//! libvirt reaches each, and which hosts are measured together.
//!
//! ```yaml
//! name: local
//! simulated: true     # the hosts are namespaces on this machine; default false
//! storage: shared     # local | shared: whether both hosts see the guest disk
//! observer: 10.250.0.254
//! # A real lab's (a simulated one's are src/inventory/simulated.rs's):
//! guest: 192.0.2.100/24   # the guest's address on the LAN of the bridges
//! link_mtu: 1500          # the migration network's MTU
//! heartbeat:
//!   key: /etc/migsuite/lab.key   # shared with the hosts' agents
//!   monitor: 198.51.100.254      # where the agents send heartbeats
//! hosts:
//!   - name: a
//!     uri: qemu+tcp://10.249.0.1/system
//!     insecure: false # true allows qemu+tcp:// to another machine
//!     migration_address: 10.251.0.1
//!     agent: 198.51.100.1     # a real host's `migsuite host-agent`
//!     bridge: br0
//!     pool: migsuite
//!     backends: [kvm-fv, kvm-pv, openvz]
//!     ssh: root@198.51.100.1  # a real host's shell: openvz's CRIU runs there
//!   - ...
//! pairs:
//!   - [a, b]
//! gate: [real-lab]    # suites plain `cargo test` runs here, `tier: lab` or not
//! ```
//!
//! Malformed values are refused while parsing (`model`), rules across
//! fields afterwards (`rules`); both at the line and column of the field,
//! with its path and what would be valid, like suites (`crate::yaml`).

mod model;
mod rules;
pub mod simulated;

#[cfg(test)]
mod tests;

pub use model::Storage;

use crate::case::{Case, Hypervisor};
use crate::yaml::scalar::unknown_row;
use crate::yaml::{did_you_mean, list, Document, FieldPath, FileError, Invalid, Kind};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

const INVENTORY: Kind = Kind {
    noun: "lab inventory",
    required: &["name", "storage", "observer", "hosts", "pairs"],
    example,
};

/// What a missing required field looks like; a host's fields are the same
/// in every host.
fn example(field: &str) -> Option<&'static str> {
    let host_key = field
        .strip_prefix("hosts[")
        .and_then(|f| f.split_once("]."))
        .map(|(_, key)| key);
    Some(match (host_key, field) {
        (Some("name"), _) => "name: a",
        (Some("uri"), _) => "uri: qemu+ssh://root@lab-a/system",
        (Some("migration_address"), _) => "migration_address: 192.0.2.1",
        (Some("bridge"), _) => "bridge: br0",
        (Some("pool"), _) => "pool: default",
        (Some("backends"), _) => "backends: [kvm-fv, kvm-pv]",
        (None, "name") => "name: lab",
        (None, "storage") => "storage: local",
        (None, "observer") => "observer: 192.0.2.254",
        (None, "hosts") => "hosts: [{ name: a, uri: qemu+ssh://root@lab-a/system, ... }]",
        (None, "pairs") => "pairs: [[a, b]]",
        _ => return None,
    })
}

/// The environment variable naming the inventory `cargo test` uses.
pub const LAB_VARIABLE: &str = "MIGSUITE_LAB";
/// The built-in simulated pair's name.
const BUILT_IN: &str = "simulated";

/// The storage pool of the simulated hosts.
const SIMULATED_POOL: &str = "migsuite";

/// A lab, as its inventory describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Inventory {
    pub name: String,
    /// The hosts are network namespaces on this machine that migsuite
    /// builds itself (`crate::lab`), not machines of their own.
    pub simulated: bool,
    pub storage: Storage,
    /// Where guests report: the runner's address on the guest LAN.
    pub observer: IpAddr,
    /// The guest's address and prefix length on the guest LAN.
    pub guest: (Ipv4Addr, u8),
    /// The runner's address where the hosts' agents send heartbeats.
    pub monitor: IpAddr,
    /// A real lab's heartbeat key file; a simulated lab's agents are this
    /// process's, with a key made for each run.
    pub heartbeat_key: Option<PathBuf>,
    /// A real lab's migration network MTU, which cases must match; a
    /// simulated lab's link takes each case's.
    pub link_mtu: Option<u32>,
    pub hosts: Vec<Host>,
    /// Indices into `hosts`; no host is in two pairs.
    pairs: Vec<[usize; 2]>,
    /// The suites that gate this lab (`gate`): plain `cargo test` runs
    /// their cases here even if they are `tier: lab`, as a real lab refuses
    /// the gate-tier suites' (`crate::runner::left_out`).
    pub gate: Vec<String>,
    /// The file it was read from; None for the built-in simulated pair.
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub name: String,
    /// libvirt's URI of the host's system daemon.
    pub uri: String,
    /// The host's end of the migration link.
    pub migration_address: IpAddr,
    /// Where the host's agent takes orders, on the management network.
    pub agent: IpAddr,
    /// The bridge guests' NICs join.
    pub bridge: String,
    /// The libvirt storage pool guest disks go in.
    pub pool: String,
    /// What the host can run, in the order the inventory lists them.
    pub backends: Vec<Hypervisor>,
    /// How the runner logs in to a real host as root (`root@address`).
    pub ssh: Option<String>,
}

impl Host {
    pub fn offers(&self, hypervisor: Hypervisor) -> bool {
        self.backends.contains(&hypervisor)
    }
}

/// Two hosts measured together: a guest migrates back and forth between
/// them.
#[derive(Clone, Copy, Debug)]
pub struct Pair<'a> {
    pub hosts: [&'a Host; 2],
}

impl Pair<'_> {
    /// Whether a case of `hypervisor` can run on this pair.
    pub fn offers(&self, hypervisor: Hypervisor) -> bool {
        self.hosts.iter().all(|h| h.offers(hypervisor))
    }

    /// The backends both hosts offer, in the first host's order.
    pub fn backends(&self) -> Vec<Hypervisor> {
        let [a, _] = self.hosts;
        a.backends
            .iter()
            .copied()
            .filter(|&b| self.offers(b))
            .collect()
    }
}

/// What this build's backends say of the rows inventories list
/// (`crate::backend::catalog`): which rows exist, and why one needs a real
/// host's `ssh` (None: its libvirt URI is enough).
pub struct Catalog {
    pub rows: Vec<Hypervisor>,
    pub over_ssh: fn(Hypervisor) -> Option<&'static str>,
}

/// Where host `i`'s `j`th row is written.
fn backend_path(i: usize, j: usize) -> FieldPath {
    FieldPath::default()
        .key("hosts")
        .index(i)
        .key("backends")
        .index(j)
}

impl Inventory {
    /// The simulated pair `crate::lab` builds on this machine: what runs use
    /// without an inventory file (with shared storage, as the gate's
    /// baselines were measured), and what `suites/labs/local.yaml` says.
    pub fn simulated(name: &str, storage: Storage, rows: &[Hypervisor]) -> Inventory {
        use simulated::{link_addr, management_addr, uri_at, HOST_BRIDGE, HOST_NAMES};
        let hosts = (0u8..)
            .zip(HOST_NAMES)
            .map(|(i, name)| Host {
                name: name.to_string(),
                uri: uri_at(management_addr(i)),
                migration_address: link_addr(i).into(),
                agent: management_addr(i).into(),
                bridge: HOST_BRIDGE.to_string(),
                pool: SIMULATED_POOL.to_string(),
                backends: rows.to_vec(),
                ssh: None,
            })
            .collect();
        Inventory {
            name: name.to_string(),
            simulated: true,
            storage,
            observer: simulated::OBSERVER_ADDR.into(),
            guest: (simulated::GUEST_ADDR, simulated::PREFIX_LEN),
            monitor: simulated::MANAGEMENT_ADDR.into(),
            heartbeat_key: None,
            link_mtu: None,
            hosts,
            pairs: vec![[0, 1]],
            gate: Vec::new(),
            file: None,
        }
    }

    /// The lab runs use: the inventory at `MIGSUITE_LAB` if set, else the
    /// built-in simulated pair with shared storage, whose hosts run every
    /// row; checked against `catalog`.
    pub fn from_env(catalog: &Catalog) -> Result<Inventory, FileError> {
        match std::env::var_os(LAB_VARIABLE) {
            Some(path) => Inventory::load(Path::new(&path))?.checked(catalog),
            None => Ok(Inventory::simulated(
                BUILT_IN,
                Storage::Shared,
                &catalog.rows,
            )),
        }
    }

    /// Which lab produced a figure, as reports say it: "lab: local
    /// (inventory suites/labs/local.yaml), simulated: ...".
    pub fn describe(&self) -> String {
        let source = match &self.file {
            Some(file) => format!("inventory {}", file.display()),
            None => "built in, no inventory".into(),
        };
        let kind = if self.simulated {
            "simulated: network-namespace hosts on one machine"
        } else {
            "real hosts"
        };
        format!("lab: {} ({source}), {kind}", self.name)
    }

    /// What it holds: "lab rack (hosts: 2, pairs: 1, gate: real-lab)".
    pub fn summary(&self) -> String {
        let gate = if self.gate.is_empty() {
            String::new()
        } else {
            format!(", gate: {}", self.gate.join(", "))
        };
        format!(
            "lab {} (hosts: {}, pairs: {}{gate})",
            self.name,
            self.hosts.len(),
            self.pairs().count()
        )
    }

    /// The suffix of its baselines' snapshot files: none for the built-in
    /// pair (the gate's), the lab's name for an inventory's, so that no
    /// lab's figures are judged against another's.
    pub fn snapshot_suffix(&self) -> Option<&str> {
        self.file.as_ref().map(|_| self.name.as_str())
    }

    /// Reads and validates one inventory file.
    pub fn load(path: &Path) -> Result<Inventory, FileError> {
        let inventory = Inventory::parse_str(path, &crate::yaml::read(path, &INVENTORY)?)?;
        Ok(Inventory {
            file: Some(path.to_path_buf()),
            ..inventory
        })
    }

    /// Like [`Inventory::load`] on `text`; `path` is only used in messages.
    pub fn parse_str(path: &Path, text: &str) -> Result<Inventory, FileError> {
        let document = Document::new(path, text, &INVENTORY);
        rules::validate(document.parse()?).map_err(|e| document.refuse(e))
    }

    /// Checks that each suite of its `gate` is one of `cases`' (the suites
    /// loaded beside it), refusing an unknown one at its place in the file.
    pub fn check_gate(&self, cases: &[Case]) -> Result<(), FileError> {
        // Cases come suite by suite.
        let mut suites: Vec<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
        suites.dedup();
        let Some((i, unknown)) = (0..)
            .zip(&self.gate)
            .find(|(_, suite)| !suites.contains(&suite.as_str()))
        else {
            return Ok(());
        };
        Err(self.refuse(Invalid {
            path: FieldPath::default().key("gate").index(i),
            message: format!(
                "no suite is named `{unknown}`{}; the suites are {}",
                did_you_mean(unknown, &suites),
                list(&suites)
            ),
        }))
    }

    /// Checks the rows each host lists against the backends' `catalog`:
    /// each one a row they run, and each real host giving its `ssh` where
    /// a row it lists runs on the host itself; refused at that row's place
    /// in the file.
    pub fn checked(self, catalog: &Catalog) -> Result<Inventory, FileError> {
        let unknown = self.hosts.iter().enumerate().find_map(|(i, h)| {
            h.backends.iter().enumerate().find_map(|(j, row)| {
                unknown_row(*row, &catalog.rows).map(|message| (i, j, message))
            })
        });
        if let Some((i, j, message)) = unknown {
            return Err(self.refuse(Invalid {
                path: backend_path(i, j),
                message,
            }));
        }
        self.check_ssh(catalog.over_ssh)?;
        Ok(self)
    }

    fn check_ssh(&self, over_ssh: fn(Hypervisor) -> Option<&'static str>) -> Result<(), FileError> {
        if self.simulated {
            return Ok(());
        }
        let lacking = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| h.ssh.is_none())
            .find_map(|(i, h)| {
                let mut rows = h.backends.iter().enumerate();
                rows.find_map(|(j, row)| over_ssh(*row).map(|why| (i, j, why)))
            });
        let Some((i, j, why)) = lacking else {
            return Ok(());
        };
        Err(self.refuse(Invalid {
            path: backend_path(i, j),
            message: format!(
                "{why}: give the host's `ssh` (e.g. `ssh: root@192.0.2.1`), where root logs in \
                 by key and `migsuite` is installed"
            ),
        }))
    }

    /// `invalid`, placed in the inventory's file.
    fn refuse(&self, invalid: Invalid) -> FileError {
        match &self.file {
            Some(file) => match crate::yaml::read(file, &INVENTORY) {
                Ok(text) => Document::new(file, &text, &INVENTORY).refuse(invalid),
                Err(unread) => unread,
            },
            // Read by `parse_str`: no file to place it in, so the lab's name.
            None => FileError::Invalid {
                file: PathBuf::from(format!("lab {}", self.name)),
                location: None,
                field: invalid.path.to_string(),
                message: invalid.message,
            },
        }
    }

    /// The indices of the pairs whose hosts both offer `hypervisor`.
    pub fn pairs_offering(&self, hypervisor: Hypervisor) -> Vec<usize> {
        (0..)
            .zip(self.pairs())
            .filter(|(_, pair)| pair.offers(hypervisor))
            .map(|(k, _)| k)
            .collect()
    }

    /// Each pair's hosts' places in `hosts`, which number a simulated
    /// host's addresses.
    pub fn pair_slots(&self) -> impl Iterator<Item = [u8; 2]> + '_ {
        self.pairs
            .iter()
            .map(|p| p.map(|i| u8::try_from(i).expect("an inventory of at most 255 hosts")))
    }

    /// The pairs, in the inventory's order.
    /// Pair `index`, or an error naming the lab.
    pub fn pair(&self, index: usize) -> anyhow::Result<Pair<'_>> {
        self.pairs()
            .nth(index)
            .ok_or_else(|| anyhow::anyhow!("lab {} has no pair {index}", self.name))
    }

    pub fn pairs(&self) -> impl Iterator<Item = Pair<'_>> {
        self.pairs.iter().map(|&[a, b]| Pair {
            hosts: [&self.hosts[a], &self.hosts[b]],
        })
    }
}
