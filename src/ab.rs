//! Two variants of a case measured in one run, their runs interleaved
//! (A B, then B A, ...), compared the way Firecracker's A/B tests compare two
//! builds: the change of the variant's median against the reference's,
//! a bootstrap interval of that change, and an exact permutation test
//! (Mann-Whitney's, on ranks) of whether the two samples differ at all. Both variants live through the same
//! drift of the machine, so what the test finds is the variant's doing,
//! not the machine's; a stored baseline cannot promise that.

use crate::baseline::{quantile, resampled_medians, Change, Estimate, SEED, TAIL};
use crate::metrics::Better;
use crate::stats::sorted;
use serde::{Deserialize, Serialize};

/// A difference this unlikely under "both variants are the same" is
/// taken as real (two-sided).
pub const SIGNIFICANCE: f64 = 0.05;

/// Fewest runs of each variant a comparison can conclude from: with
/// three and three, even two samples apart in every run have a
/// permutation p of 0.1, so no change could ever be significant.
pub const MIN_RUNS: usize = 4;

/// Above this many ways to split the runs, the permutation test draws
/// this many at random (seeded) instead of going through them all.
const PERMUTATIONS: usize = 20_000;

/// One metric of the variant against the reference, from runs of one
/// case interleaved on the same lab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantComparison {
    pub reference: Estimate,
    pub variant: Estimate,
    /// Change of the variant's median, percent of the reference's.
    pub change_pct: f64,
    /// 95 % bootstrap interval of that change, percent.
    pub interval_pct: (f64, f64),
    /// Two-sided p-value of the samples' rank sums (`permutation_p`).
    pub p_value: f64,
    /// How far the variant may be worse before the case fails, percent.
    pub bound_pct: f64,
    pub change: Change,
}

/// Compares the variant's values with the reference's: a regression when
/// the samples differ significantly and the variant's median is worse by
/// more than `bound` (a fraction: 0.1 for 10 %); an improvement likewise
/// the other way; noise otherwise. None with fewer than `MIN_RUNS` values
/// of either, or a reference median of zero.
pub fn compare_variants(
    reference: &[f64],
    variant: &[f64],
    better: Better,
    bound: f64,
) -> Option<VariantComparison> {
    if reference.len() < MIN_RUNS || variant.len() < MIN_RUNS {
        return None;
    }
    let (a, b) = (Estimate::of(reference)?, Estimate::of(variant)?);
    if a.median <= 0.0 {
        return None;
    }
    let mut rng = fastrand::Rng::with_seed(SEED);
    let changes = sorted(
        resampled_medians(reference, &mut rng)
            .into_iter()
            .zip(resampled_medians(variant, &mut rng))
            .filter(|(ra, _)| *ra > 0.0)
            .map(|(ra, rb)| (rb / ra - 1.0) * 100.0)
            .collect(),
    );
    let change_pct = (b.median / a.median - 1.0) * 100.0;
    let p_value = permutation_p(reference, variant);
    let bound_pct = bound * 100.0;
    let change = Change::of(p_value < SIGNIFICANCE, change_pct, bound_pct, better);
    Some(VariantComparison {
        reference: a,
        variant: b,
        change_pct,
        interval_pct: (quantile(&changes, TAIL), quantile(&changes, 1.0 - TAIL)),
        p_value,
        bound_pct,
        change,
    })
}

/// The share of the ways to split all the values into two groups of the
/// samples' sizes whose rank sums lie at least as far from what chance
/// gives as the samples' do (the observed split counts): the
/// Mann-Whitney test, exact. Ranks rather than medians: with a few runs
/// a median barely moves when runs change sides, so its test could never
/// conclude, and a single stray run weighs no more than any other. Every
/// split when there are at most `PERMUTATIONS`, else that many random
/// ones.
fn permutation_p(a: &[f64], b: &[f64]) -> f64 {
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let ranks = ranks(&all);
    let expected = a.len() as f64 * (all.len() + 1) as f64 / 2.0;
    let distance = |in_a: &[bool]| {
        let sum: f64 = ranks
            .iter()
            .zip(in_a)
            .filter(|(_, &x)| x)
            .map(|(r, _)| r)
            .sum();
        (sum - expected).abs()
    };
    let observed_split: Vec<bool> = (0..all.len()).map(|i| i < a.len()).collect();
    // At least as far apart as the samples, allowing for rounding.
    let observed = distance(&observed_split) - 1e-9;
    match splits(all.len(), a.len()) {
        Some(every) => {
            let far = every
                .iter()
                .filter(|in_a| distance(in_a) >= observed)
                .count();
            far as f64 / every.len() as f64
        }
        None => {
            let mut rng = fastrand::Rng::with_seed(SEED);
            let mut in_a = observed_split;
            let far = (0..PERMUTATIONS)
                .filter(|_| {
                    rng.shuffle(&mut in_a);
                    distance(&in_a) >= observed
                })
                .count();
            // The observed split is one of the possible ones.
            (far + 1) as f64 / (PERMUTATIONS + 1) as f64
        }
    }
}

/// Each value's rank among `values` (1 for the least), tied values
/// sharing the mean of their ranks.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let end = (start..order.len())
            .find(|&k| values[order[k]] != values[order[start]])
            .unwrap_or(order.len());
        // Positions start..end hold equal values: ranks start+1 ..= end.
        let shared = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = shared;
        }
        start = end;
    }
    ranks
}

/// Every way to choose `k` of `n` places, as masks; None when there are
/// more than `PERMUTATIONS`.
fn splits(n: usize, k: usize) -> Option<Vec<Vec<bool>>> {
    let count = (0..k).try_fold(1usize, |c, i| c.checked_mul(n - i).map(|c| c / (i + 1)))?;
    if count > PERMUTATIONS {
        return None;
    }
    fn choose(from: usize, n: usize, left: usize, mask: &mut Vec<bool>, out: &mut Vec<Vec<bool>>) {
        if left == 0 {
            out.push(mask.clone());
            return;
        }
        for i in from..=n - left {
            mask[i] = true;
            choose(i + 1, n, left - 1, mask, out);
            mask[i] = false;
        }
    }
    let mut out = Vec::with_capacity(count);
    choose(0, n, k, &mut vec![false; n], &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    /// Runs around `centre` with a spread of a few percent, as a quiet
    /// machine gives.
    fn runs(centre: f64) -> Vec<f64> {
        [0.98, 1.01, 0.99, 1.03, 1.00, 0.97]
            .iter()
            .map(|f| f * centre)
            .collect()
    }

    #[test]
    fn a_variant_against_itself_is_noise() {
        let c = compare_variants(&runs(1000.0), &runs(1000.0), Better::Lower, 0.05).unwrap();
        assert_eq!(c.change, Change::Noise);
        assert_relative_eq!(c.change_pct, 0.0);
        assert!(c.p_value > 0.5, "{c:?}");
        assert!(c.interval_pct.0 < 0.0 && c.interval_pct.1 > 0.0, "{c:?}");
    }

    #[test]
    fn a_slower_variant_beyond_the_bound_is_a_regression() {
        let c = compare_variants(&runs(1000.0), &runs(1150.0), Better::Lower, 0.10).unwrap();
        assert_eq!(c.change, Change::Regression);
        assert_relative_eq!(c.change_pct, 15.0, epsilon = 1e-9);
        assert!(c.p_value < SIGNIFICANCE, "{c:?}");
        assert!(c.interval_pct.0 > 10.0, "{c:?}");
    }

    #[test]
    fn a_slower_variant_within_the_bound_is_noise() {
        let c = compare_variants(&runs(1000.0), &runs(1080.0), Better::Lower, 0.10).unwrap();
        assert!(c.p_value < SIGNIFICANCE, "{c:?}");
        assert_eq!(c.change, Change::Noise);
    }

    #[test]
    fn higher_is_better_turns_the_direction() {
        let c = compare_variants(&runs(1000.0), &runs(800.0), Better::Higher, 0.10).unwrap();
        assert_eq!(c.change, Change::Regression);
        let c = compare_variants(&runs(800.0), &runs(1000.0), Better::Higher, 0.10).unwrap();
        assert_eq!(c.change, Change::Improvement);
    }

    #[test]
    fn overlapping_samples_are_not_significant_however_far_their_medians() {
        let a = [100.0, 300.0, 110.0, 290.0, 105.0];
        let b = [120.0, 310.0, 280.0, 300.0, 115.0];
        let c = compare_variants(&a, &b, Better::Lower, 0.05).unwrap();
        assert!(c.change_pct > 100.0, "{c:?}");
        assert!(c.p_value >= SIGNIFICANCE, "{c:?}");
        assert_eq!(c.change, Change::Noise);
    }

    #[test]
    fn too_few_runs_compare_nothing() {
        let three = [1.0, 2.0, 3.0];
        assert_eq!(
            compare_variants(&three, &[4.0, 5.0, 6.0, 7.0], Better::Lower, 0.1),
            None
        );
    }

    #[test]
    fn the_exact_test_of_separated_samples_of_four_is_its_smallest_p() {
        // Of the 70 ways to split eight values four and four, two are as
        // far apart as all-low against all-high.
        let p = permutation_p(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
        assert_relative_eq!(p, 2.0 / 70.0);
        // Three and three: two of twenty, never significant.
        let p = permutation_p(&[1.0, 2.0, 3.0], &[5.0, 6.0, 7.0]);
        assert_relative_eq!(p, 2.0 / 20.0);
        assert!(p >= SIGNIFICANCE);
    }

    #[test]
    fn many_runs_draw_their_permutations() {
        let a: Vec<f64> = (0..20).map(|i| 100.0 + i as f64).collect();
        let b: Vec<f64> = (0..20).map(|i| 150.0 + i as f64).collect();
        assert_eq!(splits(40, 20), None);
        let p = permutation_p(&a, &b);
        assert!(p < 0.001, "{p}");
        assert_eq!(p, permutation_p(&a, &b), "seeded: the same every time");
    }

    #[test]
    fn ties_share_their_ranks() {
        assert_eq!(ranks(&[30.0, 10.0, 20.0, 10.0]), [4.0, 1.5, 3.0, 1.5]);
    }

    #[test]
    fn splits_are_every_choice_once() {
        let all = splits(5, 2).unwrap();
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|m| m.iter().filter(|&&x| x).count() == 2));
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
    }
}
