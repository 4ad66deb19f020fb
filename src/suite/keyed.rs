//! The suite's mappings read by hand, so that a key given twice is refused
//! at the second one and a metric's key is checked against `METRICS`:
//! bounds (each in its metric's unit), comparisons, noise thresholds.

use super::units::{CompareBound, NoisePercent, PercentBound, Size, TimeBound};
use crate::measure::Unit;
use crate::metrics::{Metric, METRICS};
use crate::yaml::scalar::{deserialize_scalar, keyword, keyword_enum, Reject, Scalar};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

/// Upper bounds, keyed by the metrics a suite may bound
/// (`crate::metrics::METRICS`), each written in its metric's unit, and
/// what they apply to.
#[derive(Clone, Debug, Default)]
pub(super) struct BoundsDef {
    pub apply_to: Option<AggregateDef>,
    /// In the metric's unit: ms, %, MiB.
    pub limits: BTreeMap<MetricKey, f64>,
}

impl BoundsDef {
    /// `self` layered over `base`: keys given here win.
    pub fn over(self, base: BoundsDef) -> BoundsDef {
        let mut limits = base.limits;
        limits.extend(self.limits);
        BoundsDef {
            apply_to: self.apply_to.or(base.apply_to),
            limits,
        }
    }
}

impl<'de> Deserialize<'de> for BoundsDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(BoundsVisitor)
    }
}

struct BoundsVisitor;

impl<'de> Visitor<'de> for BoundsVisitor {
    type Value = BoundsDef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping of bounds")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BoundsDef, A::Error> {
        let mut given = BTreeMap::new();
        let mut bounds = BoundsDef::default();
        while let Some(key) = map.next_key_seed(NewKey(&given, Keys::Fixed("bound")))? {
            given.insert(key, ());
            match key {
                BoundKey::ApplyTo => bounds.apply_to = Some(map.next_value()?),
                BoundKey::Metric(metric) => {
                    let limit = map.next_value_seed(Limit(metric))?;
                    bounds.limits.insert(metric, limit);
                }
            }
        }
        Ok(bounds)
    }
}

/// A key of `bounds`: what they apply to, or a metric a suite may bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BoundKey {
    ApplyTo,
    Metric(MetricKey),
}

impl Scalar for BoundKey {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a bound's name")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let keys: Vec<_> = std::iter::once(("apply_to", BoundKey::ApplyTo))
            .chain(
                METRICS
                    .iter()
                    .filter(|m| m.bounded)
                    .map(|m| (m.key, BoundKey::Metric(MetricKey(m.key)))),
            )
            .collect();
        some_metric(v, "bound", &keys, "cannot be bounded")
    }
}

impl fmt::Display for BoundKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            BoundKey::ApplyTo => f.write_str("apply_to"),
            BoundKey::Metric(key) => key.fmt(f),
        }
    }
}

/// A bound's value, read in its metric's unit: a duration for a time, a
/// percentage, a size for memory.
struct Limit(MetricKey);

impl<'de> DeserializeSeed<'de> for Limit {
    type Value = f64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f64, D::Error> {
        match Metric::by_key(self.0 .0).map(|m| m.unit) {
            Some(Unit::Ms) => Ok(TimeBound::deserialize(d)?.0 .0),
            Some(Unit::Percent) => Ok(PercentBound::deserialize(d)?.0 .0),
            Some(Unit::Mib) => Ok(f64::from(Size::deserialize(d)?.0)),
            _ => Err(de::Error::custom(format!(
                "`{}` has no unit a suite can write a bound in",
                self.0
            ))),
        }
    }
}

keyword_enum!(pub(super) AggregateDef("aggregate") { Worst = "worst", Mean = "mean" });

/// `compare`: how much worse than the reference each compared metric of
/// another variant may be, keyed by the metric (`total_time: 10%`).
#[derive(Debug, Default)]
pub(super) struct CompareDef(pub BTreeMap<MetricKey, CompareBound>);

impl<'de> Deserialize<'de> for CompareDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueKeys::new(Keys::Fixed("metric")))
            .map(CompareDef)
    }
}

/// What the keys of a mapping are, for its messages: names the suite
/// gives (a workload's), or keys of a fixed set (a metric's), each with
/// what one names.
#[derive(Clone, Copy)]
pub(super) enum Keys {
    Named(&'static str),
    Fixed(&'static str),
}

impl Keys {
    /// Why `key`, given a second time, is refused.
    fn twice(self, key: &dyn fmt::Display) -> String {
        match self {
            Keys::Named(noun) => {
                format!("{noun} `{key}` is defined twice; give each {noun} its own name")
            }
            Keys::Fixed(noun) => format!("{noun} `{key}` is given twice; give it once"),
        }
    }
}

/// A mapping read by hand: a map deserialized by serde lets the last of
/// two equal keys win silently; here the second is refused at its place
/// in the file.
pub(super) struct UniqueKeys<K, V> {
    keys: Keys,
    entries: std::marker::PhantomData<(K, V)>,
}

impl<K, V> UniqueKeys<K, V> {
    pub(super) fn new(keys: Keys) -> Self {
        UniqueKeys {
            keys,
            entries: std::marker::PhantomData,
        }
    }
}

impl<'de, K, V> Visitor<'de> for UniqueKeys<K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
    V: Deserialize<'de>,
{
    type Value = BTreeMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.keys {
            Keys::Named(noun) => write!(f, "a mapping of {noun} names to their values"),
            Keys::Fixed(noun) => write!(f, "a mapping of {noun}s to their values"),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BTreeMap<K, V>, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key_seed(NewKey(&entries, self.keys))? {
            let value = map.next_value()?;
            entries.insert(key, value);
        }
        Ok(entries)
    }
}

/// A key not yet in the map; refused as the key is read, so that the
/// error's field path names the key (its line and column are the
/// mapping's).
struct NewKey<'a, K, V>(&'a BTreeMap<K, V>, Keys);

impl<'de, K, V> DeserializeSeed<'de> for NewKey<'_, K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
{
    type Value = K;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K, D::Error> {
        let (entries, keys) = (self.0, self.1);
        let key = K::deserialize(d)?;
        if entries.contains_key(&key) {
            return Err(de::Error::custom(keys.twice(&key)));
        }
        Ok(key)
    }
}

/// A metric's key (`crate::metrics::METRICS`), as `compare` and `bounds`
/// name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct MetricKey(pub &'static str);

/// `v` among `words`, which name some of the metrics: one of the others
/// is refused saying why (`left_out`), anything else as unknown.
fn some_metric<T: Copy>(
    v: &str,
    what: &str,
    words: &[(&str, T)],
    left_out: &str,
) -> Result<T, Reject> {
    keyword(v, what, words).map_err(|unknown| match Metric::by_key(v) {
        Some(_) => Reject::Invalid(format!(
            "`{v}` {left_out}; valid: {}",
            words.iter().map(|&(w, _)| w).collect::<Vec<_>>().join(", ")
        )),
        None => unknown,
    })
}

impl Scalar for MetricKey {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a metric's name")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let keys: Vec<_> = METRICS.iter().map(|m| (m.key, MetricKey(m.key))).collect();
        keyword(v, "metric", &keys)
    }
}

impl fmt::Display for MetricKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The key of a metric the gate compares with the baseline, as
/// `snapshot.noise` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct GatedKey(pub &'static str);

impl Scalar for GatedKey {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a gated metric's name")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        let keys: Vec<_> = METRICS
            .iter()
            .filter(|m| m.default_noise.is_some())
            .map(|m| (m.key, GatedKey(m.key)))
            .collect();
        some_metric(
            v,
            "gated metric",
            &keys,
            "is not compared with a baseline, so it has no noise threshold",
        )
    }
}

impl fmt::Display for GatedKey {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
}

deserialize_scalar!(MetricKey, GatedKey, BoundKey);

/// Noise thresholds, keyed by the gated metrics
/// (`crate::metrics::METRICS`), as percentages of the baseline.
#[derive(Clone, Debug, Default)]
pub(super) struct NoiseDef(pub BTreeMap<GatedKey, NoisePercent>);

impl NoiseDef {
    /// `self` layered over `base`: keys given here win.
    pub fn over(self, base: NoiseDef) -> NoiseDef {
        let mut thresholds = base.0;
        thresholds.extend(self.0);
        NoiseDef(thresholds)
    }
}

impl<'de> Deserialize<'de> for NoiseDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueKeys::new(Keys::Fixed("gated metric")))
            .map(NoiseDef)
    }
}
