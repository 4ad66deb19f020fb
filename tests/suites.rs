//! The suites as cargo tests: every case of every file under `suites/` is a
//! test named `suite::hypervisor::mtuN::workload`, and every suite has a
//! `suite::table` test for its result table. Cases run for real on the
//! local lab, one at a time (runner::exclusive), each at most once per
//! process: a table test reuses the runs of its cases.
//!
//! Cases of `tier: lab` suites and of hypervisors this build cannot run are
//! ignored (listed; run them with `--include-ignored`, where a refused
//! hypervisor fails with the reason).

use libtest_mimic::{Arguments, Failed, Trial};
use migsuite::backend;
use migsuite::case::{Case, Expect, Tier, Tolerance};
use migsuite::report::json::{CaseReport, RunReport};
use migsuite::report::snapshot::{gated, snap_body, stabilise, without_versions};
use migsuite::report::table::Table;
use migsuite::report::{case_table, suite_table};
use migsuite::session::Session;
use migsuite::verdict::judge;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    let args = Arguments::from_args();
    let cases = migsuite::suite::load_dir(&root().join("suites")).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let session: &'static Session = Box::leak(Box::default());
    let mut trials: Vec<Trial> = cases.iter().cloned().map(|case| case_trial(session, case)).collect();
    let mut suites: Vec<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
    suites.dedup();
    for suite in suites {
        let of_suite: Vec<Case> = cases.iter().filter(|c| c.suite == suite).cloned().collect();
        trials.push(table_trial(session, of_suite));
    }
    libtest_mimic::run(&args, trials).exit();
}

fn ignored(case: &Case) -> bool {
    case.tier == Tier::Lab || backend::refusal(case.hypervisor).is_some()
}

fn case_trial(session: &'static Session, case: Case) -> Trial {
    let ignore = ignored(&case);
    Trial::test(case.name(), move || {
        let result = session.measure(&case)?;
        let verdict = judge(&case, &result.runs);
        let table = case_table(&case, &result.provenance, &result.runs);
        eprintln!("{table}\n{verdict}");
        if !verdict.passed {
            return Err(verdict.to_string().into());
        }
        // A failure case is judged by its verdict; its table has no figures.
        if case.expect == Expect::Pass {
            assert_snapshot(&case.slug(), gated(table), &case.tolerance)?;
        }
        Ok(())
    })
    .with_ignored_flag(ignore)
}

fn table_trial(session: &'static Session, cases: Vec<Case>) -> Trial {
    let suite = cases[0].suite.clone();
    let ignore = cases.iter().all(ignored);
    Trial::test(format!("{suite}::table"), move || {
        let mut report = RunReport::new(&suite, std::time::SystemTime::now());
        let mut results = Vec::new();
        for case in cases.iter().filter(|c| c.expect == Expect::Pass && !ignored(c)) {
            let result = session.measure(case)?;
            report.cases.push(CaseReport::new(result.clone()));
            results.push(result);
        }
        if results.is_empty() {
            return Ok(()); // a suite of failure cases only: nothing to tabulate
        }
        let table = suite_table(&suite, &results);
        eprintln!("{table}");
        let path = report.write(Path::new("target/migsuite/reports")).map_err(|e| e.to_string())?;
        eprintln!("report: {}", path.display());
        assert_snapshot(&format!("{suite}__table"), without_versions(table), &cases[0].tolerance)
    })
    .with_ignored_flag(ignore)
}

/// Compares with `snapshots/<name>.snap`, keeping stored values that the new
/// run reproduced within tolerance, so only real changes make a diff.
fn assert_snapshot(name: &str, table: Table, tolerance: &Tolerance) -> Result<(), Failed> {
    let dir = root().join("snapshots");
    let stored = std::fs::read_to_string(dir.join(format!("{name}.snap"))).ok();
    let text = stabilise(&table, stored.as_deref().map(snap_body), tolerance);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let matched = settings.bind(|| std::panic::catch_unwind(|| insta::assert_snapshot!(name, text)));
    matched.map_err(|_| format!("the {name} table changed beyond tolerance: review with `cargo insta review`").into())
}
