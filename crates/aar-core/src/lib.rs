//! aar's vocabulary, shared by every other crate: binary labels, the two task
//! formats of the reference implementation, and the metrics the platform scores
//! with (accuracy, per-subset accuracy, PGR, mean and standard error over seeds).
//!
//! This crate does no IO. It knows nothing of files, HTTP or tensors.
#![deny(missing_docs)]

pub mod metrics;
pub mod noise;
mod task;
pub mod text;

pub use task::{Label, TaskFormat};
