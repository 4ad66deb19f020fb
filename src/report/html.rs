//! The HTML report of a run: one self-contained page (inline CSS and SVG,
//! no scripts, no outside links) drawn from the run's JSON report. Every
//! text that comes from the report is escaped.

use super::conclusions::conclusions_table;
use super::figures::{case_figure, suite_figure};
use super::gate_figures::{baseline_figure, progress_figure, variant_figure};
use super::json::{SavedCase, SavedRun};
use super::results::{landmark_table, migration_table, provenance_table, suite_table};
use super::study::{study_landmarks_table, study_table};
use super::table::{Cell, Table};
use crate::case::Topology;
use crate::markup::escape;
use crate::measure::CaseResult;
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The suite whose report compares with the study.
const STUDY_SUITE: &str = "study";

const STYLE: &str = "
body { font-family: sans-serif; margin: 2em auto; padding: 0 1em; max-width: 1100px; color: #222; }
h1, h2, h3 { font-weight: 600; }
section.case { border-top: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
h4 { margin: 1em 0 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; white-space: pre-line; }
th { background: #f0f0f0; }
td.num { text-align: right; white-space: nowrap; }
p.note { margin: 0.2em 0; color: #555; font-size: 0.9em; }
.passed { color: #1a7f37; }
.failed { color: #b42318; }
figure { margin: 1em 0; }
figure svg { max-width: 100%; height: auto; }
div.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(22em, 1fr)); gap: 0 1em; }
div.figures figure { margin: 0.3em 0; }
div.wide { overflow-x: auto; }
td { overflow-wrap: break-word; }
";

/// Where the HTML report of a JSON report goes: beside it, same stem.
pub fn html_path(json: &Path) -> PathBuf {
    json.with_extension("html")
}

/// Reads the JSON report at `json` and writes its HTML report to `html`.
pub fn write(json: &Path, html: &Path) -> Result<()> {
    let page = render(&SavedRun::read(json)?)?;
    std::fs::write(html, page).with_context(|| format!("cannot write {}", html.display()))
}

/// The page of a run.
pub fn render(run: &SavedRun) -> Result<String> {
    let results: Vec<CaseResult> = run.cases.iter().map(|c| c.result.clone()).collect();
    let expected_to_pass = super::expected_to_pass(&results);
    let passed = run.cases.iter().filter(|c| c.verdict.passed).count();
    let title = format!("migsuite: suite {}", run.suite);

    let mut body = String::new();
    writeln!(body, "<h1>{}</h1>", escape(&title))?;
    writeln!(
        body,
        "<p>started {}; {} cases, {passed} passed, {} failed</p>",
        escape(&run.started_at),
        run.cases.len(),
        run.cases.len() - passed
    )?;
    body.push_str("<nav><ul>\n");
    for c in &run.cases {
        writeln!(
            body,
            "<li><a href=\"#{}\">{}</a> <span class=\"{}\">{}</span></li>",
            escape(&c.result.case.slug()),
            escape(&c.result.case.name()),
            verdict_class(c),
            verdict_class(c),
        )?;
    }
    body.push_str("</ul></nav>\n");

    body.push_str("<h2>Provenance</h2>\n");
    body.push_str(&table_html(&provenance_table(&results)));

    body.push_str("<h2>Suite</h2>\n");
    if expected_to_pass.is_empty() {
        body.push_str("<p>No case of this suite is expected to migrate.</p>\n");
    } else {
        let mut suite = suite_table(&run.suite, &expected_to_pass);
        // The provenance table above holds the notes' provenance lines.
        suite.notes.clear();
        body.push_str(&table_html(&suite));
        if let Some(svg) = suite_figure(&expected_to_pass)? {
            body.push_str(&figure_html(
                &svg,
                "Median total migration time and downtime per hypervisor and MTU",
            ));
        }
    }

    if run.suite == STUDY_SUITE {
        body.push_str("<h2>The study beside this run</h2>\n");
        match study_table(&expected_to_pass) {
            Some(t) => {
                body.push_str(&table_html(&t));
                // Both tables pick their rows alike: one is there if the other is.
                if let Some(t) = study_landmarks_table(&expected_to_pass) {
                    body.push_str(&table_html(&t));
                }
            }
            None => body.push_str("<p>No case of this run stands for a row of the study.</p>\n"),
        }
        body.push_str(&table_html(&conclusions_table(&expected_to_pass)));
    }

    body.push_str("<h2>Cases</h2>\n");
    for c in &run.cases {
        body.push_str(&case_html(c)?);
    }

    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(&title)
    ))
}

fn verdict_class(c: &SavedCase) -> &'static str {
    if c.verdict.passed {
        "passed"
    } else {
        "failed"
    }
}

/// One case: its verdict, its figure, its landmarks and migration figures.
fn case_html(c: &SavedCase) -> Result<String> {
    let r = &c.result;
    let mut out = String::new();
    writeln!(
        out,
        "<section class=\"case\" id=\"{}\">\n<h3>{}</h3>",
        escape(&r.case.slug()),
        escape(&r.case.name())
    )?;
    writeln!(
        out,
        "<p class=\"{0}\">{0}</p>\n<p class=\"note\">judged by: {1}</p>",
        verdict_class(c),
        escape(&c.verdict.expectation)
    )?;
    writeln!(
        out,
        "<p class=\"note\">beside it on the machine: {}</p>",
        escape(&r.provenance.beside.to_string())
    )?;
    writeln!(
        out,
        "<p class=\"note\">migrated by {} ({})</p>",
        r.case.migration.strategy,
        match r.case.migration.topology {
            Topology::TwoHosts =>
                "two hosts: from the source lab host to the destination over the migration link",
            Topology::OneHost =>
                "one host: both ends on the source lab host, as the study ran them",
        }
    )?;
    if !c.verdict.failures.is_empty() {
        out.push_str("<ul>\n");
        for f in &c.verdict.failures {
            writeln!(out, "<li>{}</li>", escape(f))?;
        }
        out.push_str("</ul>\n");
    }
    match case_figure(r)? {
        Some(svg) => out.push_str(&figure_html(
            &svg,
            "CPU and memory of the hypervisor on the source and destination hosts",
        )),
        None => out.push_str("<p>No run was sampled: nothing to draw.</p>\n"),
    }
    if let Some(svg) = progress_figure(r)? {
        out.push_str(&figure_html(
            &svg,
            "Memory left to send over time: the toolstack's progress reports of each run",
        ));
    }
    out.push_str(&gate_html(c)?);
    let landmarks = landmark_table(&r.case, &r.provenance, &r.runs);
    // No completed run (or nothing but zeros): nothing to tabulate.
    if !landmarks.rows.is_empty() {
        out.push_str(&table_html(&landmarks));
    }
    out.push_str(&table_html(&migration_table(&r.case, &r.runs)));
    out.push_str("</section>\n");
    Ok(out)
}

/// What the gate compared: each variant against the reference, each gated
/// metric against the stored baseline, a figure each.
fn gate_html(c: &SavedCase) -> Result<String> {
    let v = &c.verdict;
    let mut out = String::new();
    if !v.variant_comparisons.is_empty() {
        out.push_str("<h4>Variants against the reference, interleaved in this run</h4>\n");
        out.push_str("<div class=\"figures\">\n");
        for g in &v.variant_comparisons {
            match variant_figure(g)? {
                Some(svg) => out.push_str(&format!("<figure>\n{svg}\n</figure>\n")),
                None => writeln!(out, "<p>{}</p>", escape(&g.not_compared()))?,
            }
        }
        out.push_str("</div>\n");
    }
    if !v.gates.is_empty() {
        out.push_str("<h4>Against the stored baseline</h4>\n");
        let figures: Vec<String> = v
            .gates
            .iter()
            .filter_map(|g| baseline_figure(g).transpose())
            .collect::<Result<_>>()?;
        if !figures.is_empty() {
            out.push_str("<div class=\"figures\">\n");
            for svg in figures {
                out.push_str(&format!("<figure>\n{svg}\n</figure>\n"));
            }
            out.push_str("</div>\n");
        }
        // One reason shared by every gate is said once.
        let reasons: Vec<_> = v.gates.iter().map(|g| g.not_compared).collect();
        match reasons.first() {
            Some(Some(why)) if reasons.iter().all(|r| r == &Some(*why)) => writeln!(
                out,
                "<p class=\"note\">Nothing compared: {}.</p>",
                escape(&why.to_string())
            )?,
            _ => {
                for (g, why) in v.gates.iter().zip(reasons) {
                    if let Some(why) = why {
                        writeln!(
                            out,
                            "<p class=\"note\">{} not compared: {}.</p>",
                            escape(g.metric.label()),
                            escape(&why.to_string())
                        )?;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// An SVG figure (made by `figures`, its text already escaped) with a caption.
fn figure_html(svg: &str, caption: &str) -> String {
    format!(
        "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
        escape(caption)
    )
}

/// A table under its title and notes.
fn table_html(t: &Table) -> String {
    let mut out = format!("<h4>{}</h4>\n", escape(&t.title));
    for note in &t.notes {
        out.push_str(&format!("<p class=\"note\">{}</p>\n", escape(note)));
    }
    out.push_str("<div class=\"wide\">\n<table>\n<tr>");
    for h in &t.headers {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr>\n");
    let numeric: Vec<bool> = (0..t.headers.len()).map(|c| t.numeric(c)).collect();
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let text = match cell {
                Cell::Text(s) => s.clone(),
                other => other.render(),
            };
            let class = if numeric.get(i) == Some(&true) {
                " class=\"num\""
            } else {
                ""
            };
            out.push_str(&format!("<td{class}>{}</td>", escape(&text)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n</div>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::{case, provenance, run};
    use crate::report::json::SavedVerdict;

    fn saved(suite: &str, workload: &str) -> SavedRun {
        let mut case = case();
        case.suite = suite.into();
        case.workload.name = workload.into();
        SavedRun {
            suite: suite.into(),
            started_at: "2026-11-27T12:00:00Z".into(),
            cases: vec![SavedCase {
                result: CaseResult {
                    case,
                    provenance: provenance(),
                    calibration: Default::default(),
                    held_unix_ms: None,
                    runs: vec![run(2000.0, 100.0), run(2200.0, 120.0)],
                },
                verdict: SavedVerdict {
                    passed: false,
                    expectation: "bounds on worst of 2 runs".into(),
                    failures: vec!["run 2: <script>".into()],
                    gates: vec![],
                    variant_comparisons: vec![],
                },
            }],
        }
    }

    #[test]
    fn a_page_with_every_part_and_nothing_unescaped() {
        let page = render(&saved("ci", "<game>")).unwrap();
        for part in [
            "<h2>Provenance</h2>",
            "<h2>Suite</h2>",
            "<h2>Cases</h2>",
            "ci::kvm-fv::mtu128::&lt;game&gt;",
            "<li>run 2: &lt;script&gt;</li>",
            "<p class=\"failed\">failed</p>",
            "cpu.source.hypervisor",
        ] {
            assert!(page.contains(part), "{part} missing");
        }
        // The suite figure and the case figure.
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(!page.contains("<game>"));
        assert!(!page.contains("<script"));
        // No link out: the only URLs are the SVG namespace.
        assert_eq!(
            page.matches("://").count(),
            page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert!(!page.contains("The study beside this run"));
    }

    #[test]
    fn a_real_report_becomes_a_page_beside_it() {
        // Two cases of a ci run, trimmed to two runs and the hosts' timelines.
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ci-report-two-cases.json");
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("ci-1795783253.json");
        std::fs::copy(&fixture, &json).unwrap();
        let page_path = html_path(&json);
        assert_eq!(page_path, dir.path().join("ci-1795783253.html"));
        write(&json, &page_path).unwrap();

        let page = std::fs::read_to_string(&page_path).unwrap();
        assert_eq!(
            page.matches("<svg").count(),
            4,
            "suite, two cases, and the progress of the one whose toolstack reports it (KVM's)"
        );
        assert!(page.contains("memory left to send, each run"));
        for mark in [
            "warning",
            "transfer starts",
            "switch-over",
            "resumed",
            "settled",
        ] {
            assert!(page.contains(&format!("\n{mark}\n</text>")), "{mark}");
        }
        assert!(page.contains("<td>CRIU 4.2.1"));
        assert!(page.contains("<h4>ci::kvm-fv::mtu128::game landmarks</h4>"));
    }

    #[test]
    fn an_unreadable_report_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("not-a-report.json");
        std::fs::write(&json, "{\"suite\": 1}").unwrap();
        let e = write(&json, &html_path(&json)).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a migsuite run report"),
            "{e:#}"
        );
    }

    #[test]
    fn the_study_suite_compares_with_the_study() {
        let mut study = saved("study", "game");
        study.cases[0].result.case.link.mtu = 1500;
        let page = render(&study).unwrap();
        assert!(page.contains("<h2>The study beside this run</h2>"));
        assert!(page.contains("Tab. 28"), "the published KVM-FV row");
        assert!(page.contains("the study&#39;s conclusions, checked against this run"));
    }
}
