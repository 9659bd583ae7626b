//! The dashboard's doors, through the router: who may relay and read researchers'
//! activity, who gets a page, sessions, CSRF and the security headers. What the pages
//! look like in a browser is tested in `tests/ui` (headless Chromium).

use axum::http::{HeaderMap, header};

use super::*;

/// A raw request with headers; returns status, headers and body text.
async fn raw(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Logs in through a one-time link; returns the session cookie (`name=value`).
async fn log_in(app: &Router) -> String {
    let (status, link) = call(app, "POST", "/api/admin/ui/login-link", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    let path = link["path"].as_str().unwrap();
    let (status, headers, _) = raw(app, "GET", path, &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

fn line(seq: u64, kind: &str, extra: Value) -> Value {
    let mut line =
        json!({ "ts_ms": 1_700_000_000_000_u64 + seq, "agent": "a", "step": seq, "kind": kind });
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    line
}

#[tokio::test]
async fn relayed_activity_is_admin_only_validated_idempotent_and_read_as_a_state() {
    let h = harness(roomy()).await;
    let (agent_id, token) = new_agent(&h.app, "ada").await;
    let path = format!("/api/admin/researchers/{agent_id}/activity");
    let evaluating = line(
        1,
        "message",
        json!({ "message": { "role": "assistant", "content": [
            { "type": "tool_use", "id": "c1", "name": "evaluate", "input": {} }] } }),
    );
    let lines = json!([line(0, "session_start", json!({})), evaluating]);
    let body = json!({ "first_seq": 0, "lines": lines, "status": { "notebook": "n" } });

    // An agent can neither write nor read any of it.
    let (status, _) = call(&h.app, "POST", &path, Some(&token), Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&h.app, "GET", "/api/admin/researchers", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, added) = call(&h.app, "POST", &path, Some(ADMIN), Some(body.clone())).await;
    assert_eq!(
        (status, added["added"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{added}"
    );
    // Re-sent after a crash: nothing is duplicated.
    let (_, again) = call(&h.app, "POST", &path, Some(ADMIN), Some(body)).await;
    assert_eq!(again["added"], 0, "{again}");

    let (_, overview) = call(&h.app, "GET", "/api/admin/researchers", Some(ADMIN), None).await;
    let row = &overview["researchers"][0];
    assert_eq!(row["state"], "evaluating", "{row}");
    assert_eq!(row["transcript_lines"], 2);
    assert_eq!(row["status"]["notebook"], "n");

    // A bad line is refused with where it is; nothing of the batch is stored.
    let bad = json!({ "first_seq": 2, "lines": [line(2, "stop", json!({})), { "kind": "stop" }] });
    let (status, refused) = call(&h.app, "POST", &path, Some(ADMIN), Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("lines[1]") && message.contains("ts_ms"),
        "{message}"
    );
    let (_, page) = call(
        &h.app,
        "GET",
        &format!("/api/admin/researchers/{agent_id}/transcript?after=0"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(page["lines"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["lines"][0]["line"]["kind"], "message");

    let unknown = "/api/admin/researchers/0123456789abcdef/activity";
    let (status, _) = call(&h.app, "POST", unknown, Some(ADMIN), Some(json!({}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn a_researchers_state_reads_its_last_transcript_line() {
    use crate::researchers::researcher_state;
    let tool_use = |name: &str| {
        line(
            1,
            "message",
            json!({ "message": { "role": "assistant", "content": [
            { "type": "tool_use", "id": "c", "name": name, "input": {} }] } }),
        )
    };
    let budget = json!({ "reason": "out of time", "budget": { "resource": "wall_time" } });
    let cases = [
        (None, "idle"),
        (Some(line(0, "session_start", json!({}))), "thinking"),
        (Some(tool_use("run_command")), "running"),
        (Some(tool_use("evaluate")), "evaluating"),
        (
            Some(line(2, "tool_call", json!({ "name": "run_command" }))),
            "thinking",
        ),
        (
            Some(line(3, "stop", json!({ "reason": "done", "budget": null }))),
            "stopped",
        ),
        (Some(line(3, "stop", budget)), "out_of_budget"),
    ];
    for (last, expected) in cases {
        assert_eq!(researcher_state(last.as_ref()).0, expected, "{last:?}");
    }
}

const PAGES: &[&str] = &[
    "/ui/",
    "/ui/leaderboard",
    "/ui/review",
    "/ui/forum",
    "/ui/audit",
    "/ui/events",
    "/ui/entries/1",
];

#[tokio::test]
async fn no_page_opens_without_an_admin_session() {
    let h = harness(roomy()).await;
    let (_, token) = new_agent(&h.app, "mallory").await;
    let agent_header = format!("Bearer {token}");
    let admin_header = format!("Bearer {ADMIN}");
    let agent_cookie = format!("aar_session={token}");
    let admin_cookie = format!("aar_session={ADMIN}");
    for page in PAGES {
        for headers in [
            vec![],
            vec![("authorization", agent_header.as_str())],
            // The admin token is for the API; pages need a session.
            vec![("authorization", admin_header.as_str())],
            vec![("cookie", agent_cookie.as_str())],
            vec![("cookie", admin_cookie.as_str())],
        ] {
            let (status, _, body) = raw(&h.app, "GET", page, &headers, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{page} with {headers:?}");
            assert!(
                body.contains("Admin token") && !body.contains("Leaderboard"),
                "{body}"
            );
        }
    }
    // An agent's token is not the admin token on the login form either.
    let form = format!("token={token}");
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = raw(&h.app, "POST", "/ui/login", &form_type, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());
    // An agent cannot mint a login link.
    let (status, _) = call(
        &h.app,
        "POST",
        "/api/admin/ui/login-link",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_login_link_works_once_and_sets_a_cookie_scripts_cannot_read() {
    let h = harness(roomy()).await;
    let (_, link) = call(
        &h.app,
        "POST",
        "/api/admin/ui/login-link",
        Some(ADMIN),
        None,
    )
    .await;
    let path = link["path"].as_str().unwrap();
    let (status, headers, _) = raw(&h.app, "GET", path, &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let (status, headers, _) = raw(&h.app, "GET", path, &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a second use");
    assert!(headers.get(header::SET_COOKIE).is_none());

    // Behind a TLS proxy the cookie is Secure.
    let (_, link) = call(
        &h.app,
        "POST",
        "/api/admin/ui/login-link",
        Some(ADMIN),
        None,
    )
    .await;
    let tls = [("x-forwarded-proto", "https")];
    let (_, headers, _) = raw(&h.app, "GET", link["path"].as_str().unwrap(), &tls, "").await;
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );

    // The admin token on the form opens a session too.
    let form = format!("token={ADMIN}");
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = raw(&h.app, "POST", "/ui/login", &form_type, &form).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers.get(header::SET_COOKIE).is_some());
}

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy() {
    let h = harness(roomy()).await;
    let cookie = log_in(&h.app).await;
    let (status, headers, body) = raw(&h.app, "GET", "/ui/", &[("cookie", &cookie)], "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(!body.contains("<script>"), "no inline script: {body}");
}

#[tokio::test]
async fn a_review_form_needs_the_sessions_csrf_token_and_this_origin() {
    let h = harness(roomy()).await;
    let cookie = log_in(&h.app).await;
    let (_, _, page) = raw(&h.app, "GET", "/ui/", &[("cookie", &cookie)], "").await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let session = ("cookie", cookie.as_str());
    let forged = "csrf=0000&action=disqualify&reason=forged";
    let (status, _, _) = raw(
        &h.app,
        "POST",
        "/ui/review/1",
        &[form_type, session],
        forged,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong token");
    let form = format!("csrf={csrf}&action=disqualify&reason=from+elsewhere");
    let evil = ("origin", "http://evil.example");
    let (status, _, _) = raw(
        &h.app,
        "POST",
        "/ui/review/1",
        &[form_type, session, evil],
        &form,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another origin");
    // With the right token the action reaches the review (no entry 1 here: 404).
    let (status, _, _) = raw(&h.app, "POST", "/ui/review/1", &[form_type, session], &form).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Logging out ends the session.
    let logout = format!("csrf={csrf}");
    let (status, _, _) = raw(&h.app, "POST", "/ui/logout", &[form_type, session], &logout).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = raw(&h.app, "GET", "/ui/", &[session], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
