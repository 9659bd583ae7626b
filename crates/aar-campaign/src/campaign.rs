//! `aar up`: the testbed's baselines (cached), the research server, N researchers in
//! their sandboxes, live progress, and the report. Everything lives under
//! `<home>/campaigns/<name>/`, so running it again resumes: the server's database, the
//! agents' tokens, workspaces, notebooks, transcripts and the spending ledger are kept,
//! and budgets count what was already spent.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aar_agents::accounting::{Budget, Budgets, Ledger, PriceTable};
use aar_agents::sandbox::RunAs;
use aar_testbed::{BaselineTable, Preset, RunOptions, run_baselines};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{CampaignError, Result};
use crate::executor::local::LocalExecutor;
use crate::executor::manual::ManualExecutor;
use crate::executor::slurm::{SlurmExecutor, SlurmSetup};
use crate::executor::{Executor, ExecutorKind, Placement, QueuedVerification, Work};
use crate::relay::{Relay, RelayedResearcher};
use crate::report::{Report, write_report};
use crate::researcher::ResearcherSpec;

/// Which policy drives the researchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Researchers {
    /// The built-in offline researcher (no LLM).
    Offline,
    /// Anthropic's Messages API (`ANTHROPIC_API_KEY`).
    Anthropic {
        /// Model name, e.g. `claude-sonnet-4-5`.
        model: String,
    },
    /// An OpenAI-compatible server (`OPENAI_API_KEY` when it needs one).
    OpenAi {
        /// Base URL, e.g. `http://127.0.0.1:8000/v1`.
        base_url: String,
        /// Model name.
        model: String,
    },
}

/// What `aar up` runs (written into each researcher's spec, so a researcher running
/// as a job of its own builds itself from the same settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignConfig {
    /// aar's state directory (`.aar`), absolute.
    pub home: PathBuf,
    /// Campaign name: its directory under `<home>/campaigns/`.
    pub name: String,
    /// Testbed preset: a built-in name, or the name inside [`CampaignConfig::preset_file`].
    pub preset: String,
    /// A preset file (`aar up --preset-file`, written by `aar tasks import`), read instead
    /// of the built-in preset.
    pub preset_file: Option<PathBuf>,
    /// Number of researchers.
    pub researchers: usize,
    /// Wall time per researcher, in total over every run of this campaign.
    pub minutes: f64,
    /// Dollar cap for the whole campaign (LLM researchers).
    pub dollars: Option<f64>,
    /// The policy.
    pub policy: Researchers,
    /// The aar binary researchers run in their sandboxes (usually this one).
    pub aar_binary: PathBuf,
    /// The directory tree holding the libtorch that binary links and the libraries it
    /// loads (mounted read-only at its host path).
    pub libtorch: Option<PathBuf>,
    /// The Python virtual environment (numpy, torch) whose `python3` researchers' and
    /// verification runs' commands get (mounted read-only at its host path).
    pub python_venv: Option<PathBuf>,
    /// Seconds between progress lines.
    pub progress_every: Duration,
    /// What LLM usage costs (the ledger's prices).
    pub prices: PriceTable,
    /// Where researchers and verifications run.
    #[serde(default)]
    pub executor: ExecutorKind,
    /// The server's database (`None`: SQLite in the campaign's directory); the Slurm
    /// executor needs PostgreSQL.
    #[serde(default)]
    pub database_url: Option<String>,
    /// The server's listening address (`None`: a free port on 127.0.0.1).
    #[serde(default)]
    pub bind: Option<SocketAddr>,
    /// The server's URL as researchers and workers reach it (`None`: `http://<bind>`).
    #[serde(default)]
    pub server_url: Option<String>,
}

/// The agents' ids and tokens, kept so a resumed campaign reuses its identities.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Identities {
    admin_token: String,
    agents: BTreeMap<String, AgentIdentity>,
    /// Verification workers' token (cluster mode).
    #[serde(default)]
    worker_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentIdentity {
    agent_id: String,
    token: String,
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut file =
        std::fs::File::open("/dev/urandom").map_err(CampaignError::io("/dev/urandom"))?;
    std::io::Read::read_exact(&mut file, &mut bytes).map_err(CampaignError::io("/dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    aar_agents::fsutil::write_private(path, bytes).map_err(CampaignError::io(path))
}

fn free_port_on(ip: std::net::IpAddr) -> Result<SocketAddr> {
    let any = SocketAddr::new(ip, 0);
    let listener = TcpListener::bind(any).map_err(CampaignError::io(any.to_string()))?;
    listener
        .local_addr()
        .map_err(CampaignError::io(any.to_string()))
}

/// The campaign's directories.
#[derive(Debug, Clone)]
pub struct CampaignPaths {
    /// `<home>/campaigns/<name>`.
    pub root: PathBuf,
}

impl CampaignPaths {
    /// The directories of `config`'s campaign: `<home>/campaigns/<name>`.
    pub fn of(config: &CampaignConfig) -> CampaignPaths {
        CampaignPaths {
            root: config.home.join("campaigns").join(&config.name),
        }
    }

    fn identities(&self) -> PathBuf {
        self.root.join("identities.json")
    }
    fn database(&self) -> PathBuf {
        database_path(&self.root)
    }
    fn ledger(&self) -> PathBuf {
        self.root.join("ledger.json")
    }
    pub(crate) fn agent(&self, name: &str) -> PathBuf {
        self.root.join("agents").join(name)
    }
    /// Where the report goes.
    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }
}

/// The campaign's SQLite database under its directory `root`.
pub(crate) fn database_path(root: &Path) -> PathBuf {
    root.join("server.db")
}

/// The labeled tasks the campaign's server scores: copies of the testbed's task
/// directories that have a weak-to-strong gap, with their pinned baselines.
fn server_tasks_dir(home: &Path, campaign: &str) -> PathBuf {
    home.join("campaigns").join(campaign).join("tasks")
}

/// The registry assets a preset needs: its models (when named by asset) and sources.
pub fn preset_assets(preset: &Preset) -> Vec<String> {
    use aar_testbed::preset::{Corpus, LearnerSpec, TaskSource};
    let mut names = Vec::new();
    for learner in preset.learners() {
        if let LearnerSpec::Frozen { model, .. } | LearnerSpec::Lora { model, .. } = learner
            && !model.contains('/')
        {
            names.push(model.clone());
        }
    }
    for task in &preset.tasks {
        let sources: &[&str] = match &task.source {
            TaskSource::Text { corpus } => match corpus {
                Corpus::RottenTomatoes => &["rotten-tomatoes"],
                Corpus::Sarcasm => &["sarcasm"],
                Corpus::Fever | Corpus::MultiemoHotels | Corpus::MultiemoMedicine => &["bigbench"],
            },
            TaskSource::Pairs { .. } => &["bigbench"],
            TaskSource::Jsonl { .. } => &[],
            TaskSource::Pack { pack } => match pack.as_str() {
                "chat" => &["bigbench"],
                "math" => &["bigbench", "gsm8k"],
                _ => &["codeio", "human-eval"],
            },
        };
        names.extend(sources.iter().map(|s| (*s).to_owned()));
    }
    names.sort();
    names.dedup();
    names
}

/// The campaign's preset: its file when it has one, else the built-in one of that name.
pub fn load_preset(config: &CampaignConfig) -> Result<Preset> {
    Ok(match &config.preset_file {
        Some(path) => Preset::from_file(path)?,
        None => Preset::named(&config.preset)?,
    })
}

/// Model directories the preset names outside the assets (a user's models): mounted
/// read-only where the student runs, like `assets/models`.
pub(crate) fn user_model_dirs(config: &CampaignConfig) -> Result<Vec<PathBuf>> {
    external_model_dirs(load_preset(config)?.learners())
}

/// The model directories `learners` name that are not packaged assets, absolute, each
/// once.
pub(crate) fn external_model_dirs<'a>(
    learners: impl IntoIterator<Item = &'a aar_testbed::preset::LearnerSpec>,
) -> Result<Vec<PathBuf>> {
    use aar_testbed::preset::LearnerSpec;
    let mut dirs: Vec<PathBuf> = learners
        .into_iter()
        .filter_map(|learner| match learner {
            LearnerSpec::Frozen { model, .. } | LearnerSpec::Lora { model, .. }
                if aar_assets::manifest::asset(model).is_none() =>
            {
                Some(PathBuf::from(model))
            }
            _ => None,
        })
        .map(|dir| std::path::absolute(&dir).map_err(CampaignError::io(&dir)))
        .collect::<Result<_>>()?;
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

/// Builds the preset's tasks and baselines (cached after the first run) and pins each
/// task's public-test W and S for the server.
fn prepare_testbed(
    config: &CampaignConfig,
    interrupt: &Arc<AtomicBool>,
) -> Result<(RunOptions, BaselineTable)> {
    let preset = load_preset(config)?;
    let mut options = RunOptions::new(&preset, &config.home);
    options.interrupt = Some(interrupt.clone());
    let mut fetch = aar_assets::FetchOptions::new(&options.assets_dir);
    fetch.only = preset_assets(&preset);
    tracing::info!(assets = ?fetch.only, "assets the preset needs (fetched once)");
    aar_assets::fetch_assets(&fetch)?;
    tracing::info!(preset = %preset.name, "testbed: tasks, features and baselines (cached after the first run)");
    run_baselines(&preset, &options)?;
    if interrupt.load(Ordering::SeqCst) {
        return Err(CampaignError::Interrupted);
    }
    let mut table = BaselineTable::read_preset(&options.results_dir(), &preset)?;
    // PGR needs a ceiling above the weak teacher; a task without that gap (a user's preset
    // may hold one; `cpu`'s tasks all have it) is not researched.
    table.tasks.retain(|task| {
        let gap = task.baseline("test").map(|(w, s)| s.mean - w.mean);
        if gap.is_none_or(|gap| gap <= 0.0) {
            tracing::warn!(task = %task.task, ?gap, "left out of the campaign: the ceiling does not beat the weak teacher");
            return false;
        }
        true
    });
    if table.tasks.is_empty() {
        return Err(CampaignError::Setup(format!(
            "preset {}: no task whose ceiling beats its weak teacher",
            preset.name
        )));
    }
    let served = server_tasks_dir(&config.home, &config.name);
    if served.exists() {
        std::fs::remove_dir_all(&served).map_err(CampaignError::io(&served))?;
    }
    std::fs::create_dir_all(&served).map_err(CampaignError::io(&served))?;
    for task in &table.tasks {
        let Some((weak, ceiling)) = task.baseline("test") else {
            continue;
        };
        // A copy, not a link: the server's registry takes real directories only.
        let labeled = options.tasks_dir().join(&task.task);
        let copy = served.join(&task.task);
        std::fs::create_dir_all(&copy).map_err(CampaignError::io(&copy))?;
        for entry in std::fs::read_dir(&labeled).map_err(CampaignError::io(&labeled))? {
            let entry = entry.map_err(CampaignError::io(&labeled))?;
            if entry
                .file_type()
                .map_err(CampaignError::io(entry.path()))?
                .is_file()
            {
                let to = copy.join(entry.file_name());
                std::fs::copy(entry.path(), &to).map_err(CampaignError::io(&to))?;
            }
        }
        // The server takes per-seed lists and uses their means; the means over the
        // pinned seeds are what the testbed reports, so they are pinned as they are.
        let file = copy.join("baselines.json");
        // Which rows each pinned weak, ceiling and vanilla run got right: PGR errors
        // that include the test's noise, and comparisons with vanilla. Label-dependent,
        // like the rest of this directory, which only the server and verifier read.
        let rows = |split: &str| {
            table
                .outcomes(&task.task, split)
                .map(|o| aar_server::tasks::RowOutcomes {
                    weak: o.weak.clone(),
                    ceiling: o.ceiling.clone(),
                    vanilla: o.vanilla.clone(),
                    builtins: o.methods.clone(),
                })
        };
        // The held-out splits' own W and S: the verifier's private and transfer PGR.
        let splits = ["test_private", "transfer"]
            .into_iter()
            .filter_map(|split| {
                let (w, s) = task.baseline(split)?;
                let pinned = aar_server::tasks::SplitBaselines {
                    weak: vec![w.mean],
                    ceiling: vec![s.mean],
                    correct_rows: rows(split),
                };
                Some((split.to_owned(), pinned))
            })
            .collect();
        let value = aar_server::tasks::BaselinesFile {
            weak: vec![weak.mean],
            ceiling: vec![ceiling.mean],
            correct_rows: rows("test"),
            splits,
        };
        let text = serde_json::to_vec(&value).map_err(|e| CampaignError::Setup(e.to_string()))?;
        write_private(&file, &text)?;
    }
    let served_tasks: Vec<String> = table.tasks.iter().map(|t| t.task.clone()).collect();
    // The researchers' read-only feature cache, filled here from the agent copies alone:
    // the testbed's own cache also holds features of train_label and the transfer set.
    aar_testbed::baselines::fill_agent_feature_cache(&options, &served_tasks)?;
    // The researchers' /data: this campaign's copy of the agent copies, with decoys.
    let root = CampaignPaths::of(config).root;
    crate::decoys::build_agent_data(&root, &options.agent_dir(), &served_tasks)?;
    Ok((options, table))
}

async fn wait_for_health(
    base: &str,
    server: &mut tokio::task::JoinHandle<std::result::Result<(), aar_server::ServerError>>,
) -> Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if server.is_finished() {
            return Err(CampaignError::Server(match server.await {
                Ok(Err(err)) => err.to_string(),
                Ok(Ok(())) => "the server stopped".into(),
                Err(err) => format!("the server task failed: {err}"),
            }));
        }
        if let Ok(response) = client.get(format!("{base}/health")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(CampaignError::Setup(format!(
        "the research server at {base} did not come up"
    )))
}

/// Admin calls of the orchestrator.
#[derive(Debug, Clone)]
pub(crate) struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CampaignError::Server(format!("GET {path}: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| CampaignError::Server(format!("GET {path}: {e}")))?;
        if !status.is_success() {
            return Err(CampaignError::Server(format!(
                "GET {path}: {status} {body}"
            )));
        }
        Ok(body)
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| CampaignError::Server(format!("POST {path}: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| CampaignError::Server(format!("POST {path}: {e}")))?;
        if !status.is_success() {
            return Err(CampaignError::Server(format!(
                "POST {path}: {status} {body}"
            )));
        }
        Ok(body)
    }
}

/// How long a verification job's claim on an entry lasts unless renewed.
const VERIFICATION_LEASE: Duration = Duration::from_secs(60);

/// The research server of a running campaign.
struct RunningServer {
    task: tokio::task::JoinHandle<std::result::Result<(), aar_server::ServerError>>,
    admin: Admin,
    database_url: String,
    /// The URL researchers and verification workers are given.
    public_url: String,
}

/// The campaign's database: the configured URL, else SQLite in its directory. A
/// campaign whose researchers run on other machines needs PostgreSQL.
fn campaign_database(config: &CampaignConfig, paths: &CampaignPaths) -> Result<String> {
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", paths.database().display()));
    if matches!(config.executor, ExecutorKind::Slurm(_)) && !url.starts_with("postgres") {
        return Err(CampaignError::Setup(
            "--executor slurm needs the server on PostgreSQL (--database-url \
             postgres://USER@HOST/DB): SQLite's single file does not take a campaign that \
             spans machines and restarts of its orchestrator"
                .to_owned(),
        ));
    }
    Ok(url)
}

/// Starts the server: with the in-process verifier when the executor verifies here,
/// else with a queue that verification workers (holding `worker_token`) take from.
async fn start_server(
    config: &CampaignConfig,
    paths: &CampaignPaths,
    options: &RunOptions,
    served: &[String],
    identities: &Identities,
    verify_here: bool,
) -> Result<RunningServer> {
    let database_url = campaign_database(config, paths)?;
    let task_root = server_tasks_dir(&config.home, &config.name);
    let (verifier, verify_workers) = if verify_here {
        let verifier = crate::oversight::start_verifier(
            config,
            &paths.root,
            &task_root,
            options,
            served,
            &database_url,
        )
        .await?;
        (Some(verifier), None)
    } else {
        crate::oversight::prepare_worker_config(config, &paths.root, &task_root, options, served)
            .await?;
        let token = aar_server::AdminTokenSource::Literal(identities.worker_token.clone());
        // The server still checks each entry's manifest when it is made; workers run it.
        let checker = aar_server::verify::VerifierHandle {
            verifier: Arc::new(aar_oversight::SnapshotChecker),
            concurrency: 0,
        };
        (Some(checker), Some(token))
    };
    let bind = match config.bind {
        Some(bind) if bind.port() != 0 => bind,
        Some(bind) => free_port_on(bind.ip())?,
        None => free_port_on(std::net::Ipv4Addr::LOCALHOST.into())?,
    };
    // The orchestrator talks to its server over loopback whatever address it binds.
    let local = SocketAddr::new(
        if bind.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            bind.ip()
        },
        bind.port(),
    );
    let base = format!("http://{local}");
    let server_config = aar_server::ServerConfig {
        bind,
        database_url: database_url.clone(),
        verifier,
        verify_workers,
        task_root,
        admin_token: aar_server::AdminTokenSource::Literal(identities.admin_token.clone()),
        policy: aar_server::Policy {
            // A verification job that dies gives its entry back within a minute
            // (its worker renews the lease every 15 s while it runs).
            verification_lease: VERIFICATION_LEASE,
            ..aar_server::Policy::default()
        },
    };
    let mut task = tokio::spawn(aar_server::serve(server_config));
    wait_for_health(&base, &mut task).await?;
    Ok(RunningServer {
        task,
        admin: Admin {
            http: reqwest::Client::new(),
            base: base.clone(),
            token: identities.admin_token.clone(),
        },
        database_url,
        public_url: config.server_url.clone().unwrap_or(base),
    })
}

/// The executor the campaign asked for.
fn make_executor(
    config: &CampaignConfig,
    paths: &CampaignPaths,
    server: &RunningServer,
    ledger: &Ledger,
) -> Result<Box<dyn Executor>> {
    Ok(match &config.executor {
        ExecutorKind::Local => Box::new(LocalExecutor::new(
            &server.public_url,
            ledger.clone(),
            crate::researcher::language_model(&config.policy)?,
        )),
        ExecutorKind::Manual => Box::new(ManualExecutor::new(
            &server.public_url,
            ledger.clone(),
            config.aar_binary.clone(),
            paths.root.join("oversight").join("worker.token"),
            paths.root.join("oversight").join("worker.json"),
        )),
        ExecutorKind::Slurm(settings) => Box::new(SlurmExecutor::new(
            (**settings).clone(),
            SlurmSetup {
                server: server.public_url.clone(),
                aar_binary: config.aar_binary.clone(),
                root: std::path::absolute(&paths.root).map_err(CampaignError::io(&paths.root))?,
                worker_token: paths.root.join("oversight").join("worker.token"),
                worker_config: paths.root.join("oversight").join("worker.json"),
                ledger: ledger.clone(),
            },
        )?),
    })
}

/// One spec per researcher, with its token in a file of its own.
fn researcher_specs(
    config: &CampaignConfig,
    paths: &CampaignPaths,
    identities: &Identities,
    names: &[String],
) -> Result<Vec<ResearcherSpec>> {
    let own_ledgers = !matches!(config.executor, ExecutorKind::Local);
    names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let token = &identities
                .agents
                .get(name)
                .ok_or_else(|| CampaignError::Setup(format!("no token for {name}")))?
                .token;
            let dir = paths.agent(name);
            std::fs::create_dir_all(dir.join("state")).map_err(CampaignError::io(&dir))?;
            let token_file = dir.join("token");
            write_private(&token_file, token.as_bytes())?;
            // A researcher never touches the database: its URL (which may hold a
            // password) stays out of the spec files.
            let mut campaign = config.clone();
            campaign.database_url = None;
            Ok(ResearcherSpec {
                campaign,
                name: name.clone(),
                index,
                token_file,
                ledger: own_ledgers.then(|| dir.join("state").join("ledger.json")),
            })
        })
        .collect()
}

/// Runs (or resumes) a campaign until every researcher's budget is spent or `interrupt`
/// is raised, then writes the report and returns it.
pub async fn run_campaign(config: CampaignConfig, interrupt: Arc<AtomicBool>) -> Result<Report> {
    let started = Instant::now();
    let paths = CampaignPaths::of(&config);
    // Refused before anything is written.
    campaign_database(&config, &paths)?;
    std::fs::create_dir_all(&paths.root).map_err(CampaignError::io(&paths.root))?;

    let prepare_config = config.clone();
    let prepare_interrupt = interrupt.clone();
    let (options, table) =
        tokio::task::spawn_blocking(move || prepare_testbed(&prepare_config, &prepare_interrupt))
            .await
            .map_err(|e| CampaignError::Setup(format!("testbed preparation panicked: {e}")))??;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "testbed ready");

    let mut identities = load_identities(&paths)?;
    let served: Vec<String> = table.tasks.iter().map(|t| t.task.clone()).collect();
    let verify_here = matches!(config.executor, ExecutorKind::Local);
    if !verify_here {
        let token = paths.root.join("oversight").join("worker.token");
        std::fs::create_dir_all(paths.root.join("oversight"))
            .map_err(CampaignError::io(&paths.root))?;
        write_private(&token, identities.worker_token.as_bytes())?;
    }
    let server = start_server(&config, &paths, &options, &served, &identities, verify_here).await?;
    let admin = server.admin.clone();

    let names: Vec<String> = (0..config.researchers.max(1))
        .map(|i| format!("researcher-{}", i + 1))
        .collect();
    register_agents(&admin, &mut identities, &names, &paths).await?;
    let ledger = open_ledger(&config, &paths)?;
    let agent_ids: BTreeMap<String, String> = names
        .iter()
        .filter_map(|n| Some((identities.agents.get(n)?.agent_id.clone(), n.clone())))
        .collect();
    let mut executor = make_executor(&config, &paths, &server, &ledger)?;
    let specs = researcher_specs(&config, &paths, &identities, &names)?;
    tokio::task::block_in_place(|| executor.start(&specs))?;
    print_dashboard_link(&admin).await;
    let researchers = relayed_researchers(&names, &identities, &paths);
    let mut relay = Relay::resume(&admin, &ledger, config.minutes, researchers).await;
    let progress = Progress {
        admin: &admin,
        ledger: &ledger,
        agent_ids: &agent_ids,
        table: &table,
        minutes: config.minutes,
        every: config.progress_every,
    };
    let store = aar_store::Store::connect(&server.database_url)
        .await
        .map_err(|e| CampaignError::Server(format!("campaign store: {e}")))?;
    let interrupted = supervise(executor.as_mut(), &store, &progress, &mut relay, &interrupt).await;
    relay.flush().await;
    if interrupted {
        eprintln!("interrupted: everything so far is kept; `aar up` again resumes");
    }
    let ending = Ending {
        config: &config,
        paths: &paths,
        options: &options,
        table: &table,
        served: &served,
        interrupted,
        interrupt: &interrupt,
    };
    let report = conclude(&ending, executor.as_mut(), &store, &server, &progress).await;
    server.task.abort();
    report
}

/// What the end of a campaign works from.
struct Ending<'a> {
    config: &'a CampaignConfig,
    paths: &'a CampaignPaths,
    options: &'a RunOptions,
    table: &'a BaselineTable,
    served: &'a [String],
    interrupted: bool,
    interrupt: &'a Arc<AtomicBool>,
}

/// After the research: waits for the verifications (the executor keeps placing them),
/// stops whatever still runs, runs the generalization gate unless interrupted, and
/// writes the report.
async fn conclude(
    ending: &Ending<'_>,
    executor: &mut dyn Executor,
    store: &aar_store::Store,
    server: &RunningServer,
    progress: &Progress<'_>,
) -> Result<Report> {
    let waiting = crate::oversight::finish(&server.database_url, ending.served, ending.interrupt);
    let ticking = keep_ticking(executor, store);
    tokio::select! {
        finished = waiting => finished?,
        () = ticking => {}
    }
    // Nothing of this campaign keeps running past it (a verification job still busy
    // after the wait gives its entry back to the queue; the next run verifies it).
    tokio::task::block_in_place(|| executor.stop());
    // An interrupted campaign skips the gate: `aar up` again (or `aar generalize`) runs it.
    let generalization = if ending.interrupted {
        None
    } else {
        crate::generalize::at_campaign_end(
            ending.config,
            &ending.paths.root,
            ending.options,
            ending.table,
            &server.database_url,
            ending.interrupt,
        )
        .await
    };
    let mut report = Report::gather(
        progress.admin,
        progress.ledger,
        progress.agent_ids,
        ending.table,
        ending.config,
    )
    .await?;
    report.placements = executor.placements();
    let dir = ending.paths.report_dir();
    write_report(&report, &dir)?;
    if let Some(generalization) = &generalization {
        crate::generalize::append_to_report(generalization, &dir)?;
    }
    Ok(report)
}

/// The agents' ids and tokens of a resumed campaign, or a fresh admin token.
fn load_identities(paths: &CampaignPaths) -> Result<Identities> {
    let mut identities: Identities = match std::fs::read(paths.identities()) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CampaignError::Setup(format!("{}: {e}", paths.identities().display())))?,
        Err(_) => Identities {
            admin_token: random_token()?,
            ..Identities::default()
        },
    };
    // Campaigns from before cluster mode have no worker token yet.
    if identities.worker_token.is_empty() {
        identities.worker_token = random_token()?;
    }
    write_private(
        &paths.identities(),
        &serde_json::to_vec_pretty(&identities).map_err(|e| CampaignError::Setup(e.to_string()))?,
    )?;
    Ok(identities)
}

/// Registers every researcher the campaign does not know yet, keeping each token as
/// soon as it is issued (a crash in between loses none).
async fn register_agents(
    admin: &Admin,
    identities: &mut Identities,
    names: &[String],
    paths: &CampaignPaths,
) -> Result<()> {
    for name in names {
        if identities.agents.contains_key(name) {
            continue;
        }
        let issued = admin
            .post("/api/admin/agents", &json!({"name": name}))
            .await?;
        let (Some(token), Some(agent_id)) = (issued["token"].as_str(), issued["agent_id"].as_str())
        else {
            return Err(CampaignError::Server(format!(
                "the agent registration answered without a token or id: {}",
                issued.get("agent_id").unwrap_or(&Value::Null)
            )));
        };
        identities.agents.insert(
            name.clone(),
            AgentIdentity {
                agent_id: agent_id.to_owned(),
                token: token.to_owned(),
            },
        );
        write_private(
            &paths.identities(),
            &serde_json::to_vec_pretty(&identities)
                .map_err(|e| CampaignError::Setup(e.to_string()))?,
        )?;
    }
    Ok(())
}

/// The campaign's ledger: `--minutes` of wall time per researcher, `--dollars` in all.
fn open_ledger(config: &CampaignConfig, paths: &CampaignPaths) -> Result<Ledger> {
    let budgets = Budgets {
        per_agent: Budget {
            wall_time: Some(Duration::from_secs_f64(config.minutes * 60.0)),
            ..Budget::default()
        },
        campaign: Budget {
            dollars: config.dollars,
            ..Budget::default()
        },
    };
    Ok(Ledger::open(
        &paths.ledger(),
        config.prices.clone(),
        budgets,
    )?)
}

/// What the dashboard relay follows of each researcher.
fn relayed_researchers(
    names: &[String],
    identities: &Identities,
    paths: &CampaignPaths,
) -> Vec<RelayedResearcher> {
    names
        .iter()
        .enumerate()
        .filter_map(|(index, name)| {
            let agent = identities.agents.get(name)?;
            let dir = paths.agent(name);
            // The uid `researcher_sandbox` gives this researcher's commands.
            let uid = match RunAs::for_agent(index as u32) {
                RunAs::Uid { uid, .. } => Some(uid),
                RunAs::Current => None,
            };
            Some(RelayedResearcher {
                name: name.clone(),
                agent_id: agent.agent_id.clone(),
                state_dir: dir.join("state"),
                workspace: dir.join("workspace"),
                uid,
            })
        })
        .collect()
}

/// Prints the dashboard's address with a one-time login link (the link is a secret
/// of the person at this terminal, like the admin token in the campaign directory).
async fn print_dashboard_link(admin: &Admin) {
    match admin.post("/api/admin/ui/login-link", &Value::Null).await {
        Ok(link) => println!(
            "dashboard: {}{} (one-time login link, valid {} min)",
            admin.base,
            link["path"].as_str().unwrap_or("/ui/login"),
            link["expires_in_seconds"].as_u64().unwrap_or(0) / 60
        ),
        Err(err) => tracing::warn!(error = %err, "no dashboard login link"),
    }
}

/// What the progress lines read.
struct Progress<'a> {
    admin: &'a Admin,
    ledger: &'a Ledger,
    agent_ids: &'a BTreeMap<String, String>,
    table: &'a BaselineTable,
    minutes: f64,
    every: Duration,
}

/// What the campaign tells its executor each tick. Which entries' methods ask for a
/// GPU is read from their snapshots once (`gpu_by_entry` keeps the answers).
async fn current_work(store: &aar_store::Store, gpu_by_entry: &mut BTreeMap<i64, bool>) -> Work {
    let pending = match store.pending_verifications().await {
        Ok(pending) => pending,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the verification queue");
            return Work::default();
        }
    };
    let mut queued = Vec::new();
    for entry in pending {
        if entry.verification != aar_store::VerificationState::Queued {
            continue;
        }
        let gpu = match gpu_by_entry.get(&entry.id) {
            Some(gpu) => *gpu,
            None => {
                let gpu = method_wants_gpu(store, entry.snapshot_id.as_deref()).await;
                gpu_by_entry.insert(entry.id, gpu);
                gpu
            }
        };
        queued.push(QueuedVerification {
            entry_id: entry.id,
            gpu,
        });
    }
    Work {
        queued_verifications: queued,
    }
}

/// Whether a snapshot's manifest asks for a GPU (a snapshot that cannot be read asks
/// for nothing: its verification fails with the reason anyway).
async fn method_wants_gpu(store: &aar_store::Store, snapshot: Option<&str>) -> bool {
    let Some(snapshot) = snapshot else {
        return false;
    };
    let Ok(Some(archive)) = store.snapshot_archive(snapshot).await else {
        return false;
    };
    tokio::task::spawn_blocking(move || aar_oversight::verifier::snapshot_manifest(&archive))
        .await
        .ok()
        .and_then(std::result::Result::ok)
        .is_some_and(|m| m.resources.device == aar_oversight::method::Device::Gpu)
}

/// One executor tick (the scheduler's commands block for milliseconds).
async fn tick(
    executor: &mut dyn Executor,
    store: &aar_store::Store,
    gpu_by_entry: &mut BTreeMap<i64, bool>,
) -> bool {
    // Entries verified in the server's own process need nothing from the executor.
    let work = if executor.verifies_in_process() {
        Work::default()
    } else {
        current_work(store, gpu_by_entry).await
    };
    match tokio::task::block_in_place(|| executor.tick(work)) {
        Ok(busy) => busy,
        Err(err) => {
            // A scheduler hiccup must not end a campaign: ask again next tick.
            tracing::warn!(error = %err, "executor");
            true
        }
    }
}

/// Ticks the executor forever (while the verifier's queue drains after the research).
async fn keep_ticking(executor: &mut dyn Executor, store: &aar_store::Store) {
    let mut gpu_by_entry = BTreeMap::new();
    loop {
        tick(executor, store, &mut gpu_by_entry).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits for every researcher, printing progress; on Ctrl-C stops them (every step is
/// already durable) and returns true.
async fn supervise(
    executor: &mut dyn Executor,
    store: &aar_store::Store,
    progress: &Progress<'_>,
    relay: &mut Relay,
    interrupt: &AtomicBool,
) -> bool {
    // A short tick notices Ctrl-C quickly; progress prints every `progress.every`.
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_progress = Instant::now();
    let mut gpu_by_entry = BTreeMap::new();
    loop {
        ticker.tick().await;
        if interrupt.load(Ordering::SeqCst) {
            tokio::task::block_in_place(|| executor.stop());
            return true;
        }
        let busy = tick(executor, store, &mut gpu_by_entry).await;
        relay.set_placements(&executor.placements());
        relay.tick().await;
        if last_progress.elapsed() >= progress.every {
            last_progress = Instant::now();
            print_progress(progress, &executor.placements()).await;
        }
        if !busy {
            return false;
        }
    }
}

async fn print_progress(progress: &Progress<'_>, placements: &[Placement]) {
    let best =
        match crate::report::best_pgr_by_agent(progress.admin, progress.agent_ids, progress.table)
            .await
        {
            Ok(best) => best,
            Err(err) => {
                tracing::warn!(error = %err, "progress: cannot read evaluations");
                BTreeMap::new()
            }
        };
    let minutes = progress.minutes;
    for name in progress.agent_ids.values() {
        let totals = progress.ledger.agent_totals(name);
        let used = totals.active_ms as f64 / 60_000.0;
        let eta = (minutes - used).max(0.0);
        let best = match best.get(name) {
            Some(tasks) if !tasks.is_empty() => tasks
                .iter()
                .map(|(task, pgr)| format!("{task} {pgr:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            _ => "-".to_owned(),
        };
        // Where it runs, for executors that place researchers somewhere else.
        let place = placements
            .iter()
            .find(|p| &p.researcher == name && p.job.is_some())
            .map(|p| format!(" [{}]", p.describe()))
            .unwrap_or_default();
        // Names and task names reach the terminal: no control sequence of theirs may.
        let line = format!(
            "{name}{place}: {} tool calls, best PGR by task: {best}, spent ${:.4}, {used:.1}/{minutes} min (about {eta:.1} min left)",
            totals.tool_calls,
            totals.dollars(),
        );
        println!("{}", aar_core::text::terminal_line(&line));
    }
}
