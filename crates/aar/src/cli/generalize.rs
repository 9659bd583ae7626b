use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aar_campaign::generalize::{
    DEFAULT_TOP, GENERALIZATION_FILE, GateRequest, generalize_campaign,
};
use anyhow::Context;

/// The generalization gate: run entries' methods (each declared seed in a fresh sandbox,
/// as verification does) on every other served task, the preset's held-out tasks and a
/// second model pair; print PGR per target with vanilla beside it, and the ranking by mean
/// PGR across targets. Writes `generalization.json` in the campaign directory; finished
/// runs are cached, so an interrupted gate resumes.
#[derive(Debug, clap::Args)]
pub struct GeneralizeArgs {
    /// Entry ids (default: the best `--top` verified entries by private PGR).
    entries: Vec<i64>,
    /// The campaign (its directory under `<home>/campaigns/`).
    #[arg(long, default_value = "default")]
    campaign: String,
    /// How many entries to take when none is named.
    #[arg(long, default_value_t = DEFAULT_TOP)]
    top: usize,
    /// The campaign's testbed preset.
    #[arg(long, default_value = "cpu", conflicts_with = "preset_file")]
    preset: String,
    /// The campaign's preset file, when it ran on one.
    #[arg(long, value_name = "FILE")]
    preset_file: Option<PathBuf>,
    /// Print `generalization.json` instead of the table.
    #[arg(long)]
    json: bool,
    /// aar's state directory.
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
}

pub fn run(args: GeneralizeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.top > 0, "--top must be at least 1");
    aar_engine::device::best_device();
    let preset = match &args.preset_file {
        Some(path) => aar_testbed::Preset::from_file(path)?,
        None => aar_testbed::Preset::named(&args.preset)?,
    };
    let home = std::path::absolute(&args.home)
        .with_context(|| format!("resolving {}", args.home.display()))?;
    let libtorch = option_env!("AAR_LIBTORCH_DIR");
    let request = GateRequest {
        home: home.clone(),
        campaign: args.campaign.clone(),
        preset,
        entry_ids: args.entries,
        top: args.top,
        aar_binary: std::env::current_exe().context("locating the aar binary")?,
        libtorch: libtorch.map(super::up::libtorch_tree),
        python_venv: libtorch.and_then(super::up::python_venv),
        interrupt: Arc::new(AtomicBool::new(false)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async move {
        let flag = request.interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after the current run (finished runs are kept)...");
                flag.store(true, Ordering::SeqCst);
            }
        });
        generalize_campaign(request).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.markdown());
        let file = home
            .join("campaigns")
            .join(&args.campaign)
            .join(GENERALIZATION_FILE);
        eprintln!("written: {}", file.display());
    }
    Ok(())
}
