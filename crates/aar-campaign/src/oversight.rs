//! The campaign's verifier: what `aar-oversight` needs to re-run entries (each
//! served task's agent copy with its decoys, the labeled task, the aar binary, the
//! models and a feature cache researchers never see), warmed up before the server
//! starts so that verification runs find every feature in their read-only cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aar_oversight::inputs::TaskSources;
use aar_oversight::{SandboxedVerifier, VerifierConfig, WorkerConfig};
use aar_server::verify::VerifierHandle;
use aar_store::Store;
use aar_tasks::IdKey;
use aar_testbed::agent::{Recipe, run_method_reading_through};
use aar_testbed::{AgentRun, MethodKind, MethodSpec, RunOptions};

use crate::campaign::CampaignConfig;
use crate::error::{CampaignError, Result};

/// Sandbox index of verification runs: uid 61900 as root, apart from every researcher's.
const VERIFIER_SANDBOX_INDEX: u32 = 900;
/// Seeds outside the declared set that every verification also runs (cherry-picking probe).
const UNDECLARED_SEEDS: usize = 2;
/// Entries verified at once: one, so that verification (a sandboxed training process)
/// leaves the other core to the researchers and the server.
const CONCURRENCY: usize = 1;

/// Builds the verifier for the served `tasks` and warms its feature cache.
pub(crate) async fn start_verifier(
    config: &CampaignConfig,
    root: &Path,
    served_tasks_dir: &Path,
    options: &RunOptions,
    tasks: &[String],
    database_url: &str,
) -> Result<VerifierHandle> {
    let setup = verifier_setup(config, root, served_tasks_dir, options, tasks)?;
    let store = Store::connect(database_url)
        .await
        .map_err(|e| CampaignError::Server(format!("verifier store: {e}")))?;
    let verifier = SandboxedVerifier::new(setup.config, store)
        .map_err(|e| CampaignError::Setup(format!("verifier: {e}")))?;
    warm_verifier(&verifier, options, &setup.feature_cache, tasks).await?;
    Ok(VerifierHandle {
        verifier: Arc::new(verifier),
        concurrency: CONCURRENCY,
    })
}

/// The same verifier for remote workers (cluster mode): builds the task inputs and
/// warms the feature cache here as [`start_verifier`] does, then writes what a worker
/// needs to `<root>/oversight/worker.json` (mode 0600) and returns its path.
pub(crate) async fn prepare_worker_config(
    config: &CampaignConfig,
    root: &Path,
    served_tasks_dir: &Path,
    options: &RunOptions,
    tasks: &[String],
) -> Result<PathBuf> {
    let setup = verifier_setup(config, root, served_tasks_dir, options, tasks)?;
    let worker = WorkerConfig::from_verifier_config(&setup.config, &setup.key_path);
    let verifier = SandboxedVerifier::new(setup.config, None)
        .map_err(|e| CampaignError::Setup(format!("verifier: {e}")))?;
    warm_verifier(&verifier, options, &setup.feature_cache, tasks).await?;
    let path = root.join("oversight").join("worker.json");
    worker
        .write(&path)
        .map_err(|e| CampaignError::Setup(format!("verification worker config: {e}")))?;
    Ok(path)
}

/// What the campaign's verifier is made of, wherever it runs.
struct VerifierSetup {
    config: VerifierConfig,
    /// The file the id key is kept in (a worker loads it from there).
    key_path: PathBuf,
    /// The testbed's feature cache, warmed for the verification copies.
    feature_cache: PathBuf,
}

/// The verifier's config for the served `tasks`: their sources, the campaign's binary,
/// models and feature cache, its id key and decoys.
fn verifier_setup(
    config: &CampaignConfig,
    root: &Path,
    served_tasks_dir: &Path,
    options: &RunOptions,
    tasks: &[String],
) -> Result<VerifierSetup> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(CampaignError::io(p));
    let oversight = root.join("oversight");
    let sources: BTreeMap<String, TaskSources> = tasks
        .iter()
        .map(|task| {
            Ok((
                task.clone(),
                TaskSources {
                    agent_copy: absolute(&crate::decoys::agent_data_dir(root).join(task))?,
                    labeled: absolute(&served_tasks_dir.join(task))?,
                },
            ))
        })
        .collect::<Result<_>>()?;
    // The testbed's own cache: never mounted for researchers (it holds features of
    // train_label and the transfer set), read-only in verification runs.
    let feature_cache = absolute(&options.feature_cache)?;
    let key_path = absolute(&oversight.join("id.key"))?;
    let work = oversight.join("work");
    std::fs::create_dir_all(&work).map_err(CampaignError::io(&work))?;
    // The verification sandboxes' uid must reach the inputs under `work` (the decoy
    // truth and the key are protected by their own modes); an older campaign may have
    // made these directories private.
    for dir in [&oversight, &work] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(CampaignError::io(dir))?;
    }
    let id_key = IdKey::load_or_create(&key_path)
        .map_err(|e| CampaignError::Setup(format!("{}: {e}", key_path.display())))?;
    let decoys = crate::decoys::decoy_truth_path(root, "x")
        .parent()
        .map(Path::to_owned);
    let verifier_config = VerifierConfig {
        work_dir: absolute(&work)?,
        tasks: sources,
        aar_binary: config.aar_binary.clone(),
        libtorch: config.libtorch.clone(),
        python_venv: config.python_venv.clone(),
        extra_ro: [
            absolute(&config.home.join("assets").join("models"))?,
            feature_cache.clone(),
        ]
        .into_iter()
        .chain(crate::campaign::user_model_dirs(config)?)
        .collect(),
        env: vec![
            (
                "AAR_HOME".into(),
                absolute(&config.home)?.display().to_string(),
            ),
            (
                "AAR_FEATURE_CACHE".into(),
                feature_cache.display().to_string(),
            ),
            // libtorch's OpenMP threads spin while waiting; beside researchers and the
            // server they then take 5-20x longer (measured: 22 s vs 1.5 s per run).
            ("OMP_WAIT_POLICY".into(), "PASSIVE".into()),
        ],
        decoys,
        id_key,
        undeclared_seeds: UNDECLARED_SEEDS,
        sandbox_index: VERIFIER_SANDBOX_INDEX,
        strace: PathBuf::from("/usr/bin/strace"),
    };
    Ok(VerifierSetup {
        config: verifier_config,
        key_path,
        feature_cache,
    })
}

/// Builds every task's verification inputs now and warms the feature cache on them.
async fn warm_verifier(
    verifier: &SandboxedVerifier,
    options: &RunOptions,
    feature_cache: &Path,
    tasks: &[String],
) -> Result<()> {
    for task in tasks {
        let input = verifier
            .prepare_task(task)
            .await
            .map_err(|e| CampaignError::Setup(format!("verification inputs of {task}: {e}")))?;
        warm_features(options, feature_cache, task, input).await;
    }
    Ok(())
}

/// One vanilla run on the verification copy, here where the cache is writable, so the
/// sandboxed runs (read-only cache) find the features of every split they predict.
/// `cache` is the testbed's own cache, so the copy's splits (the agent copy's and the
/// transfer set's inputs, prompts unchanged) are hits there and only the rows the testbed
/// never featurised are computed: no seed cache to read through.
pub(crate) async fn warm_features(options: &RunOptions, cache: &Path, task: &str, input: PathBuf) {
    let splits: Vec<String> = aar_oversight::inputs::SCORED_SPLITS
        .iter()
        .filter(|s| input.join(format!("{s}.jsonl")).is_file())
        .map(|s| (*s).to_owned())
        .collect();
    let run = AgentRun {
        task_dir: input,
        weak_labels: None,
        assets_dir: options.assets_dir.clone(),
        feature_cache: cache.to_owned(),
        seed: 0,
    };
    let spec = MethodSpec::new(MethodKind::Vanilla);
    let outcome = tokio::task::spawn_blocking(move || {
        run_method_reading_through(&run, Recipe::Spec(&spec), &splits, &[])
    })
    .await;
    match outcome {
        Ok(Ok((_, counts))) => tracing::info!(
            task,
            computed = counts.computed,
            cached = counts.cached,
            "verification features ready ({} feature sets computed, {} cached)",
            counts.computed,
            counts.cached
        ),
        // LoRA students have no frozen features to cache; their runs compute what they need.
        Ok(Err(e)) => tracing::warn!(task, error = %e, "verification feature warm-up skipped"),
        Err(e) => tracing::warn!(task, error = %e, "verification feature warm-up panicked"),
    }
}

/// Longest the report waits for entries still being verified.
const VERIFICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Before the report: waits (with progress lines) for entries still queued or running
/// (unless interrupted: they resume with the campaign), then runs the oracle-probing
/// probe over every agent's evaluation log.
pub(crate) async fn finish(
    database_url: &str,
    tasks: &[String],
    interrupt: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let store = Store::connect(database_url)
        .await
        .map_err(|e| CampaignError::Server(format!("verifier store: {e}")))?;
    let started = std::time::Instant::now();
    let mut last_line = None;
    loop {
        let pending = store
            .pending_verifications()
            .await
            .map_err(|e| CampaignError::Server(e.to_string()))?
            .len();
        if pending == 0 || interrupt.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        if started.elapsed() > VERIFICATION_WAIT {
            eprintln!(
                "{pending} entries are still being verified; the report lists them as pending (`aar up` again finishes them)"
            );
            break;
        }
        if last_line != Some(pending) {
            println!("waiting for the verifier: {pending} entries left");
            last_line = Some(pending);
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
    let flagged = aar_oversight::logs::flag_oracle_probing(&store, tasks)
        .await
        .map_err(|e| CampaignError::Server(format!("oracle-probing probe: {e}")))?;
    if flagged > 0 {
        println!("{flagged} researcher(s) flagged for oracle probing (see the report)");
    }
    Ok(())
}
