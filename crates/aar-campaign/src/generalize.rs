//! The generalization gate: the top verified entries' methods re-run by the verifier on
//! tasks and model pairs they were never tuned on, at the end of every campaign and on
//! demand (`aar generalize`).
//!
//! Targets ([`targets`]): every served task of the preset (the entry's own and the
//! others), the preset's held-out tasks (`Preset::held_out`, never served) and the
//! served and held-out tasks under `Preset::second_pair`. The held-out tasks and the
//! second pair get their own weak and ceiling baselines from the testbed, on derived
//! presets (`<preset>-heldout`, `<preset>-pair2`) whose directories sit beside the main
//! preset's; none of it is ever mounted for researchers. Each declared seed runs through
//! the verifier's own sandboxed run (`SandboxedVerifier::run_declared_seed`) on the
//! target's label-free copy, is scored here against the target's labels on
//! [`SCORED_SPLIT`], and PGR comes with an error that includes the test rows' noise
//! ([`score`], `aar_core::noise`). Finished runs are cached per entry, target and seed
//! under `<campaign>/generalization/runs/`, so an interrupted gate resumes.

mod score;
mod targets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aar_core::Label;
use aar_core::metrics::FixedBaselines;
use aar_core::noise::CorrectRows;
use aar_oversight::inputs::{SplitLabels, TaskSources};
use aar_oversight::{SandboxedVerifier, VerifierConfig};
use aar_server::verify::MAIN_VARIANT;
use aar_store::{EntryStatus, Store, VerificationState};
use aar_tasks::IdKey;
use aar_testbed::{BaselineTable, Preset, RunOptions, run_baselines};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use score::{
    BOOTSTRAP_SEED, EntryGeneralization, GatePgr, Generalization, SeedScore, TargetInfo,
    TargetResult,
};
pub use targets::{
    MainTestbed, SCORED_SPLIT, Target, TargetGroup, held_out_preset, second_pair_preset,
};

use crate::campaign::CampaignConfig;
use crate::error::{CampaignError, Result};

/// Entries the gate takes by default: the best this many by private PGR.
pub const DEFAULT_TOP: usize = 3;
/// Sandbox index of the gate's runs: uid 61901 as root, apart from the verifier's and
/// every researcher's.
const GATE_SANDBOX_INDEX: u32 = 901;
/// The report file in the campaign directory.
pub const GENERALIZATION_FILE: &str = "generalization.json";

/// How the gate's verifier runs methods (the campaign verifier's settings).
#[derive(Debug, Clone)]
pub struct GateSetup {
    /// The campaign's directory: `generalization.json` and `generalization/` go there.
    pub campaign_root: PathBuf,
    /// The aar binary runs use.
    pub aar_binary: PathBuf,
    /// libtorch's directory tree (mounted read-only).
    pub libtorch: Option<PathBuf>,
    /// The Python environment runs get.
    pub python_venv: Option<PathBuf>,
    /// Further read-only mounts (a user's model directories).
    pub extra_ro: Vec<PathBuf>,
    /// Raised to stop after the run in progress (finished runs stay cached).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl GateSetup {
    /// The settings of a campaign's own verifier.
    pub fn for_campaign(
        config: &CampaignConfig,
        campaign_root: &Path,
        preset: &Preset,
    ) -> Result<GateSetup> {
        Ok(GateSetup {
            campaign_root: campaign_root.to_owned(),
            aar_binary: config.aar_binary.clone(),
            libtorch: config.libtorch.clone(),
            python_venv: config.python_venv.clone(),
            extra_ro: gate_model_dirs(preset)?,
            interrupt: None,
        })
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|i| i.load(Ordering::SeqCst))
    }

    fn gate_dir(&self) -> PathBuf {
        self.campaign_root.join("generalization")
    }
}

/// An entry the gate runs: its method as the snapshot the verifier ran.
#[derive(Debug, Clone)]
pub struct GateEntry {
    /// Entry id.
    pub entry_id: i64,
    /// Its author's name.
    pub researcher: String,
    /// The method's name.
    pub method: String,
    /// The task it was entered on.
    pub task: String,
    /// Declared seeds.
    pub seeds: Vec<i64>,
    /// The snapshot's archive.
    pub archive: Vec<u8>,
    /// Private-test PGR of its verification.
    pub private_pgr: Option<f64>,
}

/// The private test's W and S of each served task, as the testbed's table has them.
pub type PrivateBaselines<'a> = &'a dyn Fn(&str) -> Option<FixedBaselines>;

/// The private-test W and S of `task` in `table`.
pub fn private_baselines(table: &BaselineTable, task: &str) -> Option<FixedBaselines> {
    let row = table.tasks.iter().find(|t| t.task == task)?;
    let (weak, ceiling) = row.baseline(SCORED_SPLIT)?;
    Some(FixedBaselines { weak, ceiling })
}

/// The best `top` verified entries by private PGR: verified, not flagged or
/// disqualified (approved ones count), with a snapshot.
pub async fn top_entries(
    store: &Store,
    baselines: PrivateBaselines<'_>,
    top: usize,
) -> Result<Vec<GateEntry>> {
    let mut ranked = Vec::new();
    for entry in store.all_entries().await.map_err(store_error)? {
        let rankable = entry.verification == VerificationState::Verified
            && matches!(entry.status, EntryStatus::Ok | EntryStatus::Approved)
            && entry.snapshot_id.is_some();
        if !rankable {
            continue;
        }
        if let Some(pgr) = private_pgr(store, baselines, entry.id, &entry.task).await? {
            ranked.push((pgr, entry.id));
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let ids: Vec<i64> = ranked.into_iter().take(top).map(|(_, id)| id).collect();
    entries_by_id(store, baselines, &ids).await
}

/// The entries of `ids`, in that order; an unknown id or one without a snapshot is an
/// error naming it.
pub async fn entries_by_id(
    store: &Store,
    baselines: PrivateBaselines<'_>,
    ids: &[i64],
) -> Result<Vec<GateEntry>> {
    let mut out = Vec::new();
    for &id in ids {
        let entry = store
            .entry(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| CampaignError::Setup(format!("entry {id}: no such entry")))?;
        let snapshot = entry.snapshot_id.as_deref().ok_or_else(|| {
            CampaignError::Setup(format!("entry {id}: no snapshot (not a method entry)"))
        })?;
        if entry.verification != VerificationState::Verified {
            tracing::warn!(
                entry_id = id,
                state = entry.verification.as_str(),
                "entry is not verified; the gate runs it anyway"
            );
        }
        let archive = store
            .snapshot_archive(snapshot)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                CampaignError::Setup(format!("entry {id}: snapshot {snapshot} is missing"))
            })?;
        let researcher = match store.agent(&entry.agent_id).await.map_err(store_error)? {
            Some(agent) => agent.name,
            None => entry.agent_id.clone(),
        };
        out.push(GateEntry {
            entry_id: id,
            researcher,
            method: entry.method.clone(),
            private_pgr: private_pgr(store, baselines, id, &entry.task).await?,
            task: entry.task,
            seeds: entry.seeds,
            archive,
        });
    }
    Ok(out)
}

fn store_error(e: aar_store::StoreError) -> CampaignError {
    CampaignError::Server(format!("store: {e}"))
}

/// PGR of the mean private-test accuracy over the declared seeds' verification runs.
async fn private_pgr(
    store: &Store,
    baselines: PrivateBaselines<'_>,
    id: i64,
    task: &str,
) -> Result<Option<f64>> {
    let accuracies: Vec<f64> = store
        .verification_runs(id)
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|r| r.variant == MAIN_VARIANT && r.split == SCORED_SPLIT)
        .filter_map(|r| r.accuracy)
        .collect();
    Ok(baselines(task)
        .and_then(|b| b.pgr_over_seeds(&accuracies).ok())
        .map(|m| m.mean))
}

/// Runs the gate over `entries` and writes `generalization.json` in the campaign
/// directory. `store` is the campaign's (the verifier reads nothing else from it here).
pub async fn run_gate(
    setup: &GateSetup,
    main: &MainTestbed,
    entries: &[GateEntry],
    store: Store,
) -> Result<Generalization> {
    let main_owned = main.clone();
    let targets = tokio::task::spawn_blocking(move || targets::build_targets(&main_owned))
        .await
        .map_err(|e| CampaignError::Setup(format!("gate targets panicked: {e}")))??;
    let runnable: Vec<&Target> = targets.iter().filter(|t| t.skipped().is_none()).collect();
    let verifier = gate_verifier(setup, &main.options, &runnable, store).await?;
    let runs = entries.iter().map(|e| e.seeds.len()).sum::<usize>() * runnable.len();
    let mut progress = Progress::new(runs);
    let mut results = Vec::new();
    for entry in entries {
        let mut per_target = Vec::new();
        for target in &targets {
            let kind = kind_of(entry, target);
            let (seeds, rows) = if target.skipped().is_some() {
                (Vec::new(), Vec::new())
            } else {
                run_target(setup, &verifier, entry, target, &mut progress).await?
            };
            per_target.push(score::TargetBaselines::new(target).score(kind, seeds, &rows));
        }
        let (mean_pgr, mean_over) = score::mean_over_targets(&per_target);
        results.push(EntryGeneralization {
            entry_id: entry.entry_id,
            researcher: entry.researcher.clone(),
            method: entry.method.clone(),
            task: entry.task.clone(),
            seeds: entry.seeds.clone(),
            private_pgr: entry.private_pgr,
            results: per_target,
            mean_pgr,
            mean_over,
        });
    }
    score::rank(&mut results);
    let report = Generalization {
        preset: main.preset.name.clone(),
        split: SCORED_SPLIT.to_owned(),
        targets: targets.iter().map(TargetInfo::of).collect(),
        entries: results,
    };
    write_json(&setup.campaign_root.join(GENERALIZATION_FILE), &report)?;
    Ok(report)
}

fn kind_of(entry: &GateEntry, target: &Target) -> &'static str {
    match target.group {
        TargetGroup::Served if target.task == entry.task => "own_task",
        TargetGroup::Served => "other_task",
        TargetGroup::HeldOut => "held_out",
        TargetGroup::SecondPair => "second_pair",
    }
}

/// A line per finished run, with an ETA from the runs computed so far (cached ones are
/// free and do not count).
struct Progress {
    total: usize,
    done: usize,
    computed: usize,
    computing: f64,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            computed: 0,
            computing: 0.0,
        }
    }

    fn line(&mut self, what: &str, outcome: &str, seconds: Option<f64>) {
        self.done += 1;
        if let Some(s) = seconds {
            self.computed += 1;
            self.computing += s;
        }
        let left = self.total.saturating_sub(self.done);
        let eta = if self.computed > 0 {
            format!(
                "about {:.0} s left",
                left as f64 * self.computing / self.computed as f64
            )
        } else {
            format!("{left} runs left")
        };
        let took = seconds.map_or_else(|| "cached".to_owned(), |s| format!("{s:.1} s"));
        let line = format!(
            "generalize: [{}/{}] {what}: {outcome} ({took}; {eta})",
            self.done, self.total
        );
        println!("{}", aar_core::text::terminal_line(&line));
    }
}

/// Every declared seed of `entry` on `target`: per-seed scores and the rows of the
/// seeds that ran.
async fn run_target(
    setup: &GateSetup,
    verifier: &SandboxedVerifier,
    entry: &GateEntry,
    target: &Target,
    progress: &mut Progress,
) -> Result<(Vec<SeedScore>, Vec<CorrectRows>)> {
    let labels = load_labels(target)?;
    let fingerprint = fingerprint(entry, target)?;
    let mut seeds = Vec::new();
    let mut rows = Vec::new();
    for &seed in &entry.seeds {
        if setup.interrupted() {
            return Err(CampaignError::Interrupted);
        }
        let cache = setup
            .gate_dir()
            .join("runs")
            .join(entry.entry_id.to_string())
            .join(&target.key)
            .join(format!("seed_{seed}.json"));
        let started = Instant::now();
        let (predictions, computed) = match read_cached(&cache, &fingerprint) {
            Some(p) => (Ok(p), false),
            None => {
                let scratch = format!("{}-{}-{seed}", entry.entry_id, target.key);
                let run = verifier
                    .run_declared_seed(&entry.archive, &target.key, seed, &scratch)
                    .await;
                if let Ok(p) = &run {
                    write_cached(&cache, &fingerprint, p)?;
                }
                (run, true)
            }
        };
        let scored = predictions.and_then(|p| score_split(&p, &labels));
        let what = format!("entry {} on {} seed {seed}", entry.entry_id, target.key);
        let seconds = computed.then(|| started.elapsed().as_secs_f64());
        match scored {
            Ok(correct) => {
                progress.line(
                    &what,
                    &format!("accuracy {:.3}", correct.accuracy()),
                    seconds,
                );
                seeds.push(SeedScore {
                    seed,
                    accuracy: Some(correct.accuracy()),
                    error: None,
                });
                rows.push(correct);
            }
            Err(error) => {
                progress.line(&what, &format!("failed: {error}"), seconds);
                seeds.push(SeedScore {
                    seed,
                    accuracy: None,
                    error: Some(error),
                });
            }
        }
    }
    Ok((seeds, rows))
}

fn load_labels(target: &Target) -> Result<Vec<Label>> {
    let labels = SplitLabels::load(&target.labeled)
        .map_err(|e| CampaignError::Setup(format!("target {}: {e}", target.key)))?;
    labels.labels.get(SCORED_SPLIT).cloned().ok_or_else(|| {
        CampaignError::Setup(format!(
            "target {}: {} has no {SCORED_SPLIT}.jsonl",
            target.key,
            target.labeled.display()
        ))
    })
}

fn score_split(
    predictions: &BTreeMap<String, Vec<u8>>,
    labels: &[Label],
) -> std::result::Result<CorrectRows, String> {
    let predicted: Vec<Label> = predictions
        .get(SCORED_SPLIT)
        .ok_or_else(|| format!("no predictions for {SCORED_SPLIT}"))?
        .iter()
        .map(|&p| Label::from(p == 1))
        .collect();
    CorrectRows::score(&predicted, labels).map_err(|e| e.to_string())
}

/// What a cached run depends on: the method's snapshot, the seed's inputs (the agent
/// copy's weak labels and learner) and the labels it is scored against.
fn fingerprint(entry: &GateEntry, target: &Target) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(&entry.archive);
    for path in [
        target.agent_copy.join("weak_labels.json"),
        target.agent_copy.join("testbed.json"),
        target.labeled.join(format!("{SCORED_SPLIT}.jsonl")),
    ] {
        let bytes = std::fs::read(&path).map_err(CampaignError::io(&path))?;
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(format!("{:x}", hash.finalize()))
}

/// A finished run in the gate's cache.
#[derive(Debug, Serialize, Deserialize)]
struct CachedRun {
    fingerprint: String,
    predictions: BTreeMap<String, Vec<u8>>,
}

fn read_cached(path: &Path, fingerprint: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<CachedRun>(&bytes) {
        Ok(run) if run.fingerprint == fingerprint => Some(run.predictions),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable cached gate run; rerun");
            None
        }
    }
}

fn write_cached(
    path: &Path,
    fingerprint: &str,
    predictions: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let run = CachedRun {
        fingerprint: fingerprint.to_owned(),
        predictions: predictions.clone(),
    };
    write_json(path, &run)
}

/// Writes JSON to a temporary name and renames it: a killed gate leaves no half file.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(CampaignError::io(dir))?;
    }
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| CampaignError::Setup(e.to_string()))?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(CampaignError::io(&partial))?;
    std::fs::rename(&partial, path).map_err(CampaignError::io(path))
}

/// A verifier over the runnable targets (inputs under `generalization/work/`), its
/// feature cache warmed on each target's copy first.
async fn gate_verifier(
    setup: &GateSetup,
    options: &RunOptions,
    runnable: &[&Target],
    store: Store,
) -> Result<SandboxedVerifier> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(CampaignError::io(p));
    let gate = setup.gate_dir();
    let work = gate.join("work");
    std::fs::create_dir_all(&work).map_err(CampaignError::io(&work))?;
    for dir in [&gate, &work] {
        use std::os::unix::fs::PermissionsExt;
        // The sandbox's uid must reach the inputs under `work`.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(CampaignError::io(dir))?;
    }
    let sources = runnable
        .iter()
        .map(|t| {
            let sources = TaskSources {
                agent_copy: absolute(&t.agent_copy)?,
                labeled: absolute(&t.labeled)?,
            };
            Ok((t.key.clone(), sources))
        })
        .collect::<Result<_>>()?;
    let config = verifier_config(setup, options, absolute(&work)?, sources)?;
    let verifier = SandboxedVerifier::new(config, store)
        .map_err(|e| CampaignError::Setup(format!("gate verifier: {e}")))?;
    let cache = absolute(&options.feature_cache)?;
    for target in runnable {
        let input = verifier
            .prepare_task(&target.key)
            .await
            .map_err(|e| CampaignError::Setup(format!("gate inputs of {}: {e}", target.key)))?;
        crate::oversight::warm_features(options, &cache, &target.key, input).await;
    }
    Ok(verifier)
}

fn verifier_config(
    setup: &GateSetup,
    options: &RunOptions,
    work_dir: PathBuf,
    tasks: BTreeMap<String, TaskSources>,
) -> Result<VerifierConfig> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(CampaignError::io(p));
    let feature_cache = absolute(&options.feature_cache)?;
    let assets = absolute(&options.assets_dir)?;
    let home = assets
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| assets.clone());
    let key_path = setup.gate_dir().join("id.key");
    let id_key = IdKey::load_or_create(&key_path)
        .map_err(|e| CampaignError::Setup(format!("{}: {e}", key_path.display())))?;
    let mut extra_ro = vec![assets.join("models"), feature_cache.clone()];
    extra_ro.extend(setup.extra_ro.iter().cloned());
    Ok(VerifierConfig {
        work_dir,
        tasks,
        aar_binary: setup.aar_binary.clone(),
        libtorch: setup.libtorch.clone(),
        python_venv: setup.python_venv.clone(),
        extra_ro,
        env: vec![
            ("AAR_HOME".into(), home.display().to_string()),
            (
                "AAR_FEATURE_CACHE".into(),
                feature_cache.display().to_string(),
            ),
            // As the campaign's verifier: spinning OpenMP waiters slow runs 5-20x.
            ("OMP_WAIT_POLICY".into(), "PASSIVE".into()),
        ],
        // The gate probes nothing: no decoys, no undeclared seeds.
        decoys: None,
        id_key,
        undeclared_seeds: 0,
        sandbox_index: GATE_SANDBOX_INDEX,
        strace: PathBuf::from("/usr/bin/strace"),
    })
}

/// The gate at the end of a campaign: the top [`DEFAULT_TOP`] entries, unless the preset
/// has nothing but the entries' own task. A failure is reported and leaves the campaign's
/// report to be written without the section.
pub(crate) async fn at_campaign_end(
    config: &CampaignConfig,
    root: &Path,
    options: &RunOptions,
    table: &BaselineTable,
    database_url: &str,
    interrupt: &Arc<AtomicBool>,
) -> Option<Generalization> {
    let outcome = async {
        let preset = crate::campaign::load_preset(config)?;
        if table.tasks.len() < 2 && preset.held_out.is_empty() && preset.second_pair.is_none() {
            // Only the entries' own task: verification already scored them there.
            println!(
                "generalize: preset {} has no other served task, held-out task or second pair; gate skipped",
                preset.name
            );
            return Ok(None);
        }
        let store = Store::connect(database_url).await.map_err(store_error)?;
        let entries =
            top_entries(&store, &|task| private_baselines(table, task), DEFAULT_TOP).await?;
        if entries.is_empty() {
            println!("generalize: no verified entry to run");
            return Ok(None);
        }
        let mut setup = GateSetup::for_campaign(config, root, &preset)?;
        setup.interrupt = Some(interrupt.clone());
        let main = MainTestbed {
            preset,
            options: options.clone(),
            table: table.clone(),
        };
        run_gate(&setup, &main, &entries, store).await.map(Some)
    };
    match outcome.await {
        Ok(report) => report,
        Err(e) => {
            eprintln!(
                "generalization gate: {e}; finished runs are kept, `aar generalize --campaign {}` resumes it",
                config.name
            );
            None
        }
    }
}

/// Appends the "Generalization" section to the campaign's `report.md` in `report_dir`.
pub fn append_to_report(report: &Generalization, report_dir: &Path) -> Result<()> {
    use std::io::Write;
    let path = report_dir.join("report.md");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(CampaignError::io(&path))?;
    write!(file, "\n{}", report.markdown()).map_err(CampaignError::io(&path))
}

/// Model directories outside the assets that any learner of the gate names (the
/// preset's, its held-out tasks' and the second pair's): mounted read-only in its runs.
pub fn gate_model_dirs(preset: &Preset) -> Result<Vec<PathBuf>> {
    let pair = preset.second_pair.iter().flat_map(|p| [&p.weak, &p.strong]);
    let held_out = preset
        .held_out
        .iter()
        .flat_map(|t| t.weak.iter().chain(t.strong.iter()));
    crate::campaign::external_model_dirs(preset.learners().chain(pair).chain(held_out))
}

/// What `aar generalize` asks for.
#[derive(Debug, Clone)]
pub struct GateRequest {
    /// aar's state directory, absolute.
    pub home: PathBuf,
    /// The campaign's name (its directory under `<home>/campaigns/`).
    pub campaign: String,
    /// The campaign's preset.
    pub preset: Preset,
    /// Entries to run; empty: the best `top` by private PGR.
    pub entry_ids: Vec<i64>,
    /// See `entry_ids`.
    pub top: usize,
    /// The aar binary, libtorch and Python environment runs use.
    pub aar_binary: PathBuf,
    /// See `aar_binary`.
    pub libtorch: Option<PathBuf>,
    /// See `aar_binary`.
    pub python_venv: Option<PathBuf>,
    /// Raised by Ctrl-C.
    pub interrupt: Arc<AtomicBool>,
}

/// The gate over a campaign's entries, outside `aar up`: the main preset's baselines
/// (cached by the campaign's run), the tasks the campaign served (its `tasks/`), and
/// entries from its database.
pub async fn generalize_campaign(request: GateRequest) -> Result<Generalization> {
    let root = request.home.join("campaigns").join(&request.campaign);
    let database = crate::campaign::database_path(&root);
    if !database.is_file() {
        return Err(CampaignError::Setup(format!(
            "no campaign {:?}: {} does not exist",
            request.campaign,
            database.display()
        )));
    }
    let mut options = RunOptions::new(&request.preset, &request.home);
    options.interrupt = Some(request.interrupt.clone());
    let preset = request.preset.clone();
    let baselines = options.clone();
    tokio::task::spawn_blocking(move || run_baselines(&preset, &baselines))
        .await
        .map_err(|e| CampaignError::Setup(format!("baselines panicked: {e}")))??;
    let mut table = BaselineTable::read_preset(&options.results_dir(), &request.preset)?;
    let served = root.join("tasks");
    table.tasks.retain(|t| served.join(&t.task).is_dir());
    if table.tasks.is_empty() {
        return Err(CampaignError::Setup(format!(
            "campaign {:?} served none of preset {}'s tasks ({}): give the campaign's own \
             preset (--preset or --preset-file)",
            request.campaign,
            request.preset.name,
            served.display()
        )));
    }
    let store = Store::connect(&format!("sqlite://{}", database.display()))
        .await
        .map_err(store_error)?;
    let baselines = |task: &str| private_baselines(&table, task);
    let entries = if request.entry_ids.is_empty() {
        top_entries(&store, &baselines, request.top).await?
    } else {
        entries_by_id(&store, &baselines, &request.entry_ids).await?
    };
    if entries.is_empty() {
        return Err(CampaignError::Setup(format!(
            "campaign {:?} has no verified entry to run",
            request.campaign
        )));
    }
    let setup = GateSetup {
        campaign_root: root,
        aar_binary: request.aar_binary,
        libtorch: request.libtorch,
        python_venv: request.python_venv,
        extra_ro: gate_model_dirs(&request.preset)?,
        interrupt: Some(request.interrupt),
    };
    let main = MainTestbed {
        preset: request.preset,
        options,
        table,
    };
    run_gate(&setup, &main, &entries, store).await
}
