//! The three task packs (chat, math, code), built reproducibly from the fetched sources.
//!
//! Every source is first read into [`Group`]s: one question with its correct and
//! incorrect candidates. Groups are deduplicated by question text and dealt whole to
//! splits, so **one question never appears in two splits**. A group's split comes from a
//! hash of (seed, pack, group id), not from its position among the others: a group that
//! one machine leaves out (a program that timed out under load) moves no other question.
//! Rows are then drawn round-robin over each split's groups:
//! - binary packs take one correct and one incorrect candidate per draw (two rows),
//!   so labels are balanced exactly;
//! - the comparison pack takes one (true, false) pair per draw and alternates which
//!   side is shown first, so A and B are balanced (within one for odd sizes).
//!
//! Every row carries `consistency_id` (its question's group id; an input, not a
//! label), `id` and `subset`.

mod rng;
pub mod runner;
mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aar_core::Label;
use aar_tasks::{Example, Inputs, LabeledTask, Split, TaskFile};
use serde_json::{Map, Value};

use crate::error::{AssetError, Result};
pub use rng::SeededRng;
pub use runner::{RunOutput, Runner, RunnerConfig};
pub use sources::{
    codeio_groups, gsm8k_groups, hhh_groups, human_eval_groups, mathqa_groups, truthful_qa_groups,
};

/// Which pack to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackKind {
    /// Comparison: true vs false answers from BIG-bench truthful_qa; transfer: hhh_alignment.
    Chat,
    /// Binary: MathQA question + option → correct?; transfer: GSM8K with perturbed answers.
    Math,
    /// Binary: CodeI/O program + input + claimed output → correct?; transfer: HumanEval mutants.
    Code,
}

impl PackKind {
    /// All packs.
    pub const ALL: [PackKind; 3] = [PackKind::Chat, PackKind::Math, PackKind::Code];

    /// Its name (`chat`, `math`, `code`), also the default directory name.
    pub fn name(self) -> &'static str {
        match self {
            PackKind::Chat => "chat",
            PackKind::Math => "math",
            PackKind::Code => "code",
        }
    }
}

/// Rows per split. `transfer` is a maximum: a transfer source smaller than it is used whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackSizes {
    /// Rows of `train_label.jsonl`.
    pub train_label: usize,
    /// Rows of `train_unlabel.jsonl`.
    pub train_unlabel: usize,
    /// Rows of `test.jsonl`.
    pub test: usize,
    /// Rows of `test_private.jsonl`.
    pub test_private: usize,
    /// At most this many rows of `transfer.jsonl`.
    pub transfer: usize,
}

impl PackSizes {
    /// A few hundred rows per pack: for tests of the whole pipeline.
    pub const TINY: PackSizes = PackSizes {
        train_label: 64,
        train_unlabel: 128,
        test: 64,
        test_private: 64,
        transfer: 64,
    };
    /// A few thousand rows per pack: the CPU default.
    pub const CPU: PackSizes = PackSizes {
        train_label: 600,
        train_unlabel: 1600,
        test: 400,
        test_private: 400,
        transfer: 400,
    };

    /// The preset of that name (`tiny`, `cpu`).
    pub fn preset(name: &str) -> Option<PackSizes> {
        match name {
            "tiny" => Some(PackSizes::TINY),
            "cpu" => Some(PackSizes::CPU),
            _ => None,
        }
    }

    fn in_distribution(&self) -> [(Split, usize); 4] {
        [
            (Split::TrainLabel, self.train_label),
            (Split::TrainUnlabel, self.train_unlabel),
            (Split::Test, self.test),
            (Split::TestPrivate, self.test_private),
        ]
    }
}

/// One question with its correct and incorrect candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Stable id from the source (`mathqa-00017`), written as `consistency_id`.
    pub id: String,
    /// The question (binary) or prompt (comparison).
    pub question: String,
    /// Candidates that are correct (binary) or better (comparison).
    pub positives: Vec<String>,
    /// Candidates that are incorrect or worse.
    pub negatives: Vec<String>,
    /// Only `positives[k]` vs `negatives[k]` are known comparisons (preference
    /// pairs, hhh_alignment); otherwise every positive beats every negative.
    pub paired: bool,
    /// The source subset, written as `subset`.
    pub subset: String,
}

impl Group {
    fn capacity(&self, format: Format) -> usize {
        match format {
            Format::Binary => 2 * self.positives.len().min(self.negatives.len()),
            Format::Comparison if self.paired => self.positives.len().min(self.negatives.len()),
            Format::Comparison => self.positives.len() * self.negatives.len(),
        }
    }
}

/// The row format a pack is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `question`, `choice`, label true/false.
    Binary,
    /// `prompt`, `first`, `second`, label A/B.
    Comparison,
}

/// Options for [`build_task_pack`] beyond the sizes and seed.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// How programs are run for the code pack.
    pub runner: RunnerConfig,
}

/// Rows per split and label counts of a built pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackStats {
    /// For each split: (rows, rows labeled 1 = "B" or true).
    pub splits: BTreeMap<Split, (usize, usize)>,
}

/// Builds one pack from the fetched assets into `out_dir` (the labeled task
/// directory: `train_label.jsonl`, `train_unlabel.jsonl`, `test.jsonl`,
/// `test_private.jsonl`, `transfer.jsonl`). Same inputs and seed, same bytes.
pub fn build_task_pack(
    kind: PackKind,
    assets_dir: &Path,
    out_dir: &Path,
    sizes: &PackSizes,
    seed: u64,
    options: &PackOptions,
) -> Result<PackStats> {
    let data = assets_dir.join("data");
    let bigbench = data.join(crate::manifest::BIGBENCH);
    let needed_groups = |format: Format| match format {
        Format::Binary => sizes
            .in_distribution()
            .iter()
            .map(|(_, n)| n.div_ceil(2))
            .sum::<usize>(),
        Format::Comparison => usize::MAX,
    };
    let (format, main, transfer) = match kind {
        PackKind::Chat => (
            Format::Comparison,
            truthful_qa_groups(&bigbench.join("truthful_qa/questions.json"))?,
            hhh_groups(&bigbench.join("hhh_alignment"))?,
        ),
        PackKind::Math => (
            Format::Binary,
            mathqa_groups(&bigbench.join("elementary_math_qa/question_only/task.json"))?,
            gsm8k_groups(&data.join(crate::manifest::GSM8K).join("test.jsonl"), seed)?,
        ),
        PackKind::Code => {
            let runner = Runner::new(options.runner.clone())?;
            // Running programs is the slow part: run only as many as the sizes need, plus slack.
            let want_main = needed_groups(Format::Binary) + needed_groups(Format::Binary) / 4 + 8;
            let main = codeio_groups(
                &data.join(crate::manifest::CODEIO).join("codeio.jsonl.gz"),
                &runner,
                seed,
                want_main,
            )?;
            let transfer = human_eval_groups(
                &data
                    .join(crate::manifest::HUMAN_EVAL)
                    .join("HumanEval.jsonl.gz"),
                &runner,
                seed,
                sizes.transfer.div_ceil(2),
            )?;
            (Format::Binary, main, transfer)
        }
    };
    let splits = build_splits(format, main, transfer, sizes, seed, kind.name())?;
    let mut stats = PackStats {
        splits: BTreeMap::new(),
    };
    let mut files = BTreeMap::new();
    for (split, examples) in splits {
        let positives = examples
            .iter()
            .filter(|e| e.label == Some(Label::One))
            .count();
        stats.splits.insert(split, (examples.len(), positives));
        files.insert(
            split,
            TaskFile::new(examples, &format!("{} {}", kind.name(), split.name()))?,
        );
    }
    LabeledTask::write(out_dir, &files)?;
    for (split, (rows, ones)) in &stats.splits {
        tracing::info!(
            pack = kind.name(),
            split = split.name(),
            rows,
            label_one = ones,
            "written"
        );
    }
    Ok(stats)
}

/// Deals groups to splits and draws balanced rows; the core of every pack, free of IO.
pub fn build_splits(
    format: Format,
    main: Vec<Group>,
    transfer: Vec<Group>,
    sizes: &PackSizes,
    seed: u64,
    pack_name: &str,
) -> Result<BTreeMap<Split, Vec<Example>>> {
    let mut rng = SeededRng::new(seed, pack_name);
    let main = dedup_by_question(main);
    let main_questions: BTreeSet<String> = main.iter().map(|g| normalized(&g.question)).collect();
    let demands = sizes.in_distribution();
    let dealt = deal_by_hash(format, main, &demands, seed, pack_name);
    let capacity: Vec<usize> = dealt
        .iter()
        .map(|groups| groups.iter().map(|g| g.capacity(format)).sum())
        .collect();
    let mut out = BTreeMap::new();
    for (i, (split, rows)) in demands.iter().enumerate() {
        if *rows == 0 {
            continue;
        }
        let examples = draw_rows(
            format,
            &dealt[i],
            *rows,
            &mut rng,
            seed,
            &format!("{pack_name}-{}", split.name()),
        )?
        .ok_or_else(|| AssetError::NotEnoughData {
            source_name: format!("{pack_name} {}", split.name()),
            needed: *rows,
            available: capacity[i],
        })?;
        out.insert(*split, examples);
    }
    // A transfer question that also occurs in-distribution would leak across splits.
    let mut transfer: Vec<Group> = dedup_by_question(transfer)
        .into_iter()
        .filter(|g| !main_questions.contains(&normalized(&g.question)))
        .collect();
    transfer.sort_by(|a, b| {
        group_draw(seed, pack_name, &a.id)
            .total_cmp(&group_draw(seed, pack_name, &b.id))
            .then_with(|| a.id.cmp(&b.id))
    });
    let available: usize = transfer.iter().map(|g| g.capacity(format)).sum();
    let transfer_rows = match format {
        Format::Binary => sizes.transfer.min(available) / 2 * 2,
        Format::Comparison => sizes.transfer.min(available),
    };
    if transfer_rows > 0 {
        let examples = draw_rows(
            format,
            &transfer,
            transfer_rows,
            &mut rng,
            seed,
            &format!("{pack_name}-transfer"),
        )?
        .ok_or_else(|| AssetError::NotEnoughData {
            source_name: format!("{pack_name} transfer"),
            needed: transfer_rows,
            available,
        })?;
        out.insert(Split::Transfer, examples);
    }
    Ok(out)
}

/// A uniform number in [0, 1) from (seed, pack, group id).
fn group_draw(seed: u64, pack_name: &str, id: &str) -> f64 {
    let mut rng = SeededRng::new(seed, &format!("{pack_name}/deal/{id}"));
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Deals groups to the splits of `demands`: each group by its own hash draw, in proportion
/// to the demands; then a split left short takes groups, in draw order, from splits that
/// can spare them. Groups are kept in draw order within a split.
fn deal_by_hash(
    format: Format,
    groups: Vec<Group>,
    demands: &[(Split, usize)],
    seed: u64,
    pack_name: &str,
) -> Vec<Vec<Group>> {
    let total: usize = demands.iter().map(|(_, n)| n).sum();
    let mut keyed: Vec<(f64, Group)> = groups
        .into_iter()
        .filter(|g| g.capacity(format) > 0)
        .map(|g| (group_draw(seed, pack_name, &g.id), g))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let mut dealt: Vec<Vec<(f64, Group)>> = vec![Vec::new(); demands.len()];
    if total == 0 {
        return vec![Vec::new(); demands.len()];
    }
    for (draw, group) in keyed {
        let mut cumulative = 0.0;
        let mut target = demands.len() - 1;
        for (i, (_, rows)) in demands.iter().enumerate() {
            cumulative += *rows as f64 / total as f64;
            if draw < cumulative && *rows > 0 {
                target = i;
                break;
            }
        }
        dealt[target].push((draw, group));
    }
    // Repair shortfalls deterministically: the short split takes the last groups (in draw
    // order) of the split with the most capacity to spare.
    let capacity =
        |groups: &[(f64, Group)]| -> usize { groups.iter().map(|(_, g)| g.capacity(format)).sum() };
    for short in 0..demands.len() {
        while capacity(&dealt[short]) < demands[short].1 {
            let donor = (0..demands.len())
                .filter(|&i| i != short)
                .filter_map(|i| {
                    let last = dealt[i].last()?.1.capacity(format);
                    let spare = capacity(&dealt[i]).checked_sub(demands[i].1)?;
                    (spare >= last).then_some((spare, i))
                })
                .max();
            let Some((_, donor)) = donor else { break };
            if let Some(moved) = dealt[donor].pop() {
                let at = dealt[short].partition_point(|(d, _)| *d < moved.0);
                dealt[short].insert(at, moved);
            }
        }
    }
    dealt
        .into_iter()
        .map(|groups| groups.into_iter().map(|(_, g)| g).collect())
        .collect()
}

/// Merges groups that ask the same question into the first one (keeping its id), so
/// a repeated question cannot land in two splits and its candidates are not lost.
fn dedup_by_question(groups: Vec<Group>) -> Vec<Group> {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut merged: Vec<Group> = Vec::new();
    for group in groups {
        match index.get(&normalized(&group.question)) {
            None => {
                index.insert(normalized(&group.question), merged.len());
                merged.push(group);
            }
            Some(&i) => {
                let kept = &mut merged[i];
                if kept.paired || group.paired {
                    // Keep pairs aligned: append pair by pair.
                    let pairs = group.positives.len().min(group.negatives.len());
                    let kept_pairs = kept.positives.len().min(kept.negatives.len());
                    kept.positives.truncate(kept_pairs);
                    kept.negatives.truncate(kept_pairs);
                    kept.positives
                        .extend(group.positives.into_iter().take(pairs));
                    kept.negatives
                        .extend(group.negatives.into_iter().take(pairs));
                    kept.paired = true;
                } else {
                    for p in group.positives {
                        if !kept.positives.contains(&p) {
                            kept.positives.push(p);
                        }
                    }
                    for n in group.negatives {
                        if !kept.negatives.contains(&n) {
                            kept.negatives.push(n);
                        }
                    }
                }
            }
        }
    }
    merged
}

/// Question text compared case- and whitespace-insensitively.
fn normalized(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `rows` rows drawn round-robin over `groups`, or `None` when they hold too few.
fn draw_rows(
    format: Format,
    groups: &[Group],
    rows: usize,
    rng: &mut SeededRng,
    seed: u64,
    id_prefix: &str,
) -> Result<Option<Vec<Example>>> {
    // Per group, the (positive, negative) pairs in an order seeded by the group's own id.
    let mut pairs: Vec<Vec<(usize, usize)>> = groups
        .iter()
        .map(|g| {
            let mut p: Vec<(usize, usize)> = match format {
                Format::Binary => (0..g.positives.len().min(g.negatives.len()))
                    .map(|k| (k, k))
                    .collect(),
                Format::Comparison if g.paired => (0..g.positives.len().min(g.negatives.len()))
                    .map(|k| (k, k))
                    .collect(),
                Format::Comparison => (0..g.positives.len())
                    .flat_map(|a| (0..g.negatives.len()).map(move |b| (a, b)))
                    .collect(),
            };
            SeededRng::new(seed, &format!("{id_prefix}/pairs/{}", g.id)).shuffle(&mut p);
            p
        })
        .collect();
    let mut drawn: Vec<(usize, usize, usize)> = Vec::new(); // (group, positive, negative)
    let per_draw = if format == Format::Binary { 2 } else { 1 };
    let draws_needed = rows.div_ceil(per_draw);
    let mut round = 0;
    while drawn.len() < draws_needed {
        let before = drawn.len();
        for (g, group_pairs) in pairs.iter_mut().enumerate() {
            if drawn.len() == draws_needed {
                break;
            }
            if let Some(&(p, n)) = group_pairs.get(round) {
                drawn.push((g, p, n));
            }
        }
        if drawn.len() == before {
            return Ok(None);
        }
        round += 1;
    }
    pairs.clear();
    let mut examples = Vec::with_capacity(rows);
    for (k, &(g, p, n)) in drawn.iter().enumerate() {
        let group = &groups[g];
        let extra = |id: String| {
            let mut extra = Map::new();
            extra.insert("id".into(), Value::String(id));
            extra.insert("consistency_id".into(), Value::String(group.id.clone()));
            extra.insert("subset".into(), Value::String(group.subset.clone()));
            extra
        };
        match format {
            Format::Binary => {
                for (choice, label) in [
                    (&group.positives[p], Label::One),
                    (&group.negatives[n], Label::Zero),
                ] {
                    examples.push(Example {
                        inputs: Inputs::Binary {
                            question: group.question.clone(),
                            choice: choice.clone(),
                        },
                        label: Some(label),
                        extra: extra(String::new()),
                    });
                }
            }
            Format::Comparison => {
                // Alternate which side the better answer is on: balanced A/B.
                let better_first = k % 2 == 0;
                let (first, second) = if better_first {
                    (group.positives[p].clone(), group.negatives[n].clone())
                } else {
                    (group.negatives[n].clone(), group.positives[p].clone())
                };
                examples.push(Example {
                    inputs: Inputs::Comparison {
                        prompt: group.question.clone(),
                        first,
                        second,
                    },
                    label: Some(if better_first {
                        Label::Zero
                    } else {
                        Label::One
                    }),
                    extra: extra(String::new()),
                });
            }
        }
    }
    examples.truncate(rows);
    rng.shuffle(&mut examples);
    for (i, e) in examples.iter_mut().enumerate() {
        e.extra
            .insert("id".into(), Value::String(format!("{id_prefix}-{i:05}")));
    }
    Ok(Some(examples))
}
