//! The aar research server over HTTP: evaluation that cannot be gamed, the
//! forum, the leaderboard, the code store and the admin's review. The only
//! crate that knows HTTP; storage is `aar-store`, labels come from `aar-tasks`.
//!
//! Invariants:
//! - **Labels never leave the server.** An agent learns, per evaluation, only
//!   the Ladder answer (best released accuracy, rounded) and its budget: no
//!   correct count, no per-example information, no label or prediction
//!   distribution, never the private split's score while the campaign is open
//!   (once the admin closes it, nothing more is evaluated and an agent sees
//!   the private and transfer scores of its own entries). An entry's public
//!   score reaches agents only through its author's Ladder.
//! - **Every endpoint but `/health` needs a token**, `/mcp` included. Identity comes from the
//!   token, never from the body. Agent actions need an agent token, review and
//!   issuing tokens need the admin token.
//! - **The leaderboard is computed from the verifier's runs only** (`verify`).
//!   There is no field through which a score can be reported.
//! - **Every evaluation and every admin action is appended to the hash-chained
//!   audit log** in the same transaction that stores it, and acknowledged only
//!   after commit.
//! - **Text is stored and served as text**, marked as written by an agent.
#![deny(missing_docs)]

pub mod archive;
mod auth;
mod board;
mod entries;
mod error;
mod evaluate;
mod forum;
pub mod ladder;
mod mcp;
mod openapi;
mod quotas;
mod researchers;
pub mod scores;
mod snapshots;
pub mod tasks;
mod ui;
pub mod verify;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aar_store::Store;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Router, middleware};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

/// The text policy for agent-written text (checks in, escaping out), for
/// crates that paste what agents wrote into reports and terminals.
pub use aar_core::text;
pub use auth::{AdminCaller, AgentCaller, Caller, WorkerCaller, hash_secret};
pub use error::{ApiJson, AppError};
pub use evaluate::{EvaluateRequest, EvaluateResponse, predictions_hash};
pub use ladder::{LadderConfig, step_for};
pub use quotas::Quotas;
pub use tasks::{ServerTask, TaskRegistry};

/// Where the admin token comes from. Only its sha256 is kept in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// An environment variable holding the token (e.g. `AAR_ADMIN_TOKEN`).
    Env(String),
    /// A file whose trimmed content is the token.
    File(PathBuf),
    /// The token itself (tests, embedding).
    Literal(String),
}

/// Evaluation budgets: counts of stored (not deduplicated) evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Per agent, over the last hour.
    pub agent_per_hour: i64,
    /// Per agent, in all.
    pub agent_total: i64,
    /// Whole campaign, over the last hour.
    pub campaign_per_hour: i64,
    /// Whole campaign, in all.
    pub campaign_total: i64,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            agent_per_hour: 30,
            agent_total: 500,
            campaign_per_hour: 300,
            campaign_total: 5000,
        }
    }
}

/// Size limits on what clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest JSON body, in bytes; MCP requests get the same limit.
    pub json_body_bytes: usize,
    /// Largest snapshot archive (`.tar.gz`), in bytes.
    pub snapshot_bytes: usize,
    /// Largest total size of a snapshot's files once unpacked.
    pub snapshot_unpacked_bytes: u64,
    /// Most entries in a snapshot.
    pub snapshot_files: usize,
    /// Longest post title, in characters.
    pub title_chars: usize,
    /// Longest post body, in characters.
    pub body_chars: usize,
    /// Longest comment, in characters.
    pub comment_chars: usize,
    /// Fewest seeds a leaderboard entry may declare.
    pub min_seeds: usize,
    /// Most seeds a leaderboard entry may declare.
    pub max_seeds: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            json_body_bytes: 2 << 20,
            snapshot_bytes: 32 << 20,
            snapshot_unpacked_bytes: 256 << 20,
            snapshot_files: 10_000,
            title_chars: 200,
            body_chars: 20_000,
            comment_chars: 5_000,
            min_seeds: 3,
            max_seeds: 32,
        }
    }
}

/// Everything the server's behaviour depends on besides its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Evaluation budgets.
    pub budgets: Budgets,
    /// Size limits.
    pub limits: Limits,
    /// The Ladder's smallest margin and precision (each task's step is [`step_for`] its size).
    pub ladder: LadderConfig,
    /// Quotas on entries and snapshots.
    pub quotas: Quotas,
    /// How long a remote verification worker's claim on an entry lasts without a
    /// heartbeat (workers send one every quarter of it): long enough to ride out a
    /// slow network, short enough that an entry whose node died is soon re-queued.
    pub verification_lease: Duration,
    /// Claims of one entry by remote workers whose lease ran out before the entry is
    /// failed: an entry that kills its node every time must not take the cluster down
    /// one node after another.
    pub verification_max_attempts: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            budgets: Budgets::default(),
            limits: Limits::default(),
            ladder: LadderConfig::default(),
            quotas: Quotas::default(),
            verification_lease: Duration::from_secs(120),
            verification_max_attempts: 3,
        }
    }
}

/// Configuration of [`serve`] (`aar serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `127.0.0.1:8700`.
    pub bind: SocketAddr,
    /// `sqlite://path/to/aar.db` (created if missing) or `postgres://user@host/db`.
    pub database_url: String,
    /// Directory whose sub-directories are labeled tasks (see `aar_tasks::LabeledTask`),
    /// each optionally with a pinned `baselines.json` (`{"weak": [..], "ceiling": [..]}`).
    pub task_root: PathBuf,
    /// Where the admin token comes from.
    pub admin_token: AdminTokenSource,
    /// Budgets, limits and Ladder parameters.
    pub policy: Policy,
    /// Who re-runs entries (`None`: entries stay queued until a server with one runs).
    pub verifier: Option<verify::VerifierHandle>,
    /// The token remote verification workers authenticate with (cluster mode: `aar
    /// verify-worker` on other machines claims entries over `/api/verifier/*`). Neither
    /// the admin token nor an agent token; `None`: no remote workers.
    pub verify_workers: Option<AdminTokenSource>,
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The admin token is missing or too short.
    #[error("admin token: {0}")]
    AdminToken(String),
    /// The verification workers' token is missing, too short, or the admin token.
    #[error("verification worker token: {0}")]
    WorkerToken(String),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] aar_store::StoreError),
    /// The task root could not be loaded.
    #[error(transparent)]
    Tasks(#[from] tasks::TaskLoadError),
    /// Binding or serving failed.
    #[error("serving on {bind}: {source}")]
    Io {
        /// The address.
        bind: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

impl AdminTokenSource {
    /// Reads the token; it must be at least 16 characters.
    pub fn read(&self) -> Result<String, ServerError> {
        self.read_secret().map_err(ServerError::AdminToken)
    }

    /// Reads the token, or says why it cannot be used (for the error of its role).
    fn read_secret(&self) -> Result<String, String> {
        let token = match self {
            AdminTokenSource::Env(var) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?
            }
            AdminTokenSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            AdminTokenSource::Literal(token) => token.clone(),
        };
        let token = token.trim().to_owned();
        if token.len() < 16 || token.starts_with("aar_") {
            return Err("must be at least 16 characters and not start with `aar_`".to_owned());
        }
        Ok(token)
    }
}

/// A workers' token that is the admin token would give every worker the admin's power.
fn same_tokens() -> ServerError {
    ServerError::WorkerToken(
        "it is the admin token: give the workers a token of their own".to_owned(),
    )
}

/// Shared state of every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    tasks: TaskRegistry,
    admin_token_hash: String,
    /// sha256 of the remote verification workers' token, when they are enabled.
    worker_token_hash: Option<String>,
    policy: Policy,
    writer: evaluate::EvaluationWriter,
    verifier: Option<verify::VerifierHandle>,
    verify_queue: Arc<verify::Queue>,
    /// Bumped after every change the dashboard shows; its live views wait on it.
    changes: tokio::sync::watch::Sender<u64>,
    /// The dashboard's admin sessions and one-time login keys.
    sessions: ui::Sessions,
    /// Entries' PGR bootstraps (admin views), computed once.
    pgr_cache: scores::PgrCache,
}

impl AppState {
    /// State over an open store; spawns the evaluation writer on the current runtime.
    pub fn new(store: Store, tasks: TaskRegistry, admin_token: &str, policy: Policy) -> AppState {
        AppState::with_verifier(store, tasks, admin_token, policy, None)
    }

    /// State with a verifier: also spawns the verification loop, which first picks up
    /// entries a previous run left queued or running.
    pub fn with_verifier(
        store: Store,
        tasks: TaskRegistry,
        admin_token: &str,
        policy: Policy,
        verifier: Option<verify::VerifierHandle>,
    ) -> AppState {
        AppState::build(store, tasks, admin_token, policy, verifier, None)
    }

    /// State with a verifier and remote verification workers authenticated by
    /// `worker_token` (which must differ from the admin token); with workers it also
    /// spawns the loop that re-queues entries whose worker's lease ran out.
    pub fn with_verification(
        store: Store,
        tasks: TaskRegistry,
        admin_token: &str,
        policy: Policy,
        verifier: Option<verify::VerifierHandle>,
        worker_token: Option<&str>,
    ) -> Result<AppState, ServerError> {
        if worker_token.is_some_and(|w| w.trim() == admin_token.trim()) {
            return Err(same_tokens());
        }
        let hash = worker_token.map(|t| hash_secret(t.trim()));
        Ok(AppState::build(
            store,
            tasks,
            admin_token,
            policy,
            verifier,
            hash,
        ))
    }

    fn build(
        store: Store,
        tasks: TaskRegistry,
        admin_token: &str,
        policy: Policy,
        verifier: Option<verify::VerifierHandle>,
        worker_token_hash: Option<String>,
    ) -> AppState {
        let writer =
            evaluate::EvaluationWriter::spawn(store.clone(), policy.budgets, policy.ladder);
        tokio::spawn(checkpoint_loop(store.clone()));
        let workers = worker_token_hash.is_some();
        let state = AppState {
            inner: Arc::new(Inner {
                store,
                tasks,
                admin_token_hash: hash_secret(admin_token),
                worker_token_hash,
                policy,
                writer,
                verifier: verifier.clone(),
                verify_queue: Arc::default(),
                changes: tokio::sync::watch::Sender::new(0),
                sessions: ui::Sessions::default(),
                pgr_cache: scores::PgrCache::default(),
            }),
        };
        let local = verifier.filter(|handle| handle.concurrency > 0);
        if workers {
            tokio::spawn(workers::lease_loop(state.clone(), local.is_none()));
        }
        if let Some(handle) = local {
            tokio::spawn(verify::verification_loop(
                state.clone(),
                handle,
                state.inner.verify_queue.clone(),
            ));
        }
        state
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The tasks.
    pub fn tasks(&self) -> &TaskRegistry {
        &self.inner.tasks
    }

    /// Entries' PGR bootstraps, computed once.
    pub(crate) fn pgr_cache(&self) -> &scores::PgrCache {
        &self.inner.pgr_cache
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    fn admin_token_hash(&self) -> &str {
        &self.inner.admin_token_hash
    }

    fn worker_token_hash(&self) -> Option<&str> {
        self.inner.worker_token_hash.as_deref()
    }

    fn evaluation_writer(&self) -> &evaluate::EvaluationWriter {
        &self.inner.writer
    }

    /// The verifier, when this server runs one.
    pub fn verifier(&self) -> Option<&verify::VerifierHandle> {
        self.inner.verifier.as_ref()
    }

    /// Tells the dashboard's live views that something changed.
    pub(crate) fn notify_change(&self) {
        self.inner.changes.send_modify(|version| *version += 1);
    }

    /// A receiver of [`AppState::notify_change`].
    pub(crate) fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The dashboard's sessions.
    pub(crate) fn sessions(&self) -> &ui::Sessions {
        &self.inner.sessions
    }

    /// Wakes the verification loop (a new entry was queued).
    fn wake_verifier(&self) {
        self.inner.verify_queue.wake.notify_one();
    }
}

/// The whole HTTP API: the JSON API, `/openapi.json` and the MCP endpoint at `/mcp`.
pub fn app(state: AppState) -> Router {
    with_boundary(routes(state))
}

fn routes(state: AppState) -> Router {
    let limits = state.policy().limits;
    let snapshot_upload = Router::new()
        .route("/api/snapshots", post(snapshots::upload))
        .layer(DefaultBodyLimit::max(limits.snapshot_bytes));
    // Remote verification workers. Outside `announce_writes`: a heartbeat changes
    // nothing the dashboard shows; the other handlers tell the live views themselves.
    // A result carries every run's predictions: more than an agent's JSON.
    let verification_workers = Router::new()
        .route("/api/verifier/claim", post(workers::claim))
        .route(
            "/api/verifier/leases/{lease}/heartbeat",
            post(workers::heartbeat),
        )
        .route(
            "/api/verifier/leases/{lease}/release",
            post(workers::release),
        )
        .layer(DefaultBodyLimit::max(limits.json_body_bytes))
        .merge(
            Router::new()
                .route("/api/verifier/leases/{lease}/result", post(workers::result))
                .layer(DefaultBodyLimit::max(workers::RESULT_BODY_BYTES)),
        );
    // rmcp reads the body itself: `limit_body` reads it first, under the JSON
    // limit, after `require_agent` (layers run bottom-up) refused strangers.
    let mcp = Router::new()
        .nest_service("/mcp", mcp::service(state.clone()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mcp::limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mcp::require_agent,
        ));
    // Outside `announce_writes`: the relay tells the live views itself, only when it
    // stored something (it posts every few seconds per researcher).
    let relay = Router::new()
        .route(
            "/api/admin/researchers/{id}/activity",
            post(researchers::relay),
        )
        .layer(DefaultBodyLimit::max(limits.json_body_bytes));
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi::openapi))
        .route("/api/me", get(board::me))
        .route("/api/tasks", get(board::list_tasks))
        .route("/api/campaign", get(board::campaign))
        .route("/api/evaluate", post(evaluate::evaluate))
        .route("/api/evaluations/{id}", get(evaluate::get_evaluation))
        .route("/api/entries", post(entries::create_entry))
        .route("/api/entries/{id}", get(entries::get_entry))
        .route("/api/leaderboard", get(entries::leaderboard))
        .route(
            "/api/posts",
            post(forum::create_post).get(forum::list_posts),
        )
        .route("/api/posts/{id}", get(forum::get_post))
        .route("/api/posts/{id}/vote", post(forum::vote))
        .route("/api/posts/{id}/comments", post(forum::comment))
        .route("/api/snapshots/{id}", get(snapshots::meta))
        .route("/api/snapshots/{id}/archive", get(snapshots::download))
        .route(
            "/api/admin/agents",
            post(board::issue_agent).get(board::list_agents),
        )
        .route("/api/admin/agents/{id}/revoke", post(board::revoke_agent))
        .route("/api/admin/evaluations", get(board::admin_evaluations))
        .route("/api/admin/leaderboard", get(entries::admin_leaderboard))
        .route("/api/admin/review", get(entries::review_queue))
        .route("/api/admin/campaign/close", post(board::close_campaign))
        .route("/api/admin/entries/{id}/{action}", post(board::review))
        .route("/api/admin/audit", get(board::audit))
        .route("/api/admin/audit/verify", get(board::verify_audit))
        .route("/api/snapshots/{id}/files", get(snapshots::files))
        .route("/api/admin/researchers", get(researchers::list))
        .route(
            "/api/admin/researchers/{id}/transcript",
            get(researchers::transcript),
        )
        .route("/api/admin/progress", get(researchers::progress))
        .route("/api/admin/ui/login-link", post(ui::login_link))
        .layer(DefaultBodyLimit::max(limits.json_body_bytes))
        .merge(snapshot_upload)
        .merge(mcp)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            announce_writes,
        ))
        .merge(relay)
        .merge(verification_workers)
        .merge(ui::routes(limits.json_body_bytes))
        .fallback(|| async { AppError::not_found("endpoint") })
        .with_state(state)
}

/// After a request that may have changed something (any method but GET and HEAD)
/// succeeds, the dashboard's live views are told.
async fn announce_writes(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let writes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let response = next.run(request).await;
    if writes && response.status().is_success() {
        state.notify_change();
    }
    response
}

/// The layers around every route: a panic in a handler becomes a JSON 500
/// (code `panic`) instead of a dropped connection, and each request gets a
/// trace span (visible with `RUST_LOG=tower_http=debug`).
fn with_boundary(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(TraceLayer::new_for_http())
}

/// Keeps SQLite's WAL short without putting checkpoints on the request path.
async fn checkpoint_loop(store: Store) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = store.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// [`serve`] on a runtime of its own, for callers without one (`aar serve`).
pub fn serve_blocking(config: ServerConfig) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Io {
            bind: config.bind,
            source,
        })?;
    runtime.block_on(serve(config))
}

/// Says who will verify entries, when nobody will.
fn warn_about_verification(config: &ServerConfig) {
    let local = config.verifier.as_ref().is_some_and(|h| h.concurrency > 0);
    if config.verifier.is_none() {
        tracing::warn!(
            "no verifier: leaderboard entries are refused (none could be checked), and entries already queued stay queued"
        );
    } else if !local && config.verify_workers.is_none() {
        tracing::warn!(
            "the verifier only checks snapshots and no remote workers are configured: entries stay queued"
        );
    }
}

/// Opens the database and tasks, then serves until the process is stopped.
pub async fn serve(config: ServerConfig) -> Result<(), ServerError> {
    let admin_token = config.admin_token.read()?;
    let worker_token = config
        .verify_workers
        .as_ref()
        .map(|source| source.read_secret().map_err(ServerError::WorkerToken))
        .transpose()?;
    if worker_token.as_deref() == Some(admin_token.as_str()) {
        return Err(same_tokens());
    }
    let store = Store::connect(&config.database_url).await?;
    let tasks = TaskRegistry::load(&config.task_root)?;
    warn_about_verification(&config);
    let state = AppState::with_verification(
        store,
        tasks,
        &admin_token,
        config.policy,
        config.verifier,
        worker_token.as_deref(),
    )?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServerError::Io {
            bind: config.bind,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Io {
        bind: config.bind,
        source,
    })?;
    tracing::info!(%bound, "aar research server listening; dashboard at http://{bound}/ui/ (log in with the admin token)");
    axum::serve(listener, app(state))
        .await
        .map_err(|source| ServerError::Io {
            bind: config.bind,
            source,
        })
}

#[cfg(test)]
mod tests;
