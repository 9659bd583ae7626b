//! The required test: a researcher's turns scripted on the local Anthropic
//! server; its tools run for real in the sandbox and against a real research
//! server started in-process; budgets stop it; accounting equals the script.

use std::sync::Arc;

use aar_agents::accounting::{Budget, Budgets, Ledger, PriceTable, Resource, Scope};
use aar_agents::agent::{Agent, AgentConfig, LlmPolicy, Outcome};
use aar_agents::directions;
use aar_agents::llm::{ContentBlock, Usage};
use aar_agents::server_client::ServerClient;
use aar_agents::testing::{MockAnthropic, Reply};
use aar_agents::tools::{Notebook, ToolLimits, Toolbox};
use aar_agents::transcript::{Event, Transcript};
use aar_core::Label;
use aar_core::metrics::FixedBaselines;
use aar_server::{AppState, Policy, ServerTask, TaskRegistry};
use serde_json::{Value, json};

use crate::llm::{KEY, client};
use crate::support::{limits, sandbox, tempdir};

pub const ADMIN: &str = "admin-token-for-agent-tests-0123";
const MODEL: &str = "claude-sonnet-4-5";

pub struct Server {
    pub base: String,
    _task: tokio::task::JoinHandle<()>,
}

/// The research server in-process on a free port, one task `math` with `labels`.
pub async fn research_server(root: &std::path::Path, labels: &[u8]) -> Server {
    let store = aar_store::Store::connect(&format!("sqlite://{}", root.join("aar.db").display()))
        .await
        .unwrap();
    let task = ServerTask {
        name: "math".into(),
        test_labels: labels.iter().map(|&l| Label::from(l == 1)).collect(),
        private_labels: None,
        baselines: Some(
            FixedBaselines::from_seed_accuracies(&[0.55, 0.56, 0.54], &[0.9, 0.91, 0.89]).unwrap(),
        ),
    };
    let state = AppState::new(
        store,
        TaskRegistry::from_tasks(vec![task]),
        ADMIN,
        Policy::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = aar_server::app(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Server { base, _task: task }
}

pub async fn admin(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.unwrap()
}

fn tool_use(id: &str, name: &str, input: Value) -> ContentBlock {
    ContentBlock::ToolUse {
        id: id.into(),
        name: name.into(),
        input,
    }
}

fn tool_result<'a>(request: &'a Value, id: &str) -> &'a Value {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == id)
        .unwrap_or_else(|| panic!("no tool_result for {id} in {request}"))
}

#[tokio::test]
async fn scripted_researcher_runs_tools_evaluates_and_stops_at_the_dollar_cap() {
    let root = tempdir();
    let labels: Vec<u8> = (0..20).map(|i| u8::from(i % 3 != 0)).collect();
    let server = research_server(root.path(), &labels).await;
    let issued = admin(
        &server.base,
        reqwest::Method::POST,
        "/api/admin/agents",
        Some(json!({"name": "researcher-0"})),
    )
    .await;
    let token = issued["token"].as_str().unwrap();

    // Predictions right on 15 of 20 examples.
    let predictions: Vec<u8> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if i < 5 { 1 - l } else { l })
        .collect();
    let predictions_json = serde_json::to_string(&predictions).unwrap();

    let u1 = Usage {
        input_tokens: 1_000,
        output_tokens: 100,
        cache_creation_input_tokens: 2_000,
        cache_read_input_tokens: 0,
    };
    let u2 = Usage {
        input_tokens: 50,
        output_tokens: 200,
        cache_creation_input_tokens: 300,
        cache_read_input_tokens: 3_000,
    };
    let u3 = Usage {
        input_tokens: 10,
        output_tokens: 5_000,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 3_500,
    };
    let mock = MockAnthropic::start(vec![
        // Step 1: write predictions with a shell command in the sandbox.
        Reply::message(
            vec![
                ContentBlock::text("I will write predictions."),
                tool_use(
                    "toolu_1",
                    "shell",
                    json!({"command": format!("mkdir -p out && echo '{predictions_json}' > out/preds.json && id -u && pwd")}),
                ),
            ],
            u1,
        ),
        // The API is busy before step 2: retried, not charged.
        Reply::rate_limited(1),
        Reply::overloaded(),
        // Step 2: read the file back and evaluate it on the server.
        Reply::message(
            vec![
                tool_use("toolu_2", "read_file", json!({"path": "out/preds.json"})),
                tool_use(
                    "toolu_3",
                    "evaluate",
                    json!({"task": "math", "predictions_file": "out/preds.json"}),
                ),
                tool_use("toolu_4", "read_file", json!({"path": "../escape.txt"})),
            ],
            u2,
        ),
        // Step 3: its usage crosses the dollar cap: the tool must not run.
        Reply::message(
            vec![tool_use(
                "toolu_5",
                "notebook_update",
                json!({"content": "should never be written"}),
            )],
            u3,
        ),
        // Never reached.
        Reply::message(vec![ContentBlock::text("unreachable")], u1),
    ])
    .await
    .unwrap();

    let prices = PriceTable::default();
    let price = prices.price(MODEL).unwrap();
    let cost = |u: &Usage| price.cost_nanodollars(u);
    // Steps 1 and 2 stay under the cap; step 3 crosses it.
    let cap = 0.05;
    assert!(((cost(&u1) + cost(&u2)) as f64 / 1e9) < cap);
    assert!(((cost(&u1) + cost(&u2) + cost(&u3)) as f64 / 1e9) >= cap);
    let budgets = Budgets {
        per_agent: Budget {
            dollars: Some(cap),
            ..Budget::default()
        },
        campaign: Budget {
            dollars: Some(10.0),
            tokens: Some(1_000_000),
            wall_time: Some(std::time::Duration::from_secs(3600)),
        },
    };
    let ledger_path = root.path().join("ledger.json");
    let state_dir = root.path().join("agents/researcher-0");
    let make_agent = |ledger: Ledger| {
        let sb = sandbox(root.path(), 0, limits());
        let tools = Toolbox::new(
            sb,
            Some(ServerClient::new(&server.base, token).unwrap()),
            Notebook::new(state_dir.join("notebook.md"), 64 << 10),
            ToolLimits::default(),
        )
        .unwrap();
        let mut config =
            AgentConfig::new("researcher-0", state_dir.clone(), directions::for_agent(2));
        config.continue_prompt = None;
        Agent::new(
            config,
            Box::new(LlmPolicy::new(Arc::new(client(&mock, MODEL)), 4096)),
            tools,
            ledger,
        )
        .unwrap()
    };

    let ledger = Ledger::open(&ledger_path, prices.clone(), budgets).unwrap();
    let mut agent = make_agent(ledger.clone());
    let summary = agent.run().await.unwrap();

    // Stopped by its own dollar budget, at step 3, before step 3's tool.
    match &summary.outcome {
        Outcome::Budget(b) => {
            assert_eq!((b.scope, b.resource), (Scope::Agent, Resource::Dollars));
        }
        other => panic!("expected a budget stop, got {other:?}"),
    }
    assert_eq!(summary.steps, 3);
    assert!(!state_dir.join("notebook.md").exists(), "step 3's tool ran");
    assert_eq!(
        mock.remaining(),
        1,
        "the agent called the LLM after its budget ran out"
    );

    // Accounting equals the scripted usage exactly; failed attempts cost nothing.
    let totals = ledger.agent_totals("researcher-0");
    let mut expected = Usage::default();
    for u in [&u1, &u2, &u3] {
        expected.add(u);
    }
    assert_eq!(totals.usage, expected);
    assert_eq!(totals.cost_nanodollars, cost(&u1) + cost(&u2) + cost(&u3));
    assert_eq!(totals.llm_calls, 3);
    assert_eq!(totals.tool_calls, 4);

    // What the LLM server received: 3 answered requests and 2 retried ones.
    let received = mock.received();
    assert_eq!(received.len(), 5);
    let first = &received[0].body;
    let names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tool in [
        "shell",
        "read_file",
        "write_file",
        "edit_file",
        "evaluate",
        "share_finding",
        "search_findings",
        "read_finding",
        "leaderboard",
        "upload_snapshot",
        "download_snapshot",
        "notebook_read",
        "notebook_update",
    ] {
        assert!(names.contains(&tool), "tool {tool} missing from {names:?}");
    }
    assert_eq!(first["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(
        first["tools"].as_array().unwrap().last().unwrap()["cache_control"]["type"],
        "ephemeral"
    );
    let direction = first["messages"][0]["content"][0]["text"].as_str().unwrap();
    assert!(
        direction.contains(directions::for_agent(2).text),
        "{direction}"
    );

    // Step 2's request carries the shell's result: it really ran in the sandbox.
    let second = &received[3].body;
    assert_eq!(
        second, &received[1].body,
        "a retry resends the same request"
    );
    let shell = tool_result(second, "toolu_1");
    let shell_text = shell["content"].as_str().unwrap();
    assert!(shell_text.contains("exit code: 0"), "{shell_text}");
    assert!(shell_text.contains("/workspace"), "{shell_text}");
    assert!(shell.get("is_error").is_none() || shell["is_error"] == json!(false));
    let last_message = second["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last_message["content"].as_array().unwrap().last().unwrap()["cache_control"]["type"],
        "ephemeral"
    );

    // Step 3's request: the file the shell wrote was read back, the
    // evaluation reached the server, the escape was refused.
    let third = &received[4].body;
    let read = tool_result(third, "toolu_2")["content"].as_str().unwrap();
    assert_eq!(read.trim(), predictions_json);
    let evaluation_text = tool_result(third, "toolu_3")["content"].as_str().unwrap();
    let evaluation: Value = serde_json::from_str(evaluation_text)
        .unwrap_or_else(|e| panic!("evaluate answered {evaluation_text:?}: {e}"));
    assert_eq!(evaluation["task"], "math");
    let accuracy = evaluation["released_accuracy"].as_f64().unwrap();
    // 15 of 20 right (0.75), released on the Ladder's grid for a 20-row test.
    let step = aar_server::ladder::step_for(aar_server::LadderConfig::default(), labels.len());
    assert!(
        (accuracy - 0.75).abs() <= step / 2.0 + 1e-9,
        "{evaluation} (step {step})"
    );
    assert!(
        (accuracy / step - (accuracy / step).round()).abs() < 1e-6,
        "released on the grid: {evaluation} (step {step})"
    );
    let escape = tool_result(third, "toolu_4");
    assert_eq!(escape["is_error"], json!(true));
    assert!(escape["content"].as_str().unwrap().contains("refused"));

    // The server recorded the evaluation under this agent.
    let evaluations = admin(
        &server.base,
        reqwest::Method::GET,
        "/api/admin/evaluations",
        None,
    )
    .await;
    let text = evaluations.to_string();
    assert!(
        text.contains(issued["agent_id"].as_str().unwrap()),
        "{text}"
    );

    // The transcript holds every message and tool call, and no key.
    let path = agent.transcript_path();
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(
        !raw.contains(KEY) && !raw.contains("SECRET"),
        "the key is in the transcript"
    );
    assert!(
        !std::fs::read_to_string(&ledger_path)
            .unwrap()
            .contains("SECRET")
    );
    let records = Transcript::read(&path).unwrap();
    let calls: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::ToolCall { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(calls, ["shell", "read_file", "evaluate", "read_file"]);
    let charged: u64 = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Usage {
                cost_nanodollars, ..
            } => Some(*cost_nanodollars),
            _ => None,
        })
        .sum();
    assert_eq!(charged, totals.cost_nanodollars);
    assert!(matches!(
        records.last().map(|r| &r.event),
        Some(Event::Stop {
            budget: Some(_),
            ..
        })
    ));

    // After a restart the spent budget is still spent: no LLM call at all.
    drop(agent);
    let reopened = Ledger::open(&ledger_path, prices, budgets).unwrap();
    assert_eq!(
        reopened.agent_totals("researcher-0").cost_nanodollars,
        totals.cost_nanodollars
    );
    let mut again = make_agent(reopened);
    let summary = again.run().await.unwrap();
    assert!(matches!(summary.outcome, Outcome::Budget(_)), "{summary:?}");
    assert_eq!(summary.steps, 0);
    assert_eq!(mock.received().len(), 5);
}

#[tokio::test]
async fn a_fresh_session_near_the_context_limit_carries_the_notebook() {
    let root = tempdir();
    let mock = MockAnthropic::start(vec![
        Reply::message(
            vec![tool_use(
                "toolu_1",
                "notebook_update",
                json!({"content": "finding: confidence threshold 0.8 helps (eval 12)"}),
            )],
            Usage {
                input_tokens: 700,
                output_tokens: 150,
                ..Usage::default()
            },
        ),
        Reply::message(
            vec![ContentBlock::text("done for now")],
            Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
        ),
    ])
    .await
    .unwrap();
    let state_dir = root.path().join("agents/r1");
    let tools = Toolbox::new(
        sandbox(root.path(), 1, limits()),
        None,
        Notebook::new(state_dir.join("notebook.md"), 4096),
        ToolLimits::default(),
    )
    .unwrap();
    let mut config = AgentConfig::new("r1", state_dir.clone(), directions::for_agent(0));
    config.context_tokens = 1_000;
    config.fresh_session_at = 0.8;
    config.continue_prompt = None;
    let ledger = Ledger::open(
        &root.path().join("ledger.json"),
        PriceTable::default(),
        Budgets::default(),
    )
    .unwrap();
    let mut agent = Agent::new(
        config,
        Box::new(LlmPolicy::new(Arc::new(client(&mock, MODEL)), 1000)),
        tools,
        ledger,
    )
    .unwrap();
    let summary = agent.run().await.unwrap();
    assert_eq!(summary.outcome, Outcome::Finished);
    assert_eq!(summary.sessions, 2);
    let received = mock.received();
    assert_eq!(received.len(), 2);
    let messages = received[1].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "not a fresh session: {messages:?}");
    let first = messages[0]["content"][0]["text"].as_str().unwrap();
    assert!(first.contains("confidence threshold 0.8 helps"), "{first}");
    assert!(first.contains("you called notebook_update"), "{first}");
    assert!(first.contains(directions::for_agent(0).text));
}

/// A model whose real window is smaller than configured (a local server's 32k slot
/// against the default 200k) refuses a long request with a context-overflow error: the
/// agent starts a fresh session carrying its notebook and goes on, instead of stopping.
#[tokio::test]
async fn a_context_overflow_starts_a_fresh_session() {
    let root = tempdir();
    let mock = MockAnthropic::start(vec![
        Reply::message(
            vec![tool_use(
                "toolu_1",
                "notebook_update",
                json!({"content": "finding: soft labels at temperature 2 help"}),
            )],
            Usage {
                input_tokens: 30_000,
                output_tokens: 50,
                ..Usage::default()
            },
        ),
        Reply::ContextOverflow,
        Reply::message(
            vec![ContentBlock::text("done")],
            Usage {
                input_tokens: 900,
                output_tokens: 5,
                ..Usage::default()
            },
        ),
    ])
    .await
    .unwrap();
    let state_dir = root.path().join("agents/r2");
    let tools = Toolbox::new(
        sandbox(root.path(), 2, limits()),
        None,
        Notebook::new(state_dir.join("notebook.md"), 4096),
        ToolLimits::default(),
    )
    .unwrap();
    let mut config = AgentConfig::new("r2", state_dir.clone(), directions::for_agent(1));
    config.continue_prompt = None;
    let ledger = Ledger::open(
        &root.path().join("ledger.json"),
        PriceTable::default(),
        Budgets::default(),
    )
    .unwrap();
    let mut agent = Agent::new(
        config,
        Box::new(LlmPolicy::new(Arc::new(client(&mock, MODEL)), 1000)),
        tools,
        ledger,
    )
    .unwrap();
    let summary = agent.run().await.unwrap();
    assert_eq!(summary.outcome, Outcome::Finished);
    assert_eq!(summary.sessions, 2);
    let received = mock.received();
    assert_eq!(received.len(), 3);
    let messages = received[2].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "not a fresh session: {messages:?}");
    let first = messages[0]["content"][0]["text"].as_str().unwrap();
    assert!(first.contains("soft labels at temperature 2"), "{first}");
    let reasons: Vec<String> = Transcript::read(&state_dir.join("transcript.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|line| match line.event {
            Event::SessionStart { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["start", "context_overflow"]);
}

/// A policy that asks for one long shell command, then for a notebook read.
struct LongCommand;

impl aar_agents::agent::Policy for LongCommand {
    fn step<'a>(
        &'a mut self,
        turn: aar_agents::agent::Turn<'a>,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<aar_agents::agent::PolicyStep, aar_agents::agent::PolicyError>,
    > {
        let first = turn.messages.len() <= 1;
        Box::pin(async move {
            let call = if first {
                tool_use("long", "shell", json!({"command": "sleep 60; echo done"}))
            } else {
                tool_use("next", "notebook_read", json!({}))
            };
            Ok(aar_agents::agent::PolicyStep {
                content: vec![call],
                stop_reason: None,
                llm: None,
            })
        })
    }
}

/// The campaign's end interrupts a running tool call: a 60 s command under a 3 s wall-time
/// budget is killed at the budget, and the agent stops on it.
#[tokio::test]
async fn the_wall_time_budget_interrupts_a_running_command() {
    let root = tempdir();
    let budgets = Budgets {
        per_agent: Budget {
            wall_time: Some(std::time::Duration::from_secs(3)),
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
    let state_dir = root.path().join("agents/slow");
    let tools = Toolbox::new(
        sandbox(root.path(), 0, limits()),
        None,
        Notebook::new(state_dir.join("notebook.md"), 64 << 10),
        ToolLimits::default(),
    )
    .unwrap();
    let mut agent = Agent::new(
        AgentConfig::new("slow", state_dir.clone(), directions::for_agent(0)),
        Box::new(LongCommand),
        tools,
        ledger,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let summary = agent.run().await.unwrap();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(15), "ran {took:?}");
    assert!(
        matches!(summary.outcome, Outcome::Budget(_)),
        "{:?}",
        summary.outcome
    );
    let events = Transcript::read(&state_dir.join("transcript.jsonl")).unwrap();
    let interrupted = events.iter().any(|line| {
        matches!(&line.event, Event::ToolCall { output, is_error: true, .. }
            if output.contains("interrupted: the wall-time budget ran out"))
    });
    assert!(interrupted, "no interrupted tool call in {events:?}");
}
