use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aar_agents::accounting::{ModelPrice, PriceTable};
use aar_campaign::executor::ExecutorKind;
use aar_campaign::executor::slurm::SlurmSettings;
use aar_campaign::{CampaignConfig, Researchers, run_campaign};
use anyhow::Context;

/// Run (or resume) a research campaign: the preset's tasks and baselines (cached), the
/// research server, N sandboxed researchers for a given time, live progress, and a report.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Testbed preset.
    #[arg(long, default_value = "cpu", conflicts_with = "preset_file")]
    preset: String,
    /// A preset file instead (`aar tasks import` writes one; `aar baselines --show-preset`
    /// prints the shape).
    #[arg(long, value_name = "FILE")]
    preset_file: Option<PathBuf>,
    /// Number of researchers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
    researchers: u16,
    /// Minutes of work per researcher, counted over every run of this campaign.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Dollar cap for the whole campaign (LLM researchers).
    #[arg(long)]
    dollars: Option<f64>,
    /// Campaign name (its directory under `<home>/campaigns/`); the same name resumes.
    #[arg(long, default_value = "default")]
    name: String,
    /// Researchers driven by an LLM: `anthropic:<model>` (ANTHROPIC_API_KEY) or
    /// `openai:<base-url>#<model>`; default: the built-in offline researcher.
    #[arg(long)]
    llm: Option<String>,
    /// Prices of LLM models (JSON: {"<model prefix>": {"input": 3.0, "output": 15.0,
    /// "cache_write": 3.75, "cache_read": 0.3}}, dollars per million tokens), added to the
    /// built-in Anthropic prices. A model without a price is refused.
    #[arg(long)]
    prices: Option<PathBuf>,
    /// The `--llm` model costs nothing (a local server): its usage is counted, not charged.
    #[arg(long)]
    free_model: bool,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 30)]
    progress_seconds: u64,
    /// Where researchers and verifications run: `local` (this machine), `slurm` (each
    /// researcher and each verification a batch job; needs --database-url postgres://...)
    /// or `manual` (prints each researcher's and the verification workers' command lines
    /// for you to run wherever you like, and waits).
    #[arg(long, value_enum, default_value_t = ExecutorArg::Local)]
    executor: ExecutorArg,
    /// Slurm defaults (JSON: partition, account, qos, time_limit, gres, verify_gres,
    /// cpus_per_task, mem, extra_args, max_restarts, verify_jobs); the flags below
    /// override it. Default: `<home>/slurm.json` when it exists.
    #[arg(long, value_name = "FILE")]
    slurm_config: Option<PathBuf>,
    /// Slurm partition of every job.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm account of every job.
    #[arg(long)]
    account: Option<String>,
    /// Generic resources of researcher jobs, e.g. `gpu:1`.
    #[arg(long)]
    gres: Option<String>,
    /// Time limit of researcher jobs, in Slurm's format (e.g. `4:00:00`).
    #[arg(long)]
    time_limit: Option<String>,
    /// The server's database: `postgres://USER@HOST/DB` (default: SQLite in the
    /// campaign's directory; the slurm executor needs PostgreSQL).
    #[arg(long, env = "AAR_DATABASE_URL")]
    database_url: Option<String>,
    /// The server's listening address (default: a free port on 127.0.0.1; jobs on other
    /// nodes need an address they can reach, e.g. 0.0.0.0:8700).
    #[arg(long)]
    bind: Option<std::net::SocketAddr>,
    /// The server's URL as jobs reach it (default: http://<bind>), e.g.
    /// http://login-node:8700.
    #[arg(long)]
    server_url: Option<String>,
    /// aar's state directory.
    #[arg(long, env = "AAR_HOME", default_value = ".aar")]
    home: PathBuf,
}

/// `--executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorArg {
    Local,
    Slurm,
    Manual,
}

/// The executor: Slurm settings from the config file, overridden by flags.
fn executor(args: &UpArgs, home: &Path) -> anyhow::Result<ExecutorKind> {
    if args.executor != ExecutorArg::Slurm {
        let slurm_only = [&args.partition, &args.account, &args.gres, &args.time_limit];
        anyhow::ensure!(
            slurm_only.iter().all(|a| a.is_none()) && args.slurm_config.is_none(),
            "--partition, --account, --gres, --time-limit and --slurm-config need --executor slurm"
        );
        return Ok(match args.executor {
            ExecutorArg::Manual => ExecutorKind::Manual,
            _ => ExecutorKind::Local,
        });
    }
    let default_file = home.join("slurm.json");
    let file = args
        .slurm_config
        .clone()
        .or_else(|| default_file.is_file().then_some(default_file));
    let mut settings = match &file {
        Some(path) => SlurmSettings::read(path)?,
        None => SlurmSettings::default(),
    };
    let overrides = [
        (&mut settings.partition, &args.partition),
        (&mut settings.account, &args.account),
        (&mut settings.gres, &args.gres),
        (&mut settings.time_limit, &args.time_limit),
    ];
    for (setting, flag) in overrides {
        if flag.is_some() {
            setting.clone_from(flag);
        }
    }
    settings.validate()?;
    Ok(ExecutorKind::Slurm(Box::new(settings)))
}

fn researchers(llm: Option<&str>) -> anyhow::Result<Researchers> {
    let Some(spec) = llm else {
        return Ok(Researchers::Offline);
    };
    if let Some(model) = spec.strip_prefix("anthropic:") {
        return Ok(Researchers::Anthropic {
            model: model.to_owned(),
        });
    }
    if let Some(rest) = spec.strip_prefix("openai:")
        && let Some((base_url, model)) = rest.rsplit_once('#')
    {
        return Ok(Researchers::OpenAi {
            base_url: base_url.to_owned(),
            model: model.to_owned(),
        });
    }
    anyhow::bail!("--llm {spec:?}: expected anthropic:<model> or openai:<base-url>#<model>")
}

/// What researchers' sandboxes mount for libtorch: pip's torch links the CUDA runtime
/// libraries of its sibling `nvidia` packages, so the whole virtual environment when
/// libtorch lives in one (as `scripts/setup.sh` makes it), else the directory itself.
pub(super) fn libtorch_tree(dir: &str) -> PathBuf {
    python_venv(dir).unwrap_or_else(|| PathBuf::from(dir))
}

/// The virtual environment libtorch lives in (the directory holding `pyvenv.cfg`, as
/// `scripts/setup.sh` makes `.venv/libtorch`): the `python3` of every sandbox.
pub(super) fn python_venv(libtorch: &str) -> Option<PathBuf> {
    Path::new(libtorch)
        .parent()
        .filter(|venv| venv.join("pyvenv.cfg").is_file())
        .map(Path::to_owned)
}

/// The ledger's prices: the built-in ones, the `--prices` file, and `--free-model`. An
/// LLM model without a price is an error now, not a guess later.
fn prices(args: &UpArgs, policy: &Researchers) -> anyhow::Result<PriceTable> {
    let mut table = PriceTable::strict();
    if let Some(path) = &args.prices {
        table.extend_from_file(path)?;
    }
    let model = match policy {
        Researchers::Offline => return Ok(table),
        Researchers::Anthropic { model } | Researchers::OpenAi { model, .. } => model,
    };
    if args.free_model {
        table.set(model, ModelPrice::free());
    }
    anyhow::ensure!(
        table.price(model).is_some(),
        "model {model:?} has no price: give --prices FILE with an entry for it, or \
         --free-model for a local model that costs nothing"
    );
    Ok(table)
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.minutes.is_finite() && args.minutes > 0.0,
        "--minutes must be a positive number"
    );
    let policy = researchers(args.llm.as_deref())?;
    let prices = prices(&args, &policy)?;
    aar_engine::device::best_device();
    let home = std::path::absolute(&args.home)
        .with_context(|| format!("resolving {}", args.home.display()))?;
    let executor = executor(&args, &home)?;
    let (preset, preset_file) = match &args.preset_file {
        // Read now, so a bad file fails before anything starts.
        Some(path) => {
            let preset = aar_testbed::Preset::from_file(path)?;
            let path = std::path::absolute(path)
                .with_context(|| format!("resolving {}", path.display()))?;
            (preset.name, Some(path))
        }
        None => (args.preset, None),
    };
    let config = CampaignConfig {
        executor,
        database_url: args.database_url,
        bind: args.bind,
        server_url: args.server_url,
        home,
        name: args.name,
        preset,
        preset_file,
        researchers: usize::from(args.researchers),
        minutes: args.minutes,
        dollars: args.dollars,
        policy,
        aar_binary: std::env::current_exe().context("locating the aar binary")?,
        libtorch: option_env!("AAR_LIBTORCH_DIR").map(libtorch_tree),
        python_venv: option_env!("AAR_LIBTORCH_DIR").and_then(python_venv),
        progress_every: Duration::from_secs(args.progress_seconds.max(1)),
        prices,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = interrupt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after the current steps (Ctrl-C again to abort)...");
                flag.store(true, Ordering::SeqCst);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let report = run_campaign(config, interrupt).await?;
        println!("{}", report.markdown());
        anyhow::Ok(())
    })
}
