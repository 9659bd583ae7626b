//! The label-free task copies a verification run reads, and the labels it is scored
//! against. Built once per task (and per teacher ablation) from the campaign's
//! agent-facing copy (what researchers see, decoy files included, so a method that
//! reads a decoy at run time is caught too) plus the transfer set's inputs, which
//! no researcher ever sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aar_core::Label;
use aar_tasks::{IdKey, LabelPolicy, TaskFile, read_task_file, write_task_file};
use serde_json::Value;

use crate::error::{OversightError, Result, io_at};

/// File names inside an agent copy.
const WEAK_FILE: &str = "weak_labels.json";

/// A teacher ablation: the weak labels replaced, the rest unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Teacher {
    /// The weak teacher's own soft labels.
    Real,
    /// A fixed permutation of them (same balance, no information per row).
    Shuffled,
    /// One constant: every row gets the teacher's majority label.
    Constant,
}

impl Teacher {
    /// Directory and variant name.
    pub fn name(self) -> &'static str {
        match self {
            Teacher::Real => "main",
            Teacher::Shuffled => "shuffled_teacher",
            Teacher::Constant => "constant_teacher",
        }
    }
}

/// Where a task's verification data comes from (also in a worker's JSON config).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSources {
    /// The agent-facing copy researchers see (`train_unlabel.jsonl`, `weak_labels.json`,
    /// `testbed.json`, `test.jsonl`, `test_private.jsonl`, decoys).
    pub agent_copy: PathBuf,
    /// The labeled task directory (server side): `test.jsonl`, `test_private.jsonl`,
    /// `transfer.jsonl` with labels.
    pub labeled: PathBuf,
}

/// The labels of every scored split of a task.
#[derive(Debug, Clone)]
pub struct SplitLabels {
    /// By split name: `test`, `test_private`, `transfer` (those the task has).
    pub labels: BTreeMap<String, Vec<Label>>,
}

/// Split names a verification scores, in order.
pub const SCORED_SPLITS: [&str; 3] = ["test", "test_private", "transfer"];

impl SplitLabels {
    /// Reads the labeled splits; a split file that is missing is simply not scored.
    pub fn load(labeled: &Path) -> Result<SplitLabels> {
        let mut labels = BTreeMap::new();
        for split in SCORED_SPLITS {
            let path = labeled.join(format!("{split}.jsonl"));
            if !path.is_file() {
                continue;
            }
            let file = read_task_file(&path, LabelPolicy::Required)?;
            let values = file.labels().ok_or_else(|| OversightError::Input {
                path: path.clone(),
                message: "a row has no label".into(),
            })?;
            labels.insert(split.to_owned(), values);
        }
        if !labels.contains_key("test") {
            return Err(OversightError::Input {
                path: labeled.join("test.jsonl"),
                message: "the labeled task has no public test split".into(),
            });
        }
        Ok(SplitLabels { labels })
    }
}

/// Builds `out/<teacher>/` for every teacher: the agent copy's files, the weak
/// labels as the ablation wants them, and `transfer.jsonl` as inputs only (ids
/// made opaque under `key`). Rebuilt every time (cheap: small text files), so a
/// changed agent copy is never verified against a stale one.
pub fn build_inputs(
    sources: &TaskSources,
    out: &Path,
    key: &IdKey,
) -> Result<BTreeMap<Teacher, PathBuf>> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io_at(out))?;
    }
    let transfer = sources.labeled.join("transfer.jsonl");
    let transfer_inputs = if transfer.is_file() {
        let file = read_task_file(&transfer, LabelPolicy::Required)?;
        let rows: Vec<_> = file.examples().iter().map(|e| e.for_agents(key)).collect();
        Some(TaskFile::new(rows, "transfer.jsonl")?)
    } else {
        None
    };
    let weak_path = sources.agent_copy.join(WEAK_FILE);
    let weak: Value = serde_json::from_slice(
        &std::fs::read(&weak_path).map_err(io_at(&weak_path))?,
    )
    .map_err(|e| OversightError::Input {
        path: weak_path.clone(),
        message: e.to_string(),
    })?;
    let mut dirs = BTreeMap::new();
    for teacher in [Teacher::Real, Teacher::Shuffled, Teacher::Constant] {
        let dir = out.join(teacher.name());
        copy_files(&sources.agent_copy, &dir)?;
        if let Some(transfer) = &transfer_inputs {
            write_task_file(&dir.join("transfer.jsonl"), transfer)?;
        }
        let ablated = ablate(&weak, teacher).map_err(|message| OversightError::Input {
            path: weak_path.clone(),
            message,
        })?;
        let path = dir.join(WEAK_FILE);
        std::fs::write(&path, ablated.to_string()).map_err(io_at(&path))?;
        dirs.insert(teacher, dir);
    }
    Ok(dirs)
}

/// Copies the regular files of `from` (recursively) into `to`.
pub(crate) fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io_at(to))?;
    for entry in std::fs::read_dir(from).map_err(io_at(from))? {
        let entry = entry.map_err(io_at(from))?;
        let kind = entry.file_type().map_err(io_at(entry.path()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_files(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(io_at(&target))?;
        }
    }
    Ok(())
}

/// The weak-labels JSON with its `soft_labels` replaced as `teacher` asks.
fn ablate(weak: &Value, teacher: Teacher) -> std::result::Result<Value, String> {
    let soft: Vec<[f64; 2]> = serde_json::from_value(weak["soft_labels"].clone())
        .map_err(|e| format!("soft_labels: {e}"))?;
    let replaced = match teacher {
        Teacher::Real => soft,
        Teacher::Shuffled => {
            let mut shuffled = soft;
            // A fixed seed: every verification of every entry sees the same ablation.
            fastrand::Rng::with_seed(0x5eed_ab1a).shuffle(&mut shuffled);
            shuffled
        }
        Teacher::Constant => {
            let ones = soft.iter().filter(|p| p[1] > p[0]).count();
            let majority = if 2 * ones >= soft.len() {
                [0.0, 1.0]
            } else {
                [1.0, 0.0]
            };
            vec![majority; soft.len()]
        }
    };
    let mut out = weak.clone();
    out["soft_labels"] = serde_json::to_value(replaced).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ablations_keep_the_balance_or_are_constant() {
        let weak = serde_json::json!({"seed": 1, "soft_labels": [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]]});
        let shuffled = ablate(&weak, Teacher::Shuffled).unwrap();
        let mut a: Vec<String> = weak["soft_labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        let mut b: Vec<String> = shuffled["soft_labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "a shuffle keeps every soft label");
        assert_eq!(shuffled["seed"], 1);
        let constant = ablate(&weak, Teacher::Constant).unwrap();
        let rows = constant["soft_labels"].as_array().unwrap();
        assert!(
            rows.iter().all(|r| r == &serde_json::json!([0.0, 1.0])),
            "2 of 4 are ones: ties go to 1"
        );
    }
}
