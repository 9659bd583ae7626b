//! The Anthropic client against the local wire-protocol server: streaming,
//! retries, headers, and the key kept out of logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aar_agents::llm::anthropic::{AnthropicClient, AnthropicConfig};
use aar_agents::llm::{
    ApiKey, ChatRequest, ContentBlock, LanguageModel, LlmError, Message, RetryPolicy, ToolSpec,
    Usage,
};
use aar_agents::testing::{MockAnthropic, Reply};
use serde_json::json;

pub const KEY: &str = "sk-ant-test-SECRET-0f3c9a";

pub fn client(mock: &MockAnthropic, model: &str) -> AnthropicClient {
    let mut config = AnthropicConfig::new(model, ApiKey::new(KEY).unwrap());
    config.base_url = mock.base_url();
    config.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_secs(5),
    };
    AnthropicClient::new(config).unwrap()
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: 11,
        cache_read_input_tokens: 13,
    }
}

/// Captures everything `tracing` writes, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn retries_429_with_retry_after_then_529_then_streams_a_tool_call() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockAnthropic::start(vec![
        Reply::rate_limited(1),
        Reply::overloaded(),
        Reply::StreamError {
            kind: "overloaded_error".into(),
        },
        Reply::message(
            vec![
                ContentBlock::text("Let me look — ünïcödé."),
                ContentBlock::ToolUse {
                    id: "toolu_01".into(),
                    name: "shell".into(),
                    input: json!({"command": "ls -la /data", "timeout_seconds": 30}),
                },
            ],
            usage(120, 45),
        ),
    ])
    .await
    .unwrap();
    let client = client(&mock, "claude-sonnet-4-5");
    tracing::debug!(?client, "client built");
    let messages = vec![Message::user_text("start")];
    let tools = vec![ToolSpec {
        name: "shell".into(),
        description: "run".into(),
        input_schema: json!({"type": "object"}),
    }];
    let started = Instant::now();
    let response = client
        .complete(ChatRequest {
            system: "sys",
            messages: &messages,
            tools: &tools,
            max_tokens: 1000,
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry-after was not honoured"
    );
    assert_eq!(response.attempts, 4);
    assert_eq!(response.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(response.usage, usage(120, 45));
    assert_eq!(
        response.content,
        vec![
            ContentBlock::text("Let me look — ünïcödé."),
            ContentBlock::ToolUse {
                id: "toolu_01".into(),
                name: "shell".into(),
                input: json!({"command": "ls -la /data", "timeout_seconds": 30}),
            }
        ]
    );
    let received = mock.received();
    assert_eq!(received.len(), 4);
    for r in &received {
        assert_eq!(r.api_key.as_deref(), Some(KEY));
        assert_eq!(r.version.as_deref(), Some("2023-06-01"));
        assert_eq!(r.body["stream"], json!(true));
        assert_eq!(r.body["model"], "claude-sonnet-4-5");
        assert_eq!(r.body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(r.body["tools"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            r.body["messages"][0]["content"][0]["cache_control"]["type"],
            "ephemeral"
        );
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("retrying"), "retries are logged: {logs}");
    assert!(logs.contains("redacted"), "the client was logged: {logs}");
    assert!(
        !logs.contains("SECRET"),
        "the key leaked into the logs: {logs}"
    );
}

#[tokio::test]
async fn non_retryable_errors_and_exhausted_retries_surface() {
    let mock = MockAnthropic::start(vec![
        Reply::HttpError {
            status: 400,
            kind: "invalid_request_error".into(),
            retry_after: None,
        },
        Reply::overloaded(),
        Reply::overloaded(),
        Reply::overloaded(),
        Reply::overloaded(),
    ])
    .await
    .unwrap();
    let client = client(&mock, "claude-haiku-4-5");
    let messages = vec![Message::user_text("x")];
    let request = ChatRequest {
        system: "s",
        messages: &messages,
        tools: &[],
        max_tokens: 10,
    };
    let e = client.complete(request.clone()).await.unwrap_err();
    assert!(
        matches!(&e, LlmError::Api { status: 400, kind, .. } if kind == "invalid_request_error"),
        "{e}"
    );
    assert_eq!(mock.received().len(), 1, "a 400 is not retried");
    let e = client.complete(request).await.unwrap_err();
    assert!(
        matches!(&e, LlmError::Api { status: 529, kind, .. } if kind == "overloaded_error"),
        "{e}"
    );
    assert_eq!(mock.received().len(), 5, "four attempts, then the error");
    assert_eq!(mock.remaining(), 0);
    assert!(!format!("{e:?}").contains("SECRET"));
}
