//! LoRA adapters (Hu et al. 2021) on linear layers, PEFT-compatible in names and initialisation.
//!
//! An adapted layer computes `W x + b + scale * B(A(dropout(x)))` with `A` [r, in]
//! initialised like PEFT (kaiming-uniform with a = sqrt(5), i.e. U(±1/sqrt(in))),
//! `B` [out, r] zero, and `scale = alpha / sqrt(r)` (rsLoRA) or `alpha / r`.
//! Adapter tensors are named `<layer>.lora_A.weight` / `<layer>.lora_B.weight`,
//! which is PEFT's naming without its `base_model.model.` prefix and `.default` suffix.

use tch::{Kind, Tensor, nn};

/// LoRA settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank r.
    pub rank: i64,
    /// Scaling numerator alpha.
    pub alpha: f64,
    /// Dropout on the adapter's input (training only).
    pub dropout: f64,
    /// rsLoRA scaling `alpha / sqrt(r)` instead of `alpha / r`.
    pub rslora: bool,
    /// Short names of the adapted layers (`q_proj`, `query`, `dense`, ...).
    pub target_modules: Vec<String>,
}

impl LoraConfig {
    /// The reference's settings (REFERENCE_SPEC 3.2): r = alpha = 32, no dropout, rsLoRA,
    /// all attention and MLP projections of a decoder.
    pub fn reference_decoder() -> Self {
        Self {
            rank: 32,
            alpha: 32.0,
            dropout: 0.0,
            rslora: true,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// The BERT equivalents of [`LoraConfig::reference_decoder`]'s targets:
    /// `query`, `key`, `value` and every `dense` (attention output, intermediate, output).
    pub fn reference_encoder() -> Self {
        Self {
            target_modules: ["query", "key", "value", "dense"]
                .map(String::from)
                .to_vec(),
            ..Self::reference_decoder()
        }
    }

    /// The factor the adapter's output is multiplied by.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    pub(crate) fn targets(&self, layer_name: &str) -> bool {
        self.target_modules
            .iter()
            .any(|target| target == layer_name)
    }
}

/// The trainable low-rank pair of one adapted layer.
#[derive(Debug)]
pub struct LoraAdapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f64,
}

impl LoraAdapter {
    pub(crate) fn new(
        path: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        config: &LoraConfig,
        seed: u64,
    ) -> Self {
        let bound = 1.0 / (in_dim as f64).sqrt();
        // Adapters stay fp32 even when the base model is cast to bf16 (see `Model::load`).
        let a_path = path / "lora_A";
        let a_init = crate::init::uniform(
            seed,
            &a_path.path("weight"),
            &[config.rank, in_dim],
            -bound,
            bound,
        );
        let a = a_path.var_copy("weight", &a_init);
        let b = (path / "lora_B").zeros("weight", &[out_dim, config.rank]);
        Self {
            a,
            b,
            scale: config.scale(),
            dropout: config.dropout,
        }
    }
}

/// A linear layer whose weight comes from the checkpoint, with an optional LoRA adapter.
#[derive(Debug)]
pub struct LoraLinear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
    pub(crate) adapter: Option<LoraAdapter>,
}

impl LoraLinear {
    /// `x W^T + b`, plus the adapter's contribution when there is one.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let base = x.linear(&self.weight, self.bias.as_ref());
        match &self.adapter {
            None => base,
            Some(adapter) => {
                let input = x.to_kind(Kind::Float).dropout(adapter.dropout, train);
                let low_rank = input
                    .linear::<Tensor>(&adapter.a, None)
                    .linear::<Tensor>(&adapter.b, None);
                base + (low_rank * adapter.scale).to_kind(x.kind())
            }
        }
    }
}
