//! Quantities written with a unit: durations, sizes, rates and percentages.
//! A bare number is refused with a hint, because `downtime: 5` is ambiguous
//! (5 ms? 5 s?) and silently guessing is how thresholds end up 1000x off.

use crate::yaml::scalar::{deserialize_scalar, Reject, Scalar};
use std::fmt;

/// Milliseconds; fractional so that bounds keep `1.5ms` exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Duration(pub f64);

impl Duration {
    pub fn whole_ms(self) -> u64 {
        self.0.round() as u64
    }
}

/// MiB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Size(pub u32);

/// How fast memory is rewritten: MiB per second, or a share of the
/// migration link's goodput as the lab measures it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct DirtyRate(pub crate::case::DirtyRate);

/// A cap on the migration stream, MiB per second (libvirt's unit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Bandwidth(pub u32);

/// Packets per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct PacketRate(pub u32);

/// Mbit/s; None = unlimited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct LinkRate(pub Option<u64>);

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Percent(pub f64);

/// A quantity of `T` from `MIN` to `MAX` (in `T`'s base unit: ms, %), so
/// that a value no run can mean (a zero timeout, a sleep of 1e26 s) is
/// refused where it is written.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Within<T, const MIN: u64, const MAX: u64>(pub T);

/// A quantity with one number in its base unit, for [`Within`].
pub(super) trait Magnitude: Scalar + Copy {
    fn magnitude(self) -> f64;
    /// `n` base units, as the suite would write it.
    fn show(n: f64) -> String;
}

impl Magnitude for Duration {
    fn magnitude(self) -> f64 {
        self.0
    }

    fn show(ms: f64) -> String {
        match ms {
            ms if ms >= 3_600_000.0 && ms % 3_600_000.0 == 0.0 => format!("{}h", ms / 3_600_000.0),
            ms if ms >= 60_000.0 && ms % 60_000.0 == 0.0 => format!("{}m", ms / 60_000.0),
            ms if ms >= 1_000.0 && ms % 1_000.0 == 0.0 => format!("{}s", ms / 1_000.0),
            ms => format!("{ms}ms"),
        }
    }
}

impl Magnitude for Percent {
    fn magnitude(self) -> f64 {
        self.0
    }

    fn show(pct: f64) -> String {
        format!("{pct}%")
    }
}

impl<T: Magnitude, const MIN: u64, const MAX: u64> Within<T, MIN, MAX> {
    fn check(value: T, written: &dyn fmt::Display) -> Result<Self, Reject> {
        let (min, max) = (MIN as f64, MAX as f64);
        if (min..=max).contains(&value.magnitude()) {
            Ok(Within(value))
        } else {
            let mut written = written.to_string();
            if written.len() > 40 {
                written = format!("{}...", &written[..written.floor_char_boundary(30)]);
            }
            Err(Reject::Invalid(format!(
                "`{written}` is out of range: must be from {} to {}",
                T::show(min),
                T::show(max)
            )))
        }
    }
}

impl<T: Magnitude, const MIN: u64, const MAX: u64> Scalar for Within<T, MIN, MAX> {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        T::expecting(f)?;
        write!(
            f,
            ", from {} to {}",
            T::show(MIN as f64),
            T::show(MAX as f64)
        )
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        Self::check(T::from_str(v)?, &v)
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Self::check(T::from_u64(n)?, &n)
    }

    fn from_f64(x: f64) -> Result<Self, Reject> {
        Self::check(T::from_f64(x)?, &x)
    }
}

impl<'de, T: Magnitude, const MIN: u64, const MAX: u64> serde::Deserialize<'de>
    for Within<T, MIN, MAX>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::yaml::scalar::deserialize(d)
    }
}

const DURATION: &str = "a duration like 500ms, 2s or 1.5m";
const SIZE: &str = "a size like 256MiB or 2GiB";
const DIRTY_RATE: &str = "a rate like 64MiB/s, or a share of the measured link like `25% of link`";
const PACKET_RATE: &str = "a packet rate like 1000/s";
const BANDWIDTH: &str = "a bandwidth like 40MiB/s";
const LINK_RATE: &str = "a link rate like 100mbit, 1gbit or `unlimited`";
const PERCENT: &str = "a percentage like 250%";

/// Splits `"1.5s"` into `("1.5", "s")`.
fn split_unit(v: &str) -> (&str, &str) {
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    (&v[..end], v[end..].trim_start())
}

/// A non-negative decimal without sign or exponent: `2`, `1.5`.
fn decimal(number: &str) -> Option<f64> {
    let plain =
        number.chars().all(|c| c.is_ascii_digit() || c == '.') && number.matches('.').count() <= 1;
    plain.then(|| number.parse().ok()).flatten()
}

fn integer(number: &str) -> Option<u64> {
    let plain = number.bytes().all(|b| b.is_ascii_digit());
    plain.then(|| number.parse().ok()).flatten()
}

fn not_a(v: &str, expected: &str) -> Reject {
    Reject::Invalid(format!("`{v}` is not {expected}"))
}

fn needs_unit(n: impl fmt::Display, examples: &str) -> Reject {
    Reject::Invalid(format!(
        "`{n}` has no unit; write it with one, like {examples}"
    ))
}

fn decimal_unit(v: &str, n: u64, binary: &str) -> Reject {
    Reject::Invalid(format!(
        "`{v}`: write sizes in MiB or GiB, e.g. {n}{binary}; MB and GB are not accepted"
    ))
}

/// `<n>MiB` or `<n>GiB` as MiB; `v` and `expected` are for the message.
fn mib(number: &str, unit: &str, v: &str, expected: &str) -> Result<u32, Reject> {
    let n = integer(number).ok_or_else(|| not_a(v, expected))?;
    let factor = match unit {
        "MiB" => 1,
        "GiB" => 1024,
        "MB" | "M" | "mb" | "m" => return Err(decimal_unit(v, n, "MiB")),
        "GB" | "G" | "gb" | "g" => return Err(decimal_unit(v, n, "GiB")),
        _ => return Err(not_a(v, expected)),
    };
    n.checked_mul(factor)
        .and_then(|mib| u32::try_from(mib).ok())
        .ok_or_else(|| Reject::Invalid(format!("`{v}` is too large")))
}

impl Scalar for Duration {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(DURATION)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let (number, unit) = split_unit(v);
        let n = decimal(number).ok_or_else(|| not_a(v, DURATION))?;
        let factor = match unit {
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            _ => return Err(not_a(v, DURATION)),
        };
        Ok(Duration(n * factor))
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Err(needs_unit(n, &format!("{n}ms or {n}s")))
    }

    fn from_f64(x: f64) -> Result<Self, Reject> {
        Err(needs_unit(x, &format!("{x}ms or {x}s")))
    }
}

impl Scalar for Size {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SIZE)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let (number, unit) = split_unit(v);
        mib(number, unit, v, SIZE).map(Size)
    }

    /// A plain integer is MiB: the one unit sizes are written in anyway.
    fn from_u64(n: u64) -> Result<Self, Reject> {
        u32::try_from(n)
            .map(Size)
            .map_err(|_| Reject::Invalid(format!("`{n}` MiB is too large")))
    }
}

impl Scalar for DirtyRate {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(DIRTY_RATE)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        use crate::case::DirtyRate as Rate;
        if let Some(share) = v.strip_suffix("of link") {
            let pct = share
                .trim_end()
                .strip_suffix('%')
                .and_then(decimal)
                .ok_or_else(|| not_a(v, DIRTY_RATE))?;
            // Up to ten times the link: a case may mean not to converge.
            if !(pct > 0.0 && pct <= 1000.0) {
                return Err(Reject::Invalid(format!(
                    "`{v}`: the share of the link must be above 0% and at most 1000%"
                )));
            }
            return Ok(DirtyRate(Rate::OfLink(pct / 100.0)));
        }
        let size = v.strip_suffix("/s").ok_or_else(|| not_a(v, DIRTY_RATE))?;
        let (number, unit) = split_unit(size);
        mib(number, unit, v, DIRTY_RATE).map(|m| DirtyRate(Rate::MibPerSec(m)))
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Err(needs_unit(n, &format!("{n}MiB/s")))
    }
}

impl Scalar for Bandwidth {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(BANDWIDTH)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let size = v.strip_suffix("/s").ok_or_else(|| not_a(v, BANDWIDTH))?;
        let (number, unit) = split_unit(size);
        match mib(number, unit, v, BANDWIDTH)? {
            0 => Err(Reject::Invalid(format!(
                "`{v}` would stop the migration; leave `bandwidth` out for no cap"
            ))),
            m => Ok(Bandwidth(m)),
        }
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Err(needs_unit(n, &format!("{n}MiB/s")))
    }
}

impl Scalar for PacketRate {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(PACKET_RATE)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        v.strip_suffix("/s")
            .and_then(integer)
            .and_then(|n| u32::try_from(n).ok())
            .map(PacketRate)
            .ok_or_else(|| not_a(v, PACKET_RATE))
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Err(needs_unit(n, &format!("{n}/s")))
    }
}

impl Scalar for LinkRate {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(LINK_RATE)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        if v == "unlimited" {
            return Ok(LinkRate(None));
        }
        let (number, unit) = split_unit(v);
        let n = integer(number).ok_or_else(|| not_a(v, LINK_RATE))?;
        let mbit = match unit {
            "mbit" => n,
            "gbit" => n.saturating_mul(1000),
            _ => return Err(not_a(v, LINK_RATE)),
        };
        if mbit == 0 {
            return Err(Reject::Invalid(format!(
                "`{v}` would stop all traffic; use `unlimited` to leave the link unshaped"
            )));
        }
        Ok(LinkRate(Some(mbit)))
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Err(needs_unit(n, &format!("{n}mbit or {n}gbit")))
    }
}

impl Scalar for Percent {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(PERCENT)
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        v.strip_suffix('%')
            .and_then(|n| decimal(n.trim_end()))
            .map(Percent)
            .ok_or_else(|| not_a(v, PERCENT))
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Err(needs_unit(n, &format!("{n}%")))
    }

    fn from_f64(x: f64) -> Result<Self, Reject> {
        Err(needs_unit(x, &format!("{x}%")))
    }
}

deserialize_scalar!(Duration, Size, DirtyRate, Bandwidth, PacketRate, LinkRate, Percent);

/// Ranges of the quantities a suite may give, in ms and %.
const HOUR: u64 = 3_600_000;
/// A moment within a run (the warning, a fault, the settling).
pub(super) type Moment = Within<Duration, 0, HOUR>;
/// QEMU's `downtime-limit` goes up to 2000 s.
pub(super) type DowntimeLimit = Within<Duration, 1, 2_000_000>;
pub(super) type Timeout = Within<Duration, 1_000, { 24 * HOUR }>;
pub(super) type Interval = Within<Duration, 10, 60_000>;
/// A bound on a measured time; 0 could never be met.
pub(super) type TimeBound = Within<Duration, 1, { 24 * HOUR }>;
/// A bound in percent: of one core for CPU (100 % is one core busy), of
/// the limit asked for a downtime.
pub(super) type PercentBound = Within<Percent, 1, 100_000>;
/// A relative change of the baseline's median.
pub(super) type NoisePercent = Within<Percent, 1, 1000>;
/// How much worse than the reference a variant may be; 0 %: not at all.
pub(super) type CompareBound = Within<Percent, 0, 1000>;

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use rstest::rstest;

    fn parse<T: Scalar>(yaml: &str) -> Result<T, String> {
        crate::yaml::scalar::deserialize(serde_yaml::Deserializer::from_str(yaml))
            .map_err(|e: serde_yaml::Error| e.to_string())
    }

    #[rstest]
    #[case("300ms", 300.0)]
    #[case("2s", 2000.0)]
    #[case("1.5s", 1500.0)]
    #[case("0.5ms", 0.5)]
    #[case("1m", 60_000.0)]
    #[case("0s", 0.0)]
    fn durations(#[case] yaml: &str, #[case] ms: f64) {
        assert_relative_eq!(parse::<Duration>(yaml).unwrap().0, ms);
    }

    #[rstest]
    #[case("5", "`5` has no unit")]
    #[case("2.5", "like 2.5ms or 2.5s")]
    #[case("5h", "`5h` is not a duration")]
    #[case("-1s", "`-1s` is not a duration")]
    #[case("1.2.3s", "is not a duration")]
    #[case("s", "is not a duration")]
    #[case("[1]", "invalid type: sequence, expected a duration like 500ms")]
    fn bad_durations(#[case] yaml: &str, #[case] message: &str) {
        let err = parse::<Duration>(yaml).unwrap_err();
        assert!(err.contains(message), "{err}");
    }

    #[rstest]
    #[case("256MiB", 256)]
    #[case("2GiB", 2048)]
    #[case("512", 512)]
    #[case("0MiB", 0)]
    fn sizes(#[case] yaml: &str, #[case] mib: u32) {
        assert_eq!(parse::<Size>(yaml).unwrap(), Size(mib));
    }

    #[rstest]
    #[case("256MB", "write sizes in MiB or GiB")]
    #[case("1GB", "e.g. 1GiB")]
    #[case("1.5GiB", "is not a size like 256MiB")]
    #[case("lots", "is not a size like 256MiB")]
    #[case("4194304GiB", "too large")]
    fn bad_sizes(#[case] yaml: &str, #[case] message: &str) {
        let err = parse::<Size>(yaml).unwrap_err();
        assert!(err.contains(message), "{err}");
    }

    #[rstest]
    #[case("40MiB/s", Ok(40))]
    #[case("1GiB/s", Ok(1024))]
    #[case("0MiB/s", Err("would stop the migration"))]
    #[case("40", Err("`40` has no unit"))]
    #[case("40MB/s", Err("write sizes in MiB or GiB"))]
    #[case("25% of link", Err("is not a bandwidth like 40MiB/s"))]
    fn bandwidths(#[case] yaml: &str, #[case] expected: Result<u32, &str>) {
        match (parse::<Bandwidth>(yaml), expected) {
            (Ok(b), Ok(mib)) => assert_eq!(b, Bandwidth(mib)),
            (Err(e), Err(message)) => assert!(e.contains(message), "{e}"),
            (got, _) => panic!("{yaml}: {got:?}"),
        }
    }

    #[test]
    fn rates() {
        use crate::case::DirtyRate as Rate;
        assert_eq!(
            parse::<DirtyRate>("64MiB/s").unwrap(),
            DirtyRate(Rate::MibPerSec(64))
        );
        assert_eq!(
            parse::<DirtyRate>("1GiB/s").unwrap(),
            DirtyRate(Rate::MibPerSec(1024))
        );
        assert_eq!(
            parse::<DirtyRate>("25% of link").unwrap(),
            DirtyRate(Rate::OfLink(0.25))
        );
        assert_eq!(
            parse::<DirtyRate>("150%of link").unwrap(),
            DirtyRate(Rate::OfLink(1.5))
        );
        assert_eq!(parse::<PacketRate>("1000/s").unwrap(), PacketRate(1000));
        assert_eq!(parse::<LinkRate>("100mbit").unwrap(), LinkRate(Some(100)));
        assert_eq!(parse::<LinkRate>("1gbit").unwrap(), LinkRate(Some(1000)));
        assert_eq!(parse::<LinkRate>("unlimited").unwrap(), LinkRate(None));
        assert_relative_eq!(parse::<Percent>("250%").unwrap().0, 250.0);
        assert_relative_eq!(parse::<Percent>("12.5%").unwrap().0, 12.5);
    }

    fn refusal<T: Scalar + fmt::Debug>(yaml: &str) -> String {
        parse::<T>(yaml).unwrap_err()
    }

    #[rstest]
    #[case::dirty_rate_without_per_second(refusal::<DirtyRate>("64MiB"), "is not a rate like 64MiB/s")]
    #[case::dirty_rate_in_mb(refusal::<DirtyRate>("64MB/s"), "write sizes in MiB or GiB")]
    #[case::dirty_share_of_nothing(refusal::<DirtyRate>("0% of link"), "must be above 0% and at most 1000%")]
    #[case::dirty_share_without_percent(refusal::<DirtyRate>("25 of link"), "or a share of the measured link like `25% of link`")]
    #[case::packet_rate_bare(refusal::<PacketRate>("1000"), "like 1000/s")]
    #[case::packet_rate_signed(refusal::<PacketRate>("+5/s"), "is not a packet rate")]
    #[case::link_rate_bare(refusal::<LinkRate>("100"), "like 100mbit or 100gbit")]
    #[case::link_rate_zero(refusal::<LinkRate>("0mbit"), "use `unlimited`")]
    #[case::link_rate_unit(refusal::<LinkRate>("1gbps"), "is not a link rate")]
    #[case::percent_bare(refusal::<Percent>("250"), "like 250%")]
    #[case::percent_negative(refusal::<Percent>("-5%"), "is not a percentage")]
    #[case::percent_word(refusal::<Percent>("lots"), "`lots` is not a percentage like 250%")]
    fn bad_rates(#[case] err: String, #[case] message: &str) {
        assert!(err.contains(message), "{err}");
    }
}
