//! A run's figures and outcome, worked out from what it observed: a pure
//! function, apart from the orchestration that gathers the observations
//! (`run`), so that it can be checked on runs made up in a test.

use super::REAL_NETWORK_SHARE;
use crate::backend::Evacuation;
use crate::lab::link::Samples;
use crate::measure::{
    Outcome, Pass, ProgressSample, RunMeasurement, Timeline, Unit, WarningSeq, MIB,
};
use crate::observer::longest_gap_ms;
use crate::wire::Heartbeat;
use std::time::{Duration, Instant};

/// What one run observed, each on this process's clock.
pub(super) struct Observations {
    /// "a->b": where the guest went from and to.
    pub direction: String,
    /// Time zero: when the source's warning was heard, and which it was.
    pub t0: Instant,
    pub warning_seq: WarningSeq,
    /// When the timelines and the guest's heartbeats began to count,
    /// before the warning.
    pub sampling_from: Instant,
    /// What the backend learnt of the evacuation.
    pub evacuation: Evacuation,
    /// Whether the stream should cross the migration link (not within one
    /// host).
    pub crosses_link: bool,
    /// A simulated link's byte counter through the evacuation.
    pub on_link: Option<Samples>,
    /// A real source's migration interface: bytes it sent through the
    /// evacuation, and its name.
    pub on_network: Option<(u64, String)>,
    /// The source's migration address, which the real network's counter
    /// counts from.
    pub source_address: String,
    /// Whether the guest was heard again after the evacuation ended.
    pub heard_again: bool,
    /// The CPU and memory timelines, ms from time zero.
    pub timelines: Vec<Timeline>,
    /// The sampling interval, which the link's rate timeline takes too.
    pub interval: Duration,
    /// The guest's heartbeats since `sampling_from`, and when the run
    /// stopped listening for them.
    pub beats: Vec<(Instant, Heartbeat)>,
    pub listened_until: Instant,
    /// What the link carries on the wire, and what the path carried just
    /// before the run, Mbit/s.
    pub wire_mbit: Option<f64>,
    pub path_rate_mbit: Option<f64>,
}

/// The run's measurement from what it observed. The backend's outcome
/// stands unless the observations overrule it: a stream that left the
/// migration network idle went elsewhere, a guest not heard again is
/// lost, a guest that found its memory changed was not carried intact.
pub(super) fn derive(seen: Observations) -> RunMeasurement {
    let Observations {
        direction,
        t0,
        warning_seq,
        sampling_from,
        evacuation,
        crosses_link,
        on_link,
        on_network,
        source_address,
        heard_again,
        mut timelines,
        interval,
        beats,
        listened_until,
        wire_mbit,
        path_rate_mbit,
    } = seen;
    let link_bytes = on_link
        .as_ref()
        .map(Samples::bytes)
        .or(on_network.as_ref().map(|(bytes, _)| *bytes));
    let mut outcome = evacuation.outcome;
    if let (Outcome::Completed, true, Some(sent)) =
        (&outcome, crosses_link, evacuation.bytes_transferred)
    {
        let elsewhere = match (&on_link, &on_network) {
            (Some(on_link), _) => went_elsewhere(
                on_link.bytes(),
                sent,
                0.5,
                "did not cross the migration link",
                &format!("on {}", crate::lab::network::LINK_DEV),
            ),
            (None, Some((bytes, interface))) => went_elsewhere(
                *bytes,
                sent,
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
        } => *source_survived &= heard_again,
        Outcome::Completed if !heard_again => {
            outcome = Outcome::Failed {
                reason: "the guest was not heard from after the migration".into(),
                source_survived: false,
            }
        }
        Outcome::Completed => {}
    }
    let on_link = on_link.filter(|_| crosses_link);
    if let Some(on_link) = &on_link {
        timelines.push(Timeline {
            name: "link.source.tx".into(),
            unit: Unit::Mbit,
            points: on_link.rate_timeline(t0, interval),
        });
    }
    if let (Outcome::Completed, Some((_, last))) = (&outcome, beats.last()) {
        if last.memory_errors > 0 {
            outcome = Outcome::Failed {
                reason: format!(
                    "the guest found {} pages not holding what it wrote",
                    last.memory_errors
                ),
                source_survived: false,
            };
        }
    }
    let peak = |prefix: &str| -> Option<f64> {
        timelines
            .iter()
            .filter(|t| t.name.starts_with(prefix) && t.name.ends_with(".hypervisor"))
            .flat_map(|t| t.points.iter().filter(|(ms, _)| *ms >= 0).map(|(_, v)| *v))
            .reduce(f64::max)
    };
    let completed = matches!(outcome, Outcome::Completed);
    let throughput_mbit = if let Some(on_link) = &on_link {
        on_link.active_rate_mbit()
    } else {
        evacuation
            .bytes_transferred
            .zip(evacuation.stream_ms)
            .filter(|(_, ms)| *ms > 0.0)
            .map(|(bytes, ms)| bytes as f64 * 8.0 / ms / 1000.0)
    }
    .filter(|_| completed);
    let since_t0 = |at: Instant| at.saturating_duration_since(t0).as_millis() as i64;
    let progress: Vec<ProgressSample> = evacuation
        .progress
        .iter()
        .map(|p| ProgressSample {
            t_ms: since_t0(p.at),
            transferred_mib: p.transferred_bytes as f64 / MIB,
            remaining_mib: p.remaining_bytes as f64 / MIB,
            pass: p.pass,
            dirty_rate_mib_s: p.dirty_bytes_s.map(|b| b as f64 / MIB),
            throughput_mbit: p.bytes_s.map(|b| b as f64 * 8.0 / 1e6),
            expected_downtime_ms: p.expected_downtime_ms.map(|ms| ms as f64),
        })
        .collect();
    RunMeasurement {
        direction,
        // Named by the caller, which knows the case's variants.
        variant: None,
        total_time_ms: evacuation
            .completed_at
            .filter(|_| completed)
            .map(|t| (t - t0).as_secs_f64() * 1000.0),
        reported_total_ms: evacuation.reported_total_ms,
        reported_downtime_ms: evacuation.reported_downtime_ms,
        downtime_limit_ms: evacuation.downtime_limit_ms,
        guest_downtime_ms: longest_gap_ms(&beats, t0, listened_until),
        baseline_gap_ms: longest_gap_ms(&beats, sampling_from, t0),
        setup_time_ms: evacuation.setup_time_ms,
        bytes_transferred: evacuation.bytes_transferred,
        memory_iterations: evacuation.memory_iterations,
        peak_cpu_pct: peak("cpu."),
        peak_memory_mib: peak("memory."),
        phases: evacuation.phases,
        throughput_mbit,
        link_bytes,
        efficiency: throughput_mbit
            .filter(|_| on_link.is_some())
            .zip(wire_mbit)
            .map(|(t, wire)| t / wire),
        path_rate_mbit,
        // Named by the caller, which measured it.
        cpu_pace_mops: None,
        passes: Pass::of(&progress),
        progress,
        outcome,
        timelines,
        warning_seq: Some(warning_seq),
    }
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

    /// A completed migration of 100 MiB, its guest heard throughout, and
    /// the link's counter at `link_mib` through it.
    fn seen(link_mib: u64, heard_again: bool, memory_errors: u64) -> Observations {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let beat = |seq| Heartbeat {
            seq,
            agent_ns: 0,
            dirty_passes: 0,
            memory_errors,
        };
        Observations {
            direction: "a->b".into(),
            t0,
            warning_seq: WarningSeq::default(),
            sampling_from: t0,
            evacuation: Evacuation {
                outcome: Outcome::Completed,
                completed_at: Some(at(2000)),
                bytes_transferred: Some(100 << 20),
                stream_ms: Some(1000.0),
                ..Default::default()
            },
            crosses_link: true,
            on_link: Some(Samples(vec![(at(0), 0), (at(1000), link_mib << 20)])),
            on_network: None,
            source_address: "192.0.2.1".into(),
            heard_again,
            timelines: Vec::new(),
            interval: Duration::from_millis(100),
            // Silent from 500 to 1700 ms: the guest's downtime.
            beats: vec![(at(0), beat(0)), (at(500), beat(1)), (at(1700), beat(2))],
            listened_until: at(2500),
            wire_mbit: None,
            path_rate_mbit: None,
        }
    }

    #[test]
    fn a_completed_run_is_timed_from_the_warning() {
        let run = derive(seen(100, true, 0));
        assert_eq!(run.outcome, Outcome::Completed);
        assert_eq!(run.total_time_ms.map(f64::round), Some(2000.0));
        assert_eq!(run.guest_downtime_ms.map(f64::round), Some(1200.0));
        assert_eq!(run.link_bytes, Some(100 << 20));
        assert!(run.throughput_mbit.is_some_and(|t| t > 0.0));
        assert!(run.timelines.iter().any(|t| t.name == "link.source.tx"));
    }

    #[test]
    fn what_the_run_saw_overrules_the_backend() {
        let reason = |run: RunMeasurement| match run.outcome {
            Outcome::Failed { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        let idle = derive(seen(1, true, 0));
        assert!(idle.total_time_ms.is_none() && idle.throughput_mbit.is_none());
        assert!(reason(idle).contains("did not cross the migration link"));
        let lost = derive(seen(100, false, 0));
        assert!(reason(lost).contains("not heard from after the migration"));
        let changed = derive(seen(100, true, 3));
        assert!(reason(changed).contains("3 pages not holding what it wrote"));
    }
}
