//! Bytes on the migration link, as the source host's veth counts them
//! (frames whole). Sampled every few milliseconds during an evacuation, they
//! tell when the stream really moved and at what rate, whatever the backend
//! reports, and prove that the stream took the link at all.

use super::network::LINK_DEV;
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// Bytes sent so far on the migration link, read in the calling thread's
/// network namespace.
fn tx_bytes_here() -> Result<u64> {
    Ok(crate::netdev::counters(LINK_DEV)?.tx)
}

/// Bytes the host in namespace `ns` has sent on its migration link.
pub fn tx_bytes(ns: &str) -> Result<u64> {
    super::netns::enter(ns, tx_bytes_here)?
}

/// Readings of the counter: when, and bytes sent so far.
type Readings = Vec<(Instant, u64)>;

/// The link's counter sampled from a thread inside the host's namespace.
pub struct TxSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Readings>>>,
}

impl TxSampler {
    pub fn start(ns: &str) -> Result<TxSampler> {
        let file = std::fs::File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("no network namespace {ns}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).context("setns into the source host")?;
            let mut samples = vec![(Instant::now(), tx_bytes_here()?)];
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_EVERY);
                samples.push((Instant::now(), tx_bytes_here()?));
            }
            Ok(samples)
        });
        Ok(TxSampler {
            stop,
            thread: Some(thread),
        })
    }

    pub fn finish(mut self) -> Result<Samples> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        Ok(Samples(thread.join().expect("link monitor panicked")?))
    }
}

impl Drop for TxSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (when, bytes sent so far) on the link.
pub struct Samples(pub Vec<(Instant, u64)>);

impl Samples {
    /// Bytes sent between the first sample and the last.
    pub fn bytes(&self) -> u64 {
        match (self.0.first(), self.0.last()) {
            (Some(a), Some(b)) => b.1 - a.1,
            _ => 0,
        }
    }

    /// The stream's rate while it moved, Mbit/s: the middle 98 % of its
    /// bytes over the time they took, so that a stray frame before or after
    /// the stream does not stretch it.
    pub fn active_rate_mbit(&self) -> Option<f64> {
        let (&(_, start), &(_, end)) = (self.0.first()?, self.0.last()?);
        let total = end - start;
        let reached = |share: f64| {
            self.0
                .iter()
                .find(|(_, b)| (b - start) as f64 >= share * total as f64)
        };
        let (from, to) = (reached(0.01)?, reached(0.99)?);
        // The sample before the first counted bytes opens the window.
        let opened = self
            .0
            .iter()
            .rev()
            .find(|(at, _)| at < &from.0)
            .unwrap_or(from);
        let secs = (to.0 - opened.0).as_secs_f64();
        (total > 0 && secs > 0.0).then(|| (to.1 - opened.1) as f64 * 8.0 / secs / 1e6)
    }

    /// The rate in each `interval`, as (ms since `t0`, Mbit/s).
    pub fn rate_timeline(&self, t0: Instant, interval: Duration) -> Vec<(i64, f64)> {
        let mut points = Vec::new();
        let Some(&(mut from, mut from_bytes)) = self.0.first() else {
            return points;
        };
        for &(at, bytes) in &self.0[1..] {
            if at - from >= interval {
                let ms = at.saturating_duration_since(t0).as_millis() as i64;
                points.push((
                    ms,
                    (bytes - from_bytes) as f64 * 8.0 / (at - from).as_secs_f64() / 1e6,
                ));
                (from, from_bytes) = (at, bytes);
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn the_rate_counts_only_while_bytes_move() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        // Idle, 125 kB in each of 100 ms (10 Mbit/s), idle again.
        let s = Samples(vec![
            (at(0), 0),
            (at(50), 0),
            (at(100), 125_000),
            (at(150), 250_000),
            (at(200), 250_000),
            (at(900), 250_000),
        ]);
        assert_eq!(s.bytes(), 250_000);
        assert_relative_eq!(s.active_rate_mbit().unwrap(), 20.0);
        assert_eq!(
            Samples(vec![(at(0), 7), (at(5), 7)]).active_rate_mbit(),
            None
        );
    }

    #[test]
    fn a_stray_frame_does_not_stretch_the_stream() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let s = Samples(vec![
            (at(0), 0),
            (at(50), 0),
            (at(100), 125_000),
            (at(150), 250_000),
            (at(900), 250_090),
        ]);
        assert_relative_eq!(s.active_rate_mbit().unwrap(), 20.0);
    }
}
