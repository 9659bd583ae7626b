//! Forward parity with transformers on tiny random models of every architecture.

use aar_engine::{LoadOptions, Model, TokenBatch};

use crate::support::{fixtures, max_abs_diff, read, real_positions};

const TOLERANCE: f64 = 1e-4;

fn batch_from(
    reference: &std::collections::HashMap<String, tch::Tensor>,
    side: &str,
) -> TokenBatch {
    let input_ids = reference[&format!("{side}_input_ids")].shallow_clone();
    let attention_mask = reference[&format!("{side}_attention_mask")].shallow_clone();
    let last_index = attention_mask.cumsum(1, tch::Kind::Int64).argmax(1, false);
    TokenBatch {
        input_ids,
        attention_mask,
        last_index,
    }
}

/// Compares logits at real (unpadded) positions; padded positions have no defined value.
fn check_decoder(name: &str) {
    let dir = fixtures().join(name);
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let reference = read(&dir.join("reference.safetensors"));
    for side in ["left", "right"] {
        let batch = batch_from(&reference, side);
        let ours = model.lm_logits(&batch).unwrap();
        let theirs = &reference[&format!("{side}_logits")];
        let mut worst: f64 = 0.0;
        for row in 0..batch.input_ids.size()[0] {
            let real = real_positions(&batch.attention_mask, row);
            let a = ours.get(row).index_select(0, &real);
            let b = theirs.get(row).index_select(0, &real);
            worst = worst.max(max_abs_diff(&a, &b));
        }
        println!("{name} {side}-padded: max |logit diff| = {worst:.3e}");
        assert!(worst < TOLERANCE, "{name} {side}: {worst}");
    }
}

#[test]
fn llama_logits_match_transformers_with_left_and_right_padding_from_a_sharded_checkpoint() {
    check_decoder("llama");
}

#[test]
fn qwen2_logits_match_transformers_with_qkv_bias_gqa_and_tied_embeddings() {
    check_decoder("qwen2");
}

#[test]
fn qwen3_logits_match_transformers_with_qk_norm_and_explicit_head_dim() {
    check_decoder("qwen3");
}

#[test]
fn bert_hidden_states_match_transformers_with_padding_masks() {
    let dir = fixtures().join("bert");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let reference = read(&dir.join("reference.safetensors"));
    for side in ["left", "right"] {
        let batch = batch_from(&reference, side);
        let ours = tch::no_grad(|| model.hidden_states(&batch, None, false)).unwrap();
        let theirs = &reference[&format!("{side}_hidden")];
        let mut worst: f64 = 0.0;
        for row in 0..batch.input_ids.size()[0] {
            let real = real_positions(&batch.attention_mask, row);
            worst = worst.max(max_abs_diff(
                &ours.get(row).index_select(0, &real),
                &theirs.get(row).index_select(0, &real),
            ));
        }
        println!("bert {side}-padded: max |hidden diff| = {worst:.3e}");
        assert!(worst < TOLERANCE, "bert {side}: {worst}");
    }
}

#[test]
fn left_padding_gives_the_logits_of_the_unpadded_sequence() {
    let dir = fixtures().join("qwen3");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let long: Vec<i64> = vec![3, 14, 15, 92, 65, 35, 89];
    let short: Vec<i64> = vec![27, 18, 28];
    let alone = TokenBatch::pad(
        &[&short],
        0,
        aar_engine::PaddingSide::Left,
        tch::Device::Cpu,
    )
    .unwrap();
    let padded = TokenBatch::pad(
        &[&long, &short],
        0,
        aar_engine::PaddingSide::Left,
        tch::Device::Cpu,
    )
    .unwrap();
    let alone_logits = model.lm_logits(&alone).unwrap().get(0);
    let padded_logits = model.lm_logits(&padded).unwrap().get(1).narrow(0, 4, 3);
    assert!(max_abs_diff(&alone_logits, &padded_logits) < TOLERANCE);
}

#[test]
fn label_readout_is_the_two_way_softmax_of_the_reference_label_logits() {
    let dir = fixtures().join("llama");
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let reference = read(&dir.join("reference.safetensors"));
    let ids = &reference["right_input_ids"];
    let mask = &reference["right_attention_mask"];
    let label_ids = [11i64, 42];
    let prompts: Vec<Vec<i64>> = (0..ids.size()[0])
        .map(|row| {
            let real = real_positions(mask, row);
            Vec::<i64>::try_from(ids.get(row).index_select(0, &real)).unwrap()
        })
        .collect();
    for side in [
        aar_engine::PaddingSide::Left,
        aar_engine::PaddingSide::Right,
    ] {
        let options = aar_engine::readout::ReadoutOptions {
            batch_size: 2,
            padding: side,
            pad_id: 0,
            label_token_ids: Some(label_ids),
        };
        let readout = aar_engine::readout::read_labels(&model, &prompts, &options).unwrap();
        for (row, prompt) in prompts.iter().enumerate() {
            let logits = reference["right_logits"]
                .get(row as i64)
                .get(prompt.len() as i64 - 1);
            let a = f64::try_from(logits.get(label_ids[0])).unwrap();
            let b = f64::try_from(logits.get(label_ids[1])).unwrap();
            let expected_b = 1.0 / (1.0 + (a - b).exp());
            let got = readout.probabilities[row];
            assert!(
                (f64::from(got[1]) - expected_b).abs() < 1e-5,
                "{got:?} vs {expected_b}"
            );
            assert!((f64::from(got[0] + got[1]) - 1.0).abs() < 1e-6);
            assert_eq!(readout.predictions[row], usize::from(expected_b > 0.5));
        }
    }
}
