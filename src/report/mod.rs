//! Reports of measured cases: plain-text tables, noise-tolerant snapshot
//! text, the JSON record of a whole run, and the HTML page drawn from it.

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
