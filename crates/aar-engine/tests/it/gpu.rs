//! CUDA checks, `#[ignore]`d (CI has no GPU); on a machine with one:
//! `AAR_GPU_TESTS=1 cargo test -p aar-engine --test it gpu -- --ignored`
//! (the variable loads the CUDA backend first, see `support.rs`): bf16 readout against the
//! fp32 CPU engine (itself at parity with transformers), and a bf16 LoRA step against PEFT.

use aar_engine::model::{LoadOptions, Model};
use aar_engine::models::TokenBatch;
use aar_engine::readout::{ReadoutOptions, read_labels};
use aar_engine::train::{AdamW, Loss, batch_loss, trainable_parameters};
use aar_engine::{LoraConfig, PaddingSide};
use tch::{Device, Kind};

use crate::support::{fixtures, read};

#[test]
#[ignore = "needs an NVIDIA GPU: AAR_GPU_TESTS=1 cargo test -p aar-engine --test it gpu -- --ignored"]
fn cuda_is_available_and_bf16_readout_matches_the_fp32_cpu_readout() {
    assert!(
        aar_engine::device::cuda_is_available(),
        "AAR_GPU_TESTS=1 but CUDA is not available"
    );
    let prompts: Vec<Vec<i64>> = vec![vec![3, 14, 15, 92, 65, 35, 89], vec![27, 18, 28], vec![8]];
    for name in ["llama", "qwen2", "qwen3"] {
        let dir = fixtures().join(name);
        let options = ReadoutOptions {
            batch_size: 3,
            padding: PaddingSide::Left,
            pad_id: 0,
            label_token_ids: Some([11, 42]),
        };
        let cpu = Model::load(&dir, &LoadOptions::default()).unwrap();
        let gpu_options = LoadOptions {
            device: Device::Cuda(0),
            ..LoadOptions::default()
        };
        let gpu = Model::load(&dir, &gpu_options).unwrap();
        let on_cpu = read_labels(&cpu, &prompts, &options).unwrap();
        let on_gpu = read_labels(&gpu, &prompts, &options).unwrap();
        let worst = on_cpu
            .probabilities
            .iter()
            .zip(&on_gpu.probabilities)
            .map(|(a, b)| (a[0] - b[0]).abs())
            .fold(0.0f32, f32::max);
        println!("{name}: bf16 CUDA vs fp32 CPU readout, max |p diff| = {worst:.3e}");
        assert!(worst < 0.03, "{name}: {worst}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: AAR_GPU_TESTS=1 cargo test -p aar-engine --test it gpu -- --ignored"]
fn a_bf16_lora_step_on_cuda_tracks_the_pytorch_fp32_step() {
    let root = fixtures();
    let options = LoadOptions {
        device: Device::Cuda(0),
        lora: Some(LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            rslora: true,
            ..LoraConfig::reference_decoder()
        }),
        ..LoadOptions::default()
    };
    let model = Model::load(&root.join("llama"), &options).unwrap();
    let init = read(&root.join("lora/init.safetensors"));
    let after = read(&root.join("lora/after.safetensors"));
    let batch_file = read(&root.join("lora/batch.safetensors"));
    let params = trainable_parameters(&model);
    for (name, param) in &params {
        let mut param = param.shallow_clone();
        tch::no_grad(|| param.copy_(&init[name]));
    }
    let cuda = Device::Cuda(0);
    let mask = batch_file["attention_mask"].to_device(cuda);
    let batch = TokenBatch {
        input_ids: batch_file["input_ids"].to_device(cuda),
        last_index: mask.cumsum(1, Kind::Int64).argmax(1, false),
        attention_mask: mask,
    };
    let targets = batch_file["targets"].to_device(cuda);
    let expected = Vec::<f64>::try_from(&batch_file["losses"]).unwrap();
    let shared = params
        .iter()
        .map(|(name, t)| (name.clone(), t.shallow_clone()))
        .collect();
    let mut optimizer = AdamW::new(shared, (0.9, 0.95), 1e-8, 0.01);
    // bf16 base weights cannot match fp32 to 1e-4: compare the losses within bf16 error and
    // the direction of the adapters' update (cosine with PyTorch's), not their last digits.
    for expected in expected {
        optimizer.zero_grad();
        let log_probs = model.label_log_probs(&batch, Some([5, 17]), true).unwrap();
        let loss = batch_loss(&log_probs, &targets, Loss::SoftCrossEntropy, 0.0).unwrap();
        loss.backward();
        optimizer.clip_grad_norm(1.0).unwrap();
        optimizer.step(1e-2).unwrap();
        let got = f64::try_from(&loss).unwrap();
        println!("CUDA bf16 loss {got:.5} vs PyTorch fp32 {expected:.5}");
        assert!(
            (got - expected).abs() / expected < 0.05,
            "{got} vs {expected}"
        );
    }
    let (mut dot, mut ours_sq, mut theirs_sq) = (0.0, 0.0, 0.0);
    for (name, param) in &params {
        let ours = param.to_device(Device::Cpu) - &init[name];
        let theirs = &after[name] - &init[name];
        dot += f64::try_from((&ours * &theirs).sum(Kind::Double)).unwrap();
        ours_sq += f64::try_from((&ours * &ours).sum(Kind::Double)).unwrap();
        theirs_sq += f64::try_from((&theirs * &theirs).sum(Kind::Double)).unwrap();
    }
    let cosine = dot / (ours_sq.sqrt() * theirs_sq.sqrt());
    println!(
        "CUDA bf16 adapter update vs PyTorch fp32: cosine {cosine:.4}, norms {:.4} vs {:.4}",
        ours_sq.sqrt(),
        theirs_sq.sqrt()
    );
    assert!(cosine > 0.95, "{cosine}");
}
