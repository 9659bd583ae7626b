//! A local server speaking the Anthropic Messages wire protocol, for tests:
//! scripted replies (text, `thinking`, `redacted_thinking` and `tool_use`
//! blocks with usage numbers), streamed as the API streams them
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta` with
//! `text_delta`, `thinking_delta`, `signature_delta` or `input_json_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`), error answers
//! (429 with `retry-after`, 529 `overloaded_error`, an `error` event inside a
//! stream), streams cut mid-message (an `error` event or a dropped
//! connection after some output), and a record of every request it received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

use crate::llm::{ContentBlock, Usage};

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A message, streamed.
    Message {
        /// Its blocks (text and tool use).
        content: Vec<ContentBlock>,
        /// `end_turn`, `tool_use`, ...
        stop_reason: String,
        /// Usage reported (input and cache in `message_start`, output in `message_delta`).
        usage: Usage,
    },
    /// An HTTP error with the API's error body.
    HttpError {
        /// Status, e.g. 429 or 529.
        status: u16,
        /// Error type, e.g. `rate_limit_error`, `overloaded_error`.
        kind: String,
        /// `retry-after` header, in seconds.
        retry_after: Option<u64>,
    },
    /// A 200 stream that sends `message_start` and then an `error` event.
    StreamError {
        /// Error type.
        kind: String,
    },
    /// A 200 stream that starts a message (`usage`'s input and cache counts in
    /// `message_start`), streams `content`'s blocks, and then fails before
    /// `message_delta`: with an `error` event of type `error` (e.g.
    /// `overloaded_error`), or, when `None`, by dropping the connection.
    StreamCut {
        /// The blocks streamed before the failure.
        content: Vec<ContentBlock>,
        /// Usage; only `message_start`'s part is sent.
        usage: Usage,
        /// The error event's type; `None` drops the connection.
        error: Option<String>,
    },
    /// 400 `invalid_request_error` "prompt is too long: ... > 200000 maximum", as
    /// Anthropic refuses a request over the context window.
    ContextOverflow,
    /// No answer for this long (a slow local model), then a 500.
    Stall {
        /// How long the request hangs.
        seconds: u64,
    },
}

impl Reply {
    /// A message whose stop reason is `tool_use` when it calls a tool, `end_turn` otherwise.
    pub fn message(content: Vec<ContentBlock>, usage: Usage) -> Reply {
        let calls = content
            .iter()
            .any(|b| matches!(b, ContentBlock::ToolUse { .. }));
        Reply::Message {
            content,
            stop_reason: if calls { "tool_use" } else { "end_turn" }.to_owned(),
            usage,
        }
    }

    /// 429 `rate_limit_error` with `retry-after`.
    pub fn rate_limited(retry_after: u64) -> Reply {
        Reply::HttpError {
            status: 429,
            kind: "rate_limit_error".to_owned(),
            retry_after: Some(retry_after),
        }
    }

    /// 529 `overloaded_error`.
    pub fn overloaded() -> Reply {
        Reply::HttpError {
            status: 529,
            kind: "overloaded_error".to_owned(),
            retry_after: None,
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The JSON body.
    pub body: Value,
    /// The `x-api-key` header.
    pub api_key: Option<String>,
    /// The `anthropic-version` header.
    pub version: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// The running mock; stops when dropped.
#[derive(Debug)]
pub struct MockAnthropic {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockAnthropic {
    /// Starts on a free loopback port with `script`.
    pub async fn start(script: Vec<Reply>) -> std::io::Result<MockAnthropic> {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            received: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockAnthropic { addr, shared, task })
    }

    /// Base URL for [`crate::llm::anthropic::AnthropicConfig::base_url`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Scripted replies not yet given.
    pub fn remaining(&self) -> usize {
        self.shared.script.lock().map(|s| s.len()).unwrap_or(0)
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}

fn json_response(status: u16, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn messages(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let parsed: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(400, &error_body("invalid_request_error", &e.to_string()));
        }
    };
    let api_key = header(&headers, "x-api-key");
    let version = header(&headers, "anthropic-version");
    let model = parsed["model"].as_str().unwrap_or("claude-mock").to_owned();
    if let Ok(mut received) = shared.received.lock() {
        received.push(Received {
            body: parsed.clone(),
            api_key: api_key.clone(),
            version: version.clone(),
        });
    }
    if api_key.is_none() {
        return json_response(
            401,
            &error_body("authentication_error", "x-api-key header is required"),
        );
    }
    if version.is_none() {
        return json_response(
            400,
            &error_body(
                "invalid_request_error",
                "anthropic-version header is required",
            ),
        );
    }
    let next = shared.script.lock().ok().and_then(|mut s| s.pop_front());
    let Some(reply) = next else {
        return json_response(
            500,
            &error_body("api_error", "the mock's script is exhausted"),
        );
    };
    match reply {
        Reply::ContextOverflow => json_response(
            400,
            &error_body(
                "invalid_request_error",
                "prompt is too long: 210345 tokens > 200000 maximum",
            ),
        ),
        Reply::Stall { seconds } => {
            tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
            json_response(500, &error_body("api_error", "stalled"))
        }
        Reply::HttpError {
            status,
            kind,
            retry_after,
        } => {
            let mut builder = Response::builder()
                .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header("content-type", "application/json");
            if let Some(after) = retry_after {
                builder = builder.header("retry-after", after.to_string());
            }
            builder
                .body(Body::from(error_body(&kind, "scripted error").to_string()))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        Reply::StreamError { kind } => {
            let mut sse = String::new();
            event(
                &mut sse,
                "message_start",
                &message_start(&model, &Usage::default()),
            );
            event(
                &mut sse,
                "error",
                &error_body(&kind, "scripted stream error"),
            );
            stream_response(sse)
        }
        Reply::StreamCut {
            content,
            usage,
            error,
        } => {
            let full = stream_text(&model, &content, "end_turn", &usage);
            let cut = full
                .find("event: message_delta")
                .map_or(full.as_str(), |at| &full[..at]);
            let mut sse = cut.to_owned();
            match error {
                Some(kind) => {
                    event(&mut sse, "error", &error_body(&kind, "Overloaded"));
                    stream_response(sse)
                }
                None => {
                    // The body fails after the events: the connection is cut
                    // mid-response (after a pause, so the events go out first).
                    let chunks: Vec<Result<String, std::io::Error>> =
                        vec![Ok(sse), Err(std::io::Error::other("connection dropped"))];
                    let body = futures_util::StreamExt::then(
                        futures_util::stream::iter(chunks),
                        |chunk| async move {
                            if chunk.is_err() {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                            chunk
                        },
                    );
                    Response::builder()
                        .status(200)
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(body))
                        .unwrap_or_else(|_| Response::new(Body::empty()))
                }
            }
        }
        Reply::Message {
            content,
            stop_reason,
            usage,
        } => {
            if parsed["stream"] != json!(true) {
                let blocks: Vec<Value> = content.iter().map(block_json).collect();
                return json_response(
                    200,
                    &json!({
                        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                        "content": blocks, "stop_reason": stop_reason, "stop_sequence": null,
                        "usage": usage_json(&usage),
                    }),
                );
            }
            stream_response(stream_text(&model, &content, &stop_reason, &usage))
        }
    }
}

fn stream_response(sse: String) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from(sse))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": usage.output_tokens,
    })
}

fn block_json(block: &ContentBlock) -> Value {
    serde_json::to_value(block).unwrap_or(Value::Null)
}

fn message_start(model: &str, usage: &Usage) -> Value {
    // As the API does: input and cache counts up front, a token or so of output.
    let start_usage = Usage {
        output_tokens: usage.output_tokens.min(1),
        ..*usage
    };
    json!({
        "type": "message_start",
        "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "content": [],
            "model": model, "stop_reason": null, "stop_sequence": null,
            "usage": usage_json(&start_usage),
        }
    })
}

fn event(out: &mut String, name: &str, data: &Value) {
    out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
}

/// Splits `s` into up to three pieces on character boundaries.
fn pieces(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    if n < 3 {
        return vec![s.to_owned()];
    }
    vec![
        chars[..n / 3].iter().collect(),
        chars[n / 3..2 * n / 3].iter().collect(),
        chars[2 * n / 3..].iter().collect(),
    ]
}

/// The SSE text of a streamed message.
pub fn stream_text(
    model: &str,
    content: &[ContentBlock],
    stop_reason: &str,
    usage: &Usage,
) -> String {
    let mut out = String::new();
    event(&mut out, "message_start", &message_start(model, usage));
    event(&mut out, "ping", &json!({ "type": "ping" }));
    for (index, block) in content.iter().enumerate() {
        match block {
            ContentBlock::Text { text } => {
                event(
                    &mut out,
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index,
                             "content_block": { "type": "text", "text": "" } }),
                );
                for piece in pieces(text) {
                    event(
                        &mut out,
                        "content_block_delta",
                        &json!({ "type": "content_block_delta", "index": index,
                                 "delta": { "type": "text_delta", "text": piece } }),
                    );
                }
            }
            ContentBlock::ToolUse { id, name, input } => {
                event(
                    &mut out,
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index,
                             "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } }),
                );
                for piece in pieces(&input.to_string()) {
                    event(
                        &mut out,
                        "content_block_delta",
                        &json!({ "type": "content_block_delta", "index": index,
                                 "delta": { "type": "input_json_delta", "partial_json": piece } }),
                    );
                }
            }
            ContentBlock::Thinking {
                thinking,
                signature,
            } => {
                event(
                    &mut out,
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index,
                             "content_block": { "type": "thinking", "thinking": "" } }),
                );
                for piece in pieces(thinking) {
                    event(
                        &mut out,
                        "content_block_delta",
                        &json!({ "type": "content_block_delta", "index": index,
                                 "delta": { "type": "thinking_delta", "thinking": piece } }),
                    );
                }
                event(
                    &mut out,
                    "content_block_delta",
                    &json!({ "type": "content_block_delta", "index": index,
                             "delta": { "type": "signature_delta", "signature": signature } }),
                );
            }
            ContentBlock::RedactedThinking { data } => {
                event(
                    &mut out,
                    "content_block_start",
                    &json!({ "type": "content_block_start", "index": index,
                             "content_block": { "type": "redacted_thinking", "data": data } }),
                );
            }
            ContentBlock::ToolResult { .. } => continue,
        }
        event(
            &mut out,
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": index }),
        );
    }
    event(
        &mut out,
        "message_delta",
        &json!({ "type": "message_delta",
                 "delta": { "stop_reason": stop_reason, "stop_sequence": null },
                 "usage": { "output_tokens": usage.output_tokens } }),
    );
    event(&mut out, "message_stop", &json!({ "type": "message_stop" }));
    out
}
