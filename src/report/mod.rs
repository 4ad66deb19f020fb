//! Reports of measured cases: plain-text tables, noise-tolerant snapshot
//! text, the JSON record of a whole run, and the HTML page drawn from it.
//! What a suite's run leaves (`suite_tables`, `write_report`) is the same
//! from `migsuite run` and from `cargo test`.

pub mod conclusions;
pub mod figures;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod gate_figures;
pub mod html;
pub mod json;
pub mod results;
pub mod snapshot;
pub mod study;
pub mod table;

pub use json::{CaseReport, RunReport};
pub use results::{case_table, suite_table};
pub use snapshot::{case_snapshot, snap_body, stored};
pub use study::study_table;
pub use table::{Cell, Table};

use crate::case::Expect;
use crate::measure::CaseResult;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The tables shown after a suite's cases: the suite's, of the cases
/// expected to migrate (the others are there to fail), as its page shows
/// them, and the study's where the suite reproduces it.
pub fn suite_tables(suite: &str, results: &[CaseResult]) -> Vec<Table> {
    let expected_to_pass = expected_to_pass(results);
    if expected_to_pass.is_empty() {
        return vec![];
    }
    let mut tables = vec![suite_table(suite, &expected_to_pass)];
    tables.extend(study_table(&expected_to_pass));
    tables
}

/// The cases a suite's figures are of: those expected to migrate.
pub fn expected_to_pass(results: &[CaseResult]) -> Vec<CaseResult> {
    results
        .iter()
        .filter(|r| r.case.expect == Expect::Pass)
        .cloned()
        .collect()
}

/// Writes `report` to `dir`, then its HTML page beside it: where the
/// report went, and where the page went or why it could not be drawn.
pub fn write_report(
    report: &RunReport,
    dir: &Path,
) -> anyhow::Result<(PathBuf, anyhow::Result<PathBuf>)> {
    let json = report
        .write(dir)
        .with_context(|| format!("cannot write the report to {}", dir.display()))?;
    let page = html::html_path(&json);
    let drawn = html::write(&json, &page)
        .with_context(|| format!("cannot write the HTML page {}", page.display()))
        .map(|()| page);
    Ok((json, drawn))
}
