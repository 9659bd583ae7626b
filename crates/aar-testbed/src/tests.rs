#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

use serde_json::json;

use crate::baselines::write_json_atomic;
use crate::features::Vocabulary;
use crate::method::{MethodSpec, zero_shot_labels};
use crate::report::BaselineTable;
use crate::text_tasks::{TextItem, clean_claim, dedup, split_longest};

#[test]
fn table_pgr_is_hand_checkable() {
    // W = 0.6 on every seed, S = 0.8 on every seed; vanilla 0.70, 0.72, 0.68:
    // PGR per seed 0.5, 0.6, 0.4 -> mean 0.5, SE = std(ddof=1)/sqrt(3) = 0.1/sqrt(3).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for seed in 0..3u64 {
        write_json_atomic(
            &root.join(format!("t_weak_artifacts/bow_e1/seed_{seed}.json")),
            &json!({"weak_acc": 0.6, "soft_labels": [], "eval": {"test": {"accuracy": 0.6}, "transfer": {"accuracy": 0.55}}}),
        )
        .unwrap();
        write_json_atomic(
            &root.join(format!("t_train_ceiling/m_e1/seed_{seed}.json")),
            &json!({"strong_acc": 0.8, "eval": {"test": {"accuracy": 0.8}, "transfer": {"accuracy": 0.5}}}),
        )
        .unwrap();
        let acc = [0.70, 0.72, 0.68][seed as usize];
        write_json_atomic(
            &root.join(format!("t_vanilla_w2s/m_bow_e1/seed_{seed}.json")),
            &json!({"transfer_acc": acc, "eval": {"test": {"accuracy": acc}, "transfer": {"accuracy": 0.6}}}),
        )
        .unwrap();
    }
    let table = BaselineTable::read(root, &[0, 1, 2]).unwrap();
    let task = &table.tasks[0];
    let (w, s) = task.baseline("test").unwrap();
    assert!((w.mean - 0.6).abs() < 1e-12 && (s.mean - 0.8).abs() < 1e-12);
    let pgr = task
        .method("vanilla_w2s")
        .unwrap()
        .split("test")
        .unwrap()
        .pgr
        .unwrap();
    assert!((pgr.mean - 0.5).abs() < 1e-12, "{pgr:?}");
    assert!(
        (pgr.se.unwrap() - 0.1 / 3f64.sqrt()).abs() < 1e-12,
        "{pgr:?}"
    );
    // On the transfer split S < W: no PGR, not a made-up number.
    let transfer = task
        .method("vanilla_w2s")
        .unwrap()
        .split("transfer")
        .unwrap();
    assert!(transfer.pgr.is_none());
    assert!(table.to_string().contains("n/a (S<=W)"));
}

#[test]
fn zero_shot_keeps_one_true_choice_per_group_and_balances() {
    // Group g holds rows 0..3: only row 1 (highest prior) stays true. Singletons keep
    // prior > 0.5. Labels: [0,1,0, 1,1,1,1, 0] -> ones 5, zeros 3; cap = floor(3*1.1) = 3,
    // so the two least confident ones (rows 6: 0.55, 5: 0.6) are dropped.
    let prior = [0.7, 0.9, 0.2, 0.8, 0.95, 0.6, 0.55, 0.1];
    let groups: Vec<String> = ["g", "g", "g", "a", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (kept, labels) = zero_shot_labels(&prior, &groups, 1.1);
    assert_eq!(kept, [0, 1, 2, 3, 4, 7]);
    assert_eq!(labels, [false, true, false, true, true, false]);
}

#[test]
fn method_specs_round_trip_and_reject_unknown_fields() {
    for spec in MethodSpec::baselines() {
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<MethodSpec>(&text).unwrap(), spec);
    }
    let with_head: MethodSpec = serde_json::from_str(
        r#"{"method": "vanilla", "head": {"hidden": 64, "epochs": 5, "batch_size": 16, "learning_rate": 0.01, "weight_decay": 0.0}}"#,
    )
    .unwrap();
    assert_eq!(with_head.head.unwrap().hidden, 64);
    assert!(serde_json::from_str::<MethodSpec>(r#"{"method": "oracle"}"#).is_err());
}

#[test]
fn bag_of_words_counts_documents_not_tokens() {
    let texts = vec!["Good good film".to_string(), "bad film".to_string()];
    let vocab = Vocabulary::fit(&texts, 2);
    assert_eq!(vocab.len(), 1); // only "film" is in two texts
    let m = vocab
        .transform(&["a FILM".to_string(), "nothing".to_string()])
        .unwrap();
    assert_eq!((m.row(0), m.row(1)), (&[1.0][..], &[0.0][..]));
}

fn item(id: &str, text: &str, label: bool) -> TextItem {
    TextItem {
        id: id.into(),
        text: text.into(),
        label,
        subset: "s".into(),
    }
}

#[test]
fn sources_are_cleaned_deduplicated_and_split_by_length() {
    assert_eq!(
        clean_claim(
            "On June 2017, the following claim was made: Paris is in France.\nQ: Was this claim true or false?"
        ),
        "Paris is in France."
    );
    let items = vec![
        item("1", "a b", true),
        item("2", "A  b", true),
        item("3", "x", true),
        item("4", "x", false),
        item("5", "c d e", false),
    ];
    let kept: Vec<String> = dedup(items).into_iter().map(|i| i.id).collect();
    assert_eq!(kept, ["1", "5"]); // "A b" repeats "a b"; "x" has both labels
    let many: Vec<TextItem> = (0..20)
        .map(|i| item(&format!("{i:02}"), &"w ".repeat(i + 1), i % 2 == 0))
        .collect();
    let (short, long) = split_longest(many);
    assert_eq!((short.len(), long.len()), (17, 3));
    assert!(long.iter().all(|i| i.subset.ends_with("/longest")));
}

#[test]
fn preset_files_round_trip_and_name_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preset.json");
    let cpu = crate::Preset::named("cpu").unwrap();
    std::fs::write(&path, serde_json::to_string(&cpu).unwrap()).unwrap();
    assert_eq!(crate::Preset::from_file(&path).unwrap(), cpu);

    let mut escaping = serde_json::to_value(&cpu).unwrap();
    escaping["tasks"][1]["name"] = json!("../sarcasm");
    std::fs::write(&path, escaping.to_string()).unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("tasks[1].name"), "{message}");

    let mut underscore = serde_json::to_value(&cpu).unwrap();
    underscore["tasks"][0]["name"] = json!("sentiment_long");
    std::fs::write(&path, underscore.to_string()).unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("tasks[0].name"), "{message}");

    let mut empty_split = serde_json::to_value(&cpu).unwrap();
    empty_split["tasks"][0]["sizes"]["test"] = json!(0);
    std::fs::write(&path, empty_split.to_string()).unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("tasks[0].sizes"), "{message}");

    std::fs::write(&path, "{\"name\": \"x\"}").unwrap();
    let message = crate::Preset::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("preset.json"), "{message}");
}

#[test]
fn agent_specs_with_unbounded_training_cost_are_named() {
    let ok: MethodSpec = serde_json::from_value(json!({"method": "vanilla"})).unwrap();
    assert!(ok.check_cost_bounds().is_ok());
    let head = |epochs: usize, hidden: i64| {
        json!({"method": "vanilla", "head": {"hidden": hidden, "epochs": epochs, "batch_size": 32,
            "learning_rate": 0.01, "weight_decay": 0.0}})
    };
    let slow: MethodSpec = serde_json::from_value(head(1_000_000_000, 0)).unwrap();
    assert!(
        slow.check_cost_bounds()
            .unwrap_err()
            .contains("head.epochs")
    );
    let wide: MethodSpec = serde_json::from_value(head(10, 1 << 30)).unwrap();
    assert!(
        wide.check_cost_bounds()
            .unwrap_err()
            .contains("head.hidden")
    );
    let fine: MethodSpec = serde_json::from_value(head(50, 64)).unwrap();
    assert!(fine.check_cost_bounds().is_ok());
}
