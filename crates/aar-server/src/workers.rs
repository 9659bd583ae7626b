//! Remote verification workers (cluster mode): entries verified as jobs on other
//! machines, which reach the server over HTTP only.
//!
//! A worker (`aar verify-worker`, authenticated by the workers' own token) claims the
//! oldest queued entry (`POST /api/verifier/claim`) and gets the job: the snapshot,
//! the seeds and the author's evaluation log, so it needs no database. The claim is a
//! lease kept in the database: the worker renews it (`.../heartbeat`) while it runs,
//! then posts the outcome or the error (`.../result`), which is stored exactly as the
//! server's own verifier's is ([`crate::verify::store_outcome`]). An entry whose
//! lease runs out (the node died, the job was killed) goes back to the queue, and is
//! failed after `Policy::verification_max_attempts` lost workers; a late result for it
//! is refused (410). The types here are the wire format both sides use.

use std::time::Duration;

use aar_store::{EntryRecord, LeasedEntry, NewLease, StoredPredictions, now_millis};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{WorkerCaller, random_hex};
use crate::error::{ApiJson, ApiPath, AppError};
use crate::tasks::TaskRegistry;
use crate::verify::{
    self, Lease, MAIN_VARIANT, PRIVATE_SPLIT, PUBLIC_SPLIT, ProbeFlag, Stored, TRANSFER_SPLIT,
    VerificationJob, VerificationOutcome,
};

/// Largest result body: every run's predictions, one character per row.
pub const RESULT_BODY_BYTES: usize = 64 << 20;
/// Longest worker description.
pub const WORKER_CHARS: usize = 200;
/// Most runs in one outcome (seeds times splits, ablations, undeclared seeds).
const MAX_RUNS: usize = 4096;
/// Most flags in one outcome.
const MAX_FLAGS: usize = 256;
/// Longest error text (the verification's, or a run's).
const ERROR_CHARS: usize = 20_000;
/// Longest flag summary.
const SUMMARY_CHARS: usize = 2_000;
/// Largest flag evidence, as JSON text.
const EVIDENCE_BYTES: usize = 256 << 10;
/// Longest variant or probe name.
const NAME_CHARS: usize = 64;
/// Most predictions of a run on a split whose size the server does not know.
const MAX_ROWS: usize = 1 << 22;
/// Seeds a run may have (the entries' own range).
const SEEDS: std::ops::RangeInclusive<i64> = 0..=1_000_000;

/// `POST /api/verifier/claim` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Free text naming the worker for the admin (node, Slurm job id); at most
    /// [`WORKER_CHARS`] characters, one line.
    pub worker: String,
    /// Only this entry (a job submitted for it, with the resources its method asks
    /// for); absent: the oldest queued entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<i64>,
}

/// `POST /api/verifier/claim` answer (200; 204 without a body when nothing is queued).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The lease's id, for the heartbeat and result paths.
    pub lease: String,
    /// How long the lease lasts without a heartbeat, in seconds.
    pub lease_seconds: f64,
    /// When it runs out unless renewed (Unix ms, the server's clock).
    pub expires_at: i64,
    /// What to verify.
    pub job: WireJob,
}

/// A [`VerificationJob`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireJob {
    /// The entry.
    pub entry_id: i64,
    /// Its author.
    pub agent_id: String,
    /// The task.
    pub task: String,
    /// The declared seeds.
    pub seeds: Vec<i64>,
    /// The snapshot.
    pub snapshot_id: String,
    /// The snapshot's `.tar.gz`, base64 (standard alphabet, padded).
    pub archive: String,
    /// The author's evaluations of the task, oldest first.
    pub evaluation_log: Vec<WireEvaluation>,
}

/// One of the author's evaluations: its public predictions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvaluation {
    /// The evaluation's id.
    pub evaluation_id: i64,
    /// When it was made (Unix ms).
    pub created_at: i64,
    /// One `0` or `1` per public test row, in file order.
    pub predictions: String,
}

/// Heartbeat answer: the lease's new end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRenewal {
    /// The lease.
    pub lease: String,
    /// How long it lasts from now without a further heartbeat, in seconds.
    pub lease_seconds: f64,
    /// When it runs out unless renewed again (Unix ms).
    pub expires_at: i64,
}

/// `POST /api/verifier/leases/{lease}/result` body: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResultRequest {
    /// The runs and flags of a finished verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<WireOutcome>,
    /// Why the entry could not be verified (stored as its failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A [`VerificationOutcome`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireOutcome {
    /// Every scored split of every run.
    pub runs: Vec<WireRun>,
    /// What the probes raised.
    pub flags: Vec<WireFlag>,
}

/// An `aar_store::VerificationRun` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRun {
    /// The entry (must be the leased one).
    pub entry_id: i64,
    /// Training seed.
    pub seed: i64,
    /// `main`, an ablation or `undeclared_seed`.
    pub variant: String,
    /// `test`, `test_private` or `transfer`.
    pub split: String,
    /// Exact accuracy (`None`: the run failed).
    pub accuracy: Option<f64>,
    /// Why the run failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Wall time, in seconds.
    pub seconds: f64,
    /// One `0` or `1` per row of the split, when the run was scored.
    #[serde(default)]
    pub predictions: Option<String>,
}

/// A [`ProbeFlag`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFlag {
    /// The probe.
    pub probe: String,
    /// One line for a person.
    pub summary: String,
    /// The evidence.
    pub evidence: Value,
    /// Whether it is about the author's conduct rather than this entry.
    pub about_agent: bool,
}

/// A field of a wire message that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Its path, e.g. `outcome.runs[3].seed`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Predictions as `0`/`1` characters.
fn to_digits(predictions: &[u8]) -> String {
    predictions
        .iter()
        .map(|&p| if p != 0 { '1' } else { '0' })
        .collect()
}

/// `0`/`1` characters as predictions; `None` on any other character.
fn from_digits(text: &str) -> Option<Vec<u8>> {
    text.bytes()
        .map(|b| match b {
            b'0' => Some(0),
            b'1' => Some(1),
            _ => None,
        })
        .collect()
}

impl WireJob {
    /// The wire form of `job`; a job without an evaluation log sends an empty one.
    pub fn from_job(job: &VerificationJob) -> WireJob {
        let log = job.evaluation_log.as_deref().unwrap_or_default();
        WireJob {
            entry_id: job.entry_id,
            agent_id: job.agent_id.clone(),
            task: job.task.clone(),
            seeds: job.seeds.clone(),
            snapshot_id: job.snapshot_id.clone(),
            archive: base64::engine::general_purpose::STANDARD.encode(&job.archive),
            evaluation_log: log
                .iter()
                .map(|e| WireEvaluation {
                    evaluation_id: e.evaluation_id,
                    created_at: e.created_at,
                    predictions: to_digits(&e.predictions),
                })
                .collect(),
        }
    }

    /// The job, with its evaluation log (`Some`, possibly empty).
    pub fn into_job(self) -> Result<VerificationJob, FieldError> {
        let archive = base64::engine::general_purpose::STANDARD
            .decode(self.archive.as_bytes())
            .map_err(|e| field_error("job.archive", format!("not base64: {e}")))?;
        let log = self
            .evaluation_log
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let predictions = from_digits(&e.predictions).ok_or_else(|| {
                    field_error(
                        format!("job.evaluation_log[{i}].predictions"),
                        "only 0 and 1",
                    )
                })?;
                Ok(StoredPredictions {
                    evaluation_id: e.evaluation_id,
                    created_at: e.created_at,
                    predictions,
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        Ok(VerificationJob {
            entry_id: self.entry_id,
            agent_id: self.agent_id,
            task: self.task,
            seeds: self.seeds,
            snapshot_id: self.snapshot_id,
            archive,
            evaluation_log: Some(log),
        })
    }
}

impl ResultRequest {
    /// The body for a finished verification.
    pub fn from_outcome(outcome: &VerificationOutcome) -> ResultRequest {
        let runs = outcome
            .runs
            .iter()
            .map(|r| WireRun {
                entry_id: r.entry_id,
                seed: r.seed,
                variant: r.variant.clone(),
                split: r.split.clone(),
                accuracy: r.accuracy,
                error: r.error.clone(),
                seconds: r.seconds,
                predictions: r.predictions.as_deref().map(to_digits),
            })
            .collect();
        let flags = outcome
            .flags
            .iter()
            .map(|f| WireFlag {
                probe: f.probe.clone(),
                summary: f.summary.clone(),
                evidence: f.evidence.clone(),
                about_agent: f.about_agent,
            })
            .collect();
        ResultRequest {
            outcome: Some(WireOutcome { runs, flags }),
            error: None,
        }
    }

    /// The body for an entry that could not be verified.
    pub fn from_error(error: impl Into<String>) -> ResultRequest {
        ResultRequest {
            outcome: None,
            error: Some(error.into()),
        }
    }

    /// What to store for `entry`: the checked outcome, or the error; `Err` names the
    /// field that is missing, out of bounds or not about this entry.
    pub fn into_outcome(
        self,
        entry: &EntryRecord,
        tasks: &TaskRegistry,
    ) -> Result<Result<VerificationOutcome, String>, FieldError> {
        match (self.outcome, self.error) {
            (Some(outcome), None) => Ok(Ok(outcome.checked(entry, tasks)?)),
            (None, Some(error)) => {
                check_len("error", &error, 1, ERROR_CHARS)?;
                Ok(Err(error))
            }
            (None, None) => Err(field_error("outcome", "give an outcome or an error")),
            (Some(_), Some(_)) => Err(field_error(
                "error",
                "give an outcome or an error, not both",
            )),
        }
    }
}

fn check_len(field: &str, text: &str, min: usize, max: usize) -> Result<(), FieldError> {
    let n = text.chars().count();
    if n < min || n > max {
        return Err(field_error(
            field,
            format!("{n} characters; expected {min} to {max}"),
        ));
    }
    Ok(())
}

/// A variant or probe name: lower-case letters, digits and `_`.
fn check_name(field: &str, name: &str) -> Result<(), FieldError> {
    check_len(field, name, 1, NAME_CHARS)?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(field_error(field, "only a-z, 0-9 and _"));
    }
    Ok(())
}

impl WireOutcome {
    fn checked(
        self,
        entry: &EntryRecord,
        tasks: &TaskRegistry,
    ) -> Result<VerificationOutcome, FieldError> {
        if self.runs.len() > MAX_RUNS {
            return Err(field_error(
                "outcome.runs",
                format!("{} runs; at most {MAX_RUNS}", self.runs.len()),
            ));
        }
        if self.flags.len() > MAX_FLAGS {
            return Err(field_error(
                "outcome.flags",
                format!("{} flags; at most {MAX_FLAGS}", self.flags.len()),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut runs = Vec::with_capacity(self.runs.len());
        for (i, run) in self.runs.into_iter().enumerate() {
            let at = format!("outcome.runs[{i}]");
            let run = run.checked(&at, entry, tasks)?;
            if !seen.insert((run.seed, run.variant.clone(), run.split.clone())) {
                return Err(field_error(
                    at,
                    format!(
                        "a second run of seed {}, variant {}, split {}",
                        run.seed, run.variant, run.split
                    ),
                ));
            }
            runs.push(run);
        }
        let flags = self
            .flags
            .into_iter()
            .enumerate()
            .map(|(i, f)| f.checked(&format!("outcome.flags[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VerificationOutcome { runs, flags })
    }
}

impl WireRun {
    fn checked(
        self,
        at: &str,
        entry: &EntryRecord,
        tasks: &TaskRegistry,
    ) -> Result<aar_store::VerificationRun, FieldError> {
        let field = |name: &str| format!("{at}.{name}");
        if self.entry_id != entry.id {
            return Err(field_error(
                field("entry_id"),
                format!("the lease is for entry {}", entry.id),
            ));
        }
        if !SEEDS.contains(&self.seed) {
            return Err(field_error(field("seed"), "outside 0..=1000000"));
        }
        check_name(&field("variant"), &self.variant)?;
        if self.variant == MAIN_VARIANT && !entry.seeds.contains(&self.seed) {
            return Err(field_error(
                field("seed"),
                format!("the entry declares seeds {:?}", entry.seeds),
            ));
        }
        if ![PUBLIC_SPLIT, PRIVATE_SPLIT, TRANSFER_SPLIT].contains(&self.split.as_str()) {
            return Err(field_error(
                field("split"),
                format!("one of {PUBLIC_SPLIT}, {PRIVATE_SPLIT}, {TRANSFER_SPLIT}"),
            ));
        }
        if self
            .accuracy
            .is_some_and(|a| !a.is_finite() || !(0.0..=1.0).contains(&a))
        {
            return Err(field_error(field("accuracy"), "outside [0, 1]"));
        }
        if !self.seconds.is_finite() || self.seconds < 0.0 {
            return Err(field_error(
                field("seconds"),
                "not a finite, non-negative number",
            ));
        }
        if let Some(error) = &self.error {
            check_len(&field("error"), error, 0, ERROR_CHARS)?;
        }
        let predictions = self.predictions_checked(&field("predictions"), entry, tasks)?;
        Ok(aar_store::VerificationRun {
            entry_id: self.entry_id,
            seed: self.seed,
            variant: self.variant,
            split: self.split,
            accuracy: self.accuracy,
            error: self.error,
            seconds: self.seconds,
            predictions,
        })
    }

    /// The run's predictions: `0`/`1` only, one per row of the split, and only on a
    /// scored run (the server scores them row by row against its labels).
    fn predictions_checked(
        &self,
        field: &str,
        entry: &EntryRecord,
        tasks: &TaskRegistry,
    ) -> Result<Option<Vec<u8>>, FieldError> {
        let Some(text) = &self.predictions else {
            return Ok(None);
        };
        if self.accuracy.is_none() {
            return Err(field_error(field, "given for a run without an accuracy"));
        }
        let rows = tasks.labels(&entry.task, &self.split).map(<[_]>::len);
        let len = text.len();
        if rows.is_some_and(|n| n != len) || len > MAX_ROWS {
            let expected = rows.map_or(format!("at most {MAX_ROWS}"), |n| n.to_string());
            return Err(field_error(
                field,
                format!("{len} predictions; the split has {expected} rows"),
            ));
        }
        from_digits(text)
            .map(Some)
            .ok_or_else(|| field_error(field, "only 0 and 1"))
    }
}

impl WireFlag {
    fn checked(self, at: &str) -> Result<ProbeFlag, FieldError> {
        check_name(&format!("{at}.probe"), &self.probe)?;
        check_len(&format!("{at}.summary"), &self.summary, 1, SUMMARY_CHARS)?;
        if self.evidence.to_string().len() > EVIDENCE_BYTES {
            return Err(field_error(
                format!("{at}.evidence"),
                format!("more than {EVIDENCE_BYTES} bytes of JSON"),
            ));
        }
        Ok(ProbeFlag {
            probe: self.probe,
            summary: self.summary,
            evidence: self.evidence,
            about_agent: self.about_agent,
        })
    }
}

// ---------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------

fn lease_gone() -> AppError {
    AppError::new(
        StatusCode::GONE,
        "lease_gone",
        "this lease is unknown, finished or ran out (the entry went back to the queue)",
    )
}

fn bad_result(e: FieldError) -> AppError {
    AppError::bad_request("bad_result", e.to_string())
}

fn lease_millis(state: &AppState) -> i64 {
    i64::try_from(state.policy().verification_lease.as_millis()).unwrap_or(i64::MAX)
}

fn lease_seconds(state: &AppState) -> f64 {
    state.policy().verification_lease.as_secs_f64()
}

/// The worker's description: one line of at most [`WORKER_CHARS`] characters.
fn check_worker(worker: &str) -> Result<(), AppError> {
    let n = worker.chars().count();
    if n == 0 || n > WORKER_CHARS {
        return Err(AppError::bad_request(
            "bad_worker",
            format!("worker: {n} characters; expected 1 to {WORKER_CHARS}"),
        ));
    }
    if worker.chars().any(char::is_control) {
        return Err(AppError::bad_request(
            "bad_worker",
            "worker: one line of text, without control characters",
        ));
    }
    Ok(())
}

/// `POST /api/verifier/claim`: the oldest queued entry under a fresh lease, or 204.
pub async fn claim(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Response, AppError> {
    check_worker(&req.worker)?;
    loop {
        let Some(leased) = claim_next(&state, &req.worker, req.entry_id).await? else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        state.notify_change();
        let lease = Lease {
            lease_id: &leased.lease.lease_id,
            worker: &leased.lease.worker,
        };
        match verify::load_job(&state, &leased.entry).await? {
            Ok(mut job) => {
                let log = state
                    .store()
                    .evaluation_predictions(&job.agent_id, &job.task)
                    .await?;
                job.evaluation_log = Some(log);
                let answer = Claim {
                    lease: leased.lease.lease_id.clone(),
                    lease_seconds: lease_seconds(&state),
                    expires_at: leased.lease.expires_at,
                    job: WireJob::from_job(&job),
                };
                return Ok(Json(answer).into_response());
            }
            // Nothing to run (no snapshot): failed here, as the server's verifier would.
            Err(why) => {
                verify::store_outcome(&state, &leased.entry, Err(why), 0.0, Some(lease)).await?;
            }
        }
    }
}

/// Claims the oldest queued entry (or `entry_id`, when it is queued) under a new
/// lease, with its audit line.
async fn claim_next(
    state: &AppState,
    worker: &str,
    entry_id: Option<i64>,
) -> Result<Option<LeasedEntry>, AppError> {
    let now = now_millis();
    let lease = NewLease {
        lease_id: random_hex(16)?,
        worker: worker.to_owned(),
        now,
        expires_at: now.saturating_add(lease_millis(state)),
        entry_id,
    };
    let mut tx = state.store().begin_write().await?;
    let Some(leased) = tx.claim_verification(&lease).await? else {
        return Ok(None);
    };
    let detail = json!({
        "entry_id": leased.entry.id, "worker": worker, "attempt": leased.lease.attempts,
    });
    tx.append_audit("verifier", "verification_claimed", &detail.to_string());
    tx.commit().await?;
    Ok(Some(leased))
}

/// `POST /api/verifier/leases/{lease}/heartbeat`: renews a current lease; 410 otherwise.
pub async fn heartbeat(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease): ApiPath<String>,
) -> Result<Json<LeaseRenewal>, AppError> {
    let now = now_millis();
    let expires_at = now.saturating_add(lease_millis(&state));
    let mut tx = state.store().begin_write().await?;
    if !tx.extend_lease(&lease, now, expires_at).await? {
        return Err(lease_gone());
    }
    tx.commit().await?;
    Ok(Json(LeaseRenewal {
        lease,
        lease_seconds: lease_seconds(&state),
        expires_at,
    }))
}

/// `POST /api/verifier/leases/{lease}/result`: stores the outcome or the error of a
/// current lease as the server's own verifier would (then the Ladder release); 410
/// when the lease is not current, 400 naming the field of a bad body.
pub async fn result(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease): ApiPath<String>,
    ApiJson(body): ApiJson<ResultRequest>,
) -> Result<Json<Value>, AppError> {
    let now = now_millis();
    let leased = state
        .store()
        .current_lease(&lease, now)
        .await?
        .ok_or_else(lease_gone)?;
    let entry = &leased.entry;
    let outcome = body
        .into_outcome(entry, state.tasks())
        .map_err(bad_result)?;
    let seconds = now.saturating_sub(leased.lease.started_at).max(0) as f64 / 1000.0;
    let held = Lease {
        lease_id: &lease,
        worker: &leased.lease.worker,
    };
    match verify::store_outcome(&state, entry, outcome, seconds, Some(held)).await? {
        Stored::Done => {
            state.notify_change();
            let stored = state.store().entry(entry.id).await?;
            let verification = stored.map(|e| e.verification.as_str());
            Ok(Json(
                json!({ "entry_id": entry.id, "verification": verification }),
            ))
        }
        Stored::LeaseGone => Err(lease_gone()),
    }
}

/// `POST /api/verifier/leases/{lease}/release`: a stopping worker gives its entry back
/// (queued again at once, the attempt not counted); 410 when the lease is not current.
pub async fn release(
    State(state): State<AppState>,
    _worker: WorkerCaller,
    ApiPath(lease): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let mut tx = state.store().begin_write().await?;
    let Some(entry_id) = tx.release_lease(&lease, now_millis()).await? else {
        return Err(lease_gone());
    };
    let detail = json!({ "entry_id": entry_id });
    tx.append_audit("verifier", "verification_released", &detail.to_string());
    tx.commit().await?;
    state.notify_change();
    state.wake_verifier();
    Ok(Json(
        json!({ "entry_id": entry_id, "verification": "queued" }),
    ))
}

// ---------------------------------------------------------------------------
// Lease expiry.
// ---------------------------------------------------------------------------

/// Re-queues entries whose lease ran out, and fails those that lost their worker
/// `verification_max_attempts` times. Runs while remote workers are enabled. With
/// no verifier of its own (`resume`), the server first puts entries a stopped
/// server's verifier left running back in the queue, and releases entries scored
/// before a restart (the server's own verification loop does both otherwise).
pub(crate) async fn lease_loop(state: AppState, resume: bool) {
    if resume && let Err(e) = resume_unfinished(&state).await {
        tracing::warn!(error = ?e.body(), "cannot resume unfinished verifications");
    }
    let tick = (state.policy().verification_lease / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = expire_leases(&state).await {
            tracing::warn!(error = ?e.body(), "lease expiry failed; retrying");
        }
    }
}

async fn resume_unfinished(state: &AppState) -> Result<(), AppError> {
    let mut tx = state.store().begin_write().await?;
    let requeued = tx.requeue_unleased_runs().await?;
    tx.commit().await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "entries left running by a stopped verifier are queued again"
        );
    }
    for entry in state.store().pending_verifications().await? {
        if entry.verification == aar_store::VerificationState::Scored {
            verify::finish_scored(state, &entry).await?;
        }
    }
    Ok(())
}

/// One pass: every lease that ran out, re-queued or failed in one transaction.
async fn expire_leases(state: &AppState) -> Result<(), AppError> {
    let now = now_millis();
    // Read first, so that a pass with nothing to do takes no write lock.
    if state.store().expired_leases(now).await?.is_empty() {
        return Ok(());
    }
    let max_attempts = i64::from(state.policy().verification_max_attempts.max(1));
    let mut tx = state.store().begin_write().await?;
    for leased in tx.expired_leases(now).await? {
        let (entry, lease) = (&leased.entry, &leased.lease);
        if lease.attempts >= max_attempts {
            let why = format!(
                "verification lost its worker {} times (last: {})",
                lease.attempts, lease.worker
            );
            let seconds = now.saturating_sub(lease.started_at).max(0) as f64 / 1000.0;
            verify::write_outcome(&mut tx, entry, Err(why), seconds, Some(&lease.worker)).await?;
        } else {
            tx.requeue_lease(&lease.lease_id).await?;
            let detail = json!({
                "entry_id": entry.id, "worker": lease.worker, "attempt": lease.attempts,
            });
            tx.append_audit("verifier", "verification_requeued", &detail.to_string());
        }
        tracing::warn!(entry_id = entry.id, worker = %lease.worker, attempt = lease.attempts, "a verification worker's lease ran out");
    }
    tx.commit().await?;
    state.notify_change();
    state.wake_verifier();
    Ok(())
}
