//! The campaign report: per task the fixed baselines, vanilla transfer and the
//! verified leaderboard entries ranked by held-out PGR (private test, transfer set)
//! with the probes' flags beside them; PGR over time per researcher; findings;
//! spending. Written as `report.json`, `report.md`, `report.html` (`report_html`) and
//! `pgr.png`, read only from what the server (its verifier's runs) and the ledger
//! recorded. Agent-written text goes through `aar_core::text::markdown_cell` before it
//! reaches Markdown.

use std::collections::BTreeMap;
use std::path::Path;

use aar_agents::accounting::Ledger;
use aar_core::metrics::FixedBaselines;
use aar_core::text::markdown_cell;
use aar_server::scores::{ComparisonView, PgrView};
use aar_testbed::BaselineTable;
use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::campaign::{Admin, CampaignConfig};
use crate::error::{CampaignError, Result};

/// PGR of `accuracy` against W and S (aar-core's definition); `None` when S does not beat W.
fn pgr(accuracy: f64, weak: f64, ceiling: f64) -> Option<f64> {
    FixedBaselines::from_seed_accuracies(&[weak], &[ceiling])
        .ok()?
        .pgr(accuracy)
        .ok()
}

/// W and S of a task on a split, from the testbed's table.
fn baselines(table: &BaselineTable, task: &str, split: &str) -> Option<(f64, f64)> {
    let row = table.tasks.iter().find(|t| t.task == task)?;
    row.baseline(split).map(|(w, s)| (w.mean, s.mean))
}

/// One evaluation as the server recorded it, with its PGR on each test.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredEvaluation {
    /// Researcher name.
    pub researcher: String,
    /// Task.
    pub task: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// PGR on the public test.
    pub public_pgr: Option<f64>,
    /// PGR on the private test (against the private test's own W and S).
    pub private_pgr: Option<f64>,
}

async fn scored_evaluations(
    admin: &Admin,
    agent_ids: &BTreeMap<String, String>,
    table: &BaselineTable,
) -> Result<Vec<ScoredEvaluation>> {
    let answer = admin.get("/api/admin/evaluations?limit=1000").await?;
    let mut out = Vec::new();
    for row in answer["evaluations"].as_array().into_iter().flatten() {
        let (Some(agent), Some(task)) = (row["agent_id"].as_str(), row["task"].as_str()) else {
            continue;
        };
        let researcher = agent_ids
            .get(agent)
            .cloned()
            .unwrap_or_else(|| agent.to_owned());
        let on = |field: &str, split: &str| {
            let accuracy = row[field].as_f64()?;
            let (w, s) = baselines(table, task, split)?;
            pgr(accuracy, w, s)
        };
        out.push(ScoredEvaluation {
            researcher,
            task: task.to_owned(),
            created_at: row["created_at"].as_i64().unwrap_or(0),
            public_pgr: on("public_accuracy", "test"),
            private_pgr: on("private_accuracy", "test_private"),
        });
    }
    out.sort_by_key(|e| e.created_at);
    Ok(out)
}

/// Each researcher's best public-test PGR so far on each task (PGRs of different tasks
/// are not comparable, so there is no best across them).
pub(crate) async fn best_pgr_by_agent(
    admin: &Admin,
    agent_ids: &BTreeMap<String, String>,
    table: &BaselineTable,
) -> Result<BTreeMap<String, BTreeMap<String, f64>>> {
    let mut best: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for e in scored_evaluations(admin, agent_ids, table).await? {
        if let Some(p) = e.public_pgr {
            let task = best.entry(e.researcher.clone()).or_default();
            let slot = task.entry(e.task.clone()).or_insert(p);
            *slot = slot.max(p);
        }
    }
    Ok(best)
}

/// A verified leaderboard entry with its scores on every split and the probes' flags.
#[derive(Debug, Clone, Serialize)]
pub struct EntryRow {
    /// Entry id.
    pub entry_id: i64,
    /// Researcher.
    pub researcher: String,
    /// The method's name (from its manifest, or as declared).
    pub method: String,
    /// The snapshot the verifier ran.
    pub snapshot_id: Option<String>,
    /// Declared seeds.
    pub seeds: Vec<i64>,
    /// Where it is on the board: ranked, pending, failed, flagged or disqualified.
    pub section: String,
    /// Review state: ok, flagged, approved, disqualified.
    pub status: String,
    /// The reviewer's reason, when reviewed.
    pub status_reason: Option<String>,
    /// Public-test PGR over the declared seeds (verifier runs); `se` includes the
    /// test's sampling noise where the server had per-row outcomes (`se_test` set).
    pub public_pgr: Option<PgrView>,
    /// Private-test PGR against the private test's own W and S.
    pub private_pgr: Option<PgrView>,
    /// Transfer-set PGR against the transfer set's own W and S.
    pub transfer_pgr: Option<PgrView>,
    /// Private-test comparisons (against vanilla, against the entry ranked above).
    pub private_vs: Comparisons,
    /// Transfer-set comparisons.
    pub transfer_vs: Comparisons,
    /// Probes' flags: (probe, summary).
    pub flags: Vec<(String, String)>,
    /// Seconds the verification took.
    pub verification_seconds: Option<f64>,
    /// Why the verification failed.
    pub verification_error: Option<String>,
}

/// An entry's PGR on one split against vanilla and against the entry ranked just
/// above it, as the server computed them (paired bootstrap over the split's rows).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparisons {
    /// `pgr(entry) - pgr(vanilla)`.
    pub vs_vanilla: Option<ComparisonView>,
    /// `pgr(entry) - pgr(entry above)`; ranked entries but the first.
    pub vs_above: Option<ComparisonView>,
    /// `pgr(entry) - pgr(built-in)` for every other built-in method of the testbed.
    pub vs_builtins: Vec<ComparisonView>,
}

impl Comparisons {
    fn from_split(split: &Value) -> Comparisons {
        let view = |field: &str| serde_json::from_value(split[field].clone()).ok();
        Comparisons {
            vs_vanilla: view("vs_vanilla"),
            vs_above: view("vs_above"),
            vs_builtins: serde_json::from_value(split["vs_builtins"].clone()).unwrap_or_default(),
        }
    }
}

impl EntryRow {
    /// Whether the entry is within noise of the one ranked above it: compared on at
    /// least one held-out split and significantly different on none. `None` when it
    /// was not compared (the first entry, or no per-row outcomes).
    pub fn within_noise_of_above(&self) -> Option<bool> {
        let compared: Vec<&ComparisonView> = [&self.private_vs, &self.transfer_vs]
            .into_iter()
            .filter_map(|c| c.vs_above.as_ref())
            .collect();
        (!compared.is_empty()).then(|| compared.iter().all(|c| !c.difference.significant))
    }

    /// The entry ranked above, as the comparison names it (`entry 3`).
    fn above(&self) -> Option<&str> {
        [&self.private_vs, &self.transfer_vs]
            .into_iter()
            .find_map(|c| c.vs_above.as_ref())
            .map(|c| c.against.as_str())
    }

    /// Where the entry is on the board, with the reviewer's verdict and reason when
    /// a person reviewed it.
    pub(crate) fn board(&self) -> String {
        match (&self.status_reason, self.section.as_str()) {
            (Some(reason), "disqualified" | "ranked") if self.status != "ok" => {
                format!("{} ({}: {reason})", self.section, self.status)
            }
            _ => self.section.clone(),
        }
    }

    fn from_board(row: &Value, section: &str, agent_ids: &BTreeMap<String, String>) -> EntryRow {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let admin = &row["admin"];
        let split_pgr = |split: &str| {
            serde_json::from_value::<PgrView>(admin["splits"][split]["pgr"].clone()).ok()
        };
        let agent = row["agent_id"].as_str().unwrap_or("");
        EntryRow {
            entry_id: row["entry_id"].as_i64().unwrap_or(0),
            researcher: agent_ids.get(agent).cloned().unwrap_or(agent.to_owned()),
            method: text(&row["method"]).unwrap_or_default(),
            snapshot_id: text(&row["snapshot_id"]),
            seeds: serde_json::from_value(row["seeds"].clone()).unwrap_or_default(),
            section: section.to_owned(),
            status: text(&row["status"]).unwrap_or_default(),
            status_reason: text(&row["status_reason"]),
            public_pgr: split_pgr("test"),
            private_pgr: split_pgr("test_private"),
            transfer_pgr: split_pgr("transfer"),
            private_vs: Comparisons::from_split(&admin["splits"]["test_private"]),
            transfer_vs: Comparisons::from_split(&admin["splits"]["transfer"]),
            flags: admin["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        text(&f["probe"]).unwrap_or_default(),
                        text(&f["summary"]).unwrap_or_default(),
                    )
                })
                .collect(),
            verification_seconds: admin["verification_seconds"].as_f64(),
            verification_error: text(&row["verification_error"]),
        }
    }
}

/// One task's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// Task.
    pub task: String,
    /// W and S on the public test.
    pub public: Option<(f64, f64)>,
    /// W and S on the private test.
    pub private: Option<(f64, f64)>,
    /// W and S on the held-out transfer set.
    pub transfer: Option<(f64, f64)>,
    /// Vanilla transfer PGR (testbed, over its seeds) on the public test, the private
    /// test and the transfer set.
    pub vanilla_pgr: (Option<f64>, Option<f64>, Option<f64>),
    /// The testbed's built-in methods (vanilla among them): PGR on every split.
    pub builtins: Vec<BuiltinRow>,
    /// Entries: ranked ones by held-out PGR first, then pending, failed, flagged and
    /// disqualified ones.
    pub entries: Vec<EntryRow>,
}

/// A built-in method's PGR on each split, from the testbed's runs: `se` over its seeds
/// and the test's rows where the result files keep per-row outcomes.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltinRow {
    /// The method's name.
    pub method: String,
    /// On the public test.
    pub public: Option<PgrView>,
    /// On the private test.
    pub private: Option<PgrView>,
    /// On the transfer set.
    pub transfer: Option<PgrView>,
}

impl BuiltinRow {
    fn of(method: &aar_testbed::report::MethodRow) -> Self {
        let view = |split: &str| {
            let score = method.split(split)?;
            score
                .estimate
                .as_ref()
                .map(PgrView::from_estimate)
                .or_else(|| score.pgr.map(PgrView::seeds_only))
        };
        BuiltinRow {
            method: method.method.clone(),
            public: view("test"),
            private: view("test_private"),
            transfer: view("transfer"),
        }
    }
}

/// What the report holds.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Preset.
    pub preset: String,
    /// Researchers and their policy.
    pub researchers: Vec<ResearcherReport>,
    /// Per task.
    pub tasks: Vec<TaskReport>,
    /// Every evaluation, for the plot.
    pub evaluations: Vec<ScoredEvaluation>,
    /// Findings: (researcher, kind, task, title).
    pub findings: Vec<(String, String, String, String)>,
    /// Where each researcher ran (its jobs, for executors that submit them).
    pub placements: Vec<crate::executor::Placement>,
}

/// One researcher's totals.
#[derive(Debug, Clone, Serialize)]
pub struct ResearcherReport {
    /// Name.
    pub name: String,
    /// Tool calls.
    pub tool_calls: u64,
    /// LLM calls.
    pub llm_calls: u64,
    /// Dollars spent.
    pub dollars: f64,
    /// Hours active.
    pub hours: f64,
}

impl Report {
    pub(crate) async fn gather(
        admin: &Admin,
        ledger: &Ledger,
        agent_ids: &BTreeMap<String, String>,
        table: &BaselineTable,
        config: &CampaignConfig,
    ) -> Result<Report> {
        let evaluations = scored_evaluations(admin, agent_ids, table).await?;
        let mut tasks = Vec::new();
        for task in &table.tasks {
            let method_pgr = |name: &str, split: &str| {
                task.method(name)
                    .and_then(|m| m.split(split))
                    .and_then(|s| s.pgr)
                    .map(|p| p.mean)
            };
            let board = admin
                .get(&format!("/api/admin/leaderboard?task={}", task.task))
                .await?;
            let mut entries = Vec::new();
            for section in ["ranked", "pending", "failed", "flagged", "disqualified"] {
                for row in board[section].as_array().into_iter().flatten() {
                    entries.push(EntryRow::from_board(row, section, agent_ids));
                }
            }
            tasks.push(TaskReport {
                task: task.task.clone(),
                public: baselines(table, &task.task, "test"),
                private: baselines(table, &task.task, "test_private"),
                transfer: baselines(table, &task.task, "transfer"),
                vanilla_pgr: (
                    method_pgr("vanilla_w2s", "test"),
                    method_pgr("vanilla_w2s", "test_private"),
                    method_pgr("vanilla_w2s", "transfer"),
                ),
                builtins: task.methods.iter().map(BuiltinRow::of).collect(),
                entries,
            });
        }
        let posts = admin.get("/api/posts?sort=top&limit=100").await?;
        let findings = posts["posts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
                (
                    text(&p["author"]["agent_name"]),
                    text(&p["kind"]),
                    text(&p["task"]),
                    text(&p["title"]),
                )
            })
            .collect();
        let researchers = agent_ids
            .values()
            .map(|name| {
                let totals = ledger.agent_totals(name);
                ResearcherReport {
                    name: name.clone(),
                    tool_calls: totals.tool_calls,
                    llm_calls: totals.llm_calls,
                    dollars: totals.dollars(),
                    hours: totals.active_ms as f64 / 3.6e6,
                }
            })
            .collect();
        Ok(Report {
            preset: config.preset.clone(),
            researchers,
            tasks,
            evaluations,
            findings,
            placements: Vec::new(),
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let mut out = format!("# aar campaign report (preset `{}`)\n\n", self.preset);
        for task in &self.tasks {
            out += &format!("## {}\n\n", markdown_cell(&task.task));
            let wsp = |b: Option<(f64, f64)>| {
                b.map_or_else(|| "-".into(), |(w, s)| format!("W {w:.3}, S {s:.3}"))
            };
            out += &format!(
                "Public test: {}; private test: {}; transfer set: {}. Vanilla transfer PGR: \
                 public {}, private {}, transfer {}.\n\n",
                wsp(task.public),
                wsp(task.private),
                wsp(task.transfer),
                f(task.vanilla_pgr.0),
                f(task.vanilla_pgr.1),
                f(task.vanilla_pgr.2)
            );
            out += &entries_markdown(&task.entries);
            out += &builtins_markdown(&task.builtins);
        }
        out += "## Researchers\n\n| researcher | tool calls | LLM calls | dollars | hours | dollars per agent-hour |\n|---|---|---|---|---|---|\n";
        for r in &self.researchers {
            let per_hour = if r.hours > 0.0 {
                r.dollars / r.hours
            } else {
                0.0
            };
            out += &format!(
                "| {} | {} | {} | {:.4} | {:.2} | {:.4} |\n",
                markdown_cell(&r.name),
                r.tool_calls,
                r.llm_calls,
                r.dollars,
                r.hours,
                per_hour
            );
        }
        out += &placements_markdown(&self.placements);
        out += "\n## Findings\n\n";
        for (who, kind, task, title) in &self.findings {
            out += &format!(
                "- [{}] {}: {} ({})\n",
                markdown_cell(kind),
                markdown_cell(task),
                markdown_cell(title),
                markdown_cell(who)
            );
        }
        out += "\n`pgr.png`: best public-test PGR so far per researcher over time, one panel per task (one colour per researcher, in the order of the table above).\n";
        out
    }
}

/// `pgr +- se` (the total error), or `-`.
pub(crate) fn pgr_text(value: Option<PgrView>) -> String {
    match value {
        Some(PgrView {
            mean, se: Some(se), ..
        }) => format!("{mean:.3} +- {se:.3}"),
        Some(PgrView { mean, .. }) => format!("{mean:.3}"),
        None => "-".to_owned(),
    }
}

/// Private and transfer comparisons in one cell: `private: +0.120 +- 0.040,
/// significant; transfer: ...`, or `-`.
pub(crate) fn comparison_text(
    private: Option<&ComparisonView>,
    transfer: Option<&ComparisonView>,
) -> String {
    let parts: Vec<String> = [("private", private), ("transfer", transfer)]
        .into_iter()
        .filter_map(|(split, c)| Some(format!("{split}: {}", c?.describe)))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}

/// What the report says of neighbours in the ranking: which are within noise of the
/// entry ranked above them.
pub(crate) fn neighbours_text(entries: &[EntryRow]) -> String {
    let ranked: Vec<&EntryRow> = entries.iter().filter(|e| e.section == "ranked").collect();
    let compared: Vec<(&EntryRow, bool)> = ranked
        .iter()
        .filter_map(|e| Some((*e, e.within_noise_of_above()?)))
        .collect();
    if ranked.len() < 2 {
        return String::new();
    }
    if compared.is_empty() {
        return "Neighbours in the ranking were not compared (no per-row outcomes).".to_owned();
    }
    let within: Vec<String> = compared
        .iter()
        .filter(|(_, within)| *within)
        .map(|(e, _)| {
            format!(
                "entry {} and the {} above it",
                e.entry_id,
                e.above().unwrap_or("entry")
            )
        })
        .collect();
    if within.is_empty() {
        "Every ranked entry differs significantly from the one ranked above it on a held-out split."
            .to_owned()
    } else {
        format!(
            "Indistinguishable neighbours (no held-out split differs significantly): {}; their order is within noise.",
            within.join("; ")
        )
    }
}

/// An entry against every built-in method on one split, paired over the split's rows:
/// `private: above 3 of 4 built-ins (1 significantly); below ue_zeroshot: -0.290 +-
/// 0.080, significant`; `None` when it was compared with none.
fn builtins_split_text(split: &str, comparisons: &[ComparisonView]) -> Option<String> {
    if comparisons.is_empty() {
        return None;
    }
    let above = |c: &&ComparisonView| c.difference.difference > 0.0;
    let significantly = comparisons
        .iter()
        .filter(above)
        .filter(|c| c.difference.significant)
        .count();
    let mut text = format!(
        "{split}: above {} of {} built-ins ({significantly} significantly)",
        comparisons.iter().filter(above).count(),
        comparisons.len()
    );
    for below in comparisons.iter().filter(|c| !above(c)) {
        text += &format!("; below {}: {}", below.against, below.describe);
    }
    Some(text)
}

/// Private and transfer comparisons with the built-ins in one cell, or `-`.
pub(crate) fn builtins_text(private: &Comparisons, transfer: &Comparisons) -> String {
    let parts: Vec<String> = [
        builtins_split_text("private", &private.vs_builtins),
        builtins_split_text("transfer", &transfer.vs_builtins),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(". ")
    }
}

/// The testbed's built-in methods with their PGR on every split.
fn builtins_markdown(builtins: &[BuiltinRow]) -> String {
    if builtins.is_empty() {
        return "\n".to_owned();
    }
    let mut out = "\nBuilt-in methods (the testbed's runs; PGR +- SE over their seeds and the \
                   test's rows):\n\n| built-in | PGR public | PGR private | PGR transfer |\n\
                   |---|---|---|---|\n"
        .to_owned();
    for b in builtins {
        out += &format!(
            "| {} | {} | {} | {} |\n",
            markdown_cell(&b.method),
            pgr_text(b.public),
            pgr_text(b.private),
            pgr_text(b.transfer)
        );
    }
    out + "\n"
}

/// One task's entries table with comparisons, and the neighbours' statement.
fn entries_markdown(entries: &[EntryRow]) -> String {
    let mut out = "Ranked by held-out PGR (mean of private and transfer), from the verifier's runs; \
                   PGR +- SE over the declared seeds and the test's rows (paired bootstrap), \
                   differences against vanilla, every other built-in method and the entry ranked \
                   just above with their error (significant: beyond 1.96 SE); flags are the probes' findings, for a person to judge.\n\n"
        .to_owned();
    out += "| entry | researcher | method | snapshot | seeds | board | PGR public | PGR private | PGR transfer | vs vanilla | vs built-ins | vs entry above | flags | verified in |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for e in entries {
        let flags = e
            .flags
            .iter()
            .map(|(probe, summary)| format!("{probe}: {summary}"))
            .collect::<Vec<_>>()
            .join("; ");
        out += &format!(
            "| {} | {} | {} | {} | {:?} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            e.entry_id,
            markdown_cell(&e.researcher),
            markdown_cell(&e.method),
            markdown_cell(e.snapshot_id.as_deref().unwrap_or("-")),
            e.seeds,
            markdown_cell(&e.board()),
            pgr_text(e.public_pgr),
            pgr_text(e.private_pgr),
            pgr_text(e.transfer_pgr),
            comparison_text(
                e.private_vs.vs_vanilla.as_ref(),
                e.transfer_vs.vs_vanilla.as_ref()
            ),
            markdown_cell(&builtins_text(&e.private_vs, &e.transfer_vs)),
            comparison_text(
                e.private_vs.vs_above.as_ref(),
                e.transfer_vs.vs_above.as_ref()
            ),
            if flags.is_empty() {
                "-".to_owned()
            } else {
                markdown_cell(&flags)
            },
            e.verification_seconds
                .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
        );
    }
    let neighbours = neighbours_text(entries);
    if !neighbours.is_empty() {
        out += &format!("\n{neighbours}\n");
    }
    out
}

/// "Where researchers ran": one row per researcher with its jobs, when they ran as jobs.
fn placements_markdown(placements: &[crate::executor::Placement]) -> String {
    if placements.iter().all(|p| p.jobs.is_empty()) {
        return String::new();
    }
    let mut out = "\n## Where researchers ran\n\n| researcher | executor | jobs | last node | last state |\n|---|---|---|---|---|\n".to_owned();
    for p in placements {
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            markdown_cell(&p.researcher),
            markdown_cell(&p.executor),
            markdown_cell(&p.jobs.join(", ")),
            markdown_cell(p.node.as_deref().unwrap_or("-")),
            markdown_cell(&p.state),
        );
    }
    out
}

/// Writes `report.json`, `report.md`, `report.html` and `pgr.png` into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(CampaignError::io(dir))?;
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| CampaignError::Setup(e.to_string()))?;
    std::fs::write(dir.join("report.json"), json).map_err(CampaignError::io(dir))?;
    std::fs::write(dir.join("report.md"), report.markdown()).map_err(CampaignError::io(dir))?;
    std::fs::write(dir.join("report.html"), crate::report_html::html(report))
        .map_err(CampaignError::io(dir))?;
    plot(report, &dir.join("pgr.png"))
}

/// DejaVu Sans from Debian's `fonts-dejavu-core` (installed by `scripts/setup.sh`).
const PLOT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the plot font once; false when it cannot be read (the plot then has no text).
pub(crate) fn plot_font_registered() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let Ok(bytes) = std::fs::read(PLOT_FONT) else {
            tracing::warn!("{PLOT_FONT} is missing: the PGR plot has no axis labels or legend");
            return false;
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Best-so-far public PGR per researcher over time, one panel per task (PGRs of
/// different tasks are not comparable), with axes and a legend when the font is there.
fn plot(report: &Report, path: &Path) -> Result<()> {
    let start = report.evaluations.first().map_or(0, |e| e.created_at);
    let end = report
        .evaluations
        .last()
        .map_or(1, |e| e.created_at)
        .max(start + 1);
    let minutes = (end - start) as f64 / 60_000.0;
    let tasks: Vec<&str> = report.tasks.iter().map(|t| t.task.as_str()).collect();
    let height = 120 + 300 * tasks.len().max(1) as u32;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((tasks.len().max(1), 1));
        for (panel, task) in panels.iter().zip(&tasks) {
            plot_task(report, task, panel, start, minutes)?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| CampaignError::Setup(format!("plot {}: {e}", path.display())))
}

type Panel<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// One task's panel of [`plot`].
fn plot_task(
    report: &Report,
    task: &str,
    panel: &Panel<'_>,
    start: i64,
    minutes: f64,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let text = plot_font_registered();
    let mut builder = ChartBuilder::on(panel);
    builder.margin(20);
    if text {
        // Agent-chosen task names never reach the image: tasks come from the preset.
        let caption = format!("{task}: best public-test PGR so far, per researcher");
        builder
            .caption(caption, ("sans-serif", 18))
            .x_label_area_size(40)
            .y_label_area_size(50);
    }
    let mut chart = builder.build_cartesian_2d(0f64..minutes, -0.5f64..1.5f64)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("minutes since the first evaluation")
            .y_desc("PGR (0 = weak, 1 = ceiling)")
            .label_style(("sans-serif", 13))
            .draw()?;
    }
    // Reference lines at PGR 0 (the weak teacher) and 1 (the ceiling).
    for level in [0.0, 1.0] {
        chart.draw_series(LineSeries::new(
            [(0.0, level), (minutes, level)],
            BLACK.mix(0.3),
        ))?;
    }
    for (index, researcher) in report.researchers.iter().enumerate() {
        let colour = Palette99::pick(index);
        let mut best = f64::NEG_INFINITY;
        let points: Vec<(f64, f64)> = report
            .evaluations
            .iter()
            .filter(|e| e.researcher == researcher.name && e.task == task)
            .filter_map(|e| {
                let p = e.public_pgr?;
                best = best.max(p);
                Some((
                    (e.created_at - start) as f64 / 60_000.0,
                    best.clamp(-0.5, 1.5),
                ))
            })
            .collect();
        let series = chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
        if text {
            series
                .label(researcher.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgr_is_aar_cores() {
        assert_eq!(pgr(0.7, 0.6, 0.8).map(|p| (p * 1e9).round()), Some(5e8));
        assert_eq!(pgr(0.7, 0.8, 0.8), None);
    }

    /// Cells of a Markdown table row: split on `|` not preceded by a backslash.
    fn cells(line: &str) -> usize {
        let mut count = 0;
        let mut escaped = false;
        for c in line.chars() {
            match c {
                '\\' if !escaped => escaped = true,
                '|' if !escaped => count += 1,
                _ => escaped = false,
            }
        }
        count
    }

    /// Per-row outcomes right on the rows `right` says, on a split of 2,000 rows.
    fn rows(right: impl Fn(usize) -> bool) -> Vec<aar_core::noise::CorrectRows> {
        vec![aar_core::noise::CorrectRows::new(
            (0..2000).map(right).collect(),
        )]
    }

    /// An admin leaderboard row as the server answers it, private test only: PGR and
    /// comparisons computed by `aar_core::noise` from `rows`.
    fn board_row(
        id: i64,
        method: &[aar_core::noise::CorrectRows],
        above: Option<(i64, &[aar_core::noise::CorrectRows])>,
    ) -> Value {
        use aar_core::noise::{PgrRuns, pgr_difference, pgr_estimate};
        let weak = rows(|i| i < 1000);
        let ceiling = rows(|i| i < 1400);
        let vanilla = rows(|i| i < 1100);
        let runs = PgrRuns {
            weak: &weak,
            ceiling: &ceiling,
        };
        let estimate = pgr_estimate(&runs, method, 1000, 1).unwrap();
        let vs_vanilla = pgr_difference(&runs, method, &vanilla, 1000, 2).unwrap();
        let vs_above = above.map(|(other, rows)| {
            let d = pgr_difference(&runs, method, rows, 1000, 3).unwrap();
            ComparisonView::new(format!("entry {other}"), d)
        });
        // Two built-ins: `zeroshot` right on 1,290 rows (PGR 0.725), `logconf` on 1,050.
        let vs_builtins: Vec<ComparisonView> = [("zeroshot", 1290), ("logconf", 1050)]
            .into_iter()
            .map(|(name, right)| {
                let d = pgr_difference(&runs, method, &rows(|i| i < right), 1000, 4).unwrap();
                ComparisonView::new(name.into(), d)
            })
            .collect();
        serde_json::json!({
            "entry_id": id, "agent_id": "a", "method": format!("m{id}"), "seeds": [1],
            "status": "ok",
            "admin": { "flags": [], "splits": { "test_private": {
                "pgr": PgrView::from_estimate(&estimate),
                "vs_vanilla": ComparisonView::new("vanilla".into(), vs_vanilla),
                "vs_above": vs_above,
                "vs_builtins": vs_builtins,
            } } },
        })
    }

    #[test]
    fn neighbours_within_noise_are_told_apart_from_a_clearly_better_entry() {
        // Weak right on 1,000 of 2,000 rows, ceiling on 1,400 (gap 0.2), vanilla 1,100
        // (PGR 0.25). Entry 1 is right on 1,310 rows (PGR 0.775); entry 2 on 1,300
        // (0.75), disagreeing with entry 1 on 200 rows: 0.025 apart with a paired error
        // of about sqrt(200 / 2000) / sqrt(2000) / 0.2 = 0.035, within noise. Entry 3
        // is vanilla: 0.5 below entry 2, far beyond it.
        let first = rows(|i| i < 1205 || (1400..1505).contains(&i));
        let second = rows(|i| i < 1300);
        let third = rows(|i| i < 1100);
        let board = [
            board_row(1, &first, None),
            board_row(2, &second, Some((1, &first))),
            board_row(3, &third, Some((2, &second))),
        ];
        let ids = BTreeMap::new();
        let zeroshot_private = PgrView::seeds_only(aar_core::metrics::MeanSe {
            mean: 0.725,
            se: Some(0.1),
            n: 5,
        });
        let entries: Vec<EntryRow> = board
            .iter()
            .map(|row| EntryRow::from_board(row, "ranked", &ids))
            .collect();
        assert_eq!(entries[1].within_noise_of_above(), Some(true));
        assert_eq!(entries[2].within_noise_of_above(), Some(false));
        let report = Report {
            preset: "tiny".into(),
            placements: Vec::new(),
            researchers: Vec::new(),
            tasks: vec![TaskReport {
                task: "sentiment".into(),
                public: None,
                private: Some((0.5, 0.7)),
                transfer: None,
                vanilla_pgr: (None, Some(0.25), None),
                builtins: vec![BuiltinRow {
                    method: "zeroshot".into(),
                    public: None,
                    private: Some(zeroshot_private),
                    transfer: None,
                }],
                entries,
            }],
            evaluations: Vec::new(),
            findings: Vec::new(),
        };
        let markdown = report.markdown();
        let line = |id: i64| {
            markdown
                .lines()
                .find(|l| l.starts_with(&format!("| {id} |")))
                .unwrap_or_else(|| panic!("no row for entry {id}: {markdown}"))
                .to_owned()
        };
        let cells = |id: i64| -> Vec<String> { line(id).split(" | ").map(str::to_owned).collect() };
        // Columns: entry, researcher, method, snapshot, seeds, board, public, private,
        // transfer, vs vanilla, vs built-ins, vs entry above, ...
        assert!(cells(1)[7].starts_with("0.775 +- 0.0"), "{}", line(1));
        // Entry 1 is 20 rows above zeroshot (190 rows disagree: within noise), far
        // above logconf; vanilla (entry 3) is far below zeroshot, 50 rows above logconf.
        assert_eq!(
            cells(1)[10],
            "private: above 2 of 2 built-ins (1 significantly)",
            "{}",
            line(1)
        );
        assert!(
            cells(3)[10].starts_with(
                "private: above 1 of 2 built-ins (1 significantly); below zeroshot: -0.475 +- 0.0"
            ),
            "{}",
            line(3)
        );
        assert!(cells(3)[10].ends_with(", significant"), "{}", line(3));
        assert!(
            markdown.contains("| zeroshot | - | 0.725 +- 0.100 | - |"),
            "the built-ins' table: {markdown}"
        );
        assert!(
            cells(1)[9].starts_with("private: +0.525 +- 0.0"),
            "{}",
            line(1)
        );
        assert!(cells(1)[9].ends_with(", significant"), "{}", line(1));
        assert_eq!(cells(1)[11], "-");
        assert!(
            cells(2)[11].starts_with("private: -0.025 +- 0.0"),
            "{}",
            line(2)
        );
        assert!(cells(2)[11].ends_with(", within noise"), "{}", line(2));
        assert!(
            cells(3)[11].starts_with("private: -0.500 +- 0.0"),
            "{}",
            line(3)
        );
        assert!(cells(3)[11].ends_with(", significant"), "{}", line(3));
        assert!(
            cells(3)[9].ends_with("within noise"),
            "vanilla itself: {}",
            line(3)
        );
        assert!(
            markdown.contains(
                "Indistinguishable neighbours (no held-out split differs significantly): \
                 entry 2 and the entry 1 above it; their order is within noise."
            ),
            "{markdown}"
        );
        let html = crate::report_html::html(&report);
        assert!(html.contains("entry 2 and the entry 1 above it"), "{html}");
        assert!(
            html.contains("private: -0.025 ± 0.0") || html.contains("private: -0.025 +- 0.0"),
            "{html}"
        );
    }

    #[test]
    fn agent_text_cannot_forge_a_report_row() {
        let forged =
            "x | 1.00 |\n| 99 | forged | `m` | s | [] | ranked | 9.99 | 9.99 | 9.99 | - | 1 s |";
        let entry = EntryRow {
            entry_id: 1,
            researcher: "researcher-1".into(),
            method: forged.into(),
            snapshot_id: Some("\u{202e}abc".into()),
            seeds: vec![1, 2, 3],
            section: "ranked".into(),
            status: "ok".into(),
            status_reason: None,
            public_pgr: Some(PgrView::seeds_only(aar_core::metrics::MeanSe {
                mean: 0.3,
                se: Some(0.01),
                n: 3,
            })),
            private_pgr: None,
            transfer_pgr: None,
            private_vs: Comparisons::default(),
            transfer_vs: Comparisons::default(),
            flags: vec![("execution".into(), forged.into())],
            verification_seconds: Some(12.0),
            verification_error: None,
        };
        let report = Report {
            preset: "tiny".into(),
            placements: Vec::new(),
            researchers: Vec::new(),
            tasks: vec![TaskReport {
                task: "sentiment".into(),
                public: Some((0.6, 0.8)),
                private: None,
                transfer: None,
                vanilla_pgr: (Some(0.3), None, None),
                builtins: Vec::new(),
                entries: vec![entry],
            }],
            evaluations: Vec::new(),
            findings: vec![(
                "r".into(),
                "result".into(),
                "sentiment".into(),
                forged.into(),
            )],
        };
        let markdown = report.markdown();
        let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with('|')).collect();
        // Header, separator, the one entry; then the researchers' header and separator (no rows).
        assert_eq!(rows.len(), 5, "{markdown}");
        assert!(rows.iter().take(3).all(|r| cells(r) == 15), "{markdown}");
        assert!(
            !markdown.contains('\u{202e}'),
            "bidirectional controls are shown escaped"
        );
        assert!(
            !markdown.lines().any(|l| l.starts_with("| 99 ")),
            "{markdown}"
        );
    }
}
