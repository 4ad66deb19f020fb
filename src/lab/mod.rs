//! A lab pair: two hosts a case's guest moves between. A simulated pair is
//! built here: two network namespaces, one libvirtd each, joined by a
//! migration link whose MTU and rate are the case's, a guest LAN and a
//! management network (`network`), reached through qemu+tcp:// URIs from
//! the runner's place in the switch namespace. A real pair is two machines
//! of the inventory, reached at their URIs from where the runner runs.
//!
//! Everything a lab creates is released when it is dropped, when the process
//! is interrupted (`cleanup::install_signal_handler`), and, for a run that was
//! killed outright, by the sweep at the start of the next run.

pub mod calibration;
pub mod capabilities;
pub mod cleanup;
pub mod hold;
pub mod identity;
pub mod leftovers;
pub mod libvirtd;
pub mod link;
pub mod netns;
pub mod network;
pub mod owner;
pub mod pool;
pub mod root;
pub mod tls;

use crate::case::{Case, LinkSpec};
use crate::host_agent::probe::ask::Peer;
use crate::host_agent::{self, Agents, Key};
use crate::inventory::{Inventory, Storage};
use crate::wire::MONITOR_PORT;
use anyhow::{bail, Context, Result};
use libvirtd::Libvirtd;
use netns::Netns;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);
pub use crate::inventory::simulated::HOST_NAMES;

/// One lab host.
#[derive(Debug)]
pub struct Host {
    /// Its name in the inventory, "a" or "b" in the simulated pair (the
    /// role, source or destination, changes as the guest moves back and
    /// forth).
    pub name: String,
    /// libvirt's URI of its daemon.
    pub uri: String,
    /// The inventory's storage pool on this host.
    pub pool: String,
    /// The bridge the guest's NIC joins.
    pub bridge: String,
    /// 0 or 1: its place in the pair, which nested hosts are numbered by.
    pub index: u8,
    /// Its end of the migration link: where the stream to it goes.
    pub migration_address: IpAddr,
    /// Where its agent takes orders (`crate::failure`).
    pub agent: IpAddr,
    /// How the runner logs in to it as root, on a real lab (openvz's).
    pub ssh: Option<String>,
    pub place: Place,
}

/// What a host is.
#[derive(Debug)]
pub enum Place {
    /// A network namespace of this machine, with a daemon migsuite started.
    Simulated(Simulated),
    /// A machine of its own, which migsuite reaches only through its URI
    /// and its agent.
    Real,
}

#[derive(Debug)]
pub struct Simulated {
    /// Its address on the migration link.
    pub link_addr: Ipv4Addr,
    /// The other host's address on the migration link.
    pub peer_link_addr: Ipv4Addr,
    // Declaration order is drop order: the daemon stops before its namespace goes.
    pub libvirtd: Libvirtd,
    pub netns: Netns,
}

impl Host {
    /// The simulated host's namespace and daemon. Only the backends that
    /// run in simulated labs ask (the inventory refuses them on real
    /// hosts), so a real host here is a bug, said as an error.
    pub fn simulated(&self) -> Result<&Simulated> {
        match &self.place {
            Place::Simulated(s) => Ok(s),
            Place::Real => bail!(
                "host {} is a real machine: this needs a simulated host (a network namespace \
                 migsuite built)",
                self.name
            ),
        }
    }

    /// The address in its URI, if it names one (not a host name).
    pub fn uri_address(&self) -> Option<IpAddr> {
        let url = url::Url::parse(&self.uri).ok()?;
        url.host_str()?.trim_matches(['[', ']']).parse().ok()
    }

    /// The host as its agent's tasks of the migration network's
    /// measurement need it.
    pub fn peer(&self) -> Peer<'_> {
        Peer {
            name: &self.name,
            agent: (self.agent, host_agent::AGENT_PORT).into(),
            migration_address: self.migration_address,
        }
    }

    /// `tcp://ADDRESS`: where a QEMU stream to this host goes.
    pub fn migration_uri(&self) -> String {
        match self.migration_address {
            IpAddr::V4(a) => format!("tcp://{a}"),
            IpAddr::V6(a) => format!("tcp://[{a}]"),
        }
    }
}

#[derive(Debug)]
pub struct Lab {
    /// Each host's storage pool, by host index, once opened (`pool`);
    /// first, so its connections close before the daemons stop.
    pools: [std::sync::OnceLock<pool::Pool>; 2],
    /// Where the guest is now, and where it goes next.
    pub source: Host,
    pub destination: Host,
    /// A simulated lab's switch of the guest LAN and of the management
    /// network, where the runner's sockets and libvirt clients live; None on
    /// a real lab, where they live wherever the runner was started.
    pub switch: Option<Netns>,
    pub link: LinkSpec,
    /// What the lab is: its name, storage and hosts.
    pub inventory: Inventory,
    /// Which of the inventory's pairs this is.
    pub pair: usize,
    /// The case's disk volume, once made (`create_disk`).
    disk: std::sync::OnceLock<Disk>,
    /// Lab-private files; `shared/` is a directory both hosts see (the
    /// container's root, logs), whatever the pools' storage.
    dir: cleanup::LabDir,
}

/// A case's disk volume: its name, and on a real lab what deletes it from
/// the hosts if the run is interrupted.
#[derive(Debug)]
struct Disk {
    name: String,
    _undo: Option<cleanup::OnInterrupt>,
}

/// Why `case` cannot run on the lab `inventory` describes; None if it can.
pub fn cannot_run(inventory: &Inventory, case: &Case) -> Option<String> {
    if inventory.simulated {
        return None;
    }
    let link = &case.link;
    if case.faults.kill_destination_after_ms.is_some() {
        return Some(format!(
            "the case kills the destination's QEMU process, which migsuite reaches only on a \
             simulated host, not on lab {}'s",
            inventory.name
        ));
    }
    let real_mtu = inventory.link_mtu.filter(|&mtu| mtu != link.mtu);
    if let Some(mtu) = real_mtu {
        return Some(format!(
            "lab {}'s migration network has MTU {mtu} (its inventory's `link_mtu`), and \
             migsuite does not change a real lab's network: a case at MTU {} runs on a lab \
             whose link has it",
            inventory.name, link.mtu
        ));
    }
    if !link.offloads {
        return Some(format!(
            "the case turns the link's offloads off (`offloads: false`), and migsuite does not \
             change a real lab's network (lab {}): leave it out",
            inventory.name
        ));
    }
    link.rate_mbit.map(|rate| {
        format!(
            "the case shapes the link to {rate} Mbit/s, and migsuite does not shape a real \
             lab's network (lab {}): leave `rate` out for it",
            inventory.name
        )
    })
}

impl Lab {
    /// Builds pair `pair_index` of `inventory` for a case on `link`, or,
    /// in a real lab, reaches its hosts.
    pub fn start(link: &LinkSpec, inventory: &Inventory, pair_index: usize) -> Result<Lab> {
        if inventory.simulated {
            Lab::build(link, inventory, pair_index)
        } else {
            Lab::reach(link, inventory, pair_index)
        }
    }

    /// Builds simulated pair `pair_index` (the rules of `crate::inventory`
    /// make its addresses the ones built here).
    fn build(link: &LinkSpec, inventory: &Inventory, pair_index: usize) -> Result<Lab> {
        let (pair, slots) = inventory
            .pairs()
            .zip(inventory.pair_slots())
            .nth(pair_index)
            .with_context(|| format!("lab {} has no pair {pair_index}", inventory.name))?;
        let (dir, building) = cleanup::new_lab()?;
        let id = &dir.id;
        let switch = Netns::create(&format!("{id}-lan"))?;
        let ns_a = Netns::create(&format!("{id}-a"))?;
        let ns_b = Netns::create(&format!("{id}-b"))?;
        network::build(&switch, [&ns_a, &ns_b], slots, link)?;
        std::fs::create_dir_all(dir.path().join("shared"))?;
        let tls_dir = dir.path().join("qemu-tls");
        tls::make(&tls_dir, &pair.hosts.map(|h| h.migration_address))?;
        let host = |spec: &crate::inventory::Host, ns: Netns, index: u8| -> Result<Host> {
            // Shared storage is the pair's: another pair's cases clear
            // their own disks, never this one's.
            let holder = match inventory.storage {
                Storage::Local => spec.name.clone(),
                Storage::Shared => format!("shared-{}-{}", pair.hosts[0].name, pair.hosts[1].name),
            };
            let pool_dir = pool::simulated_dir(&inventory.name, &holder)?;
            let libvirtd = Libvirtd::start(
                &ns,
                network::management_addr(slots[usize::from(index)]),
                &dir.path().join(&spec.name),
                &pool_dir,
                &tls_dir,
                DAEMON_START_TIMEOUT,
            )?;
            Ok(Host {
                name: spec.name.clone(),
                uri: libvirtd.uri(),
                pool: spec.pool.clone(),
                bridge: spec.bridge.clone(),
                index,
                migration_address: spec.migration_address,
                agent: spec.agent,
                ssh: None,
                place: Place::Simulated(Simulated {
                    link_addr: network::link_addr(slots[usize::from(index)]),
                    peer_link_addr: network::link_addr(slots[usize::from(1 - index)]),
                    libvirtd,
                    netns: ns,
                }),
            })
        };
        let source = host(pair.hosts[0], ns_a, 0)?;
        let destination = host(pair.hosts[1], ns_b, 1)?;
        let lab = Lab {
            pools: Default::default(),
            source,
            destination,
            switch: Some(switch),
            link: link.clone(),
            inventory: inventory.clone(),
            pair: pair_index,
            disk: std::sync::OnceLock::new(),
            dir,
        };
        drop(building);
        for h in [&lab.source, &lab.destination] {
            h.simulated()?.libvirtd.warm(&lab.connect(&h.uri)?)?;
        }
        Ok(lab)
    }

    /// Reaches real pair `pair_index`: its daemons must answer within
    /// `DAEMON_START_TIMEOUT`. Nothing is built; the lab directory keeps
    /// this side's files (logs).
    fn reach(link: &LinkSpec, inventory: &Inventory, pair_index: usize) -> Result<Lab> {
        let pair = inventory.pair(pair_index)?;
        let (dir, building) = cleanup::new_lab()?;
        std::fs::create_dir_all(dir.path().join("shared"))?;
        drop(building);
        let host = |spec: &crate::inventory::Host, index: u8| -> Result<Host> {
            libvirtd::connect_host(spec, &inventory.name, DAEMON_START_TIMEOUT)?;
            Ok(Host {
                name: spec.name.clone(),
                uri: spec.uri.clone(),
                pool: spec.pool.clone(),
                bridge: spec.bridge.clone(),
                index,
                migration_address: spec.migration_address,
                agent: spec.agent,
                ssh: spec.ssh.clone(),
                place: Place::Real,
            })
        };
        Ok(Lab {
            pools: Default::default(),
            source: host(pair.hosts[0], 0)?,
            destination: host(pair.hosts[1], 1)?,
            switch: None,
            link: link.clone(),
            inventory: inventory.clone(),
            pair: pair_index,
            disk: std::sync::OnceLock::new(),
            dir,
        })
    }

    /// The lab's id: what its namespaces and per-case volumes are named by.
    pub fn id(&self) -> &str {
        &self.dir.id
    }

    /// A new disk volume of `bytes` for the case in the source host's pool
    /// (both simulated hosts' pools losing the disks of killed runs first);
    /// returns its path there. Deleted with the lab.
    pub fn create_disk(&self, bytes: u64) -> Result<String> {
        let name = pool::disk_name(owner::Owner::this()?, self.id());
        let pool = self.pool(&self.source)?;
        if self.inventory.simulated {
            self.pool(&self.destination)?.remove_stale_disks(&name)?;
            pool.remove_stale_disks(&name)?;
        }
        let path = pool.create(&name, bytes)?.path()?;
        // A simulated host's pool is swept by the next run (above).
        let undo = (!self.inventory.simulated).then(|| {
            let places = [&self.source, &self.destination].map(|h| (h.uri.clone(), h.pool.clone()));
            let name = name.clone();
            cleanup::on_interrupt(move || {
                for (uri, pool) in places {
                    pool::delete_at(&uri, &pool, &name);
                }
            })
        });
        let _ = self.disk.set(Disk { name, _undo: undo });
        Ok(path)
    }

    /// Host `host`'s storage pool, opened through its daemon the first time.
    pub fn pool(&self, host: &Host) -> Result<&pool::Pool> {
        let opened = &self.pools[usize::from(host.index)];
        if let Some(pool) = opened.get() {
            return Ok(pool);
        }
        let conn = self.connect(&host.uri)?;
        let pool = pool::Pool::open(conn, &host.pool, self.inventory.simulated)
            .with_context(|| format!("host {}'s storage pool `{}`", host.name, host.pool))?;
        Ok(opened.get_or_init(|| pool))
    }

    pub fn shared_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("shared")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A libvirt connection to `uri`, opened from the runner's place.
    pub fn connect(&self, uri: &str) -> Result<libvirtd::Connection> {
        // Errors come back as values; libvirt's default handler would also
        // print each of them (a missing volume is no news).
        virt::error::clear_error_callback();
        match &self.switch {
            Some(switch) => switch
                .enter(|| virt::connect::Connect::open(Some(uri)))?
                .map(libvirtd::Connection::new)
                .with_context(|| format!("connecting to {uri}")),
            // A real host that does not answer could hold an ssh or TLS
            // handshake for minutes.
            None => libvirtd::connect_within(uri, libvirtd::CONNECT_TIMEOUT),
        }
    }

    /// The runner's line to the hosts' agents, at the inventory's
    /// `monitor` address, under a real lab's key, or a new one for a
    /// simulated lab's agents, which this process starts
    /// (`crate::failure`). One at a time: each binds the address.
    pub fn agents(&self) -> Result<Agents> {
        let inventory = &self.inventory;
        let at = SocketAddr::from((inventory.monitor, MONITOR_PORT));
        let socket = self
            .on_lan(|| UdpSocket::bind(at))?
            .with_context(|| format!("the monitor's address {at}"))?;
        let key = match &inventory.heartbeat_key {
            Some(path) => Key::load(path)
                .with_context(|| format!("lab {}'s `heartbeat.key`", inventory.name))?,
            None => Key::random()?,
        };
        Agents::new(socket, key)
    }

    /// Runs `f` where the runner sits on the lab's networks: a simulated
    /// lab's switch, or where it was started.
    pub fn on_lan<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        match &self.switch {
            Some(switch) => switch.enter(f),
            None => Ok(f()),
        }
    }

    /// Lab host `index` ("a" is 0, "b" is 1), whatever its role now.
    pub fn host(&self, index: u8) -> &Host {
        if self.source.index == index {
            &self.source
        } else {
            &self.destination
        }
    }

    /// After a migration: the destination is where the guest now runs, and
    /// where it came from is where the next run sends it.
    pub fn swap_roles(&mut self) {
        std::mem::swap(&mut self.source, &mut self.destination);
    }
}

impl Drop for Lab {
    /// The case's disk goes with its lab, from each host that has it
    /// (before the daemons stop; a killed run's is swept by the next
    /// `create_disk` in a simulated lab, by `migsuite volumes --remove` in
    /// a real one).
    fn drop(&mut self) {
        let Some(Disk { name: disk, .. }) = self.disk.get() else {
            return;
        };
        for host in [&self.source, &self.destination] {
            if let Err(e) = self.pool(host).and_then(|p| p.delete(disk)) {
                eprintln!(
                    "migsuite: cannot delete volume {disk} on host {}: {e:#}",
                    host.name
                );
            }
        }
    }
}

impl Lab {
    /// Copies every log of the lab (daemons, hypervisors, CRIU, the guest's
    /// console: the `*.log` and `*.stderr` files under the lab directory) to
    /// `dest`, named by their path in the lab, so a run can be looked into
    /// after the lab is gone.
    pub fn save_logs(&self, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        let mut dirs = vec![self.dir.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let (path, kind) = (entry.path(), entry.file_type()?);
                if kind.is_dir() {
                    dirs.push(path);
                } else if kind.is_file()
                    && path
                        .extension()
                        .is_some_and(|e| e == "log" || e == "stderr")
                {
                    let name = path
                        .strip_prefix(self.dir.path())?
                        .to_string_lossy()
                        .replace('/', "-");
                    std::fs::copy(&path, dest.join(name))?;
                }
            }
        }
        Ok(())
    }
}
