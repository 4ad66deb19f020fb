//! Landmarks of a sampled timeline: where it started, peaked and settled.

use crate::case::Case;
use crate::measure::{Landmarks, RunMeasurement, Timeline};

/// Fewest points after the warning that give a meaningful peak and final level.
const MIN_AFTER: usize = 3;
/// Keeps the settling band open on a perfectly flat (e.g. all-zero) timeline.
const EPSILON: f64 = 1e-6;

/// Landmarks of `t` over the points up to `window_end_ms` (ms after the
/// warning). None without a point before the warning or with fewer than
/// three after it.
///
/// A timeline that never enters its settling band (its last point is still
/// outside it) is reported as settled at its last point.
pub fn landmarks(t: &Timeline, window_end_ms: i64) -> Option<Landmarks> {
    let before: Vec<f64> = t.points.iter().filter(|p| p.0 < 0).map(|p| p.1).collect();
    let after: Vec<(i64, f64)> = t
        .points
        .iter()
        .copied()
        .filter(|p| (0..=window_end_ms).contains(&p.0))
        .collect();
    if before.is_empty() || after.len() < MIN_AFTER {
        return None;
    }
    let baseline = mean(before.iter().copied());
    // First of equal maxima: the peak is when the value was first reached.
    let peak_i = (1..after.len()).fold(
        0,
        |best, i| if after[i].1 > after[best].1 { i } else { best },
    );
    let (peak_at_ms, peak) = after[peak_i];

    let tail = after.len().div_ceil(10).max(MIN_AFTER);
    let final_level = mean(after[after.len() - tail..].iter().map(|p| p.1));
    let band = (0.1 * (peak - baseline).abs())
        .max(0.02 * final_level.abs())
        .max(EPSILON);
    // Settled from just after the last point outside the band.
    let settled_i = after[peak_i..]
        .iter()
        .rposition(|p| (p.1 - final_level).abs() > band)
        .map_or(peak_i, |i| peak_i + i + 1)
        .min(after.len() - 1);

    Some(Landmarks {
        baseline,
        peak,
        peak_at_ms,
        settled: mean(after[settled_i..].iter().map(|p| p.1)),
        settled_at_ms: after[settled_i].0,
    })
}

/// Landmarks of the timeline `name` of one run of `case`, within the run's
/// sampling window.
pub fn run_landmarks(case: &Case, run: &RunMeasurement, name: &str) -> Option<Landmarks> {
    // Sampling stops `settle_ms` after the migration: the window.
    let end = run
        .total_time_ms
        .map_or(i64::MAX, |ms| ms as i64 + case.sampling.settle_ms as i64);
    landmarks(run.timelines.iter().find(|tl| tl.name == name)?, end)
}

fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len() as f64;
    values.sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Unit;
    use crate::report::fixtures::step;
    use approx::assert_relative_eq;

    fn timeline(points: Vec<(i64, f64)>) -> Timeline {
        Timeline {
            name: "cpu.machine".into(),
            unit: Unit::Percent,
            points,
        }
    }

    #[test]
    fn step_up_and_back_down() {
        let l = landmarks(
            &step("cpu", Unit::Percent, 10.0, 90.0, 12.0, 2000),
            i64::MAX,
        )
        .unwrap();
        assert_relative_eq!(l.baseline, 10.0);
        assert_relative_eq!(l.peak, 90.0);
        assert_eq!(l.peak_at_ms, 0);
        assert_relative_eq!(l.settled, 12.0);
        assert_eq!(l.settled_at_ms, 2000);
    }

    #[test]
    fn flat_settles_at_once() {
        let l = landmarks(&step("mem", Unit::Mib, 50.0, 50.0, 50.0, 1000), i64::MAX).unwrap();
        assert_relative_eq!(l.baseline, 50.0);
        assert_relative_eq!(l.peak, 50.0);
        assert_relative_eq!(l.settled, 50.0);
        assert_eq!((l.peak_at_ms, l.settled_at_ms), (0, 0));
    }

    #[test]
    fn all_zero_timeline() {
        let l = landmarks(&step("cpu", Unit::Percent, 0.0, 0.0, 0.0, 500), i64::MAX).unwrap();
        assert_eq!(
            (l.baseline, l.peak, l.settled, l.settled_at_ms),
            (0.0, 0.0, 0.0, 0)
        );
    }

    #[test]
    fn noisy_decay_settles_where_the_noise_is_all_that_is_left() {
        // Deterministic +-1 jitter; the value decays from 80 to 20 by t = 3000.
        let jitter = |i: i64| [0.7, -1.0, 0.2, 1.0, -0.4][i.rem_euclid(5) as usize];
        let points = (-20..60)
            .map(|i| {
                let t = i * 100;
                let level = match t {
                    ..0 => 10.0,
                    0..1000 => 80.0,
                    1000..3000 => 80.0 - 60.0 * (t - 1000) as f64 / 2000.0,
                    _ => 20.0,
                };
                (t, level + jitter(i))
            })
            .collect();
        let l = landmarks(&timeline(points), i64::MAX).unwrap();
        assert_relative_eq!(l.baseline, 10.0, epsilon = 0.2);
        assert_relative_eq!(l.peak, 81.0);
        assert!(l.peak_at_ms < 1000);
        // Band = 10% of the 70-point span: reached on the way down, near 2800.
        assert!(
            (2500..=3000).contains(&l.settled_at_ms),
            "{}",
            l.settled_at_ms
        );
        assert_relative_eq!(l.settled, 20.0, epsilon = 0.5);
    }

    #[test]
    fn window_end_drops_later_points() {
        let mut t = step("cpu", Unit::Percent, 10.0, 90.0, 12.0, 2000);
        t.points.push((60_000, 500.0));
        let l = landmarks(&t, 5000).unwrap();
        assert_relative_eq!(l.peak, 90.0);
        assert_relative_eq!(l.settled, 12.0);
    }

    #[test]
    fn never_settling_reports_the_last_point() {
        let l = landmarks(
            &timeline(vec![
                (-100, 0.0),
                (0, 10.0),
                (100, 50.0),
                (200, 0.0),
                (300, 100.0),
            ]),
            i64::MAX,
        )
        .unwrap();
        assert_eq!((l.peak_at_ms, l.settled_at_ms), (300, 300));
        assert_relative_eq!(l.settled, 100.0);
    }

    #[test]
    fn too_few_points() {
        assert_eq!(
            landmarks(&timeline(vec![(0, 1.0), (100, 2.0), (200, 3.0)]), i64::MAX),
            None
        );
        assert_eq!(
            landmarks(&timeline(vec![(-100, 1.0), (0, 2.0), (100, 3.0)]), i64::MAX),
            None
        );
        assert_eq!(landmarks(&timeline(vec![]), i64::MAX), None);
    }
}
