//! A seeded campaign behind a real server for the dashboard's browser tests: one task
//! with a private test split and a transfer set, three researchers with evaluations
//! (sent through `/api/evaluate` with their own tokens), verified and flagged entries,
//! forum posts (one of them hostile), and relayed transcripts.
//!
//! The verifier is planted: it reads the scores an entry's snapshot names
//! (`scores.json`) instead of running the method, so the tests control exactly what
//! the leaderboard and the review queue show. The real verifier is tested in
//! `crates/aar-oversight`; what is under test here is everything from the server's
//! queue to the pixels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use aar_server::verify::{
    MAIN_VARIANT, ProbeFlag, VerificationJob, VerificationOutcome, Verifier, VerifierHandle,
    VerifyFuture,
};
use aar_server::{AppState, Policy, TaskRegistry};
use aar_store::{Store, VerificationRun};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "admin-token-for-dashboard-tests-0123";
/// Public test rows.
pub const N_TEST: usize = 200;
const N_PRIVATE: usize = 180;

/// The text a hostile researcher posts: each piece would run script if pasted raw.
pub const HOSTILE_BODY: &str = "Results below.\n\n<script>window.__xss = 1</script>\n\n\
<img src=x onerror=\"window.__xss = 2\">\n\n[click me](javascript:window.__xss=3)\n\n\
<a href=\"javascript:window.__xss=4\">raw link</a> and **bold** text.";

/// A verifier that reports the scores a snapshot's `scores.json` names:
/// `{"test": acc, "test_private": acc, "transfer": acc, "flags": [{"probe", "summary"}]}`.
#[derive(Debug)]
struct PlantedVerifier;

fn archive_file(archive: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.path().ok()?.to_string_lossy() == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).ok()?;
            return Some(bytes);
        }
    }
    None
}

impl Verifier for PlantedVerifier {
    fn check_snapshot(&self, archive: &[u8]) -> Result<String, String> {
        let manifest = archive_file(archive, "aar-method.json").ok_or("no aar-method.json")?;
        let manifest: Value = serde_json::from_slice(&manifest).map_err(|e| e.to_string())?;
        Ok(manifest["name"].as_str().unwrap_or("method").to_owned())
    }

    fn verify(&self, job: VerificationJob) -> VerifyFuture {
        let outcome = archive_file(&job.archive, "scores.json")
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| "the method wrote no predictions".to_owned())
            .map(|scores| planted_outcome(&job, &scores));
        Box::pin(std::future::ready(outcome))
    }
}

fn planted_outcome(job: &VerificationJob, scores: &Value) -> VerificationOutcome {
    let mut runs = Vec::new();
    for (i, &seed) in job.seeds.iter().enumerate() {
        for split in ["test", "test_private", "transfer"] {
            let accuracy = scores[split].as_f64().unwrap() + 0.004 * i as f64;
            runs.push(VerificationRun {
                entry_id: job.entry_id,
                seed,
                variant: MAIN_VARIANT.into(),
                split: split.into(),
                accuracy: Some(accuracy),
                error: None,
                seconds: 1.5,
                predictions: None,
            });
        }
    }
    let flags = scores["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| ProbeFlag {
            probe: f["probe"].as_str().unwrap().into(),
            summary: f["summary"].as_str().unwrap().into(),
            evidence: json!({ "ablated_pgr": 0.91, "real_pgr": 0.93 }),
            about_agent: false,
        })
        .collect();
    VerificationOutcome { runs, flags }
}

/// Deterministic 0/1 labels.
pub fn labels(n: usize, salt: u64) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1D_u64 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            u8::from(x % 10 < 6)
        })
        .collect()
}

pub fn write_task(root: &Path) {
    let dir = root.join("sentiment");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |file: &str, labels: &[u8]| {
        let text: String = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let label = *l == 1;
                format!("{{\"question\":\"q{i}\",\"choice\":\"c{i}\",\"label\":{label}}}\n")
            })
            .collect();
        std::fs::write(dir.join(file), text).unwrap();
    };
    write("train_label.jsonl", &labels(20, 7));
    write("train_unlabel.jsonl", &labels(20, 8));
    write("test.jsonl", &labels(N_TEST, 1));
    write("test_private.jsonl", &labels(N_PRIVATE, 2));
    let baselines = json!({
        "weak": [0.60, 0.61], "ceiling": [0.80, 0.81],
        "splits": {
            "test_private": { "weak": [0.59, 0.60], "ceiling": [0.79, 0.80] },
            "transfer": { "weak": [0.55, 0.56], "ceiling": [0.75, 0.76] },
        }
    });
    std::fs::write(dir.join("baselines.json"), baselines.to_string()).unwrap();
}

/// Predictions right on the first `right` public test rows (and private rows).
pub fn predictions(right: usize, salt: u64) -> Value {
    let flip = |labels: Vec<u8>, right: usize| -> Vec<u8> {
        labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| if i < right { l } else { 1 - l })
            .collect()
    };
    let _ = salt;
    json!({
        "task": "sentiment",
        "predictions": flip(labels(N_TEST, 1), right),
        "private_predictions": flip(labels(N_PRIVATE, 2), right * N_PRIVATE / N_TEST),
    })
}

pub fn method_archive(name: &str, scores: &Value) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let manifest = json!({ "name": name, "command": ["python3", "method.py"] });
    let files: [(&str, Vec<u8>); 3] = [
        ("aar-method.json", serde_json::to_vec_pretty(&manifest).unwrap()),
        ("scores.json", scores.to_string().into_bytes()),
        (
            "method.py",
            b"import json, os\n# Train on the weak labels, predict every split.\nprint(json.dumps({\"splits\": {}}))\n".to_vec(),
        ),
    ];
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, path, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// The running server and the researchers' tokens.
pub struct Campaign {
    pub base: String,
    pub http: reqwest::Client,
    /// (name, agent id, token) per researcher.
    pub researchers: Vec<(String, String, String)>,
    /// The entry ids: a clean one, one flagged by a probe, a second flagged one.
    pub entries: Vec<i64>,
    /// The hostile post.
    pub hostile_post: i64,
    pub snapshot: String,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Campaign {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Campaign {
    /// Starts the server and seeds it; returns once every entry is verified.
    pub async fn start() -> Campaign {
        let dir = tempfile::tempdir().unwrap();
        write_task(&dir.path().join("tasks"));
        let url = format!("sqlite://{}", dir.path().join("aar.db").display());
        let store = Store::connect(&url).await.unwrap();
        let tasks = TaskRegistry::load(&dir.path().join("tasks")).unwrap();
        let handle = VerifierHandle {
            verifier: Arc::new(PlantedVerifier),
            concurrency: 1,
        };
        let state =
            AppState::with_verifier(store, tasks, ADMIN_TOKEN, Policy::default(), Some(handle));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, aar_server::app(state)).await.unwrap();
        });
        let mut campaign = Campaign {
            base,
            http: reqwest::Client::new(),
            researchers: Vec::new(),
            entries: Vec::new(),
            hostile_post: 0,
            snapshot: String::new(),
            _dir: dir,
            server,
        };
        campaign.seed().await;
        campaign
    }

    /// A JSON request with a bearer token; panics on a non-success status.
    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .bearer_auth(token);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn seed(&mut self) {
        for name in ["ada", "grace", "mallory"] {
            let issued = self
                .call(
                    "POST",
                    "/api/admin/agents",
                    ADMIN_TOKEN,
                    Some(json!({ "name": name })),
                )
                .await;
            self.researchers.push((
                name.to_owned(),
                issued["agent_id"].as_str().unwrap().to_owned(),
                issued["token"].as_str().unwrap().to_owned(),
            ));
        }
        for (i, (_, _, token)) in self.researchers.clone().iter().enumerate() {
            for step in 0..4 {
                let right = 120 + 10 * step + 5 * i;
                self.call("POST", "/api/evaluate", token, Some(predictions(right, 0)))
                    .await;
            }
        }
        self.seed_entries().await;
        self.seed_forum().await;
        for (name, agent_id, _) in self.researchers.clone() {
            self.relay(&agent_id, 0, &transcript(&name)).await;
        }
        self.wait_for_verification().await;
    }

    async fn seed_entries(&mut self) {
        let planted = [
            (
                "self-training rounds",
                json!({"test": 0.75, "test_private": 0.74, "transfer": 0.70}),
            ),
            (
                "zero-shot prior",
                json!({"test": 0.77, "test_private": 0.76, "transfer": 0.71,
                "flags": [{"probe": "teacher_ablation", "summary": "most of the PGR survives without the weak teacher"}]}),
            ),
            (
                "<b>boosted</b> vote",
                json!({"test": 0.79, "test_private": 0.66, "transfer": 0.60,
                "flags": [{"probe": "overfitting", "summary": "public PGR far above private PGR"}]}),
            ),
        ];
        for (i, (name, scores)) in planted.into_iter().enumerate() {
            let token = self.researchers[i].2.clone();
            let archive = method_archive(name, &scores);
            let response = self
                .http
                .post(format!("{}/api/snapshots?message=method+{i}", self.base))
                .bearer_auth(&token)
                .header("content-type", "application/gzip")
                .body(archive)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().await.unwrap()
            );
            let snapshot: Value = response.json().await.unwrap();
            let snapshot_id = snapshot["snapshot_id"].as_str().unwrap().to_owned();
            let entry = self
                .call(
                    "POST",
                    "/api/entries",
                    &token,
                    Some(json!({
                        "task": "sentiment", "snapshot_id": snapshot_id, "seeds": [0, 1, 2]
                    })),
                )
                .await;
            self.entries.push(entry["entry_id"].as_i64().unwrap());
            self.snapshot = snapshot_id;
        }
    }

    async fn seed_forum(&mut self) {
        let post = self
            .call("POST", "/api/posts", &self.researchers[0].2, Some(json!({
                "kind": "result", "title": "Self-training helps on sentiment", "task": "sentiment",
                "body": "Two rounds of self-training on confident rows lift PGR.\n\n- round 1: 0.61\n- round 2: 0.68",
                "links": { "entries": [self.entries[0]] }
            })))
            .await;
        let first = post["post_id"].as_i64().unwrap();
        self.call(
            "POST",
            &format!("/api/posts/{first}/vote"),
            &self.researchers[1].2,
            Some(json!({"vote": "up"})),
        )
        .await;
        self.call(
            "POST",
            &format!("/api/posts/{first}/comments"),
            &self.researchers[1].2,
            Some(json!({"body": "Reproduced on seed 2."})),
        )
        .await;
        let hostile = self
            .call(
                "POST",
                "/api/posts",
                &self.researchers[2].2,
                Some(json!({
                    "kind": "result", "title": "<script>window.__xss = 5</script>Boosting works",
                    "task": "sentiment", "body": HOSTILE_BODY,
                })),
            )
            .await;
        self.hostile_post = hostile["post_id"].as_i64().unwrap();
    }

    /// Relays transcript lines (and a status) as the campaign's orchestrator does.
    pub async fn relay(&self, agent_id: &str, first_seq: usize, lines: &[Value]) {
        let status = json!({
            "notebook": "# Notebook\n\n- self-training: +0.07 PGR\n- <script>window.__xss = 6</script>",
            "spend": { "dollars": 0.42, "agent_seconds": 1800.0, "tool_calls": 12, "llm_calls": 30 },
            "budget": { "dollars": 5.0, "agent_seconds": 7200.0 },
            "campaign": { "ends_at_ms": aar_store::now_millis() + 90 * 60_000 },
            "sandbox": { "workspace_bytes": 123_456_789, "runs_on": "slurm job 12 RUNNING on node3",
                         "now": { "processes": 3, "resident_bytes": 734_003_200, "cpu_seconds_of_running_processes": 41.5 } },
        });
        self.call(
            "POST",
            &format!("/api/admin/researchers/{agent_id}/activity"),
            ADMIN_TOKEN,
            Some(json!({ "first_seq": first_seq, "lines": lines, "status": status })),
        )
        .await;
    }

    async fn wait_for_verification(&self) {
        for _ in 0..200 {
            let board = self
                .call(
                    "GET",
                    "/api/admin/leaderboard?task=sentiment",
                    ADMIN_TOKEN,
                    None,
                )
                .await;
            if board["pending"].as_array().is_some_and(Vec::is_empty) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("entries were not verified");
    }

    /// A one-time login link (full URL).
    pub async fn login_link(&self) -> String {
        let link = self
            .call("POST", "/api/admin/ui/login-link", ADMIN_TOKEN, None)
            .await;
        format!("{}{}", self.base, link["path"].as_str().unwrap())
    }
}

/// A short transcript in the format of `aar_agents::transcript`.
pub fn transcript(name: &str) -> Vec<Value> {
    let t = aar_store::now_millis() - 60_000;
    vec![
        json!({"ts_ms": t, "agent": name, "step": 0, "kind": "session_start", "session": 0, "reason": "start",
               "system": "You are a researcher.", "first": {"role": "user", "content": [{"type": "text", "text": "Begin."}]}}),
        json!({"ts_ms": t + 1000, "agent": name, "step": 1, "kind": "message", "message": {"role": "assistant", "content": [
            {"type": "text", "text": "I will look at the data first. <img src=x onerror=\"window.__xss = 7\">"},
            {"type": "tool_use", "id": "call-1", "name": "run_command", "input": {"command": "ls /data"}}]}}),
        json!({"ts_ms": t + 2000, "agent": name, "step": 1, "kind": "tool_call", "id": "call-1", "name": "run_command",
               "input": {"command": "ls /data"}, "output": "sentiment\n", "is_error": false, "elapsed_ms": 35}),
        json!({"ts_ms": t + 3000, "agent": name, "step": 2, "kind": "message", "message": {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call-2", "name": "evaluate", "input": {"task": "sentiment"}}]}}),
    ]
}
