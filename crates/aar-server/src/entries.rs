//! Leaderboard entries and the leaderboard.
//!
//! An entry is a method, never a number: it names a code-store snapshot (a
//! method directory with a manifest) and declares its seeds up front. The
//! verifier re-runs the snapshot once per seed on the public test, the private
//! test and the transfer set, and the leaderboard is computed from those runs
//! only. What agents see of a score goes through the Ladder: an entry's mean
//! public accuracy is released once, through its author's Ladder, when it beats
//! the author's best by a step; other entries show their verification state and
//! released score only; private and transfer scores reach no agent until the
//! campaign closes (then an agent sees those of its own entries).

use std::collections::{BTreeMap, HashMap, HashSet};

use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_store::{
    EntryRecord, EntryStatus, FlagRecord, VerificationRun, VerificationState, now_millis,
};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AdminCaller, AgentCaller, Caller};
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};
use crate::evaluate::campaign_closed;
use crate::scores::{SplitScore, compare_entries, score_split};
use crate::verify::{MAIN_VARIANT, PRIVATE_SPLIT, PUBLIC_SPLIT, TRANSFER_SPLIT, split_accuracies};

/// The splits an entry is scored on.
const SCORED_SPLITS: [&str; 3] = [PUBLIC_SPLIT, PRIVATE_SPLIT, TRANSFER_SPLIT];
/// The held-out splits the ranking and the neighbour comparisons use.
const HELD_OUT_SPLITS: [&str; 2] = [PRIVATE_SPLIT, TRANSFER_SPLIT];

/// One entry's scored splits (admin views only: every number here is label-dependent).
type EntryScores = BTreeMap<&'static str, SplitScore>;

/// `POST /api/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEntry {
    task: String,
    snapshot_id: String,
    seeds: Vec<i64>,
    /// A display name; defaults to the manifest's.
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    post_id: Option<i64>,
}

fn unknown_task() -> AppError {
    AppError::new(StatusCode::NOT_FOUND, "unknown_task", "no such task")
}

fn checked_seeds(state: &AppState, declared: &[i64]) -> Result<Vec<i64>, AppError> {
    let limits = state.policy().limits;
    let mut seeds = declared.to_vec();
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.len() != declared.len() || seeds.iter().any(|s| !(0..=1_000_000).contains(s)) {
        return Err(AppError::unprocessable(
            "bad_seeds",
            "seeds must be distinct integers in 0..=1000000",
        ));
    }
    if !(limits.min_seeds..=limits.max_seeds).contains(&seeds.len()) {
        return Err(AppError::unprocessable(
            "bad_seeds",
            format!(
                "an entry declares {} to {} seeds",
                limits.min_seeds, limits.max_seeds
            ),
        ));
    }
    Ok(seeds)
}

/// The method's name from its snapshot, checked by the verifier (manifest present and valid).
async fn method_of_snapshot(state: &AppState, snapshot_id: &str) -> Result<String, AppError> {
    let archive = state
        .store()
        .snapshot_archive(snapshot_id)
        .await?
        .ok_or_else(|| AppError::not_found("snapshot"))?;
    let Some(handle) = state.verifier().cloned() else {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_verifier",
            "this server runs no verifier, so it takes no leaderboard entries",
        ));
    };
    tokio::task::spawn_blocking(move || handle.verifier.check_snapshot(&archive))
        .await
        .map_err(AppError::internal)?
        .map_err(|why| AppError::unprocessable("bad_method", why))
}

/// `POST /api/entries`: enter a method (a snapshot) with its seeds; the verifier runs it.
pub async fn create_entry(
    State(state): State<AppState>,
    AgentCaller(agent): AgentCaller,
    ApiJson(req): ApiJson<CreateEntry>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    if state.tasks().get(&req.task).is_none() {
        return Err(unknown_task());
    }
    let seeds = checked_seeds(&state, &req.seeds)?;
    let manifest_name = method_of_snapshot(&state, &req.snapshot_id).await?;
    let method = req.method.clone().unwrap_or(manifest_name);
    crate::forum::check_text("method", &method, 200)?;
    let mut tx = state.store().begin_write().await?;
    crate::quotas::check_entry_quota(&mut tx, state.policy(), &agent.id, now_millis()).await?;
    if tx.campaign_closed_at().await?.is_some() {
        return Err(campaign_closed());
    }
    if let Some(post) = req.post_id
        && !tx.post_exists(post).await?
    {
        return Err(AppError::not_found("post"));
    }
    if let Some(id) = tx
        .same_entry(&agent.id, &req.task, &seeds, &req.snapshot_id)
        .await?
    {
        // Idempotent: the method is already entered (and verified once is enough).
        return Ok((
            StatusCode::OK,
            Json(json!({
                "entry_id": id, "task": req.task, "seeds": seeds,
                "snapshot_id": req.snapshot_id, "duplicate": true,
                "note": "you already entered this snapshot with these seeds on this task: this is that entry",
            })),
        ));
    }
    let id = tx
        .insert_entry(
            &agent.id,
            &req.task,
            &method,
            &seeds,
            Some(&req.snapshot_id),
            req.post_id,
            now_millis(),
        )
        .await?;
    let detail = json!({ "entry_id": id, "task": req.task, "method": method, "seeds": seeds, "snapshot_id": req.snapshot_id });
    tx.append_audit(
        &format!("agent:{}", agent.id),
        "create_entry",
        &detail.to_string(),
    );
    tx.commit().await?;
    state.wake_verifier();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "entry_id": id, "task": req.task, "method": method, "seeds": seeds,
            "snapshot_id": req.snapshot_id, "verification": VerificationState::Queued.as_str(),
            "note": "the server re-runs this snapshot once per seed on the public test, the private test and the transfer set; your entry's public score is shown only if the Ladder releases it",
        })),
    ))
}

/// `GET /api/entries/{id}`: an entry as agents see it (state and released score only).
pub async fn get_entry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, AppError> {
    let viewer = match &caller {
        Caller::Admin => Viewer::Admin,
        Caller::Agent(agent) => Viewer::Agent(&agent.id),
    };
    Ok(Json(entry_view(&state, id, viewer).await?))
}

/// One entry as `viewer` may see it; the admin also gets the verifier's detail.
pub(crate) async fn entry_view(
    state: &AppState,
    id: i64,
    viewer: Viewer<'_>,
) -> Result<Value, AppError> {
    let entry = state
        .store()
        .entry(id)
        .await?
        .ok_or_else(|| AppError::not_found("entry"))?;
    let baselines = state.tasks().baselines(&entry.task, PUBLIC_SPLIT);
    let mut row =
        serde_json::to_value(public_row(&entry, baselines, viewer)).map_err(AppError::internal)?;
    if matches!(viewer, Viewer::Admin) {
        row["task"] = json!(entry.task);
        let runs = state.store().verification_runs(id).await?;
        let scores = score_entries(state, std::slice::from_ref(&entry), &runs).await?;
        let flags: Vec<FlagRecord> = state
            .store()
            .flags()
            .await?
            .into_iter()
            .filter(|f| {
                f.flag.entry_id == Some(id)
                    || (f.flag.entry_id.is_none() && f.flag.agent_id == entry.agent_id)
            })
            .collect();
        row["admin"] = admin_detail(state, &entry, &runs, &flags, scores.get(&id));
        row["runs"] = runs
            .iter()
            .map(|r| {
                json!({ "seed": r.seed, "variant": r.variant, "split": r.split,
                        "accuracy": r.accuracy, "error": r.error, "seconds": r.seconds })
            })
            .collect();
    }
    Ok(row)
}

/// What every viewer may see of an entry.
#[derive(Debug, Serialize)]
struct PublicRow {
    entry_id: i64,
    agent_id: String,
    method: String,
    seeds: Vec<i64>,
    snapshot_id: Option<String>,
    post_id: Option<i64>,
    status: &'static str,
    status_reason: Option<String>,
    verification: &'static str,
    /// The public accuracy the Ladder released to the author, rounded.
    released_accuracy: Option<f64>,
    /// PGR of the released accuracy.
    released_pgr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verification_error: Option<String>,
}

/// The review state an agent may see. A probe's flag (no person has looked yet) can
/// depend on labels (the ablations and the overfitting probe compare held-out scores),
/// so agents see such an entry, and an approved one, as `ok`; only a person's decision
/// to flag or disqualify, with its reason, is shown.
fn agent_visible_status(entry: &EntryRecord) -> EntryStatus {
    match entry.status {
        EntryStatus::Flagged if entry.status_reason.is_none() => EntryStatus::Ok,
        EntryStatus::Approved => EntryStatus::Ok,
        other => other,
    }
}

fn public_row(
    entry: &EntryRecord,
    baselines: Option<FixedBaselines>,
    viewer: Viewer<'_>,
) -> PublicRow {
    let admin = matches!(viewer, Viewer::Admin);
    let status = if admin {
        entry.status
    } else {
        agent_visible_status(entry)
    };
    let released_pgr = entry
        .released_accuracy
        .and_then(|a| baselines.and_then(|b| b.pgr(a).ok()))
        .map(|p| (p * 1000.0).round() / 1000.0);
    PublicRow {
        entry_id: entry.id,
        agent_id: entry.agent_id.clone(),
        method: entry.method.clone(),
        seeds: entry.seeds.clone(),
        snapshot_id: entry.snapshot_id.clone(),
        post_id: entry.post_id,
        status: status.as_str(),
        status_reason: (status != EntryStatus::Ok)
            .then(|| entry.status_reason.clone())
            .flatten(),
        verification: entry.verification.as_str(),
        released_accuracy: entry.released_accuracy,
        released_pgr,
        // The message quotes the method's own output from runs on data its author never
        // saw (the transfer set's inputs): the admin's only.
        verification_error: if admin {
            entry.verification_error.clone()
        } else {
            entry
                .verification_error
                .as_ref()
                .map(|_| "the method did not run on every declared seed; `aar method check` it on your copy".to_owned())
        },
    }
}

/// Mean +- SE of accuracy and PGR of one split over the declared seeds, as an agent
/// sees its own entries once the campaign is closed: the seeds' spread only (errors
/// with the test's noise and comparisons are the admin's).
fn split_scores(
    entry: &EntryRecord,
    runs: &[VerificationRun],
    split: &str,
    baselines: Option<FixedBaselines>,
) -> Value {
    let Some(values) = split_accuracies(entry, runs, split) else {
        return Value::Null;
    };
    let accuracy = MeanSe::from_values(&values).ok();
    let pgr = baselines.and_then(|b| b.pgr_over_seeds(&values).ok());
    json!({ "accuracy": accuracy, "pgr": pgr, "per_seed": values })
}

/// The admin's view of one split: accuracy over seeds, PGR with an error that includes
/// the test's sampling noise (where the baselines' rows are pinned) and the comparisons
/// with vanilla and the other built-in methods.
fn admin_split(
    entry: &EntryRecord,
    runs: &[VerificationRun],
    split: &str,
    score: Option<&SplitScore>,
) -> Value {
    let Some(values) = split_accuracies(entry, runs, split) else {
        return Value::Null;
    };
    let accuracy = MeanSe::from_values(&values).ok();
    let pgr = score.and_then(|s| s.pgr);
    let vs_vanilla = score.and_then(|s| s.vs_vanilla.clone());
    let vs_builtins = score.map(|s| s.vs_builtins.clone()).unwrap_or_default();
    json!({
        "accuracy": accuracy,
        "pgr": pgr,
        "per_seed": values,
        "vs_vanilla": vs_vanilla,
        "vs_builtins": vs_builtins,
    })
}

/// Scores every split of `entries` from `runs` (bootstraps on the blocking pool,
/// cached), by entry id.
async fn score_entries(
    state: &AppState,
    entries: &[EntryRecord],
    runs: &[VerificationRun],
) -> Result<HashMap<i64, EntryScores>, AppError> {
    let (state, entries, runs) = (state.clone(), entries.to_vec(), runs.to_vec());
    tokio::task::spawn_blocking(move || {
        entries
            .iter()
            .map(|entry| {
                let splits = SCORED_SPLITS
                    .into_iter()
                    .map(|split| {
                        let score =
                            score_split(state.tasks(), state.pgr_cache(), entry, &runs, split);
                        (split, score)
                    })
                    .collect();
                (entry.id, splits)
            })
            .collect()
    })
    .await
    .map_err(AppError::internal)
}

/// Each ranked entry against the one ranked just above it, per held-out split
/// (`admin.splits.<split>.vs_above`): says which neighbours are within noise.
async fn compare_neighbours(
    state: &AppState,
    task: &str,
    ranked: &mut [Value],
    scores: &HashMap<i64, EntryScores>,
) -> Result<(), AppError> {
    let ids: Vec<i64> = ranked
        .iter()
        .filter_map(|r| r["entry_id"].as_i64())
        .collect();
    let rows = |id: &i64, split: &str| {
        scores
            .get(id)
            .and_then(|s| s.get(split))
            .and_then(|s| s.rows.clone())
    };
    let mut pairs = Vec::new();
    for (above, below) in ids.iter().zip(ids.iter().skip(1)) {
        for split in HELD_OUT_SPLITS {
            if let (Some(a), Some(b)) = (rows(below, split), rows(above, split)) {
                pairs.push((*below, *above, split, a, b));
            }
        }
    }
    let (state, task) = (state.clone(), task.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        pairs
            .into_iter()
            .filter_map(|(below, above, split, a, b)| {
                let cache = state.pgr_cache();
                compare_entries(state.tasks(), cache, &task, split, (below, &a), (above, &b))
                    .map(|c| (below, split, c))
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(AppError::internal)?;
    for (below, split, comparison) in found {
        if let Some(row) = ranked.iter_mut().find(|r| r["entry_id"] == below) {
            let slot = &mut row["admin"]["splits"][split];
            if slot.is_object() {
                slot["vs_above"] = json!(comparison);
            }
        }
    }
    Ok(())
}

/// The admin's view of one entry: exact scores per split, the probes' variants, flags.
fn admin_detail(
    state: &AppState,
    entry: &EntryRecord,
    runs: &[VerificationRun],
    flags: &[FlagRecord],
    scores: Option<&EntryScores>,
) -> Value {
    let mut splits = serde_json::Map::new();
    for split in SCORED_SPLITS {
        let score = scores.and_then(|s| s.get(split));
        splits.insert(split.to_owned(), admin_split(entry, runs, split, score));
    }
    let mut variants: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for run in runs
        .iter()
        .filter(|r| r.entry_id == entry.id && r.variant != MAIN_VARIANT)
    {
        if let Some(a) = run.accuracy {
            variants
                .entry((run.variant.clone(), run.split.clone()))
                .or_default()
                .push(a);
        }
    }
    let variants: Vec<Value> = variants
        .into_iter()
        .map(|((variant, split), values)| {
            let pgr = state
                .tasks()
                .baselines(&entry.task, &split)
                .and_then(|b| b.pgr_over_seeds(&values).ok());
            json!({ "variant": variant, "split": split, "accuracies": values, "pgr": pgr })
        })
        .collect();
    let errors: Vec<Value> = runs
        .iter()
        .filter(|r| r.entry_id == entry.id && r.error.is_some())
        .map(
            |r| json!({ "seed": r.seed, "variant": r.variant, "split": r.split, "error": r.error }),
        )
        .collect();
    let flags: Vec<Value> = flags
        .iter()
        .map(|f| {
            json!({
                "flag_id": f.id, "probe": f.flag.probe, "summary": f.flag.summary,
                "about": if f.flag.entry_id.is_some() { "entry" } else { "agent" },
                "evidence": serde_json::from_str::<Value>(&f.flag.evidence).unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "splits": splits, "variants": variants, "errors": errors, "flags": flags,
        "verified_at": entry.verified_at, "verification_seconds": entry.verification_seconds,
    })
}

/// `?task=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    task: String,
}

/// Who asks for a leaderboard.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Viewer<'a> {
    /// Exact scores of every split, flags and evidence.
    Admin,
    /// Released scores; once the campaign is closed, the private and transfer scores of its own entries.
    Agent(&'a str),
}

/// Where an entry goes on the board.
fn section(entry: &EntryRecord, viewer: Viewer<'_>) -> &'static str {
    let status = match viewer {
        Viewer::Admin => entry.status,
        Viewer::Agent(_) => agent_visible_status(entry),
    };
    match (status, entry.verification) {
        (EntryStatus::Disqualified, _) => "disqualified",
        (EntryStatus::Flagged, _) => "flagged",
        (_, VerificationState::Queued | VerificationState::Running | VerificationState::Scored) => {
            "pending"
        }
        (_, VerificationState::Failed | VerificationState::None) => "failed",
        (_, VerificationState::Verified) => match viewer {
            Viewer::Admin => "ranked",
            Viewer::Agent(_) if entry.released_accuracy.is_some() => "ranked",
            Viewer::Agent(_) => "verified_unreleased",
        },
    }
}

/// The PGR the admin ranks by: the mean of private and transfer PGR where they
/// exist (data the author never saw), else public.
fn ranking_pgr(row: &Value) -> f64 {
    let pgr = |split: &str| row["admin"]["splits"][split]["pgr"]["mean"].as_f64();
    let held_out: Vec<f64> = [pgr(PRIVATE_SPLIT), pgr(TRANSFER_SPLIT)]
        .into_iter()
        .flatten()
        .collect();
    if held_out.is_empty() {
        pgr(PUBLIC_SPLIT).unwrap_or(f64::MIN)
    } else {
        held_out.iter().sum::<f64>() / held_out.len() as f64
    }
}

/// The leaderboard of a task as `viewer` may see it; the JSON API and MCP both call
/// this. A constant number of queries, whatever the number of entries.
pub(crate) async fn build_leaderboard(
    state: &AppState,
    task: &str,
    viewer: Viewer<'_>,
) -> Result<Value, AppError> {
    let server_task = state.tasks().get(task).ok_or_else(unknown_task)?;
    let closed = state.store().campaign_closed_at().await?.is_some();
    let entries = state.store().entries_for_task(task).await?;
    let runs = state.store().verification_runs_for_task(task).await?;
    let (flags, scores) = match viewer {
        Viewer::Admin => (
            state.store().flags().await?,
            score_entries(state, &entries, &runs).await?,
        ),
        Viewer::Agent(_) => (Vec::new(), HashMap::new()),
    };
    let authors: HashSet<&str> = entries.iter().map(|e| e.agent_id.as_str()).collect();
    let mut sections: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    for entry in &entries {
        let mut row = serde_json::to_value(public_row(entry, server_task.baselines, viewer))
            .map_err(AppError::internal)?;
        match viewer {
            Viewer::Admin => {
                let mine: Vec<FlagRecord> = flags
                    .iter()
                    .filter(|f| {
                        f.flag.entry_id == Some(entry.id)
                            || (f.flag.entry_id.is_none()
                                && f.flag.agent_id == entry.agent_id
                                && authors.contains(f.flag.agent_id.as_str()))
                    })
                    .cloned()
                    .collect();
                row["admin"] = admin_detail(state, entry, &runs, &mine, scores.get(&entry.id));
            }
            Viewer::Agent(me) if closed && entry.agent_id == me => {
                for split in [PRIVATE_SPLIT, TRANSFER_SPLIT] {
                    row[split] =
                        split_scores(entry, &runs, split, state.tasks().baselines(task, split));
                }
            }
            Viewer::Agent(_) => {}
        }
        sections
            .entry(section(entry, viewer))
            .or_default()
            .push(row);
    }
    if let Some(ranked) = sections.get_mut("ranked") {
        match viewer {
            Viewer::Admin => {
                ranked.sort_by(|a, b| ranking_pgr(b).total_cmp(&ranking_pgr(a)));
                compare_neighbours(state, task, ranked, &scores).await?;
            }
            Viewer::Agent(_) => ranked.sort_by(|a, b| {
                let key = |r: &Value| r["released_pgr"].as_f64().unwrap_or(f64::MIN);
                key(b).total_cmp(&key(a))
            }),
        }
    }
    let source = match viewer {
        Viewer::Admin => {
            "the verifier's runs only; PGR +- SE over each entry's declared seeds and the test's rows (paired bootstrap, se_seeds and se_test apart); ranked by held-out (private, transfer) PGR; vs_vanilla, vs_builtins and vs_above say whether a difference is beyond that noise"
        }
        Viewer::Agent(_) => {
            "the verifier's runs only; an entry's public score appears once the Ladder releases it to its author"
        }
    };
    let mut board = json!({
        "task": task,
        "source": source,
        "campaign_closed": closed,
        "baselines": server_task.baselines.map(|b| json!({ "weak": b.weak.mean, "ceiling": b.ceiling.mean })),
    });
    for name in [
        "ranked",
        "verified_unreleased",
        "pending",
        "failed",
        "flagged",
        "disqualified",
    ] {
        board[name] = Value::Array(sections.remove(name).unwrap_or_default());
    }
    Ok(board)
}

/// `GET /api/leaderboard?task=`: verified entries with released scores; after the
/// campaign closes, an agent also sees the private and transfer scores of its own entries.
pub async fn leaderboard(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Json<Value>, AppError> {
    let viewer = match &caller {
        // The admin's view of the public board is the agents' view; exact scores are under /api/admin.
        Caller::Admin => Viewer::Agent(""),
        Caller::Agent(agent) => Viewer::Agent(&agent.id),
    };
    Ok(Json(build_leaderboard(&state, &q.task, viewer).await?))
}

/// `GET /api/admin/leaderboard?task=`: exact scores of every split, flags and evidence.
pub async fn admin_leaderboard(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(
        build_leaderboard(&state, &q.task, Viewer::Admin).await?,
    ))
}

/// `GET /api/admin/review`: every flagged entry (and flagged agent) with the probes' evidence.
pub async fn review_queue(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    Ok(Json(build_review_queue(&state).await?))
}

/// The review queue; the JSON API and the dashboard both call this.
pub(crate) async fn build_review_queue(state: &AppState) -> Result<Value, AppError> {
    let entries = state.store().all_entries().await?;
    let flags = state.store().flags().await?;
    let mut items = Vec::new();
    for entry in entries.iter().filter(|e| e.status == EntryStatus::Flagged) {
        let runs = state.store().verification_runs(entry.id).await?;
        let scores = score_entries(state, std::slice::from_ref(entry), &runs).await?;
        let mine: Vec<FlagRecord> = flags
            .iter()
            .filter(|f| {
                f.flag.entry_id == Some(entry.id)
                    || (f.flag.entry_id.is_none() && f.flag.agent_id == entry.agent_id)
            })
            .cloned()
            .collect();
        let mut row = serde_json::to_value(public_row(
            entry,
            state.tasks().baselines(&entry.task, PUBLIC_SPLIT),
            Viewer::Admin,
        ))
        .map_err(AppError::internal)?;
        row["task"] = json!(entry.task);
        row["admin"] = admin_detail(state, entry, &runs, &mine, scores.get(&entry.id));
        items.push(row);
    }
    let agent_flags: Vec<Value> = flags
        .iter()
        .filter(|f| f.flag.entry_id.is_none())
        .map(|f| json!({ "flag_id": f.id, "agent_id": f.flag.agent_id, "probe": f.flag.probe, "summary": f.flag.summary, "created_at": f.created_at }))
        .collect();
    Ok(json!({ "flagged_entries": items, "agent_flags": agent_flags }))
}
