//! aar's compute engine on libtorch (through `tch`): the same kernels as PyTorch,
//! on CPU and CUDA. Every other crate reaches tensors only through this one.
//!
//! Map:
//! - [`models`]: Hugging Face-layout directories (config.json, safetensors, shards) into module
//!   trees named like the checkpoints, one file per architecture (`bert`, `llama` for
//!   Llama/Qwen2/Qwen3); [`lora`] adds PEFT-compatible adapters to their linear layers.
//! - [`model`]: a loaded network, its classification head (encoders) or label-token readout
//!   (decoders); [`prompt`]: templates, label tokens, truncation; [`readout`]: batched
//!   two-way label probabilities.
//! - [`train`]: AdamW, schedule, losses (hard/soft CE, logconf), resumable checkpoints;
//!   [`features`]: cached frozen features and heads; [`device`]: CUDA backend loading.
//!
//! Invariants: fp32 on CPU, bf16 weights on CUDA with fp32 adapters, heads and losses;
//! fresh variables are initialised from a seed, never from libtorch's global RNG (only
//! dropout draws from it, reseeded per epoch by [`train::train`]).

pub mod device;
pub mod error;
pub mod features;
mod init;
pub mod lora;
pub mod model;
pub mod models;
pub mod prompt;
pub mod readout;
pub mod train;

pub use error::{EngineError, Result};
pub use lora::LoraConfig;
pub use model::{LoadOptions, Model, Network, Pooling};
pub use models::{Architecture, ModelFiles, PaddingSide, TokenBatch};

/// The libtorch build this binary runs against, for reports and `aar doctor`-style checks.
pub fn libtorch_summary() -> String {
    format!(
        "libtorch threads={} cuda_available={}",
        tch::get_num_threads(),
        device::cuda_is_available()
    )
}

#[cfg(test)]
mod tests;
