//! Model loading from Hugging Face-layout directories and the layers the architectures share.
//!
//! A model directory holds `config.json`, `model.safetensors` (or a sharded
//! `model.safetensors.index.json`) and `tokenizer.json`. Each architecture builds its
//! module tree with the checkpoint's own tensor names (`model.layers.0.self_attn.q_proj.weight`),
//! so loading is a name-for-name copy with shape checks.

pub mod bert;
pub mod llama;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind, Tensor, nn};

use crate::error::{EngineError, Result};
use crate::lora::{LoraConfig, LoraLinear};

/// The architectures the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT-style encoder (MiniLM).
    Bert,
    /// Llama decoder (SmolLM2).
    Llama,
    /// Qwen2 decoder (Qwen1.5, Qwen2.5): q/k/v biases.
    Qwen2,
    /// Qwen3 decoder: per-head q/k RMSNorm, no q/k/v biases.
    Qwen3,
}

#[derive(Deserialize)]
struct ArchitectureProbe {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
}

/// Where the files of a Hugging Face-layout model directory are.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The directory itself.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// The safetensors files holding the weights (one, or the shards of an index).
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`, when present (frozen-feature and forward-only uses can do without).
    pub tokenizer: Option<PathBuf>,
}

impl ModelFiles {
    /// Finds the files of the model directory `dir`, failing with the name of the first missing one.
    pub fn locate(dir: &Path) -> Result<Self> {
        let missing = |file: &str| EngineError::MissingFile {
            dir: dir.to_path_buf(),
            file: file.to_string(),
        };
        if !dir.is_dir() {
            return Err(missing("the directory itself"));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(missing("config.json"));
        }
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let weights = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shards_of_index(dir, &index)?
        } else {
            return Err(missing(
                "model.safetensors (or model.safetensors.index.json)",
            ));
        };
        let tokenizer = Some(dir.join("tokenizer.json")).filter(|path| path.is_file());
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
        })
    }

    /// The architecture named by `config.json` (`model_type`, else `architectures[0]`).
    pub fn architecture(&self) -> Result<Architecture> {
        let probe: ArchitectureProbe = read_json(&self.config)?;
        let name = probe
            .model_type
            .or_else(|| {
                probe
                    .architectures
                    .and_then(|names| names.into_iter().next())
            })
            .unwrap_or_default();
        match name.to_ascii_lowercase().as_str() {
            "bert" | "bertmodel" | "bertforsequenceclassification" => Ok(Architecture::Bert),
            "llama" | "llamaforcausallm" => Ok(Architecture::Llama),
            "qwen2" | "qwen2forcausallm" => Ok(Architecture::Qwen2),
            "qwen3" | "qwen3forcausallm" => Ok(Architecture::Qwen3),
            _ => Err(EngineError::UnknownArchitecture {
                path: self.config.clone(),
                name,
            }),
        }
    }
}

#[derive(Deserialize)]
struct SafetensorsIndex {
    weight_map: HashMap<String, String>,
}

fn shards_of_index(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let parsed: SafetensorsIndex = read_json(index)?;
    let names: BTreeSet<String> = parsed.weight_map.into_values().collect();
    let mut shards = Vec::with_capacity(names.len());
    for name in names {
        let shard = dir.join(&name);
        if !shard.is_file() {
            return Err(EngineError::MissingFile {
                dir: dir.to_path_buf(),
                file: format!("{name} (listed in model.safetensors.index.json)"),
            });
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// Reads and parses a JSON file, naming the file in any error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::io(path, source))?;
    serde_json::from_str(&text).map_err(|source| EngineError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// One tensor's entry in a safetensors header.
#[derive(Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<i64>,
    data_offsets: [u64; 2],
}

fn kind_of(dtype: &str) -> Option<Kind> {
    Some(match dtype {
        "F64" => Kind::Double,
        "F32" => Kind::Float,
        "F16" => Kind::Half,
        "BF16" => Kind::BFloat16,
        "I64" => Kind::Int64,
        "I32" => Kind::Int,
        "I16" => Kind::Int16,
        "I8" => Kind::Int8,
        "U8" => Kind::Uint8,
        "BOOL" => Kind::Bool,
        _ => return None,
    })
}

/// Bytes read per copy while loading: bounds the transient memory of a load.
const LOAD_CHUNK_BYTES: u64 = 16 << 20;

/// Copies the tensors of one safetensors file into the destinations `destination` returns,
/// a few rows at a time, so that loading needs no memory beyond the model itself (reading a
/// whole tensor first would briefly double the largest one, the embedding of a decoder).
fn read_safetensors_streaming(
    path: &Path,
    mut destination: impl FnMut(&str, &[i64]) -> Result<Option<Tensor>>,
) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |message: String| EngineError::BadWeights {
        path: path.to_path_buf(),
        message,
    };
    let io = |source| EngineError::io(path, source);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > file_len.saturating_sub(8) {
        return Err(bad(format!("header length {header_len} exceeds the file")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|err| bad(format!("header: {err}")))?;
    let data_start = 8 + header_len;
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let entry: TensorEntry =
            serde_json::from_value(value).map_err(|err| bad(format!("tensor {name}: {err}")))?;
        let Some(target) = destination(&name, &entry.shape)? else {
            continue;
        };
        let kind = kind_of(&entry.dtype)
            .ok_or_else(|| bad(format!("tensor {name}: unsupported dtype {}", entry.dtype)))?;
        let [begin, end] = entry.data_offsets;
        let numel: i64 = entry.shape.iter().product();
        let expected = numel.max(0) as u64 * kind.elt_size_in_bytes() as u64;
        if end < begin || end - begin != expected || data_start + end > file_len {
            return Err(bad(format!(
                "tensor {name}: offsets {begin}..{end} do not hold {:?} {}",
                entry.shape, entry.dtype
            )));
        }
        file.seek(SeekFrom::Start(data_start + begin)).map_err(io)?;
        let Some((&rows, row_shape)) = entry.shape.split_first().filter(|(rows, _)| **rows > 0)
        else {
            // A scalar or an empty tensor: one read.
            let mut bytes = vec![0u8; expected as usize];
            file.read_exact(&mut bytes).map_err(io)?;
            let value = Tensor::f_from_data_size(&bytes, &entry.shape, kind)?;
            tch::no_grad(|| target.shallow_clone().f_copy_(&value))?;
            continue;
        };
        let row_bytes = expected / rows as u64;
        let rows_per_chunk = (LOAD_CHUNK_BYTES / row_bytes.max(1)).clamp(1, rows as u64) as i64;
        let mut bytes = Vec::new();
        let mut row = 0;
        while row < rows {
            let count = rows_per_chunk.min(rows - row);
            bytes.resize((count as u64 * row_bytes) as usize, 0);
            file.read_exact(&mut bytes).map_err(io)?;
            let mut shape = vec![count];
            shape.extend_from_slice(row_shape);
            let chunk = Tensor::f_from_data_size(&bytes, &shape, kind)?;
            tch::no_grad(|| target.narrow(0, row, count).f_copy_(&chunk))?;
            row += count;
        }
    }
    Ok(())
}

/// Copies checkpoint tensors into the variables of `vs` whose names the checkpoint has.
///
/// Every variable in `required` must be found; shapes must match exactly. Variables
/// that are not in the checkpoint and not required (LoRA adapters, heads) keep their
/// initialisation. Returns the names that were loaded.
pub(crate) fn load_checkpoint(
    vs: &nn::VarStore,
    files: &ModelFiles,
    required: &BTreeSet<String>,
    strip_prefix: Option<&str>,
) -> Result<BTreeSet<String>> {
    let variables = vs.variables();
    let local_name = |raw: &str| -> String {
        match strip_prefix {
            Some(prefix) => raw.strip_prefix(prefix).unwrap_or(raw).to_string(),
            None => raw.to_string(),
        }
    };
    let mut loaded = BTreeSet::new();
    for file in &files.weights {
        read_safetensors_streaming(file, |raw_name, shape| {
            let name = local_name(raw_name);
            let Some(variable) = variables.get(&name) else {
                return Ok(None);
            };
            if variable.size() != shape {
                return Err(EngineError::ShapeMismatch {
                    file: file.clone(),
                    tensor: raw_name.to_string(),
                    found: shape.to_vec(),
                    expected: variable.size(),
                });
            }
            loaded.insert(name);
            Ok(Some(variable.shallow_clone()))
        })?;
    }
    if let Some(tensor) = required.iter().find(|name| !loaded.contains(*name)) {
        return Err(EngineError::MissingTensor {
            dir: files.dir.clone(),
            tensor: tensor.clone(),
        });
    }
    Ok(loaded)
}

/// Records the names of the checkpoint tensors a model needs while it is being built.
#[derive(Debug, Default)]
pub(crate) struct Required(BTreeSet<String>);

/// How weights are created while a module tree is built.
pub(crate) struct Builder<'a> {
    pub required: std::cell::RefCell<Required>,
    /// Whether base weights take gradients (full fine-tuning) or stay frozen (LoRA, inference).
    pub train_base: bool,
    /// LoRA settings, when adapters are wanted.
    pub lora: Option<&'a LoraConfig>,
    /// Seed of fresh variables' initialisation.
    pub seed: u64,
}

impl<'a> Builder<'a> {
    pub fn new(train_base: bool, lora: Option<&'a LoraConfig>, seed: u64) -> Self {
        Self {
            required: std::cell::RefCell::new(Required::default()),
            train_base,
            lora,
            seed,
        }
    }

    /// A checkpoint weight named `path/name` (zero until loaded).
    pub fn weight(&self, path: &nn::Path, name: &str, dims: &[i64]) -> Tensor {
        let full = path.path(name);
        self.required.borrow_mut().0.insert(full);
        if self.train_base {
            path.zeros(name, dims)
        } else {
            path.zeros_no_train(name, dims)
        }
    }

    /// A linear layer `path.weight` [out, in] (+ `path.bias`), with a LoRA adapter
    /// when `lora_name` is one of the configured targets.
    pub fn linear(
        &self,
        path: &nn::Path,
        in_dim: i64,
        out_dim: i64,
        bias: bool,
        lora_name: &str,
    ) -> LoraLinear {
        let weight = self.weight(path, "weight", &[out_dim, in_dim]);
        let bias = bias.then(|| self.weight(path, "bias", &[out_dim]));
        let adapter = self
            .lora
            .filter(|config| config.targets(lora_name))
            .map(|config| crate::lora::LoraAdapter::new(path, in_dim, out_dim, config, self.seed));
        LoraLinear {
            weight,
            bias,
            adapter,
        }
    }

    pub fn into_required(self) -> BTreeSet<String> {
        self.required.into_inner().0
    }
}

/// The float kind models compute in on a device: fp32 on CPU, bf16 on CUDA.
pub fn compute_kind(device: Device) -> Kind {
    match device {
        Device::Cpu => Kind::Float,
        _ => Kind::BFloat16,
    }
}

/// A token batch ready for a forward pass.
#[derive(Debug)]
pub struct TokenBatch {
    /// Token ids [batch, seq] (int64).
    pub input_ids: Tensor,
    /// 1 for real tokens, 0 for padding [batch, seq] (int64).
    pub attention_mask: Tensor,
    /// Index of each row's last real token [batch] (int64): where the label is read.
    pub last_index: Tensor,
}

impl TokenBatch {
    /// Pads `sequences` to a common length on `side` with `pad_id`.
    pub fn pad(
        sequences: &[&[i64]],
        pad_id: i64,
        side: PaddingSide,
        device: Device,
    ) -> Result<Self> {
        let longest = sequences.iter().map(|seq| seq.len()).max().unwrap_or(0);
        if sequences.is_empty() || longest == 0 {
            return Err(EngineError::InvalidInput(
                "a batch needs at least one non-empty sequence".into(),
            ));
        }
        let mut ids = Vec::with_capacity(sequences.len() * longest);
        let mut mask = Vec::with_capacity(sequences.len() * longest);
        let mut last = Vec::with_capacity(sequences.len());
        for seq in sequences {
            if seq.is_empty() {
                return Err(EngineError::InvalidInput(
                    "empty sequence in a batch".into(),
                ));
            }
            let padding = longest - seq.len();
            let pad_ids = std::iter::repeat_n(pad_id, padding);
            let pad_mask = std::iter::repeat_n(0i64, padding);
            match side {
                PaddingSide::Left => {
                    ids.extend(pad_ids.chain(seq.iter().copied()));
                    mask.extend(pad_mask.chain(std::iter::repeat_n(1, seq.len())));
                    last.push(longest as i64 - 1);
                }
                PaddingSide::Right => {
                    ids.extend(seq.iter().copied().chain(pad_ids));
                    mask.extend(std::iter::repeat_n(1, seq.len()).chain(pad_mask));
                    last.push(seq.len() as i64 - 1);
                }
            }
        }
        let shape = [sequences.len() as i64, longest as i64];
        Ok(Self {
            input_ids: Tensor::from_slice(&ids).reshape(shape).to_device(device),
            attention_mask: Tensor::from_slice(&mask).reshape(shape).to_device(device),
            last_index: Tensor::from_slice(&last).to_device(device),
        })
    }
}

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Pad before the tokens (the last real token is at the end of every row).
    #[default]
    Left,
    /// Pad after the tokens.
    Right,
}

/// Gathers `hidden[b, index[b], :]` -> [batch, hidden].
pub(crate) fn gather_positions(hidden: &Tensor, index: &Tensor) -> Tensor {
    let batch = hidden.size()[0];
    let rows = Tensor::arange(batch, (Kind::Int64, hidden.device()));
    hidden.index(&[Some(rows), Some(index.shallow_clone())])
}

/// Mean of `hidden` over the real tokens of each row -> [batch, hidden].
pub(crate) fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Tensor {
    let mask = attention_mask.to_kind(hidden.kind()).unsqueeze(-1);
    let summed = (hidden * &mask).sum_dim_intlist(1, false, hidden.kind());
    let counts = mask
        .sum_dim_intlist(1, false, hidden.kind())
        .clamp_min(1e-9);
    summed / counts
}
