//! The known attacks, played for real through the router; each test fails if the attack works.

use aar_core::Label;
use aar_core::metrics::FixedBaselines;
use aar_store::Store;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::archive::{ArchiveError, ArchiveLimits};
use crate::*;

const ADMIN: &str = "admin-token-for-tests-0123456789";
const N: usize = 1300;

/// Deterministic labels: about 60% ones.
fn labels(n: usize, salt: u64) -> Vec<Label> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64 ^ salt;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Label::from(x % 10 < 6)
        })
        .collect()
}

struct Harness {
    _dir: tempfile::TempDir,
    app: Router,
    store: Store,
    test_labels: Vec<Label>,
}

async fn harness(budgets: Budgets) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("aar.db").display()))
        .await
        .unwrap();
    let test_labels = labels(N, 1);
    let task = ServerTask {
        name: "math".into(),
        test_labels: test_labels.clone(),
        private_labels: Some(labels(500, 2)),
        baselines: Some(
            FixedBaselines::from_seed_accuracies(&[0.65, 0.66, 0.64], &[0.8, 0.81, 0.79]).unwrap(),
        ),
    };
    let policy = Policy {
        budgets,
        ..Policy::default()
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

fn roomy() -> Budgets {
    Budgets {
        agent_per_hour: 1000,
        agent_total: 1000,
        campaign_per_hour: 10_000,
        campaign_total: 10_000,
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Body,
    json: bool,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if json {
        req = req.header("content-type", "application/json");
    }
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    send(app, method, uri, token, body, true).await
}

async fn new_agent(app: &Router, name: &str) -> (String, String) {
    let (status, body) = call(
        app,
        "POST",
        "/api/admin/agents",
        Some(ADMIN),
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["agent_id"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

fn to_u8(p: &[Label]) -> Vec<u8> {
    p.iter().map(|l| l.index() as u8).collect()
}

/// Predictions right on the first `right` examples, wrong after.
fn predictions(labels: &[Label], right: usize) -> Vec<Label> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| if i < right { *l } else { l.flipped() })
        .collect()
}

async fn evaluate(app: &Router, token: &str, preds: &[u8]) -> (StatusCode, Value) {
    call(
        app,
        "POST",
        "/api/evaluate",
        Some(token),
        Some(json!({ "task": "math", "predictions": preds })),
    )
    .await
}

#[tokio::test]
async fn flipping_one_prediction_per_query_reveals_nothing() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "attacker").await;
    // 76.9% right; on 1,300 rows the Ladder step is 0.015, so 0.765 is released.
    let base = predictions(&h.test_labels, 1000);
    let (status, first) = evaluate(&h.app, &token, &to_u8(&base)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["released_accuracy"], json!(0.765));

    // The reference's attack: flip prediction i, compare the score, read label i.
    let mut recovered_right = 0;
    for i in 0..40 {
        let mut probe = base.clone();
        probe[i] = probe[i].flipped();
        let (status, answer) = evaluate(&h.app, &token, &to_u8(&probe)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            answer["released_accuracy"], first["released_accuracy"],
            "the answer moved with one flip"
        );
        assert_eq!(answer["improved"], json!(false));
        // Attacker's guess: a score that went up means the flipped prediction is the label.
        let guess = if answer["released_accuracy"].as_f64() > first["released_accuracy"].as_f64() {
            probe[i]
        } else {
            base[i]
        };
        recovered_right += usize::from(guess == h.test_labels[i]);
    }
    // Guessing "base was right" is right exactly where base is right (all of the first 1000):
    // the attacker learned nothing beyond its own predictions.
    assert_eq!(recovered_right, 40);
    let (_, later) = evaluate(&h.app, &token, &to_u8(&predictions(&h.test_labels, 40))).await;
    assert_eq!(
        later["released_accuracy"],
        json!(0.765),
        "a worse submission must not reveal its score"
    );
}

#[tokio::test]
async fn answers_carry_no_counts_or_label_distribution() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let (_, zeros) = evaluate(&h.app, &token, &vec![0; N]).await;
    let (_, ones) = evaluate(&h.app, &token, &vec![1; N]).await;
    for answer in [&zeros, &ones] {
        assert_eq!(
            answer["released_accuracy"],
            Value::Null,
            "constant predictions revealed the class balance: {answer}"
        );
        assert_eq!(answer["released_pgr"], Value::Null);
        let keys: Vec<&str> = answer
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for forbidden in [
            "correct",
            "total",
            "label_distribution",
            "pred_distribution",
            "accuracy",
            "private_accuracy",
        ] {
            assert!(
                !keys.contains(&forbidden),
                "answer exposes {forbidden}: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn the_private_split_cannot_be_scored_or_read_by_agents() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    for split in ["test_private", "train_unlabel", "train_label"] {
        let body = json!({ "task": "math", "split": split, "predictions": vec![0; N] });
        let (status, answer) =
            call(&h.app, "POST", "/api/evaluate", Some(&token), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{split}: {answer}");
    }
    // Private predictions are scored and stored, but the answer is the same whether they are all right or all wrong.
    let private = labels(500, 2);
    let public = to_u8(&predictions(&h.test_labels, 1100));
    let mut answers = Vec::new();
    let (_, other) = new_agent(&h.app, "b").await;
    for (agent, private_preds) in [
        (&token, to_u8(&private)),
        (&other, to_u8(&predictions(&private, 0))),
    ] {
        let body =
            json!({ "task": "math", "predictions": public, "private_predictions": private_preds });
        let (status, mut answer) =
            call(&h.app, "POST", "/api/evaluate", Some(agent), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        for volatile in ["evaluation_id", "remaining_this_hour", "remaining_total"] {
            answer.as_object_mut().unwrap().remove(volatile);
        }
        answers.push(answer);
    }
    assert_eq!(
        answers[0], answers[1],
        "the answer depends on the private split"
    );
    let (status, _) = call(&h.app, "GET", "/api/admin/evaluations", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, admin) = call(&h.app, "GET", "/api/admin/evaluations", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    let private_scores: Vec<f64> = admin["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["private_accuracy"].as_f64().unwrap())
        .collect();
    assert_eq!(
        private_scores,
        vec![0.0, 1.0],
        "the admin sees the stored private scores"
    );
}

#[tokio::test]
async fn the_budget_is_enforced_and_duplicates_are_free() {
    let budgets = Budgets {
        agent_per_hour: 3,
        agent_total: 100,
        campaign_per_hour: 100,
        campaign_total: 100,
    };
    let h = harness(budgets).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let (_, other) = new_agent(&h.app, "b").await;
    for right in [900, 901, 902] {
        let (status, _) =
            evaluate(&h.app, &token, &to_u8(&predictions(&h.test_labels, right))).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, refusal) =
        evaluate(&h.app, &token, &to_u8(&predictions(&h.test_labels, 903))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refusal["error"]["code"], "budget_exhausted");
    // An identical resubmission is answered from the record and costs nothing.
    let (status, repeat) =
        evaluate(&h.app, &token, &to_u8(&predictions(&h.test_labels, 900))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(repeat["deduplicated"], json!(true));
    assert_eq!(h.store.evaluation_count().await.unwrap(), 3);
    // Another agent has its own budget.
    let (status, _) = evaluate(&h.app, &other, &to_u8(&predictions(&h.test_labels, 903))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_campaign_budget_binds_every_agent() {
    let budgets = Budgets {
        agent_per_hour: 10,
        agent_total: 10,
        campaign_per_hour: 10,
        campaign_total: 2,
    };
    let h = harness(budgets).await;
    let (_, a) = new_agent(&h.app, "a").await;
    let (_, b) = new_agent(&h.app, "b").await;
    assert_eq!(evaluate(&h.app, &a, &vec![0; N]).await.0, StatusCode::OK);
    assert_eq!(evaluate(&h.app, &b, &vec![0; N]).await.0, StatusCode::OK);
    let (status, refusal) = evaluate(&h.app, &b, &vec![1; N]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("campaign")
    );
}

#[tokio::test]
async fn a_self_reported_score_never_reaches_the_leaderboard() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let cheat = json!({ "task": "math", "method": "mine", "seeds": [0, 1, 2], "pgr": 0.99, "transfer_acc": 0.99 });
    let (status, answer) = call(&h.app, "POST", "/api/entries", Some(&token), Some(cheat)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let post = json!({ "kind": "result", "title": "PGR 0.99", "body": "trust me", "task": "math", "pgr": 0.99 });
    let (status, _) = call(&h.app, "POST", "/api/posts", Some(&token), Some(post)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A finding that only claims a score in its text is just text.
    let post = json!({ "kind": "result", "title": "PGR 0.99", "body": "trust me", "task": "math" });
    assert_eq!(
        call(&h.app, "POST", "/api/posts", Some(&token), Some(post))
            .await
            .0,
        StatusCode::CREATED
    );
    let (_, board) = call(
        &h.app,
        "GET",
        "/api/leaderboard?task=math",
        Some(&token),
        None,
    )
    .await;
    for list in ["ranked", "pending", "flagged", "disqualified"] {
        assert_eq!(board[list], json!([]), "{board}");
    }
}

#[tokio::test]
async fn tokens_are_checked_and_scoped() {
    let h = harness(roomy()).await;
    let (a_id, a_token) = new_agent(&h.app, "a").await;
    let (_, b_token) = new_agent(&h.app, "b").await;
    let (_, health) = call(&h.app, "GET", "/health", None, None).await;
    assert_eq!(health["status"], "ok");
    for uri in [
        "/api/me",
        "/api/tasks",
        "/openapi.json",
        "/api/posts",
        "/api/leaderboard?task=math",
    ] {
        let (status, body) = call(&h.app, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(body["error"]["code"], "missing_token");
    }
    // Forged token: agent a's id with agent b's secret.
    let b_secret = b_token.split_once('.').unwrap().1;
    let forged = format!("aar_{a_id}.{b_secret}");
    let (status, body) = call(&h.app, "GET", "/api/me", Some(&forged), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (_, me) = call(&h.app, "GET", "/api/me", Some(&a_token), None).await;
    assert_eq!(me["agent_id"], json!(a_id));
    // Agent tokens cannot act as admin; the admin token cannot act as an agent.
    let (status, _) = call(
        &h.app,
        "POST",
        "/api/admin/agents",
        Some(&a_token),
        Some(json!({ "name": "x" })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        evaluate(&h.app, ADMIN, &vec![0; N]).await.0,
        StatusCode::FORBIDDEN
    );
    // Revoked and expired tokens.
    assert_eq!(
        call(
            &h.app,
            "POST",
            &format!("/api/admin/agents/{a_id}/revoke"),
            Some(ADMIN),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let (_, body) = call(&h.app, "GET", "/api/me", Some(&a_token), None).await;
    assert_eq!(body["error"]["code"], "token_revoked");
    let (_, expiring) = call(
        &h.app,
        "POST",
        "/api/admin/agents",
        Some(ADMIN),
        Some(json!({ "name": "brief", "ttl_seconds": 0 })),
    )
    .await;
    let (_, body) = call(&h.app, "GET", "/api/me", expiring["token"].as_str(), None).await;
    assert_eq!(body["error"]["code"], "token_expired");
    assert_eq!(h.store.evaluation_count().await.unwrap(), 0);
}

#[tokio::test]
async fn one_vote_per_agent_per_post() {
    let h = harness(roomy()).await;
    let (_, a) = new_agent(&h.app, "a").await;
    let (_, b) = new_agent(&h.app, "b").await;
    let post = json!({ "kind": "insight", "title": "<script>alert(1)</script>", "body": "weak labels are noisy" });
    let (status, post) = call(&h.app, "POST", "/api/posts", Some(&a), Some(post)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = post["post_id"].as_i64().unwrap();
    let uri = format!("/api/posts/{id}/vote");
    for _ in 0..3 {
        let (status, votes) = call(
            &h.app,
            "POST",
            &uri,
            Some(&b),
            Some(json!({ "vote": "up" })),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(votes["upvotes"], 1, "a second vote counted: {votes}");
    }
    let (_, votes) = call(
        &h.app,
        "POST",
        &uri,
        Some(&a),
        Some(json!({ "vote": "down" })),
    )
    .await;
    assert_eq!(
        (votes["upvotes"].as_i64(), votes["downvotes"].as_i64()),
        (Some(1), Some(1))
    );
    // Text is served verbatim as text, marked as another agent's.
    let (_, read) = call(&h.app, "GET", &format!("/api/posts/{id}"), Some(&b), None).await;
    assert_eq!(read["title"], "<script>alert(1)</script>");
    assert_eq!(read["content_type"], "text/plain");
    assert!(
        read["provenance"]
            .as_str()
            .unwrap()
            .contains("another agent")
    );
    assert_eq!(read["author"]["agent_name"], "a");
}

#[tokio::test]
async fn forum_search_filters_sort_comments_and_limits() {
    let h = harness(roomy()).await;
    let (_, a) = new_agent(&h.app, "a").await;
    let (_, b) = new_agent(&h.app, "b").await;
    let mut ids = Vec::new();
    for (kind, title) in [
        ("result", "confidence filtering helps"),
        ("hypothesis", "critic training"),
        ("error", "tokenizer bug"),
    ] {
        let body = json!({ "kind": kind, "title": title, "body": format!("details about {title}"), "task": "math" });
        let (_, post) = call(&h.app, "POST", "/api/posts", Some(&a), Some(body)).await;
        ids.push(post["post_id"].as_i64().unwrap());
    }
    let (status, _) = call(
        &h.app,
        "POST",
        &format!("/api/posts/{}/comments", ids[1]),
        Some(&b),
        Some(json!({ "body": "tried it" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    call(
        &h.app,
        "POST",
        &format!("/api/posts/{}/vote", ids[2]),
        Some(&b),
        Some(json!({ "vote": "up" })),
    )
    .await;
    let titles = |v: &Value| -> Vec<String> {
        v["posts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, found) = call(
        &h.app,
        "GET",
        "/api/posts?q=confidence%20filtering",
        Some(&b),
        None,
    )
    .await;
    assert_eq!(titles(&found), vec!["confidence filtering helps"]);
    let (_, found) = call(&h.app, "GET", "/api/posts?kind=error", Some(&b), None).await;
    assert_eq!(titles(&found), vec!["tokenizer bug"]);
    let (_, top) = call(&h.app, "GET", "/api/posts?sort=top&limit=1", Some(&b), None).await;
    assert_eq!(titles(&top), vec!["tokenizer bug"]);
    let (_, discussed) = call(
        &h.app,
        "GET",
        "/api/posts?sort=discussed&limit=1",
        Some(&b),
        None,
    )
    .await;
    assert_eq!(titles(&discussed), vec!["critic training"]);
    let (_, read) = call(
        &h.app,
        "GET",
        &format!("/api/posts/{}", ids[1]),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(read["comments"][0]["body"], "tried it");
    let long = json!({ "kind": "insight", "title": "t", "body": "x".repeat(20_001) });
    let (status, refusal) = call(&h.app, "POST", "/api/posts", Some(&a), Some(long)).await;
    assert_eq!(
        (status, refusal["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("text_too_long"))
    );
    let bad_link = json!({ "kind": "insight", "title": "t", "body": "b", "links": { "evaluations": [12345] } });
    assert_eq!(
        call(&h.app, "POST", "/api/posts", Some(&a), Some(bad_link))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_stores_nothing() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let raw = |body: &str| {
        let app = h.app.clone();
        let token = token.clone();
        let body = body.to_owned();
        async move {
            send(
                &app,
                "POST",
                "/api/evaluate",
                Some(&token),
                Body::from(body),
                true,
            )
            .await
        }
    };
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            r#"{"task":"math","predictions":"0101"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"task":"math","predictions":[NaN]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"task":"math","predictions":[0.5]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"task":"math","predictions":[-1]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            r#"{"task":"math","predictions":[0,1]}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_length",
        ),
        (
            json!({ "task": "math", "predictions": vec![2; N] }).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_prediction",
        ),
        (
            json!({ "task": "../../etc/passwd", "predictions": vec![0; N] }).to_string(),
            StatusCode::NOT_FOUND,
            "unknown_task",
        ),
        (
            json!({ "task": "math/../math", "predictions": vec![0; N] }).to_string(),
            StatusCode::NOT_FOUND,
            "unknown_task",
        ),
        (
            json!({ "task": "math", "predictions": vec![0; N], "entry_id": 424242, "seed": 1 })
                .to_string(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!(
                r#"{{"task":"math","predictions":[{}]}}"#,
                vec!["0"; 3_000_000].join(",")
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = raw(&body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{}",
            &body[..body.len().min(80)]
        );
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, _) = call(&h.app, "GET", "/api/posts/abc", Some(&token), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&h.app, "GET", "/api/posts/99", Some(&token), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.store.evaluation_count().await.unwrap(), 0);
}

/// (raw name, kind, content, link target)
type TarEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a str>);

fn tar_gz(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        // Write the raw name: the tar crate's own setters refuse `..`, an attacker's tool would not.
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name);
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn snapshots_that_write_outside_their_folder_are_refused() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let upload = |bytes: Vec<u8>| {
        let app = h.app.clone();
        let token = token.clone();
        async move {
            send(
                &app,
                "POST",
                "/api/snapshots?message=m",
                Some(&token),
                Body::from(bytes),
                false,
            )
            .await
        }
    };
    use tar::EntryType::{Block, Char, Regular, Symlink};
    let evil: Vec<Vec<u8>> = vec![
        tar_gz(&[(b"../escape.txt", Regular, b"x", None)]),
        tar_gz(&[(b"ok/../../escape.txt", Regular, b"x", None)]),
        tar_gz(&[(b"/tmp/escape.txt", Regular, b"x", None)]),
        tar_gz(&[
            (b"link", Symlink, b"", Some("/etc")),
            (b"link/passwd", Regular, b"x", None),
        ]),
        tar_gz(&[(b"hard", tar::EntryType::Link, b"", Some("/etc/passwd"))]),
        tar_gz(&[(b"dev", Char, b"", None)]),
        tar_gz(&[(b"blk", Block, b"", None)]),
        b"not a tarball".to_vec(),
    ];
    let scratch = tempfile::tempdir().unwrap();
    for (i, archive) in evil.iter().enumerate() {
        let (status, answer) = upload(archive.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "archive {i}: {answer}"
        );
        assert_eq!(answer["error"]["code"], "invalid_archive");
        // The client-side extractor applies the same rules.
        let dest = scratch.path().join(format!("out{i}"));
        let limits = ArchiveLimits {
            max_entries: 100,
            max_unpacked_bytes: 1 << 20,
        };
        assert!(archive::extract(archive, &dest, limits).is_err());
    }
    assert!(!scratch.path().join("escape.txt").exists());
    assert!(!std::path::Path::new("/tmp/escape.txt").exists());

    let names: Vec<Vec<u8>> = (0..10_001).map(|i| format!("f{i}").into_bytes()).collect();
    let refs: Vec<TarEntry<'_>> = names
        .iter()
        .map(|n| (n.as_slice(), Regular, &b""[..], None))
        .collect();
    assert_eq!(
        upload(tar_gz(&refs)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let limits = ArchiveLimits {
        max_entries: 10,
        max_unpacked_bytes: 4,
    };
    let big = tar_gz(&[(b"big", Regular, b"12345", None)]);
    assert_eq!(
        archive::inspect(&big, limits),
        Err(ArchiveError::TooLarge(4))
    );
}

#[tokio::test]
async fn snapshots_are_content_addressed_and_round_trip() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let good = tar_gz(&[
        (b"src/", tar::EntryType::Directory, b"", None),
        (b"src/main.py", tar::EntryType::Regular, b"print(1)", None),
    ]);
    let (status, meta) = send(
        &h.app,
        "POST",
        "/api/snapshots?message=first",
        Some(&token),
        Body::from(good.clone()),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{meta}");
    let id = meta["snapshot_id"].as_str().unwrap().to_owned();
    assert_eq!(
        id,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&good))
    );
    assert_eq!(meta["file_count"], 1);
    let (status, _) = send(
        &h.app,
        "POST",
        "/api/snapshots?message=again",
        Some(&token),
        Body::from(good.clone()),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "same content, same id, stored once");
    let child = tar_gz(&[(b"main.py", tar::EntryType::Regular, b"print(2)", None)]);
    let uri = format!("/api/snapshots?message=child&parent={id}");
    let (status, child_meta) =
        send(&h.app, "POST", &uri, Some(&token), Body::from(child), false).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(child_meta["parent_id"], json!(id));
    let resp = h
        .app
        .clone()
        .oneshot(
            Request::get(format!("/api/snapshots/{id}/archive"))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.as_ref(), good.as_slice());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("ws");
    archive::extract(
        &bytes,
        &dest,
        ArchiveLimits {
            max_entries: 10,
            max_unpacked_bytes: 1000,
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("src/main.py")).unwrap(),
        "print(1)"
    );
    let (status, _) = call(
        &h.app,
        "GET",
        "/api/snapshots/..%2F..%2Fetc",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let h = harness(roomy()).await;
    let (status, doc) = call(&h.app, "GET", "/openapi.json", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/evaluate",
        "/api/posts",
        "/api/leaderboard",
        "/api/snapshots",
        "/api/admin/audit/verify",
        "/api/admin/campaign/close",
        "/api/campaign",
        "/api/admin/researchers",
        "/api/admin/researchers/{id}/activity",
        "/api/admin/progress",
        "/api/admin/ui/login-link",
        "/api/snapshots/{id}/files",
        "/api/verifier/claim",
        "/api/verifier/leases/{lease}/result",
        "/mcp",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}

/// A handler with a bug: indexes past the end of an empty list.
async fn buggy_handler() -> &'static str {
    let empty: Vec<&'static str> = Vec::new();
    empty[0]
}

#[tokio::test]
async fn a_panicking_handler_answers_a_json_500() {
    let app = with_boundary(Router::new().route("/boom", axum::routing::get(buggy_handler)));
    let (status, body) = call(&app, "GET", "/boom", None, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "panic", "{body}");
    assert!(
        !body.to_string().contains("index out of bounds"),
        "the panic message leaked: {body}"
    );
    // The server goes on serving.
    let (status, _) = call(&app, "GET", "/boom", None, None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn budgets_and_ids_stay_right_across_batches_and_restarts() {
    // The writer caches budgets and the Ladder; a second server on the same
    // database (a restart, or another process) must not get past the budget.
    let budgets = Budgets {
        agent_per_hour: 5,
        agent_total: 5,
        campaign_per_hour: 100,
        campaign_total: 100,
    };
    let h = harness(budgets).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, answer) = evaluate(
            &h.app,
            &token,
            &to_u8(&predictions(&h.test_labels, 900 + i)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.push(answer["evaluation_id"].as_i64().unwrap());
    }
    let second = AppState::new(
        h.store.clone(),
        TaskRegistry::from_tasks(vec![ServerTask {
            name: "math".into(),
            test_labels: h.test_labels.clone(),
            private_labels: None,
            baselines: None,
        }]),
        ADMIN,
        Policy {
            budgets,
            ..Policy::default()
        },
    );
    let second = app(second);
    for (app, i) in [(&second, 3), (&h.app, 4)] {
        let (status, answer) =
            evaluate(app, &token, &to_u8(&predictions(&h.test_labels, 900 + i))).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.push(answer["evaluation_id"].as_i64().unwrap());
    }
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    for app in [&h.app, &second] {
        let (status, refusal) =
            evaluate(app, &token, &to_u8(&predictions(&h.test_labels, 800))).await;
        assert_eq!(
            (status, refusal["error"]["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("budget_exhausted"))
        );
    }
    for id in ids {
        let (status, stored) = call(
            &h.app,
            "GET",
            &format!("/api/evaluations/{id}"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stored["evaluation_id"], id);
    }
    assert!(matches!(
        h.store.verify_audit_chain().await.unwrap(),
        aar_store::ChainCheck::Intact { .. }
    ));
}

/// Serves `app` on a loopback port; returns the base URL.
async fn serve_on_loopback(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn mcp_client(
    base: &str,
    token: &str,
) -> Result<rmcp::service::RunningService<rmcp::RoleClient, ()>, String> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .map_err(|e| e.to_string())
}

fn object(value: Value) -> rmcp::model::JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

#[tokio::test]
async fn mcp_speaks_to_a_real_client_with_the_agent_token_only() {
    use rmcp::model::CallToolRequestParams;
    let h = harness(roomy()).await;
    let (agent_id, token) = new_agent(&h.app, "mcp-agent").await;
    let (_, other) = new_agent(&h.app, "other").await;
    let base = serve_on_loopback(h.app.clone()).await;

    let client = mcp_client(&base, &token).await.expect("initialize");
    let tools: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for tool in [
        "evaluate",
        "share_finding",
        "search_findings",
        "read_finding",
        "leaderboard",
        "upload_snapshot",
        "download_snapshot",
    ] {
        assert!(
            tools.contains(&tool.to_owned()),
            "{tool} missing from {tools:?}"
        );
    }

    // evaluate: the JSON API's answer, recorded for the token's agent.
    let preds = to_u8(&predictions(&h.test_labels, 1000));
    let result = client
        .call_tool(
            CallToolRequestParams::new("evaluate")
                .with_arguments(object(json!({ "task": "math", "predictions": preds }))),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false), "{result:?}");
    let answer = result.structured_content.clone().unwrap();
    assert_eq!(answer["released_accuracy"], json!(0.765), "{answer}");
    assert!(answer.get("correct").is_none() && answer.get("public_accuracy").is_none());
    let id = answer["evaluation_id"].as_i64().unwrap();
    let (status, stored) = call(
        &h.app,
        "GET",
        &format!("/api/evaluations/{id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored, answer, "MCP and the JSON API disagree");
    let (status, _) = call(
        &h.app,
        "GET",
        &format!("/api/evaluations/{id}"),
        Some(&other),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the evaluation was recorded for another agent"
    );
    // The same predictions again through the JSON API: deduplicated, so it is the same service.
    let (_, again) = evaluate(&h.app, &token, &preds).await;
    assert_eq!(again["deduplicated"], true, "{again}");

    // A refusal is the tool's answer, with the JSON API's stable code; nothing stored.
    let before = h.store.evaluation_count().await.unwrap();
    let result = client
        .call_tool(
            CallToolRequestParams::new("evaluate")
                .with_arguments(object(json!({ "task": "math", "predictions": [1, 0] }))),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(
        result.structured_content.unwrap()["error"]["code"],
        "wrong_length"
    );
    let result = client
        .call_tool(
            CallToolRequestParams::new("evaluate").with_arguments(object(
                json!({ "task": "math", "predictions": preds, "agent_id": "x" }),
            )),
        )
        .await
        .unwrap();
    assert_eq!(
        result.structured_content.unwrap()["error"]["code"],
        "invalid_arguments"
    );
    assert_eq!(h.store.evaluation_count().await.unwrap(), before);

    // Forum and code store through the same functions as the JSON API.
    let shared = client
        .call_tool(CallToolRequestParams::new("share_finding").with_arguments(object(json!({
            "kind": "result", "title": "Confidence filtering", "body": "helps on math", "task": "math",
            "links": { "evaluations": [id] },
        }))))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(shared["author"]["agent_id"], agent_id.as_str(), "{shared}");
    let found = client
        .call_tool(
            CallToolRequestParams::new("search_findings")
                .with_arguments(object(json!({ "q": "confidence" }))),
        )
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(found["posts"][0]["post_id"], shared["post_id"], "{found}");
    let read = client
        .call_tool(
            CallToolRequestParams::new("read_finding")
                .with_arguments(object(json!({ "post_id": shared["post_id"] }))),
        )
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(read["links"][0]["target"], id.to_string(), "{read}");
    let archive = tar_gz(&[(b"work/a.txt", tar::EntryType::Regular, b"hello", None)]);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&archive);
    let uploaded = client
        .call_tool(
            CallToolRequestParams::new("upload_snapshot").with_arguments(object(json!({
                "archive_base64": b64, "message": "first",
            }))),
        )
        .await
        .unwrap()
        .structured_content
        .unwrap();
    let snapshot_id = uploaded["snapshot_id"].as_str().unwrap().to_owned();
    let downloaded = client
        .call_tool(
            CallToolRequestParams::new("download_snapshot")
                .with_arguments(object(json!({ "snapshot_id": snapshot_id }))),
        )
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(downloaded["archive_base64"], b64.as_str());
    let board = client
        .call_tool(
            CallToolRequestParams::new("leaderboard")
                .with_arguments(object(json!({ "task": "math" }))),
        )
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(board["task"], "math", "{board}");
    client.cancel().await.unwrap();

    // Absent, admin, forged and revoked tokens never reach a tool.
    let forged = format!("aar_{agent_id}.{}", "0".repeat(64));
    assert!(
        mcp_client(&base, &forged).await.is_err(),
        "a forged token initialized"
    );
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } } });
    for (token, status, code) in [
        (None, StatusCode::UNAUTHORIZED, "missing_token"),
        (Some(ADMIN), StatusCode::FORBIDDEN, "forbidden"),
        (
            Some(forged.as_str()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
    ] {
        let (got, body) = call(&h.app, "POST", "/mcp", token, Some(init.clone())).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{token:?}: {body}"
        );
    }
    let (status, _) = call(
        &h.app,
        "POST",
        &format!("/api/admin/agents/{agent_id}/revoke"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        mcp_client(&base, &token).await.is_err(),
        "a revoked token initialized"
    );
}

#[tokio::test]
async fn identical_submissions_in_one_batch_are_stored_once() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "a").await;
    let preds = to_u8(&predictions(&h.test_labels, 1000));
    // Sent together, they reach the writer in one batch (or a few).
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (app, token, preds) = (h.app.clone(), token.clone(), preds.clone());
        requests.spawn(async move { evaluate(&app, &token, &preds).await });
    }
    let answers = requests.join_all().await;
    let ids: std::collections::BTreeSet<i64> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, StatusCode::OK, "{answer}");
            answer["evaluation_id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one stored evaluation, repeated: {answers:?}");
    let repeats = answers
        .iter()
        .filter(|(_, a)| a["deduplicated"] == true)
        .count();
    assert_eq!(repeats, 7);
    assert_eq!(h.store.evaluation_count().await.unwrap(), 1);
}

mod hardening;

/// Verified entries (with a scripted verifier) and the attacks through them.
mod entries;

/// The dashboard's doors: relay API, sessions, CSRF, headers.
mod dashboard;
