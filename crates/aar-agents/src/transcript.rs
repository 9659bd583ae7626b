//! Every message and tool call of an agent, for oversight: one JSON object per
//! line, appended and fsynced before the loop goes on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::accounting::BudgetExceeded;
use crate::llm::{Message, Usage};

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A session began with this system prompt and first message.
    SessionStart {
        /// Session number (0-based, across restarts).
        session: u64,
        /// Why: `start`, `resume` or `context_limit`.
        reason: String,
        /// The system prompt.
        system: String,
        /// The first user message.
        first: Message,
    },
    /// A message added to the conversation (model's or loop's).
    Message {
        /// The message.
        message: Message,
    },
    /// A policy step's cost.
    Usage {
        /// Model.
        model: String,
        /// Tokens.
        usage: Usage,
        /// Cost in nanodollars.
        cost_nanodollars: u64,
        /// Attempts the request took.
        attempts: u32,
    },
    /// A tool call and its result.
    ToolCall {
        /// Call id.
        id: String,
        /// Tool.
        name: String,
        /// Arguments.
        input: serde_json::Value,
        /// Result text given to the model.
        output: String,
        /// Whether it failed.
        is_error: bool,
        /// How long it took.
        elapsed_ms: u64,
    },
    /// The agent stopped.
    Stop {
        /// Why, in words.
        reason: String,
        /// The budget, when that was the reason.
        budget: Option<BudgetExceeded>,
    },
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Agent name.
    pub agent: String,
    /// Step number when it happened.
    pub step: u64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// Why the transcript could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("transcript {path}: {source}")]
pub struct TranscriptError {
    path: PathBuf,
    source: std::io::Error,
}

/// An append-only JSONL file.
#[derive(Debug)]
pub struct Transcript {
    path: PathBuf,
    file: std::fs::File,
    agent: String,
}

impl Transcript {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path, agent: &str) -> Result<Transcript, TranscriptError> {
        let err = |source| TranscriptError {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // A crash mid-append leaves a torn last line: cut it before appending.
        if let Ok(bytes) = std::fs::read(path)
            && !bytes.is_empty()
            && !bytes.ends_with(b"\n")
        {
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(err)?;
            file.set_len(keep as u64).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Transcript {
            path: path.to_owned(),
            file,
            agent: agent.to_owned(),
        })
    }

    /// Appends one event and fsyncs.
    pub fn append(&mut self, step: u64, event: Event) -> Result<(), TranscriptError> {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let record = Record {
            ts_ms,
            agent: self.agent.clone(),
            step,
            event,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| TranscriptError {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| TranscriptError {
                path: self.path.clone(),
                source,
            })
    }

    /// All records of the file at `path`.
    pub fn read(path: &Path) -> Result<Vec<Record>, TranscriptError> {
        let err = |source| TranscriptError {
            path: path.to_owned(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut records = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(record) => records.push(record),
                // A crash mid-append leaves a torn last line: it never happened.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {
                    tracing::warn!(path = %path.display(), "ignoring a torn last transcript line");
                }
                Err(e) => return Err(err(std::io::Error::other(e))),
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_and_appending_goes_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.jsonl");
        let stop = |reason: &str| Event::Stop {
            reason: reason.to_owned(),
            budget: None,
        };
        {
            let mut t = Transcript::open(&path, "a").unwrap_or_else(|e| panic!("{e}"));
            t.append(0, stop("one")).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        bytes.extend_from_slice(b"{\"ts_ms\":1,\"agen");
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Transcript::read(&path).map(|r| r.len()).ok(), Some(1));
        let mut t = Transcript::open(&path, "a").unwrap_or_else(|e| panic!("{e}"));
        t.append(1, stop("two")).unwrap_or_else(|e| panic!("{e}"));
        let records = Transcript::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].event, stop("two"));
    }
}
