//! Relays what each researcher does to the research server, for the overseer's
//! dashboard: new transcript lines (by line number, so a resumed campaign re-sends
//! nothing twice and skips nothing) and a status (notebook, spend against budget,
//! time left, workspace size). The server only stores it; the admin reads it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aar_agents::accounting::Ledger;
use serde_json::{Value, json};

use crate::campaign::Admin;

/// Lines per request (the server takes at most 1000).
const LINES_PER_REQUEST: usize = 500;
/// The notebook is capped at 64 KiB by its tool; this bounds a damaged one.
const MAX_NOTEBOOK_BYTES: u64 = 256 << 10;
/// How often a researcher's status is sent when its transcript has not grown.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Files counted for the workspace's size before giving up (a huge tree is not walked).
const MAX_WALKED_FILES: usize = 20_000;

/// A researcher to relay: its name, agent id, state directory (transcript, notebook),
/// workspace and the uid of its sandbox's processes.
#[derive(Debug)]
pub(crate) struct RelayedResearcher {
    pub(crate) name: String,
    pub(crate) agent_id: String,
    pub(crate) state_dir: PathBuf,
    pub(crate) workspace: PathBuf,
    pub(crate) uid: Option<u32>,
}

/// One researcher's relay position.
#[derive(Debug)]
struct Tracked {
    name: String,
    agent_id: String,
    state_dir: PathBuf,
    workspace: PathBuf,
    /// Transcript lines the server already holds.
    sent: usize,
    /// Byte offset in the transcript after those lines (unknown until the first tick).
    offset: Option<u64>,
    /// The uid its sandbox's commands run as, when it has one of its own.
    uid: Option<u32>,
    /// When its status was last sent.
    status_sent_at: Option<std::time::Instant>,
}

/// The relay of every researcher of a campaign.
#[derive(Debug)]
pub(crate) struct Relay {
    admin: Admin,
    ledger: Ledger,
    minutes: f64,
    tracked: Vec<Tracked>,
    /// Where each researcher runs, by name, for executors that place it elsewhere
    /// (`slurm job 12 RUNNING on node3`).
    runs_on: BTreeMap<String, String>,
}

impl Relay {
    /// Starts where the server's records end.
    pub(crate) async fn resume(
        admin: &Admin,
        ledger: &Ledger,
        minutes: f64,
        researchers: Vec<RelayedResearcher>,
    ) -> Relay {
        let stored: BTreeMap<String, usize> = match admin.get("/api/admin/researchers").await {
            Ok(body) => body["researchers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    Some((
                        r["agent_id"].as_str()?.to_owned(),
                        r["transcript_lines"].as_u64()? as usize,
                    ))
                })
                .collect(),
            Err(err) => {
                tracing::warn!(error = %err, "dashboard relay: cannot read what the server holds; starting from the top");
                BTreeMap::new()
            }
        };
        let tracked = researchers
            .into_iter()
            .map(|r| Tracked {
                sent: stored.get(&r.agent_id).copied().unwrap_or(0),
                offset: None,
                name: r.name,
                agent_id: r.agent_id,
                state_dir: r.state_dir,
                workspace: r.workspace,
                uid: r.uid,
                status_sent_at: None,
            })
            .collect();
        Relay {
            admin: admin.clone(),
            ledger: ledger.clone(),
            minutes,
            tracked,
            runs_on: BTreeMap::new(),
        }
    }

    /// Where the researchers run now (sent with their next status).
    pub(crate) fn set_placements(&mut self, placements: &[crate::executor::Placement]) {
        self.runs_on = placements
            .iter()
            .filter(|p| p.job.is_some())
            .map(|p| (p.researcher.clone(), p.describe()))
            .collect();
    }

    /// Sends every researcher's new lines and status. A failure is logged and retried
    /// on the next tick: the dashboard lags, the campaign goes on.
    pub(crate) async fn tick(&mut self) {
        for index in 0..self.tracked.len() {
            if let Err(err) = self.relay_one(index).await {
                let name = &self.tracked[index].name;
                tracing::warn!(%name, error = %err, "dashboard relay failed; retrying next tick");
            }
        }
    }

    /// A last tick that sends every researcher's status whether due or not.
    pub(crate) async fn flush(&mut self) {
        for tracked in &mut self.tracked {
            tracked.status_sent_at = None;
        }
        self.tick().await;
    }

    async fn relay_one(&mut self, index: usize) -> crate::error::Result<()> {
        let tracked = &self.tracked[index];
        let path = tracked.state_dir.join("transcript.jsonl");
        let (lines, offset) = new_lines(&path, tracked.offset, tracked.sent).await;
        // Each relay wakes every open live page: an idle researcher's status goes out
        // only every STATUS_EVERY.
        let status_due = tracked
            .status_sent_at
            .is_none_or(|at| at.elapsed() >= STATUS_EVERY);
        if lines.is_empty() && !status_due {
            return Ok(());
        }
        let status = self.status(tracked).await;
        self.tracked[index].status_sent_at = Some(std::time::Instant::now());
        let tracked = &self.tracked[index];
        let agent_id = tracked.agent_id.clone();
        let mut sent = tracked.sent;
        let chunks: Vec<&[Value]> = if lines.is_empty() {
            vec![&[]]
        } else {
            lines.chunks(LINES_PER_REQUEST).collect()
        };
        for chunk in chunks {
            let body = json!({ "first_seq": sent, "lines": chunk, "status": status });
            let posted = self
                .admin
                .post(
                    &format!("/api/admin/researchers/{agent_id}/activity"),
                    &body,
                )
                .await;
            if let Err(err) = posted {
                // Part of the lines may be stored: find the offset again from `sent`.
                self.tracked[index].offset = None;
                return Err(err);
            }
            sent += chunk.len();
            self.tracked[index].sent = sent;
        }
        self.tracked[index].offset = Some(offset);
        Ok(())
    }

    async fn status(&self, tracked: &Tracked) -> Value {
        let totals = self.ledger.agent_totals(&tracked.name);
        let budget = self.ledger.budgets().per_agent;
        let left_ms = (self.minutes * 60_000.0 - totals.active_ms as f64).max(0.0);
        let notebook = read_capped(&tracked.state_dir.join("notebook.md")).await;
        let workspace = tracked.workspace.clone();
        let uid = tracked.uid;
        let (workspace_bytes, usage) = tokio::task::spawn_blocking(move || {
            (
                tree_size(&workspace),
                uid.map_or(Value::Null, sandbox_usage),
            )
        })
        .await
        .unwrap_or((None, Value::Null));
        json!({
            "notebook": notebook,
            "spend": {
                "dollars": totals.dollars(),
                "agent_seconds": totals.active_ms as f64 / 1000.0,
                "tool_calls": totals.tool_calls,
                "llm_calls": totals.llm_calls,
            },
            "budget": {
                "dollars": budget.dollars,
                "agent_seconds": budget.wall_time.map(|t| t.as_secs_f64()),
            },
            "campaign": { "ends_at_ms": aar_store::now_millis() + left_ms as i64 },
            "sandbox": {
                "workspace_bytes": workspace_bytes,
                "now": usage,
                "runs_on": self.runs_on.get(&tracked.name),
            },
        })
    }
}

/// Complete lines of a transcript after byte `offset` (a line still being written has
/// no newline yet and waits for the next tick), and the offset after them. When
/// `offset` is unknown (a resumed campaign), it is found by skipping `skip` lines. An
/// unreadable line is relayed as such, so line numbers stay those of the file.
async fn new_lines(path: &Path, offset: Option<u64>, skip: usize) -> (Vec<Value>, u64) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let start = offset.unwrap_or(0);
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return (Vec::new(), start);
    };
    let mut bytes = Vec::new();
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err()
        || file.read_to_end(&mut bytes).await.is_err()
    {
        return (Vec::new(), start);
    }
    let complete = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..=end]);
    let skip = if offset.is_some() { 0 } else { skip };
    let lines = String::from_utf8_lossy(complete)
        .lines()
        .skip(skip)
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({ "ts_ms": 0, "kind": "unreadable", "text": line }))
        })
        .collect();
    (lines, start + complete.len() as u64)
}

async fn read_capped(path: &Path) -> String {
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.len() <= MAX_NOTEBOOK_BYTES => {
            tokio::fs::read_to_string(path).await.unwrap_or_default()
        }
        Ok(_) => "(the notebook is larger than the dashboard shows)".to_owned(),
        Err(_) => String::new(),
    }
}

/// What the processes of a sandbox's own uid use now: how many, resident memory, CPU
/// seconds so far (from `/proc`; `/proc/<pid>/stat` counts in USER_HZ, 100 on Linux).
fn sandbox_usage(uid: u32) -> Value {
    const USER_HZ: f64 = 100.0;
    let (mut processes, mut rss_kib, mut cpu_ticks) = (0_u64, 0_u64, 0_u64);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Value::Null;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("Uid:") != Some(u64::from(uid)) {
            continue;
        }
        processes += 1;
        rss_kib += field("VmRSS:").unwrap_or(0);
        // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
        if let Ok(stat) = std::fs::read_to_string(path.join("stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            for index in [11, 12] {
                cpu_ticks += fields
                    .get(index)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    json!({
        "processes": processes,
        "resident_bytes": rss_kib * 1024,
        "cpu_seconds_of_running_processes": cpu_ticks as f64 / USER_HZ,
    })
}

/// Total size of the regular files under `root`, without following links; `None` when
/// the tree has more than [`MAX_WALKED_FILES`] entries.
fn tree_size(root: &Path) -> Option<u64> {
    let mut total = 0;
    let mut seen = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_WALKED_FILES {
                return None;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
    }
    Some(total)
}
