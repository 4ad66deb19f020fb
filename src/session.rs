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
use crate::runner;
use crate::verdict::{judge_stored, Verdict};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// A case measured and judged.
pub struct Judged {
    pub result: CaseResult,
    pub verdict: Verdict,
    /// The stored snapshot's body it was judged against, if any.
    pub stored: Option<String>,
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

    /// The case's snapshot: `<slug>` on the built-in pair, `<slug>@<lab>`
    /// on an inventory's lab, whose figures are not the gate's.
    pub fn snapshot_name(&self, case: &Case) -> String {
        match self.lab.snapshot_suffix() {
            Some(lab) => format!("{}@{lab}", case.slug()),
            None => case.slug(),
        }
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
            let stored = std::fs::read_to_string(self.snapshot_path(case))
                .ok()
                .map(|t| snap_body(&t).to_string());
            let verdict = judge_stored(
                case,
                &result.runs,
                &RecordedOn::of(&result.provenance),
                stored.as_deref().map(snapshot::stored).as_ref(),
            )
            .measured_beside(result.provenance.beside.clone());
            Ok(Arc::new(Judged {
                result,
                verdict,
                stored,
            }))
        })
        .clone()
    }
}
