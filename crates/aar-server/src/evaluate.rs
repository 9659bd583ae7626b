//! Evaluation: score predictions, answer through the Ladder, enforce budgets,
//! deduplicate, store and audit.
//!
//! Handlers score on their own task (CPU only) and hand the result to one
//! writer task, which commits a batch of evaluations per transaction (group
//! commit: one fsync for many requests) and answers each request only after
//! its commit. The single writer also makes budget checks race-free.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use aar_core::Label;
use aar_core::metrics::accuracy;
use aar_store::{
    AgentRecord, EntryStatus, EvaluationRecord, NewEvaluation, Store, StoreError, WriteTx,
    now_millis,
};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AgentCaller, Caller};
use crate::error::{ApiJson, ApiPath, AppError};
use crate::ladder::{LadderConfig, ladder_answer};
use crate::tasks::ServerTask;
use crate::{AppState, Budgets};

/// `POST /api/evaluate`: predictions for a task's public test split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// Task name.
    pub task: String,
    /// One class index (0 or 1) per public test example, in file order.
    pub predictions: Vec<u8>,
    /// Predictions for the private split's inputs (when the task has one and the
    /// agent was given its unlabeled inputs). Scored and stored, never returned.
    #[serde(default)]
    pub private_predictions: Option<Vec<u8>>,
    /// Leaderboard entry this evaluation counts for (with `seed`).
    #[serde(default)]
    pub entry_id: Option<i64>,
    /// Seed of that entry; must be one it declared, evaluated once.
    #[serde(default)]
    pub seed: Option<i64>,
}

/// What an agent learns from an evaluation: the Ladder's answer and its budget, nothing per example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvaluateResponse {
    /// Id of the stored evaluation (link it from a finding).
    pub evaluation_id: i64,
    /// Task name.
    pub task: String,
    /// Always `test`: the only split agents can be scored on.
    pub split: String,
    /// Best accuracy released to this agent on this task so far, rounded (Ladder); `null` before one clears the bar.
    pub released_accuracy: Option<f64>,
    /// PGR of `released_accuracy` against the task's fixed baselines.
    pub released_pgr: Option<f64>,
    /// Whether this submission raised the released best.
    pub improved: bool,
    /// Entry and seed this evaluation was recorded for.
    pub entry_id: Option<i64>,
    /// Seed.
    pub seed: Option<i64>,
    /// Evaluations this agent may still make in the current hour.
    pub remaining_this_hour: i64,
    /// Evaluations this agent may still make in all.
    pub remaining_total: i64,
    /// True when this answer repeats a stored one for an identical submission (no budget used).
    #[serde(default)]
    pub deduplicated: bool,
    /// How to read the answer.
    pub note: String,
}

const NOTE: &str = "Ladder answer: the best accuracy released to you on this task, rounded; \
                    it changes only when a submission beats it by a significant margin.";

/// A scored submission on its way to the writer.
struct Job {
    agent_id: String,
    task: Arc<ServerTask>,
    predictions_hash: String,
    n_predictions: i64,
    public_accuracy: f64,
    private_accuracy: Option<f64>,
    entry_seed: Option<(i64, i64)>,
    reply: oneshot::Sender<Result<EvaluateResponse, AppError>>,
}

/// Handle on the writer task.
#[derive(Debug, Clone)]
pub struct EvaluationWriter {
    sender: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("agent_id", &self.agent_id)
            .field("task", &self.task.name)
            .finish()
    }
}

/// Most evaluations committed in one transaction.
const MAX_BATCH: usize = 128;

impl EvaluationWriter {
    /// Spawns the writer task on the current runtime.
    pub fn spawn(store: Store, budgets: Budgets, ladder: LadderConfig) -> EvaluationWriter {
        let (sender, receiver) = mpsc::channel(1024);
        tokio::spawn(writer_loop(store, budgets, ladder, receiver));
        EvaluationWriter { sender }
    }
}

/// Evaluations stored for one agent or for the whole campaign.
#[derive(Debug, Default)]
struct Usage {
    total: i64,
    /// Times (Unix ms) of the evaluations of the last hour, oldest first.
    recent: VecDeque<i64>,
}

impl Usage {
    fn loaded((total, recent): (i64, Vec<i64>)) -> Usage {
        Usage {
            total,
            recent: recent.into(),
        }
    }

    /// Evaluations since `since`, dropping older ones.
    fn since(&mut self, since: i64) -> i64 {
        while self.recent.front().is_some_and(|&t| t < since) {
            self.recent.pop_front();
        }
        self.recent.len() as i64
    }

    fn record(&mut self, at: i64) {
        self.total += 1;
        self.recent.push_back(at);
    }
}

/// What the writer knows of the stored evaluations, so that budgets and the
/// Ladder cost no query per request. Only the writer inserts evaluations and
/// Ladder rows, so the cache is exact while the database's largest evaluation
/// id is `last_id`; when another process sharing the database (PostgreSQL)
/// has written, or a batch failed, it is rebuilt from the database.
#[derive(Debug, Default)]
struct Cache {
    last_id: Option<i64>,
    campaign: Usage,
    agents: HashMap<String, Usage>,
    ladder: HashMap<(String, String), Option<f64>>,
}

impl Cache {
    /// Makes the cache current inside `tx` (which holds the write lock).
    async fn refresh(&mut self, tx: &mut WriteTx, hour_ago: i64) -> Result<(), StoreError> {
        let max_id = tx.max_evaluation_id().await?;
        if self.last_id != Some(max_id) {
            *self = Cache {
                last_id: Some(max_id),
                campaign: Usage::loaded(tx.evaluation_usage(None, hour_ago).await?),
                ..Cache::default()
            };
        }
        Ok(())
    }

    async fn agent(
        &mut self,
        tx: &mut WriteTx,
        agent_id: &str,
        hour_ago: i64,
    ) -> Result<&mut Usage, StoreError> {
        if !self.agents.contains_key(agent_id) {
            let usage = Usage::loaded(tx.evaluation_usage(Some(agent_id), hour_ago).await?);
            self.agents.insert(agent_id.to_owned(), usage);
        }
        Ok(self.agents.entry(agent_id.to_owned()).or_default())
    }

    async fn ladder_best(
        &mut self,
        tx: &mut WriteTx,
        agent_id: &str,
        task: &str,
    ) -> Result<Option<f64>, StoreError> {
        let key = (agent_id.to_owned(), task.to_owned());
        if let Some(best) = self.ladder.get(&key) {
            return Ok(*best);
        }
        let best = tx.ladder_best(agent_id, task).await?;
        self.ladder.insert(key, best);
        Ok(best)
    }
}

async fn writer_loop(
    store: Store,
    budgets: Budgets,
    ladder: LadderConfig,
    mut receiver: mpsc::Receiver<Job>,
) {
    let mut cache = Cache::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs = std::mem::take(&mut batch);
        match commit_batch(&store, &mut cache, budgets, ladder, &jobs).await {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    // A client that went away does not undo a committed evaluation.
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                // The cache saw writes that were rolled back.
                cache = Cache::default();
                tracing::error!(error = %e, size = jobs.len(), "evaluation batch failed; nothing of it was stored");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(AppError::internal("evaluation batch failed")));
                }
            }
        }
    }
}

/// One transaction for the whole batch, so one durable commit (one fsync) for
/// many requests; each is answered only after that commit. A refusal is an
/// answer; a database error fails the batch, and nothing of it is stored or
/// acknowledged.
async fn commit_batch(
    store: &Store,
    cache: &mut Cache,
    budgets: Budgets,
    ladder: LadderConfig,
    jobs: &[Job],
) -> Result<Vec<Result<EvaluateResponse, AppError>>, StoreError> {
    let mut tx = store.begin_write().await?;
    let now = now_millis();
    cache.refresh(&mut tx, now - HOUR_MS).await?;
    let closed = tx.campaign_closed_at().await?.is_some();
    let mut answers = Vec::with_capacity(jobs.len());
    // This batch's evaluations, inserted together before the commit.
    let mut stored = Vec::with_capacity(jobs.len());
    for job in jobs {
        let answer = if closed {
            refuse_closed(&mut tx, job)
        } else {
            process(&mut tx, cache, &mut stored, budgets, ladder, job).await?
        };
        answers.push(answer);
    }
    tx.insert_evaluations(&stored).await?;
    tx.commit().await?;
    Ok(answers)
}

const HOUR_MS: i64 = 3_600_000;

fn refuse_closed(tx: &mut WriteTx, job: &Job) -> Result<EvaluateResponse, AppError> {
    let detail = serde_json::json!({ "task": job.task.name, "predictions_hash": job.predictions_hash, "refused": "campaign closed" });
    tx.append_audit(
        &format!("agent:{}", job.agent_id),
        "evaluate_refused",
        &detail.to_string(),
    );
    Err(campaign_closed())
}

/// The refusal of any evaluation or entry once the campaign is closed.
pub(crate) fn campaign_closed() -> AppError {
    AppError::conflict(
        "campaign_closed",
        "the campaign is closed: nothing more is evaluated or entered",
    )
}

async fn process(
    tx: &mut WriteTx,
    cache: &mut Cache,
    stored: &mut Vec<EvaluationRecord>,
    budgets: Budgets,
    ladder: LadderConfig,
    job: &Job,
) -> Result<Result<EvaluateResponse, AppError>, StoreError> {
    let actor = format!("agent:{}", job.agent_id);
    let now = now_millis();
    let hour_ago = now - HOUR_MS;

    // An identical submission earlier in this batch, else in the database.
    let same = |e: &&EvaluationRecord| {
        e.new.agent_id == job.agent_id
            && e.new.task == job.task.name
            && e.new.predictions_hash == job.predictions_hash
            && e.new.entry_id.zip(e.new.seed) == job.entry_seed
    };
    let previous = match stored.iter().find(same) {
        Some(previous) => Some(previous.clone()),
        None => {
            tx.find_duplicate(
                &job.agent_id,
                &job.task.name,
                &job.predictions_hash,
                job.entry_seed,
            )
            .await?
        }
    };
    if let Some(previous) = previous {
        let answer = duplicate_answer(&previous);
        let detail = serde_json::json!({
            "evaluation_id": previous.id, "task": job.task.name,
            "predictions_hash": job.predictions_hash, "returned": "stored answer repeated",
        });
        tx.append_audit(&actor, "evaluate_duplicate", &detail.to_string());
        return Ok(answer);
    }
    if let Some((entry, seed)) = job.entry_seed
        && (stored
            .iter()
            .any(|e| e.new.entry_id == Some(entry) && e.new.seed == Some(seed))
            || tx.seed_evaluated(entry, seed).await?)
    {
        return Ok(Err(AppError::conflict(
            "seed_already_evaluated",
            format!(
                "seed {seed} of entry {entry} already has its evaluation; an entry gets one evaluation per declared seed"
            ),
        )));
    }

    let campaign_hour = cache.campaign.since(hour_ago);
    let campaign_total = cache.campaign.total;
    let agent = cache.agent(tx, &job.agent_id, hour_ago).await?;
    let (agent_hour, agent_total) = (agent.since(hour_ago), agent.total);
    let over = [
        (
            agent_hour >= budgets.agent_per_hour,
            "your hourly evaluation budget",
            budgets.agent_per_hour,
        ),
        (
            agent_total >= budgets.agent_total,
            "your total evaluation budget",
            budgets.agent_total,
        ),
        (
            campaign_hour >= budgets.campaign_per_hour,
            "the campaign's hourly evaluation budget",
            budgets.campaign_per_hour,
        ),
        (
            campaign_total >= budgets.campaign_total,
            "the campaign's total evaluation budget",
            budgets.campaign_total,
        ),
    ]
    .into_iter()
    .find(|(over, _, _)| *over);
    if let Some((_, which, limit)) = over {
        let detail = serde_json::json!({ "task": job.task.name, "predictions_hash": job.predictions_hash, "refused": which });
        tx.append_audit(&actor, "evaluate_refused", &detail.to_string());
        return Ok(Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "budget_exhausted",
            format!("refused: {which} ({limit} evaluations) is used up; nothing was scored"),
        )));
    }

    let previous = cache.ladder_best(tx, &job.agent_id, &job.task.name).await?;
    let floor = job.task.baselines.map_or(0.5, |b| b.weak.mean);
    let answer = ladder_answer(ladder, previous, floor, job.public_accuracy);
    if answer.improved
        && let Some(best) = answer.released
    {
        tx.set_ladder_best(&job.agent_id, &job.task.name, best)
            .await?;
        cache
            .ladder
            .insert((job.agent_id.clone(), job.task.name.clone()), Some(best));
    }
    let released_pgr = answer
        .released
        .and_then(|acc| job.task.baselines.and_then(|b| b.pgr(acc).ok()));

    let id = cache.last_id.unwrap_or(0) + 1;
    let response = EvaluateResponse {
        evaluation_id: id,
        task: job.task.name.clone(),
        split: "test".to_owned(),
        released_accuracy: answer.released,
        released_pgr: released_pgr.map(|p| (p * 1e4).round() / 1e4),
        improved: answer.improved,
        entry_id: job.entry_seed.map(|(e, _)| e),
        seed: job.entry_seed.map(|(_, s)| s),
        remaining_this_hour: (budgets.agent_per_hour - agent_hour - 1).max(0),
        remaining_total: (budgets.agent_total - agent_total - 1).max(0),
        deduplicated: false,
        note: NOTE.to_owned(),
    };
    let record = EvaluationRecord {
        id,
        new: NewEvaluation {
            agent_id: job.agent_id.clone(),
            task: job.task.name.clone(),
            predictions_hash: job.predictions_hash.clone(),
            n_predictions: job.n_predictions,
            public_accuracy: job.public_accuracy,
            private_accuracy: job.private_accuracy,
            released_accuracy: answer.released,
            entry_id: response.entry_id,
            seed: response.seed,
            response: serde_json::to_string(&response)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: now,
        },
    };
    cache.last_id = Some(id);
    cache.campaign.record(now);
    cache.agent(tx, &job.agent_id, hour_ago).await?.record(now);
    let detail = serde_json::json!({
        "evaluation_id": id, "task": job.task.name, "predictions_hash": job.predictions_hash,
        "entry_id": record.new.entry_id, "seed": record.new.seed, "returned": record.new.response,
    });
    tx.append_audit(&actor, "evaluate", &detail.to_string());
    stored.push(record);
    Ok(Ok(response))
}

fn duplicate_answer(previous: &EvaluationRecord) -> Result<EvaluateResponse, AppError> {
    let mut answer: EvaluateResponse =
        serde_json::from_str(&previous.new.response).map_err(AppError::internal)?;
    answer.deduplicated = true;
    Ok(answer)
}

/// sha256 over the task name and the predictions, hex.
pub fn predictions_hash(task: &str, predictions: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update((task.len() as u64).to_le_bytes());
    hasher.update(task.as_bytes());
    hasher.update(predictions);
    hex::encode(hasher.finalize())
}

/// `POST /api/evaluate`.
pub async fn evaluate(
    State(state): State<AppState>,
    AgentCaller(agent): AgentCaller,
    ApiJson(request): ApiJson<EvaluateRequest>,
) -> Result<axum::Json<EvaluateResponse>, AppError> {
    Ok(axum::Json(run_evaluation(&state, &agent, request).await?))
}

/// Checks, scores and records one evaluation; the JSON API and MCP both call this.
pub(crate) async fn run_evaluation(
    state: &AppState,
    agent: &AgentRecord,
    request: EvaluateRequest,
) -> Result<EvaluateResponse, AppError> {
    let task = state
        .tasks()
        .get(&request.task)
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "unknown_task", "no such task"))?;
    let n = task.test_labels.len();
    if request.predictions.len() != n {
        return Err(AppError::unprocessable(
            "wrong_length",
            format!(
                "the test split of {} has {n} examples; got {} predictions",
                task.name,
                request.predictions.len()
            ),
        ));
    }
    let predictions = parse_labels(&request.predictions, "prediction")?;
    let entry_seed = match (request.entry_id, request.seed) {
        (None, None) => None,
        (Some(entry_id), Some(seed)) => {
            let entry = state
                .store()
                .entry(entry_id)
                .await?
                .ok_or_else(|| AppError::not_found("entry"))?;
            if entry.agent_id != agent.id {
                return Err(AppError::forbidden("this entry belongs to another agent"));
            }
            if entry.task != task.name {
                return Err(AppError::unprocessable(
                    "wrong_task",
                    format!("entry {entry_id} is for task {}", entry.task),
                ));
            }
            if !entry.seeds.contains(&seed) {
                return Err(AppError::unprocessable(
                    "undeclared_seed",
                    format!("entry {entry_id} did not declare seed {seed}"),
                ));
            }
            if entry.status == EntryStatus::Disqualified {
                return Err(AppError::conflict(
                    "disqualified",
                    "this entry is disqualified",
                ));
            }
            Some((entry_id, seed))
        }
        _ => {
            return Err(AppError::unprocessable(
                "entry_seed_pair",
                "give both entry_id and seed, or neither",
            ));
        }
    };

    let public = accuracy(&predictions, &task.test_labels).map_err(AppError::internal)?;
    let private_accuracy = match (&request.private_predictions, &task.private_labels) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(AppError::unprocessable(
                "no_private_split",
                format!("task {} has no private split", task.name),
            ));
        }
        (Some(private), Some(labels)) => {
            if private.len() != labels.len() {
                return Err(AppError::unprocessable(
                    "wrong_length",
                    format!(
                        "the private split has {} examples; got {} private predictions",
                        labels.len(),
                        private.len()
                    ),
                ));
            }
            let private = parse_labels(private, "private prediction")?;
            Some(
                accuracy(&private, labels)
                    .map_err(AppError::internal)?
                    .accuracy,
            )
        }
    };
    let mut hashed = request.predictions;
    if let Some(private) = &request.private_predictions {
        // A separator value no prediction can take keeps (a, b) and (a', b') distinct.
        hashed.push(u8::MAX);
        hashed.extend_from_slice(private);
    }

    let (reply, answer) = oneshot::channel();
    let job = Job {
        agent_id: agent.id.clone(),
        predictions_hash: predictions_hash(&task.name, &hashed),
        n_predictions: n as i64,
        public_accuracy: public.accuracy,
        private_accuracy,
        entry_seed,
        task,
        reply,
    };
    state
        .evaluation_writer()
        .sender
        .send(job)
        .await
        .map_err(|_| AppError::internal("evaluation writer stopped"))?;
    answer
        .await
        .map_err(|_| AppError::internal("evaluation writer dropped a request"))?
}

fn parse_labels(values: &[u8], what: &str) -> Result<Vec<Label>, AppError> {
    values
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            Label::try_from(p).map_err(|_| {
                AppError::unprocessable(
                    "bad_prediction",
                    format!("{what} {i} is {p}; a prediction is 0 or 1"),
                )
            })
        })
        .collect()
}

/// `GET /api/evaluations/{id}`: the stored answer, exactly as it was returned.
/// An agent reads only its own evaluations; the admin reads any.
pub async fn get_evaluation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<EvaluateResponse>, AppError> {
    let record = state
        .store()
        .evaluation(id)
        .await?
        .ok_or_else(|| AppError::not_found("evaluation"))?;
    if let Caller::Agent(agent) = &caller
        && agent.id != record.new.agent_id
    {
        // Same answer as a missing id: no probing which ids exist.
        return Err(AppError::not_found("evaluation"));
    }
    let answer = serde_json::from_str(&record.new.response).map_err(AppError::internal)?;
    Ok(axum::Json(answer))
}
