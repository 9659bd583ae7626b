//! aar's engine against PyTorch on the same shapes, side by side, in one run.
//!
//! ```text
//! cargo run --release -p aar-engine --example bench -- [--threads N] [--reps R] [--dir DIR] [--skip-qwen]
//! ```
//!
//! Workloads (random weights, written once by `bench_torch.py prepare` into DIR and loaded
//! by both stacks): the 6-layer MiniLM shape (hidden 384, 12 heads, intermediate 1536) at
//! batch 16 x seq 128, as a full fine-tuning AdamW step and as inference; and a forward pass
//! of a Qwen2-0.5B-shaped decoder (24 layers, hidden 896, 14/2 heads, vocab 151936) read at
//! the last position, batch 2 x seq 64. Each workload runs in its own process per stack so
//! that peak RSS is the workload's own; times are medians after one warm-up. With CUDA, both
//! stacks run bf16 weights on the GPU (`--script` points at `bench_torch.py` when the
//! binary runs away from its source tree, `AAR_PYTHON` at the python with torch).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use aar_engine::model::{LoadOptions, Model};
use aar_engine::models::{PaddingSide, TokenBatch};
use aar_engine::train::{AdamW, Loss, batch_loss, trainable_parameters};
use tch::{Device, Kind, Tensor};

struct Workload {
    name: &'static str,
    batch: i64,
    seq: i64,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "minilm-train",
        batch: 16,
        seq: 128,
    },
    Workload {
        name: "minilm-infer",
        batch: 16,
        seq: 128,
    },
    Workload {
        name: "qwen-forward",
        batch: 2,
        seq: 64,
    },
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let threads: i32 = value("--threads").map_or(Ok(2), |v| v.parse())?;
    let reps: usize = value("--reps").map_or(Ok(5), |v| v.parse())?;
    let dir = value("--dir").map_or_else(
        || std::env::temp_dir().join("aar-engine-bench"),
        PathBuf::from,
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("AAR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../.venv/bin/python"));
    let script =
        value("--script").map_or_else(|| manifest.join("examples/bench_torch.py"), PathBuf::from);

    if let Some(workload) = value("--workload") {
        let spec = WORKLOADS
            .iter()
            .find(|w| w.name == workload)
            .ok_or("unknown workload")?;
        return run_workload(spec, &dir, threads, reps);
    }

    std::fs::create_dir_all(&dir)?;
    let status = Command::new(&python)
        .arg(&script)
        .arg("prepare")
        .arg(&dir)
        .status()?;
    if !status.success() {
        return Err(format!("{} {} prepare failed", python.display(), script.display()).into());
    }
    let me = std::env::current_exe()?;
    println!("threads={threads} reps={reps} dir={}", dir.display());
    println!(
        "{:<14} {:>12} {:>12} {:>7} {:>10} {:>10}",
        "workload", "aar ex/s", "torch ex/s", "ratio", "aar MB", "torch MB"
    );
    for spec in &WORKLOADS {
        if spec.name == "qwen-forward" && args.iter().any(|a| a == "--skip-qwen") {
            continue;
        }
        let reps_here = if spec.name == "qwen-forward" {
            reps.min(3)
        } else {
            reps
        };
        let ours = Command::new(&me)
            .args([
                "--workload",
                spec.name,
                "--threads",
                &threads.to_string(),
                "--reps",
                &reps_here.to_string(),
                "--dir",
            ])
            .arg(&dir)
            .output()?;
        let theirs = Command::new(&python)
            .arg(&script)
            .args([
                spec.name,
                &dir.display().to_string(),
                &threads.to_string(),
                &reps_here.to_string(),
            ])
            .args([spec.batch.to_string(), spec.seq.to_string()])
            .output()?;
        let parse =
            |out: &std::process::Output| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text.lines().last().ok_or_else(|| {
                    format!("no output: {}", String::from_utf8_lossy(&out.stderr))
                })?;
                Ok(serde_json::from_str(line)?)
            };
        let (ours, theirs) = (parse(&ours)?, parse(&theirs)?);
        let rate = |v: &serde_json::Value| v["examples_per_s"].as_f64().unwrap_or(f64::NAN);
        let mem = |v: &serde_json::Value| v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<14} {:>12.2} {:>12.2} {:>7.3} {:>10.0} {:>10.0}",
            spec.name,
            rate(&ours),
            rate(&theirs),
            rate(&ours) / rate(&theirs),
            mem(&ours),
            mem(&theirs)
        );
    }
    Ok(())
}

/// Peak resident host memory of this process in MB (VmHWM), on CPU and CUDA alike.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median_seconds(
    reps: usize,
    mut run: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    run()?; // warm-up
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn run_workload(
    spec: &Workload,
    dir: &Path,
    threads: i32,
    reps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    tch::set_num_threads(threads);
    let device = aar_engine::device::best_device();
    let batch_of = |vocab: i64| -> Result<TokenBatch, Box<dyn std::error::Error>> {
        let ids = Tensor::randint(vocab, [spec.batch, spec.seq], (Kind::Int64, Device::Cpu));
        let rows: Vec<Vec<i64>> = (0..spec.batch)
            .map(|r| Vec::<i64>::try_from(ids.get(r)))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&[i64]> = rows.iter().map(Vec::as_slice).collect();
        Ok(TokenBatch::pad(&refs, 0, PaddingSide::Right, device)?)
    };
    let seconds = match spec.name {
        "minilm-train" => {
            let options = LoadOptions {
                device,
                full_finetune: true,
                ..LoadOptions::default()
            };
            let model = Model::load(&dir.join("minilm"), &options)?;
            let batch = batch_of(30522)?;
            let targets = Tensor::randint(2, [spec.batch], (Kind::Int64, device))
                .one_hot(2)
                .to_kind(Kind::Float);
            let mut optimizer = AdamW::new(trainable_parameters(&model), (0.9, 0.95), 1e-8, 0.01);
            median_seconds(reps, || {
                optimizer.zero_grad();
                let log_probs = model.label_log_probs(&batch, None, true)?;
                let loss = batch_loss(&log_probs, &targets, Loss::HardCrossEntropy, 0.0)?;
                loss.f_backward()?;
                optimizer.clip_grad_norm(1.0)?;
                optimizer.step(1e-5)?;
                if let Device::Cuda(index) = device {
                    tch::Cuda::synchronize(index as i64);
                }
                Ok(())
            })?
        }
        "minilm-infer" => {
            let model = Model::load(
                &dir.join("minilm"),
                &LoadOptions {
                    device,
                    ..LoadOptions::default()
                },
            )?;
            let batch = batch_of(30522)?;
            median_seconds(reps, || {
                let probs = tch::no_grad(|| model.label_log_probs(&batch, None, false))?.exp();
                let _ = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))?;
                Ok(())
            })?
        }
        "qwen-forward" => {
            let model = Model::load(
                &dir.join("qwen05b"),
                &LoadOptions {
                    device,
                    ..LoadOptions::default()
                },
            )?;
            let batch = batch_of(151_936)?;
            median_seconds(reps, || {
                let probs = tch::no_grad(|| model.label_log_probs(&batch, Some([32, 33]), false))?;
                let _ = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))?;
                Ok(())
            })?
        }
        other => return Err(format!("unknown workload {other}").into()),
    };
    println!(
        "{}",
        serde_json::json!({
            "stack": "aar", "workload": spec.name, "examples_per_s": spec.batch as f64 / seconds,
            "median_s": seconds, "peak_rss_mb": peak_rss_mb(), "threads": threads,
            "device": format!("{device:?}"),
        })
    );
    Ok(())
}
