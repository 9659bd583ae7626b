//! Why a campaign could not run.

use std::path::{Path, PathBuf};

/// A campaign failure.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A file or socket operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was touched.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The testbed (tasks, features, baselines) failed.
    #[error("testbed: {0}")]
    Testbed(#[from] aar_testbed::TestbedError),
    /// Fetching the preset's assets failed.
    #[error("assets: {0}")]
    Assets(#[from] aar_assets::AssetError),
    /// Setting up failed.
    #[error("set-up: {0}")]
    Setup(String),
    /// The research server answered an error.
    #[error("research server: {0}")]
    Server(String),
    /// An agent could not be built or run.
    #[error("agent: {0}")]
    Agent(#[from] aar_agents::agent::AgentError),
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] aar_agents::accounting::LedgerError),
    /// The sandbox could not be set up.
    #[error(transparent)]
    Sandbox(#[from] aar_agents::sandbox::SandboxError),
    /// A workspace could not be set up.
    #[error(transparent)]
    Workspace(#[from] aar_agents::tools::WorkspaceError),
    /// A server client could not be built.
    #[error(transparent)]
    Client(#[from] aar_agents::server_client::ServerClientError),
    /// An LLM client could not be built.
    #[error(transparent)]
    Llm(#[from] aar_agents::llm::LlmError),
    /// Stopped by the user before the researchers started.
    #[error("interrupted")]
    Interrupted,
}

impl CampaignError {
    /// An adapter for `map_err` on IO results touching `path`.
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> CampaignError {
        let path = path.as_ref().to_owned();
        move |source| CampaignError::Io { path, source }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, CampaignError>;
