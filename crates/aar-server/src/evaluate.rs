//! Evaluation: score predictions, answer through the Ladder, enforce budgets,
//! deduplicate, store and audit.
//!
//! Handlers score on their own task (CPU only) and hand the result to one
//! writer task, which commits a batch of evaluations per transaction (group
//! commit: one fsync for many requests) and answers each request only after
//! its commit. The single writer also makes budget checks race-free, and it
//! is the only writer of the Ladder: a verified entry's score is released
//! through it too ([`EvaluationWriter::release_entry`]).
//!
//! Each task answers with its own Ladder step ([`step_for`] its test split's
//! size), so one flipped prediction never moves the answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use aar_core::Label;
use aar_core::metrics::accuracy;
use aar_store::{
    AgentRecord, EntryStatus, EvaluationInsert, EvaluationRecord, NewEvaluation, Store, StoreError,
    WriteTx, now_millis,
};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AgentCaller, Caller};
use crate::error::{ApiJson, ApiPath, AppError};
use crate::ladder::{LadderConfig, ladder_answer, step_for};
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
    /// Public predictions, one 0/1 byte per test row (stored bit-packed).
    predictions: Vec<u8>,
    public_accuracy: f64,
    private_accuracy: Option<f64>,
    entry_seed: Option<(i64, i64)>,
    reply: oneshot::Sender<Result<EvaluateResponse, AppError>>,
}

/// A verified entry's exact score on its way through its author's Ladder.
struct Release {
    agent_id: String,
    task: Arc<ServerTask>,
    exact_accuracy: f64,
    /// The entry whose release this is (its `released_accuracy` is set in the same transaction).
    entry_id: Option<i64>,
    reply: oneshot::Sender<Result<Option<f64>, AppError>>,
}

/// What the writer task is asked to do.
enum Message {
    Evaluate(Job),
    Release(Release),
}

/// What it answers, after the commit.
enum Answer {
    Evaluate(Result<EvaluateResponse, AppError>),
    Release(Option<f64>),
}

impl Message {
    /// Sends the answer; a client that went away does not undo a commit.
    fn reply(self, answer: Answer) {
        match (self, answer) {
            (Message::Evaluate(job), Answer::Evaluate(a)) => drop(job.reply.send(a)),
            (Message::Release(r), Answer::Release(a)) => drop(r.reply.send(Ok(a))),
            (message, _) => message.fail(AppError::internal("writer answer mismatch")),
        }
    }

    fn fail(self, error: AppError) {
        match self {
            Message::Evaluate(job) => drop(job.reply.send(Err(error))),
            Message::Release(r) => drop(r.reply.send(Err(error))),
        }
    }
}

/// Handle on the writer task.
#[derive(Debug, Clone)]
pub struct EvaluationWriter {
    sender: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Evaluate(job) => std::fmt::Debug::fmt(job, f),
            Message::Release(r) => f
                .debug_struct("Release")
                .field("agent_id", &r.agent_id)
                .field("task", &r.task.name)
                .finish(),
        }
    }
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

    async fn send(&self, message: Message) -> Result<(), AppError> {
        self.sender
            .send(message)
            .await
            .map_err(|_| AppError::internal("evaluation writer stopped"))
    }

    /// Passes a verified entry's exact mean public accuracy through its
    /// author's Ladder on `task`: the same per-(agent, task) best as
    /// evaluations, the same floor (the weak baseline) and the task's step.
    /// Through the writer task, so it cannot race an evaluation; it updates
    /// the Ladder and appends an audit record (`release_entry`). Returns what
    /// the author may see: the rounded accuracy when it set a new released
    /// best, else `None` (then nothing is shown).
    pub(crate) async fn release_entry(
        &self,
        agent_id: &str,
        task: Arc<ServerTask>,
        exact_accuracy: f64,
        entry_id: Option<i64>,
    ) -> Result<Option<f64>, AppError> {
        let (reply, answer) = oneshot::channel();
        self.send(Message::Release(Release {
            agent_id: agent_id.to_owned(),
            task,
            exact_accuracy,
            entry_id,
            reply,
        }))
        .await?;
        answer
            .await
            .map_err(|_| AppError::internal("evaluation writer dropped a release"))?
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
    /// The database's Ladder epoch when the cache was last current: releases
    /// of entries change the Ladder without adding an evaluation.
    ladder_epoch: i64,
    campaign: Usage,
    agents: HashMap<String, Usage>,
    ladder: HashMap<(String, String), Option<f64>>,
}

impl Cache {
    /// Makes the cache current inside `tx` (which holds the write lock).
    async fn refresh(&mut self, tx: &mut WriteTx, hour_ago: i64) -> Result<(), StoreError> {
        let max_id = tx.max_evaluation_id().await?;
        let epoch = tx.ladder_epoch().await?;
        if self.last_id != Some(max_id) || self.ladder_epoch != epoch {
            *self = Cache {
                last_id: Some(max_id),
                ladder_epoch: epoch,
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
    mut receiver: mpsc::Receiver<Message>,
) {
    let mut cache = Cache::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let messages = std::mem::take(&mut batch);
        match commit_batch(&store, &mut cache, budgets, ladder, &messages).await {
            Ok(answers) => {
                for (message, answer) in messages.into_iter().zip(answers) {
                    message.reply(answer);
                }
            }
            Err(e) => {
                // The cache saw writes that were rolled back.
                cache = Cache::default();
                tracing::error!(error = %e, size = messages.len(), "evaluation batch failed; nothing of it was stored");
                for message in messages {
                    message.fail(AppError::internal("evaluation batch failed"));
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
    messages: &[Message],
) -> Result<Vec<Answer>, StoreError> {
    let mut tx = store.begin_write().await?;
    let now = now_millis();
    cache.refresh(&mut tx, now - HOUR_MS).await?;
    let closed = tx.campaign_closed_at().await?.is_some();
    let mut answers = Vec::with_capacity(messages.len());
    // This batch's evaluations, inserted together before the commit.
    let mut stored = Vec::with_capacity(messages.len());
    for message in messages {
        let answer = match message {
            Message::Evaluate(job) if closed => Answer::Evaluate(refuse_closed(&mut tx, job)),
            Message::Evaluate(job) => {
                Answer::Evaluate(process(&mut tx, cache, &mut stored, budgets, ladder, job).await?)
            }
            Message::Release(release) => {
                Answer::Release(release_through_ladder(&mut tx, cache, ladder, release).await?)
            }
        };
        answers.push(answer);
    }
    tx.insert_evaluations(&stored).await?;
    tx.commit().await?;
    Ok(answers)
}

/// The bar before anything is released: the weak baseline, else chance.
fn ladder_floor(task: &ServerTask) -> f64 {
    task.baselines.map_or(0.5, |b| b.weak.mean)
}

/// [`EvaluationWriter::release_entry`] inside the writer's transaction.
async fn release_through_ladder(
    tx: &mut WriteTx,
    cache: &mut Cache,
    ladder: LadderConfig,
    release: &Release,
) -> Result<Option<f64>, StoreError> {
    let task = &release.task;
    let previous = cache.ladder_best(tx, &release.agent_id, &task.name).await?;
    let step = step_for(ladder, task.test_labels.len());
    let answer = ladder_answer(step, previous, ladder_floor(task), release.exact_accuracy);
    let released = match answer.released {
        Some(best) if answer.improved => {
            tx.set_ladder_best(&release.agent_id, &task.name, best)
                .await?;
            cache
                .ladder
                .insert((release.agent_id.clone(), task.name.clone()), Some(best));
            // Other processes' writers must see that the Ladder moved.
            cache.ladder_epoch = tx.bump_ladder_epoch().await?;
            Some(best)
        }
        _ => None,
    };
    if let Some(entry_id) = release.entry_id {
        tx.set_entry_release(entry_id, released).await?;
    }
    let detail = serde_json::json!({ "task": task.name, "entry_id": release.entry_id, "step": step, "returned": released });
    tx.append_audit(
        &format!("agent:{}", release.agent_id),
        "release_entry",
        &detail.to_string(),
    );
    Ok(released)
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
    stored: &mut Vec<EvaluationInsert>,
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
    let previous = match stored.iter().map(|s| &s.record).find(same) {
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
            .any(|e| e.record.new.entry_id == Some(entry) && e.record.new.seed == Some(seed))
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
    let step = step_for(ladder, job.task.test_labels.len());
    let answer = ladder_answer(step, previous, ladder_floor(&job.task), job.public_accuracy);
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
    stored.push(EvaluationInsert {
        record,
        predictions: job.predictions.clone(),
    });
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
    let mut hashed = request.predictions.clone();
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
        predictions: request.predictions,
        public_accuracy: public.accuracy,
        private_accuracy,
        entry_seed,
        task,
        reply,
    };
    state
        .evaluation_writer()
        .send(Message::Evaluate(job))
        .await?;
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

#[cfg(test)]
mod tests {
    use aar_core::metrics::FixedBaselines;
    use aar_store::AuditRecord;
    use serde_json::Value;

    use super::*;

    const AGENT: &str = "agent-1";

    /// A store with one agent, and a task of 1,300 rows (step 0.015) whose weak baseline is 0.65.
    async fn setup() -> (tempfile::TempDir, Store, Arc<ServerTask>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("aar.db").display());
        let store = Store::connect(&url).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let agent = AgentRecord {
            id: AGENT.into(),
            name: "a".into(),
            token_hash: "00".repeat(32),
            created_at: 0,
            expires_at: None,
            revoked: false,
        };
        assert!(tx.insert_agent(&agent).await.unwrap());
        tx.commit().await.unwrap();
        let task = ServerTask {
            name: "math".into(),
            test_labels: vec![Label::from(true); 1300],
            private_labels: None,
            baselines: Some(
                FixedBaselines::from_seed_accuracies(&[0.65, 0.65], &[0.8, 0.8]).unwrap(),
            ),
        };
        (dir, store, Arc::new(task))
    }

    fn writer(store: &Store) -> EvaluationWriter {
        let budgets = Budgets {
            agent_per_hour: 1000,
            agent_total: 1000,
            campaign_per_hour: 1000,
            campaign_total: 1000,
        };
        EvaluationWriter::spawn(store.clone(), budgets, LadderConfig::default())
    }

    /// An evaluation scored `accuracy` (the predictions only make it distinct).
    async fn evaluate(
        writer: &EvaluationWriter,
        task: &Arc<ServerTask>,
        accuracy: f64,
    ) -> EvaluateResponse {
        let predictions = accuracy.to_bits().to_le_bytes().to_vec();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            agent_id: AGENT.into(),
            task: task.clone(),
            predictions_hash: predictions_hash(&task.name, &predictions),
            n_predictions: predictions.len() as i64,
            predictions,
            public_accuracy: accuracy,
            private_accuracy: None,
            entry_seed: None,
            reply,
        };
        writer.send(Message::Evaluate(job)).await.unwrap();
        answer.await.unwrap().unwrap()
    }

    async fn release_audits(store: &Store) -> Vec<AuditRecord> {
        let records = store.audit_records(0, 1000).await.unwrap();
        records
            .into_iter()
            .filter(|r| r.action == "release_entry")
            .collect()
    }

    #[tokio::test]
    async fn an_entry_release_goes_through_its_authors_ladder() {
        let (_dir, store, task) = setup().await;
        let writer = writer(&store);
        let release = |accuracy| writer.release_entry(AGENT, task.clone(), accuracy, None);

        // Below the floor plus a step (0.65 + 0.015): nothing is released.
        assert_eq!(release(0.66).await.unwrap(), None);
        let first = evaluate(&writer, &task, 0.70).await;
        assert_eq!(
            (first.released_accuracy, first.improved),
            (Some(0.705), true)
        );
        // Below the author's best plus a step (0.705 + 0.015): nothing.
        assert_eq!(release(0.71).await.unwrap(), None);
        // A step above: released rounded to the task's step, and it becomes the best.
        assert_eq!(release(0.7512).await.unwrap(), Some(0.75));
        let mut tx = store.begin_write().await.unwrap();
        assert_eq!(tx.ladder_best(AGENT, "math").await.unwrap(), Some(0.75));
        drop(tx);
        // A later evaluation must beat the released entry by a step.
        let later = evaluate(&writer, &task, 0.76).await;
        assert_eq!(
            (later.released_accuracy, later.improved),
            (Some(0.75), false)
        );
        let better = evaluate(&writer, &task, 0.77).await;
        assert_eq!(
            (better.released_accuracy, better.improved),
            (Some(0.765), true)
        );

        let audits = release_audits(&store).await;
        let returned: Vec<Value> = audits
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.detail).unwrap()["returned"].clone())
            .collect();
        assert_eq!(
            returned,
            [Value::Null, Value::Null, serde_json::json!(0.75)]
        );
        assert!(audits.iter().all(|r| r.actor == format!("agent:{AGENT}")));
    }

    #[tokio::test]
    async fn a_release_by_another_process_reaches_this_writers_cache() {
        let (_dir, store, task) = setup().await;
        let (here, there) = (writer(&store), writer(&store));
        let first = evaluate(&here, &task, 0.70).await;
        assert_eq!(first.released_accuracy, Some(0.705));
        // Another writer (another server process on the same database) releases an entry.
        let released = there
            .release_entry(AGENT, task.clone(), 0.75, None)
            .await
            .unwrap();
        assert_eq!(released, Some(0.75));
        // This writer cached 0.705; it must see 0.75 and not release 0.76.
        let answer = evaluate(&here, &task, 0.76).await;
        assert_eq!(
            (answer.released_accuracy, answer.improved),
            (Some(0.75), false)
        );
    }
}
