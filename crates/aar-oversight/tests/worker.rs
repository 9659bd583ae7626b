//! The remote verification worker (`aar_oversight::worker`) against a real research
//! server (in process, over loopback HTTP) with remote workers enabled. The verifier
//! is a stub: what is tested is the worker's loop (claim, heartbeats, posting,
//! retries, interruption) and the server's side of it, not the sandboxed runs (those
//! are `verify.rs`'s).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aar_core::Label;
use aar_core::metrics::FixedBaselines;
use aar_oversight::inputs::TaskSources;
use aar_oversight::worker::WorkerError;
use aar_oversight::{WorkerConfig, WorkerOptions, WorkerSummary, run_worker};
use aar_server::verify::{
    MAIN_VARIANT, PUBLIC_SPLIT, VerificationJob, VerificationOutcome, Verifier, VerifierHandle,
    VerifyFuture,
};
use aar_server::{AppState, Policy, ServerTask, TaskRegistry};
use aar_store::{Store, VerificationRun};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-worker-tests-0123";
const WORKER: &str = "worker-token-for-worker-tests-0123";
const ROWS: usize = 200;

fn labels() -> Vec<Label> {
    (0..ROWS).map(|i| Label::from(i % 3 != 0)).collect()
}

/// A verifier that checks nothing, waits `delay`, then scores every declared seed's
/// main run on the public test as right on the first 150 rows (or fails with `error`).
#[derive(Debug, Default)]
struct Stub {
    delay: Duration,
    error: Option<String>,
    jobs: Mutex<Vec<VerificationJob>>,
}

impl Stub {
    fn taking(delay: Duration) -> Stub {
        Stub {
            delay,
            ..Stub::default()
        }
    }

    fn outcome(job: &VerificationJob) -> VerificationOutcome {
        let predictions: Vec<u8> = labels()
            .iter()
            .enumerate()
            .map(|(i, l)| u8::from((i < 150) == (l.index() == 1)))
            .collect();
        let runs = job
            .seeds
            .iter()
            .map(|&seed| VerificationRun {
                entry_id: job.entry_id,
                seed,
                variant: MAIN_VARIANT.to_owned(),
                split: PUBLIC_SPLIT.to_owned(),
                accuracy: Some(0.75),
                error: None,
                seconds: 2.0,
                predictions: Some(predictions.clone()),
            })
            .collect();
        VerificationOutcome {
            runs,
            flags: Vec::new(),
        }
    }
}

impl Verifier for Stub {
    fn check_snapshot(&self, _archive: &[u8]) -> Result<String, String> {
        Ok("stub".to_owned())
    }

    fn verify(&self, job: VerificationJob) -> VerifyFuture {
        self.jobs.lock().unwrap().push(job.clone());
        let (delay, error) = (self.delay, self.error.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match error {
                Some(e) => Err(e),
                None => Ok(Stub::outcome(&job)),
            }
        })
    }
}

/// The research server on its own runtime and thread, so that stopping it closes
/// every connection (as a server process that dies would).
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Serves the database at `db` on `addr` (a free port when `None`), with a lease of `lease`.
    fn start(db: &Path, addr: Option<SocketAddr>, lease: Duration) -> Server {
        let url = format!("sqlite://{}", db.display());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let store = Store::connect(&url).await.unwrap();
                let state = AppState::with_verification(
                    store,
                    registry(),
                    ADMIN,
                    Policy {
                        verification_lease: lease,
                        ..Policy::default()
                    },
                    Some(VerifierHandle {
                        verifier: Arc::new(Stub::default()),
                        concurrency: 0,
                    }),
                    Some(WORKER),
                )
                .unwrap();
                let bind = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
                let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = axum::serve(listener, aar_server::app(state));
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        let addr = ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and drops the runtime: every connection is closed.
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn registry() -> TaskRegistry {
    TaskRegistry::from_tasks(vec![ServerTask {
        name: "math".into(),
        test_labels: labels(),
        private_labels: None,
        baselines: Some(
            FixedBaselines::from_seed_accuracies(&[0.6, 0.61, 0.62], &[0.8, 0.81, 0.82]).unwrap(),
        ),
    }])
}

/// A JSON call; the status and the body (`null` when empty).
async fn call(
    server: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method.parse().unwrap(), format!("{server}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An agent that evaluated once and entered one method: its token and the entry's id.
async fn queue_entry(server: &str) -> (String, i64) {
    let (status, agent) = call(
        server,
        "POST",
        "/api/admin/agents",
        ADMIN,
        Some(json!({ "name": "a" })),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let token = agent["token"].as_str().unwrap().to_owned();
    let evaluation = json!({ "task": "math", "predictions": vec![1; ROWS] });
    assert_eq!(
        call(server, "POST", "/api/evaluate", &token, Some(evaluation))
            .await
            .0,
        200
    );
    let archive = tar_gz(b"{\"name\": \"m\"}");
    let response = reqwest::Client::new()
        .post(format!("{server}/api/snapshots?message=m"))
        .bearer_auth(&token)
        .body(archive)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let meta: Value = response.json().await.unwrap();
    let entry = json!({ "task": "math", "snapshot_id": meta["snapshot_id"], "seeds": [1, 2, 3] });
    let (status, created) = call(server, "POST", "/api/entries", &token, Some(entry)).await;
    assert_eq!(status, 201, "{created}");
    (token, created["entry_id"].as_i64().unwrap())
}

fn tar_gz(manifest: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "aar-method.json", manifest)
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

async fn entry(server: &str, id: i64) -> Value {
    let (status, entry) = call(server, "GET", &format!("/api/entries/{id}"), ADMIN, None).await;
    assert_eq!(status, 200, "{entry}");
    entry
}

fn once() -> WorkerOptions {
    WorkerOptions {
        once: true,
        worker: "test-node job 1".to_owned(),
        poll: Duration::from_millis(100),
        ..WorkerOptions::default()
    }
}

async fn audit_actions(server: &str) -> Vec<String> {
    let (_, audit) = call(server, "GET", "/api/admin/audit?limit=1000", ADMIN, None).await;
    audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_entry_is_claimed_verified_posted_and_scored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("aar.db"), None, Duration::from_secs(60));
    let (_, id) = queue_entry(&server.url()).await;
    let stub = Stub::default();
    let summary = run_worker(&server.url(), WORKER, &stub, once())
        .await
        .unwrap();
    assert_eq!(
        summary,
        WorkerSummary {
            claimed: 1,
            verified: 1,
            ..WorkerSummary::default()
        }
    );
    let jobs = stub.jobs.lock().unwrap().clone();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].entry_id, jobs[0].seeds.clone()),
        (id, vec![1, 2, 3])
    );
    // The author's evaluation came with the job (the worker has no database).
    let log = jobs[0]
        .evaluation_log
        .as_ref()
        .expect("the job carries the log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].predictions, vec![1; ROWS]);
    let verified = entry(&server.url(), id).await;
    assert_eq!(verified["verification"], "verified", "{verified}");
    let (_, board) = call(
        &server.url(),
        "GET",
        "/api/admin/leaderboard?task=math",
        ADMIN,
        None,
    )
    .await;
    let row = &board["ranked"][0];
    assert_eq!(row["entry_id"], id, "{board}");
    assert_eq!(
        row["admin"]["splits"]["test"]["accuracy"]["mean"],
        json!(0.75),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_an_empty_queue_returns_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("aar.db"), None, Duration::from_secs(60));
    let started = Instant::now();
    let stub = Stub::default();
    let summary = run_worker(&server.url(), WORKER, &stub, once())
        .await
        .unwrap();
    assert_eq!(summary, WorkerSummary::default());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // So does an idle worker, once its idle time is up.
    let options = WorkerOptions {
        once: false,
        idle_exit: Some(Duration::from_millis(300)),
        ..once()
    };
    let started = Instant::now();
    run_worker(&server.url(), WORKER, &stub, options)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A wrong token stops the worker with the server's refusal.
    let refused = run_worker(&server.url(), ADMIN, &stub, once()).await;
    assert!(
        matches!(refused, Err(WorkerError::Refused { status: 403, .. })),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_verification_longer_than_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("aar.db"), None, Duration::from_secs(1));
    let (_, id) = queue_entry(&server.url()).await;
    // Three and a half lease lengths.
    let stub = Stub::taking(Duration::from_millis(3_500));
    let summary = run_worker(&server.url(), WORKER, &stub, once())
        .await
        .unwrap();
    assert_eq!(
        (summary.claimed, summary.verified, summary.lost),
        (1, 1, 0),
        "{summary:?}"
    );
    assert_eq!(entry(&server.url(), id).await["verification"], "verified");
    let actions = audit_actions(&server.url()).await;
    assert!(
        !actions.iter().any(|a| a == "verification_requeued"),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "verification_claimed")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_is_retried_until_the_server_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("aar.db");
    let mut server = Server::start(&db, None, Duration::from_secs(60));
    let (url, addr) = (server.url(), server.addr);
    let (_, id) = queue_entry(&url).await;
    let stub = Arc::new(Stub::taking(Duration::from_millis(1_500)));
    let worker = {
        let (url, stub) = (url.clone(), stub.clone());
        tokio::spawn(async move { run_worker(&url, WORKER, stub.as_ref(), once()).await })
    };
    // Down while the entry is verified (the result finds no server), back 3 s later.
    while stub.jobs.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!worker.is_finished(), "the worker gave up on its result");
    let server = Server::start(&db, Some(addr), Duration::from_secs(60));
    let summary = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .expect("the worker never posted")
        .unwrap()
        .unwrap();
    assert_eq!((summary.claimed, summary.verified), (1, 1), "{summary:?}");
    assert_eq!(entry(&server.url(), id).await["verification"], "verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_posted_and_an_interrupted_worker_gives_its_entry_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("aar.db"), None, Duration::from_secs(60));
    let (_, id) = queue_entry(&server.url()).await;
    let failing = Stub {
        error: Some("the method exited with 1".to_owned()),
        ..Stub::default()
    };
    let summary = run_worker(&server.url(), WORKER, &failing, once())
        .await
        .unwrap();
    assert_eq!((summary.claimed, summary.failed), (1, 1), "{summary:?}");
    let failed = entry(&server.url(), id).await;
    assert_eq!(
        failed["verification_error"], "the method exited with 1",
        "{failed}"
    );

    let (_, second) = queue_entry_again(&server.url()).await;
    let slow = Arc::new(Stub::taking(Duration::from_secs(60)));
    let options = once();
    let interrupt = options.interrupt.clone();
    let worker = {
        let (url, slow) = (server.url(), slow.clone());
        tokio::spawn(async move { run_worker(&url, WORKER, slow.as_ref(), options).await })
    };
    while slow.jobs.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        entry(&server.url(), second).await["verification"],
        "running"
    );
    interrupt.store(true, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .expect("the interrupted worker did not stop")
        .unwrap()
        .unwrap();
    assert_eq!((summary.claimed, summary.released), (1, 1), "{summary:?}");
    assert_eq!(entry(&server.url(), second).await["verification"], "queued");
}

/// A job submitted for one entry (with the GPU its method asks for) takes that entry
/// only, even when an older one waits; an entry no longer queued gives it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_for_one_entry_claims_only_that_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("aar.db"), None, Duration::from_secs(60));
    let (_, older) = queue_entry(&server.url()).await;
    let (_, newer) = queue_entry_again(&server.url()).await;
    let stub = Stub::default();
    let for_newer = WorkerOptions {
        entry: Some(newer),
        ..once()
    };
    let summary = run_worker(&server.url(), WORKER, &stub, for_newer.clone())
        .await
        .unwrap();
    assert_eq!((summary.claimed, summary.verified), (1, 1));
    let claimed: Vec<i64> = stub
        .jobs
        .lock()
        .unwrap()
        .iter()
        .map(|j| j.entry_id)
        .collect();
    assert_eq!(claimed, vec![newer]);
    assert_eq!(entry(&server.url(), older).await["verification"], "queued");
    assert_eq!(
        entry(&server.url(), newer).await["verification"],
        "verified"
    );
    // Done already: a second job for it claims nothing (and not the older entry).
    let again = run_worker(&server.url(), WORKER, &stub, for_newer)
        .await
        .unwrap();
    assert_eq!(again.claimed, 0);
    assert_eq!(entry(&server.url(), older).await["verification"], "queued");
}

/// A second agent's entry (the first agent's name is taken).
async fn queue_entry_again(server: &str) -> (String, i64) {
    let (status, agent) = call(
        server,
        "POST",
        "/api/admin/agents",
        ADMIN,
        Some(json!({ "name": "b" })),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let token = agent["token"].as_str().unwrap().to_owned();
    let archive = tar_gz(b"{\"name\": \"slow\"}");
    let response = reqwest::Client::new()
        .post(format!("{server}/api/snapshots?message=m"))
        .bearer_auth(&token)
        .body(archive)
        .send()
        .await
        .unwrap();
    let meta: Value = response.json().await.unwrap();
    let entry = json!({ "task": "math", "snapshot_id": meta["snapshot_id"], "seeds": [4, 5, 6] });
    let (status, created) = call(server, "POST", "/api/entries", &token, Some(entry)).await;
    assert_eq!(status, 201, "{created}");
    (token, created["entry_id"].as_i64().unwrap())
}

fn sample_config(dir: &Path) -> WorkerConfig {
    WorkerConfig {
        work_dir: dir.join("work"),
        tasks: [(
            "math".to_owned(),
            TaskSources {
                agent_copy: dir.join("agent/math"),
                labeled: dir.join("labeled/math"),
            },
        )]
        .into(),
        aar_binary: "/opt/aar/bin/aar".into(),
        libtorch: Some("/opt/libtorch".into()),
        python_venv: None,
        extra_ro: vec![dir.join("models")],
        env: [("AAR_HOME".to_owned(), "/home/aar".to_owned())].into(),
        decoys: Some(dir.join("decoys")),
        id_key: dir.join("id.key"),
        undeclared_seeds: 2,
        sandbox_index: 900,
        strace: "/usr/bin/strace".into(),
    }
}

#[test]
fn a_worker_config_round_trips_and_a_broken_one_names_its_field() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = sample_config(dir.path());
    let path = dir.path().join("oversight/worker.json");
    config.write(&path).unwrap();
    assert_eq!(WorkerConfig::read(&path).unwrap(), config);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // No stray temporary file beside it.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("worker.json")]);

    let mut broken: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    broken["tasks"]["math"]["labeled"] = json!(3);
    std::fs::write(&path, broken.to_string()).unwrap();
    let error = WorkerConfig::read(&path).unwrap_err().to_string();
    assert!(
        error.contains("worker.json") && error.contains("tasks.math.labeled"),
        "{error}"
    );
    broken["tasks"]["math"]["labeled"] = json!("/x");
    broken.as_object_mut().unwrap().remove("id_key");
    std::fs::write(&path, broken.to_string()).unwrap();
    let error = WorkerConfig::read(&path).unwrap_err().to_string();
    assert!(error.contains("id_key"), "{error}");
    std::fs::write(&path, "{ not json").unwrap();
    let error = WorkerConfig::read(&path).unwrap_err().to_string();
    assert!(error.contains("worker.json"), "{error}");

    // The key must exist (a fresh one would not match the researchers' opaque ids).
    let error = config.verifier_config().unwrap_err().to_string();
    assert!(
        error.contains("id_key") && error.contains("id.key"),
        "{error}"
    );
    std::fs::write(&config.id_key, [7u8; 32]).unwrap();
    std::fs::set_permissions(&config.id_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let verifier = config.verifier_config().unwrap();
    assert_eq!(verifier.id_key, aar_tasks::IdKey::from_bytes([7; 32]));
    assert_eq!(
        verifier.env,
        vec![("AAR_HOME".to_owned(), "/home/aar".to_owned())]
    );
    assert_eq!(
        WorkerConfig::from_verifier_config(&verifier, &config.id_key),
        config
    );
}
