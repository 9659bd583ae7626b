//! Frozen features: parity of an intermediate layer with transformers, the disk cache, heads.

use aar_engine::Pooling;
use aar_engine::features::{
    FeatureSpec, HeadConfig, HeadKind, HeadLoss, cached_features, train_head,
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

#[test]
fn linear_and_mlp_heads_learn_a_separable_task() {
    let (train_x, train_t) = separable(400, 1);
    let (test_x, test_t) = separable(200, 2);
    for kind in [HeadKind::Linear, HeadKind::Mlp { hidden: 16 }] {
        let config = HeadConfig {
            kind,
            epochs: 30,
            batch_size: 32,
            learning_rate: 1e-2,
            weight_decay: 0.0,
            l2: 0.0,
            seed: 0,
            loss: HeadLoss::default(),
        };
        let head = train_head(&train_x, &train_t, &config).unwrap();
        let acc = accuracy(&head.predict(&test_x).unwrap(), &test_t);
        println!("{kind:?}: held-out accuracy {acc:.3}");
        assert!(acc > 0.95, "{kind:?}: {acc}");
    }
}
