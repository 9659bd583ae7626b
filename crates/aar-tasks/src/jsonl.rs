use std::io::Write;
use std::path::Path;

use aar_core::{Label, TaskFormat};
use serde_json::Value;

use crate::error::{RowProblem, TaskError};
use crate::example::Example;
use crate::ids::IdKey;

/// Whether rows of a file must, or must not, carry a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelPolicy {
    /// Server-side data: every row is labeled.
    Required,
    /// Agent-facing data: no row may be labeled.
    Forbidden,
}

/// A parsed task file: one format, at least one example.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFile {
    format: TaskFormat,
    examples: Vec<Example>,
}

impl TaskFile {
    /// Builds a file from examples, which must be non-empty and of one format.
    pub fn new(examples: Vec<Example>, source_name: &str) -> Result<TaskFile, TaskError> {
        let format = match examples.first() {
            Some(e) => e.inputs.format(),
            None => {
                return Err(TaskError::Empty {
                    source_name: source_name.to_owned(),
                });
            }
        };
        for (i, e) in examples.iter().enumerate() {
            if e.inputs.format() != format {
                return Err(TaskError::Row {
                    source_name: source_name.to_owned(),
                    line: i + 1,
                    problem: RowProblem::MixedFormats {
                        expected: format,
                        found: e.inputs.format(),
                    },
                });
            }
        }
        Ok(TaskFile { format, examples })
    }

    /// The format shared by every row.
    pub fn format(&self) -> TaskFormat {
        self.format
    }

    /// The rows, in file order (predictions are aligned to this order).
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Always false: a task file has at least one row.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Gold labels in row order, where every row has one.
    pub fn labels(&self) -> Option<Vec<Label>> {
        self.examples.iter().map(|e| e.label).collect()
    }

    /// The agent-facing copy: allow-listed fields only, ids made opaque under `key`, no
    /// labels; rows stay in file order (predictions are scored in that order).
    pub fn for_agents(&self, key: &IdKey) -> TaskFile {
        TaskFile {
            format: self.format,
            examples: self.examples.iter().map(|e| e.for_agents(key)).collect(),
        }
    }
}

/// Parses JSONL bytes. `source_name` is used in error messages.
pub fn parse_jsonl(
    bytes: &[u8],
    source_name: &str,
    policy: LabelPolicy,
) -> Result<TaskFile, TaskError> {
    let row_error = |line: usize, problem: RowProblem| TaskError::Row {
        source_name: source_name.to_owned(),
        line,
        problem,
    };
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // A final newline ends the last line; it does not start an empty one.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut examples = Vec::with_capacity(lines.len());
    let mut format = None;
    for (index, raw) in lines.into_iter().enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            row_error(
                line,
                RowProblem::NotUtf8 {
                    byte_offset: e.valid_up_to(),
                },
            )
        })?;
        if text.trim().is_empty() {
            return Err(row_error(line, RowProblem::BlankLine));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| row_error(line, RowProblem::NotJson(e.to_string())))?;
        let Value::Object(object) = value else {
            return Err(row_error(line, RowProblem::NotObject));
        };
        let example = Example::from_object(object).map_err(|p| row_error(line, p))?;
        let found = example.inputs.format();
        match format {
            None => format = Some(found),
            Some(expected) if expected != found => {
                return Err(row_error(
                    line,
                    RowProblem::MixedFormats { expected, found },
                ));
            }
            Some(_) => {}
        }
        match (policy, example.label) {
            (LabelPolicy::Required, None) => return Err(row_error(line, RowProblem::MissingLabel)),
            (LabelPolicy::Forbidden, Some(_)) => {
                return Err(row_error(line, RowProblem::UnexpectedLabel));
            }
            _ => {}
        }
        examples.push(example);
    }
    TaskFile::new(examples, source_name)
}

/// Reads and parses a JSONL task file.
pub fn read_task_file(path: &Path, policy: LabelPolicy) -> Result<TaskFile, TaskError> {
    let bytes = std::fs::read(path).map_err(|source| TaskError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_jsonl(&bytes, &path.display().to_string(), policy)
}

/// Writes a task file as JSONL, atomically (temporary file, then rename).
pub fn write_task_file(path: &Path, file: &TaskFile) -> Result<(), TaskError> {
    let io_error = |source| TaskError::Io {
        path: path.to_owned(),
        source,
    };
    let mut out = Vec::new();
    for example in file.examples() {
        serde_json::to_writer(&mut out, &example.to_object())
            .map_err(|e| io_error(std::io::Error::other(e)))?;
        out.push(b'\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut handle = std::fs::File::create(&tmp).map_err(io_error)?;
    handle.write_all(&out).map_err(io_error)?;
    handle.sync_all().map_err(io_error)?;
    std::fs::rename(&tmp, path).map_err(io_error)
}
