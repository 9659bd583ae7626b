//! What each learner sees of a row: bag-of-words vectors or frozen hidden states, cached on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use aar_engine::Pooling;
use aar_engine::features::{FeatureSpec, Matrix, cached_features_seeded};
use aar_engine::model::{LoadOptions, Model};
use aar_engine::prompt::{Overflow, PromptEncoder, PromptFormat, PromptOptions, Template};
use aar_tasks::{Example, Inputs};

use crate::error::{Result, TestbedError};
use crate::method::{pair_prior, zero_shot_prior};
use crate::preset::{FeaturePooling, LearnerSpec};

/// How sharply a cosine difference becomes a zero-shot probability.
const ZERO_SHOT_SCALE: f32 = 20.0;

/// Whether every row of `examples` proposes the same `choice` (single-claim tasks): the
/// claim then carries no information and is left out of the text learners read (measured:
/// appending it to every review cost the MiniLM student 0.07 accuracy on sentiment).
pub fn constant_choice(examples: &[Example]) -> bool {
    let mut choices = examples.iter().filter_map(|e| match &e.inputs {
        Inputs::Binary { choice, .. } => Some(choice),
        Inputs::Comparison { .. } => None,
    });
    match choices.next() {
        Some(first) => choices.all(|c| c == first),
        None => false,
    }
}

/// Consistency group per row (`consistency_id`, else `group_id`); a row without one is
/// its own group.
pub fn group_ids(examples: &[Example]) -> Vec<String> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.extra
                .get("consistency_id")
                .or_else(|| e.extra.get("group_id"))
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("row-{i}"), str::to_owned)
        })
        .collect()
}

/// The text a frozen model or a bag of words reads for a row (inputs only, never a label);
/// without the choice when `drop_choice` (see [`constant_choice`]).
pub fn row_text(example: &Example, drop_choice: bool) -> String {
    match &example.inputs {
        Inputs::Binary { question, .. } if drop_choice => question.clone(),
        Inputs::Binary { question, choice } => format!("{question}\n{choice}"),
        Inputs::Comparison {
            prompt,
            first,
            second,
        } => format!("{prompt}\nA: {first}\nB: {second}"),
    }
}

/// A binary row's two texts (`question`, `choice`), for learners that read pairs.
pub fn row_pair(example: &Example) -> Result<(String, String)> {
    match &example.inputs {
        Inputs::Binary { question, choice } => Ok((question.clone(), choice.clone())),
        Inputs::Comparison { .. } => Err(TestbedError::Unsupported(
            "pair learners read binary rows (question, choice), not comparisons".into(),
        )),
    }
}

/// `[u, v, |u - v|, u * v]` per row of unit-length `u` and `v` (the sentence-pair features
/// of InferSent and Sentence-BERT): the `u * v` block sums to the pair's cosine.
pub fn pair_features(u: &Matrix, v: &Matrix) -> Result<Matrix> {
    if u.rows() != v.rows() || u.cols() != v.cols() {
        return Err(TestbedError::Unsupported(format!(
            "pair halves differ in shape: {}x{} and {}x{}",
            u.rows(),
            u.cols(),
            v.rows(),
            v.cols()
        )));
    }
    let dim = u.cols();
    let mut data = Vec::with_capacity(u.rows() * 4 * dim);
    for i in 0..u.rows() {
        let (a, b) = (unit(u.row(i)), unit(v.row(i)));
        data.extend_from_slice(&a);
        data.extend_from_slice(&b);
        data.extend(a.iter().zip(&b).map(|(x, y)| (x - y).abs()));
        data.extend(a.iter().zip(&b).map(|(x, y)| x * y));
    }
    Ok(Matrix::new(u.rows(), 4 * dim, data)?)
}

/// Each row's cosine between its two texts, read from [`pair_features`]' `u * v` block.
pub fn pair_cosines(features: &Matrix) -> Result<Vec<f32>> {
    if features.cols() == 0 || !features.cols().is_multiple_of(4) {
        return Err(TestbedError::Unsupported(format!(
            "{} columns are not pair features [u, v, |u - v|, u * v]",
            features.cols()
        )));
    }
    let dim = features.cols() / 4;
    Ok((0..features.rows())
        .map(|i| features.row(i)[3 * dim..].iter().sum())
        .collect())
}

/// `v` scaled to unit length (a zero vector stays zero).
pub fn unit(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / norm).collect()
}

/// Where a learner's model lives: an asset name under `assets/models/`, or a directory.
pub fn model_dir(model: &str, assets_dir: &Path) -> Result<PathBuf> {
    let asset = assets_dir.join("models").join(model);
    let dir = if aar_assets::manifest::asset(model).is_some() {
        asset
    } else {
        PathBuf::from(model)
    };
    if !dir.join("config.json").is_file() {
        return Err(TestbedError::MissingAsset {
            asset: model.into(),
            what: format!("the model {model}"),
            path: dir,
        });
    }
    Ok(dir)
}

/// How a [`FrozenExtractor`]'s feature sets were had so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureCounts {
    /// Computed by the model.
    pub computed: usize,
    /// Read from the extractor's own cache.
    pub cached: usize,
    /// Copied (or linked) in from a seed cache ([`FrozenExtractor::with_seed_caches`]).
    pub copied: usize,
}

/// A loaded frozen-feature extractor.
#[derive(Debug)]
pub struct FrozenExtractor {
    model: Model,
    encoder: PromptEncoder,
    spec: FeatureSpec,
    max_tokens: usize,
    pair: bool,
    cache_dir: PathBuf,
    seeds: Vec<PathBuf>,
    computed: AtomicUsize,
    cached: AtomicUsize,
    copied: AtomicUsize,
}

impl FrozenExtractor {
    /// Loads the learner's model (CPU or the best device) and tokenizer.
    pub fn load(learner: &LearnerSpec, assets_dir: &Path, cache_dir: &Path) -> Result<Self> {
        let LearnerSpec::Frozen {
            model,
            layer,
            pooling,
            max_tokens,
            pair,
            ..
        } = learner
        else {
            return Err(TestbedError::Unsupported(format!(
                "{} is not a frozen-feature learner",
                learner.short_name()
            )));
        };
        let dir = model_dir(model, assets_dir)?;
        let pooling = match pooling {
            FeaturePooling::Mean => Pooling::Mean,
            FeaturePooling::LastToken => Pooling::LastToken,
        };
        let loaded = Model::load(
            &dir,
            &LoadOptions {
                device: aar_engine::device::best_device(),
                pooling,
                ..LoadOptions::default()
            },
        )?;
        let encoder = PromptEncoder::load(
            &dir.join("tokenizer.json"),
            PromptOptions {
                template: Template::Binary,
                format: PromptFormat::Base,
                max_tokens: *max_tokens,
                overflow: Overflow::TruncateBody,
                label_tokens: false,
            },
        )?;
        Ok(FrozenExtractor {
            model: loaded,
            encoder,
            spec: FeatureSpec {
                layer: *layer,
                pooling,
                template: "aar-testbed/raw-text".into(),
            },
            max_tokens: *max_tokens,
            pair: *pair,
            cache_dir: cache_dir.to_owned(),
            seeds: Vec::new(),
            computed: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            copied: AtomicUsize::new(0),
        })
    }

    /// Reads through to `seeds` (never written): features missing from the extractor's
    /// cache but present in a seed are copied into it rather than computed
    /// ([`aar_engine::features::cached_features_seeded`]).
    pub fn with_seed_caches(mut self, seeds: Vec<PathBuf>) -> Self {
        self.seeds = seeds;
        self
    }

    /// How the feature sets asked for so far were had.
    pub fn counts(&self) -> FeatureCounts {
        FeatureCounts {
            computed: self.computed.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
            copied: self.copied.load(Ordering::Relaxed),
        }
    }

    /// Features of task rows as this learner reads them: one text per row
    /// ([`row_text`]), or the two texts of a pair ([`pair_features`]). The flag says
    /// whether they all came from the cache.
    pub fn row_features(&self, examples: &[Example], drop_choice: bool) -> Result<(Matrix, bool)> {
        if !self.pair {
            let texts: Vec<String> = examples.iter().map(|e| row_text(e, drop_choice)).collect();
            return self.features(&texts);
        }
        let (questions, choices): (Vec<String>, Vec<String>) = examples
            .iter()
            .map(row_pair)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let (u, u_cached) = self.unique_features(&questions)?;
        let (v, v_cached) = self.unique_features(&choices)?;
        Ok((pair_features(&u, &v)?, u_cached && v_cached))
    }

    /// The student's zero-shot prior `p(label 1)` on `train` (this learner's features): the
    /// pair cosine for a pair learner, else the similarity to the label descriptions when
    /// the task has them.
    pub fn zero_shot_prior(
        &self,
        train: &Matrix,
        verbalizers: Option<&[String; 2]>,
    ) -> Result<Option<Vec<f32>>> {
        if self.pair {
            return Ok(Some(pair_prior(train, ZERO_SHOT_SCALE)?));
        }
        match verbalizers {
            Some(v) => {
                let (described, _) = self.features(v.as_slice())?;
                Ok(Some(zero_shot_prior(train, &described, ZERO_SHOT_SCALE)?))
            }
            None => Ok(None),
        }
    }

    /// Features of `texts`, each distinct text read once (pair rows repeat their question).
    fn unique_features(&self, texts: &[String]) -> Result<(Matrix, bool)> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut distinct: Vec<String> = Vec::new();
        let rows: Vec<usize> = texts
            .iter()
            .map(|t| {
                *index.entry(t.as_str()).or_insert_with(|| {
                    distinct.push(t.clone());
                    distinct.len() - 1
                })
            })
            .collect();
        let (features, cached) = self.features(&distinct)?;
        Ok((features.select(&rows)?, cached))
    }

    /// Features of `texts`, from the cache when present.
    pub fn features(&self, texts: &[String]) -> Result<(Matrix, bool)> {
        let prompts = texts
            .iter()
            .map(|t| self.encoder.encode_text(t, self.max_tokens))
            .collect::<aar_engine::Result<Vec<_>>>()?;
        let features = cached_features_seeded(
            &self.model,
            &prompts,
            &self.spec,
            &self.cache_dir,
            &self.seeds,
            self.encoder.pad_id(),
            32,
        )?;
        let counter = match (&features.seeded_from, features.from_cache) {
            (Some(_), _) => &self.copied,
            (None, true) => &self.cached,
            (None, false) => &self.computed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok((Matrix::from_tensor(&features.values)?, features.from_cache))
    }
}

/// Lower-cased runs of letters, digits and apostrophes.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// A bag-of-words vocabulary: words in at least `min_count` of the fitting texts, sorted.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    index: HashMap<String, usize>,
}

impl Vocabulary {
    /// The vocabulary of `texts` (document frequency >= `min_count`).
    pub fn fit(texts: &[String], min_count: usize) -> Vocabulary {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for text in texts {
            let unique: std::collections::BTreeSet<String> = words(text).collect();
            for word in unique {
                *counts.entry(word).or_default() += 1;
            }
        }
        let index = counts
            .into_iter()
            .filter(|(_, n)| *n >= min_count.max(1))
            .enumerate()
            .map(|(i, (w, _))| (w, i))
            .collect();
        Vocabulary { index }
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it holds no word.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Word-presence vectors (0/1), one row per text.
    pub fn transform(&self, texts: &[String]) -> Result<Matrix> {
        let cols = self.len().max(1);
        let mut data = vec![0f32; texts.len() * cols];
        for (row, text) in texts.iter().enumerate() {
            for word in words(text) {
                if let Some(&col) = self.index.get(&word) {
                    data[row * cols + col] = 1.0;
                }
            }
        }
        Ok(Matrix::new(texts.len(), cols, data)?)
    }
}
