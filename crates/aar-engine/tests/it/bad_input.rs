//! Bad model directories fail with errors that name the file or tensor at fault.

use std::path::Path;

use aar_engine::{EngineError, LoadOptions, Model};

use crate::support::fixtures;

/// A copy of fixture `name` in a temporary directory, for breaking.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

fn load(dir: &Path) -> EngineError {
    Model::load(dir, &LoadOptions::default()).unwrap_err()
}

#[test]
fn missing_files_are_named() {
    let dir = copy_of("qwen2");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load(dir.path());
    assert!(
        matches!(&err, EngineError::MissingFile { file, .. } if file.starts_with("model.safetensors")),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = load(dir.path());
    assert!(
        matches!(&err, EngineError::MissingFile { file, .. } if file == "config.json"),
        "{err}"
    );

    let err = load(&dir.path().join("nowhere"));
    assert!(matches!(err, EngineError::MissingFile { .. }), "{err}");
}

#[test]
fn a_missing_shard_of_a_sharded_checkpoint_is_named() {
    let dir = copy_of("llama");
    std::fs::remove_file(dir.path().join("model-00002-of-00006.safetensors")).unwrap();
    let err = load(dir.path());
    assert!(
        err.to_string().contains("model-00002-of-00006.safetensors"),
        "{err}"
    );
}

#[test]
fn an_unknown_architecture_is_named() {
    let dir = copy_of("qwen2");
    edit_config(dir.path(), |config| config["model_type"] = "gpt2".into());
    let err = load(dir.path());
    assert!(
        matches!(&err, EngineError::UnknownArchitecture { name, .. } if name == "gpt2"),
        "{err}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_its_file() {
    let dir = copy_of("qwen3");
    edit_config(dir.path(), |config| {
        config["intermediate_size"] = 100.into()
    });
    let err = load(dir.path());
    match &err {
        EngineError::ShapeMismatch {
            file,
            tensor,
            found,
            expected,
        } => {
            assert!(file.ends_with("model.safetensors"));
            assert!(tensor.contains("mlp"), "{tensor}");
            assert!(
                found.contains(&112) && expected.contains(&100),
                "{found:?} {expected:?}"
            );
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
}

#[test]
fn an_untied_head_missing_from_the_checkpoint_is_named() {
    let dir = copy_of("qwen2");
    edit_config(dir.path(), |config| {
        config["tie_word_embeddings"] = false.into()
    });
    let err = load(dir.path());
    assert!(
        matches!(&err, EngineError::MissingTensor { tensor, .. } if tensor == "lm_head.weight"),
        "{err}"
    );
}

#[test]
fn a_malformed_config_names_the_file() {
    let dir = copy_of("qwen2");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "qwen2", "hidden_size": "wide"}"#,
    )
    .unwrap();
    let err = load(dir.path());
    assert!(
        matches!(&err, EngineError::Json { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}

#[test]
fn out_of_vocabulary_ids_and_overlong_encoder_inputs_are_errors_not_aborts() {
    use aar_engine::{PaddingSide, TokenBatch};
    let decoder = Model::load(&fixtures().join("qwen2"), &LoadOptions::default()).unwrap();
    let batch = TokenBatch::pad(&[&[1, 2, 96]], 0, PaddingSide::Left, tch::Device::Cpu).unwrap();
    let err = decoder.lm_logits(&batch).unwrap_err();
    assert!(
        err.to_string().contains("outside the vocabulary of 96"),
        "{err}"
    );

    // The BERT fixture has 64 learned positions.
    let encoder = Model::load(&fixtures().join("bert"), &LoadOptions::default()).unwrap();
    let long = vec![5i64; 65];
    let batch = TokenBatch::pad(&[&long], 0, PaddingSide::Right, tch::Device::Cpu).unwrap();
    let err = encoder.label_log_probs(&batch, None, false).unwrap_err();
    assert!(
        err.to_string().contains("exceed the model's 64 positions"),
        "{err}"
    );
}

#[test]
fn a_truncated_safetensors_file_is_named() {
    let dir = copy_of("qwen2");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(dir.path());
    assert!(matches!(err, EngineError::BadWeights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
