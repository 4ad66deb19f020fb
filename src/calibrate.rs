//! `migsuite calibrate`: what a lab's migration network carries, measured
//! on a pair held as a case holds it.

use crate::case::LinkSpec;
use crate::inventory::Inventory;
use crate::lab::calibration::{self, LinkRates};
use crate::lab::Lab;
use crate::runner;
use anyhow::Result;

/// A simulated lab's migration link at `link`, and a bare veth pair at the
/// same settings, for comparison.
pub fn simulated(link: &LinkSpec, inventory: &Inventory) -> Result<(LinkRates, LinkRates)> {
    let pairs: Vec<usize> = (0..inventory.pairs().count()).collect();
    let exclusive = runner::exclusive(inventory, &pairs, &|m| eprintln!("{m}"))?;
    let lab = Lab::start(link, inventory, exclusive.pair)?;
    let in_lab = calibration::link_rates(&lab)?;
    drop(lab);
    Ok((in_lab, calibration::bare_pair_rates(link)?))
}

/// What a real lab's migration network carries each way between the hosts
/// of its first free pair, as their agents measure it: (from, to, rates).
pub fn real(inventory: &Inventory) -> Result<Vec<(String, String, LinkRates)>> {
    let pairs: Vec<usize> = (0..inventory.pairs().count()).collect();
    let exclusive = runner::exclusive(inventory, &pairs, &|m| eprintln!("{m}"))?;
    let link = LinkSpec {
        mtu: inventory.link_mtu.unwrap_or_default(),
        rate_mbit: None,
        offloads: true,
    };
    let mut lab = Lab::start(&link, inventory, exclusive.pair)?;
    let mut ways = Vec::new();
    for _ in 0..2 {
        let rates = calibration::link_rates(&lab)?;
        ways.push((lab.source.name.clone(), lab.destination.name.clone(), rates));
        lab.swap_roles();
    }
    Ok(ways)
}
