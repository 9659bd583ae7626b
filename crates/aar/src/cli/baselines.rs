use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use aar_testbed::{
    AgentRun, BaselineTable, MethodKind, MethodSpec, Preset, RunOptions, RunSummary, run_baselines,
    run_method,
};
use anyhow::Context;
use serde_json::json;

/// Weak teacher, ceiling and every transfer method of a preset over seeds; prints per task
/// W, S and each method's PGR on the public test, private test and transfer sets, +- an
/// error over seeds and test rows (`--json`: its seeds and test parts too).
#[derive(Debug, clap::Args)]
pub struct BaselinesArgs {
    /// tiny, cpu, gpu or paper.
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// A preset from a JSON file instead (start from `--show-preset`'s output).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    preset_file: Option<PathBuf>,
    /// Print the preset as JSON and exit.
    #[arg(long)]
    show_preset: bool,
    /// Number of seeds (default: the preset's).
    #[arg(long)]
    seeds: Option<usize>,
    /// Only these tasks.
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Print JSON (table and timings) instead of text.
    #[arg(long)]
    json: bool,
    /// Also time a rerun from the cache and one transfer experiment on cached features.
    #[arg(long)]
    bench: bool,
    /// Delete the preset's results and the feature cache first (a cold run, assets kept).
    #[arg(long)]
    fresh: bool,
    /// aar's state directory (assets under `<home>/assets`, results under `<home>/testbed`).
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
}

fn summary_line(name: &str, s: &RunSummary) -> String {
    let mut t = s.transfer_seconds.clone();
    t.sort_by(f64::total_cmp);
    let transfer = match t.get(t.len() / 2) {
        Some(median) => format!("; transfer experiment median {median:.2} s"),
        None => String::new(),
    };
    format!(
        "{name}: {:.1} s total (tasks {:.1} s, features {:.1} s); {} results computed, {} cached\
         {transfer}",
        s.total_seconds, s.build_seconds, s.feature_seconds, s.computed, s.cached
    )
}

pub fn run(args: BaselinesArgs) -> anyhow::Result<()> {
    aar_engine::device::best_device();
    let preset = match &args.preset_file {
        Some(path) => Preset::from_file(path)?,
        None => Preset::named(&args.preset)?,
    };
    if args.show_preset {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &preset)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut options = RunOptions::new(&preset, &args.home);
    if let Some(n) = args.seeds {
        let first = preset.seeds.first().copied().unwrap_or(0);
        options.seeds = (first..first + n as u64).collect();
    }
    options.tasks = args.tasks.clone();
    if args.fresh {
        for dir in [
            options.results_dir(),
            options.agent_dir(),
            options.feature_cache.clone(),
        ] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
    }
    let first = run_baselines(&preset, &options)?;
    let mut timings = vec![("run", first.clone())];
    let mut one_transfer = None;
    if args.bench {
        timings.push(("rerun from cache", run_baselines(&preset, &options)?));
        let task = options
            .tasks
            .first()
            .cloned()
            .or_else(|| preset.tasks.first().map(|t| t.name.clone()))
            .context("the preset has no task")?;
        let started = Instant::now();
        let predictions = run_method(
            &AgentRun {
                task_dir: options.agent_dir().join(&task),
                weak_labels: None,
                assets_dir: options.assets_dir.clone(),
                feature_cache: options.feature_cache.clone(),
                seed: 0,
            },
            &MethodSpec::new(MethodKind::Vanilla),
        )?;
        one_transfer = Some((
            task,
            started.elapsed().as_secs_f64(),
            predictions.predictions.len(),
        ));
    }
    let seeds = if options.seeds.is_empty() {
        preset.seeds.clone()
    } else {
        options.seeds.clone()
    };
    let mut table = BaselineTable::read_preset(
        &options.results_dir(),
        &aar_testbed::Preset {
            seeds: seeds.clone(),
            ..preset.clone()
        },
    )?;
    if !options.tasks.is_empty() {
        table.tasks.retain(|t| options.tasks.contains(&t.task));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = json!({
            "preset": preset.name,
            "seeds": seeds,
            "table": table,
            "timings": timings.iter().map(|(n, s)| json!({"name": n, "summary": s})).collect::<Vec<_>>(),
            "one_transfer_experiment": one_transfer.as_ref().map(|(t, s, n)| json!({"task": t, "seconds": s, "test_rows": n})),
        });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "preset {} ({} seeds: {:?}); results in {}",
        preset.name,
        seeds.len(),
        seeds,
        options.results_dir().display()
    )?;
    write!(out, "{table}")?;
    for (name, summary) in &timings {
        writeln!(out, "{}", summary_line(name, summary))?;
    }
    if let Some((task, seconds, rows)) = one_transfer {
        writeln!(
            out,
            "one transfer experiment (aar run-method, vanilla, {task}, cached features): {seconds:.2} s, {rows} test predictions"
        )?;
    }
    Ok(())
}
