//! Did a case hold: its runs' outcomes against its expectation, and its
//! measured figures against its bounds.

use crate::case::{Aggregate, Bounds, Case, Expect};
use crate::measure::{Outcome, RunMeasurement, Unit};
use crate::stats::{CaseSummary, Summary};
use serde::Serialize;
use std::fmt;

/// A bounded metric: how the bound and the measured summary are found.
pub(crate) struct Metric {
    pub label: &'static str,
    pub unit: Unit,
    pub bound: fn(&Bounds) -> Option<f64>,
    pub summary: fn(&CaseSummary) -> &Option<Summary>,
}

/// The bounded metrics, in the order checks and suite tables show them.
pub(crate) const METRICS: [Metric; 5] = [
    Metric {
        label: "total time",
        unit: Unit::Ms,
        bound: |b| b.total_time_ms,
        summary: |s| &s.total_time_ms,
    },
    Metric {
        label: "downtime",
        unit: Unit::Ms,
        bound: |b| b.downtime_ms,
        summary: |s| &s.reported_downtime_ms,
    },
    Metric {
        label: "guest downtime",
        unit: Unit::Ms,
        bound: |b| b.guest_downtime_ms,
        summary: |s| &s.guest_downtime_ms,
    },
    Metric {
        label: "peak CPU",
        unit: Unit::Percent,
        bound: |b| b.peak_cpu_pct,
        summary: |s| &s.peak_cpu_pct,
    },
    Metric {
        label: "peak memory",
        unit: Unit::Mib,
        bound: |b| b.peak_memory_mib,
        summary: |s| &s.peak_memory_mib,
    },
];

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// Human label of the metric ("downtime", "peak CPU", ...).
    pub metric: &'static str,
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
    /// Runs whose outcome broke the expectation, one line each.
    pub failures: Vec<String>,
    /// What was expected, e.g. "bounds on worst of 3 runs".
    pub expectation: String,
}

pub fn judge(case: &Case, runs: &[RunMeasurement]) -> Verdict {
    let n = runs.len();
    let runs_word = if n == 1 { "run" } else { "runs" };
    let (expectation, checks, mut failures) = match &case.expect {
        Expect::Pass => {
            let agg = match case.bounds.apply_to {
                Aggregate::Mean => "mean",
                Aggregate::Worst => "worst",
            };
            let failures = runs.iter().enumerate().filter_map(|(i, r)| run_failure(i, r)).collect();
            (format!("bounds on {agg} of {n} {runs_word}"), check_bounds(case, runs), failures)
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
    Verdict {
        case: case.name(),
        passed: failures.is_empty() && checks.iter().all(|c| c.ok),
        checks,
        failures,
        expectation,
    }
}

/// "run N: migration failed: <reason> (source still running|lost)" for a
/// failed run (N counts from 1); None for a completed one.
pub(crate) fn run_failure(index: usize, run: &RunMeasurement) -> Option<String> {
    match &run.outcome {
        Outcome::Completed => None,
        Outcome::Failed {
            reason,
            source_survived,
        } => Some(format!(
            "run {}: migration failed: {reason} ({})",
            index + 1,
            if *source_survived {
                "source still running"
            } else {
                "source lost"
            }
        )),
    }
}

fn check_bounds(case: &Case, runs: &[RunMeasurement]) -> Vec<Check> {
    let summary = CaseSummary::of(runs);
    METRICS
        .iter()
        .filter_map(|m| {
            let bound = (m.bound)(&case.bounds)?;
            let measured = (m.summary)(&summary)
                .as_ref()
                .map(|s| s.aggregate(case.bounds.apply_to));
            Some(Check {
                metric: m.label,
                measured,
                bound,
                unit: m.unit,
                ok: measured.is_some_and(|v| v <= bound),
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
            match &r.outcome {
                Outcome::Completed => Some(format!("run {n}: migration completed, expected it to fail")),
                Outcome::Failed { reason, .. } if !reason.to_lowercase().contains(&wanted) => Some(format!(
                    "run {n}: failed with \"{reason}\", which does not contain \"{reason_contains}\""
                )),
                Outcome::Failed { source_survived: false, .. } => {
                    Some(format!("run {n}: failed as expected, but the source did not survive"))
                }
                Outcome::Failed { .. } => None,
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
            write!(f, "\n  {:<16}{measured:>10}   {bound:<14}{ok}", c.metric)?;
        }
        for line in &self.failures {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{case, failed, run};
    use rstest::rstest;

    fn bounded(apply_to: Aggregate) -> Case {
        let mut c = case();
        c.bounds.apply_to = apply_to;
        c.bounds.downtime_ms = Some(500.0);
        c.bounds.guest_downtime_ms = Some(3000.0);
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
        let v = judge(&bounded(agg), &runs);
        assert_eq!(v.passed, passed, "{v}");
        assert_eq!(v.checks[0].metric, "downtime");
        assert_eq!(v.checks[0].measured, Some(measured));
    }

    #[test]
    fn failing_bound_shows_measured_against_bound() {
        let v = judge(
            &bounded(Aggregate::Worst),
            &[run(2000.0, 812.0), run(2000.0, 700.0), run(2000.0, 300.0)],
        );
        assert!(!v.passed);
        let text = v.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "FAIL ci::kvm-fv::mtu128::game (bounds on worst of 3 runs)"
        );
        assert_eq!(
            lines[1],
            "  downtime          812.0 ms   <= 500.0 ms   FAIL"
        );
        assert_eq!(lines[2], "  guest downtime    912.0 ms   <= 3000.0 ms  ok");
    }

    #[test]
    fn unmeasured_bound_fails() {
        let mut r = run(2000.0, 100.0);
        r.guest_downtime_ms = None;
        let v = judge(&bounded(Aggregate::Mean), &[r]);
        assert!(!v.passed);
        assert_eq!(v.checks[1].measured, None);
        assert!(
            v.to_string()
                .contains("guest downtime  not measured   <= 3000.0 ms  FAIL"),
            "{v}"
        );
    }

    #[test]
    fn failed_run_fails_a_pass_case() {
        let v = judge(
            &case(),
            &[run(2000.0, 100.0), failed("timed out after 25000 ms", true)],
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
    fn no_runs_is_no_pass() {
        assert!(!judge(&case(), &[]).passed);
        assert!(!judge(&expect_fail("timed out"), &[]).passed);
    }

    #[test]
    fn expected_failure_holds() {
        let runs = [
            failed("Timed Out after 25000 ms", true),
            failed("timed out after 25000 ms", true),
        ];
        let v = judge(&expect_fail("timed out"), &runs);
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
        let v = judge(&expect_fail("timed out"), &[r, failed("timed out", true)]);
        assert!(!v.passed);
        assert_eq!(v.failures, [message]);
    }
}
