//! LLM clients behind one trait, [`LanguageModel`]: the Anthropic Messages
//! API ([`anthropic::AnthropicClient`]: streaming, tool use, prompt caching)
//! and OpenAI-compatible chat completions ([`openai::OpenAiClient`], e.g. a
//! local model server). Both retry 429, 5xx and "overloaded" answers with
//! exponential backoff and jitter, honouring `retry-after`.
//!
//! The conversation types here are the Anthropic ones (content blocks); the
//! OpenAI client translates.
//!
//! Accounting: every token a provider bills reaches the ledger. A response
//! that reports no usage is an error that carries an estimate (about four
//! characters a token, flagged as estimated), never a free call; an attempt
//! that fails after the provider started billing (an Anthropic stream cut by
//! an `error` event or a dropped connection after `message_start`) is charged
//! what it was billed, whether a retry then succeeds
//! ([`ChatResponse::failed_attempts`]) or the call fails ([`LlmError::Billed`]).

pub mod anthropic;
pub mod openai;
mod sse;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user (the agent loop: prompts and tool results).
    User,
    /// The model.
    Assistant,
}

/// One block of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call by the model.
    ToolUse {
        /// Id the result refers to.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (a JSON object).
        input: serde_json::Value,
    },
    /// The model's extended thinking (Anthropic). Kept as received and sent back
    /// unchanged: the API checks the signature, and requires the thinking of the
    /// turn that called a tool to precede that tool call in the next request.
    Thinking {
        /// The (summarized) thinking text.
        thinking: String,
        /// The signature the API verifies.
        signature: String,
    },
    /// Thinking the API encrypted (Anthropic); sent back unchanged.
    RedactedThinking {
        /// The encrypted thinking.
        data: String,
    },
    /// The result of a tool call.
    ToolResult {
        /// The call's id.
        tool_use_id: String,
        /// The result as text.
        content: String,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> ContentBlock {
        ContentBlock::Text { text: text.into() }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Its author.
    pub role: Role,
    /// Its blocks.
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message with one text block.
    pub fn user_text(text: impl Into<String>) -> Message {
        Message {
            role: Role::User,
            content: vec![ContentBlock::text(text)],
        }
    }

    /// The tool calls of this message: (id, name, input).
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &serde_json::Value)> {
        self.content.iter().filter_map(|b| match b {
            ContentBlock::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }

    /// Its text blocks joined.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for block in &self.content {
            if let ContentBlock::Text { text } = block {
                out += text;
            }
        }
        out
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of its input.
    pub input_schema: serde_json::Value,
}

/// One request: system prompt, conversation, tools.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest<'a> {
    /// System prompt.
    pub system: &'a str,
    /// The conversation so far (starts with a user message).
    pub messages: &'a [Message],
    /// Tools.
    pub tools: &'a [ToolSpec],
    /// Most output tokens.
    pub max_tokens: u32,
}

/// Tokens of one response, in Anthropic's four kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// Whether every count is zero.
    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }

    /// All four kinds added.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }

    /// The size of the context this response saw plus what it wrote.
    pub fn context_tokens(&self) -> u64 {
        self.total()
    }

    /// Field-wise sum.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(other.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(other.cache_read_input_tokens);
    }
}

/// Tokens billed for attempts that failed (a stream cut after the provider
/// started billing, a response without usage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BilledUsage {
    /// The tokens, in the four kinds.
    pub usage: Usage,
    /// How many of them are estimates (about four characters a token of what was
    /// sent or streamed) because the provider did not report them.
    pub estimated_tokens: u64,
    /// How many failed attempts were billed.
    pub attempts: u32,
}

impl BilledUsage {
    /// Nothing billed.
    pub fn is_zero(&self) -> bool {
        self.usage.is_zero() && self.attempts == 0
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &BilledUsage) {
        self.usage.add(&other.usage);
        self.estimated_tokens = self.estimated_tokens.saturating_add(other.estimated_tokens);
        self.attempts = self.attempts.saturating_add(other.attempts);
    }
}

/// Tokens in `chars` characters of text or JSON, estimated at four characters a
/// token (rounded up): the estimate used where a provider reports no usage.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// One response.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The model that answered (as the API reports it).
    pub model: String,
    /// The assistant's content.
    pub content: Vec<ContentBlock>,
    /// Why it stopped (`end_turn`, `tool_use`, `max_tokens`, ...).
    pub stop_reason: Option<String>,
    /// Tokens.
    pub usage: Usage,
    /// How many attempts it took (1 when the first succeeded).
    pub attempts: u32,
    /// What earlier attempts of this call that failed after the provider had
    /// started billing cost (zero when none did); charged besides `usage`.
    pub failed_attempts: BilledUsage,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The API answered with an error status (after retries, where retryable).
    #[error("LLM API error {status} ({kind}): {message}")]
    Api {
        /// HTTP status (0 for an error event inside a stream).
        status: u16,
        /// Error type, e.g. `overloaded_error`.
        kind: String,
        /// Message.
        message: String,
    },
    /// Transport failure (connect, TLS, reading the body).
    #[error("LLM transport: {0}")]
    Transport(String),
    /// The response did not follow the protocol.
    #[error("LLM protocol: {0}")]
    Protocol(String),
    /// No API key configured.
    #[error("no API key: {0}")]
    NoKey(String),
    /// The call failed after the provider had billed for it (a stream cut after
    /// `message_start`, a response without usage): `error` says why, `billed`
    /// is what the failed attempts cost, to be charged to the ledger.
    #[error("{error} (billed: {} tokens in {} failed attempt(s), {} of them estimated)",
        billed.usage.total(), billed.attempts, billed.estimated_tokens)]
    Billed {
        /// The model, as configured (the one the ledger prices).
        model: String,
        /// What was billed.
        billed: BilledUsage,
        /// The failure.
        error: Box<LlmError>,
    },
}

impl LlmError {
    /// Whether the provider refused the request for not fitting the model's context
    /// window: Anthropic's `prompt is too long`, OpenAI's `context_length_exceeded`,
    /// llama.cpp's `exceed_context_size_error`. The agent answers it with a fresh
    /// session rather than stopping.
    pub fn is_context_overflow(&self) -> bool {
        match self {
            LlmError::Api {
                status: 400 | 413,
                kind,
                message,
            } => {
                let message = message.to_ascii_lowercase();
                kind.contains("context")
                    || message.contains("prompt is too long")
                    || message.contains("context length")
                    || message.contains("context size")
            }
            LlmError::Billed { error, .. } => error.is_context_overflow(),
            _ => false,
        }
    }

    /// What the failed attempts behind this error were billed (zero when nothing).
    pub fn billed(&self) -> BilledUsage {
        match self {
            LlmError::Billed { billed, .. } => *billed,
            _ => BilledUsage::default(),
        }
    }

    /// The failure itself, without the billing around it.
    pub fn cause(&self) -> &LlmError {
        match self {
            LlmError::Billed { error, .. } => error.cause(),
            other => other,
        }
    }

    fn into_cause(self) -> LlmError {
        match self {
            LlmError::Billed { error, .. } => error.into_cause(),
            other => other,
        }
    }

    /// `error` with `billed` attached (as is when nothing was billed).
    pub(crate) fn with_billed(error: LlmError, model: &str, billed: BilledUsage) -> LlmError {
        if billed.is_zero() {
            return error;
        }
        LlmError::Billed {
            model: model.to_owned(),
            billed,
            error: Box::new(error.into_cause()),
        }
    }

    fn retryable(&self) -> bool {
        match self {
            LlmError::Billed { error, .. } => error.retryable(),
            LlmError::Api { status, kind, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 529)
                    || matches!(
                        kind.as_str(),
                        "overloaded_error" | "rate_limit_error" | "api_error"
                    )
            }
            LlmError::Transport(_) => true,
            LlmError::Protocol(_) | LlmError::NoKey(_) => false,
        }
    }
}

/// A language model the agent loop can call.
pub trait LanguageModel: Send + Sync {
    /// The configured model name (used for pricing).
    fn model(&self) -> &str;

    /// One completion.
    fn complete<'a>(
        &'a self,
        request: ChatRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, LlmError>>;
}

/// An API key. Its `Debug` prints `ApiKey(<redacted>)`; it has no `Display`
/// and no `Serialize`, so it cannot end up in a log line or a transcript by
/// accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    /// A key from a string (trimmed); `None` when empty.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_owned()))
    }

    /// From an environment variable (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`).
    pub fn from_env(var: &str) -> Result<ApiKey, LlmError> {
        std::env::var(var)
            .ok()
            .and_then(|k| ApiKey::new(&k))
            .ok_or_else(|| LlmError::NoKey(format!("environment variable {var} is not set")))
    }

    /// From a file holding the key (trimmed), e.g. `~/.config/aar/anthropic_key`.
    pub fn from_file(path: &Path) -> Result<ApiKey, LlmError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LlmError::NoKey(format!("{}: {e}", path.display())))?;
        ApiKey::new(&text).ok_or_else(|| LlmError::NoKey(format!("{} is empty", path.display())))
    }

    /// The environment variable if set, else the file if given.
    pub fn from_env_or_file(var: &str, file: Option<&Path>) -> Result<ApiKey, LlmError> {
        match (ApiKey::from_env(var), file) {
            (Ok(key), _) => Ok(key),
            (Err(_), Some(path)) => ApiKey::from_file(path),
            (Err(e), None) => Err(e),
        }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

/// Retries with exponential backoff and full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Most attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry (doubled each time, then jittered).
    pub base_delay: Duration,
    /// Longest delay, also the cap on a `retry-after` the server asks for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0-based), or the server's
    /// `retry-after` when it gave one (capped at `max_delay`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_delay);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        // Full jitter over the upper half: never shorter than half the backoff.
        let half = exp / 2;
        half + Duration::from_nanos(fastrand::u64(
            0..=half.as_nanos().min(u64::MAX as u128) as u64,
        ))
    }
}

/// Parses `retry-after` (seconds) or `retry-after-ms`.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Runs `attempt` until it succeeds, fails with a non-retryable error, or
/// runs out of attempts. `attempt` returns the error and the server's
/// `retry-after`, if any. What failed attempts were billed
/// ([`LlmError::billed`]) is added up: into the response's `failed_attempts`
/// when one succeeds, into the [`LlmError::Billed`] returned (for `model`)
/// when none does.
pub(crate) async fn with_retries<F, Fut>(
    model: &str,
    policy: &RetryPolicy,
    mut attempt: F,
) -> Result<ChatResponse, LlmError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<ChatResponse, (LlmError, Option<Duration>)>>,
{
    let mut n = 0u32;
    let mut billed = BilledUsage::default();
    loop {
        n += 1;
        match attempt().await {
            Ok(mut response) => {
                response.attempts = n;
                response.failed_attempts.add(&billed);
                return Ok(response);
            }
            Err((error, after)) => {
                let cost = error.billed();
                if !cost.is_zero() {
                    tracing::debug!(
                        %model,
                        tokens = cost.usage.total(),
                        estimated = cost.estimated_tokens,
                        "a failed LLM attempt was billed"
                    );
                }
                billed.add(&cost);
                let error = error.into_cause();
                if !error.retryable() || n >= policy.max_attempts.max(1) {
                    return Err(LlmError::with_billed(error, model, billed));
                }
                let delay = policy.delay(n - 1, after);
                tracing::warn!(%error, attempt = n, delay_ms = delay.as_millis() as u64, "LLM request failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_overflow_is_recognised_in_each_providers_words() {
        let api = |status, kind: &str, message: &str| LlmError::Api {
            status,
            kind: kind.into(),
            message: message.into(),
        };
        // llama.cpp's llama-server: its error type for a prompt over the slot's window.
        let llama = api(
            400,
            "exceed_context_size_error",
            "the request exceeds the available context size, try increasing it",
        );
        // OpenAI: the code travels as the kind when the type is absent.
        let openai = api(
            400,
            "context_length_exceeded",
            "This model's maximum context length is 128000 tokens.",
        );
        let anthropic = api(
            400,
            "invalid_request_error",
            "prompt is too long: 210345 tokens > 200000 maximum",
        );
        for error in [&llama, &openai, &anthropic] {
            assert!(error.is_context_overflow(), "{error}");
        }
        let billed = LlmError::Billed {
            model: "m".into(),
            billed: BilledUsage::default(),
            error: Box::new(anthropic),
        };
        assert!(billed.is_context_overflow());
        let other = api(400, "invalid_request_error", "tools.0.name: invalid");
        assert!(!other.is_context_overflow());
        assert!(!api(429, "rate_limit_error", "context size").is_context_overflow());
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = ApiKey::new("sk-ant-secret-value").unwrap_or_else(|| unreachable!());
        let shown = format!("{key:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let d0 = policy.delay(0, None);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = policy.delay(3, None);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            assert!(policy.delay(10, None) <= Duration::from_millis(1000));
        }
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(2))),
            Duration::from_millis(1000)
        );
        assert_eq!(
            policy.delay(4, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
    }

    fn response() -> ChatResponse {
        ChatResponse {
            model: "m".into(),
            content: vec![],
            stop_reason: None,
            usage: Usage::default(),
            attempts: 1,
            failed_attempts: BilledUsage::default(),
        }
    }

    fn cut(input: u64, estimated: u64) -> LlmError {
        LlmError::with_billed(
            LlmError::Api {
                status: 0,
                kind: "overloaded_error".into(),
                message: "Overloaded".into(),
            },
            "claude-x",
            BilledUsage {
                usage: Usage {
                    input_tokens: input,
                    output_tokens: estimated,
                    ..Usage::default()
                },
                estimated_tokens: estimated,
                attempts: 1,
            },
        )
    }

    #[tokio::test]
    async fn billed_failed_attempts_add_up_whether_a_retry_succeeds_or_not() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        // Two cut streams, then an answer: the answer carries both bills.
        let script = std::sync::Mutex::new(vec![Ok(response()), Err(cut(20, 2)), Err(cut(10, 1))]);
        let next = || {
            let step = script.lock().map(|mut s| s.pop()).ok().flatten();
            async move {
                step.unwrap_or_else(|| Ok(response()))
                    .map_err(|e| (e, None))
            }
        };
        let r = with_retries("claude-x", &policy, next)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.attempts, 3);
        assert_eq!(r.failed_attempts.usage.input_tokens, 30);
        assert_eq!(r.failed_attempts.estimated_tokens, 3);
        assert_eq!(r.failed_attempts.attempts, 2);

        // Three cut streams: the error carries all three bills and the last cause.
        let script = std::sync::Mutex::new(vec![Err(cut(5, 0)), Err(cut(20, 2)), Err(cut(10, 1))]);
        let next = || {
            let step = script.lock().map(|mut s| s.pop()).ok().flatten();
            async move {
                step.unwrap_or_else(|| Ok(response()))
                    .map_err(|e| (e, None))
            }
        };
        let e = with_retries("claude-x", &policy, next).await.err();
        let Some(LlmError::Billed {
            model,
            billed,
            error,
        }) = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(model, "claude-x");
        assert_eq!((billed.usage.input_tokens, billed.attempts), (35, 3));
        assert!(
            matches!(*error, LlmError::Api { .. }),
            "not nested: {error:?}"
        );

        // Nothing billed: the plain error.
        let once = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        let e = with_retries("claude-x", &once, || async {
            Err((LlmError::Transport("refused".into()), None))
        })
        .await
        .err();
        assert!(matches!(e, Some(LlmError::Transport(_))), "{e:?}");
    }
}
