//! The baseline table, read back from the result files through `aar-results` (one reader for
//! aar's results and the reference's): per task W and S on each evaluation split, and per
//! method PGR against that split's fixed W and S, with an error that includes the test
//! rows' own sampling noise ([`aar_core::noise`]) when the result files hold per-row
//! outcomes (`correct_rows`), and the seeds' standard error alone, said so, when they do not.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use aar_core::metrics::{FixedBaselines, MeanSe, MetricError};
use aar_core::noise::{CorrectRows, DEFAULT_RESAMPLES, PgrEstimate, PgrRuns, pgr_estimate};
use aar_results::ResultCache;
use serde::Serialize;
use serde_json::Value;

use crate::baselines::EVAL_SPLITS;
use crate::error::{Result, TestbedError};

/// Test-noise error (in PGR) above which the table marks a split as too small.
pub const NOISY_TEST_SE: f64 = 0.05;

/// Seed of the table's bootstrap over test rows: the same files give the same errors.
const BOOTSTRAP_SEED: u64 = 0x7e57;

/// The method whose outcomes [`SplitOutcomes::vanilla`] holds.
const VANILLA: &str = "vanilla_w2s";

/// One evaluation split of one method (or baseline).
#[derive(Debug, Clone, Serialize)]
pub struct SplitScore {
    /// Accuracy over seeds.
    pub accuracy: MeanSe,
    /// PGR against the split's fixed baselines; `None` when S <= W there. `mean` is the
    /// PGR, `se` the error to quote: [`PgrEstimate::se`] (seeds and test rows) when
    /// `estimate` is present, the seeds' standard error alone otherwise.
    pub pgr: Option<MeanSe>,
    /// The PGR with its error split into seeds and test rows; `None` when some result
    /// file lacks per-row outcomes on this split (then `pgr`'s error is seeds only).
    pub estimate: Option<PgrEstimate>,
}

impl SplitScore {
    /// Whether the PGR's error leaves out the test rows' noise (old result files).
    pub fn seeds_only(&self) -> bool {
        self.pgr.is_some() && self.estimate.is_none()
    }

    /// Whether the test rows alone put more than [`NOISY_TEST_SE`] of error on the PGR.
    pub fn noisy(&self) -> bool {
        self.estimate.is_some_and(|e| e.se_test > NOISY_TEST_SE)
    }
}

/// One method of a task.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    /// The idea name.
    pub method: String,
    /// Seeds found.
    pub seeds: Vec<u64>,
    /// Per evaluation split (`test`, `test_private`, `transfer`).
    pub splits: Vec<(String, SplitScore)>,
}

/// Per-row outcomes on one split of the pinned seeds, in seed order: what an error on
/// a PGR that includes the test rows' noise is computed from
/// ([`aar_core::noise::pgr_estimate`], [`aar_core::noise::pgr_difference`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitOutcomes {
    /// The weak teacher's seeds.
    pub weak: Vec<CorrectRows>,
    /// The ceiling's seeds.
    pub ceiling: Vec<CorrectRows>,
    /// Vanilla transfer's (`vanilla_w2s`) seeds; empty when it was not run (or was run
    /// under several configurations).
    pub vanilla: Vec<CorrectRows>,
    /// Every other method's seeds, by name (those run under one configuration, with
    /// per-row outcomes in every file): what entries are compared with beyond vanilla.
    pub methods: BTreeMap<String, Vec<CorrectRows>>,
}

impl SplitOutcomes {
    /// The baselines a PGR is taken against.
    pub fn runs(&self) -> PgrRuns<'_> {
        PgrRuns {
            weak: &self.weak,
            ceiling: &self.ceiling,
        }
    }
}

/// How noisy one split is, for the table's footnotes.
#[derive(Debug, Clone, Serialize)]
pub struct SplitNoise {
    /// The split.
    pub split: String,
    /// Its rows, when the result files hold per-row outcomes.
    pub rows: Option<usize>,
    /// The largest test-noise error of any method's PGR on it.
    pub se_test: Option<f64>,
    /// Vanilla transfer's test-noise error on it (the reference every method is
    /// compared with).
    pub vanilla_se_test: Option<f64>,
    /// Methods whose PGR error there is the seeds' alone (result files without rows).
    pub seeds_only: Vec<String>,
}

/// One task's baselines.
#[derive(Debug, Clone, Serialize)]
pub struct TaskTable {
    /// The task (the `{dataset}` of the layout).
    pub task: String,
    /// Per split: (split, fixed baselines W and S), where S > W.
    pub baselines: Vec<(String, MeanSe, MeanSe)>,
    /// Methods, in name order.
    pub methods: Vec<MethodRow>,
    /// Per split with baselines: its rows and test noise.
    pub noise: Vec<SplitNoise>,
    /// Per split whose weak, ceiling and vanilla files all hold per-row outcomes: those
    /// outcomes (large; left out of the JSON).
    #[serde(skip)]
    pub outcomes: Vec<(String, SplitOutcomes)>,
}

impl TaskTable {
    /// W and S on a split.
    pub fn baseline(&self, split: &str) -> Option<(MeanSe, MeanSe)> {
        self.baselines
            .iter()
            .find(|(s, _, _)| s == split)
            .map(|(_, w, s)| (*w, *s))
    }

    /// A method's row.
    pub fn method(&self, name: &str) -> Option<&MethodRow> {
        self.methods.iter().find(|m| m.method == name)
    }

    /// The per-row outcomes of the pinned seeds on a split.
    pub fn outcomes(&self, split: &str) -> Option<&SplitOutcomes> {
        self.outcomes
            .iter()
            .find(|(s, _)| s == split)
            .map(|(_, o)| o)
    }

    /// The noise summary of a split.
    pub fn noise(&self, split: &str) -> Option<&SplitNoise> {
        self.noise.iter().find(|n| n.split == split)
    }
}

impl MethodRow {
    /// The score on a split.
    pub fn split(&self, split: &str) -> Option<&SplitScore> {
        self.splits.iter().find(|(s, _)| s == split).map(|(_, v)| v)
    }
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineTable {
    /// Tasks in name order.
    pub tasks: Vec<TaskTable>,
}

impl BaselineTable {
    /// The pinned seeds' per-row outcomes of `task` on `split` (weak, ceiling and
    /// vanilla, in seed order); `None` when the task or split is unknown or a weak,
    /// ceiling or vanilla result file lacks per-row outcomes there.
    pub fn outcomes(&self, task: &str, split: &str) -> Option<&SplitOutcomes> {
        self.tasks
            .iter()
            .find(|t| t.task == task)
            .and_then(|t| t.outcomes(split))
    }
}

/// One seed's record of one run.
struct SeedRecord {
    seed: u64,
    value: Value,
}

/// One config directory's per-seed records, in seed order.
type ConfigRuns = (String, Vec<SeedRecord>);

fn accuracy_on(record: &Value, split: &str, fallback_field: &str) -> Option<f64> {
    record
        .get("eval")
        .and_then(|e| e.get(split))
        .and_then(|e| e.get("accuracy"))
        .and_then(Value::as_f64)
        .or_else(|| {
            (split == "test")
                .then(|| record.get(fallback_field).and_then(Value::as_f64))
                .flatten()
        })
}

fn metric_error(context: String) -> impl FnOnce(MetricError) -> TestbedError {
    move |source| TestbedError::Metric { context, source }
}

fn bad(task: &str, message: String) -> TestbedError {
    TestbedError::BadTask {
        task: task.into(),
        message,
    }
}

/// One run's per-row outcomes on `split`: `None` when the file has none there, an error
/// when they are malformed or disagree with the accuracy recorded beside them.
fn rows_on(record: &SeedRecord, split: &str, context: &str) -> Result<Option<CorrectRows>> {
    let Some(entry) = record.value.get("eval").and_then(|e| e.get(split)) else {
        return Ok(None);
    };
    let Some(text) = entry.get("correct_rows") else {
        return Ok(None);
    };
    let seed = record.seed;
    let rows: CorrectRows = serde_json::from_value(text.clone()).map_err(|e| {
        bad(
            context,
            format!("seed {seed} eval.{split}.correct_rows: {e}"),
        )
    })?;
    let recorded = entry.get("accuracy").and_then(Value::as_f64);
    if let Some(accuracy) = recorded.filter(|a| (a - rows.accuracy()).abs() > 1e-9) {
        return Err(bad(
            context,
            format!(
                "seed {seed} eval.{split}: correct_rows give accuracy {:.6} ({} rows) but \
                 accuracy is {accuracy:.6}",
                rows.accuracy(),
                rows.len()
            ),
        ));
    }
    Ok(Some(rows))
}

/// Every run's outcomes on `split`, or `None` when any run lacks them (or there is no run).
fn outcomes_on(
    runs: &[SeedRecord],
    split: &str,
    context: &str,
) -> Result<Option<Vec<CorrectRows>>> {
    let mut all = Vec::with_capacity(runs.len());
    for run in runs {
        match rows_on(run, split, context)? {
            Some(rows) => all.push(rows),
            None => return Ok(None),
        }
    }
    Ok((!all.is_empty()).then_some(all))
}

/// A task's fixed baselines on one split.
struct SplitBaseline {
    split: &'static str,
    fixed: FixedBaselines,
    /// Weak and ceiling outcomes, when every file has them (vanilla's added later).
    outcomes: Option<SplitOutcomes>,
}

/// Reads the records of one method per config directory, keeping the pinned `seeds`.
fn records_by_config(
    cache: &ResultCache,
    dataset: &str,
    method: &str,
    seeds: &[u64],
) -> Result<Vec<ConfigRuns>> {
    let mut configs = Vec::new();
    for (config, runs) in cache.runs(dataset, method) {
        let mut out = Vec::new();
        for (seed, entry) in runs {
            if seeds.contains(&seed) {
                let value: Value = entry.parse().map_err(|e| bad(dataset, e.to_string()))?;
                out.push(SeedRecord { seed, value });
            }
        }
        configs.push((config.to_owned(), out));
    }
    Ok(configs)
}

/// A baseline's records: under two configs it is ambiguous (which W would PGR use?).
fn baseline_records(
    cache: &ResultCache,
    dataset: &str,
    method: &str,
    seeds: &[u64],
) -> Result<Vec<SeedRecord>> {
    let mut configs = records_by_config(cache, dataset, method, seeds)?;
    if configs.len() > 1 {
        let names: Vec<&str> = configs.iter().map(|(c, _)| c.as_str()).collect();
        return Err(bad(
            dataset,
            format!(
                "{method} has results under several configs ({}); remove the stale ones (or \
                 rerun with --fresh)",
                names.join(", ")
            ),
        ));
    }
    Ok(configs.pop().map(|(_, runs)| runs).unwrap_or_default())
}

/// W and S of every split that has both, with their per-row outcomes where present.
fn split_baselines(
    dataset: &str,
    weak: &[SeedRecord],
    ceiling: &[SeedRecord],
) -> Result<Vec<SplitBaseline>> {
    let mut out = Vec::new();
    for split in EVAL_SPLITS {
        let name = split.name();
        let accuracies = |runs: &[SeedRecord], field| -> Vec<f64> {
            runs.iter()
                .filter_map(|r| accuracy_on(&r.value, name, field))
                .collect()
        };
        let (w, s) = (
            accuracies(weak, "weak_acc"),
            accuracies(ceiling, "strong_acc"),
        );
        if w.is_empty() || s.is_empty() {
            continue;
        }
        let weak_mean = MeanSe::from_values(&w).map_err(metric_error(format!("{dataset} W")))?;
        let ceiling_mean = MeanSe::from_values(&s).map_err(metric_error(format!("{dataset} S")))?;
        let weak_rows = outcomes_on(weak, name, &format!("{dataset} weak_artifacts"))?;
        let ceiling_rows = outcomes_on(ceiling, name, &format!("{dataset} train_ceiling"))?;
        let outcomes = weak_rows
            .zip(ceiling_rows)
            .map(|(weak, ceiling)| SplitOutcomes {
                weak,
                ceiling,
                vanilla: Vec::new(),
                methods: BTreeMap::new(),
            });
        out.push(SplitBaseline {
            split: name,
            fixed: FixedBaselines {
                weak: weak_mean,
                ceiling: ceiling_mean,
            },
            outcomes,
        });
    }
    Ok(out)
}

/// PGR with the test rows' noise, where the baselines and the method have per-row
/// outcomes; `None` there too when S does not beat W.
fn estimate_on(
    baseline: &SplitBaseline,
    method_rows: Option<&[CorrectRows]>,
    context: &str,
) -> Result<Option<PgrEstimate>> {
    let (Some(outcomes), Some(rows)) = (&baseline.outcomes, method_rows) else {
        return Ok(None);
    };
    match pgr_estimate(&outcomes.runs(), rows, DEFAULT_RESAMPLES, BOOTSTRAP_SEED) {
        Ok(estimate) => Ok(Some(estimate)),
        Err(MetricError::CeilingNotAboveWeak { .. }) => Ok(None),
        Err(source) => Err(TestbedError::Metric {
            context: format!("{context} {} PGR", baseline.split),
            source,
        }),
    }
}

/// One method's score on one split with its per-row outcomes there; `None` when it has
/// no accuracy on the split.
type ScoredSplit = (SplitScore, Option<Vec<CorrectRows>>);

fn score_split(
    baseline: &SplitBaseline,
    runs: &[SeedRecord],
    context: &str,
) -> Result<Option<ScoredSplit>> {
    let split = baseline.split;
    let accs: Vec<f64> = runs
        .iter()
        .filter_map(|r| accuracy_on(&r.value, split, "transfer_acc"))
        .collect();
    if accs.is_empty() {
        return Ok(None);
    }
    let accuracy =
        MeanSe::from_values(&accs).map_err(metric_error(format!("{context} {split}")))?;
    let method_rows = outcomes_on(runs, split, context)?;
    let estimate = estimate_on(baseline, method_rows.as_deref(), context)?;
    let pgr = match estimate {
        Some(e) => Some(MeanSe {
            mean: e.pgr,
            se: Some(e.se),
            n: e.seeds,
        }),
        None => baseline.fixed.pgr_over_seeds(&accs).ok(),
    };
    let score = SplitScore {
        accuracy,
        pgr,
        estimate,
    };
    Ok(Some((score, method_rows)))
}

/// Every method of a task but the baselines, a row per config directory; vanilla's
/// outcomes go into `baselines`.
fn method_rows(
    cache: &ResultCache,
    dataset: &str,
    seeds: &[u64],
    baselines: &mut [SplitBaseline],
) -> Result<Vec<MethodRow>> {
    let mut methods = Vec::new();
    for method in cache.methods(dataset) {
        if method == "weak_artifacts" || method == "train_ceiling" {
            continue;
        }
        let configs = records_by_config(cache, dataset, method, seeds)?;
        let several = configs.len() > 1;
        for (config, runs) in configs {
            let context = format!("{dataset} {method}");
            let mut splits = Vec::new();
            for baseline in baselines.iter_mut() {
                let Some((score, rows)) = score_split(baseline, &runs, &context)? else {
                    continue;
                };
                if let (false, Some(outcomes), Some(rows)) = (several, &mut baseline.outcomes, rows)
                {
                    if method == VANILLA {
                        outcomes.vanilla = rows;
                    } else {
                        outcomes.methods.insert(method.to_owned(), rows);
                    }
                }
                splits.push((baseline.split.to_owned(), score));
            }
            let name = if several {
                format!("{method} [{config}]")
            } else {
                method.into()
            };
            methods.push(MethodRow {
                method: name,
                seeds: runs.iter().map(|r| r.seed).collect(),
                splits,
            });
        }
    }
    Ok(methods)
}

/// Per split: rows, the worst test noise and the methods with seeds-only errors.
fn split_noise(baselines: &[SplitBaseline], methods: &[MethodRow]) -> Vec<SplitNoise> {
    baselines
        .iter()
        .map(|baseline| {
            let scores: Vec<(&str, &SplitScore)> = methods
                .iter()
                .filter_map(|m| m.split(baseline.split).map(|s| (m.method.as_str(), s)))
                .collect();
            let estimates = scores.iter().filter_map(|(_, s)| s.estimate);
            SplitNoise {
                split: baseline.split.to_owned(),
                rows: baseline
                    .outcomes
                    .as_ref()
                    .and_then(|o| o.weak.first())
                    .map(CorrectRows::len),
                se_test: estimates.map(|e| e.se_test).reduce(f64::max),
                vanilla_se_test: scores
                    .iter()
                    .find(|(name, _)| *name == VANILLA)
                    .and_then(|(_, s)| s.estimate)
                    .map(|e| e.se_test),
                seeds_only: scores
                    .iter()
                    .filter(|(_, s)| s.seeds_only())
                    .map(|(name, _)| (*name).to_owned())
                    .collect(),
            }
        })
        .collect()
}

fn read_task(cache: &ResultCache, dataset: &str, seeds: &[u64]) -> Result<TaskTable> {
    let weak = baseline_records(cache, dataset, "weak_artifacts", seeds)?;
    let ceiling = baseline_records(cache, dataset, "train_ceiling", seeds)?;
    let mut baselines = split_baselines(dataset, &weak, &ceiling)?;
    let methods = method_rows(cache, dataset, seeds, &mut baselines)?;
    let noise = split_noise(&baselines, &methods);
    let ran_vanilla = methods.iter().any(|m| m.method == VANILLA);
    let outcomes = baselines
        .iter()
        .filter_map(|b| {
            let outcomes = b.outcomes.as_ref()?;
            // Vanilla ran but some of its files lack rows there: no outcomes at all.
            if ran_vanilla && outcomes.vanilla.is_empty() {
                return None;
            }
            Some((b.split.to_owned(), outcomes.clone()))
        })
        .collect();
    Ok(TaskTable {
        task: dataset.into(),
        baselines: baselines
            .iter()
            .map(|b| (b.split.to_owned(), b.fixed.weak, b.fixed.ceiling))
            .collect(),
        methods,
        noise,
        outcomes,
    })
}

impl BaselineTable {
    /// Reads every task's results under `results` (the reference layout) for `seeds`.
    pub fn read(results: &Path, seeds: &[u64]) -> Result<BaselineTable> {
        Self::read_where(results, seeds, |_| true)
    }

    /// The table of `preset`'s tasks only, over its seeds: a results directory outlives
    /// presets, and a task an earlier version served (or one it now holds out) is
    /// neither read nor shown, so its stale files cannot fail or join the table.
    pub fn read_preset(results: &Path, preset: &crate::Preset) -> Result<BaselineTable> {
        Self::read_where(results, &preset.seeds, |task| preset.task(task).is_some())
    }

    fn read_where(
        results: &Path,
        seeds: &[u64],
        wanted: impl Fn(&str) -> bool,
    ) -> Result<BaselineTable> {
        let cache = ResultCache::open(results)
            .map_err(|e| bad(&results.display().to_string(), e.to_string()))?;
        let tasks = cache
            .datasets()
            .into_iter()
            .filter(|dataset| wanted(dataset))
            .map(|dataset| read_task(&cache, dataset, seeds))
            .collect::<Result<_>>()?;
        Ok(BaselineTable { tasks })
    }
}

fn short(m: &MeanSe) -> String {
    match m.se {
        Some(se) => format!("{:.3}+-{:.3}", m.mean, se),
        None => format!("{:.3}", m.mean),
    }
}

/// A PGR cell: marked `*` when the test rows' noise is above [`NOISY_TEST_SE`], `^` when
/// its error is the seeds' alone.
fn pgr_cell(score: Option<&SplitScore>) -> String {
    match score {
        Some(score @ SplitScore { pgr: Some(p), .. }) => {
            let mark = if score.seeds_only() {
                "^"
            } else if score.noisy() {
                "*"
            } else {
                ""
            };
            format!("{}{mark}", short(p))
        }
        Some(SplitScore { pgr: None, .. }) => "n/a (S<=W)".into(),
        None => "-".into(),
    }
}

fn write_footnotes(f: &mut fmt::Formatter<'_>, task: &TaskTable) -> fmt::Result {
    for noise in &task.noise {
        if let (Some(se), Some(rows)) = (noise.se_test, noise.rows)
            && se > NOISY_TEST_SE
        {
            let vanilla = noise
                .vanilla_se_test
                .map_or_else(String::new, |v| format!(" ({VANILLA} +-{v:.3})"));
            writeln!(
                f,
                "  * {}: test noise up to +-{se:.3} > {NOISY_TEST_SE}{vanilla}: the split has \
                 {rows} rows",
                noise.split
            )?;
        }
        if !noise.seeds_only.is_empty() {
            writeln!(
                f,
                "  ^ {}: seeds only ({}): result files without correct_rows, test noise not \
                 counted; rerun `aar baselines` to recompute them",
                noise.split,
                noise.seeds_only.join(", ")
            )?;
        }
    }
    Ok(())
}

impl fmt::Display for BaselineTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let splits = ["test", "test_private", "transfer"];
        for task in &self.tasks {
            writeln!(f, "task {}", task.task)?;
            for (split, w, s) in &task.baselines {
                let rows = task
                    .noise(split)
                    .and_then(|n| n.rows)
                    .map_or_else(String::new, |n| format!("  ({n} rows)"));
                writeln!(
                    f,
                    "  {split:<13} W {}  S {}  gap {:+.3}{rows}",
                    short(w),
                    short(s),
                    s.mean - w.mean
                )?;
            }
            writeln!(
                f,
                "  {:<32} {:>6} {:>18} {:>18} {:>18}",
                "PGR +- SE (seeds and test rows)", "seeds", "test", "test_private", "transfer"
            )?;
            for method in &task.methods {
                write!(f, "  {:<32} {:>6}", method.method, method.seeds.len())?;
                for split in splits {
                    write!(f, " {:>18}", pgr_cell(method.split(split)))?;
                }
                writeln!(f)?;
            }
            write_footnotes(f, task)?;
        }
        Ok(())
    }
}
