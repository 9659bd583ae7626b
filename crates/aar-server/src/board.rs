//! Leaderboard entries, the leaderboard, identity management and review.
//!
//! An entry declares its method and its seed set up front; each declared seed
//! gets exactly one evaluation, through `POST /api/evaluate` with
//! `entry_id` and `seed`. The leaderboard aggregates those server-recorded
//! evaluations only, and ranks an entry once every declared seed is in, so
//! bad seeds cannot be dropped and good ones cannot be re-rolled.

use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_store::{AgentRecord, EntryRecord, EntryStatus, EvaluationRecord, now_millis};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AdminCaller, AgentCaller, Caller, hash_secret, new_agent_credentials};
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};
use crate::evaluate::campaign_closed;
use crate::ladder::round_to_step;

/// `GET /api/me`.
pub async fn me(caller: Caller) -> Json<Value> {
    Json(match caller {
        Caller::Admin => json!({ "role": "admin" }),
        Caller::Agent(a) => {
            json!({ "role": "agent", "agent_id": a.id, "name": a.name, "expires_at": a.expires_at })
        }
    })
}

/// `GET /api/tasks`: names, sizes and pinned baselines (no labels, no label counts).
pub async fn list_tasks(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let tasks: Vec<Value> = state
        .tasks()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "test_size": t.test_labels.len(),
                "private_size": t.private_labels.as_ref().map(Vec::len),
                "weak_baseline": t.baselines.map(|b| b.weak.mean),
                "ceiling_baseline": t.baselines.map(|b| b.ceiling.mean),
            })
        })
        .collect();
    Json(json!({ "tasks": tasks }))
}

/// `POST /api/entries`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEntry {
    task: String,
    method: String,
    seeds: Vec<i64>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    post_id: Option<i64>,
}

/// `POST /api/entries`: declare a method and its seed set before evaluating.
pub async fn create_entry(
    State(state): State<AppState>,
    AgentCaller(agent): AgentCaller,
    ApiJson(req): ApiJson<CreateEntry>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let limits = state.policy().limits;
    if state.tasks().get(&req.task).is_none() {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            "no such task",
        ));
    }
    let method = req.method.trim();
    if method.is_empty() || method.chars().count() > 200 {
        return Err(AppError::unprocessable(
            "bad_method",
            "a method name has 1 to 200 characters",
        ));
    }
    let mut seeds = req.seeds.clone();
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.len() != req.seeds.len() || seeds.iter().any(|s| !(0..=1_000_000).contains(s)) {
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
    let mut tx = state.store().begin_write().await?;
    if tx.campaign_closed_at().await?.is_some() {
        return Err(campaign_closed());
    }
    if let Some(snapshot) = &req.snapshot_id
        && !tx.snapshot_exists(snapshot).await?
    {
        return Err(AppError::not_found("snapshot"));
    }
    if let Some(post) = req.post_id
        && !tx.post_exists(post).await?
    {
        return Err(AppError::not_found("post"));
    }
    let id = tx
        .insert_entry(
            &agent.id,
            &req.task,
            method,
            &seeds,
            req.snapshot_id.as_deref(),
            req.post_id,
            now_millis(),
        )
        .await?;
    let detail = json!({ "entry_id": id, "task": req.task, "method": method, "seeds": seeds });
    tx.append_audit(
        &format!("agent:{}", agent.id),
        "create_entry",
        &detail.to_string(),
    );
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "entry_id": id, "task": req.task, "method": method, "seeds": seeds })),
    ))
}

/// `GET /api/entries/{id}`: the entry and which seeds are evaluated (no scores).
pub async fn get_entry(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Value>, AppError> {
    let entry = state
        .store()
        .entry(id)
        .await?
        .ok_or_else(|| AppError::not_found("entry"))?;
    let evaluated: Vec<i64> = state
        .store()
        .entry_evaluations(id)
        .await?
        .iter()
        .filter_map(|e| e.new.seed)
        .collect();
    Ok(Json(json!({
        "entry_id": entry.id, "agent_id": entry.agent_id, "task": entry.task, "method": entry.method,
        "seeds": entry.seeds, "evaluated_seeds": evaluated, "snapshot_id": entry.snapshot_id,
        "post_id": entry.post_id, "status": entry.status.as_str(), "status_reason": entry.status_reason,
    })))
}

/// `?task=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    task: String,
}

/// One leaderboard row.
#[derive(Debug, Serialize)]
struct BoardRow {
    entry_id: i64,
    agent_id: String,
    method: String,
    seeds_declared: usize,
    seeds_evaluated: usize,
    snapshot_id: Option<String>,
    post_id: Option<i64>,
    status: &'static str,
    status_reason: Option<String>,
    accuracy: Option<MeanSe>,
    pgr: Option<MeanSe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_accuracy: Option<MeanSe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_pgr: Option<MeanSe>,
}

fn rounded(m: MeanSe, step: f64) -> MeanSe {
    MeanSe {
        mean: round_to_step(m.mean, step),
        se: m.se.map(|s| round_to_step(s, step)),
        n: m.n,
    }
}

fn pgr_of(baselines: Option<FixedBaselines>, accuracies: &[f64]) -> Option<MeanSe> {
    baselines.and_then(|b| b.pgr_over_seeds(accuracies).ok())
}

/// What a viewer may see of a row: exact public scores (the admin), and the
/// private split's scores (the admin; an entry's owner once the campaign is closed).
#[derive(Debug, Clone, Copy)]
struct Visibility {
    exact: bool,
    private: bool,
}

fn board_row(
    entry: &EntryRecord,
    evaluations: &[EvaluationRecord],
    baselines: Option<FixedBaselines>,
    step: f64,
    visibility: Visibility,
) -> BoardRow {
    let public: Vec<f64> = evaluations.iter().map(|e| e.new.public_accuracy).collect();
    let complete = evaluations.len() == entry.seeds.len();
    let (accuracy, pgr) = if !complete {
        (None, None)
    } else if visibility.exact {
        (
            MeanSe::from_values(&public).ok(),
            pgr_of(baselines, &public),
        )
    } else {
        // Agents see the mean rounded to the Ladder's precision; PGR follows from it.
        let acc = MeanSe::from_values(&public).ok().map(|m| rounded(m, step));
        let pgr = acc.and_then(|a| {
            baselines.and_then(|b| {
                let gap = b.gap().ok()?;
                Some(MeanSe {
                    mean: b.pgr(a.mean).ok()?,
                    se: a.se.map(|s| s / gap),
                    n: a.n,
                })
            })
        });
        (acc, pgr.map(|p| rounded(p, step)))
    };
    let private: Option<Vec<f64>> = evaluations.iter().map(|e| e.new.private_accuracy).collect();
    let (private_accuracy, private_pgr) = match (visibility.private && complete, private) {
        (true, Some(values)) if !values.is_empty() => (
            MeanSe::from_values(&values).ok(),
            pgr_of(baselines, &values),
        ),
        _ => (None, None),
    };
    BoardRow {
        entry_id: entry.id,
        agent_id: entry.agent_id.clone(),
        method: entry.method.clone(),
        seeds_declared: entry.seeds.len(),
        seeds_evaluated: evaluations.len(),
        snapshot_id: entry.snapshot_id.clone(),
        post_id: entry.post_id,
        status: entry.status.as_str(),
        status_reason: entry.status_reason.clone(),
        accuracy,
        pgr,
        private_accuracy,
        private_pgr,
    }
}

/// Who asks for a leaderboard.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Viewer<'a> {
    /// Exact public and private scores of every entry.
    Admin,
    /// Rounded public scores; once the campaign is closed, the private scores of its own entries.
    Agent(&'a str),
}

/// The leaderboard of a task as `viewer` may see it; the JSON API and MCP both call this.
pub(crate) async fn build_leaderboard(
    state: &AppState,
    task: &str,
    viewer: Viewer<'_>,
) -> Result<Value, AppError> {
    let server_task = state
        .tasks()
        .get(task)
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "unknown_task", "no such task"))?;
    let step = state.policy().ladder.step;
    let closed = state.store().campaign_closed_at().await?.is_some();
    let mut ranked = Vec::new();
    let mut pending = Vec::new();
    let mut flagged = Vec::new();
    let mut disqualified = Vec::new();
    for entry in state.store().entries_for_task(task).await? {
        let evaluations = state.store().entry_evaluations(entry.id).await?;
        let visibility = match viewer {
            Viewer::Admin => Visibility {
                exact: true,
                private: true,
            },
            Viewer::Agent(id) => Visibility {
                exact: false,
                private: closed && entry.agent_id == id,
            },
        };
        let row = board_row(
            &entry,
            &evaluations,
            server_task.baselines,
            step,
            visibility,
        );
        match entry.status {
            EntryStatus::Flagged => flagged.push(row),
            EntryStatus::Disqualified => disqualified.push(row),
            EntryStatus::Ok if row.accuracy.is_none() => pending.push(row),
            EntryStatus::Ok => ranked.push(row),
        }
    }
    let key = |r: &BoardRow| r.pgr.or(r.accuracy).map_or(f64::MIN, |m| m.mean);
    ranked.sort_by(|a, b| key(b).total_cmp(&key(a)));
    Ok(json!({
        "task": task,
        "source": "server-recorded evaluations only; mean +- SE over each entry's declared seeds",
        "campaign_closed": closed,
        "baselines": server_task.baselines.map(|b| json!({ "weak": b.weak.mean, "ceiling": b.ceiling.mean })),
        "ranked": ranked, "pending": pending, "flagged": flagged, "disqualified": disqualified,
    }))
}

/// `GET /api/leaderboard?task=`: rounded public-split scores; after the
/// campaign closes, an agent also sees the private scores of its own entries.
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

/// `GET /api/admin/leaderboard?task=`: exact public and private scores (the end-of-campaign reveal).
pub async fn admin_leaderboard(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(
        build_leaderboard(&state, &q.task, Viewer::Admin).await?,
    ))
}

/// `GET /api/campaign`: whether the campaign is closed.
pub async fn campaign(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Value>, AppError> {
    let closed_at = state.store().campaign_closed_at().await?;
    Ok(Json(
        json!({ "closed": closed_at.is_some(), "closed_at": closed_at }),
    ))
}

/// `POST /api/admin/campaign/close`: ends the campaign (no reopening). From then
/// on evaluations and new entries are refused, and each agent sees the private
/// scores of its own entries on the leaderboard.
pub async fn close_campaign(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let mut tx = state.store().begin_write().await?;
    let was_closed = tx.campaign_closed_at().await?;
    let closed_at = tx.close_campaign(now_millis()).await?;
    if was_closed.is_none() {
        tx.append_audit(
            "admin",
            "close_campaign",
            &json!({ "closed_at": closed_at }).to_string(),
        );
    }
    tx.commit().await?;
    Ok(Json(json!({ "closed": true, "closed_at": closed_at })))
}

/// `POST /api/admin/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueAgent {
    name: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// `POST /api/admin/agents`: registers an agent and returns its token (shown once).
pub async fn issue_agent(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiJson(req): ApiJson<IssueAgent>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AppError::unprocessable(
            "bad_name",
            "an agent name has 1 to 64 printable characters",
        ));
    }
    let (id, secret, token) = new_agent_credentials()?;
    let now = now_millis();
    let expires_at = req.ttl_seconds.map(|s| {
        now.saturating_add(
            i64::try_from(s)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1000),
        )
    });
    let agent = AgentRecord {
        id: id.clone(),
        name: name.to_owned(),
        token_hash: hash_secret(&secret),
        created_at: now,
        expires_at,
        revoked: false,
    };
    let mut tx = state.store().begin_write().await?;
    if !tx.insert_agent(&agent).await? {
        return Err(AppError::conflict(
            "name_taken",
            "an agent with this name exists",
        ));
    }
    tx.append_audit(
        "admin",
        "issue_agent",
        &json!({ "agent_id": id, "name": name, "expires_at": expires_at }).to_string(),
    );
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "agent_id": id, "name": name, "token": token, "expires_at": expires_at })),
    ))
}

/// `GET /api/admin/agents`.
pub async fn list_agents(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let agents: Vec<Value> = state
        .store()
        .agents()
        .await?
        .into_iter()
        .map(|a| json!({ "agent_id": a.id, "name": a.name, "created_at": a.created_at, "expires_at": a.expires_at, "revoked": a.revoked }))
        .collect();
    Ok(Json(json!({ "agents": agents })))
}

/// `POST /api/admin/agents/{id}/revoke`.
pub async fn revoke_agent(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let mut tx = state.store().begin_write().await?;
    if !tx.revoke_agent(&id).await? {
        return Err(AppError::not_found("agent"));
    }
    tx.append_audit(
        "admin",
        "revoke_agent",
        &json!({ "agent_id": id }).to_string(),
    );
    tx.commit().await?;
    Ok(Json(json!({ "agent_id": id, "revoked": true })))
}

/// `?limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    after: Option<i64>,
}

/// `GET /api/admin/evaluations`: exact public and private accuracies.
pub async fn admin_evaluations(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows: Vec<Value> = state
        .store()
        .recent_evaluations(limit)
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "evaluation_id": e.id, "agent_id": e.new.agent_id, "task": e.new.task,
                "predictions_hash": e.new.predictions_hash, "public_accuracy": e.new.public_accuracy,
                "private_accuracy": e.new.private_accuracy, "released_accuracy": e.new.released_accuracy,
                "entry_id": e.new.entry_id, "seed": e.new.seed, "created_at": e.new.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "evaluations": rows })))
}

/// `POST /api/admin/entries/{id}/{flag|disqualify|reinstate}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    reason: String,
}

/// Admin review of an entry; every action is audited.
pub async fn review(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath((id, action)): ApiPath<(i64, String)>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> Result<Json<Value>, AppError> {
    let status = match action.as_str() {
        "flag" => EntryStatus::Flagged,
        "disqualify" => EntryStatus::Disqualified,
        "reinstate" => EntryStatus::Ok,
        _ => {
            return Err(AppError::not_found(
                "review action (flag, disqualify, reinstate)",
            ));
        }
    };
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(AppError::unprocessable(
            "bad_reason",
            "a reason has 1 to 2000 characters",
        ));
    }
    let mut tx = state.store().begin_write().await?;
    if !tx.set_entry_status(id, status, reason).await? {
        return Err(AppError::not_found("entry"));
    }
    tx.append_audit(
        "admin",
        &format!("review_{action}"),
        &json!({ "entry_id": id, "reason": reason }).to_string(),
    );
    tx.commit().await?;
    Ok(Json(
        json!({ "entry_id": id, "status": status.as_str(), "reason": reason }),
    ))
}

/// `GET /api/admin/audit?after=&limit=`.
pub async fn audit(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiQuery(q): ApiQuery<LimitQuery>,
) -> Result<Json<Value>, AppError> {
    let records = state
        .store()
        .audit_records(q.after.unwrap_or(0), q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(json!({ "records": records })))
}

/// `GET /api/admin/audit/verify`: recomputes the hash chain.
pub async fn verify_audit(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    Ok(Json(
        serde_json::to_value(state.store().verify_audit_chain().await?)
            .map_err(AppError::internal)?,
    ))
}
