//! The lab LAN: a switch namespace with a bridge, one veth per host, and on
//! each host a bridge joining its uplink and its guests' NICs. MTU, offloads
//! and shaping make the links wire-like when the case asks for it.

use super::netns::Netns;
use crate::case::LinkSpec;
use anyhow::Result;
use std::net::Ipv4Addr;

pub const PREFIX_LEN: u8 = 24;
/// The switch's own address: observer, failure monitor and management
/// station (libvirt client) of the runner live here.
pub const RUNNER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 254);
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 100);
/// Bridge on every host that the guests' NICs join.
pub const HOST_BRIDGE: &str = "br0";

pub fn host_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, 0, 1 + index)
}

/// Wires `hosts` to `switch` and configures every link per `link`.
pub fn build(switch: &Netns, hosts: &[&Netns], link: &LinkSpec) -> Result<()> {
    let mtu = link.mtu.to_string();
    switch.exec("ip", &["link", "add", "sw0", "type", "bridge"])?;
    switch.exec("ip", &["link", "set", "sw0", "mtu", &mtu, "up"])?;
    switch.exec("ip", &["addr", "add", &format!("{RUNNER_ADDR}/{PREFIX_LEN}"), "dev", "sw0"])?;
    make_wire_like(switch, "sw0", link, false)?;

    for (i, host) in hosts.iter().enumerate() {
        let port = format!("p{i}");
        switch.exec(
            "ip",
            &["link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu", &mtu, "netns", &host.name],
        )?;
        switch.exec("ip", &["link", "set", &port, "master", "sw0", "up"])?;
        make_wire_like(switch, &port, link, true)?;

        host.exec("ip", &["link", "add", HOST_BRIDGE, "type", "bridge"])?;
        host.exec("ip", &["link", "set", HOST_BRIDGE, "mtu", &mtu, "up"])?;
        host.exec("ip", &["link", "set", "eth0", "master", HOST_BRIDGE, "up"])?;
        host.exec(
            "ip",
            &["addr", "add", &format!("{}/{PREFIX_LEN}", host_addr(i as u8)), "dev", HOST_BRIDGE],
        )?;
        make_wire_like(host, "eth0", link, true)?;
        make_wire_like(host, HOST_BRIDGE, link, false)?;
    }
    Ok(())
}

/// Offloads off (so the MTU really sets the packet size) and a token bucket
/// at the link rate on `dev`'s egress when `shaped`.
fn make_wire_like(ns: &Netns, dev: &str, link: &LinkSpec, shaped: bool) -> Result<()> {
    if !link.offloads {
        // Bridges lack some of these features; veths have all of them.
        let features: &[&str] = if shaped {
            &["tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"]
        } else {
            &["tso", "off", "gso", "off", "gro", "off"]
        };
        let mut args = vec!["-K", dev];
        args.extend_from_slice(features);
        ns.exec("ethtool", &args)?;
    }
    if let (true, Some(rate)) = (shaped, link.rate_mbit) {
        ns.exec(
            "tc",
            &["qdisc", "add", "dev", dev, "root", "tbf", "rate", &format!("{rate}mbit"), "burst", "256kb", "latency", "50ms"],
        )?;
    }
    Ok(())
}
