use std::path::{Path, PathBuf};

use aar_testbed::agent::{Recipe, default_splits, run_method_on_splits};
use aar_testbed::{AgentRun, MethodSpec, write_agent_features};
use anyhow::Context;

/// Train a student with a built-in method (`--spec`) or a training plan your own code wrote
/// (`--plan`) on a label-free task copy and write its predictions of the asked splits
/// (agent-facing: reads no label). The output has `"splits": {name: [0/1, ...]}` (the
/// method contract's output) and `"split_probabilities": {name: [p(label 1), ...]}`.
#[derive(Debug, clap::Args)]
pub struct RunMethodArgs {
    /// The agent's task directory (train_unlabel.jsonl, test.jsonl, testbed.json, weak_labels.json).
    #[arg(long)]
    task: PathBuf,
    /// A built-in method's description (JSON), e.g. {"method": "confidence_filter", "low": 0.3, "high": 0.7}.
    #[arg(long, required_unless_present = "plan", conflicts_with = "plan")]
    spec: Option<PathBuf>,
    /// A training plan (JSON): {"targets": "t.npy", "weights": "w.npy", "loss": "cross_entropy",
    /// "head": {...}}, targets [n, 2] or [n] and weights [n] per train_unlabel row.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Where to write the predictions (JSON).
    #[arg(long)]
    out: PathBuf,
    /// The weak teacher's soft labels (default: weak_labels.json in the task directory).
    #[arg(long)]
    weak: Option<PathBuf>,
    /// Training seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Splits to predict, comma-separated: each is `<name>.jsonl` in the task directory
    /// (default: test, and test_private when the directory has it).
    #[arg(long, value_delimiter = ',')]
    splits: Vec<String>,
    /// aar's state directory (models under `<home>/assets`, feature cache under `<home>/testbed`).
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
    /// The frozen-feature cache (default `<home>/testbed/features`; a researcher's sandbox
    /// sets it to its read-only agent cache).
    #[arg(long, env = "AAR_FEATURE_CACHE")]
    feature_cache: Option<PathBuf>,
}

pub fn run(args: RunMethodArgs) -> anyhow::Result<()> {
    aar_engine::device::best_device();
    let spec = match &args.spec {
        Some(path) => Some(read_spec(path)?),
        None => None,
    };
    let recipe = match (&spec, &args.plan) {
        (Some(spec), _) => Recipe::Spec(spec),
        (None, Some(plan)) => Recipe::Plan(plan),
        (None, None) => anyhow::bail!("give --spec or --plan"),
    };
    let splits = if args.splits.is_empty() {
        default_splits(&args.task)
    } else {
        args.splits.clone()
    };
    let predictions = run_method_on_splits(
        &AgentRun {
            task_dir: args.task.clone(),
            weak_labels: args.weak.clone(),
            assets_dir: args.home.join("assets"),
            feature_cache: feature_cache(args.feature_cache.clone(), &args.home),
            seed: args.seed,
        },
        recipe,
        &splits,
    )?;
    write_json(&args.out, &serde_json::to_vec_pretty(&predictions)?)?;
    let counts: Vec<String> = predictions
        .splits
        .iter()
        .map(|(split, labels)| {
            let ones = labels.iter().filter(|&&p| p == 1).count();
            format!("{split} {} ({ones} labeled 1)", labels.len())
        })
        .collect();
    println!(
        "{}: predictions for {} in {:.2} s -> {}",
        predictions.task,
        counts.join(", "),
        predictions.seconds,
        args.out.display()
    );
    Ok(())
}

/// Write the student's frozen features of a label-free task copy as NumPy `.npy` files, for
/// methods written as new code: `train_unlabel.npy` [n, d], `weak_soft.npy` [n, 2], one
/// `<split>.npy` per split, `groups.json` and the index `features.json` (shapes, dtypes,
/// row order). Rows are in file order. Agent-facing: reads no label.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// The agent's task directory (train_unlabel.jsonl, test.jsonl, testbed.json, weak_labels.json).
    #[arg(long)]
    task: PathBuf,
    /// The directory to write the arrays into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Splits to featurise besides train_unlabel, comma-separated: each is `<name>.jsonl`
    /// in the task directory (default: test, and test_private when the directory has it).
    #[arg(long, value_delimiter = ',')]
    splits: Vec<String>,
    /// aar's state directory (models under `<home>/assets`, feature cache under `<home>/testbed`).
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
    /// The frozen-feature cache (default `<home>/testbed/features`; a researcher's sandbox
    /// sets it to its read-only agent cache).
    #[arg(long, env = "AAR_FEATURE_CACHE")]
    feature_cache: Option<PathBuf>,
}

pub fn features(args: FeaturesArgs) -> anyhow::Result<()> {
    aar_engine::device::best_device();
    let splits = if args.splits.is_empty() {
        default_splits(&args.task)
    } else {
        args.splits
    };
    let index = write_agent_features(
        &AgentRun {
            task_dir: args.task,
            weak_labels: None,
            assets_dir: args.home.join("assets"),
            feature_cache: feature_cache(args.feature_cache, &args.home),
            seed: 0,
        },
        &splits,
        &args.out,
    )?;
    let shapes: Vec<String> = index
        .arrays
        .iter()
        .map(|(name, array)| format!("{name} {:?}", array.shape))
        .collect();
    println!(
        "{}: {}-wide {} features, {} -> {} (see features.json)",
        index.task,
        index.dim,
        index.learner,
        shapes.join(", "),
        args.out.display()
    );
    Ok(())
}

fn read_spec(path: &Path) -> anyhow::Result<MethodSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a method description", path.display()))
}

/// The cache asked for, else the testbed's shared one under `home`.
fn feature_cache(asked: Option<PathBuf>, home: &Path) -> PathBuf {
    asked.unwrap_or_else(|| home.join("testbed").join("features"))
}

/// Writes through a `.partial` file and a rename, so a reader never sees half a file.
fn write_json(out: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = out.with_extension("partial");
    std::fs::write(&partial, bytes).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, out).with_context(|| format!("writing {}", out.display()))
}
