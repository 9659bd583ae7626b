use std::path::PathBuf;

use aar_core::TaskFormat;
use thiserror::Error;

/// An error reading or writing task data. Every variant names where it happened.
#[derive(Debug, Error)]
pub enum TaskError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not a valid example.
    #[error("{}:{line}: {problem}", source_name)]
    Row {
        /// The file (or other source) the line came from.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: RowProblem,
    },
    /// The file holds no example.
    #[error("{source_name}: no examples (the file is empty)")]
    Empty {
        /// The file.
        source_name: String,
    },
    /// A task directory lacks a required split.
    #[error("{}: missing split file {file}", dir.display())]
    MissingSplit {
        /// The task directory.
        dir: PathBuf,
        /// The expected file name.
        file: &'static str,
    },
    /// A key file for opaque ids is unusable.
    #[error("{}: {message}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Splits of one task use different formats.
    #[error("{}: split {split} is {found} but the task is {expected}", dir.display())]
    SplitFormatMismatch {
        /// The task directory.
        dir: PathBuf,
        /// The split's file name.
        split: &'static str,
        /// The task's format (from its first split).
        expected: TaskFormat,
        /// This split's format.
        found: TaskFormat,
    },
}

/// What is wrong with one line of a task file.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RowProblem {
    /// The line holds bytes that are not UTF-8.
    #[error("not valid UTF-8 (byte {byte_offset} of the line)")]
    NotUtf8 {
        /// Offset of the first bad byte within the line.
        byte_offset: usize,
    },
    /// An empty line between examples.
    #[error("blank line")]
    BlankLine,
    /// The line is not JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The line is JSON but not an object.
    #[error("expected a JSON object")]
    NotObject,
    /// Neither format's input fields are present.
    #[error(
        "no input fields: expected prompt/first/second (comparison) or question/choice (binary)"
    )]
    UnknownFormat,
    /// Both formats' input fields are present.
    #[error("ambiguous row: has both comparison (prompt) and binary (question) fields")]
    AmbiguousFormat,
    /// This row's format differs from the file's first row.
    #[error("row is {found} but the file's first row is {expected}")]
    MixedFormats {
        /// Format of the first row.
        expected: TaskFormat,
        /// Format of this row.
        found: TaskFormat,
    },
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// The field.
        field: String,
        /// What it should be.
        expected: &'static str,
        /// The JSON type it has.
        found: &'static str,
    },
    /// A label value outside the format's domain.
    #[error("field `label` must be {expected}, found {found}")]
    LabelOutOfDomain {
        /// The allowed values.
        expected: &'static str,
        /// The value found.
        found: String,
    },
    /// A file that must hold labels has a row without one.
    #[error("missing field `label` (this file must be labeled)")]
    MissingLabel,
    /// A file that must not hold labels has one.
    #[error("unexpected field `label` (this file must be unlabeled)")]
    UnexpectedLabel,
}

pub(crate) fn json_type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
