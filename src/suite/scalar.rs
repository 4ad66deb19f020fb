//! The suite language's own scalars; the ones every YAML file of the
//! project uses are in `crate::yaml::scalar`.

use crate::case::PacketSize;
use crate::yaml::scalar::{deserialize, deserialize_scalar, Reject, Scalar};
use serde::de::Deserializer;
use std::fmt;

/// UDP payload size of a workload's packets.
#[derive(Clone, Copy, Debug)]
pub(super) struct PacketSizeDef(pub PacketSize);

/// The largest UDP payload over IPv4 (65535 - 20 - 8).
const MAX_UDP_PAYLOAD: u64 = 65507;

impl Scalar for PacketSizeDef {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "`fill` or a payload size in bytes from 1 to {MAX_UDP_PAYLOAD}"
        )
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        match v {
            "fill" => Ok(PacketSizeDef(PacketSize::Fill)),
            _ => Err(Reject::Invalid(format!(
                "expected `fill` or a payload size in bytes from 1 to {MAX_UDP_PAYLOAD}, got `{v}`"
            ))),
        }
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        match n {
            1..=MAX_UDP_PAYLOAD => Ok(PacketSizeDef(PacketSize::Bytes(n as u32))),
            _ => Err(Reject::Invalid(format!(
                "packet size must be from 1 to {MAX_UDP_PAYLOAD} bytes (the largest UDP \
                 payload over IPv4), got {n}; `fill` fills the MTU"
            ))),
        }
    }
}

/// An integer in `LO..=HI`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Count<const LO: u32, const HI: u32>(pub u32);

impl<const LO: u32, const HI: u32> Scalar for Count<LO, HI> {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer from {LO} to {HI}")
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        match u32::try_from(n) {
            Ok(n) if (LO..=HI).contains(&n) => Ok(Count(n)),
            _ => Err(Reject::Invalid(format!(
                "must be from {LO} to {HI}, got {n}"
            ))),
        }
    }
}

impl<'de, const LO: u32, const HI: u32> serde::Deserialize<'de> for Count<LO, HI> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d)
    }
}

deserialize_scalar!(PacketSizeDef);
