//! Frozen features: parity of an intermediate layer with transformers, the disk cache, heads.

use aar_engine::Pooling;
use aar_engine::features::{
    FeatureSpec, HeadConfig, HeadKind, HeadLoss, Matrix, batch_loss, cached_features,
    cached_features_seeded, train_head, train_head_on, train_weighted_head_on,
};
use aar_engine::model::{LoadOptions, Model};
use tch::{Kind, Tensor};

use crate::support::{fixtures, max_abs_diff, read, real_positions};

#[test]
fn last_token_features_of_layer_1_match_transformers_and_are_cached() {
    let dir = fixtures().join("llama");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let reference = read(&dir.join("reference.safetensors"));
    let ids = &reference["right_input_ids"];
    let mask = &reference["right_attention_mask"];
    let prompts: Vec<Vec<i64>> = (0..ids.size()[0])
        .map(|row| {
            Vec::<i64>::try_from(ids.get(row).index_select(0, &real_positions(mask, row))).unwrap()
        })
        .collect();
    let cache = tempfile::tempdir().unwrap();
    let spec = FeatureSpec {
        layer: Some(1),
        pooling: Pooling::LastToken,
        template: "binary".into(),
    };
    let first = cached_features(&model, &prompts, &spec, cache.path(), 0, 2).unwrap();
    assert!(!first.from_cache);
    for (row, prompt) in prompts.iter().enumerate() {
        let expected = reference["right_hidden_1"]
            .get(row as i64)
            .get(prompt.len() as i64 - 1);
        let diff = max_abs_diff(&first.values.get(row as i64), &expected);
        assert!(diff < 1e-4, "row {row}: {diff}");
    }
    let again = cached_features(&model, &prompts, &spec, cache.path(), 0, 2).unwrap();
    assert!(again.from_cache);
    assert_eq!(max_abs_diff(&first.values, &again.values), 0.0);
    // Another layer, template or data is another key.
    let other_layer = FeatureSpec {
        layer: Some(2),
        ..spec.clone()
    };
    assert!(
        !cached_features(&model, &prompts, &other_layer, cache.path(), 0, 2)
            .unwrap()
            .from_cache
    );
    let other_template = FeatureSpec {
        template: "comparison".into(),
        ..spec.clone()
    };
    assert!(
        !cached_features(&model, &prompts, &other_template, cache.path(), 0, 2)
            .unwrap()
            .from_cache
    );
    assert!(
        !cached_features(&model, &prompts[..2], &spec, cache.path(), 0, 2)
            .unwrap()
            .from_cache
    );
}

/// The `.safetensors` entries of a cache directory, by name.
fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".safetensors"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_seed_cache_is_read_through_copied_from_and_never_written() {
    let model = Model::load(&fixtures().join("llama"), &LoadOptions::default()).unwrap();
    let prompts: Vec<Vec<i64>> = vec![vec![1, 5, 9, 3], vec![1, 7, 2], vec![1, 4, 4, 8, 6]];
    let spec = FeatureSpec {
        layer: Some(1),
        pooling: Pooling::Mean,
        template: "raw".into(),
    };
    let seed = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    // The seed holds two keys: the call's, and one the target never asks for.
    let computed = cached_features(&model, &prompts, &spec, seed.path(), 0, 2).unwrap();
    assert!(!computed.from_cache);
    cached_features(&model, &prompts[1..], &spec, seed.path(), 0, 2).unwrap();
    let seed_before = entries(seed.path());
    assert_eq!(seed_before.len(), 2);
    let seed_bytes = std::fs::read(&computed.path).unwrap();

    let seeds = vec![seed.path().to_owned()];
    let copied =
        cached_features_seeded(&model, &prompts, &spec, target.path(), &seeds, 0, 2).unwrap();
    assert!(copied.from_cache, "a key in the seed was recomputed");
    assert_eq!(copied.seeded_from.as_deref(), Some(computed.path.as_path()));
    assert_eq!(max_abs_diff(&computed.values, &copied.values), 0.0);
    assert_eq!(copied.path.parent(), Some(target.path()));
    // The target now holds that key, and only it (no `.partial` left), byte for byte.
    let target_files: Vec<String> = std::fs::read_dir(target.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "weights-hashes")
        .collect();
    assert_eq!(
        target_files,
        vec![
            copied
                .path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        ]
    );
    assert_eq!(std::fs::read(&copied.path).unwrap(), seed_bytes);
    // The seed is untouched.
    assert_eq!(entries(seed.path()), seed_before);
    assert_eq!(std::fs::read(&computed.path).unwrap(), seed_bytes);

    // Again: a hit in the target itself, not a copy.
    let again =
        cached_features_seeded(&model, &prompts, &spec, target.path(), &seeds, 0, 2).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.seeded_from, None);

    // A key the seed lacks is computed, stored in the target, never in the seed.
    let other = FeatureSpec {
        layer: Some(2),
        ..spec.clone()
    };
    let fresh =
        cached_features_seeded(&model, &prompts, &other, target.path(), &seeds, 0, 2).unwrap();
    assert!(!fresh.from_cache);
    assert_eq!(fresh.seeded_from, None);
    assert!(fresh.path.is_file());
    assert_eq!(entries(target.path()).len(), 2);
    assert_eq!(entries(seed.path()), seed_before);
}

fn separable(n: i64, seed: i64) -> (Tensor, Tensor) {
    // Label 1 iff x0 + x1 > 0 (x2..x7 are noise), features shifted and scaled to test standardisation.
    let _rng = crate::support::global_rng();
    tch::manual_seed(seed);
    let x = Tensor::randn([n, 8], (Kind::Float, tch::Device::Cpu));
    let label = (x.narrow(1, 0, 1) + x.narrow(1, 1, 1))
        .gt(0.0)
        .squeeze_dim(1)
        .to_kind(Kind::Int64);
    (x * 3.0 + 5.0, label.one_hot(2).to_kind(Kind::Float))
}

fn accuracy(probs: &[[f32; 2]], targets: &Tensor) -> f64 {
    let labels = Vec::<i64>::try_from(targets.argmax(-1, false)).unwrap();
    let correct = probs
        .iter()
        .zip(labels)
        .filter(|(p, label)| i64::from(p[1] > p[0]) == *label)
        .count();
    correct as f64 / probs.len() as f64
}

/// A head of `kind` trained by AdamW at 0.01, no regularisation, seed 0.
fn plain_head(kind: HeadKind, epochs: usize, batch_size: usize) -> HeadConfig {
    HeadConfig {
        kind,
        epochs,
        batch_size,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        l2: 0.0,
        seed: 0,
        loss: HeadLoss::default(),
    }
}

#[test]
fn linear_and_mlp_heads_learn_a_separable_task() {
    let (train_x, train_t) = separable(400, 1);
    let (test_x, test_t) = separable(200, 2);
    for kind in [HeadKind::Linear, HeadKind::Mlp { hidden: 16 }] {
        let config = plain_head(kind, 30, 32);
        let head = train_head(&train_x, &train_t, &config).unwrap();
        let acc = accuracy(&head.predict(&test_x).unwrap(), &test_t);
        println!("{kind:?}: held-out accuracy {acc:.3}");
        assert!(acc > 0.95, "{kind:?}: {acc}");
    }
}

#[test]
fn batch_loss_is_the_weighted_mean_of_cross_entropies_by_hand() {
    // Rows: p = [0.25, 0.75] against target [0, 1] (ce = ln 4/3), p = [0.5, 0.5] against
    // [1, 0] (ce = ln 2).
    let log_probs = Tensor::from_slice(&[0.25f32, 0.75, 0.5, 0.5])
        .view([2, 2])
        .log();
    let targets = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).view([2, 2]);
    let (a, b) = ((4.0f64 / 3.0).ln(), 2.0f64.ln());
    let mean = batch_loss(&log_probs, &targets, None).double_value(&[]);
    assert!((mean - (a + b) / 2.0).abs() < 1e-6, "{mean}");
    let weights = Tensor::from_slice(&[1.0f32, 3.0]);
    let weighted = batch_loss(&log_probs, &targets, Some(&weights)).double_value(&[]);
    assert!((weighted - (a + 3.0 * b) / 4.0).abs() < 1e-6, "{weighted}");
}

fn rows_of(targets: &Tensor) -> Vec<[f32; 2]> {
    let flat = Vec::<f32>::try_from(targets.flatten(0, -1)).unwrap();
    flat.chunks(2).map(|p| [p[0], p[1]]).collect()
}

#[test]
fn row_weights_scale_like_repeated_rows_and_zero_weights_drop_rows() {
    let (train_x, train_t) = separable(400, 3);
    let (test_x, test_t) = separable(200, 4);
    let config = plain_head(HeadKind::Linear, 30, 32);
    let x = Matrix::from_tensor(&train_x).unwrap();
    let targets = rows_of(&train_t);
    // The same weight on every row is the unweighted mean.
    let plain = train_head_on(&x, &targets, &config).unwrap();
    let doubled = train_weighted_head_on(&x, &targets, &vec![2.0; 400], &config).unwrap();
    let (p, d) = (
        plain.predict(&test_x).unwrap(),
        doubled.predict(&test_x).unwrap(),
    );
    let diff = p
        .iter()
        .zip(&d)
        .map(|(a, b)| (a[1] - b[1]).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "uniform weights changed predictions by {diff}");
    // Flip the targets of every row with x0 above its mean: trained on all rows the head
    // learns the flips; with those rows at weight 0 it learns the task.
    let x0 = Vec::<f32>::try_from(train_x.narrow(1, 0, 1).flatten(0, -1)).unwrap();
    let flipped: Vec<bool> = x0.iter().map(|&v| v > 5.0).collect();
    let noisy: Vec<[f32; 2]> = targets
        .iter()
        .zip(&flipped)
        .map(|(t, &f)| if f { [t[1], t[0]] } else { *t })
        .collect();
    let weights: Vec<f32> = flipped.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect();
    let fooled = accuracy(
        &train_head_on(&x, &noisy, &config)
            .unwrap()
            .predict(&test_x)
            .unwrap(),
        &test_t,
    );
    let cleaned = accuracy(
        &train_weighted_head_on(&x, &noisy, &weights, &config)
            .unwrap()
            .predict(&test_x)
            .unwrap(),
        &test_t,
    );
    println!("flipped half: unweighted {fooled:.3}, flipped rows at weight 0 {cleaned:.3}");
    assert!(cleaned > 0.9, "{cleaned}");
    assert!(fooled < cleaned - 0.2, "{fooled} vs {cleaned}");
}

#[test]
fn bad_row_weights_are_refused_with_the_row() {
    let (train_x, train_t) = separable(10, 5);
    let x = Matrix::from_tensor(&train_x).unwrap();
    let targets = rows_of(&train_t);
    let config = plain_head(HeadKind::Linear, 1, 4);
    let mut weights = vec![1.0f32; 10];
    weights[7] = -1.0;
    let err = train_weighted_head_on(&x, &targets, &weights, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 7"), "{err}");
    let err = train_weighted_head_on(&x, &targets, &[0.0; 10], &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sum to 0"), "{err}");
    let err = train_weighted_head_on(&x, &targets, &[1.0; 9], &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("9 weights"), "{err}");
}
