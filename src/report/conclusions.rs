//! The study's conclusions, checked one by one against a run: each holds,
//! does not hold here, is within noise, or was not measured, with the
//! numbers that decide it.
//!
//! Our figures are medians over the completed runs of every case that stands
//! for one of the study's rows (hypervisor and packet data size, as
//! `study::packet_data_size` matches them). Two figures closer than the
//! cases' noise threshold for the metric (the gate's, `noise` in suites),
//! or whose runs' ranges overlap, decide nothing: one run more could turn
//! a strict comparison of them either way.

use super::study::{self, packet_data_size};
use super::table::{Cell, Table};
use crate::case::Hypervisor;
use crate::measure::CaseResult;
use crate::metrics::{Metric, METRICS};
use crate::stats::Summary;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finding {
    Holds,
    DoesNotHold,
    /// No comparison failed, but some were too close to tell.
    WithinNoise,
    NotMeasured,
}

impl Finding {
    fn label(self) -> &'static str {
        match self {
            Finding::Holds => "holds",
            Finding::DoesNotHold => "does not hold here",
            Finding::WithinNoise => "within noise here",
            Finding::NotMeasured => "not measured",
        }
    }
}

/// What one comparison found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    Yes,
    No,
    /// The figures are too close to tell.
    Close,
}

impl Held {
    fn mark(self) -> &'static str {
        match self {
            Held::Yes => "✓",
            Held::No => "✗",
            Held::Close => "≈",
        }
    }
}

/// One row's figure of a metric: the median of its runs, their range, and
/// the noise threshold of its cases for the metric, if it has one.
#[derive(Clone, Copy, Debug)]
struct Figure {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
    noise: Option<f64>,
}

impl Figure {
    /// Whether `self` is clearly below `other`: `Close` when they differ
    /// by less than the larger noise threshold (a fraction of the larger
    /// figure), or when both have several runs and the ranges overlap.
    fn below(&self, other: &Figure) -> Held {
        let noise = match (self.noise, other.noise) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let larger = self.median.abs().max(other.median.abs());
        let close_medians = noise.is_some_and(|n| (self.median - other.median).abs() < n * larger);
        let overlapping =
            self.runs > 1 && other.runs > 1 && self.min <= other.max && other.min <= self.max;
        if close_medians || overlapping {
            Held::Close
        } else if self.median < other.median {
            Held::Yes
        } else {
            Held::No
        }
    }
}

/// All of `helds` together: No if any is, Yes if all are, else Close.
fn all(helds: impl IntoIterator<Item = Held>) -> Held {
    helds.into_iter().fold(Held::Yes, |all, h| match (all, h) {
        (Held::No, _) | (_, Held::No) => Held::No,
        (Held::Close, _) | (_, Held::Close) => Held::Close,
        _ => Held::Yes,
    })
}

/// What a conclusion says of the figures, at every packet data size.
enum Claim {
    /// `lower`'s figure is below `higher`'s.
    Below {
        lower: Hypervisor,
        higher: Hypervisor,
    },
    /// The hypervisor's figure is the largest of all measured.
    Largest(Hypervisor),
    /// Each hypervisor's figure grows as its packets shrink.
    GrowsAsPacketsShrink,
}

struct StudyConclusion {
    statement: &'static str,
    /// Where the study states it.
    stated: &'static str,
    claim: Claim,
    /// Keys of the metrics it is decided on (`metrics::METRICS`).
    metrics: &'static [&'static str],
}

const CONCLUSIONS: &[StudyConclusion] = &[
    StudyConclusion {
        statement: "OpenVZ's total migration time is smaller than Xen-PV's",
        stated: "Abstract; §4.4 after Tab. 21; §5 item 4",
        claim: Claim::Below {
            lower: study::OPENVZ,
            higher: study::XEN_PV,
        },
        metrics: &["total_time"],
    },
    StudyConclusion {
        statement: "OpenVZ's downtime is smaller than Xen-PV's",
        stated: "§4.4 after Tab. 21; §5 item 4",
        claim: Claim::Below {
            lower: study::OPENVZ,
            higher: study::XEN_PV,
        },
        metrics: &["downtime"],
    },
    StudyConclusion {
        statement: "Xen-HVM performs worse than Xen-PV, especially in downtime",
        stated: "Abstract; Tab. 7 and 14",
        claim: Claim::Below {
            lower: study::XEN_PV,
            higher: study::XEN_HVM,
        },
        metrics: &["downtime", "total_time"],
    },
    StudyConclusion {
        statement: "Xen-HVM consumes more CPU than Xen-PV",
        stated: "§4.3 after Tab. 13; §5 item 2",
        claim: Claim::Below {
            lower: study::XEN_PV,
            higher: study::XEN_HVM,
        },
        metrics: &["peak_cpu"],
    },
    StudyConclusion {
        statement: "KVM-FV is the slowest: the longest total time and downtime",
        stated: "§4.5 after Tab. 28; §5 item 5",
        claim: Claim::Largest(study::KVM_FV),
        metrics: &["total_time", "downtime"],
    },
    StudyConclusion {
        statement: "KVM-PV improves on KVM-FV in total time and downtime",
        stated: "§4.6 after Tab. 34; §5 item 6",
        claim: Claim::Below {
            lower: study::KVM_PV,
            higher: study::KVM_FV,
        },
        metrics: &["total_time", "downtime"],
    },
    StudyConclusion {
        statement: "Total time and downtime grow as packets shrink",
        stated: "§4.3 after Tab. 14; §5 item 3",
        claim: Claim::GrowsAsPacketsShrink,
        metrics: &["total_time", "downtime"],
    },
    StudyConclusion {
        statement: "CPU consumption grows as packets shrink",
        stated: "§4.2 after Tab. 6; §5 item 3",
        claim: Claim::GrowsAsPacketsShrink,
        metrics: &["peak_cpu"],
    },
];

/// One conclusion checked against a run.
#[derive(Clone, Debug, PartialEq)]
struct Checked {
    statement: &'static str,
    stated: &'static str,
    finding: Finding,
    /// Each comparison made, with its numbers, marked ✓ where it held, ✗
    /// where not and ≈ where the figures were too close to tell.
    evidence: Vec<String>,
}

/// The cases standing for each of the study's rows: (hypervisor, packet
/// data size in bytes).
struct Grid<'a> {
    cases: BTreeMap<(Hypervisor, u32), Vec<&'a CaseResult>>,
}

impl<'a> Grid<'a> {
    fn of(results: &'a [CaseResult]) -> Grid<'a> {
        let mut cases: BTreeMap<(Hypervisor, u32), Vec<&CaseResult>> = BTreeMap::new();
        for r in results {
            if let Some(size) = packet_data_size(r) {
                cases.entry((r.case.hypervisor, size)).or_default().push(r);
            }
        }
        Grid { cases }
    }

    fn figure(&self, hypervisor: Hypervisor, size: u32, metric: &Metric) -> Option<Figure> {
        let cases = self.cases.get(&(hypervisor, size))?;
        let values: Vec<f64> = cases.iter().flat_map(|r| metric.values(&r.runs)).collect();
        let s = Summary::of(&values)?;
        let noise = cases
            .iter()
            .filter_map(|r| metric.noise_threshold(&r.case.noise))
            .reduce(f64::max);
        Some(Figure {
            median: s.median,
            min: s.min,
            max: s.max,
            runs: s.n,
            noise,
        })
    }

    /// The packet data sizes measured, largest first.
    fn sizes(&self) -> Vec<u32> {
        let mut sizes: Vec<u32> = self.cases.keys().map(|&(_, size)| size).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        sizes.dedup();
        sizes
    }

    /// (hypervisor, figure) at `size` for every hypervisor that has one.
    fn figures(&self, size: u32, metric: &Metric) -> Vec<(Hypervisor, Figure)> {
        study::ROWS
            .into_iter()
            .filter_map(|h| Some((h, self.figure(h, size, metric)?)))
            .collect()
    }
}

/// Every comparison `claim` makes on `metric`: its text and what it found.
fn compare(grid: &Grid, claim: &Claim, metric: &Metric) -> Vec<(String, Held)> {
    let show = |f: &Figure| metric.unit.format(f.median);
    let mut out = vec![];
    match *claim {
        Claim::Below { lower, higher } => {
            for size in grid.sizes() {
                let (Some(lo), Some(hi)) = (
                    grid.figure(lower, size, metric),
                    grid.figure(higher, size, metric),
                ) else {
                    continue;
                };
                let held = lo.below(&hi);
                let sign = match held {
                    Held::Yes => "<",
                    Held::No => ">=",
                    Held::Close => "≈",
                };
                out.push((
                    format!(
                        "{} at {size} B: {lower} {} {sign} {higher} {}",
                        metric.label,
                        show(&lo),
                        show(&hi)
                    ),
                    held,
                ));
            }
        }
        Claim::Largest(largest) => {
            for size in grid.sizes() {
                let figures = grid.figures(size, metric);
                let Some(&(_, own)) = figures.iter().find(|(h, _)| *h == largest) else {
                    continue;
                };
                let others: Vec<&(Hypervisor, Figure)> =
                    figures.iter().filter(|(h, _)| *h != largest).collect();
                if others.is_empty() {
                    continue;
                }
                let held = all(others.iter().map(|(_, f)| f.below(&own)));
                let listed: Vec<String> = others
                    .iter()
                    .map(|(h, f)| format!("{h} {}", show(f)))
                    .collect();
                out.push((
                    format!(
                        "{} at {size} B: {largest} {} against {}",
                        metric.label,
                        show(&own),
                        listed.join(", ")
                    ),
                    held,
                ));
            }
        }
        Claim::GrowsAsPacketsShrink => {
            for hypervisor in study::ROWS {
                let figures: Vec<(u32, Figure)> = grid
                    .sizes()
                    .into_iter()
                    .filter_map(|size| Some((size, grid.figure(hypervisor, size, metric)?)))
                    .collect();
                if figures.len() < 2 {
                    continue;
                }
                let held = all(figures.windows(2).map(|w| w[0].1.below(&w[1].1)));
                let listed: Vec<String> = figures
                    .iter()
                    .map(|(size, f)| format!("{size} B {}", show(f)))
                    .collect();
                out.push((
                    format!("{} of {hypervisor}: {}", metric.label, listed.join(", ")),
                    held,
                ));
            }
        }
    }
    out
}

/// Every conclusion of the study that our measurements can decide, checked
/// against `results`: it holds if every comparison it makes holds.
fn check(results: &[CaseResult]) -> Vec<Checked> {
    let grid = Grid::of(results);
    CONCLUSIONS
        .iter()
        .map(|c| {
            let comparisons: Vec<(String, Held)> = c
                .metrics
                .iter()
                .filter_map(|key| METRICS.iter().find(|m| m.key == *key))
                .flat_map(|m| compare(&grid, &c.claim, m))
                .collect();
            let finding = if comparisons.is_empty() {
                Finding::NotMeasured
            } else {
                match all(comparisons.iter().map(|(_, held)| *held)) {
                    Held::Yes => Finding::Holds,
                    Held::No => Finding::DoesNotHold,
                    Held::Close => Finding::WithinNoise,
                }
            };
            Checked {
                statement: c.statement,
                stated: c.stated,
                finding,
                evidence: comparisons
                    .into_iter()
                    .map(|(text, held)| format!("{} {text}", held.mark()))
                    .collect(),
            }
        })
        .collect()
}

/// The checked conclusions as a table.
pub fn conclusions_table(results: &[CaseResult]) -> Table {
    let mut t = Table::new(
        "the study's conclusions, checked against this run",
        &[
            "conclusion",
            "where the study states it",
            "here",
            "decided by",
        ],
    );
    t.notes.push(
        "medians over the completed runs of the cases standing for each of the study's rows; \
         ≈: closer than the cases' noise threshold for the metric, or with runs whose ranges \
         overlap (within noise)"
            .into(),
    );
    for c in check(results) {
        t.rows.push(vec![
            Cell::text(c.statement),
            Cell::text(c.stated),
            Cell::text(c.finding.label()),
            Cell::text(if c.evidence.is_empty() {
                "no case of this run compares them".to_string()
            } else {
                c.evidence.join("\n")
            }),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::PacketSize;
    use crate::report::fixtures::{case, provenance, run};

    /// A case of the study's game standing for `size` B, its run taking
    /// `total_ms` with `downtime_ms`, judged without noise thresholds.
    fn result(hypervisor: Hypervisor, size: u32, total_ms: f64, downtime_ms: f64) -> CaseResult {
        let mut r = noisy(hypervisor, size, &[(total_ms, downtime_ms)]);
        r.case.noise = METRICS
            .iter()
            .filter(|m| m.default_noise.is_some())
            .map(|m| (m.key.to_string(), 0.0))
            .collect();
        r
    }

    /// A case of the study's game standing for `size` B, with the default
    /// noise thresholds and a run of each (total, downtime) in `runs`.
    fn noisy(hypervisor: Hypervisor, size: u32, runs: &[(f64, f64)]) -> CaseResult {
        let mut case = case();
        case.hypervisor = hypervisor;
        case.link.mtu = if size == 32 { 1500 } else { size };
        case.workload.packet_size = if size == 32 {
            PacketSize::Bytes(32)
        } else {
            PacketSize::Fill
        };
        CaseResult {
            case,
            provenance: provenance(),
            calibration: Default::default(),
            held_unix_ms: None,
            runs: runs.iter().map(|&(total, down)| run(total, down)).collect(),
        }
    }

    fn finding(checked: &[Checked], statement_start: &str) -> (Finding, String) {
        let c = checked
            .iter()
            .find(|c| c.statement.starts_with(statement_start))
            .unwrap();
        (c.finding, c.evidence.join("\n"))
    }

    #[test]
    fn conclusions_of_a_hand_made_run() {
        let results = [
            result(study::XEN_PV, 1500, 3000.0, 40.0),
            result(study::XEN_PV, 32, 6000.0, 90.0),
            result(study::OPENVZ, 1500, 2000.0, 50.0),
            result(study::OPENVZ, 32, 5000.0, 60.0),
            result(study::KVM_FV, 1500, 5000.0, 100.0),
            result(study::KVM_PV, 1500, 4000.0, 80.0),
        ];
        let checked = check(&results);
        assert_eq!(checked.len(), CONCLUSIONS.len());

        let (f, evidence) = finding(&checked, "OpenVZ's total");
        assert_eq!(f, Finding::Holds);
        assert_eq!(
            evidence,
            "✓ total time at 1500 B: openvz 2000.0 ms < xen-pv 3000.0 ms\n\
             ✓ total time at 32 B: openvz 5000.0 ms < xen-pv 6000.0 ms"
        );
        // Not at 1500 B: 50 ms against 40.
        let (f, evidence) = finding(&checked, "OpenVZ's downtime");
        assert_eq!(f, Finding::DoesNotHold);
        assert!(
            evidence.contains("✗ downtime (reported) at 1500 B: openvz 50.0 ms >= xen-pv 40.0 ms"),
            "{evidence}"
        );
        // No Xen-HVM case.
        assert_eq!(
            finding(&checked, "Xen-HVM performs").0,
            Finding::NotMeasured
        );
        assert_eq!(
            finding(&checked, "Xen-HVM consumes").0,
            Finding::NotMeasured
        );
        let (f, evidence) = finding(&checked, "KVM-FV is the slowest");
        assert_eq!(f, Finding::Holds);
        assert!(evidence.starts_with(
            "✓ total time at 1500 B: kvm-fv 5000.0 ms against xen-pv 3000.0 ms, openvz 2000.0 ms, kvm-pv 4000.0 ms"
        ), "{evidence}");
        assert_eq!(finding(&checked, "KVM-PV improves").0, Finding::Holds);
        let (f, evidence) = finding(&checked, "Total time and downtime grow");
        assert_eq!(f, Finding::Holds);
        assert!(
            evidence.starts_with("✓ total time of xen-pv: 1500 B 3000.0 ms, 32 B 6000.0 ms"),
            "{evidence}"
        );
        // Every fixture run peaks at 95 %: flat, so it does not grow.
        assert_eq!(
            finding(&checked, "CPU consumption grows").0,
            Finding::DoesNotHold
        );
    }

    #[test]
    fn figures_within_noise_decide_nothing() {
        // Total times 10 % apart, under the 20 % threshold; downtimes of
        // three runs each whose ranges overlap.
        let checked = check(&[
            noisy(
                study::OPENVZ,
                1500,
                &[(2700.0, 40.0), (2700.0, 90.0), (2700.0, 60.0)],
            ),
            noisy(
                study::XEN_PV,
                1500,
                &[(3000.0, 80.0), (3000.0, 200.0), (3000.0, 150.0)],
            ),
        ]);
        let (f, evidence) = finding(&checked, "OpenVZ's total");
        assert_eq!(f, Finding::WithinNoise);
        assert_eq!(
            evidence,
            "≈ total time at 1500 B: openvz 2700.0 ms ≈ xen-pv 3000.0 ms"
        );
        assert_eq!(
            finding(&checked, "OpenVZ's downtime").0,
            Finding::WithinNoise
        );
        // Apart by more than the threshold and the runs' ranges: decided.
        let checked = check(&[
            noisy(study::OPENVZ, 1500, &[(1000.0, 40.0), (1100.0, 50.0)]),
            noisy(study::XEN_PV, 1500, &[(3000.0, 200.0), (3200.0, 210.0)]),
        ]);
        assert_eq!(finding(&checked, "OpenVZ's total").0, Finding::Holds);
        assert_eq!(finding(&checked, "OpenVZ's downtime").0, Finding::Holds);
    }

    #[test]
    fn a_failed_comparison_outweighs_a_close_one() {
        assert_eq!(all([Held::Yes, Held::Close, Held::No]), Held::No);
        assert_eq!(all([Held::Yes, Held::Close]), Held::Close);
        assert_eq!(all([Held::Yes, Held::Yes]), Held::Yes);
    }

    #[test]
    fn cases_that_stand_for_no_row_decide_nothing() {
        let mut small = result(study::OPENVZ, 1500, 2000.0, 50.0);
        small.case.workload.dirty_mib = 16;
        let xen = result(study::XEN_PV, 1500, 3000.0, 40.0);
        let checked = check(&[small, xen]);
        assert!(checked.iter().all(|c| c.finding == Finding::NotMeasured));
    }
}
