//! One measured migration of the running guest: steady state, the warned
//! failure, the evacuation with its timelines sampled, the guest heard
//! again; what the run measured, raw and worked out.

use super::provenance::real_machine;
use super::{ANSWER_TIMEOUT, REAL_NETWORK_SHARE, RESUME_HEARTBEAT_TIMEOUT};
use crate::backend::Backend;
use crate::case::Case;
use crate::failure::FailureMonitor;
use crate::host_agent::probe;
use crate::lab::{link, Lab, Place};
use crate::measure::{Outcome, Pass, ProgressSample, RunMeasurement, Timeline, Unit, MIB};
use crate::metrics::GUEST_DOWNTIME;
use crate::observer::{longest_gap_ms, Observer};
use crate::sampler::Sampler;
use anyhow::Result;
use std::time::{Duration, Instant};

/// One measured migration of the running guest, from the lab's source.
pub(super) fn run_once(
    lab: &Lab,
    case: &Case,
    backend: &mut dyn Backend,
    observer: &Observer,
    wire_mbit: Option<f64>,
    path_rate_mbit: Option<f64>,
    progress: &dyn Fn(&str),
) -> Result<RunMeasurement> {
    // One host (a Xen domU moved within it): both ends are the source.
    let from = &lab.source.name;
    let to = if backend.stream_crosses_link() {
        &lab.destination.name
    } else {
        from
    };
    let direction = format!("{from}->{to}");
    let monitor = FailureMonitor::start(lab, ANSWER_TIMEOUT)?;
    // A real lab's source counts what its migration interface sent, asked
    // of its agent now and after the evacuation, not between the warning
    // and the evacuation, which it would delay.
    let real_counted = match (&lab.source.place, backend.stream_crosses_link()) {
        (Place::Real, true) => Some(probe::ask::counters(monitor.agents(), &lab.source.peer())?),
        _ => None,
    };
    // A real host's CPUs bound the rates its reports can give.
    let host_cpus = [&lab.source, &lab.destination].map(|h| match h.place {
        Place::Real => real_machine(lab, h).ok().map(|m| m.cpus),
        Place::Simulated(_) => None,
    });
    let sampling_from = Instant::now();
    let sampler = Sampler::start(
        Duration::from_millis(case.sampling.interval_ms),
        backend.sample_source(lab)?,
        host_cpus,
    );
    std::thread::sleep(Duration::from_millis(case.failure.after_ms));
    let run = (|| -> Result<RunMeasurement> {
        let warning = monitor.inject(ANSWER_TIMEOUT)?;
        let t0 = warning.heard_at;
        progress(&format!(
            "{}: host {} warned it is going down (heartbeat {}, in answer to order {}; the \
             run's first order {}); evacuating {}",
            case.name(),
            lab.source.name,
            warning.seq.going_down,
            warning.seq.answered_order,
            warning.seq.first_order,
            if from == to {
                format!("within host {to} (one-host topology)")
            } else {
                format!("to {to}")
            }
        ));
        if !warning.ignored_from.is_empty() {
            let from: Vec<String> = warning.ignored_from.iter().map(|a| a.to_string()).collect();
            progress(&format!(
                "{}: the failure monitor ignored unauthenticated datagrams from {} (only host {}'s \
                 agent, sealing with the lab's key, is heeded)",
                case.name(),
                from.join(", "),
                lab.source.name,
            ));
        }

        let crosses_link = backend.stream_crosses_link();
        // A simulated link's counters, sampled through the evacuation.
        let tx_sampler = match &lab.source.place {
            Place::Simulated(s) => Some(link::TxSampler::start(&s.netns.name)?),
            Place::Real => None,
        };
        let evacuation = backend.evacuate(lab, case, progress);
        let on_link = tx_sampler.map(link::TxSampler::finish).transpose()?;
        let on_network = real_counted
            .map(|before| -> Result<_> {
                let after = probe::ask::counters(monitor.agents(), &lab.source.peer())?;
                Ok((after.counters.since(before.counters).tx, after.interface))
            })
            .transpose()?;
        let link_bytes = on_link
            .as_ref()
            .map(|l| l.bytes())
            .or(on_network.as_ref().map(|(bytes, _)| *bytes));
        let mut outcome = evacuation.outcome;
        // A stream that should cross the link and left it idle went elsewhere:
        // what was measured is not what the case asked for.
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
                    &format!("sent from {} on {interface}", lab.source.migration_address),
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
        let ended = Instant::now();
        // The guest must be heard again: from the destination after a
        // migration, from the source after a failed one.
        let wait = resume_wait(
            ended,
            observer.last_heartbeat().map(|(t, _)| t),
            case.bounds.limits.get(GUEST_DOWNTIME).copied(),
        );
        let heard_again = observer.heartbeat_after(ended, wait);
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
        std::thread::sleep(Duration::from_millis(case.sampling.settle_ms));
        let mut timelines = sampler.finish(t0);
        let on_link = on_link.filter(|_| crosses_link);
        if let Some(on_link) = &on_link {
            timelines.push(Timeline {
                name: "link.source.tx".into(),
                unit: Unit::Mbit,
                points: on_link.rate_timeline(t0, Duration::from_millis(case.sampling.interval_ms)),
            });
        }
        let beats = observer.heartbeats_since(sampling_from);
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
        let peak = |prefix: &str, timelines: &[Timeline]| -> Option<f64> {
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
        let progress_samples: Vec<ProgressSample> = evacuation
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
        Ok(RunMeasurement {
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
            guest_downtime_ms: longest_gap_ms(&beats, t0, Instant::now()),
            baseline_gap_ms: longest_gap_ms(&beats, sampling_from, t0),
            setup_time_ms: evacuation.setup_time_ms,
            bytes_transferred: evacuation.bytes_transferred,
            memory_iterations: evacuation.memory_iterations,
            peak_cpu_pct: peak("cpu.", &timelines),
            peak_memory_mib: peak("memory.", &timelines),
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
            passes: Pass::of(&progress_samples),
            progress: progress_samples,
            outcome,
            timelines,
            warning_seq: Some(warning.seq),
        })
    })();
    // The order to go down stands until another, even after a failed run
    // or an unheard warning: the source host is put back up for the next.
    match (run, monitor.stand_up(ANSWER_TIMEOUT)) {
        (run, Ok(())) => run,
        (Ok(_), Err(e)) => Err(e),
        (Err(e), Err(up)) => {
            progress(&format!("{}: {up:#}", case.name()));
            Err(e)
        }
    }
}

/// How long to wait, from the end of a migration, for the guest to be
/// heard again: `RESUME_HEARTBEAT_TIMEOUT`, or longer when the suite's bound
/// on the guest-observed downtime allows a longer silence since the guest
/// was `last_heard` (a guest slower to come back than that fails its bound
/// anyway; one within it is no lost guest).
fn resume_wait(ended: Instant, last_heard: Option<Instant>, bound_ms: Option<f64>) -> Duration {
    let allowed = last_heard.zip(bound_ms).map(|(heard, ms)| {
        (heard + Duration::from_secs_f64(ms / 1000.0)).saturating_duration_since(ended)
    });
    allowed.map_or(RESUME_HEARTBEAT_TIMEOUT, |a| {
        a.max(RESUME_HEARTBEAT_TIMEOUT)
    })
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
    fn the_guest_is_awaited_as_long_as_its_bound_allows_it_to_be_silent() {
        let ended = Instant::now();
        let heard = ended - Duration::from_secs(30);
        // No bound, or one already used up: the least wait.
        assert_eq!(
            resume_wait(ended, Some(heard), None),
            RESUME_HEARTBEAT_TIMEOUT
        );
        assert_eq!(
            resume_wait(ended, Some(heard), Some(20_000.0)),
            RESUME_HEARTBEAT_TIMEOUT
        );
        assert_eq!(
            resume_wait(ended, None, Some(180_000.0)),
            RESUME_HEARTBEAT_TIMEOUT
        );
        // 180 s of silence allowed, 30 s of it gone.
        assert_eq!(
            resume_wait(ended, Some(heard), Some(180_000.0)),
            Duration::from_secs(150)
        );
    }

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
}
