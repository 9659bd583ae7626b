use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use aar_core::text::terminal_line;
use aar_oversight::method::{CheckOptions, CheckReport, Entrypoint, check_method_dir};
use anyhow::Context;
use clap::Subcommand;

/// Where the sandbox mounts the label-free task copies.
const DATA_ROOT: &str = "/data";

#[derive(Debug, Subcommand)]
pub enum MethodCommand {
    /// Check a method directory as the verifier will run it: validate its aar-method.json,
    /// run its entrypoint on a small label-free copy of a task, and check the output.
    Check(CheckArgs),
    /// Start a method from the template: a manifest and a Python method that reproduces
    /// vanilla through a training plan (numpy; `aar features` in, `aar run-method --plan`
    /// out). Existing files are never overwritten.
    New(NewArgs),
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The directory to create the method in.
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The method directory (the one you upload as a snapshot; it holds aar-method.json).
    dir: PathBuf,
    /// The label-free task copy to run on (default: the only task directory under /data).
    #[arg(long)]
    task: Option<PathBuf>,
    /// Rows of each split in the small copy (the first ones).
    #[arg(long, default_value = "64")]
    rows: NonZeroUsize,
    /// Training seed ($AAR_SEED).
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

pub fn run(command: MethodCommand) -> anyhow::Result<()> {
    match command {
        MethodCommand::Check(args) => check(args),
        MethodCommand::New(args) => {
            aar_oversight::template::write_template(&args.dir).with_context(|| {
                format!("writing the method template into {}", args.dir.display())
            })?;
            println!(
                "method template in {}: edit method.py, then `aar method check {}`",
                args.dir.display(),
                args.dir.display()
            );
            Ok(())
        }
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let task = match args.task {
        Some(task) => task,
        None => only_task(Path::new(DATA_ROOT))?,
    };
    let options = CheckOptions {
        rows: args.rows,
        seed: args.seed,
        ..CheckOptions::default()
    };
    let report = check_method_dir(&args.dir, &task, &options).with_context(|| {
        format!(
            "method check of {} on {} failed",
            args.dir.display(),
            task.display()
        )
    })?;
    print_report(&args.dir, &task, &report);
    Ok(())
}

/// The one directory under `root`, or an error asking for `--task`.
fn only_task(root: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(root)
        .with_context(|| format!("no --task given and {} is unreadable", root.display()))?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| root.display().to_string())?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(dirs) {
        Ok([dir]) => Ok(dir),
        Err(dirs) => anyhow::bail!(
            "{} holds {} task directories; say which with --task {}/<task>",
            root.display(),
            dirs.len(),
            root.display()
        ),
    }
}

fn print_report(dir: &Path, task: &Path, report: &CheckReport) {
    let manifest = &report.manifest;
    let entrypoint = match &manifest.entrypoint {
        Entrypoint::Command(argv) => format!("command {}", terminal_line(&argv.join(" "))),
        Entrypoint::Spec(spec) => format!("spec {}", terminal_line(spec)),
    };
    let resources = &manifest.resources;
    println!(
        "manifest: {} ok: {:?}, {entrypoint}, {:?}, {} min, {} MB",
        dir.join(aar_oversight::method::MANIFEST_FILE).display(),
        manifest.name,
        resources.device,
        resources.minutes,
        resources.memory_mb
    );
    let rows: Vec<String> = report
        .input_rows
        .iter()
        .map(|(split, n)| format!("{n} {split}"))
        .collect();
    println!(
        "ran: {} on the first {} rows of {} in {:.1} s",
        terminal_line(&report.argv.join(" ")),
        rows.join(", "),
        task.display(),
        report.seconds
    );
    for (split, predictions) in &report.predictions {
        let ones = predictions.iter().filter(|&&p| p == 1).count();
        println!(
            "output: {split}: {} predictions, one per row ({ones} labeled 1)",
            predictions.len()
        );
    }
    println!(
        "ok: the verifier runs it the same way, once per declared seed, on the full test, \
         test_private and transfer splits, within {} min per run",
        resources.minutes
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

    use super::*;

    #[test]
    fn the_default_task_is_the_only_directory_under_the_data_root() {
        let root = tempfile::tempdir().unwrap();
        let err = only_task(root.path()).unwrap_err().to_string();
        assert!(
            err.contains("holds 0 task directories; say which with --task"),
            "{err}"
        );
        std::fs::create_dir(root.path().join("sst")).unwrap();
        std::fs::write(root.path().join("README"), "not a task").unwrap();
        assert_eq!(only_task(root.path()).unwrap(), root.path().join("sst"));
        std::fs::create_dir(root.path().join("fever")).unwrap();
        let err = only_task(root.path()).unwrap_err().to_string();
        assert!(err.contains("holds 2 task directories"), "{err}");
        assert!(only_task(&root.path().join("none")).is_err());
    }
}
