//! Task files in the reference implementation's formats (JSONL, one example per line):
//!
//! - comparison rows: `prompt`, `first`, `second`, `label` "A" or "B";
//! - binary rows: `question`, `choice`, `label` true or false.
//!
//! Loading is strict: a malformed line, a missing or mistyped field, a label
//! outside its domain, two formats in one file, an empty file or a non-UTF-8 byte
//! is an error naming the file, the line and the field. Nothing is skipped.
//!
//! **Invariant: the agent-facing copy of a task is built from an allow-list of
//! input fields.** A field not known to be an input never reaches an agent, and
//! neither do `train_label`, the transfer set or the private test split's labels.
//! Identifiers in the copy are opaque (a keyed hash, [`IdKey`]): equal within a copy,
//! unrelated to the source's ids and order.
#![deny(missing_docs)]

mod error;
mod example;
mod ids;
mod jsonl;
mod task_dir;

pub use error::{RowProblem, TaskError};
pub use example::{AGENT_EXTRA_FIELDS, Example, Inputs};
pub use ids::IdKey;
pub use jsonl::{LabelPolicy, TaskFile, parse_jsonl, read_task_file, write_task_file};
pub use task_dir::{AGENT_SPLITS, LabeledTask, Split, write_agent_copy, write_agent_copy_with_key};

#[cfg(test)]
mod tests;
