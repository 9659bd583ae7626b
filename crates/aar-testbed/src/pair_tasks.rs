//! Binary tasks from text-pair corpora: `question` is the first text (a wikiHow goal),
//! `choice` the second (a step), label whether the two belong together.
//!
//! Each source question becomes one **group** of two rows, its right pair and one wrong
//! pair drawn with the seed, sharing a `consistency_id`. Groups are dealt whole to the
//! splits, so labels are exactly balanced and no question is in two splits (a goal that
//! the source asks about twice is kept once). The transfer set comes from a second source
//! with the roles turned round (a step, which goal?), minus every group that shares a
//! text with the main source.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use aar_assets::packs::SeededRng;
use aar_core::Label;
use aar_tasks::{Example, Inputs, Split};
use serde_json::{Map, Value};

use crate::error::{Result, TestbedError};
use crate::preset::{PairCorpus, Sizes};
use crate::text_tasks::{BigBenchExample, bad, bigbench_examples, normalized, write_splits};

/// One source question: the right (question, choice) pair and the wrong ones.
#[derive(Debug, Clone, PartialEq)]
pub struct PairGroup {
    /// Stable id from the source (`step_inference-00012`).
    pub id: String,
    /// The pair that belongs together.
    pub right: (String, String),
    /// Pairs that do not.
    pub wrong: Vec<(String, String)>,
    /// The source subset.
    pub subset: String,
}

/// Which goal_step_wikihow subtask a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoalStepFile {
    /// "The most reasonable step of '<goal>' is": options are steps.
    StepInference,
    /// "The most reasonable goal of '<step>' is": options are goals.
    GoalInference,
}

impl GoalStepFile {
    fn name(self) -> &'static str {
        match self {
            GoalStepFile::StepInference => "step_inference",
            GoalStepFile::GoalInference => "goal_inference",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            GoalStepFile::StepInference => "The most reasonable step of '",
            GoalStepFile::GoalInference => "The most reasonable goal of '",
        }
    }
}

/// The asset files a pair corpus is read from (main, transfer), relative to the assets root.
pub fn pair_corpus_files(corpus: PairCorpus) -> [(&'static str, &'static str); 2] {
    match corpus {
        PairCorpus::GoalStep => [
            (
                aar_assets::manifest::BIGBENCH,
                "data/bigbench/goal_step_wikihow/step_inference/task.json",
            ),
            (
                aar_assets::manifest::BIGBENCH,
                "data/bigbench/goal_step_wikihow/goal_inference/task.json",
            ),
        ],
    }
}

/// Reads a BIG-bench goal_step_wikihow file as (goal, step) groups: exactly one option
/// scored 1 per example, the text in quotes of its input the other half of every pair.
pub fn goal_step(path: &Path, kind: GoalStepFile) -> Result<Vec<PairGroup>> {
    let examples = bigbench_examples(path)?;
    let mut groups = Vec::with_capacity(examples.len());
    for (i, BigBenchExample { input, scores }) in examples.iter().enumerate() {
        let quoted = input
            .strip_prefix(kind.prefix())
            .and_then(|rest| rest.rsplit_once('\''))
            .map(|(quoted, _)| quoted.trim())
            .filter(|q| !q.is_empty())
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "example {i}: input does not read {:?}<text>' is",
                        kind.prefix()
                    ),
                )
            })?;
        let mut right = Vec::new();
        let mut wrong = Vec::new();
        for (option, score) in scores {
            let option = option.trim().to_owned();
            match score.as_f64() {
                Some(s) if s > 0.0 => right.push(option),
                Some(_) => wrong.push(option),
                None => {
                    return Err(bad(
                        path,
                        format!("example {i}: score of {option:?} is not a number"),
                    ));
                }
            }
        }
        let [right] = right.as_slice() else {
            return Err(bad(
                path,
                format!(
                    "example {i}: {} options scored 1, expected one",
                    right.len()
                ),
            ));
        };
        if wrong.is_empty() {
            return Err(bad(path, format!("example {i}: no wrong option")));
        }
        let pair = |option: &str| match kind {
            GoalStepFile::StepInference => (quoted.to_owned(), option.to_owned()),
            GoalStepFile::GoalInference => (option.to_owned(), quoted.to_owned()),
        };
        groups.push(PairGroup {
            id: format!("{}-{i:05}", kind.name()),
            right: pair(right),
            wrong: wrong.iter().map(|w| pair(w)).collect(),
            subset: kind.name().into(),
        });
    }
    Ok(groups)
}

/// The corpus's main groups and its transfer pool.
pub fn pair_corpus_groups(
    corpus: PairCorpus,
    assets_dir: &Path,
) -> Result<(Vec<PairGroup>, Vec<PairGroup>)> {
    let [main, transfer] = pair_corpus_files(corpus).map(|(asset, rel)| {
        let path = assets_dir.join(rel);
        if path.is_file() {
            Ok(path)
        } else {
            Err(TestbedError::MissingAsset {
                asset: asset.into(),
                what: format!("the {corpus:?} source"),
                path,
            })
        }
    });
    let (main, transfer) = (main?, transfer?);
    match corpus {
        PairCorpus::GoalStep => Ok((
            goal_step(&main, GoalStepFile::StepInference)?,
            goal_step(&transfer, GoalStepFile::GoalInference)?,
        )),
    }
}

/// Every text of a group, normalised.
fn group_texts(group: &PairGroup) -> impl Iterator<Item = String> + '_ {
    std::iter::once(&group.right)
        .chain(&group.wrong)
        .flat_map(|(q, c)| [normalized(q), normalized(c)])
}

/// Deals shuffled groups to the splits (one right and one wrong row each).
pub fn build_pair_splits(
    task: &str,
    main: Vec<PairGroup>,
    transfer: Vec<PairGroup>,
    sizes: &Sizes,
    seed: u64,
) -> Result<BTreeMap<Split, Vec<Example>>> {
    let mut rng = SeededRng::new(seed, task);
    let main_texts: HashSet<String> = main.iter().flat_map(group_texts).collect();
    let mut questions = HashSet::new();
    let mut main: Vec<PairGroup> = main
        .into_iter()
        .filter(|g| questions.insert(normalized(&g.right.0)))
        .collect();
    rng.shuffle(&mut main);
    let mut main = main.into_iter();
    let mut out = BTreeMap::new();
    for (split, rows) in [
        (Split::TrainLabel, sizes.train_label),
        (Split::TrainUnlabel, sizes.train_unlabel),
        (Split::Test, sizes.test),
        (Split::TestPrivate, sizes.test_private),
    ] {
        if !rows.is_multiple_of(2) {
            return Err(TestbedError::BadTask {
                task: task.into(),
                message: format!(
                    "{} has {rows} rows: a pair task deals groups of two, so sizes must be even",
                    split.name()
                ),
            });
        }
        let groups: Vec<PairGroup> = main.by_ref().take(rows / 2).collect();
        if groups.len() < rows / 2 {
            return Err(TestbedError::NotEnoughData {
                task: task.into(),
                split: split.name().into(),
                needed: rows,
                available: 2 * groups.len(),
            });
        }
        out.insert(split, to_examples(task, split, groups, &mut rng));
    }
    let mut transfer: Vec<PairGroup> = transfer
        .into_iter()
        .filter(|g| !group_texts(g).any(|t| main_texts.contains(&t)))
        .collect();
    rng.shuffle(&mut transfer);
    transfer.truncate(sizes.transfer / 2);
    if !transfer.is_empty() {
        out.insert(
            Split::Transfer,
            to_examples(task, Split::Transfer, transfer, &mut rng),
        );
    }
    Ok(out)
}

fn to_examples(
    task: &str,
    split: Split,
    groups: Vec<PairGroup>,
    rng: &mut SeededRng,
) -> Vec<Example> {
    let mut rows = Vec::with_capacity(2 * groups.len());
    for group in groups {
        let wrong = group.wrong[rng.below(group.wrong.len())].clone();
        for (pair, label) in [(group.right.clone(), true), (wrong, false)] {
            rows.push((pair, label, group.id.clone(), group.subset.clone()));
        }
    }
    rng.shuffle(&mut rows);
    rows.into_iter()
        .enumerate()
        .map(|(i, ((question, choice), label, group, subset))| {
            let mut extra = Map::new();
            extra.insert(
                "id".into(),
                Value::String(format!("{task}-{}-{i:05}", split.name())),
            );
            extra.insert("consistency_id".into(), Value::String(group));
            extra.insert("subset".into(), Value::String(subset));
            Example {
                inputs: Inputs::Binary { question, choice },
                label: Some(Label::from(label)),
                extra,
            }
        })
        .collect()
}

/// Builds a pair task from the fetched corpus into `out_dir`. Same inputs and seed, same bytes.
pub fn build_pair_task(
    task: &str,
    corpus: PairCorpus,
    assets_dir: &Path,
    out_dir: &Path,
    sizes: &Sizes,
    seed: u64,
) -> Result<BTreeMap<Split, (usize, usize)>> {
    let (main, transfer) = pair_corpus_groups(corpus, assets_dir)?;
    let splits = build_pair_splits(task, main, transfer, sizes, seed)?;
    write_splits(task, out_dir, splits)
}
