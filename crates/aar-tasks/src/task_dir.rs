use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aar_core::TaskFormat;

use crate::error::TaskError;
use crate::ids::IdKey;
use crate::jsonl::{LabelPolicy, TaskFile, read_task_file, write_task_file};

/// A split of a task, stored as `<split>.jsonl` in the task directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    /// Gold-labeled data the weak teacher (and the ceiling) train on.
    TrainLabel,
    /// Data the strong student is trained on with weak labels.
    TrainUnlabel,
    /// Public test split: agents iterate on its score.
    Test,
    /// Private test split: ranking only, never scored for agents.
    TestPrivate,
    /// Held-out transfer set from another distribution.
    Transfer,
}

impl Split {
    /// Every split, required ones first.
    pub const ALL: [Split; 5] = [
        Split::TrainLabel,
        Split::TrainUnlabel,
        Split::Test,
        Split::TestPrivate,
        Split::Transfer,
    ];

    /// The split's name, as in the reference (`train_label`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Split::TrainLabel => "train_label",
            Split::TrainUnlabel => "train_unlabel",
            Split::Test => "test",
            Split::TestPrivate => "test_private",
            Split::Transfer => "transfer",
        }
    }

    /// The file name inside a task directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Split::TrainLabel => "train_label.jsonl",
            Split::TrainUnlabel => "train_unlabel.jsonl",
            Split::Test => "test.jsonl",
            Split::TestPrivate => "test_private.jsonl",
            Split::Transfer => "transfer.jsonl",
        }
    }

    /// Whether every task must have this split.
    pub fn is_required(self) -> bool {
        matches!(self, Split::TrainLabel | Split::TrainUnlabel | Split::Test)
    }
}

/// The splits an agent-facing copy holds, inputs only. `test_private` inputs are
/// included because an entry's private predictions are submitted with its public
/// ones (the server scores them, and shows the score only to the admin until the
/// campaign closes). `train_label` and the transfer set never leave the server.
pub const AGENT_SPLITS: &[Split] = &[Split::TrainUnlabel, Split::Test, Split::TestPrivate];

/// A labeled task directory, as the server keeps it.
#[derive(Debug, Clone)]
pub struct LabeledTask {
    dir: PathBuf,
    format: TaskFormat,
    splits: BTreeMap<Split, TaskFile>,
}

impl LabeledTask {
    /// Loads every split present; the required ones must be there, all labeled, all of one format.
    pub fn load(dir: &Path) -> Result<LabeledTask, TaskError> {
        let mut splits = BTreeMap::new();
        let mut format = None;
        for split in Split::ALL {
            let path = dir.join(split.file_name());
            if !path.exists() {
                if split.is_required() {
                    return Err(TaskError::MissingSplit {
                        dir: dir.to_owned(),
                        file: split.file_name(),
                    });
                }
                continue;
            }
            let file = read_task_file(&path, LabelPolicy::Required)?;
            match format {
                None => format = Some(file.format()),
                Some(expected) if expected != file.format() => {
                    return Err(TaskError::SplitFormatMismatch {
                        dir: dir.to_owned(),
                        split: split.file_name(),
                        expected,
                        found: file.format(),
                    });
                }
                Some(_) => {}
            }
            splits.insert(split, file);
        }
        let format = format.ok_or_else(|| TaskError::MissingSplit {
            dir: dir.to_owned(),
            file: Split::TrainLabel.file_name(),
        })?;
        Ok(LabeledTask {
            dir: dir.to_owned(),
            format,
            splits,
        })
    }

    /// Writes a labeled task directory (creating it), one file per split given.
    pub fn write(dir: &Path, splits: &BTreeMap<Split, TaskFile>) -> Result<(), TaskError> {
        std::fs::create_dir_all(dir).map_err(|source| TaskError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for (split, file) in splits {
            write_task_file(&dir.join(split.file_name()), file)?;
        }
        Ok(())
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The format shared by all splits.
    pub fn format(&self) -> TaskFormat {
        self.format
    }

    /// One split, if the task has it.
    pub fn split(&self, split: Split) -> Option<&TaskFile> {
        self.splits.get(&split)
    }
}

/// Writes the agent-facing copy of `task` into `out_dir` under a fresh random key
/// ([`write_agent_copy_with_key`]): ids are consistent within this copy only.
pub fn write_agent_copy(task: &LabeledTask, out_dir: &Path) -> Result<(), TaskError> {
    write_agent_copy_with_key(task, out_dir, &IdKey::random()?)
}

/// Writes the agent-facing copy of `task` into `out_dir`: only [`AGENT_SPLITS`], each
/// row reduced to its allow-listed input fields, every id replaced by its opaque id under
/// `key` (one key gives the same ids on every rebuild), rows in the labeled file's order.
pub fn write_agent_copy_with_key(
    task: &LabeledTask,
    out_dir: &Path,
    key: &IdKey,
) -> Result<(), TaskError> {
    std::fs::create_dir_all(out_dir).map_err(|source| TaskError::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    for &split in AGENT_SPLITS {
        if let Some(file) = task.split(split) {
            write_task_file(&out_dir.join(split.file_name()), &file.for_agents(key))?;
        }
    }
    Ok(())
}
