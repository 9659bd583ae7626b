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
    /// Bring your own data: check a labeled JSONL file (or a directory of split files),
    /// copy it into `<home>/imports/<name>/` and write a preset file for
    /// `aar up --preset-file` and `aar baselines --preset-file`.
    Import(ImportArgs),
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
        TasksCommand::Import(args) => import(args),
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

/// The reference's two row formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// `question`, `choice`, `label` true/false.
    Binary,
    /// `prompt`, `first`, `second`, `label` "A"/"B".
    Comparison,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A labeled JSONL file (dealt to the splits with the preset's seed), or a directory
    /// holding train_label.jsonl, train_unlabel.jsonl, test.jsonl, test_private.jsonl
    /// (and optionally transfer.jsonl).
    file: PathBuf,
    /// The task's and the preset's name: letters, digits or `-`.
    #[arg(long)]
    name: String,
    /// The format every row must have (default: whatever the first row has).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// The weak teacher: `bow` (bag of words), a model asset or a Hugging Face model
    /// directory (config.json, model.safetensors or its index, tokenizer.json). Default: the cpu
    /// preset's.
    #[arg(long, value_name = "bow|MODEL_DIR|ASSET")]
    weak: Option<String>,
    /// The student: a model asset or a Hugging Face model directory. Default: the cpu
    /// preset's (MiniLM).
    #[arg(long, value_name = "MODEL_DIR|ASSET")]
    strong: Option<String>,
    /// Rows per split: train_label,train_unlabel,test,test_private[,transfer] (default:
    /// picked from the file's rows). A transfer split from one file is in-distribution.
    #[arg(long, value_name = "N,N,N,N[,N]", value_parser = parse_sizes)]
    sizes: Option<aar_testbed::preset::Sizes>,
    /// Where to write the preset file.
    #[arg(long, value_name = "PRESET.json")]
    out: PathBuf,
    /// aar's state directory (the data is copied to `<home>/imports/<name>/`).
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
}

/// `N,N,N,N[,N]` as train_label, train_unlabel, test, test_private and transfer.
fn parse_sizes(text: &str) -> Result<aar_testbed::preset::Sizes, String> {
    let numbers = text
        .split(',')
        .map(|n| n.trim().parse::<usize>().map_err(|e| format!("{n:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let (four, transfer) = match numbers.as_slice() {
        [a, b, c, d] => ([*a, *b, *c, *d], 0),
        [a, b, c, d, t] => ([*a, *b, *c, *d], *t),
        _ => {
            return Err(format!(
                "expected 4 or 5 numbers (train_label,train_unlabel,test,test_private[,transfer]), found {}",
                numbers.len()
            ));
        }
    };
    if four.contains(&0) {
        return Err("train_label, train_unlabel, test and test_private must be positive".into());
    }
    Ok(aar_testbed::preset::Sizes {
        train_label: four[0],
        train_unlabel: four[1],
        test: four[2],
        test_private: four[3],
        transfer,
    })
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    use aar_testbed::import::{ImportRequest, LearnerChoice};
    let home = std::path::absolute(&args.home)?;
    let choice = |arg: Option<&str>| arg.map_or(LearnerChoice::Default, LearnerChoice::parse);
    let request = ImportRequest {
        source: args.file,
        name: args.name,
        format: args.format.map(|f| match f {
            FormatArg::Binary => aar_core::TaskFormat::Binary,
            FormatArg::Comparison => aar_core::TaskFormat::Comparison,
        }),
        weak: choice(args.weak.as_deref()),
        strong: choice(args.strong.as_deref()),
        sizes: args.sizes,
        home,
        out: args.out,
    };
    let imported = aar_testbed::import::import(&request)?;
    println!(
        "imported {} (sha256 {}) to {}",
        request.source.display(),
        imported.sha256,
        imported.data.display()
    );
    for (split, rows) in &imported.split_rows {
        println!("  {:<14} {rows:>6} rows", split.name());
    }
    println!(
        "weak {}, strong {}; preset written to {}",
        imported.preset.weak.short_name(),
        imported.preset.strong.short_name(),
        request.out.display()
    );
    println!("next: aar up --preset-file {}", request.out.display());
    Ok(())
}
