//! Prompt construction and label tokens against the reference's construction in Python.

use aar_engine::EngineError;
use aar_engine::prompt::{
    ExampleText, Overflow, PromptEncoder, PromptFormat, PromptOptions, Template,
};
use serde_json::Value;

use crate::support::fixtures;

fn options(template: Template, max_tokens: usize, overflow: Overflow) -> PromptOptions {
    PromptOptions {
        template,
        format: PromptFormat::Base,
        max_tokens,
        overflow,
        label_tokens: true,
    }
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("tokenizer/prompts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &Value) -> Vec<i64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn comparison() -> ExampleText {
    ExampleText::Comparison {
        prompt: "What is 2+2?".into(),
        first: "4".into(),
        second: "5".into(),
    }
}

#[test]
fn base_prompts_and_label_tokens_match_the_reference_construction() {
    let path = fixtures().join("tokenizer/tokenizer.json");
    let reference = reference();
    let encoder =
        PromptEncoder::load(&path, options(Template::Comparison, 512, Overflow::Fail)).unwrap();
    assert_eq!(
        encoder.prompt_ids(0, &comparison()).unwrap(),
        ids(&reference["prompts"][0]["ids"])
    );
    let labels = encoder.label_token_ids().unwrap();
    assert_eq!(vec![labels[0]], ids(&reference["labels"]["A"]));
    assert_eq!(vec![labels[1]], ids(&reference["labels"]["B"]));

    let binary =
        PromptEncoder::load(&path, options(Template::Binary, 512, Overflow::Fail)).unwrap();
    let example = ExampleText::Binary {
        question: "Is water wet?".into(),
        choice: "yes".into(),
    };
    assert_eq!(
        binary.prompt_ids(1, &example).unwrap(),
        ids(&reference["prompts"][1]["ids"])
    );
    let labels = binary.label_token_ids().unwrap();
    assert_eq!(vec![labels[0]], ids(&reference["labels"]["False"]));
    assert_eq!(vec![labels[1]], ids(&reference["labels"]["True"]));
}

#[test]
fn truncation_cuts_the_body_and_always_keeps_label() {
    let path = fixtures().join("tokenizer/tokenizer.json");
    let full = ids(&reference()["prompts"][0]["ids"]);
    let encoder = PromptEncoder::load(
        &path,
        options(Template::Comparison, 10, Overflow::TruncateBody),
    )
    .unwrap();
    let label = encoder.encode_plain("Label:").unwrap();
    let got = encoder.prompt_ids(0, &comparison()).unwrap();
    assert_eq!(got.len(), 10);
    assert!(got.ends_with(&label), "{got:?} must end with {label:?}");
    assert_eq!(got[..10 - label.len()], full[..10 - label.len()]);
}

#[test]
fn a_prompt_longer_than_the_context_is_an_error_naming_the_example() {
    let path = fixtures().join("tokenizer/tokenizer.json");
    let encoder =
        PromptEncoder::load(&path, options(Template::Comparison, 10, Overflow::Fail)).unwrap();
    let err = encoder.prompt_ids(17, &comparison()).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::PromptTooLong {
                index: 17,
                max_tokens: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("example 17:"), "{err}");
    // Even truncation cannot help when "Label:" alone does not fit.
    let tiny = PromptEncoder::load(
        &path,
        options(Template::Comparison, 1, Overflow::TruncateBody),
    )
    .unwrap();
    assert!(matches!(
        tiny.prompt_ids(3, &comparison()),
        Err(EngineError::PromptTooLong { index: 3, .. })
    ));
}

#[test]
fn zero_shot_templates_use_their_claim_and_label_strings() {
    assert_eq!(
        Template::ComparisonZeroShot.label_strings(),
        [" True", " False"]
    );
    assert_eq!(Template::BinaryZeroShot.label_strings(), ["False", "True"]);
    let (body, suffix) = Template::ComparisonZeroShot.fill(&comparison()).unwrap();
    assert_eq!(
        format!("{body}{suffix}"),
        "Question: What is 2+2?\nAnswer A: 4\nAnswer B: 5\nClaim: Answer A is more helpful than Answer B.\nI think this Claim is (True or False):"
    );
    let binary = ExampleText::Binary {
        question: "Q".into(),
        choice: "C".into(),
    };
    let (body, suffix) = Template::BinaryZeroShot.fill(&binary).unwrap();
    assert_eq!(
        format!("{body}{suffix}"),
        "Question: Q\nProposed Answer: C\nClaim: This answer is correct.\nI think this claim is (True or False):"
    );
    assert!(matches!(
        Template::Binary.fill(&comparison()),
        Err(EngineError::InvalidInput(_))
    ));
}

/// A word-level tokenizer that knows "Label:" but not "A": the unknown token is one token,
/// yet it is not the label.
const WORD_LEVEL: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":null,"pre_tokenizer":{"type":"WhitespaceSplit"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"[UNK]":0,"Label:":1,"B":2,"False":3,"True":4},"unk_token":"[UNK]"}}"#;

#[test]
fn a_tokenizer_without_single_label_tokens_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, WORD_LEVEL).unwrap();
    let err =
        PromptEncoder::load(&path, options(Template::Comparison, 64, Overflow::Fail)).unwrap_err();
    assert!(
        matches!(&err, EngineError::LabelNotSingleToken { label, .. } if label == "A"),
        "{err}"
    );
    // The same tokenizer does have False/True.
    assert!(PromptEncoder::load(&path, options(Template::Binary, 64, Overflow::Fail)).is_ok());
    // And the byte-level BPE fixture splits " False" into more than one token? Either way
    // the error must name the label, never silently pick a prefix.
    let bpe = fixtures().join("tokenizer/tokenizer.json");
    let reference = reference();
    let zero_shot = PromptEncoder::load(
        &bpe,
        options(Template::ComparisonZeroShot, 64, Overflow::Fail),
    );
    let single = |label: &str| reference["labels"][label].as_array().unwrap().len() == 1;
    match zero_shot {
        Ok(encoder) => {
            assert!(single(" True") && single(" False"));
            assert_eq!(
                vec![encoder.label_token_ids().unwrap()[0]],
                ids(&reference["labels"][" True"])
            );
        }
        Err(EngineError::LabelNotSingleToken { label, .. }) => assert!(!single(&label)),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn chat_prompts_match_transformers_apply_chat_template() {
    let path = fixtures().join("tokenizer/tokenizer.json");
    let options = PromptOptions {
        format: PromptFormat::ChatMl {
            system: Some("You are a helpful assistant.".into()),
        },
        ..options(Template::Comparison, 512, Overflow::Fail)
    };
    let encoder = PromptEncoder::load(&path, options).unwrap();
    let expected = ids(&reference()["prompts"][2]["ids"]);
    assert_eq!(encoder.prompt_ids(0, &comparison()).unwrap(), expected);
    // Chat prompts are never truncated (the reference drops them): too long is an error.
    let short = PromptOptions {
        max_tokens: expected.len() - 1,
        ..encoder.options().clone()
    };
    let short = PromptEncoder::load(&path, short).unwrap();
    assert!(matches!(
        short.prompt_ids(4, &comparison()),
        Err(EngineError::PromptTooLong { index: 4, .. })
    ));
}
