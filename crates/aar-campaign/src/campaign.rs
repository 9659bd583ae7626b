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
use aar_agents::agent::{Agent, AgentConfig, LlmPolicy, Policy};
use aar_agents::directions;
use aar_agents::llm::LanguageModel;
use aar_agents::llm::anthropic::{AnthropicClient, AnthropicConfig};
use aar_agents::llm::openai::{OpenAiClient, OpenAiConfig};
use aar_agents::sandbox::{CACHE_MOUNT, RunAs, Sandbox, SandboxConfig};
use aar_agents::server_client::ServerClient;
use aar_agents::tools::{Notebook, ToolLimits, Toolbox};
use aar_testbed::{BaselineTable, Preset, RunOptions, run_baselines};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{CampaignError, Result};
use crate::offline::OfflineResearcher;
use crate::relay::{Relay, RelayedResearcher};
use crate::report::{Report, write_report};

/// Which policy drives the researchers.
#[derive(Debug, Clone, PartialEq)]
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

/// What `aar up` runs.
#[derive(Debug, Clone)]
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
}

/// The agents' ids and tokens, kept so a resumed campaign reuses its identities.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Identities {
    admin_token: String,
    agents: BTreeMap<String, AgentIdentity>,
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
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(CampaignError::io(&partial))?;
    file.write_all(bytes).map_err(CampaignError::io(&partial))?;
    file.sync_all().map_err(CampaignError::io(&partial))?;
    std::fs::rename(&partial, path).map_err(CampaignError::io(path))
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(CampaignError::io("127.0.0.1:0"))?;
    listener
        .local_addr()
        .map_err(CampaignError::io("127.0.0.1:0"))
}

/// The campaign's directories.
#[derive(Debug, Clone)]
pub struct CampaignPaths {
    /// `<home>/campaigns/<name>`.
    pub root: PathBuf,
}

impl CampaignPaths {
    fn identities(&self) -> PathBuf {
        self.root.join("identities.json")
    }
    fn database(&self) -> PathBuf {
        database_path(&self.root)
    }
    fn ledger(&self) -> PathBuf {
        self.root.join("ledger.json")
    }
    fn agent(&self, name: &str) -> PathBuf {
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
    let root = config.home.join("campaigns").join(&config.name);
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

fn language_model(policy: &Researchers) -> Result<Option<Arc<dyn LanguageModel>>> {
    Ok(match policy {
        Researchers::Offline => None,
        Researchers::Anthropic { model } => Some(Arc::new(AnthropicClient::new(
            AnthropicConfig::from_env(model)?,
        )?)),
        Researchers::OpenAi { base_url, model } => Some(Arc::new(OpenAiClient::new(
            OpenAiConfig::new(base_url, model),
        )?)),
    })
}

/// Runs (or resumes) a campaign until every researcher's budget is spent or `interrupt`
/// is raised, then writes the report and returns it.
pub async fn run_campaign(config: CampaignConfig, interrupt: Arc<AtomicBool>) -> Result<Report> {
    let started = Instant::now();
    let paths = CampaignPaths {
        root: config.home.join("campaigns").join(&config.name),
    };
    std::fs::create_dir_all(&paths.root).map_err(CampaignError::io(&paths.root))?;

    let prepare_config = config.clone();
    let prepare_interrupt = interrupt.clone();
    let (options, table) =
        tokio::task::spawn_blocking(move || prepare_testbed(&prepare_config, &prepare_interrupt))
            .await
            .map_err(|e| CampaignError::Setup(format!("testbed preparation panicked: {e}")))??;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "testbed ready");

    let mut identities = load_identities(&paths)?;
    let database_url = format!("sqlite://{}", paths.database().display());
    let served: Vec<String> = table.tasks.iter().map(|t| t.task.clone()).collect();
    let task_root = server_tasks_dir(&config.home, &config.name);
    let verifier = crate::oversight::start_verifier(
        &config,
        &paths.root,
        &task_root,
        &options,
        &served,
        &database_url,
    )
    .await?;
    let bind = free_port()?;
    let base = format!("http://{bind}");
    let server_config = aar_server::ServerConfig {
        bind,
        database_url: database_url.clone(),
        verifier: Some(verifier),
        task_root,
        admin_token: aar_server::AdminTokenSource::Literal(identities.admin_token.clone()),
        policy: aar_server::Policy::default(),
    };
    let mut server = tokio::spawn(aar_server::serve(server_config));
    wait_for_health(&base, &mut server).await?;
    let admin = Admin {
        http: reqwest::Client::new(),
        base: base.clone(),
        token: identities.admin_token.clone(),
    };

    let names: Vec<String> = (0..config.researchers.max(1))
        .map(|i| format!("researcher-{}", i + 1))
        .collect();
    register_agents(&admin, &mut identities, &names, &paths).await?;
    let ledger = open_ledger(&config, &paths)?;
    let agent_ids: BTreeMap<String, String> = names
        .iter()
        .filter_map(|n| Some((identities.agents.get(n)?.agent_id.clone(), n.clone())))
        .collect();
    let running = spawn_researchers(
        &config,
        &paths,
        &options,
        &identities,
        &names,
        &base,
        &ledger,
    )?;
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
    let interrupted = supervise(running, &progress, &mut relay, &interrupt).await;
    relay.flush().await;
    if interrupted {
        eprintln!("interrupted: everything so far is kept; `aar up` again resumes");
    }
    crate::oversight::finish(&database_url, &served, &interrupt).await?;
    // An interrupted campaign skips the gate: `aar up` again (or `aar generalize`) runs it.
    let generalization = if interrupted {
        None
    } else {
        let root = &paths.root;
        crate::generalize::at_campaign_end(
            &config,
            root,
            &options,
            &table,
            &database_url,
            &interrupt,
        )
        .await
    };
    let report = Report::gather(&admin, &ledger, &agent_ids, &table, &config).await?;
    write_report(&report, &paths.report_dir())?;
    if let Some(generalization) = &generalization {
        crate::generalize::append_to_report(generalization, &paths.report_dir())?;
    }
    server.abort();
    Ok(report)
}

/// The agents' ids and tokens of a resumed campaign, or a fresh admin token.
fn load_identities(paths: &CampaignPaths) -> Result<Identities> {
    let identities: Identities = match std::fs::read(paths.identities()) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CampaignError::Setup(format!("{}: {e}", paths.identities().display())))?,
        Err(_) => Identities {
            admin_token: random_token()?,
            agents: BTreeMap::new(),
        },
    };
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

/// A researcher's sandbox: its workspace, the campaign's agent data (decoys planted),
/// the agent-only feature cache, the aar binary and the models, nothing else.
fn researcher_sandbox(
    config: &CampaignConfig,
    paths: &CampaignPaths,
    options: &RunOptions,
    index: usize,
    name: &str,
    shared: &SharedMounts,
) -> Result<SandboxConfig> {
    let home = &shared.home;
    let mut sandbox = SandboxConfig::new(paths.agent(name).join("workspace"), index as u32);
    let data = crate::decoys::agent_data_dir(&paths.root);
    sandbox.task_data = Some(std::path::absolute(&data).map_err(CampaignError::io(&data))?);
    // The agent-only feature cache at /cache: never the testbed's own cache, which
    // holds features of train_label and the transfer set.
    let cache = options.agent_feature_cache();
    sandbox.cache = Some(std::path::absolute(&cache).map_err(CampaignError::io(&cache))?);
    sandbox.aar_binary = Some(config.aar_binary.clone());
    // `aar` inside finds the models and the agent cache without `--home`.
    sandbox.env = vec![
        ("AAR_HOME".into(), home.display().to_string()),
        ("AAR_FEATURE_CACHE".into(), CACHE_MOUNT.into()),
        // Spinning OpenMP threads make every run 5-20x slower on a shared machine.
        ("OMP_WAIT_POLICY".into(), "PASSIVE".into()),
    ];
    sandbox.libtorch = config.libtorch.clone();
    sandbox.python_venv = config.python_venv.clone();
    // Only the models: the data sources under `assets/data` hold labels.
    sandbox.extra_ro = vec![home.join("assets").join("models")];
    sandbox.extra_ro.extend(shared.user_models.iter().cloned());
    sandbox.gpu = shared.gpu.clone();
    Ok(sandbox)
}

/// What every researcher's sandbox mounts alike, worked out once per campaign.
struct SharedMounts {
    /// aar's home, absolute.
    home: PathBuf,
    /// The preset's model directories outside the assets.
    user_models: Vec<PathBuf>,
    /// The host's GPUs, for presets that fine-tune.
    gpu: Option<aar_agents::gpu::GpuDevices>,
}

/// The host's GPUs for researchers whose preset fine-tunes models (LoRA learners:
/// `gpu`, `paper`), so their `aar run-method` trains at GPU speed; heads on frozen
/// features need none, and a host without a GPU runs them on its CPU as before.
fn researcher_gpu(preset: &Preset) -> Option<aar_agents::gpu::GpuDevices> {
    let fine_tunes = preset
        .learners()
        .any(|l| matches!(l, aar_testbed::preset::LearnerSpec::Lora { .. }));
    if !fine_tunes {
        return None;
    }
    let found = aar_agents::gpu::GpuDevices::host().cloned();
    if found.is_none() {
        tracing::warn!(
            preset = %preset.name,
            "the preset fine-tunes models and this host has no NVIDIA GPU: researchers' runs use the CPU"
        );
    }
    found
}

type Researcher = (
    String,
    std::result::Result<aar_agents::agent::RunSummary, aar_agents::agent::AgentError>,
);

/// Starts every researcher on a task of its own.
fn spawn_researchers(
    config: &CampaignConfig,
    paths: &CampaignPaths,
    options: &RunOptions,
    identities: &Identities,
    names: &[String],
    base: &str,
    ledger: &Ledger,
) -> Result<tokio::task::JoinSet<Researcher>> {
    let model = language_model(&config.policy)?;
    let home = std::path::absolute(&config.home).map_err(CampaignError::io(&config.home))?;
    let home_in_sandbox = home.display().to_string();
    let mut running = tokio::task::JoinSet::new();
    // Each researcher's wall-time budget starts now; the offline ones pace to it.
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(config.minutes * 60.0);
    let shared = SharedMounts {
        home: home.clone(),
        user_models: user_model_dirs(config)?,
        gpu: researcher_gpu(&load_preset(config)?),
    };
    for (index, name) in names.iter().enumerate() {
        let state_dir = paths.agent(name).join("state");
        std::fs::create_dir_all(&state_dir).map_err(CampaignError::io(&state_dir))?;
        let sandbox = researcher_sandbox(config, paths, options, index, name, &shared)?;
        let run_as = sandbox.run_as;
        let sandbox = Sandbox::new(sandbox)?;
        crate::workbench::furnish(sandbox.workspace(), run_as)?;
        let token = &identities
            .agents
            .get(name)
            .ok_or_else(|| CampaignError::Setup(format!("no token for {name}")))?
            .token;
        let toolbox = Toolbox::new(
            sandbox,
            Some(ServerClient::new(base, token)?),
            Notebook::new(state_dir.join("notebook.md"), 64 << 10),
            ToolLimits::default(),
        )?;
        let direction = directions::for_agent(index);
        let policy: Box<dyn Policy> = match &model {
            Some(model) => Box::new(LlmPolicy::new(model.clone(), 4096)),
            None => Box::new(OfflineResearcher::new(
                name,
                direction,
                &home_in_sandbox,
                index as u64 + 1,
                deadline,
            )),
        };
        let mut agent = Agent::new(
            AgentConfig::new(name, state_dir, direction),
            policy,
            toolbox,
            ledger.clone(),
        )?;
        let name = name.clone();
        running.spawn(async move {
            let outcome = agent.run().await;
            (name, outcome)
        });
    }
    Ok(running)
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

/// Waits for every researcher, printing progress; on Ctrl-C stops them (every step is
/// already durable) and returns true.
async fn supervise(
    mut running: tokio::task::JoinSet<Researcher>,
    progress: &Progress<'_>,
    relay: &mut Relay,
    interrupt: &AtomicBool,
) -> bool {
    // A short tick notices Ctrl-C quickly; progress prints every `progress.every`.
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_progress = Instant::now();
    let mut interrupted = false;
    while !running.is_empty() {
        tokio::select! {
            _ = ticker.tick() => {
                relay.tick().await;
                if last_progress.elapsed() >= progress.every {
                    last_progress = Instant::now();
                    print_progress(progress.admin, progress.ledger, progress.agent_ids, progress.table, progress.minutes).await;
                }
                if interrupt.load(Ordering::SeqCst) && !interrupted {
                    interrupted = true;
                    running.abort_all();
                }
            }
            Some(finished) = running.join_next() => {
                match finished {
                    Ok((name, Ok(summary))) => tracing::info!(%name, steps = summary.steps, outcome = ?summary.outcome, "researcher stopped"),
                    Ok((name, Err(err))) => tracing::error!(%name, error = %err, "researcher failed"),
                    Err(err) if err.is_cancelled() => {}
                    Err(err) => tracing::error!(error = %err, "researcher task panicked"),
                }
            }
        }
    }
    interrupted
}

async fn print_progress(
    admin: &Admin,
    ledger: &Ledger,
    agent_ids: &BTreeMap<String, String>,
    table: &BaselineTable,
    minutes: f64,
) {
    let best = match crate::report::best_pgr_by_agent(admin, agent_ids, table).await {
        Ok(best) => best,
        Err(err) => {
            tracing::warn!(error = %err, "progress: cannot read evaluations");
            BTreeMap::new()
        }
    };
    for name in agent_ids.values() {
        let totals = ledger.agent_totals(name);
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
        // Names and task names reach the terminal: no control sequence of theirs may.
        let line = format!(
            "{name}: {} tool calls, best PGR by task: {best}, spent ${:.4}, {used:.1}/{minutes:.0} min (about {eta:.1} min left)",
            totals.tool_calls,
            totals.dollars(),
        );
        println!("{}", aar_core::text::terminal_line(&line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_presets_that_fine_tune_ask_for_the_gpu() {
        // Heads on frozen features never get the host's devices, GPU host or not.
        for name in ["tiny", "cpu"] {
            assert_eq!(
                researcher_gpu(&Preset::named(name).unwrap()),
                None,
                "{name}"
            );
        }
        // A LoRA preset gets exactly what the host has.
        let gpu = Preset::named("gpu").unwrap();
        assert_eq!(
            researcher_gpu(&gpu),
            aar_agents::gpu::GpuDevices::host().cloned()
        );
    }
}
