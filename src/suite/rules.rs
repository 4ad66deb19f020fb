//! Rules that span several fields of a suite, each refused at the field
//! that breaks it, before the matrix product (`expand`).

use super::keyed::MetricKey;
use super::model::{ExpectDef, Matrix, MigrationDef, Override, Suite, VariantDef, WorkloadDef};
use crate::case::{Case, DirtyRate, PacketSize, Strategy, Topology};
use crate::metrics::{Better, Metric, CPU_PACE, DOWNTIME_OVERSHOOT, PATH_RATE};
use crate::yaml::scalar::{unknown_row, HypervisorName, Ident, Mtu};
use crate::yaml::{distinct, list, FieldPath, Invalid};
use std::collections::BTreeMap;
use std::fmt::Display;

/// More cases than a lab runs in a day; a matrix this large is a mistake.
const MAX_CASES: usize = 1000;

/// Every hypervisor of the matrix is a row this build's backends run (an
/// override may name only the matrix's).
pub(super) fn check_rows(matrix: &Matrix) -> Result<(), Invalid> {
    let rows = crate::backend::rows();
    let unknown = (0..)
        .zip(&matrix.hypervisor)
        .find_map(|(i, h)| Some((i, unknown_row(h.0, &rows)?)));
    match unknown {
        Some((i, message)) => Err(Invalid {
            path: FieldPath::default()
                .key("matrix")
                .key("hypervisor")
                .index(i),
            message,
        }),
        None => Ok(()),
    }
}

/// Every list non-empty and free of repeats (case names must be unique),
/// every workload listed also defined, and a product a lab can run.
pub(super) fn check_matrix(
    matrix: &Matrix,
    workloads: &BTreeMap<Ident, WorkloadDef>,
) -> Result<(), Invalid> {
    let path = FieldPath::default().key("matrix");
    let why = "each case name must be unique";
    distinct(&matrix.hypervisor, path.clone().key("hypervisor"), why)?;
    distinct(&matrix.mtu, path.clone().key("mtu"), why)?;
    distinct(&matrix.workload, path.clone().key("workload"), why)?;
    let (h, m, w) = (
        matrix.hypervisor.len(),
        matrix.mtu.len(),
        matrix.workload.len(),
    );
    if h * m * w > MAX_CASES {
        return Err(Invalid {
            path,
            message: format!(
                "{h} hypervisors x {m} MTUs x {w} workloads make {} cases; a suite may have at \
                 most {MAX_CASES}: split it into several suites",
                h * m * w
            ),
        });
    }
    if workloads.is_empty() {
        return Err(Invalid {
            path: FieldPath::default().key("workloads"),
            message: "must define at least one workload, e.g. `idle: {}`".into(),
        });
    }
    match matrix
        .workload
        .iter()
        .position(|w| !workloads.contains_key(w))
    {
        Some(i) => Err(Invalid {
            path: path.key("workload").index(i),
            message: format!(
                "workload `{}` is not defined under `workloads`; defined: {}",
                matrix.workload[i],
                list(workloads.keys())
            ),
        }),
        None => Ok(()),
    }
}

/// An override must select at least one case. The matrix is a full product,
/// so that holds exactly when each given key names a listed value.
pub(super) fn check_overrides(m: &Matrix, overrides: &[Override]) -> Result<(), Invalid> {
    for (i, o) in overrides.iter().enumerate() {
        let when = FieldPath::default().key("overrides").index(i).key("when");
        listed(
            o.when.hypervisor.as_ref(),
            &m.hypervisor,
            when.clone(),
            "hypervisor",
        )?;
        listed(o.when.mtu.as_ref(), &m.mtu, when.clone(), "mtu")?;
        listed(o.when.workload.as_ref(), &m.workload, when, "workload")?;
    }
    Ok(())
}

fn listed<T: PartialEq + Display>(
    value: Option<&T>,
    matrix: &[T],
    when: FieldPath,
    key: &str,
) -> Result<(), Invalid> {
    match value {
        Some(v) if !matrix.contains(v) => Err(Invalid {
            path: when.key(key),
            message: format!(
                "`{v}` is not in matrix.{key} ({}), so this override matches no case",
                list(matrix)
            ),
        }),
        _ => Ok(()),
    }
}

/// A workload's packets must each fit in one frame at every MTU of the
/// matrix (IPv4 and UDP headers take 28 bytes): a larger payload would be
/// fragmented, which is not what the suite asked to measure.
pub(super) fn check_packets(
    matrix: &Matrix,
    workloads: &BTreeMap<Ident, WorkloadDef>,
) -> Result<(), Invalid> {
    let Some(mtu) = matrix.mtu.iter().map(|m| m.0).min() else {
        return Ok(());
    };
    for (name, def) in workloads {
        let size = def.packets.as_ref().and_then(|p| p.size).map(|s| s.0);
        if let Some(PacketSize::Bytes(bytes)) =
            size.filter(|s| s.payload(mtu) > PacketSize::Fill.payload(mtu))
        {
            return Err(Invalid {
                path: workload_field(name, "packets", "size"),
                message: format!(
                    "a {bytes}-byte payload does not fit in one packet at MTU {mtu} (matrix.mtu): \
                     at most {} bytes do; use `fill` or a size up to that",
                    PacketSize::Fill.payload(mtu)
                ),
            });
        }
    }
    Ok(())
}

/// The case's strategy must be one its backend implements; the error points
/// at whatever chose it (an override, `migration.strategy`, or the default).
/// A downtime limit given by an override must be one the backend sets.
pub(super) fn check_strategy(
    matrix: &Matrix,
    overrides: &[Override],
    strategy_given: bool,
    (h, mtu, workload): (usize, Mtu, &Ident),
    migration: &MigrationDef,
) -> Result<(), Invalid> {
    let hypervisor = matrix.hypervisor[h];
    let strategy: Strategy = migration.strategy.map_or(Strategy::Precopy, Into::into);
    let offered = crate::backend::capabilities(hypervisor.0).strategies;
    let selecting = || {
        overrides
            .iter()
            .enumerate()
            .filter(|(_, o)| o.when.selects(hypervisor, mtu, workload))
    };
    // A suite-wide downtime limit, or bound against it, applies where there
    // is one to set; one given for these cases in particular must mean
    // something for them.
    if !crate::backend::capabilities(hypervisor.0).takes_downtime_limit(strategy) {
        let given = selecting().find_map(|(i, o)| {
            let at = FieldPath::default().key("overrides").index(i);
            if o.migration.max_downtime.is_some() {
                Some(at.key("migration").key("max_downtime"))
            } else if o.bounds.limits.contains_key(&MetricKey(DOWNTIME_OVERSHOOT)) {
                Some(at.key("bounds").key(DOWNTIME_OVERSHOOT))
            } else {
                None
            }
        });
        if let Some(path) = given {
            return Err(Invalid {
                path,
                message: format!(
                    "{hypervisor} by {strategy} has no downtime limit to set or hold its \
                     downtime against (only QEMU's precopy, postcopy and auto-converge take one)"
                ),
            });
        }
    }
    if offered.contains(&strategy) {
        return Ok(());
    }
    let chosen_by = selecting()
        .rev()
        .find(|(_, o)| o.migration.strategy.is_some())
        .map(|(i, _)| {
            FieldPath::default()
                .key("overrides")
                .index(i)
                .key("migration")
                .key("strategy")
        });
    let (path, default) = match chosen_by {
        Some(path) => (path, ""),
        None if strategy_given => (FieldPath::default().key("migration").key("strategy"), ""),
        None => (
            FieldPath::default()
                .key("matrix")
                .key("hypervisor")
                .index(h),
            " (the default)",
        ),
    };
    Err(Invalid {
        path,
        message: format!(
            "{hypervisor} cannot migrate by {strategy}{default}: its backend offers {}; \
             choose one for it with an override (`when: {{ hypervisor: {hypervisor} }}`)",
            list(offered)
        ),
    })
}

/// Where override `i` lists its variants.
fn override_variants_at(i: usize) -> FieldPath {
    FieldPath::default()
        .key("overrides")
        .index(i)
        .key("variants")
}

/// The suite's lists of variants, each with where it is: its own, then
/// each override's.
fn variant_lists(suite: &Suite) -> Vec<(FieldPath, &[VariantDef])> {
    let own = suite
        .variants
        .as_deref()
        .map(|defs| (FieldPath::default().key("variants"), defs));
    let overridden = suite
        .overrides
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((override_variants_at(i), o.variants.as_deref()?)));
    own.into_iter().chain(overridden).collect()
}

/// Variants come two or more, each named once, with the metrics to
/// compare them by, and enough runs of each for a difference to be
/// significant at all; `compare` means nothing without them.
pub(super) fn check_variants(suite: &Suite) -> Result<(), Invalid> {
    let lists = variant_lists(suite);
    let Some((variants, _)) = lists.first().cloned() else {
        return match &suite.compare {
            Some(_) => Err(Invalid {
                path: FieldPath::default().key("compare"),
                message: "there is nothing to compare: `compare` bounds how far `variants` of \
                          each case may differ from the first; list them, e.g. `variants: \
                          [{ name: stock }, { name: capped, migration: { bandwidth: 40MiB/s } }]`"
                    .into(),
            }),
            None => Ok(()),
        };
    };
    for (path, defs) in &lists {
        let names: Vec<&Ident> = defs.iter().map(|d| &d.name).collect();
        distinct(&names, path.clone(), "each variant needs a name of its own")?;
        if defs.len() < 2 {
            return Err(Invalid {
                path: path.clone(),
                message: "one variant has nothing to be compared with: list the reference \
                          first, then at least one more"
                    .into(),
            });
        }
    }
    let Some(compare) = suite.compare.as_ref() else {
        return Err(Invalid {
            path: variants,
            message: "variants need `compare`: the metrics to compare them by and how much \
                      worse than the first the others may be, e.g. `compare: { total_time: 10% }`"
                .into(),
        });
    };
    if compare.0.is_empty() {
        return Err(Invalid {
            path: FieldPath::default().key("compare"),
            message: "name at least one metric and how much worse than the first variant the \
                      others may be, e.g. `{ total_time: 10% }`"
                .into(),
        });
    }
    for (key, bound) in &compare.0 {
        let why = match Metric::by_key(key.0) {
            Some(m) if [PATH_RATE, CPU_PACE].contains(&m.key) => Some(
                "is measured before each run, before the variant migrates: no variant can \
                 change it"
                    .to_string(),
            ),
            Some(m) if m.better == Better::Higher && bound.0 .0 >= 100.0 => Some(format!(
                "is better higher: it cannot fall by {}% or more, so no variant could \
                     exceed this bound; give less than 100%",
                bound.0 .0
            )),
            _ => None,
        };
        if let Some(why) = why {
            return Err(Invalid {
                path: FieldPath::default().key("compare").key(key.0),
                message: format!("`{key}` {why}"),
            });
        }
    }
    // The comparison is the verdict of a case that should pass.
    let expects_failure = matches!(suite.expect, Some(ExpectDef::Fail(_)))
        || suite
            .overrides
            .iter()
            .any(|o| matches!(o.expect, Some(ExpectDef::Fail(_))))
        || suite
            .faults
            .as_ref()
            .is_some_and(|f| f.kill_destination_after.is_some());
    if expects_failure {
        return Err(Invalid {
            path: variants,
            message: "variants are compared in cases that should pass; this suite expects \
                      failures (`expect: { fail: ... }` or `faults`), whose verdict compares \
                      nothing: compare variants in a suite of their own"
                .into(),
        });
    }
    // Where the suite gives no `repeat`, its variants ask for more.
    let suite_repeat = match suite.repeat {
        Some(r) => (r.0, FieldPath::default().key("repeat")),
        None => (1, variants),
    };
    let override_repeats = suite.overrides.iter().enumerate().filter_map(|(i, o)| {
        let path = FieldPath::default().key("overrides").index(i).key("repeat");
        Some((o.repeat?.0, path))
    });
    for (repeat, path) in std::iter::once(suite_repeat).chain(override_repeats) {
        if (repeat as usize) < crate::ab::MIN_RUNS {
            return Err(Invalid {
                path,
                message: format!(
                    "comparing variants needs `repeat: {}` or more (runs of each variant): \
                     with {repeat}, no difference could be significant",
                    crate::ab::MIN_RUNS
                ),
            });
        }
    }
    Ok(())
}

/// A fault must fire while the migration can still be running: one set
/// after the migration's timeout never happens, and the case would expect
/// a failure it cannot see.
pub(super) fn check_fault_in_time(case: &Case) -> Result<(), Invalid> {
    match case.faults.kill_destination_after_ms {
        Some(after) if after >= case.migration.timeout_ms => Err(Invalid {
            path: FieldPath::default()
                .key("faults")
                .key("kill_destination_after"),
            message: format!(
                "{} ms is not before the migration's timeout of {} ms in case {}: the \
                 destination would be killed after the migration gave up; give less than \
                 the timeout",
                after,
                case.migration.timeout_ms,
                case.name()
            ),
        }),
        _ => Ok(()),
    }
}

/// The variants of the case (`hypervisor`, `mtu`, `workload`) and where
/// they are given: the last override selecting it that gives any, else
/// the suite's own (none: the case runs as its `migration` says).
pub(super) fn selected_variants<'s>(
    (own, overrides): (Option<&'s [VariantDef]>, &'s [Override]),
    (hypervisor, mtu, workload): (HypervisorName, Mtu, &Ident),
) -> (FieldPath, &'s [VariantDef]) {
    let overridden = overrides.iter().enumerate().rev().find_map(|(i, o)| {
        let defs = o.variants.as_deref()?;
        o.when
            .selects(hypervisor, mtu, workload)
            .then(|| (override_variants_at(i), defs))
    });
    overridden.unwrap_or_else(|| {
        (
            FieldPath::default().key("variants"),
            own.unwrap_or_default(),
        )
    })
}

/// A variant's migration must be one its case's backend can do: its
/// strategy offered, a downtime limit and stream settings where the
/// backend takes them; the error points at the variant's key.
pub(super) fn check_variant(
    case: (HypervisorName, Mtu, &Ident),
    (variant_at, def): (FieldPath, &VariantDef),
    migration: &MigrationDef,
) -> Result<(), Invalid> {
    let hypervisor = case.0;
    let can = crate::backend::capabilities(hypervisor.0);
    let at = |key: &str| variant_at.clone().key("migration").key(key);
    let strategy: Strategy = migration.strategy.map_or(Strategy::Precopy, Into::into);
    if def.migration.strategy.is_some() && !can.strategies.contains(&strategy) {
        return Err(Invalid {
            path: at("strategy"),
            message: format!(
                "{hypervisor} cannot migrate by {strategy}: its backend offers {}",
                list(can.strategies)
            ),
        });
    }
    if def.migration.max_downtime.is_some() && !can.takes_downtime_limit(strategy) {
        return Err(Invalid {
            path: at("max_downtime"),
            message: format!(
                "{hypervisor} by {strategy} has no downtime limit to set (only QEMU's precopy, \
                 postcopy and auto-converge take one)"
            ),
        });
    }
    // What the variant itself gives, not what it inherits.
    let own = def.migration.clone().over(MigrationDef::default());
    match STREAM_SETTINGS.into_iter().find(|(_, given)| given(&own)) {
        Some((key, _)) if !can.stream_settings => Err(Invalid {
            path: at(key),
            message: format!(
                "{hypervisor} has no `{key}` to set (only QEMU's stream, for kvm-fv and kvm-pv, \
                 takes a bandwidth cap, multifd channels and TLS); a variant changes every case \
                 of the matrix: compare these variants in a suite of kvm-fv and kvm-pv alone"
            ),
        }),
        _ => Ok(()),
    }
}

/// Whether a migration gives a setting.
type Given = fn(&MigrationDef) -> bool;

/// QEMU's stream settings, each with whether a migration gives it.
const STREAM_SETTINGS: [(&str, Given); 3] = [
    ("bandwidth", |m| m.bandwidth.is_some()),
    ("multifd", |m| m.multifd.is_some()),
    ("tls", |m| m.tls == Some(true)),
];

/// A bandwidth cap, multifd channels and TLS are QEMU's: a case of another
/// backend given one (by the suite or an override) is refused where it was
/// given, as it would change nothing there.
pub(super) fn check_stream_settings(
    overrides: &[Override],
    (hypervisor, mtu, workload): (HypervisorName, Mtu, &Ident),
    migration: &MigrationDef,
) -> Result<(), Invalid> {
    if crate::backend::capabilities(hypervisor.0).stream_settings {
        return Ok(());
    }
    let Some((key, given)) = STREAM_SETTINGS
        .into_iter()
        .find(|(_, given)| given(migration))
    else {
        return Ok(());
    };
    let by_override = overrides
        .iter()
        .enumerate()
        .rev()
        .find(|(_, o)| o.when.selects(hypervisor, mtu, workload) && given(&o.migration));
    let (path, remedy) = match by_override {
        Some((i, _)) => (
            FieldPath::default().key("overrides").index(i),
            "narrow this override's `when` to kvm-fv or kvm-pv",
        ),
        None => (
            FieldPath::default(),
            "give it to them with an override (`when: { hypervisor: kvm-pv }`)",
        ),
    };
    Err(Invalid {
        path: path.key("migration").key(key),
        message: format!(
            "{hypervisor} has no `{key}` to set (only QEMU's stream, for kvm-fv and kvm-pv, \
             takes a bandwidth cap, multifd channels and TLS); {remedy}"
        ),
    })
}

/// Only a backend that can run both ends on one host takes `one-host`; the
/// error points at the override or the suite key that asked for it.
pub(super) fn check_topology(
    matrix: &Matrix,
    overrides: &[Override],
    (h, mtu, workload): (usize, Mtu, &Ident),
    migration: &MigrationDef,
) -> Result<(), Invalid> {
    let hypervisor = matrix.hypervisor[h];
    let topology: Topology = migration.topology.map_or(Topology::TwoHosts, Into::into);
    if topology == Topology::TwoHosts || crate::backend::capabilities(hypervisor.0).one_host {
        return Ok(());
    }
    let path = overrides
        .iter()
        .enumerate()
        .rev()
        .find(|(_, o)| o.when.selects(hypervisor, mtu, workload) && o.migration.topology.is_some())
        .map_or_else(
            || FieldPath::default().key("migration").key("topology"),
            |(i, _)| {
                FieldPath::default()
                    .key("overrides")
                    .index(i)
                    .key("migration")
                    .key("topology")
            },
        );
    Err(Invalid {
        path,
        message: format!(
            "{hypervisor} cannot migrate to the host it runs on (libvirt and CRIU refuse a \
             destination that is the source); only xen-pv and xen-hvm take `one-host`: give it \
             to them with an override (`when: {{ hypervisor: xen-pv }}`)"
        ),
    })
}

/// A dirty rate that is a share of the link means nothing where the
/// stream never crosses it (`one-host`): it would be a share of another
/// path, one that may carry less than the share asked (pre-copy would then
/// not converge for reasons the suite did not mean).
pub(super) fn check_share_of_link(case: &Case, workload: &Ident) -> Result<(), Invalid> {
    match case.workload.dirty_rate {
        DirtyRate::OfLink(_) if case.migration.topology == Topology::OneHost => Err(Invalid {
            path: workload_field(workload, "dirty", "rate"),
            message: format!(
                "`{}` is a share of the migration link, which {}'s stream in `one-host` \
                 never crosses (both ends are in one Xen host): give the rate itself, like 16MiB/s",
                case.workload.dirty_rate, case.hypervisor
            ),
        }),
        _ => Ok(()),
    }
}

/// `workloads.<workload>.<section>.<field>`, where a workload's rule points.
fn workload_field(workload: &Ident, section: &str, field: &str) -> FieldPath {
    FieldPath::default()
        .key("workloads")
        .key(&workload.0)
        .key(section)
        .key(field)
}

/// The dirtied memory has to fit in the guest next to its kernel.
pub(super) fn check_fit(
    workloads: &BTreeMap<Ident, WorkloadDef>,
    memory_mib: u32,
) -> Result<(), Invalid> {
    for (name, def) in workloads {
        let size = def.dirty.as_ref().and_then(|d| d.size);
        if let Some(size) = size.filter(|s| s.0 >= memory_mib) {
            return Err(Invalid {
                path: workload_field(name, "dirty", "size"),
                message: format!(
                    "{}MiB does not fit in the guest's {memory_mib}MiB (guest.memory); \
                     make it smaller or give the guest more memory",
                    size.0
                ),
            });
        }
    }
    Ok(())
}
