//! The agent-facing runner behind `aar run-method`: a method description applied to the
//! label-free copy of a task. It reads `train_unlabel.jsonl` and the `<split>.jsonl` of
//! every split it is asked to predict with labels forbidden (a labeled file is an error,
//! not a shortcut), the weak teacher's soft labels and the task's metadata, and writes
//! predictions only. The verifier runs it the same way on copies of splits the agent never
//! saw (`transfer` is just another split file there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aar_core::Label;
use aar_engine::features::Matrix;
use aar_tasks::{LabelPolicy, Split, read_task_file};
use serde::{Deserialize, Serialize};

use crate::baselines::{AGENT_META_FILE, AGENT_WEAK_FILE, AgentTaskMeta, WeakLabels};
use crate::error::{IoContext, Result, TestbedError};
use crate::features::{FeatureCounts, FrozenExtractor, constant_choice, group_ids};
use crate::method::{MethodInputs, MethodSpec, Student, fit_plan, train_student};
use crate::plan::{PlanSummary, load_plan};
use crate::preset::HeadSpec;

/// Predictions of the asked splits, as `aar run-method` writes them: `splits` is the
/// method contract's output (`aar_oversight::method`); `predictions`, `probabilities`
/// and `private_predictions` are the public and private test's, for older readers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    /// The task.
    pub task: String,
    /// The built-in method that produced them, when a spec did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodSpec>,
    /// The training plan that produced them, when a plan did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanSummary>,
    /// The training seed.
    pub seed: u64,
    /// Predicted label (0/1) per test row, in file order (empty when `test` was not asked).
    pub predictions: Vec<u8>,
    /// `p(label 1)` per test row (empty when `test` was not asked).
    pub probabilities: Vec<f32>,
    /// Predicted label per `test_private` row, when that split was asked (by default,
    /// when the agent copy has its inputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_predictions: Option<Vec<u8>>,
    /// Predicted label (0/1) per row of every asked split, in file order.
    #[serde(default)]
    pub splits: BTreeMap<String, Vec<u8>>,
    /// The student's `p(label 1)` per row of every asked split, in file order (for
    /// iterative methods: ask for `train_unlabel` to relabel it).
    #[serde(default)]
    pub split_probabilities: BTreeMap<String, Vec<f32>>,
    /// Seconds to train and predict (features included).
    pub seconds: f64,
}

/// Where `run_method` finds its inputs.
#[derive(Debug, Clone)]
pub struct AgentRun {
    /// The agent's task directory (`train_unlabel.jsonl`, `test.jsonl`, `testbed.json`).
    pub task_dir: PathBuf,
    /// The weak labels (default: `weak_labels.json` in the task directory).
    pub weak_labels: Option<PathBuf>,
    /// Assets root, for the student model.
    pub assets_dir: PathBuf,
    /// Frozen-feature cache.
    pub feature_cache: PathBuf,
    /// Training seed.
    pub seed: u64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    serde_json::from_str(&text).map_err(|source| TestbedError::Json {
        path: path.to_owned(),
        source,
    })
}

/// A student trained on an agent copy, with the copy that reads texts the way it was trained.
struct TrainedOnAgentCopy {
    copy: AgentCopy,
    student: Student,
    plan: Option<PlanSummary>,
}

impl TrainedOnAgentCopy {
    fn predict(&self, file: &aar_tasks::TaskFile) -> Result<Vec<[f32; 2]>> {
        self.student.predict(&self.copy.file_features(file)?)
    }
}

/// What a student is trained from: a built-in method or a researcher's training plan.
#[derive(Debug, Clone, Copy)]
pub enum Recipe<'a> {
    /// A built-in method with its settings.
    Spec(&'a MethodSpec),
    /// A training plan file ([`crate::plan`]).
    Plan(&'a Path),
}

/// Trains the student `spec` describes on the agent copy and predicts its default splits
/// ([`default_splits`]).
pub fn run_method(run: &AgentRun, spec: &MethodSpec) -> Result<Predictions> {
    run_method_on_splits(run, Recipe::Spec(spec), &default_splits(&run.task_dir))
}

/// The splits `aar run-method` predicts unless told: `test`, and `test_private` when the
/// copy has its inputs.
pub fn default_splits(task_dir: &Path) -> Vec<String> {
    let mut splits = vec![Split::Test.name().to_owned()];
    if task_dir.join(Split::TestPrivate.file_name()).is_file() {
        splits.push(Split::TestPrivate.name().to_owned());
    }
    splits
}

/// Trains the student `recipe` describes on the agent copy and predicts each split of
/// `splits` (`<name>.jsonl` in the copy, read with labels forbidden). Every split file is
/// read before training, so a missing one fails at once.
pub fn run_method_on_splits(
    run: &AgentRun,
    recipe: Recipe<'_>,
    splits: &[String],
) -> Result<Predictions> {
    Ok(run_method_reading_through(run, recipe, splits, &[])?.0)
}

/// [`run_method_on_splits`] with the run's feature cache reading through to
/// `seed_caches` (only read): a feature set it asks for that a seed holds is copied into
/// the run's cache instead of computed ([`FrozenExtractor::with_seed_caches`]). Also says
/// how many feature sets were computed, read from the cache and copied from a seed.
pub fn run_method_reading_through(
    run: &AgentRun,
    recipe: Recipe<'_>,
    splits: &[String],
    seed_caches: &[PathBuf],
) -> Result<(Predictions, FeatureCounts)> {
    let started = Instant::now();
    let files = read_splits(&run.task_dir, splits)?;
    let trained = train_on_agent_copy(run, recipe, seed_caches)?;
    let mut predicted = BTreeMap::new();
    let mut split_probabilities = BTreeMap::new();
    for (name, file) in &files {
        let probs = trained.predict(file)?;
        let labels = probs.iter().map(|p| u8::from(p[1] > p[0])).collect();
        predicted.insert(name.clone(), labels);
        split_probabilities.insert(name.clone(), probs.iter().map(|p| p[1]).collect());
    }
    let test = Split::Test.name();
    let counts = trained.copy.extractor.counts();
    let predictions = Predictions {
        task: trained.copy.meta.task,
        method: match recipe {
            Recipe::Spec(spec) => Some(spec.clone()),
            Recipe::Plan(_) => None,
        },
        plan: trained.plan,
        seed: run.seed,
        predictions: predicted.get(test).cloned().unwrap_or_default(),
        probabilities: split_probabilities.get(test).cloned().unwrap_or_default(),
        private_predictions: predicted.get(Split::TestPrivate.name()).cloned(),
        splits: predicted,
        split_probabilities,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((predictions, counts))
}

/// The label-free `<name>.jsonl` of each asked split, in the order asked.
fn read_splits(task_dir: &Path, splits: &[String]) -> Result<Vec<(String, aar_tasks::TaskFile)>> {
    let bad = |message: String| TestbedError::BadTask {
        task: task_dir.display().to_string(),
        message,
    };
    if splits.is_empty() {
        return Err(bad("no split to predict was asked for".to_owned()));
    }
    let mut files: Vec<(String, aar_tasks::TaskFile)> = Vec::with_capacity(splits.len());
    for name in splits {
        // A split name becomes a file name: no path may hide in it.
        let safe = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !safe {
            return Err(bad(format!(
                "split {name:?}: a split name is lowercase letters, digits and `_`"
            )));
        }
        if files.iter().any(|(seen, _)| seen == name) {
            return Err(bad(format!("split `{name}` is asked for twice")));
        }
        let path = task_dir.join(format!("{name}.jsonl"));
        if !path.is_file() {
            return Err(bad(format!(
                "split `{name}` was asked for, but the copy has no {name}.jsonl"
            )));
        }
        files.push((name.clone(), read_task_file(&path, LabelPolicy::Forbidden)?));
    }
    Ok(files)
}

/// Accuracy on a labeled file (the server-side transfer set) of the student `spec`
/// describes, trained exactly as [`run_method`] trains it. Only trusted code calls this:
/// the labels it reads never reach an agent.
pub fn labeled_accuracy(run: &AgentRun, spec: &MethodSpec, labeled: &Path) -> Result<f64> {
    let trained = train_on_agent_copy(run, Recipe::Spec(spec), &[])?;
    let file = read_task_file(labeled, LabelPolicy::Required)?;
    let labels = file.labels().ok_or_else(|| TestbedError::BadTask {
        task: trained.copy.meta.task.clone(),
        message: format!("{} has unlabeled rows", labeled.display()),
    })?;
    let predictions: Vec<Label> = trained
        .predict(&file)?
        .iter()
        .map(|p| Label::from(p[1] > p[0]))
        .collect();
    aar_core::metrics::accuracy(&predictions, &labels)
        .map(|a| a.accuracy)
        .map_err(|source| TestbedError::Metric {
            context: format!("accuracy on {}", labeled.display()),
            source,
        })
}

/// An agent copy read and featurised: everything a method trains on.
struct AgentCopy {
    meta: AgentTaskMeta,
    extractor: FrozenExtractor,
    drop_choice: bool,
    head: HeadSpec,
    train: Matrix,
    weak_soft: Vec<[f32; 2]>,
    groups: Vec<String>,
}

impl AgentCopy {
    /// Reads the copy and featurises `train_unlabel`, the cache reading through to
    /// `seed_caches`.
    fn load(run: &AgentRun, seed_caches: &[PathBuf]) -> Result<AgentCopy> {
        let meta: AgentTaskMeta = read_json(&run.task_dir.join(AGENT_META_FILE))?;
        let weak_path = run
            .weak_labels
            .clone()
            .unwrap_or_else(|| run.task_dir.join(AGENT_WEAK_FILE));
        let weak: WeakLabels = read_json(&weak_path)?;
        let unlabel = read_task_file(
            &run.task_dir.join(Split::TrainUnlabel.file_name()),
            LabelPolicy::Forbidden,
        )?;
        let head = meta.strong.head().ok_or_else(|| {
            TestbedError::Unsupported(format!(
                "run-method trains heads on frozen features; {} is not such a learner",
                meta.strong.short_name()
            ))
        })?;
        let extractor = FrozenExtractor::load(&meta.strong, &run.assets_dir, &run.feature_cache)?
            .with_seed_caches(seed_caches.to_vec());
        let drop_choice = constant_choice(unlabel.examples());
        let (train, _) = extractor.row_features(unlabel.examples(), drop_choice)?;
        let groups = group_ids(unlabel.examples());
        let weak_soft = weak
            .soft_labels
            .iter()
            .map(|p| [p[0] as f32, p[1] as f32])
            .collect();
        Ok(AgentCopy {
            meta,
            extractor,
            drop_choice,
            head,
            train,
            weak_soft,
            groups,
        })
    }

    /// Features of a task file's rows, read as the training rows are.
    fn file_features(&self, file: &aar_tasks::TaskFile) -> Result<Matrix> {
        Ok(self
            .extractor
            .row_features(file.examples(), self.drop_choice)?
            .0)
    }
}

fn train_on_agent_copy(
    run: &AgentRun,
    recipe: Recipe<'_>,
    seed_caches: &[PathBuf],
) -> Result<TrainedOnAgentCopy> {
    let copy = AgentCopy::load(run, seed_caches)?;
    match recipe {
        Recipe::Spec(spec) => {
            let prior = copy
                .extractor
                .zero_shot_prior(&copy.train, copy.meta.verbalizers.as_ref())?;
            let inputs = MethodInputs {
                rows: copy.train.rows(),
                weak_soft: &copy.weak_soft,
                groups: &copy.groups,
                prior: prior.as_deref(),
            };
            let student = train_student(spec, &copy.train, &inputs, &copy.head, run.seed)?;
            Ok(TrainedOnAgentCopy {
                copy,
                student,
                plan: None,
            })
        }
        Recipe::Plan(path) => {
            let loaded = load_plan(path, copy.train.rows(), &copy.head)?;
            let student = fit_plan(loaded.plan, &copy.train, &loaded.head, run.seed)?;
            Ok(TrainedOnAgentCopy {
                copy,
                student,
                plan: Some(loaded.summary),
            })
        }
    }
}

/// The README of a features directory: what `aar features` wrote, for a researcher's code.
pub const FEATURES_INDEX_FILE: &str = "features.json";

/// One array `aar features` wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayInfo {
    /// The file, relative to the features directory.
    pub file: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Its dtype (`float32`).
    pub dtype: String,
    /// What a row is.
    pub rows: String,
}

/// The index `aar features` writes beside the arrays (`features.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturesIndex {
    /// The task.
    pub task: String,
    /// The student learner whose features these are (`minilm_l6_v2`).
    pub learner: String,
    /// Feature width.
    pub dim: usize,
    /// Every array, by name: `train_unlabel`, `weak_soft`, and one per asked split.
    pub arrays: BTreeMap<String, ArrayInfo>,
    /// Consistency group per `train_unlabel` row (`groups.json`, a list of strings).
    pub groups_file: String,
}

/// Writes the student's frozen features of an agent copy as `.npy` files in `out`, for
/// methods written as new code (`aar features`): `train_unlabel.npy` `[n, d]`,
/// `weak_soft.npy` `[n, 2]` (the weak teacher's `p(label 0), p(label 1)`), one
/// `<split>.npy` per asked split, `groups.json` and the index [`FEATURES_INDEX_FILE`].
/// Rows are in file order; no label anywhere. The feature cache makes this cheap after
/// the first time.
pub fn write_agent_features(
    run: &AgentRun,
    splits: &[String],
    out: &Path,
) -> Result<FeaturesIndex> {
    let files = read_splits(&run.task_dir, splits)?;
    let copy = AgentCopy::load(run, &[])?;
    std::fs::create_dir_all(out).at(out)?;
    let mut arrays = BTreeMap::new();
    let dim = copy.train.cols();
    let mut write = |name: &str, matrix: &Matrix, rows: &str| -> Result<()> {
        let file = format!("{name}.npy");
        let shape = vec![matrix.rows() as u64, matrix.cols() as u64];
        let values: Vec<f32> = (0..matrix.rows())
            .flat_map(|i| matrix.row(i).to_vec())
            .collect();
        crate::npy::write_f32(&out.join(&file), &shape, &values)?;
        let info = ArrayInfo {
            file,
            shape,
            dtype: "float32".into(),
            rows: rows.into(),
        };
        arrays.insert(name.to_owned(), info);
        Ok(())
    };
    write(
        "train_unlabel",
        &copy.train,
        "train_unlabel.jsonl rows in file order",
    )?;
    let weak: Vec<f32> = copy.weak_soft.iter().flatten().copied().collect();
    let weak = Matrix::new(copy.weak_soft.len(), 2, weak)?;
    write(
        "weak_soft",
        &weak,
        "the weak teacher's [p(label 0), p(label 1)] per train_unlabel row",
    )?;
    for (name, file) in &files {
        if name != Split::TrainUnlabel.name() {
            let features = copy.file_features(file)?;
            write(name, &features, &format!("{name}.jsonl rows in file order"))?;
        }
    }
    let groups_file = "groups.json".to_owned();
    let groups = serde_json::to_vec(&copy.groups).map_err(|source| TestbedError::Json {
        path: out.join(&groups_file),
        source,
    })?;
    std::fs::write(out.join(&groups_file), groups).at(&out.join(&groups_file))?;
    let index = FeaturesIndex {
        task: copy.meta.task.clone(),
        learner: copy.meta.strong.short_name(),
        dim,
        arrays,
        groups_file,
    };
    let index_path = out.join(FEATURES_INDEX_FILE);
    let json = serde_json::to_vec_pretty(&index).map_err(|source| TestbedError::Json {
        path: index_path.clone(),
        source,
    })?;
    std::fs::write(&index_path, json).at(&index_path)?;
    Ok(index)
}
