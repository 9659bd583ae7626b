//! Errors of the oversight crate.

use std::path::{Path, PathBuf};

/// Why a verification could not be prepared or run (not: why a method failed, which
/// is a result of the verification).
#[derive(Debug, thiserror::Error)]
pub enum OversightError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A verification input is malformed.
    #[error("{path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A task file is invalid.
    #[error(transparent)]
    Task(#[from] aar_tasks::TaskError),
    /// The sandbox could not run a command.
    #[error(transparent)]
    Sandbox(#[from] aar_agents::sandbox::SandboxError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] aar_store::StoreError),
    /// The entry's task is not one this verifier knows.
    #[error("task {0} is not served by this verifier")]
    UnknownTask(String),
    /// A job carried no evaluation log and the verifier has no store to read it from.
    #[error(
        "entry {0}: the job carries no evaluation log and this verifier has no database to read it from"
    )]
    NoEvaluationLog(i64),
    /// The method asks for a GPU and the host has none.
    #[error(
        "the method asks for a GPU (`resources.device` \"gpu\") and this host has no NVIDIA \
         device (/dev/nvidiactl and /dev/nvidia0): verify it on a GPU host or declare \"cpu\""
    )]
    NoGpu,
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, OversightError>;

/// Maps an IO error to one that names `path`.
pub fn io_at(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> OversightError {
    let path = path.as_ref().to_owned();
    move |source| OversightError::Io { path, source }
}
