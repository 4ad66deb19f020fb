//! What one run observed, before any figure is worked out from it, and
//! the backend's account of an evacuation that is part of it: plain data,
//! on this process's clock while a run goes on, on the run's own once
//! recorded.

use super::{Outcome, Phases, WarningSeq};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One poll of a migration's progress, `at` on the run's clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress<At = Instant> {
    pub at: At,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub pass: u64,
    pub dirty_bytes_s: Option<u64>,
    pub bytes_s: Option<u64>,
    /// The downtime the hypervisor expects if it switched over now (QEMU's
    /// estimate from its last pass), ms.
    pub expected_downtime_ms: Option<u64>,
}

/// What the backend learnt from one evacuation: on this process's clock
/// as the backend tells it, on the run's (`Observed`) once recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evacuation<At = Instant> {
    pub outcome: Outcome,
    /// When the evacuation was over: the guest known to run on the
    /// destination with all its memory there (after post-copy, later than
    /// its resume).
    pub completed_at: Option<At>,
    pub reported_total_ms: Option<f64>,
    pub reported_downtime_ms: Option<f64>,
    /// The downtime limit the hypervisor was given (None: it takes none).
    pub downtime_limit_ms: Option<f64>,
    pub setup_time_ms: Option<f64>,
    pub bytes_transferred: Option<u64>,
    pub memory_iterations: Option<u64>,
    /// Each backend knows its own sequence; counted from the start of the
    /// evacuation, which is the warning.
    pub phases: Phases,
    /// How long the stream was busy moving `bytes_transferred`, ms; needed
    /// only where no counter of a simulated lab's link tells it (a stream
    /// that does not cross the link, a real lab's).
    pub stream_ms: Option<f64>,
    pub progress: Vec<Progress<At>>,
}

// Not derived: a derived one would ask the clock for a default.
impl<At> Default for Evacuation<At> {
    fn default() -> Self {
        Evacuation {
            outcome: Outcome::default(),
            completed_at: None,
            reported_total_ms: None,
            reported_downtime_ms: None,
            downtime_limit_ms: None,
            setup_time_ms: None,
            bytes_transferred: None,
            memory_iterations: None,
            phases: Phases::default(),
            stream_ms: None,
            progress: Vec::new(),
        }
    }
}

impl<At> Evacuation<At> {
    /// A migration that did not complete: nothing measured but why.
    pub fn failed(reason: String, source_survived: bool) -> Self {
        Evacuation {
            outcome: Outcome::Failed {
                reason,
                source_survived,
            },
            ..Default::default()
        }
    }
}

impl Evacuation {
    /// The same evacuation on the run's clock: microseconds from `t0`.
    pub fn since(self, t0: Instant) -> Evacuation<i64> {
        let Evacuation {
            outcome,
            completed_at,
            reported_total_ms,
            reported_downtime_ms,
            downtime_limit_ms,
            setup_time_ms,
            bytes_transferred,
            memory_iterations,
            phases,
            stream_ms,
            progress,
        } = self;
        Evacuation {
            outcome,
            completed_at: completed_at.map(|at| micros_since(t0, at)),
            reported_total_ms,
            reported_downtime_ms,
            downtime_limit_ms,
            setup_time_ms,
            bytes_transferred,
            memory_iterations,
            phases,
            stream_ms,
            progress: progress
                .into_iter()
                .map(|p| Progress {
                    at: micros_since(t0, p.at),
                    transferred_bytes: p.transferred_bytes,
                    remaining_bytes: p.remaining_bytes,
                    pass: p.pass,
                    dirty_bytes_s: p.dirty_bytes_s,
                    bytes_s: p.bytes_s,
                    expected_downtime_ms: p.expected_downtime_ms,
                })
                .collect(),
        }
    }
}

/// `at` on the run's clock: whole microseconds from `t0`, negative before
/// it. An instant before `t0` is rounded away from it, so that nothing
/// before the warning reads as the warning itself; one after, toward it.
pub fn micros_since(t0: Instant, at: Instant) -> i64 {
    match at.checked_duration_since(t0) {
        Some(after) => after.as_micros() as i64,
        None => -((t0 - at).as_nanos().div_ceil(1000) as i64),
    }
}

/// What one run observed, before any figure is worked out from it: every
/// event on the run's clock, microseconds from the warning (negative:
/// before it). A run's record keeps it, that `crate::derive` can work the
/// figures out again with no lab; the CPU and memory timelines it sampled
/// are the run's own (`RunMeasurement::timelines`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// "a->b": where the guest went from and to.
    pub direction: String,
    /// Which heartbeat was time zero.
    pub warning_seq: WarningSeq,
    /// When the timelines and the guest's heartbeats began to count.
    pub sampling_from_us: i64,
    pub evacuation: Evacuation<i64>,
    /// Whether the stream should cross the migration link (not within one
    /// host).
    pub crosses_link: bool,
    /// A simulated link's byte counter through the evacuation: (when,
    /// bytes sent so far).
    pub link_counter: Option<Vec<(i64, u64)>>,
    /// A real source's migration interface through the evacuation.
    pub network_sent: Option<NetworkSent>,
    /// Whether the guest was heard again after the evacuation ended.
    pub heard_again: bool,
    /// The sampling interval, which the link's rate timeline takes too.
    pub interval_ms: u64,
    /// When each of the guest's heartbeats arrived from `sampling_from_us`
    /// on, and when the run stopped listening for them.
    pub heartbeats: Arrivals,
    pub listened_until_us: i64,
    /// Pages the guest found not holding what it wrote, as its last
    /// heartbeat told.
    pub memory_errors: u64,
    /// What the link carries on the wire, and what the path carried just
    /// before the run, Mbit/s.
    pub wire_mbit: Option<f64>,
    pub path_rate_mbit: Option<f64>,
}

/// What a real source's migration interface sent through an evacuation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkSent {
    pub bytes: u64,
    pub interface: String,
    /// The source's migration address, which the interface carries.
    pub source_address: String,
}

/// Arrival times in order, microseconds; written as the first and the
/// gaps after it, which keeps a run's thousands of heartbeats short.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Arrivals(pub Vec<i64>);

impl Serialize for Arrivals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut last = 0;
        let gaps: Vec<i64> = self
            .0
            .iter()
            .map(|&at| {
                let gap = at.saturating_sub(last);
                last = at;
                gap
            })
            .collect();
        gaps.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Arrivals {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let gaps = Vec::<i64>::deserialize(d)?;
        Ok(Arrivals(
            gaps.into_iter()
                .scan(0i64, |at, gap| {
                    *at = at.saturating_add(gap);
                    Some(*at)
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn heartbeats_are_written_as_gaps_and_read_back_whole() {
        let beats = Arrivals(vec![-2500, -1500, 0, 999, 120_000]);
        let text = serde_json::to_string(&beats).unwrap();
        assert_eq!(text, "[-2500,1000,1500,999,119001]");
        assert_eq!(serde_json::from_str::<Arrivals>(&text).unwrap(), beats);
    }

    #[test]
    fn an_instant_just_before_the_warning_is_before_it() {
        let t0 = Instant::now() + Duration::from_secs(1);
        assert_eq!(micros_since(t0, t0), 0);
        assert_eq!(micros_since(t0, t0 - Duration::from_nanos(300)), -1);
        assert_eq!(micros_since(t0, t0 - Duration::from_micros(2)), -2);
        assert_eq!(micros_since(t0, t0 + Duration::from_nanos(1700)), 1);
    }
}
