//! The baseline table, read back from the result files through `aar-results` (one reader for
//! aar's results and the reference's): per task W and S on each evaluation split, and per
//! method PGR mean +- SE over seeds, PGR taken against that split's fixed W and S.

use std::fmt;
use std::path::Path;

use aar_core::metrics::{FixedBaselines, MeanSe};
use aar_results::ResultCache;
use serde::Serialize;
use serde_json::Value;

use crate::baselines::EVAL_SPLITS;
use crate::error::{Result, TestbedError};

/// One evaluation split of one method (or baseline).
#[derive(Debug, Clone, Serialize)]
pub struct SplitScore {
    /// Accuracy over seeds.
    pub accuracy: MeanSe,
    /// PGR over seeds against the split's fixed baselines; `None` when S <= W there.
    pub pgr: Option<MeanSe>,
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

/// One task's baselines.
#[derive(Debug, Clone, Serialize)]
pub struct TaskTable {
    /// The task (the `{dataset}` of the layout).
    pub task: String,
    /// Per split: (split, fixed baselines W and S), where S > W.
    pub baselines: Vec<(String, MeanSe, MeanSe)>,
    /// Methods, in name order.
    pub methods: Vec<MethodRow>,
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

/// One config directory's per-seed records.
type ConfigRuns = (String, Vec<(u64, Value)>);

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

fn metric_error(context: String) -> impl FnOnce(aar_core::metrics::MetricError) -> TestbedError {
    move |source| TestbedError::Metric { context, source }
}

impl BaselineTable {
    /// Reads every task's results under `results` (the reference layout) for `seeds`.
    pub fn read(results: &Path, seeds: &[u64]) -> Result<BaselineTable> {
        let cache = ResultCache::open(results).map_err(|e| TestbedError::BadTask {
            task: results.display().to_string(),
            message: e.to_string(),
        })?;
        let mut tasks = Vec::new();
        for dataset in cache.datasets() {
            // Per config directory: a method run under two configurations is two rows; a
            // baseline under two is ambiguous (which W would PGR use?) and an error.
            let records_by_config = |method: &str| -> Result<Vec<ConfigRuns>> {
                let mut configs = Vec::new();
                for (config, runs) in cache.runs(dataset, method) {
                    let mut out = Vec::new();
                    for (seed, entry) in runs {
                        if seeds.contains(&seed) {
                            let value: Value =
                                entry.parse().map_err(|e| TestbedError::BadTask {
                                    task: dataset.into(),
                                    message: e.to_string(),
                                })?;
                            out.push((seed, value));
                        }
                    }
                    configs.push((config.to_owned(), out));
                }
                Ok(configs)
            };
            let baseline = |method: &str| -> Result<Vec<(u64, Value)>> {
                let mut configs = records_by_config(method)?;
                if configs.len() > 1 {
                    return Err(TestbedError::BadTask {
                        task: dataset.into(),
                        message: format!(
                            "{method} has results under several configs ({}); remove the stale \
                             ones (or rerun with --fresh)",
                            configs
                                .iter()
                                .map(|(c, _)| c.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
                Ok(configs.pop().map(|(_, runs)| runs).unwrap_or_default())
            };
            let weak = baseline("weak_artifacts")?;
            let ceiling = baseline("train_ceiling")?;
            let mut baselines = Vec::new();
            let mut fixed = Vec::new();
            for split in EVAL_SPLITS {
                let name = split.name();
                let w: Vec<f64> = weak
                    .iter()
                    .filter_map(|(_, r)| accuracy_on(r, name, "weak_acc"))
                    .collect();
                let s: Vec<f64> = ceiling
                    .iter()
                    .filter_map(|(_, r)| accuracy_on(r, name, "strong_acc"))
                    .collect();
                if w.is_empty() || s.is_empty() {
                    continue;
                }
                let wm = MeanSe::from_values(&w).map_err(metric_error(format!("{dataset} W")))?;
                let sm = MeanSe::from_values(&s).map_err(metric_error(format!("{dataset} S")))?;
                baselines.push((name.to_owned(), wm, sm));
                fixed.push((
                    name,
                    FixedBaselines {
                        weak: wm,
                        ceiling: sm,
                    },
                ));
            }
            let mut methods = Vec::new();
            for method in cache.methods(dataset) {
                if method == "weak_artifacts" || method == "train_ceiling" {
                    continue;
                }
                let configs = records_by_config(method)?;
                let several = configs.len() > 1;
                for (config, runs) in configs {
                    let mut splits = Vec::new();
                    for (name, baselines) in &fixed {
                        let accs: Vec<f64> = runs
                            .iter()
                            .filter_map(|(_, r)| accuracy_on(r, name, "transfer_acc"))
                            .collect();
                        if accs.is_empty() {
                            continue;
                        }
                        let accuracy = MeanSe::from_values(&accs)
                            .map_err(metric_error(format!("{dataset} {method} {name}")))?;
                        let pgr = baselines.pgr_over_seeds(&accs).ok();
                        splits.push((name.to_string(), SplitScore { accuracy, pgr }));
                    }
                    let mut seeds: Vec<u64> = runs.iter().map(|(s, _)| *s).collect();
                    seeds.sort_unstable();
                    methods.push(MethodRow {
                        method: if several {
                            format!("{method} [{config}]")
                        } else {
                            method.into()
                        },
                        seeds,
                        splits,
                    });
                }
            }
            tasks.push(TaskTable {
                task: dataset.into(),
                baselines,
                methods,
            });
        }
        Ok(BaselineTable { tasks })
    }
}

fn short(m: &MeanSe) -> String {
    match m.se {
        Some(se) => format!("{:.3}+-{:.3}", m.mean, se),
        None => format!("{:.3}", m.mean),
    }
}

impl fmt::Display for BaselineTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let splits = ["test", "test_private", "transfer"];
        for task in &self.tasks {
            writeln!(f, "task {}", task.task)?;
            for (split, w, s) in &task.baselines {
                writeln!(
                    f,
                    "  {split:<13} W {}  S {}  gap {:+.3}",
                    short(w),
                    short(s),
                    s.mean - w.mean
                )?;
            }
            writeln!(
                f,
                "  {:<32} {:>6} {:>18} {:>18} {:>18}",
                "PGR (mean+-SE)", "seeds", "test", "test_private", "transfer"
            )?;
            for method in &task.methods {
                write!(f, "  {:<32} {:>6}", method.method, method.seeds.len())?;
                for split in splits {
                    let cell = match method.split(split) {
                        Some(SplitScore { pgr: Some(p), .. }) => short(p),
                        Some(SplitScore { pgr: None, .. }) => "n/a (S<=W)".into(),
                        None => "-".into(),
                    };
                    write!(f, " {cell:>18}")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
