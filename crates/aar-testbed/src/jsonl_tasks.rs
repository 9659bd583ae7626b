//! Tasks from a user's labeled JSONL in the reference's formats ([`TaskSource::Jsonl`],
//! written by `aar tasks import`): one file the testbed deals to the splits with the
//! preset's build seed and sizes, or a directory that already holds the split files.
//!
//! Rows are read strictly (`aar_tasks`: file, line and field in every error). Rows sharing
//! a `consistency_id` (else `group_id`) are one group and go to one split whole, so a
//! split holding groups may pass its size by less than one group. The source's SHA-256 is
//! checked at every build, and the built directory records what it was built from
//! ([`BUILT_FROM_FILE`]), so a changed source or size rebuilds it (and, through the task
//! data hash, every result) instead of serving stale rows.
//!
//! [`TaskSource::Jsonl`]: crate::preset::TaskSource::Jsonl

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aar_assets::packs::SeededRng;
use aar_core::Label;
use aar_tasks::{Example, LabelPolicy, LabeledTask, Split, TaskFile, read_task_file};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result, TestbedError};
use crate::preset::{Sizes, TaskSource, TaskSpec};
use crate::text_tasks::{bad, write_splits};

/// The file in a built task directory recording the source, sizes and seed it came from.
pub const BUILT_FROM_FILE: &str = "built-from.json";

/// Fields that put rows in one consistency group, in the order the testbed reads them.
pub const GROUP_FIELDS: [&str; 2] = ["consistency_id", "group_id"];

/// The splits a single file is dealt to, in dealing order.
const DEALT_SPLITS: [Split; 4] = [
    Split::TrainLabel,
    Split::TrainUnlabel,
    Split::Test,
    Split::TestPrivate,
];

/// SHA-256 (hex) of a source: a file's bytes, or a directory's split files (each split's
/// name and bytes, as [`crate::baselines::task_data_hash`] hashes a task directory).
pub fn source_sha256(path: &Path) -> Result<String> {
    if path.is_dir() {
        return crate::baselines::task_data_hash(path);
    }
    let bytes = std::fs::read(path).at(path)?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A labeled JSONL file, every row checked: labeled, one format, group ids strings.
pub fn read_labeled_file(path: &Path) -> Result<TaskFile> {
    let file = read_task_file(path, LabelPolicy::Required)?;
    check_group_fields(path, file.examples())?;
    Ok(file)
}

/// A directory of labeled split files (`train_label.jsonl`, ..., `test_private.jsonl`;
/// `transfer.jsonl` optional), every row checked.
pub fn read_labeled_dir(dir: &Path) -> Result<LabeledTask> {
    let task = LabeledTask::load(dir)?;
    for split in Split::ALL {
        if let Some(file) = task.split(split) {
            check_group_fields(&dir.join(split.file_name()), file.examples())?;
        }
    }
    if task.split(Split::TestPrivate).is_none() {
        return Err(bad(
            dir,
            format!("missing split file {}", Split::TestPrivate.file_name()),
        ));
    }
    Ok(task)
}

/// A group id that is not a string would be read as no group: refused, naming the line.
fn check_group_fields(path: &Path, examples: &[Example]) -> Result<()> {
    for (index, example) in examples.iter().enumerate() {
        for field in GROUP_FIELDS {
            match example.extra.get(field) {
                None | Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(bad(
                        path,
                        format!(
                            "line {}: field `{field}` must be a string (rows sharing it stay in one split), found {}",
                            index + 1,
                            json_type(other)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The consistency group of a row, if it names one.
fn group_of(example: &Example) -> Option<&str> {
    GROUP_FIELDS
        .iter()
        .find_map(|field| example.extra.get(*field).and_then(Value::as_str))
}

/// Rows in groups (a row without a group id is its own), groups in order of first row.
pub fn grouped(examples: Vec<Example>) -> Vec<Vec<Example>> {
    let mut groups: Vec<Vec<Example>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for example in examples {
        match group_of(&example).map(str::to_owned) {
            Some(id) => match index.get(&id) {
                Some(&at) => groups[at].push(example),
                None => {
                    index.insert(id, groups.len());
                    groups.push(vec![example]);
                }
            },
            None => groups.push(vec![example]),
        }
    }
    groups
}

/// Deals shuffled groups to `train_label`, `train_unlabel`, `test` and `test_private`
/// (each takes groups until it holds at least its size), then up to `sizes.transfer` of
/// the rows left to `transfer` (same distribution: a single file has no shift). Rows
/// without an `id` get one. Both training splits must hold both labels.
pub fn split_rows(
    task: &str,
    rows: Vec<Example>,
    sizes: &Sizes,
    seed: u64,
) -> Result<BTreeMap<Split, Vec<Example>>> {
    let mut groups = grouped(rows);
    SeededRng::new(seed, task).shuffle(&mut groups);
    let mut groups = groups.into_iter();
    let mut out = BTreeMap::new();
    for (split, size) in DEALT_SPLITS.into_iter().zip(dealt_sizes(sizes)) {
        let mut chosen = Vec::new();
        while chosen.len() < size {
            let Some(group) = groups.next() else {
                return Err(TestbedError::NotEnoughData {
                    task: task.into(),
                    split: split.name().into(),
                    needed: size,
                    available: chosen.len(),
                });
            };
            chosen.extend(group);
        }
        out.insert(split, chosen);
    }
    let mut transfer = Vec::new();
    for group in groups {
        if transfer.len() + group.len() > sizes.transfer {
            break;
        }
        transfer.extend(group);
    }
    if !transfer.is_empty() {
        out.insert(Split::Transfer, transfer);
    }
    check_both_labels(task, &out)?;
    Ok(with_ids(task, out))
}

fn dealt_sizes(sizes: &Sizes) -> [usize; 4] {
    [
        sizes.train_label,
        sizes.train_unlabel,
        sizes.test,
        sizes.test_private,
    ]
}

/// The weak teacher trains on `train_label`, the ceiling on `train_unlabel`: a split with
/// one label trains nothing.
fn check_both_labels(task: &str, splits: &BTreeMap<Split, Vec<Example>>) -> Result<()> {
    for split in [Split::TrainLabel, Split::TrainUnlabel] {
        let rows = splits.get(&split).map(Vec::as_slice).unwrap_or_default();
        let ones = rows.iter().filter(|e| e.label == Some(Label::One)).count();
        if ones == 0 || ones == rows.len() {
            return Err(TestbedError::BadTask {
                task: task.into(),
                message: format!(
                    "{} holds {} rows of one label only; learners need both labels",
                    split.name(),
                    rows.len()
                ),
            });
        }
    }
    Ok(())
}

/// Gives every row without an `id` one (`{task}-{split}-{row}`).
fn with_ids(task: &str, splits: BTreeMap<Split, Vec<Example>>) -> BTreeMap<Split, Vec<Example>> {
    splits
        .into_iter()
        .map(|(split, mut rows)| {
            for (i, row) in rows.iter_mut().enumerate() {
                row.extra
                    .entry("id")
                    .or_insert_with(|| Value::String(format!("{task}-{}-{i:05}", split.name())));
            }
            (split, rows)
        })
        .collect()
}

/// The splits of a source as the testbed builds them: a directory's files as they are, a
/// file dealt by [`split_rows`].
pub fn source_splits(
    task: &str,
    path: &Path,
    sizes: &Sizes,
    seed: u64,
) -> Result<BTreeMap<Split, Vec<Example>>> {
    if path.is_dir() {
        let labeled = read_labeled_dir(path)?;
        let splits = Split::ALL
            .into_iter()
            .filter_map(|split| Some((split, labeled.split(split)?.examples().to_vec())))
            .collect();
        check_both_labels(task, &splits)?;
        return Ok(with_ids(task, splits));
    }
    let file = read_labeled_file(path)?;
    split_rows(task, file.examples().to_vec(), sizes, seed)
}

/// What a built directory records of its making.
fn built_from(path: &Path, sha256: &str, sizes: &Sizes, seed: u64) -> Value {
    json!({"path": path, "sha256": sha256, "sizes": sizes, "build_seed": seed})
}

/// Builds the task into `out_dir` (replacing it whole) from the source at `path`, which
/// must still have the content `sha256`.
pub fn build_jsonl_task(
    task: &str,
    path: &Path,
    sha256: &str,
    out_dir: &Path,
    sizes: &Sizes,
    seed: u64,
) -> Result<()> {
    let found = source_sha256(path)?;
    if found != sha256 {
        return Err(bad(
            path,
            format!(
                "its content changed since it was imported (sha256 {found}, the preset records \
                 {sha256}); run `aar tasks import` again"
            ),
        ));
    }
    let splits = source_splits(task, path, sizes, seed)?;
    // Built beside and swapped in, so a rebuild keeps no split file of the old one.
    let partial = out_dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).at(&partial)?;
    }
    write_splits(task, &partial, splits)?;
    let stamp = partial.join(BUILT_FROM_FILE);
    let record = built_from(path, sha256, sizes, seed);
    std::fs::write(&stamp, record.to_string()).at(&stamp)?;
    if out_dir.exists() {
        std::fs::remove_dir_all(out_dir).at(out_dir)?;
    }
    std::fs::rename(&partial, out_dir).at(out_dir)?;
    Ok(())
}

/// Whether the built directory of a JSONL task is missing or was built from another
/// source, size or seed (always false for other sources).
pub fn needs_rebuild(task: &TaskSpec, dir: &Path, seed: u64) -> bool {
    let TaskSource::Jsonl { path, sha256 } = &task.source else {
        return false;
    };
    let expected = built_from(path, sha256, &task.sizes, seed);
    let recorded = std::fs::read_to_string(dir.join(BUILT_FROM_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    recorded.as_ref() != Some(&expected)
}
