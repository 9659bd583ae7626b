use std::collections::BTreeMap;

use aar_core::{Label, TaskFormat};

use crate::*;

fn parse_err(text: &[u8], policy: LabelPolicy) -> String {
    match parse_jsonl(text, "data/test.jsonl", policy) {
        Ok(f) => panic!("expected an error, parsed {} rows", f.len()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_both_formats_and_keeps_extra_fields() {
    let comparison =
        br#"{"prompt":"p","first":"a","second":"b","label":"B","subset":"s1","difficulty":3}
{"prompt":"q","first":"c","second":"d","label":"A","subset":"s2"}
"#;
    let file = parse_jsonl(comparison, "c.jsonl", LabelPolicy::Required).unwrap();
    assert_eq!(file.format(), TaskFormat::Comparison);
    assert_eq!(file.labels().unwrap(), vec![Label::One, Label::Zero]);
    assert_eq!(file.examples()[0].subset(), Some("s1"));
    assert_eq!(file.examples()[0].extra["difficulty"], 3);

    let binary = b"{\"question\":\"1+1?\",\"choice\":\"2\",\"label\":true,\"consistency_id\":7}\n";
    let file = parse_jsonl(binary, "b.jsonl", LabelPolicy::Required).unwrap();
    assert_eq!(file.format(), TaskFormat::Binary);
    assert_eq!(file.labels().unwrap(), vec![Label::One]);
}

#[test]
fn last_line_without_newline_and_crlf_are_accepted() {
    let text = b"{\"question\":\"q\",\"choice\":\"c\",\"label\":false}\r\n{\"question\":\"r\",\"choice\":\"d\",\"label\":true}";
    let file = parse_jsonl(text, "x", LabelPolicy::Required).unwrap();
    assert_eq!(file.len(), 2);
}

#[test]
fn bad_input_names_file_line_and_field() {
    let cases: &[(&[u8], LabelPolicy, &str)] = &[
        (b"{\"question\":\"q\",\"choice\":\"c\",\"label\":true}\n{oops\n", LabelPolicy::Required, "data/test.jsonl:2: not valid JSON"),
        (b"{\"question\":\"q\",\"label\":true}\n", LabelPolicy::Required, "data/test.jsonl:1: missing field `choice`"),
        (b"{\"question\":\"q\",\"choice\":5,\"label\":true}\n", LabelPolicy::Required, "data/test.jsonl:1: field `choice` must be a string, found a number"),
        (b"{\"question\":\"q\",\"choice\":\"c\",\"label\":\"yes\"}\n", LabelPolicy::Required, "data/test.jsonl:1: field `label` must be true or false, found a string"),
        (b"{\"prompt\":\"p\",\"first\":\"a\",\"second\":\"b\",\"label\":\"C\"}\n", LabelPolicy::Required, "data/test.jsonl:1: field `label` must be \"A\" or \"B\", found \"C\""),
        (b"{\"prompt\":\"p\",\"first\":\"a\",\"second\":\"b\",\"label\":\"A\"}\n{\"question\":\"q\",\"choice\":\"c\",\"label\":true}\n", LabelPolicy::Required, "data/test.jsonl:2: row is binary but the file's first row is comparison"),
        (b"", LabelPolicy::Required, "data/test.jsonl: no examples"),
        (b"{\"question\":\"q\xff\",\"choice\":\"c\",\"label\":true}\n", LabelPolicy::Required, "data/test.jsonl:1: not valid UTF-8 (byte 14"),
        (b"{\"question\":\"q\",\"choice\":\"c\",\"label\":true}\n\n{\"question\":\"q\",\"choice\":\"c\",\"label\":true}\n", LabelPolicy::Required, "data/test.jsonl:2: blank line"),
        (b"[1,2]\n", LabelPolicy::Required, "data/test.jsonl:1: expected a JSON object"),
        (b"{\"text\":\"t\"}\n", LabelPolicy::Required, "data/test.jsonl:1: no input fields"),
        (b"{\"prompt\":\"p\",\"question\":\"q\"}\n", LabelPolicy::Required, "data/test.jsonl:1: ambiguous row"),
        (b"{\"question\":\"q\",\"choice\":\"c\"}\n", LabelPolicy::Required, "data/test.jsonl:1: missing field `label`"),
        (b"{\"question\":\"q\",\"choice\":\"c\",\"label\":false}\n", LabelPolicy::Forbidden, "data/test.jsonl:1: unexpected field `label`"),
        (b"{\"question\":\"q\",\"choice\":\"c\",\"label\":null}\n", LabelPolicy::Required, "field `label` must be true or false, found null"),
    ];
    for (text, policy, expected) in cases {
        let message = parse_err(text, *policy);
        assert!(
            message.contains(expected),
            "input {:?}\n  message: {message}\n  expected to contain: {expected}",
            String::from_utf8_lossy(text)
        );
    }
}

fn binary_file(rows: &[&str]) -> TaskFile {
    let text = rows.join("\n");
    parse_jsonl(text.as_bytes(), "fixture", LabelPolicy::Required).unwrap()
}

#[test]
fn labeled_task_round_trips_and_agent_copy_holds_only_allow_listed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server/math");
    let agent_dir = dir.path().join("agent/math");

    // `secret_hint` is a field nobody declared an input: it must never reach an agent.
    let row = |q: &str, label: bool| {
        format!(
            r#"{{"question":"{q}","choice":"42","label":{label},"subset":"s","difficulty":"hard","consistency_id":3,"secret_hint":"the answer is {label}"}}"#
        )
    };
    let mut splits = BTreeMap::new();
    splits.insert(
        Split::TrainLabel,
        binary_file(&[&row("a", true), &row("b", false)]),
    );
    splits.insert(
        Split::TrainUnlabel,
        binary_file(&[&row("c", true), &row("d", false)]),
    );
    splits.insert(
        Split::Test,
        binary_file(&[&row("e", false), &row("f", true)]),
    );
    splits.insert(Split::TestPrivate, binary_file(&[&row("g", true)]));
    LabeledTask::write(&server_dir, &splits).unwrap();

    let task = LabeledTask::load(&server_dir).unwrap();
    assert_eq!(task.format(), TaskFormat::Binary);
    for (split, file) in &splits {
        assert_eq!(
            task.split(*split).unwrap(),
            file,
            "split {} changed in the round trip",
            split.name()
        );
    }

    write_agent_copy(&task, &agent_dir).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&agent_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["test.jsonl", "test_private.jsonl", "train_unlabel.jsonl"]
    );

    for name in &names {
        let raw = std::fs::read_to_string(agent_dir.join(name)).unwrap();
        assert!(!raw.contains("label"), "{name} mentions a label: {raw}");
        assert!(
            !raw.contains("secret_hint"),
            "{name} leaks an unknown field: {raw}"
        );
        for line in raw.lines() {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).unwrap();
            for key in object.keys() {
                let allowed = ["question", "choice"].contains(&key.as_str())
                    || AGENT_EXTRA_FIELDS.contains(&key.as_str());
                assert!(allowed, "{name}: field `{key}` is not on the allow-list");
            }
            assert_eq!(
                object["consistency_id"], 3,
                "group ids are inputs and must be kept"
            );
        }
        // Agent copies load as unlabeled data.
        let reloaded = read_task_file(&agent_dir.join(name), LabelPolicy::Forbidden).unwrap();
        let original = &splits[&Split::ALL
            .into_iter()
            .find(|s| s.file_name() == name)
            .unwrap()];
        assert_eq!(reloaded.len(), original.len());
    }
}

#[test]
fn task_dir_errors_name_the_missing_or_mismatched_split() {
    let dir = tempfile::tempdir().unwrap();
    let binary = binary_file(&[r#"{"question":"q","choice":"c","label":true}"#]);
    let comparison = parse_jsonl(
        br#"{"prompt":"p","first":"a","second":"b","label":"A"}"#,
        "c",
        LabelPolicy::Required,
    )
    .unwrap();
    let mut splits = BTreeMap::new();
    splits.insert(Split::TrainLabel, binary.clone());
    splits.insert(Split::TrainUnlabel, binary.clone());
    LabeledTask::write(dir.path(), &splits).unwrap();
    let err = LabeledTask::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("missing split file test.jsonl"), "{err}");

    splits.insert(Split::Test, comparison);
    LabeledTask::write(dir.path(), &splits).unwrap();
    let err = LabeledTask::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("split test.jsonl is comparison but the task is binary"),
        "{err}"
    );
}
