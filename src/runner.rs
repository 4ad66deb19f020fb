//! Runs one case: lab up, guest provisioned, steady state, warned failure,
//! evacuation, settling, teardown; repeated as the suite says. Produces
//! measurements only; judging and reporting happen downstream.

use crate::backend::{self, Backend};
use crate::case::Case;
use crate::failure::FailureMonitor;
use crate::lab::network::{GUEST_ADDR, PREFIX_LEN, RUNNER_ADDR};
use crate::lab::{self, Lab};
use crate::measure::{CaseResult, Outcome, Provenance, RunMeasurement, Timeline};
use crate::observer::{longest_gap_ms, Observer};
use crate::sampler::Sampler;
use crate::wire;
use anyhow::{Context, Result};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Agent boot under TCG takes ~10 s; leave room for a loaded machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const WARNING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may stay silent after it resumed, on either host.
const RESUME_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a case could not be measured at all (as opposed to a measured
/// migration that failed, which is a verdict).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0:#}")]
    Lab(#[from] anyhow::Error),
}

/// Measured cases never overlap: one lab at a time per machine, whatever
/// the number of test threads or processes.
pub struct Exclusive {
    _thread: MutexGuard<'static, ()>,
    _file: std::fs::File,
}

pub fn exclusive() -> Result<Exclusive> {
    static LOCK: Mutex<()> = Mutex::new(());
    let thread = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    std::fs::create_dir_all(lab::cleanup::LAB_ROOT)?;
    let file = std::fs::File::create(format!("{}/.lock", lab::cleanup::LAB_ROOT))?;
    file.lock().context("locking the lab")?;
    Ok(Exclusive { _thread: thread, _file: file })
}

pub fn run_case(case: &Case, progress: &dyn Fn(&str)) -> Result<CaseResult, RunError> {
    let _exclusive = exclusive()?;
    let mut runs = Vec::new();
    let mut provenance = Provenance::default();
    if let Some(why) = backend::refusal(case.hypervisor) {
        return Err(RunError::Refused(why));
    }
    for i in 1..=case.repeat {
        progress(&format!("{}: run {i}/{}", case.name(), case.repeat));
        let mut backend = backend::for_hypervisor(case).map_err(|e| RunError::Lab(anyhow::anyhow!(e)))?;
        let (run, prov) = run_once(case, i, backend.as_mut(), progress)?;
        progress(&format!("{}: run {i}: {}", case.name(), summary_line(&run)));
        runs.push(run);
        provenance = prov;
    }
    Ok(CaseResult { case: case.clone(), provenance, runs })
}

fn summary_line(run: &RunMeasurement) -> String {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0} ms"));
    match &run.outcome {
        Outcome::Completed => format!(
            "total {}, downtime {} (guest saw {})",
            ms(run.total_time_ms),
            ms(run.reported_downtime_ms),
            ms(run.guest_downtime_ms)
        ),
        Outcome::Failed { reason, source_survived } => {
            format!("FAILED: {reason} (source guest {})", if *source_survived { "still running" } else { "lost" })
        }
    }
}

fn agent_args(case: &Case) -> String {
    let w = &case.workload;
    format!(
        "migsuite.ip={GUEST_ADDR}/{PREFIX_LEN} migsuite.observer={RUNNER_ADDR}:{} migsuite.mtu={} \
         migsuite.dirty_mib={} migsuite.dirty_rate={} migsuite.pkt_size={} migsuite.pkt_rate={}",
        wire::OBSERVER_PORT,
        case.link.mtu,
        w.dirty_mib,
        w.dirty_rate_mib_s,
        w.packet_size.payload(case.link.mtu),
        w.packet_rate_pps,
    )
}

/// Where the lab's logs of a run are kept: `target/migsuite/logs/<case>/run<i>`.
pub fn logs_dir(case: &Case, run_index: u32) -> std::path::PathBuf {
    std::path::PathBuf::from("target/migsuite/logs").join(case.slug()).join(format!("run{run_index}"))
}

/// One run in a fresh lab, whose logs are kept whatever the run's end.
fn run_once(case: &Case, run_index: u32, backend: &mut dyn Backend, progress: &dyn Fn(&str)) -> Result<(RunMeasurement, Provenance)> {
    let lab = Lab::start(&case.link)?;
    let result = run_in(&lab, case, backend, progress);
    let logs = logs_dir(case, run_index);
    match lab.save_logs(&logs) {
        Ok(()) => progress(&format!("{}: logs in {}", case.name(), logs.display())),
        Err(e) => progress(&format!("{}: cannot save the lab's logs to {}: {e:#}", case.name(), logs.display())),
    }
    result
}

fn run_in(lab: &Lab, case: &Case, backend: &mut dyn Backend, progress: &dyn Fn(&str)) -> Result<(RunMeasurement, Provenance)> {
    let observer = Observer::start(lab)?;
    backend.provision(lab, case, &agent_args(case))?;
    let hello = observer.wait_hello(BOOT_TIMEOUT, &lab.shared_dir().join("console.log"))?;
    backend.check_guest(&hello)?;
    let info = backend.info().clone();
    progress(&format!("{}: guest up ({}, {}); steady state for {} ms", case.name(), info.accel, info.hypervisor_version, case.failure.after_ms));

    let monitor = FailureMonitor::start(lab)?;
    let sampling_from = Instant::now();
    let sampler = Sampler::start(Duration::from_millis(case.sampling.interval_ms), backend.process_probe(lab));
    std::thread::sleep(Duration::from_millis(case.failure.after_ms));
    monitor.inject();
    let t0 = monitor.wait_warning(WARNING_TIMEOUT)?;
    progress(&format!("{}: source host warned it is going down; evacuating", case.name()));

    let evacuation = backend.evacuate(lab, case, progress);
    let mut outcome = evacuation.outcome;
    let ended = Instant::now();
    // The guest must be heard again: from the destination after a
    // migration, from the source after a failed one.
    let heard_again = observer.heartbeat_after(ended, RESUME_HEARTBEAT_TIMEOUT);
    match &mut outcome {
        Outcome::Failed { source_survived, .. } => *source_survived &= heard_again,
        Outcome::Completed if !heard_again => {
            outcome = Outcome::Failed { reason: "the guest was not heard from after the migration".into(), source_survived: false }
        }
        Outcome::Completed => {}
    }
    std::thread::sleep(Duration::from_millis(case.sampling.settle_ms));
    let timelines = sampler.finish(t0);
    let beats = observer.heartbeats();
    if let (Outcome::Completed, Some((_, last))) = (&outcome, beats.last()) {
        if last.memory_errors > 0 {
            outcome = Outcome::Failed {
                reason: format!("the guest found {} pages not holding what it wrote", last.memory_errors),
                source_survived: false,
            };
        }
    }
    let provenance = Provenance {
        accel: info.accel,
        host_kind: format!("local lab: 2 network-namespace hosts on one machine ({} CPUs)", num_cpus()),
        host_kernel: crate::sh::kernel_release(),
        hypervisor_version: info.hypervisor_version,
        toolstack_version: info.toolstack_version,
        guest_kernel: hello.get("kernel").cloned().unwrap_or_default(),
        migsuite_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let peak = |prefix: &str, timelines: &[Timeline]| -> Option<f64> {
        timelines
            .iter()
            .filter(|t| t.name.starts_with(prefix) && t.name.ends_with(".hypervisor"))
            .flat_map(|t| t.points.iter().filter(|(ms, _)| *ms >= 0).map(|(_, v)| *v))
            .reduce(f64::max)
    };
    let completed = matches!(outcome, Outcome::Completed);
    let run = RunMeasurement {
        total_time_ms: evacuation.completed_at.filter(|_| completed).map(|t| (t - t0).as_secs_f64() * 1000.0),
        reported_total_ms: evacuation.reported_total_ms,
        reported_downtime_ms: evacuation.reported_downtime_ms,
        guest_downtime_ms: longest_gap_ms(&beats, t0, Instant::now()),
        baseline_gap_ms: longest_gap_ms(&beats, sampling_from, t0),
        setup_time_ms: evacuation.setup_time_ms,
        bytes_transferred: evacuation.bytes_transferred,
        memory_iterations: evacuation.memory_iterations,
        peak_cpu_pct: peak("cpu.", &timelines),
        peak_memory_mib: peak("memory.", &timelines),
        outcome,
        timelines,
    };
    Ok((run, provenance))
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
