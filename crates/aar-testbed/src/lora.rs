//! LoRA learners: a pretrained model fine-tuned with fresh adapters on prompts of the task's
//! rows, read through its label tokens (decoders) or a classification head (encoders). The
//! `gpu` and `paper` presets use them; on this CPU only MiniLM-sized models are practical.

use std::path::{Path, PathBuf};

use aar_engine::features::HeadLoss;
use aar_engine::prompt::{
    ExampleText, Overflow, PromptEncoder, PromptFormat, PromptOptions, Template,
};
use aar_engine::readout::{ReadoutOptions, read_labels};
use aar_engine::train::{Loss, TrainConfig, TrainExample, train};
use aar_engine::{Architecture, LoadOptions, LoraConfig, Model, ModelFiles, PaddingSide};
use aar_tasks::{Example, Inputs};

use crate::error::{Result, TestbedError};
use crate::features::model_dir;
use crate::preset::LearnerSpec;

/// A LoRA learner ready to turn rows into prompts, train and predict.
#[derive(Debug)]
pub struct LoraLearner {
    dir: PathBuf,
    decoder: bool,
    rank: i64,
    alpha: f64,
    epochs: usize,
    learning_rate: f64,
    batch_size: usize,
    binary: PromptEncoder,
    comparison: PromptEncoder,
    binary_zero_shot: Option<PromptEncoder>,
}

/// A row's prompt and the template it was filled with.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    ids: Vec<i64>,
    comparison: bool,
}

impl LoraLearner {
    /// Checks the learner's model directory and loads its tokenizer.
    pub fn load(learner: &LearnerSpec, assets_dir: &Path) -> Result<LoraLearner> {
        let LearnerSpec::Lora {
            model,
            rank,
            alpha,
            epochs,
            learning_rate,
            batch_size,
            max_tokens,
        } = learner
        else {
            return Err(TestbedError::Unsupported(format!(
                "{} is not a LoRA learner",
                learner.short_name()
            )));
        };
        let dir = model_dir(model, assets_dir)?;
        let decoder = ModelFiles::locate(&dir)?.architecture()? != Architecture::Bert;
        let encoder = |template: Template| -> Result<PromptEncoder> {
            Ok(PromptEncoder::load(
                &dir.join("tokenizer.json"),
                PromptOptions {
                    template,
                    format: PromptFormat::Base,
                    max_tokens: *max_tokens,
                    overflow: Overflow::TruncateBody,
                    label_tokens: decoder,
                },
            )?)
        };
        Ok(LoraLearner {
            decoder,
            rank: *rank,
            alpha: *alpha,
            epochs: *epochs,
            learning_rate: *learning_rate,
            batch_size: *batch_size,
            binary: encoder(Template::Binary)?,
            comparison: encoder(Template::Comparison)?,
            // An encoder's head is fresh: it has no zero-shot reading.
            binary_zero_shot: if decoder {
                Some(encoder(Template::BinaryZeroShot)?)
            } else {
                None
            },
            dir,
        })
    }

    fn encoder(&self, comparison: bool) -> &PromptEncoder {
        if comparison {
            &self.comparison
        } else {
            &self.binary
        }
    }

    /// The prompts of `rows` (inputs only, never a label).
    pub fn prompts(&self, rows: &[Example]) -> Result<Vec<Prompt>> {
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                let (text, comparison) = example_text(row);
                Ok(Prompt {
                    ids: self.encoder(comparison).prompt_ids(i, &text)?,
                    comparison,
                })
            })
            .collect()
    }

    fn padding(&self) -> PaddingSide {
        if self.decoder {
            PaddingSide::Left
        } else {
            PaddingSide::Right
        }
    }

    fn label_ids(&self, prompts: &[Prompt]) -> Result<Option<[i64; 2]>> {
        let Some(first) = prompts.first() else {
            return Ok(None);
        };
        if prompts.iter().any(|p| p.comparison != first.comparison) {
            return Err(TestbedError::Unsupported(
                "a task mixing binary and comparison rows cannot share label tokens".into(),
            ));
        }
        Ok(self.encoder(first.comparison).label_token_ids())
    }

    /// A fresh model (adapters and head seeded by `seed`) trained on `prompts` with `targets`.
    pub fn fit(
        &self,
        prompts: &[Prompt],
        targets: &[[f32; 2]],
        loss: HeadLoss,
        seed: u64,
    ) -> Result<Model> {
        let model = Model::load(
            &self.dir,
            &LoadOptions {
                device: aar_engine::device::best_device(),
                lora: Some(LoraConfig {
                    rank: self.rank,
                    alpha: self.alpha,
                    ..if self.decoder {
                        LoraConfig::reference_decoder()
                    } else {
                        LoraConfig::reference_encoder()
                    }
                }),
                seed,
                ..LoadOptions::default()
            },
        )?;
        let data: Vec<TrainExample> = prompts
            .iter()
            .zip(targets)
            .map(|(p, t)| TrainExample {
                prompt_ids: p.ids.clone(),
                target: *t,
            })
            .collect();
        let loss = match loss {
            HeadLoss::CrossEntropy => Loss::SoftCrossEntropy,
            HeadLoss::LogConf {
                aux_coef,
                warmup_frac,
            } => Loss::Logconf {
                aux_weight: aux_coef,
                warmup_frac,
            },
        };
        let report = train(
            &model,
            &data,
            &TrainConfig {
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                loss,
                seed,
                padding: self.padding(),
                pad_id: self.binary.pad_id(),
                label_token_ids: self.label_ids(prompts)?,
                ..TrainConfig::default()
            },
        )?;
        tracing::debug!(
            steps = report.steps,
            last_loss = report.step_losses.last(),
            "LoRA fit"
        );
        Ok(model)
    }

    /// `[p0, p1]` per prompt from a trained model.
    pub fn predict(&self, model: &Model, prompts: &[Prompt]) -> Result<Vec<[f32; 2]>> {
        Ok(read_labels(
            model,
            &prompts.iter().map(|p| p.ids.clone()).collect::<Vec<_>>(),
            &ReadoutOptions {
                batch_size: self.batch_size.max(1),
                padding: self.padding(),
                pad_id: self.binary.pad_id(),
                label_token_ids: self.label_ids(prompts)?,
            },
        )?
        .probabilities)
    }

    /// The untrained model's zero-shot `p(label 1)` on binary rows (decoders: the
    /// reference's claim template read as False/True); `None` where it has no such reading.
    pub fn zero_shot_prior(&self, rows: &[Example]) -> Result<Option<Vec<f32>>> {
        let Some(encoder) = &self.binary_zero_shot else {
            return Ok(None);
        };
        let mut prompts = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let (text, comparison) = example_text(row);
            if comparison {
                return Ok(None);
            }
            prompts.push(encoder.prompt_ids(i, &text)?);
        }
        let model = Model::load(
            &self.dir,
            &LoadOptions {
                device: aar_engine::device::best_device(),
                ..LoadOptions::default()
            },
        )?;
        let readout = read_labels(
            &model,
            &prompts,
            &ReadoutOptions {
                batch_size: self.batch_size.max(1),
                padding: self.padding(),
                pad_id: encoder.pad_id(),
                label_token_ids: encoder.label_token_ids(),
            },
        )?;
        Ok(Some(readout.probabilities.iter().map(|p| p[1]).collect()))
    }
}

fn example_text(row: &Example) -> (ExampleText, bool) {
    match &row.inputs {
        Inputs::Binary { question, choice } => (
            ExampleText::Binary {
                question: question.clone(),
                choice: choice.clone(),
            },
            false,
        ),
        Inputs::Comparison {
            prompt,
            first,
            second,
        } => (
            ExampleText::Comparison {
                prompt: prompt.clone(),
                first: first.clone(),
                second: second.clone(),
            },
            true,
        ),
    }
}
