//! The LoRA learner on the real MiniLM: fresh adapters and head, fitted to a tiny task's
//! gold labels, must fit them (a row-order or label-token mistake would leave it at chance),
//! and the same seed must give the same predictions.

use aar_engine::features::HeadLoss;
use aar_tasks::{LabeledTask, Split};
use aar_testbed::Preset;
use aar_testbed::baselines::build_task;
use aar_testbed::lora::LoraLearner;
use aar_testbed::preset::LearnerSpec;

use crate::aar_home;

#[test]
fn a_lora_learner_fits_gold_labels_and_is_deterministic() {
    let home = aar_home();
    let preset = Preset::named("tiny").unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sentiment");
    build_task(
        &preset.tasks[0],
        &home.join("assets"),
        &dir,
        preset.build_seed,
    )
    .unwrap();
    let task = LabeledTask::load(&dir).unwrap();
    let file = task.split(Split::TrainLabel).unwrap();
    let labels = file.labels().unwrap();
    let targets: Vec<[f32; 2]> = labels
        .iter()
        .map(|l| {
            if *l == aar_core::Label::One {
                [0.0, 1.0]
            } else {
                [1.0, 0.0]
            }
        })
        .collect();

    let spec = LearnerSpec::Lora {
        model: aar_assets::manifest::MINILM.into(),
        rank: 8,
        alpha: 16.0,
        epochs: 10,
        learning_rate: 2e-3,
        batch_size: 16,
        max_tokens: 128,
    };
    let learner = LoraLearner::load(&spec, &home.join("assets")).unwrap();
    let prompts = learner.prompts(file.examples()).unwrap();
    // An encoder's fresh head has no zero-shot reading.
    assert!(learner.zero_shot_prior(file.examples()).unwrap().is_none());

    let model = learner
        .fit(&prompts, &targets, HeadLoss::CrossEntropy, 3)
        .unwrap();
    let probs = learner.predict(&model, &prompts).unwrap();
    let correct = probs
        .iter()
        .zip(&labels)
        .filter(|(p, l)| (p[1] > p[0]) == (**l == aar_core::Label::One))
        .count();
    let accuracy = correct as f64 / labels.len() as f64;
    assert!(
        accuracy >= 0.85,
        "{} gold rows, 10 epochs: training accuracy {accuracy:.3}",
        labels.len()
    );

    let again = learner
        .fit(&prompts, &targets, HeadLoss::CrossEntropy, 3)
        .unwrap();
    let repeated = learner.predict(&again, &prompts).unwrap();
    for (a, b) in probs.iter().zip(&repeated) {
        assert!((a[1] - b[1]).abs() < 1e-5, "seed 3 twice: {a:?} vs {b:?}");
    }
}
