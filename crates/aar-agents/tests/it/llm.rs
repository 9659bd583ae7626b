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
    // tracing caches whether a callsite is enabled when it is first hit; while just one
    // dispatcher is registered it asks only the global one, so a callsite another test's
    // thread (no subscriber) hits first would stay disabled here too. A second registered
    // dispatcher makes it ask all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

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

/// An agent over `mock` with a fresh ledger: notebook tools only (no sandboxed command),
/// no continue prompt.
fn agent_over(
    root: &std::path::Path,
    mock: &MockAnthropic,
    attempts: u32,
) -> (aar_agents::agent::Agent, aar_agents::accounting::Ledger) {
    use aar_agents::accounting::{Budgets, Ledger, PriceTable};
    use aar_agents::agent::{Agent, AgentConfig, LlmPolicy};
    use aar_agents::tools::{Notebook, ToolLimits, Toolbox};

    let state_dir = root.join("agents/r0");
    let tools = Toolbox::new(
        crate::support::sandbox(root, 0, crate::support::limits()),
        None,
        Notebook::new(state_dir.join("notebook.md"), 4096),
        ToolLimits::default(),
    )
    .unwrap();
    let mut config = AgentConfig::new("r0", state_dir, aar_agents::directions::for_agent(0));
    config.continue_prompt = None;
    let ledger = Ledger::open(
        &root.join("ledger.json"),
        PriceTable::default(),
        Budgets::default(),
    )
    .unwrap();
    let mut client = client(mock, "claude-sonnet-4-5");
    if attempts != 4 {
        let mut config = AnthropicConfig::new("claude-sonnet-4-5", ApiKey::new(KEY).unwrap());
        config.base_url = mock.base_url();
        config.retry = RetryPolicy {
            max_attempts: attempts,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(5),
        };
        client = AnthropicClient::new(config).unwrap();
    }
    let agent = Agent::new(
        config,
        Box::new(LlmPolicy::new(Arc::new(client), 1000)),
        tools,
        ledger.clone(),
    )
    .unwrap();
    (agent, ledger)
}

/// The transcript's charged usage events, added up.
fn transcript_charges(agent: &aar_agents::agent::Agent) -> (u64, u64) {
    use aar_agents::transcript::{Event, Transcript};
    Transcript::read(&agent.transcript_path())
        .unwrap()
        .iter()
        .filter_map(|r| match &r.event {
            Event::Usage {
                usage,
                cost_nanodollars,
                ..
            } => Some((usage.total(), *cost_nanodollars)),
            _ => None,
        })
        .fold((0, 0), |(t, c), (dt, dc)| (t + dt, c + dc))
}

const CUT_TEXT: &str = "I will start by listing the data directory, then"; // 48 chars ~ 12 tokens

fn cut(error: Option<&str>) -> Reply {
    Reply::StreamCut {
        content: vec![ContentBlock::text(CUT_TEXT)],
        usage: Usage {
            input_tokens: 2_000,
            output_tokens: 0,
            cache_creation_input_tokens: 500,
            cache_read_input_tokens: 7_000,
        },
        error: error.map(str::to_owned),
    }
}

/// A stream cut after `message_start` by an `overloaded_error` event, then one cut by a
/// dropped connection, then an answer: the answer carries what both cut attempts were
/// billed (input as `message_start` reported it, output estimated from the streamed text),
/// and the agent charges it all to the ledger.
#[tokio::test]
async fn anthropic_streams_cut_mid_message_are_charged_as_billed() {
    let mock = MockAnthropic::start(vec![
        cut(Some("overloaded_error")),
        cut(None),
        Reply::message(vec![ContentBlock::text("done")], usage(300, 20)),
    ])
    .await
    .unwrap();
    let client = client(&mock, "claude-sonnet-4-5");
    let messages = vec![Message::user_text("start")];
    let response = client
        .complete(ChatRequest {
            system: "sys",
            messages: &messages,
            tools: &[],
            max_tokens: 1000,
        })
        .await
        .unwrap();
    assert_eq!(response.attempts, 3);
    assert_eq!(response.usage, usage(300, 20));
    let failed = response.failed_attempts;
    assert_eq!(failed.attempts, 2);
    assert_eq!(
        failed.usage,
        Usage {
            input_tokens: 4_000,
            output_tokens: 24,
            cache_creation_input_tokens: 1_000,
            cache_read_input_tokens: 14_000,
        }
    );
    // message_start reports 0 output; all 2 x 12 output tokens are estimated.
    assert_eq!(failed.estimated_tokens, 24);

    // Through the agent: the ledger holds the answer and both billed failures.
    let root = crate::support::tempdir();
    let mock = MockAnthropic::start(vec![
        cut(None),
        cut(Some("overloaded_error")),
        Reply::message(vec![ContentBlock::text("done")], usage(300, 20)),
    ])
    .await
    .unwrap();
    let (mut agent, ledger) = agent_over(root.path(), &mock, 4);
    let summary = agent.run().await.unwrap();
    assert_eq!(summary.outcome, aar_agents::agent::Outcome::Finished);
    let totals = ledger.agent_totals("r0");
    assert_eq!((totals.llm_calls, totals.failed_llm_calls), (1, 2));
    assert_eq!(totals.estimated_tokens, 24);
    assert_eq!(totals.usage.input_tokens, 4_000 + 300);
    assert_eq!(totals.usage.cache_read_input_tokens, 14_000 + 13);
    // Sonnet: $3 in, $15 out, $3.75 cache write, $0.30 cache read per MTok.
    let failed_cost = 4_000 * 3_000 + 24 * 15_000 + 1_000 * 3_750 + 14_000 * 300;
    let answer_cost = 300 * 3_000 + 20 * 15_000 + 11 * 3_750 + 13 * 300;
    assert_eq!(totals.cost_nanodollars, failed_cost + answer_cost);
    assert_eq!(
        transcript_charges(&agent),
        (totals.usage.total(), totals.cost_nanodollars),
        "the transcript's usage events add up to the ledger"
    );
}

/// When every attempt is cut, the call fails with the error and the bill: the agent
/// charges what was billed before the error stops it.
#[tokio::test]
async fn a_call_whose_every_attempt_is_cut_is_charged_before_it_fails() {
    let root = crate::support::tempdir();
    let mock = MockAnthropic::start(vec![cut(Some("overloaded_error")), cut(None)])
        .await
        .unwrap();
    let (mut agent, ledger) = agent_over(root.path(), &mock, 2);
    let e = agent.run().await.unwrap_err();
    let aar_agents::agent::AgentError::Policy(aar_agents::agent::PolicyError::Llm(
        LlmError::Billed { billed, error, .. },
    )) = &e
    else {
        panic!("{e}");
    };
    assert!(matches!(**error, LlmError::Transport(_)), "{error}");
    assert_eq!(billed.attempts, 2);
    let totals = ledger.agent_totals("r0");
    assert_eq!((totals.llm_calls, totals.failed_llm_calls), (0, 2));
    assert_eq!(totals.usage.input_tokens, 4_000);
    assert_eq!(totals.usage.cache_creation_input_tokens, 1_000);
    assert_eq!(totals.usage.cache_read_input_tokens, 14_000);
    assert_eq!(totals.usage.output_tokens, 24);
    assert_eq!(totals.estimated_tokens, 24);
    assert!(totals.cost_nanodollars > 0);
    // Saved: a restart sees the charge.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path().join("ledger.json")).unwrap()).unwrap();
    assert_eq!(saved["agents"]["r0"]["usage"]["input_tokens"], 4_000);
    assert_eq!(saved["agents"]["r0"]["estimated_tokens"], 24);
    assert_eq!(
        transcript_charges(&agent),
        (totals.usage.total(), totals.cost_nanodollars)
    );
}

/// Extended thinking: the thinking and redacted thinking before a tool call come back,
/// unchanged and before the tool_use, in the next request; the transcript keeps them.
#[tokio::test]
async fn thinking_blocks_go_back_verbatim_before_the_tool_use() {
    let signature = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+/=";
    let thinking = ContentBlock::Thinking {
        thinking: "The notebook may hold earlier findings; read it first.".into(),
        signature: signature.into(),
    };
    let redacted = ContentBlock::RedactedThinking {
        data: "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP".into(),
    };
    let call = ContentBlock::ToolUse {
        id: "toolu_t1".into(),
        name: "notebook_read".into(),
        input: json!({}),
    };
    let root = crate::support::tempdir();
    let mock = MockAnthropic::start(vec![
        Reply::message(
            vec![thinking.clone(), redacted.clone(), call.clone()],
            usage(100, 60),
        ),
        Reply::message(vec![ContentBlock::text("done")], usage(200, 5)),
    ])
    .await
    .unwrap();
    let (mut agent, _ledger) = agent_over(root.path(), &mock, 4);
    let summary = agent.run().await.unwrap();
    assert_eq!(summary.outcome, aar_agents::agent::Outcome::Finished);
    let received = mock.received();
    assert_eq!(received.len(), 2);
    let messages = received[1].body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"],
        json!([
            {"type": "thinking", "thinking": "The notebook may hold earlier findings; read it first.",
             "signature": signature},
            {"type": "redacted_thinking",
             "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"},
            {"type": "tool_use", "id": "toolu_t1", "name": "notebook_read", "input": {}},
        ])
    );
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    // The conversation stored them too (a resumed agent reads them back).
    let stored = aar_agents::transcript::Transcript::read(&agent.transcript_path())
        .unwrap()
        .into_iter()
        .find_map(|r| match r.event {
            aar_agents::transcript::Event::Message { message }
                if message.role == aar_agents::llm::Role::Assistant =>
            {
                Some(message)
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(stored.content, vec![thinking, redacted, call]);
}

/// An OpenAI-compatible server that answers without usage: the call fails with an
/// estimate of what it cost (the request and the answer at about four characters a
/// token), never as a free call; a local server gets `max_tokens`.
#[tokio::test]
async fn an_openai_answer_without_usage_fails_with_an_estimate() {
    use aar_agents::llm::openai::{OpenAiClient, OpenAiConfig};

    let seen = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(body);
                axum::Json(json!({
                    "model": "local",
                    "choices": [{"finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "sixteen chars!!!"}}],
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut config = OpenAiConfig::new(&base, "qwen-local");
    config.api_key = None;
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    let client = OpenAiClient::new(config).unwrap();
    let messages = vec![Message::user_text("hello")];
    let e = client
        .complete(ChatRequest {
            system: "sys",
            messages: &messages,
            tools: &[],
            max_tokens: 64,
        })
        .await
        .unwrap_err();
    server.abort();
    let LlmError::Billed {
        model,
        billed,
        error,
    } = &e
    else {
        panic!("{e}");
    };
    assert!(
        matches!(**error, LlmError::Protocol(ref m) if m.contains("usage")),
        "{error}"
    );
    assert_eq!(model, "qwen-local");
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "a missing usage is not retried");
    assert_eq!(bodies[0]["max_tokens"], 64);
    assert!(bodies[0].get("max_completion_tokens").is_none());
    let request_chars = bodies[0].to_string().chars().count() as u64;
    assert_eq!(billed.attempts, 1);
    assert_eq!(billed.usage.input_tokens, request_chars.div_ceil(4));
    assert_eq!(billed.usage.output_tokens, 4);
    assert_eq!(billed.estimated_tokens, billed.usage.total());
}

/// The campaign's end does not wait for a slow model: a call that hangs past a 2 s
/// wall-time budget is dropped at the budget, the agent stops on it, and the call is
/// charged what it was sent (estimated, flagged) rather than nothing.
#[tokio::test]
async fn the_wall_time_budget_cuts_a_hanging_llm_call() {
    use aar_agents::accounting::{Budget, Budgets, Ledger, PriceTable};
    use aar_agents::agent::{Agent, AgentConfig, LlmPolicy, Outcome};
    use aar_agents::tools::{Notebook, ToolLimits, Toolbox};

    let root = crate::support::tempdir();
    let mock = MockAnthropic::start(vec![Reply::Stall { seconds: 60 }])
        .await
        .unwrap();
    let state_dir = root.path().join("agents/r0");
    let tools = Toolbox::new(
        crate::support::sandbox(root.path(), 0, crate::support::limits()),
        None,
        Notebook::new(state_dir.join("notebook.md"), 4096),
        ToolLimits::default(),
    )
    .unwrap();
    let config = AgentConfig::new("r0", state_dir, aar_agents::directions::for_agent(0));
    let budgets = Budgets {
        per_agent: Budget {
            wall_time: Some(Duration::from_secs(2)),
            ..Budget::default()
        },
        campaign: Budget::default(),
    };
    let ledger = Ledger::open(
        &root.path().join("ledger.json"),
        PriceTable::default(),
        budgets,
    )
    .unwrap();
    let mut agent = Agent::new(
        config,
        Box::new(LlmPolicy::new(
            Arc::new(client(&mock, "claude-sonnet-4-5")),
            1000,
        )),
        tools,
        ledger.clone(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let summary = agent.run().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "ran {took:?}");
    assert!(matches!(summary.outcome, Outcome::Budget(_)), "{summary:?}");
    assert_eq!(mock.received().len(), 1);
    let totals = ledger.agent_totals("r0");
    assert_eq!((totals.llm_calls, totals.failed_llm_calls), (0, 1));
    // The request's JSON body, at four characters a token, bounds the estimate: the
    // estimate counts the system prompt, messages and tools the agent sent.
    let sent = mock.received()[0].body.to_string().len() as u64;
    assert!(
        totals.estimated_tokens > sent / 8 && totals.estimated_tokens <= sent / 4 + 1,
        "estimated {} tokens for a {sent}-byte request",
        totals.estimated_tokens
    );
    assert_eq!(totals.usage.input_tokens, totals.estimated_tokens);
    assert!(totals.cost_nanodollars > 0);
    assert_eq!(
        transcript_charges(&agent),
        (totals.usage.total(), totals.cost_nanodollars)
    );
}

/// Ctrl-C (or a scheduler's SIGTERM) drops the agent mid-call: the provider has the
/// request and bills it, so the ledger is charged what was sent, estimated, not nothing.
#[tokio::test]
async fn a_call_abandoned_by_a_stop_is_charged_what_it_was_sent() {
    let root = crate::support::tempdir();
    let mock = MockAnthropic::start(vec![Reply::Stall { seconds: 60 }])
        .await
        .unwrap();
    let (mut agent, ledger) = agent_over(root.path(), &mock, 1);
    let running = tokio::spawn(async move { agent.run().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while mock.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no request reached the model"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    let totals = ledger.agent_totals("r0");
    assert_eq!((totals.llm_calls, totals.failed_llm_calls), (0, 1));
    let sent = mock.received()[0].body.to_string().len() as u64;
    assert!(
        totals.estimated_tokens > sent / 8 && totals.estimated_tokens <= sent / 4 + 1,
        "estimated {} tokens for a {sent}-byte request",
        totals.estimated_tokens
    );
    assert_eq!(totals.usage.input_tokens, totals.estimated_tokens);
    assert!(totals.cost_nanodollars > 0);
    // The charge is saved: a resumed campaign counts it.
    let reopened = aar_agents::accounting::Ledger::open(
        &root.path().join("ledger.json"),
        aar_agents::accounting::PriceTable::default(),
        aar_agents::accounting::Budgets::default(),
    )
    .unwrap();
    assert_eq!(reopened.agent_totals("r0").failed_llm_calls, 1);
}
