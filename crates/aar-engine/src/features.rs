//! Frozen-feature mode: hidden states extracted once, cached on disk, and small heads
//! (logistic/linear or a one-hidden-layer MLP) trained on them.
//!
//! The cache key is a SHA-256 over (weights hash, data hash, template, layer, pooling), so a
//! change to any of them is a miss and a stale file is never read. The weights hash itself is
//! remembered beside the cache, keyed by each file's path, size and modification time, so a
//! cache hit does not reread gigabytes of weights.
//!
//! A cache may read through to "seed" caches ([`cached_features_seeded`]): a key missing
//! from it but present in a seed is linked (or copied) in rather than computed. Seeds are
//! only ever read, and only the key a call asks for is taken from them.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor, nn, nn::Module, nn::OptimizerConfig};

use crate::error::{EngineError, Result};
use crate::model::{Model, Pooling, pool};
use crate::models::{ModelFiles, PaddingSide, TokenBatch};

/// What to extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Hidden-state layer, numbered as transformers' `hidden_states` (`None` = last).
    pub layer: Option<usize>,
    /// Last real token or mean over real tokens.
    pub pooling: Pooling,
    /// The template (name or text) the prompts were built with: part of the cache key.
    pub template: String,
}

/// Extracted features [n, hidden] (fp32, CPU) and whether they came from the cache.
#[derive(Debug)]
pub struct Features {
    /// One row per prompt.
    pub values: Tensor,
    /// Read from the cache (or a seed cache) rather than computed.
    pub from_cache: bool,
    /// The seed cache's file they were read from, when the cache itself lacked the key
    /// ([`cached_features_seeded`]); it was then linked or copied into the cache.
    pub seeded_from: Option<PathBuf>,
    /// The cache file.
    pub path: PathBuf,
}

/// SHA-256 over config.json and the weight files' bytes (hex).
pub fn weights_hash(files: &ModelFiles) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in std::iter::once(&files.config).chain(&files.weights) {
        let mut file = std::fs::File::open(path).map_err(|source| EngineError::io(path, source))?;
        loop {
            let read = file
                .read(&mut buffer)
                .map_err(|source| EngineError::io(path, source))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// [`weights_hash`], remembered in `cache_dir/weights-hashes/` under a key of the files'
/// paths, sizes and modification times: a changed file is hashed again.
pub fn weights_hash_cached(files: &ModelFiles, cache_dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for path in std::iter::once(&files.config).chain(&files.weights) {
        let meta = std::fs::metadata(path).map_err(|source| EngineError::io(path, source))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update(meta.len().to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    let dir = cache_dir.join("weights-hashes");
    let memo = dir.join(hex(&hasher.finalize()));
    if let Ok(text) = std::fs::read_to_string(&memo) {
        let text = text.trim();
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.to_owned());
        }
    }
    let hash = weights_hash(files)?;
    // Remembering is an optimisation: a read-only cache (a researcher's sandbox) still
    // gets the right hash, just computed each time.
    let partial = memo.with_extension("partial");
    let remembered = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&partial, &hash))
        .and_then(|()| std::fs::rename(&partial, &memo));
    if let Err(err) = remembered {
        tracing::debug!(path = %memo.display(), error = %err, "weights hash not remembered");
    }
    Ok(hash)
}

/// SHA-256 over the prompts' token ids (hex).
pub fn data_hash(prompts: &[Vec<i64>]) -> String {
    let mut hasher = Sha256::new();
    for prompt in prompts {
        hasher.update((prompt.len() as u64).to_le_bytes());
        for id in prompt {
            hasher.update(id.to_le_bytes());
        }
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Features of `prompts` under `spec`, read from `cache_dir` or computed and stored there.
pub fn cached_features(
    model: &Model,
    prompts: &[Vec<i64>],
    spec: &FeatureSpec,
    cache_dir: &Path,
    pad_id: i64,
    batch_size: usize,
) -> Result<Features> {
    cached_features_seeded(model, prompts, spec, cache_dir, &[], pad_id, batch_size)
}

/// [`cached_features`] reading through to `seeds`: a key missing from `cache_dir` but
/// present in a seed cache (first in order) is hard-linked into `cache_dir` (copied when
/// the link fails, e.g. across filesystems; through a `.partial` file then renamed)
/// instead of computed. The seeds are never written, and nothing enters `cache_dir` but
/// the one key this call asks for: a cache kept apart for what some reader may see (a
/// researcher's) takes from a fuller one (the testbed's) only the features of prompts it
/// was asked to hold anyway.
pub fn cached_features_seeded(
    model: &Model,
    prompts: &[Vec<i64>],
    spec: &FeatureSpec,
    cache_dir: &Path,
    seeds: &[PathBuf],
    pad_id: i64,
    batch_size: usize,
) -> Result<Features> {
    let key = {
        let mut hasher = Sha256::new();
        hasher.update(weights_hash_cached(model.files(), cache_dir)?);
        hasher.update(data_hash(prompts));
        hasher.update(spec.template.as_bytes());
        hasher.update(format!("{:?}|{:?}", spec.layer, spec.pooling));
        hex(&hasher.finalize())
    };
    let path = cache_dir.join(format!("{key}.safetensors"));
    if path.is_file() {
        let mut tensors = Tensor::read_safetensors(&path)?;
        if let Some((_, values)) = tensors.pop() {
            tracing::debug!(cache = %path.display(), "features from cache");
            return Ok(Features {
                values,
                from_cache: true,
                seeded_from: None,
                path,
            });
        }
    }
    for seed in seeds {
        let source = seed.join(format!("{key}.safetensors"));
        if !source.is_file() {
            continue;
        }
        // A seed entry that cannot be read is a miss there, not an error: computing it
        // here is what would have happened without the seed.
        let values = match Tensor::read_safetensors(&source) {
            Ok(mut tensors) => match tensors.pop() {
                Some((_, values)) => values,
                None => continue,
            },
            Err(err) => {
                tracing::warn!(seed = %source.display(), error = %err, "seed features unreadable");
                continue;
            }
        };
        let partial = cache_dir.join(format!("{key}.partial"));
        if let Err(err) = link_or_copy(&source, &partial, &path) {
            // As an unwritable cache below: the features are right, only not kept.
            tracing::warn!(cache = %cache_dir.display(), error = %err, "seed features not cached");
        }
        tracing::debug!(seed = %source.display(), cache = %path.display(), "features from a seed cache");
        return Ok(Features {
            values,
            from_cache: true,
            seeded_from: Some(source),
            path,
        });
    }
    let padding = match spec.pooling {
        Pooling::Cls => PaddingSide::Right,
        Pooling::Mean | Pooling::LastToken => PaddingSide::Left,
    };
    let mut rows = Vec::new();
    for chunk in prompts.chunks(batch_size.max(1)) {
        let sequences: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
        let batch = TokenBatch::pad(&sequences, pad_id, padding, model.device())?;
        let pooled = tch::no_grad(|| -> Result<Tensor> {
            let hidden = model.hidden_states(&batch, spec.layer, false)?;
            Ok(pool(&hidden, &batch, spec.pooling))
        })?;
        rows.push(pooled.to_kind(Kind::Float).to_device(Device::Cpu));
    }
    if rows.is_empty() {
        return Err(EngineError::InvalidInput(
            "no prompts to extract features from".into(),
        ));
    }
    let values = Tensor::cat(&rows, 0);
    // Write then rename, so a crash never leaves a truncated cache entry under the key.
    // A cache that cannot be written (read-only in a researcher's sandbox) only costs
    // recomputation next time, so it is reported, not fatal.
    let partial = cache_dir.join(format!("{key}.partial"));
    let stored = std::fs::create_dir_all(cache_dir)
        .map_err(|source| EngineError::io(cache_dir, source))
        .and_then(|()| {
            Ok(Tensor::write_safetensors(
                &[("features", &values)],
                &partial,
            )?)
        })
        .and_then(|()| {
            std::fs::rename(&partial, &path).map_err(|source| EngineError::io(&path, source))
        });
    if let Err(err) = stored {
        tracing::warn!(cache = %cache_dir.display(), error = %err, "features not cached");
    }
    Ok(Features {
        values,
        from_cache: false,
        seeded_from: None,
        path,
    })
}

/// Puts `source` at `path` by way of `partial` (same directory as `path`): a hard link
/// when both are on one filesystem, else a copy, then a rename, so `path` is never seen
/// half written. `source` is only read.
fn link_or_copy(source: &Path, partial: &Path, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    // A leftover partial (a crash) would make the link fail.
    match std::fs::remove_file(partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io(partial, e)),
    }
    if std::fs::hard_link(source, partial).is_err() {
        std::fs::copy(source, partial).map_err(|e| EngineError::io(partial, e))?;
    }
    std::fs::rename(partial, path).map_err(|e| EngineError::io(path, e))
}

/// A dense row-major fp32 matrix: features handed to crates that do not link libtorch.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// A `rows x cols` matrix from row-major values; the length must match.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Matrix> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(EngineError::InvalidInput(format!(
                "a {rows}x{cols} matrix needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` (panics outside `0..rows`, like slice indexing).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Result<Matrix> {
        let mut data = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            if i >= self.rows {
                return Err(EngineError::InvalidInput(format!(
                    "row {i} of a matrix with {} rows",
                    self.rows
                )));
            }
            data.extend_from_slice(self.row(i));
        }
        Matrix::new(indices.len(), self.cols, data)
    }

    /// The features of a [`Features`] extraction.
    pub fn from_tensor(values: &Tensor) -> Result<Matrix> {
        let (rows, cols) = match values.size().as_slice() {
            &[rows, cols] => (rows as usize, cols as usize),
            other => {
                return Err(EngineError::InvalidInput(format!(
                    "features must be [n, d], got {other:?}"
                )));
            }
        };
        let data = Vec::<f32>::try_from(values.to_kind(Kind::Float).flatten(0, -1))?;
        Matrix::new(rows, cols, data)
    }

    fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.data).view([self.rows as i64, self.cols as i64])
    }
}

/// The loss a head is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum HeadLoss {
    /// Cross-entropy against the (hard or soft) targets.
    #[default]
    CrossEntropy,
    /// The reference's logconf (OpenAI weak-to-strong): the target mixes the weak soft label
    /// with the head's own hard prediction, thresholded at the quantile that matches the weak
    /// labels' mean, by a coefficient rising linearly to `aux_coef` over `warmup_frac` of steps.
    LogConf {
        /// Final weight of the head's own predictions.
        aux_coef: f64,
        /// Fraction of steps over which the weight rises.
        warmup_frac: f64,
    },
}

/// The head trained on frozen features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// Logistic regression: one linear layer to the two labels.
    Linear,
    /// One hidden ReLU layer of this width, then the two labels.
    Mlp {
        /// Hidden width.
        hidden: i64,
    },
}

/// Settings for [`train_head`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    /// The head.
    pub kind: HeadKind,
    /// Passes over the features.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// L2 penalty `l2 * sum(w^2)` on the weight matrices (not biases), added to the mean loss.
    pub l2: f64,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// The loss.
    pub loss: HeadLoss,
}

/// A trained head: standardisation of the features, then the layers.
#[derive(Debug)]
pub struct FeatureHead {
    _vs: nn::VarStore,
    net: nn::Sequential,
    mean: Tensor,
    std: Tensor,
}

impl FeatureHead {
    /// `[p(label 0), p(label 1)]` per feature row.
    pub fn predict(&self, features: &Tensor) -> Result<Vec<[f32; 2]>> {
        let probs = tch::no_grad(|| {
            self.net
                .forward(&((features - &self.mean) / &self.std))
                .softmax(-1, Kind::Float)
        });
        crate::readout::tensor_rows(&probs)
    }

    /// `[p(label 0), p(label 1)]` per row of `features`.
    pub fn predict_matrix(&self, features: &Matrix) -> Result<Vec<[f32; 2]>> {
        self.predict(&features.to_tensor())
    }
}

/// [`train_head`] on a [`Matrix`] with one `[p0, p1]` target per row.
pub fn train_head_on(
    features: &Matrix,
    targets: &[[f32; 2]],
    config: &HeadConfig,
) -> Result<FeatureHead> {
    if targets.len() != features.rows() {
        return Err(EngineError::InvalidInput(format!(
            "{} targets for {} feature rows",
            targets.len(),
            features.rows()
        )));
    }
    let flat: Vec<f32> = targets.iter().flatten().copied().collect();
    let targets = Tensor::from_slice(&flat).view([features.rows() as i64, 2]);
    train_head(&features.to_tensor(), &targets, config)
}

/// [`train_head_on`] with a weight per row: each batch's loss is the weighted mean
/// `sum(w_i * loss_i) / sum(w_i)`, so a row of weight 2 counts as two rows of weight 1.
/// Weights must be finite and non-negative with a positive sum.
pub fn train_weighted_head_on(
    features: &Matrix,
    targets: &[[f32; 2]],
    weights: &[f32],
    config: &HeadConfig,
) -> Result<FeatureHead> {
    if targets.len() != features.rows() || weights.len() != features.rows() {
        return Err(EngineError::InvalidInput(format!(
            "{} targets and {} weights for {} feature rows",
            targets.len(),
            weights.len(),
            features.rows()
        )));
    }
    if let Some(bad) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
        return Err(EngineError::InvalidInput(format!(
            "row {bad}: weight {} is not a finite non-negative number",
            weights[bad]
        )));
    }
    if weights.iter().map(|&w| f64::from(w)).sum::<f64>() <= 0.0 {
        return Err(EngineError::InvalidInput("the weights sum to 0".into()));
    }
    let flat: Vec<f32> = targets.iter().flatten().copied().collect();
    let targets = Tensor::from_slice(&flat).view([features.rows() as i64, 2]);
    fit_head(
        &features.to_tensor(),
        &targets,
        Some(&Tensor::from_slice(weights)),
        config,
    )
}

/// The loss of one batch: soft cross-entropy per row, averaged, or weighted by `weights`
/// (`sum(w * ce) / sum(w)`; a batch whose weights are all 0 contributes 0).
pub fn batch_loss(log_probs: &Tensor, targets: &Tensor, weights: Option<&Tensor>) -> Tensor {
    let per_row = -(targets * log_probs).sum_dim_intlist(-1, false, Kind::Float);
    match weights {
        None => per_row.mean(Kind::Float),
        Some(w) => (per_row * w).sum(Kind::Float) / w.sum(Kind::Float).clamp_min(1e-12),
    }
}

/// A linear layer initialised like PyTorch's (U(±1/sqrt(in))), from `seed` rather than
/// libtorch's global RNG.
fn seeded_linear(path: &nn::Path, input: i64, output: i64, seed: u64) -> nn::Linear {
    let bound = 1.0 / (input as f64).sqrt();
    let weight = crate::init::uniform(seed, &path.path("weight"), &[output, input], -bound, bound);
    let bias = crate::init::uniform(seed, &path.path("bias"), &[output], -bound, bound);
    nn::Linear {
        ws: path.var_copy("weight", &weight),
        bs: Some(path.var_copy("bias", &bias)),
    }
}

/// Trains a head on `features` [n, d] (fp32, CPU) with soft or hard `targets` [n, 2] (CE loss).
pub fn train_head(features: &Tensor, targets: &Tensor, config: &HeadConfig) -> Result<FeatureHead> {
    fit_head(features, targets, None, config)
}

/// [`train_head`], with an optional weight per row ([`batch_loss`]).
fn fit_head(
    features: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
    config: &HeadConfig,
) -> Result<FeatureHead> {
    let size = features.size();
    let (rows, width) = match size.as_slice() {
        [rows, width] if *rows > 0 => (*rows, *width),
        _ => {
            return Err(EngineError::InvalidInput(format!(
                "features must be [n, d] with n > 0, got {size:?}"
            )));
        }
    };
    if targets.size() != [rows, 2] {
        return Err(EngineError::InvalidInput(format!(
            "targets must be [{rows}, 2], got {:?}",
            targets.size()
        )));
    }
    let features = features.to_kind(Kind::Float);
    let mean = features.mean_dim(Some([0i64].as_slice()), true, Kind::Float);
    let std = features
        .std_dim(Some([0i64].as_slice()), false, true)
        .clamp_min(1e-6);
    let normalised = (&features - &mean) / &std;

    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let linear = |name: &str, input: i64, output: i64| {
        seeded_linear(&(&root / name), input, output, config.seed)
    };
    let net = match config.kind {
        HeadKind::Linear => nn::seq().add(linear("linear", width, 2)),
        HeadKind::Mlp { hidden } => nn::seq()
            .add(linear("hidden", width, hidden))
            .add_fn(|x| x.relu())
            .add(linear("out", hidden, 2)),
    };
    let mut optimizer = nn::AdamW {
        wd: config.weight_decay,
        ..Default::default()
    }
    .build(&vs, config.learning_rate)?;
    let batch = config.batch_size.max(1);
    let total_steps = config.epochs * (rows as usize).div_ceil(batch);
    // logconf thresholds at the quantile matching the weak labels' mean of label 0.
    let weak_mean_one = targets
        .to_kind(Kind::Float)
        .select(1, 1)
        .mean(Kind::Float)
        .double_value(&[]);
    let mut step = 0usize;
    let penalised: Vec<Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.ends_with("weight"))
        .map(|(_, tensor)| tensor)
        .collect();
    for epoch in 0..config.epochs {
        let order = crate::train::shuffled(rows as usize, config.seed.wrapping_add(epoch as u64));
        for chunk in order.chunks(batch) {
            let index = Tensor::from_slice(&chunk.iter().map(|&i| i as i64).collect::<Vec<_>>());
            let x = normalised.index_select(0, &index);
            let mut t = targets.index_select(0, &index).to_kind(Kind::Float);
            let log_probs = net.forward(&x).log_softmax(-1, Kind::Float);
            if let HeadLoss::LogConf {
                aux_coef,
                warmup_frac,
            } = config.loss
            {
                let progress = step as f64 / total_steps.max(1) as f64;
                let coef = aux_coef * (progress / warmup_frac.max(1e-9)).min(1.0);
                let p0 = log_probs.detach().select(1, 0).exp();
                let threshold =
                    p0.f_quantile_scalar(weak_mean_one, None::<i64>, false, "linear")?;
                let first = p0.ge_tensor(&threshold).to_kind(Kind::Float);
                let strong_hard = Tensor::stack(&[&first, &(1.0 - &first)], 1);
                t = t * (1.0 - coef) + strong_hard * coef;
            }
            step += 1;
            let batch_weights = weights.map(|w| w.index_select(0, &index));
            let mut loss = batch_loss(&log_probs, &t, batch_weights.as_ref());
            if config.l2 > 0.0 {
                for weight in &penalised {
                    loss += weight.square().sum(Kind::Float) * config.l2;
                }
            }
            optimizer.zero_grad();
            loss.f_backward()?;
            optimizer.step();
        }
    }
    Ok(FeatureHead {
        _vs: vs,
        net,
        mean,
        std,
    })
}
