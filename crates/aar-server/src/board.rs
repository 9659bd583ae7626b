//! Identity management, the campaign's state and the admin's review actions.
//! Entries and the leaderboard are in `entries.rs`.

use aar_store::{AgentRecord, EntryStatus, now_millis};
use aar_tasks::Split;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AdminCaller, Caller, hash_secret, new_agent_credentials};
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};

pub(crate) use crate::entries::{Viewer, build_leaderboard};

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
/// The baselines are mean public-test accuracies of fixed runs (weak teacher, ceiling,
/// vanilla transfer): one number each, the reference a researcher measures against,
/// which a single vanilla evaluation (one seed, Ladder-rounded) cannot give.
pub async fn list_tasks(State(state): State<AppState>, _caller: Caller) -> Json<Value> {
    let registry = state.tasks();
    let tasks: Vec<Value> = registry
        .iter()
        .map(|t| {
            let vanilla = registry
                .outcomes(&t.name, Split::Test.name())
                .and_then(|o| mean_accuracy(&o.vanilla));
            json!({
                "name": t.name,
                "test_size": t.test_labels.len(),
                "private_size": t.private_labels.as_ref().map(Vec::len),
                "weak_baseline": t.baselines.map(|b| b.weak.mean),
                "ceiling_baseline": t.baselines.map(|b| b.ceiling.mean),
                "vanilla_baseline": vanilla,
            })
        })
        .collect();
    Json(json!({ "tasks": tasks }))
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
    if name.is_empty() || name.chars().count() > 64 {
        return Err(AppError::unprocessable(
            "bad_name",
            "an agent name has 1 to 64 printable characters",
        ));
    }
    crate::forum::check_agent_text("name", name, false)?;
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

/// `POST /api/admin/entries/{id}/{approve|disqualify|flag|reinstate}`.
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
    Ok(Json(apply_review(&state, id, &action, &req.reason).await?))
}

/// Records an admin's review of an entry (audited); the JSON API and the dashboard
/// both call this.
pub(crate) async fn apply_review(
    state: &AppState,
    id: i64,
    action: &str,
    reason: &str,
) -> Result<Value, AppError> {
    let status = match action {
        "approve" => EntryStatus::Approved,
        "flag" => EntryStatus::Flagged,
        "disqualify" => EntryStatus::Disqualified,
        "reinstate" => EntryStatus::Ok,
        _ => {
            return Err(AppError::not_found(
                "review action (approve, disqualify, flag, reinstate)",
            ));
        }
    };
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 2000 {
        return Err(AppError::unprocessable(
            "bad_reason",
            "a reason has 1 to 2000 characters",
        ));
    }
    crate::forum::check_agent_text("reason", reason, true)?;
    let mut tx = state.store().begin_write().await?;
    if !tx.review_entry(id, status, action, reason, "admin").await? {
        return Err(AppError::not_found("entry"));
    }
    tx.commit().await?;
    state.notify_change();
    Ok(json!({ "entry_id": id, "status": status.as_str(), "reason": reason }))
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

/// Mean accuracy of pinned runs (aar-core's mean); `None` without runs.
fn mean_accuracy(runs: &[aar_core::noise::CorrectRows]) -> Option<f64> {
    let accuracies: Vec<f64> = runs
        .iter()
        .map(aar_core::noise::CorrectRows::accuracy)
        .collect();
    aar_core::metrics::MeanSe::from_values(&accuracies)
        .ok()
        .map(|m| m.mean)
}
