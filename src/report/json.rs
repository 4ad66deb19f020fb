//! The machine-readable record of one run of a suite: every case with its
//! raw measurements, summary and verdict.

use crate::case::Case;
use crate::measure::{Calibration, CaseResult, Provenance, RunMeasurement};
use crate::metrics::CaseSummary;
use crate::verdict::{Gate, VariantGate, Verdict};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub suite: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub started_unix_s: u64,
    pub cases: Vec<CaseReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub case: Case,
    /// What produced the numbers of this case.
    pub provenance: Provenance,
    /// What the lab measured of itself before the case.
    pub calibration: Calibration,
    pub runs: Vec<RunMeasurement>,
    pub summary: CaseSummary,
    pub verdict: Verdict,
    /// When the case held its pair of hosts (Unix ms, from, to).
    pub held_unix_ms: Option<[u64; 2]>,
}

impl CaseReport {
    /// The record of a case, with the verdict it was given.
    pub fn new(
        CaseResult {
            case,
            provenance,
            calibration,
            runs,
            held_unix_ms,
        }: CaseResult,
        verdict: Verdict,
    ) -> CaseReport {
        CaseReport {
            held_unix_ms,
            calibration,
            name: case.name(),
            summary: CaseSummary::of(&runs),
            verdict,
            case,
            provenance,
            runs,
        }
    }
}

impl RunReport {
    pub fn new(suite: impl Into<String>, started: SystemTime) -> RunReport {
        let unix_s = started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        RunReport {
            suite: suite.into(),
            started_at: rfc3339(unix_s),
            started_unix_s: unix_s,
            cases: vec![],
        }
    }

    /// Writes compact JSON to `<dir>/<suite>-<unix seconds>.json` (creating
    /// `dir`) and returns that path.
    pub fn write(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = dir.join(format!(
            "{}-{}.json",
            file_stem(&self.suite),
            self.started_unix_s
        ));
        self.write_file(&path)?;
        Ok(path)
    }

    /// Writes compact JSON to `path`, creating its directory: a run's
    /// observations hold thousands of numbers, which pretty-printing
    /// makes four times larger (`jq .` reads it pretty).
    pub fn write_file(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec(self)?)
    }
}

/// The run reports at `paths` (each a report, or a directory of them)
/// merged into one per suite, as if one lab had run every case: what
/// partitions of a suite run apart (`cargo nextest run --partition`, one
/// process per case) give back. Each suite's cases come in the order of
/// `order` (case names; others after them, oldest report first); a case
/// found twice is refused, since its two measurements could not both stand
/// in one table, and so are reports of different labs, whose figures no
/// table can set side by side.
pub fn merge(paths: &[PathBuf], order: &[String]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut reports = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let report: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let started = report["started_unix_s"].as_u64();
        anyhow::ensure!(
            report["suite"].is_string() && report["cases"].is_array() && started.is_some(),
            "{} is not a migsuite run report (suite, started_unix_s, cases)",
            file.display()
        );
        reports.push((started.unwrap_or_default(), file, report));
    }
    anyhow::ensure!(!reports.is_empty(), "no run reports in {paths:?}");
    reports.sort_by_key(|(started, _, _)| *started);
    let mut merged: Vec<serde_json::Value> = Vec::new();
    let mut seen: std::collections::HashMap<String, &Path> = Default::default();
    let mut lab: Option<(&str, &Path)> = None;
    for (_, file, report) in &reports {
        for case in report["cases"].as_array().into_iter().flatten() {
            let name = case["name"].as_str().unwrap_or_default().to_string();
            let this_lab = case["provenance"]["lab"].as_str().unwrap_or_default();
            match lab {
                Some((first_lab, first)) if first_lab != this_lab => anyhow::bail!(
                    "{} was measured on \"{first_lab}\" but case {name} in {} on \"{this_lab}\": \
                     merge the reports of one lab",
                    first.display(),
                    file.display()
                ),
                Some(_) => {}
                None => lab = Some((this_lab, file)),
            }
            if let Some(first) = seen.insert(name.clone(), file) {
                anyhow::bail!(
                    "case {name} is in both {} and {}: merge the reports of one run of each case",
                    first.display(),
                    file.display()
                );
            }
        }
        let suite = &report["suite"];
        match merged.iter_mut().find(|m| m["suite"] == *suite) {
            Some(into) => {
                let cases = report["cases"].as_array().cloned().unwrap_or_default();
                if let Some(all) = into["cases"].as_array_mut() {
                    all.extend(cases);
                }
            }
            None => merged.push(report.clone()),
        }
    }
    let rank = |case: &serde_json::Value| {
        let name = case["name"].as_str().unwrap_or_default();
        order.iter().position(|n| n == name).unwrap_or(order.len())
    };
    for report in &mut merged {
        if let Some(cases) = report["cases"].as_array_mut() {
            cases.sort_by_key(rank);
        }
    }
    Ok(merged)
}

/// A run report read back from its JSON, for the HTML report: each case's
/// measurements and whether it passed (summaries follow from the runs).
#[derive(Clone, Debug, Deserialize)]
pub struct SavedRun {
    pub suite: String,
    pub started_at: String,
    pub cases: Vec<SavedCase>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SavedCase {
    #[serde(flatten)]
    pub result: CaseResult,
    pub verdict: SavedVerdict,
}

/// What a reader of the report needs of a verdict.
#[derive(Clone, Debug, Deserialize)]
pub struct SavedVerdict {
    pub passed: bool,
    /// What was expected of the case, e.g. "bounds on worst of 3 runs, ...".
    pub expectation: String,
    pub failures: Vec<String>,
    /// The gated metrics against the stored baseline (none in reports
    /// from before they were kept).
    #[serde(default)]
    pub gates: Vec<Gate>,
    #[serde(default)]
    pub variant_comparisons: Vec<VariantGate>,
}

impl SavedRun {
    pub fn read(path: &Path) -> anyhow::Result<SavedRun> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .with_context(|| format!("{} is not a migsuite run report", path.display()))
    }
}

/// The merged reports of `paths` (`merge`), each written to `dir` as
/// `<suite>-merged-<started>.json`: where, and what each holds.
pub fn write_merged(
    paths: &[PathBuf],
    order: &[String],
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, SavedRun)>> {
    std::fs::create_dir_all(dir)?;
    merge(paths, order)?
        .into_iter()
        .map(|report| {
            let path = dir.join(format!(
                "{}-merged-{}.json",
                file_stem(report["suite"].as_str().unwrap_or("suite")),
                report["started_unix_s"]
            ));
            std::fs::write(&path, serde_json::to_vec(&report)?)?;
            Ok((path, serde_json::from_value(report)?))
        })
        .collect()
}

/// A suite's name as the start of a report's file name.
fn file_stem(suite: &str) -> String {
    suite.replace(['/', '\\'], "_")
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn rfc3339(unix_s: u64) -> String {
    let (days, secs) = ((unix_s / 86_400) as i64, unix_s % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{case, failed, provenance, run};
    use crate::verdict::judge;
    use rstest::rstest;
    use std::time::Duration;

    #[rstest]
    #[case(0, "1970-01-01T00:00:00Z")]
    #[case(951_782_400, "2000-02-29T00:00:00Z")]
    #[case(1_700_000_000, "2023-11-14T22:13:20Z")]
    #[case(4_107_542_399, "2100-02-28T23:59:59Z")]
    fn utc_timestamps(#[case] unix_s: u64, #[case] text: &str) {
        assert_eq!(rfc3339(unix_s), text);
    }

    /// A report of `cases` (names of the fixture case's variants) written
    /// in `dir` as `file`, started at `unix_s`.
    fn report_of(dir: &Path, file: &str, unix_s: u64, names: &[&str]) -> PathBuf {
        let mut report = RunReport::new("ci", UNIX_EPOCH + Duration::from_secs(unix_s));
        for name in names {
            let mut c = case();
            c.workload.name = name.to_string();
            let runs = vec![run(2000.0, 100.0)];
            let verdict = judge(&c, &runs, &Default::default());
            report.cases.push(CaseReport::new(
                CaseResult {
                    case: c,
                    provenance: provenance(),
                    calibration: Default::default(),
                    held_unix_ms: None,
                    runs,
                },
                verdict,
            ));
        }
        let path = dir.join(file);
        report.write_file(&path).unwrap();
        path
    }

    #[test]
    fn partitions_merge_into_one_report_in_the_suite_s_order() {
        let dir = tempfile::tempdir().unwrap();
        report_of(dir.path(), "p2.json", 200, &["b"]);
        report_of(dir.path(), "p1.json", 100, &["c", "a"]);
        let order = ["a", "b", "c"].map(|w| format!("ci::kvm-fv::mtu128::{w}"));
        let merged = merge(&[dir.path().to_path_buf()], &order).unwrap();
        assert_eq!(merged.len(), 1);
        let names: Vec<&str> = merged[0]["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, order.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(merged[0]["started_unix_s"], 100);
    }

    #[test]
    fn a_case_measured_twice_is_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let one = report_of(dir.path(), "one.json", 100, &["a"]);
        let two = report_of(dir.path(), "two.json", 200, &["a"]);
        let err = merge(&[one, two], &[]).unwrap_err().to_string();
        assert!(
            err.contains("case ci::kvm-fv::mtu128::a is in both"),
            "{err}"
        );
    }

    #[test]
    fn reports_of_two_labs_are_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let one = report_of(dir.path(), "one.json", 100, &["a"]);
        let two = report_of(dir.path(), "two.json", 200, &["b"]);
        let mut other: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&two).unwrap()).unwrap();
        other["cases"][0]["provenance"]["lab"] = "lab: rack-7 (inventory rack.yaml)".into();
        std::fs::write(&two, other.to_string()).unwrap();
        let err = merge(&[one, two], &[]).unwrap_err().to_string();
        assert!(err.contains("merge the reports of one lab"), "{err}");
        assert!(err.contains("rack-7"), "{err}");
    }

    #[test]
    fn writes_the_report_as_json() {
        let started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut report = RunReport::new("ci", started);
        let runs = vec![run(2000.0, 100.0), failed("timed out", true)];
        let verdict = judge(&case(), &runs, &Default::default());
        report.cases.push(CaseReport::new(
            CaseResult {
                case: case(),
                provenance: provenance(),
                calibration: Default::default(),
                held_unix_ms: None,
                runs,
            },
            verdict,
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = report.write(&dir.path().join("reports")).unwrap();
        assert_eq!(path, dir.path().join("reports/ci-1700000000.json"));

        let saved = SavedRun::read(&path).unwrap();
        let (read, written) = (&saved.cases[0].result, &report.cases[0]);
        assert_eq!(
            (&read.case, &read.provenance, &read.runs),
            (&written.case, &written.provenance, &written.runs)
        );
        assert!(!saved.cases[0].verdict.passed);

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"suite\":\"ci\""), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["started_at"], "2023-11-14T22:13:20Z");
        let c = &json["cases"][0];
        assert_eq!(c["name"], "ci::kvm-fv::mtu128::game");
        assert_eq!(c["case"]["hypervisor"], "kvm-fv");
        assert_eq!(c["runs"][1]["outcome"]["kind"], "failed");
        assert_eq!(c["summary"]["metrics"]["total_time"]["mean"], 2000.0);
        assert_eq!(c["verdict"]["passed"], false);
        assert_eq!(
            c["verdict"]["failures"][0],
            "run 2: migration failed: timed out (source still running)"
        );
    }

    #[test]
    fn checks_are_serialized() {
        let mut bounded = case();
        bounded.bounds.limits.insert("downtime".into(), 500.0);
        let runs = vec![run(2000.0, 812.0)];
        let verdict = judge(&bounded, &runs, &Default::default());
        let json = serde_json::to_value(CaseReport::new(
            CaseResult {
                case: bounded,
                provenance: provenance(),
                calibration: Default::default(),
                held_unix_ms: None,
                runs,
            },
            verdict,
        ))
        .unwrap();
        let check = &json["verdict"]["checks"][0];
        assert_eq!(check["metric"], "downtime");
        assert_eq!(check["measured"], 812.0);
        assert_eq!(check["bound"], 500.0);
        assert_eq!(check["unit"], "ms");
        assert_eq!(check["ok"], false);
    }
}
