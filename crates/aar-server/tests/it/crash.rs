//! Kill the server with SIGKILL during a burst of writes, restart it on the
//! same database, and check that every acknowledged write is there.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Http, ServerProcess, issue_agent, tiny_archive, write_task};

const N_TEST: usize = 200;
const WRITERS: usize = 4;

#[derive(Default)]
struct Acked {
    posts: BTreeMap<i64, String>,
    evaluations: Vec<(String, i64, Value)>,
    snapshots: BTreeMap<String, Vec<u8>>,
    connection_errors: usize,
}

#[test]
fn kill_9_during_a_write_burst_loses_no_acknowledged_write() {
    let bin = Path::new(env!("CARGO_BIN_EXE_aar-research-server"));
    let dir = tempfile::tempdir().unwrap();
    let task_root = dir.path().join("tasks");
    let labels = write_task(&task_root, "math", N_TEST);
    let db = format!("sqlite://{}", dir.path().join("aar.db").display());
    let budgets = [
        ("AAR_BUDGET_AGENT_HOUR", "100000"),
        ("AAR_BUDGET_AGENT_TOTAL", "100000"),
        ("AAR_BUDGET_CAMPAIGN_HOUR", "100000"),
        ("AAR_BUDGET_CAMPAIGN_TOTAL", "100000"),
    ];
    let mut server = ServerProcess::start(bin, &db, &task_root, &budgets);
    let addr = server.addr;
    let tokens: Vec<String> = (0..WRITERS)
        .map(|i| issue_agent(addr, &format!("writer-{i}")))
        .collect();

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(w, token)| {
            let (acked, stop, token, labels) =
                (acked.clone(), stop.clone(), token.clone(), labels.clone());
            std::thread::spawn(move || {
                let Ok(mut http) = Http::connect(addr) else {
                    return;
                };
                // Bounded: the kill comes long before this many requests.
                for i in 0..20_000usize {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = match i % 3 {
                        0 => {
                            let title = format!("finding {w}-{i}");
                            let body =
                                json!({ "kind": "insight", "title": title, "body": "burst" });
                            http.json("POST", "/api/posts", Some(&token), Some(&body))
                                .map(|(status, v)| {
                                    if status == 201 {
                                        acked
                                            .lock()
                                            .unwrap()
                                            .posts
                                            .insert(v["post_id"].as_i64().unwrap(), title);
                                    }
                                })
                        }
                        1 => {
                            let mut preds = labels.clone();
                            for (bit, p) in preds.iter_mut().take(24).enumerate() {
                                if (i * WRITERS + w) >> bit & 1 == 1 {
                                    *p ^= 1;
                                }
                            }
                            let body = json!({ "task": "math", "predictions": preds });
                            http.json("POST", "/api/evaluate", Some(&token), Some(&body))
                                .map(|(status, v)| {
                                    if status == 200 {
                                        let id = v["evaluation_id"].as_i64().unwrap();
                                        acked.lock().unwrap().evaluations.push((
                                            token.clone(),
                                            id,
                                            v,
                                        ));
                                    }
                                })
                        }
                        _ => {
                            let archive = tiny_archive(&format!("snapshot {w}-{i}"));
                            http.request(
                                "POST",
                                "/api/snapshots?message=burst",
                                Some(&token),
                                Some(("application/gzip", &archive)),
                            )
                            .map(|(status, v)| {
                                if status == 201 {
                                    let v: Value = serde_json::from_slice(&v).unwrap();
                                    let id = v["snapshot_id"].as_str().unwrap().to_owned();
                                    acked.lock().unwrap().snapshots.insert(id, archive);
                                }
                            })
                        }
                    };
                    if result.is_err() {
                        acked.lock().unwrap().connection_errors += 1;
                        return;
                    }
                }
            })
        })
        .collect();

    // Let the burst run, then kill -9 in the middle of it.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        let a = acked.lock().unwrap();
        if a.posts.len() >= 100 && a.evaluations.len() >= 100 && a.snapshots.len() >= 100 {
            break;
        }
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap();
    assert!(
        acked.connection_errors > 0,
        "the kill did not interrupt the burst"
    );
    assert!(
        !acked.posts.is_empty() && !acked.evaluations.is_empty() && !acked.snapshots.is_empty()
    );

    let server = ServerProcess::start(bin, &db, &task_root, &budgets);
    let mut http = Http::connect(server.addr).unwrap();
    let reader = &tokens[0];
    for (id, title) in &acked.posts {
        let (status, post) = http
            .json("GET", &format!("/api/posts/{id}"), Some(reader), None)
            .unwrap();
        assert_eq!(status, 200, "acknowledged post {id} lost");
        assert_eq!(post["title"].as_str(), Some(title.as_str()));
    }
    for (token, id, answer) in &acked.evaluations {
        let (status, stored) = http
            .json("GET", &format!("/api/evaluations/{id}"), Some(token), None)
            .unwrap();
        assert_eq!(status, 200, "acknowledged evaluation {id} lost");
        assert_eq!(&stored, answer, "evaluation {id} changed");
    }
    for (id, archive) in &acked.snapshots {
        let (status, bytes) = http
            .request(
                "GET",
                &format!("/api/snapshots/{id}/archive"),
                Some(reader),
                None,
            )
            .unwrap();
        assert_eq!(status, 200, "acknowledged snapshot {id} lost");
        assert_eq!(&bytes, archive);
    }
    let (_, verify) = http
        .json("GET", "/api/admin/audit/verify", Some(ADMIN_TOKEN), None)
        .unwrap();
    assert_eq!(verify["status"], "intact", "{verify}");
    eprintln!(
        "crash test: {} posts, {} evaluations, {} snapshots acknowledged before kill -9; all present after restart",
        acked.posts.len(),
        acked.evaluations.len(),
        acked.snapshots.len()
    );
}
