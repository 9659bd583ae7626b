//! Stand-alone research server for tests, the crash test and the load
//! benchmark; the product binary is `aar serve`, which calls the same
//! `aar_server::serve`.
//!
//! Environment: `AAR_BIND` (default 127.0.0.1:8700), `AAR_DATABASE_URL`,
//! `AAR_TASK_ROOT`, `AAR_ADMIN_TOKEN`, and optional budgets
//! `AAR_BUDGET_AGENT_HOUR`, `AAR_BUDGET_AGENT_TOTAL`, `AAR_BUDGET_CAMPAIGN_HOUR`,
//! `AAR_BUDGET_CAMPAIGN_TOTAL`.
//!
//! Remote verification workers (cluster mode): `AAR_VERIFY_WORKER_TOKEN` enables them
//! (`/api/verifier/*`), `AAR_VERIFICATION_LEASE_MS` and `AAR_VERIFICATION_MAX_ATTEMPTS`
//! set the lease and the attempts. With workers the server takes entries whose
//! snapshot holds an `aar-method.json` with a name ([`ManifestName`]: this binary has
//! no method contract of its own) and verifies none itself.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aar_server::verify::{VerificationJob, Verifier, VerifierHandle, VerifyFuture};
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
    let defaults = Policy::default();
    let lease_ms = env_i64(
        "AAR_VERIFICATION_LEASE_MS",
        defaults.verification_lease.as_millis() as i64,
    )?;
    let max_attempts = env_i64(
        "AAR_VERIFICATION_MAX_ATTEMPTS",
        i64::from(defaults.verification_max_attempts),
    )?;
    let workers = std::env::var("AAR_VERIFY_WORKER_TOKEN").is_ok();
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
        verifier: workers.then(|| VerifierHandle {
            verifier: Arc::new(ManifestName),
            concurrency: 0,
        }),
        verify_workers: workers
            .then(|| AdminTokenSource::Env("AAR_VERIFY_WORKER_TOKEN".to_owned())),
        policy: Policy {
            budgets,
            verification_lease: Duration::from_millis(lease_ms.max(1) as u64),
            verification_max_attempts: u32::try_from(max_attempts).map_err(|_| {
                format!("AAR_VERIFICATION_MAX_ATTEMPTS={max_attempts} is out of range")
            })?,
            ..Policy::default()
        },
    })
}

/// Checks snapshots only (for entries verified by remote workers): the snapshot must
/// hold an `aar-method.json` whose `name` is a non-empty string.
#[derive(Debug)]
struct ManifestName;

impl Verifier for ManifestName {
    fn check_snapshot(&self, archive: &[u8]) -> Result<String, String> {
        let limits = aar_server::archive::ArchiveLimits {
            max_entries: 10_000,
            max_unpacked_bytes: 256 << 20,
        };
        let files = aar_server::archive::files(archive, limits, 1 << 20)
            .map_err(|e| format!("the snapshot cannot be read: {e}"))?;
        let manifest = files
            .iter()
            .find(|f| f.path == "aar-method.json")
            .ok_or("the snapshot is not a method directory: no aar-method.json")?;
        let text = manifest
            .text
            .as_deref()
            .ok_or("aar-method.json: not UTF-8 text")?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("aar-method.json: not valid JSON: {e}"))?;
        value["name"]
            .as_str()
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "aar-method.json: no name".to_owned())
    }

    fn verify(&self, _job: VerificationJob) -> VerifyFuture {
        Box::pin(std::future::ready(Err(
            "this server verifies no entry itself (remote workers do)".to_owned(),
        )))
    }
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
