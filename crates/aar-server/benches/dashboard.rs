//! How long each dashboard page takes to render, server-side (the request through the
//! router: session check, the API functions' queries, templates), on a campaign of
//! 10,000 evaluations (each audited), 1,000 posts and 200 verified entries in SQLite.
//! The target is 100 ms per page; the benchmark prints each page's median and p95 over
//! repeated renders and its ratio to that target.
//!
//! `cargo bench -p aar-server --bench dashboard` (add `-- --quick` for fewer rounds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/ui/campaign.rs"]
#[allow(dead_code)]
mod campaign;

use std::time::{Duration, Instant};

use aar_server::{AppState, Policy, TaskRegistry};
use aar_store::{
    AgentRecord, EvaluationInsert, EvaluationRecord, NewEvaluation, NewFlag, NewPost, PostKind,
    SnapshotMeta, SnapshotRecord, Store, VerificationResult, VerificationRun, VerificationState,
    now_millis,
};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

const EVALUATIONS: usize = 10_000;
const POSTS: usize = 1_000;
const ENTRIES: usize = 200;
const RESEARCHERS: usize = 10;
const TARGET: Duration = Duration::from_millis(100);

async fn seed(store: &Store) -> Vec<String> {
    let agents: Vec<String> = (0..RESEARCHERS).map(|i| format!("{i:016x}")).collect();
    let mut tx = store.begin_write().await.unwrap();
    for (i, id) in agents.iter().enumerate() {
        let agent = AgentRecord {
            id: id.clone(),
            name: format!("researcher-{i}"),
            token_hash: "0".repeat(64),
            created_at: now_millis(),
            expires_at: None,
            revoked: false,
        };
        tx.insert_agent(&agent).await.unwrap();
    }
    tx.commit().await.unwrap();
    let start = now_millis() - 3_600_000;
    for chunk in 0..EVALUATIONS / 1000 {
        let mut tx = store.begin_write().await.unwrap();
        let inserts: Vec<EvaluationInsert> = (0..1000)
            .map(|k| {
                let i = chunk * 1000 + k;
                let accuracy = 0.6 + 0.2 * ((i * 7919) % 1000) as f64 / 1000.0;
                let new = NewEvaluation {
                    agent_id: agents[i % RESEARCHERS].clone(),
                    task: "sentiment".into(),
                    predictions_hash: format!("{i:064x}"),
                    n_predictions: campaign::N_TEST as i64,
                    public_accuracy: accuracy,
                    private_accuracy: Some(accuracy - 0.01),
                    released_accuracy: None,
                    entry_id: None,
                    seed: None,
                    response: "{}".into(),
                    created_at: start + i as i64 * 300,
                };
                tx.append_audit(&format!("agent:{}", new.agent_id), "evaluate", "{}");
                EvaluationInsert {
                    record: EvaluationRecord {
                        id: i as i64 + 1,
                        new,
                    },
                    predictions: campaign::labels(campaign::N_TEST, i as u64),
                }
            })
            .collect();
        tx.insert_evaluations(&inserts).await.unwrap();
        tx.commit().await.unwrap();
    }
    agents
}

async fn seed_forum_and_entries(store: &Store, agents: &[String]) {
    let mut tx = store.begin_write().await.unwrap();
    for i in 0..POSTS {
        let post = NewPost {
            agent_id: agents[i % RESEARCHERS].clone(),
            kind: PostKind::Result,
            task: Some("sentiment".into()),
            title: format!("Finding {i}: self-training with threshold 0.{}", i % 10),
            body: "Two rounds of **self-training** lift PGR.\n\n- round 1\n- round 2\n".repeat(5),
            links: Vec::new(),
            created_at: now_millis(),
        };
        tx.insert_post(&post).await.unwrap();
    }
    for i in 0..ENTRIES {
        let agent = &agents[i % RESEARCHERS];
        let id = format!("{i:064x}");
        let snapshot = SnapshotRecord {
            meta: SnapshotMeta {
                id: id.clone(),
                agent_id: agent.clone(),
                agent_name: String::new(),
                parent_id: None,
                message: format!("method {i}"),
                size_bytes: 10,
                file_count: 1,
                created_at: now_millis(),
            },
            archive: campaign::method_archive(&format!("method {i}"), &json!({})),
        };
        tx.insert_snapshot(&snapshot).await.unwrap();
        let entry = tx
            .insert_entry(
                agent,
                "sentiment",
                &format!("method {i}"),
                &[0, 1, 2],
                Some(&id),
                None,
                now_millis(),
            )
            .await
            .unwrap();
        tx.record_verification(&verified(entry, agent, i))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

fn verified(entry_id: i64, agent: &str, i: usize) -> VerificationResult {
    let runs = (0..3)
        .flat_map(|seed| {
            ["test", "test_private", "transfer"].map(|split| VerificationRun {
                entry_id,
                seed,
                variant: "main".into(),
                split: split.into(),
                accuracy: Some(0.62 + 0.001 * ((i * 31 + seed as usize) % 150) as f64),
                error: None,
                seconds: 20.0,
                predictions: None,
            })
        })
        .collect();
    let flags = i
        .is_multiple_of(10)
        .then(|| NewFlag {
            entry_id: Some(entry_id),
            agent_id: agent.to_owned(),
            probe: "teacher_ablation".into(),
            summary: "most of the PGR survives without the weak teacher".into(),
            evidence: json!({ "ablated_pgr": 0.8 }).to_string(),
        })
        .into_iter()
        .collect();
    VerificationResult {
        entry_id,
        state: VerificationState::Verified,
        error: None,
        runs,
        flags,
        released_accuracy: None,
        at: now_millis(),
        seconds: 60.0,
    }
}

async fn get(
    app: &axum::Router,
    path: &str,
    cookie: Option<&str>,
    bearer: Option<&str>,
    post: bool,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut request = Request::builder()
        .method(if post { "POST" } else { "GET" })
        .uri(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let rounds = if std::env::args().any(|a| a == "--quick") {
        5
    } else {
        25
    };
    let dir = tempfile::tempdir().unwrap();
    campaign::write_task(&dir.path().join("tasks"));
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("aar.db").display()))
        .await
        .unwrap();
    let seeding = Instant::now();
    let agents = seed(&store).await;
    seed_forum_and_entries(&store, &agents).await;
    eprintln!(
        "seeded {EVALUATIONS} evaluations, {POSTS} posts, {ENTRIES} entries in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let tasks = TaskRegistry::load(&dir.path().join("tasks")).unwrap();
    let state = AppState::new(store, tasks, campaign::ADMIN_TOKEN, Policy::default());
    let app = aar_server::app(state);
    let (_, _, link) = get(
        &app,
        "/api/admin/ui/login-link",
        None,
        Some(campaign::ADMIN_TOKEN),
        true,
    )
    .await;
    let link: serde_json::Value = serde_json::from_slice(&link).unwrap();
    let (_, headers, _) = get(&app, link["path"].as_str().unwrap(), None, None, false).await;
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let pages = [
        "/ui/".to_owned(),
        "/ui/leaderboard".to_owned(),
        "/ui/review".to_owned(),
        "/ui/entries/100".to_owned(),
        format!("/ui/researchers/{}", agents[0]),
        "/ui/forum".to_owned(),
        "/ui/forum?q=self-training".to_owned(),
        "/ui/forum/500".to_owned(),
        "/ui/audit".to_owned(),
    ];
    println!(
        "{:<36} {:>10} {:>10} {:>12} {:>9}",
        "page", "median ms", "p95 ms", "vs 100 ms", "KiB"
    );
    for page in &pages {
        let mut times = Vec::with_capacity(rounds);
        let mut size = 0;
        for _ in 0..rounds {
            let started = Instant::now();
            let (status, _, body) = get(&app, page, Some(&cookie), None, false).await;
            times.push(started.elapsed());
            assert_eq!(
                status,
                StatusCode::OK,
                "{page}: {}",
                String::from_utf8_lossy(&body)
            );
            size = body.len();
        }
        times.sort();
        let median = percentile(&times, 0.5);
        println!(
            "{page:<36} {:>10.1} {:>10.1} {:>11.2}x {:>9.0}",
            median.as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            median.as_secs_f64() / TARGET.as_secs_f64(),
            size as f64 / 1024.0
        );
    }
}
