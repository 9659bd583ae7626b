//! Browser tests of the web UI in headless Chromium (see `browser.rs`).
//!
//! Needs Debian's `chromium` and `chromium-driver`: `bash scripts/setup.sh --test`.
//! The tests here prove the harness itself against a tiny axum server; `dashboard.rs`
//! tests the dashboard against a real server with a seeded campaign.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod campaign;
mod dashboard;

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use browser::{Browser, VIEWPORT_HEIGHT, VIEWPORT_WIDTH};

/// The policy every page of the fixture server sends.
const CSP: &str = "default-src 'self'";
/// How long a page's script may take to update the DOM.
const WAIT: Duration = Duration::from_secs(10);

/// An HTML page sent with [`CSP`].
fn page(body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, CSP),
        ],
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>fixture</title></head>\
             <body>{body}</body></html>"
        ),
    )
}

/// A same-origin script.
fn script(source: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], source)
}

/// Serves the fixture pages on 127.0.0.1 and returns their base URL.
async fn serve() -> String {
    let app = Router::new()
        .route(
            "/boom",
            get(|| async { page(r#"<p id="status">waiting</p><script src="/app.js"></script>"#) }),
        )
        .route(
            "/app.js",
            get(|| async {
                script(
                    r#"console.error("boom"); document.getElementById("status").textContent = "ran";"#,
                )
            }),
        )
        .route(
            "/clean",
            get(|| async { page(r#"<p id="status">waiting</p><script src="/clean.js"></script>"#) }),
        )
        .route(
            "/clean.js",
            get(|| async {
                script(
                    r#"console.log("fine"); document.getElementById("status").textContent = "ran";"#,
                )
            }),
        )
        .route(
            "/inline",
            get(|| async {
                page(
                    r#"<p id="status">blocked</p><script>document.getElementById("status").textContent = "ran";</script>"#,
                )
            }),
        )
        // Chromium asks for a favicon; a 404 would be a console error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fixture server");
    let addr = listener.local_addr().expect("fixture server address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("fixture server") });
    format!("http://{addr}")
}

async fn start_browser() -> Browser {
    Browser::start()
        .await
        .expect("start chromedriver and headless Chromium")
}

#[tokio::test]
async fn console_errors_reports_console_error_and_clean_page_has_none() {
    let base = serve().await;
    let browser = start_browser().await;

    browser
        .goto(&format!("{base}/boom"))
        .await
        .expect("open /boom");
    browser
        .wait_for_text("#status", |text| text == "ran", WAIT)
        .await
        .expect("/app.js runs under the CSP");
    let errors = browser.console_errors().await.expect("read the console");
    assert!(
        errors.iter().any(|e| e.contains("boom")),
        "console.error(\"boom\") should be reported: {errors:?}"
    );
    assert_eq!(errors.len(), 1, "only the one error: {errors:?}");
    let again = browser.console_errors().await.expect("read the console");
    assert!(again.is_empty(), "reading drains the log: {again:?}");

    browser
        .goto(&format!("{base}/clean"))
        .await
        .expect("open /clean");
    browser
        .wait_for_text("#status", |text| text == "ran", WAIT)
        .await
        .expect("/clean.js runs under the CSP");
    let errors = browser.console_errors().await.expect("read the console");
    assert!(errors.is_empty(), "a clean page logs no errors: {errors:?}");

    browser.close().await.expect("close the browser");
}

#[tokio::test]
async fn csp_violation_is_a_console_error() {
    let base = serve().await;
    let browser = start_browser().await;

    browser
        .goto(&format!("{base}/inline"))
        .await
        .expect("open /inline");
    let text = browser
        .wait_for_text("#status", |text| !text.is_empty(), WAIT)
        .await
        .expect("the page renders");
    assert_eq!(text, "blocked", "the CSP blocks the inline script");
    let errors = browser.console_errors().await.expect("read the console");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Content Security Policy") && e.contains("inline script")),
        "the blocked inline script should be reported: {errors:?}"
    );

    browser.close().await.expect("close the browser");
}

#[tokio::test]
async fn screenshot_is_a_png_of_the_window() {
    let base = serve().await;
    let browser = start_browser().await;

    browser
        .goto(&format!("{base}/clean"))
        .await
        .expect("open /clean");
    let title = browser.client().title().await.expect("read the title");
    assert_eq!(title, "fixture");
    assert!(
        browser.temp_dir().join("profile").is_dir(),
        "the Chromium profile lives in the harness's temporary directory"
    );
    let png = browser.screenshot_png().await.expect("take a screenshot");
    assert!(
        png.len() > 24,
        "a PNG has a signature and a header: {} bytes",
        png.len()
    );
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "PNG header chunk");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(
        (width, height),
        (VIEWPORT_WIDTH, VIEWPORT_HEIGHT),
        "the screenshot has the viewport's size"
    );

    browser.close().await.expect("close the browser");
}

#[tokio::test]
async fn wait_for_text_times_out_with_the_last_text() {
    let base = serve().await;
    let browser = start_browser().await;

    browser
        .goto(&format!("{base}/inline"))
        .await
        .expect("open /inline");
    let err = browser
        .wait_for_text("#status", |text| text == "ran", Duration::from_millis(300))
        .await
        .expect_err("the inline script never runs");
    let message = err.to_string();
    assert!(
        message.contains("timed out") && message.contains("blocked"),
        "the error names the last text seen: {message}"
    );

    browser.close().await.expect("close the browser");
}

/// Whether process `pid` has exited (gone, or a zombie awaiting its reaper).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

async fn assert_exits(pid: u32, how: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !exited(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "Chromium (pid {pid}) still runs {WAIT:?} after {how}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn close_and_drop_end_chromium_and_remove_the_temp_dir() {
    let browser = start_browser().await;
    let pid = browser
        .chromium_pid()
        .expect("chromedriver reports goog:processID");
    let dir = browser.temp_dir().to_owned();
    assert!(!exited(pid), "Chromium runs during the session");
    browser.close().await.expect("close the browser");
    assert_exits(pid, "close()").await;
    assert!(!dir.exists(), "close() removes {}", dir.display());

    // A test that panics drops its browser without closing it.
    let browser = start_browser().await;
    let pid = browser
        .chromium_pid()
        .expect("chromedriver reports goog:processID");
    let dir = browser.temp_dir().to_owned();
    drop(browser);
    assert_exits(pid, "drop").await;
    assert!(!dir.exists(), "drop removes {}", dir.display());
}
