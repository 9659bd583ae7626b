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
//!   posts its own, so no two researchers run the same family on the same task at once.
//!   A claim is a reservation, judged from what the server vouches for (the post's author
//!   and time): it holds for one method run's time limit after its post, until its author
//!   posts a result for the pair, and only an author's two most recent claims hold, so an
//!   agent claiming everything keeps no researcher idle. A family skipped for a claim
//!   comes back once the claim has lapsed and nothing else is left. Vanilla (the
//!   reference point) is a family like any other: one researcher per task runs it and
//!   posts its PGR for everyone.
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
//! - **Resuming.** What it tried, evaluated, claimed and entered is saved in its
//!   workspace ([`saved`]) and read back first when a stopped job is resumed.

mod families;
mod saved;

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

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
/// The time limit every method directory declares (`resources.minutes`).
const METHOD_MINUTES: u64 = 10;
/// How long a claim holds after its post (server time): one method run's time limit. By
/// then the claimer's run has finished or been killed, and a result worth sharing is
/// posted; a researcher that stopped or an agent that never meant to run anything holds
/// the pair no longer.
const CLAIM_HOLDS: Duration = Duration::from_secs(60 * METHOD_MINUTES);
/// How many of another author's claims hold at once: its most recent ones. An offline
/// researcher claims one family at a time and may claim the next while the last one's
/// predictions wait for an evaluation slot; an agent claiming every family on every task
/// blocks no more than this.
const OPEN_CLAIMS_PER_AUTHOR: usize = 2;

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

    /// What tells candidates apart (`task|family|grid key`): the form the researcher's
    /// saved state names them by, see [`Candidate::from_id`].
    fn id(&self) -> String {
        let config = self
            .family
            .grid_key(&self.config)
            .unwrap_or_else(|| self.config.to_string());
        format!("{}|{}|{config}", self.task, self.family.name)
    }

    /// The candidate an [`Candidate::id`] names; `None` unless the task is a plain name,
    /// the family known and the configuration on its grid.
    fn from_id(id: &str) -> Option<Candidate> {
        let mut parts = id.splitn(3, '|');
        let (task, family, key) = (parts.next()?, parts.next()?, parts.next()?);
        let family = families::family(family).filter(|_| saved::is_plain_name(task))?;
        Some(Candidate {
            task: task.to_owned(),
            family,
            config: family.config_at(key)?,
            builds_on: None,
        })
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
    /// The experiment's number, `n` of its directories.
    number: usize,
    has_private: bool,
}

impl Ready {
    /// The method directory, `methods/<task>-<family>-<n>`.
    fn dir(&self) -> String {
        let c = &self.candidate;
        format!("methods/{}-{}-{}", c.task, c.family.name, self.number)
    }

    /// The experiment directory holding `test.json` (and `private.json`).
    fn experiment(&self) -> String {
        format!("experiments/{:03}", self.number)
    }
}

/// A new best on its way to becoming a leaderboard entry.
#[derive(Debug, Clone)]
struct NewMethod {
    task: String,
    /// The method's [`Candidate::id`], recorded as entered once the entry is made.
    candidate: String,
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
    /// The task's leaderboard, read before entering this snapshot.
    ReadBoard(NewMethod, Value),
    /// The entry of the method with this [`Candidate::id`].
    CreateEntry(String),
    Notebook,
    /// Reading the saved state back.
    Restore,
    /// Writing the state to its temporary file; the move follows.
    SaveWrite,
    /// Moving it over the state file.
    SaveMove,
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
    /// (task, family) others' claims hold, until when (the last read of the claims).
    taken: HashMap<(String, &'static str), Instant>,
    /// Candidates skipped for a claim, with when it lapses: back in the queue once it
    /// has and the queue is empty.
    deferred: Vec<(Instant, Candidate)>,
    /// When (server milliseconds) each other author last posted a result for a (task,
    /// family): that releases its earlier claim on the pair.
    results_posted: HashMap<(String, String, &'static str), i64>,
    /// [`Candidate::id`]s run.
    tried: HashSet<String>,
    /// [`Candidate::id`]s entered on the leaderboard.
    entered: HashSet<String>,
    ready: VecDeque<Ready>,
    /// sha256 of test predictions already evaluated, with what produced them.
    seen: HashMap<String, String>,
    next_slot: Instant,
    evaluations_left: Option<i64>,
    /// Best released PGR per task, own.
    best: HashMap<String, (f64, Candidate)>,
    /// Vanilla's PGR per task as the server publishes it (`list_tasks`: the pinned
    /// runs' mean public-test accuracy): the reference an entry must beat. A single
    /// vanilla evaluation (one seed, Ladder-rounded) is a noisy stand-in for it.
    served_vanilla: HashMap<String, f64>,
    /// Vanilla's released PGR per task from its own evaluations, where the server
    /// publishes no reference.
    vanilla: HashMap<String, f64>,
    /// The lowest plausible vanilla PGR others posted per task, the reference while it
    /// has no evaluation of its own.
    forum_vanilla: HashMap<String, f64>,
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
    /// The state last written to its workspace (JSON), so it is written when it changed.
    last_saved: String,
}

impl OfflineResearcher {
    /// A researcher following `direction` until `deadline`, its methods calling `aar`
    /// with `AAR_HOME=home`.
    pub fn new(name: &str, direction: Direction, home: &str, seed: u64, deadline: Instant) -> Self {
        let mut researcher = OfflineResearcher {
            name: name.to_owned(),
            direction,
            home: home.to_owned(),
            deadline,
            tasks: Vec::new(),
            queue: VecDeque::new(),
            claimed: HashSet::new(),
            taken: HashMap::new(),
            deferred: Vec::new(),
            results_posted: HashMap::new(),
            tried: HashSet::new(),
            entered: HashSet::new(),
            ready: VecDeque::new(),
            seen: HashMap::new(),
            next_slot: Instant::now(),
            evaluations_left: None,
            best: HashMap::new(),
            served_vanilla: HashMap::new(),
            vanilla: HashMap::new(),
            forum_vanilla: HashMap::new(),
            variations: HashMap::new(),
            // What a stopped job of this researcher did comes first (nothing, on a first
            // start: the file is missing).
            plan: VecDeque::from([
                Action {
                    tool: "read_file",
                    input: json!({"path": saved::STATE_FILE}),
                    pending: Pending::Restore,
                },
                Action {
                    tool: "list_tasks",
                    input: json!({}),
                    pending: Pending::ListTasks,
                },
            ]),
            pending: None,
            experiments: 0,
            forum_read_at: 0,
            calls: 0,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            failures: 0,
            first_task: seed,
            last_saved: String::new(),
        };
        // Nothing to save until something happens (and never over the saved state
        // before it is read back).
        researcher.last_saved = researcher.state_json().unwrap_or_default();
        researcher
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
                self.served_vanilla = served_vanilla(result);
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
            Pending::ReadBoard(method, entry) => self.after_board(method, entry, result),
            Pending::CreateEntry(candidate) => self.after_entry(candidate, result, is_error),
            Pending::Restore => self.after_restore(result, is_error),
            Pending::SaveWrite => self.after_save_write(result, is_error),
            Pending::SaveMove if is_error => {
                tracing::warn!(agent = %self.name, error = %first_lines(result), "state not saved");
            }
            Pending::Claim
            | Pending::WriteMethod
            | Pending::Share(None)
            | Pending::Notebook
            | Pending::SaveMove => {}
        }
    }

    /// Every family of the direction's order on every task, vanilla first where the
    /// server publishes no vanilla reference (where it does, vanilla's evaluation would
    /// tell less than the server's mean and, one lucky seed, set this researcher's
    /// Ladder bar above what its methods can show). Each researcher starts on another
    /// task (its tasks rotated by its seed), so researchers that start together do not
    /// race for the same first claim.
    fn seed_queue(&mut self) {
        let mut tasks = self.tasks.clone();
        if !tasks.is_empty() {
            let rotation = (self.first_task % tasks.len() as u64) as usize;
            tasks.rotate_left(rotation);
        }
        for family in families::order_for(self.direction.name) {
            for task in &tasks {
                if family.name == "vanilla" && self.served_vanilla.contains_key(task) {
                    continue;
                }
                self.queue.push_back(Candidate {
                    task: task.clone(),
                    family,
                    config: family.default_config(),
                    builds_on: None,
                });
            }
        }
    }

    /// Defers the candidate while another researcher's claim on its family and task
    /// holds; otherwise claims it and runs it.
    fn after_claims(&mut self, candidate: Candidate, result: &str) {
        let now = server_now(latest_post_at(result));
        let open = open_claims(
            &claims_in_posts(result),
            &self.results_posted,
            &self.name,
            now,
        );
        // The latest read replaces the earlier ones: claims lapse, authors move on.
        self.taken = open
            .into_iter()
            .map(|(key, until)| (key, instant_after(until.saturating_sub(now))))
            .collect();
        let key = candidate.key();
        if let Some(&until) = self.taken.get(&key) {
            self.note(format!(
                "{} on {} is claimed by another researcher; skipping it for now",
                key.1, key.0
            ));
            self.defer(until, candidate);
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
        // Tried once the run ended (a job stopped mid-run runs it again when resumed).
        self.tried.insert(ready.candidate.id());
        let label = format!(
            "{} {} on {}",
            ready.candidate.family.name, ready.candidate.config, ready.candidate.task
        );
        let hash = result
            .lines()
            .find_map(|l| l.strip_prefix("predictions sha256="))
            .and_then(|h| {
                let hash = h.split_whitespace().next()?;
                let hex = !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit());
                hex.then(|| hash.chars().take(saved::HASH_CHARS).collect::<String>())
            });
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
        if self.entered.contains(&candidate.id()) {
            // Entered before a restart: the leaderboard has it already.
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
        match self.reference(&candidate.task) {
            Some(reference) if pgr <= reference => self.note(format!(
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

    /// Others' results become candidates on this researcher's other tasks (and release
    /// their authors' claims); vanilla results become the reference an entry must beat
    /// until it has its own.
    fn after_forum(&mut self, result: &str) {
        for post in methods_in_posts(result) {
            if post.author == self.name {
                continue;
            }
            let Some(family) = families::family(&post.family) else {
                continue;
            };
            self.note_result_posted(&post, family);
            if family.name == "vanilla" {
                self.note_forum_vanilla(&post);
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

    /// When `post`'s author last posted a result for its family on its task.
    fn note_result_posted(&mut self, post: &PostedMethod, family: &'static Family) {
        let Some(at) = post.created_at else {
            return;
        };
        let key = (post.author.clone(), post.task.clone(), family.name);
        let latest = self.results_posted.entry(key).or_insert(at);
        *latest = (*latest).max(at);
    }

    /// Another's vanilla PGR as the task's reference. Forum text is anyone's: the lowest
    /// posted counts, so a forged high one cannot keep this researcher's methods off the
    /// leaderboard; one at or below 0 is ignored, as no released PGR is there (the Ladder
    /// releases nothing until a submission beats the weak teacher's accuracy by a step),
    /// so a forged one cannot wave every method through. Its own evaluation, once it has
    /// one, outranks them all ([`OfflineResearcher::reference`]).
    fn note_forum_vanilla(&mut self, post: &PostedMethod) {
        if post.pgr <= 0.0 {
            return;
        }
        let reference = self
            .forum_vanilla
            .entry(post.task.clone())
            .or_insert(post.pgr);
        *reference = reference.min(post.pgr);
    }

    /// The vanilla PGR a method on `task` must beat: the server's, else its own
    /// evaluation's, else the forum's.
    fn reference(&self, task: &str) -> Option<f64> {
        self.served_vanilla
            .get(task)
            .or_else(|| self.vanilla.get(task))
            .or_else(|| self.forum_vanilla.get(task))
            .copied()
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
        let board = json!({"task": method.task});
        self.plan_front(vec![Action {
            tool: "leaderboard",
            input: board,
            pending: Pending::ReadBoard(method, input),
        }]);
    }

    /// Enters the uploaded method unless the same code (snapshot ids are content
    /// addresses) over the same seeds is on the task's board already, by anyone:
    /// researchers that reach one configuration by different routes would otherwise
    /// have the verifier run it once per researcher.
    fn after_board(&mut self, method: NewMethod, entry: Value, result: &str) {
        let board = serde_json::from_str::<Value>(result).unwrap_or_default();
        let same = board
            .as_object()
            .into_iter()
            .flat_map(|sections| sections.values())
            .filter_map(Value::as_array)
            .flatten()
            .find(|row| {
                row["snapshot_id"] == entry["snapshot_id"] && row["seeds"] == entry["seeds"]
            });
        if let Some(row) = same {
            self.note(format!(
                "{} is on the {} board already as entry {}; not entered again",
                method.dir, method.task, row["entry_id"]
            ));
            self.entered.insert(method.candidate);
            return;
        }
        self.plan_front(vec![Action {
            tool: "create_entry",
            input: entry,
            pending: Pending::CreateEntry(method.candidate),
        }]);
    }

    /// Records an entry made (a duplicate the server recognised included), so it is
    /// never entered again, not even after a restart.
    fn after_entry(&mut self, candidate: String, result: &str, is_error: bool) {
        if !is_error {
            self.entered.insert(candidate);
        }
        self.note(format!("entry: {}", first_lines(result)));
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
        let vanilla = self.reference(&candidate.task).map_or_else(
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
            candidate: candidate.id(),
            dir: ready.dir(),
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
        self.experiments += 1;
        let ready = Ready {
            candidate,
            number: self.experiments,
            has_private: false,
        };
        let (dir, experiment) = (ready.dir(), ready.experiment());
        let candidate = &ready.candidate;
        let manifest = json!({
            "name": format!("{} {}", candidate.family.name, candidate.config),
            "command": ["python3", "method.py"],
            "resources": {"device": "cpu", "minutes": METHOD_MINUTES, "memory_mb": 4096},
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
            pending: Pending::Run(ready),
        };
        self.plan.extend(files);
        self.plan.push_back(run);
    }

    /// Evaluates the oldest predictions waiting for a slot.
    fn plan_evaluate(&mut self, ready: Ready) {
        let experiment = ready.experiment();
        let mut input = json!({"task": ready.candidate.task,
                               "predictions_file": format!("{experiment}/test.json")});
        if ready.has_private {
            input["private_predictions_file"] = json!(format!("{experiment}/private.json"));
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

    /// The next untried candidate whose family on its task no claim holds (as of the
    /// last read); once the queue is empty, the deferred ones whose claims lapsed.
    fn next_candidate(&mut self) -> Option<Candidate> {
        if self.queue.is_empty() {
            self.requeue_lapsed();
        }
        while let Some(candidate) = self.queue.pop_front() {
            if self.tried.contains(&candidate.id()) {
                continue;
            }
            let held = self.taken.get(&candidate.key()).copied();
            if let Some(until) = held.filter(|until| *until > Instant::now()) {
                self.defer(until, candidate);
                continue;
            }
            return Some(candidate);
        }
        None
    }

    /// Sets `candidate` aside until `until`, when the claim that holds its family lapses.
    fn defer(&mut self, until: Instant, candidate: Candidate) {
        let id = candidate.id();
        if !self.deferred.iter().any(|(_, c)| c.id() == id) {
            self.deferred.push((until, candidate));
        }
    }

    /// Deferred candidates whose claims lapsed go back to the queue, in their order (the
    /// claims are read again before they run).
    fn requeue_lapsed(&mut self) {
        let now = Instant::now();
        let (lapsed, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|(until, _)| *until <= now);
        self.deferred = held;
        self.queue.extend(lapsed.into_iter().map(|(_, c)| c));
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

/// Vanilla's public-test PGR per task from a `list_tasks` answer: `(vanilla - weak) /
/// (ceiling - weak)` of the published mean accuracies, where all three are there and
/// the ceiling beats the weak teacher.
fn served_vanilla(result: &str) -> HashMap<String, f64> {
    let Ok(value) = serde_json::from_str::<Value>(result) else {
        return HashMap::new();
    };
    let list = value.get("tasks").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .filter_map(|t| {
            let accuracy = |field: &str| t[field].as_f64().filter(|a| a.is_finite());
            let (weak, ceiling) = (accuracy("weak_baseline")?, accuracy("ceiling_baseline")?);
            let vanilla = accuracy("vanilla_baseline")?;
            let pgr = aar_core::metrics::FixedBaselines::from_seed_accuracies(&[weak], &[ceiling])
                .ok()?
                .pgr(vanilla)
                .ok()?;
            Some((t["name"].as_str()?.to_owned(), pgr))
        })
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

/// A hypothesis post's claim line, with what the server says of the post.
#[derive(Debug, Clone, PartialEq)]
struct PostedClaim {
    post_id: i64,
    /// The post's authenticated author (empty if the answer names none).
    author: String,
    /// When the server stored the post, in milliseconds since the epoch.
    created_at: Option<i64>,
    task: String,
    family: String,
}

/// Every claim line in a `search_findings` answer.
fn claims_in_posts(result: &str) -> Vec<PostedClaim> {
    let mut out = Vec::new();
    for post in posts(result) {
        let author = post["author"]["agent_name"].as_str().unwrap_or("");
        for claim in marked_lines(&post, CLAIM_MARKER) {
            if let (Some(task), Some(family)) = (claim["task"].as_str(), claim["family"].as_str()) {
                out.push(PostedClaim {
                    post_id: post["post_id"].as_i64().unwrap_or(0),
                    author: author.to_owned(),
                    created_at: post["created_at"].as_i64(),
                    task: task.to_owned(),
                    family: family.to_owned(),
                });
            }
        }
    }
    out
}

/// The (task, family) pairs others' claims hold at `now` (server milliseconds), each
/// with when its hold ends. A claim holds while it is fresh ([`CLAIM_HOLDS`]) and its
/// author has posted no result for the pair since (`results`: when each author last
/// did); of an author's holding claims only its [`OPEN_CLAIMS_PER_AUTHOR`] most recent
/// count. Claims without an author or a time vouched for by the server hold nothing.
fn open_claims(
    claims: &[PostedClaim],
    results: &HashMap<(String, String, &'static str), i64>,
    me: &str,
    now: i64,
) -> HashMap<(String, &'static str), i64> {
    let holds = i64::try_from(CLAIM_HOLDS.as_millis()).unwrap_or(i64::MAX);
    let mut holding: Vec<(&PostedClaim, &'static str, i64)> = claims
        .iter()
        .filter(|c| !c.author.is_empty() && c.author != me)
        .filter_map(|c| {
            let (at, family) = (c.created_at?, families::family(&c.family)?.name);
            let fresh = now.saturating_sub(at) < holds;
            let result_key = (c.author.clone(), c.task.clone(), family);
            let released = results.get(&result_key).is_some_and(|r| *r >= at);
            (fresh && !released).then_some((c, family, at))
        })
        .collect();
    holding.sort_by_key(|(c, _, at)| Reverse((*at, c.post_id)));
    let mut held: HashMap<&str, Vec<(String, &'static str)>> = HashMap::new();
    let mut open = HashMap::new();
    for (claim, family, at) in holding {
        let pair = (claim.task.clone(), family);
        let mine = held.entry(claim.author.as_str()).or_default();
        if mine.len() >= OPEN_CLAIMS_PER_AUTHOR || mine.contains(&pair) {
            continue;
        }
        mine.push(pair.clone());
        let until = open.entry(pair).or_insert(i64::MIN);
        *until = (*until).max(at.saturating_add(holds));
    }
    open
}

/// The newest post's time in a `search_findings` answer (server milliseconds).
fn latest_post_at(result: &str) -> Option<i64> {
    posts(result)
        .iter()
        .filter_map(|p| p["created_at"].as_i64())
        .max()
}

/// Now on the server's clock, in milliseconds since the epoch: this machine's clock, but
/// never before a post the server already stamped (a clock behind the server's would
/// hold claims too long). A clock ahead of it lets claims lapse early: work done twice,
/// never a researcher kept idle.
fn server_now(latest_post: Option<i64>) -> i64 {
    let here = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0);
    latest_post.map_or(here, |latest| here.max(latest))
}

/// The instant `millis` milliseconds from now (none for a negative count).
fn instant_after(millis: i64) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A result post's method line, with where it came from.
#[derive(Debug, Clone, PartialEq)]
struct PostedMethod {
    post_id: i64,
    author: String,
    /// When the server stored the post, in milliseconds since the epoch.
    created_at: Option<i64>,
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
                created_at: post["created_at"].as_i64(),
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
            self.plan_save_if_changed();
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

    /// Like [`next_call`], with the answer marked as failed or not. Housekeeping is
    /// answered on the way: the saved state's read (nothing saved: a first start) and
    /// its writes.
    async fn answer(
        researcher: &mut OfflineResearcher,
        result: &str,
        is_error: bool,
    ) -> (String, Value) {
        let mut call = raw_answer(researcher, result, is_error).await;
        loop {
            let housekeeping = match &researcher.pending {
                Some(Pending::Restore) => ("No such file or directory", true),
                Some(Pending::SaveWrite | Pending::SaveMove) => ("ok", false),
                _ => return call,
            };
            call = raw_answer(researcher, housekeeping.0, housekeeping.1).await;
        }
    }

    /// Feeds `result` as the answer to the last call and returns the next call, whatever
    /// it is.
    async fn raw_answer(
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

    /// A `search_findings` answer of claims posted just now.
    fn claims(list: &[(&str, &str, &str)]) -> String {
        let now = server_now(None);
        let posts: Vec<Value> = list
            .iter()
            .map(|(author, task, family)| claim_post(1, author, now, &[(task, family)]))
            .collect();
        json!({"posts": posts}).to_string()
    }

    /// A hypothesis post claiming `pairs` (task, family), posted at `at`.
    fn claim_post(id: i64, author: &str, at: i64, pairs: &[(&str, &str)]) -> Value {
        let lines: Vec<String> = pairs
            .iter()
            .map(|(task, family)| {
                format!("{CLAIM_MARKER}{}", json!({"task": task, "family": family}))
            })
            .collect();
        json!({"post_id": id, "author": {"agent_name": author}, "kind": "hypothesis",
               "created_at": at, "body": format!("text\n{}", lines.join("\n"))})
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
        let found: Vec<_> = found
            .iter()
            .map(|c| (c.author.as_str(), c.task.as_str(), c.family.as_str()))
            .collect();
        assert_eq!(found, vec![("", "sst", "vanilla")]);
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
                "shell" => format!("predictions sha256={n:016x} private=no"),
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
        let (tool, board) = next_call(&mut r, r#"{"snapshot_id": "ab12"}"#).await;
        assert_eq!(
            (tool.as_str(), &board),
            ("leaderboard", &json!({"task": task}))
        );
        // The same code over other seeds, or other code, is no reason not to enter it.
        let others = json!({"ranked": [
            {"entry_id": 4, "snapshot_id": "ab12", "seeds": [5, 6, 7]},
            {"entry_id": 5, "snapshot_id": "cd34", "seeds": ENTRY_SEEDS},
        ], "pending": []});
        let (tool, entry) = next_call(&mut r, &others.to_string()).await;
        assert_eq!(tool, "create_entry");
        assert_eq!(
            entry,
            json!({"task": task, "snapshot_id": "ab12", "seeds": ENTRY_SEEDS, "post_id": 9})
        );
    }

    #[tokio::test]
    async fn a_method_another_researcher_entered_already_is_not_entered_again() {
        let mut r = researcher(0);
        let input = until_evaluate(&mut r, "knn", "".into()).await;
        let task = input["task"].as_str().unwrap().to_owned();
        r.vanilla.insert(task.clone(), 0.3);
        let mut result = evaluation(true, 0.45, 11);
        let mut board = None;
        for _ in 0..10 {
            let (tool, input) = next_call(&mut r, &result).await;
            result = match tool.as_str() {
                "share_finding" => r#"{"post_id": 9}"#.into(),
                "upload_snapshot" => r#"{"snapshot_id": "ab12"}"#.into(),
                "leaderboard" => {
                    board = Some(input);
                    break;
                }
                _ => "ok".into(),
            };
        }
        assert_eq!(board, Some(json!({"task": task})));
        let entered =
            json!({"pending": [{"entry_id": 4, "snapshot_id": "ab12", "seeds": ENTRY_SEEDS}]});
        let (tool, _) = next_call(&mut r, &entered.to_string()).await;
        assert_ne!(tool, "create_entry");
        assert!(r.plan.iter().all(|a| a.tool != "create_entry"));
        assert_eq!(r.entered.len(), 1, "remembered as entered: {:?}", r.entered);
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
    async fn the_servers_vanilla_is_the_reference_and_not_evaluated_again() {
        let mut r = researcher(0);
        assert_eq!(next_call(&mut r, "").await.0, "list_tasks");
        // sst's vanilla PGR: (0.65 - 0.6) / (0.8 - 0.6) = 0.25; fever publishes none.
        let tasks = json!({"tasks": [
            {"name": "sst", "weak_baseline": 0.6, "ceiling_baseline": 0.8, "vanilla_baseline": 0.65},
            {"name": "fever", "weak_baseline": 0.6, "ceiling_baseline": 0.8, "vanilla_baseline": null},
        ]});
        next_call(&mut r, &tasks.to_string()).await;
        assert!((r.reference("sst").unwrap() - 0.25).abs() < 1e-9);
        assert_eq!(r.reference("fever"), None);
        let planned = |task: &str, family: &str| {
            let claiming = |p: &Pending| match p {
                Pending::ReadClaims(c) => Some(c.clone()),
                _ => None,
            };
            let mut queued: Vec<Candidate> = r.queue.iter().cloned().collect();
            queued.extend(r.plan.iter().filter_map(|a| claiming(&a.pending)));
            queued.extend(r.pending.as_ref().and_then(claiming));
            queued
                .iter()
                .any(|c| c.task == task && c.family.name == family)
        };
        assert!(
            !planned("sst", "vanilla"),
            "the server's mean is the reference"
        );
        assert!(
            planned("fever", "vanilla"),
            "no reference: vanilla is evaluated"
        );
        assert!(planned("sst", "shaping"));
        // A lucky vanilla evaluation of its own does not replace the server's mean.
        r.vanilla.insert("sst".into(), 0.6);
        assert!((r.reference("sst").unwrap() - 0.25).abs() < 1e-9);
        // A ceiling not above the weak teacher gives no reference.
        let flat = r#"{"tasks": [{"name": "x", "weak_baseline": 0.7, "ceiling_baseline": 0.7, "vanilla_baseline": 0.7}]}"#;
        assert!(served_vanilla(flat).is_empty());
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
            number: 1,
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
        assert_eq!(r.reference("fever"), Some(0.4));
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

    /// Minutes before now on the server's clock, in milliseconds.
    fn minutes_ago(minutes: i64) -> i64 {
        server_now(None) - minutes * 60_000
    }

    /// Answers each claims read with `forum` until the researcher claims a family;
    /// returns the claimed (task, family) and how many it skipped on the way.
    async fn until_claim(r: &mut OfflineResearcher, forum: &str) -> ((String, String), usize) {
        let (mut skipped, mut result) = (0, String::new());
        for _ in 0..40 {
            // A researcher with nothing left to claim waits: no claim, then.
            let call = tokio::time::timeout(Duration::from_secs(10), next_call(r, &result));
            let Ok((tool, input)) = call.await else {
                panic!("no claim after {skipped} skipped: it waits");
            };
            let content = input["content"].as_str().unwrap_or("");
            skipped += usize::from(tool == "notebook_update" && content.contains("skipping"));
            if tool == "share_finding" && input["kind"] == "hypothesis" {
                let claim = claims_in_posts(&json!({"posts": [input]}).to_string());
                return ((claim[0].task.clone(), claim[0].family.clone()), skipped);
            }
            result = match tool.as_str() {
                "list_tasks" => SST.into(),
                "search_findings" => forum.into(),
                _ => "ok".into(),
            };
        }
        panic!("no claim after {skipped} skipped");
    }

    #[tokio::test]
    async fn an_agent_claiming_everything_blocks_no_more_than_its_cap() {
        // One agent claims every family on both tasks, the researcher's first two
        // candidates (vanilla on each task) most recently.
        let now = server_now(None);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for family in FAMILIES.iter().rev() {
            pairs.extend([("fever", family.name), ("sst", family.name)]);
        }
        let posts: Vec<Value> = (0..)
            .zip(&pairs)
            .map(|(i, pair)| claim_post(i, "evil", now - 1000 + i, &[*pair]))
            .chain([claim_post(100, "evil", now - 2000, &pairs)])
            .collect();
        let forum = json!({"posts": posts}).to_string();
        let open = open_claims(&claims_in_posts(&forum), &HashMap::new(), "r0", now);
        assert_eq!(open.len(), OPEN_CLAIMS_PER_AUTHOR, "{open:?}");
        let mut r = researcher(0);
        let (claimed, _) = until_claim(&mut r, &forum).await;
        assert_ne!(claimed.1, "vanilla", "{claimed:?}");
        let deferred: Vec<_> = r.deferred.iter().map(|(_, c)| c.key()).collect();
        assert_eq!(
            deferred,
            vec![("sst".into(), "vanilla"), ("fever".into(), "vanilla")]
        );
    }

    #[tokio::test]
    async fn a_stale_claim_is_ignored_and_a_fresh_one_skipped() {
        let stale = json!({"posts": [claim_post(1, "r9", minutes_ago(11), &[("sst", "vanilla")])]});
        let mut r = researcher(0);
        let (claimed, skipped) = until_claim(&mut r, &stale.to_string()).await;
        assert_eq!((claimed, skipped), (("sst".into(), "vanilla".into()), 0));
        let fresh = json!({"posts": [claim_post(1, "r9", minutes_ago(9), &[("sst", "vanilla")])]});
        let mut r = researcher(0);
        let (claimed, skipped) = until_claim(&mut r, &fresh.to_string()).await;
        assert_eq!((claimed, skipped), (("fever".into(), "vanilla".into()), 1));
    }

    #[test]
    fn a_result_releases_its_authors_earlier_claim_only() {
        let at = minutes_ago(5);
        let claims = claims_in_posts(
            &json!({"posts": [
                claim_post(1, "r9", at, &[("sst", "vanilla")]),
                claim_post(2, "r8", at, &[("sst", "knn")]),
                claim_post(3, "", at, &[("fever", "knn")]),
                json!({"post_id": 4, "author": {"agent_name": "r7"},
                       "body": format!("{CLAIM_MARKER}{}", json!({"task": "fever", "family": "group"}))}),
            ]})
            .to_string(),
        );
        let mut r = researcher(0);
        let result = |id: i64, author: &str, at: i64, family: &str| {
            json!({"post_id": id, "author": {"agent_name": author}, "task": "sst", "created_at": at,
                   "body": format!("{METHOD_MARKER}{}", json!({"family": family, "config": {}, "pgr": 0.3}))})
        };
        // r8's result came before its claim: the claim still holds.
        r.after_forum(
            &json!({"posts": [result(5, "r9", at + 1, "vanilla"), result(6, "r8", at - 1, "knn")]})
                .to_string(),
        );
        let open = open_claims(&claims, &r.results_posted, "r0", server_now(None));
        let held: Vec<_> = open.keys().collect();
        assert_eq!(
            held,
            vec![&("sst".to_owned(), "knn")],
            "no author or no server time: no claim"
        );
    }

    #[test]
    fn a_skipped_family_comes_back_once_its_claim_lapsed_and_the_queue_is_empty() {
        let mut r = researcher(0);
        r.tasks = vec!["sst".into()];
        r.seed_queue();
        let lapsed = r.queue[1].clone();
        let held = r.queue[2].clone();
        r.queue.truncate(1);
        r.defer(Instant::now(), lapsed.clone());
        r.defer(Instant::now() + CLAIM_HOLDS, held.clone());
        r.defer(Instant::now(), lapsed.clone());
        assert_eq!(r.deferred.len(), 2, "deferred once");
        assert_ne!(r.next_candidate(), Some(lapsed.clone()), "the queue first");
        assert_eq!(r.next_candidate(), Some(lapsed));
        assert_eq!(r.next_candidate(), None);
        assert_eq!(r.deferred.len(), 1);
        assert_eq!(r.deferred[0].1, held);
    }

    #[test]
    fn its_own_vanilla_outranks_the_forum_which_cannot_post_one_at_or_below_zero() {
        let mut r = researcher(0);
        let vanilla = |id: i64, pgr: f64| {
            json!({"post_id": id, "author": {"agent_name": "r7"}, "task": "sst",
                   "body": format!("{METHOD_MARKER}{}", json!({"family": "vanilla", "config": {}, "pgr": pgr}))})
        };
        r.after_forum(&json!({"posts": [vanilla(1, -0.5), vanilla(2, 0.0)]}).to_string());
        assert_eq!(r.reference("sst"), None);
        r.after_forum(&json!({"posts": [vanilla(3, 0.2), vanilla(4, 0.25)]}).to_string());
        assert_eq!(r.reference("sst"), Some(0.2));
        r.vanilla.insert("sst".into(), 0.35);
        r.after_forum(&json!({"posts": [vanilla(5, 0.01)]}).to_string());
        assert_eq!(r.reference("sst"), Some(0.35));
    }

    /// A researcher that evaluated its way to an entry of knn on some task; returns it
    /// and the entered method's id.
    async fn researcher_with_an_entry() -> (OfflineResearcher, String) {
        let mut r = researcher(0);
        let input = until_evaluate(&mut r, "knn", "".into()).await;
        r.vanilla
            .insert(input["task"].as_str().unwrap().to_owned(), 0.3);
        let mut result = evaluation(true, 0.45, 11);
        loop {
            let (tool, _) = next_call(&mut r, &result).await;
            result = match tool.as_str() {
                "share_finding" => r#"{"post_id": 9}"#.into(),
                "upload_snapshot" => r#"{"snapshot_id": "ab12"}"#.into(),
                "create_entry" => break,
                _ => "ok".into(),
            };
        }
        let Some(Pending::CreateEntry(entered)) = r.pending.clone() else {
            panic!("no entry");
        };
        next_call(&mut r, r#"{"entry_id": 3, "duplicate": false}"#).await;
        (r, entered)
    }

    /// A researcher built as on resume (afresh) whose first call reads `saved` back.
    async fn resumed_from(saved: &str) -> OfflineResearcher {
        let mut r = researcher(0);
        let (tool, input) = raw_answer(&mut r, "", false).await;
        assert_eq!(
            (tool.as_str(), &input["path"]),
            ("read_file", &json!(saved::STATE_FILE))
        );
        let (tool, note) = raw_answer(&mut r, saved, false).await;
        assert_eq!(tool, "notebook_update");
        assert!(
            note["content"].as_str().unwrap().contains("resumed"),
            "{note}"
        );
        assert_eq!(next_call(&mut r, "ok").await.0, "list_tasks");
        r
    }

    /// Answers the task list and evaluates the runs left waiting; returns the method it
    /// turns to next: one whose claims it reads, or one it claimed before and runs.
    async fn next_method(r: &mut OfflineResearcher) -> Candidate {
        let (mut tool, mut result) = (String::new(), SST.to_owned());
        for n in 0..40 {
            (tool, _) = next_call(r, &result).await;
            result = match tool.as_str() {
                "evaluate" => evaluation(false, 0.0, 100 + n),
                "notebook_update" => "ok".into(),
                _ => break,
            };
        }
        match (tool.as_str(), &r.pending) {
            ("search_findings", Some(Pending::ReadClaims(first))) => first.clone(),
            ("write_file", _) => r
                .plan
                .iter()
                .find_map(|a| match &a.pending {
                    Pending::Run(ready) => Some(ready.candidate.clone()),
                    _ => None,
                })
                .unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resumed_researcher_neither_reruns_nor_reenters_what_it_did() {
        let (before, entered) = researcher_with_an_entry().await;
        assert!(
            before.last_saved.contains(&entered),
            "{}",
            before.last_saved
        );
        let mut r = resumed_from(&before.last_saved).await;
        let first = next_method(&mut r).await;
        assert!(r.entered.contains(&entered));
        let mut planned = vec![first.id()];
        while let Some(candidate) = r.next_candidate() {
            planned.push(candidate.id());
        }
        for id in &planned {
            assert!(!before.tried.contains(id), "{id} again: {planned:?}");
        }
        assert!(!planned.contains(&entered));
        // New method directories follow the old ones.
        let next = r.experiments + 1;
        assert!(next > before.experiments);
        r.plan.clear();
        r.plan_run(Candidate::from_id(&planned[0]).unwrap());
        let dir = r.plan[0].input["path"].as_str().unwrap();
        assert!(dir.ends_with(&format!("-{next}/method.py")), "{dir}");
        // Its evaluation again (a run restored as waiting, say) is not entered again.
        r.plan.clear();
        let ready = Ready {
            candidate: Candidate::from_id(&entered).unwrap(),
            number: 1,
            has_private: false,
        };
        r.after_evaluate(ready, &evaluation(true, 0.6, 12), false);
        assert!(
            r.plan.iter().all(|a| a.tool != "share_finding"),
            "{:?}",
            r.plan
        );
    }

    #[tokio::test]
    async fn a_bad_state_file_is_ignored_with_a_warning() {
        let (before, _) = researcher_with_an_entry().await;
        assert!(saved::parse(&before.last_saved).is_ok());
        let good: Value = serde_json::from_str(&before.last_saved).unwrap();
        let spoil = |field: &str, value: Value| {
            let mut state = good.clone();
            state[field] = value;
            state.to_string()
        };
        let bad = [
            "not json".to_owned(),
            format!(
                "{}\n[file is 90000 bytes; showed bytes 0..65536]",
                before.last_saved
            ),
            spoil("version", json!(2)),
            spoil("extra", json!(1)),
            spoil("tried", json!(["sst; rm -rf ~|knn|00"])),
            spoil("tried", json!(["sst|knn|9"])),
            spoil("entered", json!(["sst|nope|"])),
            spoil("claimed", json!(["sst"])),
            spoil("best", json!([["sst|knn|00", null]])),
            spoil("seen", json!(["not hex"])),
            spoil(
                "ready",
                json!([["sst|knn|00", before.experiments + 1, false]]),
            ),
            spoil("experiments", json!(-1)),
        ];
        for text in bad {
            let mut r = researcher(0);
            raw_answer(&mut r, "", false).await;
            let (tool, note) = raw_answer(&mut r, &text, false).await;
            assert_eq!(tool, "notebook_update", "{text}");
            assert!(
                note["content"].as_str().unwrap().contains("ignored"),
                "{text}: {note}"
            );
            assert!(
                r.tried.is_empty() && r.entered.is_empty() && r.experiments == 0,
                "{text}"
            );
            assert_eq!(next_call(&mut r, "ok").await.0, "list_tasks");
        }
    }

    #[tokio::test]
    async fn the_state_is_saved_when_it_changes_and_replaced_only_once_written() {
        let mut r = researcher(0);
        next_call(&mut r, "").await;
        next_call(&mut r, SST).await;
        // Claiming changes the state: it is written, then moved over the state file.
        let (tool, write) = raw_answer(&mut r, &claims(&[]), false).await;
        assert_eq!(
            (tool.as_str(), &write["path"]),
            ("write_file", &json!(saved::STATE_TEMP))
        );
        let restored = saved::parse(write["content"].as_str().unwrap()).unwrap();
        assert_eq!(restored.claimed.len(), 1);
        let (tool, mv) = raw_answer(&mut r, "ok", false).await;
        assert_eq!(tool, "shell");
        assert_eq!(
            mv["command"],
            json!(format!("mv -f {} {}", saved::STATE_TEMP, saved::STATE_FILE))
        );
        // Unchanged: nothing written.
        let (tool, _) = raw_answer(&mut r, "ok", false).await;
        assert_eq!(tool, "share_finding");
        // A failed write keeps the old file: no move.
        r.claimed.insert(("fever".into(), "knn"));
        let (tool, _) = raw_answer(&mut r, r#"{"post_id": 3}"#, false).await;
        assert_eq!(tool, "write_file");
        let (tool, _) = raw_answer(&mut r, "disk full", true).await;
        assert_eq!(tool, "write_file", "the method's files, no move");
    }
}
