//! `aar verify-worker`: verification as jobs (cluster mode). Takes entries from a
//! research server's queue, runs them in sandboxes here, posts the scores back.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use aar_oversight::{SandboxedVerifier, WorkerConfig, WorkerOptions, run_worker};
use anyhow::Context;

/// Take verification work from a research server's queue: claim an entry, run it in
/// sandboxes here (the labeled tasks, models and feature cache must be on this
/// machine, as the config names them), post the scores back, repeat. SIGTERM or
/// Ctrl-C stop it: an entry being run is given back to the queue.
#[derive(Debug, clap::Args)]
pub struct VerifyWorkerArgs {
    /// The research server's URL, e.g. http://login-node:8700.
    #[arg(long)]
    server: String,
    /// File holding the verification workers' token (mode 0600; never on a command line).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The worker's config (`aar up` writes `<campaign>/oversight/worker.json`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Verify at most one entry, and exit when none is queued.
    #[arg(long)]
    once: bool,
    /// Exit after this many seconds with nothing to verify.
    #[arg(long, value_name = "N")]
    idle_exit_seconds: Option<u64>,
    /// Verify only this entry (a job submitted for it, with the resources its method
    /// asks for), and exit; nothing else is claimed.
    #[arg(long, value_name = "ID")]
    entry: Option<i64>,
}

pub fn run(args: VerifyWorkerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.server.starts_with("http://") || args.server.starts_with("https://"),
        "--server must be an http:// or https:// URL, not {:?}",
        args.server
    );
    let token = aar_agents::fsutil::read_private_token(&args.token_file)?;
    let config = WorkerConfig::read(&args.config)?;
    let mut verifier_config = config.verifier_config()?;
    let scratch = worker_scratch(&verifier_config.work_dir);
    verifier_config.work_dir = scratch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let verifier = SandboxedVerifier::new(verifier_config, None)
            .context("setting up the verifier")?;
        let options = WorkerOptions {
            once: args.once || args.entry.is_some(),
            idle_exit: args.idle_exit_seconds.map(Duration::from_secs),
            entry: args.entry,
            ..WorkerOptions::default()
        };
        let flag = options.interrupt.clone();
        tokio::spawn(async move {
            super::stop_signal().await;
            eprintln!("stopping: the entry being verified (if any) goes back to the queue");
            flag.store(true, Ordering::SeqCst);
        });
        let summary = run_worker(&args.server, &token, &verifier, options).await?;
        println!(
            "verify-worker: {} claimed, {} verified, {} failed, {} lost (lease ran out), {} given back",
            summary.claimed, summary.verified, summary.failed, summary.lost, summary.released
        );
        anyhow::Ok(())
    })?;
    // Scratch only: the scores are on the server.
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// This worker's own directory under the config's work directory: workers on a shared
/// file system must not share one (each rebuilds the task inputs in its work directory,
/// removing what was there, under another worker's running methods).
fn worker_scratch(work_dir: &Path) -> PathBuf {
    let host = host_name();
    let id = match std::env::var("SLURM_JOB_ID") {
        Ok(job) if !job.is_empty() => format!("{host}-job{job}"),
        _ => format!("{host}-pid{}", std::process::id()),
    };
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    work_dir.join("workers").join(id)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}
