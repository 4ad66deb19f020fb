//! A session measures cases on demand, each at most once per process, and
//! prints progress. The command line and the cargo test harness both drive
//! their cases through it, so a suite table can reuse the cases' runs.

use crate::case::Case;
use crate::measure::CaseResult;
use crate::runner;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

type Slot = Arc<OnceLock<Result<CaseResult, String>>>;

pub struct Session {
    started: Instant,
    results: Mutex<HashMap<String, Slot>>,
}

impl Default for Session {
    fn default() -> Self {
        Session { started: Instant::now(), results: Mutex::new(HashMap::new()) }
    }
}

impl Session {
    pub fn progress(&self, message: &str) {
        eprintln!("[{:7.1}s] {message}", self.started.elapsed().as_secs_f64());
    }

    /// The case's measurements, running it if this session has not yet.
    /// Err: the case could not be measured (refused hypervisor, broken lab).
    pub fn measure(&self, case: &Case) -> Result<CaseResult, String> {
        let slot = self.results.lock().unwrap().entry(case.name()).or_default().clone();
        slot.get_or_init(|| runner::run_case(case, &|m| self.progress(m)).map_err(|e| e.to_string())).clone()
    }
}
