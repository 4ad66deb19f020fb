//! The matrix product: one `Case` per hypervisor x mtu x workload, with
//! every default applied, once the rules that span fields hold (`rules`).

use super::keyed::{AggregateDef, BoundsDef, CompareDef, MetricKey, NoiseDef};
use super::model::{
    AccelDef, ExpectDef, GuestDef, MigrationDef, SamplingDef, StrategyDef, Suite, TierDef,
    TopologyDef, WorkloadDef,
};
use super::rules::{
    check_fault_in_time, check_fit, check_matrix, check_overrides, check_packets, check_rows,
    check_share_of_link, check_strategy, check_stream_settings, check_topology, check_variant,
    check_variants, selected_variants,
};
use crate::case::{
    AccelChoice, Aggregate, Bounds, Case, DirtyRate, Expect, FailureSpec, Faults, GuestSpec,
    LinkSpec, MigrationSpec, NoiseThresholds, PacketSize, SamplingSpec, Strategy, Tier, Topology,
    Variant, Workload,
};
use crate::metrics::{DOWNTIME_OVERSHOOT, METRICS};
use crate::yaml::scalar::Ident;
use crate::yaml::{FieldPath, Invalid};
use std::collections::BTreeMap;
use std::path::Path;

const MEMORY_MIB: u32 = 256;
/// Defaults, ms.
const MAX_DOWNTIME_MS: u64 = 300;
const TIMEOUT_MS: u64 = 120_000;
const INTERVAL_MS: u64 = 100;
const SETTLE_MS: u64 = 5_000;

pub(super) fn expand(suite: Suite, file: &Path) -> Result<Vec<Case>, Invalid> {
    check_rows(&suite.matrix)?;
    check_variants(&suite)?;
    let guest = guest_spec(suite.guest.unwrap_or_default());
    check_matrix(&suite.matrix, &suite.workloads.0)?;
    check_overrides(&suite.matrix, &suite.overrides)?;
    check_fit(&suite.workloads.0, guest.memory_mib)?;
    check_packets(&suite.matrix, &suite.workloads.0)?;
    let sampling = sampling_spec(suite.sampling.unwrap_or_default())?;
    let compare = compare_spec(suite.compare.unwrap_or_default());
    let strategy_given = suite
        .migration
        .as_ref()
        .is_some_and(|m| m.strategy.is_some());
    let base_migration = suite.migration.unwrap_or_default();
    let base_noise = suite.snapshot.and_then(|s| s.noise).unwrap_or_default();
    let link = suite.link.unwrap_or_default();
    let faults = Faults {
        kill_destination_after_ms: suite
            .faults
            .and_then(|f| f.kill_destination_after)
            .map(|d| d.0.whole_ms()),
    };
    let base_expect = suite.expect.unwrap_or(ExpectDef::Pass);
    let workloads: BTreeMap<Ident, Workload> = suite
        .workloads
        .0
        .into_iter()
        .map(|(name, def)| {
            let workload = workload(&name, def);
            (name, workload)
        })
        .collect();
    let base_bounds = suite.bounds.unwrap_or_default();

    let mut cases = Vec::new();
    for (h, &hypervisor) in suite.matrix.hypervisor.iter().enumerate() {
        for &mtu in &suite.matrix.mtu {
            for name in &suite.matrix.workload {
                // Later overrides win: each is layered over what came before.
                let selected = || {
                    suite
                        .overrides
                        .iter()
                        .filter(|o| o.when.selects(hypervisor, mtu, name))
                };
                let mut bounds =
                    selected().fold(base_bounds.clone(), |b, o| o.bounds.clone().over(b));
                let migration =
                    selected().fold(base_migration.clone(), |m, o| o.migration.clone().over(m));
                // A suite-wide bound on the downtime against its limit holds
                // where there is a limit (`check_strategy` refuses one given
                // for these cases in particular).
                let strategy = migration.strategy.map_or(Strategy::Precopy, Into::into);
                if !crate::backend::capabilities(hypervisor.0).takes_downtime_limit(strategy) {
                    bounds.limits.remove(&MetricKey(DOWNTIME_OVERSHOOT));
                }
                check_strategy(
                    &suite.matrix,
                    &suite.overrides,
                    strategy_given,
                    (h, mtu, name),
                    &migration,
                )?;
                check_topology(&suite.matrix, &suite.overrides, (h, mtu, name), &migration)?;
                check_stream_settings(&suite.overrides, (hypervisor, mtu, name), &migration)?;
                // The last selecting override's variants, else the suite's.
                let (variants_at, variant_defs) = selected_variants(
                    (suite.variants.as_deref(), &suite.overrides),
                    (hypervisor, mtu, name),
                );
                let variants = variant_defs
                    .iter()
                    .enumerate()
                    .map(|(v, def)| {
                        let its = def.migration.clone().over(migration.clone());
                        check_variant(
                            (hypervisor, mtu, name),
                            (variants_at.clone().index(v), def),
                            &its,
                        )?;
                        Ok(Variant {
                            name: def.name.0.clone(),
                            migration: migration_spec(its),
                        })
                    })
                    .collect::<Result<Vec<_>, Invalid>>()?;
                let noise = selected().fold(base_noise.clone(), |n, o| o.noise.clone().over(n));
                let expect =
                    selected().fold(base_expect.clone(), |e, o| o.expect.clone().unwrap_or(e));
                let case = Case {
                    suite: suite.name.0.clone(),
                    file: file.to_owned(),
                    tier: suite.tier.map_or(Tier::Gate, Into::into),
                    hypervisor: hypervisor.0,
                    guest: guest.clone(),
                    workload: workloads[name].clone(),
                    link: LinkSpec {
                        mtu: mtu.0,
                        rate_mbit: link.rate.and_then(|r| r.0),
                        offloads: link.offloads.unwrap_or(true),
                    },
                    failure: FailureSpec {
                        after_ms: suite.failure.after.0.whole_ms(),
                    },
                    migration: migration_spec(migration),
                    faults: faults.clone(),
                    repeat: selected().fold(suite.repeat.map_or(1, |r| r.0), |r, o| {
                        o.repeat.map_or(r, |o| o.0)
                    }),
                    sampling: sampling.clone(),
                    bounds: bounds_spec(bounds),
                    expect: expect_spec(expect),
                    noise: noise_spec(noise),
                    variants,
                    compare: compare.clone(),
                };
                check_share_of_link(&case, name)?;
                check_fault_in_time(&case)?;
                cases.push(case);
            }
        }
    }
    Ok(cases)
}

fn guest_spec(def: GuestDef) -> GuestSpec {
    GuestSpec {
        memory_mib: def.memory.map_or(MEMORY_MIB, |s| s.0),
        vcpus: def.vcpus.map_or(1, |c| c.0),
        accel: def.accel.map_or(AccelChoice::Auto, Into::into),
    }
}

/// The sampling interval must fit the settle window: the window is where
/// a settled figure is read, and an interval longer than it has no
/// sample there.
fn sampling_spec(def: SamplingDef) -> Result<SamplingSpec, Invalid> {
    let spec = SamplingSpec {
        interval_ms: def.interval.map_or(INTERVAL_MS, |d| d.0.whole_ms()),
        settle_ms: def.settle.map_or(SETTLE_MS, |d| d.0.whole_ms()),
    };
    if spec.interval_ms > spec.settle_ms {
        return Err(Invalid {
            path: FieldPath::default()
                .key("sampling")
                .key(match def.interval {
                    Some(_) => "interval",
                    None => "settle",
                }),
            message: format!(
                "a sample every {} ms cannot show what settles within {} ms after the \
                 migration: make `interval` at most `settle`",
                spec.interval_ms, spec.settle_ms
            ),
        });
    }
    Ok(spec)
}

fn migration_spec(def: MigrationDef) -> MigrationSpec {
    MigrationSpec {
        strategy: def.strategy.map_or(Strategy::Precopy, Into::into),
        max_downtime_ms: def.max_downtime.map_or(MAX_DOWNTIME_MS, |d| d.0.whole_ms()),
        timeout_ms: def.timeout.map_or(TIMEOUT_MS, |d| d.0.whole_ms()),
        topology: def.topology.map_or(Topology::TwoHosts, Into::into),
        bandwidth_mib_s: def.bandwidth.map(|b| b.0),
        multifd_channels: def.multifd.map(|c| c.0),
        tls: def.tls.unwrap_or(false),
    }
}

fn compare_spec(def: CompareDef) -> BTreeMap<String, f64> {
    def.0
        .into_iter()
        .map(|(metric, bound)| (metric.0.to_owned(), bound.0 .0 / 100.0))
        .collect()
}

fn expect_spec(def: ExpectDef) -> Expect {
    match def {
        ExpectDef::Pass => Expect::Pass,
        ExpectDef::Fail(reason_contains) => Expect::Fail { reason_contains },
    }
}

/// Every gated metric's threshold: the suite's where it sets one, the
/// metric's default otherwise, so that the report says each one used.
fn noise_spec(def: NoiseDef) -> NoiseThresholds {
    let set: NoiseThresholds = def
        .0
        .into_iter()
        .map(|(key, pct)| (key.0.to_string(), pct.0 .0 / 100.0))
        .collect();
    METRICS
        .iter()
        .filter_map(|m| Some((m.key.to_string(), m.noise_threshold(&set)?)))
        .collect()
}

fn workload(name: &Ident, def: WorkloadDef) -> Workload {
    let dirty = def.dirty.unwrap_or_default();
    let packets = def.packets.unwrap_or_default();
    Workload {
        name: name.0.clone(),
        dirty_mib: dirty.size.map_or(0, |s| s.0),
        dirty_rate: dirty.rate.map_or(DirtyRate::MibPerSec(0), |r| r.0),
        packet_size: packets.size.map_or(PacketSize::Fill, |s| s.0),
        packet_rate_pps: packets.rate.map_or(0, |r| r.0),
    }
}

fn bounds_spec(b: BoundsDef) -> Bounds {
    Bounds {
        apply_to: b.apply_to.map_or(Aggregate::Worst, Into::into),
        limits: b
            .limits
            .into_iter()
            .map(|(key, limit)| (key.0.to_string(), limit))
            .collect(),
    }
}

impl From<TierDef> for Tier {
    fn from(t: TierDef) -> Self {
        match t {
            TierDef::Gate => Tier::Gate,
            TierDef::Lab => Tier::Lab,
        }
    }
}

impl From<AccelDef> for AccelChoice {
    fn from(a: AccelDef) -> Self {
        match a {
            AccelDef::Auto => AccelChoice::Auto,
            AccelDef::Kvm => AccelChoice::Kvm,
            AccelDef::Tcg => AccelChoice::Tcg,
        }
    }
}

impl From<StrategyDef> for Strategy {
    fn from(s: StrategyDef) -> Self {
        match s {
            StrategyDef::Precopy => Strategy::Precopy,
            StrategyDef::Postcopy => Strategy::Postcopy,
            StrategyDef::AutoConverge => Strategy::AutoConverge,
            StrategyDef::StopAndCopy => Strategy::StopAndCopy,
        }
    }
}

impl From<TopologyDef> for Topology {
    fn from(t: TopologyDef) -> Self {
        match t {
            TopologyDef::TwoHosts => Topology::TwoHosts,
            TopologyDef::OneHost => Topology::OneHost,
        }
    }
}

impl From<AggregateDef> for Aggregate {
    fn from(a: AggregateDef) -> Self {
        match a {
            AggregateDef::Worst => Aggregate::Worst,
            AggregateDef::Mean => Aggregate::Mean,
        }
    }
}
