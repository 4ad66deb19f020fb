//! Snapshot text of a judged case, one line per fact, so a change touches
//! only its own lines: what it was recorded on (`RecordedOn`: accelerator,
//! machines, versions), the outcome (each failed run's reason on a line of
//! its own), and each gated metric's baseline (median, 95 % interval, n),
//! named by the metric's key, which stays when its label changes.
//! A metric whose new sample is noise or an improvement against the stored
//! baseline keeps its stored line byte for byte; a regression writes the
//! new one, for a reviewer to see in `cargo insta review`. The lines of what
//! it was recorded on stay while every figure does: they are the figures'.
//! A baseline of another machine is not compared, and every line is
//! written anew, as when new baselines are recorded on purpose
//! (`MIGSUITE_REBASELINE=1`).

use crate::baseline::{Change, Estimate};
use crate::measure::Provenance;
use crate::metrics::Metric;
use crate::recorded_on::{Differences, RecordedOn};
use crate::verdict::{Baseline, Stored, VariantGate, Verdict};
use std::path::{Path, PathBuf};

/// The body of an insta `.snap` file: everything after its `---`-delimited
/// YAML header, without the trailing newline(s) insta writes. Text without a
/// header is returned whole.
pub fn snap_body(snap_file_text: &str) -> &str {
    let text = snap_file_text.trim_start_matches('\u{feff}');
    let is_rule = |line: &str| line.trim_end() == "---";
    let mut lines = text.split_inclusive('\n');
    let body = match lines.next() {
        Some(first) if is_rule(first) => {
            let mut offset = first.len();
            let closed = lines.any(|line| {
                offset += line.len();
                is_rule(line)
            });
            if closed {
                &text[offset..]
            } else {
                text
            }
        }
        _ => text,
    };
    body.trim_end_matches(['\n', '\r'])
}

const CI: &str = " | 95% CI ";

fn estimate_line(metric: &str, e: &Estimate, unit: crate::measure::Unit) -> String {
    format!(
        "{metric} | median {}{CI}{} .. {} | n={}",
        unit.format(e.median),
        unit.format(e.lo),
        unit.format(e.hi),
        e.n
    )
}

/// The leading number of `text` ("1523.0 ms" -> 1523.0).
fn number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The baseline a stored snapshot holds: what it was recorded on, and
/// each metric line parsed back.
pub fn stored(text: &str) -> Stored {
    Stored {
        figures: figures(text),
        recorded_on: RecordedOn::parse(text),
    }
}

/// The metric of a baseline line, and the rest of the line after it.
fn baseline_line(line: &str) -> Option<(&'static Metric, &str)> {
    let (name, rest) = line.split_once(" | median ")?;
    Some((Metric::named(name)?, rest))
}

fn figures(stored: &str) -> Baseline {
    stored
        .lines()
        .filter_map(|line| {
            let (metric, rest) = baseline_line(line)?;
            let (median, rest) = rest.split_once(CI)?;
            let (interval, n) = rest.split_once(" | n=")?;
            let (lo, hi) = interval.split_once(" .. ")?;
            let e = Estimate {
                median: number(median)?,
                lo: number(lo)?,
                hi: number(hi)?,
                n: n.trim().parse().ok()?,
            };
            Some((metric.key.to_string(), e))
        })
        .collect()
}

/// Writes `text` as the proposed baseline of the snapshot stored at
/// `snap` (`<name>.snap`): `<name>.snap.new`, in insta's format, which
/// `cargo insta review` shows beside the stored one (if any) and accepts
/// or rejects. Returns its path.
pub fn propose(snap: &Path, text: &str) -> std::io::Result<PathBuf> {
    let mut path = snap.as_os_str().to_owned();
    path.push(".new");
    let path = PathBuf::from(path);
    // The header the suites' tests write, so that an accepted proposal
    // reads as theirs.
    std::fs::write(
        &path,
        format!("---\nsource: tests/suites.rs\n---\n{text}\n"),
    )?;
    Ok(path)
}

/// The snapshot text of `verdict`'s case, measured as `prov` says; `stored`
/// is the snapshot it is compared with, whose lines are kept where the
/// change is noise.
pub fn case_snapshot(verdict: &Verdict, prov: &Provenance, stored: Option<&str>) -> String {
    let same_machine = verdict
        .since_baseline
        .as_ref()
        .is_some_and(Differences::comparable);
    let stored_line = |key: &str| {
        stored?
            .lines()
            .find(|l| baseline_line(l).is_some_and(|(m, _)| m.key == key))
    };
    let gates: Vec<(String, bool)> = verdict
        .gates
        .iter()
        // A metric gated since the baseline was recorded has no line in it:
        // it joins when baselines are recorded anew, so that adding one
        // leaves every stored snapshot as it is.
        .filter(|g| !(same_machine && stored_line(g.metric.key()).is_none()))
        .map(|g| {
            let kept = g
                .comparison
                .as_ref()
                // An improvement keeps the baseline too: a faster machine or a
                // quieter one must not fail the gate; re-record on purpose.
                .filter(|c| c.change != Change::Regression)
                .and_then(|_| stored_line(g.metric.key()));
            // A regressed figure is written at the baseline's path rate,
            // beside the path rate line it was brought to.
            let new = match (&g.comparison, g.paced_to_mbit) {
                (Some(c), Some(_)) => &c.new,
                _ => &g.new,
            };
            match kept {
                Some(line) => (line.to_string(), true),
                None => (estimate_line(g.metric.key(), new, g.unit), false),
            }
        })
        .collect();
    let kept_on = stored
        .and_then(RecordedOn::parse)
        .filter(|_| same_machine && gates.iter().all(|(_, kept)| *kept));
    let mut lines = vec![verdict.case.clone()];
    lines.extend(kept_on.unwrap_or_else(|| RecordedOn::of(prov)).lines());
    lines.push(format!(
        "outcome: {}",
        if verdict.failures.is_empty() {
            "as expected"
        } else {
            "NOT as expected"
        }
    ));
    lines.extend(verdict.failures.iter().map(|f| format!("outcome: {f}")));
    lines.extend(gates.into_iter().map(|(line, _)| line));
    lines.extend(verdict.variant_comparisons.iter().map(variant_line));
    lines.join("\n")
}

/// A variant's compared metric as the snapshot keeps it: whether the
/// comparison found it worse than its bound, not its figures (they move
/// from run to run; the verdict and the JSON have them), so the line
/// changes only when that does. An improvement reads as no regression, as
/// it keeps a stored baseline.
fn variant_line(g: &VariantGate) -> String {
    let concluded = match &g.comparison {
        None => "not compared".to_string(),
        Some(c) if c.change == Change::Regression => {
            format!("REGRESSION beyond {} %", c.bound_pct)
        }
        Some(c) => format!("no regression beyond {} %", c.bound_pct),
    };
    format!(
        "{} against {}: {} | {concluded}",
        g.variant,
        g.reference,
        g.metric.key()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{case, provenance, run};
    use crate::verdict::judge_stored;
    use rstest::rstest;

    fn runs(scale: f64) -> Vec<crate::measure::RunMeasurement> {
        [2000.0, 2050.0, 1980.0, 2010.0, 2030.0]
            .iter()
            .map(|t| {
                let mut r = run(t * scale, 100.0);
                r.throughput_mbit = Some(900.0 / scale);
                r
            })
            .collect()
    }

    /// The snapshot of runs `scale` times the steady ones', measured as
    /// `prov` says, against the snapshot `old`.
    fn snapshot_on(prov: &Provenance, scale: f64, old: Option<&str>) -> String {
        let on = RecordedOn::of(prov);
        let verdict = judge_stored(&case(), &runs(scale), &on, old.map(stored).as_ref());
        case_snapshot(&verdict, prov, old)
    }

    fn snapshot(scale: f64, old: Option<&str>) -> String {
        snapshot_on(&provenance(), scale, old)
    }

    #[test]
    fn one_line_per_metric_and_the_baseline_reads_back() {
        let text = snapshot(1.0, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ci::kvm-fv::mtu128::game");
        assert_eq!(lines[1..6], RecordedOn::of(&provenance()).lines());
        assert_eq!(lines[6], "outcome: as expected");
        assert!(
            lines.contains(&"total_time | median 2010.0 ms | 95% CI 1980.0 ms .. 2050.0 ms | n=5"),
            "{text}"
        );
        let b = stored(&text);
        assert_eq!(b.figures["total_time"].median, 2010.0);
        assert_eq!(b.figures["throughput"].n, 5);
        assert_eq!(b.recorded_on, Some(RecordedOn::of(&provenance())));
    }

    #[test]
    fn a_variant_comparison_is_kept_as_its_conclusion() {
        let mut v = crate::verdict::judge(&case(), &runs(1.0), &Baseline::new());
        let (reference_values, variant_values) = (
            vec![100.0, 101.0, 99.0, 100.0],
            vec![130.0, 131.0, 129.0, 130.0],
        );
        let comparison = crate::ab::compare_variants(
            &reference_values,
            &variant_values,
            crate::metrics::Better::Lower,
            0.1,
        );
        v.variant_comparisons = vec![VariantGate {
            metric: crate::metrics::MetricRef(Metric::by_key("total_time").unwrap()),
            unit: crate::measure::Unit::Ms,
            reference: "stock".into(),
            variant: "capped".into(),
            reference_values,
            variant_values,
            comparison,
        }];
        let text = case_snapshot(&v, &provenance(), None);
        assert_eq!(
            text.lines().last(),
            Some("capped against stock: total_time | REGRESSION beyond 10 %")
        );
        // Not read back as a baseline figure.
        let figure_lines = text.lines().filter(|l| l.contains(" | median ")).count();
        assert_eq!(stored(&text).figures.len(), figure_lines, "{text}");
    }

    #[test]
    fn noise_keeps_the_stored_lines_byte_for_byte() {
        let stored = snapshot(1.0, None);
        assert_eq!(snapshot(1.02, Some(&stored)), stored);
    }

    /// Snapshots written before they named metrics by key still compare,
    /// and within the noise stay as they are.
    #[test]
    fn a_snapshot_naming_metrics_by_label_still_compares() {
        let by_label = snapshot(1.0, None).replace("total_time | ", "total time | ");
        assert_eq!(stored(&by_label).figures["total_time"].median, 2010.0);
        assert_eq!(snapshot(1.02, Some(&by_label)), by_label);
        let regressed = snapshot(1.3, Some(&by_label));
        assert!(
            regressed.contains("\ntotal_time | median 2613.0 ms"),
            "{regressed}"
        );
    }

    #[test]
    fn a_metric_without_a_stored_line_waits_for_new_baselines() {
        let full = snapshot(1.0, None);
        let without: Vec<&str> = full
            .lines()
            .filter(|l| !l.starts_with("downtime |"))
            .collect();
        let without = without.join("\n");
        assert_ne!(without, full);
        assert_eq!(snapshot(1.02, Some(&without)), without);
        // Recorded anew, it has its line again.
        assert!(snapshot(1.02, None)
            .lines()
            .any(|l| l.starts_with("downtime |")));
    }

    #[test]
    fn an_improvement_keeps_the_baseline() {
        let stored = snapshot(1.0, None);
        assert_eq!(snapshot(0.7, Some(&stored)), stored);
    }

    #[test]
    fn a_regression_changes_only_its_own_lines() {
        let stored = snapshot(1.0, None);
        let new = snapshot(1.3, Some(&stored));
        let changed: Vec<&str> = new
            .lines()
            .filter(|l| !stored.lines().any(|o| o == *l))
            .collect();
        assert!(
            changed
                .iter()
                .any(|l| l.starts_with("total_time | median 2613.0 ms")),
            "{new}"
        );
        assert!(
            changed
                .iter()
                .any(|l| l.starts_with("throughput | median 692.3 Mbit/s")),
            "{new}"
        );
        assert!(
            changed.iter().all(|l| !l.starts_with("downtime")),
            "{changed:?}"
        );
    }

    /// Other versions, figures within the noise: the baseline, and the
    /// versions it was recorded with, stay.
    #[test]
    fn a_new_version_within_the_noise_keeps_the_snapshot() {
        let stored = snapshot(1.0, None);
        let newer = Provenance {
            hypervisor_version: "QEMU 8.0.0".into(),
            ..provenance()
        };
        assert_eq!(snapshot_on(&newer, 1.02, Some(&stored)), stored);
    }

    /// A regression with other versions: the new figures' lines say which.
    #[test]
    fn a_regression_writes_the_versions_beside_its_figures() {
        let stored = snapshot(1.0, None);
        let newer = Provenance {
            hypervisor_version: "QEMU 8.0.0".into(),
            ..provenance()
        };
        let new = snapshot_on(&newer, 1.3, Some(&stored));
        let changed: Vec<&str> = new
            .lines()
            .filter(|l| !stored.lines().any(|o| o == *l))
            .collect();
        assert!(changed.contains(&"hypervisor: QEMU 8.0.0"), "{new}");
        assert!(
            changed.iter().all(|l| !l.starts_with("downtime")),
            "{changed:?}"
        );
    }

    /// Another machine's snapshot: every line is this run's, as a new
    /// baseline's.
    #[rstest]
    #[case::four_cpus(Provenance { host_cpus: Some(4), ..provenance() })]
    #[case::kvm(Provenance { accel: "kvm (auto)".into(), ..provenance() })]
    fn another_machine_proposes_a_new_baseline(#[case] other: Provenance) {
        let stored = snapshot(1.0, None);
        assert_eq!(
            snapshot_on(&other, 1.02, Some(&stored)),
            snapshot_on(&other, 1.02, None)
        );
    }

    /// A snapshot of before they said what they were recorded on.
    #[test]
    fn an_old_format_snapshot_proposes_a_new_baseline() {
        let old = snapshot(1.0, None).replace("\nlab: simulated, ", "; host: local lab: ");
        assert_eq!(snapshot(1.02, Some(&old)), snapshot(1.02, None), "{old}");
    }

    /// The gate's snapshots read as what any CI machine of the kind (2
    /// CPUs) records, whatever its CPU model, memory, kernel and versions.
    #[test]
    fn the_gates_snapshots_were_recorded_on_the_ci_kind() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots");
        let gate: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .filter(|p| !p.to_string_lossy().contains('@'))
            .collect();
        assert!(!gate.is_empty());
        for file in gate {
            let text = std::fs::read_to_string(&file).unwrap();
            let body = snap_body(&text);
            let on = stored(body).recorded_on;
            let on = on.unwrap_or_else(|| panic!("{} does not say", file.display()));
            // Kept as they are, when kept.
            assert!(body.lines().skip(1).zip(on.lines()).all(|(a, b)| a == b));
            let ci_machine = Provenance {
                accel: on.accel.clone(),
                host_cpus: Some(2),
                host_memory_mib: Some(7000.0),
                host_kernel: "6.1.0-99-amd64".into(),
                ..provenance()
            };
            let d = RecordedOn::of(&ci_machine).differences_from(Some(&on));
            assert!(d.comparable(), "{}: {d:?}", file.display());
        }
    }

    #[rstest]
    #[case::insta(
        "---\nsource: tests/suites.rs\nexpression: text\n---\nbody\nmore\n",
        "body\nmore"
    )]
    #[case::crlf("---\r\nsource: x\r\n---\r\nbody\r\n", "body")]
    #[case::no_header("body\n", "body")]
    #[case::unclosed_header("---\nsource: x\n", "---\nsource: x")]
    #[case::empty_body("---\nsource: x\n---\n", "")]
    fn snap_bodies(#[case] file: &str, #[case] body: &str) {
        assert_eq!(snap_body(file), body);
    }

    #[test]
    fn a_proposal_reads_back_as_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("real-lab__kvm-pv__mtu1500__game@rack.snap");
        let path = propose(&snap, "a\nb").unwrap();
        assert!(path.ends_with("real-lab__kvm-pv__mtu1500__game@rack.snap.new"));
        assert_eq!(snap_body(&std::fs::read_to_string(path).unwrap()), "a\nb");
    }
}
