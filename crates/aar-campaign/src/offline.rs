//! The offline researcher: a [`Policy`] that does research without an LLM, on the
//! same terms as one. It sees only tool results, acts only through tool calls (the
//! sandboxed shell runs `aar run-method`, the server scores), spends the same
//! evaluation budget, and learns from the forum.
//!
//! Its loop: measure vanilla transfer on every task as its reference point; then try
//! method configurations in the order its starting direction suggests (data selection
//! starts with confidence filters, distillation with soft labels and logconf, ...),
//! mixed with variations of the best configurations it reads on the forum; post every
//! configuration that sets a new best, with the evaluation as evidence; and enter each
//! new best on the leaderboard as a method: a directory with an `aar-method.json`
//! naming its spec, checked with `aar method check`, uploaded as a snapshot and entered
//! over three declared seeds. The server's verifier runs the entries; the researcher
//! never scores them itself.

use std::collections::{HashMap, HashSet, VecDeque};

use aar_agents::agent::{Policy, PolicyError, PolicyStep, Turn};
use aar_agents::directions::Direction;
use aar_agents::llm::{ContentBlock, Role};
use aar_agents::sandbox::DATA_MOUNT;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

/// The seed the offline researcher explores with (its `run-method` runs it evaluates).
const EXPLORE_SEED: i64 = 0;
/// Seeds every leaderboard entry of the offline researcher declares: the explored one
/// among them, so no seed whose score it has seen is left out (the verifier's
/// cherry-picking probe flags entries whose author evaluated undeclared seeds).
pub const ENTRY_SEEDS: [i64; 3] = [EXPLORE_SEED, 1, 2];
/// How many experiments between two reads of the forum.
const FORUM_EVERY: usize = 4;
/// Marker before the method description in a finding, so others can parse it.
pub const SPEC_MARKER: &str = "method spec: ";

/// A new best on its way to becoming a leaderboard entry.
#[derive(Debug, Clone)]
struct NewMethod {
    task: String,
    spec: Value,
    /// Its directory in the workspace, `methods/<slug>`.
    dir: String,
    /// The finding that announced it.
    post_id: Option<i64>,
}

/// What the researcher asked for last, so it knows how to read the answer.
#[derive(Debug, Clone)]
enum Pending {
    ListTasks,
    WriteSpec,
    Run,
    Evaluate { task: String, spec: Value },
    Share(Option<NewMethod>),
    ReadForum,
    WriteMethod,
    CheckMethod(NewMethod),
    UploadMethod(NewMethod),
    CreateEntry,
    Notebook,
}

/// One tool call the researcher has planned.
#[derive(Debug, Clone)]
struct Action {
    tool: &'static str,
    input: Value,
    pending: Pending,
}

/// The offline researcher's state; all of it follows from tool results.
#[derive(Debug)]
pub struct OfflineResearcher {
    name: String,
    direction: Direction,
    /// The `aar` binary inside the sandbox.
    aar: String,
    /// aar's state directory as the sandbox sees it (models and feature cache).
    home: String,
    tasks: Vec<String>,
    candidates: VecDeque<(String, Value)>,
    tried: HashSet<String>,
    plan: VecDeque<Action>,
    pending: Option<Pending>,
    /// Best released PGR per task with its configuration.
    best: HashMap<String, (f64, Value)>,
    experiments: usize,
    calls: u64,
    rng: u64,
    /// Failed runs in a row: the researcher backs off instead of spinning.
    failures: u32,
    /// Method directories written so far (names them).
    methods: usize,
}

impl OfflineResearcher {
    /// A researcher following `direction`, running `aar` (the binary's path in the
    /// sandbox) with `--home home`.
    pub fn new(name: &str, direction: Direction, aar: &str, home: &str, seed: u64) -> Self {
        OfflineResearcher {
            name: name.to_owned(),
            direction,
            aar: aar.to_owned(),
            home: home.to_owned(),
            tasks: Vec::new(),
            candidates: VecDeque::new(),
            tried: HashSet::new(),
            plan: VecDeque::from([Action {
                tool: "list_tasks",
                input: json!({}),
                pending: Pending::ListTasks,
            }]),
            pending: None,
            best: HashMap::new(),
            experiments: 0,
            calls: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            failures: 0,
            methods: 0,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: reproducible per researcher, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        let index = (self.random() % items.len() as u64) as usize;
        items[index].clone()
    }

    /// Reads the answer to the last call.
    fn observe(&mut self, pending: Pending, result: &str, is_error: bool) {
        match pending {
            Pending::ListTasks => {
                self.tasks = task_names(result);
                self.seed_candidates();
            }
            Pending::Evaluate { task, spec } if !is_error => {
                self.after_evaluate(&task, &spec, result);
            }
            Pending::ReadForum => {
                for (task, spec) in specs_in_findings(result) {
                    if self.tasks.contains(&task) {
                        for variant in [spec.clone(), self.mutate(&spec)] {
                            self.candidates.push_front((task.clone(), variant));
                        }
                    }
                }
            }
            Pending::Share(Some(mut method)) => {
                // A failed post only leaves the entry unlinked.
                method.post_id = json_field(result, "post_id").and_then(|v| v.as_i64());
                self.plan_method_dir(method);
            }
            Pending::CheckMethod(method) => self.after_check(method, result, is_error),
            Pending::UploadMethod(method) => self.after_upload(method, result, is_error),
            Pending::CreateEntry => self.note(format!("entry: {}", first_lines(result))),
            Pending::Run if is_error => {
                // No predictions to evaluate; say what failed, try something else.
                self.failures += 1;
                if self.plan.front().is_some_and(|a| a.tool == "evaluate") {
                    self.plan.pop_front();
                }
                self.note(format!("run failed: {}", first_lines(result)));
            }
            Pending::Run => self.failures = 0,
            Pending::Evaluate { .. }
            | Pending::WriteSpec
            | Pending::WriteMethod
            | Pending::Share(None)
            | Pending::Notebook => {}
        }
    }

    /// Reads an evaluation's answer; a new best is posted and entered.
    fn after_evaluate(&mut self, task: &str, spec: &Value, result: &str) {
        let Ok(answer) = serde_json::from_str::<Value>(result) else {
            return;
        };
        let improved = answer["improved"].as_bool().unwrap_or(false);
        let pgr = answer["released_pgr"].as_f64();
        let evaluation = answer["evaluation_id"].as_i64();
        self.note(format!(
            "{task}: {spec} -> improved={improved} released_pgr={pgr:?} (evaluation {evaluation:?})"
        ));
        if let (true, Some(pgr)) = (improved, pgr) {
            let previous = self.best.get(task).map(|(p, _)| *p);
            if previous.is_none_or(|p| pgr > p) {
                self.best.insert(task.to_owned(), (pgr, spec.clone()));
                self.plan_new_best(task, spec, pgr, evaluation);
            }
        }
    }

    /// Uploads a method directory that passed `aar method check`; one that did not is
    /// noted and dropped (the verifier would fail it the same way).
    fn after_check(&mut self, method: NewMethod, result: &str, is_error: bool) {
        if is_error {
            let why = first_lines(result);
            self.note(format!("method check of {} failed: {why}", method.dir));
            return;
        }
        self.plan_front(vec![Action {
            tool: "upload_snapshot",
            input: json!({"path": method.dir,
                          "message": format!("{} on {}", summary(&method.spec), method.task)}),
            pending: Pending::UploadMethod(method),
        }]);
    }

    /// Enters an uploaded method directory with its declared seeds.
    fn after_upload(&mut self, method: NewMethod, result: &str, is_error: bool) {
        let snapshot =
            json_field(result, "snapshot_id").and_then(|v| v.as_str().map(str::to_owned));
        let Some(snapshot_id) = snapshot.filter(|_| !is_error) else {
            let why = first_lines(result);
            self.note(format!("upload of {} failed: {why}", method.dir));
            return;
        };
        let mut input = json!({"task": method.task, "snapshot_id": snapshot_id,
                               "seeds": ENTRY_SEEDS});
        if let Some(post) = method.post_id {
            input["post_id"] = json!(post);
        }
        self.plan_front(vec![Action {
            tool: "create_entry",
            input,
            pending: Pending::CreateEntry,
        }]);
    }

    /// Puts `actions` at the front of the plan, in their order.
    fn plan_front(&mut self, actions: Vec<Action>) {
        for action in actions.into_iter().rev() {
            self.plan.push_front(action);
        }
    }

    /// Writes `method` as a method directory (manifest and spec) and checks it the way
    /// the verifier will run it; the upload waits for the check's answer.
    fn plan_method_dir(&mut self, method: NewMethod) {
        let name: String = summary(&method.spec).chars().take(100).collect();
        // The contract's default resources (cpu, 10 min, 4096 MB) fit: a CPU run-method
        // on the tiny preset ran in 8 s under a 2 GiB address-space limit.
        let manifest = json!({"name": name, "spec": "spec.json"});
        let write = |file: &str, content: String| Action {
            tool: "write_file",
            input: json!({"path": format!("{}/{file}", method.dir), "content": content}),
            pending: Pending::WriteMethod,
        };
        let check = Action {
            tool: "shell",
            input: json!({"command": format!(
                "AAR_HOME={} {} method check {} --task {DATA_MOUNT}/{}",
                self.home, self.aar, method.dir, method.task
            )}),
            pending: Pending::CheckMethod(method.clone()),
        };
        self.plan_front(vec![
            write("spec.json", method.spec.to_string()),
            write("aar-method.json", manifest.to_string()),
            check,
        ]);
    }

    fn note(&mut self, line: String) {
        self.plan.push_front(Action {
            tool: "notebook_update",
            input: json!({"content": format!("- {line}\n"), "mode": "append"}),
            pending: Pending::Notebook,
        });
    }

    fn plan_new_best(&mut self, task: &str, spec: &Value, pgr: f64, evaluation: Option<i64>) {
        let body = format!(
            "On {task}, this configuration set a new best released PGR of {pgr:.2} for me \
             (server evaluation {}, public test, Ladder-rounded).\n\n{SPEC_MARKER}{spec}\n\n\
             Direction: {}. Entered on the leaderboard over seeds {ENTRY_SEEDS:?}.",
            evaluation.map_or_else(|| "?".into(), |e| e.to_string()),
            self.direction.name,
        );
        self.methods += 1;
        let method = NewMethod {
            task: task.to_owned(),
            spec: spec.clone(),
            dir: format!(
                "methods/{task}-{}-{}",
                spec["method"].as_str().unwrap_or("method"),
                self.methods
            ),
            post_id: None,
        };
        self.plan.push_back(Action {
            tool: "share_finding",
            input: json!({"kind": "result", "title": format!("{} reaches PGR {pgr:.2}", summary(spec)),
                          "body": body, "task": task,
                          "evaluations": evaluation.into_iter().collect::<Vec<_>>()}),
            pending: Pending::Share(Some(method)),
        });
    }

    /// Vanilla on every task first (the reference point), then the direction's list.
    fn seed_candidates(&mut self) {
        let tasks = self.tasks.clone();
        for task in &tasks {
            self.candidates
                .push_back((task.clone(), json!({"method": "vanilla"})));
        }
        for spec in direction_specs(self.direction.name) {
            for task in &tasks {
                self.candidates.push_back((task.clone(), spec.clone()));
            }
        }
    }

    /// A small change of one setting of `spec`.
    fn mutate(&mut self, spec: &Value) -> Value {
        let mut out = spec.clone();
        match spec["method"].as_str() {
            Some("logconf") => {
                out["aux_coef"] = json!(self.pick(&[0.25, 0.4, 0.5, 0.6, 0.75, 1.0]));
                out["warmup_frac"] = json!(self.pick(&[0.1, 0.2, 0.3, 0.5]));
            }
            Some("confidence_filter") => {
                let (low, high) = self.pick(&[(0.2, 0.8), (0.3, 0.7), (0.35, 0.65), (0.4, 0.6)]);
                out["low"] = json!(low);
                out["high"] = json!(high);
            }
            Some("zero_shot") => {
                out["imbalance_threshold"] = json!(self.pick(&[1.0, 1.05, 1.2, 1.5]));
            }
            _ => {
                out["head"] = head(self.pick(&[0.1, 0.3, 3.0, 10.0]), 0);
            }
        }
        out
    }

    /// The next experiment: a candidate not yet tried, or a variation of a best one.
    fn plan_experiment(&mut self) {
        let next = loop {
            match self.candidates.pop_front() {
                Some((task, spec)) => {
                    if self.tried.insert(format!("{task}|{spec}")) {
                        break Some((task, spec));
                    }
                }
                None => break None,
            }
        };
        let (task, spec) = match next {
            Some(found) => found,
            None => {
                if self.tasks.is_empty() {
                    return;
                }
                let task = self.pick(&self.tasks.clone());
                let base = self
                    .best
                    .get(&task)
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| json!({"method": "logconf"}));
                let spec = self.mutate(&base);
                self.tried.insert(format!("{task}|{spec}"));
                (task, spec)
            }
        };
        self.experiments += 1;
        let dir = format!("experiments/{:03}", self.experiments);
        let spec_path = format!("{dir}/spec.json");
        let out = format!("{dir}/predictions.json");
        self.plan.push_back(Action {
            tool: "write_file",
            input: json!({"path": spec_path, "content": spec.to_string()}),
            pending: Pending::WriteSpec,
        });
        self.plan
            .push_back(self.run_action(&task, &spec_path, &out, EXPLORE_SEED, Pending::Run));
        self.plan.push_back(Action {
            tool: "evaluate",
            input: json!({"task": task, "predictions_file": out}),
            pending: Pending::Evaluate { task, spec },
        });
        if self.experiments.is_multiple_of(FORUM_EVERY) {
            self.plan.push_back(Action {
                tool: "search_findings",
                input: json!({"kind": "result", "sort": "top", "limit": 10}),
                pending: Pending::ReadForum,
            });
        }
    }

    fn run_action(
        &self,
        task: &str,
        spec_path: &str,
        out: &str,
        seed: i64,
        pending: Pending,
    ) -> Action {
        Action {
            tool: "shell",
            input: json!({"command": format!(
                "{} run-method --home {} --task {DATA_MOUNT}/{task} --spec {spec_path} --seed {seed} --out {out}",
                self.aar, self.home
            )}),
            pending,
        }
    }
}

/// A field of a JSON tool result.
fn json_field(result: &str, field: &str) -> Option<Value> {
    serde_json::from_str::<Value>(result)
        .ok()
        .and_then(|mut v| v.get_mut(field).map(Value::take))
}

/// The first lines of a tool result, on one line.
fn first_lines(result: &str) -> String {
    result.lines().take(6).collect::<Vec<_>>().join(" | ")
}

/// Task names from a `list_tasks` answer (`{"tasks": [{"name": ..}, ..]}` or a list).
fn task_names(result: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<Value>(result) else {
        return Vec::new();
    };
    let list = value
        .get("tasks")
        .and_then(Value::as_array)
        .or_else(|| value.as_array());
    list.into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().or_else(|| t.as_str()))
        .map(str::to_owned)
        .collect()
}

/// `(task, spec)` of every finding whose body carries a [`SPEC_MARKER`] line.
fn specs_in_findings(result: &str) -> Vec<(String, Value)> {
    let Ok(value) = serde_json::from_str::<Value>(result) else {
        return Vec::new();
    };
    let posts = value
        .get("posts")
        .and_then(Value::as_array)
        .or_else(|| value.as_array());
    let mut out = Vec::new();
    for post in posts.into_iter().flatten() {
        let (Some(task), Some(body)) = (post["task"].as_str(), post["body"].as_str()) else {
            continue;
        };
        for line in body.lines() {
            if let Some(spec) = line.strip_prefix(SPEC_MARKER)
                && let Ok(spec @ Value::Object(_)) = serde_json::from_str::<Value>(spec)
            {
                out.push((task.to_owned(), spec));
            }
        }
    }
    out
}

fn head(l2: f64, hidden: i64) -> Value {
    json!({"hidden": hidden, "epochs": 50, "batch_size": 256, "learning_rate": 0.01,
           "weight_decay": 0.0, "l2": l2})
}

/// A few words for a title.
fn summary(spec: &Value) -> String {
    let mut words = vec![spec["method"].as_str().unwrap_or("method").to_owned()];
    if let Some(object) = spec.as_object() {
        for (key, value) in object {
            if key != "method" && key != "head" {
                words.push(format!("{key}={value}"));
            }
        }
        if let Some(l2) = spec["head"]["l2"].as_f64() {
            words.push(format!("l2={l2}"));
        }
    }
    words.join(" ")
}

/// The configurations a direction tries first.
fn direction_specs(direction: &str) -> Vec<Value> {
    let filters = [(0.25, 0.75), (0.3, 0.7), (0.2, 0.8), (0.35, 0.65)]
        .map(|(low, high)| json!({"method": "confidence_filter", "low": low, "high": high}));
    let logconf = [(0.5, 0.2), (0.75, 0.2), (0.25, 0.1), (1.0, 0.5)]
        .map(|(a, w)| json!({"method": "logconf", "aux_coef": a, "warmup_frac": w}));
    let zero_shot =
        [1.1, 1.0, 1.5].map(|t| json!({"method": "zero_shot", "imbalance_threshold": t}));
    let soft = json!({"method": "soft_labels"});
    let regularised = [3.0, 10.0, 0.3]
        .map(|l2| json!({"method": "vanilla", "head": head(l2, 0)}))
        .to_vec();
    let mut specs: Vec<Value> = match direction {
        "data-selection" => [filters.to_vec(), logconf.to_vec()].concat(),
        "distillation" | "data-reweighting" => {
            [vec![soft], logconf.to_vec(), filters.to_vec()].concat()
        }
        "noisy-channel" => [logconf.to_vec(), vec![soft], filters.to_vec()].concat(),
        "unsupervised-elicitation" => [zero_shot.to_vec(), logconf.to_vec()].concat(),
        "simplicity-bias" => [regularised, filters.to_vec(), logconf.to_vec()].concat(),
        _ => [
            logconf.to_vec(),
            filters.to_vec(),
            vec![soft],
            zero_shot.to_vec(),
        ]
        .concat(),
    };
    specs.dedup();
    specs
}

impl Policy for OfflineResearcher {
    fn step<'a>(&'a mut self, turn: Turn<'a>) -> BoxFuture<'a, Result<PolicyStep, PolicyError>> {
        Box::pin(async move {
            if let Some(pending) = self.pending.take() {
                let last_result = turn
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .and_then(|m| {
                        m.content.iter().find_map(|block| match block {
                            ContentBlock::ToolResult {
                                content, is_error, ..
                            } => Some((content.as_str(), *is_error)),
                            _ => None,
                        })
                    });
                if let Some((content, is_error)) = last_result {
                    self.observe(pending, content, is_error);
                }
            }
            if self.plan.is_empty() && self.tasks.is_empty() {
                // Nothing to work on yet: ask again in a while rather than spin.
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                self.plan.push_back(Action {
                    tool: "list_tasks",
                    input: json!({}),
                    pending: Pending::ListTasks,
                });
            }
            if self.plan.is_empty() {
                if self.failures >= 3 {
                    // Something is broken (the runs fail); back off before trying again.
                    let seconds = 2u64.saturating_pow(self.failures.min(5)).min(30);
                    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
                }
                self.plan_experiment();
            }
            let Some(action) = self.plan.pop_front() else {
                return Ok(PolicyStep {
                    content: vec![ContentBlock::text(format!(
                        "{}: no task to work on; stopping.",
                        self.name
                    ))],
                    stop_reason: Some("end_turn".into()),
                    llm: None,
                });
            };
            self.calls += 1;
            self.pending = Some(action.pending);
            Ok(PolicyStep {
                content: vec![ContentBlock::ToolUse {
                    id: format!("offline-{}", self.calls),
                    name: action.tool.to_owned(),
                    input: action.input,
                }],
                stop_reason: Some("tool_use".into()),
                llm: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_specs_in_findings_and_ignores_malformed_ones() {
        let posts = json!({"posts": [
            {"task": "sst", "body": format!("text\n{SPEC_MARKER}{{\"method\":\"logconf\",\"aux_coef\":0.5}}\nmore")},
            {"task": "sst", "body": format!("{SPEC_MARKER}not json")},
            {"body": format!("{SPEC_MARKER}{{\"method\":\"vanilla\"}}")},
        ]});
        let found = specs_in_findings(&posts.to_string());
        assert_eq!(
            found,
            vec![(
                "sst".to_owned(),
                json!({"method": "logconf", "aux_coef": 0.5})
            )]
        );
    }

    #[test]
    fn task_names_read_both_shapes() {
        assert_eq!(
            task_names(r#"{"tasks": [{"name": "a"}, {"name": "b"}]}"#),
            vec!["a", "b"]
        );
        assert_eq!(task_names(r#"["x"]"#), vec!["x"]);
        assert!(task_names("oops").is_empty());
    }

    /// Feeds `result` as the answer to the last call and returns the next call.
    async fn next_call(researcher: &mut OfflineResearcher, result: &str) -> (String, Value) {
        answer(researcher, result, false).await
    }

    /// Like [`next_call`], with the answer marked as failed or not.
    async fn answer(
        researcher: &mut OfflineResearcher,
        result: &str,
        is_error: bool,
    ) -> (String, Value) {
        let messages = [aar_agents::llm::Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: "x".into(),
                content: result.into(),
                is_error,
            }],
        }];
        let step = researcher
            .step(Turn {
                system: "",
                messages: &messages,
                tools: &[],
            })
            .await
            .unwrap();
        match step.content.as_slice() {
            [ContentBlock::ToolUse { name, input, .. }] => (name.clone(), input.clone()),
            other => panic!("expected one tool call, got {other:?}"),
        }
    }

    /// A researcher that has run two experiments on `sst`, the second a new best; its
    /// next call is the post announcing it.
    async fn researcher_with_a_new_best() -> (OfflineResearcher, Value) {
        let mut r = OfflineResearcher::new(
            "r",
            aar_agents::directions::for_agent(0),
            "/opt/aar/bin/aar",
            "/h",
            1,
        );
        assert_eq!(next_call(&mut r, "").await.0, "list_tasks");
        let (tool, input) = next_call(&mut r, r#"{"tasks": [{"name": "sst"}]}"#).await;
        assert_eq!(tool, "write_file");
        assert_eq!(input["content"], json!({"method": "vanilla"}).to_string());
        let (tool, input) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "shell");
        let command = input["command"].as_str().unwrap();
        assert!(
            command.starts_with("/opt/aar/bin/aar run-method --home /h --task /data/sst "),
            "{command}"
        );
        let (tool, input) = next_call(&mut r, "exit 0").await;
        assert_eq!((tool.as_str(), &input["task"]), ("evaluate", &json!("sst")));

        // Not improved: no post, straight to the next experiment.
        let (tool, _) = next_call(
            &mut r,
            r#"{"improved": false, "released_pgr": null, "evaluation_id": 1}"#,
        )
        .await;
        assert_eq!(tool, "notebook_update");
        let (tool, _) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "write_file");
        next_call(&mut r, "ok").await;
        let (tool, _) = next_call(&mut r, "exit 0").await;
        assert_eq!(tool, "evaluate");

        // Improved: note, then post with the spec.
        let answer = r#"{"improved": true, "released_pgr": 0.3, "evaluation_id": 2}"#;
        assert_eq!(next_call(&mut r, answer).await.0, "notebook_update");
        let (tool, post) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "share_finding");
        assert_eq!(post["evaluations"], json!([2]));
        let found = specs_in_findings(&json!({"posts": [post]}).to_string());
        assert_eq!(found.len(), 1, "the post carries a parseable spec");
        (r, found[0].1.clone())
    }

    #[tokio::test]
    async fn a_new_best_becomes_a_checked_uploaded_method_entered_over_the_declared_seeds() {
        let (mut r, spec) = researcher_with_a_new_best().await;

        // The method directory: the spec and a manifest the contract accepts.
        let (tool, input) = next_call(&mut r, r#"{"post_id": 9}"#).await;
        assert_eq!(tool, "write_file");
        let dir = input["path"]
            .as_str()
            .unwrap()
            .strip_suffix("/spec.json")
            .unwrap()
            .to_owned();
        assert!(dir.starts_with("methods/sst-"), "{dir}");
        assert_eq!(
            serde_json::from_str::<Value>(input["content"].as_str().unwrap()).unwrap(),
            spec
        );
        let (tool, input) = next_call(&mut r, "ok").await;
        assert_eq!(
            (tool.as_str(), &input["path"]),
            ("write_file", &json!(format!("{dir}/aar-method.json")))
        );
        let manifest =
            aar_oversight::method::Manifest::parse(input["content"].as_str().unwrap().as_bytes())
                .unwrap();
        assert_eq!(
            manifest.entrypoint,
            aar_oversight::method::Entrypoint::Spec("spec.json".into())
        );

        // Checked as the verifier will run it, then uploaded, then entered.
        let (tool, input) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "shell");
        assert_eq!(
            input["command"],
            json!(format!(
                "AAR_HOME=/h /opt/aar/bin/aar method check {dir} --task /data/sst"
            ))
        );
        let (tool, input) = next_call(&mut r, "ok: the verifier runs it the same way").await;
        assert_eq!(
            (tool.as_str(), &input["path"]),
            ("upload_snapshot", &json!(dir))
        );
        let (tool, entry) = next_call(&mut r, r#"{"snapshot_id": "ab12"}"#).await;
        assert_eq!(tool, "create_entry");
        assert_eq!(
            entry,
            json!({"task": "sst", "snapshot_id": "ab12", "seeds": ENTRY_SEEDS, "post_id": 9})
        );

        // The verifier scores the entry: the researcher runs no seed and evaluates nothing for it.
        let (tool, _) = next_call(&mut r, r#"{"entry_id": 5, "verification": "queued"}"#).await;
        assert_eq!(tool, "notebook_update");
        for _ in 0..12 {
            let (tool, input) = next_call(&mut r, "ok").await;
            assert!(input.get("entry_id").is_none(), "{tool}: {input}");
            assert!(
                !input["command"]
                    .as_str()
                    .unwrap_or("")
                    .contains("--seed 1 "),
                "{input}"
            );
        }
    }

    #[tokio::test]
    async fn a_method_that_fails_its_check_is_not_uploaded() {
        let (mut r, _) = researcher_with_a_new_best().await;
        assert_eq!(next_call(&mut r, "{}").await.0, "write_file");
        assert_eq!(next_call(&mut r, "ok").await.0, "write_file");
        assert_eq!(next_call(&mut r, "ok").await.0, "shell");
        let failed = "error: method check of methods/x failed: the run failed (exit status: 2)";
        let (tool, input) = answer(&mut r, failed, true).await;
        assert_eq!(tool, "notebook_update");
        assert!(
            input["content"]
                .as_str()
                .unwrap()
                .contains("exit status: 2"),
            "{input}"
        );
        let (tool, input) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "write_file", "back to experiments");
        assert!(
            input["path"].as_str().unwrap().starts_with("experiments/"),
            "{input}"
        );
    }

    #[test]
    fn every_direction_has_a_plan_and_mutation_changes_a_setting() {
        for direction in aar_agents::directions::DIRECTIONS {
            assert!(
                !direction_specs(direction.name).is_empty(),
                "{}",
                direction.name
            );
        }
        let mut researcher =
            OfflineResearcher::new("r", aar_agents::directions::for_agent(0), "aar", "/h", 7);
        let base = json!({"method": "confidence_filter", "low": 0.25, "high": 0.75});
        let changed = (0..8).any(|_| researcher.mutate(&base) != base);
        assert!(changed);
    }
}
