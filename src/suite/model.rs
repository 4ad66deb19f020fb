//! The suite file as written: serde structs mirroring the YAML one to one.
//! Everything optional stays an `Option` here; defaults are applied in
//! `expand`, so this file reads as the grammar of the language.

use super::scalar::{Count, PacketSizeDef};
use super::units::{Bandwidth, DirtyRate, Duration, LinkRate, PacketRate, Percent, Size, Within};
use super::MAX_REPEAT;
use crate::measure::Unit;
use crate::metrics::{Metric, METRICS};
use crate::yaml::scalar::Mtu;

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
use crate::yaml::did_you_mean;
use crate::yaml::scalar::{
    deserialize_scalar, keyword, keyword_enum, HypervisorName, Ident, Reject, Scalar,
};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Suite {
    pub name: Ident,
    /// For readers of the file only; not part of a case.
    #[serde(rename = "description")]
    _description: Option<String>,
    pub tier: Option<TierDef>,
    pub matrix: Matrix,
    pub guest: Option<GuestDef>,
    pub workloads: Workloads,
    pub link: Option<LinkDef>,
    pub failure: FailureDef,
    pub migration: Option<MigrationDef>,
    /// Versions of each case run side by side, interleaved; the first is
    /// the reference the others are compared with.
    pub variants: Option<Vec<VariantDef>>,
    pub compare: Option<CompareDef>,
    pub faults: Option<FaultsDef>,
    pub repeat: Option<Count<1, MAX_REPEAT>>,
    pub sampling: Option<SamplingDef>,
    pub bounds: Option<BoundsDef>,
    #[serde(default)]
    pub overrides: Vec<Override>,
    pub expect: Option<ExpectDef>,
    pub snapshot: Option<SnapshotDef>,
}

keyword_enum!(pub(super) TierDef("tier") { Gate = "gate", Lab = "lab" });

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `hypervisor`, `mtu` and `workload` lists"
)]
pub(super) struct Matrix {
    pub hypervisor: Vec<HypervisorName>,
    pub mtu: Vec<Mtu>,
    pub workload: Vec<Ident>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `memory`, `vcpus`, `accel`"
)]
pub(super) struct GuestDef {
    pub memory: Option<Size>,
    pub vcpus: Option<Count<1, 64>>,
    pub accel: Option<AccelDef>,
}

keyword_enum!(pub(super) AccelDef("accel") { Auto = "auto", Kvm = "kvm", Tcg = "tcg" });

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `dirty` and `packets`"
)]
pub(super) struct WorkloadDef {
    pub dirty: Option<DirtyDef>,
    pub packets: Option<PacketsDef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `size` and `rate`")]
pub(super) struct DirtyDef {
    pub size: Option<Size>,
    pub rate: Option<DirtyRate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `size` and `rate`")]
pub(super) struct PacketsDef {
    pub size: Option<PacketSizeDef>,
    pub rate: Option<PacketRate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `rate` and `offloads`"
)]
pub(super) struct LinkDef {
    pub rate: Option<LinkRate>,
    pub offloads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `kind` and `after`")]
pub(super) struct FailureDef {
    /// Required although `warned` is the only kind so far, so that files
    /// stay unambiguous when other kinds arrive.
    #[serde(rename = "kind")]
    _kind: FailureKind,
    pub after: Moment,
}

keyword_enum!(pub(super) FailureKind("failure kind") { Warned = "warned" });

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `strategy`, `max_downtime`, `timeout`, `topology`, `bandwidth`, `multifd`, `tls`"
)]
pub(super) struct MigrationDef {
    pub strategy: Option<StrategyDef>,
    pub max_downtime: Option<DowntimeLimit>,
    pub timeout: Option<Timeout>,
    pub topology: Option<TopologyDef>,
    /// A cap on the stream (QEMU's `max-bandwidth`).
    pub bandwidth: Option<Bandwidth>,
    /// Channels of QEMU's multifd stream.
    pub multifd: Option<Count<1, 64>>,
    /// QEMU's stream (and a copied disk's) over TLS, not plain TCP.
    pub tls: Option<bool>,
}

/// One variant of every case: a name and what it changes.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `name` and `migration`"
)]
pub(super) struct VariantDef {
    pub name: Ident,
    #[serde(default)]
    pub migration: VariantMigrationDef,
}

/// What a variant may change of a case's migration: how it migrates, not
/// where to or for how long (the case's timeout and topology hold for all
/// its variants).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `strategy`, `max_downtime`, `bandwidth`, `multifd`, `tls`"
)]
pub(super) struct VariantMigrationDef {
    pub strategy: Option<StrategyDef>,
    pub max_downtime: Option<DowntimeLimit>,
    pub bandwidth: Option<Bandwidth>,
    pub multifd: Option<Count<1, 64>>,
    pub tls: Option<bool>,
}

impl VariantMigrationDef {
    /// The variant's changes layered over the case's `migration`.
    pub fn over(self, base: MigrationDef) -> MigrationDef {
        MigrationDef {
            strategy: self.strategy,
            max_downtime: self.max_downtime,
            timeout: None,
            topology: None,
            bandwidth: self.bandwidth,
            multifd: self.multifd,
            tls: self.tls,
        }
        .over(base)
    }
}

impl MigrationDef {
    /// `self` layered over `base`: keys given here win.
    pub fn over(self, base: MigrationDef) -> MigrationDef {
        MigrationDef {
            strategy: self.strategy.or(base.strategy),
            max_downtime: self.max_downtime.or(base.max_downtime),
            timeout: self.timeout.or(base.timeout),
            topology: self.topology.or(base.topology),
            bandwidth: self.bandwidth.or(base.bandwidth),
            multifd: self.multifd.or(base.multifd),
            tls: self.tls.or(base.tls),
        }
    }
}

keyword_enum!(pub(super) TopologyDef("topology") {
    TwoHosts = "two-hosts",
    OneHost = "one-host",
});

keyword_enum!(pub(super) StrategyDef("strategy") {
    Precopy = "precopy",
    Postcopy = "postcopy",
    AutoConverge = "auto-converge",
    StopAndCopy = "stop-and-copy",
});

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `kill_destination_after`"
)]
pub(super) struct FaultsDef {
    pub kill_destination_after: Option<Moment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `interval` and `settle`"
)]
pub(super) struct SamplingDef {
    pub interval: Option<Interval>,
    pub settle: Option<Moment>,
}

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
        while let Some(key) = map.next_key_seed(NewKey(&given, "bound"))? {
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

/// Per-case changes: bounds, and the migration (e.g. the strategy a
/// hypervisor of the matrix can do).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `when`, and any of `bounds`, `migration`, `noise`, `expect`, \
                 `variants`, `repeat`"
)]
pub(super) struct Override {
    pub when: When,
    #[serde(default)]
    pub bounds: BoundsDef,
    #[serde(default)]
    pub migration: MigrationDef,
    /// Noise thresholds of the selected cases (a metric that is bound by
    /// the CPU rather than the link swings more between runs).
    #[serde(default)]
    pub noise: NoiseDef,
    /// What the selected cases must do (e.g. fail with "does not converge"
    /// where the workload dirties memory faster than the link can carry).
    pub expect: Option<ExpectDef>,
    /// The selected cases' variants, in place of the suite's (a backend
    /// compares strategies of its own).
    pub variants: Option<Vec<VariantDef>>,
    /// The selected cases' runs, in place of the suite's (a row whose
    /// runs take long and whose gate is wide needs fewer).
    pub repeat: Option<Count<1, MAX_REPEAT>>,
}

/// Selects matrix cases; keys left out match everything.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with any of `hypervisor`, `mtu`, `workload`"
)]
pub(super) struct When {
    pub hypervisor: Option<HypervisorName>,
    pub mtu: Option<Mtu>,
    pub workload: Option<Ident>,
}

#[derive(Clone, Debug)]
pub(super) enum ExpectDef {
    Pass,
    Fail(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailDef {
    fail: NonEmptyText,
}

/// By hand: serde_yaml 0.9 reads enums from YAML tags (`!fail text`), not
/// from the `{ fail: text }` map people write.
impl<'de> Deserialize<'de> for ExpectDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExpectVisitor)
    }
}

struct ExpectVisitor;

impl<'de> Visitor<'de> for ExpectVisitor {
    type Value = ExpectDef;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECT)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpectDef, E> {
        match v {
            "pass" => Ok(ExpectDef::Pass),
            "fail" => Err(E::custom(
                "`fail` needs the text the failure reason must contain, \
                 e.g. `{ fail: \"timed out\" }`",
            )),
            _ => Err(E::custom(format!(
                "unknown expectation `{v}`{}; expected {EXPECT}",
                did_you_mean(v, &["pass"])
            ))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ExpectDef, A::Error> {
        FailDef::deserialize(MapAccessDeserializer::new(map)).map(|f| ExpectDef::Fail(f.fail.0))
    }
}

/// The text a failure reason must contain; empty would match every failure.
#[derive(Debug)]
struct NonEmptyText(String);

impl Scalar for NonEmptyText {
    fn expecting(f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the text the failure reason must contain")
    }

    fn from_str(v: &str) -> Result<Self, Reject> {
        match v.trim() {
            "" => Err(Reject::Invalid(
                "an empty text would match every failure; give words the reason must contain, \
                 e.g. `timed out`"
                    .into(),
            )),
            _ => Ok(NonEmptyText(v.to_owned())),
        }
    }

    fn from_u64(n: u64) -> Result<Self, Reject> {
        Ok(NonEmptyText(n.to_string()))
    }

    fn from_f64(x: f64) -> Result<Self, Reject> {
        Ok(NonEmptyText(x.to_string()))
    }
}

deserialize_scalar!(NonEmptyText);

/// The `workloads` mapping, each name given once.
#[derive(Debug, Default)]
pub(super) struct Workloads(pub BTreeMap<Ident, WorkloadDef>);

impl<'de> Deserialize<'de> for Workloads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueKeys::new("workload"))
            .map(Workloads)
    }
}

/// `compare`: how much worse than the reference each compared metric of
/// another variant may be, keyed by the metric (`total_time: 10%`).
#[derive(Debug, Default)]
pub(super) struct CompareDef(pub BTreeMap<MetricKey, CompareBound>);

impl<'de> Deserialize<'de> for CompareDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(UniqueKeys::new("metric")).map(CompareDef)
    }
}

/// A mapping read by hand: a map deserialized by serde lets the last of
/// two equal keys win silently; here the second is refused at its place
/// in the file.
struct UniqueKeys<K, V> {
    /// What a key names, for the message.
    noun: &'static str,
    entries: std::marker::PhantomData<(K, V)>,
}

impl<K, V> UniqueKeys<K, V> {
    fn new(noun: &'static str) -> Self {
        UniqueKeys {
            noun,
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
        write!(f, "a mapping of {} names to their values", self.noun)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BTreeMap<K, V>, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key_seed(NewKey(&entries, self.noun))? {
            let value = map.next_value()?;
            entries.insert(key, value);
        }
        Ok(entries)
    }
}

/// A key not yet in the map; refused inside the key's own
/// deserialization, so that the error points at the key.
struct NewKey<'a, K, V>(&'a BTreeMap<K, V>, &'static str);

impl<'de, K, V> DeserializeSeed<'de> for NewKey<'_, K, V>
where
    K: Deserialize<'de> + Ord + fmt::Display,
{
    type Value = K;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<K, D::Error> {
        let (entries, noun) = (self.0, self.1);
        let key = K::deserialize(d)?;
        if entries.contains_key(&key) {
            return Err(de::Error::custom(format!(
                "{noun} `{key}` is defined twice; give each {noun} its own name"
            )));
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

const EXPECT: &str = "`pass` or `{ fail: \"text the failure reason must contain\" }`";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `noise`")]
pub(super) struct SnapshotDef {
    pub noise: Option<NoiseDef>,
}

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
        d.deserialize_map(UniqueKeys::new("gated metric"))
            .map(NoiseDef)
    }
}

impl When {
    pub fn selects(&self, hypervisor: HypervisorName, mtu: Mtu, workload: &Ident) -> bool {
        self.hypervisor.is_none_or(|h| h == hypervisor)
            && self.mtu.is_none_or(|m| m == mtu)
            && self.workload.as_ref().is_none_or(|w| w == workload)
    }
}
