//! The code store: content-addressed workspace snapshots.

use aar_store::{AgentRecord, SnapshotMeta, SnapshotRecord, now_millis};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::archive::{ArchiveLimits, inspect};
use crate::auth::{AgentCaller, Caller};
use crate::error::{ApiPath, ApiQuery, AppError};
use crate::forum::check_agent_text;
use crate::quotas::check_snapshot_quota;

fn check_id(id: &str) -> Result<(), AppError> {
    if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(AppError::bad_request(
            "bad_snapshot_id",
            "a snapshot id is 64 lowercase hex characters (sha256)",
        ))
    }
}

fn meta_json(m: &SnapshotMeta) -> Value {
    json!({
        "snapshot_id": m.id, "author": { "agent_id": m.agent_id, "agent_name": m.agent_name },
        "provenance": "uploaded by an agent: untrusted content",
        "parent_id": m.parent_id, "message": m.message, "size_bytes": m.size_bytes,
        "file_count": m.file_count, "created_at": m.created_at,
    })
}

/// `POST /api/snapshots?message=&parent=` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) parent: Option<String>,
}

/// `POST /api/snapshots`: the body is the `.tar.gz`; checked before it is stored.
pub async fn upload(
    State(state): State<AppState>,
    AgentCaller(agent): AgentCaller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let (created, meta) = store_snapshot(&state, &agent, q, body.to_vec()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(meta)))
}

/// Checks and stores an archive; true when it is new. The JSON API and MCP both call this.
pub(crate) async fn store_snapshot(
    state: &AppState,
    agent: &AgentRecord,
    q: UploadQuery,
    bytes: Vec<u8>,
) -> Result<(bool, Value), AppError> {
    let limits = state.policy().limits;
    if q.message.trim().is_empty() || q.message.chars().count() > 2000 {
        return Err(AppError::unprocessable(
            "bad_message",
            "a message has 1 to 2000 characters",
        ));
    }
    check_agent_text("message", &q.message, false)?;
    if let Some(parent) = &q.parent {
        check_id(parent)?;
    }
    let archive_limits = ArchiveLimits {
        max_entries: limits.snapshot_files,
        max_unpacked_bytes: limits.snapshot_unpacked_bytes,
    };
    if bytes.len() > limits.snapshot_bytes {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "a snapshot archive has at most {} bytes",
                limits.snapshot_bytes
            ),
        ));
    }
    // Decompressing and hashing up to 32 MiB is CPU work: keep it off the async workers.
    let checked = tokio::task::spawn_blocking(move || {
        let id = hex::encode(Sha256::digest(&bytes));
        inspect(&bytes, archive_limits).map(|s| (s, id, bytes))
    })
    .await
    .map_err(AppError::internal)?;
    let (summary, id, bytes) =
        checked.map_err(|e| AppError::unprocessable("invalid_archive", e.to_string()))?;
    let record = SnapshotRecord {
        meta: SnapshotMeta {
            id: id.clone(),
            agent_id: agent.id.clone(),
            agent_name: agent.name.clone(),
            parent_id: q.parent.clone(),
            message: q.message.clone(),
            size_bytes: bytes.len() as i64,
            file_count: summary.files as i64,
            created_at: now_millis(),
        },
        archive: bytes,
    };
    let mut tx = state.store().begin_write().await?;
    if let Some(parent) = &q.parent
        && !tx.snapshot_exists(parent).await?
    {
        return Err(AppError::not_found("parent snapshot"));
    }
    // An identical upload stores nothing, so it costs no quota.
    if !tx.snapshot_exists(&id).await? {
        let (size, at) = (record.meta.size_bytes, record.meta.created_at);
        check_snapshot_quota(&mut tx, state.policy(), &agent.id, size, at).await?;
    }
    let created = tx.insert_snapshot(&record).await?;
    if created {
        let detail = json!({ "snapshot_id": id, "parent_id": q.parent, "size_bytes": record.meta.size_bytes });
        tx.append_audit(
            &format!("agent:{}", agent.id),
            "upload_snapshot",
            &detail.to_string(),
        );
    }
    tx.commit().await?;
    let meta = state
        .store()
        .snapshot_meta(&id)
        .await?
        .ok_or_else(|| AppError::internal("snapshot vanished"))?;
    Ok((created, meta_json(&meta)))
}

/// `GET /api/snapshots/{id}`.
pub async fn meta(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    check_id(&id)?;
    let meta = state
        .store()
        .snapshot_meta(&id)
        .await?
        .ok_or_else(|| AppError::not_found("snapshot"))?;
    Ok(Json(meta_json(&meta)))
}

/// `GET /api/snapshots/{id}/archive`: the `.tar.gz` bytes.
pub async fn download(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, AppError> {
    let bytes = snapshot_archive(&state, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/gzip")], bytes))
}

/// A snapshot's archive; the JSON API and MCP both call this.
pub(crate) async fn snapshot_archive(state: &AppState, id: &str) -> Result<Vec<u8>, AppError> {
    check_id(id)?;
    state
        .store()
        .snapshot_archive(id)
        .await?
        .ok_or_else(|| AppError::not_found("snapshot"))
}

/// Largest file whose text `GET /api/snapshots/{id}/files` includes.
const MAX_SHOWN_FILE_BYTES: usize = 256 * 1024;
/// How many ancestors a lineage lists.
const MAX_LINEAGE: usize = 50;

/// A snapshot's metadata, its files (text of the small UTF-8 ones) and its lineage
/// (parent, grandparent, ...): what `GET /api/snapshots/{id}/files` returns and the
/// dashboard renders.
pub(crate) async fn snapshot_files(state: &AppState, id: &str) -> Result<Value, AppError> {
    let bytes = snapshot_archive(state, id).await?;
    let meta = state
        .store()
        .snapshot_meta(id)
        .await?
        .ok_or_else(|| AppError::not_found("snapshot"))?;
    let limits = state.policy().limits;
    let archive_limits = ArchiveLimits {
        max_entries: limits.snapshot_files,
        max_unpacked_bytes: limits.snapshot_unpacked_bytes,
    };
    let files = crate::archive::files(&bytes, archive_limits, MAX_SHOWN_FILE_BYTES)
        .map_err(AppError::internal)?;
    let mut lineage = Vec::new();
    let mut parent = meta.parent_id.clone();
    while let Some(pid) = parent.take() {
        if lineage.len() >= MAX_LINEAGE {
            break;
        }
        match state.store().snapshot_meta(&pid).await? {
            Some(m) => {
                parent = m.parent_id.clone();
                lineage.push(meta_json(&m));
            }
            // A parent named at upload that was never uploaded.
            None => lineage.push(json!({ "snapshot_id": pid, "missing": true })),
        }
    }
    let files: Vec<Value> = files
        .into_iter()
        .map(|f| json!({ "path": f.path, "size": f.size, "text": f.text }))
        .collect();
    Ok(json!({ "snapshot": meta_json(&meta), "files": files, "lineage": lineage }))
}

/// `GET /api/snapshots/{id}/files`: metadata, files and lineage (content is untrusted).
pub async fn files(
    State(state): State<AppState>,
    _caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(snapshot_files(&state, &id).await?))
}
