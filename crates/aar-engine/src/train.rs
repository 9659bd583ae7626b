//! Fine-tuning: LoRA or full, AdamW, linear warmup/decay, gradient accumulation and clipping,
//! hard/soft cross-entropy and the weak-to-strong logconf loss, per-epoch resumable checkpoints.
//!
//! The optimiser is implemented here (PyTorch's AdamW update, step for step) rather than
//! taken from tch, so that its moments can be checkpointed and a resumed run equals an
//! uninterrupted one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::models::{PaddingSide, TokenBatch};

/// One training example: prompt tokens and a target distribution over the two labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainExample {
    /// Prompt token ids (ending where the label is read).
    pub prompt_ids: Vec<i64>,
    /// Target probabilities `[label 0, label 1]` (one-hot for hard labels, weak soft labels otherwise).
    pub target: [f32; 2],
}

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Cross-entropy on `argmax(target)` (the reference's default `xent`).
    HardCrossEntropy,
    /// Cross-entropy on the target distribution itself.
    SoftCrossEntropy,
    /// OpenAI weak-to-strong auxiliary confidence loss (REFERENCE_SPEC 3.3): the target is
    /// `(1 - c) * weak + c * strong_hard`, with the student's own predictions hardened at
    /// the weak labels' prior quantile and `c = aux_weight * min(1, progress / warmup_frac)`.
    Logconf {
        /// Final weight of the student's hardened predictions (0.5 in the reference).
        aux_weight: f64,
        /// Fraction of training over which the weight ramps up.
        warmup_frac: f64,
    },
}

/// Training settings (defaults: REFERENCE_SPEC 3.2).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW epsilon.
    pub eps: f64,
    /// Fraction of optimiser steps spent warming up linearly from 0.
    pub warmup_ratio: f64,
    /// Clip the global gradient norm to this value.
    pub max_grad_norm: Option<f64>,
    /// The loss.
    pub loss: Loss,
    /// Seed for shuffling and dropout.
    pub seed: u64,
    /// Padding side of training batches.
    pub padding: PaddingSide,
    /// Pad token id.
    pub pad_id: i64,
    /// Label token ids (decoders).
    pub label_token_ids: Option<[i64; 2]>,
    /// Write `epoch-N/` checkpoints here and resume from the latest one found.
    pub checkpoint_dir: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 32,
            grad_accum: 1,
            learning_rate: 1e-4,
            weight_decay: 0.01,
            betas: (0.9, 0.95),
            eps: 1e-8,
            warmup_ratio: 0.1,
            max_grad_norm: Some(1.0),
            loss: Loss::HardCrossEntropy,
            seed: 0,
            padding: PaddingSide::Left,
            pad_id: 0,
            label_token_ids: None,
            checkpoint_dir: None,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// Mean loss of each optimiser step.
    pub step_losses: Vec<f64>,
    /// Optimiser steps taken in this call.
    pub steps: usize,
    /// The epoch training resumed at (0 for a fresh run).
    pub resumed_at_epoch: usize,
}

/// Linear warmup then linear decay to 0, as transformers' `get_linear_schedule_with_warmup`.
pub fn linear_schedule(step: usize, total_steps: usize, warmup_steps: usize) -> f64 {
    if step < warmup_steps {
        step as f64 / warmup_steps.max(1) as f64
    } else {
        let remaining = total_steps.saturating_sub(step) as f64;
        (remaining / total_steps.saturating_sub(warmup_steps).max(1) as f64).max(0.0)
    }
}

/// AdamW with decoupled weight decay, as `torch.optim.AdamW` (non-amsgrad).
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    first_moments: Vec<Tensor>,
    second_moments: Vec<Tensor>,
    step: i64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimiser over `params` (name, tensor); moments are kept in fp32.
    pub fn new(
        params: Vec<(String, Tensor)>,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
    ) -> Self {
        let zeros = |params: &[(String, Tensor)]| {
            params
                .iter()
                .map(|(_, param)| param.zeros_like().to_kind(Kind::Float))
                .collect()
        };
        Self {
            first_moments: zeros(&params),
            second_moments: zeros(&params),
            params,
            step: 0,
            betas,
            eps,
            weight_decay,
        }
    }

    /// Clears the gradients.
    pub fn zero_grad(&mut self) {
        for (_, param) in &mut self.params {
            param.zero_grad();
        }
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        tch::no_grad(|| {
            let norms: Vec<Tensor> = self
                .params
                .iter()
                .map(|(_, param)| param.grad())
                .filter(Tensor::defined)
                .map(|grad| grad.to_kind(Kind::Float).norm())
                .collect();
            if norms.is_empty() {
                return Ok(0.0);
            }
            let total = f64::try_from(Tensor::stack(&norms, 0).norm())?;
            let coef = (max_norm / (total + 1e-6)).min(1.0);
            for (_, param) in &self.params {
                let mut grad = param.grad();
                if grad.defined() {
                    let _ = grad.f_mul_scalar_(coef)?;
                }
            }
            Ok(total)
        })
    }

    /// One update at learning rate `lr`.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        let (beta1, beta2) = self.betas;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2 = 1.0 - beta2.powi(self.step as i32);
        tch::no_grad(|| -> Result<()> {
            for ((_, param), (m, v)) in self.params.iter_mut().zip(
                self.first_moments
                    .iter_mut()
                    .zip(self.second_moments.iter_mut()),
            ) {
                let grad = param.grad();
                if !grad.defined() {
                    continue;
                }
                // In-place updates with two temporaries per tensor: on CPU the step is
                // memory-bound, and every temporary is a pass over the parameters.
                let grad = grad.to_kind(Kind::Float);
                let mut value = param.to_kind(Kind::Float);
                let _ = value.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
                let _ = m.f_lerp_(&grad, 1.0 - beta1)?;
                let _ = v
                    .f_mul_scalar_(beta2)?
                    .f_addcmul_(&grad, &(&grad * (1.0 - beta2)))?;
                let mut update = v.sqrt();
                let _ = update
                    .f_div_scalar_(bias2.sqrt())?
                    .f_add_scalar_(self.eps)?
                    .f_reciprocal_()?
                    .f_mul_(m)?
                    .f_mul_scalar_(lr / bias1)?;
                let _ = value.f_sub_(&update)?;
                if param.kind() != Kind::Float {
                    param.f_copy_(&value)?;
                }
            }
            Ok(())
        })
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for ((name, param), (m, v)) in self
            .params
            .iter()
            .zip(self.first_moments.iter().zip(&self.second_moments))
        {
            out.push((format!("param.{name}"), param.shallow_clone()));
            out.push((format!("exp_avg.{name}"), m.shallow_clone()));
            out.push((format!("exp_avg_sq.{name}"), v.shallow_clone()));
        }
        out
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
    optimizer_step: i64,
    seed: u64,
}

/// The trainable variables of `model`, sorted by name.
pub fn trainable_parameters(model: &Model) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = model
        .var_store()
        .variables()
        .into_iter()
        .filter(|(_, tensor)| tensor.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// A seeded permutation of `0..len` (Fisher-Yates over splitmix64), independent of libtorch's RNG.
pub(crate) fn shuffled(len: usize, seed: u64) -> Vec<usize> {
    let mut rng = crate::init::SplitMix::new(seed);
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The loss of one micro-batch given the model's label log-probabilities [b, 2] and the
/// targets [b, 2]; `progress` is the fraction of optimiser steps done.
pub fn batch_loss(
    log_probs: &Tensor,
    targets: &Tensor,
    loss: Loss,
    progress: f64,
) -> Result<Tensor> {
    let target = match loss {
        Loss::HardCrossEntropy => {
            let hard = targets.argmax(-1, false);
            hard.one_hot(2).to_kind(Kind::Float)
        }
        Loss::SoftCrossEntropy => targets.shallow_clone(),
        Loss::Logconf {
            aux_weight,
            warmup_frac,
        } => {
            let preds = log_probs.detach().softmax(-1, Kind::Float);
            let prior = f64::try_from(
                targets
                    .mean_dim(Some([0i64].as_slice()), false, Kind::Float)
                    .get(1),
            )?;
            let first = preds.select(1, 0);
            let threshold = first.f_quantile_scalar(prior, None::<i64>, false, "linear")?;
            let strong_first = first.ge_tensor(&threshold).to_kind(Kind::Float);
            let strong = Tensor::stack(&[&strong_first, &(1.0 - &strong_first)], 1);
            let ramp = if warmup_frac > 0.0 {
                (progress / warmup_frac).min(1.0)
            } else {
                1.0
            };
            let coef = aux_weight * ramp;
            targets * (1.0 - coef) + strong * coef
        }
    };
    Ok(-(target * log_probs)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float))
}

/// Trains the trainable variables of `model` (adapters and head, or everything under full
/// fine-tuning) on `data`. With a `checkpoint_dir`, saves `epoch-N/` after each epoch and
/// resumes after the latest saved epoch.
pub fn train(model: &Model, data: &[TrainExample], config: &TrainConfig) -> Result<TrainReport> {
    if data.is_empty() || config.batch_size == 0 || config.grad_accum == 0 {
        return Err(EngineError::InvalidInput(
            "training needs examples, batch_size >= 1 and grad_accum >= 1".into(),
        ));
    }
    let params = trainable_parameters(model);
    if params.is_empty() {
        return Err(EngineError::InvalidInput(
            "the model has no trainable variables (load it with LoRA or full fine-tuning)".into(),
        ));
    }
    let mut optimizer = AdamW::new(params, config.betas, config.eps, config.weight_decay);
    let batches_per_epoch = data.len().div_ceil(config.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    let total_steps = steps_per_epoch * config.epochs;
    let warmup_steps = (config.warmup_ratio * total_steps as f64).ceil() as usize;

    let start_epoch = match &config.checkpoint_dir {
        Some(dir) => resume(dir, &mut optimizer, config.seed)?,
        None => 0,
    };
    let mut report = TrainReport {
        step_losses: Vec::new(),
        steps: 0,
        resumed_at_epoch: start_epoch,
    };
    let device = model.device();
    for epoch in start_epoch..config.epochs {
        // Reseeding per epoch makes dropout identical whether or not the run was resumed.
        tch::manual_seed(config.seed.wrapping_add(epoch as u64) as i64);
        let order = shuffled(data.len(), config.seed.wrapping_add(epoch as u64));
        let batches: Vec<&[usize]> = order.chunks(config.batch_size).collect();
        for group in batches.chunks(config.grad_accum) {
            let step = optimizer.step as usize;
            let progress = step as f64 / total_steps.max(1) as f64;
            optimizer.zero_grad();
            let mut step_loss = 0.0;
            for indices in group {
                let sequences: Vec<&[i64]> = indices
                    .iter()
                    .map(|&i| data[i].prompt_ids.as_slice())
                    .collect();
                let targets: Vec<f32> = indices.iter().flat_map(|&i| data[i].target).collect();
                let targets = Tensor::from_slice(&targets)
                    .reshape([indices.len() as i64, 2])
                    .to_device(device);
                let batch = TokenBatch::pad(&sequences, config.pad_id, config.padding, device)?;
                let log_probs = model.label_log_probs(&batch, config.label_token_ids, true)?;
                let loss =
                    batch_loss(&log_probs, &targets, config.loss, progress)? / group.len() as f64;
                loss.f_backward()?;
                step_loss += f64::try_from(&loss)?;
            }
            if let Some(max_norm) = config.max_grad_norm {
                optimizer.clip_grad_norm(max_norm)?;
            }
            let lr = config.learning_rate * linear_schedule(step, total_steps, warmup_steps);
            optimizer.step(lr)?;
            tracing::debug!(epoch, step, lr, loss = step_loss, "optimizer step");
            report.step_losses.push(step_loss);
            report.steps += 1;
        }
        if let Some(dir) = &config.checkpoint_dir {
            save_checkpoint(dir, epoch, &optimizer, config.seed)?;
        }
    }
    Ok(report)
}

fn epoch_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{}", epoch + 1))
}

fn save_checkpoint(dir: &Path, epoch: usize, optimizer: &AdamW, seed: u64) -> Result<()> {
    let target = epoch_dir(dir, epoch);
    std::fs::create_dir_all(&target).map_err(|source| EngineError::io(&target, source))?;
    let tensors: Vec<(String, Tensor)> = optimizer
        .state_tensors()
        .into_iter()
        .map(|(name, tensor)| (name, tensor.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&tensors, target.join("state.safetensors"))?;
    let state = CheckpointState {
        epoch: epoch + 1,
        optimizer_step: optimizer.step,
        seed,
    };
    let json = serde_json::to_string_pretty(&state).map_err(|source| EngineError::Json {
        path: target.join("state.json"),
        source,
    })?;
    let path = target.join("state.json");
    std::fs::write(&path, json).map_err(|source| EngineError::io(&path, source))?;
    tracing::info!(checkpoint = %target.display(), "saved checkpoint");
    Ok(())
}

/// Loads the latest `epoch-N/` under `dir` into `optimizer` (and its parameters); returns
/// the number of epochs already done.
fn resume(dir: &Path, optimizer: &mut AdamW, seed: u64) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let latest = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("epoch-")?.parse::<usize>().ok()
        })
        .max();
    let Some(done) = latest else {
        return Ok(0);
    };
    let target = dir.join(format!("epoch-{done}"));
    let bad = |message: String| EngineError::Checkpoint {
        path: target.clone(),
        message,
    };
    let state: CheckpointState = crate::models::read_json(&target.join("state.json"))?;
    if state.seed != seed {
        return Err(bad(format!(
            "was trained with seed {}, not {seed}",
            state.seed
        )));
    }
    let saved: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(target.join("state.safetensors"))?
            .into_iter()
            .collect();
    tch::no_grad(|| -> Result<()> {
        for ((name, param), (m, v)) in optimizer.params.iter_mut().zip(
            optimizer
                .first_moments
                .iter_mut()
                .zip(optimizer.second_moments.iter_mut()),
        ) {
            for (prefix, tensor) in [("param", param), ("exp_avg", m), ("exp_avg_sq", v)] {
                let key = format!("{prefix}.{name}");
                let value = saved
                    .get(&key)
                    .ok_or_else(|| bad(format!("missing tensor {key}")))?;
                if value.size() != tensor.size() {
                    return Err(bad(format!(
                        "tensor {key} has shape {:?}, expected {:?}",
                        value.size(),
                        tensor.size()
                    )));
                }
                tensor.f_copy_(value)?;
            }
        }
        Ok(())
    })?;
    optimizer.step = state.optimizer_step;
    tracing::info!(checkpoint = %target.display(), epochs_done = state.epoch, "resuming");
    Ok(state.epoch)
}
