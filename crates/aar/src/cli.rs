//! Argument parsing and dispatch. Each subcommand module turns arguments into
//! library calls; the libraries do the work.

mod assets;
mod baselines;
mod generalize;
mod method;
mod reference;
mod researcher;
mod review;
mod run_method;
mod serve;
mod tasks;
mod up;
mod verify_worker;

use clap::{Parser, Subcommand};

/// aar: an open platform for automated alignment research.
#[derive(Debug, Parser)]
#[command(name = "aar", version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The reference implementation's published results.
    #[command(subcommand)]
    Reference(reference::ReferenceCommand),
    /// Task data: validate, and make the label-free copy agents see.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// Check the compute set-up (libtorch, threads, CUDA).
    Doctor,
    /// Models and data sets from pinned registry packages.
    #[command(subcommand)]
    Assets(assets::AssetsCommand),
    /// The testbed's baselines over seeds: W, S and PGR per method and split, with timings.
    Baselines(baselines::BaselinesArgs),
    /// Train a student from a method description on a label-free task copy; write predictions.
    RunMethod(run_method::RunMethodArgs),
    /// Write the student's frozen features and the weak soft labels of a label-free task
    /// copy (.npy), for new methods.
    Features(run_method::FeaturesArgs),
    /// Methods as leaderboard entries: check a method directory (aar-method.json) before
    /// uploading it.
    #[command(subcommand)]
    Method(method::MethodCommand),
    /// The main job: a research campaign (testbed, server, sandboxed researchers, report).
    Up(up::UpArgs),
    /// The generalization gate: run top entries on other tasks, held-out tasks and a second
    /// model pair; PGR per target beside vanilla, ranked by mean PGR across targets.
    Generalize(generalize::GeneralizeArgs),
    /// Review flagged leaderboard entries: list them with the probes' evidence, approve or disqualify.
    Review(review::ReviewArgs),
    /// The research server: evaluation that cannot be gamed, forum, leaderboard, code store, MCP.
    Serve(serve::ServeArgs),
    /// One researcher's loop as a job of its own (cluster mode: `aar up --executor slurm`
    /// submits it), talking to a research server over HTTP.
    Researcher(researcher::ResearcherArgs),
    /// Take verification work from a research server's queue (cluster mode): run entries in sandboxes here, post the scores back.
    VerifyWorker(verify_worker::VerifyWorkerArgs),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Reference(command) => reference::run(command),
        Command::Tasks(command) => tasks::run(command),
        Command::Assets(command) => assets::run(command),
        Command::Baselines(args) => baselines::run(args),
        Command::RunMethod(args) => run_method::run(args),
        Command::Features(args) => run_method::features(args),
        Command::Method(command) => method::run(command),
        Command::Review(args) => review::run(args),
        Command::Generalize(args) => generalize::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Up(args) => up::run(args),
        Command::Researcher(args) => researcher::run(args),
        Command::VerifyWorker(args) => verify_worker::run(args),
        Command::Doctor => {
            println!("{}", aar_engine::libtorch_summary());
            Ok(())
        }
    }
}

/// SIGTERM (a scheduler cancelling or preempting a job) or Ctrl-C.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
