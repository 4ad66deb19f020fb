//! The nested Xen hosts a process keeps between its Xen cases: booted once
//! (tens of seconds under TCG), per lab pair, and stopped before another
//! backend's case runs on that pair.

use super::dom0;
use super::host::XenHost;
use crate::guest::image::GuestImage;
use anyhow::{Context, Result};
use std::sync::{Arc, Mutex};

/// Per lab pair: the Xen hosts behind its two lab hosts, by lab host
/// index, each with the dom0 initramfs it booted (what decides whether it
/// can be reused).
type Slots = [Option<(std::path::PathBuf, Arc<XenHost>)>; 2];
/// The Xen hosts of this process, by lab pair.
static HOSTS: Mutex<Vec<Slots>> = Mutex::new(Vec::new());

/// The booted Xen hosts `indexes` of lab pair `pair` for `guest`, booting
/// (side by side) those that are missing, died or carry another guest
/// image; the pair's others are stopped, so that no case runs beside an
/// idle Xen host of its own pair.
///
/// The machine's cores are shared out, not overcommitted: with more vCPUs
/// than cores, a vCPU preempted in Xen or dom0 while holding a spinlock
/// stalls the others, and the stream crawls.
pub fn shared_hosts(guest: &GuestImage, pair: usize, indexes: &[u8]) -> Result<Vec<Arc<XenHost>>> {
    let mut pairs = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    if pairs.len() <= pair {
        pairs.resize_with(pair + 1, Default::default);
    }
    let slots = &mut pairs[pair];
    let key = dom0::initramfs(guest)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpus = (cores / indexes.len().max(1)).max(1);
    for (i, slot) in slots.iter_mut().enumerate() {
        let keep = indexes.contains(&(i as u8))
            && slot
                .as_ref()
                .is_some_and(|(k, h)| *k == key && h.cpus == cpus && h.alive());
        if !keep {
            if let Some((_, h)) = slot.take() {
                h.shutdown();
            }
        }
    }
    let booted: Vec<(u8, Result<XenHost>)> = std::thread::scope(|scope| {
        let boots: Vec<_> = indexes
            .iter()
            .filter(|&&i| slots[i as usize].is_none())
            .map(|&i| {
                (
                    i,
                    scope.spawn(move || XenHost::boot(guest, i, cpus, &|_| {})),
                )
            })
            .collect();
        boots
            .into_iter()
            .map(|(i, b)| {
                let r = b
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("booting Xen host {i} panicked")));
                (i, r)
            })
            .collect()
    });
    for (i, host) in booted {
        let host = host.with_context(|| format!("booting Xen host {i}"))?;
        slots[i as usize] = Some((key.clone(), Arc::new(host)));
    }
    Ok(indexes
        .iter()
        .map(|&i| slots[i as usize].as_ref().expect("booted above").1.clone())
        .collect())
}

/// The QEMU processes of the Xen hosts kept for lab pairs other than
/// `pair`: another case's, on a lab of several pairs.
pub fn other_pairs_hosts(pair: usize) -> Vec<i32> {
    let pairs = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    pairs
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != pair)
        .flat_map(|(_, slots)| slots.iter().flatten().map(|(_, h)| h.qemu_pid()))
        .collect()
}

/// Stops the process's Xen hosts of lab pair `pair`, or of every pair, if
/// any (the kernel also kills them when the process ends, whichever way).
pub fn shutdown_shared_hosts(pair: Option<usize>) {
    let mut pairs = HOSTS.lock().unwrap_or_else(|p| p.into_inner());
    for (_, slots) in pairs
        .iter_mut()
        .enumerate()
        .filter(|(k, _)| pair.is_none_or(|p| p == *k))
    {
        for slot in slots.iter_mut() {
            if let Some((_, h)) = slot.take() {
                h.shutdown();
            }
        }
    }
}
