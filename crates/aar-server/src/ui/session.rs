//! Admin sessions of the dashboard: log in with the admin token or a one-time
//! link, a cookie that scripts cannot read, a CSRF token per session.
//!
//! Sessions live in memory: a restarted server asks the admin to log in again.
//! Only sha256 hashes of session ids and login keys are kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::render;
use crate::AppState;
use crate::auth::{AdminCaller, hash_secret, random_hex};
use crate::error::AppError;

const COOKIE: &str = "aar_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const LOGIN_KEY_TTL: Duration = Duration::from_secs(15 * 60);
/// Bounds memory whatever the number of logins.
const MAX_ENTRIES: usize = 512;

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<String, Session>,
    login_keys: HashMap<String, Instant>,
}

impl Table {
    fn prune(&mut self) {
        let now = Instant::now();
        self.sessions.retain(|_, s| s.expires > now);
        self.login_keys.retain(|_, expires| *expires > now);
    }
}

/// The server's dashboard sessions and unredeemed login keys.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    table: Mutex<Table>,
}

impl Sessions {
    fn with<T>(&self, f: impl FnOnce(&mut Table) -> T) -> T {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.prune();
        f(&mut table)
    }

    fn new_login_key(&self) -> Result<String, AppError> {
        let key = random_hex(32)?;
        self.with(|t| {
            if t.login_keys.len() >= MAX_ENTRIES {
                return Err(AppError::conflict(
                    "too_many_login_links",
                    "too many unused login links; wait for them to expire",
                ));
            }
            t.login_keys
                .insert(hash_secret(&key), Instant::now() + LOGIN_KEY_TTL);
            Ok(())
        })?;
        Ok(key)
    }

    fn redeem_login_key(&self, key: &str) -> bool {
        self.with(|t| t.login_keys.remove(&hash_secret(key)).is_some())
    }

    fn open(&self) -> Result<String, AppError> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        self.with(|t| {
            if t.sessions.len() >= MAX_ENTRIES {
                // The oldest session goes: a flood of logins cannot lock the admin out.
                if let Some(oldest) = t
                    .sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone())
                {
                    t.sessions.remove(&oldest);
                }
            }
            let expires = Instant::now() + SESSION_TTL;
            t.sessions
                .insert(hash_secret(&id), Session { csrf, expires });
        });
        Ok(id)
    }

    fn csrf_of(&self, id: &str) -> Option<String> {
        self.with(|t| t.sessions.get(&hash_secret(id)).map(|s| s.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.with(|t| t.sessions.remove(&hash_secret(id)));
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A request from a logged-in admin; carries the session's CSRF token for forms.
#[derive(Debug, Clone)]
pub(crate) struct UiSession {
    id: String,
    /// The token every form of this session must send back.
    pub(crate) csrf: String,
}

impl UiSession {
    /// Checks a submitted form's CSRF token and the request's `Origin`.
    pub(crate) fn check_form(&self, headers: &HeaderMap, submitted: &str) -> Result<(), AppError> {
        let same = submitted.len() == self.csrf.len()
            && bool::from(submitted.as_bytes().ct_eq(self.csrf.as_bytes()));
        if !same || !same_origin(headers) {
            return Err(AppError::forbidden(
                "this form expired or came from another site; reload the page and try again",
            ));
        }
        Ok(())
    }
}

/// `Origin`, when the browser sends one, must name this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

/// Not logged in: the login page, 401.
pub(crate) struct LoginRequired;

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, login_form(None)).into_response()
    }
}

impl FromRequestParts<AppState> for UiSession {
    type Rejection = LoginRequired;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let id = session_cookie(&parts.headers).ok_or(LoginRequired)?;
        let csrf = state.sessions().csrf_of(&id).ok_or(LoginRequired)?;
        Ok(UiSession { id, csrf })
    }
}

fn login_form(error: Option<&str>) -> maud::Markup {
    render::bare_page(
        "Log in",
        html! {
            h1 { "aar dashboard" }
            @if let Some(error) = error { p.error { (error) } }
            p { "Open the one-time link that " code { "aar up" } " printed, or enter the admin token." }
            form method="post" action="/ui/login" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Log in" }
            }
        },
    )
}

fn cookie_header(id: &str, headers: &HeaderMap, max_age: u64) -> Result<HeaderValue, AppError> {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let value = format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&value).map_err(AppError::internal)
}

/// `?key=`: a one-time login link.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    key: Option<String>,
}

/// `GET /ui/login[?key=]`: the form, or a redeemed one-time link. The session page
/// moves on by `<meta refresh>`, a same-site navigation, so the `Strict` cookie goes along.
pub(crate) async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, super::UiError> {
    let Some(key) = q.key else {
        return Ok(login_form(None).into_response());
    };
    if !state.sessions().redeem_login_key(&key) {
        let page = login_form(Some("This login link was already used or has expired."));
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let id = state.sessions().open()?;
    let page = render::bare_page(
        "Logged in",
        html! {
            meta http-equiv="refresh" content="0; url=/ui/";
            p { "Logged in. " a href="/ui/" { "Open the campaign" } }
        },
    );
    let cookie = cookie_header(&id, &headers, SESSION_TTL.as_secs())?;
    Ok(([(header::SET_COOKIE, cookie)], page).into_response())
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /ui/login`: the admin token opens a session; nothing else does.
pub(crate) async fn login_with_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, super::UiError> {
    let offered = hash_secret(form.token.trim());
    let expected = state.admin_token_hash();
    let ok = offered.len() == expected.len()
        && bool::from(offered.as_bytes().ct_eq(expected.as_bytes()));
    if !ok || !same_origin(&headers) {
        let page = login_form(Some("That is not the admin token."));
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    let id = state.sessions().open()?;
    let cookie = cookie_header(&id, &headers, SESSION_TTL.as_secs())?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response())
}

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

/// `POST /ui/logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, super::UiError> {
    session.check_form(&headers, &form.csrf)?;
    state.sessions().close(&session.id);
    let cookie = cookie_header("", &headers, 0)?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}

/// `POST /api/admin/ui/login-link`: a one-time dashboard login link (15 minutes).
pub(crate) async fn login_link(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> Result<Json<Value>, AppError> {
    let key = state.sessions().new_login_key()?;
    Ok(Json(json!({
        "path": format!("/ui/login?key={key}"),
        "expires_in_seconds": LOGIN_KEY_TTL.as_secs(),
    })))
}
