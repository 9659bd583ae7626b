//! The labeled tasks the server scores against, loaded once at start.
//!
//! A task is addressed by name only: the registry is a map filled from the
//! sub-directories of the task root, so no request ever builds a path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aar_core::Label;
use aar_core::metrics::{FixedBaselines, MetricError};
use aar_tasks::{LabeledTask, Split, TaskError};
use serde::Deserialize;

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinesFile {
    /// Weak teacher accuracy on the public test split, one per seed.
    pub weak: Vec<f64>,
    /// Ceiling accuracy on the public test split, one per seed.
    pub ceiling: Vec<f64>,
    /// The same for the other scored splits (`test_private`, `transfer`), each
    /// against its own weak teacher and ceiling.
    #[serde(default)]
    pub splits: BTreeMap<String, SplitBaselines>,
}

/// Weak and ceiling accuracies of one split, one per seed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitBaselines {
    /// Weak teacher accuracy, one per seed.
    pub weak: Vec<f64>,
    /// Ceiling accuracy, one per seed.
    pub ceiling: Vec<f64>,
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
}

impl TaskRegistry {
    /// Loads every valid sub-directory of `root` as a labeled task.
    pub fn load(root: &Path) -> Result<TaskRegistry, TaskLoadError> {
        let io = |source| TaskLoadError::Io {
            path: root.to_owned(),
            source,
        };
        let mut tasks = BTreeMap::new();
        let mut split_baselines = BTreeMap::new();
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
            let (baselines, splits) = load_baselines(&entry.path(), &name)?;
            for (split, fixed) in splits {
                split_baselines.insert((name.clone(), split), fixed);
            }
            tasks.insert(
                name.clone(),
                Arc::new(ServerTask::from_labeled(&name, &task, baselines)),
            );
        }
        tracing::info!(count = tasks.len(), "tasks loaded");
        Ok(TaskRegistry {
            tasks,
            split_baselines,
        })
    }

    /// A registry from tasks built in memory.
    pub fn from_tasks(tasks: Vec<ServerTask>) -> TaskRegistry {
        TaskRegistry {
            tasks: tasks
                .into_iter()
                .map(|t| (t.name.clone(), Arc::new(t)))
                .collect(),
            split_baselines: BTreeMap::new(),
        }
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

type LoadedBaselines = (Option<FixedBaselines>, Vec<(String, FixedBaselines)>);

fn load_baselines(dir: &Path, name: &str) -> Result<LoadedBaselines, TaskLoadError> {
    let path = dir.join("baselines.json");
    if !path.exists() {
        return Ok((None, Vec::new()));
    }
    let err = |message: String| TaskLoadError::Baselines {
        name: name.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let file: BaselinesFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let public = FixedBaselines::from_seed_accuracies(&file.weak, &file.ceiling)
        .map_err(|e: MetricError| err(e.to_string()))?;
    let mut splits = Vec::new();
    for (split, b) in &file.splits {
        match FixedBaselines::from_seed_accuracies(&b.weak, &b.ceiling) {
            Ok(fixed) if fixed.gap().is_ok() => splits.push((split.clone(), fixed)),
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
    Ok((Some(public), splits))
}
