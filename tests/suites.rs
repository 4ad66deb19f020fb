//! The suites as cargo tests: every case of every file under `suites/` is a
//! test named `suite::hypervisor::mtuN::workload`, and every suite has a
//! `suite::table` test for its result table. Cases run for real on the
//! local lab, one at a time (runner::exclusive), each at most once per
//! process: a table test reuses the runs of its cases.
//!
//! Cases the lab refuses, and cases of `tier: lab` suites its inventory
//! does not name in its `gate`, are ignored (listed; run them with
//! `--include-ignored`, where a refused case fails with the reason). The
//! `lab::gate` test fails when that leaves no case to run: `cargo test`
//! does not pass having measured nothing.

use libtest_mimic::{Arguments, Failed, Trial};
use migsuite::case::Case;
use migsuite::inventory::Inventory;
use migsuite::report::json::{CaseReport, RunReport};
use migsuite::report::{case_snapshot, case_table, suite_tables, write_report};
use migsuite::runner;
use migsuite::session::Session;
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
    // MIGSUITE_REPEAT: runs per case instead of the suites' `repeat`.
    let repeat = migsuite::suite::repeat_override(None).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let cases = migsuite::suite::with_repeat(cases, repeat);
    // MIGSUITE_LAB names the lab's inventory; without it, the built-in pair.
    let lab = Inventory::from_env(&migsuite::backend::catalog())
        .and_then(|lab| lab.check_gate(&cases).map(|()| lab))
        .unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
    let session: &'static Session =
        Box::leak(Box::new(Session::new(root().join("snapshots"), lab)));
    let mut trials: Vec<Trial> = cases
        .iter()
        .cloned()
        .map(|case| case_trial(session, case))
        .collect();
    let mut suites: Vec<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
    suites.dedup();
    for suite in suites {
        let of_suite: Vec<Case> = cases.iter().filter(|c| c.suite == suite).cloned().collect();
        trials.push(table_trial(session, of_suite));
    }
    trials.push(gate_trial(session, cases));
    libtest_mimic::run(&args, trials).exit();
}

/// The cases plain `cargo test` leaves out on the lab (`runner::left_out`):
/// refused ones say why when run with --include-ignored.
fn ignored(session: &Session, case: &Case) -> bool {
    runner::left_out(case, &session.lab).is_some()
}

/// `lab::gate`: fails, saying why each suite's cases were left out, when
/// the lab would run none of them. It only reads the cases and the
/// inventory.
fn gate_trial(session: &'static Session, cases: Vec<Case>) -> Trial {
    Trial::test("lab::gate", move || {
        runner::measures_nothing(&cases, &session.lab).map_or(Ok(()), |why| Err(why.into()))
    })
}

/// A case: its verdict (expectation, bounds, change against the baseline),
/// then its snapshot.
fn case_trial(session: &'static Session, case: Case) -> Trial {
    let ignore = ignored(session, &case);
    Trial::test(case.name(), move || {
        let judged = session.judged(&case)?;
        let (result, verdict) = (&judged.result, &judged.verdict);
        eprintln!(
            "{}\n{verdict}",
            case_table(
                &case,
                &result.provenance,
                &result.runs,
                verdict.since_baseline.as_ref()
            )
        );
        // MIGSUITE_REBASELINE=1: the new runs become the baseline.
        let rebaseline = std::env::var_os("MIGSUITE_REBASELINE").is_some_and(|v| v == "1");
        let stored = judged.stored.as_deref().filter(|_| !rebaseline);
        if let Some(run) = nextest_run() {
            write_case_report(&case, &judged, &run)?;
        }
        // A failed case whose snapshot changed (a regression, a baseline of
        // another machine) names both: why, and the proposed snapshot.
        let text = case_snapshot(verdict, &result.provenance, stored);
        match (
            verdict.passed,
            assert_snapshot(&session.snapshot_name(&case), text),
        ) {
            (true, snapshot) => snapshot,
            (false, Ok(())) => Err(verdict.to_string().into()),
            (false, Err(changed)) => {
                Err(format!("{verdict}\n{}", changed.message().unwrap_or_default()).into())
            }
        }
    })
    .with_ignored_flag(ignore)
}

/// A suite's table, JSON report and HTML page, from its cases' runs and
/// verdicts.
fn table_trial(session: &'static Session, cases: Vec<Case>) -> Trial {
    let suite = cases[0].suite.clone();
    let ignore = cases.iter().all(|c| ignored(session, c));
    Trial::test(format!("{suite}::table"), move || {
        if let Some(run) = nextest_run() {
            eprintln!(
                "under nextest each case runs in a process of its own, so this one would run them \
                 again: the cases wrote their reports to {}; merge them with `cargo run -- merge {}`",
                nextest_dir(&run).display(),
                nextest_dir(&run).display()
            );
            return Ok(());
        }
        // The suite's cases that ran: a lab-tier suite's only with
        // --include-ignored or in the lab's gate (its table is ignored like
        // them otherwise).
        let outcome = session.suite_outcome(&suite, &cases, std::time::SystemTime::now());
        if let Some((case, why)) = outcome.errors.first() {
            return Err(format!("{case}: {why}").into());
        }
        if outcome.results.is_empty() {
            return Ok(());
        }
        for table in suite_tables(&suite, &outcome.results) {
            eprintln!("{table}");
        }
        let (json, page) = write_report(&outcome.report, Path::new("target/migsuite/reports"))
            .map_err(|e| format!("{e:#}"))?;
        eprintln!("report: {}", json.display());
        let page = page.map_err(|e| format!("{e:#}"))?;
        eprintln!("html report: {}", page.display());
        Ok(())
    })
    .with_ignored_flag(ignore)
}

/// The id of the nextest run this process is a test of, if it is one.
fn nextest_run() -> Option<String> {
    std::env::var("NEXTEST_RUN_ID").ok()
}

/// Where the cases of nextest run `run` leave their reports.
fn nextest_dir(run: &str) -> std::path::PathBuf {
    Path::new("target/migsuite/reports").join(format!("nextest-{run}"))
}

/// A case's report on its own, for `migsuite merge` to join with the
/// others of its nextest run (and of the run's other partitions).
fn write_case_report(
    case: &Case,
    judged: &migsuite::session::Judged,
    run: &str,
) -> Result<(), Failed> {
    let mut report = RunReport::new(&case.suite, std::time::SystemTime::now());
    report.cases.push(CaseReport::new(
        judged.result.clone(),
        judged.verdict.clone(),
    ));
    let path = nextest_dir(run).join(format!("{}.json", case.slug()));
    report.write_file(&path).map_err(|e| e.to_string())?;
    eprintln!("report: {}", path.display());
    Ok(())
}

/// Compares `text` with `snapshots/<name>.snap`: insta prints the diff; the
/// mismatch comes back as a plain failure, without a panic's backtrace.
fn assert_snapshot(name: &str, text: String) -> Result<(), Failed> {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let matched =
        settings.bind(|| std::panic::catch_unwind(|| insta::assert_snapshot!(name, text)));
    std::panic::set_hook(hook);
    matched.map_err(|_| {
        format!("snapshot {name} changed (the diff is above): review it with `cargo insta review` (cargo-insta: `cargo install cargo-insta`, done by ci/setup.sh)").into()
    })
}
