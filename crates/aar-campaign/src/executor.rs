//! Where researchers and verifications run: the executor boundary.
//!
//! The campaign hands an [`Executor`] one [`ResearcherSpec`] per researcher and then
//! only ticks it; whatever runs them (tasks in this process, Slurm jobs, later perhaps
//! Kubernetes pods) stays behind this trait. The research server, its database and the
//! orchestrator always stay on the submitting host; what leaves it reaches the server
//! over HTTP with a token from a file.
//!
//! - [`local`]: researchers as tasks of this process, verifications in the server's
//!   process (the default: one machine);
//! - [`manual`]: the campaign prints the commands (`aar researcher`, `aar
//!   verify-worker`) and the user runs them wherever they like;
//! - [`slurm`]: each researcher a batch job (`aar researcher`), each verification a
//!   batch job (`aar verify-worker --once`); jobs that end before their researcher's
//!   budget is spent are submitted again and resume from the saved state.

pub mod local;
pub mod manual;
pub mod slurm;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::researcher::ResearcherSpec;

/// Which executor a campaign uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExecutorKind {
    /// Everything on this machine.
    #[default]
    Local,
    /// Researchers and verifications as Slurm batch jobs.
    Slurm(Box<slurm::SlurmSettings>),
    /// The campaign prints each researcher's and the workers' command lines and waits;
    /// the user runs them wherever they like.
    Manual,
}

/// What the campaign knows each tick that an executor may act on.
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// Leaderboard entries waiting for a verifier (not yet claimed), oldest first.
    pub queued_verifications: Vec<QueuedVerification>,
}

/// One entry waiting for a verifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedVerification {
    /// The entry.
    pub entry_id: i64,
    /// Whether its method's manifest asks for a GPU (`resources.device: gpu`).
    pub gpu: bool,
}

/// Where a researcher runs and how its job stands: progress lines and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The researcher.
    pub researcher: String,
    /// `local` or `slurm`.
    pub executor: String,
    /// Its current (or last) job, when it runs as one.
    pub job: Option<String>,
    /// The node it runs on, once known.
    pub node: Option<String>,
    /// The job's state as the scheduler words it (`RUNNING`, `PENDING`, `COMPLETED`,
    /// ...), or `running`/`finished` in this process.
    pub state: String,
    /// Every job it has had, oldest first (more than one after a restart).
    pub jobs: Vec<String>,
}

impl Placement {
    /// `slurm job 12 RUNNING on node1` (for a progress line).
    pub fn describe(&self) -> String {
        match &self.job {
            None => format!("{} {}", self.executor, self.state),
            Some(job) => {
                let node = self
                    .node
                    .as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default();
                let restarts = match self.jobs.len() {
                    0 | 1 => String::new(),
                    n => format!(", {} restarts", n - 1),
                };
                format!("{} job {job} {}{node}{restarts}", self.executor, self.state)
            }
        }
    }
}

/// Runs researchers (and, for executors that take it on, verification work).
///
/// Calls are synchronous and short (a scheduler's command line answers in
/// milliseconds); the campaign calls them from a blocking-tolerant context.
pub trait Executor: Send {
    /// Starts every researcher, or takes over jobs an earlier run of this campaign left
    /// running.
    fn start(&mut self, researchers: &[ResearcherSpec]) -> Result<()>;
    /// Checks on the researchers, restarts any that stopped early and takes on `work`;
    /// returns whether any researcher still has work left.
    fn tick(&mut self, work: Work) -> Result<bool>;
    /// Stops every researcher and job now (Ctrl-C); their state is durable and the next
    /// run of the campaign resumes them.
    fn stop(&mut self);
    /// Where each researcher runs.
    fn placements(&self) -> Vec<Placement>;
    /// Whether verifications run in the server's own process (else through this
    /// executor, from the server's queue).
    fn verifies_in_process(&self) -> bool;
}

/// Copies the ledger each researcher keeps as a process of its own into the campaign's
/// (which progress lines and the report read).
pub(crate) fn mirror_ledgers<'a>(
    ledger: &aar_agents::accounting::Ledger,
    specs: impl IntoIterator<Item = &'a ResearcherSpec>,
) {
    for spec in specs {
        let Some(path) = &spec.ledger else { continue };
        let state: aar_agents::accounting::LedgerState = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable researcher ledger");
                    continue;
                }
            },
            Err(_) => continue,
        };
        if let Some(totals) = state.agents.get(&spec.name)
            && let Err(e) = ledger.set_agent_totals(&spec.name, *totals)
        {
            tracing::warn!(error = %e, "campaign ledger not saved");
        }
    }
}
