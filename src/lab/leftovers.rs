//! What a run killed outright (SIGKILL, a crash, a runner machine lost)
//! left on a real pair's hosts: its guest, perhaps half migrated, and its
//! disks. A run that holds the pair (`hold`) removes them before its case:
//! every guest and disk names its maker (`identity`,
//! `pool::disk_owner`), and one whose maker is gone is removed. What a
//! runner of another machine made is only named, with the command that
//! removes it: that machine alone can tell whether its run is over.

use super::identity::{owner_in_metadata, METADATA_URI};
use super::libvirtd::{self, Connection};
use super::owner::{Liveness, Owner};
use super::pool::{self, Pool};
use crate::inventory::{self, Inventory};
use anyhow::{Context, Result};
use virt::domain::Domain;

/// Removes from the hosts of `pair` of `inventory` what runs that are gone
/// left there.
pub fn remove(inventory: &Inventory, pair: usize) -> Result<()> {
    for host in inventory.pair(pair)?.hosts {
        let conn = libvirtd::connect_host(host, &inventory.name, libvirtd::CONNECT_TIMEOUT)?;
        remove_guests(&conn, host)?;
        let pool = Pool::of_real_host(conn, host)?;
        remove_disks(&pool, host)?;
    }
    Ok(())
}

/// The guests migsuite made on `host` whose makers are gone.
fn remove_guests(conn: &Connection, host: &inventory::Host) -> Result<()> {
    let domains = conn
        .list_all_domains(0)
        .with_context(|| format!("listing host {}'s domains", host.name))?;
    for dom in domains {
        let Some(owner) = maker(&dom) else {
            continue;
        };
        let name = dom.name().unwrap_or_default();
        let by_hand = format!("virsh -c {} destroy {name}", host.uri);
        settle(&owner, &format!("guest {name}"), host, &by_hand, || {
            if dom.is_active().unwrap_or(false) {
                dom.destroy()
                    .with_context(|| format!("destroying {name} on host {}", host.name))?;
            }
            if dom.is_persistent().unwrap_or(false) {
                dom.undefine()
                    .with_context(|| format!("undefining {name} on host {}", host.name))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// The runner that made `dom`, if migsuite did.
fn maker(dom: &Domain) -> Option<Owner> {
    let element = dom
        .metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_URI),
            0,
        )
        .ok()?;
    owner_in_metadata(&element)
}

/// The disks in `host`'s pool whose makers are gone.
fn remove_disks(pool: &Pool, host: &inventory::Host) -> Result<()> {
    for name in pool.names_starting(pool::DISK_PREFIX)? {
        let Some(owner) = pool::disk_owner(&name) else {
            continue;
        };
        let by_hand = format!(
            "virsh -c {} vol-delete {name} --pool {}",
            host.uri, host.pool
        );
        settle(&owner, &format!("disk {name}"), host, &by_hand, || {
            pool.delete(&name)
        })?;
    }
    Ok(())
}

/// Removes `what`, made on `host` by `owner`, with `remove` if its maker is
/// gone; names it, with the command `by_hand` that removes it, if its maker
/// is of another machine.
fn settle(
    owner: &Owner,
    what: &str,
    host: &inventory::Host,
    by_hand: &str,
    remove: impl FnOnce() -> Result<()>,
) -> Result<()> {
    match owner.liveness()? {
        Liveness::Alive => Ok(()),
        Liveness::Gone => {
            eprintln!(
                "migsuite: removing {what} from host {}, left by {}, which is gone",
                host.name,
                owner.describe()
            );
            remove()
        }
        Liveness::Elsewhere => {
            eprintln!(
                "migsuite: host {} has {what} of {}; if that run is over: {by_hand}",
                host.name,
                owner.describe()
            );
            Ok(())
        }
    }
}
