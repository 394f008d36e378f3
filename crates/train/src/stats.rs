//! Paired comparisons of trained variants: bootstrap confidence intervals over seeds and test
//! items, and verdicts on a claim decided by the interval, never by the means alone.
//!
//! An ablation trains every variant with the same seeds and scores every variant on the same test
//! items, so two variants can be compared item by item: for seed `s` and item `i` the paired
//! difference is `d[s][i] = score_A(s, i) − score_B(s, i)` (scores in `[0, 1]`: exact-match
//! correctness, or a fractional metric such as VQA accuracy). The mean of `d` is the accuracy
//! difference; its uncertainty comes from both the training seed and the finite test set, so
//! [`bootstrap`] resamples both: each resample draws seeds with replacement and, independently,
//! items with replacement, and takes the mean of `d` over the drawn seed × item grid. The 2.5 and
//! 97.5 percentiles of the resampled means give the 95 % interval.
//!
//! # Shapes
//!
//! A score table is `[seeds][items]`, every row the same length (item `i` is the same question in
//! every row and every variant).

use thiserror::Error;

use crate::data::Rng;

/// Errors of the comparisons.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StatsError {
    /// No seed, or no item.
    #[error("nothing to compare: {seeds} seeds × {items} items")]
    Empty {
        /// Rows (seeds) given.
        seeds: usize,
        /// Items in the first row.
        items: usize,
    },
    /// Rows of different lengths, or two tables of different shapes.
    #[error("score tables differ in shape: seed {seed} has {found} items, {expected} expected")]
    Shape {
        /// The offending row.
        seed: usize,
        /// Items expected (those of the first row of the first table).
        expected: usize,
        /// Items found.
        found: usize,
    },
}

/// A mean with its 95 % bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    /// The mean over every seed and item.
    pub mean: f64,
    /// The 2.5th percentile of the resampled means.
    pub low: f64,
    /// The 97.5th percentile of the resampled means.
    pub high: f64,
}

/// What a paper claims about two variants A and B.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Claim {
    /// A scores higher than B.
    Better,
    /// A and B score within `margin` (absolute, e.g. 0.02 for two points) of each other.
    Equivalent {
        /// Half-width of the equivalence band.
        margin: f64,
    },
}

/// The outcome of testing a [`Claim`] against an interval of `A − B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    /// The interval supports the claim (for [`Claim::Better`]: entirely above 0; for
    /// [`Claim::Equivalent`]: entirely inside the band).
    Reproduced,
    /// The interval excludes the claim (entirely below 0; or entirely outside the band).
    Contradicted,
    /// The interval is compatible with the claim and with its negation.
    Inconclusive,
}

impl Verdict {
    /// The word used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Contradicted => "contradicted",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The verdict of several claims that must all hold (an ordering `A > B > C`): contradicted if
    /// any part is, reproduced if every part is, else inconclusive.
    pub fn all(parts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut out = Verdict::Reproduced;
        for v in parts {
            match v {
                Verdict::Contradicted => return Verdict::Contradicted,
                Verdict::Inconclusive => out = Verdict::Inconclusive,
                Verdict::Reproduced => {}
            }
        }
        out
    }
}

/// The verdict on `claim` given the interval of `A − B`.
pub fn verdict(claim: Claim, diff: &Interval) -> Verdict {
    match claim {
        Claim::Better if diff.low > 0.0 => Verdict::Reproduced,
        Claim::Better if diff.high < 0.0 => Verdict::Contradicted,
        Claim::Equivalent { margin } if diff.low > -margin && diff.high < margin => Verdict::Reproduced,
        Claim::Equivalent { margin } if diff.low > margin || diff.high < -margin => Verdict::Contradicted,
        _ => Verdict::Inconclusive,
    }
}

fn check(table: &[Vec<f64>], expected: usize) -> Result<(), StatsError> {
    if table.is_empty() || expected == 0 {
        return Err(StatsError::Empty { seeds: table.len(), items: expected });
    }
    for (seed, row) in table.iter().enumerate() {
        if row.len() != expected {
            return Err(StatsError::Shape { seed, expected, found: row.len() });
        }
    }
    Ok(())
}

/// The paired differences `a − b`, element by element (`[seeds][items]`).
pub fn paired(a: &[Vec<f64>], b: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, StatsError> {
    let items = a.first().map_or(0, Vec::len);
    check(a, items)?;
    check(b, items)?;
    if a.len() != b.len() {
        return Err(StatsError::Shape { seed: a.len().min(b.len()), expected: a.len(), found: b.len() });
    }
    Ok(a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p - q).collect()).collect())
}

/// The mean of `table` (`[seeds][items]`) with its 95 % interval from `resamples` bootstrap draws
/// of seeds and items (both with replacement, independently), deterministic from `seed`.
pub fn bootstrap(table: &[Vec<f64>], resamples: usize, seed: u64) -> Result<Interval, StatsError> {
    let items = table.first().map_or(0, Vec::len);
    check(table, items)?;
    let seeds = table.len();
    let mean = table.iter().flatten().sum::<f64>() / (seeds * items) as f64;
    let mut rng = Rng(seed ^ 0xB007_57A7);
    let mut means = Vec::with_capacity(resamples);
    let mut drawn_items = vec![0usize; items];
    for _ in 0..resamples {
        for i in drawn_items.iter_mut() {
            *i = rng.below(items);
        }
        let mut sum = 0.0;
        for _ in 0..seeds {
            let row = &table[rng.below(seeds)];
            sum += drawn_items.iter().map(|&i| row[i]).sum::<f64>();
        }
        means.push(sum / (seeds * items) as f64);
    }
    if means.is_empty() {
        return Ok(Interval { mean, low: mean, high: mean });
    }
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Ok(Interval { mean, low: at(0.025), high: at(0.975) })
}

/// Bootstrap draws used by the reports.
pub const RESAMPLES: usize = 2000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_interval_not_the_mean() {
        let iv = |low, high| Interval { mean: (low + high) / 2.0, low, high };
        assert_eq!(verdict(Claim::Better, &iv(0.01, 0.05)), Verdict::Reproduced);
        assert_eq!(verdict(Claim::Better, &iv(-0.05, -0.01)), Verdict::Contradicted);
        // A positive mean whose interval crosses zero proves nothing.
        assert_eq!(verdict(Claim::Better, &iv(-0.01, 0.09)), Verdict::Inconclusive);
        let eq = Claim::Equivalent { margin: 0.02 };
        assert_eq!(verdict(eq, &iv(-0.01, 0.015)), Verdict::Reproduced);
        assert_eq!(verdict(eq, &iv(0.03, 0.08)), Verdict::Contradicted);
        assert_eq!(verdict(eq, &iv(-0.01, 0.05)), Verdict::Inconclusive);
        use Verdict::*;
        assert_eq!(Verdict::all([Reproduced, Reproduced]), Reproduced);
        assert_eq!(Verdict::all([Reproduced, Inconclusive]), Inconclusive);
        assert_eq!(Verdict::all([Inconclusive, Contradicted]), Contradicted);
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_and_shrinks_with_data() {
        // A beats B on 60 % of items for every seed, ties elsewhere.
        let row = |n: usize| (0..n).map(|i| if i % 5 < 3 { 1.0 } else { 0.0 }).collect::<Vec<f64>>();
        let small = bootstrap(&vec![row(50); 3], 1000, 1).unwrap();
        let large = bootstrap(&vec![row(2000); 3], 1000, 1).unwrap();
        for iv in [small, large] {
            assert!((iv.mean - 0.6).abs() < 1e-12);
            assert!(iv.low <= iv.mean && iv.mean <= iv.high, "{iv:?}");
        }
        assert!(large.high - large.low < (small.high - small.low) / 3.0, "{small:?} vs {large:?}");
        // 2000 items at p = 0.6: the standard error is 1.1 points, the interval about ±2.1.
        assert!((large.high - large.low - 0.043).abs() < 0.01, "{large:?}");
        // Seeds that disagree widen the interval even with many items.
        let seeds = vec![vec![1.0; 2000], vec![0.0; 2000], vec![1.0; 2000], vec![0.0; 2000]];
        let iv = bootstrap(&seeds, 1000, 1).unwrap();
        assert!(iv.high - iv.low > 0.4, "{iv:?}");
        // Deterministic from its seed.
        assert_eq!(bootstrap(&vec![row(50); 3], 200, 7).unwrap(), bootstrap(&vec![row(50); 3], 200, 7).unwrap());
    }

    #[test]
    fn paired_differences_and_shape_errors() {
        let a = vec![vec![1.0, 0.0, 1.0], vec![1.0, 1.0, 0.0]];
        let b = vec![vec![0.0, 0.0, 1.0], vec![1.0, 0.0, 1.0]];
        assert_eq!(paired(&a, &b).unwrap(), vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, -1.0]]);
        assert!(matches!(paired(&a, &b[..1]), Err(StatsError::Shape { .. })));
        assert!(matches!(paired(&a, &[vec![1.0], vec![0.0]]), Err(StatsError::Shape { seed: 0, .. })));
        assert!(matches!(bootstrap(&[], 10, 0), Err(StatsError::Empty { .. })));
    }
}
