//! PGR with an error that includes the test set's own sampling noise.
//!
//! Seeds only measure training noise: with 500 test rows an accuracy carries about
//! +-0.022 of sampling error, which is +-0.13 PGR on a 0.16 gap. The estimate here
//! resamples the test rows (a paired bootstrap: the weak teacher, the ceiling and
//! the method are scored on the *same* resampled rows in every replicate, so what
//! they share cancels) and combines that spread with the seeds' standard error in
//! quadrature:
//!
//! `se = sqrt(se_seeds^2 + se_test^2)`.
//!
//! The test part is the replicates' percentile spread (half their central 68%
//! width), not their standard deviation: PGR is a ratio, and replicates whose
//! resampled gap is near zero would otherwise dominate it.
//!
//! Comparisons (entry vs vanilla, entry vs entry) bootstrap the difference of the two
//! PGRs on the same replicates and call it significant when it is more than 1.96 of
//! its own error away from zero (a two-sided 95% test under a normal approximation).

use serde::{Deserialize, Serialize};

use crate::metrics::{MeanSe, MetricError};

/// Replicates per estimate: the bootstrap SE's own relative error is about
/// `1/sqrt(2 * 1000)`, 2%.
pub const DEFAULT_RESAMPLES: usize = 1000;

/// |difference| / error above which a comparison is called significant (95%, two-sided).
pub const SIGNIFICANCE_Z: f64 = 1.96;

/// Which rows of one split one run (one seed) got right, in the split's row order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CorrectRows(Vec<bool>);

impl CorrectRows {
    /// From per-row outcomes.
    pub fn new(rows: Vec<bool>) -> CorrectRows {
        CorrectRows(rows)
    }

    /// From predictions and labels of the same rows.
    pub fn score<T: PartialEq>(
        predictions: &[T],
        labels: &[T],
    ) -> Result<CorrectRows, MetricError> {
        if predictions.len() != labels.len() {
            return Err(MetricError::LengthMismatch {
                predictions: predictions.len(),
                labels: labels.len(),
            });
        }
        Ok(CorrectRows(
            predictions
                .iter()
                .zip(labels)
                .map(|(p, l)| p == l)
                .collect(),
        ))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fraction right.
    pub fn accuracy(&self) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.iter().filter(|c| **c).count() as f64 / self.0.len() as f64
    }

    /// The outcomes.
    pub fn rows(&self) -> &[bool] {
        &self.0
    }
}

/// Stored as a string of `0` and `1`, one character per row: compact in JSON result files.
impl From<CorrectRows> for String {
    fn from(rows: CorrectRows) -> String {
        rows.0.iter().map(|c| if *c { '1' } else { '0' }).collect()
    }
}

impl TryFrom<String> for CorrectRows {
    type Error = String;

    fn try_from(text: String) -> Result<CorrectRows, String> {
        text.chars()
            .enumerate()
            .map(|(i, c)| match c {
                '1' => Ok(true),
                '0' => Ok(false),
                other => Err(format!(
                    "correct rows: character {i} is {other:?}, expected '0' or '1'"
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(CorrectRows)
    }
}

/// The per-seed outcomes PGR is computed from, all on the same split.
#[derive(Debug, Clone, Copy)]
pub struct PgrRuns<'a> {
    /// The weak teacher's pinned seeds.
    pub weak: &'a [CorrectRows],
    /// The ceiling's pinned seeds.
    pub ceiling: &'a [CorrectRows],
}

/// PGR with its error, split into where the error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PgrEstimate {
    /// PGR of the seed-mean accuracies, `(mean(V) - mean(W)) / (mean(S) - mean(W))`
    /// (equal to the mean of per-seed PGRs against the fixed baselines).
    pub pgr: f64,
    /// Standard error over the method's training seeds (`None` with one seed).
    pub se_seeds: Option<f64>,
    /// Bootstrap standard error over the test rows (weak, ceiling and method resampled
    /// together).
    pub se_test: f64,
    /// `sqrt(se_seeds^2 + se_test^2)`: the error to quote.
    pub se: f64,
    /// Test rows.
    pub rows: usize,
    /// The method's seeds.
    pub seeds: usize,
    /// Replicates in which the resampled ceiling did not beat the resampled weak
    /// teacher (PGR undefined there; left out of `se_test`).
    pub undefined_replicates: usize,
}

impl std::fmt::Display for PgrEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} +- {:.3}", self.pgr, self.se)
    }
}

/// The difference of two PGRs on the same split, `a - b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PgrDifference {
    /// `pgr(a) - pgr(b)`.
    pub difference: f64,
    /// Its error: paired bootstrap over test rows, combined with both methods' seed
    /// errors (independent training runs).
    pub se: f64,
    /// `|difference| > 1.96 se`.
    pub significant: bool,
}

impl PgrDifference {
    /// "+0.120 +- 0.040, significant" or "... within noise".
    pub fn describe(&self) -> String {
        format!(
            "{:+.3} +- {:.3}, {}",
            self.difference,
            self.se,
            if self.significant {
                "significant"
            } else {
                "within noise"
            }
        )
    }
}

/// Errors in the shape of the inputs, beyond what [`MetricError`] names.
fn check_shapes(runs: &PgrRuns<'_>, methods: &[&[CorrectRows]]) -> Result<usize, MetricError> {
    let all = runs
        .weak
        .iter()
        .chain(runs.ceiling)
        .chain(methods.iter().flat_map(|m| m.iter()));
    let mut rows = None;
    for run in all {
        match rows {
            None => rows = Some(run.len()),
            Some(n) if n != run.len() => {
                return Err(MetricError::LengthMismatch {
                    predictions: run.len(),
                    labels: n,
                });
            }
            Some(_) => {}
        }
    }
    if runs.weak.is_empty() || runs.ceiling.is_empty() || methods.iter().any(|m| m.is_empty()) {
        return Err(MetricError::Empty);
    }
    match rows {
        Some(n) if n > 0 => Ok(n),
        _ => Err(MetricError::Empty),
    }
}

fn mean_accuracy(runs: &[CorrectRows]) -> f64 {
    runs.iter().map(CorrectRows::accuracy).sum::<f64>() / runs.len() as f64
}

/// Per-row count of correct runs, so a replicate's mean accuracy is one weighted sum.
fn correct_counts(runs: &[CorrectRows], rows: usize) -> Vec<u32> {
    let mut counts = vec![0u32; rows];
    for run in runs {
        for (count, correct) in counts.iter_mut().zip(run.rows()) {
            *count += u32::from(*correct);
        }
    }
    counts
}

fn seeds_se(
    runs: &PgrRuns<'_>,
    method: &[CorrectRows],
    gap: f64,
) -> Result<Option<f64>, MetricError> {
    let weak = mean_accuracy(runs.weak);
    let per_seed: Vec<f64> = method.iter().map(|m| (m.accuracy() - weak) / gap).collect();
    Ok(MeanSe::from_values(&per_seed)?.se)
}

/// Bootstrap replicates of `(mean W, mean S, mean method_i ...)` on resampled rows.
struct Replicates {
    /// One row per replicate: weak, ceiling, then each method's mean accuracy.
    means: Vec<Vec<f64>>,
}

fn replicate(
    runs: &PgrRuns<'_>,
    methods: &[&[CorrectRows]],
    rows: usize,
    resamples: usize,
    seed: u64,
) -> Replicates {
    let groups: Vec<(Vec<u32>, f64)> = [runs.weak, runs.ceiling]
        .into_iter()
        .chain(methods.iter().copied())
        .map(|g| (correct_counts(g, rows), g.len() as f64))
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut weights = vec![0u32; rows];
    let means = (0..resamples)
        .map(|_| {
            weights.iter_mut().for_each(|w| *w = 0);
            for _ in 0..rows {
                weights[rng.usize(..rows)] += 1;
            }
            groups
                .iter()
                .map(|(counts, runs)| {
                    let hits: u64 = counts
                        .iter()
                        .zip(&weights)
                        .map(|(c, w)| u64::from(*c) * u64::from(*w))
                        .sum();
                    hits as f64 / (rows as f64 * runs)
                })
                .collect()
        })
        .collect();
    Replicates { means }
}

/// The replicates' spread as a standard error: half the width between their 15.87th
/// and 84.13th percentiles, which equals the standard deviation for a normal
/// distribution. PGR is a ratio: when the gap is small, a few replicates with a
/// near-zero resampled gap take huge values and would blow a plain standard deviation
/// up (measured on a 64-row split: 1.05 against a delta-method 0.49); the percentile
/// width is what a 68% interval would show.
fn spread(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        // Linear interpolation between order statistics (numpy's default).
        let position = q * (sorted.len() - 1) as f64;
        let (low, high) = (position.floor() as usize, position.ceil() as usize);
        sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
    };
    (at(0.841_344_746) - at(0.158_655_254)) / 2.0
}

/// PGR of `method` (its seeds' outcomes on the split) with an error that includes the
/// test rows' sampling noise. `seed` fixes the resampling, so a report is reproducible.
pub fn pgr_estimate(
    runs: &PgrRuns<'_>,
    method: &[CorrectRows],
    resamples: usize,
    seed: u64,
) -> Result<PgrEstimate, MetricError> {
    let rows = check_shapes(runs, &[method])?;
    let (weak, ceiling) = (mean_accuracy(runs.weak), mean_accuracy(runs.ceiling));
    if ceiling <= weak {
        return Err(MetricError::CeilingNotAboveWeak { weak, ceiling });
    }
    let gap = ceiling - weak;
    let pgr = (mean_accuracy(method) - weak) / gap;
    let se_seeds = seeds_se(runs, method, gap)?;
    let replicates = replicate(runs, &[method], rows, resamples, seed);
    let mut undefined = 0;
    let pgrs: Vec<f64> = replicates
        .means
        .iter()
        .filter_map(|m| {
            let gap = m[1] - m[0];
            if gap > 0.0 {
                Some((m[2] - m[0]) / gap)
            } else {
                undefined += 1;
                None
            }
        })
        .collect();
    let se_test = spread(&pgrs);
    let se = (se_seeds.unwrap_or(0.0).powi(2) + se_test.powi(2)).sqrt();
    Ok(PgrEstimate {
        pgr,
        se_seeds,
        se_test,
        se,
        rows,
        seeds: method.len(),
        undefined_replicates: undefined,
    })
}

/// `pgr(a) - pgr(b)` on the same split, with a paired bootstrap over the test rows and
/// both methods' seed errors, and whether it is significant.
pub fn pgr_difference(
    runs: &PgrRuns<'_>,
    a: &[CorrectRows],
    b: &[CorrectRows],
    resamples: usize,
    seed: u64,
) -> Result<PgrDifference, MetricError> {
    let rows = check_shapes(runs, &[a, b])?;
    let (weak, ceiling) = (mean_accuracy(runs.weak), mean_accuracy(runs.ceiling));
    if ceiling <= weak {
        return Err(MetricError::CeilingNotAboveWeak { weak, ceiling });
    }
    let gap = ceiling - weak;
    let difference = (mean_accuracy(a) - mean_accuracy(b)) / gap;
    let seeds_a = seeds_se(runs, a, gap)?.unwrap_or(0.0);
    let seeds_b = seeds_se(runs, b, gap)?.unwrap_or(0.0);
    let replicates = replicate(runs, &[a, b], rows, resamples, seed);
    let differences: Vec<f64> = replicates
        .means
        .iter()
        .filter(|m| m[1] > m[0])
        .map(|m| (m[2] - m[3]) / (m[1] - m[0]))
        .collect();
    let se = (seeds_a.powi(2) + seeds_b.powi(2) + spread(&differences).powi(2)).sqrt();
    Ok(PgrDifference {
        difference,
        se,
        significant: difference.abs() > SIGNIFICANCE_Z * se,
    })
}

/// The test-noise error a split of `rows` rows can give at best for a task whose
/// weak and ceiling accuracies are `weak` and `ceiling`, before any method is run:
/// the standard error of a paired accuracy difference, `sqrt(d / rows)` with `d` the
/// fraction of rows on which two runs disagree (at least `ceiling - weak`), over the
/// gap. Used to size splits and to say in a table when a source is too small.
pub fn expected_test_se(rows: usize, weak: f64, ceiling: f64) -> Option<f64> {
    let gap = ceiling - weak;
    if gap <= 0.0 || rows == 0 {
        return None;
    }
    Some((gap / rows as f64).sqrt() / gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_with(n: usize, correct: usize, offset: usize) -> CorrectRows {
        CorrectRows::new((0..n).map(|i| (i + offset) % n < correct).collect())
    }

    #[test]
    fn rows_round_trip_as_a_string_and_reject_other_characters() {
        let rows = CorrectRows::new(vec![true, false, true]);
        let json = serde_json::to_string(&rows).unwrap();
        assert_eq!(json, "\"101\"");
        assert_eq!(serde_json::from_str::<CorrectRows>(&json).unwrap(), rows);
        let err = serde_json::from_str::<CorrectRows>("\"10x\"").unwrap_err();
        assert!(err.to_string().contains("character 2"), "{err}");
    }

    #[test]
    fn bootstrap_of_one_accuracy_matches_the_binomial_standard_error() {
        // A method run whose baselines are constant across rows' resampling: weak
        // right on no row, ceiling right on every row, so gap = 1 in every replicate
        // and PGR = the method's accuracy. Its bootstrap SE must be
        // sqrt(p (1 - p) / n) (hand computation: p = 0.7, n = 2000 -> 0.010247).
        let n = 2000;
        let weak = [CorrectRows::new(vec![false; n])];
        let ceiling = [CorrectRows::new(vec![true; n])];
        let method = [rows_with(n, 1400, 0)];
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        let est = pgr_estimate(&runs, &method, 4000, 7).unwrap();
        assert!((est.pgr - 0.7).abs() < 1e-12);
        let binomial = (0.7f64 * 0.3 / n as f64).sqrt();
        assert!(
            (est.se_test - binomial).abs() < 0.05 * binomial,
            "{} vs {binomial}",
            est.se_test
        );
        assert_eq!(est.se_seeds, None);
        assert!((est.se - est.se_test).abs() < 1e-15);
    }

    #[test]
    fn pairing_cancels_what_runs_share() {
        // The method agrees with the weak teacher except on 20 of 1000 rows, where it is
        // right and the teacher wrong: the paired error of (V - W) is about
        // sqrt(0.02 / 1000) = 0.0045, far below the unpaired sqrt(2 * 0.25 / 1000) = 0.022.
        let n = 1000;
        let weak = [rows_with(n, 500, 0)];
        let method_rows: Vec<bool> = (0..n).map(|i| i < 520).collect();
        let method = [CorrectRows::new(method_rows)];
        let ceiling = [CorrectRows::new(vec![true; n])];
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        let est = pgr_estimate(&runs, &method, 2000, 1).unwrap();
        // PGR = 0.02 / 0.5; its error is dominated by the numerator: 0.0045 / 0.5 = 0.009.
        assert!((est.pgr - 0.04).abs() < 1e-12);
        assert!(
            est.se_test < 0.012 && est.se_test > 0.006,
            "{}",
            est.se_test
        );
    }

    #[test]
    fn seeds_and_test_errors_combine_in_quadrature() {
        let n = 400;
        let weak = [rows_with(n, 200, 0), rows_with(n, 200, 3)];
        let ceiling = [rows_with(n, 320, 0), rows_with(n, 320, 5)];
        let method = [rows_with(n, 240, 0), rows_with(n, 260, 0)];
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        let est = pgr_estimate(&runs, &method, 500, 3).unwrap();
        // Per-seed PGRs 40/120 and 60/120: mean 0.41667, SE = |0.5 - 0.3333| / 2.
        assert!((est.pgr - 50.0 / 120.0).abs() < 1e-12);
        let se_seeds = est.se_seeds.unwrap();
        assert!((se_seeds - (1.0 / 6.0) / 2.0).abs() < 1e-12, "{se_seeds}");
        let combined = (se_seeds.powi(2) + est.se_test.powi(2)).sqrt();
        assert!((est.se - combined).abs() < 1e-12);
        assert!(est.se > se_seeds && est.se > est.se_test);
    }

    #[test]
    fn the_same_seed_gives_the_same_estimate() {
        let n = 300;
        let weak = [rows_with(n, 150, 0)];
        let ceiling = [rows_with(n, 250, 0)];
        let method = [rows_with(n, 200, 7)];
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        let a = pgr_estimate(&runs, &method, 300, 11).unwrap();
        let b = pgr_estimate(&runs, &method, 300, 11).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn differences_are_significant_only_beyond_their_noise() {
        let n = 2000;
        let weak = [rows_with(n, 1000, 0)];
        let ceiling = [rows_with(n, 1400, 0)];
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        let vanilla = [rows_with(n, 1100, 0)];
        // 105 rows gained and 95 lost against vanilla: +0.025 PGR, inside the noise
        // (paired SE about sqrt(200 / 2000) / sqrt(2000) / 0.2 = 0.035).
        let close_rows: Vec<bool> = (0..n)
            .map(|i| i < 1005 || (1100..1205).contains(&i))
            .collect();
        let close = [CorrectRows::new(close_rows)];
        // Two hundred more: 0.5 PGR on rows where vanilla is wrong.
        let far = [rows_with(n, 1300, 0)];
        let near = pgr_difference(&runs, &close, &vanilla, 1000, 5).unwrap();
        assert!((near.difference - 0.025).abs() < 1e-12);
        assert!(!near.significant, "{}", near.describe());
        let big = pgr_difference(&runs, &far, &vanilla, 1000, 5).unwrap();
        assert!(big.significant, "{}", big.describe());
        assert!(big.describe().starts_with("+0.500"), "{}", big.describe());
    }

    #[test]
    fn bad_shapes_and_no_gap_are_errors() {
        let weak = [rows_with(10, 5, 0)];
        let ceiling = [rows_with(10, 5, 0)];
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        assert!(matches!(
            pgr_estimate(&runs, &[rows_with(10, 6, 0)], 10, 0),
            Err(MetricError::CeilingNotAboveWeak { .. })
        ));
        assert!(matches!(
            pgr_estimate(&runs, &[rows_with(9, 6, 0)], 10, 0),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert!(matches!(
            pgr_estimate(&runs, &[], 10, 0),
            Err(MetricError::Empty)
        ));
    }

    #[test]
    fn spread_interpolates_percentiles_and_ignores_a_far_tail() {
        let values = [-2.4, -1.35, -0.87, -0.44, 0.0, 0.44, 0.87, 1.35, 2.4];
        // As numpy.percentile: position 0.8413 * 8 = 6.73, between 0.87 and 1.35;
        // the lower percentile mirrors it.
        let expected = (1.350 - 0.87) * (0.841_344_746 * 8.0 - 6.0) + 0.87;
        assert!(
            (spread(&values) - expected).abs() < 1e-9,
            "{}",
            spread(&values)
        );
        // One replicate at 1e6 (a near-zero resampled gap) moves the spread by one
        // order statistic, not by a factor of a thousand.
        let mut tailed: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
        let before = spread(&tailed);
        tailed[999] = 1e6;
        assert!((spread(&tailed) - before).abs() < 1e-3);
    }

    #[test]
    fn expected_error_shrinks_with_the_square_root_of_rows() {
        let a = expected_test_se(500, 0.58, 0.74).unwrap();
        let b = expected_test_se(2000, 0.58, 0.74).unwrap();
        assert!((a / b - 2.0).abs() < 1e-9);
        assert_eq!(expected_test_se(500, 0.7, 0.7), None);
    }
}
