//! One researcher, built the same way wherever it runs: in the orchestrator's process
//! (the local executor) or as a job of its own on another machine (`aar researcher`,
//! which the Slurm executor submits). Everything it needs is in a [`ResearcherSpec`]
//! file next to its state; its token travels in a file of its own, never on a command
//! line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aar_agents::accounting::{Budget, Budgets, Ledger};
use aar_agents::agent::{Agent, AgentConfig, LlmPolicy, Policy, RunSummary};
use aar_agents::directions;
use aar_agents::llm::LanguageModel;
use aar_agents::llm::anthropic::{AnthropicClient, AnthropicConfig};
use aar_agents::llm::openai::{OpenAiClient, OpenAiConfig};
use aar_agents::sandbox::{CACHE_MOUNT, Sandbox, SandboxConfig};
use aar_agents::server_client::ServerClient;
use aar_agents::tools::{Notebook, ToolLimits, Toolbox};
use aar_testbed::{Preset, RunOptions};
use serde::{Deserialize, Serialize};

use crate::campaign::{CampaignConfig, CampaignPaths, Researchers, load_preset, user_model_dirs};
use crate::error::{CampaignError, Result};
use crate::offline::OfflineResearcher;

/// One researcher as an executor starts it; no secret (see [`ResearcherSpec::token_file`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResearcherSpec {
    /// The campaign it belongs to.
    pub campaign: CampaignConfig,
    /// `researcher-N`.
    pub name: String,
    /// Its index (sandbox uid, direction, offline seed).
    pub index: usize,
    /// Its agent token's file (mode 0600, readable by the job's user only).
    pub token_file: PathBuf,
    /// Where its spending is kept when it runs as a job of its own; `None` in the
    /// orchestrator's process, which shares the campaign's ledger.
    pub ledger: Option<PathBuf>,
}

impl ResearcherSpec {
    /// The campaign's directories.
    pub fn paths(&self) -> CampaignPaths {
        CampaignPaths::of(&self.campaign)
    }

    /// Its state directory (notebook, transcript, own ledger, finish marker).
    pub fn state_dir(&self) -> PathBuf {
        self.paths().agent(&self.name).join("state")
    }

    /// Where the spec is written for `aar researcher --spec`.
    pub fn file(&self) -> PathBuf {
        self.paths().agent(&self.name).join("researcher.json")
    }

    /// Reads a spec, naming the file in every error.
    pub fn read(path: &Path) -> Result<ResearcherSpec> {
        let bytes = std::fs::read(path).map_err(CampaignError::io(path))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CampaignError::Setup(format!("researcher spec {}: {e}", path.display())))
    }

    /// Writes the spec to [`ResearcherSpec::file`].
    pub fn write(&self) -> Result<PathBuf> {
        let path = self.file();
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| CampaignError::Setup(e.to_string()))?;
        crate::campaign::write_private(&path, &bytes)?;
        Ok(path)
    }
}

/// Written to the state directory when a researcher's loop ends on its own (its budget
/// is spent): an executor restarts a job that ended without one.
pub const FINISHED_MARKER: &str = "finished.json";

/// The model behind LLM researchers (`None`: the offline researcher).
pub(crate) fn language_model(policy: &Researchers) -> Result<Option<Arc<dyn LanguageModel>>> {
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

/// Reads a token file, refusing one that others may read.
pub fn read_token_file(path: &Path) -> Result<String> {
    aar_agents::fsutil::read_private_token(path).map_err(|e| CampaignError::Setup(e.to_string()))
}

/// What every researcher's sandbox mounts alike.
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
pub(crate) fn researcher_gpu(preset: &Preset) -> Option<aar_agents::gpu::GpuDevices> {
    if !preset_fine_tunes(preset) {
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

/// Whether the preset's students are fine-tuned (and so want a GPU).
pub(crate) fn preset_fine_tunes(preset: &Preset) -> bool {
    preset
        .learners()
        .any(|l| matches!(l, aar_testbed::preset::LearnerSpec::Lora { .. }))
}

/// A researcher's sandbox: its workspace, the campaign's agent data (decoys planted),
/// the agent-only feature cache, the aar binary and the models, nothing else.
fn researcher_sandbox(
    spec: &ResearcherSpec,
    options: &RunOptions,
    shared: &SharedMounts,
) -> Result<SandboxConfig> {
    let config = &spec.campaign;
    let paths = spec.paths();
    let home = &shared.home;
    let mut sandbox =
        SandboxConfig::new(paths.agent(&spec.name).join("workspace"), spec.index as u32);
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

/// Builds the researcher `spec` describes, talking to the server at `server` with
/// `token`, spending through `ledger`.
pub(crate) fn build_researcher(
    spec: &ResearcherSpec,
    server: &str,
    token: &str,
    ledger: &Ledger,
    model: Option<&Arc<dyn LanguageModel>>,
) -> Result<Agent> {
    let config = &spec.campaign;
    let preset = load_preset(config)?;
    let options = RunOptions::new(&preset, &config.home);
    let home = std::path::absolute(&config.home).map_err(CampaignError::io(&config.home))?;
    let shared = SharedMounts {
        home: home.clone(),
        user_models: user_model_dirs(config)?,
        gpu: researcher_gpu(&preset),
    };
    let state_dir = spec.state_dir();
    std::fs::create_dir_all(&state_dir).map_err(CampaignError::io(&state_dir))?;
    let sandbox = researcher_sandbox(spec, &options, &shared)?;
    let run_as = sandbox.run_as;
    let sandbox = Sandbox::new(sandbox)?;
    crate::workbench::furnish(sandbox.workspace(), run_as)?;
    let toolbox = Toolbox::new(
        sandbox,
        Some(ServerClient::new(server, token)?),
        Notebook::new(state_dir.join("notebook.md"), 64 << 10),
        ToolLimits::default(),
    )?;
    let direction = directions::for_agent(spec.index);
    // The offline researcher paces its work to what is left of its budget, which on a
    // resumed run is less than the whole.
    let left = ledger
        .time_left(&spec.name)
        .unwrap_or_else(|| Duration::from_secs_f64(config.minutes * 60.0));
    let policy: Box<dyn Policy> = match model {
        Some(model) => Box::new(LlmPolicy::new(model.clone(), 4096)),
        None => Box::new(OfflineResearcher::new(
            &spec.name,
            direction,
            &home.display().to_string(),
            spec.index as u64 + 1,
            Instant::now() + left,
        )),
    };
    Ok(Agent::new(
        AgentConfig::new(&spec.name, state_dir, direction),
        policy,
        toolbox,
        ledger.clone(),
    )?)
}

/// How often a researcher running as a job saves its ledger.
const LEDGER_CHECKPOINT: Duration = Duration::from_secs(5);

/// The budgets of a researcher that keeps its own ledger: its wall time, and an equal
/// share of the campaign's dollars (jobs cannot see each other's spending).
fn own_budgets(config: &CampaignConfig) -> Budgets {
    Budgets {
        per_agent: Budget {
            wall_time: Some(Duration::from_secs_f64(config.minutes * 60.0)),
            dollars: config.dollars.map(|d| d / config.researchers.max(1) as f64),
            ..Budget::default()
        },
        campaign: Budget::default(),
    }
}

/// `aar researcher`: runs one researcher's loop until its budget is spent or
/// `interrupt` is raised (SIGTERM from a scheduler), resuming from its saved state.
/// Writes [`FINISHED_MARKER`] when the loop ends on its own.
pub async fn run_researcher_job(
    spec: &ResearcherSpec,
    server: &str,
    token: &str,
    interrupt: Arc<AtomicBool>,
) -> Result<Option<RunSummary>> {
    let ledger_path = spec
        .ledger
        .clone()
        .unwrap_or_else(|| spec.state_dir().join("ledger.json"));
    std::fs::create_dir_all(spec.state_dir()).map_err(CampaignError::io(spec.state_dir()))?;
    let ledger = Ledger::open(
        &ledger_path,
        spec.campaign.prices.clone(),
        own_budgets(&spec.campaign),
    )?;
    let model = language_model(&spec.campaign.policy)?;
    let mut agent = build_researcher(spec, server, token, &ledger, model.as_ref())?;
    // A scheduler may kill the job without warning (node lost): the time spent is
    // saved every few seconds, so the next job's budget continues from it.
    let stopped = async {
        let mut last_save = Instant::now();
        while !interrupt.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last_save.elapsed() >= LEDGER_CHECKPOINT {
                last_save = Instant::now();
                if let Err(e) = ledger.checkpoint(&spec.name) {
                    tracing::warn!(error = %e, "ledger checkpoint");
                }
            }
        }
    };
    let summary = tokio::select! {
        outcome = agent.run() => Some(outcome?),
        () = stopped => None,
    };
    // Dropping the loop mid-step loses no more than that step; the time counted so far
    // is saved so that the next job's budget continues from it.
    ledger.stop_agent(&spec.name)?;
    if let Some(summary) = &summary {
        let marker = spec.state_dir().join(FINISHED_MARKER);
        let body = serde_json::json!({
            "outcome": format!("{:?}", summary.outcome),
            "steps": summary.steps,
            "job": std::env::var("SLURM_JOB_ID").ok(),
        });
        crate::campaign::write_private(&marker, body.to_string().as_bytes())?;
    }
    Ok(summary)
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
