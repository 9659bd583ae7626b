//! The Anthropic Messages API (`POST {base}/v1/messages`), streamed.
//!
//! Prompt caching: the system prompt, the last tool and the last block of the
//! last message carry `cache_control: {"type": "ephemeral"}`, so each turn
//! reads the previous turn's prefix from the cache.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::sse::SseDecoder;
use super::{
    ApiKey, ChatRequest, ChatResponse, ContentBlock, LanguageModel, LlmError, RetryPolicy, Usage,
    retry_after, with_retries,
};

/// The API version header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The public endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// Configuration of [`AnthropicClient`].
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Base URL (no trailing `/v1`).
    pub base_url: String,
    /// Model, e.g. `claude-opus-4-6`.
    pub model: String,
    /// The key.
    pub api_key: ApiKey,
    /// Retries.
    pub retry: RetryPolicy,
    /// Whether to mark cache breakpoints.
    pub prompt_caching: bool,
    /// Timeout of one whole request.
    pub request_timeout: Duration,
}

impl AnthropicConfig {
    /// Defaults for `model` with the key from `ANTHROPIC_API_KEY`.
    pub fn from_env(model: &str) -> Result<AnthropicConfig, LlmError> {
        Ok(AnthropicConfig::new(
            model,
            ApiKey::from_env("ANTHROPIC_API_KEY")?,
        ))
    }

    /// Defaults for `model` with `api_key`.
    pub fn new(model: &str, api_key: ApiKey) -> AnthropicConfig {
        AnthropicConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: model.to_owned(),
            api_key,
            retry: RetryPolicy::default(),
            prompt_caching: true,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// A streaming client of the Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicClient {
    config: AnthropicConfig,
    http: reqwest::Client,
}

impl AnthropicClient {
    /// A client.
    pub fn new(config: AnthropicConfig) -> Result<AnthropicClient, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        Ok(AnthropicClient { config, http })
    }

    /// The JSON body of a request.
    pub fn request_body(&self, request: &ChatRequest<'_>) -> Value {
        request_body(&self.config.model, self.config.prompt_caching, request)
    }

    async fn attempt(&self, body: &Value) -> Result<ChatResponse, (LlmError, Option<Duration>)> {
        let url = format!("{}/v1/messages", self.config.base_url.trim_end_matches('/'));
        let response = self
            .http
            .post(url)
            .header("x-api-key", self.config.api_key.expose())
            .header("anthropic-version", ANTHROPIC_VERSION)
            .header("accept", "text/event-stream")
            .json(body)
            .send()
            .await
            .map_err(|e| (LlmError::Transport(without_url(&e)), None))?;
        let status = response.status();
        if !status.is_success() {
            let after = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            return Err((api_error(status.as_u16(), &text), after));
        }
        let mut stream = response.bytes_stream();
        let mut decoder = SseDecoder::default();
        let mut assembler = Assembler::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| (LlmError::Transport(without_url(&e)), None))?;
            for event in decoder.push(&chunk) {
                if assembler
                    .event(&event.event, &event.data)
                    .map_err(|e| (e, None))?
                {
                    return assembler.finish().map_err(|e| (e, None));
                }
            }
        }
        Err((
            LlmError::Transport("stream ended before message_stop".to_owned()),
            None,
        ))
    }
}

impl LanguageModel for AnthropicClient {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn complete<'a>(
        &'a self,
        request: ChatRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        Box::pin(async move {
            let body = self.request_body(&request);
            let (mut response, attempts) =
                with_retries(&self.config.retry, || self.attempt(&body)).await?;
            response.attempts = attempts;
            Ok(response)
        })
    }
}

/// reqwest's errors may print the URL; the key is never in it, but keep
/// messages short and uniform.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

fn api_error(status: u16, body: &str) -> LlmError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let kind = parsed["error"]["type"]
        .as_str()
        .unwrap_or("http_error")
        .to_owned();
    let message = parsed["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(500).collect());
    LlmError::Api {
        status,
        kind,
        message,
    }
}

fn cache_control() -> Value {
    json!({ "type": "ephemeral" })
}

/// The request body: model, max_tokens, system, messages, tools, stream.
pub fn request_body(model: &str, caching: bool, request: &ChatRequest<'_>) -> Value {
    let mut system = json!({ "type": "text", "text": request.system });
    if caching {
        system["cache_control"] = cache_control();
    }
    let mut messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    if caching
        && let Some(last) = messages.last_mut()
        && let Some(block) = last["content"].as_array_mut().and_then(|c| c.last_mut())
    {
        block["cache_control"] = cache_control();
    }
    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.input_schema }))
        .collect();
    if caching && let Some(last) = tools.last_mut() {
        last["cache_control"] = cache_control();
    }
    let mut body = json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "system": [system],
        "messages": messages,
        "stream": true,
    });
    if !tools.is_empty() {
        body["tools"] = Value::from(tools);
    }
    body
}

#[derive(Debug)]
enum Partial {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        json: String,
        input: Value,
    },
    Other,
}

/// Builds a message from stream events.
#[derive(Debug, Default)]
struct Assembler {
    model: String,
    blocks: Vec<(usize, Partial)>,
    usage: Usage,
    stop_reason: Option<String>,
    started: bool,
}

fn protocol(what: impl Into<String>) -> LlmError {
    LlmError::Protocol(what.into())
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn merge_usage(usage: &mut Usage, v: &Value) {
    if let Some(n) = u64_of(&v["input_tokens"]) {
        usage.input_tokens = n;
    }
    if let Some(n) = u64_of(&v["output_tokens"]) {
        usage.output_tokens = n;
    }
    if let Some(n) = u64_of(&v["cache_creation_input_tokens"]) {
        usage.cache_creation_input_tokens = n;
    }
    if let Some(n) = u64_of(&v["cache_read_input_tokens"]) {
        usage.cache_read_input_tokens = n;
    }
}

impl Assembler {
    /// Handles one event; `Ok(true)` at `message_stop`.
    fn event(&mut self, name: &str, data: &str) -> Result<bool, LlmError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| protocol(format!("event {name}: bad JSON: {e}")))?;
        let kind = v["type"].as_str().unwrap_or(name);
        match kind {
            "message_start" => {
                self.started = true;
                self.model = v["message"]["model"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                // Usage in message_start counts the input; message_delta's
                // usage is cumulative and overrides the fields it carries.
                merge_usage(&mut self.usage, &v["message"]["usage"]);
            }
            "content_block_start" => {
                let index = self.index(&v)?;
                let block = &v["content_block"];
                let partial = match block["type"].as_str() {
                    Some("text") => Partial::Text(block["text"].as_str().unwrap_or("").to_owned()),
                    Some("tool_use") => Partial::ToolUse {
                        id: block["id"]
                            .as_str()
                            .ok_or_else(|| protocol("tool_use without id"))?
                            .to_owned(),
                        name: block["name"]
                            .as_str()
                            .ok_or_else(|| protocol("tool_use without name"))?
                            .to_owned(),
                        json: String::new(),
                        input: block.get("input").cloned().unwrap_or_else(|| json!({})),
                    },
                    _ => Partial::Other,
                };
                self.blocks.push((index, partial));
            }
            "content_block_delta" => {
                let index = self.index(&v)?;
                let delta = &v["delta"];
                let partial = self
                    .blocks
                    .iter_mut()
                    .find(|(i, _)| *i == index)
                    .map(|(_, p)| p)
                    .ok_or_else(|| protocol(format!("delta for unknown block {index}")))?;
                match (delta["type"].as_str(), partial) {
                    (Some("text_delta"), Partial::Text(text)) => {
                        *text += delta["text"].as_str().unwrap_or("");
                    }
                    (Some("input_json_delta"), Partial::ToolUse { json, .. }) => {
                        *json += delta["partial_json"].as_str().unwrap_or("");
                    }
                    (_, Partial::Other) => {}
                    (other, _) => {
                        return Err(protocol(format!(
                            "delta {other:?} does not fit block {index}"
                        )));
                    }
                }
            }
            "content_block_stop" => {
                let index = self.index(&v)?;
                if let Some((_, Partial::ToolUse { json, input, .. })) =
                    self.blocks.iter_mut().find(|(i, _)| *i == index)
                    && !json.trim().is_empty()
                {
                    *input = serde_json::from_str(json)
                        .map_err(|e| protocol(format!("tool input of block {index}: {e}")))?;
                }
            }
            "message_delta" => {
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_owned());
                }
                merge_usage(&mut self.usage, &v["usage"]);
            }
            "message_stop" => return Ok(true),
            "ping" => {}
            "error" => {
                return Err(LlmError::Api {
                    status: 0,
                    kind: v["error"]["type"].as_str().unwrap_or("error").to_owned(),
                    message: v["error"]["message"].as_str().unwrap_or("").to_owned(),
                });
            }
            other => tracing::debug!(event = other, "ignoring unknown stream event"),
        }
        Ok(false)
    }

    fn index(&self, v: &Value) -> Result<usize, LlmError> {
        v["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| protocol("event without index"))
    }

    fn finish(self) -> Result<ChatResponse, LlmError> {
        if !self.started {
            return Err(protocol("message_stop before message_start"));
        }
        let mut blocks = self.blocks;
        blocks.sort_by_key(|(i, _)| *i);
        let content = blocks
            .into_iter()
            .filter_map(|(_, p)| match p {
                Partial::Text(text) => Some(ContentBlock::Text { text }),
                Partial::ToolUse {
                    id, name, input, ..
                } => Some(ContentBlock::ToolUse { id, name, input }),
                Partial::Other => None,
            })
            .collect();
        Ok(ChatResponse {
            model: self.model,
            content,
            stop_reason: self.stop_reason,
            usage: self.usage,
            attempts: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_text_and_tool_use_with_cumulative_usage() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"there"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"shell","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\": \"ls"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" -l\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let mut a = Assembler::default();
        let mut done = false;
        for (name, data) in events {
            done = a.event(name, data).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(done);
        let r = a.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 42,
                cache_creation_input_tokens: 5,
                cache_read_input_tokens: 7
            }
        );
        assert_eq!(
            r.content,
            vec![
                ContentBlock::text("Hi there"),
                ContentBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "ls -l"})
                }
            ]
        );
    }

    #[test]
    fn error_event_is_an_api_error() {
        let mut a = Assembler::default();
        let e = a
            .event(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .err();
        assert!(
            matches!(&e, Some(LlmError::Api { kind, .. }) if kind == "overloaded_error"),
            "{e:?}"
        );
        assert!(e.is_some_and(|e| e.retryable()));
    }
}
