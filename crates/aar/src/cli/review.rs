//! `aar review`: a person's judgement of flagged leaderboard entries. Lists each
//! flagged entry with the probes' evidence; approving or disqualifying records the
//! decision with its reason in the campaign's audit log.

use std::path::PathBuf;

use aar_core::text::terminal_line;
use aar_store::{EntryStatus, Store};
use anyhow::Context;

/// Review flagged entries of a campaign (by default the one `aar up` runs).
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    #[command(subcommand)]
    decision: Option<Decision>,
    /// Campaign name.
    #[arg(long, default_value = "default", global = true)]
    name: String,
    /// aar's state directory.
    #[arg(long, env = "AAR_HOME", default_value = ".aar", global = true)]
    home: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum Decision {
    /// Rank the entry despite its flags (they stay beside it in the report).
    Approve {
        /// Entry id.
        entry: i64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Remove the entry from the ranking; the report lists it with the reason.
    Disqualify {
        /// Entry id.
        entry: i64,
        /// Why (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

pub fn run(args: ReviewArgs) -> anyhow::Result<()> {
    let database = args
        .home
        .join("campaigns")
        .join(&args.name)
        .join("server.db");
    anyhow::ensure!(
        database.is_file(),
        "no campaign database at {} (run `aar up --name {}` first)",
        database.display(),
        args.name
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(async {
        let store = Store::connect(&format!("sqlite://{}", database.display()))
            .await
            .with_context(|| format!("opening {}", database.display()))?;
        match args.decision {
            None => list(&store).await,
            Some(Decision::Approve { entry, reason }) => {
                decide(&store, entry, EntryStatus::Approved, "approve", &reason).await
            }
            Some(Decision::Disqualify { entry, reason }) => {
                decide(
                    &store,
                    entry,
                    EntryStatus::Disqualified,
                    "disqualify",
                    &reason,
                )
                .await
            }
        }
    })
}

async fn list(store: &Store) -> anyhow::Result<()> {
    let entries = store.all_entries().await?;
    let flags = store.flags().await?;
    let flagged: Vec<_> = entries
        .iter()
        .filter(|e| e.status == EntryStatus::Flagged)
        .collect();
    if flagged.is_empty() {
        println!("no flagged entries");
    }
    for entry in flagged {
        println!(
            "entry {} by {} on {}: {} (snapshot {}), verification {}",
            entry.id,
            terminal_line(&entry.agent_id),
            terminal_line(&entry.task),
            terminal_line(&entry.method),
            terminal_line(entry.snapshot_id.as_deref().unwrap_or("-")),
            entry.verification.as_str(),
        );
        let runs = store.verification_runs(entry.id).await?;
        for split in ["test", "test_private", "transfer"] {
            let values: Vec<f64> = runs
                .iter()
                .filter(|r| r.variant == "main" && r.split == split)
                .filter_map(|r| r.accuracy)
                .collect();
            if let Ok(m) = aar_core::metrics::MeanSe::from_values(&values) {
                println!("  {split}: accuracy {m}");
            }
        }
        for flag in flags.iter().filter(|f| {
            f.flag.entry_id == Some(entry.id)
                || (f.flag.entry_id.is_none() && f.flag.agent_id == entry.agent_id)
        }) {
            println!(
                "  flag [{}] {}\n    evidence: {}",
                flag.flag.probe,
                terminal_line(&flag.flag.summary),
                terminal_line(&flag.flag.evidence)
            );
        }
        println!(
            "  decide: aar review approve {id} --reason ... | aar review disqualify {id} --reason ...",
            id = entry.id
        );
    }
    Ok(())
}

async fn decide(
    store: &Store,
    entry: i64,
    status: EntryStatus,
    action: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let reason = reason.trim();
    anyhow::ensure!(
        !reason.is_empty() && reason.chars().count() <= 2000,
        "--reason: 1 to 2000 characters"
    );
    aar_core::text::check_agent_text(reason, true).map_err(|e| anyhow::anyhow!("--reason: {e}"))?;
    let mut tx = store.begin_write().await?;
    anyhow::ensure!(
        tx.review_entry(entry, status, action, reason, "admin:cli")
            .await?,
        "no entry {entry}"
    );
    tx.commit().await?;
    println!("entry {entry}: {}", status.as_str());
    Ok(())
}
