//! Single-claim binary tasks built from labeled text corpora: `question` is the text,
//! `choice` the claim the task asks about ("The review is positive."), label whether it holds.
//!
//! Rows are deduplicated by text (a text seen with both labels is dropped), shuffled with
//! the seed and dealt to splits, each split taking exactly half positives, so **no text is
//! in two splits** and labels are balanced. Every row carries `id`, `consistency_id` (its
//! source id: each text is its own group, since a text has one claim) and `subset`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

use aar_assets::packs::SeededRng;
use aar_core::Label;
use aar_tasks::{Example, Inputs, LabeledTask, Split, TaskFile};
use serde_json::{Map, Value};

use crate::error::{IoContext, Result, TestbedError};
use crate::preset::{Corpus, Sizes};

/// One labeled text of a corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct TextItem {
    /// Stable id from the source (`rt-01234`).
    pub id: String,
    /// The text.
    pub text: String,
    /// Whether the task's claim holds.
    pub label: bool,
    /// The source subset.
    pub subset: String,
}

/// A source file that does not read as expected.
pub(crate) fn bad(path: &Path, message: impl Into<String>) -> TestbedError {
    TestbedError::BadSource {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The asset files a corpus is read from, relative to the assets root.
pub fn corpus_files(corpus: Corpus) -> Vec<(&'static str, &'static str)> {
    match corpus {
        Corpus::RottenTomatoes => vec![(
            aar_assets::manifest::ROTTEN_TOMATOES,
            "data/rotten-tomatoes/rotten_tomatoes_corpus_full.csv.bz2",
        )],
        Corpus::Sarcasm => vec![(aar_assets::manifest::SARCASM, "data/sarcasm/samples.jsonl")],
        Corpus::Fever => vec![(
            aar_assets::manifest::BIGBENCH,
            "data/bigbench/fact_checker/fever/task.json",
        )],
        Corpus::MultiemoHotels => vec![(
            aar_assets::manifest::BIGBENCH,
            "data/bigbench/multiemo/hotels_sentence_en/task.json",
        )],
        Corpus::MultiemoMedicine => vec![(
            aar_assets::manifest::BIGBENCH,
            "data/bigbench/multiemo/medicine_sentence_en/task.json",
        )],
    }
}

/// Rotten Tomatoes reviews (`category` fresh/rotten; plot summaries are left out).
pub fn rotten_tomatoes(path: &Path) -> Result<Vec<TextItem>> {
    let file = std::fs::File::open(path).at(path)?;
    let mut reader = csv::Reader::from_reader(bzip2::read::BzDecoder::new(file));
    let headers = reader
        .headers()
        .map_err(|e| bad(path, e.to_string()))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| bad(path, format!("no column {name:?}")))
    };
    let (category, text) = (column("category")?, column("text")?);
    let mut items = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(path, format!("record {}: {e}", i + 1)))?;
        let label = match record.get(category) {
            Some("fresh") => true,
            Some("rotten") => false,
            _ => continue,
        };
        let text = record.get(text).unwrap_or_default().trim();
        if text.is_empty() {
            continue;
        }
        items.push(TextItem {
            id: format!("rt-{i:05}"),
            text: text.to_owned(),
            label,
            subset: "rotten_tomatoes".into(),
        });
    }
    Ok(items)
}

/// Sarcasm headlines from the OpenAI evals registry: the user turn, `ideal` "1" or "0".
pub fn sarcasm(path: &Path) -> Result<Vec<TextItem>> {
    let file = std::fs::File::open(path).at(path)?;
    let mut items = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.at(path)?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Value =
            serde_json::from_str(&line).map_err(|e| bad(path, format!("line {}: {e}", i + 1)))?;
        let text = row
            .get("input")
            .and_then(Value::as_array)
            .and_then(|turns| {
                turns
                    .iter()
                    .rev()
                    .find(|t| t.get("role").and_then(Value::as_str) == Some("user"))
            })
            .and_then(|t| t.get("content"))
            .and_then(Value::as_str)
            .ok_or_else(|| bad(path, format!("line {}: no user turn", i + 1)))?;
        let label = match row.get("ideal").and_then(Value::as_str) {
            Some("1") => true,
            Some("0") => false,
            _ => {
                return Err(bad(
                    path,
                    format!("line {}: ideal is not \"0\"/\"1\"", i + 1),
                ));
            }
        };
        items.push(TextItem {
            id: format!("sarcasm-{i:05}"),
            text: text.trim().to_owned(),
            label,
            subset: "sarcasm".into(),
        });
    }
    Ok(items)
}

/// One example of a BIG-bench `task.json`: its input and its options' scores.
pub(crate) struct BigBenchExample {
    /// The input text.
    pub input: String,
    /// `target_scores`: option -> score (1 for the right option(s)).
    pub scores: Map<String, Value>,
}

/// The examples of a BIG-bench `task.json`; an example without `input` or `target_scores`
/// is an error naming it.
pub(crate) fn bigbench_examples(path: &Path) -> Result<Vec<BigBenchExample>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let doc: Value = serde_json::from_str(&text).map_err(|source| TestbedError::Json {
        path: path.to_owned(),
        source,
    })?;
    let examples = doc
        .get("examples")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(path, "no examples"))?;
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let input = e
                .get("input")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(path, format!("example {i}: no input")))?;
            let scores = e
                .get("target_scores")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(path, format!("example {i}: no target_scores")))?;
            Ok(BigBenchExample {
                input: input.to_owned(),
                scores: scores.clone(),
            })
        })
        .collect()
}

/// BIG-bench fact_checker claims: the input without its task prefix, true when the option
/// scored 1 starts with "true" (or "support").
pub fn fact_checker(path: &Path, prefix: &str) -> Result<Vec<TextItem>> {
    let mut items = Vec::new();
    for (i, BigBenchExample { input, scores }) in bigbench_examples(path)?.into_iter().enumerate() {
        let Some((option, _)) = scores
            .iter()
            .find(|(_, score)| score.as_f64().is_some_and(|s| s > 0.0))
        else {
            continue;
        };
        let option = option.trim().to_lowercase();
        let label = option.starts_with("true") || option.starts_with("support");
        items.push(TextItem {
            id: format!("{prefix}-{i:05}"),
            text: clean_claim(&input),
            label,
            subset: prefix.into(),
        });
    }
    Ok(items)
}

/// BIG-bench multiemo sentences: true when the top-scored option is "positive", false when
/// it is "negative"; neutral and ambivalent sentences are left out. An example with no
/// option scored above 0 is an error naming it.
pub fn multiemo(path: &Path, prefix: &str) -> Result<Vec<TextItem>> {
    let mut items = Vec::new();
    for (i, BigBenchExample { input, scores }) in bigbench_examples(path)?.into_iter().enumerate() {
        let top = scores
            .iter()
            .filter_map(|(option, score)| Some((option, score.as_f64()?)))
            .filter(|(_, score)| *score > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(option, _)| option.trim().to_lowercase())
            .ok_or_else(|| bad(path, format!("example {i}: no option scored above 0")))?;
        let label = match top.as_str() {
            "positive" => true,
            "negative" => false,
            _ => continue,
        };
        let text = input.trim();
        if text.is_empty() {
            continue;
        }
        items.push(TextItem {
            id: format!("{prefix}-{i:05}"),
            text: text.to_owned(),
            label,
            subset: prefix.into(),
        });
    }
    Ok(items)
}

/// BIG-bench fact_checker inputs read `On <date>, the following claim was made: <claim>`
/// then a question line: the claim alone.
pub fn clean_claim(input: &str) -> String {
    let line = input
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(input);
    match line.split_once("claim was made:") {
        Some((_, claim)) => claim.trim().to_owned(),
        None => line.to_owned(),
    }
}

/// The corpus's main items and its transfer pool.
pub fn corpus_items(corpus: Corpus, assets_dir: &Path) -> Result<(Vec<TextItem>, Vec<TextItem>)> {
    for (asset, rel) in corpus_files(corpus) {
        let path = assets_dir.join(rel);
        if !path.is_file() {
            return Err(TestbedError::MissingAsset {
                asset: asset.into(),
                what: format!("the {corpus:?} source"),
                path,
            });
        }
    }
    let files = corpus_files(corpus);
    let main_path = assets_dir.join(files[0].1);
    match corpus {
        Corpus::RottenTomatoes => Ok(split_longest(rotten_tomatoes(&main_path)?)),
        Corpus::Sarcasm => Ok(split_longest(sarcasm(&main_path)?)),
        // Politifact, the second source, gave a ceiling below the weak teacher (PRESETS.md).
        Corpus::Fever => Ok(split_longest(fact_checker(&main_path, "fever")?)),
        Corpus::MultiemoHotels => Ok(split_longest(multiemo(&main_path, "hotels")?)),
        Corpus::MultiemoMedicine => Ok(split_longest(multiemo(&main_path, "medicine")?)),
    }
}

/// Fraction of texts, the longest by word count, held out as the transfer pool.
pub const LONGEST_FRACTION: f64 = 0.15;

/// (shorter texts, longest [`LONGEST_FRACTION`]): a length shift as the held-out transfer
/// set, for corpora with no second source. Ties are broken by id, so it is deterministic.
pub fn split_longest(mut items: Vec<TextItem>) -> (Vec<TextItem>, Vec<TextItem>) {
    items.sort_by(|a, b| {
        word_count(&a.text)
            .cmp(&word_count(&b.text))
            .then_with(|| a.id.cmp(&b.id))
    });
    let cut = items.len() - (items.len() as f64 * LONGEST_FRACTION) as usize;
    let mut long = items.split_off(cut);
    for item in &mut long {
        item.subset.push_str("/longest");
    }
    (items, long)
}

fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Whitespace-collapsed, lower-cased: the key texts are compared by.
pub(crate) fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Drops repeated texts (keeping the first) and texts seen with both labels.
pub fn dedup(items: Vec<TextItem>) -> Vec<TextItem> {
    let mut labels: HashMap<String, (bool, bool)> = HashMap::new();
    for item in &items {
        let entry = labels.entry(normalized(&item.text)).or_default();
        if item.label {
            entry.1 = true;
        } else {
            entry.0 = true;
        }
    }
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| {
            let key = normalized(&item.text);
            let conflicting = labels.get(&key).is_some_and(|(f, t)| *f && *t);
            !conflicting && seen.insert(key)
        })
        .collect()
}

/// Deals shuffled items to the splits, each exactly balanced (odd sizes: one more negative).
pub fn build_text_splits(
    task: &str,
    corpus: Corpus,
    main: Vec<TextItem>,
    transfer: Vec<TextItem>,
    sizes: &Sizes,
    seed: u64,
) -> Result<BTreeMap<Split, Vec<Example>>> {
    let mut rng = SeededRng::new(seed, task);
    let main = dedup(main);
    let main_texts: std::collections::HashSet<String> =
        main.iter().map(|i| normalized(&i.text)).collect();
    let (mut positives, mut negatives): (Vec<TextItem>, Vec<TextItem>) =
        main.into_iter().partition(|i| i.label);
    rng.shuffle(&mut positives);
    rng.shuffle(&mut negatives);
    let mut out = BTreeMap::new();
    for (split, rows) in [
        (Split::TrainLabel, sizes.train_label),
        (Split::TrainUnlabel, sizes.train_unlabel),
        (Split::Test, sizes.test),
        (Split::TestPrivate, sizes.test_private),
    ] {
        let (n_pos, n_neg) = (rows / 2, rows - rows / 2);
        if positives.len() < n_pos || negatives.len() < n_neg {
            return Err(TestbedError::NotEnoughData {
                task: task.into(),
                split: split.name().into(),
                needed: rows,
                available: 2 * positives.len().min(negatives.len()),
            });
        }
        let mut chosen: Vec<TextItem> = positives.drain(..n_pos).collect();
        chosen.extend(negatives.drain(..n_neg));
        out.insert(split, to_examples(task, split, corpus, chosen, &mut rng));
    }
    // The transfer pool minus any text that also occurs in-distribution.
    let transfer: Vec<TextItem> = dedup(transfer)
        .into_iter()
        .filter(|i| !main_texts.contains(&normalized(&i.text)))
        .collect();
    let (mut positives, mut negatives): (Vec<TextItem>, Vec<TextItem>) =
        transfer.into_iter().partition(|i| i.label);
    rng.shuffle(&mut positives);
    rng.shuffle(&mut negatives);
    let half = (sizes.transfer / 2)
        .min(positives.len())
        .min(negatives.len());
    if half > 0 {
        let mut chosen: Vec<TextItem> = positives.drain(..half).collect();
        chosen.extend(negatives.drain(..half));
        out.insert(
            Split::Transfer,
            to_examples(task, Split::Transfer, corpus, chosen, &mut rng),
        );
    }
    Ok(out)
}

fn to_examples(
    task: &str,
    split: Split,
    corpus: Corpus,
    mut items: Vec<TextItem>,
    rng: &mut SeededRng,
) -> Vec<Example> {
    rng.shuffle(&mut items);
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut extra = Map::new();
            extra.insert(
                "id".into(),
                Value::String(format!("{task}-{}-{i:05}", split.name())),
            );
            extra.insert("consistency_id".into(), Value::String(item.id));
            extra.insert("subset".into(), Value::String(item.subset));
            Example {
                inputs: Inputs::Binary {
                    question: item.text,
                    choice: corpus.claim().into(),
                },
                label: Some(Label::from(item.label)),
                extra,
            }
        })
        .collect()
}

/// Builds a text task from the fetched corpus into `out_dir`. Same inputs and seed, same bytes.
pub fn build_text_task(
    task: &str,
    corpus: Corpus,
    assets_dir: &Path,
    out_dir: &Path,
    sizes: &Sizes,
    seed: u64,
) -> Result<BTreeMap<Split, (usize, usize)>> {
    let (main, transfer) = corpus_items(corpus, assets_dir)?;
    let splits = build_text_splits(task, corpus, main, transfer, sizes, seed)?;
    write_splits(task, out_dir, splits)
}

/// Writes the splits as a labeled task directory; returns (rows, label-1 rows) per split.
pub(crate) fn write_splits(
    task: &str,
    out_dir: &Path,
    splits: BTreeMap<Split, Vec<Example>>,
) -> Result<BTreeMap<Split, (usize, usize)>> {
    let mut files = BTreeMap::new();
    let mut stats = BTreeMap::new();
    for (split, examples) in splits {
        let ones = examples
            .iter()
            .filter(|e| e.label == Some(Label::One))
            .count();
        stats.insert(split, (examples.len(), ones));
        files.insert(
            split,
            TaskFile::new(examples, &format!("{task} {}", split.name()))?,
        );
    }
    LabeledTask::write(out_dir, &files)?;
    Ok(stats)
}

#[cfg(test)]
mod source_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the failure report

    use super::*;
    use serde_json::json;

    fn write_task_json(dir: &Path, rel: &str, examples: Value) -> std::path::PathBuf {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, json!({ "examples": examples }).to_string()).unwrap();
        path
    }

    fn multiemo_example(text: &str, top: &str) -> Value {
        let scores: Map<String, Value> = ["positive", "negative", "neutral", "ambivalent"]
            .iter()
            .map(|o| ((*o).to_owned(), json!(if *o == top { 1 } else { 0 })))
            .collect();
        json!({ "input": text, "target_scores": scores })
    }

    #[test]
    fn multiemo_keeps_positive_and_negative_sentences_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_task_json(
            dir.path(),
            "hotels.json",
            json!([
                multiemo_example(" Clean rooms and kind staff. ", "positive"),
                multiemo_example("The breakfast was cold.", "negative"),
                multiemo_example("The hotel is near the station.", "neutral"),
                multiemo_example("Nice view, noisy street.", "ambivalent"),
                multiemo_example("   ", "positive"),
            ]),
        );
        let items = multiemo(&path, "hotels").unwrap();
        let got: Vec<(&str, &str, bool)> = items
            .iter()
            .map(|i| (i.id.as_str(), i.text.as_str(), i.label))
            .collect();
        assert_eq!(
            got,
            [
                ("hotels-00000", "Clean rooms and kind staff.", true),
                ("hotels-00001", "The breakfast was cold.", false),
            ]
        );
        assert!(items.iter().all(|i| i.subset == "hotels"));
    }

    #[test]
    fn multiemo_example_without_a_scored_option_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_task_json(
            dir.path(),
            "medicine.json",
            json!([
                multiemo_example("Good doctor.", "positive"),
                { "input": "No answer.", "target_scores": { "positive": 0, "negative": 0 } },
            ]),
        );
        let err = multiemo(&path, "medicine").unwrap_err().to_string();
        assert!(err.contains("example 1"), "{err}");
        assert!(err.contains("medicine.json"), "{err}");
    }

    #[test]
    fn fever_holds_out_its_longest_claims_and_needs_no_second_source() {
        let assets = tempfile::tempdir().unwrap();
        // 20 claims of 1..=20 words, alternately true and false, behind the source's prefix.
        let examples: Vec<Value> = (1..=20)
            .map(|n| {
                let claim = vec!["word"; n].join(" ");
                let truth = if n % 2 == 0 { "true" } else { "false" };
                json!({
                    "input": format!("On June 2017, the following claim was made: {claim}\nQ: Was this claim true or false?"),
                    "target_scores": { "true": i32::from(truth == "true"), "false": i32::from(truth == "false") },
                })
            })
            .collect();
        write_task_json(
            assets.path(),
            "data/bigbench/fact_checker/fever/task.json",
            Value::Array(examples),
        );
        let (main, transfer) = corpus_items(Corpus::Fever, assets.path()).unwrap();
        // 15% of 20 = the 3 longest claims (18, 19 and 20 words).
        let lengths = |items: &[TextItem]| -> Vec<usize> {
            items.iter().map(|i| word_count(&i.text)).collect()
        };
        assert_eq!(lengths(&transfer), [18, 19, 20]);
        assert_eq!(lengths(&main), (1..=17).collect::<Vec<_>>());
        assert!(transfer.iter().all(|i| i.subset == "fever/longest"));
        // 18 words: an even count, so a true claim.
        assert!(transfer[0].label);
    }

    #[test]
    fn a_missing_multiemo_source_names_the_asset() {
        let assets = tempfile::tempdir().unwrap();
        let err = corpus_items(Corpus::MultiemoMedicine, assets.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("medicine_sentence_en"), "{err}");
    }
}
