//! Llama-family decoders: Llama (SmolLM2), Qwen2 (q/k/v biases) and Qwen3 (per-head q/k RMSNorm).
//!
//! Mirrors transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM` / `Qwen3ForCausalLM`:
//! pre-norm blocks, RoPE (rotate-half form), grouped-query attention, SwiGLU MLP.
//! Positions are counted over real tokens only, so left padding gives the same logits
//! as no padding.

use std::path::Path;

use serde::Deserialize;
use tch::{Kind, Tensor, nn};

use super::{Architecture, Builder};
use crate::error::{EngineError, Result};
use crate::lora::LoraLinear;

/// `config.json` of a Llama / Qwen2 / Qwen3 checkpoint (the fields the engine reads).
#[derive(Debug, Deserialize)]
pub struct DecoderConfigFile {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
}

/// A decoder's resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Which variant.
    pub architecture: Architecture,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Residual width.
    pub hidden_size: i64,
    /// MLP width.
    pub intermediate_size: i64,
    /// Number of blocks.
    pub num_layers: i64,
    /// Query heads.
    pub num_heads: i64,
    /// Key/value heads (GQA when fewer than `num_heads`).
    pub num_kv_heads: i64,
    /// Width of one head.
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Output projection shares the input embedding.
    pub tie_word_embeddings: bool,
    /// q/k/v projections have biases (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on queries and keys (Qwen3).
    pub qk_norm: bool,
}

impl DecoderConfigFile {
    /// Resolves defaults and checks what the engine supports; `path` names `config.json` in errors.
    pub fn resolve(self, architecture: Architecture, path: &Path) -> Result<DecoderConfig> {
        let bad = |message: String| EngineError::BadConfig {
            path: path.to_path_buf(),
            message,
        };
        if let Some(act) = self.hidden_act.as_deref().filter(|act| *act != "silu") {
            return Err(bad(format!(
                "hidden_act {act:?} is not supported (only silu)"
            )));
        }
        if let Some(scaling) = self.rope_scaling.as_ref().filter(|value| !value.is_null()) {
            let kind = scaling.get("rope_type").or_else(|| scaling.get("type"));
            if kind.and_then(|kind| kind.as_str()) != Some("default") {
                return Err(bad(format!("rope_scaling {scaling} is not supported")));
            }
        }
        let num_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if self.num_attention_heads <= 0
            || num_kv_heads <= 0
            || self.num_attention_heads % num_kv_heads != 0
        {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {num_kv_heads}",
                self.num_attention_heads
            )));
        }
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads);
        let qkv_bias = match architecture {
            Architecture::Qwen2 => true,
            _ => self.attention_bias.unwrap_or(false),
        };
        Ok(DecoderConfig {
            architecture,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta.unwrap_or(10_000.0),
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias,
            qk_norm: architecture == Architecture::Qwen3,
        })
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: LoraLinear,
    k_proj: LoraLinear,
    v_proj: LoraLinear,
    o_proj: LoraLinear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

#[derive(Debug)]
struct Mlp {
    gate_proj: LoraLinear,
    up_proj: LoraLinear,
    down_proj: LoraLinear,
}

#[derive(Debug)]
struct Block {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
}

/// A Llama-family causal language model.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: Tensor,
    lm_head: Tensor,
}

/// RMSNorm as transformers computes it: in fp32, cast back, then scaled.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Tensor {
    let kind = x.kind();
    let x = x.to_kind(Kind::Float);
    let variance = x
        .pow_tensor_scalar(2)
        .mean_dim(Some([-1i64].as_slice()), true, Kind::Float);
    (x * (variance + eps).rsqrt()).to_kind(kind) * weight
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[x.dim() - 1] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[x2.neg(), x1], -1)
}

impl Decoder {
    pub(crate) fn new(root: &nn::Path, config: DecoderConfig, builder: &Builder) -> Self {
        let c = &config;
        let model = root / "model";
        let embed_tokens = builder.weight(
            &(&model / "embed_tokens"),
            "weight",
            &[c.vocab_size, c.hidden_size],
        );
        let q_width = c.num_heads * c.head_dim;
        let kv_width = c.num_kv_heads * c.head_dim;
        let layers = (0..c.num_layers)
            .map(|index| {
                let layer = &model / "layers" / index;
                let attn = &layer / "self_attn";
                let mlp = &layer / "mlp";
                Block {
                    input_layernorm: builder.weight(
                        &(&layer / "input_layernorm"),
                        "weight",
                        &[c.hidden_size],
                    ),
                    self_attn: Attention {
                        q_proj: builder.linear(
                            &(&attn / "q_proj"),
                            c.hidden_size,
                            q_width,
                            c.qkv_bias,
                            "q_proj",
                        ),
                        k_proj: builder.linear(
                            &(&attn / "k_proj"),
                            c.hidden_size,
                            kv_width,
                            c.qkv_bias,
                            "k_proj",
                        ),
                        v_proj: builder.linear(
                            &(&attn / "v_proj"),
                            c.hidden_size,
                            kv_width,
                            c.qkv_bias,
                            "v_proj",
                        ),
                        o_proj: builder.linear(
                            &(&attn / "o_proj"),
                            q_width,
                            c.hidden_size,
                            false,
                            "o_proj",
                        ),
                        q_norm: c
                            .qk_norm
                            .then(|| builder.weight(&(&attn / "q_norm"), "weight", &[c.head_dim])),
                        k_norm: c
                            .qk_norm
                            .then(|| builder.weight(&(&attn / "k_norm"), "weight", &[c.head_dim])),
                    },
                    post_attention_layernorm: builder.weight(
                        &(&layer / "post_attention_layernorm"),
                        "weight",
                        &[c.hidden_size],
                    ),
                    mlp: Mlp {
                        gate_proj: builder.linear(
                            &(&mlp / "gate_proj"),
                            c.hidden_size,
                            c.intermediate_size,
                            false,
                            "gate_proj",
                        ),
                        up_proj: builder.linear(
                            &(&mlp / "up_proj"),
                            c.hidden_size,
                            c.intermediate_size,
                            false,
                            "up_proj",
                        ),
                        down_proj: builder.linear(
                            &(&mlp / "down_proj"),
                            c.intermediate_size,
                            c.hidden_size,
                            false,
                            "down_proj",
                        ),
                    },
                }
            })
            .collect();
        let norm = builder.weight(&(&model / "norm"), "weight", &[c.hidden_size]);
        let lm_head = if c.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            builder.weight(
                &(root / "lm_head"),
                "weight",
                &[c.vocab_size, c.hidden_size],
            )
        };
        Self {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
        }
    }

    /// The resolved configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Hidden states [batch, seq, hidden] after `layer` blocks, numbered like transformers'
    /// `hidden_states` output: 0 is the embeddings, `num_layers` (or `None`) the final, normed output.
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
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        let kind = x.kind();

        // Positions count real tokens, so left padding does not shift them.
        let positions = (attention_mask.cumsum(1, Kind::Int64) - 1).clamp_min(0);
        let inv_freq = Tensor::pow_scalar(
            c.rope_theta,
            &(Tensor::arange_start_step(0, c.head_dim, 2, (Kind::Int64, device))
                .to_kind(Kind::Float)
                / c.head_dim as f64),
        )
        .reciprocal();
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
        let angles = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1); // [b, 1, s, d]
        let cos = angles.cos().to_kind(kind);
        let sin = angles.sin().to_kind(kind);

        // Causal mask over real keys; each position may always see itself, so padded
        // rows stay finite instead of attending to nothing.
        let causal = Tensor::ones([seq, seq], (Kind::Bool, device)).tril(0);
        let keys = attention_mask.to_kind(Kind::Bool).view([batch, 1, 1, seq]);
        let diagonal = Tensor::eye(seq, (Kind::Bool, device));
        let mask = causal.logical_and(&keys).logical_or(&diagonal);

        let stop = layer.unwrap_or(self.layers.len());
        if stop == 0 {
            return x;
        }
        for (index, block) in self.layers.iter().enumerate() {
            x = self.block(block, &x, &cos, &sin, &mask, train);
            if index + 1 == stop && stop < self.layers.len() {
                return x;
            }
        }
        rms_norm(&x, &self.norm, c.rms_norm_eps)
    }

    /// Next-token logits [.., vocab] (fp32) from final hidden states [.., hidden].
    pub fn lm_logits(&self, hidden: &Tensor) -> Tensor {
        hidden
            .linear::<Tensor>(&self.lm_head, None)
            .to_kind(Kind::Float)
    }

    fn block(
        &self,
        block: &Block,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> Tensor {
        let c = &self.config;
        let (batch, seq) = (x.size()[0], x.size()[1]);
        let h = rms_norm(x, &block.input_layernorm, c.rms_norm_eps);
        let attn = &block.self_attn;
        let heads = |proj: &LoraLinear, n: i64, norm: Option<&Tensor>| {
            let t = proj.forward(&h, train).view([batch, seq, n, c.head_dim]);
            let t = match norm {
                Some(weight) => rms_norm(&t, weight, c.rms_norm_eps),
                None => t,
            };
            t.transpose(1, 2)
        };
        let q = heads(&attn.q_proj, c.num_heads, attn.q_norm.as_ref());
        let k = heads(&attn.k_proj, c.num_kv_heads, attn.k_norm.as_ref());
        let v = heads(&attn.v_proj, c.num_kv_heads, None);
        let q = &q * cos + rotate_half(&q) * sin;
        let k = &k * cos + rotate_half(&k) * sin;
        let groups = c.num_heads / c.num_kv_heads;
        let (k, v) = if groups > 1 {
            (
                k.repeat_interleave_self_int(groups, 1, None),
                v.repeat_interleave_self_int(groups, 1, None),
            )
        } else {
            (k, v)
        };
        let out =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, false)
                .transpose(1, 2)
                .reshape([batch, seq, c.num_heads * c.head_dim]);
        let x = x + attn.o_proj.forward(&out, train);
        let h = rms_norm(&x, &block.post_attention_layernorm, c.rms_norm_eps);
        let mlp = &block.mlp;
        let gated = mlp.gate_proj.forward(&h, train).silu() * mlp.up_proj.forward(&h, train);
        &x + mlp.down_proj.forward(&gated, train)
    }
}
