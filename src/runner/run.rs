//! One measured migration of the running guest: steady state, the warned
//! failure, the evacuation with its timelines sampled, the guest heard
//! again; what it observed, on the run's clock, goes to `crate::derive`
//! for the figures.

use super::provenance::real_machine;
use super::{ANSWER_TIMEOUT, RESUME_HEARTBEAT_TIMEOUT};
use crate::backend::Backend;
use crate::case::Case;
use crate::derive::derive;
use crate::failure::FailureMonitor;
use crate::host_agent::probe;
use crate::lab::{link, Lab, Place};
use crate::measure::{micros_since, Arrivals, NetworkSent, Observed, RunMeasurement};
use crate::metrics::GUEST_DOWNTIME;
use crate::observer::Observer;
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
        let link_counter = tx_sampler.map(|s| s.finish(t0)).transpose()?;
        let network_sent = real_counted
            .map(|before| -> Result<_> {
                let after = probe::ask::counters(monitor.agents(), &lab.source.peer())?;
                Ok(NetworkSent {
                    bytes: after.counters.since(before.counters).tx,
                    interface: after.interface,
                    source_address: lab.source.migration_address.to_string(),
                })
            })
            .transpose()?;
        let ended = Instant::now();
        // Heard again from the destination after a migration, from the
        // source after a failed one (`derive` judges which).
        let wait = resume_wait(
            ended,
            observer.last_heartbeat().map(|(t, _)| t),
            case.bounds.limits.get(GUEST_DOWNTIME).copied(),
        );
        let heard_again = observer.heartbeat_after(ended, wait);
        std::thread::sleep(Duration::from_millis(case.sampling.settle_ms));
        // Listening ends once the timelines and heartbeats are taken, as it
        // did before runs were recorded as observations: a heartbeat heard
        // meanwhile counts.
        let timelines = sampler.finish(t0);
        let beats = observer.heartbeats_since(sampling_from);
        let listened_until = Instant::now();
        let seen = Observed {
            direction,
            warning_seq: warning.seq,
            sampling_from_us: micros_since(t0, sampling_from),
            evacuation: evacuation.since(t0),
            crosses_link,
            link_counter,
            network_sent,
            heard_again,
            interval_ms: case.sampling.interval_ms,
            memory_errors: beats.last().map_or(0, |(_, beat)| beat.memory_errors),
            heartbeats: Arrivals(beats.iter().map(|(at, _)| micros_since(t0, *at)).collect()),
            listened_until_us: micros_since(t0, listened_until),
            wire_mbit,
            path_rate_mbit,
        };
        Ok(derive(seen, timelines))
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
}
