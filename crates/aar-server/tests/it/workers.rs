//! Remote verification workers (cluster mode) against the real server binary: the
//! leased queue over HTTP, on SQLite (and the claim race on PostgreSQL). The worker
//! here is the test itself, speaking the wire format; `aar-oversight`'s tests run
//! the real worker loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Http, Postgres, ServerProcess, issue_agent, write_task};

const WORKER: &str = "worker-token-for-process-tests-0123";
const N_TEST: usize = 300;

/// A task, a server with remote workers, and what the tests need of it.
struct Cluster {
    dir: tempfile::TempDir,
    db: String,
    labels: Vec<u8>,
    server: ServerProcess,
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_aar-research-server"))
}

fn env(lease_ms: u64, attempts: u32) -> Vec<(&'static str, String)> {
    vec![
        ("AAR_VERIFY_WORKER_TOKEN", WORKER.to_owned()),
        ("AAR_VERIFICATION_LEASE_MS", lease_ms.to_string()),
        ("AAR_VERIFICATION_MAX_ATTEMPTS", attempts.to_string()),
    ]
}

impl Cluster {
    /// On SQLite unless `database_url` is given.
    fn start(lease_ms: u64, attempts: u32, database_url: Option<&str>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let labels = write_task(&dir.path().join("tasks"), "math", N_TEST);
        let db = database_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("aar.db").display()),
            str::to_owned,
        );
        let server = Cluster::spawn(dir.path(), &db, lease_ms, attempts);
        Cluster {
            dir,
            db,
            labels,
            server,
        }
    }

    fn spawn(dir: &Path, db: &str, lease_ms: u64, attempts: u32) -> ServerProcess {
        let env = env(lease_ms, attempts);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServerProcess::start(bin(), db, &dir.join("tasks"), &env)
    }

    /// SIGKILL, then the same server again on the same database.
    fn restart(&mut self, lease_ms: u64, attempts: u32) {
        self.server.kill9();
        self.server = Cluster::spawn(self.dir.path(), &self.db, lease_ms, attempts);
    }

    fn http(&self) -> Http {
        Http::connect(self.server.addr).unwrap()
    }
}

/// A method directory: a manifest naming it.
fn method_archive(name: &str) -> Vec<u8> {
    let manifest = json!({ "name": name, "command": ["python3", "method.py"] }).to_string();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "aar-method.json", manifest.as_bytes())
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Uploads a method and enters it with seeds 1, 2, 3: the entry's id and the archive.
fn enter(http: &mut Http, token: &str, name: &str) -> (i64, Vec<u8>) {
    let archive = method_archive(name);
    let (status, meta) = http
        .request(
            "POST",
            "/api/snapshots?message=m",
            Some(token),
            Some(("application/gzip", &archive)),
        )
        .unwrap();
    assert!(status == 201 || status == 200, "{status}");
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    let body = json!({ "task": "math", "snapshot_id": meta["snapshot_id"], "seeds": [1, 2, 3] });
    let (status, created) = http
        .json("POST", "/api/entries", Some(token), Some(&body))
        .unwrap();
    assert_eq!(status, 201, "{created}");
    (created["entry_id"].as_i64().unwrap(), archive)
}

fn claim(http: &mut Http, worker: &str) -> (u16, Value) {
    http.json(
        "POST",
        "/api/verifier/claim",
        Some(WORKER),
        Some(&json!({ "worker": worker })),
    )
    .unwrap()
}

fn lease_call(http: &mut Http, lease: &str, what: &str, body: Option<&Value>) -> (u16, Value) {
    let uri = format!("/api/verifier/leases/{lease}/{what}");
    http.json("POST", &uri, Some(WORKER), body).unwrap()
}

/// The entry as the admin sees it.
fn entry(http: &mut Http, id: i64) -> Value {
    let (status, entry) = http
        .json(
            "GET",
            &format!("/api/entries/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .unwrap();
    assert_eq!(status, 200, "{entry}");
    entry
}

/// Polls entry `id` until its verification is `state`.
fn wait_for(http: &mut Http, id: i64, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let entry = entry(http, id);
        if entry["verification"] == state {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "entry {id} never became {state}: {entry}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Predictions right on the first `right` rows of `labels`, as the wire's digits.
fn digits(labels: &[u8], right: usize) -> String {
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if (i < right) == (l == 1) { '1' } else { '0' })
        .collect()
}

/// A main run of `seed` on the public test, right on `right` rows.
fn run(entry_id: i64, seed: i64, labels: &[u8], right: usize) -> Value {
    json!({
        "entry_id": entry_id, "seed": seed, "variant": "main", "split": "test",
        "accuracy": right as f64 / labels.len() as f64, "seconds": 1.5,
        "predictions": digits(labels, right),
    })
}

#[test]
fn a_claim_hands_out_the_job_once_and_only_to_the_worker_token() {
    let cluster = Cluster::start(60_000, 3, None);
    let mut http = cluster.http();
    assert_eq!(claim(&mut http, "node-a").0, 204, "nothing queued yet");
    let agent = issue_agent(cluster.server.addr, "a");
    let (_, me) = http.json("GET", "/api/me", Some(&agent), None).unwrap();
    let agent_id = me["agent_id"].as_str().unwrap().to_owned();
    // An evaluation: the author's log the worker's probes read.
    let evaluated = digits(&cluster.labels, 250);
    let predictions: Vec<u8> = evaluated.bytes().map(|b| b - b'0').collect();
    let body = json!({ "task": "math", "predictions": predictions });
    let (status, answer) = http
        .json("POST", "/api/evaluate", Some(&agent), Some(&body))
        .unwrap();
    assert_eq!(status, 200, "{answer}");
    let (id, archive) = enter(&mut http, &agent, "confidence filter");

    // Other roles' tokens are refused on the workers' endpoints, and the workers'
    // token everywhere else.
    for token in [
        Some(agent.as_str()),
        Some(ADMIN_TOKEN),
        None,
        Some("not-a-token-at-all-0123"),
    ] {
        let body = json!({ "worker": "x" });
        let (status, refusal) = cluster
            .http()
            .json("POST", "/api/verifier/claim", token, Some(&body))
            .unwrap();
        let want = if matches!(token, Some(t) if t == agent || t == ADMIN_TOKEN) {
            403
        } else {
            401
        };
        assert_eq!(status, want, "{token:?}: {refusal}");
    }
    for (method, path) in [
        ("GET", "/api/admin/agents"),
        ("GET", "/api/admin/leaderboard?task=math"),
        ("GET", "/api/me"),
        ("GET", "/api/leaderboard?task=math"),
        ("POST", "/api/admin/ui/login-link"),
    ] {
        // A fresh connection each: a refused request's body may be left unread.
        let (status, refusal) = cluster
            .http()
            .json(method, path, Some(WORKER), None)
            .unwrap();
        assert_eq!(status, 401, "{method} {path}: {refusal}");
    }
    let mut http = cluster.http();
    let long = "n".repeat(201);
    assert_eq!(claim(&mut http, &long).0, 400);
    assert_eq!(entry(&mut http, id)["verification"], "queued");

    let (status, claimed) = claim(&mut http, "node-a job 17");
    assert_eq!(status, 200, "{claimed}");
    let job = &claimed["job"];
    assert_eq!(job["entry_id"], id);
    assert_eq!(job["agent_id"], agent_id.as_str());
    assert_eq!(
        (job["task"].as_str(), &job["seeds"]),
        (Some("math"), &json!([1, 2, 3]))
    );
    let sent = base64::engine::general_purpose::STANDARD
        .decode(job["archive"].as_str().unwrap())
        .unwrap();
    assert_eq!(sent, archive);
    let log = job["evaluation_log"].as_array().unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["predictions"], evaluated.as_str());
    assert_eq!(log[0]["evaluation_id"], answer["evaluation_id"]);
    assert_eq!(claimed["lease_seconds"], json!(60.0));
    let lease = claimed["lease"].as_str().unwrap();
    assert!(
        lease.len() >= 32 && lease.bytes().all(|b| b.is_ascii_hexdigit()),
        "{lease}"
    );
    assert_eq!(entry(&mut http, id)["verification"], "running");
    assert_eq!(claim(&mut http, "node-b").0, 204, "the only entry is taken");
}

/// Workers racing for entries on `database_url`: every entry is claimed exactly once.
fn claims_race(cluster: &Cluster) {
    let mut http = cluster.http();
    let mut entries = BTreeSet::new();
    for a in 0..3 {
        let token = issue_agent(cluster.server.addr, &format!("agent-{a}"));
        for i in 0..4 {
            entries.insert(enter(&mut http, &token, &format!("method {a}.{i}")).0);
        }
    }
    let addr = cluster.server.addr;
    let workers: Vec<_> = (0..6)
        .map(|w| {
            std::thread::spawn(move || {
                let mut http = Http::connect(addr).unwrap();
                let mut got = Vec::new();
                loop {
                    let (status, claimed) = claim(&mut http, &format!("node-{w}"));
                    match status {
                        200 => got.push(claimed["job"]["entry_id"].as_i64().unwrap()),
                        204 => return got,
                        other => panic!("claim: {other} {claimed}"),
                    }
                }
            })
        })
        .collect();
    let mut claimed: Vec<i64> = workers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    claimed.sort_unstable();
    let unique: BTreeSet<i64> = claimed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        claimed.len(),
        "an entry was claimed twice: {claimed:?}"
    );
    assert_eq!(unique, entries);
}

#[test]
fn concurrent_claims_never_get_the_same_entry() {
    claims_race(&Cluster::start(60_000, 3, None));
}

#[test]
fn concurrent_claims_never_get_the_same_entry_on_postgresql() {
    let pg = Postgres::start();
    claims_race(&Cluster::start(60_000, 3, Some(&pg.url)));
}

#[test]
fn heartbeats_keep_a_lease_and_a_lease_that_runs_out_requeues_its_entry() {
    let cluster = Cluster::start(1_500, 3, None);
    let mut http = cluster.http();
    let agent = issue_agent(cluster.server.addr, "a");
    let (id, _) = enter(&mut http, &agent, "m");
    let (_, claimed) = claim(&mut http, "node-a");
    let lease = claimed["lease"].as_str().unwrap().to_owned();
    let mut expires = claimed["expires_at"].as_i64().unwrap();
    // Three lease lengths, kept alive by heartbeats.
    let until = Instant::now() + Duration::from_millis(4_500);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(300));
        let (status, renewed) = lease_call(&mut http, &lease, "heartbeat", None);
        assert_eq!(status, 200, "{renewed}");
        let next = renewed["expires_at"].as_i64().unwrap();
        assert!(next > expires, "{next} <= {expires}");
        expires = next;
    }
    assert_eq!(entry(&mut http, id)["verification"], "running");
    // No more heartbeats: back in the queue, and the lease is dead for good.
    wait_for(&mut http, id, "queued", Duration::from_secs(10));
    assert_eq!(lease_call(&mut http, &lease, "heartbeat", None).0, 410);
    let late = json!({ "outcome": { "runs": [run(id, 1, &cluster.labels, 270)], "flags": [] } });
    let (status, refusal) = lease_call(&mut http, &lease, "result", Some(&late));
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (410, Some("lease_gone"))
    );
    assert_eq!(lease_call(&mut http, &lease, "release", None).0, 410);
    // Another worker gets it.
    let (status, again) = claim(&mut http, "node-b");
    assert_eq!((status, again["job"]["entry_id"].as_i64()), (200, Some(id)));
    assert_ne!(again["lease"], lease.as_str());
    // A stopping worker gives it back: queued at once.
    let (status, released) =
        lease_call(&mut http, again["lease"].as_str().unwrap(), "release", None);
    assert_eq!(status, 200, "{released}");
    assert_eq!(entry(&mut http, id)["verification"], "queued");
}

#[test]
fn an_entry_that_loses_its_worker_every_time_fails() {
    let cluster = Cluster::start(700, 3, None);
    let mut http = cluster.http();
    let agent = issue_agent(cluster.server.addr, "a");
    let (id, _) = enter(&mut http, &agent, "m");
    for attempt in 1..=3 {
        let (status, claimed) = claim(&mut http, &format!("node-{attempt} job {attempt}"));
        assert_eq!(
            (status, claimed["job"]["entry_id"].as_i64()),
            (200, Some(id))
        );
        let state = if attempt < 3 { "queued" } else { "failed" };
        wait_for(&mut http, id, state, Duration::from_secs(10));
    }
    let failed = entry(&mut http, id);
    assert_eq!(
        failed["verification_error"], "verification lost its worker 3 times (last: node-3 job 3)",
        "{failed}"
    );
    assert_eq!(claim(&mut http, "node-4").0, 204);
    let (_, board) = http
        .json("GET", "/api/leaderboard?task=math", Some(&agent), None)
        .unwrap();
    assert_eq!(board["failed"][0]["entry_id"], id, "{board}");
}

#[test]
fn a_posted_outcome_is_checked_stored_and_released() {
    let cluster = Cluster::start(60_000, 3, None);
    let mut http = cluster.http();
    let agent = issue_agent(cluster.server.addr, "a");
    let (id, _) = enter(&mut http, &agent, "m");
    let (_, claimed) = claim(&mut http, "node-a");
    let lease = claimed["lease"].as_str().unwrap().to_owned();
    let labels = &cluster.labels;
    let good = |runs: Vec<Value>| json!({ "outcome": { "runs": runs, "flags": [] } });
    let mut wrong_length = run(id, 1, labels, 270);
    wrong_length["predictions"] = json!("0101");
    let mut not_digits = run(id, 1, labels, 270);
    not_digits["predictions"] = json!("2".repeat(N_TEST));
    let mut bad_accuracy = run(id, 1, labels, 270);
    bad_accuracy["accuracy"] = json!(1.5);
    let mut bad_seed_type = run(id, 1, labels, 270);
    bad_seed_type["seed"] = json!("one");
    let flag = |probe: &str| json!({ "probe": probe, "summary": "s", "evidence": {}, "about_agent": false });
    for (body, field) in [
        (
            good(vec![run(id + 1, 1, labels, 270)]),
            "outcome.runs[0].entry_id",
        ),
        (good(vec![run(id, 7, labels, 270)]), "outcome.runs[0].seed"),
        (
            good(vec![
                json!({ "entry_id": id, "seed": 1, "variant": "main", "split": "train", "accuracy": null, "seconds": 1.0 }),
            ]),
            "outcome.runs[0].split",
        ),
        (
            good(vec![run(id, 1, labels, 270), wrong_length]),
            "outcome.runs[1].predictions",
        ),
        (good(vec![not_digits]), "outcome.runs[0].predictions"),
        (good(vec![bad_accuracy]), "outcome.runs[0].accuracy"),
        (good(vec![bad_seed_type]), "outcome.runs[0].seed"),
        (
            good(vec![run(id, 1, labels, 270), run(id, 1, labels, 260)]),
            "outcome.runs[1]",
        ),
        (
            json!({ "outcome": { "runs": [], "flags": [flag("Bad Probe")] } }),
            "outcome.flags[0].probe",
        ),
        (json!({}), "outcome"),
        (
            json!({ "outcome": { "runs": [], "flags": [] }, "error": "x" }),
            "error",
        ),
        (json!({ "error": "" }), "error"),
        (json!({ "error": "x", "score": 0.99 }), "score"),
    ] {
        let (status, refusal) = lease_call(&mut http, &lease, "result", Some(&body));
        assert_eq!(status, 400, "{body}: {refusal}");
        let message = refusal["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{field} not named: {message}");
    }
    assert_eq!(
        entry(&mut http, id)["verification"],
        "running",
        "a refused body stores nothing"
    );

    // 270, 273 and 276 of 300 rows right: exact mean 0.91, released through the Ladder.
    let runs = vec![
        run(id, 1, labels, 270),
        run(id, 2, labels, 273),
        run(id, 3, labels, 276),
    ];
    let (status, stored) = lease_call(&mut http, &lease, "result", Some(&good(runs)));
    assert_eq!(status, 200, "{stored}");
    let verified = wait_for(&mut http, id, "verified", Duration::from_secs(10));
    assert_eq!(verified["released_accuracy"], json!(0.9), "{verified}");
    let (_, board) = http
        .json(
            "GET",
            "/api/admin/leaderboard?task=math",
            Some(ADMIN_TOKEN),
            None,
        )
        .unwrap();
    let row = &board["ranked"][0];
    assert_eq!(row["entry_id"], id, "{board}");
    let mean = row["admin"]["splits"]["test"]["accuracy"]["mean"]
        .as_f64()
        .unwrap();
    assert!((mean - 0.91).abs() < 1e-12, "{row}");
    assert_eq!(
        lease_call(&mut http, &lease, "heartbeat", None).0,
        410,
        "the lease ended"
    );

    // An error is stored as the entry's failure.
    let (failing, _) = enter(&mut http, &agent, "crash");
    let (_, claimed) = claim(&mut http, "node-a");
    assert_eq!(claimed["job"]["entry_id"], failing);
    let error = json!({ "error": "the method exited with 1: boom" });
    let (status, _) = lease_call(
        &mut http,
        claimed["lease"].as_str().unwrap(),
        "result",
        Some(&error),
    );
    assert_eq!(status, 200);
    let failed = wait_for(&mut http, failing, "failed", Duration::from_secs(10));
    assert_eq!(
        failed["verification_error"],
        "the method exited with 1: boom"
    );
}

#[test]
fn a_lease_survives_a_server_restart() {
    let lease_ms = 3_000;
    let mut cluster = Cluster::start(lease_ms, 3, None);
    let mut http = cluster.http();
    let agent = issue_agent(cluster.server.addr, "a");
    let (kept, _) = enter(&mut http, &agent, "kept");
    let (dropped, _) = enter(&mut http, &agent, "dropped");
    let (_, first) = claim(&mut http, "node-a");
    let (_, second) = claim(&mut http, "node-b");
    assert_eq!(
        (
            first["job"]["entry_id"].as_i64(),
            second["job"]["entry_id"].as_i64()
        ),
        (Some(kept), Some(dropped))
    );
    let kept_lease = first["lease"].as_str().unwrap().to_owned();

    cluster.restart(lease_ms, 3);
    let mut http = cluster.http();
    // Still leased after the restart: nothing to claim, the lease renews.
    assert_eq!(claim(&mut http, "node-c").0, 204);
    assert_eq!(entry(&mut http, kept)["verification"], "running");
    assert_eq!(lease_call(&mut http, &kept_lease, "heartbeat", None).0, 200);
    // The other lease, never renewed, runs out as it would have.
    let deadline = Instant::now() + Duration::from_secs(15);
    while entry(&mut http, dropped)["verification"] != "queued" {
        assert!(Instant::now() < deadline, "the dropped lease never ran out");
        assert_eq!(lease_call(&mut http, &kept_lease, "heartbeat", None).0, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(entry(&mut http, kept)["verification"], "running");
    let runs: Vec<Value> = (1..=3)
        .map(|s| run(kept, s, &cluster.labels, 270))
        .collect();
    let body = json!({ "outcome": { "runs": runs, "flags": [] } });
    let (status, stored) = lease_call(&mut http, &kept_lease, "result", Some(&body));
    assert_eq!(status, 200, "{stored}");
    wait_for(&mut http, kept, "verified", Duration::from_secs(10));
}
