//! Bytes on the migration link, as the source host's veth counts them
//! (frames whole). Sampled every few milliseconds during an evacuation, they
//! tell when the stream really moved and at what rate, whatever the backend
//! reports, and prove that the stream took the link at all.

use super::network::LINK_DEV;
use crate::measure::micros_since;
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

    /// The readings, each on the run's clock (`measure::micros_since` of
    /// `t0`), and bytes sent so far.
    pub fn finish(mut self, t0: Instant) -> Result<Vec<(i64, u64)>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        let readings = thread.join().expect("link monitor panicked")?;
        Ok(readings
            .into_iter()
            .map(|(at, bytes)| (micros_since(t0, at), bytes))
            .collect())
    }
}

impl Drop for TxSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
