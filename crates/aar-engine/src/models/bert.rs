//! BERT encoders (MiniLM), as transformers' `BertModel`: post-norm blocks, learned absolute
//! positions, exact (erf) GELU. Checkpoints with or without the `bert.` prefix load alike.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor, nn};

use super::Builder;
use crate::error::{EngineError, Result};
use crate::lora::LoraLinear;

/// `config.json` of a BERT checkpoint (the fields the engine reads).
#[derive(Debug, Deserialize)]
pub struct BertConfigFile {
    vocab_size: i64,
    hidden_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    intermediate_size: i64,
    max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: i64,
    #[serde(default = "default_ln_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    attention_probs_dropout_prob: f64,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
}

fn default_type_vocab() -> i64 {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

/// A BERT encoder's resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Residual width.
    pub hidden_size: i64,
    /// Number of blocks.
    pub num_layers: i64,
    /// Attention heads.
    pub num_heads: i64,
    /// MLP width.
    pub intermediate_size: i64,
    /// Learned positions (the context limit).
    pub max_positions: i64,
    /// Token-type vocabulary.
    pub type_vocab_size: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Dropout on hidden states during training.
    pub hidden_dropout: f64,
    /// Dropout on attention probabilities during training.
    pub attention_dropout: f64,
}

impl BertConfigFile {
    /// Resolves defaults and checks what the engine supports; `path` names `config.json` in errors.
    pub fn resolve(self, path: &Path) -> Result<BertConfig> {
        let bad = |message: String| EngineError::BadConfig {
            path: path.to_path_buf(),
            message,
        };
        if let Some(act) = self.hidden_act.as_deref().filter(|act| *act != "gelu") {
            return Err(bad(format!(
                "hidden_act {act:?} is not supported (only gelu)"
            )));
        }
        if let Some(kind) = self
            .position_embedding_type
            .as_deref()
            .filter(|kind| *kind != "absolute")
        {
            return Err(bad(format!(
                "position_embedding_type {kind:?} is not supported"
            )));
        }
        if self.num_attention_heads <= 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(BertConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            max_positions: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            layer_norm_eps: self.layer_norm_eps,
            hidden_dropout: self.hidden_dropout_prob,
            attention_dropout: self.attention_probs_dropout_prob,
        })
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(path: &nn::Path, width: i64, builder: &Builder) -> Self {
        Self {
            weight: builder.weight(path, "weight", &[width]),
            bias: builder.weight(path, "bias", &[width]),
        }
    }

    fn forward(&self, x: &Tensor, eps: f64) -> Tensor {
        let width = self.weight.size()[0];
        x.layer_norm([width], Some(&self.weight), Some(&self.bias), eps, true)
    }
}

#[derive(Debug)]
struct Block {
    query: LoraLinear,
    key: LoraLinear,
    value: LoraLinear,
    attention_output: LoraLinear,
    attention_norm: LayerNorm,
    intermediate: LoraLinear,
    output: LoraLinear,
    output_norm: LayerNorm,
}

/// A BERT encoder (no pooler: heads pool its hidden states themselves).
#[derive(Debug)]
pub struct Bert {
    config: BertConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Block>,
}

impl Bert {
    pub(crate) fn new(root: &nn::Path, config: BertConfig, builder: &Builder) -> Self {
        let c = &config;
        let emb = root / "embeddings";
        let word_embeddings = builder.weight(
            &(&emb / "word_embeddings"),
            "weight",
            &[c.vocab_size, c.hidden_size],
        );
        let position_embeddings = builder.weight(
            &(&emb / "position_embeddings"),
            "weight",
            &[c.max_positions, c.hidden_size],
        );
        let token_type_embeddings = builder.weight(
            &(&emb / "token_type_embeddings"),
            "weight",
            &[c.type_vocab_size, c.hidden_size],
        );
        let embeddings_norm = LayerNorm::new(&(&emb / "LayerNorm"), c.hidden_size, builder);
        let layers = (0..c.num_layers)
            .map(|index| {
                let layer = root / "encoder" / "layer" / index;
                let attention = &layer / "attention";
                let this = &attention / "self";
                let h = c.hidden_size;
                Block {
                    query: builder.linear(&(&this / "query"), h, h, true, "query"),
                    key: builder.linear(&(&this / "key"), h, h, true, "key"),
                    value: builder.linear(&(&this / "value"), h, h, true, "value"),
                    attention_output: builder.linear(
                        &(&attention / "output" / "dense"),
                        h,
                        h,
                        true,
                        "dense",
                    ),
                    attention_norm: LayerNorm::new(
                        &(&attention / "output" / "LayerNorm"),
                        h,
                        builder,
                    ),
                    intermediate: builder.linear(
                        &(&layer / "intermediate" / "dense"),
                        h,
                        c.intermediate_size,
                        true,
                        "dense",
                    ),
                    output: builder.linear(
                        &(&layer / "output" / "dense"),
                        c.intermediate_size,
                        h,
                        true,
                        "dense",
                    ),
                    output_norm: LayerNorm::new(&(&layer / "output" / "LayerNorm"), h, builder),
                }
            })
            .collect();
        Self {
            config,
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
        }
    }

    /// The resolved configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Hidden states [batch, seq, hidden] after `layer` blocks (0 = embeddings;
    /// `None` or `num_layers` = last block), as transformers' `hidden_states`.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        layer: Option<usize>,
        train: bool,
    ) -> Tensor {
        let c = &self.config;
        let device = input_ids.device();
        let (batch, seq) = (input_ids.size()[0], input_ids.size()[1]);
        let positions = Tensor::arange(seq, (Kind::Int64, device));
        let token_types = Tensor::zeros([batch, seq], (Kind::Int64, device));
        let embedded = Tensor::embedding(&self.word_embeddings, input_ids, -1, false, false)
            + Tensor::embedding(&self.position_embeddings, &positions, -1, false, false)
            + Tensor::embedding(&self.token_type_embeddings, &token_types, -1, false, false);
        let mut x = self
            .embeddings_norm
            .forward(&embedded, c.layer_norm_eps)
            .dropout(c.hidden_dropout, train);
        // Keys that are padding are masked; every query row keeps at least its real keys.
        let mask = attention_mask.to_kind(Kind::Bool).view([batch, 1, 1, seq]);
        let stop = layer.unwrap_or(self.layers.len());
        for block in self.layers.iter().take(stop) {
            x = self.block(block, &x, &mask, train);
        }
        x
    }

    fn block(&self, block: &Block, x: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let c = &self.config;
        let (batch, seq) = (x.size()[0], x.size()[1]);
        let head_dim = c.hidden_size / c.num_heads;
        let heads = |proj: &LoraLinear| {
            proj.forward(x, train)
                .view([batch, seq, c.num_heads, head_dim])
                .transpose(1, 2)
        };
        let (q, k, v) = (heads(&block.query), heads(&block.key), heads(&block.value));
        let attention_dropout = if train { c.attention_dropout } else { 0.0 };
        let attended = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            attention_dropout,
            false,
            None,
            false,
        )
        .transpose(1, 2)
        .reshape([batch, seq, c.hidden_size]);
        let attended = block
            .attention_output
            .forward(&attended, train)
            .dropout(c.hidden_dropout, train);
        let x = block
            .attention_norm
            .forward(&(attended + x), c.layer_norm_eps);
        let inner = block.intermediate.forward(&x, train).gelu("none");
        let out = block
            .output
            .forward(&inner, train)
            .dropout(c.hidden_dropout, train);
        block.output_norm.forward(&(out + x), c.layer_norm_eps)
    }
}
