//! `migsuite rejudge`: the cases of saved run reports judged again, with
//! no lab. Each case's recorded runs are worked out again from what they
//! observed (`crate::derive`, for runs recorded with it), then held against
//! the bounds the case ran with and against the baseline stored now: a
//! baseline recorded anew, or a change to how a figure is worked out or a
//! metric judged, shows as a verdict other than the one the report records.

use crate::derive::rederive;
use crate::report::json::SavedRun;
use crate::session::{judge_against, snapshot_name};
use crate::verdict::Verdict;
use std::path::Path;

/// A saved case judged again.
pub struct Rejudged {
    pub case: String,
    /// Whether it passed when it ran.
    pub passed_then: bool,
    /// How many of its runs were worked out again from what they observed
    /// (the others, recorded without it, are judged as recorded), and of
    /// how many.
    pub rederived: (usize, usize),
    pub verdict: Verdict,
}

/// Every case of the report at `report`, judged against the baselines in
/// `snapshots` of the lab named `lab` (None: the built-in pair's).
pub fn rejudge(
    report: &Path,
    snapshots: &Path,
    lab: Option<&str>,
) -> anyhow::Result<Vec<Rejudged>> {
    Ok(SavedRun::read(report)?
        .cases
        .into_iter()
        .map(|saved| {
            let mut result = saved.result;
            let name = snapshot_name(&result.case, lab);
            let snapshot = snapshots.join(format!("{name}.snap"));
            let rederived = result
                .runs
                .iter_mut()
                .filter_map(|run| rederive(run).map(|again| *run = again))
                .count();
            Rejudged {
                case: result.case.name(),
                passed_then: saved.verdict.passed,
                rederived: (rederived, result.runs.len()),
                verdict: judge_against(result, &snapshot).verdict,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::case_snapshot;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ci-report-two-cases.json")
    }

    /// With no baseline stored, only the bounds judge: the gates compare
    /// nothing.
    #[test]
    fn a_case_without_a_baseline_is_judged_by_its_bounds() {
        let none = tempfile::tempdir().unwrap();
        let rejudged = rejudge(&fixture(), none.path(), None).unwrap();
        assert_eq!(rejudged.len(), 2);
        for r in &rejudged {
            assert!(r.verdict.since_baseline.is_none(), "{}", r.case);
            assert!(
                r.verdict.gates.iter().all(|g| g.comparison.is_none()),
                "{}",
                r.case
            );
        }
    }

    /// The fixture's report with each case's runs given twice: enough runs
    /// to compare with a baseline.
    fn four_runs(dir: &Path) -> std::path::PathBuf {
        let text = std::fs::read_to_string(fixture()).unwrap();
        let mut report: serde_json::Value = serde_json::from_str(&text).unwrap();
        for case in report["cases"].as_array_mut().unwrap() {
            let runs = case["runs"].as_array().unwrap().clone();
            case["runs"].as_array_mut().unwrap().extend(runs);
        }
        let path = dir.join("four-runs.json");
        std::fs::write(&path, report.to_string()).unwrap();
        path
    }

    /// Runs held against a baseline made of themselves: every gated metric
    /// compared, no change, the verdict the report records.
    #[test]
    fn runs_against_their_own_baseline_keep_their_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let report = four_runs(dir.path());
        for saved in SavedRun::read(&report).unwrap().cases {
            let result = saved.result;
            let name = snapshot_name(&result.case, None);
            let alone = judge_against(result.clone(), &dir.path().join("none.snap"));
            let text = case_snapshot(&alone.verdict, &result.provenance, None);
            std::fs::write(dir.path().join(format!("{name}.snap")), text).unwrap();
        }
        let rejudged = rejudge(&report, dir.path(), None).unwrap();
        assert_eq!(rejudged.len(), 2);
        for r in rejudged {
            assert!(!r.verdict.gates.is_empty(), "{}", r.case);
            assert!(
                r.verdict.gates.iter().all(|g| g.comparison.is_some()),
                "{}: {}",
                r.case,
                r.verdict
            );
            assert_eq!(r.verdict.passed, r.passed_then, "{}: {}", r.case, r.verdict);
        }
    }
}
