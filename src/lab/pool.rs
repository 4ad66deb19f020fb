//! A host's storage pool, and the guest's files in it, reached through
//! libvirt only (no ssh or copy of our own): the kernel and initramfs are
//! uploaded by libvirt's volume upload and named by their content, so a
//! host keeps what it already has; a case's disk is a volume of its own,
//! deleted with the case. `migsuite volumes --remove` deletes what a host
//! kept.
//!
//! A real host's pool is the inventory's, defined by its owners. A simulated
//! host's is a directory pool migsuite creates in the host's daemon, on a
//! directory of this machine kept across runs (`simulated_dir`): one per host
//! for `storage: local`, one per pair for `storage: shared`.

use super::libvirtd::{Connection, POOL_TARGET};
use super::owner::Owner;
use crate::guest::image::content_key;
use crate::markup::escape;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use virt::error::{ErrorNumber, ErrorNumberEnum};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Upload chunk: libvirt's streams carry at most 256 KiB per message.
const CHUNK: usize = 256 << 10;
/// The prefix of every volume migsuite makes, that nothing else's is touched.
const PREFIX: &str = "migsuite-";
/// A complete upload leaves this beside its volume: a volume without one
/// was cut short and is uploaded again.
const COMPLETE: &str = ".complete";

/// The directory of this machine that is a simulated host's pool: `holder`
/// is the host's name, or the pair's for a pool both its hosts see. Root's
/// alone, like the lab root.
pub fn simulated_dir(lab: &str, holder: &str) -> Result<PathBuf> {
    let artifacts = crate::guest::image::artifacts_dir();
    let dir = artifacts.join("pools").join(lab).join(holder);
    super::root::ensure_private_dirs(&artifacts, &dir)?;
    Ok(dir)
}

/// One host's pool, and the connection it was opened by.
pub struct Pool {
    // Declaration order is drop order: the pool before its connection.
    pool: StoragePool,
    conn: Connection,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let name = self.pool.name().unwrap_or_default();
        f.debug_struct("Pool").field("name", &name).finish()
    }
}

impl Pool {
    /// The pool `name` of the daemon behind `conn`. On a simulated host the
    /// pool is made (a transient directory pool on POOL_TARGET) if the
    /// daemon has none of that name.
    pub fn open(conn: Connection, name: &str, simulated: bool) -> Result<Pool> {
        let pool = match conn.lookup_storage_pool_by_name(name) {
            Ok(pool) => pool,
            Err(_) if simulated => conn
                .create_storage_pool_xml(
                    &format!(
                        "<pool type='dir'><name>{}</name>\
                         <target><path>{POOL_TARGET}</path></target></pool>",
                        escape(name)
                    ),
                    0,
                )
                .with_context(|| format!("creating the simulated host's pool `{name}`"))?,
            Err(e) => bail!(
                "the host has no storage pool `{name}` ({}): define it (virsh pool-define-as \
                 {name} dir --target /var/lib/libvirt/images; virsh pool-start {name}) or name \
                 the host's pool in the inventory",
                e.message()
            ),
        };
        if !pool.is_active().unwrap_or(false) {
            pool.create(0)
                .with_context(|| format!("starting the storage pool `{name}`"))?;
        }
        Ok(Pool { pool, conn })
    }

    /// Real host `host`'s pool, as its inventory names it; the error names
    /// the host.
    pub fn of_real_host(conn: Connection, host: &crate::inventory::Host) -> Result<Pool> {
        Pool::open(conn, &host.pool, false)
            .with_context(|| format!("host {}'s storage pool `{}`", host.name, host.pool))
    }

    fn volume(&self, name: &str) -> Option<StorageVol> {
        self.pool.lookup_storage_vol_by_name(name).ok()
    }

    /// Makes the daemon look at the pool again (another daemon, on storage
    /// both see, may have changed it). libvirt refuses while a volume of
    /// the pool is being built (another runner's, say): that passes.
    fn refresh(&self) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.pool.refresh(0) {
                Ok(_) => return Ok(()),
                Err(e) if e.message().contains("asynchronous jobs running") && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e).context("refreshing the storage pool"),
            }
        }
    }

    /// The names of the pool's volumes that start with `prefix`.
    pub fn names_starting(&self, prefix: &str) -> Result<Vec<String>> {
        let volumes = self.volumes()?;
        let names = volumes.iter().filter_map(|v| v.name().ok());
        Ok(names.filter(|n| n.starts_with(prefix)).collect())
    }

    /// Every volume in the pool now: another daemon (the other simulated
    /// host, on shared storage) may have added or removed some since this
    /// one last looked.
    fn volumes(&self) -> Result<Vec<StorageVol>> {
        self.refresh()?;
        Ok(self.pool.list_all_volumes(0)?)
    }

    /// Puts `file` in the pool, named `migsuite-<what>-<sha256 prefix>`,
    /// unless a complete upload of it is there already; returns the
    /// volume's path on the host and whether it was uploaded now.
    pub fn upload(&self, what: &str, file: &Path) -> Result<(String, bool)> {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let name = format!(
            "{PREFIX}{what}-{}",
            content_key(Sha256::new_with_prefix(&bytes))
        );
        let marker = format!("{name}{COMPLETE}");
        self.refresh()?;
        if let (Some(vol), Some(_)) = (self.volume(&name), self.volume(&marker)) {
            return Ok((vol.path()?, false));
        }
        for stale in [&name, &marker] {
            if let Some(vol) = self.volume(stale) {
                vol.delete(0)?;
            }
        }
        let vol = self.create(&name, bytes.len() as u64)?;
        let stream = Stream::new(&self.conn, 0)?;
        vol.upload(&stream, 0, bytes.len() as u64, 0)
            .with_context(|| format!("uploading {} to volume {name}", file.display()))?;
        for piece in bytes.chunks(CHUNK) {
            let mut sent = 0;
            while sent < piece.len() {
                sent += usize::try_from(stream.send(&piece[sent..])?)
                    .context("the upload stream refused data")?;
            }
        }
        stream
            .finish()
            .with_context(|| format!("finishing the upload of {name}"))?;
        self.create(&marker, 0)?;
        Ok((vol.path()?, true))
    }

    /// Deletes the disks of cases that were killed before their lab could
    /// (a simulated lab's pools are this machine's, where one lab runs at a
    /// time), all but `keep`.
    pub fn remove_stale_disks(&self, keep: &str) -> Result<()> {
        for vol in self.volumes()? {
            let name = vol.name()?;
            if name.starts_with(DISK_PREFIX) && name != keep {
                vol.delete(0)?;
            }
        }
        Ok(())
    }

    /// A new raw volume of `bytes`, or the one of that name if a run cut
    /// short left it.
    pub fn create(&self, name: &str, bytes: u64) -> Result<StorageVol> {
        if let Some(old) = self.volume(name) {
            old.delete(0)?;
        }
        StorageVol::create_xml(&self.pool, &volume_xml(name, bytes), 0)
            .with_context(|| format!("creating volume {name}"))
    }

    /// Creates the empty volume `name` unless the pool has one: the daemon
    /// decides, so of two runners asking at once one gets it. Returns
    /// whether this one did.
    pub fn claim(&self, name: &str) -> Result<bool> {
        // Not refreshed first: a name only this daemon gives is in its list.
        match StorageVol::create_xml(&self.pool, &volume_xml(name, CLAIM_BYTES), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == ErrorNumberEnum::Known(ErrorNumber::StorageVolExist) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("creating volume {name}")),
        }
    }

    /// The volumes migsuite made in this pool (uploads, their markers, the
    /// disks of runs cut short), by name.
    pub fn kept(&self) -> Result<Vec<Kept>> {
        let mut kept = Vec::new();
        for vol in self.volumes()? {
            let name = vol.name()?;
            if name.starts_with(PREFIX) {
                let bytes = vol.info()?.allocation;
                kept.push(Kept { name, bytes });
            }
        }
        kept.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(kept)
    }

    /// How much the pool holds and has free, and where it is.
    pub fn room(&self) -> Result<Room> {
        self.refresh()?;
        let info = self.pool.info()?;
        let xml = self.pool.xml_desc(0)?;
        let path = xml
            .split_once("<path>")
            .and_then(|(_, rest)| rest.split_once("</path>"))
            .map_or_else(|| "no path".to_string(), |(path, _)| path.to_string());
        Ok(Room {
            capacity: info.capacity,
            available: info.available,
            path,
        })
    }

    /// Deletes volume `name` if the pool has it (looking again only if
    /// this daemon does not know it).
    pub fn delete(&self, name: &str) -> Result<()> {
        let volume = match self.volume(name) {
            Some(volume) => Some(volume),
            None => {
                self.refresh()?;
                self.volume(name)
            }
        };
        match volume {
            Some(vol) => Ok(vol.delete(0)?),
            None => Ok(()),
        }
    }
}

/// Deletes volume `name` from pool `pool` of the real host at `uri`, if it
/// has it: what an interrupted run undoes (`cleanup::on_interrupt`), so it
/// waits little for the host and says what it could not do.
pub fn delete_at(uri: &str, pool: &str, name: &str) {
    let deleted = super::libvirtd::connect_within(uri, INTERRUPTED_WAIT)
        .and_then(|conn| Pool::open(conn, pool, false))
        .and_then(|pool| pool.delete(name));
    if let Err(e) = deleted {
        eprintln!("migsuite: cannot delete volume {name} at {uri}: {e:#}");
    }
}

/// How long an interrupted run waits for a real host's daemon.
pub const INTERRUPTED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A volume migsuite made, as the host's pool reports it.
#[derive(Debug)]
pub struct Kept {
    pub name: String,
    /// Bytes the host has allocated to it.
    pub bytes: u64,
}

/// A pool's room, as its host reports it.
#[derive(Debug)]
pub struct Room {
    pub capacity: u64,
    pub available: u64,
    /// Its directory (or device) on the host.
    pub path: String,
}

/// A claim's size: none would do, but some pools (LVM) take no empty volume.
const CLAIM_BYTES: u64 = 4096;

/// A raw volume of `bytes` named `name`, as libvirt takes its definition.
fn volume_xml(name: &str, bytes: u64) -> String {
    format!(
        "<volume><name>{}</name><capacity unit='bytes'>{bytes}</capacity>\
         <target><format type='raw'/></target></volume>",
        escape(name)
    )
}

/// The volume by which a runner holds the host whose UUID is `host_uuid`
/// (`super::hold`).
pub fn hold_name(host_uuid: &str) -> String {
    format!("{PREFIX}held-{host_uuid}")
}

/// Whether volume `name` is a hold or its marker, which only its holder, or
/// whoever knows it is stale, deletes.
pub fn is_hold(name: &str) -> bool {
    name.starts_with(&hold_name(""))
}

/// What every case disk's name starts with.
pub const DISK_PREFIX: &str = "migsuite-disk-";

/// The name of the disk of lab `lab_id`'s case, `migsuite-disk-<owner>-<n>`:
/// never content-named (it is written to), and its maker named, so a later
/// run can tell one left by a killed run (`super::leftovers`).
pub fn disk_name(owner: &Owner, lab_id: &str) -> String {
    let n = lab_id.rsplit('-').next().unwrap_or(lab_id);
    format!("{DISK_PREFIX}{owner}-{n}")
}

/// The runner that made disk `name`, if its name says.
pub fn disk_owner(name: &str) -> Option<Owner> {
    Owner::parse(name.strip_prefix(DISK_PREFIX)?.rsplit_once('-')?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_names_its_maker() {
        let owner = Owner::this().unwrap();
        let name = disk_name(owner, &format!("migsuite-{}-3", owner.process));
        assert!(
            name.starts_with(DISK_PREFIX) && name.ends_with("-3"),
            "{name}"
        );
        assert_eq!(disk_owner(&name).as_ref(), Some(owner));
        // Disks of runs from before makers were named are not told apart.
        assert_eq!(disk_owner("migsuite-disk-migsuite-4242@900-0"), None);
    }
}
