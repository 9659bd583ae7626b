//! Verified entries: the server's side of the verifier.
//!
//! An entry names a code-store snapshot and its seeds; the server queues it (in
//! the database, so the queue survives a restart), hands it to a [`Verifier`]
//! (the oversight crate: fresh sandboxes, label-free copies of the public test,
//! the private test and the transfer set, the probes) with bounded concurrency,
//! and stores what comes back. Only these runs reach the leaderboard. The
//! entry's mean public accuracy then goes through its author's Ladder: the
//! author (and everyone else) sees it only if the Ladder releases it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use aar_core::metrics::MeanSe;
use aar_store::{
    EntryRecord, NewFlag, StoredPredictions, VerificationResult, VerificationRun,
    VerificationState, WriteTx, now_millis,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

use crate::AppState;

/// Split names of verification runs.
pub const PUBLIC_SPLIT: &str = "test";
/// The private test split.
pub const PRIVATE_SPLIT: &str = "test_private";
/// The task's transfer set.
pub const TRANSFER_SPLIT: &str = "transfer";
/// The method as submitted (the other variants are probes).
pub const MAIN_VARIANT: &str = "main";

/// One entry to verify.
#[derive(Debug, Clone)]
pub struct VerificationJob {
    /// The entry.
    pub entry_id: i64,
    /// Its author.
    pub agent_id: String,
    /// The task it was made for.
    pub task: String,
    /// The declared seeds.
    pub seeds: Vec<i64>,
    /// The snapshot the method is.
    pub snapshot_id: String,
    /// The snapshot's archive (`.tar.gz`).
    pub archive: Vec<u8>,
    /// The author's evaluations of the task (its public predictions), for the probes
    /// that read them; `None`: the verifier reads them from its own store (the server's
    /// own verifier), `Some`: the server sent them (a remote worker has no database).
    pub evaluation_log: Option<Vec<StoredPredictions>>,
}

/// A probe's finding about the entry or its author.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFlag {
    /// The probe (`teacher_ablation`, `decoy_labels`, `execution`, `oracle_probing`,
    /// `overfitting`, `cherry_picking`).
    pub probe: String,
    /// One line for a person.
    pub summary: String,
    /// The evidence.
    pub evidence: Value,
    /// Whether it is about the author's conduct rather than this entry.
    pub about_agent: bool,
}

/// What a verification produced.
#[derive(Debug, Clone, Default)]
pub struct VerificationOutcome {
    /// Every scored split of every run (exact accuracies: never shown to agents).
    pub runs: Vec<VerificationRun>,
    /// What the probes raised.
    pub flags: Vec<ProbeFlag>,
}

/// A boxed future, as the verifier returns it.
pub type VerifyFuture = Pin<Box<dyn Future<Output = Result<VerificationOutcome, String>> + Send>>;

/// Runs entries' methods and scores them; implemented by `aar-oversight`.
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// Checks a snapshot before an entry is accepted (a method manifest, valid);
    /// returns the method's name, or what is wrong for the agent to fix.
    fn check_snapshot(&self, archive: &[u8]) -> Result<String, String>;
    /// Runs and scores one entry (in sandboxes), then probes it.
    fn verify(&self, job: VerificationJob) -> VerifyFuture;
}

/// A verifier and how many entries it may run at once.
#[derive(Debug, Clone)]
pub struct VerifierHandle {
    /// The verifier.
    pub verifier: Arc<dyn Verifier>,
    /// Entries verified at once (each run is a sandboxed training process: keep this
    /// below the number of cores so evaluations keep theirs). 0: this server only checks
    /// snapshots when entries are made and runs none itself; remote workers verify them
    /// (cluster mode, `ServerConfig::verify_workers`).
    pub concurrency: usize,
}

impl PartialEq for VerifierHandle {
    fn eq(&self, other: &VerifierHandle) -> bool {
        Arc::ptr_eq(&self.verifier, &other.verifier) && self.concurrency == other.concurrency
    }
}

/// Wakes the verification loop when an entry is queued.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub(crate) wake: Notify,
}

/// The loop that drains the queue: on start it picks up what a previous run left
/// queued or running, then waits for new entries. An entry a remote worker holds
/// under a lease is left to it (see [`WriteTx::claim_local`]).
pub(crate) async fn verification_loop(state: AppState, handle: VerifierHandle, queue: Arc<Queue>) {
    let permits = Arc::new(Semaphore::new(handle.concurrency.max(1)));
    let mut started: std::collections::HashSet<i64> = std::collections::HashSet::new();
    loop {
        match state.store().pending_verifications().await {
            Ok(pending) => {
                for entry in pending {
                    if started.contains(&entry.id) {
                        continue;
                    }
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    match claim_local(&state, &entry).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(entry_id = entry.id, error = ?e.body(), "verification queue: cannot claim; retrying");
                            continue;
                        }
                    }
                    started.insert(entry.id);
                    let state = state.clone();
                    let verifier = handle.verifier.clone();
                    tokio::spawn(async move {
                        verify_entry(&state, verifier.as_ref(), entry).await;
                        drop(permit);
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "verification queue: cannot read; retrying"),
        }
        // Wake on a new entry, or every few seconds in case another process queued one.
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), queue.wake.notified()).await;
    }
}

/// Takes `entry` for this server's verifier; false when a remote worker holds it or it
/// is done. A scored entry only needs its Ladder release, which nothing else does.
async fn claim_local(state: &AppState, entry: &EntryRecord) -> Result<bool, crate::AppError> {
    if entry.verification == VerificationState::Scored {
        return Ok(true);
    }
    let mut tx = state.store().begin_write().await?;
    let claimed = tx.claim_local(entry.id, now_millis()).await?;
    tx.commit().await?;
    Ok(claimed)
}

async fn verify_entry(state: &AppState, verifier: &dyn Verifier, entry: EntryRecord) {
    let started = Instant::now();
    let entry_id = entry.id;
    let outcome = run_verification(state, verifier, entry, started).await;
    state.notify_change();
    match outcome {
        Ok(()) => {
            tracing::info!(
                entry_id,
                seconds = started.elapsed().as_secs_f64(),
                "verification done (verified, or failed with its error stored)"
            )
        }
        Err(e) => tracing::error!(entry_id, error = ?e.body(), "verification could not be stored"),
    }
}

/// Runs a claimed entry here and stores what comes back.
async fn run_verification(
    state: &AppState,
    verifier: &dyn Verifier,
    entry: EntryRecord,
    started: Instant,
) -> Result<(), crate::AppError> {
    // Scored before a restart: only the Ladder release is left to do.
    if entry.verification == VerificationState::Scored {
        return finish_scored(state, &entry).await;
    }
    let outcome = match load_job(state, &entry).await? {
        Ok(job) => verifier.verify(job).await,
        Err(why) => Err(why),
    };
    let seconds = started.elapsed().as_secs_f64();
    store_outcome(state, &entry, outcome, seconds, None).await?;
    Ok(())
}

/// Releases an entry whose runs were stored before the server stopped.
pub(crate) async fn finish_scored(
    state: &AppState,
    entry: &EntryRecord,
) -> Result<(), crate::AppError> {
    let runs = state.store().verification_runs(entry.id).await?;
    release(state, entry, &runs).await
}

/// The lease a remote worker's outcome came under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease<'a> {
    /// The lease's id.
    pub(crate) lease_id: &'a str,
    /// The worker's own description; it goes into the audit line.
    pub(crate) worker: &'a str,
}

/// Whether an outcome was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Stored (and released through the Ladder when scored).
    Done,
    /// The lease it came under is no longer current: nothing was stored.
    LeaseGone,
}

/// Stores a finished verification, whoever ran it: the runs and flags (or the error)
/// and the audit line in one transaction, then the Ladder release. With a lease, the
/// lease must still be current in that same transaction (a lease that ran out has put
/// the entry back in the queue, so a late result must not land).
pub(crate) async fn store_outcome(
    state: &AppState,
    entry: &EntryRecord,
    outcome: Result<VerificationOutcome, String>,
    seconds: f64,
    lease: Option<Lease<'_>>,
) -> Result<Stored, crate::AppError> {
    let mut tx = state.store().begin_write().await?;
    if let Some(lease) = lease {
        let current = tx.current_lease(lease.lease_id, now_millis()).await?;
        if current.is_none_or(|held| held.entry.id != entry.id) {
            return Ok(Stored::LeaseGone);
        }
    }
    let worker = lease.map(|l| l.worker);
    let result = write_outcome(&mut tx, entry, outcome, seconds, worker).await?;
    tx.commit().await?;
    if result.state == VerificationState::Scored {
        release(state, entry, &result.runs).await?;
    }
    Ok(Stored::Done)
}

/// Writes a finished verification and its audit line in `tx` (not committed).
pub(crate) async fn write_outcome(
    tx: &mut WriteTx,
    entry: &EntryRecord,
    outcome: Result<VerificationOutcome, String>,
    seconds: f64,
    worker: Option<&str>,
) -> Result<VerificationResult, crate::AppError> {
    let result = verification_result(entry, outcome, seconds);
    tx.record_verification(&result).await?;
    let mut detail = json!({
        "entry_id": entry.id, "state": result.state.as_str(), "runs": result.runs.len(),
        "flags": result.flags.iter().map(|f| f.probe.as_str()).collect::<Vec<_>>(),
        "seconds": seconds,
    });
    if let Some(worker) = worker {
        detail["worker"] = json!(worker);
    }
    tx.append_audit("verifier", "verify_entry", &detail.to_string());
    Ok(result)
}

fn verification_result(
    entry: &EntryRecord,
    outcome: Result<VerificationOutcome, String>,
    seconds: f64,
) -> VerificationResult {
    match outcome {
        Ok(outcome) => VerificationResult {
            entry_id: entry.id,
            state: VerificationState::Scored,
            error: None,
            flags: outcome
                .flags
                .iter()
                .map(|f| to_new_flag(entry, f))
                .collect(),
            runs: outcome.runs,
            released_accuracy: None,
            at: now_millis(),
            seconds,
        },
        Err(error) => VerificationResult {
            entry_id: entry.id,
            state: VerificationState::Failed,
            error: Some(error),
            runs: Vec::new(),
            flags: Vec::new(),
            released_accuracy: None,
            at: now_millis(),
            seconds,
        },
    }
}

/// The job for an entry, or why it cannot be run (stored as the failure). The
/// author's evaluation log is left to the verifier (`evaluation_log: None`).
pub(crate) async fn load_job(
    state: &AppState,
    entry: &EntryRecord,
) -> Result<Result<VerificationJob, String>, crate::AppError> {
    let Some(snapshot_id) = entry.snapshot_id.clone() else {
        return Ok(Err("the entry names no snapshot".to_owned()));
    };
    let Some(archive) = state.store().snapshot_archive(&snapshot_id).await? else {
        return Ok(Err(format!("snapshot {snapshot_id} is not in the store")));
    };
    Ok(Ok(VerificationJob {
        entry_id: entry.id,
        agent_id: entry.agent_id.clone(),
        task: entry.task.clone(),
        seeds: entry.seeds.clone(),
        snapshot_id,
        archive,
        evaluation_log: None,
    }))
}

fn to_new_flag(entry: &EntryRecord, flag: &ProbeFlag) -> NewFlag {
    NewFlag {
        entry_id: (!flag.about_agent).then_some(entry.id),
        agent_id: entry.agent_id.clone(),
        probe: flag.probe.clone(),
        summary: flag.summary.clone(),
        evidence: flag.evidence.to_string(),
    }
}

/// Exact accuracies of the declared seeds' main runs on one split; `None` unless
/// every declared seed has one (a failed seed leaves the split unscored).
pub fn split_accuracies(
    entry: &EntryRecord,
    runs: &[VerificationRun],
    split: &str,
) -> Option<Vec<f64>> {
    let by_seed: BTreeMap<i64, f64> = runs
        .iter()
        .filter(|r| r.entry_id == entry.id && r.variant == MAIN_VARIANT && r.split == split)
        .filter_map(|r| r.accuracy.map(|a| (r.seed, a)))
        .collect();
    entry
        .seeds
        .iter()
        .map(|s| by_seed.get(s).copied())
        .collect()
}

/// The entry's mean public accuracy through its author's Ladder; the writer stores
/// what it released on the entry (and marks it verified) in the Ladder's own
/// transaction. An entry whose public split is unscored releases nothing.
async fn release(
    state: &AppState,
    entry: &EntryRecord,
    runs: &[VerificationRun],
) -> Result<(), crate::AppError> {
    let task = state.tasks().get(&entry.task);
    let mean = split_accuracies(entry, runs, PUBLIC_SPLIT)
        .and_then(|public| MeanSe::from_values(&public).ok());
    match (task, mean) {
        (Some(task), Some(mean)) => {
            state
                .evaluation_writer()
                .release_entry(&entry.agent_id, task, mean.mean, Some(entry.id))
                .await?;
        }
        _ => {
            let mut tx = state.store().begin_write().await?;
            tx.set_entry_release(entry.id, None).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}
