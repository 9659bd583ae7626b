//! What the overseer sees of each researcher: the orchestrator relays transcript
//! lines and a status (notebook, spend, budgets, sandbox resource use) with the
//! admin token; the admin reads them back. Agents can neither write nor read any
//! of it: a transcript shows tool results the author saw, but also other
//! researchers' reasoning.

use std::collections::{BTreeMap, HashMap};

use aar_store::{ResearcherEvent, ResearcherStatus, now_millis};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::AdminCaller;
use crate::error::{ApiJson, ApiPath, ApiQuery, AppError};

/// Most transcript lines one relay request may carry.
const MAX_LINES_PER_RELAY: usize = 1000;
/// Longest transcript line kind.
const MAX_KIND_CHARS: usize = 32;

/// `POST /api/admin/researchers/{agent_id}/activity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// Transcript line number of `lines[0]`.
    #[serde(default)]
    first_seq: i64,
    /// Transcript lines (`{"ts_ms", "kind", ...}` objects), in order.
    #[serde(default)]
    lines: Vec<Value>,
    /// The researcher's latest status, replacing the previous one.
    #[serde(default)]
    status: Option<Value>,
}

fn bad_activity(message: String) -> AppError {
    AppError::unprocessable("bad_activity", message)
}

fn event_of(
    agent_id: &str,
    index: usize,
    seq: i64,
    line: &Value,
) -> Result<ResearcherEvent, AppError> {
    let where_ = format!("lines[{index}] (transcript line {seq})");
    let ts_ms = line
        .get("ts_ms")
        .and_then(Value::as_i64)
        .filter(|t| *t >= 0)
        .ok_or_else(|| bad_activity(format!("{where_}: `ts_ms` must be a non-negative integer")))?;
    let kind = line
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_KIND_CHARS
                && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .ok_or_else(|| bad_activity(format!("{where_}: `kind` must be a short snake_case word")))?;
    Ok(ResearcherEvent {
        agent_id: agent_id.to_owned(),
        seq,
        ts_ms,
        kind: kind.to_owned(),
        body: line.to_string(),
    })
}

/// Stores relayed transcript lines (idempotent per line number) and the status.
pub async fn relay(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath(agent_id): ApiPath<String>,
    ApiJson(activity): ApiJson<Activity>,
) -> Result<Json<Value>, AppError> {
    if state.store().agent(&agent_id).await?.is_none() {
        return Err(AppError::not_found("agent"));
    }
    if activity.first_seq < 0 || activity.lines.len() > MAX_LINES_PER_RELAY {
        return Err(bad_activity(format!(
            "`first_seq` must be >= 0 and `lines` hold at most {MAX_LINES_PER_RELAY} lines"
        )));
    }
    let events = activity
        .lines
        .iter()
        .enumerate()
        .map(|(i, line)| event_of(&agent_id, i, activity.first_seq + i as i64, line))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(status) = &activity.status
        && !status.is_object()
    {
        return Err(bad_activity("`status` must be an object".into()));
    }
    let mut tx = state.store().begin_write().await?;
    let added = tx.append_researcher_events(&events).await?;
    if let Some(status) = &activity.status {
        tx.set_researcher_status(&ResearcherStatus {
            agent_id: agent_id.clone(),
            body: status.to_string(),
            updated_at: now_millis(),
        })
        .await?;
    }
    tx.commit().await?;
    if added > 0 || activity.status.is_some() {
        state.notify_change();
    }
    Ok(Json(json!({ "agent_id": agent_id, "added": added })))
}

/// What a researcher is doing, read from its last transcript line: `thinking`
/// (waiting for its model), `running` (a tool call), `evaluating`, `stopped`,
/// `out_of_budget`, or `idle` (nothing relayed yet). The second value says more.
pub fn researcher_state(last: Option<&Value>) -> (&'static str, String) {
    let Some(line) = last else {
        return ("idle", "nothing relayed yet".into());
    };
    match line.get("kind").and_then(Value::as_str).unwrap_or("") {
        "stop" => {
            let reason = line["reason"].as_str().unwrap_or("").to_owned();
            if line.get("budget").is_some_and(|b| !b.is_null()) {
                ("out_of_budget", reason)
            } else {
                ("stopped", reason)
            }
        }
        "message" if line["message"]["role"] == "assistant" => {
            let calls: Vec<&str> = line["message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["name"].as_str())
                .collect();
            match calls.as_slice() {
                [] => ("thinking", "wrote a message".into()),
                names
                    if names
                        .iter()
                        .any(|n| matches!(*n, "evaluate" | "submit_entry")) =>
                {
                    ("evaluating", names.join(", "))
                }
                names => ("running", names.join(", ")),
            }
        }
        "tool_call" => (
            "thinking",
            format!(
                "read the result of {}",
                line["name"].as_str().unwrap_or("a tool")
            ),
        ),
        _ => ("thinking", "waiting for its model".into()),
    }
}

fn parse_status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Every researcher (every agent) with its state, status and evaluation count:
/// what `GET /api/admin/researchers` returns, and what the dashboard renders.
pub(crate) async fn researcher_overview(state: &AppState) -> Result<Value, AppError> {
    let store = state.store();
    let agents = store.agents().await?;
    let latest: HashMap<String, ResearcherEvent> = store
        .latest_researcher_events()
        .await?
        .into_iter()
        .map(|e| (e.agent_id.clone(), e))
        .collect();
    let statuses: HashMap<String, ResearcherStatus> = store
        .researcher_statuses()
        .await?
        .into_iter()
        .map(|s| (s.agent_id.clone(), s))
        .collect();
    let evaluations: HashMap<String, i64> = store.evaluation_counts().await?.into_iter().collect();
    let budgets = state.policy().budgets;
    let rows: Vec<Value> = agents
        .iter()
        .map(|agent| {
            let last = latest.get(&agent.id);
            let line = last.map(|e| parse_status(&e.body));
            let (what, detail) = researcher_state(line.as_ref());
            let status = statuses.get(&agent.id);
            json!({
                "agent_id": agent.id,
                "name": agent.name,
                "revoked": agent.revoked,
                "state": what,
                "doing": detail,
                "last_event_at": last.map(|e| e.ts_ms),
                "transcript_lines": last.map_or(0, |e| e.seq + 1),
                "evaluations": evaluations.get(&agent.id).copied().unwrap_or(0),
                "evaluation_budget": budgets.agent_total,
                "status": status.map(|s| parse_status(&s.body)),
                "status_updated_at": status.map(|s| s.updated_at),
            })
        })
        .collect();
    Ok(json!({ "researchers": rows }))
}

/// `GET /api/admin/researchers`.
pub async fn list(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    Ok(Json(researcher_overview(&state).await?))
}

/// `?after=&limit=` over transcript line numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptQuery {
    #[serde(default)]
    after: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

/// A researcher's transcript page: what `GET /api/admin/researchers/{id}/transcript` returns.
pub(crate) async fn transcript_page(
    state: &AppState,
    agent_id: &str,
    after: i64,
    limit: i64,
) -> Result<Value, AppError> {
    if state.store().agent(agent_id).await?.is_none() {
        return Err(AppError::not_found("agent"));
    }
    let events = state
        .store()
        .researcher_events(agent_id, after, limit.clamp(1, 1000))
        .await?;
    let lines: Vec<Value> = events
        .iter()
        .map(|e| json!({ "seq": e.seq, "line": parse_status(&e.body) }))
        .collect();
    Ok(json!({ "agent_id": agent_id, "lines": lines }))
}

/// `GET /api/admin/researchers/{id}/transcript?after=&limit=`: lines with `seq > after`.
pub async fn transcript(
    State(state): State<AppState>,
    _admin: AdminCaller,
    ApiPath(agent_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TranscriptQuery>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(
        transcript_page(
            &state,
            &agent_id,
            q.after.unwrap_or(-1),
            q.limit.unwrap_or(200),
        )
        .await?,
    ))
}

/// Best-so-far public and private PGR over time, per task and researcher, from every
/// evaluation (a point where either improves): what `GET /api/admin/progress` returns.
pub(crate) async fn progress_series(state: &AppState) -> Result<Value, AppError> {
    let names: HashMap<String, String> = state
        .store()
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect();
    // task -> agent -> (best public, best private, points)
    type Series = (f64, f64, Vec<Value>);
    let mut by_task: BTreeMap<String, BTreeMap<String, Series>> = BTreeMap::new();
    for point in state.store().evaluation_points().await? {
        let public = state
            .tasks()
            .baselines(&point.task, "test")
            .and_then(|b| b.pgr(point.public_accuracy).ok());
        let private = point.private_accuracy.and_then(|a| {
            state
                .tasks()
                .baselines(&point.task, "test_private")
                .and_then(|b| b.pgr(a).ok())
        });
        let series = by_task
            .entry(point.task)
            .or_default()
            .entry(point.agent_id)
            .or_insert((f64::MIN, f64::MIN, Vec::new()));
        let better_public = public.is_some_and(|p| p > series.0);
        let better_private = private.is_some_and(|p| p > series.1);
        if better_public || better_private {
            series.0 = series.0.max(public.unwrap_or(f64::MIN));
            series.1 = series.1.max(private.unwrap_or(f64::MIN));
            let finite = |v: f64| (v > f64::MIN).then_some(v);
            series.2.push(json!([
                point.created_at,
                finite(series.0),
                finite(series.1)
            ]));
        }
    }
    let tasks: Vec<Value> = by_task
        .into_iter()
        .map(|(task, agents)| {
            let series: Vec<Value> = agents
                .into_iter()
                .map(|(agent_id, (_, _, points))| {
                    let name = names.get(&agent_id).cloned().unwrap_or_default();
                    json!({ "agent_id": agent_id, "name": name, "points": points })
                })
                .collect();
            json!({ "task": task, "series": series })
        })
        .collect();
    Ok(
        json!({ "tasks": tasks, "points": "[unix ms, best public PGR so far, best private PGR so far]" }),
    )
}

/// `GET /api/admin/progress`.
pub async fn progress(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    Ok(Json(progress_series(&state).await?))
}
