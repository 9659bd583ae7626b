//! What the offline researcher keeps across restarts. A stopped job resumed (`aar
//! researcher` again, a session's `resume`) builds the researcher afresh; its first call
//! reads this file back from its workspace, so it neither re-runs what it tried nor
//! re-enters what it entered, and numbers its new method directories after the old ones.
//!
//! It writes the file with its tools like everything else, whenever its state changed:
//! `write_file` to a temporary name, then `mv` over the file, so a job killed mid-write
//! leaves the previous state whole. The workspace is the agent's to write (and its
//! methods' code runs there), so the file is untrusted input: every item is checked (task
//! names plain enough for a shell command, families and knob values from the grid), and
//! a file failing any check is ignored as a whole, with a warning.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Action, Candidate, OfflineResearcher, Pending, Ready, families, first_lines};

/// The state file, relative to the workspace.
pub(super) const STATE_FILE: &str = ".offline/state.json";
/// Where a new state is written before it replaces [`STATE_FILE`].
pub(super) const STATE_TEMP: &str = ".offline/state.json.tmp";
/// The file's format.
const VERSION: u32 = 1;
/// Most items one list may hold: far above a campaign's (a family's grid has at most 24
/// configurations, a preset a handful of tasks), far below what would cost to read.
const MAX_ITEMS: usize = 20_000;
/// The most experiments a restored counter may claim (one a minute for two years).
const MAX_EXPERIMENTS: usize = 1_000_000;
/// The largest state written whole: `read_file` answers 64 KiB at once.
pub(super) const MAX_BYTES: usize = 60_000;
/// The longest predictions hash kept (a prefix is enough to tell runs apart).
pub(super) const HASH_CHARS: usize = 16;

/// The file's contents. Methods are [`Candidate::id`]s (`task|family|grid key`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedState {
    pub version: u32,
    /// Experiments started: the next method directory's number follows.
    pub experiments: usize,
    /// Methods run (evaluated or not: a run's predictions are kept in `ready`).
    pub tried: Vec<String>,
    /// Methods entered on the leaderboard.
    pub entered: Vec<String>,
    /// Its own claims, `task|family`.
    pub claimed: Vec<String>,
    /// Its best released PGR per task, with the method.
    pub best: Vec<(String, f64)>,
    /// Vanilla's PGR per task from its own evaluations.
    pub vanilla: Vec<(String, f64)>,
    /// Predictions hashes (prefixes) already evaluated.
    pub seen: Vec<String>,
    /// Runs waiting for an evaluation: method, experiment number, private predictions.
    pub ready: Vec<(String, usize, bool)>,
}

impl SavedState {
    /// A new state at this format's version.
    pub fn new() -> SavedState {
        SavedState {
            version: VERSION,
            ..SavedState::default()
        }
    }
}

/// A state file's contents, checked.
#[derive(Debug)]
pub(super) struct Restored {
    pub experiments: usize,
    pub tried: Vec<Candidate>,
    pub entered: Vec<Candidate>,
    pub claimed: Vec<(String, &'static families::Family)>,
    pub best: Vec<(Candidate, f64)>,
    pub vanilla: Vec<(String, f64)>,
    pub seen: Vec<String>,
    pub ready: Vec<(Candidate, usize, bool)>,
}

/// Reads and checks a state file; the error says what was wrong (quoting no more than
/// a short piece of the file's text, which is anyone's).
pub(super) fn parse(text: &str) -> Result<Restored, String> {
    let state: SavedState = serde_json::from_str(text).map_err(|e| {
        let why: String = e.to_string().chars().take(120).collect();
        format!("not a state file ({why})")
    })?;
    if state.version != VERSION {
        return Err(format!(
            "format {} (this researcher writes {VERSION})",
            state.version
        ));
    }
    check_sizes(&state)?;
    let candidate = |what: &str, i: usize, id: &String| {
        Candidate::from_id(id).ok_or_else(|| format!("{what}[{i}] is not a method"))
    };
    let candidates = |what: &str, ids: &[String]| -> Result<Vec<Candidate>, String> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| candidate(what, i, id))
            .collect()
    };
    Ok(Restored {
        experiments: state.experiments,
        tried: candidates("tried", &state.tried)?,
        entered: candidates("entered", &state.entered)?,
        claimed: claims(&state.claimed)?,
        best: checked_pgrs("best", &state.best, |i, id| candidate("best", i, id))?,
        vanilla: checked_pgrs("vanilla", &state.vanilla, |i, task| {
            is_plain_name(task)
                .then(|| task.clone())
                .ok_or_else(|| format!("vanilla[{i}] is not a task name"))
        })?,
        seen: hashes(&state.seen)?,
        ready: ready(&state.ready, state.experiments, candidate)?,
    })
}

fn check_sizes(state: &SavedState) -> Result<(), String> {
    let lists = [
        state.tried.len(),
        state.entered.len(),
        state.claimed.len(),
        state.best.len(),
        state.vanilla.len(),
        state.seen.len(),
        state.ready.len(),
    ];
    if lists.iter().any(|n| *n > MAX_ITEMS) {
        return Err(format!("a list holds more than {MAX_ITEMS} items"));
    }
    if state.experiments > MAX_EXPERIMENTS {
        return Err(format!("more than {MAX_EXPERIMENTS} experiments"));
    }
    Ok(())
}

/// `task|family` pairs.
fn claims(list: &[String]) -> Result<Vec<(String, &'static families::Family)>, String> {
    list.iter()
        .enumerate()
        .map(|(i, pair)| {
            pair.split_once('|')
                .filter(|(task, _)| is_plain_name(task))
                .and_then(|(task, family)| Some((task.to_owned(), families::family(family)?)))
                .ok_or_else(|| format!("claimed[{i}] is not a task and family"))
        })
        .collect()
}

/// Items with a finite PGR, each checked by `item`.
fn checked_pgrs<T>(
    what: &str,
    list: &[(String, f64)],
    item: impl Fn(usize, &String) -> Result<T, String>,
) -> Result<Vec<(T, f64)>, String> {
    list.iter()
        .enumerate()
        .map(|(i, (key, pgr))| {
            if !pgr.is_finite() {
                return Err(format!("{what}[{i}] has no finite PGR"));
            }
            Ok((item(i, key)?, *pgr))
        })
        .collect()
}

fn hashes(list: &[String]) -> Result<Vec<String>, String> {
    let hex = |h: &String| {
        (1..=HASH_CHARS).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit())
    };
    match list.iter().position(|h| !hex(h)) {
        Some(i) => Err(format!("seen[{i}] is not a hash")),
        None => Ok(list.to_vec()),
    }
}

/// Runs waiting for an evaluation: each numbered among the experiments started.
fn ready(
    list: &[(String, usize, bool)],
    experiments: usize,
    candidate: impl Fn(&str, usize, &String) -> Result<Candidate, String>,
) -> Result<Vec<(Candidate, usize, bool)>, String> {
    list.iter()
        .enumerate()
        .map(|(i, (id, number, private))| {
            if !(1..=experiments).contains(number) {
                return Err(format!("ready[{i}] names no experiment started"));
            }
            Ok((candidate("ready", i, id)?, *number, *private))
        })
        .collect()
}

/// A task name as tasks are named (1-64 letters, digits, `_` or `-`): safe in a path
/// and a shell command.
pub(super) fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl OfflineResearcher {
    /// Its state as saved: sorted, so an unchanged state writes the same text.
    fn saved_state(&self) -> SavedState {
        let ids = |set: &std::collections::HashSet<String>| {
            // Only what reads back: a configuration off the grid (none is) is dropped.
            let mut ids: Vec<String> = set
                .iter()
                .filter(|id| Candidate::from_id(id).is_some())
                .cloned()
                .collect();
            ids.sort();
            ids
        };
        let mut state = SavedState::new();
        state.experiments = self.experiments;
        state.tried = ids(&self.tried);
        state.entered = ids(&self.entered);
        state.claimed = self
            .claimed
            .iter()
            .map(|(t, f)| format!("{t}|{f}"))
            .collect();
        state.claimed.sort();
        state.best = self.best.values().map(|(pgr, c)| (c.id(), *pgr)).collect();
        state
            .best
            .retain(|(id, _)| Candidate::from_id(id).is_some());
        state.best.sort_by(|a, b| a.0.cmp(&b.0));
        state.vanilla = self.vanilla.iter().map(|(t, p)| (t.clone(), *p)).collect();
        state.vanilla.sort_by(|a, b| a.0.cmp(&b.0));
        state.seen = self.seen.keys().cloned().collect();
        state.seen.sort();
        state.ready = (self.ready.iter())
            .filter(|r| Candidate::from_id(&r.candidate.id()).is_some())
            .map(|r| (r.candidate.id(), r.number, r.has_private))
            .collect();
        state
    }

    /// The saved state's text; without the predictions hashes if it would be too long
    /// to read back whole (they only save evaluations the server deduplicates anyway).
    pub(super) fn state_json(&self) -> Option<String> {
        let mut state = self.saved_state();
        let text = serde_json::to_string(&state).ok()?;
        if text.len() <= MAX_BYTES {
            return Some(text);
        }
        state.seen.clear();
        serde_json::to_string(&state).ok()
    }

    /// Writes the state to the workspace when it changed: to a temporary file, then over
    /// the state file (the move waits for the write to succeed).
    pub(super) fn plan_save_if_changed(&mut self) {
        let Some(text) = self.state_json() else {
            return;
        };
        if text == self.last_saved {
            return;
        }
        let command = format!("mv -f {STATE_TEMP} {STATE_FILE}");
        self.last_saved = text.clone();
        self.plan_front(vec![
            Action {
                tool: "write_file",
                input: json!({"path": STATE_TEMP, "content": text}),
                pending: Pending::SaveWrite,
            },
            Action {
                tool: "shell",
                input: json!({"command": command}),
                pending: Pending::SaveMove,
            },
        ]);
    }

    /// A failed write leaves the state file as it was: the move is dropped.
    pub(super) fn after_save_write(&mut self, result: &str, is_error: bool) {
        if !is_error {
            return;
        }
        tracing::warn!(agent = %self.name, error = %first_lines(result), "state not saved");
        if self
            .plan
            .front()
            .is_some_and(|a| matches!(a.pending, Pending::SaveMove))
        {
            self.plan.pop_front();
        }
    }

    /// Takes back what a stopped job of this researcher saved; a file that fails a check
    /// is ignored, with a warning.
    pub(super) fn after_restore(&mut self, result: &str, is_error: bool) {
        if is_error {
            // Nothing saved: a first start (or a file it cannot read, rewritten soon).
            tracing::debug!(agent = %self.name, error = %first_lines(result), "no saved state");
            return;
        }
        match parse(result) {
            Ok(restored) => {
                let summary = format!(
                    "resumed: {} experiments, {} methods tried, {} entered",
                    restored.experiments,
                    restored.tried.len(),
                    restored.entered.len()
                );
                self.restore(restored);
                self.last_saved = self.state_json().unwrap_or_default();
                self.note(summary);
            }
            Err(why) => {
                tracing::warn!(agent = %self.name, file = STATE_FILE, %why, "saved state ignored");
                self.note(format!("saved state {STATE_FILE} ignored: {why}"));
            }
        }
    }

    fn restore(&mut self, restored: Restored) {
        self.experiments = self.experiments.max(restored.experiments);
        self.forum_read_at = self.experiments;
        self.tried.extend(restored.tried.iter().map(Candidate::id));
        self.entered
            .extend(restored.entered.iter().map(Candidate::id));
        self.claimed.extend(
            restored
                .claimed
                .into_iter()
                .map(|(task, family)| (task, family.name)),
        );
        for (candidate, pgr) in restored.best {
            self.best.insert(candidate.task.clone(), (pgr, candidate));
        }
        self.vanilla.extend(restored.vanilla);
        for hash in restored.seen {
            self.seen
                .insert(hash, "an evaluation before the restart".into());
        }
        for (candidate, number, has_private) in restored.ready {
            self.ready.push_back(Ready {
                candidate,
                number,
                has_private,
            });
        }
    }
}
