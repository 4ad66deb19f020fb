//! A session measures and judges cases on demand, each at most once per
//! process, and prints progress. The command line and the cargo test
//! harness both drive their cases through it, so a suite table reuses the
//! cases' runs and verdicts. The verdict is made once, here, against the
//! baseline stored in the case's snapshot, if that was recorded on the
//! machine the case ran on.

use crate::case::Case;
use crate::inventory::Inventory;
use crate::measure::CaseResult;
use crate::recorded_on::RecordedOn;
use crate::report::snapshot::{self, snap_body};
use crate::report::{CaseReport, RunReport};
use crate::runner;
use crate::verdict::{judge_stored, Verdict};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

/// A case's snapshot: `<slug>` on the built-in pair, `<slug>@<lab>` on
/// the lab of an inventory (`lab`: its name), whose figures are not the
/// gate's.
pub fn snapshot_name(case: &Case, lab: Option<&str>) -> String {
    match lab {
        Some(lab) => format!("{}@{lab}", case.slug()),
        None => case.slug(),
    }
}

/// `result` judged: its runs against its case's bounds and against the
/// baseline stored in `snapshot` (a `.snap` file), if there is one and it
/// was recorded on what `result` ran on.
pub fn judge_against(result: CaseResult, snapshot: &Path) -> Judged {
    let stored = std::fs::read_to_string(snapshot)
        .ok()
        .map(|t| snap_body(&t).to_string());
    let verdict = judge_stored(
        &result.case,
        &result.runs,
        &RecordedOn::of(&result.provenance),
        stored.as_deref().map(snapshot::stored).as_ref(),
    )
    .measured_beside(result.provenance.beside.clone());
    Judged {
        result,
        verdict,
        stored,
    }
}

/// A case measured and judged.
pub struct Judged {
    pub result: CaseResult,
    pub verdict: Verdict,
    /// The stored snapshot's body it was judged against, if any.
    pub stored: Option<String>,
}

/// What a suite's cases came to in a session: the report of those that
/// were measured, and how many passed, failed (their verdict, or an error:
/// `errors`) or were refused by the lab.
pub struct SuiteOutcome {
    pub report: RunReport,
    pub results: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
    pub refused: usize,
    /// The cases that could not be measured, and why.
    pub errors: Vec<(String, String)>,
}

type Slot = Arc<OnceLock<Result<Arc<Judged>, String>>>;

pub struct Session {
    started: Instant,
    snapshots: PathBuf,
    /// The lab every case runs on.
    pub lab: Inventory,
    results: Mutex<HashMap<String, Slot>>,
}

impl Session {
    /// Cases run on `lab`; baselines are read from `<snapshots>/<name>.snap`
    /// (`snapshot_name`).
    pub fn new(snapshots: PathBuf, lab: Inventory) -> Session {
        Session {
            started: Instant::now(),
            snapshots,
            lab,
            results: Mutex::new(HashMap::new()),
        }
    }

    pub fn progress(&self, message: &str) {
        eprintln!("[{:7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// The case's snapshot on this session's lab (`snapshot_name`).
    pub fn snapshot_name(&self, case: &Case) -> String {
        snapshot_name(case, self.lab.snapshot_suffix())
    }

    pub fn snapshot_path(&self, case: &Case) -> PathBuf {
        self.snapshots
            .join(format!("{}.snap", self.snapshot_name(case)))
    }

    /// The case's measurements and verdict, running it if this session has
    /// not yet. Err: the case could not be measured (refused hypervisor,
    /// broken lab).
    pub fn judged(&self, case: &Case) -> Result<Arc<Judged>, String> {
        let slot = self
            .results
            .lock()
            .unwrap()
            .entry(case.name())
            .or_default()
            .clone();
        slot.get_or_init(|| {
            let result = runner::run_case(case, &self.lab, &|m| self.progress(m))
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(judge_against(result, &self.snapshot_path(case))))
        })
        .clone()
    }

    /// What `suite`'s cases among `cases` came to, in their order,
    /// measuring those this session has not yet, except those the lab
    /// refuses (`runner::refusal`).
    pub fn suite_outcome(&self, suite: &str, cases: &[Case], started: SystemTime) -> SuiteOutcome {
        let mut outcome = SuiteOutcome {
            report: RunReport::new(suite, started),
            results: Vec::new(),
            passed: 0,
            failed: 0,
            refused: 0,
            errors: Vec::new(),
        };
        for case in cases.iter().filter(|c| c.suite == suite) {
            if runner::refusal(case, &self.lab).is_some() {
                outcome.refused += 1;
                continue;
            }
            match self.judged(case) {
                Ok(judged) => {
                    if judged.verdict.passed {
                        outcome.passed += 1;
                    } else {
                        outcome.failed += 1;
                    }
                    outcome.report.cases.push(CaseReport::new(
                        judged.result.clone(),
                        judged.verdict.clone(),
                    ));
                    outcome.results.push(judged.result.clone());
                }
                Err(e) => {
                    outcome.failed += 1;
                    outcome.errors.push((case.name(), e));
                }
            }
        }
        outcome
    }
}
