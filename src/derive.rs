//! A run's figures and outcome, worked out from what it observed
//! (`measure::Observed`): a pure function, apart from the orchestration that
//! gathers the observations (`runner`), so that it can be checked on
//! recorded runs and run again on a saved report with no lab
//! (`migsuite rejudge`).

use crate::lab::network::LINK_DEV;
use crate::measure::{
    Evacuation, NetworkSent, Observed, Outcome, Pass, ProgressSample, RunMeasurement, Timeline,
    Unit, MIB,
};

/// The least share of a migration's bytes that a real lab's source sends
/// on its migration interface: frames carry more than their payload, and
/// the interface counts others' traffic too, so only a stream that went
/// another way shows less.
const REAL_NETWORK_SHARE: f64 = 0.9;

/// The least share of a migration's bytes that a simulated link carries:
/// the veth counts every frame of the stream.
const LINK_SHARE: f64 = 0.5;

/// The timeline of the stream's rate on a simulated link, which `derive`
/// adds to the sampled ones.
pub const LINK_TIMELINE: &str = "link.source.tx";

/// The run's measurement from what it observed and the CPU and memory
/// timelines it `sampled`. The backend's outcome stands unless the
/// observations overrule it: a stream that left the migration network
/// idle went elsewhere, a guest not heard again is lost, a guest that
/// found its memory changed was not carried intact.
pub fn derive(seen: Observed, sampled: Vec<Timeline>) -> RunMeasurement {
    let evacuation = &seen.evacuation;
    let counter = seen.link_counter.as_deref();
    let link_bytes = counter
        .map(counted_bytes)
        .or(seen.network_sent.as_ref().map(|n| n.bytes));
    let outcome = judged_outcome(&seen);
    let completed = matches!(outcome, Outcome::Completed);
    let counter = counter.filter(|_| seen.crosses_link);
    let mut timelines = sampled;
    if let Some(counter) = counter {
        timelines.push(Timeline {
            name: LINK_TIMELINE.into(),
            unit: Unit::Mbit,
            points: rate_timeline(counter, seen.interval_ms),
        });
    }
    let peak = |prefix: &str| -> Option<f64> {
        timelines
            .iter()
            .filter(|t| t.name.starts_with(prefix) && t.name.ends_with(".hypervisor"))
            .flat_map(|t| t.points.iter().filter(|(ms, _)| *ms >= 0).map(|(_, v)| *v))
            .reduce(f64::max)
    };
    let throughput_mbit = match counter {
        Some(counter) => active_rate_mbit(counter),
        None => evacuation
            .bytes_transferred
            .zip(evacuation.stream_ms)
            .filter(|(_, ms)| *ms > 0.0)
            .map(|(bytes, ms)| bytes as f64 * 8.0 / ms / 1000.0),
    }
    .filter(|_| completed);
    let progress: Vec<ProgressSample> = evacuation
        .progress
        .iter()
        .map(|p| ProgressSample {
            t_ms: ms_after_warning(p.at),
            transferred_mib: p.transferred_bytes as f64 / MIB,
            remaining_mib: p.remaining_bytes as f64 / MIB,
            pass: p.pass,
            dirty_rate_mib_s: p.dirty_bytes_s.map(|b| b as f64 / MIB),
            throughput_mbit: p.bytes_s.map(|b| b as f64 * 8.0 / 1e6),
            expected_downtime_ms: p.expected_downtime_ms.map(|ms| ms as f64),
        })
        .collect();
    let beats = &seen.heartbeats.0;
    RunMeasurement {
        direction: seen.direction.clone(),
        // Named by the caller, which knows the case's variants.
        variant: None,
        total_time_ms: evacuation
            .completed_at
            .filter(|_| completed)
            .map(|us| us as f64 / 1000.0),
        reported_total_ms: evacuation.reported_total_ms,
        reported_downtime_ms: evacuation.reported_downtime_ms,
        downtime_limit_ms: evacuation.downtime_limit_ms,
        guest_downtime_ms: longest_gap_ms(beats, 0, seen.listened_until_us),
        baseline_gap_ms: longest_gap_ms(beats, seen.sampling_from_us, 0),
        setup_time_ms: evacuation.setup_time_ms,
        bytes_transferred: evacuation.bytes_transferred,
        memory_iterations: evacuation.memory_iterations,
        peak_cpu_pct: peak("cpu."),
        peak_memory_mib: peak("memory."),
        phases: evacuation.phases.clone(),
        throughput_mbit,
        link_bytes,
        efficiency: throughput_mbit
            .filter(|_| counter.is_some())
            .zip(seen.wire_mbit)
            .map(|(t, wire)| t / wire),
        path_rate_mbit: seen.path_rate_mbit,
        // Named by the caller, which measured it.
        cpu_pace_mops: None,
        warning_seq: Some(seen.warning_seq),
        passes: Pass::of(&progress),
        progress,
        outcome,
        timelines,
        observed: Some(seen),
    }
}

/// A recorded run's figures worked out again from its observations, with
/// what its caller named (variant, CPU pace) kept; None for a run recorded
/// without them.
pub fn rederive(run: &RunMeasurement) -> Option<RunMeasurement> {
    let seen = run.observed.clone()?;
    let sampled = run
        .timelines
        .iter()
        .filter(|t| t.name != LINK_TIMELINE)
        .cloned()
        .collect();
    Some(RunMeasurement {
        variant: run.variant.clone(),
        cpu_pace_mops: run.cpu_pace_mops,
        ..derive(seen, sampled)
    })
}

/// The backend's outcome, or what the observations overrule it with.
fn judged_outcome(seen: &Observed) -> Outcome {
    let Evacuation {
        outcome,
        bytes_transferred,
        ..
    } = &seen.evacuation;
    let mut outcome = outcome.clone();
    if let (Outcome::Completed, true, Some(sent)) = (&outcome, seen.crosses_link, bytes_transferred)
    {
        let elsewhere = match (&seen.link_counter, &seen.network_sent) {
            (Some(counter), _) => went_elsewhere(
                counted_bytes(counter),
                *sent,
                LINK_SHARE,
                "did not cross the migration link",
                &format!("on {LINK_DEV}"),
            ),
            (
                None,
                Some(NetworkSent {
                    bytes,
                    interface,
                    source_address,
                }),
            ) => went_elsewhere(
                *bytes,
                *sent,
                REAL_NETWORK_SHARE,
                "did not take the migration network",
                &format!("sent from {source_address} on {interface}"),
            ),
            (None, None) => None,
        };
        if let Some(reason) = elsewhere {
            outcome = Outcome::Failed {
                reason,
                source_survived: false,
            };
        }
    }
    // The guest must be heard again: from the destination after a
    // migration, from the source after a failed one.
    match &mut outcome {
        Outcome::Failed {
            source_survived, ..
        }
        | Outcome::NotConverged {
            source_survived, ..
        } => *source_survived &= seen.heard_again,
        Outcome::Completed if !seen.heard_again => {
            outcome = Outcome::Failed {
                reason: "the guest was not heard from after the migration".into(),
                source_survived: false,
            }
        }
        Outcome::Completed => {}
    }
    if matches!(outcome, Outcome::Completed) && seen.memory_errors > 0 {
        outcome = Outcome::Failed {
            reason: format!(
                "the guest found {} pages not holding what it wrote",
                seen.memory_errors
            ),
            source_survived: false,
        };
    }
    outcome
}

/// Whole milliseconds after the warning, as timelines count them (0 for
/// anything before it).
fn ms_after_warning(us: i64) -> i64 {
    us.max(0) / 1000
}

// The counters' arithmetic saturates: `rederive` reads them from files,
// where a reading may go down.

/// Bytes a counter's readings went up by, first to last.
fn counted_bytes(counter: &[(i64, u64)]) -> u64 {
    match (counter.first(), counter.last()) {
        (Some(a), Some(b)) => b.1.saturating_sub(a.1),
        _ => 0,
    }
}

/// The stream's rate while it moved, Mbit/s: the middle 98 % of its bytes
/// over the time they took, so that a stray frame before or after the
/// stream does not stretch it.
fn active_rate_mbit(counter: &[(i64, u64)]) -> Option<f64> {
    let (&(_, start), &(_, end)) = (counter.first()?, counter.last()?);
    let total = end.saturating_sub(start);
    let reached = |share: f64| {
        counter
            .iter()
            .find(|(_, b)| b.saturating_sub(start) as f64 >= share * total as f64)
    };
    let (from, to) = (reached(0.01)?, reached(0.99)?);
    // The reading before the first counted bytes opens the window.
    let opened = counter
        .iter()
        .rev()
        .find(|(at, _)| *at < from.0)
        .unwrap_or(from);
    let us = to.0.saturating_sub(opened.0);
    (total > 0 && us > 0).then(|| to.1.saturating_sub(opened.1) as f64 * 8.0 / us as f64)
}

/// The counter's rate in each `interval_ms`, as (ms after the warning,
/// Mbit/s).
fn rate_timeline(counter: &[(i64, u64)], interval_ms: u64) -> Vec<(i64, f64)> {
    let interval_us = interval_ms as i64 * 1000;
    let mut points = Vec::new();
    let Some(&(mut from, mut from_bytes)) = counter.first() else {
        return points;
    };
    for &(at, bytes) in &counter[1..] {
        if at.saturating_sub(from) >= interval_us {
            points.push((
                ms_after_warning(at),
                bytes.saturating_sub(from_bytes) as f64 * 8.0 / at.saturating_sub(from) as f64,
            ));
            (from, from_bytes) = (at, bytes);
        }
    }
    points
}

/// Longest gap between consecutive arrivals within [from_us, to_us], ms.
fn longest_gap_ms(arrivals: &[i64], from_us: i64, to_us: i64) -> Option<f64> {
    let within: Vec<i64> = arrivals
        .iter()
        .copied()
        .filter(|at| (from_us..=to_us).contains(at))
        .collect();
    within
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1000.0)
        .reduce(f64::max)
}

/// Why a stream that transferred `sent` bytes went elsewhere than the
/// migration network, whose counter saw `counted` bytes (`where_` it
/// counted them), fewer than `share` of them; None if it took it.
fn went_elsewhere(
    counted: u64,
    sent: u64,
    share: f64,
    missed: &str,
    where_: &str,
) -> Option<String> {
    ((counted as f64) < share * sent as f64).then(|| {
        format!(
            "the migration stream {missed}: {:.1} MiB {where_} for {:.1} MiB transferred",
            counted as f64 / MIB,
            sent as f64 / MIB
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Arrivals, WarningSeq};
    use approx::assert_relative_eq;

    #[test]
    fn a_stream_that_left_the_migration_network_idle_went_elsewhere() {
        let mib = 1 << 20;
        let missed = "did not take the migration network";
        let on = "sent from 198.51.100.1 on ens5";
        assert_eq!(
            went_elsewhere(mib, 100 * mib, REAL_NETWORK_SHARE, missed, on).unwrap(),
            "the migration stream did not take the migration network: 1.0 MiB sent from \
             198.51.100.1 on ens5 for 100.0 MiB transferred"
        );
        // Headers and other traffic make more, never less.
        assert_eq!(
            went_elsewhere(104 * mib, 100 * mib, REAL_NETWORK_SHARE, missed, on),
            None
        );
        assert!(went_elsewhere(89 * mib, 100 * mib, REAL_NETWORK_SHARE, missed, on).is_some());
    }

    const MS: i64 = 1000;

    /// A completed migration of 100 MiB, its guest heard throughout but
    /// for its downtime, and the link's counter at `link_mib` through it.
    fn seen(link_mib: u64, heard_again: bool, memory_errors: u64) -> Observed {
        Observed {
            direction: "a->b".into(),
            warning_seq: WarningSeq::default(),
            sampling_from_us: -1000 * MS,
            evacuation: Evacuation {
                outcome: Outcome::Completed,
                completed_at: Some(2000 * MS),
                bytes_transferred: Some(100 << 20),
                stream_ms: Some(1000.0),
                ..Default::default()
            },
            crosses_link: true,
            link_counter: Some(vec![(0, 0), (1000 * MS, link_mib << 20)]),
            network_sent: None,
            heard_again,
            interval_ms: 100,
            // Silent from 500 to 1700 ms: the guest's downtime; before the
            // warning, a jitter of 300 ms.
            heartbeats: Arrivals(vec![-1000 * MS, -700 * MS, 0, 500 * MS, 1700 * MS]),
            listened_until_us: 2500 * MS,
            memory_errors,
            wire_mbit: None,
            path_rate_mbit: None,
        }
    }

    #[test]
    fn a_completed_run_is_timed_from_the_warning() {
        let run = derive(seen(100, true, 0), Vec::new());
        assert_eq!(run.outcome, Outcome::Completed);
        assert_eq!(run.total_time_ms, Some(2000.0));
        assert_eq!(run.guest_downtime_ms, Some(1200.0));
        assert_eq!(run.baseline_gap_ms, Some(700.0));
        assert_eq!(run.link_bytes, Some(100 << 20));
        assert!(run.throughput_mbit.is_some_and(|t| t > 0.0));
        assert!(run.timelines.iter().any(|t| t.name == LINK_TIMELINE));
    }

    #[test]
    fn what_the_run_saw_overrules_the_backend() {
        let reason = |run: RunMeasurement| match run.outcome {
            Outcome::Failed { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        let idle = derive(seen(1, true, 0), Vec::new());
        assert!(idle.total_time_ms.is_none() && idle.throughput_mbit.is_none());
        assert!(reason(idle).contains("did not cross the migration link"));
        let lost = derive(seen(100, false, 0), Vec::new());
        assert!(reason(lost).contains("not heard from after the migration"));
        let changed = derive(seen(100, true, 3), Vec::new());
        assert!(reason(changed).contains("3 pages not holding what it wrote"));
    }

    #[test]
    fn the_rate_counts_only_while_bytes_move() {
        // Idle, 125 kB in each of 100 ms (10 Mbit/s), idle again.
        let counter = [
            (0, 0),
            (50 * MS, 0),
            (100 * MS, 125_000),
            (150 * MS, 250_000),
            (200 * MS, 250_000),
            (900 * MS, 250_000),
        ];
        assert_eq!(counted_bytes(&counter), 250_000);
        assert_relative_eq!(active_rate_mbit(&counter).unwrap(), 20.0);
        assert_eq!(active_rate_mbit(&[(0, 7), (5 * MS, 7)]), None);
        assert_eq!(
            rate_timeline(&counter, 100),
            vec![(100, 10.0), (200, 10.0), (900, 0.0)]
        );
    }

    #[test]
    fn a_stray_frame_does_not_stretch_the_stream() {
        let counter = [
            (0, 0),
            (50 * MS, 0),
            (100 * MS, 125_000),
            (150 * MS, 250_000),
            (900 * MS, 250_090),
        ];
        assert_relative_eq!(active_rate_mbit(&counter).unwrap(), 20.0);
    }

    #[test]
    fn a_real_sources_interface_count_judges_where_the_stream_went() {
        let on_network = |mib: u64| Observed {
            link_counter: None,
            network_sent: Some(NetworkSent {
                bytes: mib << 20,
                interface: "ens5".into(),
                source_address: "198.51.100.1".into(),
            }),
            ..seen(0, true, 0)
        };
        let took = derive(on_network(101), Vec::new());
        assert_eq!(took.outcome, Outcome::Completed);
        assert_eq!(took.link_bytes, Some(101 << 20));
        match derive(on_network(2), Vec::new()).outcome {
            Outcome::Failed { reason, .. } => assert!(
                reason.contains("2.0 MiB sent from 198.51.100.1 on ens5"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_counter_read_back_going_down_does_not_panic() {
        let counter = [(0, 500), (100 * MS, 100), (200 * MS, 50)];
        assert_eq!(counted_bytes(&counter), 0);
        assert_eq!(active_rate_mbit(&counter), None);
        assert_eq!(rate_timeline(&counter, 100), vec![(100, 0.0), (200, 0.0)]);
    }

    /// Runs recorded on the simulated lab (one per backend family: QEMU,
    /// CRIU, Xen), each with what it observed: worked out again, every
    /// figure is the one recorded.
    #[test]
    fn recorded_runs_derive_to_the_figures_they_recorded() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/recorded-runs.json"
        );
        let report: crate::report::json::SavedRun =
            crate::report::json::SavedRun::read(std::path::Path::new(path)).unwrap();
        let mut checked = 0;
        for case in &report.cases {
            for run in &case.result.runs {
                let again = rederive(run).expect("recorded with its observations");
                assert_eq!(&again, run, "{}", case.result.case.name());
                checked += 1;
            }
        }
        assert!(checked >= 3, "{checked} runs");
    }
}
