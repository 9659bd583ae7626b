//! A loaded model: its variables, its network and how labels are read from it.

use std::path::Path;

use tch::{Device, Kind, Tensor, nn};

use crate::error::{EngineError, Result};
use crate::lora::LoraConfig;
use crate::models::bert::{Bert, BertConfigFile};
use crate::models::llama::{Decoder, DecoderConfigFile};
use crate::models::{
    Architecture, Builder, ModelFiles, TokenBatch, compute_kind, gather_positions, load_checkpoint,
    mean_pool, read_json,
};

/// How an encoder's hidden states are pooled before its classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Mean over real tokens (sentence-transformers' choice for MiniLM).
    #[default]
    Mean,
    /// The first token (`[CLS]`); needs right padding.
    Cls,
    /// The last real token (decoders' feature choice).
    LastToken,
}

/// Options for [`Model::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where to run: fp32 on CPU, bf16 on CUDA.
    pub device: Device,
    /// LoRA adapters to add (trainable); the base weights are then frozen.
    pub lora: Option<LoraConfig>,
    /// Make the base weights trainable (full fine-tuning). Ignored when `lora` is set.
    pub full_finetune: bool,
    /// Pooling for an encoder's classification head.
    pub pooling: Pooling,
    /// Seed of the fresh variables (adapters, head); their values depend only on it and their names.
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            lora: None,
            full_finetune: false,
            pooling: Pooling::Mean,
            seed: 0,
        }
    }
}

/// The network of a loaded model.
#[derive(Debug)]
pub enum Network {
    /// An encoder with a two-way classification head (`classifier.weight` / `.bias`).
    Encoder {
        /// The encoder.
        bert: Bert,
        /// Head weight [2, hidden] (fp32).
        head_weight: Tensor,
        /// Head bias [2] (fp32).
        head_bias: Tensor,
        /// How hidden states are pooled for the head.
        pooling: Pooling,
    },
    /// A causal LM read through its label tokens' logits.
    Decoder(Decoder),
}

/// A model loaded from a Hugging Face-layout directory.
#[derive(Debug)]
pub struct Model {
    vs: nn::VarStore,
    network: Network,
    architecture: Architecture,
    files: ModelFiles,
}

impl Model {
    /// Loads the model in `dir` (config.json + safetensors); the classification head of an
    /// encoder and any LoRA adapters are freshly initialised from `options.seed`.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let files = ModelFiles::locate(dir)?;
        let architecture = files.architecture()?;
        if options.device.is_cuda() {
            // Before the first CUDA tensor: as-needed linking may have dropped the backend.
            crate::device::load_cuda_backend();
        }
        let vs = nn::VarStore::new(options.device);
        let train_base = options.full_finetune && options.lora.is_none();
        let builder = Builder::new(train_base, options.lora.as_ref(), options.seed);
        let root = vs.root();
        let (network, strip_prefix) = match architecture {
            Architecture::Bert => {
                let config = read_json::<BertConfigFile>(&files.config)?.resolve(&files.config)?;
                let hidden = config.hidden_size;
                let bert = Bert::new(&root, config, &builder);
                let head = &root / "classifier";
                let init =
                    crate::init::normal(options.seed, &head.path("weight"), &[2, hidden], 0.02);
                let head_weight = head.var_copy("weight", &init);
                let head_bias = head.zeros("bias", &[2]);
                let network = Network::Encoder {
                    bert,
                    head_weight,
                    head_bias,
                    pooling: options.pooling,
                };
                (network, Some("bert."))
            }
            Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 => {
                let config = read_json::<DecoderConfigFile>(&files.config)?
                    .resolve(architecture, &files.config)?;
                (
                    Network::Decoder(Decoder::new(&root, config, &builder)),
                    None,
                )
            }
        };
        let required = builder.into_required();
        let loaded = load_checkpoint(&vs, &files, &required, strip_prefix)?;
        tracing::debug!(dir = %dir.display(), ?architecture, tensors = loaded.len(), "loaded model");
        let kind = compute_kind(options.device);
        if kind != Kind::Float {
            // Checkpoint weights run in bf16; adapters and the head stay fp32.
            for name in &required {
                if let Some(variable) = vs.variables().get(name) {
                    let mut variable = variable.shallow_clone();
                    tch::no_grad(|| variable.set_data(&variable.to_kind(kind)));
                }
            }
        }
        Ok(Self {
            vs,
            network,
            architecture,
            files,
        })
    }

    /// The variables (checkpoint weights, adapters, head) by checkpoint name.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The architecture named by `config.json`.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The files the model was loaded from.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Hidden states [batch, seq, hidden] after `layer` blocks (transformers' numbering).
    ///
    /// Fails, instead of letting libtorch abort, on token ids outside the vocabulary, a
    /// sequence longer than an encoder's learned positions, or a layer past the last.
    pub fn hidden_states(
        &self,
        batch: &TokenBatch,
        layer: Option<usize>,
        train: bool,
    ) -> Result<Tensor> {
        self.check_batch(batch, layer)?;
        Ok(match &self.network {
            Network::Encoder { bert, .. } => {
                bert.hidden_states(&batch.input_ids, &batch.attention_mask, layer, train)
            }
            Network::Decoder(decoder) => {
                decoder.hidden_states(&batch.input_ids, &batch.attention_mask, layer, train)
            }
        })
    }

    fn check_batch(&self, batch: &TokenBatch, layer: Option<usize>) -> Result<()> {
        let (vocab, layers, max_positions) = match &self.network {
            Network::Encoder { bert, .. } => {
                let c = bert.config();
                (c.vocab_size, c.num_layers, Some(c.max_positions))
            }
            Network::Decoder(decoder) => {
                let c = decoder.config();
                (c.vocab_size, c.num_layers, None)
            }
        };
        let size = batch.input_ids.size();
        if size.len() != 2 || batch.attention_mask.size() != size {
            return Err(EngineError::InvalidInput(format!(
                "input_ids {size:?} and attention_mask {:?} must be the same [batch, seq]",
                batch.attention_mask.size()
            )));
        }
        if let Some(max) = max_positions.filter(|&max| size[1] > max) {
            return Err(EngineError::InvalidInput(format!(
                "sequences of {} tokens exceed the model's {max} positions",
                size[1]
            )));
        }
        let (low, high) = (
            i64::try_from(batch.input_ids.min())?,
            i64::try_from(batch.input_ids.max())?,
        );
        if low < 0 || high >= vocab {
            return Err(EngineError::InvalidInput(format!(
                "token ids range over [{low}, {high}], outside the vocabulary of {vocab}"
            )));
        }
        if let Some(layer) = layer.filter(|&layer| layer as i64 > layers) {
            return Err(EngineError::InvalidInput(format!(
                "layer {layer} requested from a model of {layers} layers"
            )));
        }
        Ok(())
    }

    /// Full next-token logits [batch, seq, vocab] of a decoder (fp32), for parity checks.
    pub fn lm_logits(&self, batch: &TokenBatch) -> Result<Tensor> {
        match &self.network {
            Network::Decoder(decoder) => {
                Ok(decoder.lm_logits(&self.hidden_states(batch, None, false)?))
            }
            Network::Encoder { .. } => Err(EngineError::InvalidInput(
                "an encoder has no language-model head".into(),
            )),
        }
    }

    /// Log-probabilities [batch, 2] (fp32) of the two labels at each row's last prompt token.
    ///
    /// For a decoder these are the label tokens' log-probabilities under the full-vocabulary
    /// softmax (so a loss on them is full-vocabulary cross-entropy, as in the reference);
    /// `label_token_ids` must then be given. For an encoder they are the head's two-way
    /// log-softmax and `label_token_ids` is not used.
    pub fn label_log_probs(
        &self,
        batch: &TokenBatch,
        label_token_ids: Option<[i64; 2]>,
        train: bool,
    ) -> Result<Tensor> {
        match &self.network {
            Network::Decoder(decoder) => {
                let ids = label_token_ids.ok_or_else(|| {
                    EngineError::InvalidInput("a decoder's readout needs label token ids".into())
                })?;
                let hidden = self.hidden_states(batch, None, train)?;
                let last = gather_positions(&hidden, &batch.last_index);
                let log_probs = decoder.lm_logits(&last).log_softmax(-1, Kind::Float);
                let ids = Tensor::from_slice(&ids).to_device(log_probs.device());
                Ok(log_probs.index_select(1, &ids))
            }
            Network::Encoder {
                head_weight,
                head_bias,
                pooling,
                ..
            } => {
                let hidden = self.hidden_states(batch, None, train)?;
                let pooled = pool(&hidden, batch, *pooling).to_kind(Kind::Float);
                Ok(pooled
                    .linear(head_weight, Some(head_bias))
                    .log_softmax(-1, Kind::Float))
            }
        }
    }
}

/// Pools hidden states [batch, seq, hidden] -> [batch, hidden].
pub fn pool(hidden: &Tensor, batch: &TokenBatch, pooling: Pooling) -> Tensor {
    match pooling {
        Pooling::Mean => mean_pool(hidden, &batch.attention_mask),
        Pooling::Cls => hidden.select(1, 0),
        Pooling::LastToken => gather_positions(hidden, &batch.last_index),
    }
}
