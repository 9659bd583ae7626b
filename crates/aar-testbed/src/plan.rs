//! Training plans: how a researcher's own code (numpy, torch, anything that writes
//! `.npy`) tells the engine what to train the task's student on.
//!
//! ```json
//! {"targets": "targets.npy",
//!  "weights": "weights.npy",
//!  "loss": "cross_entropy",
//!  "head": {"hidden": 0, "epochs": 50, "batch_size": 256, "learning_rate": 0.01,
//!           "weight_decay": 0.0, "l2": 1.0}}
//! ```
//!
//! - `targets`: float32/float64 `.npy`, one row per `train_unlabel` row in file order:
//!   shape `[n, 2]` (`p(label 0), p(label 1)`, each row summing to 1) or `[n]`
//!   (`p(label 1)`). Hard labels are one-hot rows.
//! - `weights` (optional): shape `[n]`, finite and `>= 0`; a row of weight 0 is left out,
//!   a row of weight 2 counts twice. Default: every row 1.
//! - `loss` (optional): `"cross_entropy"` (default) or
//!   `{"logconf": {"aux_coef": 0.5, "warmup_frac": 0.2}}`.
//! - `head` (optional): the student head's settings; the task's student head otherwise.
//!
//! Paths are relative to the plan file's directory. The plan sees no label: its inputs are
//! whatever the researcher's code computed from the label-free copy.

use std::path::Path;

use aar_engine::features::HeadLoss;
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use crate::error::{IoContext, Result, TestbedError};
use crate::method::TrainingPlan;
use crate::npy;
use crate::preset::HeadSpec;

/// How far a `[n, 2]` target row may sum from 1.
const SUM_TOLERANCE: f32 = 1e-3;

/// The loss a plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanLoss {
    /// Cross-entropy against the targets.
    #[default]
    CrossEntropy,
    /// The reference's logconf: the targets mixed with the student's own hard predictions.
    Logconf {
        /// Final weight of the student's own predictions, in [0, 1].
        aux_coef: f64,
        /// Fraction of steps over which that weight rises, in (0, 1].
        warmup_frac: f64,
    },
}

impl PlanLoss {
    fn head_loss(self) -> std::result::Result<HeadLoss, String> {
        match self {
            PlanLoss::CrossEntropy => Ok(HeadLoss::CrossEntropy),
            PlanLoss::Logconf {
                aux_coef,
                warmup_frac,
            } => {
                if !((0.0..=1.0).contains(&aux_coef) && warmup_frac > 0.0 && warmup_frac <= 1.0) {
                    return Err(format!(
                        "loss.logconf: aux_coef {aux_coef} must be in [0, 1] and warmup_frac \
                         {warmup_frac} in (0, 1]"
                    ));
                }
                Ok(HeadLoss::LogConf {
                    aux_coef,
                    warmup_frac,
                })
            }
        }
    }
}

/// A plan file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The targets' `.npy`, relative to the plan's directory.
    pub targets: String,
    /// The weights' `.npy`, relative to the plan's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// The loss.
    #[serde(default)]
    pub loss: PlanLoss,
    /// The student head; the task's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
}

/// What a trained plan is recorded as in the predictions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// The plan file, as given.
    pub file: String,
    /// Rows of `train_unlabel`.
    pub rows: usize,
    /// Rows trained on (weight above 0).
    pub kept: usize,
    /// Sum of the kept rows' weights.
    pub weight_sum: f64,
    /// The loss.
    pub loss: PlanLoss,
    /// The head trained.
    pub head: HeadSpec,
}

/// A plan read and checked against the copy's `rows` `train_unlabel` rows.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    /// What to train.
    pub plan: TrainingPlan,
    /// The head to train.
    pub head: HeadSpec,
    /// The record of it.
    pub summary: PlanSummary,
}

fn bad(path: &Path, message: impl Into<String>) -> TestbedError {
    TestbedError::BadInputFile {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Reads the plan at `path` for a copy of `rows` `train_unlabel` rows whose student head
/// is `default_head`. Every error names the file and the field or row.
pub fn load_plan(path: &Path, rows: usize, default_head: &HeadSpec) -> Result<LoadedPlan> {
    let text = std::fs::read_to_string(path).at(path)?;
    let file: PlanFile = serde_json::from_str(&text).map_err(|e| {
        bad(
            path,
            format!("not a training plan ({e}); fields: targets, weights, loss, head"),
        )
    })?;
    let head = file.head.unwrap_or(*default_head);
    head.check_cost_bounds().map_err(|m| bad(path, m))?;
    let loss = file.loss.head_loss().map_err(|m| bad(path, m))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let targets_path = dir.join(&file.targets);
    let targets = read_targets(&targets_path, rows)?;
    let weights = match &file.weights {
        Some(name) => read_weights(&dir.join(name), rows)?,
        None => vec![1.0; rows],
    };
    let indices: Vec<usize> = (0..rows).filter(|&i| weights[i] > 0.0).collect();
    if indices.is_empty() {
        return Err(bad(path, "every row has weight 0: nothing to train on"));
    }
    let weight_sum: f64 = indices.iter().map(|&i| f64::from(weights[i])).sum();
    let summary = PlanSummary {
        file: path.display().to_string(),
        rows,
        kept: indices.len(),
        weight_sum,
        loss: file.loss,
        head,
    };
    let mut stats = Map::new();
    stats.insert(
        "plan".into(),
        json!({"rows": rows, "kept": indices.len(), "weight_sum": weight_sum}),
    );
    // Weights that are all 1 are the plain mean: train exactly as the built-in methods do.
    let weighted = indices.iter().any(|&i| weights[i] != 1.0);
    let plan = TrainingPlan {
        targets: indices.iter().map(|&i| targets[i]).collect(),
        weights: weighted.then(|| indices.iter().map(|&i| weights[i]).collect()),
        indices,
        loss,
        stats,
    };
    Ok(LoadedPlan {
        plan,
        head,
        summary,
    })
}

/// `[p0, p1]` per row from a `[rows, 2]` or `[rows]` array.
fn read_targets(path: &Path, rows: usize) -> Result<Vec<[f32; 2]>> {
    let array = npy::read_f32(path)?;
    let pairs: Vec<[f32; 2]> = match array.shape.as_slice() {
        [n, 2] if *n == rows as u64 => array.values.chunks(2).map(|p| [p[0], p[1]]).collect(),
        [n] if *n == rows as u64 => array.values.iter().map(|&p| [1.0 - p, p]).collect(),
        other => {
            return Err(bad(
                path,
                format!(
                    "targets have shape {other:?}; expected [{rows}, 2] or [{rows}] \
                     (one per train_unlabel row)"
                ),
            ));
        }
    };
    for (row, p) in pairs.iter().enumerate() {
        let in_range = p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v));
        if !in_range || (p[0] + p[1] - 1.0).abs() > SUM_TOLERANCE {
            return Err(bad(
                path,
                format!(
                    "row {row}: target {p:?} is not a probability pair (each in [0, 1], sum 1)"
                ),
            ));
        }
    }
    Ok(pairs)
}

/// One finite, non-negative weight per row.
fn read_weights(path: &Path, rows: usize) -> Result<Vec<f32>> {
    let array = npy::read_f32(path)?;
    if array.shape != [rows as u64] {
        return Err(bad(
            path,
            format!(
                "weights have shape {:?}; expected [{rows}] (one per train_unlabel row)",
                array.shape
            ),
        ));
    }
    if let Some(row) = array.values.iter().position(|w| !w.is_finite() || *w < 0.0) {
        return Err(bad(
            path,
            format!(
                "row {row}: weight {} is not a finite number >= 0",
                array.values[row]
            ),
        ));
    }
    Ok(array.values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_plan(dir: &Path, plan: &str) -> std::path::PathBuf {
        let path = dir.join("plan.json");
        std::fs::write(&path, plan).unwrap();
        path
    }

    #[test]
    fn a_plan_keeps_weighted_rows_with_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        npy::write_f32(&dir.path().join("t.npy"), &[4], &[0.9, 0.2, 0.5, 1.0]).unwrap();
        npy::write_f32(&dir.path().join("w.npy"), &[4], &[1.0, 0.0, 2.5, 1.0]).unwrap();
        let path = write_plan(
            dir.path(),
            r#"{"targets": "t.npy", "weights": "w.npy", "loss": {"logconf": {"aux_coef": 0.5, "warmup_frac": 0.2}}}"#,
        );
        let loaded = load_plan(&path, 4, &HeadSpec::STUDENT).unwrap();
        assert_eq!(loaded.plan.indices, vec![0, 2, 3]);
        let targets = &loaded.plan.targets;
        assert!((targets[0][0] - 0.1).abs() < 1e-6 && (targets[0][1] - 0.9).abs() < 1e-6);
        assert_eq!(targets[2], [0.0, 1.0]);
        assert_eq!(loaded.plan.weights, Some(vec![1.0, 2.5, 1.0]));
        assert_eq!(
            loaded.plan.loss,
            HeadLoss::LogConf {
                aux_coef: 0.5,
                warmup_frac: 0.2
            }
        );
        assert_eq!((loaded.summary.kept, loaded.summary.weight_sum), (3, 4.5));
        assert_eq!(loaded.head, HeadSpec::STUDENT);
    }

    #[test]
    fn all_one_weights_are_the_unweighted_loss() {
        let dir = tempfile::tempdir().unwrap();
        npy::write_f32(&dir.path().join("t.npy"), &[2, 2], &[1.0, 0.0, 0.0, 1.0]).unwrap();
        npy::write_f32(&dir.path().join("w.npy"), &[2], &[1.0, 1.0]).unwrap();
        let path = write_plan(dir.path(), r#"{"targets": "t.npy", "weights": "w.npy"}"#);
        let loaded = load_plan(&path, 2, &HeadSpec::STUDENT).unwrap();
        assert_eq!(loaded.plan.weights, None);
        assert_eq!(loaded.plan.targets, vec![[1.0, 0.0], [0.0, 1.0]]);
    }

    #[test]
    fn bad_plans_name_the_file_and_the_row_or_field() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        npy::write_f32(&d.join("t.npy"), &[3, 2], &[1.0, 0.0, 0.7, 0.7, 0.0, 1.0]).unwrap();
        npy::write_f32(&d.join("short.npy"), &[2], &[0.5, 0.5]).unwrap();
        npy::write_f32(&d.join("neg.npy"), &[3], &[1.0, -1.0, 1.0]).unwrap();
        npy::write_f32(&d.join("ok.npy"), &[3], &[0.5, 0.5, 0.5]).unwrap();
        npy::write_f32(&d.join("zero.npy"), &[3], &[0.0, 0.0, 0.0]).unwrap();
        let cases = [
            (
                r#"{"targets": "t.npy"}"#,
                vec!["t.npy", "row 1", "probability pair"],
            ),
            (
                r#"{"targets": "short.npy"}"#,
                vec!["short.npy", "[3, 2] or [3]"],
            ),
            (
                r#"{"targets": "ok.npy", "weights": "neg.npy"}"#,
                vec!["neg.npy", "row 1", "weight -1"],
            ),
            (
                r#"{"targets": "ok.npy", "weights": "zero.npy"}"#,
                vec!["plan.json", "every row has weight 0"],
            ),
            (
                r#"{"targets": "ok.npy", "lr": 1}"#,
                vec!["plan.json", "unknown field `lr`"],
            ),
            (
                r#"{"targets": "ok.npy", "head": {"epochs": 100000, "batch_size": 8, "learning_rate": 0.1, "weight_decay": 0}}"#,
                vec!["plan.json", "head.epochs 100000"],
            ),
            (
                r#"{"targets": "ok.npy", "loss": {"logconf": {"aux_coef": 2, "warmup_frac": 0.2}}}"#,
                vec!["plan.json", "aux_coef 2"],
            ),
            (r#"{"targets": "missing.npy"}"#, vec!["missing.npy"]),
        ];
        for (plan, needles) in cases {
            let path = write_plan(d, plan);
            let err = load_plan(&path, 3, &HeadSpec::STUDENT)
                .unwrap_err()
                .to_string();
            for needle in needles {
                assert!(err.contains(needle), "{plan}: {err:?} lacks {needle:?}");
            }
        }
    }
}
