//! What the lab's migration link carries, measured before a case: TCP
//! goodput from the source host to the destination over the same path and
//! MTU the migration stream takes, and the rate on the wire (frames, headers
//! included) that it makes. A built-in sender and receiver, so the figure
//! depends on nothing but the lab: this process's on a simulated lab's
//! cable, the hosts' agents' on a real lab's network (`crate::host_agent::probe`).

use super::link::tx_bytes as link_tx_bytes;
use super::netns::Netns;
use super::{cleanup, network, Host, Lab};
use crate::case::LinkSpec;
use crate::goodput::{self, mbit};
use crate::host_agent::probe;
use anyhow::{bail, Context, Result};
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link carried: payload and wire rates, Mbit/s.
pub struct LinkRates {
    pub goodput_mbit: f64,
    pub wire_mbit: f64,
}

/// What the link from the lab's source host to its destination carries.
pub fn link_rates(lab: &Lab) -> Result<LinkRates> {
    if !lab.inventory.simulated {
        return agents_rates(lab, &lab.source, &lab.destination);
    }
    let (from, to) = (lab.source.simulated()?, lab.destination.simulated()?);
    rates_between(&from.netns, &to.netns, to.link_addr)
}

/// What a real lab's network carries back, from the destination to the
/// source: runs alternate direction, and a real network may carry less
/// one way. None on a simulated lab, whose cable is the same both ways.
pub fn return_rates(lab: &Lab) -> Result<Option<LinkRates>> {
    if lab.inventory.simulated {
        return Ok(None);
    }
    agents_rates(lab, &lab.destination, &lab.source).map(Some)
}

/// What the network carries from `from`'s migration address to `to`'s, as
/// the hosts' agents measure it.
fn agents_rates(lab: &Lab, from: &Host, to: &Host) -> Result<LinkRates> {
    let agents = lab.agents()?;
    let measured = probe::ask::goodput(&agents, &from.peer(), &to.peer(), probe::PORT)?;
    Ok(LinkRates {
        goodput_mbit: measured.goodput_mbit(),
        wire_mbit: measured.wire_mbit(),
    })
}

/// What a cable (`network::cable`) from `from` to `to` (at `to_addr`) carries.
fn rates_between(from: &Netns, to: &Netns, to_addr: Ipv4Addr) -> Result<LinkRates> {
    let listener = to.enter(|| TcpListener::bind((to_addr, 0)))??;
    let addr = listener.local_addr()?;
    let source = from.name.clone();
    let receiver = std::thread::spawn(move || -> Result<LinkRates> {
        let mut stream = accept_within(&listener, CONNECT_TIMEOUT * 2)?;
        let window = goodput::receive(&mut stream, || link_tx_bytes(&source))
            .context("calibration: measuring the migration link")?;
        Ok(LinkRates {
            goodput_mbit: window.goodput_mbit(),
            wire_mbit: mbit(window.closed.saturating_sub(window.opened), window.elapsed),
        })
    });
    let stream = from
        .enter(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))?
        .with_context(|| format!("calibration: connecting to {addr} over the migration link"))?;
    goodput::send(stream);
    receiver.join().expect("calibration receiver panicked")
}

/// The first connection to `listener` within `timeout`: a sender that
/// never connects (its own connect timed out) leaves no receiver waiting.
fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let until = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                bail!("calibration: no sender connected within {timeout:?}")
            }
            Err(e) => return Err(e).context("calibration: accepting the sender"),
        }
    }
}

/// What a bare veth pair with `link`'s settings carries, between two
/// namespaces of its own: the lab's link is meant to cost no more than that.
pub fn bare_pair_rates(link: &LinkSpec) -> Result<LinkRates> {
    let (lab, building) = cleanup::new_lab()?;
    let (a, b) = (
        Netns::create(&format!("{}-a", lab.id))?,
        Netns::create(&format!("{}-b", lab.id))?,
    );
    network::cable([&a, &b], [0, 1], link)?;
    drop(building);
    rates_between(&a, &b, network::link_addr(1))
}
