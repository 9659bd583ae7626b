use std::path::{Path, PathBuf};

use aar_testbed::agent::{default_splits, run_method_on_splits};
use aar_testbed::{AgentRun, MethodSpec, agent_features};
use anyhow::Context;

/// Train a student with a method description on a label-free task copy and write its
/// predictions of the asked splits (agent-facing: reads no label). The output has
/// `"splits": {name: [0/1, ...]}` (the method contract's output) besides `predictions`
/// and `private_predictions` (the public and private test's).
#[derive(Debug, clap::Args)]
pub struct RunMethodArgs {
    /// The agent's task directory (train_unlabel.jsonl, test.jsonl, testbed.json, weak_labels.json).
    #[arg(long)]
    task: PathBuf,
    /// The method description (JSON), e.g. {"method": "confidence_filter", "low": 0.3, "high": 0.7}.
    #[arg(long)]
    spec: PathBuf,
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
    let text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("reading {}", args.spec.display()))?;
    let spec: MethodSpec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a method description", args.spec.display()))?;
    let splits = if args.splits.is_empty() {
        default_splits(&args.task)
    } else {
        args.splits
    };
    let predictions = run_method_on_splits(
        &AgentRun {
            task_dir: args.task,
            weak_labels: args.weak,
            assets_dir: args.home.join("assets"),
            feature_cache: feature_cache(args.feature_cache, &args.home),
            seed: args.seed,
        },
        &spec,
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

/// Write the student's frozen features of a label-free task copy as JSON, for methods
/// written as new code (e.g. Python): `train_unlabel`, `weak_soft_labels`, `groups`,
/// `test` and `test_private` rows in file order. Agent-facing: reads no label.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// The agent's task directory (train_unlabel.jsonl, test.jsonl, testbed.json, weak_labels.json).
    #[arg(long)]
    task: PathBuf,
    /// Where to write the features (JSON).
    #[arg(long)]
    out: PathBuf,
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
    let features = agent_features(&AgentRun {
        task_dir: args.task,
        weak_labels: None,
        assets_dir: args.home.join("assets"),
        feature_cache: feature_cache(args.feature_cache, &args.home),
        seed: 0,
    })?;
    write_json(&args.out, &serde_json::to_vec(&features)?)?;
    println!(
        "{}: {}-wide {} features of {} train_unlabel, {} test and {} test_private rows -> {}",
        features.task,
        features.dim,
        features.learner,
        features.train_unlabel.len(),
        features.test.len(),
        features.test_private.as_ref().map_or(0, Vec::len),
        args.out.display()
    );
    Ok(())
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
