//! Researchers and verifications as Slurm batch jobs.
//!
//! Each researcher is one job running `aar researcher` (its agent loop and its
//! bubblewrap sandbox on the compute node); each queued leaderboard entry gets a job
//! running `aar verify-worker --once`, which claims it from the server's queue. A
//! researcher job that ends without its finish marker (cancelled, preempted, node lost,
//! failed) is submitted again, up to `max_restarts` times, and resumes from its
//! notebook, transcript and ledger; a verification whose job dies loses its lease on
//! the server and is queued again, which gives it a new job here. Jobs are recorded in
//! `<campaign>/slurm.json`, so a restarted orchestrator takes over jobs still running.
//!
//! The scheduler is driven through its command line (`sbatch`, `squeue`, `scancel`),
//! which every Slurm site has and which honours `SLURM_CONF`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{Executor, Placement, QueuedVerification, Work};
use crate::campaign::write_private;
use crate::error::{CampaignError, Result};
use crate::researcher::{FINISHED_MARKER, ResearcherSpec};

/// How jobs are submitted (`aar up --slurm-config FILE`, flags override it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlurmSettings {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time` of researcher jobs (Slurm's format, e.g. `2:00:00`).
    pub time_limit: Option<String>,
    /// `--gres` of researcher jobs (e.g. `gpu:1` for presets that fine-tune).
    pub gres: Option<String>,
    /// `--gres` of verification jobs.
    pub verify_gres: Option<String>,
    /// `--cpus-per-task` of every job.
    pub cpus_per_task: Option<u32>,
    /// `--mem` of every job (e.g. `8G`).
    pub mem: Option<String>,
    /// Further `sbatch` arguments, as given.
    pub extra_args: Vec<String>,
    /// How often one researcher's job is submitted again after ending early.
    pub max_restarts: u32,
    /// Verification jobs at once.
    pub verify_jobs: usize,
}

impl Default for SlurmSettings {
    fn default() -> SlurmSettings {
        SlurmSettings {
            partition: None,
            account: None,
            qos: None,
            time_limit: None,
            gres: None,
            verify_gres: None,
            cpus_per_task: None,
            mem: None,
            extra_args: Vec::new(),
            max_restarts: 5,
            verify_jobs: 2,
        }
    }
}

impl SlurmSettings {
    /// Reads a settings file (JSON), naming the file and the field in errors.
    pub fn read(path: &Path) -> Result<SlurmSettings> {
        let bytes = std::fs::read(path).map_err(CampaignError::io(path))?;
        let settings: SlurmSettings = serde_json::from_slice(&bytes)
            .map_err(|e| CampaignError::Setup(format!("slurm settings {}: {e}", path.display())))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every value goes to `sbatch` as one argument: no blank, newline or `=` prefix
    /// games, and sane counts.
    pub fn validate(&self) -> Result<()> {
        let named = [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
            ("time_limit", &self.time_limit),
            ("gres", &self.gres),
            ("verify_gres", &self.verify_gres),
            ("mem", &self.mem),
        ];
        for (field, value) in named {
            if let Some(value) = value
                && (value.is_empty()
                    || value.len() > 200
                    || value.chars().any(|c| c.is_whitespace() || c.is_control()))
            {
                return Err(CampaignError::Setup(format!(
                    "slurm settings: {field} {value:?} must be one word of at most 200 characters"
                )));
            }
        }
        if let Some(bad) = self
            .extra_args
            .iter()
            .find(|a| a.chars().any(char::is_control))
        {
            return Err(CampaignError::Setup(format!(
                "slurm settings: extra_args entry {bad:?} holds a control character"
            )));
        }
        if self.verify_jobs == 0 || self.verify_jobs > 64 {
            return Err(CampaignError::Setup(format!(
                "slurm settings: verify_jobs must be 1 to 64, not {}",
                self.verify_jobs
            )));
        }
        Ok(())
    }
}

/// One submitted job as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    state: String,
    node: Option<String>,
}

/// A researcher's jobs, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ResearcherJobs {
    jobs: Vec<JobRecord>,
    finished: bool,
}

/// `<campaign>/slurm.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct JobsFile {
    /// The server URL the jobs were given: jobs given another are not taken over.
    server: String,
    researchers: BTreeMap<String, ResearcherJobs>,
}

/// Job states after which the job runs no more (Slurm's long names); a job the
/// controller no longer knows is `LOST`.
fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "CANCELLED"
            | "FAILED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "OUT_OF_MEMORY"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "SPECIAL_EXIT"
            | "REVOKED"
            | "LOST"
    )
}

/// One line of `squeue --format=%i|%T|%N`.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    state: String,
    node: Option<String>,
}

/// Parses `squeue --noheader --format=%i|%T|%N` output by job id.
fn parse_squeue(output: &str) -> BTreeMap<String, Seen> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split('|');
            let id = fields.next()?.trim();
            let state = fields.next()?.trim();
            let node = fields.next().map(str::trim).filter(|n| !n.is_empty());
            if id.is_empty() || state.is_empty() {
                return None;
            }
            Some((
                id.to_owned(),
                Seen {
                    // `CANCELLED by 0` and the like: the state is the first word.
                    state: state.split_whitespace().next()?.to_owned(),
                    node: node.map(str::to_owned),
                },
            ))
        })
        .collect()
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Researchers and verifications as Slurm jobs.
pub struct SlurmExecutor {
    settings: SlurmSettings,
    /// The server's URL as jobs reach it.
    server: String,
    /// `aar` on the compute nodes (the same path: a shared file system).
    aar_binary: PathBuf,
    /// The campaign's directory (shared with the compute nodes).
    root: PathBuf,
    /// `aar verify-worker`'s token and configuration files.
    worker_token: PathBuf,
    worker_config: PathBuf,
    /// The campaign's ledger, mirroring each job's own.
    ledger: aar_agents::accounting::Ledger,
    specs: BTreeMap<String, ResearcherSpec>,
    jobs: JobsFile,
    /// Verification jobs not seen ended yet: the entry each was submitted for and its
    /// last state.
    workers: BTreeMap<String, (i64, String)>,
    /// Set by `stop`: nothing is submitted after it (a cancelled job is not restarted).
    stopped: bool,
    /// When the scheduler was last asked (it is asked at most every [`POLL_EVERY`]).
    last_poll: Option<std::time::Instant>,
}

/// How often the scheduler is asked about the jobs: sites ask users not to poll
/// `slurmctld` every second.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What the Slurm executor needs besides its settings.
pub struct SlurmSetup {
    /// The server's URL as jobs reach it.
    pub server: String,
    /// The `aar` binary jobs run.
    pub aar_binary: PathBuf,
    /// The campaign's directory.
    pub root: PathBuf,
    /// The verification workers' token file (0600).
    pub worker_token: PathBuf,
    /// The verification workers' configuration file.
    pub worker_config: PathBuf,
    /// The campaign's ledger.
    pub ledger: aar_agents::accounting::Ledger,
}

impl SlurmExecutor {
    /// An executor submitting with `settings`; checks that `sbatch` can be run.
    pub fn new(settings: SlurmSettings, setup: SlurmSetup) -> Result<SlurmExecutor> {
        settings.validate()?;
        let probe = Command::new("squeue").arg("--version").output();
        if !probe.is_ok_and(|o| o.status.success()) {
            return Err(CampaignError::Setup(
                "--executor slurm: `squeue --version` does not run here; install Slurm's \
                 client commands (Debian: slurm-client) and point SLURM_CONF at the cluster"
                    .to_owned(),
            ));
        }
        Ok(SlurmExecutor {
            settings,
            server: setup.server,
            aar_binary: setup.aar_binary,
            root: setup.root,
            worker_token: setup.worker_token,
            worker_config: setup.worker_config,
            ledger: setup.ledger,
            specs: BTreeMap::new(),
            jobs: JobsFile::default(),
            workers: BTreeMap::new(),
            stopped: false,
            last_poll: None,
        })
    }

    fn jobs_file(&self) -> PathBuf {
        self.root.join("slurm.json")
    }

    fn save_jobs(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.jobs)
            .map_err(|e| CampaignError::Setup(e.to_string()))?;
        write_private(&self.jobs_file(), &bytes)
    }

    /// `sbatch` arguments every job gets.
    fn common_args(&self, gres: Option<&String>) -> Vec<String> {
        let s = &self.settings;
        let mut args = vec!["--parsable".to_owned()];
        let pairs = [
            ("--partition", s.partition.as_ref()),
            ("--account", s.account.as_ref()),
            ("--qos", s.qos.as_ref()),
            ("--mem", s.mem.as_ref()),
            ("--gres", gres),
        ];
        for (flag, value) in pairs {
            if let Some(value) = value {
                args.push(format!("{flag}={value}"));
            }
        }
        if let Some(cpus) = s.cpus_per_task {
            args.push(format!("--cpus-per-task={cpus}"));
        }
        args.extend(s.extra_args.iter().cloned());
        args
    }

    /// Writes `script` to `path` and submits it; returns the job id.
    fn submit(&self, path: &Path, script: &str, mut args: Vec<String>) -> Result<String> {
        write_private(path, script.as_bytes())?;
        args.push(path.display().to_string());
        let out = Command::new("sbatch")
            .args(&args)
            .current_dir(&self.root)
            .output()
            .map_err(|e| CampaignError::Setup(format!("running sbatch: {e}")))?;
        if !out.status.success() {
            return Err(CampaignError::Setup(format!(
                "sbatch {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // `--parsable` prints `id` or `id;cluster`.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = stdout.trim().split(';').next().unwrap_or("").to_owned();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(CampaignError::Setup(format!(
                "sbatch {}: no job id in its answer {stdout:?}",
                path.display()
            )));
        }
        Ok(id)
    }

    fn submit_researcher(&mut self, name: &str) -> Result<String> {
        let spec = self
            .specs
            .get(name)
            .ok_or_else(|| CampaignError::Setup(format!("no spec for {name}")))?;
        let spec_file = spec.file();
        let state = spec.state_dir();
        // A marker from an earlier run would end the new job's watch at once.
        let _ = std::fs::remove_file(state.join(FINISHED_MARKER));
        let script = format!(
            "#!/bin/sh\n# Written by `aar up --executor slurm`: {name} of campaign {campaign}.\n\
             exec {aar} researcher --server {server} --token-file {token} --spec {spec}\n",
            campaign = spec.campaign.name,
            aar = shell_quote(&self.aar_binary.display().to_string()),
            server = shell_quote(&self.server),
            token = shell_quote(&spec.token_file.display().to_string()),
            spec = shell_quote(&spec_file.display().to_string()),
        );
        let mut args = self.common_args(self.settings.gres.as_ref());
        args.push(format!("--job-name=aar-{}-{name}", spec.campaign.name));
        args.push(format!("--output={}", state.join("slurm-%j.log").display()));
        args.push("--open-mode=append".to_owned());
        args.push("--requeue".to_owned());
        if let Some(time) = &self.settings.time_limit {
            args.push(format!("--time={time}"));
        }
        let path = spec.paths().agent(name).join("job.sh");
        let id = self.submit(&path, &script, args)?;
        let record = self.jobs.researchers.entry(name.to_owned()).or_default();
        record.finished = false;
        record.jobs.push(JobRecord {
            id: id.clone(),
            state: "PENDING".to_owned(),
            node: None,
        });
        self.save_jobs()?;
        Ok(id)
    }

    /// The script (its path and text) and `sbatch` arguments of `entry`'s verification
    /// job: a GPU (`verify_gres`, default `gpu:1`) when its method asks for one.
    fn verify_job(&self, entry: QueuedVerification) -> (PathBuf, String, Vec<String>) {
        let oversight = self.root.join("oversight");
        let script = format!(
            "#!/bin/sh\n# Written by `aar up --executor slurm`: the verification of entry {id}.\n\
             exec {aar} verify-worker --server {server} --token-file {token} --config {config} --entry {id}\n",
            id = entry.entry_id,
            aar = shell_quote(&self.aar_binary.display().to_string()),
            server = shell_quote(&self.server),
            token = shell_quote(&self.worker_token.display().to_string()),
            config = shell_quote(&self.worker_config.display().to_string()),
        );
        let gres = entry.gpu.then(|| {
            self.settings
                .verify_gres
                .clone()
                .unwrap_or_else(|| "gpu:1".to_owned())
        });
        let mut args = self.common_args(gres.as_ref());
        let campaign = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        args.push(format!(
            "--job-name=aar-{campaign}-verify-{}",
            entry.entry_id
        ));
        args.push(format!(
            "--output={}",
            oversight.join("slurm-%j.log").display()
        ));
        let path = oversight.join(format!("verify-{}.sh", entry.entry_id));
        (path, script, args)
    }

    /// Submits one verification job for `entry`.
    fn submit_worker(&mut self, entry: QueuedVerification) -> Result<String> {
        let (path, script, args) = self.verify_job(entry);
        let id = self.submit(&path, &script, args)?;
        self.workers
            .insert(id.clone(), (entry.entry_id, "PENDING".to_owned()));
        Ok(id)
    }

    /// The scheduler's view of `ids` (jobs it no longer knows are left out); `None`
    /// when it cannot be asked now.
    fn query(&self, ids: &[String]) -> Option<BTreeMap<String, Seen>> {
        if ids.is_empty() {
            return Some(BTreeMap::new());
        }
        let run = |ids: &str| {
            Command::new("squeue")
                .args(["--noheader", "--states=all", "--format=%i|%T|%N"])
                .arg(format!("--jobs={ids}"))
                .output()
        };
        let out = run(&ids.join(",")).ok()?;
        if out.status.success() {
            return Some(parse_squeue(&String::from_utf8_lossy(&out.stdout)));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("Invalid job id") {
            tracing::warn!(error = %err.trim(), "squeue failed; asking again at the next tick");
            return None;
        }
        // One unknown id fails the whole list: ask one by one.
        let mut seen = BTreeMap::new();
        for id in ids {
            if let Ok(out) = run(id)
                && out.status.success()
            {
                seen.extend(parse_squeue(&String::from_utf8_lossy(&out.stdout)));
            }
        }
        Some(seen)
    }

    /// Brings each researcher's job up to date; restarts the ones that ended early.
    fn check_researchers(&mut self, seen: &BTreeMap<String, Seen>) -> Result<()> {
        let names: Vec<String> = self.specs.keys().cloned().collect();
        for name in names {
            let Some(record) = self.jobs.researchers.get_mut(&name) else {
                continue;
            };
            let Some(job) = record.jobs.last_mut() else {
                continue;
            };
            if record.finished || is_terminal(&job.state) {
                continue;
            }
            match seen.get(&job.id) {
                Some(now) => {
                    job.state.clone_from(&now.state);
                    if now.node.is_some() {
                        job.node.clone_from(&now.node);
                    }
                }
                None => job.state = "LOST".to_owned(),
            }
            if !is_terminal(&job.state) {
                continue;
            }
            let (id, state) = (job.id.clone(), job.state.clone());
            self.on_researcher_job_end(&name, &id, &state)?;
        }
        self.save_jobs()
    }

    fn on_researcher_job_end(&mut self, name: &str, id: &str, state: &str) -> Result<()> {
        let finished = self
            .specs
            .get(name)
            .is_some_and(|s| s.state_dir().join(FINISHED_MARKER).is_file());
        let restarts = self
            .jobs
            .researchers
            .get(name)
            .map_or(0, |r| r.jobs.len().saturating_sub(1));
        if finished {
            tracing::info!(
                researcher = name,
                job = id,
                "researcher finished its budget"
            );
        } else if restarts < self.settings.max_restarts as usize {
            let new = self.submit_researcher(name)?;
            println!(
                "{name}: slurm job {id} ended {state} before its budget was spent; \
                 submitted again as job {new} (restart {} of at most {}), it resumes from its saved state",
                restarts + 1,
                self.settings.max_restarts
            );
            return Ok(());
        } else {
            eprintln!(
                "{name}: slurm job {id} ended {state}; {restarts} restarts already, giving up on it"
            );
        }
        if let Some(record) = self.jobs.researchers.get_mut(name) {
            record.finished = true;
        }
        Ok(())
    }

    fn mirror_ledgers(&self) {
        super::mirror_ledgers(&self.ledger, self.specs.values());
    }

    /// Submits a verification job for each queued entry that has none alive, up to
    /// `verify_jobs` at once. An entry whose job died is queued again by the server
    /// (its lease runs out) and so gets a new job here.
    fn dispatch_verifications(&mut self, work: &Work, seen: &BTreeMap<String, Seen>) -> Result<()> {
        for (id, (_, state)) in &mut self.workers {
            *state = seen
                .get(id)
                .map_or_else(|| "LOST".to_owned(), |s| s.state.clone());
        }
        self.workers.retain(|_, (_, state)| !is_terminal(state));
        for entry in &work.queued_verifications {
            if self.workers.len() >= self.settings.verify_jobs {
                break;
            }
            if self.workers.values().any(|(id, _)| *id == entry.entry_id) {
                continue;
            }
            let job = self.submit_worker(*entry)?;
            tracing::info!(job = %job, entry = entry.entry_id, gpu = entry.gpu, "verification job submitted");
        }
        Ok(())
    }

    /// Takes over a researcher's job left running by an earlier orchestrator, when it
    /// talks to the same server; returns whether it did.
    fn adopt(&mut self, name: &str, previous: &JobsFile) -> bool {
        let Some(job) = previous.researchers.get(name).and_then(|r| r.jobs.last()) else {
            return false;
        };
        let alive = self
            .query(std::slice::from_ref(&job.id))
            .and_then(|seen| seen.get(&job.id).cloned())
            .filter(|s| !is_terminal(&s.state));
        match alive {
            Some(_) if previous.server == self.server => true,
            Some(_) => {
                // It was told another server address: it cannot finish its work.
                let _ = Command::new("scancel").arg(&job.id).status();
                false
            }
            None => false,
        }
    }
}

impl Executor for SlurmExecutor {
    fn start(&mut self, researchers: &[ResearcherSpec]) -> Result<()> {
        let previous: JobsFile = std::fs::read(self.jobs_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        self.jobs = JobsFile {
            server: self.server.clone(),
            researchers: previous.researchers.clone(),
        };
        for spec in researchers {
            spec.write()?;
            self.specs.insert(spec.name.clone(), spec.clone());
        }
        for spec in researchers {
            if self.adopt(&spec.name, &previous) {
                println!("{}: taking over its running slurm job", spec.name);
                continue;
            }
            let id = self.submit_researcher(&spec.name)?;
            println!("{}: submitted as slurm job {id}", spec.name);
        }
        Ok(())
    }

    fn tick(&mut self, work: Work) -> Result<bool> {
        if self.stopped {
            return Ok(false);
        }
        let busy = self
            .specs
            .keys()
            .any(|name| self.jobs.researchers.get(name).is_some_and(|r| !r.finished));
        if self.last_poll.is_some_and(|at| at.elapsed() < POLL_EVERY) {
            return Ok(busy);
        }
        self.last_poll = Some(std::time::Instant::now());
        let mut ids: Vec<String> = self
            .jobs
            .researchers
            .values()
            .filter(|r| !r.finished)
            .filter_map(|r| r.jobs.last())
            .filter(|j| !is_terminal(&j.state))
            .map(|j| j.id.clone())
            .collect();
        ids.extend(self.workers.keys().cloned());
        let Some(seen) = self.query(&ids) else {
            return Ok(true);
        };
        self.check_researchers(&seen)?;
        self.mirror_ledgers();
        self.dispatch_verifications(&work, &seen)?;
        Ok(self
            .specs
            .keys()
            .any(|name| self.jobs.researchers.get(name).is_some_and(|r| !r.finished)))
    }

    fn stop(&mut self) {
        self.stopped = true;
        let ids: Vec<String> = self
            .jobs
            .researchers
            .values()
            .filter_map(|r| r.jobs.last())
            .filter(|j| !is_terminal(&j.state))
            .map(|j| j.id.clone())
            .chain(self.workers.keys().cloned())
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("scancel").args(&ids).status();
        }
        self.mirror_ledgers();
    }

    fn placements(&self) -> Vec<Placement> {
        self.specs
            .keys()
            .map(|name| {
                let record = self.jobs.researchers.get(name);
                let last = record.and_then(|r| r.jobs.last());
                Placement {
                    researcher: name.clone(),
                    executor: "slurm".to_owned(),
                    job: last.map(|j| j.id.clone()),
                    node: last.and_then(|j| j.node.clone()),
                    state: last.map_or_else(|| "unsubmitted".to_owned(), |j| j.state.clone()),
                    jobs: record
                        .map(|r| r.jobs.iter().map(|j| j.id.clone()).collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    fn verifies_in_process(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_parse_into_states_and_nodes() {
        let seen = parse_squeue("12|RUNNING|node1\n13|PENDING|\n 14|CANCELLED by 0|node2\nbad\n");
        assert_eq!(seen.len(), 3);
        assert_eq!(seen["12"].state, "RUNNING");
        assert_eq!(seen["12"].node.as_deref(), Some("node1"));
        assert_eq!(seen["13"].node, None);
        assert_eq!(seen["14"].state, "CANCELLED");
        assert!(is_terminal(&seen["14"].state));
        assert!(!is_terminal(&seen["13"].state));
    }

    #[test]
    fn settings_refuse_values_that_would_split_into_several_arguments() {
        let mut settings = SlurmSettings {
            partition: Some("gpu nodes".to_owned()),
            ..SlurmSettings::default()
        };
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("partition"), "{err}");
        settings.partition = Some("gpu".to_owned());
        assert!(settings.validate().is_ok());
        settings.verify_jobs = 0;
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("verify_jobs")
        );
    }

    #[test]
    fn a_settings_file_names_an_unknown_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slurm.json");
        std::fs::write(&path, r#"{"partition": "gpu", "partitoin": "x"}"#).unwrap();
        let err = SlurmSettings::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("partitoin") && err.contains("slurm.json"),
            "{err}"
        );
    }

    /// An executor as `new` makes it, without asking for `squeue` (CI has no Slurm).
    fn executor(dir: &Path, settings: SlurmSettings) -> SlurmExecutor {
        let ledger = aar_agents::accounting::Ledger::open(
            &dir.join("ledger.json"),
            aar_agents::accounting::PriceTable::default(),
            aar_agents::accounting::Budgets::default(),
        )
        .unwrap();
        SlurmExecutor {
            settings,
            server: "http://login:8700".to_owned(),
            aar_binary: PathBuf::from("/opt/aar bin/aar"),
            root: dir.join("campaigns").join("c1"),
            worker_token: dir.join("worker.token"),
            worker_config: dir.join("worker.json"),
            ledger,
            specs: BTreeMap::new(),
            jobs: JobsFile::default(),
            workers: BTreeMap::new(),
            stopped: false,
            last_poll: None,
        }
    }

    #[test]
    fn a_method_that_asks_for_a_gpu_gets_a_verification_job_with_one() {
        let dir = tempfile::tempdir().unwrap();
        let plain = executor(dir.path(), SlurmSettings::default());
        let cpu = QueuedVerification {
            entry_id: 7,
            gpu: false,
        };
        let gpu = QueuedVerification {
            entry_id: 8,
            gpu: true,
        };
        let (_, script, args) = plain.verify_job(cpu);
        assert!(!args.iter().any(|a| a.starts_with("--gres")), "{args:?}");
        assert!(
            script.contains("--entry 7\n") && script.contains("'/opt/aar bin/aar'"),
            "{script}"
        );
        assert!(
            args.contains(&"--job-name=aar-c1-verify-7".to_owned()),
            "{args:?}"
        );
        let (path, _, args) = plain.verify_job(gpu);
        assert!(args.contains(&"--gres=gpu:1".to_owned()), "{args:?}");
        assert!(path.ends_with("oversight/verify-8.sh"));
        let a100 = executor(
            dir.path(),
            SlurmSettings {
                verify_gres: Some("gpu:a100:1".to_owned()),
                partition: Some("gpu".to_owned()),
                ..SlurmSettings::default()
            },
        );
        let (_, _, args) = a100.verify_job(gpu);
        assert!(args.contains(&"--gres=gpu:a100:1".to_owned()), "{args:?}");
        assert!(args.contains(&"--partition=gpu".to_owned()), "{args:?}");
        // The researchers' own --gres is not the verification jobs'.
        let (_, _, args) = a100.verify_job(cpu);
        assert!(!args.iter().any(|a| a.starts_with("--gres")), "{args:?}");
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn placements_describe_restarts() {
        let placement = Placement {
            researcher: "researcher-1".into(),
            executor: "slurm".into(),
            job: Some("13".into()),
            node: Some("n1".into()),
            state: "RUNNING".into(),
            jobs: vec!["12".into(), "13".into()],
        };
        assert_eq!(
            placement.describe(),
            "slurm job 13 RUNNING on n1, 1 restarts"
        );
    }
}
