//! `AppError`: every refusal as JSON `{"error": {"code", "message"}}` with a
//! stable `code`, and extractors whose rejections use the same shape.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answered to the client. Internal errors are logged and answered
/// with a generic message.
#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl AppError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
        AppError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: well-formed but not acceptable (wrong length, bad value).
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 404 with code `not_found`.
    pub fn not_found(what: impl Into<String>) -> AppError {
        AppError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {}", what.into()),
        )
    }

    /// 403 with code `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 409 with the given code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> AppError {
        AppError::new(StatusCode::CONFLICT, code, message)
    }

    /// 500; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> AppError {
        tracing::error!(%cause, "internal error");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl From<aar_store::StoreError> for AppError {
    fn from(e: aar_store::StoreError) -> AppError {
        AppError::internal(e)
    }
}

impl AppError {
    /// The JSON body: `{"error": {"code", "message"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The answer to a request whose handler panicked: a JSON 500 with the stable
/// code `panic`. The panic message is logged, never sent.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    tracing::error!(panic = %message, "a request handler panicked");
    AppError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "panic",
        "internal server error",
    )
    .into_response()
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> AppError {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        // Syntax and type errors are both the client's: always 4xx, never 500.
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        AppError::new(status, code, rejection.body_text())
    }
}

/// `axum::Json` whose rejections are [`AppError`]s. Bodies over
/// 64 KiB are parsed on the blocking pool: parsing megabytes
/// of JSON would otherwise hold an async worker (and every request queued
/// behind it) for milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// Largest JSON body parsed on an async worker.
pub(crate) const INLINE_PARSE_BYTES: usize = 64 << 10;

/// `application/json` or `application/*+json`, parameters ignored.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + Send + 'static,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::new(e.status(), "payload_too_large", e.body_text())
                } else {
                    AppError::bad_request("invalid_body", e.body_text())
                }
            })?;
        let small = bytes.len() <= INLINE_PARSE_BYTES;
        let parse = move || {
            Json::<T>::from_bytes(&bytes)
                .map(|Json(value)| ApiJson(value))
                .map_err(AppError::from)
        };
        if small {
            parse()
        } else {
            tokio::task::spawn_blocking(parse)
                .await
                .map_err(AppError::internal)?
        }
    }
}

/// `axum::extract::Query` whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| AppError::bad_request("invalid_query", e.body_text()))
    }
}

/// `axum::extract::Path` whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e: PathRejection| AppError::bad_request("invalid_path", e.body_text()))
    }
}
