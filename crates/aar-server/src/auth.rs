//! Identity: one admin token, per-agent tokens issued by the admin, and the token
//! remote verification workers share (cluster mode). Each role's token works on its
//! own endpoints only: the worker token is unknown everywhere else, and the admin
//! and agent tokens are refused on the workers' endpoints.
//!
//! An agent token reads `aar_<agent id>.<secret>`. The server stores only the
//! sha256 of the secret and compares hashes in constant time; the id part only
//! selects which row to compare against. Identity always comes from the token,
//! never from a request body.

use aar_store::{AgentRecord, now_millis};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::AppError;

const AGENT_TOKEN_PREFIX: &str = "aar_";

/// sha256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Hex string of `n` random bytes from the OS.
pub fn random_hex(n: usize) -> Result<String, AppError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(AppError::internal)?;
    Ok(hex::encode(bytes))
}

/// A fresh agent id and token; the caller stores `hash_secret(secret)`.
pub fn new_agent_credentials() -> Result<(String, String, String), AppError> {
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    let token = format!("{AGENT_TOKEN_PREFIX}{id}.{secret}");
    Ok((id, secret, token))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The admin (or the orchestrator holding the admin token).
    Admin,
    /// A registered agent.
    Agent(AgentRecord),
}

impl Caller {
    /// The audit log's actor name.
    pub fn actor(&self) -> String {
        match self {
            Caller::Admin => "admin".to_owned(),
            Caller::Agent(agent) => format!("agent:{}", agent.id),
        }
    }
}

fn unauthorized(code: &'static str, message: &str) -> AppError {
    AppError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The bearer token of a request.
fn bearer(parts: &Parts) -> Result<&str, AppError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing_token", "send `Authorization: Bearer <token>`"))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized(
                "invalid_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, AppError> {
    let token = bearer(parts)?;
    if let Some(rest) = token.strip_prefix(AGENT_TOKEN_PREFIX) {
        let (id, secret) = rest
            .split_once('.')
            .ok_or_else(|| unauthorized("invalid_token", "malformed agent token"))?;
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(unauthorized("invalid_token", "malformed agent token"));
        }
        let agent = state
            .store()
            .agent(id)
            .await?
            .ok_or_else(|| unauthorized("invalid_token", "unknown token"))?;
        if !constant_time_eq(&hash_secret(secret), &agent.token_hash) {
            return Err(unauthorized("invalid_token", "unknown token"));
        }
        if agent.revoked {
            return Err(unauthorized("token_revoked", "this token was revoked"));
        }
        if agent.expires_at.is_some_and(|t| t <= now_millis()) {
            return Err(unauthorized("token_expired", "this token has expired"));
        }
        return Ok(Caller::Agent(agent));
    }
    if constant_time_eq(&hash_secret(token), state.admin_token_hash()) {
        return Ok(Caller::Admin);
    }
    Err(unauthorized("invalid_token", "unknown token"))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

/// An authenticated agent; the admin token is refused (agent actions need an agent identity).
#[derive(Debug, Clone)]
pub struct AgentCaller(pub AgentRecord);

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await? {
            Caller::Agent(agent) => Ok(AgentCaller(agent)),
            Caller::Admin => Err(AppError::forbidden("this action needs an agent token")),
        }
    }
}

/// An authenticated admin; agent tokens are refused.
#[derive(Debug, Clone, Copy)]
pub struct AdminCaller;

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, state).await? {
            Caller::Admin => Ok(AdminCaller),
            Caller::Agent(_) => Err(AppError::forbidden("this action needs the admin token")),
        }
    }
}

/// A remote verification worker (cluster mode), authenticated by the workers' token.
/// Agent and admin tokens are refused (403): a worker posts scores, which no agent
/// may, and holds no admin power.
#[derive(Debug, Clone, Copy)]
pub struct WorkerCaller;

impl FromRequestParts<AppState> for WorkerCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if let Some(hash) = state.worker_token_hash()
            && constant_time_eq(&hash_secret(token), hash)
        {
            return Ok(WorkerCaller);
        }
        // Another role's valid token is forbidden here; anything else is unknown.
        authenticate(parts, state).await?;
        Err(AppError::forbidden(
            "this endpoint needs the verification workers' token",
        ))
    }
}
