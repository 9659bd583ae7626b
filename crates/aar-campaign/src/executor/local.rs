//! The default executor: researchers as tasks of the orchestrator's process, sharing
//! the campaign's ledger; verifications run in the server's own process.

use std::collections::BTreeMap;
use std::sync::Arc;

use aar_agents::accounting::Ledger;
use aar_agents::agent::{AgentError, RunSummary};
use aar_agents::llm::LanguageModel;

use super::{Executor, Placement, Work};
use crate::error::Result;
use crate::researcher::{ResearcherSpec, build_researcher, read_token_file};

type Finished = (String, std::result::Result<RunSummary, AgentError>);

/// Researchers as tokio tasks here.
pub struct LocalExecutor {
    server: String,
    ledger: Ledger,
    model: Option<Arc<dyn LanguageModel>>,
    running: tokio::task::JoinSet<Finished>,
    states: BTreeMap<String, &'static str>,
}

impl LocalExecutor {
    /// Researchers that reach the server at `server` and spend through `ledger`.
    pub fn new(
        server: &str,
        ledger: Ledger,
        model: Option<Arc<dyn LanguageModel>>,
    ) -> LocalExecutor {
        LocalExecutor {
            server: server.to_owned(),
            ledger,
            model,
            running: tokio::task::JoinSet::new(),
            states: BTreeMap::new(),
        }
    }
}

impl Executor for LocalExecutor {
    fn start(&mut self, researchers: &[ResearcherSpec]) -> Result<()> {
        for spec in researchers {
            let token = read_token_file(&spec.token_file)?;
            let mut agent = build_researcher(
                spec,
                &self.server,
                &token,
                &self.ledger,
                self.model.as_ref(),
            )?;
            let name = spec.name.clone();
            self.states.insert(name.clone(), "running");
            self.running.spawn(async move {
                let outcome = agent.run().await;
                (name, outcome)
            });
        }
        Ok(())
    }

    fn tick(&mut self, _work: Work) -> Result<bool> {
        while let Some(finished) = self.running.try_join_next() {
            match finished {
                Ok((name, outcome)) => {
                    match &outcome {
                        Ok(summary) => {
                            tracing::info!(%name, steps = summary.steps, outcome = ?summary.outcome, "researcher stopped")
                        }
                        Err(err) => tracing::error!(%name, error = %err, "researcher failed"),
                    }
                    self.states.insert(
                        name,
                        if outcome.is_ok() {
                            "finished"
                        } else {
                            "failed"
                        },
                    );
                }
                Err(err) if err.is_cancelled() => {}
                Err(err) => tracing::error!(error = %err, "researcher task panicked"),
            }
        }
        Ok(!self.running.is_empty())
    }

    fn stop(&mut self) {
        self.running.abort_all();
    }

    fn placements(&self) -> Vec<Placement> {
        self.states
            .iter()
            .map(|(name, state)| Placement {
                researcher: name.clone(),
                executor: "local".to_owned(),
                job: None,
                node: None,
                state: (*state).to_owned(),
                jobs: Vec::new(),
            })
            .collect()
    }

    fn verifies_in_process(&self) -> bool {
        true
    }
}
