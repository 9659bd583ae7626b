//! Per-seed result files in the reference implementation's cache layout, so that
//! aar reads the reference's published results and the reference's tools read aar's:
//!
//! ```text
//! <root>/{dataset}_weak_artifacts/{config key}/seed_N.json   weak teacher: weak_acc, soft_labels
//! <root>/{dataset}_train_ceiling/{config key}/seed_N.json    ceiling: strong_acc
//! <root>/{dataset}_{method}/{config key}/seed_N.json         transfer: transfer_acc
//! ```
//!
//! **Invariant: fixed baselines come from a pinned seed set.** A missing pinned
//! seed is an error, and seed files outside the set are ignored, so adding a
//! result file never moves W, S or anyone's PGR (the reference drifts that way).
#![deny(missing_docs)]

mod cache;
mod records;
mod report;

pub use cache::{CacheEntry, ResultCache, ResultsError};
pub use records::{CeilingRecord, TransferRecord, WeakArtifactRecord};
pub use report::{DatasetReport, MethodReport, ReferenceReport, SeedSet};

#[cfg(test)]
mod tests;
