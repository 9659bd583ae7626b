//! Accuracy, PGR and their aggregation over seeds.
//!
//! PGR (performance gap recovered) is `(transfer - weak) / (ceiling - weak)`,
//! where `weak` and `ceiling` are *fixed* baselines: means over a pinned set of
//! seeds, so that a score never moves because someone added a result file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Label;

/// Why a metric could not be computed. PGR in particular is never a made-up number.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricError {
    /// Predictions and labels differ in length.
    #[error("{predictions} predictions for {labels} labels")]
    LengthMismatch {
        /// Number of predictions given.
        predictions: usize,
        /// Number of labels they are scored against.
        labels: usize,
    },
    /// Nothing to average.
    #[error("no values to aggregate")]
    Empty,
    /// A value is NaN or infinite.
    #[error("value {index} is not a finite number ({value})")]
    NotFinite {
        /// Position of the offending value.
        index: usize,
        /// The value itself.
        value: f64,
    },
    /// An accuracy outside [0, 1].
    #[error("accuracy {0} is outside [0, 1]")]
    AccuracyOutOfRange(f64),
    /// PGR is undefined when the ceiling does not beat the weak baseline.
    #[error(
        "PGR is undefined: the ceiling ({ceiling:.4}) does not beat the weak baseline ({weak:.4})"
    )]
    CeilingNotAboveWeak {
        /// Weak baseline accuracy.
        weak: f64,
        /// Ceiling accuracy.
        ceiling: f64,
    },
}

/// Correct count, total and their ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// Predictions equal to their label.
    pub correct: usize,
    /// Number of predictions.
    pub total: usize,
    /// `correct / total`.
    pub accuracy: f64,
}

/// Accuracy of `predictions` against `labels`; both must be non-empty and of one length.
pub fn accuracy(predictions: &[Label], labels: &[Label]) -> Result<Accuracy, MetricError> {
    if predictions.len() != labels.len() {
        return Err(MetricError::LengthMismatch {
            predictions: predictions.len(),
            labels: labels.len(),
        });
    }
    if labels.is_empty() {
        return Err(MetricError::Empty);
    }
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(Accuracy {
        correct,
        total: labels.len(),
        accuracy: correct as f64 / labels.len() as f64,
    })
}

/// Accuracy per subset name; rows without a subset are left out of this breakdown.
pub fn accuracy_per_subset(
    predictions: &[Label],
    labels: &[Label],
    subsets: &[Option<&str>],
) -> Result<BTreeMap<String, Accuracy>, MetricError> {
    if predictions.len() != labels.len() || subsets.len() != labels.len() {
        return Err(MetricError::LengthMismatch {
            predictions: predictions.len(),
            labels: labels.len().min(subsets.len()),
        });
    }
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for ((p, l), s) in predictions.iter().zip(labels).zip(subsets) {
        if let Some(s) = s {
            let entry = counts.entry(s).or_default();
            entry.0 += usize::from(p == l);
            entry.1 += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|(name, (correct, total))| {
            let acc = Accuracy {
                correct,
                total,
                accuracy: correct as f64 / total as f64,
            };
            (name.to_owned(), acc)
        })
        .collect())
}

/// Mean and standard error (sample standard deviation with ddof=1, over sqrt(n)).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSe {
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard error of the mean; `None` for a single value.
    pub se: Option<f64>,
    /// Number of values.
    pub n: usize,
}

impl MeanSe {
    /// Aggregates finite values; an empty slice or a NaN is an error.
    pub fn from_values(values: &[f64]) -> Result<MeanSe, MetricError> {
        if values.is_empty() {
            return Err(MetricError::Empty);
        }
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(MetricError::NotFinite { index, value });
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let se = (n > 1).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            (var / n as f64).sqrt()
        });
        Ok(MeanSe { mean, se, n })
    }
}

impl std::fmt::Display for MeanSe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.se {
            Some(se) => write!(f, "{:.4} +- {:.4} (n={})", self.mean, se, self.n),
            None => write!(f, "{:.4} (n=1)", self.mean),
        }
    }
}

/// The fixed weak and ceiling baselines PGR is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FixedBaselines {
    /// Weak teacher test accuracy over the pinned seeds.
    pub weak: MeanSe,
    /// Ceiling (strong student on gold labels) test accuracy over the pinned seeds.
    pub ceiling: MeanSe,
}

impl FixedBaselines {
    /// Aggregates per-seed accuracies; PGR must be defined for the result.
    pub fn from_seed_accuracies(
        weak: &[f64],
        ceiling: &[f64],
    ) -> Result<FixedBaselines, MetricError> {
        let baselines = FixedBaselines {
            weak: MeanSe::from_values(weak)?,
            ceiling: MeanSe::from_values(ceiling)?,
        };
        for acc in weak.iter().chain(ceiling) {
            check_accuracy(*acc)?;
        }
        baselines.gap()?;
        Ok(baselines)
    }

    /// `ceiling - weak`, or an error when it is not positive.
    pub fn gap(&self) -> Result<f64, MetricError> {
        let (weak, ceiling) = (self.weak.mean, self.ceiling.mean);
        if ceiling > weak {
            Ok(ceiling - weak)
        } else {
            Err(MetricError::CeilingNotAboveWeak { weak, ceiling })
        }
    }

    /// PGR of one transfer accuracy.
    pub fn pgr(&self, transfer_accuracy: f64) -> Result<f64, MetricError> {
        check_accuracy(transfer_accuracy)?;
        Ok((transfer_accuracy - self.weak.mean) / self.gap()?)
    }

    /// PGR per seed, then mean and standard error over seeds.
    pub fn pgr_over_seeds(&self, transfer_accuracies: &[f64]) -> Result<MeanSe, MetricError> {
        let per_seed = transfer_accuracies
            .iter()
            .map(|&acc| self.pgr(acc))
            .collect::<Result<Vec<_>, _>>()?;
        MeanSe::from_values(&per_seed)
    }
}

fn check_accuracy(value: f64) -> Result<(), MetricError> {
    if !value.is_finite() {
        return Err(MetricError::NotFinite { index: 0, value });
    }
    if !(0.0..=1.0).contains(&value) {
        return Err(MetricError::AccuracyOutOfRange(value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{One, Zero};

    #[test]
    fn accuracy_counts_matches() {
        let acc = accuracy(&[Zero, One, One, Zero], &[Zero, One, Zero, Zero]).unwrap();
        assert_eq!((acc.correct, acc.total), (3, 4));
        assert!((acc.accuracy - 0.75).abs() < 1e-12);
    }

    #[test]
    fn accuracy_rejects_length_mismatch_and_empty() {
        assert_eq!(
            accuracy(&[Zero], &[Zero, One]),
            Err(MetricError::LengthMismatch {
                predictions: 1,
                labels: 2
            })
        );
        assert_eq!(accuracy(&[], &[]), Err(MetricError::Empty));
    }

    #[test]
    fn per_subset_accuracy_splits_rows() {
        let by = accuracy_per_subset(
            &[Zero, One, One],
            &[Zero, Zero, One],
            &[Some("a"), Some("a"), Some("b")],
        )
        .unwrap();
        assert_eq!(by["a"].correct, 1);
        assert_eq!(by["a"].total, 2);
        assert_eq!(by["b"].accuracy, 1.0);
    }

    #[test]
    fn mean_and_standard_error_use_ddof_1() {
        // values 1,2,3,4: mean 2.5, sample var 5/3, se = sqrt(5/3/4)
        let m = MeanSe::from_values(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((m.mean - 2.5).abs() < 1e-12);
        assert!((m.se.unwrap() - (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
        assert_eq!(MeanSe::from_values(&[0.3]).unwrap().se, None);
        assert!(matches!(
            MeanSe::from_values(&[1.0, f64::NAN]),
            Err(MetricError::NotFinite { index: 1, .. })
        ));
    }

    #[test]
    fn pgr_is_gap_recovered() {
        let b = FixedBaselines::from_seed_accuracies(&[0.5, 0.6], &[0.8, 0.9]).unwrap();
        // W = 0.55, S = 0.85
        assert!((b.pgr(0.55).unwrap()).abs() < 1e-12);
        assert!((b.pgr(0.85).unwrap() - 1.0).abs() < 1e-12);
        assert!((b.pgr(0.70).unwrap() - 0.5).abs() < 1e-12);
        let over = b.pgr_over_seeds(&[0.70, 0.85]).unwrap();
        assert!((over.mean - 0.75).abs() < 1e-12);
    }

    #[test]
    fn pgr_is_an_error_when_ceiling_does_not_beat_weak() {
        let err = FixedBaselines::from_seed_accuracies(&[0.7], &[0.7]).unwrap_err();
        assert!(matches!(err, MetricError::CeilingNotAboveWeak { .. }));
        assert!(err.to_string().contains("undefined"));
    }

    #[test]
    fn pgr_rejects_accuracies_outside_unit_interval() {
        let b = FixedBaselines::from_seed_accuracies(&[0.5], &[0.8]).unwrap();
        assert!(matches!(
            b.pgr(1.5),
            Err(MetricError::AccuracyOutOfRange(_))
        ));
        assert!(matches!(
            b.pgr(f64::NAN),
            Err(MetricError::NotFinite { .. })
        ));
    }
}
