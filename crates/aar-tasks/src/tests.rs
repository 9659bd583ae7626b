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

    let key = IdKey::from_bytes([7; 32]);
    write_agent_copy_with_key(&task, &agent_dir, &key).unwrap();
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
                object["consistency_id"],
                key.opaque("consistency_id", &serde_json::json!(3)),
                "group ids are inputs and must be kept, as opaque ids"
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

/// A labeled task whose rows carry source-ordered ids, several rows per group.
fn grouped_task(dir: &std::path::Path) -> LabeledTask {
    let rows = |split: &str, n: usize| -> TaskFile {
        let lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"question":"{split} q{i}","choice":"c","label":{},"id":"rt-{i:05}","consistency_id":"film-{}","group_id":{}}}"#,
                    i % 2 == 0,
                    i / 3,
                    i / 3
                )
            })
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        binary_file(&refs)
    };
    let mut splits = BTreeMap::new();
    splits.insert(Split::TrainLabel, rows("tl", 12));
    splits.insert(Split::TrainUnlabel, rows("tu", 30));
    splits.insert(Split::Test, rows("te", 24));
    splits.insert(Split::TestPrivate, rows("tp", 18));
    LabeledTask::write(dir, &splits).unwrap();
    LabeledTask::load(dir).unwrap()
}

fn read_rows(path: &std::path::Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn agent_copy_ids_are_opaque_keyed_and_keep_groups_and_row_order() {
    let dir = tempfile::tempdir().unwrap();
    let task = grouped_task(&dir.path().join("labeled"));
    let (key_a, key_b) = (IdKey::from_bytes([1; 32]), IdKey::from_bytes([2; 32]));
    let (copy_a, copy_b) = (dir.path().join("a"), dir.path().join("b"));
    write_agent_copy_with_key(&task, &copy_a, &key_a).unwrap();
    write_agent_copy_with_key(&task, &copy_b, &key_b).unwrap();

    for split in AGENT_SPLITS {
        let labeled = task.split(*split).unwrap().examples();
        let a = read_rows(&copy_a.join(split.file_name()));
        let b = read_rows(&copy_b.join(split.file_name()));
        assert_eq!(a.len(), labeled.len());
        let mut groups: BTreeMap<String, String> = BTreeMap::new();
        let mut ids = Vec::new();
        for ((row, other), source) in a.iter().zip(&b).zip(labeled) {
            // Same rows in the same order: the server scores predictions by position.
            let Inputs::Binary { question, .. } = &source.inputs else {
                panic!("binary rows")
            };
            assert_eq!(row["question"], question.as_str(), "{split:?} reordered");
            for field in ["id", "consistency_id", "group_id"] {
                assert_ne!(row[field], source.extra[field], "{field} kept as labeled");
                let id = row[field].as_str().unwrap();
                assert!(
                    id.len() == 17
                        && id.starts_with('g')
                        && id[1..].bytes().all(|c| c.is_ascii_hexdigit()),
                    "{id} is not g + 16 hex digits"
                );
                assert_ne!(row[field], other[field], "two keys gave one id to {field}");
            }
            // One labeled group, one opaque group, both ways.
            let group = source.extra["consistency_id"].as_str().unwrap().to_owned();
            let opaque = row["consistency_id"].as_str().unwrap().to_owned();
            assert_eq!(groups.entry(opaque).or_insert(group.clone()), &group);
            ids.push(row["id"].as_str().unwrap().to_owned());
        }
        let distinct_groups: std::collections::BTreeSet<_> = labeled
            .iter()
            .map(|e| e.extra["consistency_id"].to_string())
            .collect();
        assert_eq!(
            groups.len(),
            distinct_groups.len(),
            "groups merged or split"
        );
        // Nothing to sort the rows back into source order by.
        assert!(ids.iter().all(|id| id.parse::<i64>().is_err()));
        let ascending = ids.windows(2).all(|w| w[0] < w[1]);
        let descending = ids.windows(2).all(|w| w[0] > w[1]);
        assert!(!ascending && !descending, "{split:?} ids are monotone");
    }

    // One key, one copy: rebuilding gives the same bytes.
    let again = dir.path().join("again");
    write_agent_copy_with_key(&task, &again, &key_a).unwrap();
    for split in AGENT_SPLITS {
        assert_eq!(
            std::fs::read(copy_a.join(split.file_name())).unwrap(),
            std::fs::read(again.join(split.file_name())).unwrap()
        );
    }
}

#[test]
fn id_key_is_created_once_private_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys").join("agent-ids.key");
    let first = IdKey::load_or_create(&path).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    assert_eq!(IdKey::load_or_create(&path).unwrap(), first, "key replaced");
    assert_ne!(IdKey::random().unwrap(), first);
    assert_eq!(
        format!("{first:?}"),
        "IdKey(..)",
        "Debug shows no key bytes"
    );
    // Nothing but the key is left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = IdKey::load_or_create(&path).unwrap_err().to_string();
    assert!(err.contains("readable by other users"), "{err}");

    let short = dir.path().join("short.key");
    std::fs::write(&short, [0u8; 5]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = IdKey::load_or_create(&short).unwrap_err().to_string();
    assert!(err.contains("holds 5 bytes, expected 32"), "{err}");
}

#[test]
fn unkeyed_agent_copy_still_hides_source_ids() {
    let dir = tempfile::tempdir().unwrap();
    let task = grouped_task(&dir.path().join("labeled"));
    let out = dir.path().join("copy");
    write_agent_copy(&task, &out).unwrap();
    let raw = std::fs::read_to_string(out.join("test.jsonl")).unwrap();
    assert!(!raw.contains("rt-") && !raw.contains("film-"), "{raw}");
}
