//! GGUF → HF conversion against the `gguf` package's dequantization (llama.cpp's reader).

use std::collections::BTreeMap;
use std::path::Path;

use aar_assets::gguf::{Architecture, convert_gguf_to_hf, unpermute_rotary_rows};
use candle_core::{Device, Tensor};

use crate::{fixture, run_python};

fn load(path: &Path) -> BTreeMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect()
}

fn check_against_reference(arch: &str, expected_arch: Architecture) {
    let dir = tempfile::tempdir().unwrap();
    run_python(&[&fixture("make_tiny_gguf.py"), dir.path().to_str().unwrap()]);
    let out = dir.path().join(format!("{arch}-hf"));
    std::fs::create_dir_all(&out).unwrap();
    let summary = convert_gguf_to_hf(&dir.path().join(format!("{arch}.gguf")), &out, None).unwrap();
    assert_eq!(summary.architecture, expected_arch);

    let ours = load(&out.join("model.safetensors"));
    let reference = load(&dir.path().join(format!("{arch}_reference.safetensors")));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    for (name, expected) in &reference {
        let actual = &ours[name];
        assert_eq!(actual.dims(), expected.dims(), "{name}");
        let a = actual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let e = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a
            .iter()
            .zip(&e)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * scale,
            "{arch} {name}: max abs diff {worst} (scale {scale})"
        );
    }

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 256);
    assert_eq!(config["num_attention_heads"], 4);
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["intermediate_size"], 512);
    assert_eq!(config["num_hidden_layers"], 1);
    assert_eq!(config["vocab_size"], 262);
    assert_eq!(config["tie_word_embeddings"], arch == "llama");
    assert_eq!(summary.tied_embeddings, arch == "llama");
}

#[test]
fn llama_gguf_converts_like_the_gguf_reference_with_rotary_rows_unpermuted() {
    check_against_reference("llama", Architecture::Llama);
}

#[test]
fn qwen2_gguf_converts_like_the_gguf_reference_with_biases_and_untied_head() {
    check_against_reference("qwen2", Architecture::Qwen2);
}

#[test]
fn unpermute_restores_hugging_face_row_order() {
    // One head of size 4 over one column: llama.cpp stores rows [0, 2, 1, 3].
    let gguf_rows = [0.0, 2.0, 1.0, 3.0];
    assert_eq!(
        unpermute_rotary_rows(&gguf_rows, &[4, 1], 1).unwrap(),
        vec![0.0, 1.0, 2.0, 3.0]
    );
    // Two heads of size 4: each head is un-permuted on its own.
    let two = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
    assert_eq!(
        unpermute_rotary_rows(&two, &[8, 1], 2).unwrap(),
        (0..8).map(|i| i as f32).collect::<Vec<_>>()
    );
    assert!(unpermute_rotary_rows(&two, &[8, 1], 3).is_none());
}

#[test]
fn tokenizer_built_from_gguf_vocab_encodes_like_hand_checked_ids_in_hf_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    run_python(&[&fixture("make_tiny_gguf.py"), dir.path().to_str().unwrap()]);
    let out = dir.path().join("hf");
    std::fs::create_dir_all(&out).unwrap();
    convert_gguf_to_hf(&dir.path().join("llama.gguf"), &out, None).unwrap();
    // Vocabulary (see make_tiny_gguf.py): 256 byte symbols, then Ġt=256, he=257,
    // Ġthe=258, 12=259, <|endoftext|>=260, <|im_start|>=261 (control).
    let script = r#"
import sys, json
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
out = {}
for text in ["the the", "12", "<|im_start|>the"]:
    enc = tok.encode(text)
    out[text] = {"ids": enc.ids, "decoded": tok.decode(enc.ids, skip_special_tokens=False)}
print(json.dumps(out))
"#;
    let printed = run_python(&["-c", script, out.join("tokenizer.json").to_str().unwrap()]);
    let result: serde_json::Value = serde_json::from_str(&printed).unwrap();
    // "the" has no Ġ: t + he; " the" merges all the way to Ġthe.
    let t = bytes_to_unicode_id(b't');
    assert_eq!(result["the the"]["ids"], serde_json::json!([t, 257, 258]));
    assert_eq!(result["the the"]["decoded"], "the the");
    // smollm pre-tokenizer: digits one by one, so the "1 2" merge never applies.
    assert_eq!(
        result["12"]["ids"],
        serde_json::json!([bytes_to_unicode_id(b'1'), bytes_to_unicode_id(b'2')])
    );
    // Control tokens are matched whole.
    assert_eq!(
        result["<|im_start|>the"]["ids"],
        serde_json::json!([261, t, 257])
    );

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(config["bos_token"], "<|endoftext|>");
}

/// Id of a printable ASCII byte in GPT-2's byte-level table: printable ASCII comes first, from '!'.
fn bytes_to_unicode_id(byte: u8) -> u64 {
    u64::from(byte - b'!')
}
