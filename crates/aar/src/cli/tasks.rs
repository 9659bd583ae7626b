use std::path::PathBuf;

use aar_tasks::{LabeledTask, Split, write_agent_copy};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Validate a labeled task directory and print its splits.
    Check {
        /// Directory with train_label.jsonl, train_unlabel.jsonl, test.jsonl (and optional splits).
        dir: PathBuf,
    },
    /// Build a preset's task directories from the fetched sources (deterministic from the
    /// preset's seed; no question in two splits; balanced labels).
    Build {
        /// tiny, cpu, gpu or paper.
        #[arg(long, default_value = "cpu")]
        preset: String,
        /// Where to write one directory per task (default: `<home>/testbed/<preset>/tasks`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these tasks.
        #[arg(long = "task")]
        tasks: Vec<String>,
        /// aar's state directory (assets under `<home>/assets`).
        #[arg(long, env = "AAR_HOME", default_value = ".aar")]
        home: PathBuf,
    },
    /// Write the copy agents see: allow-listed input fields of train_unlabel and test, no labels.
    Strip {
        /// The labeled task directory (server side).
        labeled: PathBuf,
        /// Where to write the agent-facing copy.
        out: PathBuf,
    },
}

pub fn run(command: TasksCommand) -> anyhow::Result<()> {
    match command {
        TasksCommand::Check { dir } => {
            let task = LabeledTask::load(&dir)?;
            println!("{}: {} task", dir.display(), task.format());
            for split in Split::ALL {
                if let Some(file) = task.split(split) {
                    let labels = file.labels().unwrap_or_default();
                    let ones = labels.iter().filter(|l| l.index() == 1).count();
                    println!(
                        "  {:<14} {:>6} rows  label balance {:.3}",
                        split.name(),
                        file.len(),
                        ones as f64 / file.len() as f64
                    );
                }
            }
            Ok(())
        }
        TasksCommand::Build {
            preset,
            out,
            tasks,
            home,
        } => {
            let preset = aar_testbed::Preset::named(&preset)?;
            let options = aar_testbed::RunOptions::new(&preset, &home);
            let out = out.unwrap_or_else(|| options.tasks_dir());
            for task in &preset.tasks {
                if !tasks.is_empty() && !tasks.contains(&task.name) {
                    continue;
                }
                let dir = out.join(&task.name);
                aar_testbed::baselines::build_task(
                    task,
                    &options.assets_dir,
                    &dir,
                    preset.build_seed,
                )?;
                let built = LabeledTask::load(&dir)?;
                for split in Split::ALL {
                    if let Some(file) = built.split(split) {
                        let ones = file
                            .labels()
                            .unwrap_or_default()
                            .iter()
                            .filter(|l| l.index() == 1)
                            .count();
                        println!(
                            "{:<10} {:<14} {:>6} rows  label=1 {:>6}",
                            task.name,
                            split.name(),
                            file.len(),
                            ones
                        );
                    }
                }
                println!("{:<10} -> {}", task.name, dir.display());
            }
            Ok(())
        }
        TasksCommand::Strip { labeled, out } => {
            let task = LabeledTask::load(&labeled)?;
            write_agent_copy(&task, &out)?;
            println!(
                "wrote the agent-facing copy of {} to {}",
                labeled.display(),
                out.display()
            );
            Ok(())
        }
    }
}
