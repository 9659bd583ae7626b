//! The engine's error type: every failure names the file, tensor or example at fault.

use std::path::PathBuf;

use thiserror::Error;

/// Errors of the engine.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// libtorch reported an error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A model directory lacks a file the engine needs.
    #[error("model directory {dir}: missing {file}")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// What is missing (a file name or a description).
        file: String,
    },

    /// A JSON file could not be parsed into what the engine expects.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    /// `config.json` names an architecture the engine does not implement.
    #[error("{path}: unsupported architecture {name:?} (supported: bert, llama, qwen2, qwen3)")]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// The `model_type` / `architectures` value found.
        name: String,
    },

    /// `config.json` is self-contradictory or asks for something unsupported.
    #[error("{path}: {message}")]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A checkpoint tensor has the wrong shape for the configured model.
    #[error("{file}: tensor {tensor} has shape {found:?}, the config implies {expected:?}")]
    ShapeMismatch {
        /// The safetensors file holding the tensor.
        file: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Shape in the file.
        found: Vec<i64>,
        /// Shape the config implies.
        expected: Vec<i64>,
    },

    /// A safetensors file could not be read.
    #[error("{path}: cannot read safetensors: {message}")]
    BadWeights {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The checkpoint lacks a tensor the model needs.
    #[error("model directory {dir}: no tensor named {tensor} in its safetensors files")]
    MissingTensor {
        /// The model directory.
        dir: PathBuf,
        /// The tensor name.
        tensor: String,
    },

    /// The tokenizer file could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file (or a description of the tokenizer).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// A label string is not exactly one token of the tokenizer.
    #[error("label {label:?} is not a single token of this tokenizer (it encodes to {ids:?})")]
    LabelNotSingleToken {
        /// The label text, e.g. `"A"` or `" True"`.
        label: String,
        /// What it encodes to.
        ids: Vec<u32>,
    },

    /// An example does not fit in the context even after truncation (or truncation was off).
    #[error(
        "example {index}: {tokens} prompt tokens do not fit the context of {max_tokens} tokens"
    )]
    PromptTooLong {
        /// The example's index in its data set.
        index: usize,
        /// How many tokens its prompt needs.
        tokens: usize,
        /// The context limit.
        max_tokens: usize,
    },

    /// A caller passed inconsistent inputs (empty batch, wrong label count, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A training checkpoint could not be resumed.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
