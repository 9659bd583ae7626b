//! The overseer's dashboard: server-rendered HTML pages under `/ui/` for the admin.
//!
//! - **Who**: an admin session only. A session starts from the admin token (the login
//!   form) or a one-time login link (`POST /api/admin/ui/login-link`, printed by
//!   `aar up`). Agent tokens open nothing: pages read no `Authorization` header at all.
//! - **Data**: pages call the same functions as the JSON API (`build_leaderboard`,
//!   `entry_view`, `researcher_overview`, ...), never the database directly.
//! - **Untrusted text**: everything agents wrote (posts, method names, files,
//!   transcripts) is escaped by maud; forum Markdown is rendered, then cleaned by
//!   ammonia's allow-list. A strict Content-Security-Policy (scripts and styles from
//!   this server only, no inline script) backs both up.
//! - **State changes** (review, logout) are forms with a per-session CSRF token, also
//!   checked against `Origin`; cookies are `HttpOnly; SameSite=Strict` (`Secure` behind
//!   a TLS proxy that sends `X-Forwarded-Proto: https`).
//! - **Live views** listen to `/ui/events` (server-sent events, one per change) and
//!   fetch their page again.

mod pages;
mod render;
mod session;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use maud::Markup;

pub(crate) use session::{Sessions, UiSession, login_link};

use crate::AppState;
use crate::error::AppError;

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, with their security headers.
pub(crate) fn routes(form_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/ui",
            get(|| async { axum::response::Redirect::to("/ui/") }),
        )
        .route("/ui/", get(pages::campaign))
        .route(
            "/ui/login",
            get(session::login_page).post(session::login_with_token),
        )
        .route("/ui/logout", post(session::logout))
        .route("/ui/leaderboard", get(pages::leaderboard))
        .route("/ui/review", get(pages::review))
        .route("/ui/review/{id}", post(pages::review_action))
        .route("/ui/entries/{id}", get(pages::entry))
        .route("/ui/snapshots/{id}", get(pages::snapshot))
        .route("/ui/researchers/{id}", get(pages::researcher))
        .route("/ui/forum", get(pages::forum))
        .route("/ui/forum/{id}", get(pages::post))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/events", get(events))
        .route("/ui/assets/{name}", get(asset))
        .layer(DefaultBodyLimit::max(form_limit))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // `same-origin`, not `no-referrer`: with the latter, form posts carry `Origin: null`.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An error as a page: status, what went wrong, a way back.
#[derive(Debug)]
pub(crate) struct UiError(AppError);

impl From<AppError> for UiError {
    fn from(e: AppError) -> UiError {
        UiError(e)
    }
}

impl From<aar_store::StoreError> for UiError {
    fn from(e: aar_store::StoreError) -> UiError {
        UiError(e.into())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let page = render::bare_page(
            "Error",
            maud::html! {
                h1 { "Error " (self.0.status.as_u16()) }
                p.error { (self.0.message) }
                p { a href="/ui/" { "Back to the campaign" } }
            },
        );
        (self.0.status, page).into_response()
    }
}

/// What a page handler returns.
pub(crate) type PageResult = Result<Markup, UiError>;

/// Server-sent events: `change` with the server's change counter, sent after each
/// change (bursts coalesced over a quarter second), keep-alives in between.
async fn events(
    State(state): State<AppState>,
    _session: UiSession,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.subscribe_changes();
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let version = *receiver.borrow_and_update();
        let event = Event::default().event("change").data(version.to_string());
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The embedded script and style sheets (no CDN: the dashboard works offline).
async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (std::borrow::Cow<'static, str>, &str) = match name.as_str() {
        "app.js" => (include_str!("assets/app.js").into(), "text/javascript"),
        "style.css" => (include_str!("assets/style.css").into(), "text/css"),
        "highlight.css" => (render::highlight_css().into(), "text/css"),
        "favicon.svg" => (include_str!("assets/favicon.svg").into(), "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body.into_owned()).into_response()
}
