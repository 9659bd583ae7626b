use std::path::{Path, PathBuf};

use thiserror::Error;

/// Everything that can go wrong in the testbed; each names the file, task or spec involved.
#[derive(Debug, Error)]
pub enum TestbedError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A source data file is not what its reader expects.
    #[error("{}: {message}", path.display())]
    BadSource {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A source holds too few usable rows for the sizes asked.
    #[error("{task}: {split} needs {needed} rows, the source has {available}")]
    NotEnoughData {
        /// The task.
        task: String,
        /// The split.
        split: String,
        /// Rows asked.
        needed: usize,
        /// Rows available.
        available: usize,
    },
    /// No preset of that name.
    #[error("unknown preset {name:?}; known: {known}")]
    UnknownPreset {
        /// The name asked.
        name: String,
        /// The built-in names.
        known: String,
    },
    /// An asset a preset needs is not fetched.
    #[error("{what} is missing at {}; run `aar assets fetch --only {asset}`", path.display())]
    MissingAsset {
        /// The asset's name.
        asset: String,
        /// What was looked for.
        what: String,
        /// Where.
        path: PathBuf,
    },
    /// A task directory lacks a split or rows the pipeline needs.
    #[error("task {task}: {message}")]
    BadTask {
        /// The task.
        task: String,
        /// What is wrong.
        message: String,
    },
    /// A method specification cannot run on these inputs.
    #[error("method {method}: {message}")]
    BadMethod {
        /// The method.
        method: String,
        /// What is wrong.
        message: String,
    },
    /// A preset file holds a value the testbed cannot use.
    #[error("{}: {message}", path.display())]
    BadPreset {
        /// The preset file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file a researcher's code wrote (a training plan, an `.npy` array) is not what it
    /// must be.
    #[error("{}: {message}", path.display())]
    BadInputFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field or row.
        message: String,
    },
    /// A configuration this build does not run.
    #[error("{0}")]
    Unsupported(String),
    /// The interruption flag was raised; finished seeds are on disk.
    #[error("interrupted; finished results are kept and a rerun resumes")]
    Interrupted,
    /// The compute engine failed.
    #[error(transparent)]
    Engine(#[from] aar_engine::EngineError),
    /// Task files failed to load or write.
    #[error(transparent)]
    Tasks(#[from] aar_tasks::TaskError),
    /// Building a pack failed.
    #[error(transparent)]
    Assets(#[from] aar_assets::AssetError),
    /// A metric could not be computed.
    #[error("{context}: {source}")]
    Metric {
        /// What was being computed.
        context: String,
        /// Why it failed.
        source: aar_core::metrics::MetricError,
    },
}

/// The crate's result.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| TestbedError::Io {
            path: path.to_owned(),
            source,
        })
    }
}
