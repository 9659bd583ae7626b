//! Training: a LoRA step against PyTorch + PEFT, the schedule against a hand computation,
//! seeded determinism and exact resumption.

use aar_engine::LoraConfig;
use aar_engine::model::{LoadOptions, Model};
use aar_engine::models::{PaddingSide, TokenBatch};
use aar_engine::train::{
    AdamW, Loss, TrainConfig, TrainExample, batch_loss, linear_schedule, train,
    trainable_parameters,
};
use tch::{Kind, Tensor};

use crate::support::{fixtures, max_abs_diff, read};

fn lora(rank: i64, alpha: f64) -> LoraConfig {
    LoraConfig {
        rank,
        alpha,
        dropout: 0.0,
        rslora: true,
        ..LoraConfig::reference_decoder()
    }
}

#[test]
fn two_lora_adamw_steps_match_pytorch_and_peft() {
    let root = fixtures();
    let options = LoadOptions {
        lora: Some(lora(4, 8.0)),
        ..LoadOptions::default()
    };
    let model = Model::load(&root.join("llama"), &options).unwrap();
    let init = read(&root.join("lora/init.safetensors"));
    let after = read(&root.join("lora/after.safetensors"));
    let batch_file = read(&root.join("lora/batch.safetensors"));

    let params = trainable_parameters(&model);
    assert_eq!(
        params.len(),
        init.len(),
        "one A and one B per adapted layer, as PEFT"
    );
    for (name, param) in &params {
        let mut param = param.shallow_clone();
        tch::no_grad(|| param.copy_(&init[name]));
    }
    let mask = batch_file["attention_mask"].shallow_clone();
    let batch = TokenBatch {
        input_ids: batch_file["input_ids"].shallow_clone(),
        last_index: mask.cumsum(1, Kind::Int64).argmax(1, false),
        attention_mask: mask,
    };
    let targets = batch_file["targets"].shallow_clone();
    let label_ids = Vec::<i64>::try_from(&batch_file["label_ids"]).unwrap();
    let expected_losses = Vec::<f64>::try_from(&batch_file["losses"]).unwrap();

    let shared = params
        .iter()
        .map(|(name, t)| (name.clone(), t.shallow_clone()))
        .collect();
    let mut optimizer = AdamW::new(shared, (0.9, 0.95), 1e-8, 0.01);
    for expected in expected_losses {
        optimizer.zero_grad();
        let log_probs = model
            .label_log_probs(&batch, Some([label_ids[0], label_ids[1]]), true)
            .unwrap();
        let loss = batch_loss(&log_probs, &targets, Loss::SoftCrossEntropy, 0.0).unwrap();
        loss.backward();
        optimizer.clip_grad_norm(1.0).unwrap();
        optimizer.step(1e-2).unwrap();
        let got = f64::try_from(&loss).unwrap();
        println!("loss ours {got:.6} pytorch {expected:.6}");
        assert!((got - expected).abs() < 1e-4, "loss {got} vs {expected}");
    }
    let mut worst: f64 = 0.0;
    for (name, param) in &params {
        worst = worst.max(max_abs_diff(param, &after[name]));
    }
    println!("max |adapter diff| after 2 steps = {worst:.3e}");
    assert!(worst < 1e-4, "{worst}");
}

#[test]
fn linear_schedule_warms_up_then_decays_like_transformers() {
    // total 10 steps, warmup 2: lr(step) = step/2 for step < 2, then (10 - step) / 8.
    let got: Vec<f64> = (0..11).map(|step| linear_schedule(step, 10, 2)).collect();
    let expected = [
        0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0,
    ];
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < 1e-12, "{got:?}");
    }
}

#[test]
fn logconf_blends_weak_labels_with_hardened_student_predictions() {
    // Student p0 = [0.9, 0.6, 0.2, 0.1]; weak prior of label 1 = 0.5 -> threshold is the
    // median of p0 = 0.4 (linear interpolation), so strong = [A, A, B, B].
    let p0 = [0.9f32, 0.6, 0.2, 0.1];
    let probs: Vec<f32> = p0.iter().flat_map(|p| [*p, 1.0 - p]).collect();
    let log_probs = Tensor::from_slice(&probs).reshape([4, 2]).log();
    let weak = Tensor::from_slice(&[0.8f32, 0.2, 0.3, 0.7, 0.6, 0.4, 0.3, 0.7]).reshape([4, 2]);
    let loss = Loss::Logconf {
        aux_weight: 0.5,
        warmup_frac: 0.2,
    };
    // Halfway through the warmup: coef = 0.5 * 0.5 = 0.25.
    let got = f64::try_from(batch_loss(&log_probs, &weak, loss, 0.1).unwrap()).unwrap();
    let weak_rows = [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.3, 0.7]];
    let strong = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]];
    let mut expected = 0.0;
    for row in 0..4 {
        let p = [f64::from(p0[row]), 1.0 - f64::from(p0[row])];
        for k in 0..2 {
            let target = 0.75 * weak_rows[row][k] + 0.25 * strong[row][k];
            expected -= target * p[k].ln();
        }
    }
    expected /= 4.0;
    assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
}

fn toy_data() -> Vec<TrainExample> {
    // Label is 1 when token 7 appears: learnable by a tiny model.
    (0..24)
        .map(|i| {
            let has = i % 2 == 0;
            let mut ids = vec![(i % 5 + 10) as i64, (i % 3 + 20) as i64, 30];
            if has {
                ids.insert(1, 7);
            }
            TrainExample {
                prompt_ids: ids,
                target: if has { [0.0, 1.0] } else { [1.0, 0.0] },
            }
        })
        .collect()
}

fn train_bert(seed: u64, epochs: usize, checkpoint: Option<&std::path::Path>) -> Vec<f32> {
    // Dropout draws from libtorch's process-global RNG, which train() reseeds per epoch.
    let _rng = crate::support::global_rng();
    let options = LoadOptions {
        lora: Some(LoraConfig {
            rank: 4,
            alpha: 4.0,
            dropout: 0.1,
            rslora: true,
            ..LoraConfig::reference_encoder()
        }),
        seed,
        ..LoadOptions::default()
    };
    let model = Model::load(&fixtures().join("bert"), &options).unwrap();
    let config = TrainConfig {
        epochs,
        batch_size: 8,
        grad_accum: 2,
        learning_rate: 1e-2,
        seed,
        padding: PaddingSide::Right,
        checkpoint_dir: checkpoint.map(|p| p.to_path_buf()),
        ..TrainConfig::default()
    };
    train(&model, &toy_data(), &config).unwrap();
    let params = trainable_parameters(&model);
    let flat: Vec<Tensor> = params.iter().map(|(_, t)| t.flatten(0, -1)).collect();
    Vec::<f32>::try_from(Tensor::cat(&flat, 0)).unwrap()
}

#[test]
fn same_seed_gives_identical_weights_and_a_different_seed_does_not() {
    let a = train_bert(5, 2, None);
    let b = train_bert(5, 2, None);
    let c = train_bert(6, 2, None);
    assert!(a == b, "same seed, different weights");
    assert!(a != c, "different seeds, same weights");
}

#[test]
fn resuming_from_an_epoch_checkpoint_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = train_bert(9, 3, Some(dir.path()));
    // Simulate a run killed during epoch 2: only epoch 1's checkpoint survives.
    std::fs::remove_dir_all(dir.path().join("epoch-2")).unwrap();
    std::fs::remove_dir_all(dir.path().join("epoch-3")).unwrap();
    let resumed = train_bert(9, 3, Some(dir.path()));
    assert!(dir.path().join("epoch-3/state.json").is_file());
    assert!(
        straight == resumed,
        "resumed run differs from the uninterrupted one"
    );
}

#[test]
fn two_accumulated_micro_batches_equal_one_batch_of_twice_the_size() {
    // train() reseeds libtorch's global RNG: keep it from interleaving with other trainings.
    let _rng = crate::support::global_rng();
    let run = |batch_size: usize, grad_accum: usize| {
        let options = LoadOptions {
            lora: Some(lora(4, 8.0)),
            seed: 3,
            ..LoadOptions::default()
        };
        let model = Model::load(&fixtures().join("qwen3"), &options).unwrap();
        // Non-zero B so that every adapter moves.
        for (name, param) in trainable_parameters(&model) {
            if name.contains("lora_B") {
                let mut param = param.shallow_clone();
                tch::no_grad(|| param.copy_(&(param.ones_like() * 0.05)));
            }
        }
        let config = TrainConfig {
            epochs: 1,
            batch_size,
            grad_accum,
            learning_rate: 1e-2,
            warmup_ratio: 0.0,
            label_token_ids: Some([11, 42]),
            loss: Loss::SoftCrossEntropy,
            ..TrainConfig::default()
        };
        let data: Vec<TrainExample> = toy_data().into_iter().take(8).collect();
        let report = train(&model, &data, &config).unwrap();
        assert_eq!(report.steps, 1);
        let flat: Vec<Tensor> = trainable_parameters(&model)
            .iter()
            .map(|(_, t)| t.flatten(0, -1))
            .collect();
        (Tensor::cat(&flat, 0), report.step_losses[0])
    };
    let (whole, whole_loss) = run(8, 1);
    let (accumulated, accumulated_loss) = run(4, 2);
    assert!((whole_loss - accumulated_loss).abs() < 1e-5);
    let diff = max_abs_diff(&whole, &accumulated);
    assert!(diff < 1e-6, "{diff}");
}
