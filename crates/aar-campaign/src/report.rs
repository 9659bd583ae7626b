//! The campaign report: per task the fixed baselines, vanilla transfer and the
//! leaderboard's entries on the public and private tests; PGR over time per
//! researcher; findings; spending. Written as `report.json`, `report.md` and
//! `pgr.png`, read only from what the server and the ledger recorded.

use std::collections::BTreeMap;
use std::path::Path;

use aar_agents::accounting::Ledger;
use aar_testbed::{AgentRun, BaselineTable, MethodSpec, RunOptions, labeled_accuracy};
use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::campaign::{Admin, CampaignConfig};
use crate::error::{CampaignError, Result};

/// Transfer-set PGR (mean, SE over `seeds`) of an entry whose method is a testbed method
/// description: re-run on the agent copy, scored on the labeled transfer set. `None` for
/// custom methods and when a run fails (logged).
fn transfer_pgr(
    options: &RunOptions,
    task: &str,
    method: &str,
    seeds: &[u64],
    weak: f64,
    ceiling: f64,
) -> Option<(f64, Option<f64>)> {
    let spec: MethodSpec = serde_json::from_str(method).ok()?;
    // The spec is an agent's, and this runs outside any sandbox.
    if let Err(reason) = spec.check_cost_bounds() {
        tracing::warn!(task, method, "transfer-set run skipped: {reason}");
        return None;
    }
    let labeled = options
        .tasks_dir()
        .join(task)
        .join(aar_tasks::Split::Transfer.file_name());
    let mut values = Vec::new();
    for &seed in seeds {
        let run = AgentRun {
            task_dir: options.agent_dir().join(task),
            weak_labels: None,
            assets_dir: options.assets_dir.clone(),
            feature_cache: options.feature_cache.clone(),
            seed,
        };
        match labeled_accuracy(&run, &spec, &labeled) {
            Ok(accuracy) => values.extend(pgr(accuracy, weak, ceiling)),
            Err(err) => {
                tracing::warn!(task, method, seed, "transfer-set run failed: {err}");
                return None;
            }
        }
    }
    mean_and_se(&values)
}

/// PGR of `accuracy` against W and S; `None` when S does not beat W.
fn pgr(accuracy: f64, weak: f64, ceiling: f64) -> Option<f64> {
    (ceiling > weak).then(|| (accuracy - weak) / (ceiling - weak))
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
    /// Leaderboard entry it counts for.
    pub entry_id: Option<i64>,
    /// Training seed it declared for that entry.
    pub seed: Option<i64>,
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
            entry_id: row["entry_id"].as_i64(),
            seed: row["seed"].as_i64(),
        });
    }
    out.sort_by_key(|e| e.created_at);
    Ok(out)
}

/// Each researcher's best public-test PGR so far, with its task.
pub(crate) async fn best_pgr_by_agent(
    admin: &Admin,
    agent_ids: &BTreeMap<String, String>,
    table: &BaselineTable,
) -> Result<BTreeMap<String, (String, f64)>> {
    let mut best: BTreeMap<String, (String, f64)> = BTreeMap::new();
    for e in scored_evaluations(admin, agent_ids, table).await? {
        if let Some(p) = e.public_pgr
            && best.get(&e.researcher).is_none_or(|(_, b)| p > *b)
        {
            best.insert(e.researcher.clone(), (e.task.clone(), p));
        }
    }
    Ok(best)
}

/// A leaderboard entry with its scores on both tests.
#[derive(Debug, Clone, Serialize)]
pub struct EntryRow {
    /// Entry id.
    pub entry_id: i64,
    /// Researcher.
    pub researcher: String,
    /// The method as declared.
    pub method: String,
    /// Seeds evaluated / declared.
    pub seeds: String,
    /// ok, flagged or disqualified.
    pub status: String,
    /// Public-test PGR mean and SE over the entry's seeds.
    pub public_pgr: Option<(f64, Option<f64>)>,
    /// Private-test PGR (against the private test's W and S) mean and SE.
    pub private_pgr: Option<(f64, Option<f64>)>,
    /// Transfer-set PGR mean and SE, for entries whose method is a testbed method
    /// description (re-run here per seed; custom code has nothing to re-run).
    pub transfer_pgr: Option<(f64, Option<f64>)>,
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
    /// Baseline methods' public-test PGR, for context.
    pub baseline_pgr: Vec<(String, Option<f64>)>,
    /// Entries, best public PGR first; flagged and disqualified ones last.
    pub entries: Vec<EntryRow>,
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

fn mean_se(value: &Value) -> Option<(f64, Option<f64>)> {
    Some((value["mean"].as_f64()?, value["se"].as_f64()))
}

/// Mean and SE (ddof=1) of values.
fn mean_and_se(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let se = (n > 1).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        (var / n as f64).sqrt()
    });
    Some((mean, se))
}

impl Report {
    pub(crate) async fn gather(
        admin: &Admin,
        ledger: &Ledger,
        agent_ids: &BTreeMap<String, String>,
        table: &BaselineTable,
        config: &CampaignConfig,
        options: &RunOptions,
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
            for (group, status) in [
                ("ranked", "ok"),
                ("pending", "pending"),
                ("flagged", "flagged"),
                ("disqualified", "disqualified"),
            ] {
                for row in board[group].as_array().into_iter().flatten() {
                    let entry_id = row["entry_id"].as_i64().unwrap_or(0);
                    // Private PGR against the private test's own baselines, per seed.
                    let private: Vec<f64> = evaluations
                        .iter()
                        .filter(|e| e.entry_id == Some(entry_id))
                        .filter_map(|e| e.private_pgr)
                        .collect();
                    let agent = row["agent_id"].as_str().unwrap_or("");
                    let method = row["method"].as_str().unwrap_or("").to_owned();
                    let mut seeds: Vec<u64> = evaluations
                        .iter()
                        .filter(|e| e.entry_id == Some(entry_id))
                        .filter_map(|e| e.seed.and_then(|seed| u64::try_from(seed).ok()))
                        .collect();
                    seeds.sort_unstable();
                    seeds.dedup();
                    let transfer_pgr = match baselines(table, &task.task, "transfer") {
                        Some((w, s)) if s > w => {
                            let (options, task, method) =
                                (options.clone(), task.task.clone(), method.clone());
                            tokio::task::spawn_blocking(move || {
                                transfer_pgr(&options, &task, &method, &seeds, w, s)
                            })
                            .await
                            .ok()
                            .flatten()
                        }
                        _ => None,
                    };
                    entries.push(EntryRow {
                        entry_id,
                        researcher: agent_ids.get(agent).cloned().unwrap_or(agent.to_owned()),
                        method,
                        seeds: format!(
                            "{}/{}",
                            row["seeds_evaluated"].as_u64().unwrap_or(0),
                            row["seeds_declared"].as_u64().unwrap_or(0)
                        ),
                        status: status.to_owned(),
                        public_pgr: mean_se(&row["pgr"]),
                        private_pgr: mean_and_se(&private),
                        transfer_pgr,
                    });
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
                baseline_pgr: task
                    .methods
                    .iter()
                    .map(|m| (m.method.clone(), method_pgr(&m.method, "test")))
                    .collect(),
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
        })
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let ms = |v: Option<(f64, Option<f64>)>| match v {
            Some((m, Some(se))) => format!("{m:.3} +- {se:.3}"),
            Some((m, None)) => format!("{m:.3}"),
            None => "-".to_owned(),
        };
        let mut out = format!("# aar campaign report (preset `{}`)\n\n", self.preset);
        for task in &self.tasks {
            out += &format!("## {}\n\n", task.task);
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
            out += "| entry | researcher | method | seeds | status | PGR public | PGR private | PGR transfer |\n|---|---|---|---|---|---|---|---|\n";
            for e in &task.entries {
                out += &format!(
                    "| {} | {} | `{}` | {} | {} | {} | {} | {} |\n",
                    e.entry_id,
                    e.researcher,
                    e.method.replace('|', "\\|"),
                    e.seeds,
                    e.status,
                    ms(e.public_pgr),
                    ms(e.private_pgr),
                    ms(e.transfer_pgr)
                );
            }
            out += "\nBaselines (testbed, public PGR): ";
            out += &task
                .baseline_pgr
                .iter()
                .map(|(m, p)| format!("{m} {}", f(*p)))
                .collect::<Vec<_>>()
                .join(", ");
            out += "\n\n";
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
                r.name, r.tool_calls, r.llm_calls, r.dollars, r.hours, per_hour
            );
        }
        out += "\n## Findings\n\n";
        for (who, kind, task, title) in &self.findings {
            out += &format!("- [{kind}] {task}: {title} ({who})\n");
        }
        out += "\n`pgr.png`: best public-test PGR so far per researcher over time (one colour per researcher, in the order of the table above).\n";
        out
    }
}

/// Writes `report.json`, `report.md` and `pgr.png` into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(CampaignError::io(dir))?;
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| CampaignError::Setup(e.to_string()))?;
    std::fs::write(dir.join("report.json"), json).map_err(CampaignError::io(dir))?;
    std::fs::write(dir.join("report.md"), report.markdown()).map_err(CampaignError::io(dir))?;
    plot(report, &dir.join("pgr.png"))
}

/// DejaVu Sans from Debian's `fonts-dejavu-core` (installed by `scripts/setup.sh`).
const PLOT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the plot font once; false when it cannot be read (the plot then has no text).
fn plot_font_registered() -> bool {
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

/// Best-so-far public PGR per researcher over time, with axes and a legend when the
/// font is there.
fn plot(report: &Report, path: &Path) -> Result<()> {
    let start = report.evaluations.first().map_or(0, |e| e.created_at);
    let end = report
        .evaluations
        .last()
        .map_or(1, |e| e.created_at)
        .max(start + 1);
    let minutes = (end - start) as f64 / 60_000.0;
    let text = plot_font_registered();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if text {
            builder
                .caption(
                    "Best public-test PGR so far, per researcher",
                    ("sans-serif", 20),
                )
                .x_label_area_size(40)
                .y_label_area_size(50);
        }
        let mut chart = builder.build_cartesian_2d(0f64..minutes, -0.5f64..1.5f64)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("minutes since the first evaluation")
                .y_desc("PGR (0 = weak teacher, 1 = ceiling)")
                .label_style(("sans-serif", 14))
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
                .filter(|e| e.researcher == researcher.name)
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
                .label_font(("sans-serif", 14))
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| CampaignError::Setup(format!("plot {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgr_and_mean_se_match_hand_computations() {
        assert_eq!(pgr(0.7, 0.6, 0.8).map(|p| (p * 1e9).round()), Some(5e8));
        assert_eq!(pgr(0.7, 0.8, 0.8), None);
        let (mean, se) = mean_and_se(&[0.1, 0.2, 0.3]).unwrap();
        assert!((mean - 0.2).abs() < 1e-12);
        // sd = 0.1 (ddof=1), se = 0.1 / sqrt(3).
        assert!((se.unwrap() - 0.1 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_and_se(&[0.5]), Some((0.5, None)));
        assert_eq!(mean_and_se(&[]), None);
    }
}
