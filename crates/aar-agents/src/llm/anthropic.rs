//! The Anthropic Messages API (`POST {base}/v1/messages`), streamed.
//!
//! Prompt caching: the system prompt, the last tool and the last block of the
//! last message carry `cache_control: {"type": "ephemeral"}`, so each turn
//! reads the previous turn's prefix from the cache.
//!
//! Extended thinking: `thinking` blocks (text and signature) and
//! `redacted_thinking` blocks are assembled from the stream, kept in the
//! conversation and sent back unchanged, in place, in later requests (the API
//! requires the thinking that preceded a tool call to come back with it).
//!
//! Billing: a stream that fails after `message_start` (an `error` event such as
//! `overloaded_error`, a dropped connection, an end before `message_stop`) was
//! billed for its input and for the output streamed so far; the error carries
//! that ([`LlmError::Billed`]): the input from `message_start`, the output from
//! the last usage seen or, when larger, estimated from the streamed text. A
//! finished message without usage is an error carrying an estimate.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::sse::SseDecoder;
use super::{
    ApiKey, BilledUsage, ChatRequest, ChatResponse, ContentBlock, LanguageModel, LlmError,
    RetryPolicy, Usage, estimate_tokens, retry_after, with_retries,
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

    async fn attempt(
        &self,
        body: &Value,
        body_chars: usize,
    ) -> Result<ChatResponse, (LlmError, Option<Duration>)> {
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
        let mut assembler = Assembler::new(body_chars);
        let read = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| LlmError::Transport(without_url(&e)))?;
                for event in decoder.push(&chunk) {
                    if assembler.event(&event.event, &event.data)? {
                        return Ok(());
                    }
                }
            }
            Err(LlmError::Transport(
                "stream ended before message_stop".to_owned(),
            ))
        };
        let outcome = read.await.and_then(|()| assembler.finish());
        outcome.map_err(|error| {
            // Whatever failed, what the provider billed so far is charged.
            let billed = assembler.billed_so_far();
            (
                LlmError::with_billed(error, &self.config.model, billed),
                None,
            )
        })
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
            let body_chars = body.to_string().chars().count();
            with_retries(&self.config.model, &self.config.retry, || {
                self.attempt(&body, body_chars)
            })
            .await
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
        .map(|m| {
            // Thinking goes back verbatim (signature and all) and in place. A thinking
            // block without a signature (cut by max_tokens before the signature came)
            // cannot be verified and would be refused: it stays in the conversation and
            // the transcript, and is left out here.
            let content: Vec<&ContentBlock> = m
                .content
                .iter()
                .filter(|b| !matches!(b, ContentBlock::Thinking { signature, .. } if signature.is_empty()))
                .collect();
            json!({ "role": m.role, "content": content })
        })
        .collect();
    if caching
        && let Some(last) = messages.last_mut()
        && let Some(block) = last["content"].as_array_mut().and_then(|c| {
            // Thinking blocks cannot carry cache_control.
            c.iter_mut()
                .rev()
                .find(|b| !matches!(b["type"].as_str(), Some("thinking" | "redacted_thinking")))
        })
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
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking(String),
    Other,
}

/// Which usage fields the stream has reported.
#[derive(Debug, Default, Clone, Copy)]
struct Reported {
    input: bool,
    output: bool,
}

/// Builds a message from stream events.
#[derive(Debug, Default)]
struct Assembler {
    model: String,
    blocks: Vec<(usize, Partial)>,
    usage: Usage,
    reported: Reported,
    stop_reason: Option<String>,
    started: bool,
    /// Characters of the request body (for an estimate of the input when the
    /// stream reports none).
    request_chars: usize,
    /// Characters of output streamed so far: text, thinking, tool input.
    streamed_chars: usize,
}

fn protocol(what: impl Into<String>) -> LlmError {
    LlmError::Protocol(what.into())
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn merge_usage(usage: &mut Usage, reported: &mut Reported, v: &Value) {
    if let Some(n) = u64_of(&v["input_tokens"]) {
        usage.input_tokens = n;
        reported.input = true;
    }
    if let Some(n) = u64_of(&v["output_tokens"]) {
        usage.output_tokens = n;
        reported.output = true;
    }
    if let Some(n) = u64_of(&v["cache_creation_input_tokens"]) {
        usage.cache_creation_input_tokens = n;
    }
    if let Some(n) = u64_of(&v["cache_read_input_tokens"]) {
        usage.cache_read_input_tokens = n;
    }
}

impl Assembler {
    fn new(request_chars: usize) -> Assembler {
        Assembler {
            request_chars,
            ..Assembler::default()
        }
    }

    /// Usage for a message that ended (or failed) here: what the stream reported,
    /// the output raised to an estimate of the streamed text when that is larger, the
    /// input estimated from the request when never reported. Returns the usage and
    /// how many of its tokens are estimates.
    fn usage_so_far(&self) -> (Usage, u64) {
        let mut usage = self.usage;
        let mut estimated = 0;
        if !self.reported.input {
            usage.input_tokens = estimate_tokens(self.request_chars);
            estimated += usage.input_tokens;
        }
        let streamed = estimate_tokens(self.streamed_chars);
        if streamed > usage.output_tokens {
            estimated += streamed - usage.output_tokens;
            usage.output_tokens = streamed;
        }
        (usage, estimated)
    }

    /// What a failed attempt was billed: nothing before `message_start`, else the
    /// input and the output so far ([`Assembler::usage_so_far`]); nothing when that
    /// is zero tokens.
    fn billed_so_far(&self) -> BilledUsage {
        if !self.started {
            return BilledUsage::default();
        }
        let (usage, estimated_tokens) = self.usage_so_far();
        if usage.is_zero() {
            return BilledUsage::default();
        }
        BilledUsage {
            usage,
            estimated_tokens,
            attempts: 1,
        }
    }

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
                merge_usage(&mut self.usage, &mut self.reported, &v["message"]["usage"]);
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
                    Some("thinking") => Partial::Thinking {
                        thinking: block["thinking"].as_str().unwrap_or("").to_owned(),
                        signature: block["signature"].as_str().unwrap_or("").to_owned(),
                    },
                    Some("redacted_thinking") => Partial::RedactedThinking(
                        block["data"]
                            .as_str()
                            .ok_or_else(|| protocol("redacted_thinking without data"))?
                            .to_owned(),
                    ),
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
                let field = |name: &str| delta[name].as_str().unwrap_or("");
                match (delta["type"].as_str(), partial) {
                    (Some("text_delta"), Partial::Text(text)) => {
                        *text += field("text");
                        self.streamed_chars += field("text").chars().count();
                    }
                    (Some("input_json_delta"), Partial::ToolUse { json, .. }) => {
                        *json += field("partial_json");
                        self.streamed_chars += field("partial_json").chars().count();
                    }
                    (Some("thinking_delta"), Partial::Thinking { thinking, .. }) => {
                        *thinking += field("thinking");
                        self.streamed_chars += field("thinking").chars().count();
                    }
                    (Some("signature_delta"), Partial::Thinking { signature, .. }) => {
                        *signature += field("signature");
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
                merge_usage(&mut self.usage, &mut self.reported, &v["usage"]);
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

    /// The message, at `message_stop`. On an error the caller charges
    /// [`Assembler::billed_so_far`]: a message without usage is such an error.
    fn finish(&mut self) -> Result<ChatResponse, LlmError> {
        if !self.started {
            return Err(protocol("message_stop before message_start"));
        }
        if !(self.reported.input && self.reported.output) {
            return Err(protocol(
                "the message reports no token usage (usage.input_tokens, usage.output_tokens); \
                 aar counts every call against the budget and charges an estimate instead",
            ));
        }
        let mut blocks = std::mem::take(&mut self.blocks);
        blocks.sort_by_key(|(i, _)| *i);
        let content = blocks
            .into_iter()
            .filter_map(|(_, p)| match p {
                Partial::Text(text) => Some(ContentBlock::Text { text }),
                Partial::ToolUse {
                    id, name, input, ..
                } => Some(ContentBlock::ToolUse { id, name, input }),
                Partial::Thinking {
                    thinking,
                    signature,
                } => Some(ContentBlock::Thinking {
                    thinking,
                    signature,
                }),
                Partial::RedactedThinking(data) => Some(ContentBlock::RedactedThinking { data }),
                Partial::Other => None,
            })
            .collect();
        Ok(ChatResponse {
            model: self.model.clone(),
            content,
            stop_reason: self.stop_reason.clone(),
            usage: self.usage,
            attempts: 1,
            failed_attempts: BilledUsage::default(),
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

    fn feed(a: &mut Assembler, events: &[(&str, &str)]) -> Result<bool, LlmError> {
        let mut done = false;
        for (name, data) in events {
            done = a.event(name, data)?;
        }
        Ok(done)
    }

    #[test]
    fn thinking_and_redacted_thinking_are_kept_with_their_signature() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":50,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me list "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"the files."}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_9","name":"shell","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"command\":\"ls\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":2}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":80}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let mut a = Assembler::default();
        assert!(feed(&mut a, &events).unwrap_or_else(|e| panic!("{e}")));
        let r = a.finish().unwrap_or_else(|e| panic!("{e}"));
        let thinking = ContentBlock::Thinking {
            thinking: "Let me list the files.".into(),
            signature: "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds".into(),
        };
        let redacted = ContentBlock::RedactedThinking {
            data: "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP".into(),
        };
        let tool = ContentBlock::ToolUse {
            id: "toolu_9".into(),
            name: "shell".into(),
            input: json!({"command": "ls"}),
        };
        assert_eq!(
            r.content,
            vec![thinking.clone(), redacted.clone(), tool.clone()]
        );
        assert_eq!(r.usage.output_tokens, 80);

        // Sent back verbatim and in place, in the API's own block format; a thinking
        // block cut before its signature is left out; the cache breakpoint skips
        // thinking.
        assert_eq!(
            serde_json::to_value(&thinking).unwrap_or_default(),
            json!({"type": "thinking", "thinking": "Let me list the files.",
                   "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"})
        );
        let unsigned = ContentBlock::Thinking {
            thinking: "cut".into(),
            signature: String::new(),
        };
        let messages = vec![
            crate::llm::Message::user_text("go"),
            crate::llm::Message {
                role: crate::llm::Role::Assistant,
                content: vec![thinking, redacted, tool],
            },
            crate::llm::Message {
                role: crate::llm::Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "toolu_9".into(),
                    content: "a.txt".into(),
                    is_error: false,
                }],
            },
            crate::llm::Message {
                role: crate::llm::Role::Assistant,
                content: vec![ContentBlock::text("ok"), unsigned],
            },
        ];
        let body = request_body(
            "claude-x",
            true,
            &ChatRequest {
                system: "s",
                messages: &messages,
                tools: &[],
                max_tokens: 100,
            },
        );
        let assistant = &body["messages"][1]["content"];
        assert_eq!(assistant[0]["type"], "thinking");
        assert_eq!(
            assistant[0]["signature"],
            "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
        );
        assert_eq!(assistant[0]["thinking"], "Let me list the files.");
        assert_eq!(assistant[1]["type"], "redacted_thinking");
        assert_eq!(assistant[2]["type"], "tool_use");
        let last = body["messages"][3]["content"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(last.len(), 1, "the unsigned thinking is not sent: {last:?}");
        assert_eq!(last[0]["cache_control"]["type"], "ephemeral");
        let only_thinking = vec![crate::llm::Message {
            role: crate::llm::Role::Assistant,
            content: vec![
                ContentBlock::text("t"),
                ContentBlock::RedactedThinking { data: "x".into() },
            ],
        }];
        let body = request_body(
            "claude-x",
            true,
            &ChatRequest {
                system: "s",
                messages: &only_thinking,
                tools: &[],
                max_tokens: 100,
            },
        );
        let blocks = &body["messages"][0]["content"];
        assert_eq!(blocks[0]["cache_control"]["type"], "ephemeral");
        assert!(blocks[1].get("cache_control").is_none(), "{blocks}");
    }

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1200,"cache_creation_input_tokens":0,"cache_read_input_tokens":3000,"output_tokens":1}}}"#;

    #[test]
    fn a_stream_cut_after_message_start_is_billed_its_input_and_output_so_far() {
        let mut a = Assembler::new(999);
        assert_eq!(a.billed_so_far(), BilledUsage::default(), "nothing yet");
        let forty = "x".repeat(40);
        let delta = format!(
            r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{forty}"}}}}"#
        );
        let e = feed(
            &mut a,
            &[
                ("message_start", START),
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
                ("content_block_delta", &delta),
                (
                    "error",
                    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                ),
            ],
        )
        .err();
        assert!(matches!(&e, Some(LlmError::Api { kind, .. }) if kind == "overloaded_error"));
        // Input as reported; output: 40 characters streamed ~ 10 tokens, 9 more than
        // message_start's 1, so 9 are estimated.
        assert_eq!(
            a.billed_so_far(),
            BilledUsage {
                usage: Usage {
                    input_tokens: 1200,
                    output_tokens: 10,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: 3000,
                },
                estimated_tokens: 9,
                attempts: 1,
            }
        );
        // A later message_delta usage that is larger wins and is not an estimate.
        feed(
            &mut a,
            &[(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":25}}"#,
            )],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let billed = a.billed_so_far();
        assert_eq!(
            (billed.usage.output_tokens, billed.estimated_tokens),
            (25, 0)
        );
        // The error keeps the cause and carries the bill.
        let e = LlmError::with_billed(
            LlmError::Transport("reset".into()),
            "claude-sonnet-4-5",
            billed,
        );
        assert_eq!(e.billed(), billed);
        assert!(matches!(e.cause(), LlmError::Transport(_)));
        assert!(e.retryable());
        assert!(e.to_string().contains("billed"), "{e}");
    }

    #[test]
    fn a_message_without_usage_is_an_error_carrying_an_estimate() {
        let mut a = Assembler::new(400);
        let done = feed(
            &mut a,
            &[
                (
                    "message_start",
                    r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"claude-x"}}"#,
                ),
                (
                    "content_block_start",
                    r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
                (
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"twelve chars"}}"#,
                ),
                ("message_stop", r#"{"type":"message_stop"}"#),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(done);
        let e = a.finish().err();
        assert!(
            matches!(&e, Some(LlmError::Protocol(m)) if m.contains("usage")),
            "{e:?}"
        );
        assert!(!e.is_some_and(|e| e.retryable()));
        // 400 request characters ~ 100 tokens in, 12 streamed ~ 3 out, all estimated.
        let billed = a.billed_so_far();
        assert_eq!(
            (
                billed.usage.input_tokens,
                billed.usage.output_tokens,
                billed.estimated_tokens
            ),
            (100, 3, 103)
        );
    }
}
