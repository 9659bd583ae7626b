//! The remote verification worker (cluster mode, `aar verify-worker`): verification
//! as jobs on machines that reach the research server over HTTP only.
//!
//! The worker claims the oldest queued entry from the server's leased queue
//! (`aar_server::workers`), runs it through a [`Verifier`] here (the
//! [`crate::SandboxedVerifier`], built from a [`WorkerConfig`]), heartbeats while it
//! runs, and posts the outcome or the error. Transient failures (the server
//! restarting, a network blip) are retried with backoff, a finished result until the
//! server takes it or says the lease is gone: a verification that ran is never
//! dropped silently. When the server says the lease is gone (410: it ran out, the
//! entry went back to the queue), the worker abandons the entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aar_server::verify::{VerificationOutcome, Verifier};
use aar_server::workers::{Claim, ClaimRequest, ResultRequest, WORKER_CHARS};
use aar_tasks::IdKey;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::inputs::TaskSources;
use crate::verifier::VerifierConfig;

/// Why the worker could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config file is missing, malformed, or a field is wrong (the message names it).
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with the field's path (`tasks.math.labeled`).
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The server refused the worker for good (wrong token, a bad request): retrying
    /// cannot help.
    #[error("the server refused {what}: {status} {message}")]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server's answer could not be read.
    #[error("the server's answer to {what} is unreadable: {message}")]
    Protocol {
        /// The request.
        what: String,
        /// What is wrong.
        message: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError {
    let path = path.to_owned();
    move |source| WorkerError::Io { path, source }
}

/// [`VerifierConfig`] as a worker reads it from JSON: the id key is a file (copied
/// from the campaign, mode 0600), not the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Scratch space (inputs, unpacked snapshots, runs).
    pub work_dir: PathBuf,
    /// Each served task's sources.
    pub tasks: BTreeMap<String, TaskSources>,
    /// The aar binary runs use.
    pub aar_binary: PathBuf,
    /// libtorch directory the binary loads.
    #[serde(default)]
    pub libtorch: Option<PathBuf>,
    /// The Python virtual environment runs get.
    #[serde(default)]
    pub python_venv: Option<PathBuf>,
    /// Further read-only mounts (models, the feature cache).
    #[serde(default)]
    pub extra_ro: Vec<PathBuf>,
    /// Environment inside the sandboxes.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Where the decoy truth files are, if the campaign planted decoys.
    #[serde(default)]
    pub decoys: Option<PathBuf>,
    /// The file holding the key for the transfer set's opaque ids (mode 0600).
    pub id_key: PathBuf,
    /// Seeds outside the declared set that are also run (cherry-picking probe).
    pub undeclared_seeds: usize,
    /// Sandbox uid index of verification runs.
    pub sandbox_index: u32,
    /// The `strace` binary.
    pub strace: PathBuf,
}

impl WorkerConfig {
    /// The JSON form of `config`, whose key is kept at `id_key`.
    pub fn from_verifier_config(config: &VerifierConfig, id_key: &Path) -> WorkerConfig {
        WorkerConfig {
            work_dir: config.work_dir.clone(),
            tasks: config.tasks.clone(),
            aar_binary: config.aar_binary.clone(),
            libtorch: config.libtorch.clone(),
            python_venv: config.python_venv.clone(),
            extra_ro: config.extra_ro.clone(),
            env: config.env.iter().cloned().collect(),
            decoys: config.decoys.clone(),
            id_key: id_key.to_owned(),
            undeclared_seeds: config.undeclared_seeds,
            sandbox_index: config.sandbox_index,
            strace: config.strace.clone(),
        }
    }

    /// Reads a config file; errors name the file and the field.
    pub fn read(path: &Path) -> Result<WorkerConfig, WorkerError> {
        let bytes = std::fs::read(path).map_err(io_at(path))?;
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let field = e.path().to_string();
            let message = match field.as_str() {
                "." | "" => e.inner().to_string(),
                _ => format!("{field}: {}", e.inner()),
            };
            WorkerError::Config {
                path: path.to_owned(),
                message,
            }
        })
    }

    /// Writes the config (mode 0600: it names the key and the labeled data) to a
    /// temporary file beside `path`, then renames it into place.
    pub fn write(&self, path: &Path) -> Result<(), WorkerError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| WorkerError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        aar_agents::fsutil::write_private(path, &text).map_err(io_at(path))
    }

    /// The verifier's config, with the key loaded (it must exist: a fresh key would
    /// not match the opaque ids the researchers' copies were made with).
    pub fn verifier_config(&self) -> Result<VerifierConfig, WorkerError> {
        if !self.id_key.is_file() {
            return Err(WorkerError::Config {
                path: self.id_key.clone(),
                message:
                    "id_key: no such file (copy the campaign's oversight/id.key here, mode 0600)"
                        .to_owned(),
            });
        }
        let id_key = IdKey::load_or_create(&self.id_key).map_err(|e| WorkerError::Config {
            path: self.id_key.clone(),
            message: format!("id_key: {e}"),
        })?;
        Ok(VerifierConfig {
            work_dir: self.work_dir.clone(),
            tasks: self.tasks.clone(),
            aar_binary: self.aar_binary.clone(),
            libtorch: self.libtorch.clone(),
            python_venv: self.python_venv.clone(),
            extra_ro: self.extra_ro.clone(),
            env: self.env.clone().into_iter().collect(),
            decoys: self.decoys.clone(),
            id_key,
            undeclared_seeds: self.undeclared_seeds,
            sandbox_index: self.sandbox_index,
            strace: self.strace.clone(),
        })
    }
}

/// How [`run_worker`] behaves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Claim at most one entry; return at once when nothing is queued.
    pub once: bool,
    /// Return after this long with nothing to claim (`None`: never).
    pub idle_exit: Option<Duration>,
    /// What the worker says about itself on each claim (shown to the admin).
    pub worker: String,
    /// Set (by a signal handler) to stop: no further claim; an entry being verified
    /// is given back to the queue unless its outcome is already being posted.
    pub interrupt: Arc<AtomicBool>,
    /// Wait between claims while nothing is queued.
    pub poll: Duration,
    /// Claim only this entry (a job submitted for it with the resources its method
    /// asks for); `None`: whatever is queued.
    pub entry: Option<i64>,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            once: false,
            idle_exit: None,
            worker: default_worker_name(),
            interrupt: Arc::default(),
            poll: Duration::from_secs(5),
            entry: None,
        }
    }
}

/// The host's name, and the Slurm job's id when run as one.
pub fn default_worker_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let name = match std::env::var("SLURM_JOB_ID") {
        Ok(job) if !job.is_empty() => format!("{host} slurm job {job}"),
        _ => host,
    };
    clip(&name, WORKER_CHARS)
}

fn clip(text: &str, chars: usize) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    clean.chars().take(chars).collect()
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Entries claimed.
    pub claimed: usize,
    /// Outcomes posted and stored.
    pub verified: usize,
    /// Errors posted and stored (the entry failed).
    pub failed: usize,
    /// Entries abandoned because the server said the lease was gone.
    pub lost: usize,
    /// Entries given back because the worker was interrupted.
    pub released: usize,
}

/// Claims, verifies and posts until `options` say to stop (see the module docs).
/// `server` is the research server's base URL, `token` the workers' token.
pub async fn run_worker(
    server: &str,
    token: &str,
    verifier: &dyn Verifier,
    options: WorkerOptions,
) -> Result<WorkerSummary, WorkerError> {
    let client = Client::new(server, token)?;
    let worker = clip(&options.worker, WORKER_CHARS);
    let mut summary = WorkerSummary::default();
    let mut idle_since = Instant::now();
    while !interrupted(&options) {
        let Some(claim) = client.claim(&worker, &options).await? else {
            if options.once || options.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                break;
            }
            sleep_unless_interrupted(options.poll, &options.interrupt).await;
            continue;
        };
        summary.claimed += 1;
        let entry_id = claim.job.entry_id;
        tracing::info!(entry_id, "claimed an entry");
        let done = process(&client, claim, verifier, &options).await?;
        tracing::info!(entry_id, ?done, "entry finished here");
        match done {
            Done::Verified => summary.verified += 1,
            Done::Failed => summary.failed += 1,
            Done::Lost => summary.lost += 1,
            Done::Released => summary.released += 1,
        }
        idle_since = Instant::now();
        if options.once {
            break;
        }
    }
    Ok(summary)
}

fn interrupted(options: &WorkerOptions) -> bool {
    options.interrupt.load(Ordering::SeqCst)
}

async fn sleep_unless_interrupted(total: Duration, interrupt: &AtomicBool) {
    let until = Instant::now() + total;
    while Instant::now() < until && !interrupt.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
    }
}

/// How one claimed entry ended here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Verified,
    Failed,
    Lost,
    Released,
}

/// Verifies one claimed entry with heartbeats, then posts what came of it.
async fn process(
    client: &Client,
    claim: Claim,
    verifier: &dyn Verifier,
    options: &WorkerOptions,
) -> Result<Done, WorkerError> {
    let lease = claim.lease.clone();
    let period = Duration::from_secs_f64((claim.lease_seconds / 4.0).max(0.05));
    let (heartbeats, mut lost) = client.spawn_heartbeats(&lease, period);
    let outcome = match claim.job.into_job() {
        Ok(job) => {
            let verify = verifier.verify(job);
            tokio::pin!(verify);
            let mut check = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    outcome = &mut verify => break outcome,
                    _ = lost.changed() => {
                        heartbeats.abort();
                        return Ok(Done::Lost);
                    }
                    _ = check.tick() => {
                        if interrupted(options) {
                            heartbeats.abort();
                            return client.release(&lease).await;
                        }
                    }
                }
            }
        }
        Err(e) => Err(format!("the worker could not read the job: {e}")),
    };
    let done = client.post_result(&lease, &outcome).await;
    heartbeats.abort();
    done
}

/// The research server, as a worker talks to it.
#[derive(Debug, Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// What one request came to.
enum Answer<T> {
    /// The server answered as hoped.
    Ok(T),
    /// 410: the lease is gone.
    Gone,
    /// Worth retrying (no connection, 5xx, 429).
    Transient(String),
}

/// First and longest wait between retries.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// Longest wait for a claim (the snapshot comes with it) or a result to go through.
const BULK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for a heartbeat or a release.
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest error text the server takes.
const ERROR_CHARS: usize = 20_000;

impl Client {
    fn new(server: &str, token: &str) -> Result<Client, WorkerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| WorkerError::Protocol {
                what: "the HTTP client".to_owned(),
                message: e.to_string(),
            })?;
        Ok(Client {
            http,
            base: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// POSTs `body` to `path`; 2xx gives the response, 410 `Gone`, connection errors,
    /// 5xx, 408 and 429 `Transient`, anything else [`WorkerError::Refused`].
    async fn post(
        &self,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Duration,
    ) -> Result<Answer<reqwest::Response>, WorkerError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Ok(Answer::Transient(e.to_string())),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Ok(response));
        }
        let message = response.text().await.unwrap_or_default();
        if status == StatusCode::GONE {
            return Ok(Answer::Gone);
        }
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            return Ok(Answer::Transient(format!("{status} {message}")));
        }
        Err(WorkerError::Refused {
            what: format!("POST {path}"),
            status: status.as_u16(),
            message,
        })
    }

    /// The next entry, or `None` when nothing is queued (or the server cannot be
    /// reached: the caller waits and asks again).
    async fn claim(
        &self,
        worker: &str,
        options: &WorkerOptions,
    ) -> Result<Option<Claim>, WorkerError> {
        let body = ClaimRequest {
            worker: worker.to_owned(),
            entry_id: options.entry,
        };
        let response = match self
            .post("/api/verifier/claim", Some(&body), BULK_TIMEOUT)
            .await?
        {
            Answer::Ok(response) => response,
            Answer::Gone => return Ok(None),
            Answer::Transient(why) => {
                tracing::warn!(%why, "claim failed; asking again later");
                if !options.once {
                    return Ok(None);
                }
                return Err(WorkerError::Protocol {
                    what: "a claim".to_owned(),
                    message: why,
                });
            }
        };
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        response
            .json::<Claim>()
            .await
            .map(Some)
            .map_err(|e| WorkerError::Protocol {
                what: "a claim".to_owned(),
                message: e.to_string(),
            })
    }

    /// Renews `lease` every `period` on a task of its own (so the verification is never
    /// held up by a slow server); the receiver changes when the server says it is gone.
    fn spawn_heartbeats(
        &self,
        lease: &str,
        period: Duration,
    ) -> (
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Receiver<bool>,
    ) {
        let (tell, lost) = tokio::sync::watch::channel(false);
        let (client, path) = (
            self.clone(),
            format!("/api/verifier/leases/{lease}/heartbeat"),
        );
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match client.post(&path, None::<&()>, SHORT_TIMEOUT).await {
                    Ok(Answer::Ok(_)) => {}
                    Ok(Answer::Transient(why)) => {
                        tracing::warn!(%why, "heartbeat failed; trying again next period")
                    }
                    Ok(Answer::Gone) | Err(_) => {
                        let _ = tell.send(true);
                        return;
                    }
                }
            }
        });
        (task, lost)
    }

    /// Posts the outcome (or the error) until the server takes it or says the lease is
    /// gone. A result the server refuses as malformed is replaced by an error saying
    /// so, so that the entry fails visibly instead of waiting for its lease to run out.
    async fn post_result(
        &self,
        lease: &str,
        outcome: &Result<VerificationOutcome, String>,
    ) -> Result<Done, WorkerError> {
        let (body, done) = match outcome {
            Ok(outcome) => (ResultRequest::from_outcome(outcome), Done::Verified),
            Err(error) => (ResultRequest::from_error(error_text(error)), Done::Failed),
        };
        match self.post_until_taken(lease, &body).await {
            Ok(taken) => Ok(if taken { done } else { Done::Lost }),
            Err(WorkerError::Refused {
                status: 400,
                message,
                ..
            }) => {
                tracing::error!(%message, "the server refused this worker's result");
                let why = format!("the server refused the worker's result: {message}");
                let taken = self
                    .post_until_taken(lease, &ResultRequest::from_error(error_text(&why)))
                    .await?;
                Ok(if taken { Done::Failed } else { Done::Lost })
            }
            Err(e) => Err(e),
        }
    }

    /// True once stored, false when the lease is gone; retries anything transient.
    async fn post_until_taken(
        &self,
        lease: &str,
        body: &ResultRequest,
    ) -> Result<bool, WorkerError> {
        let path = format!("/api/verifier/leases/{lease}/result");
        let mut wait = BACKOFF.0;
        loop {
            match self.post(&path, Some(body), BULK_TIMEOUT).await? {
                Answer::Ok(_) => return Ok(true),
                Answer::Gone => return Ok(false),
                Answer::Transient(why) => {
                    tracing::warn!(%why, retry_in = ?wait, "posting the result failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(BACKOFF.1);
                }
            }
        }
    }

    /// Gives the entry back (the worker is stopping); a few tries, then the lease is
    /// left to run out.
    async fn release(&self, lease: &str) -> Result<Done, WorkerError> {
        let path = format!("/api/verifier/leases/{lease}/release");
        for attempt in 0..3 {
            match self.post(&path, None::<&()>, SHORT_TIMEOUT).await? {
                Answer::Ok(_) | Answer::Gone => break,
                Answer::Transient(why) => {
                    tracing::warn!(%why, attempt, "giving the entry back failed");
                    tokio::time::sleep(BACKOFF.0).await;
                }
            }
        }
        Ok(Done::Released)
    }
}

/// An error as the server takes it: not empty, at most [`ERROR_CHARS`] characters.
fn error_text(error: &str) -> String {
    if error.trim().is_empty() {
        return "the verifier gave no reason".to_owned();
    }
    let count = error.chars().count();
    if count <= ERROR_CHARS {
        return error.to_owned();
    }
    let kept: String = error.chars().take(ERROR_CHARS - 40).collect();
    format!("{kept} ... ({} characters cut)", count - (ERROR_CHARS - 40))
}
