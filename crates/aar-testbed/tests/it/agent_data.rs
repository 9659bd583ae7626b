//! What researchers get of the tiny preset: the agent copy's ids are opaque and stable,
//! and their feature cache holds features of agent-facing texts only (never of
//! `train_label` or the transfer set), complete enough for `aar run-method`.

use std::path::{Path, PathBuf};

use aar_engine::features::Matrix;
use aar_tasks::{LabeledTask, Split};
use aar_testbed::baselines::{
    AGENT_CACHE_STAMP, AGENT_META_FILE, AgentTaskMeta, fill_agent_feature_cache,
};
use aar_testbed::features::{FrozenExtractor, constant_choice};
use aar_testbed::{
    AgentRun, MethodKind, MethodSpec, Preset, RunOptions, run_baselines, run_method,
    write_agent_features,
};

use crate::aar_home;

/// Every row of every tensor in a safetensors file (the cache's entries are F32 `[n, d]`).
fn safetensors_rows(path: &Path) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut rows = Vec::new();
    for (name, tensor) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(tensor["dtype"], "F32", "{}", path.display());
        let shape: Vec<usize> = serde_json::from_value(tensor["shape"].clone()).unwrap();
        let [start, end]: [usize; 2] =
            serde_json::from_value(tensor["data_offsets"].clone()).unwrap();
        let values: Vec<f32> = data[start..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        rows.extend(values.chunks(shape[1]).map(<[f32]>::to_vec));
    }
    rows
}

fn cache_entries(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect()
}

fn matrix_rows(m: &Matrix) -> Vec<Vec<f32>> {
    (0..m.rows()).map(|i| m.row(i).to_vec()).collect()
}

/// The largest coordinate difference between `row` and the nearest of `rows`.
fn nearest(row: &[f32], rows: &[Vec<f32>]) -> f32 {
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        })
        .fold(f32::INFINITY, f32::min)
}

/// The tiny preset with one seed and vanilla only: enough for an agent copy.
fn tiny_testbed(work: &Path) -> (Preset, RunOptions) {
    aar_engine::device::best_device();
    let preset = Preset::named("tiny").unwrap();
    let mut options = RunOptions::new(&preset, &aar_home());
    options.work_dir = work.join("tiny");
    options.feature_cache = work.join("features");
    options.seeds = vec![preset.seeds[0]];
    options.methods = vec![MethodSpec::new(MethodKind::Vanilla)];
    run_baselines(&preset, &options).unwrap();
    (preset, options)
}

#[test]
fn tiny_agent_copy_ids_are_opaque_stable_and_keyed_outside_the_copy() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().unwrap();
    let (preset, options) = tiny_testbed(work.path());
    let agent = options.agent_dir().join("sentiment");
    let labeled = LabeledTask::load(&options.tasks_dir().join("sentiment")).unwrap();
    let read = |split: Split| std::fs::read_to_string(agent.join(split.file_name())).unwrap();
    let before = read(Split::Test);
    for (line, source) in before
        .lines()
        .zip(labeled.split(Split::Test).unwrap().examples())
    {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["id", "consistency_id"] {
            let id = row[field].as_str().unwrap();
            assert_ne!(row[field], source.extra[field]);
            assert!(id.starts_with('g') && id.len() == 17, "{id}");
            assert!(id.parse::<i64>().is_err());
        }
    }
    assert!(!before.contains("sentiment-test-"), "a source-ordered id");

    let key = options.id_key_path();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !key.starts_with(options.agent_dir()),
        "the key is in the agent copy"
    );

    // A rerun rewrites the copy from cached results: same ids, no result recomputed.
    let rerun = run_baselines(&preset, &options).unwrap();
    assert_eq!(rerun.computed, 0);
    assert_eq!(read(Split::Test), before);

    // A new key (another testbed) gives other ids for the same rows.
    std::fs::remove_file(&key).unwrap();
    run_baselines(&preset, &options).unwrap();
    assert_ne!(read(Split::Test), before);
}

#[test]
fn tiny_agent_feature_cache_holds_agent_facing_texts_only() {
    let work = tempfile::tempdir().unwrap();
    let (preset, options) = tiny_testbed(work.path());
    let tasks = vec!["sentiment".to_owned()];
    let cache = fill_agent_feature_cache(&options, &tasks).unwrap();
    assert_eq!(cache, options.agent_feature_cache());
    let cached: Vec<Vec<f32>> = cache_entries(&cache)
        .iter()
        .flat_map(|p| safetensors_rows(p))
        .collect();
    assert!(!cached.is_empty());
    // Read through, not recomputed: the agent splits' prompts are the labeled splits', so
    // every entry is the testbed cache's own file, hard-linked (one filesystem here).
    {
        use std::os::unix::fs::MetadataExt;
        for entry in cache_entries(&cache) {
            let shared = options.feature_cache.join(entry.file_name().unwrap());
            let (a, b) = (
                std::fs::metadata(&entry).unwrap(),
                std::fs::metadata(&shared).unwrap(),
            );
            assert_eq!(
                (a.dev(), a.ino()),
                (b.dev(), b.ino()),
                "{} was not linked from the testbed's cache",
                entry.display()
            );
        }
    }

    // Every split's features, computed apart in a scratch cache.
    let labeled = LabeledTask::load(&options.tasks_dir().join("sentiment")).unwrap();
    let strong = preset.strong_for(&preset.tasks[0]);
    let extractor =
        FrozenExtractor::load(strong, &options.assets_dir, &work.path().join("scratch")).unwrap();
    let unlabel = labeled.split(Split::TrainUnlabel).unwrap().examples();
    let drop_choice = constant_choice(unlabel);
    let rows = |split: Split| {
        let examples = labeled.split(split).unwrap().examples();
        matrix_rows(&extractor.row_features(examples, drop_choice).unwrap().0)
    };
    let meta: AgentTaskMeta = serde_json::from_str(
        &std::fs::read_to_string(options.agent_dir().join("sentiment").join(AGENT_META_FILE))
            .unwrap(),
    )
    .unwrap();
    let verbalizers = meta.verbalizers.unwrap();
    let mut allowed = matrix_rows(&extractor.features(&verbalizers).unwrap().0);
    for split in [Split::TrainUnlabel, Split::Test, Split::TestPrivate] {
        let split_rows = rows(split);
        // Complete: a researcher's read-only cache has every row run-method reads.
        for row in &split_rows {
            assert!(nearest(row, &cached) < 1e-4, "{split:?} row not cached");
        }
        allowed.extend(split_rows);
    }
    let forbidden: Vec<Vec<f32>> = [Split::TrainLabel, Split::Transfer]
        .into_iter()
        .flat_map(rows)
        .collect();
    for row in &cached {
        assert!(
            nearest(row, &allowed) < 1e-4,
            "a cached row of no agent text"
        );
        assert!(
            nearest(row, &forbidden) > 1e-3,
            "a cached row of train_label or transfer"
        );
    }
    // The testbed's own cache does hold labeled splits: the reason for a cache apart.
    let shared: Vec<Vec<f32>> = cache_entries(&options.feature_cache)
        .iter()
        .flat_map(|p| safetensors_rows(p))
        .collect();
    assert!(forbidden.iter().any(|row| nearest(row, &shared) < 1e-4));

    // Copies filled from other data are emptied; a current cache is kept.
    std::fs::write(cache.join("planted.safetensors"), b"x").unwrap();
    fill_agent_feature_cache(&options, &tasks).unwrap();
    assert!(cache.join("planted.safetensors").exists());
    std::fs::write(cache.join(AGENT_CACHE_STAMP), "stale\n").unwrap();
    fill_agent_feature_cache(&options, &tasks).unwrap();
    assert!(!cache.join("planted.safetensors").exists());
    assert!(!cache_entries(&cache).is_empty());

    // Extra files beside the split files (a campaign's decoys) change nothing.
    let agent = options.agent_dir().join("sentiment");
    let planted = work.path().join("planted").join("sentiment");
    std::fs::create_dir_all(planted.join("labeled")).unwrap();
    std::fs::create_dir_all(planted.join(".cache")).unwrap();
    for entry in std::fs::read_dir(&agent).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), planted.join(entry.file_name())).unwrap();
    }
    let labeled_test = options
        .tasks_dir()
        .join("sentiment")
        .join(Split::Test.file_name());
    std::fs::copy(&labeled_test, planted.join("labeled/test.jsonl")).unwrap();
    std::fs::copy(&labeled_test, planted.join("test_labels.jsonl")).unwrap();
    std::fs::copy(
        &labeled_test,
        planted.join(".cache/test_private.labels.jsonl"),
    )
    .unwrap();
    let run = |task_dir: PathBuf| AgentRun {
        task_dir,
        weak_labels: None,
        assets_dir: options.assets_dir.clone(),
        feature_cache: cache.clone(),
        seed: 1,
    };
    let vanilla = MethodSpec::new(MethodKind::Vanilla);
    let (a, b) = (
        run_method(&run(agent.clone()), &vanilla).unwrap(),
        run_method(&run(planted.clone()), &vanilla).unwrap(),
    );
    assert_eq!(a.predictions, b.predictions);
    assert_eq!(a.private_predictions, b.private_predictions);
    let splits = ["test".to_owned(), "test_private".to_owned()];
    let out = tempfile::tempdir().unwrap();
    write_agent_features(&run(agent), &splits, &out.path().join("a")).unwrap();
    write_agent_features(&run(planted), &splits, &out.path().join("b")).unwrap();
    for file in [
        "train_unlabel.npy",
        "weak_soft.npy",
        "test.npy",
        "test_private.npy",
    ] {
        assert_eq!(
            std::fs::read(out.path().join("a").join(file)).unwrap(),
            std::fs::read(out.path().join("b").join(file)).unwrap(),
            "{file}"
        );
    }
}
