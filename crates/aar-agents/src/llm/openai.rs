//! OpenAI-compatible chat completions (`POST {base}/chat/completions`), with
//! function calling; for OpenAI itself or a local model server (vLLM,
//! llama.cpp, Ollama). Not streamed: one JSON answer per request, whose
//! `usage` is part of the body (a streamed request would need
//! `stream_options: {"include_usage": true}` to get usage at all).
//!
//! A response without usage is an error that carries an estimate of what it
//! cost ([`LlmError::Billed`], about four characters a token of the request
//! and the answer), so it is charged and flagged, never counted as free.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::{
    ApiKey, BilledUsage, ChatRequest, ChatResponse, ContentBlock, LanguageModel, LlmError,
    RetryPolicy, Role, Usage, estimate_tokens, retry_after, with_retries,
};

/// Configuration of [`OpenAiClient`].
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`
    /// or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// The key (`None` for local servers without one).
    pub api_key: Option<ApiKey>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Timeout of one whole request.
    pub request_timeout: Duration,
}

impl OpenAiConfig {
    /// Defaults for `model` at `base_url`, the key from `OPENAI_API_KEY` if set.
    pub fn new(base_url: &str, model: &str) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.to_owned(),
            model: model.to_owned(),
            api_key: ApiKey::from_env("OPENAI_API_KEY").ok(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// A chat-completions client.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    config: OpenAiConfig,
    http: reqwest::Client,
}

impl OpenAiClient {
    /// A client.
    pub fn new(config: OpenAiConfig) -> Result<OpenAiClient, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        Ok(OpenAiClient { config, http })
    }

    async fn attempt(
        &self,
        body: &Value,
        body_chars: usize,
    ) -> Result<ChatResponse, (LlmError, Option<Duration>)> {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self.http.post(url).json(body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| (LlmError::Transport(e.without_url().to_string()), None))?;
        let status = response.status();
        let after = retry_after(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| (LlmError::Transport(e.without_url().to_string()), None))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err((
                LlmError::Api {
                    status: status.as_u16(),
                    kind: v["error"]["type"]
                        .as_str()
                        .or(v["error"]["code"].as_str())
                        .unwrap_or("http_error")
                        .to_owned(),
                    message: v["error"]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| text.chars().take(500).collect()),
                },
                after,
            ));
        }
        parse_response(&v).map_err(|e| {
            // A response without usage: charge an estimate, then fail.
            let billed = match &e {
                ParseError::NoUsage(estimate) => {
                    let mut billed = *estimate;
                    if v["usage"]["prompt_tokens"].as_u64().is_none() {
                        billed.usage.input_tokens = estimate_tokens(body_chars);
                        billed.estimated_tokens += billed.usage.input_tokens;
                    }
                    billed
                }
                ParseError::Protocol(_) => BilledUsage::default(),
            };
            (
                LlmError::with_billed(e.into(), &self.config.model, billed),
                None,
            )
        })
    }
}

impl LanguageModel for OpenAiClient {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn complete<'a>(
        &'a self,
        request: ChatRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>> {
        Box::pin(async move {
            let body = request_body_for(&self.config.base_url, &self.config.model, &request);
            let body_chars = body.to_string().chars().count();
            with_retries(&self.config.model, &self.config.retry, || {
                self.attempt(&body, body_chars)
            })
            .await
        })
    }
}

/// Whether the server is OpenAI's own API, which takes `max_completion_tokens`; other
/// OpenAI-compatible servers (llama.cpp, vLLM, ...) take `max_tokens`.
///
/// Why one name per server and not both everywhere: OpenAI deprecates `max_tokens`
/// and refuses it outright for its reasoning (o-series, gpt-5) models, so its own
/// API gets only `max_completion_tokens`. Every OpenAI-compatible server takes
/// `max_tokens` (llama.cpp's and Ollama's servers, vLLM, TGI), while support for the
/// newer name varies by server and version; and some servers validate bodies
/// strictly and refuse fields they do not know, so sending both names could break
/// a local server that works with one. Local servers therefore get `max_tokens`.
pub fn wants_max_completion_tokens(base_url: &str) -> bool {
    base_url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', ':']).next().unwrap_or(""))
        .is_some_and(|host| host.eq_ignore_ascii_case("api.openai.com"))
}

/// [`request_body`] with the token limit under the name `base_url`'s server takes.
pub fn request_body_for(base_url: &str, model: &str, request: &ChatRequest<'_>) -> Value {
    let mut body = request_body(model, request);
    if wants_max_completion_tokens(base_url) {
        // OpenAI's own API deprecates `max_tokens` and refuses it for reasoning models.
        if let Some(limit) = body.as_object_mut().and_then(|b| b.remove("max_tokens")) {
            body["max_completion_tokens"] = limit;
        }
    }
    body
}

/// The request body, translated from content blocks to chat messages.
pub fn request_body(model: &str, request: &ChatRequest<'_>) -> Value {
    let mut messages = vec![json!({ "role": "system", "content": request.system })];
    for message in request.messages {
        match message.role {
            Role::Assistant => {
                let calls: Vec<Value> = message
                    .tool_uses()
                    .map(|(id, name, input)| {
                        json!({
                            "id": id, "type": "function",
                            "function": { "name": name, "arguments": input.to_string() },
                        })
                    })
                    .collect();
                let mut m = json!({ "role": "assistant", "content": message.text() });
                if !calls.is_empty() {
                    m["tool_calls"] = Value::from(calls);
                }
                messages.push(m);
            }
            Role::User => {
                let mut text = String::new();
                for block in &message.content {
                    match block {
                        ContentBlock::ToolResult {
                            tool_use_id,
                            content,
                            ..
                        } => messages.push(
                            json!({ "role": "tool", "tool_call_id": tool_use_id, "content": content }),
                        ),
                        ContentBlock::Text { text: t } => text += t,
                        // Anthropic's thinking has no chat-completions form.
                        ContentBlock::ToolUse { .. }
                        | ContentBlock::Thinking { .. }
                        | ContentBlock::RedactedThinking { .. } => {}
                    }
                }
                if !text.is_empty() {
                    messages.push(json!({ "role": "user", "content": text }));
                }
            }
        }
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| {
            json!({ "type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.input_schema,
            }})
        })
        .collect();
    let mut body =
        json!({ "model": model, "messages": messages, "max_tokens": request.max_tokens });
    if !tools.is_empty() {
        body["tools"] = Value::from(tools);
    }
    body
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// It does not follow the protocol.
    #[error("{0}")]
    Protocol(String),
    /// It reports no usage: an estimate of what it cost (the output from its
    /// text and tool calls, the input from `prompt_tokens` when given, else 0 for
    /// the caller to estimate from the request).
    #[error("the response reports no token usage")]
    NoUsage(BilledUsage),
}

impl From<ParseError> for LlmError {
    fn from(e: ParseError) -> LlmError {
        match e {
            ParseError::Protocol(m) => LlmError::Protocol(m),
            ParseError::NoUsage(_) => LlmError::Protocol(
                "the response reports no token usage (usage.prompt_tokens, \
                 usage.completion_tokens); aar counts every call against the budget and \
                 charges an estimate instead of counting it as free"
                    .to_owned(),
            ),
        }
    }
}

/// The first choice as content blocks; usage split into uncached and cached input.
pub fn parse_response(v: &Value) -> Result<ChatResponse, ParseError> {
    let choice = &v["choices"][0];
    let message = &choice["message"];
    if message.is_null() {
        return Err(ParseError::Protocol("no choices[0].message".to_owned()));
    }
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str()
        && !text.is_empty()
    {
        content.push(ContentBlock::text(text));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let id = call["id"]
            .as_str()
            .ok_or_else(|| ParseError::Protocol("tool call without id".to_owned()))?;
        let name = call["function"]["name"]
            .as_str()
            .ok_or_else(|| ParseError::Protocol("tool call without name".to_owned()))?;
        let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
        // A model that writes bad JSON gets the raw text back as the input, so
        // the tool reports the problem instead of the loop failing.
        let input = serde_json::from_str(arguments)
            .unwrap_or_else(|_| json!({ "_unparsed_arguments": arguments }));
        content.push(ContentBlock::ToolUse {
            id: id.to_owned(),
            name: name.to_owned(),
            input,
        });
    }
    let usage = &v["usage"];
    // Every call is counted against the budget: a response that does not say what it
    // cost is an error carrying an estimate, never counted as free.
    let (Some(prompt), Some(completion)) = (
        usage["prompt_tokens"].as_u64(),
        usage["completion_tokens"].as_u64(),
    ) else {
        let mut estimate = BilledUsage {
            attempts: 1,
            ..BilledUsage::default()
        };
        if let Some(prompt) = usage["prompt_tokens"].as_u64() {
            estimate.usage.input_tokens = prompt;
        }
        estimate.usage.output_tokens = match usage["completion_tokens"].as_u64() {
            Some(completion) => completion,
            None => {
                let chars = message["content"].as_str().map_or(0, |t| t.chars().count())
                    + message["tool_calls"].as_array().map_or(0, |calls| {
                        Value::from(calls.clone()).to_string().chars().count()
                    });
                let tokens = estimate_tokens(chars);
                estimate.estimated_tokens += tokens;
                tokens
            }
        };
        return Err(ParseError::NoUsage(estimate));
    };
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
        .min(prompt);
    let stop_reason = match choice["finish_reason"].as_str() {
        Some("tool_calls") => Some("tool_use".to_owned()),
        Some("stop") => Some("end_turn".to_owned()),
        Some("length") => Some("max_tokens".to_owned()),
        other => other.map(str::to_owned),
    };
    Ok(ChatResponse {
        model: v["model"].as_str().unwrap_or_default().to_owned(),
        content,
        stop_reason,
        usage: Usage {
            input_tokens: prompt - cached,
            output_tokens: completion,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        },
        attempts: 1,
        failed_attempts: BilledUsage::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Message, ToolSpec};

    #[test]
    fn translates_tool_calls_and_results_both_ways() {
        let messages = vec![
            Message::user_text("go"),
            Message {
                role: Role::Assistant,
                content: vec![
                    ContentBlock::text("running"),
                    ContentBlock::ToolUse {
                        id: "c1".into(),
                        name: "shell".into(),
                        input: json!({"command": "ls"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "c1".into(),
                    content: "a.txt".into(),
                    is_error: false,
                }],
            },
        ];
        let tools = vec![ToolSpec {
            name: "shell".into(),
            description: "run".into(),
            input_schema: json!({"type": "object"}),
        }];
        let body = request_body(
            "m",
            &ChatRequest {
                system: "sys",
                messages: &messages,
                tools: &tools,
                max_tokens: 10,
            },
        );
        let m = &body["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"ls\"}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
        );
        assert_eq!(body["tools"][0]["function"]["name"], "shell");

        let response = json!({
            "model": "m",
            "choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "shell", "arguments": "{\"command\":\"pwd\"}"}}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
        });
        let r = parse_response(&response).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 40,
                output_tokens: 7,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 60
            }
        );
        assert_eq!(
            r.content,
            vec![ContentBlock::ToolUse {
                id: "c2".into(),
                name: "shell".into(),
                input: json!({"command": "pwd"})
            }]
        );

        // No usage: an error carrying an estimate, not a free call.
        let mut silent = response.clone();
        silent["usage"] = Value::Null;
        let Err(ParseError::NoUsage(estimate)) = parse_response(&silent) else {
            panic!("no usage must be an error");
        };
        let calls_chars = response["choices"][0]["message"]["tool_calls"]
            .to_string()
            .chars()
            .count() as u64;
        assert_eq!(estimate.usage.output_tokens, calls_chars.div_ceil(4));
        assert_eq!(estimate.usage.input_tokens, 0, "left to the caller");
        assert_eq!(estimate.estimated_tokens, calls_chars.div_ceil(4));
        assert!(
            LlmError::from(ParseError::NoUsage(estimate))
                .to_string()
                .contains("usage")
        );
        // Reported prompt tokens are kept; only the missing count is estimated.
        silent["usage"] = json!({"prompt_tokens": 90});
        let Err(ParseError::NoUsage(estimate)) = parse_response(&silent) else {
            panic!("half a usage must be an error");
        };
        assert_eq!(estimate.usage.input_tokens, 90);
        assert_eq!(estimate.estimated_tokens, estimate.usage.output_tokens);
    }

    #[test]
    fn only_openais_own_api_gets_max_completion_tokens() {
        let request = ChatRequest {
            system: "sys",
            messages: &[],
            tools: &[],
            max_tokens: 77,
        };
        let openai = request_body_for("https://api.openai.com/v1", "m", &request);
        assert_eq!(openai["max_completion_tokens"], 77);
        assert!(openai.get("max_tokens").is_none(), "{openai}");
        let local = request_body_for("http://127.0.0.1:8080/v1", "m", &request);
        assert_eq!(local["max_tokens"], 77);
        assert!(local.get("max_completion_tokens").is_none(), "{local}");
        assert!(wants_max_completion_tokens("https://api.openai.com/v1"));
        assert!(wants_max_completion_tokens("https://API.openai.com:443/v1"));
        for other in [
            "http://127.0.0.1:8080/v1",
            "https://api.openai.com.evil.example/v1",
            "https://example.com/api.openai.com/v1",
            "not a url",
        ] {
            assert!(!wants_max_completion_tokens(other), "{other}");
        }
    }

    /// Answers of a real llama-server (llama.cpp as vendored in llama-cpp-python 0.3.36, `--jinja`,
    /// Qwen2.5-Coder-1.5B-Instruct; captured by `scripts/llm-live`): 32-character call ids,
    /// `content` empty or text beside the calls, the reused prompt prefix under
    /// `prompt_tokens_details.cached_tokens` (part of `prompt_tokens`), and its own `timings`.
    #[test]
    fn reads_llama_server_answers() {
        let call_only = r#"{"choices":[{"finish_reason":"tool_calls","index":0,"message":{"role":"assistant","content":"","tool_calls":[{"type":"function","function":{"name":"shell","arguments":"{\"command\": \"ls\"}"},"id":"5vtf6Ao149pnlMU4Hb2UeCCtHMVWpH7x"}]}}],"created":1796019783,"model":"qwen2.5-coder-1.5b-instruct","system_fingerprint":"b0-unknown","object":"chat.completion","usage":{"completion_tokens":20,"prompt_tokens":164,"total_tokens":184,"prompt_tokens_details":{"cached_tokens":163}},"id":"chatcmpl-NmYlbUFxyHDhsAvHLFtl7HauiJ9zQtEt","timings":{"cache_n":163,"prompt_n":1,"prompt_ms":170.136,"prompt_per_token_ms":170.136,"prompt_per_second":5.877650820520055,"predicted_n":20,"predicted_ms":2090.758,"predicted_per_token_ms":110.0398947368421,"predicted_per_second":9.087613200571276}}"#;
        let r = parse_response(&serde_json::from_str(call_only).unwrap_or(Value::Null))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.content,
            vec![ContentBlock::ToolUse {
                id: "5vtf6Ao149pnlMU4Hb2UeCCtHMVWpH7x".into(),
                name: "shell".into(),
                input: json!({"command": "ls"}),
            }]
        );
        assert_eq!(r.stop_reason.as_deref(), Some("tool_use"));
        assert_eq!(r.model, "qwen2.5-coder-1.5b-instruct");
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 1,
                output_tokens: 20,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 163,
            }
        );

        let text_and_call = r#"{"choices":[{"finish_reason":"tool_calls","index":0,"message":{"role":"assistant","content":"To consider whether the strong model already knows the answers without being told, you can use the following function call:\n\n","tool_calls":[{"type":"function","function":{"name":"notebook_update","arguments":"{\"content\": \"Let's start by checking if the strong model already knows the answers without being told.\", \"mode\": \"append\"}"},"id":"XyLT3zNBmKbNXhfWEWh47XhVPknEoWjf"}]}}],"created":1796020770,"model":"qwen2.5-coder-1.5b-instruct","system_fingerprint":"b0-unknown","object":"chat.completion","usage":{"completion_tokens":117,"prompt_tokens":2666,"total_tokens":2783,"prompt_tokens_details":{"cached_tokens":5}},"id":"chatcmpl-7SvrAqHvWq9tg50J4espksQj76yJmlKn","timings":{"cache_n":5,"prompt_n":2661,"prompt_ms":139844.009,"prompt_per_token_ms":52.55317888012025,"prompt_per_second":19.02834464649823,"predicted_n":117,"predicted_ms":18400.047,"predicted_per_token_ms":158.6210948275862,"predicted_per_second":6.304331722630926}}"#;
        let r = parse_response(&serde_json::from_str(text_and_call).unwrap_or(Value::Null))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&r.content[..], [ContentBlock::Text { text }, ContentBlock::ToolUse { id, name, input }]
                if text.starts_with("To consider") && id == "XyLT3zNBmKbNXhfWEWh47XhVPknEoWjf"
                    && name == "notebook_update" && input["mode"] == "append"),
            "{:?}",
            r.content
        );
        assert_eq!(
            (
                r.usage.input_tokens,
                r.usage.cache_read_input_tokens,
                r.usage.output_tokens
            ),
            (2661, 5, 117)
        );

        // The next request carries the call under the server's id, then its result.
        let messages = vec![
            Message {
                role: Role::Assistant,
                content: r.content.clone(),
            },
            Message {
                role: Role::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "XyLT3zNBmKbNXhfWEWh47XhVPknEoWjf".into(),
                    content: "appended".into(),
                    is_error: false,
                }],
            },
        ];
        let body = request_body(
            "qwen2.5-coder-1.5b-instruct",
            &ChatRequest {
                system: "sys",
                messages: &messages,
                tools: &[],
                max_tokens: 4096,
            },
        );
        let call = &body["messages"][1]["tool_calls"][0];
        assert_eq!(call["id"], "XyLT3zNBmKbNXhfWEWh47XhVPknEoWjf");
        assert_eq!(call["function"]["name"], "notebook_update");
        assert_eq!(
            body["messages"][2],
            json!({"role": "tool", "tool_call_id": "XyLT3zNBmKbNXhfWEWh47XhVPknEoWjf", "content": "appended"})
        );
    }
}
