//! Holding a real lab's pair against runners on other machines. This
//! machine's runners keep off each other's pairs by lock files
//! (`root::lock`); runners elsewhere (each with an inventory of its own
//! addresses, naming the same hosts) see none of those. So a real host is
//! also held on itself: by a volume `migsuite-held-<host>` in its pool,
//! which its daemon creates only if it has none of that name (of two
//! runners asking at once, one gets it), deleted when the case ends or is
//! interrupted. The hold is named by the host's UUID (libvirt's), so that
//! two inventories naming one machine differently hold the same thing.
//! Beside it a marker volume, `<hold>.by.<owner>` (`owner::Owner`), names
//! the holder: a hold left by a run of this machine that is gone (killed,
//! or of an earlier boot) is taken over; one of another machine is named
//! in the wait, with the command that removes it.

use super::cleanup::{self, OnInterrupt};
use super::owner::{Liveness, Owner};
use super::pool::{self, Pool};
use super::{capabilities, libvirtd};
use crate::inventory::{self, Inventory};
use anyhow::{Context, Result};

/// The hosts a runner holds; let go when dropped, or when the run is
/// interrupted.
#[derive(Debug, Default)]
pub struct Holds {
    /// Each hold's volume and marker, and the pool they are in.
    held: Vec<(String, String, Pool)>,
    _undo: Vec<OnInterrupt>,
}

impl Holds {
    /// Nothing: a simulated lab's hosts are this machine's, which its lock
    /// files keep apart.
    pub fn none() -> Holds {
        Holds::default()
    }

    /// Both hosts of `pair` of real lab `inventory`; or, where another runner
    /// holds one, who (whatever was taken is let go).
    pub fn take(inventory: &Inventory, pair: usize) -> Result<Result<Holds, String>> {
        let mut held = Holds::none();
        for host in inventory.pair(pair)?.hosts {
            let conn = libvirtd::connect_host(host, &inventory.name, libvirtd::CONNECT_TIMEOUT)?;
            let uuid = capabilities::host_uuid(&conn.capabilities()?).with_context(|| {
                format!(
                    "host {}'s libvirt capabilities give no host UUID",
                    host.name
                )
            })?;
            let pool = Pool::of_real_host(conn, host)?;
            let name = pool::hold_name(&uuid);
            if !claim(&pool, &name)? {
                return Ok(Err(busy(&pool, &name, host)?));
            }
            let marker = format!("{}{}", marker_prefix(&name), Owner::this()?);
            let (uri, pool_name) = (host.uri.clone(), host.pool.clone());
            let (hold, its_marker) = (name.clone(), marker.clone());
            held._undo.push(cleanup::on_interrupt(move || {
                for volume in [&its_marker, &hold] {
                    pool::delete_at(&uri, &pool_name, volume);
                }
            }));
            for old in pool.names_starting(&marker_prefix(&name))? {
                pool.delete(&old)?;
            }
            pool.claim(&marker)?;
            held.held.push((name, marker, pool));
        }
        Ok(Ok(held))
    }
}

impl Drop for Holds {
    fn drop(&mut self) {
        for (name, marker, pool) in self.held.drain(..) {
            for volume in [&marker, &name] {
                if let Err(e) = pool.delete(volume) {
                    eprintln!("migsuite: cannot let go of {volume}: {e:#}");
                }
            }
        }
    }
}

fn marker_prefix(hold: &str) -> String {
    format!("{hold}.by.")
}

/// Claims hold `name`, taking it over from a run of this machine that is
/// gone (killed before it could let go).
fn claim(pool: &Pool, name: &str) -> Result<bool> {
    if pool.claim(name)? {
        return Ok(true);
    }
    match holder(pool, name)? {
        Some(h) if h.liveness()? == Liveness::Gone => {
            eprintln!(
                "migsuite: taking over {name}, left by {}, which is gone",
                h.describe()
            );
            pool.delete(name)?;
            pool.claim(name)
        }
        _ => Ok(false),
    }
}

/// Who holds hold `name`, as the marker beside it says.
fn holder(pool: &Pool, name: &str) -> Result<Option<Owner>> {
    let prefix = marker_prefix(name);
    Ok(pool
        .names_starting(&prefix)?
        .into_iter()
        .find_map(|marker| Owner::parse(marker.strip_prefix(&prefix)?)))
}

/// Who holds `host` by `name`, and how to let it go if nobody does.
fn busy(pool: &Pool, name: &str, host: &inventory::Host) -> Result<String> {
    let who = match holder(pool, name)? {
        Some(h) => h.describe(),
        None => "a runner elsewhere".into(),
    };
    Ok(format!(
        "{who} (volume {name} in host {}'s pool `{}`; if no run holds it any more: virsh -c {} \
         vol-delete {name} --pool {})",
        host.name, host.pool, host.uri, host.pool
    ))
}
