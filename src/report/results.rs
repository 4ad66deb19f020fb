//! The study's result tables: landmarks and migration figures of one case,
//! and one line per case of a suite.

use super::table::{Cell, Table};
use crate::case::{Aggregate, Case};
use crate::landmarks::run_landmarks;
use crate::measure::{
    runs_of_variant, CaseResult, Landmarks, Outcome, Provenance, RunMeasurement, Unit,
};
use crate::metrics::{CaseSummary, Metric, METRICS};
use crate::recorded_on::Differences;
use crate::stats::Summary;
use crate::verdict::run_failure;

/// The metrics a suite may bound: the suite table's columns.
fn bounded() -> impl Iterator<Item = &'static Metric> {
    METRICS.iter().filter(|m| m.bounded)
}

/// Landmarks of every timeline and the migration figures of one case, as
/// means over its completed runs, and what differs from what its baseline
/// was recorded on (`since_baseline`, the verdict's).
pub fn case_table(
    case: &Case,
    prov: &Provenance,
    runs: &[RunMeasurement],
    since_baseline: Option<&Differences>,
) -> Table {
    let mut t = Table::new(case.name(), &["series", "measure", "value"]);
    t.notes.extend(provenance_lines(prov));
    t.notes
        .extend(since_baseline.into_iter().flat_map(Differences::notes));
    let failures: Vec<String> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| run_failure(i, r))
        .collect();
    if !failures.is_empty() {
        t.notes.push(format!(
            "outcome: {} of {} runs failed",
            failures.len(),
            runs.len()
        ));
        t.notes.extend(failures);
    }

    for (name, unit) in series(runs) {
        let l = mean_landmarks(case, runs, name);
        for (measure, value, unit, decimals) in [
            ("baseline", l.as_ref().map(|l| l.baseline), unit, 1),
            ("peak", l.as_ref().map(|l| l.peak), unit, 1),
            ("peak at", l.as_ref().map(|l| l.peak_at_ms), Unit::Ms, 0),
            ("settled", l.as_ref().map(|l| l.settled), unit, 1),
            (
                "settled at",
                l.as_ref().map(|l| l.settled_at_ms),
                Unit::Ms,
                0,
            ),
        ] {
            t.rows.push(vec![
                Cell::text(name),
                Cell::text(measure),
                Cell::opt(value, Some(unit), decimals),
            ]);
        }
    }
    t.rows.extend(migration_rows_by_variant(case, runs));
    t
}

/// (series, label, median) rows of every metric: over all the runs
/// ("migration"), or, for a case with variants, over each variant's apart
/// ("migration (name)").
fn migration_rows_by_variant(case: &Case, runs: &[RunMeasurement]) -> Vec<Vec<Cell>> {
    let groups: Vec<(String, Vec<RunMeasurement>)> = if case.variants.is_empty() {
        vec![("migration".into(), runs.to_vec())]
    } else {
        (0..case.variants.len())
            .map(|v| {
                let name = format!("migration ({})", case.variants[v].name);
                (name, runs_of_variant(case, runs, v))
            })
            .collect()
    };
    groups
        .into_iter()
        .flat_map(|(series, runs)| {
            migration_rows(&runs)
                .map(|(label, value)| vec![Cell::text(series.clone()), label, value])
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The migration figures of a case: medians over the completed runs, as
/// the gate compares them.
pub fn migration_table(case: &Case, runs: &[RunMeasurement]) -> Table {
    let mut t = Table::new(
        format!(
            "{} migration (medians over the completed runs)",
            case.name()
        ),
        &["series", "measure", "value"],
    );
    t.rows.extend(migration_rows_by_variant(case, runs));
    t
}

/// (label, median) of every metric.
fn migration_rows(runs: &[RunMeasurement]) -> impl Iterator<Item = (Cell, Cell)> {
    let s = CaseSummary::of(runs);
    METRICS.iter().map(move |m| {
        let (unit, decimals) = match m.unit {
            Unit::Ratio => (None, 2),
            Unit::Count => (None, 0),
            unit => (Some(unit), 1),
        };
        (
            Cell::text(m.label),
            Cell::opt(s.get(m.key).map(|s| s.median), unit, decimals),
        )
    })
}

/// The timelines of the completed runs, by name, in the order first seen.
fn series(runs: &[RunMeasurement]) -> Vec<(&str, Unit)> {
    let mut series: Vec<(&str, Unit)> = vec![];
    for tl in completed(runs).flat_map(|r| &r.timelines) {
        if !series.iter().any(|(name, _)| *name == tl.name) {
            series.push((&tl.name, tl.unit));
        }
    }
    series
}

fn completed(runs: &[RunMeasurement]) -> impl Iterator<Item = &RunMeasurement> {
    runs.iter().filter(|r| r.outcome == Outcome::Completed)
}

/// Landmarks of a timeline as means over the completed runs of a case.
pub(crate) struct MeanLandmarks {
    pub baseline: f64,
    pub peak: f64,
    pub peak_at_ms: f64,
    pub settled: f64,
    pub settled_at_ms: f64,
}

/// The means of the landmarks of the timeline `name` over the completed
/// runs that have them; None if none has.
pub(crate) fn mean_landmarks(
    case: &Case,
    runs: &[RunMeasurement],
    name: &str,
) -> Option<MeanLandmarks> {
    let marks: Vec<Landmarks> = completed(runs)
        .filter_map(|r| run_landmarks(case, r, name))
        .collect();
    let mean = |f: fn(&Landmarks) -> f64| mean(marks.iter().map(f));
    Some(MeanLandmarks {
        baseline: mean(|l| l.baseline)?,
        peak: mean(|l| l.peak)?,
        peak_at_ms: mean(|l| l.peak_at_ms as f64)?,
        settled: mean(|l| l.settled)?,
        settled_at_ms: mean(|l| l.settled_at_ms as f64)?,
    })
}

/// A CPU (% of one CPU) or memory (MiB) value as a percentage of the host,
/// as the study gives them; None where the provenance lacks the host's size.
pub(crate) fn share_of_host(prov: &Provenance, unit: Unit, value: f64) -> Option<f64> {
    match unit {
        Unit::Mib => Some(value / prov.host_memory_mib? * 100.0),
        Unit::Percent => Some(value / f64::from(prov.host_cpus?)),
        _ => None,
    }
}

/// The study's view of one case: per CPU and memory timeline of the source
/// and destination hosts, the level before the warning, the peak and when,
/// the settled level and since when (means over the completed runs), also
/// as shares of the host where the provenance gives its capacity. Timelines
/// that stayed at zero (nothing of that kind ran there) are left out.
pub fn landmark_table(case: &Case, prov: &Provenance, runs: &[RunMeasurement]) -> Table {
    let mut headers = vec![
        "series",
        "before",
        "peak",
        "peak at",
        "settled",
        "settled at",
    ];
    let capacity = prov.host_cpus.zip(prov.host_memory_mib);
    if capacity.is_some() {
        headers.extend(["before, % of host", "peak, % of host", "settled, % of host"]);
    }
    let mut t = Table::new(format!("{} landmarks", case.name()), &headers);
    t.notes.push(format!(
        "means over {} completed runs; times in ms after the warning",
        completed(runs).count()
    ));
    if capacity.is_none() {
        t.notes.push(
            "the report does not give the host's CPUs and memory: no shares of the host".into(),
        );
    }
    let host_series = series(runs).into_iter().filter(|(name, _)| {
        (name.starts_with("cpu.") || name.starts_with("memory."))
            && (name.contains(".source.") || name.contains(".destination."))
    });
    for (name, unit) in host_series {
        let Some(l) = mean_landmarks(case, runs, name) else {
            continue;
        };
        let levels = [l.baseline, l.peak, l.settled];
        if levels.iter().all(|&v| v == 0.0) {
            continue;
        }
        let mut row = vec![
            Cell::text(name),
            Cell::num(l.baseline, Some(unit), 1),
            Cell::num(l.peak, Some(unit), 1),
            Cell::num(l.peak_at_ms, Some(Unit::Ms), 0),
            Cell::num(l.settled, Some(unit), 1),
            Cell::num(l.settled_at_ms, Some(Unit::Ms), 0),
        ];
        if capacity.is_some() {
            row.extend(
                levels
                    .iter()
                    .map(|&v| Cell::opt(share_of_host(prov, unit, v), Some(Unit::Percent), 1)),
            );
        }
        t.rows.push(row);
    }
    t
}

/// One row per case, in the order given: the figures bounds apply to (mean
/// or worst of the completed runs, per case) and how the migrations ended.
/// One provenance line per distinct provenance, naming its hypervisors.
pub fn suite_table(suite: &str, results: &[CaseResult]) -> Table {
    let mut headers = vec!["hypervisor", "MTU", "workload", "over"];
    headers.extend(bounded().map(|m| m.label));
    headers.push("outcome");
    let mut t = Table::new(format!("suite {suite}"), &headers);
    let provenances = results
        .iter()
        .map(|r| (r.provenance.clone(), r.case.hypervisor.name()));
    for (p, names) in distinct_provenances(provenances) {
        let names = names.join(", ");
        t.notes
            .extend(provenance_lines(&p).map(|line| format!("{names}: {line}")));
    }
    for CaseResult { case, runs, .. } in results {
        let agg = case.bounds.apply_to;
        let summary = CaseSummary::of(runs);
        let mut row = vec![
            Cell::text(case.hypervisor.name()),
            Cell::text(case.link.mtu.to_string()),
            Cell::text(&case.workload.name),
            Cell::text(match agg {
                Aggregate::Mean => "mean",
                Aggregate::Worst => "worst",
            }),
        ];
        row.extend(bounded().map(|m| {
            Cell::opt(
                summary.get(m.key).map(|s| s.aggregate(agg)),
                Some(m.unit),
                1,
            )
        }));
        row.push(Cell::text(outcome(runs)));
        t.rows.push(row);
    }
    t
}

/// Each distinct provenance of (provenance, hypervisor) pairs, with the
/// hypervisors it ran, in order of first appearance.
fn distinct_provenances(
    of: impl Iterator<Item = (Provenance, &'static str)>,
) -> Vec<(Provenance, Vec<&'static str>)> {
    let mut provenances: Vec<(Provenance, Vec<&str>)> = vec![];
    for (provenance, name) in of {
        match provenances.iter_mut().find(|(p, _)| *p == provenance) {
            Some((_, names)) if names.contains(&name) => {}
            Some((_, names)) => names.push(name),
            None => provenances.push((provenance, vec![name])),
        }
    }
    provenances
}

/// Everything the provenances of `results` record but what was busy
/// beside each case (each case's own section says that): a column per
/// distinct provenance, naming its hypervisors, and a row per field, so
/// that the table keeps to a page's width.
pub fn provenance_table(results: &[CaseResult]) -> Table {
    let distinct = distinct_provenances(results.iter().map(|r| {
        let without_neighbours = Provenance {
            beside: Default::default(),
            ..r.provenance.clone()
        };
        (without_neighbours, r.case.hypervisor.name())
    }));
    let names: Vec<String> = distinct.iter().map(|(_, names)| names.join(", ")).collect();
    let mut headers = vec!["hypervisors"];
    headers.extend(names.iter().map(String::as_str));
    let mut t = Table::new("provenance", &headers);
    type Field = fn(&Provenance) -> Cell;
    let fields: [(&str, Field); 11] = [
        ("accelerator", |p| Cell::text(&p.accel)),
        ("host", |p| Cell::text(&p.host_kind)),
        ("lab", |p| {
            Cell::text(format!("{}, hosts {}", p.lab, p.hosts))
        }),
        ("storage", |p| Cell::text(&p.storage)),
        ("host kernel", |p| Cell::text(&p.host_kernel)),
        ("host CPUs", |p| {
            Cell::opt(p.host_cpus.map(f64::from), None, 0)
        }),
        ("host memory", |p| {
            Cell::opt(p.host_memory_mib, Some(Unit::Mib), 0)
        }),
        ("hypervisor", |p| Cell::text(&p.hypervisor_version)),
        ("toolstack", |p| Cell::text(&p.toolstack_version)),
        ("guest kernel", |p| Cell::text(&p.guest_kernel)),
        ("migsuite", |p| Cell::text(&p.migsuite_version)),
    ];
    for (label, cell) in fields {
        let mut row = vec![Cell::text(label)];
        row.extend(distinct.iter().map(|(p, _)| cell(p)));
        t.rows.push(row);
    }
    t
}

/// What ran (accelerator, host), then the versions, on a line of their own
/// (`VERSIONS`).
fn provenance_lines(p: &Provenance) -> [String; 4] {
    [
        format!("accel: {}; host: {}", p.accel, p.host_kind),
        format!("{}, hosts {}; storage: {}", p.lab, p.hosts, p.storage),
        format!(
            "{VERSIONS}hypervisor {}; toolstack {}",
            p.hypervisor_version, p.toolstack_version
        ),
        format!("beside it on the machine: {}", p.beside),
    ]
}

/// Starts the provenance note with the versions of what ran.
pub const VERSIONS: &str = "versions: ";

/// "ok", or the first failure's reason and how many runs failed.
fn outcome(runs: &[RunMeasurement]) -> String {
    let reasons: Vec<&str> = runs
        .iter()
        .filter_map(|r| r.outcome.not_completed().map(|(reason, _)| reason))
        .collect();
    match reasons.first() {
        _ if runs.is_empty() => "no runs".into(),
        None => "ok".into(),
        Some(reason) if reasons.len() == runs.len() => format!("failed: {reason}"),
        Some(reason) => format!("failed {} of {}: {reason}", reasons.len(), runs.len()),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    Summary::of(&values.collect::<Vec<_>>()).map(|s| s.mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Hypervisor;
    use crate::recorded_on::RecordedOn;
    use crate::report::fixtures::{case, failed, provenance, run, step};

    #[test]
    fn case_table_of_three_runs() {
        // Means over the two completed runs; the failed one is named.
        let runs = [
            run(2000.0, 100.0),
            run(2500.0, 140.0),
            failed("timed out after 25000 ms", true),
        ];
        assert_eq!(
            case_table(&case(), &provenance(), &runs, None).to_string(),
            "\
ci::kvm-fv::mtu128::game
accel: tcg (kvm_pvm cannot run stock kernels); host: local: 2 netns hosts on lab1
lab: simulated (built in, no inventory), simulated: network-namespace hosts on one machine, hosts a and b; storage: disk on storage both hosts see: not copied
versions: hypervisor QEMU 7.2.22; toolstack libvirt 9.0.0
beside it on the machine: nothing above 5 % of a core
outcome: 1 of 3 runs failed
run 3: migration failed: timed out after 25000 ms (source still running)

| series                   | measure                      |     value |
|--------------------------|------------------------------|----------:|
| cpu.source.hypervisor    | baseline                     |    12.0 % |
| cpu.source.hypervisor    | peak                         |    95.0 % |
| cpu.source.hypervisor    | peak at                      |      0 ms |
| cpu.source.hypervisor    | settled                      |     0.0 % |
| cpu.source.hypervisor    | settled at                   |   2250 ms |
| memory.source.hypervisor | baseline                     | 300.0 MiB |
| memory.source.hypervisor | peak                         | 310.0 MiB |
| memory.source.hypervisor | peak at                      |      0 ms |
| memory.source.hypervisor | settled                      |   0.0 MiB |
| memory.source.hypervisor | settled at                   |   2250 ms |
| migration                | total time                   | 2250.0 ms |
| migration                | downtime (reported)          |  120.0 ms |
| migration                | guest-observed downtime      |  220.0 ms |
| migration                | after the first byte         |         - |
| migration                | downtime expected            |         - |
| migration                | downtime of limit asked      |         - |
| migration                | stream throughput            |         - |
| migration                | path rate                    |         - |
| migration                | CPU pace                     |         - |
| migration                | efficiency (of link goodput) |         - |
| migration                | preparation                  |         - |
| migration                | transferred                  |  80.5 MiB |
| migration                | memory passes                |         3 |
| migration                | peak CPU                     |    95.0 % |
| migration                | peak memory                  | 310.0 MiB |"
        );
    }

    #[test]
    fn suite_table_rows_in_order() {
        let mut bounded_by_mean = case();
        bounded_by_mean.bounds.apply_to = Aggregate::Mean;
        bounded_by_mean.link.mtu = 1500;
        let xen = Case {
            hypervisor: Hypervisor::row("xen-pv"),
            ..case()
        };
        let xen_provenance = Provenance {
            accel: "tcg (nested)".into(),
            hypervisor_version: "Xen 4.17".into(),
            ..provenance()
        };
        let result = |case, provenance, runs| CaseResult {
            case,
            provenance,
            calibration: Default::default(),
            held_unix_ms: None,
            runs,
        };
        let results = vec![
            result(
                case(),
                provenance(),
                vec![run(2000.0, 100.0), run(2400.0, 300.0)],
            ),
            result(
                bounded_by_mean,
                provenance(),
                vec![run(2000.0, 100.0), run(2400.0, 300.0)],
            ),
            result(
                xen,
                xen_provenance,
                vec![run(2000.0, 100.0), failed("connection refused", false)],
            ),
        ];
        assert_eq!(
            suite_table("ci", &results).to_string(),
            "\
suite ci
kvm-fv: accel: tcg (kvm_pvm cannot run stock kernels); host: local: 2 netns hosts on lab1
kvm-fv: lab: simulated (built in, no inventory), simulated: network-namespace hosts on one machine, hosts a and b; storage: disk on storage both hosts see: not copied
kvm-fv: versions: hypervisor QEMU 7.2.22; toolstack libvirt 9.0.0
kvm-fv: beside it on the machine: nothing above 5 % of a core
xen-pv: accel: tcg (nested); host: local: 2 netns hosts on lab1
xen-pv: lab: simulated (built in, no inventory), simulated: network-namespace hosts on one machine, hosts a and b; storage: disk on storage both hosts see: not copied
xen-pv: versions: hypervisor Xen 4.17; toolstack libvirt 9.0.0
xen-pv: beside it on the machine: nothing above 5 % of a core

| hypervisor | MTU  | workload | over  | total time | downtime (reported) | guest-observed downtime | downtime of limit asked | peak CPU | peak memory | outcome                           |
|------------|------|----------|-------|-----------:|--------------------:|------------------------:|-------------------------|---------:|------------:|-----------------------------------|
| kvm-fv     | 128  | game     | worst |  2400.0 ms |            300.0 ms |                400.0 ms | -                       |   95.0 % |   310.0 MiB | ok                                |
| kvm-fv     | 1500 | game     | mean  |  2200.0 ms |            200.0 ms |                300.0 ms | -                       |   95.0 % |   310.0 MiB | ok                                |
| xen-pv     | 128  | game     | worst |  2000.0 ms |            100.0 ms |                200.0 ms | -                       |   95.0 % |   310.0 MiB | failed 1 of 2: connection refused |"
        );
    }

    #[test]
    fn landmarks_of_the_hosts_as_shares_of_the_host() {
        let mut runs = [run(2000.0, 100.0), run(2000.0, 100.0)];
        for r in &mut runs {
            r.timelines.extend([
                // Nothing ran there: left out.
                step(
                    "cpu.destination.toolstack",
                    Unit::Percent,
                    0.0,
                    0.0,
                    0.0,
                    2000,
                ),
                // Not a host's: left out.
                step("cpu.machine", Unit::Percent, 50.0, 90.0, 50.0, 2000),
            ]);
        }
        let t = landmark_table(&case(), &provenance(), &runs);
        assert_eq!(
            t.to_string(),
            "\
ci::kvm-fv::mtu128::game landmarks
means over 2 completed runs; times in ms after the warning

| series                   |    before |      peak | peak at | settled | settled at | before, % of host | peak, % of host | settled, % of host |
|--------------------------|----------:|----------:|--------:|--------:|-----------:|------------------:|----------------:|-------------------:|
| cpu.source.hypervisor    |    12.0 % |    95.0 % |    0 ms |   0.0 % |    2000 ms |             6.0 % |          47.5 % |              0.0 % |
| memory.source.hypervisor | 300.0 MiB | 310.0 MiB |    0 ms | 0.0 MiB |    2000 ms |             7.3 % |           7.6 % |              0.0 % |"
        );
        let unknown_host = Provenance {
            host_cpus: None,
            ..provenance()
        };
        let t = landmark_table(&case(), &unknown_host, &runs);
        assert_eq!(t.headers.len(), 6);
        assert!(t.notes[1].contains("no shares of the host"));
    }

    #[test]
    fn the_case_table_names_the_versions_since_the_baseline() {
        let newer = Provenance {
            hypervisor_version: "QEMU 8.0.0".into(),
            ..provenance()
        };
        let since = RecordedOn::of(&newer).differences_from(Some(&RecordedOn::of(&provenance())));
        let t = case_table(&case(), &newer, &[run(2000.0, 100.0)], Some(&since));
        assert_eq!(
            t.notes[4],
            "versions changed since the baseline (a change of the figures may be theirs): \
             hypervisor: baseline recorded on `QEMU 7.2.22`, this run on `QEMU 8.0.0`"
        );
    }

    #[test]
    fn unmeasured_figures_are_dashes() {
        let t = case_table(&case(), &provenance(), &[failed("timed out", true)], None);
        assert!(t.rows.iter().all(|r| r[2] == Cell::Missing));
        let empty = CaseResult {
            case: case(),
            provenance: provenance(),
            calibration: Default::default(),
            held_unix_ms: None,
            runs: vec![],
        };
        let t = suite_table("ci", &[empty]);
        assert_eq!(t.rows[0][4], Cell::Missing);
        assert_eq!(t.rows[0][10], Cell::text("no runs"));
    }
}
