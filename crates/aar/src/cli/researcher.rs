//! `aar researcher`: one researcher's loop, as a job of its own (the Slurm executor
//! submits it; users who schedule by hand run it themselves).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aar_campaign::researcher::{ResearcherSpec, run_researcher_job};
use anyhow::Context;

/// Run one researcher until its budget is spent, resuming from its saved state
/// (notebook, transcript, ledger). SIGTERM or Ctrl-C stop it after saving; a later run
/// continues where it stopped.
#[derive(Debug, clap::Args)]
pub struct ResearcherArgs {
    /// The research server's URL, e.g. http://login-node:8700.
    #[arg(long)]
    server: String,
    /// File holding this researcher's agent token (mode 0600; never on a command line).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The researcher's spec (`aar up` writes `<campaign>/agents/<name>/researcher.json`).
    #[arg(long, value_name = "FILE")]
    spec: PathBuf,
}

pub fn run(args: ResearcherArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.server.starts_with("http://") || args.server.starts_with("https://"),
        "--server must be an http:// or https:// URL, not {:?}",
        args.server
    );
    let spec = ResearcherSpec::read(&args.spec)?;
    let token = aar_agents::fsutil::read_private_token(&args.token_file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stopped = runtime.block_on(async move {
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = interrupt.clone();
        tokio::spawn(async move {
            super::stop_signal().await;
            eprintln!("stopping: saving the researcher's state");
            flag.store(true, Ordering::SeqCst);
        });
        let summary = run_researcher_job(&spec, &args.server, &token, interrupt).await?;
        match &summary {
            Some(summary) => println!(
                "{}: {:?} after {} steps",
                spec.name, summary.outcome, summary.steps
            ),
            None => println!("{}: stopped; a later run resumes it", spec.name),
        }
        anyhow::Ok(summary.is_none())
    })?;
    // A stopped researcher is not finished: its scheduler sees a failure and the
    // campaign submits it again.
    if stopped {
        std::process::exit(143);
    }
    Ok(())
}
