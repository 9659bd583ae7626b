//! The researchers: an agent loop driven by a [`agent::Policy`] (an LLM now,
//! a scripted offline researcher later), the tools it calls, the sandbox its
//! shell commands run in, the LLM clients, and the accounting that stops it.
//!
//! Layout:
//! - [`sandbox`]: one shell command under bubblewrap: its own read-write
//!   workspace, read-only task data, cache and aar tools, no network, no
//!   environment, limits on wall time, memory, processes, disk and output.
//! - [`gpu`]: the host's NVIDIA device nodes and driver libraries, bound into
//!   sandboxes that ask for a GPU.
//! - [`llm`]: the Anthropic Messages API (streaming, tool use, prompt caching,
//!   retries) and OpenAI-compatible chat completions behind one trait.
//! - [`server_client`]: a typed client of the research server's HTTP API.
//! - [`tools`]: the researcher's tools (shell, files confined to the
//!   workspace, evaluate, forum, leaderboard, snapshots, notebook).
//! - [`accounting`]: tokens and dollars per agent and campaign, hard budgets,
//!   a ledger kept across restarts.
//! - [`transcript`]: every message and tool call, appended and fsynced.
//! - [`agent`]: the loop, the [`agent::Policy`] seam and fresh sessions.
//! - [`directions`]: the built-in starting directions.
//! - `testing` (feature `testing`): a local server speaking the Anthropic
//!   wire protocol with scripted turns, for tests.
//!
//! Invariants:
//! - **Nothing an agent runs sees labels, the network or the host.** Shell
//!   commands run only through [`sandbox::Sandbox`]; file tools resolve paths
//!   only through [`tools::Workspace`], which refuses to leave the workspace.
//! - **API keys are never logged or stored.** [`llm::ApiKey`] has a redacting
//!   `Debug`, no `Display` and no `Serialize`; transcripts hold messages, not
//!   requests.
//! - **Budgets are checked before every LLM call and every tool step**, and
//!   the ledger that they are checked against is written (atomically) after
//!   every step, so a restart never forgets spending.
#![deny(missing_docs)]

pub mod accounting;
pub mod agent;
pub mod cgroup;
pub mod directions;
pub mod gpu;
pub mod llm;
pub mod sandbox;
pub mod server_client;
pub mod tools;
pub mod transcript;

#[cfg(feature = "testing")]
pub mod testing;

pub mod fsutil;
