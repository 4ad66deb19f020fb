//! Did a case hold: its runs' outcomes against its expectation, its
//! measured figures against its bounds, and its gated figures against a
//! baseline recorded on the same machine.

use crate::ab::{compare_variants, VariantComparison};
use crate::baseline::{compare, Change, Comparison, Estimate};
use crate::case::{Aggregate, Case, Expect};
use crate::measure::{runs_of_variant, RunMeasurement, Unit};
use crate::metrics::{MetricRef, METRICS, PATH_RATE};
use crate::neighbours::Neighbours;
use crate::recorded_on::{Differences, RecordedOn};
use crate::stats::Summary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The stored baseline: a gated metric's key -> its estimate.
pub type Baseline = BTreeMap<String, Estimate>;

/// A baseline as a snapshot stores it.
pub struct Stored {
    pub figures: Baseline,
    /// None: the snapshot does not say.
    pub recorded_on: Option<RecordedOn>,
}

/// A gated metric of this run against the stored baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub metric: MetricRef,
    pub unit: Unit,
    pub new: Estimate,
    /// The completed runs' figures as compared: at the baseline's pace
    /// where `paced_to_mbit` gives one, as measured otherwise.
    #[serde(default)]
    pub values: Vec<f64>,
    /// The baseline's path rate, to which the new runs' figures were
    /// brought before the comparison (`Comparison::new` is at that pace);
    /// None: compared as measured.
    pub paced_to_mbit: Option<f64>,
    /// None: not compared, for the reason in `not_compared`.
    pub comparison: Option<Comparison>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_compared: Option<NotCompared>,
}

/// Why a gated metric was not compared with the stored baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotCompared {
    /// None stored for the case.
    NoBaseline,
    /// One stored, recorded on what forbids comparing (another machine,
    /// a simulated lab against a real one): `Verdict::since_baseline`
    /// says what.
    NotComparable,
    /// The baseline has no line for the metric: one added since, which
    /// joins when baselines are recorded anew.
    NoLineStored,
    /// Fewer completed runs than `MIN_COMPARED_RUNS`.
    TooFewRuns,
    /// The baseline's median is zero: no change can be told against it.
    ZeroBaseline,
}

/// A compared metric of one variant against the case's reference
/// variant, from their runs interleaved in this run (`crate::ab`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantGate {
    pub metric: MetricRef,
    pub unit: Unit,
    pub reference: String,
    pub variant: String,
    /// Both variants' completed runs' figures, in the order they ran.
    #[serde(default)]
    pub reference_values: Vec<f64>,
    #[serde(default)]
    pub variant_values: Vec<f64>,
    /// None: too few completed runs of either to compare.
    pub comparison: Option<VariantComparison>,
}

impl VariantGate {
    /// Why there is no comparison: too few completed runs measured it.
    pub fn not_compared(&self) -> String {
        format!(
            "{} against {}: {} not compared: fewer than {} completed runs of each measured it",
            self.variant,
            self.reference,
            self.metric,
            crate::ab::MIN_RUNS
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub metric: MetricRef,
    /// None: no completed run measured it.
    pub measured: Option<f64>,
    pub bound: f64,
    pub unit: Unit,
    pub ok: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The case's name, for the report header.
    pub case: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    pub gates: Vec<Gate>,
    /// Each variant of the case against its first, metric by metric; empty
    /// for a case without variants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variant_comparisons: Vec<VariantGate>,
    /// Runs whose outcome broke the expectation, one line each.
    pub failures: Vec<String>,
    /// What was expected, e.g. "bounds on worst of 3 runs, gated metrics against the baseline".
    pub expectation: String,
    /// What else was busy on the machine meanwhile: a change the gate
    /// flags may then be the machine's rather than the code's.
    pub beside: Neighbours,
    /// What differs between what the stored baseline was recorded on and
    /// this run; None: no baseline stored.
    pub since_baseline: Option<Differences>,
}

impl Verdict {
    /// The verdict of runs measured beside `neighbours`.
    pub fn measured_beside(self, neighbours: Neighbours) -> Verdict {
        Verdict {
            beside: neighbours,
            ..self
        }
    }
}

/// The case's runs against its expectation, its bounds and, for a case
/// that should pass, the stored `baseline` (empty: none stored).
pub fn judge(case: &Case, runs: &[RunMeasurement], baseline: &Baseline) -> Verdict {
    let stored = Some(baseline)
        .filter(|b| !b.is_empty())
        .ok_or(NotCompared::NoBaseline);
    judged(case, runs, stored)
}

/// `judge`, against `baseline` or, where there is none to compare with,
/// why not.
fn judged(
    case: &Case,
    runs: &[RunMeasurement],
    baseline: Result<&Baseline, NotCompared>,
) -> Verdict {
    let n = runs.len();
    let runs_word = if n == 1 { "run" } else { "runs" };
    let (expectation, checks, mut failures) = match &case.expect {
        Expect::Pass => {
            let agg = match case.bounds.apply_to {
                Aggregate::Mean => "mean",
                Aggregate::Worst => "worst",
            };
            let failures = runs.iter().enumerate().filter_map(|(i, r)| run_failure(i, r)).collect();
            (format!("bounds on {agg} of {n} {runs_word}, gated metrics against the baseline"), check_bounds(case, runs), failures)
        }
        Expect::Fail { reason_contains } => (
            format!("expected to fail with \"{reason_contains}\", source surviving, in all {n} {runs_word}"),
            vec![],
            unexpected_outcomes(reason_contains, runs),
        ),
    };
    if runs.is_empty() {
        failures.push("no runs".into());
    }
    let (gates, variant_comparisons) = match case.expect {
        // The stored baseline is the reference variant's.
        Expect::Pass => (
            gates(case, &runs_of_variant(case, runs, 0), baseline),
            variant_gates(case, runs),
        ),
        Expect::Fail { .. } => (vec![], vec![]),
    };
    let regressed = gates
        .iter()
        .filter_map(|g| g.comparison.as_ref().map(|c| c.change))
        .chain(
            variant_comparisons
                .iter()
                .filter_map(|g| g.comparison.as_ref().map(|c| c.change)),
        )
        .any(|c| c == Change::Regression);
    // A comparison the suite asks for and the runs cannot give (too few
    // completed, or the metric not measured) is not a pass.
    failures.extend(
        variant_comparisons
            .iter()
            .filter(|g| g.comparison.is_none())
            .map(VariantGate::not_compared),
    );
    Verdict {
        case: case.name(),
        passed: failures.is_empty() && checks.iter().all(|c| c.ok) && !regressed,
        checks,
        gates,
        variant_comparisons,
        failures,
        expectation,
        beside: Neighbours::default(),
        since_baseline: None,
    }
}

/// The case's runs, measured on `this_run`, against the baseline `stored`
/// in its snapshot (None: none yet). A baseline of another machine is not
/// compared: the case fails, naming the difference. One of other versions
/// is, and the verdict names them.
pub fn judge_stored(
    case: &Case,
    runs: &[RunMeasurement],
    this_run: &RecordedOn,
    stored: Option<&Stored>,
) -> Verdict {
    let Some(stored) = stored else {
        return judge(case, runs, &Baseline::new());
    };
    let differences = this_run.differences_from(stored.recorded_on.as_ref());
    let comparable = differences.comparable();
    let verdict = if comparable {
        judge(case, runs, &stored.figures)
    } else {
        judged(case, runs, Err(NotCompared::NotComparable))
    };
    Verdict {
        passed: verdict.passed && comparable,
        since_baseline: Some(differences),
        ..verdict
    }
}

/// "run N: migration failed: <reason> (source still running|lost)" for a
/// failed run (N counts from 1); None for a completed one.
pub(crate) fn run_failure(index: usize, run: &RunMeasurement) -> Option<String> {
    run.outcome
        .not_completed()
        .map(|(reason, source_survived)| {
            format!(
                "run {}: migration failed: {reason} ({})",
                index + 1,
                if source_survived {
                    "source still running"
                } else {
                    "source lost"
                }
            )
        })
}

fn check_bounds(case: &Case, runs: &[RunMeasurement]) -> Vec<Check> {
    METRICS
        .iter()
        .filter_map(|m| {
            let bound = m.bound(&case.bounds)?;
            let measured = Summary::of(&m.values(runs)).map(|s| s.aggregate(case.bounds.apply_to));
            Some(Check {
                metric: MetricRef(m),
                measured,
                bound,
                unit: m.unit,
                ok: measured.is_some_and(|v| v <= bound),
            })
        })
        .collect()
}

impl fmt::Display for NotCompared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotCompared::NoBaseline => write!(f, "no baseline stored"),
            NotCompared::NotComparable => write!(f, "not comparable with its baseline"),
            NotCompared::NoLineStored => write!(
                f,
                "none stored for it yet (it joins when baselines are recorded anew)"
            ),
            NotCompared::TooFewRuns => write!(
                f,
                "too few runs to compare with the baseline (at least {MIN_COMPARED_RUNS})"
            ),
            NotCompared::ZeroBaseline => write!(f, "its baseline is zero"),
        }
    }
}

/// Fewer runs say nothing of their spread: a single run's interval has no
/// width, and a metric whose first run differs (peak memory after boot)
/// would be flagged for that alone.
const MIN_COMPARED_RUNS: usize = 3;

/// Each gated metric against its baseline. Where both the baseline and the
/// runs measured the stream's path, the runs' times and rates are first
/// brought from their median path rate to the baseline's (`Pace`): a
/// machine that carries half as much takes twice as long, and only what is
/// left of a change is judged. The path rate itself is gated as measured:
/// where the link sets it, a slower link is a regression.
fn gates(
    case: &Case,
    runs: &[RunMeasurement],
    baseline: Result<&Baseline, NotCompared>,
) -> Vec<Gate> {
    let pace = baseline
        .ok()
        .and_then(|b| b.get(PATH_RATE))
        .map(|e| e.median);
    METRICS
        .iter()
        .filter_map(|m| {
            let threshold = m.noise_threshold(&case.noise)?;
            let values = m.values(runs);
            let paced = pace.and_then(|p| Some((p, m.values_at_pace(runs, p)?)));
            let compared = paced.as_ref().map_or(&values, |(_, v)| v);
            let comparison = match baseline.map(|b| b.get(m.key)) {
                _ if compared.len() < MIN_COMPARED_RUNS => Err(NotCompared::TooFewRuns),
                Err(why) => Err(why),
                Ok(None) => Err(NotCompared::NoLineStored),
                Ok(Some(b)) => {
                    compare(*b, compared, m.better, threshold).ok_or(NotCompared::ZeroBaseline)
                }
            };
            Some(Gate {
                metric: MetricRef(m),
                unit: m.unit,
                new: Estimate::of(&values)?,
                paced_to_mbit: paced.as_ref().map(|(p, _)| *p),
                not_compared: comparison.as_ref().err().copied(),
                comparison: comparison.ok(),
                values: compared.clone(),
            })
        })
        .collect()
}

/// Each variant after the first against the first, by each metric the
/// suite compares them by, as measured: both ran at the same pace.
fn variant_gates(case: &Case, runs: &[RunMeasurement]) -> Vec<VariantGate> {
    let Some(reference) = case.variants.first() else {
        return vec![];
    };
    let reference_runs = runs_of_variant(case, runs, 0);
    (1..case.variants.len())
        .flat_map(|v| {
            let its_runs = runs_of_variant(case, runs, v);
            let reference_runs = &reference_runs;
            METRICS
                .iter()
                .filter_map(|m| Some((m, *case.compare.get(m.key)?)))
                .map(move |(m, bound)| {
                    let (reference_values, variant_values) =
                        (m.values(reference_runs), m.values(&its_runs));
                    VariantGate {
                        metric: MetricRef(m),
                        unit: m.unit,
                        reference: reference.name.clone(),
                        variant: case.variants[v].name.clone(),
                        comparison: compare_variants(
                            &reference_values,
                            &variant_values,
                            m.better,
                            bound,
                        ),
                        reference_values,
                        variant_values,
                    }
                })
        })
        .collect()
}

/// For an expected failure: every run must fail, for the expected reason,
/// with the guest still running on the source.
fn unexpected_outcomes(reason_contains: &str, runs: &[RunMeasurement]) -> Vec<String> {
    let wanted = reason_contains.to_lowercase();
    runs.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let n = i + 1;
            match r.outcome.not_completed() {
                None => Some(format!("run {n}: migration completed, expected it to fail")),
                Some((reason, _)) if !reason.to_lowercase().contains(&wanted) => Some(format!(
                    "run {n}: failed with \"{reason}\", which does not contain \"{reason_contains}\""
                )),
                Some((_, false)) => Some(format!("run {n}: failed as expected, but the source did not survive")),
                Some(_) => None,
            }
        })
        .collect()
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{word} {} ({})", self.case, self.expectation)?;
        for c in &self.checks {
            let measured = match c.measured {
                Some(v) => format!("{v:.1} {}", c.unit.suffix()),
                None => "not measured".into(),
            };
            let bound = format!("<= {:.1} {}", c.bound, c.unit.suffix());
            let ok = if c.ok { "ok" } else { "FAIL" };
            write!(f, "\n  {:<24}{measured:>10}   {bound:<13} {ok}", c.metric)?;
        }
        for g in &self.gates {
            let estimate = |e: &Estimate| {
                let fmt = |v: f64| g.unit.format(v);
                format!("{} [{}, {}] n={}", fmt(e.median), fmt(e.lo), fmt(e.hi), e.n)
            };
            match &g.comparison {
                Some(c) => {
                    let new = match g.paced_to_mbit {
                        Some(p) => format!(
                            "{} as measured, at the baseline's path rate ({p:.0} Mbit/s) {}",
                            g.unit.format(g.new.median),
                            estimate(&c.new)
                        ),
                        None => estimate(&c.new),
                    };
                    write!(
                        f,
                        "\n  {:<24}baseline {}, new {new}: {:+.1} % (95 % interval {:+.1} .. {:+.1} %, noise threshold {:.0} %): {}",
                        g.metric,
                        estimate(&c.baseline),
                        c.change_pct,
                        c.interval_pct.0,
                        c.interval_pct.1,
                        c.noise_threshold_pct,
                        c.change
                    )?
                }
                None => write!(
                    f,
                    "\n  {:<24}new {}: {}",
                    g.metric,
                    estimate(&g.new),
                    g.not_compared.unwrap_or(NotCompared::NoBaseline)
                )?,
            }
        }
        // (One not compared is said among the failures.)
        for (g, c) in self
            .variant_comparisons
            .iter()
            .filter_map(|g| Some((g, g.comparison.as_ref()?)))
        {
            let fmt = |e: &Estimate| format!("{} n={}", g.unit.format(e.median), e.n);
            write!(
                f,
                "\n  {} against {}: {}: {} against {}: {:+.1} % (95 % interval {:+.1} .. {:+.1} %, p = {:.3}, bound {} %): {}",
                g.variant,
                g.reference,
                g.metric,
                fmt(&c.variant),
                fmt(&c.reference),
                c.change_pct,
                c.interval_pct.0,
                c.interval_pct.1,
                c.p_value,
                c.bound_pct,
                c.change
            )?;
        }
        for note in self.since_baseline.iter().flat_map(Differences::notes) {
            write!(f, "\n  {note}")?;
        }
        for line in &self.failures {
            write!(f, "\n  {line}")?;
        }
        if !self.passed && !self.beside.0.is_empty() {
            write!(
                f,
                "\n  measured beside {}: a change may be the machine's, not the code's; \
                 rerun on a quiet machine before believing it",
                self.beside
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Machine, Provenance};
    use crate::report::fixtures::{case, epyc, failed, provenance, rack, real_lab, run};
    use approx::assert_relative_eq;
    use rstest::rstest;

    fn bounded(apply_to: Aggregate) -> Case {
        let mut c = case();
        c.bounds.apply_to = apply_to;
        c.bounds.limits.insert("downtime".into(), 500.0);
        c.bounds.limits.insert("guest_downtime".into(), 3000.0);
        c
    }

    fn expect_fail(text: &str) -> Case {
        Case {
            expect: Expect::Fail {
                reason_contains: text.into(),
            },
            ..case()
        }
    }

    #[test]
    fn all_bounds_hold() {
        let v = judge(
            &bounded(Aggregate::Worst),
            &[run(2000.0, 100.0), run(2100.0, 120.0)],
            &Baseline::new(),
        );
        assert!(v.passed, "{v}");
        assert_eq!(v.checks.len(), 2);
        assert!(v.failures.is_empty());
    }

    #[rstest]
    #[case::mean_hides_the_outlier(Aggregate::Mean, true, 300.0)]
    #[case::worst_catches_it(Aggregate::Worst, false, 600.0)]
    fn aggregate_decides(#[case] agg: Aggregate, #[case] passed: bool, #[case] measured: f64) {
        let runs = [run(2000.0, 100.0), run(2000.0, 200.0), run(2000.0, 600.0)];
        let v = judge(&bounded(agg), &runs, &Baseline::new());
        assert_eq!(v.passed, passed, "{v}");
        assert_eq!(v.checks[0].metric.key(), "downtime");
        assert_eq!(v.checks[0].measured, Some(measured));
    }

    #[test]
    fn failing_bound_shows_measured_against_bound() {
        let v = judge(
            &bounded(Aggregate::Worst),
            &[run(2000.0, 812.0), run(2000.0, 700.0), run(2000.0, 300.0)],
            &Baseline::new(),
        );
        assert!(!v.passed);
        let text = v.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "FAIL ci::kvm-fv::mtu128::game (bounds on worst of 3 runs, gated metrics against the baseline)"
        );
        assert_eq!(
            lines[1],
            "  downtime (reported)       812.0 ms   <= 500.0 ms   FAIL"
        );
        assert_eq!(
            lines[2],
            "  guest-observed downtime   912.0 ms   <= 3000.0 ms  ok"
        );
    }

    #[test]
    fn unmeasured_bound_fails() {
        let mut r = run(2000.0, 100.0);
        r.guest_downtime_ms = None;
        let v = judge(&bounded(Aggregate::Mean), &[r], &Baseline::new());
        assert!(!v.passed);
        assert_eq!(v.checks[1].measured, None);
        assert!(
            v.to_string()
                .contains("guest-observed downtime not measured   <= 3000.0 ms  FAIL"),
            "{v}"
        );
    }

    #[test]
    fn failed_run_fails_a_pass_case() {
        let v = judge(
            &case(),
            &[run(2000.0, 100.0), failed("timed out after 25000 ms", true)],
            &Baseline::new(),
        );
        assert!(!v.passed);
        assert_eq!(
            v.failures,
            ["run 2: migration failed: timed out after 25000 ms (source still running)"]
        );
        assert!(v.to_string().ends_with(
            "\n  run 2: migration failed: timed out after 25000 ms (source still running)"
        ));
    }

    #[test]
    fn a_failure_measured_beside_a_busy_neighbour_says_so() {
        use crate::neighbours::Neighbour;
        let busy = Neighbours(vec![Neighbour {
            pid: 7,
            command: "rustc".into(),
            cpu_pct: 56.0,
        }]);
        let failed_verdict = judge(&case(), &[], &Baseline::new()).measured_beside(busy.clone());
        assert!(failed_verdict.to_string().ends_with(
            "measured beside rustc (pid 7) 56 % of a core: a change may be the machine's, not the \
             code's; rerun on a quiet machine before believing it"
        ));
        let passed = judge(&case(), &[run(2000.0, 100.0)], &Baseline::new()).measured_beside(busy);
        assert!(!passed.to_string().contains("measured beside"));
    }

    /// Five runs whose times are `slower` times a steady set's and whose
    /// stream rate is 1/`slower` of it, measured on a path carrying `path`.
    fn runs_at(slower: f64, path: Option<f64>) -> Vec<RunMeasurement> {
        [2000.0, 2050.0, 1980.0, 2010.0, 2030.0]
            .iter()
            .map(|t| {
                let mut r = run(t * slower, 100.0 * slower);
                r.throughput_mbit = Some(400.0 / slower);
                r.path_rate_mbit = path;
                r
            })
            .collect()
    }

    /// The gated estimates of `runs`, as a stored baseline.
    fn recorded(c: &Case, runs: &[RunMeasurement]) -> Baseline {
        judge(c, runs, &Baseline::new())
            .gates
            .into_iter()
            .map(|g| (g.metric.key().to_string(), g.new))
            .collect()
    }

    fn gate<'v>(v: &'v Verdict, metric: &str) -> &'v Gate {
        v.gates.iter().find(|g| g.metric.key() == metric).unwrap()
    }

    fn change(v: &Verdict, metric: &str) -> Change {
        gate(v, metric).comparison.as_ref().unwrap().change
    }

    /// Where the machine sets the path's rate (its noise threshold wide), a
    /// machine carrying half as much takes twice as long: paced, no change.
    #[test]
    fn a_machine_half_as_fast_is_not_a_regression() {
        let mut c = case();
        c.noise.insert(PATH_RATE.into(), 0.9);
        let baseline = recorded(&c, &runs_at(1.0, Some(500.0)));
        let v = judge(&c, &runs_at(2.0, Some(250.0)), &baseline);
        assert!(v.passed, "{v}");
        for metric in ["total_time", "downtime", "throughput"] {
            assert_eq!(change(&v, metric), Change::Noise, "{metric}: {v}");
        }
        let total = gate(&v, "total_time");
        assert_eq!(total.paced_to_mbit, Some(500.0));
        assert_relative_eq!(
            total.comparison.as_ref().unwrap().change_pct,
            0.0,
            epsilon = 1e-9
        );
        assert!(
            v.to_string().contains(
                "baseline 2010.0 ms [1980.0 ms, 2050.0 ms] n=5, new 4020.0 ms as measured, at the baseline's path rate (500 Mbit/s) 2010.0 ms"
            ),
            "{v}"
        );
        // Unpaced (runs that measured no path), the same runs regress.
        let baseline = recorded(&c, &runs_at(1.0, None));
        let v = judge(&c, &runs_at(2.0, None), &baseline);
        assert_eq!(change(&v, "total_time"), Change::Regression, "{v}");
    }

    #[test]
    fn a_slower_migration_on_the_same_path_regresses() {
        let c = case();
        let baseline = recorded(&c, &runs_at(1.0, Some(500.0)));
        let v = judge(&c, &runs_at(1.4, Some(500.0)), &baseline);
        assert!(!v.passed, "{v}");
        assert_eq!(change(&v, "total_time"), Change::Regression, "{v}");
        assert_eq!(change(&v, "throughput"), Change::Regression, "{v}");
        assert_eq!(change(&v, PATH_RATE), Change::Noise, "{v}");
    }

    /// A gate not compared says why: no baseline, too few runs, or a
    /// baseline without a line for the metric (one added since).
    #[test]
    fn a_gate_not_compared_says_why() {
        let c = case();
        let runs = runs_at(1.0, Some(500.0));
        let why = |v: &Verdict, metric: &str| gate(v, metric).not_compared;
        let none = judge(&c, &runs, &Baseline::new());
        assert_eq!(why(&none, "total_time"), Some(NotCompared::NoBaseline));
        let few = judge(&c, &runs[..1], &recorded(&c, &runs));
        assert_eq!(why(&few, "total_time"), Some(NotCompared::TooFewRuns));
        let mut without = recorded(&c, &runs);
        without.remove("downtime");
        let v = judge(&c, &runs, &without);
        assert_eq!(why(&v, "total_time"), None);
        assert!(gate(&v, "total_time").comparison.is_some());
        assert_eq!(why(&v, "downtime"), Some(NotCompared::NoLineStored));
        assert!(v.passed, "{v}");
        assert!(v.to_string().contains("none stored for it yet"), "{v}");
    }

    /// Where the link sets the path's rate (threshold 8 %), a 40 % slower
    /// link is the regression, though the migration kept pace with it.
    #[test]
    fn a_slower_link_regresses_the_path_rate() {
        let c = case();
        let baseline = recorded(&c, &runs_at(1.0, Some(500.0)));
        let v = judge(&c, &runs_at(1.0 / 0.6, Some(300.0)), &baseline);
        assert!(!v.passed, "{v}");
        assert_eq!(change(&v, PATH_RATE), Change::Regression, "{v}");
        assert_eq!(change(&v, "total_time"), Change::Noise, "{v}");
    }

    /// What a snapshot of `runs`, measured as `prov` says, stores.
    fn stored(c: &Case, runs: &[RunMeasurement], prov: &Provenance) -> Stored {
        Stored {
            figures: recorded(c, runs),
            recorded_on: Some(RecordedOn::of(prov)),
        }
    }

    /// `runs_at(slower)` on a lab `prov` says, against steady runs of `rack()`.
    fn on_rack(slower: f64, prov: &Provenance) -> Verdict {
        let c = case();
        let baseline = stored(&c, &runs_at(1.0, None), &rack());
        judge_stored(
            &c,
            &runs_at(slower, None),
            &RecordedOn::of(prov),
            Some(&baseline),
        )
    }

    #[test]
    fn a_baseline_of_the_same_machine_is_compared() {
        let v = on_rack(1.4, &rack());
        assert_eq!(change(&v, "total_time"), Change::Regression, "{v}");
        assert_eq!(v.since_baseline, Some(Default::default()));
        assert!(!v.to_string().contains("since the baseline"), "{v}");
    }

    #[test]
    fn a_baseline_of_another_cpu_model_is_not_compared() {
        let skylake = Machine {
            cpu: "x86_64, Intel Skylake-Server-IBRS".into(),
            ..epyc(7940, "u-b")
        };
        let v = on_rack(1.0, &real_lab(epyc(7940, "u-a"), Some(skylake)));
        assert!(!v.passed, "{v}");
        assert!(v.gates.iter().all(|g| g.comparison.is_none()), "{v}");
        assert!(
            v.gates
                .iter()
                .all(|g| g.not_compared == Some(NotCompared::NotComparable)),
            "{v}"
        );
        let text = v.to_string();
        assert!(
            text.contains("total time              new 2010.0 ms [1980.0 ms, 2050.0 ms] n=5: not comparable with its baseline"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n  not compared with the baseline, recorded on another machine: host b's CPU: \
                 baseline recorded on `x86_64, AMD EPYC-Rome`, this run on `x86_64, Intel \
                 Skylake-Server-IBRS`; this machine needs baselines of its own"
            ),
            "{text}"
        );
    }

    /// The stand-in real lab's runs against a baseline of the simulated lab.
    #[test]
    fn a_simulated_labs_baseline_is_not_compared_with_a_real_labs_run() {
        let c = case();
        let simulated = stored(&c, &runs_at(1.0, Some(500.0)), &provenance());
        let v = judge_stored(
            &c,
            &runs_at(1.0, None),
            &RecordedOn::of(&rack()),
            Some(&simulated),
        );
        assert!(!v.passed, "{v}");
        assert!(
            v.to_string().contains(
                "lab: baseline recorded on `simulated, 2 network-namespace hosts on one machine \
                 (2 CPUs)`, this run on `real hosts`"
            ),
            "{v}"
        );
    }

    #[test]
    fn a_new_version_is_compared_and_named_beside_the_figures() {
        let newer = Provenance {
            toolstack_version: "libvirt 10.0.0".into(),
            ..rack()
        };
        let v = on_rack(1.4, &newer);
        assert_eq!(change(&v, "total_time"), Change::Regression, "{v}");
        // Right after the gates' figures.
        let text = v.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[lines.len() - 1],
            "  versions changed since the baseline (a change of the figures may be theirs): \
             toolstack: baseline recorded on `libvirt 9.0.0`, this run on `libvirt 10.0.0`",
            "{text}"
        );
        assert!(
            lines[lines.len() - 2].starts_with("  peak memory"),
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_that_does_not_say_what_it_was_recorded_on_is_not_compared() {
        let c = case();
        let old = Stored {
            recorded_on: None,
            ..stored(&c, &runs_at(1.0, None), &rack())
        };
        let v = judge_stored(
            &c,
            &runs_at(1.0, None),
            &RecordedOn::of(&rack()),
            Some(&old),
        );
        assert!(!v.passed, "{v}");
        assert!(
            v.to_string()
                .contains("machine: baseline recorded on `not stated in its snapshot`"),
            "{v}"
        );
    }

    #[test]
    fn no_runs_is_no_pass() {
        assert!(!judge(&case(), &[], &Baseline::new()).passed);
        assert!(!judge(&expect_fail("timed out"), &[], &Baseline::new()).passed);
    }

    #[test]
    fn expected_failure_holds() {
        let runs = [
            failed("Timed Out after 25000 ms", true),
            failed("timed out after 25000 ms", true),
        ];
        let v = judge(&expect_fail("timed out"), &runs, &Baseline::new());
        assert!(v.passed, "{v}");
        assert!(v.to_string().starts_with(
            "PASS ci::kvm-fv::mtu128::game (expected to fail with \"timed out\", source surviving, in all 2 runs)"
        ));
    }

    #[rstest]
    #[case::completed(run(2000.0, 100.0), "run 1: migration completed, expected it to fail")]
    #[case::other_reason(
        failed("connection refused", true),
        "run 1: failed with \"connection refused\", which does not contain \"timed out\""
    )]
    #[case::source_lost(
        failed("timed out", false),
        "run 1: failed as expected, but the source did not survive"
    )]
    fn expected_failure_broken(#[case] r: RunMeasurement, #[case] message: &str) {
        let v = judge(
            &expect_fail("timed out"),
            &[r, failed("timed out", true)],
            &Baseline::new(),
        );
        assert!(!v.passed);
        assert_eq!(v.failures, [message]);
    }

    /// A case with variants `stock` and `capped`, runs in the order the
    /// runner gives them, capped's total times `slower` times stock's.
    fn ab(slower: f64) -> (Case, Vec<RunMeasurement>) {
        let mut c = case();
        c.repeat = 5;
        c.variants = ["stock", "capped"]
            .map(|name| crate::case::Variant {
                name: name.into(),
                migration: c.migration.clone(),
            })
            .to_vec();
        c.compare = [("total_time".to_string(), 0.10)].into();
        let spread = [1.00, 0.98, 1.02, 0.99, 1.01];
        let mut seen = [0, 0];
        let runs = c
            .variant_order()
            .into_iter()
            .map(|v| {
                let k = seen[v];
                seen[v] += 1;
                let factor = if v == 1 { slower } else { 1.0 };
                RunMeasurement {
                    variant: Some(c.variants[v].name.clone()),
                    ..run(2000.0 * spread[k] * factor, 100.0)
                }
            })
            .collect();
        (c, runs)
    }

    #[test]
    fn a_variant_like_the_reference_passes() {
        let (c, runs) = ab(1.0);
        let v = judge(&c, &runs, &Baseline::new());
        assert!(v.passed, "{v}");
        assert_eq!(v.variant_comparisons.len(), 1);
        let g = &v.variant_comparisons[0];
        assert_eq!(
            (g.variant.as_str(), g.reference.as_str()),
            ("capped", "stock")
        );
        assert_eq!(g.comparison.as_ref().unwrap().change, Change::Noise);
        assert!(
            v.to_string().contains(
                "capped against stock: total time: 2000.0 ms n=5 against 2000.0 ms n=5: +0.0 %"
            ),
            "{v}"
        );
    }

    #[test]
    fn a_variant_slower_beyond_its_bound_fails_the_case() {
        let (c, runs) = ab(1.2);
        let v = judge(&c, &runs, &Baseline::new());
        assert!(!v.passed, "{v}");
        let comparison = v.variant_comparisons[0].comparison.as_ref().unwrap();
        assert_eq!(comparison.change, Change::Regression);
        assert_relative_eq!(comparison.change_pct, 20.0, epsilon = 1e-9);
        assert!(v.to_string().contains("bound 10 %): REGRESSION"), "{v}");
    }

    #[test]
    fn the_stored_baseline_gates_the_reference_alone() {
        let (c, runs) = ab(1.5);
        let v = judge(&c, &runs, &Baseline::new());
        let total = v
            .gates
            .iter()
            .find(|g| g.metric.key() == "total_time")
            .unwrap();
        assert_eq!(total.new.n, 5);
        assert_relative_eq!(total.new.median, 2000.0);
    }
}
