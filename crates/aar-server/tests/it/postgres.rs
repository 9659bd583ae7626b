//! The same code on PostgreSQL: a real server started for the test.
//!
//! Always runs; fails (never skips) when PostgreSQL is missing (`bash scripts/setup.sh --test` installs it).

use std::path::Path;

use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, Http, Postgres, ServerProcess, issue_agent, tiny_archive, write_task,
};

#[test]
fn the_server_works_on_postgresql() {
    let pg = Postgres::start();
    let bin = Path::new(env!("CARGO_BIN_EXE_aar-research-server"));
    let dir = tempfile::tempdir().unwrap();
    let task_root = dir.path().join("tasks");
    let labels = write_task(&task_root, "math", 300);
    let env = [("AAR_BUDGET_AGENT_HOUR", "5")];
    let mut server = ServerProcess::start(bin, &pg.url, &task_root, &env);
    let a = issue_agent(server.addr, "a");
    let b = issue_agent(server.addr, "b");
    let mut http = Http::connect(server.addr).unwrap();

    // Evaluation: Ladder, dedup, budget.
    let mut good = labels.clone();
    for p in good.iter_mut().take(30) {
        *p ^= 1;
    }
    let (status, first) = http
        .json(
            "POST",
            "/api/evaluate",
            Some(&a),
            Some(&json!({ "task": "math", "predictions": good })),
        )
        .unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["released_accuracy"], json!(0.9));
    let (_, again) = http
        .json(
            "POST",
            "/api/evaluate",
            Some(&a),
            Some(&json!({ "task": "math", "predictions": good })),
        )
        .unwrap();
    assert_eq!(again["deduplicated"], json!(true));
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    let (_, probe) = http
        .json(
            "POST",
            "/api/evaluate",
            Some(&a),
            Some(&json!({ "task": "math", "predictions": flipped })),
        )
        .unwrap();
    assert_eq!(probe["released_accuracy"], first["released_accuracy"]);
    for i in 0..3 {
        let mut p = good.clone();
        p[200 + i] ^= 1;
        http.json(
            "POST",
            "/api/evaluate",
            Some(&a),
            Some(&json!({ "task": "math", "predictions": p })),
        )
        .unwrap();
    }
    let (status, refusal) = http
        .json(
            "POST",
            "/api/evaluate",
            Some(&a),
            Some(&json!({ "task": "math", "predictions": labels })),
        )
        .unwrap();
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (429, Some("budget_exhausted"))
    );

    // Entries: this stand-alone server runs no verifier (the sandboxed one is tested in
    // aar-oversight), so it refuses them and stores nothing; the leaderboard's queries
    // (entries, verification runs) run on PostgreSQL.
    let method = tiny_archive("method");
    let (status, uploaded) = http
        .request(
            "POST",
            "/api/snapshots?message=method",
            Some(&b),
            Some(("application/gzip", &method)),
        )
        .unwrap();
    assert_eq!(status, 201);
    let uploaded: serde_json::Value = serde_json::from_slice(&uploaded).unwrap();
    let (status, refusal) = http
        .json(
            "POST",
            "/api/entries",
            Some(&b),
            Some(&json!({ "task": "math", "snapshot_id": uploaded["snapshot_id"], "seeds": [0, 1, 2] })),
        )
        .unwrap();
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (503, Some("no_verifier")),
        "{refusal}"
    );
    let (status, board) = http
        .json("GET", "/api/leaderboard?task=math", Some(&a), None)
        .unwrap();
    assert_eq!(status, 200, "{board}");
    assert_eq!(board["ranked"], json!([]), "{board}");
    let (status, board) = http
        .json(
            "GET",
            "/api/admin/leaderboard?task=math",
            Some(ADMIN_TOKEN),
            None,
        )
        .unwrap();
    assert_eq!(
        (status, board["pending"].clone()),
        (200, json!([])),
        "{board}"
    );

    // Forum: tsvector search, votes, comments.
    for (title, body) in [
        (
            "Confidence filtering",
            "dropping uncertain weak labels helps",
        ),
        ("Critic", "a critic hurt"),
    ] {
        let post = json!({ "kind": "result", "title": title, "body": body, "task": "math" });
        assert_eq!(
            http.json("POST", "/api/posts", Some(&a), Some(&post))
                .unwrap()
                .0,
            201
        );
    }
    let (_, found) = http
        .json("GET", "/api/posts?q=weak%20labels", Some(&b), None)
        .unwrap();
    assert_eq!(found["posts"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["posts"][0]["title"], "Confidence filtering");
    let id = found["posts"][0]["post_id"].as_i64().unwrap();
    for _ in 0..2 {
        let (_, v) = http
            .json(
                "POST",
                &format!("/api/posts/{id}/vote"),
                Some(&b),
                Some(&json!({ "vote": "up" })),
            )
            .unwrap();
        assert_eq!(v["upvotes"], 1);
    }
    assert_eq!(
        http.json(
            "POST",
            &format!("/api/posts/{id}/comments"),
            Some(&b),
            Some(&json!({ "body": "agreed" }))
        )
        .unwrap()
        .0,
        201
    );

    // Code store.
    let archive = tiny_archive("hello");
    let (status, meta) = http
        .request(
            "POST",
            "/api/snapshots?message=m",
            Some(&a),
            Some(("application/gzip", &archive)),
        )
        .unwrap();
    assert_eq!(status, 201);
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    let (_, bytes) = http
        .request(
            "GET",
            &format!(
                "/api/snapshots/{}/archive",
                meta["snapshot_id"].as_str().unwrap()
            ),
            Some(&b),
            None,
        )
        .unwrap();
    assert_eq!(bytes, archive);

    // Restart on the same database: everything is served again, the chain is intact.
    server.kill9();
    let server = ServerProcess::start(bin, &pg.url, &task_root, &env);
    let mut http = Http::connect(server.addr).unwrap();
    let (_, post) = http
        .json("GET", &format!("/api/posts/{id}"), Some(&a), None)
        .unwrap();
    assert_eq!(post["comments"][0]["body"], "agreed");
    let (_, verify) = http
        .json("GET", "/api/admin/audit/verify", Some(ADMIN_TOKEN), None)
        .unwrap();
    assert_eq!(verify["status"], "intact", "{verify}");
}
