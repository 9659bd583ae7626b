//! The labeled tasks the server scores against, loaded once at start.
//!
//! A task is addressed by name only: the registry is a map filled from the
//! sub-directories of the task root, so no request ever builds a path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aar_core::Label;
use aar_core::metrics::{FixedBaselines, MetricError};
use aar_core::noise::{CorrectRows, PgrRuns};
use aar_tasks::{LabeledTask, Split, TaskError};
use serde::{Deserialize, Serialize};

/// Why the task root could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TaskLoadError {
    /// Listing the task root failed.
    #[error("cannot read task root {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A task directory is invalid.
    #[error("task {name}: {source}")]
    Task {
        /// Task name.
        name: String,
        /// The cause.
        source: TaskError,
    },
    /// `baselines.json` is unreadable or invalid.
    #[error("task {name}: baselines.json: {message}")]
    Baselines {
        /// Task name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// `<task_dir>/baselines.json`: the pinned per-seed accuracies PGR is measured against.
/// It sits in the server's labeled task directory (never mounted for agents): its
/// per-row outcomes are label-dependent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinesFile {
    /// Weak teacher accuracy on the public test split, one per seed.
    pub weak: Vec<f64>,
    /// Ceiling accuracy on the public test split, one per seed.
    pub ceiling: Vec<f64>,
    /// Which public test rows each pinned run got right (optional: files written
    /// before per-row outcomes were kept load without it, and their PGR errors then
    /// hold the seeds' spread only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_rows: Option<RowOutcomes>,
    /// The same for the other scored splits (`test_private`, `transfer`), each
    /// against its own weak teacher and ceiling.
    #[serde(default)]
    pub splits: BTreeMap<String, SplitBaselines>,
}

/// Weak and ceiling accuracies of one split, one per seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBaselines {
    /// Weak teacher accuracy, one per seed.
    pub weak: Vec<f64>,
    /// Ceiling accuracy, one per seed.
    pub ceiling: Vec<f64>,
    /// Which rows of the split each pinned run got right (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct_rows: Option<RowOutcomes>,
}

/// Per-row outcomes of the pinned runs on one split, one [`CorrectRows`] per seed
/// in the pinned seed order: what PGR's test-noise error and comparisons against
/// vanilla are computed from (`aar_core::noise`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowOutcomes {
    /// The weak teacher's seeds.
    pub weak: Vec<CorrectRows>,
    /// The ceiling's seeds.
    pub ceiling: Vec<CorrectRows>,
    /// Vanilla weak-to-strong transfer's seeds (the reference entries are compared to).
    #[serde(default)]
    pub vanilla: Vec<CorrectRows>,
    /// The other built-in methods' seeds, by method name: entries are compared with
    /// each (admin only), so a report can say whether an entry beats every baseline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub builtins: BTreeMap<String, Vec<CorrectRows>>,
}

impl RowOutcomes {
    /// The baselines' runs, as the estimator takes them.
    pub fn runs(&self) -> PgrRuns<'_> {
        PgrRuns {
            weak: &self.weak,
            ceiling: &self.ceiling,
        }
    }

    /// Every run has one outcome per row of the split; `field` names where the
    /// outcomes are (`correct_rows`, `splits.transfer.correct_rows`).
    fn check(&self, field: &str, split: &str, labels: Option<usize>) -> Result<(), String> {
        let Some(labels) = labels else {
            return Err(format!("{field}: the task has no {split} split"));
        };
        let fixed = [
            ("weak".to_owned(), &self.weak),
            ("ceiling".to_owned(), &self.ceiling),
            ("vanilla".to_owned(), &self.vanilla),
        ];
        let builtins = self
            .builtins
            .iter()
            .map(|(method, runs)| (format!("builtins.{method}"), runs));
        for (group, runs) in fixed.into_iter().chain(builtins) {
            if runs.is_empty() && (group == "weak" || group == "ceiling") {
                return Err(format!("{field}.{group}: no runs"));
            }
            if let Some((seed, run)) = runs.iter().enumerate().find(|(_, r)| r.len() != labels) {
                return Err(format!(
                    "{field}.{group}[{seed}]: {} rows, but {split} has {labels} labels",
                    run.len()
                ));
            }
        }
        Ok(())
    }
}

/// One task as the server holds it: labels stay in memory, never leave.
#[derive(Debug)]
pub struct ServerTask {
    /// Name (the directory name).
    pub name: String,
    /// Public test labels.
    pub test_labels: Vec<Label>,
    /// Private test labels, if the task has a private split.
    pub private_labels: Option<Vec<Label>>,
    /// Fixed baselines, if pinned.
    pub baselines: Option<FixedBaselines>,
}

/// Task name rule: lowercase letters, digits, `-`, `_`; at most 64 characters.
pub fn is_valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Every task, by name.
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, Arc<ServerTask>>,
    /// Baselines of the other scored splits, by (task, split); a split whose ceiling
    /// does not beat its weak teacher has none (its PGR is undefined).
    split_baselines: BTreeMap<(String, String), FixedBaselines>,
    /// Transfer-set labels, by task (verification runs are scored on it).
    transfer_labels: BTreeMap<String, Vec<Label>>,
    /// Per-row outcomes of the pinned runs, by (task, split), where the file has them.
    outcomes: BTreeMap<(String, String), RowOutcomes>,
}

impl TaskRegistry {
    /// Loads every valid sub-directory of `root` as a labeled task.
    pub fn load(root: &Path) -> Result<TaskRegistry, TaskLoadError> {
        let io = |source| TaskLoadError::Io {
            path: root.to_owned(),
            source,
        };
        let mut registry = TaskRegistry::default();
        for entry in std::fs::read_dir(root).map_err(io)? {
            let entry = entry.map_err(io)?;
            if !entry.file_type().map_err(io)?.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_valid_task_name(&name) {
                tracing::warn!(%name, "skipping task directory with an invalid name");
                continue;
            }
            let task = LabeledTask::load(&entry.path()).map_err(|source| TaskLoadError::Task {
                name: name.clone(),
                source,
            })?;
            let loaded = load_baselines(&entry.path(), &name, &task)?;
            for (split, fixed) in loaded.splits {
                registry
                    .split_baselines
                    .insert((name.clone(), split), fixed);
            }
            for (split, rows) in loaded.outcomes {
                registry.outcomes.insert((name.clone(), split), rows);
            }
            if let Some(labels) = task.split(Split::Transfer).and_then(|f| f.labels()) {
                registry.transfer_labels.insert(name.clone(), labels);
            }
            registry.tasks.insert(
                name.clone(),
                Arc::new(ServerTask::from_labeled(&name, &task, loaded.public)),
            );
        }
        tracing::info!(count = registry.tasks.len(), "tasks loaded");
        Ok(registry)
    }

    /// A registry from tasks built in memory.
    pub fn from_tasks(tasks: Vec<ServerTask>) -> TaskRegistry {
        TaskRegistry {
            tasks: tasks
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            ..TaskRegistry::default()
        }
    }

    /// Adds a split's labels the server tasks do not hold (the transfer set; tests).
    pub fn with_transfer_labels(mut self, task: &str, labels: Vec<Label>) -> TaskRegistry {
        self.transfer_labels.insert(task.to_owned(), labels);
        self
    }

    /// Adds the pinned runs' per-row outcomes of one split (tests, embedding).
    pub fn with_outcomes(mut self, task: &str, split: &str, rows: RowOutcomes) -> TaskRegistry {
        self.outcomes
            .insert((task.to_owned(), split.to_owned()), rows);
        self
    }

    /// The labels of a scored split (`test`, `test_private`, `transfer`).
    pub fn labels(&self, task: &str, split: &str) -> Option<&[Label]> {
        if split == Split::Transfer.name() {
            return self.transfer_labels.get(task).map(Vec::as_slice);
        }
        let task = self.tasks.get(task)?;
        if split == Split::Test.name() {
            Some(&task.test_labels)
        } else if split == Split::TestPrivate.name() {
            task.private_labels.as_deref()
        } else {
            None
        }
    }

    /// The pinned runs' per-row outcomes on `split` of `task`, where pinned.
    pub fn outcomes(&self, task: &str, split: &str) -> Option<&RowOutcomes> {
        self.outcomes.get(&(task.to_owned(), split.to_owned()))
    }

    /// Adds the baselines of another scored split (tests, embedding).
    pub fn with_split_baselines(
        mut self,
        task: &str,
        split: &str,
        baselines: FixedBaselines,
    ) -> TaskRegistry {
        self.split_baselines
            .insert((task.to_owned(), split.to_owned()), baselines);
        self
    }

    /// The baselines PGR on `split` of `task` is measured against: the public test's
    /// pinned ones for `test`, else the split's own.
    pub fn baselines(&self, task: &str, split: &str) -> Option<FixedBaselines> {
        if split == Split::Test.name() {
            return self.get(task).and_then(|t| t.baselines);
        }
        self.split_baselines
            .get(&(task.to_owned(), split.to_owned()))
            .copied()
    }

    /// One task by name.
    pub fn get(&self, name: &str) -> Option<Arc<ServerTask>> {
        self.tasks.get(name).cloned()
    }

    /// Every task.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServerTask>> {
        self.tasks.values()
    }
}

impl ServerTask {
    fn from_labeled(
        name: &str,
        task: &LabeledTask,
        baselines: Option<FixedBaselines>,
    ) -> ServerTask {
        let labels = |split| task.split(split).and_then(|f| f.labels());
        ServerTask {
            name: name.to_owned(),
            // `LabeledTask::load` requires labels on every split it loads.
            test_labels: labels(Split::Test).unwrap_or_default(),
            private_labels: labels(Split::TestPrivate),
            baselines,
        }
    }
}

/// What a task's `baselines.json` pins.
#[derive(Default)]
struct LoadedBaselines {
    /// The public test's baselines.
    public: Option<FixedBaselines>,
    /// The other splits' baselines, where PGR is defined on them.
    splits: Vec<(String, FixedBaselines)>,
    /// Per-row outcomes, by split.
    outcomes: Vec<(String, RowOutcomes)>,
}

fn load_baselines(
    dir: &Path,
    name: &str,
    task: &LabeledTask,
) -> Result<LoadedBaselines, TaskLoadError> {
    let path = dir.join("baselines.json");
    if !path.exists() {
        return Ok(LoadedBaselines::default());
    }
    let err = |message: String| TaskLoadError::Baselines {
        name: name.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let file: BaselinesFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let public = FixedBaselines::from_seed_accuracies(&file.weak, &file.ceiling)
        .map_err(|e: MetricError| err(e.to_string()))?;
    let rows_of = |split: &str| {
        Split::ALL
            .into_iter()
            .find(|s| s.name() == split)
            .and_then(|s| task.split(s))
            .and_then(|f| f.labels())
            .map(|labels| labels.len())
    };
    let mut loaded = LoadedBaselines {
        public: Some(public),
        ..LoadedBaselines::default()
    };
    let test = Split::Test.name();
    if let Some(rows) = file.correct_rows {
        rows.check("correct_rows", test, rows_of(test))
            .map_err(err)?;
        loaded.outcomes.push((test.to_owned(), rows));
    }
    for (split, b) in file.splits {
        if let Some(rows) = b.correct_rows {
            let field = format!("splits.{split}.correct_rows");
            rows.check(&field, &split, rows_of(&split)).map_err(err)?;
            loaded.outcomes.push((split.clone(), rows));
        }
        match FixedBaselines::from_seed_accuracies(&b.weak, &b.ceiling) {
            Ok(fixed) if fixed.gap().is_ok() => loaded.splits.push((split, fixed)),
            // PGR is undefined where the ceiling does not beat the weak teacher: the
            // split is scored (accuracy) but has no PGR.
            Ok(_) | Err(MetricError::CeilingNotAboveWeak { .. }) => {
                tracing::warn!(
                    task = name,
                    split,
                    "no PGR on this split: the ceiling does not beat the weak teacher"
                );
            }
            Err(e) => return Err(err(format!("splits.{split}: {e}"))),
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A labeled binary task `name` with 6 public test rows and 5 transfer rows, and
    /// `baselines` as its `baselines.json`.
    fn task_dir(root: &Path, name: &str, baselines: &str) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let rows = |n: usize| -> String {
            (0..n)
                .map(|i| {
                    format!(
                        "{{\"question\":\"q{i}\",\"choice\":\"c{i}\",\"label\":{}}}\n",
                        i % 2 == 0
                    )
                })
                .collect()
        };
        for (file, n) in [
            ("train_label.jsonl", 4),
            ("train_unlabel.jsonl", 4),
            ("test.jsonl", 6),
            ("transfer.jsonl", 5),
        ] {
            std::fs::write(dir.join(file), rows(n)).unwrap();
        }
        std::fs::write(dir.join("baselines.json"), baselines).unwrap();
    }

    #[test]
    fn per_row_outcomes_are_optional_and_checked_against_the_splits_labels() {
        let root = tempfile::tempdir().unwrap();
        // Written before per-row outcomes were kept: loads, without outcomes.
        task_dir(root.path(), "old", r#"{"weak":[0.5],"ceiling":[0.8]}"#);
        task_dir(
            root.path(),
            "new",
            r#"{"weak":[0.5],"ceiling":[0.8],
                "correct_rows":{"weak":["101010"],"ceiling":["111110"],"vanilla":["111000"]},
                "splits":{"transfer":{"weak":[0.4],"ceiling":[0.8],
                  "correct_rows":{"weak":["10100"],"ceiling":["11110"]}}}}"#,
        );
        let registry = TaskRegistry::load(root.path()).unwrap();
        assert!(registry.outcomes("old", "test").is_none());
        let test = registry.outcomes("new", "test").unwrap();
        assert_eq!(
            test.vanilla[0].rows(),
            [true, true, true, false, false, false]
        );
        let transfer = registry.outcomes("new", "transfer").unwrap();
        assert_eq!(transfer.ceiling[0].accuracy(), 0.8);
        assert!(transfer.vanilla.is_empty());
        assert_eq!(
            registry.labels("new", "transfer").map(<[Label]>::len),
            Some(5)
        );

        // A row count that disagrees with the split's labels names the task and field.
        let bad = tempfile::tempdir().unwrap();
        task_dir(
            bad.path(),
            "sentiment",
            r#"{"weak":[0.5],"ceiling":[0.8],"splits":{"transfer":{"weak":[0.4],"ceiling":[0.8],
                "correct_rows":{"weak":["10100"],"ceiling":["1111"]}}}}"#,
        );
        let err = TaskRegistry::load(bad.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "task sentiment: baselines.json: splits.transfer.correct_rows.ceiling[0]: \
             4 rows, but transfer has 5 labels"
        );
        // A built-in method's runs are checked the same way, named by the method.
        task_dir(
            bad.path(),
            "sentiment",
            r#"{"weak":[0.5],"ceiling":[0.8],"correct_rows":{"weak":["101010"],
                "ceiling":["111110"],"builtins":{"zeroshot":["111110","11"]}}}"#,
        );
        let err = TaskRegistry::load(bad.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("correct_rows.builtins.zeroshot[1]: 2 rows, but test has 6 labels"),
            "{err}"
        );
        // Outcomes of a split the task does not have, and a character other than 0/1.
        task_dir(
            bad.path(),
            "sentiment",
            r#"{"weak":[0.5],"ceiling":[0.8],"splits":{"test_private":{"weak":[0.4],"ceiling":[0.8],
                "correct_rows":{"weak":["10100"],"ceiling":["11110"]}}}}"#,
        );
        let err = TaskRegistry::load(bad.path()).unwrap_err().to_string();
        assert!(
            err.contains("splits.test_private.correct_rows: the task has no test_private split"),
            "{err}"
        );
        task_dir(
            bad.path(),
            "sentiment",
            r#"{"weak":[0.5],"ceiling":[0.8],"correct_rows":{"weak":["1010x0"],"ceiling":["111110"]}}"#,
        );
        let err = TaskRegistry::load(bad.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("task sentiment: baselines.json: correct rows: character 4"),
            "{err}"
        );
    }
}
