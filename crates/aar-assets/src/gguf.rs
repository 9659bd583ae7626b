//! GGUF → Hugging Face directory: `config.json`, `generation_config.json`,
//! `model.safetensors` (dequantized f32, checkpoint names) and the tokenizer files.
//!
//! candle-core reads the GGUF container and dequantizes each tensor to f32; this
//! module only renames, undoes llama.cpp's rotary permutation for Llama, and
//! streams the result to a safetensors file one tensor at a time, so peak memory
//! is one tensor, not the model.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{Value as Json, json};

use crate::error::{AssetError, IoContext, Result};
use crate::tokenizer::{
    TokenizerMetadata, build_tokenizer_json, check_tokenizer_matches_vocab,
    drop_tokens_the_gguf_pads,
};

/// The architectures the converter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `general.architecture = "llama"` → `LlamaForCausalLM` (q/k rows were permuted by llama.cpp).
    Llama,
    /// `general.architecture = "qwen2"` → `Qwen2ForCausalLM` (q/k/v carry biases, no permutation).
    Qwen2,
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConversionSummary {
    /// The source architecture.
    pub architecture: Architecture,
    /// Number of tensors written.
    pub tensors: usize,
    /// Number of parameters written.
    pub parameters: u64,
    /// Whether the output head shares the embedding matrix.
    pub tied_embeddings: bool,
}

/// Converts the GGUF file at `gguf_path` into a Hugging Face-layout directory `out_dir`.
///
/// With `tokenizer_json`, that file (already inside `out_dir` or elsewhere) is used
/// after checking that its vocabulary agrees with the GGUF's; without it, a
/// `tokenizer.json` is built from the vocabulary and merges stored in the GGUF.
pub fn convert_gguf_to_hf(
    gguf_path: &Path,
    out_dir: &Path,
    tokenizer_json: Option<&Path>,
) -> Result<ConversionSummary> {
    let gguf_err = |message: String| AssetError::Gguf {
        path: gguf_path.to_owned(),
        message,
    };
    let mut reader = BufReader::new(File::open(gguf_path).at(gguf_path)?);
    let content =
        Content::read(&mut reader).map_err(|e| gguf_err(format!("cannot read header: {e}")))?;
    let meta = Metadata {
        map: &content.metadata,
        path: gguf_path,
    };

    let architecture = match meta.string("general.architecture")?.as_str() {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        other => {
            return Err(gguf_err(format!(
                "unsupported architecture {other:?} (llama and qwen2 are supported)"
            )));
        }
    };
    let arch = meta.string("general.architecture")?;
    let key = |k: &str| format!("{arch}.{k}");
    let hyper = Hyper {
        layers: meta.u64(&key("block_count"))?,
        hidden: meta.u64(&key("embedding_length"))?,
        intermediate: meta.u64(&key("feed_forward_length"))?,
        heads: meta.u64(&key("attention.head_count"))?,
        kv_heads: meta.u64_or(
            &key("attention.head_count_kv"),
            meta.u64(&key("attention.head_count"))?,
        )?,
        context: meta.u64_or(&key("context_length"), 2048)?,
        rms_eps: meta.f64_or(&key("attention.layer_norm_rms_epsilon"), 1e-6)?,
        rope_theta: meta.f64_or(&key("rope.freq_base"), 10_000.0)?,
    };

    // Plan every output tensor first: names and shapes go into the safetensors header.
    let mut plan: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    for (gguf_name, info) in &content.tensor_infos {
        let Some(hf_name) = hf_tensor_name(gguf_name) else {
            if gguf_name == "rope_freqs.weight" {
                continue; // derived from rope_theta at load time in transformers
            }
            return Err(gguf_err(format!("unknown tensor {gguf_name}")));
        };
        plan.insert(hf_name, (gguf_name.clone(), info.shape.dims().to_vec()));
    }
    let embed = plan
        .get("model.embed_tokens.weight")
        .ok_or_else(|| gguf_err("no token_embd.weight tensor".into()))?;
    let vocab_size = embed.1.first().copied().unwrap_or(0) as u64;
    let tied_embeddings = !plan.contains_key("lm_head.weight");

    let tensors_path = out_dir.join("model.safetensors");
    let mut writer = SafetensorsWriter::create(
        &tensors_path,
        plan.iter().map(|(n, (_, s))| (n.as_str(), s.as_slice())),
    )?;
    let mut parameters = 0u64;
    for (hf_name, (gguf_name, shape)) in &plan {
        let qtensor = content
            .tensor(&mut reader, gguf_name, &Device::Cpu)
            .map_err(|e| gguf_err(format!("cannot read tensor {gguf_name}: {e}")))?;
        let values = qtensor
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| gguf_err(format!("cannot dequantize {gguf_name}: {e}")))?;
        let values = match (architecture, rotary_heads(gguf_name, &hyper)) {
            (Architecture::Llama, Some(heads)) => unpermute_rotary_rows(&values, shape, heads)
                .ok_or_else(|| {
                    gguf_err(format!(
                        "{gguf_name}: shape {shape:?} does not split into {heads} heads"
                    ))
                })?,
            _ => values,
        };
        parameters += values.len() as u64;
        writer.write_tensor(hf_name, &values)?;
    }
    writer.finish()?;

    let bos = meta.opt_u64("tokenizer.ggml.bos_token_id")?;
    let eos = meta.opt_u64("tokenizer.ggml.eos_token_id")?;
    let config = hf_config(architecture, &hyper, vocab_size, tied_embeddings, bos, eos);
    write_json(&out_dir.join("config.json"), &config)?;
    let mut generation = serde_json::Map::new();
    if let Some(bos) = bos {
        generation.insert("bos_token_id".into(), bos.into());
    }
    if let Some(eos) = eos {
        generation.insert("eos_token_id".into(), eos.into());
    }
    write_json(
        &out_dir.join("generation_config.json"),
        &Json::Object(generation),
    )?;

    let tokens = meta.string_array("tokenizer.ggml.tokens")?;
    let token_types = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .and_then(|vs| {
                vs.iter()
                    .map(Value::to_i32)
                    .collect::<candle_core::Result<Vec<_>>>()
            })
            .map_err(|e| gguf_err(format!("tokenizer.ggml.token_type: {e}")))?,
        None => vec![1; tokens.len()],
    };
    let tokenizer_dest = out_dir.join("tokenizer.json");
    match tokenizer_json {
        Some(source) => {
            if source != tokenizer_dest {
                std::fs::copy(source, &tokenizer_dest).at(&tokenizer_dest)?;
            }
            let dropped = drop_tokens_the_gguf_pads(&tokenizer_dest, &tokens)?;
            if !dropped.is_empty() {
                tracing::info!(tokens = ?dropped, "dropped added tokens the model has no trained row for");
            }
            check_tokenizer_matches_vocab(&tokenizer_dest, &tokens)?;
        }
        None => {
            let tokenizer_meta = TokenizerMetadata {
                model: meta.string("tokenizer.ggml.model")?,
                pre: meta.opt_string("tokenizer.ggml.pre")?,
                tokens: tokens.clone(),
                token_types: token_types.clone(),
                merges: meta.string_array("tokenizer.ggml.merges")?,
            };
            let tokenizer = build_tokenizer_json(&tokenizer_meta).map_err(gguf_err)?;
            write_json(&tokenizer_dest, &tokenizer)?;
        }
    }
    let token_name = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).cloned();
    let mut tokenizer_config = serde_json::Map::new();
    tokenizer_config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    tokenizer_config.insert("model_max_length".into(), hyper.context.into());
    tokenizer_config.insert("clean_up_tokenization_spaces".into(), false.into());
    // Decoder-only models take no token_type_ids (the fast tokenizer's default adds them).
    tokenizer_config.insert(
        "model_input_names".into(),
        json!(["input_ids", "attention_mask"]),
    );
    tokenizer_config.insert(
        "add_bos_token".into(),
        meta.bool_or("tokenizer.ggml.add_bos_token", false)?.into(),
    );
    for (field, id) in [
        ("bos_token", bos),
        ("eos_token", eos),
        (
            "pad_token",
            meta.opt_u64("tokenizer.ggml.padding_token_id")?,
        ),
        (
            "unk_token",
            meta.opt_u64("tokenizer.ggml.unknown_token_id")?,
        ),
    ] {
        if let Some(name) = token_name(id) {
            tokenizer_config.insert(field.into(), name.into());
        }
    }
    if let Some(template) = meta.opt_string("tokenizer.chat_template")? {
        tokenizer_config.insert("chat_template".into(), template.into());
    }
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &Json::Object(tokenizer_config),
    )?;

    Ok(ConversionSummary {
        architecture,
        tensors: plan.len(),
        parameters,
        tied_embeddings,
    })
}

struct Hyper {
    layers: u64,
    hidden: u64,
    intermediate: u64,
    heads: u64,
    kv_heads: u64,
    context: u64,
    rms_eps: f64,
    rope_theta: f64,
}

fn hf_config(
    architecture: Architecture,
    hyper: &Hyper,
    vocab_size: u64,
    tied: bool,
    bos: Option<u64>,
    eos: Option<u64>,
) -> Json {
    let mut config = json!({
        "hidden_size": hyper.hidden,
        "intermediate_size": hyper.intermediate,
        "num_hidden_layers": hyper.layers,
        "num_attention_heads": hyper.heads,
        "num_key_value_heads": hyper.kv_heads,
        "head_dim": hyper.hidden / hyper.heads.max(1),
        "max_position_embeddings": hyper.context,
        "rms_norm_eps": hyper.rms_eps,
        "rope_theta": hyper.rope_theta,
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
    });
    if let Json::Object(map) = &mut config {
        match architecture {
            Architecture::Llama => {
                map.insert("architectures".into(), json!(["LlamaForCausalLM"]));
                map.insert("model_type".into(), "llama".into());
                map.insert("attention_bias".into(), false.into());
                map.insert("mlp_bias".into(), false.into());
            }
            Architecture::Qwen2 => {
                map.insert("architectures".into(), json!(["Qwen2ForCausalLM"]));
                map.insert("model_type".into(), "qwen2".into());
                map.insert("use_sliding_window".into(), false.into());
                map.insert("sliding_window".into(), hyper.context.into());
                map.insert("max_window_layers".into(), hyper.layers.into());
                map.insert("attention_dropout".into(), 0.0.into());
            }
        }
    }
    config
}

/// The Hugging Face checkpoint name of a llama.cpp tensor name.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let hf_module = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    matches!(suffix, "weight" | "bias")
        .then(|| format!("model.layers.{layer}.{hf_module}.{suffix}"))
}

/// For q/k projection weights, the number of heads whose rows llama.cpp permuted.
fn rotary_heads(gguf_name: &str, hyper: &Hyper) -> Option<usize> {
    if gguf_name.ends_with(".attn_q.weight") {
        Some(hyper.heads as usize)
    } else if gguf_name.ends_with(".attn_k.weight") {
        Some(hyper.kv_heads as usize)
    } else {
        None
    }
}

/// Undoes llama.cpp's `permute` of q/k rows (`convert_hf_to_gguf.py`), which
/// interleaves the two rotary halves of each head: GGUF row `h*d + 2i + j` is
/// Hugging Face row `h*d + j*d/2 + i` for head `h`, head size `d`, `j` in {0, 1}.
/// `None` when the rows do not split into `heads` heads of even size.
pub fn unpermute_rotary_rows(values: &[f32], shape: &[usize], heads: usize) -> Option<Vec<f32>> {
    let (&rows, rest) = shape.split_first()?;
    let cols: usize = rest.iter().product();
    if heads == 0
        || !rows.is_multiple_of(heads)
        || !(rows / heads).is_multiple_of(2)
        || values.len() != rows * cols
    {
        return None;
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

/// Writes a safetensors file tensor by tensor: the header (names, shapes, offsets)
/// is known up front, so only one tensor is ever held in memory.
struct SafetensorsWriter {
    path: std::path::PathBuf,
    out: BufWriter<File>,
    expected: Vec<(String, usize)>,
    next: usize,
}

impl SafetensorsWriter {
    fn create<'a>(
        path: &Path,
        tensors: impl Iterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<SafetensorsWriter> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut offset = 0usize;
        let mut expected = Vec::new();
        for (name, shape) in tensors {
            let bytes = shape.iter().product::<usize>() * 4;
            header.insert(
                name.to_owned(),
                json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            expected.push((name.to_owned(), bytes));
            offset += bytes;
        }
        let mut header_bytes = serde_json::to_vec(&header).map_err(|source| AssetError::Json {
            path: path.to_owned(),
            source,
        })?;
        // The format pads the header with spaces so tensor data starts 8-byte aligned.
        while header_bytes.len() % 8 != 0 {
            header_bytes.push(b' ');
        }
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path).at(path)?);
        out.write_all(&(header_bytes.len() as u64).to_le_bytes())
            .at(path)?;
        out.write_all(&header_bytes).at(path)?;
        Ok(SafetensorsWriter {
            path: path.to_owned(),
            out,
            expected,
            next: 0,
        })
    }

    fn write_tensor(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let bad = |message: String| AssetError::BadSource {
            path: self.path.clone(),
            message,
        };
        let Some((expected_name, bytes)) = self.expected.get(self.next) else {
            return Err(bad(format!("unexpected extra tensor {name}")));
        };
        if expected_name != name || *bytes != values.len() * 4 {
            return Err(bad(format!(
                "tensor {name} out of order or of the wrong size"
            )));
        }
        for chunk in values.chunks(1 << 16) {
            let buf: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.out.write_all(&buf).at(&self.path)?;
        }
        self.next += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.next != self.expected.len() {
            return Err(AssetError::BadSource {
                path: self.path.clone(),
                message: format!("wrote {} of {} tensors", self.next, self.expected.len()),
            });
        }
        self.out.flush().at(&self.path)
    }
}

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| AssetError::Json {
        path: path.to_owned(),
        source,
    })?;
    std::fs::write(path, text).at(path)
}

/// Typed access to GGUF metadata with errors naming the key.
struct Metadata<'a> {
    map: &'a HashMap<String, Value>,
    path: &'a Path,
}

impl Metadata<'_> {
    fn err(&self, key: &str, problem: impl std::fmt::Display) -> AssetError {
        AssetError::Gguf {
            path: self.path.to_owned(),
            message: format!("metadata {key}: {problem}"),
        }
    }

    fn get(&self, key: &str) -> Result<&Value> {
        self.map.get(key).ok_or_else(|| self.err(key, "missing"))
    }

    fn string(&self, key: &str) -> Result<String> {
        self.get(key)?
            .to_string()
            .cloned()
            .map_err(|e| self.err(key, e))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_string()
                .cloned()
                .map(Some)
                .map_err(|e| self.err(key, e)),
        }
    }

    fn u64(&self, key: &str) -> Result<u64> {
        integer(self.get(key)?).ok_or_else(|| self.err(key, "not an unsigned integer"))
    }

    fn u64_or(&self, key: &str, default: u64) -> Result<u64> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(v) => integer(v)
                .map(Some)
                .ok_or_else(|| self.err(key, "not an unsigned integer")),
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::F32(v)) => Ok(f64::from(*v)),
            Some(Value::F64(v)) => Ok(*v),
            Some(_) => Err(self.err(key, "not a float")),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None => Ok(default),
            Some(v) => v.to_bool().map_err(|e| self.err(key, e)),
        }
    }

    fn string_array(&self, key: &str) -> Result<Vec<String>> {
        let values = self.get(key)?.to_vec().map_err(|e| self.err(key, e))?;
        values
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.err(key, e)))
            .collect()
    }
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::U8(v) => Some(u64::from(*v)),
        Value::U16(v) => Some(u64::from(*v)),
        Value::U32(v) => Some(u64::from(*v)),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}
