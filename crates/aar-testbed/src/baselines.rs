//! The baselines of a preset over seeds: weak teacher, ceiling and every transfer method,
//! written as per-seed JSON in the reference's cache layout (REFERENCE_SPEC 2.3):
//!
//! ```text
//! results/{task}_weak_artifacts/{Weak}_{hyper}/seed_N.json
//! results/{task}_train_ceiling/{Strong}_{hyper}/seed_N.json
//! results/{task}_{idea}/{Strong}_{Weak}_{hyper}{extras}/seed_N.json   (zero-shot: no {Weak})
//! ```
//!
//! Every file records a `config_hash` over the code version, the task files' bytes, the
//! learners, the method and the seed; a file whose hash matches is not recomputed, so a
//! rerun is fast and an interrupted run resumes. Files are written to a temporary name and
//! renamed, so a killed run never leaves a truncated result. Features are computed only
//! when some result is missing, and read from the feature cache when they were computed
//! before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aar_core::Label;
use aar_core::metrics::accuracy;
use aar_core::noise::CorrectRows;
use aar_engine::features::{FeatureHead, HeadLoss, Matrix, train_head_on};
use aar_tasks::{Example, LabeledTask, Split};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result, TestbedError};
use crate::features::{FrozenExtractor, Vocabulary, constant_choice, group_ids, row_text};
use crate::lora::{LoraLearner, Prompt};
use crate::method::{MethodInputs, MethodSpec, hard, head_config, plan_training};
use crate::preset::{HeadSpec, LearnerSpec, Preset, TaskSource, TaskSpec};

/// Bumped when a change to this crate changes results (or what a result file holds):
/// every cached result is recomputed. 3: per-row outcomes (`correct_rows`) in every eval
/// entry.
pub const RESULTS_VERSION: &str = "aar-testbed/3";

/// The splits every learner is evaluated on (those the task has).
pub const EVAL_SPLITS: [Split; 3] = [Split::Test, Split::TestPrivate, Split::Transfer];

/// Where a preset's files live and what to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The fetched assets (`.aar/assets`).
    pub assets_dir: PathBuf,
    /// The preset's working directory: `tasks/`, `results/`, `agent/` under it.
    pub work_dir: PathBuf,
    /// Shared frozen-feature cache (all splits, labeled ones included: never mounted for
    /// researchers, who read [`RunOptions::agent_feature_cache`]).
    pub feature_cache: PathBuf,
    /// Seeds to run (the preset's when empty).
    pub seeds: Vec<u64>,
    /// Tasks to run (all of the preset's when empty).
    pub tasks: Vec<String>,
    /// Transfer methods to run.
    pub methods: Vec<MethodSpec>,
    /// Raised (e.g. by Ctrl-C) to stop after the result being computed.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    /// Defaults under `root` (`.aar`): `testbed/<preset>/` and `testbed/features/`.
    pub fn new(preset: &Preset, aar_root: &Path) -> RunOptions {
        RunOptions {
            assets_dir: aar_root.join("assets"),
            work_dir: aar_root.join("testbed").join(&preset.name),
            feature_cache: aar_root.join("testbed").join("features"),
            seeds: Vec::new(),
            tasks: Vec::new(),
            methods: MethodSpec::baselines(),
            interrupt: None,
        }
    }

    /// `work_dir/tasks`.
    pub fn tasks_dir(&self) -> PathBuf {
        self.work_dir.join("tasks")
    }

    /// `work_dir/results`.
    pub fn results_dir(&self) -> PathBuf {
        self.work_dir.join("results")
    }

    /// `work_dir/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.work_dir.join("agent")
    }

    /// `work_dir/agent-ids.key`: the secret key of the agent copies' opaque ids (mode
    /// 0600), beside the labeled tasks and never inside [`RunOptions::agent_dir`].
    pub fn id_key_path(&self) -> PathBuf {
        self.work_dir.join("agent-ids.key")
    }

    /// `work_dir/agent-features`: the feature cache researchers may read. Unlike
    /// [`RunOptions::feature_cache`] (which also holds features of `train_label` and the
    /// transfer set), it only ever holds features of agent copies: see
    /// [`fill_agent_feature_cache`].
    pub fn agent_feature_cache(&self) -> PathBuf {
        self.work_dir.join("agent-features")
    }
}

/// Timings of one run, for the benchmark.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunSummary {
    /// Wall-clock seconds of the whole run.
    pub total_seconds: f64,
    /// Seconds spent building task directories.
    pub build_seconds: f64,
    /// Seconds spent loading models and computing (or reading cached) features.
    pub feature_seconds: f64,
    /// Results computed now.
    pub computed: usize,
    /// Results found in the cache.
    pub cached: usize,
    /// Seconds of each transfer experiment computed now (method x seed).
    pub transfer_seconds: Vec<f64>,
}

/// Builds the preset's task directories that are missing (all when `rebuild`).
pub fn build_tasks(preset: &Preset, options: &RunOptions, rebuild: bool) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for task in selected_tasks(preset, options) {
        let dir = options.tasks_dir().join(&task.name);
        if rebuild
            || !dir.join(Split::TrainLabel.file_name()).is_file()
            || built_otherwise(task, &dir, preset.build_seed)
        {
            build_task(task, &options.assets_dir, &dir, preset.build_seed)?;
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// What a built-in task's directory records of its making (a JSONL task records its
/// own, with the source's hash: `jsonl_tasks::BUILT_FROM_FILE`).
fn build_record(task: &TaskSpec, seed: u64) -> Value {
    json!({"source": task.source, "sizes": task.sizes, "build_seed": seed})
}

/// Whether `dir` was built from another source, other sizes or another seed than
/// `task` asks for now (or records nothing: built before the record existed), so a
/// changed preset rebuilds its tasks instead of serving stale splits.
fn built_otherwise(task: &TaskSpec, dir: &Path, seed: u64) -> bool {
    if matches!(task.source, TaskSource::Jsonl { .. }) {
        return crate::jsonl_tasks::needs_rebuild(task, dir, seed);
    }
    let recorded = std::fs::read_to_string(dir.join(crate::jsonl_tasks::BUILT_FROM_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok());
    recorded != Some(build_record(task, seed))
}

/// Builds one task directory from its source.
pub fn build_task(task: &TaskSpec, assets_dir: &Path, dir: &Path, seed: u64) -> Result<()> {
    let started = Instant::now();
    match &task.source {
        TaskSource::Text { corpus } => {
            crate::text_tasks::build_text_task(
                &task.name,
                *corpus,
                assets_dir,
                dir,
                &task.sizes,
                seed,
            )?;
        }
        TaskSource::Pairs { corpus } => {
            crate::pair_tasks::build_pair_task(
                &task.name,
                *corpus,
                assets_dir,
                dir,
                &task.sizes,
                seed,
            )?;
        }
        TaskSource::Pack { pack } => {
            let kind = aar_assets::PackKind::ALL
                .into_iter()
                .find(|k| k.name() == pack)
                .ok_or_else(|| TestbedError::Unsupported(format!("no pack named {pack:?}")))?;
            aar_assets::build_task_pack(
                kind,
                assets_dir,
                dir,
                &task.sizes.to_pack_sizes(),
                seed,
                &aar_assets::PackOptions::default(),
            )?;
        }
        TaskSource::Jsonl { path, sha256 } => {
            crate::jsonl_tasks::build_jsonl_task(&task.name, path, sha256, dir, &task.sizes, seed)?;
        }
    }
    if !matches!(task.source, TaskSource::Jsonl { .. }) {
        let stamp = dir.join(crate::jsonl_tasks::BUILT_FROM_FILE);
        write_json_atomic(&stamp, &build_record(task, seed))?;
    }
    tracing::info!(task = task.name, dir = %dir.display(), "built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn selected_tasks<'a>(preset: &'a Preset, options: &RunOptions) -> Vec<&'a TaskSpec> {
    preset
        .tasks
        .iter()
        .filter(|t| options.tasks.is_empty() || options.tasks.contains(&t.name))
        .collect()
}

fn seeds(preset: &Preset, options: &RunOptions) -> Vec<u64> {
    if options.seeds.is_empty() {
        preset.seeds.clone()
    } else {
        options.seeds.clone()
    }
}

/// Runs every missing baseline of the preset; results already present are kept.
pub fn run_baselines(preset: &Preset, options: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let mut summary = RunSummary::default();
    let build_started = Instant::now();
    build_tasks(preset, options, false)?;
    summary.build_seconds = build_started.elapsed().as_secs_f64();
    for task in selected_tasks(preset, options) {
        run_task(preset, task, options, &mut summary)?;
    }
    summary.total_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The per-seed result files of one task.
#[derive(Debug, Clone)]
pub struct ResultPaths {
    results: PathBuf,
    task: String,
    weak_key: String,
    strong_key: String,
    weak_name: String,
    strong_name: String,
}

impl ResultPaths {
    /// Paths for `task` of `preset` under `results`.
    pub fn new(preset: &Preset, task: &TaskSpec, results: &Path) -> ResultPaths {
        let (weak, strong) = (preset.weak_for(task), preset.strong_for(task));
        ResultPaths {
            results: results.to_owned(),
            task: task.name.clone(),
            weak_name: weak.short_name(),
            strong_name: strong.short_name(),
            weak_key: format!("{}_{}", weak.short_name(), weak.hyper_key()),
            strong_key: format!("{}_{}", strong.short_name(), strong.hyper_key()),
        }
    }

    /// The weak teacher's seed file.
    pub fn weak(&self, seed: u64) -> PathBuf {
        self.results
            .join(format!("{}_weak_artifacts", self.task))
            .join(&self.weak_key)
            .join(format!("seed_{seed}.json"))
    }

    /// The ceiling's seed file.
    pub fn ceiling(&self, seed: u64) -> PathBuf {
        self.results
            .join(format!("{}_train_ceiling", self.task))
            .join(&self.strong_key)
            .join(format!("seed_{seed}.json"))
    }

    /// A method's seed file.
    pub fn method(&self, spec: &MethodSpec, hyper: &str, seed: u64) -> PathBuf {
        let models = if spec.uses_teacher() {
            format!("{}_{}", self.strong_name, self.weak_name)
        } else {
            self.strong_name.clone()
        };
        self.results
            .join(format!("{}_{}", self.task, spec.idea_name()))
            .join(format!("{models}_{hyper}{}", spec.key_extras()))
            .join(format!("seed_{seed}.json"))
    }
}

/// SHA-256 (hex) of `value`'s JSON.
fn hash_json(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 over the task directory's split files.
pub fn task_data_hash(dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for split in Split::ALL {
        let path = dir.join(split.file_name());
        if path.is_file() {
            hasher.update(split.name().as_bytes());
            hasher.update(std::fs::read(&path).at(&path)?);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The record at `path` if it exists, its `config_hash` is `hash` and every eval entry
/// holds its per-row outcomes (a file written before them, or edited, is recomputed).
fn cached_record(path: &Path, hash: &str) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    let current = value.get("config_hash").and_then(Value::as_str) == Some(hash);
    (current && has_row_outcomes(&value)).then_some(value)
}

/// Whether every split of the record's `eval` has `correct_rows`, one per counted row.
fn has_row_outcomes(record: &Value) -> bool {
    let Some(eval) = record.get("eval").and_then(Value::as_object) else {
        return false;
    };
    eval.values().all(|entry| {
        let rows = entry.get("correct_rows").and_then(Value::as_str);
        let total = entry.get("total").and_then(Value::as_u64);
        matches!((rows, total), (Some(rows), Some(total)) if rows.len() as u64 == total)
    })
}

/// Writes JSON to a temporary file beside `path`, then renames it into place.
pub fn write_json_atomic(path: &Path, value: &Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    let partial = path.with_extension("json.partial");
    let text = serde_json::to_vec_pretty(value).map_err(|source| TestbedError::Json {
        path: path.to_owned(),
        source,
    })?;
    std::fs::write(&partial, text).at(&partial)?;
    std::fs::rename(&partial, path).at(path)?;
    Ok(())
}

/// Learner inputs of one task: rows (as learners read them), labels and group ids per split.
struct TaskData {
    /// The task's name (for errors).
    name: String,
    rows: BTreeMap<Split, Vec<Example>>,
    /// Whether learners leave out the constant claim ([`constant_choice`]).
    drop_choice: bool,
    labels: BTreeMap<Split, Vec<Label>>,
    groups: Vec<String>,
    subsets: BTreeMap<Split, Vec<String>>,
}

fn task_data(task: &LabeledTask, name: &str) -> Result<TaskData> {
    let drop_choice = task
        .split(Split::TrainUnlabel)
        .is_some_and(|f| constant_choice(f.examples()));
    let mut data = TaskData {
        name: name.into(),
        rows: BTreeMap::new(),
        drop_choice,
        labels: BTreeMap::new(),
        groups: Vec::new(),
        subsets: BTreeMap::new(),
    };
    for split in Split::ALL {
        let Some(file) = task.split(split) else {
            continue;
        };
        data.rows.insert(split, file.examples().to_vec());
        let labels = file.labels().ok_or_else(|| TestbedError::BadTask {
            task: name.into(),
            message: format!("{} has unlabeled rows", split.name()),
        })?;
        data.labels.insert(split, labels);
        data.subsets.insert(
            split,
            file.examples()
                .iter()
                .map(|e| e.subset().unwrap_or("").to_owned())
                .collect(),
        );
        if split == Split::TrainUnlabel {
            data.groups = group_ids(file.examples());
        }
    }
    Ok(data)
}

/// Features of every split for one learner.
type SplitFeatures = BTreeMap<Split, Matrix>;

/// A learner with its view of every split of one task.
struct TaskLearner {
    task: String,
    view: LearnerView,
}

/// Features for a head, or prompts for LoRA fine-tuning.
enum LearnerView {
    Head {
        head: HeadSpec,
        features: SplitFeatures,
        extractor: Option<Box<FrozenExtractor>>,
    },
    Lora {
        learner: Box<LoraLearner>,
        prompts: BTreeMap<Split, Vec<Prompt>>,
    },
}

/// A trained learner.
enum Fitted {
    Head(FeatureHead),
    Lora(Box<aar_engine::Model>),
}

impl TaskLearner {
    fn prepare(spec: &LearnerSpec, data: &TaskData, options: &RunOptions) -> Result<TaskLearner> {
        let view = match spec {
            LearnerSpec::Lora { .. } => {
                let learner = LoraLearner::load(spec, &options.assets_dir)?;
                let prompts = data
                    .rows
                    .iter()
                    .map(|(split, rows)| Ok((*split, learner.prompts(rows)?)))
                    .collect::<Result<_>>()?;
                LearnerView::Lora {
                    learner: Box::new(learner),
                    prompts,
                }
            }
            LearnerSpec::BagOfWords { min_count, head } => {
                let texts = |rows: &[Example]| -> Vec<String> {
                    rows.iter().map(|e| row_text(e, data.drop_choice)).collect()
                };
                let gold = data
                    .rows
                    .get(&Split::TrainLabel)
                    .map_or_else(Vec::new, |rows| texts(rows));
                let vocabulary = Vocabulary::fit(&gold, *min_count);
                let features = data
                    .rows
                    .iter()
                    .map(|(split, rows)| Ok((*split, vocabulary.transform(&texts(rows))?)))
                    .collect::<Result<_>>()?;
                LearnerView::Head {
                    head: *head,
                    features,
                    extractor: None,
                }
            }
            LearnerSpec::Frozen { head, .. } => {
                let extractor =
                    FrozenExtractor::load(spec, &options.assets_dir, &options.feature_cache)?;
                let mut features = BTreeMap::new();
                for (split, rows) in &data.rows {
                    let started = Instant::now();
                    let (matrix, from_cache) = extractor.row_features(rows, data.drop_choice)?;
                    tracing::info!(
                        learner = spec.short_name(),
                        split = split.name(),
                        rows = rows.len(),
                        from_cache,
                        "features in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                    features.insert(*split, matrix);
                }
                LearnerView::Head {
                    head: *head,
                    features,
                    extractor: Some(Box::new(extractor)),
                }
            }
        };
        Ok(TaskLearner {
            task: data.name.clone(),
            view,
        })
    }

    /// Trains on the rows `indices` of `split` (all when `None`) with `targets`; `head`
    /// replaces the learner's head for head learners.
    fn fit(
        &self,
        split: Split,
        indices: Option<&[usize]>,
        targets: &[[f32; 2]],
        loss: HeadLoss,
        head: Option<HeadSpec>,
        seed: u64,
    ) -> Result<Fitted> {
        let missing = || missing_split(&self.task, split);
        match &self.view {
            LearnerView::Head {
                head: own,
                features,
                ..
            } => {
                let x = features.get(&split).ok_or_else(missing)?;
                let x = match indices {
                    Some(indices) => x.select(indices)?,
                    None => x.clone(),
                };
                let config = head_config(&head.unwrap_or(*own), seed, loss);
                Ok(Fitted::Head(train_head_on(&x, targets, &config)?))
            }
            LearnerView::Lora { learner, prompts } => {
                let all = prompts.get(&split).ok_or_else(missing)?;
                let chosen: Vec<Prompt> = match indices {
                    Some(indices) => indices.iter().map(|&i| all[i].clone()).collect(),
                    None => all.clone(),
                };
                Ok(Fitted::Lora(Box::new(
                    learner.fit(&chosen, targets, loss, seed)?,
                )))
            }
        }
    }

    /// `[p0, p1]` per row of `split`.
    fn predict(&self, fitted: &Fitted, split: Split) -> Result<Vec<[f32; 2]>> {
        let missing = || missing_split(&self.task, split);
        match (&self.view, fitted) {
            (LearnerView::Head { features, .. }, Fitted::Head(head)) => {
                Ok(head.predict_matrix(features.get(&split).ok_or_else(missing)?)?)
            }
            (LearnerView::Lora { learner, prompts }, Fitted::Lora(model)) => {
                learner.predict(model, prompts.get(&split).ok_or_else(missing)?)
            }
            _ => Err(TestbedError::Unsupported(
                "a fitted learner predicts with the learner that trained it".into(),
            )),
        }
    }

    /// The student's zero-shot `p(label 1)` on `train_unlabel`, where it has one.
    fn zero_shot_prior(&self, data: &TaskData, source: &TaskSource) -> Result<Option<Vec<f32>>> {
        match &self.view {
            LearnerView::Head {
                features,
                extractor: Some(extractor),
                ..
            } => match features.get(&Split::TrainUnlabel) {
                Some(train) => extractor.zero_shot_prior(train, verbalizers(source).as_ref()),
                None => Ok(None),
            },
            LearnerView::Head {
                extractor: None, ..
            } => Ok(None),
            LearnerView::Lora { learner, .. } => match data.rows.get(&Split::TrainUnlabel) {
                Some(rows) => learner.zero_shot_prior(rows),
                None => Ok(None),
            },
        }
    }
}

/// Accuracy of `probs` on `labels`, with counts, as the reference's eval entry, and which
/// rows were right (`correct_rows`, in the split's row order: the test-noise error of a
/// PGR is computed from them).
fn eval_entry(probs: &[[f32; 2]], labels: &[Label], context: &str) -> Result<(f64, Value)> {
    let predictions: Vec<Label> = probs.iter().map(|p| Label::from(p[1] > p[0])).collect();
    let metric = |source| TestbedError::Metric {
        context: context.into(),
        source,
    };
    let acc = accuracy(&predictions, labels).map_err(metric)?;
    let rows = CorrectRows::score(&predictions, labels).map_err(metric)?;
    let ones = predictions.iter().filter(|l| **l == Label::One).count();
    Ok((
        acc.accuracy,
        json!({
            "accuracy": acc.accuracy,
            "correct": acc.correct,
            "total": acc.total,
            "pred_distribution": {"0": predictions.len() - ones, "1": ones},
            "correct_rows": rows,
        }),
    ))
}

/// Evaluates a fitted learner on every eval split present; returns (public test accuracy,
/// eval JSON).
fn evaluate(
    learner: &TaskLearner,
    fitted: &Fitted,
    data: &TaskData,
    context: &str,
) -> Result<(f64, Value)> {
    let mut eval = Map::new();
    let mut test_acc = f64::NAN;
    for split in EVAL_SPLITS {
        let Some(labels) = data.labels.get(&split) else {
            continue;
        };
        let predictions = learner.predict(fitted, split)?;
        let (acc, entry) =
            eval_entry(&predictions, labels, &format!("{context} {}", split.name()))?;
        if split == Split::Test {
            test_acc = acc;
        }
        eval.insert(split.name().into(), entry);
    }
    Ok((test_acc, Value::Object(eval)))
}

fn interrupted(options: &RunOptions) -> bool {
    options
        .interrupt
        .as_ref()
        .is_some_and(|flag| flag.load(Ordering::SeqCst))
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One job of a task's run.
enum Job<'a> {
    Weak(u64),
    Ceiling(u64),
    Method(&'a MethodSpec, u64),
}

/// A job with its result file and the config hash that file must record.
struct PlannedJob<'a> {
    job: Job<'a>,
    path: PathBuf,
    hash: String,
}

/// Every result file of a task over `seeds`, in the order they are computed (per seed:
/// the weak teacher, the ceiling, then the methods, which read both).
fn plan_jobs<'a>(
    preset: &Preset,
    spec: &TaskSpec,
    options: &'a RunOptions,
    paths: &ResultPaths,
    seeds: &[u64],
) -> Result<Vec<PlannedJob<'a>>> {
    let data_hash = task_data_hash(&options.tasks_dir().join(&spec.name))?;
    let (weak, strong) = (preset.weak_for(spec), preset.strong_for(spec));
    let hash_of = |kind: &str, method: Option<&MethodSpec>, seed: u64| {
        hash_json(&json!({
            "version": RESULTS_VERSION,
            "task_data": data_hash,
            "kind": kind,
            "weak": weak,
            "strong": strong,
            "method": method,
            "seed": seed,
        }))
    };
    let mut jobs = Vec::new();
    for &seed in seeds {
        jobs.push(PlannedJob {
            job: Job::Weak(seed),
            path: paths.weak(seed),
            hash: hash_of("weak", None, seed),
        });
        jobs.push(PlannedJob {
            job: Job::Ceiling(seed),
            path: paths.ceiling(seed),
            hash: hash_of("ceiling", None, seed),
        });
        for method in &options.methods {
            let hyper = method_head(method, strong)
                .map_or_else(|| strong.hyper_key(), |h| crate::preset::head_key(&h));
            jobs.push(PlannedJob {
                job: Job::Method(method, seed),
                path: paths.method(method, &hyper, seed),
                hash: hash_of(method.idea_name(), Some(method), seed),
            });
        }
    }
    Ok(jobs)
}

/// What a task's jobs train from: its rows and labels, both learners' views of them and
/// the student's zero-shot prior.
struct PreparedTask<'a> {
    spec: &'a TaskSpec,
    weak: &'a LearnerSpec,
    strong: &'a LearnerSpec,
    data: TaskData,
    weak_learner: TaskLearner,
    strong_learner: TaskLearner,
    prior: Option<Vec<f32>>,
}

impl<'a> PreparedTask<'a> {
    fn prepare(
        preset: &'a Preset,
        spec: &'a TaskSpec,
        options: &RunOptions,
        summary: &mut RunSummary,
    ) -> Result<PreparedTask<'a>> {
        let (weak, strong) = (preset.weak_for(spec), preset.strong_for(spec));
        let task = LabeledTask::load(&options.tasks_dir().join(&spec.name))?;
        let data = task_data(&task, &spec.name)?;
        let started = Instant::now();
        let weak_learner = TaskLearner::prepare(weak, &data, options)?;
        let strong_learner = TaskLearner::prepare(strong, &data, options)?;
        let prior = strong_learner.zero_shot_prior(&data, &spec.source)?;
        summary.feature_seconds += started.elapsed().as_secs_f64();
        Ok(PreparedTask {
            spec,
            weak,
            strong,
            data,
            weak_learner,
            strong_learner,
            prior,
        })
    }

    fn gold(&self, split: Split) -> Result<&[Label]> {
        self.data
            .labels
            .get(&split)
            .map(Vec::as_slice)
            .ok_or_else(|| missing_split(&self.spec.name, split))
    }
}

fn one_hot(labels: &[Label]) -> Vec<[f32; 2]> {
    labels
        .iter()
        .map(|l| {
            if *l == Label::One {
                [0.0, 1.0]
            } else {
                [1.0, 0.0]
            }
        })
        .collect()
}

/// The weak teacher's outputs a method of the same seed reads: soft labels on
/// `train_unlabel`, its test accuracy and its hard labels' accuracy there.
type WeakOutput = (Vec<[f32; 2]>, f64, f64);

/// Outputs of earlier jobs that later jobs of the same seed read.
#[derive(Default)]
struct SeedOutputs {
    weak: BTreeMap<u64, WeakOutput>,
    ceiling_acc: BTreeMap<u64, f64>,
}

impl SeedOutputs {
    /// Takes what a cached weak or ceiling record holds.
    fn remember_cached(&mut self, planned: &PlannedJob, record: &Value) -> Result<()> {
        match planned.job {
            Job::Weak(seed) => {
                self.weak
                    .insert(seed, weak_from_record(record, &planned.path)?);
            }
            Job::Ceiling(seed) => {
                let acc = record
                    .get("strong_acc")
                    .and_then(Value::as_f64)
                    .unwrap_or(f64::NAN);
                self.ceiling_acc.insert(seed, acc);
            }
            Job::Method(..) => {}
        }
        Ok(())
    }
}

fn run_weak(task: &PreparedTask, seed: u64, outputs: &mut SeedOutputs) -> Result<Value> {
    let started = Instant::now();
    let weak = task.weak;
    let fitted = task.weak_learner.fit(
        Split::TrainLabel,
        None,
        &one_hot(task.gold(Split::TrainLabel)?),
        HeadLoss::CrossEntropy,
        None,
        seed,
    )?;
    let soft = task.weak_learner.predict(&fitted, Split::TrainUnlabel)?;
    let (hard_acc, _) = eval_entry(&soft, task.gold(Split::TrainUnlabel)?, "weak train_unlabel")?;
    let (weak_acc, eval) = evaluate(&task.weak_learner, &fitted, &task.data, "weak teacher")?;
    let (epochs, batch_size, lr) = weak.schedule();
    let record = json!({
        "idea_name": "weak_artifacts",
        "dataset_name": task.spec.name,
        "seed": seed,
        "weak_model": weak.short_name(),
        "weak_acc": weak_acc,
        "soft_labels": soft.iter().map(|p| [f64::from(p[0]), f64::from(p[1])]).collect::<Vec<_>>(),
        "hard_label_acc": hard_acc,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "scheduler": if weak.head().is_some() { "constant" } else { "linear" },
        "training_time": started.elapsed().as_secs_f64(),
        "config": weak,
        "eval": eval,
    });
    outputs.weak.insert(seed, (soft, weak_acc, hard_acc));
    Ok(record)
}

fn run_ceiling(task: &PreparedTask, seed: u64, outputs: &mut SeedOutputs) -> Result<Value> {
    let started = Instant::now();
    let strong = task.strong;
    let fitted = task.strong_learner.fit(
        Split::TrainUnlabel,
        None,
        &one_hot(task.gold(Split::TrainUnlabel)?),
        HeadLoss::CrossEntropy,
        None,
        seed,
    )?;
    let (strong_acc, eval) = evaluate(&task.strong_learner, &fitted, &task.data, "ceiling")?;
    outputs.ceiling_acc.insert(seed, strong_acc);
    let (epochs, batch_size, lr) = strong.schedule();
    Ok(json!({
        "idea_name": "train_ceiling",
        "dataset_name": task.spec.name,
        "seed": seed,
        "strong_model": strong.short_name(),
        "weak_model": null,
        "strong_acc": strong_acc,
        "training_time": started.elapsed().as_secs_f64(),
        "config": {"epochs": epochs, "lr": lr,
                   "batch_size": batch_size, "seed": seed,
                   "learner": strong},
        "detailed_eval": {"ceiling": {"final_eval": eval.get("test")}},
        "eval": eval,
    }))
}

fn run_method_job(
    task: &PreparedTask,
    method: &MethodSpec,
    seed: u64,
    outputs: &SeedOutputs,
    summary: &mut RunSummary,
) -> Result<Value> {
    let started = Instant::now();
    let (weak, strong) = (task.weak, task.strong);
    let (soft, weak_acc, hard_acc) =
        outputs
            .weak
            .get(&seed)
            .cloned()
            .ok_or_else(|| TestbedError::BadTask {
                task: task.spec.name.clone(),
                message: format!("no weak teacher output for seed {seed}"),
            })?;
    let inputs = MethodInputs {
        rows: task.gold(Split::TrainUnlabel)?.len(),
        weak_soft: &soft,
        groups: &task.data.groups,
        prior: task.prior.as_deref(),
    };
    let plan = plan_training(method, &inputs)?;
    let head = method_head(method, strong);
    let fitted = task.strong_learner.fit(
        Split::TrainUnlabel,
        Some(&plan.indices),
        &plan.targets,
        plan.loss,
        head,
        seed,
    )?;
    let (transfer_acc, eval) = evaluate(
        &task.strong_learner,
        &fitted,
        &task.data,
        method.idea_name(),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    summary.transfer_seconds.push(seconds);
    let (epochs, batch_size, lr) = head.map_or_else(
        || strong.schedule(),
        |h| (h.epochs, h.batch_size, h.learning_rate),
    );
    let mut record = json!({
        "idea_name": method.idea_name(),
        "dataset_name": task.spec.name,
        "seed": seed,
        "weak_model": if method.uses_teacher() { json!(weak.short_name()) } else { Value::Null },
        "strong_model": strong.short_name(),
        "weak_acc": weak_acc,
        "hard_weak_label_acc": hard_acc,
        "strong_acc": outputs.ceiling_acc.get(&seed),
        "transfer_acc": transfer_acc,
        "pgr": null,
        "training_time": seconds,
        "aar_mode": false,
        "config": {"epochs": epochs, "lr": lr,
                   "batch_size": batch_size, "seed": seed, "method": method},
        "eval": eval,
    });
    if let Value::Object(object) = &mut record {
        object.extend(plan.stats);
    }
    Ok(record)
}

/// Runs one job; `None` when it is skipped (a method the student cannot run).
fn run_job(
    task: &PreparedTask,
    job: &Job,
    outputs: &mut SeedOutputs,
    summary: &mut RunSummary,
) -> Result<Option<(String, Value)>> {
    Ok(Some(match *job {
        Job::Weak(seed) => (format!("weak seed {seed}"), run_weak(task, seed, outputs)?),
        Job::Ceiling(seed) => (
            format!("ceiling seed {seed}"),
            run_ceiling(task, seed, outputs)?,
        ),
        Job::Method(method, _) if method.needs_prior() && task.prior.is_none() => {
            tracing::warn!(
                task = task.spec.name,
                learner = task.strong.short_name(),
                "{} skipped: the student has no zero-shot reading of this task",
                method.idea_name()
            );
            return Ok(None);
        }
        Job::Method(method, seed) => (
            format!("{} seed {seed}", method.idea_name()),
            run_method_job(task, method, seed, outputs, summary)?,
        ),
    }))
}

/// Stamps a computed record with its hash and key and writes it in place.
fn write_record(planned: &PlannedJob, mut record: Value) -> Result<Value> {
    if let Value::Object(object) = &mut record {
        object.insert("config_hash".into(), json!(planned.hash));
        object.insert("hyperparam_config_key".into(), json!(key_of(&planned.path)));
        object.insert("cached_at".into(), json!(now_seconds()));
    }
    write_json_atomic(&planned.path, &record)?;
    Ok(record)
}

/// Progress of a task's run, for the log.
struct Progress {
    started: Instant,
    done: usize,
    to_run: usize,
}

impl Progress {
    fn log(&self, task: &str, label: &str, record: &Value, job_seconds: f64) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / self.done as f64 * (self.to_run - self.done) as f64;
        let test_acc = record
            .get("eval")
            .and_then(|e| e.get("test"))
            .and_then(|e| e.get("accuracy"))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN);
        tracing::info!(
            task,
            "[{}/{}] {label}: test acc {test_acc:.3} ({job_seconds:.2} s; elapsed {elapsed:.0} s, ETA {eta:.0} s)",
            self.done,
            self.to_run,
        );
    }
}

fn run_task(
    preset: &Preset,
    spec: &TaskSpec,
    options: &RunOptions,
    summary: &mut RunSummary,
) -> Result<()> {
    let paths = ResultPaths::new(preset, spec, &options.results_dir());
    let seeds = seeds(preset, options);
    let jobs = plan_jobs(preset, spec, options, &paths, &seeds)?;
    let cached: Vec<Option<Value>> = jobs
        .iter()
        .map(|j| cached_record(&j.path, &j.hash))
        .collect();
    let to_run = cached.iter().filter(|c| c.is_none()).count();
    summary.cached += jobs.len() - to_run;
    if to_run == 0 {
        tracing::info!(task = spec.name, "all {} results cached", jobs.len());
        write_agent_copy(preset, spec, options, &paths, &seeds)?;
        return Ok(());
    }
    tracing::info!(
        task = spec.name,
        "{to_run} of {} results to compute",
        jobs.len()
    );
    let task = PreparedTask::prepare(preset, spec, options, summary)?;
    let mut outputs = SeedOutputs::default();
    let mut progress = Progress {
        started: Instant::now(),
        done: 0,
        to_run,
    };
    for (planned, cached) in jobs.iter().zip(&cached) {
        if let Some(record) = cached {
            // Cached: its outputs may still be needed by later jobs of the same seed.
            outputs.remember_cached(planned, record)?;
            continue;
        }
        if interrupted(options) {
            return Err(TestbedError::Interrupted);
        }
        let job_started = Instant::now();
        progress.done += 1;
        let Some((label, record)) = run_job(&task, &planned.job, &mut outputs, summary)? else {
            continue;
        };
        let record = write_record(planned, record)?;
        summary.computed += 1;
        progress.log(
            &spec.name,
            &label,
            &record,
            job_started.elapsed().as_secs_f64(),
        );
    }
    write_agent_copy(preset, spec, options, &paths, &seeds)?;
    Ok(())
}

/// The head a method trains: its own when it names one and the student is a head learner.
fn method_head(method: &MethodSpec, strong: &LearnerSpec) -> Option<HeadSpec> {
    strong.head().map(|own| method.head.unwrap_or(own))
}

fn key_of(path: &Path) -> String {
    path.parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn missing_split(task: &str, split: Split) -> TestbedError {
    TestbedError::BadTask {
        task: task.into(),
        message: format!("no {} split", split.name()),
    }
}

fn weak_from_record(record: &Value, path: &Path) -> Result<(Vec<[f32; 2]>, f64, f64)> {
    let parsed: aar_results::WeakArtifactRecord =
        serde_json::from_value(record.clone()).map_err(|source| TestbedError::Json {
            path: path.to_owned(),
            source,
        })?;
    Ok((
        parsed
            .soft_labels
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32])
            .collect(),
        parsed.weak_acc,
        parsed.hard_label_acc.unwrap_or(f64::NAN),
    ))
}

/// What an agent's `aar run-method` reads beside the label-free task copy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentTaskMeta {
    /// The task's name.
    pub task: String,
    /// The preset it belongs to.
    pub preset: String,
    /// The student learner methods train.
    pub strong: LearnerSpec,
    /// Descriptions of label 0 and 1 for the zero-shot prior, when the task has them.
    pub verbalizers: Option<[String; 2]>,
}

/// The weak teacher's outputs an agent may use: soft labels on `train_unlabel`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WeakLabels {
    /// The weak teacher's seed.
    pub seed: u64,
    /// `[p0, p1]` per `train_unlabel` row, in file order.
    pub soft_labels: Vec<[f64; 2]>,
}

/// File names inside an agent task directory.
pub const AGENT_META_FILE: &str = "testbed.json";
/// The weak teacher's soft labels in an agent task directory.
pub const AGENT_WEAK_FILE: &str = "weak_labels.json";

fn write_agent_copy(
    preset: &Preset,
    spec: &TaskSpec,
    options: &RunOptions,
    paths: &ResultPaths,
    seeds: &[u64],
) -> Result<()> {
    let Some(&seed) = seeds.first() else {
        return Ok(());
    };
    let task = LabeledTask::load(&options.tasks_dir().join(&spec.name))?;
    let out = options.agent_dir().join(&spec.name);
    let key = aar_tasks::IdKey::load_or_create(&options.id_key_path())?;
    aar_tasks::write_agent_copy_with_key(&task, &out, &key)?;
    let weak_path = paths.weak(seed);
    let text = std::fs::read_to_string(&weak_path).at(&weak_path)?;
    let record: aar_results::WeakArtifactRecord =
        serde_json::from_str(&text).map_err(|source| TestbedError::Json {
            path: weak_path.clone(),
            source,
        })?;
    let weak = WeakLabels {
        seed,
        soft_labels: record.soft_labels,
    };
    let meta = AgentTaskMeta {
        task: spec.name.clone(),
        preset: preset.name.clone(),
        strong: preset.strong_for(spec).clone(),
        verbalizers: verbalizers(&spec.source),
    };
    let to_value = |v: Result<Value, serde_json::Error>, path: &Path| {
        v.map_err(|source| TestbedError::Json {
            path: path.to_owned(),
            source,
        })
    };
    let weak_out = out.join(AGENT_WEAK_FILE);
    write_json_atomic(
        &weak_out,
        &to_value(serde_json::to_value(&weak), &weak_out)?,
    )?;
    let meta_out = out.join(AGENT_META_FILE);
    write_json_atomic(
        &meta_out,
        &to_value(serde_json::to_value(&meta), &meta_out)?,
    )?;
    Ok(())
}

/// The stamp in an agent feature cache: a digest of the agent copies it was filled from.
pub const AGENT_CACHE_STAMP: &str = "agent-copies.sha256";

/// Fills [`RunOptions::agent_feature_cache`] with every feature `aar run-method` and
/// `aar features` read for `tasks`, by running the agent-facing runner on the agent
/// copies alone: the cache then holds features of agent-facing texts only (the inputs of
/// `train_unlabel`, `test`, `test_private` and the label descriptions), never of
/// `train_label` or the transfer set. A cache filled from other copies (a rebuilt
/// testbed, other tasks) is emptied first, so texts that have since moved to a labeled
/// split do not linger. Returns the cache directory.
///
/// The fill reads through to the testbed's own cache ([`RunOptions::feature_cache`],
/// never written here): an agent split's prompts are those of the labeled split it was
/// copied from, so its key is there already and the file is linked or copied in rather
/// than computed. Only keys the runs over the agent copies ask for are taken.
pub fn fill_agent_feature_cache(options: &RunOptions, tasks: &[String]) -> Result<PathBuf> {
    let cache = options.agent_feature_cache();
    let stamp = agent_copies_digest(options, tasks)?;
    let stamp_path = cache.join(AGENT_CACHE_STAMP);
    let current = std::fs::read_to_string(&stamp_path).ok();
    if current.as_deref().map(str::trim) != Some(stamp.as_str()) && cache.exists() {
        tracing::info!(cache = %cache.display(), "agent feature cache is from other agent copies: emptied");
        std::fs::remove_dir_all(&cache).at(&cache)?;
    }
    std::fs::create_dir_all(&cache).at(&cache)?;
    for (done, task) in tasks.iter().enumerate() {
        // Minutes per task on a cold cache: say what is happening.
        tracing::info!(
            task = %task,
            "researchers' feature cache: task {} of {} (features of the agent copy, cached after the first run)",
            done + 1,
            tasks.len()
        );
        let run = crate::agent::AgentRun {
            task_dir: options.agent_dir().join(task),
            weak_labels: None,
            assets_dir: options.assets_dir.clone(),
            feature_cache: cache.clone(),
            seed: 0,
        };
        let started = Instant::now();
        let vanilla = MethodSpec::new(crate::method::MethodKind::Vanilla);
        let (_, counts) = crate::agent::run_method_reading_through(
            &run,
            crate::agent::Recipe::Spec(&vanilla),
            &crate::agent::default_splits(&run.task_dir),
            std::slice::from_ref(&options.feature_cache),
        )?;
        tracing::info!(
            task = %task,
            copied = counts.copied,
            computed = counts.computed,
            cached = counts.cached,
            "researchers' feature cache: {} feature sets copied from the testbed's cache, {} computed, {} already there ({:.1} s)",
            counts.copied,
            counts.computed,
            counts.cached,
            started.elapsed().as_secs_f64()
        );
    }
    std::fs::write(&stamp_path, format!("{stamp}\n")).at(&stamp_path)?;
    Ok(cache)
}

/// SHA-256 over each task's name and its agent copy's split files (names and bytes).
fn agent_copies_digest(options: &RunOptions, tasks: &[String]) -> Result<String> {
    let mut hasher = Sha256::new();
    for task in tasks {
        hasher.update((task.len() as u64).to_le_bytes());
        hasher.update(task.as_bytes());
        for split in aar_tasks::AGENT_SPLITS {
            let path = options.agent_dir().join(task).join(split.file_name());
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).at(&path)?;
            hasher.update(split.file_name().as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Descriptions of label 0 and 1 for the zero-shot prior, for tasks that have them.
fn verbalizers(source: &TaskSource) -> Option<[String; 2]> {
    match source {
        TaskSource::Text { corpus } => Some(corpus.verbalizers().map(String::from)),
        TaskSource::Pairs { .. } | TaskSource::Pack { .. } | TaskSource::Jsonl { .. } => None,
    }
}

/// Hard labels of soft ones (for callers that only need the argmax).
pub fn hard_labels(soft: &[[f32; 2]]) -> Vec<[f32; 2]> {
    soft.iter().map(|p| hard(*p)).collect()
}
