//! Prompt templates, label tokens and the token sequences the engine reads labels from
//! (REFERENCE_SPEC 2.2 and 3.3).
//!
//! Base models get raw text built as `enc(body) + enc(suffix)`, where the suffix is the part
//! that truncation must keep (`Label:`, or the zero-shot claim line); chat models get the
//! filled template as a ChatML user turn followed by the assistant header.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};

/// The reference's prompt templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `Question: {prompt}\nAnswer A: {first}\nAnswer B: {second}\nLabel:` read as `A` / `B`.
    Comparison,
    /// The comparison with a claim ("Answer A is more helpful"), read as ` True` / ` False`
    /// (index 0 = A better).
    ComparisonZeroShot,
    /// `Question: {question}\nAnswer: {choice}\nLabel:` read as `False` / `True`.
    Binary,
    /// The binary task with a claim ("This answer is correct"), read as `False` / `True`.
    BinaryZeroShot,
}

/// The fields of one example.
#[derive(Debug, Clone, PartialEq)]
pub enum ExampleText {
    /// A pair of answers to compare.
    Comparison {
        /// The question.
        prompt: String,
        /// Answer A.
        first: String,
        /// Answer B.
        second: String,
    },
    /// One answer to judge.
    Binary {
        /// The question.
        question: String,
        /// The proposed answer.
        choice: String,
    },
}

impl Template {
    /// The label strings, index 0 first (no leading space unless the reference has one).
    pub fn label_strings(self) -> [&'static str; 2] {
        match self {
            Template::Comparison => ["A", "B"],
            Template::ComparisonZeroShot => [" True", " False"],
            Template::Binary | Template::BinaryZeroShot => ["False", "True"],
        }
    }

    /// The filled template split into (body, suffix): the suffix survives truncation.
    pub fn fill(self, example: &ExampleText) -> Result<(String, &'static str)> {
        match (self, example) {
            (
                Template::Comparison,
                ExampleText::Comparison {
                    prompt,
                    first,
                    second,
                },
            ) => Ok((
                format!("Question: {prompt}\nAnswer A: {first}\nAnswer B: {second}\n"),
                "Label:",
            )),
            (
                Template::ComparisonZeroShot,
                ExampleText::Comparison {
                    prompt,
                    first,
                    second,
                },
            ) => Ok((
                format!("Question: {prompt}\nAnswer A: {first}\nAnswer B: {second}\n"),
                "Claim: Answer A is more helpful than Answer B.\nI think this Claim is (True or False):",
            )),
            (Template::Binary, ExampleText::Binary { question, choice }) => Ok((
                format!("Question: {question}\nAnswer: {choice}\n"),
                "Label:",
            )),
            (Template::BinaryZeroShot, ExampleText::Binary { question, choice }) => Ok((
                format!("Question: {question}\nProposed Answer: {choice}\n"),
                "Claim: This answer is correct.\nI think this claim is (True or False):",
            )),
            _ => Err(EngineError::InvalidInput(format!(
                "template {self:?} does not fit a {} example",
                match example {
                    ExampleText::Comparison { .. } => "comparison",
                    ExampleText::Binary { .. } => "binary",
                }
            ))),
        }
    }
}

/// Raw text (base models) or a ChatML conversation (chat models).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PromptFormat {
    /// `[BOS?] + enc(body) + enc(suffix)`, as the reference's base path.
    #[default]
    Base,
    /// `<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n`, after an optional system turn.
    ChatMl {
        /// A system message, if the model's template adds one.
        system: Option<String>,
    },
}

/// What to do with a prompt longer than the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Cut the body's end; the suffix (`Label:`) and special tokens are always kept.
    #[default]
    TruncateBody,
    /// Fail with [`EngineError::PromptTooLong`] (the reference drops such chat examples).
    Fail,
}

/// Settings of a [`PromptEncoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct PromptOptions {
    /// The template.
    pub template: Template,
    /// Base or chat formatting.
    pub format: PromptFormat,
    /// The context limit in tokens.
    pub max_tokens: usize,
    /// Long-prompt policy.
    pub overflow: Overflow,
    /// Resolve the label tokens (decoders); encoders with a head do not need them.
    pub label_tokens: bool,
}

/// Turns examples into token ids with a model's tokenizer.
#[derive(Debug)]
pub struct PromptEncoder {
    tokenizer: Tokenizer,
    path: PathBuf,
    options: PromptOptions,
    label_ids: Option<[i64; 2]>,
    pad_id: i64,
}

impl PromptEncoder {
    /// Loads `tokenizer.json` and, when asked, checks that both labels are single tokens.
    pub fn load(path: &Path, options: PromptOptions) -> Result<Self> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(|err| EngineError::Tokenizer {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        let pad_id = find_pad_id(&tokenizer);
        // Some tokenizer.json files (MiniLM's) pad and truncate on their own: the engine does both.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|err| EngineError::Tokenizer {
                path: path.to_path_buf(),
                message: err.to_string(),
            })?;
        let mut encoder = Self {
            pad_id,
            tokenizer,
            path: path.to_path_buf(),
            options,
            label_ids: None,
        };
        if encoder.options.label_tokens {
            let [first, second] = encoder.options.template.label_strings();
            encoder.label_ids = Some([encoder.single_token(first)?, encoder.single_token(second)?]);
        }
        Ok(encoder)
    }

    /// The label tokens' ids (index 0 first), when they were resolved.
    pub fn label_token_ids(&self) -> Option<[i64; 2]> {
        self.label_ids
    }

    /// The id used for padding (the tokenizer's pad token, else a known end/pad token, else 0).
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// The options this encoder was made with.
    pub fn options(&self) -> &PromptOptions {
        &self.options
    }

    /// Token ids of `text` without special tokens.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<i64>> {
        Ok(self.encode(text, false)?.0)
    }

    /// Token ids of `text` with the tokenizer's special tokens (`[CLS] .. [SEP]` for BERT),
    /// the text's end cut so that at most `max_tokens` remain (special tokens are kept).
    pub fn encode_text(&self, text: &str, max_tokens: usize) -> Result<Vec<i64>> {
        let (ids, special) = self.encode(text, true)?;
        if ids.len() <= max_tokens {
            return Ok(ids);
        }
        let leading = special.iter().take_while(|&&flag| flag == 1).count();
        let trailing = special[leading..]
            .iter()
            .rev()
            .take_while(|&&flag| flag == 1)
            .count();
        let keep = max_tokens.saturating_sub(leading + trailing);
        let body_end = leading + keep.min(ids.len() - leading - trailing);
        Ok([&ids[..body_end], &ids[ids.len() - trailing..]].concat())
    }

    fn encode(&self, text: &str, special: bool) -> Result<(Vec<i64>, Vec<u32>)> {
        let encoding =
            self.tokenizer
                .encode(text, special)
                .map_err(|err| EngineError::Tokenizer {
                    path: self.path.clone(),
                    message: err.to_string(),
                })?;
        let ids = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
        Ok((ids, encoding.get_special_tokens_mask().to_vec()))
    }

    fn single_token(&self, label: &str) -> Result<i64> {
        let (ids, _) = self.encode(label, false)?;
        let not_single = || EngineError::LabelNotSingleToken {
            label: label.to_string(),
            ids: ids.iter().map(|&id| id as u32).collect(),
        };
        let [id] = ids.as_slice() else {
            return Err(not_single());
        };
        // An unknown-token fallback is one token too, but it does not decode back to the label.
        let decoded = self
            .tokenizer
            .decode(&[*id as u32], false)
            .unwrap_or_default();
        if decoded != label {
            return Err(not_single());
        }
        Ok(*id)
    }

    /// The prompt token ids of example `index` (the index names the example in errors).
    pub fn prompt_ids(&self, index: usize, example: &ExampleText) -> Result<Vec<i64>> {
        let (body, suffix) = self.options.template.fill(example)?;
        let max_tokens = self.options.max_tokens;
        match &self.options.format {
            PromptFormat::Base => {
                let (ids, special) = self.encode(&body, true)?;
                let leading = special.iter().take_while(|&&flag| flag == 1).count();
                let trailing = special[leading..]
                    .iter()
                    .rev()
                    .take_while(|&&flag| flag == 1)
                    .count();
                let (prefix, rest) = ids.split_at(leading);
                let (middle, end) = rest.split_at(rest.len() - trailing);
                let suffix_ids = self.encode_plain(suffix)?;
                let fixed = prefix.len() + suffix_ids.len() + end.len();
                let total = fixed + middle.len();
                let keep = if total <= max_tokens {
                    middle.len()
                } else if self.options.overflow == Overflow::TruncateBody && fixed < max_tokens {
                    max_tokens - fixed
                } else {
                    return Err(EngineError::PromptTooLong {
                        index,
                        tokens: total,
                        max_tokens,
                    });
                };
                Ok([prefix, &middle[..keep], &suffix_ids, end].concat())
            }
            PromptFormat::ChatMl { system } => {
                let mut text = String::new();
                if let Some(system) = system {
                    text.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                }
                text.push_str(&format!(
                    "<|im_start|>user\n{body}{suffix}<|im_end|>\n<|im_start|>assistant\n"
                ));
                let (ids, _) = self.encode(&text, false)?;
                let im_start = self.tokenizer.token_to_id("<|im_start|>");
                if im_start.is_none() {
                    return Err(EngineError::Tokenizer {
                        path: self.path.clone(),
                        message: "chat format needs the <|im_start|> special token".into(),
                    });
                }
                if ids.len() > max_tokens {
                    return Err(EngineError::PromptTooLong {
                        index,
                        tokens: ids.len(),
                        max_tokens,
                    });
                }
                Ok(ids)
            }
        }
    }
}

fn find_pad_id(tokenizer: &Tokenizer) -> i64 {
    if let Some(padding) = tokenizer.get_padding() {
        return i64::from(padding.pad_id);
    }
    ["<|endoftext|>", "[PAD]", "<pad>", "</s>", "<|im_end|>"]
        .iter()
        .find_map(|token| tokenizer.token_to_id(token))
        .map_or(0, i64::from)
}
