//! Stand-alone research server for tests, the crash test and the load
//! benchmark; the product binary is `aar serve`, which calls the same
//! `aar_server::serve`.
//!
//! Environment: `AAR_BIND` (default 127.0.0.1:8700), `AAR_DATABASE_URL`,
//! `AAR_TASK_ROOT`, `AAR_ADMIN_TOKEN`, and optional budgets
//! `AAR_BUDGET_AGENT_HOUR`, `AAR_BUDGET_AGENT_TOTAL`, `AAR_BUDGET_CAMPAIGN_HOUR`,
//! `AAR_BUDGET_CAMPAIGN_TOTAL`.

use std::process::ExitCode;

use aar_server::{AdminTokenSource, Budgets, Policy, ServerConfig, serve};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_i64(name: &str, default: i64) -> Result<i64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not an integer")),
        Err(_) => Ok(default),
    }
}

fn config() -> Result<ServerConfig, String> {
    let defaults = Budgets::default();
    let budgets = Budgets {
        agent_per_hour: env_i64("AAR_BUDGET_AGENT_HOUR", defaults.agent_per_hour)?,
        agent_total: env_i64("AAR_BUDGET_AGENT_TOTAL", defaults.agent_total)?,
        campaign_per_hour: env_i64("AAR_BUDGET_CAMPAIGN_HOUR", defaults.campaign_per_hour)?,
        campaign_total: env_i64("AAR_BUDGET_CAMPAIGN_TOTAL", defaults.campaign_total)?,
    };
    let bind = env_or("AAR_BIND", "127.0.0.1:8700");
    Ok(ServerConfig {
        bind: bind
            .parse()
            .map_err(|_| format!("AAR_BIND={bind:?} is not an address"))?,
        database_url: std::env::var("AAR_DATABASE_URL")
            .map_err(|_| "AAR_DATABASE_URL is not set".to_owned())?,
        task_root: std::env::var("AAR_TASK_ROOT")
            .map_err(|_| "AAR_TASK_ROOT is not set".to_owned())?
            .into(),
        admin_token: AdminTokenSource::Env("AAR_ADMIN_TOKEN".to_owned()),
        verifier: None,
        policy: Policy {
            budgets,
            ..Policy::default()
        },
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(env_or("RUST_LOG", "warn"))
        // Colour only on a terminal (tracing's default writer is stdout).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = match config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("aar-research-server: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aar-research-server: {e}");
            ExitCode::FAILURE
        }
    }
}
