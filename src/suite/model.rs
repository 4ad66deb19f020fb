//! The suite file as written: serde structs mirroring the YAML one to one.
//! Everything optional stays an `Option` here; defaults are applied in
//! `expand`, so this file reads as the grammar of the language.

use super::keyed::{BoundsDef, CompareDef, Keys, NoiseDef, UniqueKeys};
use super::scalar::{Count, PacketSizeDef};
use super::units::{
    Bandwidth, DirtyRate, DowntimeLimit, Interval, LinkRate, Moment, PacketRate, Size, Timeout,
};
use super::MAX_REPEAT;
use crate::yaml::did_you_mean;
use crate::yaml::scalar::Mtu;
use crate::yaml::scalar::{
    deserialize_scalar, keyword_enum, HypervisorName, Ident, Reject, Scalar,
};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
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
        d.deserialize_map(UniqueKeys::new(Keys::Named("workload")))
            .map(Workloads)
    }
}

const EXPECT: &str = "`pass` or `{ fail: \"text the failure reason must contain\" }`";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `noise`")]
pub(super) struct SnapshotDef {
    pub noise: Option<NoiseDef>,
}

impl When {
    pub fn selects(&self, hypervisor: HypervisorName, mtu: Mtu, workload: &Ident) -> bool {
        self.hypervisor.is_none_or(|h| h == hypervisor)
            && self.mtu.is_none_or(|m| m == mtu)
            && self.workload.as_ref().is_none_or(|w| w == workload)
    }
}
