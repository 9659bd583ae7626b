//! A Hugging Face `tokenizer.json` from the vocabulary stored in a GGUF file.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = "gpt2"`) is built: its GGUF
//! tokens are already in the byte-to-unicode alphabet of the HF vocabulary, and
//! the merges are stored as `"left right"` strings, exactly as `tokenizer.json`
//! wants them. The pre-tokenizer follows `tokenizer.ggml.pre`, as llama.cpp does.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{AssetError, IoContext, Result};

/// GGUF token type for control (special) tokens, as in llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type for user-defined added tokens.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The tokenizer part of a GGUF file's metadata.
#[derive(Debug, Clone)]
pub struct TokenizerMetadata {
    /// `tokenizer.ggml.model` (only "gpt2" is supported).
    pub model: String,
    /// `tokenizer.ggml.pre`, the pre-tokenizer name.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, indexed by id.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, in priority order, each `"left right"`.
    pub merges: Vec<String>,
}

/// Builds the `tokenizer.json` document; the error says what is unsupported.
pub fn build_tokenizer_json(meta: &TokenizerMetadata) -> std::result::Result<Value, String> {
    if meta.model != "gpt2" {
        return Err(format!(
            "tokenizer model {:?} is not supported (only byte-level BPE, \"gpt2\")",
            meta.model
        ));
    }
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match meta.pre.as_deref() {
        None | Some("default") | Some("gpt2") => byte_level(true),
        // llama.cpp's "smollm": every digit on its own, then the GPT-2 split.
        Some("smollm") => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        Some(other) => {
            return Err(format!(
                "pre-tokenizer {other:?} is not supported (gpt2, smollm)"
            ));
        }
    };
    let mut vocab = serde_json::Map::new();
    let mut added_tokens = Vec::new();
    for (id, token) in meta.tokens.iter().enumerate() {
        if vocab.insert(token.clone(), id.into()).is_some() {
            return Err(format!("token {token:?} appears twice in the vocabulary"));
        }
        let token_type = meta.token_types.get(id).copied().unwrap_or(1);
        if token_type == TOKEN_TYPE_CONTROL || token_type == TOKEN_TYPE_USER_DEFINED {
            added_tokens.push(json!({
                "id": id,
                "content": token,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": token_type == TOKEN_TYPE_USER_DEFINED,
                "special": token_type == TOKEN_TYPE_CONTROL,
            }));
        }
    }
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": meta.merges,
        }
    }))
}

/// Drops added tokens of a ready `tokenizer.json` whose ids the GGUF only pads
/// (llama.cpp names such rows `[PAD<id>]`): a tokenizer shipped for a newer model
/// of the family (the Qwen3 one for Qwen2.5) adds tokens like `<think>` the older
/// model never learned, which must stay plain text. Returns the dropped tokens.
pub fn drop_tokens_the_gguf_pads(
    tokenizer_json: &Path,
    gguf_tokens: &[String],
) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(tokenizer_json).at(tokenizer_json)?;
    let mut doc: Value = serde_json::from_str(&text).map_err(|source| AssetError::Json {
        path: tokenizer_json.to_owned(),
        source,
    })?;
    let mut dropped = Vec::new();
    if let Some(added) = doc.get_mut("added_tokens").and_then(Value::as_array_mut) {
        added.retain(|token| {
            let id = token.get("id").and_then(Value::as_u64);
            let content = token
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let padded = id.is_some_and(|id| {
                gguf_tokens
                    .get(id as usize)
                    .is_some_and(|g| *g == format!("[PAD{id}]"))
            });
            if padded && content != format!("[PAD{}]", id.unwrap_or_default()) {
                dropped.push(content.to_owned());
                false
            } else {
                true
            }
        });
    }
    if !dropped.is_empty() {
        let text = serde_json::to_string(&doc).map_err(|source| AssetError::Json {
            path: tokenizer_json.to_owned(),
            source,
        })?;
        std::fs::write(tokenizer_json, text).at(tokenizer_json)?;
    }
    Ok(dropped)
}

/// Checks that a ready `tokenizer.json` gives every id it knows the same string
/// as the GGUF vocabulary (GGUF may have extra padding rows past the tokenizer's end).
pub fn check_tokenizer_matches_vocab(tokenizer_json: &Path, gguf_tokens: &[String]) -> Result<()> {
    let text = std::fs::read_to_string(tokenizer_json).at(tokenizer_json)?;
    let doc: Value = serde_json::from_str(&text).map_err(|source| AssetError::Json {
        path: tokenizer_json.to_owned(),
        source,
    })?;
    let bad = |message: String| AssetError::BadSource {
        path: tokenizer_json.to_owned(),
        message,
    };
    let mut by_id: HashMap<u64, &str> = HashMap::new();
    if let Some(vocab) = doc.pointer("/model/vocab").and_then(Value::as_object) {
        for (token, id) in vocab {
            if let Some(id) = id.as_u64() {
                by_id.insert(id, token);
            }
        }
    }
    for added in doc
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(id), Some(content)) = (
            added.get("id").and_then(Value::as_u64),
            added.get("content").and_then(Value::as_str),
        ) {
            by_id.insert(id, content);
        }
    }
    if by_id.is_empty() {
        return Err(bad("no vocabulary".into()));
    }
    let mismatches: Vec<String> = by_id
        .iter()
        .filter_map(|(&id, &token)| match gguf_tokens.get(id as usize) {
            Some(g) if g == token => None,
            Some(g) => Some(format!("id {id}: tokenizer {token:?}, GGUF {g:?}")),
            None => Some(format!(
                "id {id} ({token:?}) is past the GGUF vocabulary ({})",
                gguf_tokens.len()
            )),
        })
        .take(5)
        .collect();
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(bad(format!(
            "vocabulary disagrees with the GGUF: {}",
            mismatches.join("; ")
        )))
    }
}
