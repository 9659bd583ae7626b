//! The tiny preset end to end: every baseline over 5 seeds, the table against hand-computed
//! PGR and against `aar-results` reading the same files, the cache, interruption, and
//! determinism of the agent-facing runner.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use aar_core::metrics::MeanSe;
use aar_results::{ReferenceReport, ResultCache, SeedSet};
use aar_testbed::agent::{Recipe, run_method_on_splits};
use aar_testbed::{
    AgentRun, BaselineTable, MethodKind, MethodSpec, Preset, RunOptions, TestbedError,
    labeled_accuracy, run_baselines, run_method, write_agent_features,
};
use serde_json::Value;

use crate::aar_home;

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn accuracies(results: &std::path::Path, dir_prefix: &str, field: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for config in std::fs::read_dir(results.join(dir_prefix)).unwrap() {
        let config = config.unwrap().path();
        let mut files: Vec<_> = std::fs::read_dir(&config)
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            out.push(read(&file)[field].as_f64().unwrap());
        }
    }
    out
}

#[test]
fn tiny_baselines_end_to_end() {
    aar_engine::device::best_device();
    let home = aar_home();
    let preset = Preset::named("tiny").unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut options = RunOptions::new(&preset, &home);
    options.work_dir = work.path().join("tiny");
    options.feature_cache = work.path().join("features");

    // Interrupted before the first result: an error, and nothing half-written.
    options.interrupt = Some(Arc::new(AtomicBool::new(true)));
    assert!(matches!(
        run_baselines(&preset, &options),
        Err(TestbedError::Interrupted)
    ));
    options.interrupt = None;

    let first = run_baselines(&preset, &options).unwrap();
    let jobs = preset.seeds.len() * (2 + MethodSpec::baselines().len());
    assert_eq!((first.computed, first.cached), (jobs, 0));
    let rerun = run_baselines(&preset, &options).unwrap();
    assert_eq!((rerun.computed, rerun.cached), (0, jobs));

    // PGR by hand from the files: (acc - mean W) / (mean S - mean W), then mean and SE.
    let results = options.results_dir();
    let w = accuracies(&results, "sentiment_weak_artifacts", "weak_acc");
    let s = accuracies(&results, "sentiment_train_ceiling", "strong_acc");
    assert_eq!((w.len(), s.len()), (5, 5));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (w_mean, s_mean) = (mean(&w), mean(&s));
    assert!(
        s_mean > w_mean,
        "tiny must show a gap: W {w_mean:.3}, S {s_mean:.3}"
    );
    let table = BaselineTable::read(&results, &preset.seeds).unwrap();
    let task = &table.tasks[0];
    let (tw, ts) = task.baseline("test").unwrap();
    assert!((tw.mean - w_mean).abs() < 1e-12 && (ts.mean - s_mean).abs() < 1e-12);
    let cache = ResultCache::open(&results).unwrap();
    let reference = ReferenceReport::build(&cache, &"0-4".parse::<SeedSet>().unwrap()).unwrap();
    let dataset = reference.dataset("sentiment").unwrap();
    for method in [
        "vanilla_w2s",
        "soft_labels",
        "logconf",
        "train_only_on_confident_labels",
        "ue_zeroshot",
    ] {
        let dir = format!("sentiment_{method}");
        let accs = accuracies(&results, &dir, "transfer_acc");
        assert_eq!(accs.len(), 5, "{method}");
        let pgrs: Vec<f64> = accs
            .iter()
            .map(|a| (a - w_mean) / (s_mean - w_mean))
            .collect();
        let by_hand = MeanSe::from_values(&pgrs).unwrap();
        let ours = task.method(method).unwrap().split("test").unwrap();
        let ours = ours.pgr.unwrap();
        assert!(
            (ours.mean - by_hand.mean).abs() < 1e-9,
            "{method}: {ours:?} vs {by_hand:?}"
        );
        assert!(
            (ours.se.unwrap() - by_hand.se.unwrap()).abs() < 1e-9,
            "{method}"
        );
        // One reader for both: aar-results sees the same PGR.
        let theirs = dataset.method(method).unwrap();
        assert!(
            (theirs.pgr.mean - by_hand.mean).abs() < 1e-9,
            "{method} (aar-results)"
        );
    }
    println!("{table}");

    // The agent-facing runner: label-free copy, same seed, same predictions.
    let agent_task = options.agent_dir().join("sentiment");
    for name in ["test.jsonl", "test_private.jsonl", "train_unlabel.jsonl"] {
        let text = std::fs::read_to_string(agent_task.join(name)).unwrap();
        assert!(!text.contains("\"label\""), "{name} carries a label");
        assert!(!text.contains("\"subset\""), "{name} carries a subset");
    }
    let run = AgentRun {
        task_dir: agent_task,
        weak_labels: None,
        assets_dir: options.assets_dir.clone(),
        feature_cache: options.feature_cache.clone(),
        seed: 3,
    };
    let spec: MethodSpec =
        serde_json::from_str(r#"{"method": "confidence_filter", "low": 0.3, "high": 0.7}"#)
            .unwrap();
    assert_eq!(
        spec.kind,
        MethodKind::ConfidenceFilter {
            low: 0.3,
            high: 0.7
        }
    );
    let a = run_method(&run, &spec).unwrap();
    let b = run_method(&run, &spec).unwrap();
    assert_eq!(a.predictions.len(), preset.tasks[0].sizes.test);
    assert_eq!(a.predictions, b.predictions);
    assert_eq!(
        a.private_predictions.as_ref().map(Vec::len),
        Some(preset.tasks[0].sizes.test_private)
    );
    assert_eq!(a.probabilities, b.probabilities);

    // The campaign's transfer-set scoring (the method re-run on the agent copy, scored on
    // the labeled transfer split) reproduces the baseline runner's own transfer accuracy.
    let vanilla = MethodSpec::new(MethodKind::Vanilla);
    let transfer = options
        .tasks_dir()
        .join("sentiment")
        .join(aar_tasks::Split::Transfer.file_name());
    // The agent copy holds the first seed's weak labels; the baseline runner pairs each
    // student seed with its own teacher seed, so the first seed is the one both share.
    let seed = preset.seeds[0];
    let config_dir = std::fs::read_dir(results.join("sentiment_vanilla_w2s"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let recorded =
        read(&config_dir.join(format!("seed_{seed}.json")))["eval"]["transfer"]["accuracy"]
            .as_f64()
            .unwrap();
    let rerun = labeled_accuracy(
        &AgentRun {
            seed,
            ..run.clone()
        },
        &vanilla,
        &transfer,
    )
    .unwrap();
    assert!((rerun - recorded).abs() < 1e-12, "{rerun} vs {recorded}");

    // Features for new code, as .npy: one row per input row, the student's width, no label.
    let out = tempfile::tempdir().unwrap();
    let splits = vec!["test".to_owned(), "test_private".to_owned()];
    let index = write_agent_features(&run, &splits, out.path()).unwrap();
    assert_eq!(index.dim, 384);
    let sizes = &preset.tasks[0].sizes;
    let n = sizes.train_unlabel as u64;
    let expected = [
        ("train_unlabel", vec![n, 384]),
        ("weak_soft", vec![n, 2]),
        ("test", vec![sizes.test as u64, 384]),
        ("test_private", vec![sizes.test_private as u64, 384]),
    ];
    for (name, shape) in expected {
        let array = aar_testbed::npy::read_f32(&out.path().join(format!("{name}.npy"))).unwrap();
        assert_eq!(array.shape, shape, "{name}");
        assert_eq!(index.arrays[name].shape, shape, "{name} in features.json");
    }
    let groups: Vec<String> =
        serde_json::from_slice(&std::fs::read(out.path().join("groups.json")).unwrap()).unwrap();
    assert_eq!(groups.len() as u64, n);
    let written = std::fs::read_to_string(out.path().join("features.json")).unwrap();
    for field in ["\"label\"", "\"labels\"", "\"gold\""] {
        assert!(
            !written.contains(field),
            "the index carries no {field} field"
        );
    }

    // A training plan of vanilla's own targets (the weak teacher's hard labels, read back
    // from the .npy) trains the same student as the built-in vanilla, bit for bit.
    let weak = aar_testbed::npy::read_f32(&out.path().join("weak_soft.npy")).unwrap();
    let hard: Vec<f32> = weak
        .values
        .chunks(2)
        .flat_map(|p| if p[1] > p[0] { [0.0, 1.0] } else { [1.0, 0.0] })
        .collect();
    aar_testbed::npy::write_f32(&out.path().join("targets.npy"), &[n, 2], &hard).unwrap();
    let plan = out.path().join("plan.json");
    std::fs::write(&plan, r#"{"targets": "targets.npy"}"#).unwrap();
    let through_plan = run_method_on_splits(&run, Recipe::Plan(&plan), &splits).unwrap();
    let built_in = run_method(&run, &vanilla).unwrap();
    assert_eq!(through_plan.splits, built_in.splits);
    assert_eq!(through_plan.probabilities, built_in.probabilities);
    assert_eq!(
        through_plan.plan.as_ref().map(|p| p.kept),
        Some(sizes.train_unlabel)
    );
}
