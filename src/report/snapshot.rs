//! Snapshot text of a judged case, one line per fact, so a change touches
//! only its own lines: the provenance (what ran, without versions), the
//! outcome (each failed run's reason on a line of its own), and each gated
//! metric's baseline (median, 95 % interval, n). A metric whose new sample
//! is noise or an improvement against the stored baseline keeps its stored
//! line byte for byte; a regression writes the new one, for a reviewer to
//! see in `cargo insta review`. New baselines are recorded on purpose
//! (`MIGSUITE_REBASELINE=1`: every line new).

use crate::baseline::{Change, Estimate};
use crate::measure::Provenance;
use crate::metrics::Metric;
use crate::verdict::{Baseline, Verdict};

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

/// The baseline a stored snapshot holds: each metric line parsed back.
pub fn baseline(stored: &str) -> Baseline {
    stored
        .lines()
        .filter_map(|line| {
            let (metric, rest) = line.split_once(" | median ")?;
            Metric::by_label(metric)?;
            let (median, rest) = rest.split_once(CI)?;
            let (interval, n) = rest.split_once(" | n=")?;
            let (lo, hi) = interval.split_once(" .. ")?;
            let e = Estimate {
                median: number(median)?,
                lo: number(lo)?,
                hi: number(hi)?,
                n: n.trim().parse().ok()?,
            };
            Some((metric.to_string(), e))
        })
        .collect()
}

/// The snapshot text of `verdict`'s case; `stored` is the snapshot it is
/// compared with, whose lines are kept where the change is noise.
pub fn case_snapshot(verdict: &Verdict, prov: &Provenance, stored: Option<&str>) -> String {
    let mut lines = vec![
        verdict.case.clone(),
        format!("accel: {}; host: {}", prov.accel, prov.host_kind),
    ];
    lines.push(format!(
        "outcome: {}",
        if verdict.failures.is_empty() {
            "as expected"
        } else {
            "NOT as expected"
        }
    ));
    lines.extend(verdict.failures.iter().map(|f| format!("outcome: {f}")));
    for g in &verdict.gates {
        let kept = g
            .comparison
            .as_ref()
            // An improvement keeps the baseline too: a faster machine or a
            // quieter one must not fail the gate; re-record on purpose.
            .filter(|c| c.change != Change::Regression)
            .and_then(|_| {
                stored?
                    .lines()
                    .find(|l| l.starts_with(&format!("{} | median ", g.metric)))
            });
        // A regressed figure is written at the baseline's path rate, beside
        // the path rate line it was brought to.
        let new = match (&g.comparison, g.paced_to_mbit) {
            (Some(c), Some(_)) => &c.new,
            _ => &g.new,
        };
        lines.push(kept.map_or_else(|| estimate_line(g.metric, new, g.unit), str::to_string));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{case, provenance, run};
    use crate::verdict::judge;
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

    fn snapshot(scale: f64, stored: Option<&str>) -> String {
        let c = case();
        let verdict = judge(&c, &runs(scale), &stored.map(baseline).unwrap_or_default());
        case_snapshot(&verdict, &provenance(), stored)
    }

    #[test]
    fn one_line_per_metric_and_the_baseline_reads_back() {
        let text = snapshot(1.0, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ci::kvm-fv::mtu128::game");
        assert_eq!(lines[2], "outcome: as expected");
        assert!(
            lines.contains(&"total time | median 2010.0 ms | 95% CI 1980.0 ms .. 2050.0 ms | n=5"),
            "{text}"
        );
        let b = baseline(&text);
        assert_eq!(b["total time"].median, 2010.0);
        assert_eq!(b["stream throughput"].n, 5);
    }

    #[test]
    fn noise_keeps_the_stored_lines_byte_for_byte() {
        let stored = snapshot(1.0, None);
        assert_eq!(snapshot(1.02, Some(&stored)), stored);
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
                .any(|l| l.starts_with("total time | median 2613.0 ms")),
            "{new}"
        );
        assert!(
            changed
                .iter()
                .any(|l| l.starts_with("stream throughput | median 692.3 Mbit/s")),
            "{new}"
        );
        assert!(
            changed.iter().all(|l| !l.starts_with("downtime")),
            "{changed:?}"
        );
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
}
