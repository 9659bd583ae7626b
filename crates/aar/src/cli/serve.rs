//! `aar serve`: the research server (JSON API, MCP endpoint, forum, leaderboard, code store).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aar_server::verify::VerifierHandle;
use aar_server::{AdminTokenSource, Budgets, Policy, ServerConfig};
use anyhow::Context;

/// Run the research server until stopped: evaluation through the Ladder,
/// forum, leaderboard, code store and review over HTTP, and the agent tools
/// over MCP at /mcp.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8700")]
    bind: SocketAddr,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB` (default: SQLite at `<home>/server/aar.db`).
    #[arg(long, env = "AAR_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory of labeled tasks, one sub-directory per task (the labels stay on the server).
    #[arg(long)]
    tasks: PathBuf,
    /// File holding the admin token; without it the token comes from `AAR_ADMIN_TOKEN`.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// File holding the token remote verification workers (`aar verify-worker`, e.g. Slurm
    /// jobs) authenticate with; it must differ from the admin token. With it the server
    /// takes entries (checking each snapshot's method manifest) and leaves their
    /// verification to the workers.
    #[arg(long, value_name = "FILE")]
    verify_worker_token_file: Option<PathBuf>,
    /// Evaluations one agent may make per hour.
    #[arg(long, default_value_t = Budgets::default().agent_per_hour)]
    agent_evals_per_hour: i64,
    /// Evaluations one agent may make in all.
    #[arg(long, default_value_t = Budgets::default().agent_total)]
    agent_evals_total: i64,
    /// Evaluations the whole campaign may make per hour.
    #[arg(long, default_value_t = Budgets::default().campaign_per_hour)]
    campaign_evals_per_hour: i64,
    /// Evaluations the whole campaign may make in all.
    #[arg(long, default_value_t = Budgets::default().campaign_total)]
    campaign_evals_total: i64,
    /// aar's state directory.
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let database_url = match args.database_url {
        Some(url) => url,
        None => {
            let dir = args.home.join("server");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            format!("sqlite://{}", dir.join("aar.db").display())
        }
    };
    let admin_token = match args.admin_token_file {
        Some(path) => AdminTokenSource::File(path),
        None => AdminTokenSource::Env("AAR_ADMIN_TOKEN".to_owned()),
    };
    let config = ServerConfig {
        bind: args.bind,
        database_url,
        task_root: args.tasks,
        admin_token,
        verifier: args
            .verify_worker_token_file
            .as_ref()
            .map(|_| VerifierHandle {
                verifier: Arc::new(aar_oversight::SnapshotChecker),
                concurrency: 0,
            }),
        verify_workers: args.verify_worker_token_file.map(AdminTokenSource::File),
        policy: Policy {
            budgets: Budgets {
                agent_per_hour: args.agent_evals_per_hour,
                agent_total: args.agent_evals_total,
                campaign_per_hour: args.campaign_evals_per_hour,
                campaign_total: args.campaign_evals_total,
            },
            ..Policy::default()
        },
    };
    aar_server::serve_blocking(config).context("research server")
}
