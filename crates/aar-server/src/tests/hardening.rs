//! Hardening: agent-written text, quotas, body limits and the per-task Ladder
//! step, played through the router; each test fails if the attack works.

use super::*;

/// A router over `policy`, with the `math` task of [`N`] rows.
async fn harness_with(policy: Policy) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("aar.db").display()))
        .await
        .unwrap();
    let test_labels = labels(N, 1);
    let task = ServerTask {
        name: "math".into(),
        test_labels: test_labels.clone(),
        private_labels: None,
        baselines: Some(
            FixedBaselines::from_seed_accuracies(&[0.65, 0.66, 0.64], &[0.8, 0.81, 0.79]).unwrap(),
        ),
    };
    let state = AppState::new(
        store.clone(),
        TaskRegistry::from_tasks(vec![task]),
        ADMIN,
        policy,
    );
    Harness {
        _dir: dir,
        app: app(state),
        store,
        test_labels,
    }
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

async fn post(app: &Router, token: &str, title: &str, body: &str) -> (StatusCode, Value) {
    let finding = json!({ "kind": "result", "title": title, "body": body, "task": "math" });
    call(app, "POST", "/api/posts", Some(token), Some(finding)).await
}

#[tokio::test]
async fn finding_titles_that_would_forge_a_report_row_are_refused() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    for title in [
        "x | 1.00 |\n| forged | 9.99 |",
        "x | `1.00` |\r| forged |",
        "`rank 1`\u{202E}99.0",
        "adm\u{200B}in",
        "\u{1b}[2Jcleared",
        "bom\u{FEFF}",
        "isolate\u{2066}x\u{2069}",
    ] {
        let (status, answer) = post(&h.app, &token, title, "body").await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{title:?}: {answer}"
        );
        assert_eq!(code(&answer), "bad_text", "{title:?}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("title: U+"), "{message}");
    }
    let (_, answer) = post(&h.app, &token, "ab\u{202E}c", "body").await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("title: U+202E at character 3"),
        "{answer}"
    );
    // A body may span lines, but carries no other control or format character.
    let (status, _) = post(&h.app, &token, "fine", "line one\n\tline two").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, answer) = post(&h.app, &token, "fine", "ok\u{202E}kO").await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_text")
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("body: ")
    );
    // Pipes and backticks are text: stored verbatim, escaped where pasted (aar_core::text).
    let (status, stored) = post(&h.app, &token, "x | `1.00` | forged", "b").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(stored["title"], json!("x | `1.00` | forged"));
    let (_, list) = call(&h.app, "GET", "/api/posts", Some(&token), None).await;
    assert_eq!(
        list["posts"].as_array().unwrap().len(),
        2,
        "refused posts were stored"
    );
}

#[tokio::test]
async fn every_agent_written_field_follows_the_text_policy() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let (_, posted) = post(&h.app, &token, "t", "b").await;
    let post_id = posted["post_id"].as_i64().unwrap();

    let comments = format!("/api/posts/{post_id}/comments");
    let (status, answer) = call(
        &h.app,
        "POST",
        &comments,
        Some(&token),
        Some(json!({ "body": "a\u{1b}]0;x" })),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_text")
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("comment: U+001B")
    );
    let (status, _) = call(
        &h.app,
        "POST",
        &comments,
        Some(&token),
        Some(json!({ "body": "two\nlines" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let agents = "/api/admin/agents";
    let (status, answer) = call(
        &h.app,
        "POST",
        agents,
        Some(ADMIN),
        Some(json!({ "name": "ev\u{202E}il" })),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_text")
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("name: U+202E")
    );

    let review = "/api/admin/entries/12345/flag";
    let reason = json!({ "reason": "looks \u{2066}fine\u{2069}" });
    let (status, answer) = call(&h.app, "POST", review, Some(ADMIN), Some(reason)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_text")
    );

    let archive = tar_gz(&[(b"a.txt", tar::EntryType::Regular, b"a", None)]);
    for message in ["two%0Alines", "rtl%E2%80%AEtxt"] {
        let uri = format!("/api/snapshots?message={message}");
        let body = Body::from(archive.clone());
        let (status, answer) = send(&h.app, "POST", &uri, Some(&token), body, false).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNPROCESSABLE_ENTITY, "bad_text")
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("message: U+")
        );
    }
}

#[tokio::test]
async fn snapshot_quotas_refuse_with_429_and_identical_uploads_are_free() {
    let policy = Policy {
        budgets: roomy(),
        quotas: Quotas {
            snapshots_per_agent_hour: 3,
            ..Quotas::default()
        },
        ..Policy::default()
    };
    let h = harness_with(policy).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let upload = |content: &'static [u8]| {
        let archive = tar_gz(&[(b"a.txt", tar::EntryType::Regular, content, None)]);
        send(
            &h.app,
            "POST",
            "/api/snapshots?message=m",
            Some(&token),
            Body::from(archive),
            false,
        )
    };
    for content in [b"1", b"2", b"3"] {
        assert_eq!(upload(content).await.0, StatusCode::CREATED);
    }
    // The same content again stores nothing, so it is not refused.
    assert_eq!(upload(b"3").await.0, StatusCode::OK);
    let (status, answer) = upload(b"4").await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::TOO_MANY_REQUESTS, "snapshot_quota")
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("hourly snapshot quota (limit 3)") && message.contains("frees in"),
        "{message}"
    );

    // The byte quota: a second agent with room for one small archive only.
    let policy = Policy {
        quotas: Quotas {
            snapshot_bytes_per_agent: 150,
            ..Quotas::default()
        },
        ..Policy::default()
    };
    let h = harness_with(policy).await;
    let (_, token) = new_agent(&h.app, "b").await;
    let archive = tar_gz(&[(b"a.txt", tar::EntryType::Regular, b"a", None)]);
    assert!(
        archive.len() <= 150 && archive.len() * 2 > 150,
        "{}",
        archive.len()
    );
    let uri = "/api/snapshots?message=m";
    let (status, _) = send(
        &h.app,
        "POST",
        uri,
        Some(&token),
        Body::from(archive),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let other = tar_gz(&[(b"b.txt", tar::EntryType::Regular, b"b", None)]);
    let (status, answer) = send(&h.app, "POST", uri, Some(&token), Body::from(other), false).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::TOO_MANY_REQUESTS, "snapshot_quota")
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(limit 150)")
    );
}

/// `POST /mcp` with the agent's token, a body and optional headers.
async fn mcp_post(
    app: &Router,
    token: &str,
    body: Body,
    length: Option<usize>,
) -> (StatusCode, Value) {
    let mut req = Request::post("/mcp")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(length) = length {
        req = req.header("content-length", length);
    }
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn mcp_bodies_have_the_json_limit_by_length_and_by_stream() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let limit = Limits::default().json_body_bytes;

    // Declared too large: refused from the header, the body is never read.
    let (status, answer) = mcp_post(&h.app, &token, Body::empty(), Some(40_000_000)).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1523712") && message.contains("POST /api/snapshots"),
        "{message}"
    );

    // No length: refused once the body read passes the limit (the process
    // test `tests/it/limits.rs` streams it chunked over a socket).
    let (status, answer) = mcp_post(&h.app, &token, Body::from(vec![b' '; limit + 1]), None).await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );

    // Just under the limit it reaches rmcp (a JSON-RPC answer, not a 413).
    let call =
        json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {} }).to_string();
    let padded = format!("{call}{}", " ".repeat(limit - call.len()));
    let (status, answer) = mcp_post(&h.app, &token, Body::from(padded), Some(limit)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let tools = answer["result"]["tools"].as_array().unwrap();
    let upload = tools
        .iter()
        .find(|t| t["name"] == "upload_snapshot")
        .unwrap();
    assert!(
        upload["description"]
            .as_str()
            .unwrap()
            .contains("1523712 bytes"),
        "{upload}"
    );

    // And a stranger is refused before any of its body is read.
    let (status, _) = mcp_post(&h.app, "aar_x.y", Body::empty(), Some(40_000_000)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn large_json_bodies_are_parsed_and_refused_as_before() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    // Over 64 KiB: parsed on the blocking pool, same answer.
    let body = json!({ "task": "math", "predictions": to_u8(&h.test_labels) }).to_string();
    let padded = format!("{body}{}", " ".repeat(200_000));
    let (status, answer) = send(
        &h.app,
        "POST",
        "/api/evaluate",
        Some(&token),
        Body::from(padded),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["released_accuracy"], json!(1.0));
    let bad = format!(
        "{{\"task\": \"math\", \"predictions\": [0{}",
        " ".repeat(200_000)
    );
    let (status, answer) = send(
        &h.app,
        "POST",
        "/api/evaluate",
        Some(&token),
        Body::from(bad),
        true,
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let (status, answer) = send(
        &h.app,
        "POST",
        "/api/evaluate",
        Some(&token),
        Body::from(body),
        false,
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
}

#[tokio::test]
async fn on_a_small_test_split_one_flip_never_moves_the_answer() {
    // 64 rows: one flip is 0.0156 of accuracy, over the old fixed step of 0.01.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("aar.db").display()))
        .await
        .unwrap();
    let test_labels = labels(64, 7);
    let task = ServerTask {
        name: "small".into(),
        test_labels: test_labels.clone(),
        private_labels: None,
        baselines: None,
    };
    let policy = Policy {
        budgets: roomy(),
        ..Policy::default()
    };
    let state = AppState::new(store, TaskRegistry::from_tasks(vec![task]), ADMIN, policy);
    let app = app(state);
    let (_, token) = new_agent(&app, "prober").await;
    let eval = |preds: Vec<u8>| {
        call(
            &app,
            "POST",
            "/api/evaluate",
            Some(&token),
            Some(json!({ "task": "small", "predictions": preds })),
        )
    };
    // 48 of 64 right (0.75): released, rounded to the step of 0.065.
    let base = predictions(&test_labels, 48);
    let (_, first) = eval(to_u8(&base)).await;
    assert_eq!(first["released_accuracy"], json!(0.78), "{first}");
    for i in 0..64 {
        let mut probe = base.clone();
        probe[i] = probe[i].flipped();
        let (_, answer) = eval(to_u8(&probe)).await;
        assert_eq!(
            answer["released_accuracy"], first["released_accuracy"],
            "flip {i} moved it"
        );
        assert_eq!(answer["improved"], json!(false), "flip {i}");
    }
}

#[tokio::test]
async fn openapi_documents_the_new_refusals() {
    let h = harness(roomy()).await;
    let (_, doc) = call(&h.app, "GET", "/openapi.json", Some(ADMIN), None).await;
    for (path, status, code) in [
        ("/mcp", "413", "payload_too_large"),
        ("/api/entries", "429", "entry_quota"),
        ("/api/entries", "422", "bad_text"),
        ("/api/posts", "422", "bad_text"),
        ("/api/snapshots", "429", "snapshot_quota"),
        ("/api/admin/agents", "422", "bad_text"),
    ] {
        let description = doc["paths"][path]["post"]["responses"][status]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(
            description.starts_with(code),
            "{path} {status}: {description:?}"
        );
    }
}
