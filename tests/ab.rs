//! A/B comparison end to end on the built-in pair: a case whose variants
//! are the reference, the same again and a capped stream, run by
//! `migsuite run`. The capped one must be flagged with its metric and
//! interval, the same one must not, and the case must fail for it.
//! Ignored under `MIGSUITE_LAB`: it needs the built-in pair's shaped link,
//! which a lab of the user's does not have.

mod common;

use common::browser::layout;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;
use std::path::Path;

fn main() {
    let args = Arguments::from_args();
    let on_users_lab = std::env::var_os("MIGSUITE_LAB").is_some();
    let trials = vec![Trial::test(
        "a_capped_stream_is_flagged_and_the_same_again_is_not",
        a_capped_stream_is_flagged_and_the_same_again_is_not,
    )
    .with_ignored_flag(on_users_lab)];
    libtest_mimic::run(&args, trials).exit();
}

fn a_capped_stream_is_flagged_and_the_same_again_is_not() -> Result<(), Failed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reports = tempfile::tempdir().unwrap();
    let run = duct::cmd!(
        env!("CARGO_BIN_EXE_migsuite"),
        "run",
        "--report-dir",
        reports.path(),
        root.join("tests/fixtures/ab/capped.yaml")
    )
    .dir(root)
    .stderr_to_stdout()
    .unchecked()
    .run()
    .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(!run.status.success(), "the capped variant passed:\n{said}");
    let report = std::fs::read_dir(reports.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let page = std::fs::read_to_string(report.with_extension("html")).unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let case = &report["cases"][0];
    // Interleaved: A B C, then C B A, ...
    let order: Vec<&str> = case["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert!(order.len() >= 6, "{said}");
    assert_eq!(
        order[..6],
        [
            "stock",
            "stock-again",
            "capped",
            "capped",
            "stock-again",
            "stock"
        ],
        "{said}"
    );
    let compared = |variant: &str| {
        case["verdict"]["variant_comparisons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["variant"] == variant && g["metric"] == "throughput")
            .unwrap_or_else(|| panic!("{variant} not compared:\n{said}"))["comparison"]
            .clone()
    };
    let capped = compared("capped");
    assert_eq!(capped["change"], "regression", "{capped}\n{said}");
    let (lo, hi) = (
        capped["interval_pct"][0].as_f64().unwrap(),
        capped["interval_pct"][1].as_f64().unwrap(),
    );
    assert!(hi < -5.0 && lo < hi, "{capped}");
    let again = compared("stock-again");
    assert_eq!(again["change"], "noise", "{again}\n{said}");
    // The page draws each comparison: both variants' runs, the bound.
    assert!(
        page.contains("\nstream throughput: ") && page.contains(": REGRESSION\n"),
        "the page shows no regression"
    );
    assert!(page.contains("\ncapped, ") && page.contains("worse by up to 5 %: passes"));
    let drawn = layout(&page, 1100);
    assert!(
        drawn.scroll_width <= drawn.client_width && drawn.tables_scrolling == 0,
        "{drawn:?}"
    );
    assert!(
        drawn.figures.iter().all(|(w, h)| *w > 200.0 && *h > 100.0),
        "{drawn:?}"
    );
    for line in said.lines().filter(|l| l.contains(" against stock: ")) {
        eprintln!("{line}");
    }
    Ok(())
}
