//! Label readout: batched forward passes, two-way softmax, predictions.

use tch::{Kind, Tensor};

use crate::error::Result;
use crate::model::Model;
use crate::models::{PaddingSide, TokenBatch};

/// How prompts are batched for a readout.
#[derive(Debug, Clone, Copy)]
pub struct ReadoutOptions {
    /// Prompts per forward pass.
    pub batch_size: usize,
    /// Padding side (left for decoders, right for encoders is customary; both are correct).
    pub padding: PaddingSide,
    /// The token id used for padding.
    pub pad_id: i64,
    /// The label tokens' ids (decoders).
    pub label_token_ids: Option<[i64; 2]>,
}

/// Probabilities of the two labels for every prompt, and the argmax predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Readout {
    /// `[p(label 0), p(label 1)]` per prompt (two-way softmax of the label logits).
    pub probabilities: Vec<[f32; 2]>,
    /// 0 or 1 per prompt.
    pub predictions: Vec<usize>,
}

impl Readout {
    /// Fraction of predictions equal to `labels`.
    pub fn accuracy(&self, labels: &[usize]) -> f64 {
        let correct = self
            .predictions
            .iter()
            .zip(labels)
            .filter(|(pred, label)| pred == label)
            .count();
        correct as f64 / labels.len().max(1) as f64
    }
}

/// Reads the two label probabilities of every prompt (no gradients, eval mode).
pub fn read_labels(
    model: &Model,
    prompts: &[Vec<i64>],
    options: &ReadoutOptions,
) -> Result<Readout> {
    let mut probabilities = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(options.batch_size.max(1)) {
        let sequences: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
        let batch = TokenBatch::pad(&sequences, options.pad_id, options.padding, model.device())?;
        let log_probs =
            tch::no_grad(|| model.label_log_probs(&batch, options.label_token_ids, false))?;
        let two_way = log_probs
            .softmax(-1, Kind::Float)
            .to_device(tch::Device::Cpu);
        probabilities.extend(tensor_rows(&two_way)?);
    }
    let predictions = probabilities
        .iter()
        .map(|[first, second]| usize::from(second > first))
        .collect();
    Ok(Readout {
        probabilities,
        predictions,
    })
}

/// Rows of a [n, 2] fp32 tensor.
pub(crate) fn tensor_rows(two_column: &Tensor) -> Result<Vec<[f32; 2]>> {
    let flat = Vec::<f32>::try_from(two_column.to_kind(Kind::Float).flatten(0, -1))?;
    Ok(flat
        .chunks_exact(2)
        .map(|pair| [pair[0], pair[1]])
        .collect())
}
