//! The weak-to-strong testbed: tasks built from the fetched sources, a weak teacher, a
//! ceiling and the transfer baselines over seeds, with results in the reference's per-seed
//! JSON layout so that `aar-results` reads them like the reference's own cache.
//!
//! Map:
//! - [`preset`]: `tiny`, `cpu`, `gpu`, `paper` as serde data (tasks, learners, sizes, seeds);
//! - [`text_tasks`]: single-claim binary tasks from labeled corpora (Rotten Tomatoes,
//!   sarcasm headlines, FEVER, multiemo review sentences), balanced, deterministic, no
//!   text in two splits;
//! - [`pair_tasks`]: text-pair tasks (wikiHow goal and step), dealt by group;
//! - [`jsonl_tasks`]: a user's labeled JSONL, dealt by consistency group, keyed by its
//!   SHA-256; [`import`]: `aar tasks import`, which turns one into a preset file;
//! - [`features`]: bag-of-words vectors and cached frozen hidden states;
//! - [`lora`]: LoRA learners (adapters on a pretrained model, prompts of the rows);
//! - [`method`]: the transfer methods as a serde [`MethodSpec`], trained from
//!   [`MethodInputs`], which hold no gold label;
//! - [`baselines`]: the runner (cache by config hash, atomic per-seed files, progress, ETA);
//! - [`report`]: the table of W, S and PGR per split, its error including the test rows'
//!   noise, and the per-row outcomes ([`SplitOutcomes`]) others compare entries with;
//! - [`agent`]: `aar run-method` on the label-free agent copy;
//! - [`plan`]: training plans a researcher's own code writes (targets, weights, loss,
//!   head as `.npy` + JSON, read by [`npy`]), trained by the engine like a built-in method.
//!
//! Invariant: **a transfer method never sees a gold label.** Only the weak teacher (on
//! `train_label`) and the ceiling (on `train_unlabel`) read labels, inside [`baselines`].
#![deny(missing_docs)]

pub mod agent;
pub mod baselines;
mod error;
pub mod features;
pub mod import;
pub mod jsonl_tasks;
pub mod lora;
pub mod method;
pub mod npy;
pub mod pair_tasks;
pub mod plan;
pub mod preset;
pub mod report;
pub mod text_tasks;

pub use agent::{
    AgentRun, FeaturesIndex, Predictions, Recipe, labeled_accuracy, run_method,
    write_agent_features,
};
pub use baselines::{RunOptions, RunSummary, build_tasks, run_baselines};
pub use error::{Result, TestbedError};
pub use method::{MethodInputs, MethodKind, MethodSpec};
pub use preset::{Preset, TaskSpec};
pub use report::{BaselineTable, SplitOutcomes};

#[cfg(test)]
mod tests;
