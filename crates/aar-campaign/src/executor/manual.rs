//! For users who schedule by hand (another scheduler, a few machines and ssh): the
//! campaign prints the command line of each researcher and of the verification
//! workers, and waits for the researchers' finish markers. It submits nothing and
//! restarts nothing: a researcher whose command dies is started again by whoever
//! started it, and resumes from its saved state.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Executor, Placement, Work};
use crate::error::Result;
use crate::researcher::{FINISHED_MARKER, ResearcherSpec};

/// Prints what to run; watches the finish markers.
pub struct ManualExecutor {
    server: String,
    /// The campaign's ledger, mirroring each researcher's own.
    ledger: aar_agents::accounting::Ledger,
    aar_binary: PathBuf,
    worker_token: PathBuf,
    worker_config: PathBuf,
    specs: BTreeMap<String, ResearcherSpec>,
    stopped: bool,
    /// Whether the queued-entries hint was printed for the current queue length.
    hinted_queue: usize,
}

impl ManualExecutor {
    /// Commands reach the server at `server` and run `aar_binary`.
    pub fn new(
        server: &str,
        ledger: aar_agents::accounting::Ledger,
        aar_binary: PathBuf,
        worker_token: PathBuf,
        worker_config: PathBuf,
    ) -> ManualExecutor {
        ManualExecutor {
            server: server.to_owned(),
            ledger,
            aar_binary,
            worker_token,
            worker_config,
            specs: BTreeMap::new(),
            stopped: false,
            hinted_queue: 0,
        }
    }

    fn finished(&self, spec: &ResearcherSpec) -> bool {
        spec.state_dir().join(FINISHED_MARKER).is_file()
    }

    fn worker_command(&self) -> String {
        format!(
            "{} verify-worker --server {} --token-file {} --config {}",
            self.aar_binary.display(),
            self.server,
            self.worker_token.display(),
            self.worker_config.display()
        )
    }
}

impl Executor for ManualExecutor {
    fn start(&mut self, researchers: &[ResearcherSpec]) -> Result<()> {
        println!(
            "manual executor: run each command below once, on any machine that shares this \
             campaign's directory and reaches {}; a command that dies resumes when run again",
            self.server
        );
        for spec in researchers {
            let file = spec.write()?;
            // A marker from an earlier run would count the researcher as done.
            let _ = std::fs::remove_file(spec.state_dir().join(FINISHED_MARKER));
            println!(
                "  {}: {} researcher --server {} --token-file {} --spec {}",
                spec.name,
                self.aar_binary.display(),
                self.server,
                spec.token_file.display(),
                file.display()
            );
            self.specs.insert(spec.name.clone(), spec.clone());
        }
        println!(
            "  verifications (one or more, left running): {}",
            self.worker_command()
        );
        Ok(())
    }

    fn tick(&mut self, work: Work) -> Result<bool> {
        if self.stopped {
            return Ok(false);
        }
        let queued = work.queued_verifications.len();
        if queued > 0 && queued != self.hinted_queue {
            println!(
                "{queued} entries wait for a verification worker: {}",
                self.worker_command()
            );
        }
        self.hinted_queue = queued;
        super::mirror_ledgers(&self.ledger, self.specs.values());
        Ok(self.specs.values().any(|spec| !self.finished(spec)))
    }

    fn stop(&mut self) {
        self.stopped = true;
        super::mirror_ledgers(&self.ledger, self.specs.values());
    }

    fn placements(&self) -> Vec<Placement> {
        self.specs
            .values()
            .map(|spec| Placement {
                researcher: spec.name.clone(),
                executor: "manual".to_owned(),
                job: None,
                node: None,
                state: if self.finished(spec) {
                    "finished"
                } else {
                    "waiting for its command"
                }
                .to_owned(),
                jobs: Vec::new(),
            })
            .collect()
    }

    fn verifies_in_process(&self) -> bool {
        false
    }
}
