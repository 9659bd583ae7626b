//! The offline researcher: a [`Policy`] that does research without an LLM, on the
//! same terms as one. It sees only tool results, acts only through tool calls (the
//! sandboxed shell runs its Python methods, the server scores), spends the same
//! evaluation budget, and learns from the forum.
//!
//! Its methods are code: each experiment writes a method directory (a Python method of
//! one of the [`families`] over the training-plan API, its `config.json` and an
//! `aar-method.json`), runs it in the sandbox as the verifier will, and evaluates its
//! public-test predictions. Its loop:
//! - **Claims.** Before it starts a family on a task it reads the forum's claims and
//!   posts its own, so no two researchers run the same family on the same task. Vanilla
//!   (the reference point) is a family like any other: one researcher per task runs it
//!   and posts its PGR for everyone.
//! - **Cheap checks first.** A run that fails, or whose test predictions equal ones it
//!   already evaluated, costs no evaluation.
//! - **Paced evaluations.** Predictions wait for a slot: the time left in the campaign
//!   divided by the evaluations the server says are left, so the budget lasts the
//!   campaign instead of its first minutes.
//! - **Building on others.** Results posted with a method line are tried on its other
//!   tasks; its own new bests are varied one knob at a time.
//! - **Entries.** A new best above the task's vanilla is posted with its evaluation as
//!   evidence and entered: `aar method check`, upload, `create_entry` over three declared
//!   seeds. The server's verifier runs the entries; the researcher never scores them.

mod families;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use aar_agents::agent::{Policy, PolicyError, PolicyStep, Turn};
use aar_agents::directions::Direction;
use aar_agents::llm::{ContentBlock, Role};
use aar_agents::sandbox::{DATA_MOUNT, WORKSPACE_MOUNT};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

pub use families::{FAMILIES, Family};

/// The seed the offline researcher explores with (the runs it evaluates).
const EXPLORE_SEED: i64 = 0;
/// Seeds every leaderboard entry of the offline researcher declares: the explored one
/// among them, so no seed whose score it has seen is left out (the verifier's
/// cherry-picking probe flags entries whose author evaluated undeclared seeds).
pub const ENTRY_SEEDS: [i64; 3] = [EXPLORE_SEED, 1, 2];
/// How many experiments between two reads of the forum's results.
const FORUM_EVERY: usize = 3;
/// Marker before the method line of a result, so others can parse it.
pub const METHOD_MARKER: &str = "method: ";
/// Marker before the claim line of a hypothesis post.
pub const CLAIM_MARKER: &str = "claim: ";
/// Most one-knob variations of a new best per family and task.
const MAX_VARIATIONS: usize = 3;
/// The longest wait for an evaluation slot in one step (the researcher looks again after).
const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// How long to wait after the server refuses an evaluation for the hourly budget.
const HOURLY_BACKOFF: Duration = Duration::from_secs(300);

/// A method configuration on a task: what one experiment runs.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    task: String,
    family: &'static Family,
    config: Value,
    /// The forum post whose result suggested it.
    builds_on: Option<i64>,
}

impl Candidate {
    fn key(&self) -> (String, &'static str) {
        (self.task.clone(), self.family.name)
    }

    fn id(&self) -> String {
        format!("{}|{}|{}", self.task, self.family.name, self.config)
    }

    /// The method line of a finding: family, configuration and PGR, as JSON.
    fn method_line(&self, pgr: f64) -> String {
        let line = json!({"family": self.family.name, "config": self.config, "pgr": pgr});
        format!("{METHOD_MARKER}{line}")
    }
}

/// An experiment whose predictions wait for an evaluation slot.
#[derive(Debug, Clone)]
struct Ready {
    candidate: Candidate,
    /// The method directory, `methods/<task>-<family>-<n>`.
    dir: String,
    /// The experiment directory holding `test.json` (and `private.json`).
    experiment: String,
    has_private: bool,
}

/// A new best on its way to becoming a leaderboard entry.
#[derive(Debug, Clone)]
struct NewMethod {
    task: String,
    dir: String,
    title: String,
    /// The finding that announced it.
    post_id: Option<i64>,
}

/// What the researcher asked for last, so it knows how to read the answer.
#[derive(Debug, Clone)]
enum Pending {
    ListTasks,
    ReadClaims(Candidate),
    Claim,
    WriteMethod,
    Run(Ready),
    Evaluate(Ready),
    Share(Option<NewMethod>),
    ReadForum,
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
    /// aar's state directory as the sandbox sees it (models and feature cache).
    home: String,
    /// When the campaign ends, for pacing evaluations.
    deadline: Instant,
    tasks: Vec<String>,
    queue: VecDeque<Candidate>,
    /// (task, family) this researcher claimed.
    claimed: HashSet<(String, &'static str)>,
    /// (task, family) others claimed.
    taken: HashSet<(String, &'static str)>,
    tried: HashSet<String>,
    ready: VecDeque<Ready>,
    /// sha256 of test predictions already evaluated, with what produced them.
    seen: HashMap<String, String>,
    next_slot: Instant,
    evaluations_left: Option<i64>,
    /// Best released PGR per task, own.
    best: HashMap<String, (f64, Candidate)>,
    /// Vanilla's released PGR per task (own or from the forum): what an entry must beat.
    vanilla: HashMap<String, f64>,
    variations: HashMap<(String, &'static str), usize>,
    plan: VecDeque<Action>,
    pending: Option<Pending>,
    experiments: usize,
    forum_read_at: usize,
    calls: u64,
    rng: u64,
    /// Failed runs in a row: the researcher backs off instead of spinning.
    failures: u32,
    /// Where in the task list this researcher starts (its seed).
    first_task: u64,
}

impl OfflineResearcher {
    /// A researcher following `direction` until `deadline`, its methods calling `aar`
    /// with `AAR_HOME=home`.
    pub fn new(name: &str, direction: Direction, home: &str, seed: u64, deadline: Instant) -> Self {
        OfflineResearcher {
            name: name.to_owned(),
            direction,
            home: home.to_owned(),
            deadline,
            tasks: Vec::new(),
            queue: VecDeque::new(),
            claimed: HashSet::new(),
            taken: HashSet::new(),
            tried: HashSet::new(),
            ready: VecDeque::new(),
            seen: HashMap::new(),
            next_slot: Instant::now(),
            evaluations_left: None,
            best: HashMap::new(),
            vanilla: HashMap::new(),
            variations: HashMap::new(),
            plan: VecDeque::from([Action {
                tool: "list_tasks",
                input: json!({}),
                pending: Pending::ListTasks,
            }]),
            pending: None,
            experiments: 0,
            forum_read_at: 0,
            calls: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            failures: 0,
            first_task: seed,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: reproducible per researcher, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.random() % n.max(1) as u64) as usize
    }

    /// Reads the answer to the last call.
    fn observe(&mut self, pending: Pending, result: &str, is_error: bool) {
        match pending {
            Pending::ListTasks => {
                self.tasks = task_names(result);
                self.seed_queue();
            }
            Pending::ReadClaims(candidate) => self.after_claims(candidate, result),
            Pending::Run(ready) => self.after_run(ready, result, is_error),
            Pending::Evaluate(ready) => self.after_evaluate(ready, result, is_error),
            Pending::ReadForum => self.after_forum(result),
            Pending::Share(Some(mut method)) => {
                // A failed post only leaves the entry unlinked.
                method.post_id = json_field(result, "post_id").and_then(|v| v.as_i64());
                self.plan_check(method);
            }
            Pending::CheckMethod(method) => self.after_check(method, result, is_error),
            Pending::UploadMethod(method) => self.after_upload(method, result, is_error),
            Pending::CreateEntry => self.note(format!("entry: {}", first_lines(result))),
            Pending::Claim | Pending::WriteMethod | Pending::Share(None) | Pending::Notebook => {}
        }
    }

    /// Every family of the direction's order on every task, vanilla first. Each
    /// researcher starts on another task (its tasks rotated by its seed), so researchers
    /// that start together do not race for the same first claim.
    fn seed_queue(&mut self) {
        let mut tasks = self.tasks.clone();
        if !tasks.is_empty() {
            let rotation = (self.first_task % tasks.len() as u64) as usize;
            tasks.rotate_left(rotation);
        }
        for family in families::order_for(self.direction.name) {
            for task in &tasks {
                self.queue.push_back(Candidate {
                    task: task.clone(),
                    family,
                    config: family.default_config(),
                    builds_on: None,
                });
            }
        }
    }

    /// Drops the candidate if another researcher claimed its family on its task;
    /// otherwise claims it and runs it.
    fn after_claims(&mut self, candidate: Candidate, result: &str) {
        for (author, task, family) in claims_in_posts(result) {
            if author != self.name
                && let Some(family) = families::family(&family)
            {
                self.taken.insert((task, family.name));
            }
        }
        let key = candidate.key();
        if self.taken.contains(&key) {
            self.note(format!(
                "{} on {} is claimed by another researcher; skipping it",
                key.1, key.0
            ));
            return;
        }
        self.claimed.insert(key.clone());
        let claim = json!({"task": key.0, "family": key.1});
        self.plan.push_back(Action {
            tool: "share_finding",
            input: json!({"kind": "hypothesis", "task": candidate.task,
                "title": format!("{} takes {} on {}", self.name, key.1, key.0),
                "body": format!("I am trying this family on this task ({}); others, pick \
                                 another.\n\n{CLAIM_MARKER}{claim}", candidate.family.summary)}),
            pending: Pending::Claim,
        });
        self.queue.push_front(candidate);
    }

    /// A run that worked and predicts something new waits for an evaluation slot.
    fn after_run(&mut self, ready: Ready, result: &str, is_error: bool) {
        let label = format!(
            "{} {} on {}",
            ready.candidate.family.name, ready.candidate.config, ready.candidate.task
        );
        let hash = result
            .lines()
            .find_map(|l| l.strip_prefix("predictions sha256="))
            .map(|h| h.split_whitespace().next().unwrap_or("").to_owned());
        let Some(hash) = hash.filter(|_| !is_error) else {
            self.failures += 1;
            self.note(format!("run of {label} failed: {}", first_lines(result)));
            return;
        };
        self.failures = 0;
        if let Some(earlier) = self.seen.get(&hash) {
            self.note(format!(
                "{label}: same test predictions as {earlier}; not evaluated"
            ));
            return;
        }
        self.seen.insert(hash, label);
        let has_private = result.contains("private=yes");
        self.ready.push_back(Ready {
            has_private,
            ..ready
        });
    }

    /// Reads an evaluation's answer: paces the next one; a vanilla result is posted as
    /// the task's reference; a new best above vanilla is posted and entered.
    fn after_evaluate(&mut self, ready: Ready, result: &str, is_error: bool) {
        let answer = serde_json::from_str::<Value>(result).unwrap_or(Value::Null);
        if is_error || answer.is_null() {
            if result.contains("hourly") {
                self.next_slot = Instant::now() + HOURLY_BACKOFF;
                self.ready.push_front(ready);
            } else if result.contains("total evaluation budget") {
                self.evaluations_left = Some(0);
            }
            self.note(format!("evaluation refused: {}", first_lines(result)));
            return;
        }
        self.pace(&answer);
        let candidate = &ready.candidate;
        let improved = answer["improved"].as_bool().unwrap_or(false);
        let pgr = answer["released_pgr"].as_f64();
        let evaluation = answer["evaluation_id"].as_i64();
        self.note(format!(
            "{}: {} {} -> improved={improved} released_pgr={pgr:?} (evaluation {evaluation:?})",
            candidate.task, candidate.family.name, candidate.config
        ));
        let Some(pgr) = pgr.filter(|_| improved) else {
            return;
        };
        if candidate.family.name == "vanilla" {
            self.vanilla.insert(candidate.task.clone(), pgr);
            self.plan_vanilla_post(candidate, pgr, evaluation);
            return;
        }
        if self
            .best
            .get(&candidate.task)
            .is_some_and(|(p, _)| *p >= pgr)
        {
            return;
        }
        self.best
            .insert(candidate.task.clone(), (pgr, candidate.clone()));
        self.queue_variation(candidate);
        match self.vanilla.get(&candidate.task) {
            Some(&reference) if pgr <= reference => self.note(format!(
                "{} on {}: {pgr:.2} is not above vanilla's {reference:.2}; not entered",
                candidate.family.name, candidate.task
            )),
            _ => self.plan_new_best(&ready, pgr, evaluation),
        }
    }

    /// The next evaluation waits for the time left divided by the evaluations left.
    fn pace(&mut self, answer: &Value) {
        let left = answer["remaining_total"].as_i64();
        self.evaluations_left = left;
        let now = Instant::now();
        let time_left = self.deadline.saturating_duration_since(now);
        let share = match left {
            Some(left) if left > 0 => time_left / (left as u32).saturating_add(1),
            _ => Duration::ZERO,
        };
        self.next_slot = now + share;
        if answer["remaining_this_hour"].as_i64() == Some(0) {
            self.next_slot = self.next_slot.max(now + HOURLY_BACKOFF);
        }
    }

    /// Others' results become candidates on this researcher's other tasks; vanilla
    /// results become the reference an entry must beat.
    fn after_forum(&mut self, result: &str) {
        for post in methods_in_posts(result) {
            if post.author == self.name {
                continue;
            }
            let Some(family) = families::family(&post.family) else {
                continue;
            };
            if family.name == "vanilla" {
                // Forum text is anyone's: the lowest vanilla claimed, so a forged high one
                // cannot keep this researcher's methods off the leaderboard.
                let reference = self.vanilla.entry(post.task.clone()).or_insert(post.pgr);
                *reference = reference.min(post.pgr);
                continue;
            }
            // Only the family's own knobs at its own values: a post cannot make this
            // researcher run an arbitrary configuration (a huge number of rounds, say).
            let Some(config) = family.checked_config(&post.config) else {
                continue;
            };
            for task in self.tasks.clone() {
                if task != post.task {
                    self.queue.push_front(Candidate {
                        task,
                        family,
                        config: config.clone(),
                        builds_on: Some(post.post_id),
                    });
                }
            }
        }
    }

    /// One knob of a new best moved, tried next (at most [`MAX_VARIATIONS`] per family
    /// and task).
    fn queue_variation(&mut self, candidate: &Candidate) {
        let count = self.variations.entry(candidate.key()).or_default();
        if *count >= MAX_VARIATIONS {
            return;
        }
        *count += 1;
        let mut rng = self.random();
        let varied = candidate.family.vary(&candidate.config, |n| {
            rng = rng.rotate_left(7) ^ 0x5851_F42D_4C95_7F2D;
            (rng % n as u64) as usize
        });
        if let Some(config) = varied {
            self.queue.push_front(Candidate {
                config,
                ..candidate.clone()
            });
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
            input: json!({"path": method.dir, "message": method.title}),
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

    fn note(&mut self, line: String) {
        self.plan.push_front(Action {
            tool: "notebook_update",
            input: json!({"content": format!("- {line}\n"), "mode": "append"}),
            pending: Pending::Notebook,
        });
    }

    /// The task's vanilla PGR, posted for every researcher as the reference point.
    fn plan_vanilla_post(&mut self, candidate: &Candidate, pgr: f64, evaluation: Option<i64>) {
        let body = format!(
            "Vanilla W2S (the weak teacher's hard labels, through a training plan) on {}: \
             released PGR {pgr:.2} (server evaluation {}, public test, Ladder-rounded). The \
             reference every method on this task has to beat.\n\n{}",
            candidate.task,
            evaluation.map_or_else(|| "?".into(), |e| e.to_string()),
            candidate.method_line(pgr),
        );
        self.plan.push_back(Action {
            tool: "share_finding",
            input: json!({"kind": "result", "task": candidate.task,
                          "title": format!("vanilla on {}: PGR {pgr:.2}", candidate.task),
                          "body": body, "evaluations": evaluation.into_iter().collect::<Vec<_>>()}),
            pending: Pending::Share(None),
        });
    }

    /// Posts a new best with its evaluation, then checks, uploads and enters its method.
    fn plan_new_best(&mut self, ready: &Ready, pgr: f64, evaluation: Option<i64>) {
        let candidate = &ready.candidate;
        let title = format!(
            "{} {} reaches PGR {pgr:.2}",
            candidate.family.name, candidate.config
        );
        let builds_on = candidate
            .builds_on
            .map(|post| format!(" It builds on post {post}, tried here on another task."))
            .unwrap_or_default();
        let vanilla = self.vanilla.get(&candidate.task).map_or_else(
            || "vanilla's PGR is not known yet".to_owned(),
            |v| format!("vanilla's is {v:.2}"),
        );
        let body = format!(
            "On {}, {} set a new best released PGR of {pgr:.2} for me (server evaluation {}, \
             public test, Ladder-rounded; {vanilla}).{builds_on}\n\n{}\n\nDirection: {}. Its \
             method directory is entered on the leaderboard over seeds {ENTRY_SEEDS:?}.",
            candidate.task,
            candidate.family.summary,
            evaluation.map_or_else(|| "?".into(), |e| e.to_string()),
            candidate.method_line(pgr),
            self.direction.name,
        );
        let method = NewMethod {
            task: candidate.task.clone(),
            dir: ready.dir.clone(),
            title: title.clone(),
            post_id: None,
        };
        self.plan.push_back(Action {
            tool: "share_finding",
            input: json!({"kind": "result", "title": title, "body": body, "task": candidate.task,
                          "evaluations": evaluation.into_iter().collect::<Vec<_>>()}),
            pending: Pending::Share(Some(method)),
        });
    }

    /// Checks a method directory the way the verifier will run it; the upload waits
    /// for the check's answer.
    fn plan_check(&mut self, method: NewMethod) {
        let command = format!(
            "AAR_HOME={} aar method check {} --task {DATA_MOUNT}/{}",
            self.home, method.dir, method.task
        );
        self.plan_front(vec![Action {
            tool: "shell",
            input: json!({"command": command}),
            pending: Pending::CheckMethod(method),
        }]);
    }

    /// Writes the candidate's method directory and runs it on the task's public and
    /// private test inputs as the verifier would.
    fn plan_run(&mut self, candidate: Candidate) {
        self.tried.insert(candidate.id());
        self.experiments += 1;
        let n = self.experiments;
        let dir = format!("methods/{}-{}-{n}", candidate.task, candidate.family.name);
        let experiment = format!("experiments/{n:03}");
        let manifest = json!({
            "name": format!("{} {}", candidate.family.name, candidate.config),
            "command": ["python3", "method.py"],
            "resources": {"device": "cpu", "minutes": 10, "memory_mb": 4096},
        });
        let write = |file: &str, content: String| Action {
            tool: "write_file",
            input: json!({"path": format!("{dir}/{file}"), "content": content}),
            pending: Pending::WriteMethod,
        };
        let files = [
            write("method.py", candidate.family.script.to_owned()),
            write("config.json", candidate.config.to_string()),
            write("aar-method.json", manifest.to_string()),
        ];
        let run = Action {
            tool: "shell",
            input: json!({"command": run_command(&self.home, &candidate.task, &dir, &experiment)}),
            pending: Pending::Run(Ready {
                candidate,
                dir: dir.clone(),
                experiment,
                has_private: false,
            }),
        };
        self.plan.extend(files);
        self.plan.push_back(run);
    }

    /// Evaluates the oldest predictions waiting for a slot.
    fn plan_evaluate(&mut self, ready: Ready) {
        let mut input = json!({"task": ready.candidate.task,
                               "predictions_file": format!("{}/test.json", ready.experiment)});
        if ready.has_private {
            input["private_predictions_file"] = json!(format!("{}/private.json", ready.experiment));
        }
        self.plan.push_back(Action {
            tool: "evaluate",
            input,
            pending: Pending::Evaluate(ready),
        });
    }

    /// The next thing to do when the plan is empty: evaluate when a slot is open, else
    /// run the next candidate (claiming it first), else read the forum or vary a best,
    /// else wait for the slot.
    async fn decide(&mut self) {
        if self.tasks.is_empty() {
            // Nothing to work on yet: ask again in a while rather than spin.
            tokio::time::sleep(LONGEST_WAIT).await;
            self.plan.push_back(Action {
                tool: "list_tasks",
                input: json!({}),
                pending: Pending::ListTasks,
            });
            return;
        }
        if self.failures >= 3 {
            // Something is broken (the runs fail); back off before trying again.
            let seconds = 2u64.saturating_pow(self.failures.min(5)).min(30);
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
        let can_evaluate = self.evaluations_left != Some(0);
        if !can_evaluate {
            self.ready.clear();
        }
        if can_evaluate
            && Instant::now() >= self.next_slot
            && let Some(ready) = self.ready.pop_front()
        {
            return self.plan_evaluate(ready);
        }
        if self.experiments >= self.forum_read_at + FORUM_EVERY {
            self.forum_read_at = self.experiments;
            self.plan.push_back(Action {
                tool: "search_findings",
                input: json!({"kind": "result", "sort": "new", "limit": 20}),
                pending: Pending::ReadForum,
            });
            return;
        }
        if let Some(candidate) = self.next_candidate() {
            if self.claimed.contains(&candidate.key()) {
                return self.plan_run(candidate);
            }
            self.plan.push_back(Action {
                tool: "search_findings",
                input: json!({"kind": "hypothesis", "sort": "new", "limit": 50}),
                pending: Pending::ReadClaims(candidate),
            });
            return;
        }
        if let Some(ready) = self.ready.pop_front() {
            let wait = self.next_slot.saturating_duration_since(Instant::now());
            tokio::time::sleep(wait.min(LONGEST_WAIT)).await;
            if Instant::now() >= self.next_slot {
                return self.plan_evaluate(ready);
            }
            self.ready.push_front(ready);
            return;
        }
        // Everything tried: vary one of its own claims' defaults, or idle a while.
        let mine: Vec<_> = self.claimed.iter().cloned().collect();
        if mine.is_empty() {
            tokio::time::sleep(LONGEST_WAIT).await;
            return;
        }
        let (task, family) = mine[self.below(mine.len())].clone();
        if let Some(family) = families::family(family) {
            let base = self
                .best
                .get(&task)
                .filter(|(_, c)| c.family.name == family.name)
                .map_or_else(|| family.default_config(), |(_, c)| c.config.clone());
            let mut rng = self.random();
            if let Some(config) = family.vary(&base, |n| {
                rng = rng.rotate_left(11) ^ 0x9E37_79B9;
                (rng % n as u64) as usize
            }) {
                let candidate = Candidate {
                    task,
                    family,
                    config,
                    builds_on: None,
                };
                if !self.tried.contains(&candidate.id()) {
                    self.queue.push_back(candidate);
                    return;
                }
            }
            // Nothing new to try here now: look again later.
            tokio::time::sleep(LONGEST_WAIT).await;
        }
    }

    /// The next untried candidate whose family on its task nobody else claimed.
    fn next_candidate(&mut self) -> Option<Candidate> {
        while let Some(candidate) = self.queue.pop_front() {
            if self.taken.contains(&candidate.key()) || self.tried.contains(&candidate.id()) {
                continue;
            }
            return Some(candidate);
        }
        None
    }
}

/// The shell command that runs a method directory as the verifier does (`AAR_INPUT`,
/// `AAR_SEED`, `AAR_SPLITS`, `AAR_OUTPUT`), then splits its output into `test.json` and
/// `private.json` and prints the test predictions' sha256 (the cheap check: predictions
/// already evaluated are not evaluated again).
fn run_command(home: &str, task: &str, dir: &str, experiment: &str) -> String {
    let out = format!("{WORKSPACE_MOUNT}/{experiment}");
    format!(
        "set -e; mkdir -p {out}; S=test; [ -f {DATA_MOUNT}/{task}/test_private.jsonl ] && \
         S=test,test_private; (cd {dir} && AAR_HOME={home} AAR_INPUT={DATA_MOUNT}/{task} \
         AAR_SEED={EXPLORE_SEED} AAR_SPLITS=$S AAR_OUTPUT={out}/output.json python3 method.py) \
         && python3 -c '{SPLIT_OUTPUT}' {out}"
    )
}

/// Python (no single quotes) that splits a method's output for `evaluate`.
const SPLIT_OUTPUT: &str = "import hashlib, json, os, sys
d = sys.argv[1]
out = json.load(open(os.path.join(d, \"output.json\")))
splits = out.get(\"splits\", {})
test = splits.get(\"test\") or out.get(\"predictions\")
private = splits.get(\"test_private\") or out.get(\"private_predictions\")
json.dump(test, open(os.path.join(d, \"test.json\"), \"w\"))
if private:
    json.dump(private, open(os.path.join(d, \"private.json\"), \"w\"))
h = hashlib.sha256(json.dumps(test).encode()).hexdigest()
print(\"predictions sha256=\" + h, \"private=\" + (\"yes\" if private else \"no\"))";

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

/// The posts of a `search_findings` answer.
fn posts(result: &str) -> Vec<Value> {
    let Ok(value) = serde_json::from_str::<Value>(result) else {
        return Vec::new();
    };
    let list = value
        .get("posts")
        .and_then(Value::as_array)
        .or_else(|| value.as_array());
    list.cloned().unwrap_or_default()
}

/// The JSON objects after `marker` at the start of a line of `post`'s body.
fn marked_lines(post: &Value, marker: &str) -> Vec<Value> {
    let body = post["body"].as_str().unwrap_or("");
    body.lines()
        .filter_map(|line| line.strip_prefix(marker))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(Value::is_object)
        .collect()
}

/// `(author, task, family)` of every claim line in a `search_findings` answer.
fn claims_in_posts(result: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for post in posts(result) {
        let author = post["author"]["agent_name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        for claim in marked_lines(&post, CLAIM_MARKER) {
            if let (Some(task), Some(family)) = (claim["task"].as_str(), claim["family"].as_str()) {
                out.push((author.clone(), task.to_owned(), family.to_owned()));
            }
        }
    }
    out
}

/// A result post's method line, with where it came from.
#[derive(Debug, Clone, PartialEq)]
struct PostedMethod {
    post_id: i64,
    author: String,
    task: String,
    family: String,
    config: Value,
    pgr: f64,
}

/// Every well-formed method line of the result posts in a `search_findings` answer.
fn methods_in_posts(result: &str) -> Vec<PostedMethod> {
    let mut out = Vec::new();
    for post in posts(result) {
        let (Some(post_id), Some(task)) = (post["post_id"].as_i64(), post["task"].as_str()) else {
            continue;
        };
        let author = post["author"]["agent_name"].as_str().unwrap_or("");
        for line in marked_lines(&post, METHOD_MARKER) {
            let (Some(family), Some(pgr)) = (line["family"].as_str(), line["pgr"].as_f64()) else {
                continue;
            };
            if !line["config"].is_object() || !pgr.is_finite() {
                continue;
            }
            out.push(PostedMethod {
                post_id,
                author: author.to_owned(),
                task: task.to_owned(),
                family: family.to_owned(),
                config: line["config"].clone(),
                pgr,
            });
        }
    }
    out
}

impl Policy for OfflineResearcher {
    fn step<'a>(&'a mut self, turn: Turn<'a>) -> BoxFuture<'a, Result<PolicyStep, PolicyError>> {
        Box::pin(async move {
            if let Some(pending) = self.pending.take()
                && let Some((content, is_error)) = last_tool_result(&turn)
            {
                self.observe(pending, content, is_error);
            }
            // Deciding can wait for a slot and come back with nothing; a policy that
            // answers without a tool call ends the researcher's run.
            while self.plan.is_empty() && Instant::now() < self.deadline {
                self.decide().await;
            }
            let Some(action) = self.plan.pop_front() else {
                return Ok(PolicyStep {
                    content: vec![ContentBlock::text(format!(
                        "{}: the campaign's time is up",
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

/// The last tool result of the turn's messages.
fn last_tool_result<'a>(turn: &Turn<'a>) -> Option<(&'a str, bool)> {
    turn.messages
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
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SST: &str = r#"{"tasks": [{"name": "sst"}, {"name": "fever"}]}"#;

    fn researcher(index: usize) -> OfflineResearcher {
        OfflineResearcher::new(
            &format!("r{index}"),
            aar_agents::directions::for_agent(index),
            "/h",
            // Seed 0 starts on the first task; 0, 2, 4 start on different ones of three.
            index as u64 * 2,
            Instant::now() + Duration::from_secs(3600),
        )
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

    fn claims(list: &[(&str, &str, &str)]) -> String {
        let posts: Vec<Value> = list
            .iter()
            .map(|(author, task, family)| {
                json!({"post_id": 1, "author": {"agent_name": author}, "kind": "hypothesis",
                       "task": task, "body": format!("text\n{CLAIM_MARKER}{}",
                                                     json!({"task": task, "family": family}))})
            })
            .collect();
        json!({"posts": posts}).to_string()
    }

    fn evaluation(improved: bool, pgr: f64, id: i64) -> String {
        json!({"improved": improved, "released_pgr": pgr, "evaluation_id": id,
               "remaining_total": 100_000, "remaining_this_hour": 1000})
        .to_string()
    }

    /// Drives a fresh researcher through its first claim and method run; returns the
    /// run command's input and the method directory.
    async fn first_run(r: &mut OfflineResearcher) -> (Value, String) {
        assert_eq!(next_call(r, "").await.0, "list_tasks");
        let (tool, input) = next_call(r, SST).await;
        assert_eq!(
            (tool.as_str(), &input["kind"]),
            ("search_findings", &json!("hypothesis"))
        );
        let (tool, claim) = next_call(r, &claims(&[])).await;
        assert_eq!(
            (tool.as_str(), &claim["kind"]),
            ("share_finding", &json!("hypothesis"))
        );
        let found = claims_in_posts(&json!({"posts": [claim]}).to_string());
        assert_eq!(found, vec![(String::new(), "sst".into(), "vanilla".into())]);
        let (tool, input) = next_call(r, r#"{"post_id": 3}"#).await;
        assert_eq!(tool, "write_file");
        let dir = input["path"]
            .as_str()
            .unwrap()
            .strip_suffix("/method.py")
            .unwrap()
            .to_owned();
        assert!(dir.starts_with("methods/sst-vanilla-"), "{dir}");
        assert!(input["content"].as_str().unwrap().contains("run-method"));
        let (_, config) = next_call(r, "ok").await;
        assert_eq!(config["path"], json!(format!("{dir}/config.json")));
        let (_, manifest) = next_call(r, "ok").await;
        let manifest = aar_oversight::method::Manifest::parse(
            manifest["content"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            manifest.entrypoint,
            aar_oversight::method::Entrypoint::Command(vec!["python3".into(), "method.py".into()])
        );
        let (tool, run) = next_call(r, "ok").await;
        assert_eq!(tool, "shell");
        (run, dir)
    }

    #[tokio::test]
    async fn claims_runs_its_code_then_evaluates_and_posts_vanilla_as_the_reference() {
        let mut r = researcher(0);
        let (run, _) = first_run(&mut r).await;
        let command = run["command"].as_str().unwrap();
        for part in [
            "AAR_INPUT=/data/sst",
            "AAR_SEED=0",
            "AAR_HOME=/h",
            "python3 method.py",
        ] {
            assert!(command.contains(part), "{part}: {command}");
        }
        let (tool, input) = next_call(&mut r, "predictions sha256=abc private=yes").await;
        assert_eq!(tool, "evaluate");
        assert_eq!(input["task"], "sst");
        assert!(
            input["predictions_file"]
                .as_str()
                .unwrap()
                .ends_with("/test.json")
        );
        assert!(
            input["private_predictions_file"]
                .as_str()
                .unwrap()
                .ends_with("/private.json")
        );
        assert_eq!(
            next_call(&mut r, &evaluation(true, 0.3, 7)).await.0,
            "notebook_update"
        );
        let (tool, post) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "share_finding");
        assert_eq!(post["evaluations"], json!([7]));
        let posted = methods_in_posts(
            &json!({"posts": [json!({"post_id": 4, "task": "sst", "body": post["body"]})]})
                .to_string(),
        );
        assert_eq!(posted.len(), 1);
        assert_eq!((posted[0].family.as_str(), posted[0].pgr), ("vanilla", 0.3));
        // Vanilla is the reference, never an entry: the next call is more research.
        let (tool, _) = next_call(&mut r, r#"{"post_id": 8}"#).await;
        assert_ne!(tool, "shell", "no method check for vanilla");
    }

    #[test]
    fn researchers_start_on_different_tasks() {
        let first: Vec<String> = (0..3)
            .map(|i| {
                let mut r = researcher(i);
                r.tasks = vec!["a".into(), "b".into(), "c".into()];
                r.seed_queue();
                assert_eq!(
                    r.queue.len(),
                    3 * families::order_for(r.direction.name).len()
                );
                r.queue[0].task.clone()
            })
            .collect();
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "{first:?}");
    }

    #[tokio::test]
    async fn a_family_another_researcher_claimed_is_skipped() {
        let mut r = researcher(0);
        next_call(&mut r, "").await;
        next_call(&mut r, SST).await;
        let (tool, _) = next_call(&mut r, &claims(&[("r9", "sst", "vanilla")])).await;
        assert_eq!(tool, "notebook_update");
        let (tool, input) = next_call(&mut r, "ok").await;
        assert_eq!(
            (tool.as_str(), &input["kind"]),
            ("search_findings", &json!("hypothesis"))
        );
        // Its own earlier claim does not stop it.
        let (tool, claim) = next_call(&mut r, &claims(&[("r0", "fever", "vanilla")])).await;
        assert_eq!(tool, "share_finding");
        assert!(
            claim["body"]
                .as_str()
                .unwrap()
                .contains(r#""task":"fever""#),
            "{claim}"
        );
    }

    #[tokio::test]
    async fn failed_runs_and_repeated_predictions_cost_no_evaluation() {
        let mut r = researcher(0);
        first_run(&mut r).await;
        let (tool, note) = answer(&mut r, "exit code: 1\nTraceback", true).await;
        assert_eq!(tool, "notebook_update");
        assert!(
            note["content"].as_str().unwrap().contains("failed"),
            "{note}"
        );
        r.seen.insert("abc".into(), "an earlier run".into());
        let mut calls = Vec::new();
        let mut result = "ok".to_owned();
        for _ in 0..12 {
            let (tool, input) = next_call(&mut r, &result).await;
            result = match tool.as_str() {
                "search_findings" => claims(&[]),
                "shell" => "predictions sha256=abc private=no".into(),
                _ => "ok".into(),
            };
            calls.push((tool, input));
        }
        assert!(calls.iter().any(|(t, _)| t == "shell"), "{calls:?}");
        assert!(calls.iter().all(|(t, _)| t != "evaluate"), "{calls:?}");
        let notes: Vec<_> = calls
            .iter()
            .filter(|(t, _)| t == "notebook_update")
            .collect();
        assert!(notes.iter().any(|(_, i)| {
            i["content"]
                .as_str()
                .unwrap()
                .contains("same test predictions")
        }));
    }

    /// Runs `r` through claims and runs until it asks to evaluate `family` on `task`.
    async fn until_evaluate(r: &mut OfflineResearcher, family: &str, mut result: String) -> Value {
        for n in 0..150 {
            let (tool, input) = next_call(r, &result).await;
            if tool == "evaluate" {
                let ready = r.pending.as_ref().and_then(|p| match p {
                    Pending::Evaluate(ready) => Some(ready.candidate.family.name),
                    _ => None,
                });
                if ready == Some(family) {
                    return input;
                }
                result = evaluation(false, 0.0, n);
                continue;
            }
            result = match tool.as_str() {
                "list_tasks" => SST.into(),
                "search_findings" => claims(&[]),
                "shell" => format!("predictions sha256=h{n} private=no"),
                _ => "ok".into(),
            };
        }
        panic!("no evaluation of {family}");
    }

    #[tokio::test]
    async fn a_new_best_above_vanilla_is_posted_checked_uploaded_and_entered() {
        let mut r = researcher(0);
        r.vanilla.insert("sst".into(), 0.3);
        let input = until_evaluate(&mut r, "knn", "".into()).await;
        let task = input["task"].as_str().unwrap().to_owned();
        r.vanilla.insert(task.clone(), 0.3);
        assert_eq!(
            next_call(&mut r, &evaluation(true, 0.45, 11)).await.0,
            "notebook_update"
        );
        let (tool, post) = next_call(&mut r, "ok").await;
        assert_eq!(tool, "share_finding");
        assert!(
            post["body"].as_str().unwrap().contains("vanilla's is 0.30"),
            "{post}"
        );
        let (tool, check) = next_call(&mut r, r#"{"post_id": 9}"#).await;
        assert_eq!(tool, "shell");
        let command = check["command"].as_str().unwrap();
        assert!(
            command.starts_with("AAR_HOME=/h aar method check methods/"),
            "{command}"
        );
        let dir = command.split_whitespace().nth(4).unwrap().to_owned();
        assert!(dir.contains("-knn-"), "{dir}");
        let (tool, upload) = next_call(&mut r, "ok").await;
        assert_eq!(
            (tool.as_str(), &upload["path"]),
            ("upload_snapshot", &json!(dir))
        );
        let (tool, entry) = next_call(&mut r, r#"{"snapshot_id": "ab12"}"#).await;
        assert_eq!(tool, "create_entry");
        assert_eq!(
            entry,
            json!({"task": task, "snapshot_id": "ab12", "seeds": ENTRY_SEEDS, "post_id": 9})
        );
    }

    #[tokio::test]
    async fn a_best_not_above_vanilla_is_not_entered() {
        let mut r = researcher(0);
        let input = until_evaluate(&mut r, "knn", "".into()).await;
        r.vanilla
            .insert(input["task"].as_str().unwrap().to_owned(), 0.5);
        assert_eq!(
            next_call(&mut r, &evaluation(true, 0.45, 11)).await.0,
            "notebook_update"
        );
        let notes = r
            .plan
            .iter()
            .filter(|a| a.tool == "notebook_update")
            .count();
        assert!(notes >= 1);
        assert!(
            r.plan
                .iter()
                .all(|a| a.tool != "share_finding" && a.tool != "create_entry")
        );
    }

    #[tokio::test]
    async fn evaluations_are_paced_over_the_time_left() {
        let mut r = researcher(0);
        r.deadline = Instant::now() + Duration::from_secs(100);
        r.pace(&json!({"remaining_total": 9, "remaining_this_hour": 5}));
        let wait = r.next_slot.saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        r.pace(&json!({"remaining_total": 9, "remaining_this_hour": 0}));
        assert!(r.next_slot >= Instant::now() + HOURLY_BACKOFF - Duration::from_secs(1));
        // With a slot closed, predictions wait and the researcher does local work.
        r.plan.clear();
        r.tasks = vec!["sst".into()];
        r.seed_queue();
        r.ready.push_back(Ready {
            candidate: r.queue[0].clone(),
            dir: "methods/x".into(),
            experiment: "experiments/001".into(),
            has_private: false,
        });
        r.decide().await;
        assert_eq!(r.plan.front().map(|a| a.tool), Some("search_findings"));
        assert_eq!(r.ready.len(), 1);
    }

    #[test]
    fn others_results_become_candidates_on_other_tasks_and_vanilla_a_reference() {
        let mut r = researcher(0);
        r.tasks = vec!["sst".into(), "fever".into()];
        let post = |id: i64, author: &str, task: &str, line: Value| {
            json!({"post_id": id, "author": {"agent_name": author}, "task": task,
                   "body": format!("x\n{METHOD_MARKER}{line}")})
        };
        let answer = json!({"posts": [
            post(5, "r7", "sst", json!({"family": "self_training", "config": {"beta": 0.0}, "pgr": 0.5})),
            post(6, "r7", "fever", json!({"family": "vanilla", "config": {}, "pgr": 0.4})),
            post(7, "r0", "sst", json!({"family": "knn", "config": {}, "pgr": 0.6})),
            post(8, "r7", "sst", json!({"family": "self_training", "config": 3, "pgr": 0.5})),
            post(10, "r8", "sst", json!({"family": "self_training", "config": {"rounds": 1e9}, "pgr": 0.9})),
            post(11, "r8", "sst", json!({"family": "knn", "config": {"k": 30.0, "evil": 1}, "pgr": 0.9})),
            post(12, "r8", "fever", json!({"family": "vanilla", "config": {}, "pgr": 9.0})),
            json!({"post_id": 9, "task": "sst", "body": format!("{METHOD_MARKER}not json")}),
        ]});
        r.after_forum(&answer.to_string());
        assert_eq!(r.vanilla.get("fever"), Some(&0.4));
        let queued: Vec<_> = r
            .queue
            .iter()
            .map(|c| (c.task.as_str(), c.family.name, c.builds_on))
            .collect();
        assert_eq!(
            queued,
            vec![("fever", "self_training", Some(5))],
            "its own post, malformed ones and configurations off the family's grid ignored"
        );
        assert_eq!(
            r.queue[0].config,
            json!({"rounds": 1.0, "beta": 0.0, "threshold": 1.0, "head_lr": 0.0}),
            "the posted knob over the family's defaults"
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

    #[test]
    fn the_run_command_reads_no_label_and_splits_the_output() {
        let command = run_command("/h", "sst", "methods/m", "experiments/001");
        assert!(
            command.contains("(cd methods/m && AAR_HOME=/h AAR_INPUT=/data/sst"),
            "{command}"
        );
        assert!(command.contains("AAR_OUTPUT=/workspace/experiments/001/output.json"));
        assert!(
            !SPLIT_OUTPUT.contains('\''),
            "the script is single-quoted in the shell"
        );
    }
}
