//! A host's CPU pace: how much fixed work all of its CPUs do together in a
//! short window, taken before each run beside the path's rate, on the
//! hosts themselves (this machine for a simulated lab, each host's agent
//! on a real one), with the guest running as it runs during the run. Much
//! of a migration waits on the hosts' CPUs rather than on the link
//! (starting the destination's QEMU, CRIU's dump and restore, a stopped
//! guest's last pages, everything under TCG); each run says how much CPU
//! its hosts had to give.
//!
//! All CPUs at once, not one: another process busy on one of them slows
//! the migration's several threads, and a single-threaded probe would
//! find a free CPU and see nothing.

use std::time::{Duration, Instant};

/// One window; the pace is the median of `WINDOWS`, so that one
/// preempted window does not set it.
const WINDOW: Duration = Duration::from_millis(100);
const WINDOWS: usize = 3;
/// Each thread's working set: within a core's own cache, so that the
/// probe measures the cores rather than the memory bus.
const WORDS: usize = 32 * 1024;
/// Rounds between looks at the clock.
const BATCH: u64 = 4096;

/// Million rounds per second, all CPUs together (the median of a few
/// short windows).
pub fn measure() -> f64 {
    let mut windows: Vec<f64> = (0..WINDOWS).map(|_| window(WINDOW)).collect();
    windows.sort_by(f64::total_cmp);
    windows[WINDOWS / 2]
}

/// Rounds per microsecond that every CPU did in `length`, together.
fn window(length: Duration) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = Instant::now();
    let until = start + length;
    let rounds: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..cpus)
            .map(|seed| s.spawn(move || rounds_until(until, seed as u64)))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
    });
    rounds as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Rounds of a fixed mix of multiplication and dependent reads and writes
/// over a small table, until `until`.
fn rounds_until(until: Instant, seed: u64) -> u64 {
    let mut table = vec![0u64; WORDS];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut rounds = 0;
    while Instant::now() < until {
        for _ in 0..BATCH {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let i = (x >> 40) as usize % WORDS;
            table[i] = table[i].rotate_left(7) ^ x;
            x ^= table[(i * 7 + 3) % WORDS];
        }
        rounds += BATCH;
    }
    std::hint::black_box(&table);
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_the_work_done_in_it() {
        let pace = window(Duration::from_millis(20));
        assert!(pace.is_finite() && pace > 0.0, "{pace}");
    }
}
