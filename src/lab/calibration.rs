//! What the lab's migration link carries, measured before a case: TCP
//! goodput from the source host to the destination over the same path and
//! MTU the migration stream takes, and the rate on the wire (frames, headers
//! included) that it makes. A built-in sender and receiver, so the figure
//! depends on nothing but the lab.

use super::link::tx_bytes as link_tx_bytes;
use super::netns::Netns;
use super::{cleanup, network, Lab};
use crate::case::LinkSpec;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Bytes received before this much time has passed are not counted: TCP's
/// slow start and the token bucket's initial burst.
const WARM_UP: Duration = Duration::from_millis(100);
const MEASURE: Duration = Duration::from_millis(1000);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the link carried: payload and wire rates, Mbit/s.
pub struct LinkRates {
    pub goodput_mbit: f64,
    pub wire_mbit: f64,
}

/// What the link from the lab's source host to its destination carries,
/// in a simulated lab (a real lab's hosts run nothing of migsuite's that
/// could send or receive: None).
pub fn link_rates(lab: &Lab) -> Result<Option<LinkRates>> {
    if !lab.inventory.simulated {
        return Ok(None);
    }
    let (from, to) = (lab.source.simulated()?, lab.destination.simulated()?);
    rates_between(&from.netns, &to.netns, to.link_addr).map(Some)
}

/// What a cable (`network::cable`) from `from` to `to` (at `to_addr`) carries.
fn rates_between(from: &Netns, to: &Netns, to_addr: Ipv4Addr) -> Result<LinkRates> {
    let listener = to.enter(|| TcpListener::bind((to_addr, 0)))??;
    let addr = listener.local_addr()?;
    let source = from.name.clone();
    let receiver = std::thread::spawn(move || receive(&listener, &source));
    let stream = from
        .enter(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))?
        .with_context(|| format!("calibration: connecting to {addr} over the migration link"))?;
    send(stream);
    receiver.join().expect("calibration receiver panicked")
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

/// Writes until the receiver closes, or for at most a few seconds.
fn send(mut stream: TcpStream) {
    let chunk = vec![0x5au8; 64 << 10];
    let deadline = Instant::now() + WARM_UP + MEASURE + Duration::from_secs(5);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    while Instant::now() < deadline && stream.write_all(&chunk).is_ok() {}
}

fn receive(listener: &TcpListener, source_ns: &str) -> Result<LinkRates> {
    listener.set_nonblocking(false)?;
    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut first: Option<Instant> = None;
    let (mut counted, mut window_start) = (0u64, None);
    let began = Instant::now();
    let mut wire_from = link_tx_bytes(source_ns)?;
    let rates = |counted: u64, since: Instant, wire_from: u64| -> Result<LinkRates> {
        let secs = since.elapsed().as_secs_f64();
        let wire = link_tx_bytes(source_ns)?.saturating_sub(wire_from);
        Ok(LinkRates {
            goodput_mbit: counted as f64 * 8.0 / secs / 1e6,
            wire_mbit: wire as f64 * 8.0 / secs / 1e6,
        })
    };
    loop {
        let n = match stream.read(&mut buf) {
            // A link that stalls (MTU 68: the sender's minimum MSS does not
            // fit) carries next to nothing: that is its goodput.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return rates(counted, window_start.unwrap_or(began), wire_from);
            }
            r => r.context("calibration: reading from the migration link")?,
        };
        if n == 0 {
            bail!("calibration: the sender closed the connection early");
        }
        let now = Instant::now();
        let since = now - *first.get_or_insert(now);
        if since < WARM_UP {
            continue;
        }
        // The read that opens the window carries bytes from before it.
        let Some(start) = window_start else {
            wire_from = link_tx_bytes(source_ns)?;
            window_start = Some(Instant::now());
            continue;
        };
        counted += n as u64;
        if now - start >= MEASURE {
            return rates(counted, start, wire_from);
        }
    }
}
