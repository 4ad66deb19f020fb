//! Holding a real lab's pair against runners on other machines. This
//! machine's runners keep off each other's pairs by lock files
//! (`root::lock`); runners elsewhere with the same inventory (CI jobs of one
//! `nextest --partition`, say) see none of those. So a real host is also
//! held on itself: by a volume `migsuite-held-<host>` in its pool, which
//! its daemon creates only if it has none of that name (of two runners
//! asking at once, one gets it), deleted when the case ends. A runner
//! killed outright leaves it behind: `virsh -c URI vol-delete
//! migsuite-held-<host> --pool POOL` once no run holds the host.

use super::cleanup::{self, OnInterrupt};
use super::libvirtd;
use super::pool::{self, Pool};
use crate::inventory::Inventory;
use anyhow::{Context, Result};
use std::time::Duration;

/// How long a host's daemon may take to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The hosts a runner holds; let go when dropped, or when the run is
/// interrupted.
#[derive(Debug, Default)]
pub struct Holds {
    /// Each hold's volume, and the pool it is in.
    held: Vec<(String, Pool)>,
    _undo: Option<OnInterrupt>,
}

impl Holds {
    /// Nothing: a simulated lab's hosts are this machine's, which its lock
    /// files keep apart.
    pub fn none() -> Holds {
        Holds::default()
    }

    /// Both hosts of `pair` of real lab `inventory`; or, where another runner
    /// holds one, which (whatever was taken is let go).
    pub fn take(inventory: &Inventory, pair: usize) -> Result<Result<Holds, String>> {
        let pair = inventory
            .pairs()
            .nth(pair)
            .with_context(|| format!("lab {} has no pair {pair}", inventory.name))?;
        let mut held = Holds::none();
        let mut places = Vec::new();
        for host in pair.hosts {
            let conn = libvirtd::connect_within(&host.uri, CONNECT_TIMEOUT)
                .with_context(|| format!("host {} of lab {}", host.name, inventory.name))?;
            let pool = Pool::open(conn, &host.pool, false)
                .with_context(|| format!("host {}'s storage pool `{}`", host.name, host.pool))?;
            let name = pool::hold_name(&host.name);
            if !pool.claim(&name)? {
                return Ok(Err(format!(
                    "a runner elsewhere (volume {name} in host {}'s pool `{}`)",
                    host.name, host.pool
                )));
            }
            places.push((host.uri.clone(), host.pool.clone(), name.clone()));
            held.held.push((name, pool));
        }
        held._undo = Some(cleanup::on_interrupt(move || {
            for (uri, pool, name) in places {
                pool::delete_at(&uri, &pool, &name);
            }
        }));
        Ok(Ok(held))
    }
}

impl Drop for Holds {
    fn drop(&mut self) {
        for (name, pool) in self.held.drain(..) {
            if let Err(e) = pool.delete(&name) {
                eprintln!("migsuite: cannot let go of {name}: {e:#}");
            }
        }
    }
}
