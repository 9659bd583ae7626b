use std::path::{Path, PathBuf};

use crate::*;

fn reference_archive() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/reference/cache_results.tar.gz")
}

/// Figures published with the reference (REFERENCE_SPEC.md section 2.4 and the issue).
#[test]
fn reference_archive_reproduces_published_baselines_and_pgr() {
    let cache = ResultCache::open(&reference_archive()).unwrap();
    let report = ReferenceReport::build(&cache, &SeedSet::reference()).unwrap();
    let published = [
        // dataset, W, S, vanilla, confident, critic
        ("chat", 0.5280, 0.7325, 0.204, 0.234, -0.038),
        ("math", 0.5360, 0.7176, 0.338, 0.296, 0.260),
        ("code", 0.5768, 0.6936, 0.129, 0.192, -0.094),
    ];
    assert_eq!(
        report.datasets.len(),
        3,
        "the stale nested copy must not add data sets"
    );
    for (name, w, s, vanilla, confident, critic) in published {
        let d = report.dataset(name).unwrap();
        assert_eq!((d.baselines.weak.n, d.baselines.ceiling.n), (16, 16));
        assert!(
            (d.baselines.weak.mean - w).abs() < 5e-5,
            "{name} W {}",
            d.baselines.weak.mean
        );
        assert!(
            (d.baselines.ceiling.mean - s).abs() < 5e-5,
            "{name} S {}",
            d.baselines.ceiling.mean
        );
        for (method, expected) in [
            ("vanilla_w2s", vanilla),
            ("train_only_on_confident_labels", confident),
            ("critic", critic),
        ] {
            let m = d.method(method).unwrap();
            assert!(
                (m.pgr.mean - expected).abs() < 0.005,
                "{name} {method}: {} vs {expected}",
                m.pgr.mean
            );
            assert_eq!(m.seeds, vec![42, 43, 44, 45, 46]);
            assert!(m.pgr.se.unwrap() > 0.0);
        }
    }
    // The reference's hand-copied ue_zeroshot files record the wrong seed: reported, not hidden.
    let ue = report
        .dataset("code")
        .unwrap()
        .method("ue_zeroshot")
        .unwrap();
    assert_eq!(ue.warnings.len(), 4, "{:?}", ue.warnings);
    assert!(ue.warnings[0].ends_with("seed_43.json: records seed 42 but is named seed_43.json"));
    let text = report.to_string();
    assert!(text.contains("chat: W 0.5280"), "{text}");
}

#[test]
fn directory_and_archive_give_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open(reference_archive()).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap();
    let from_dir = ReferenceReport::build(
        &ResultCache::open(dir.path()).unwrap(),
        &SeedSet::reference(),
    )
    .unwrap();
    let from_tar = ReferenceReport::build(
        &ResultCache::open(&reference_archive()).unwrap(),
        &SeedSet::reference(),
    )
    .unwrap();
    assert_eq!(from_dir.to_string(), from_tar.to_string());
}

fn write(root: &Path, rel: &str, body: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn small_cache(root: &Path) {
    for seed in [1, 2] {
        write(
            root,
            &format!("t_weak_artifacts/W/seed_{seed}.json"),
            r#"{"weak_acc":0.5}"#,
        );
        write(
            root,
            &format!("t_train_ceiling/S/seed_{seed}.json"),
            r#"{"strong_acc":0.9}"#,
        );
    }
    write(
        root,
        "t_vanilla_w2s/K/seed_1.json",
        r#"{"transfer_acc":0.6,"pgr":0.99}"#,
    );
    write(
        root,
        "t_vanilla_w2s/K/seed_2.json",
        r#"{"transfer_acc":0.8}"#,
    );
}

#[test]
fn baselines_use_pinned_seeds_only_and_ignore_self_reported_pgr() {
    let dir = tempfile::tempdir().unwrap();
    small_cache(dir.path());
    let seeds: SeedSet = "1-2".parse().unwrap();
    let before = ReferenceReport::build(&ResultCache::open(dir.path()).unwrap(), &seeds).unwrap();
    let d = before.dataset("t").unwrap();
    // W 0.5, S 0.9: PGR 0.25 and 0.75, whatever the file claims.
    assert!((d.method("vanilla_w2s").unwrap().pgr.mean - 0.5).abs() < 1e-12);

    // A poisoned extra weak seed outside the pinned set moves nothing.
    write(
        dir.path(),
        "t_weak_artifacts/W/seed_99.json",
        r#"{"weak_acc":0.0}"#,
    );
    let after = ReferenceReport::build(&ResultCache::open(dir.path()).unwrap(), &seeds).unwrap();
    assert_eq!(before.to_string(), after.to_string());

    // A missing pinned seed is an error that names it.
    let err = ReferenceReport::build(
        &ResultCache::open(dir.path()).unwrap(),
        &"1-3".parse().unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dataset t: pinned seed 3 has no weak_artifacts file in W"
    );
}

#[test]
fn bad_records_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    small_cache(dir.path());
    write(
        dir.path(),
        "t_weak_artifacts/W/seed_2.json",
        r#"{"seed":3,"weak_acc":0.5}"#,
    );
    let err = ReferenceReport::build(
        &ResultCache::open(dir.path()).unwrap(),
        &"1-2".parse().unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("t_weak_artifacts/W/seed_2.json: records seed 3"),
        "{err}"
    );
    write(
        dir.path(),
        "t_weak_artifacts/W/seed_2.json",
        r#"{"weak_acc":0.5}"#,
    );

    write(
        dir.path(),
        "t_vanilla_w2s/K/seed_2.json",
        r#"{"transfer_accuracy":0.8}"#,
    );
    let err = ReferenceReport::build(
        &ResultCache::open(dir.path()).unwrap(),
        &"1-2".parse().unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("seed_2.json: missing field `transfer_acc`"),
        "{err}"
    );

    write(
        dir.path(),
        "t_vanilla_w2s/K/seed_2.json",
        r#"{"transfer_acc":1.8}"#,
    );
    let err = ReferenceReport::build(
        &ResultCache::open(dir.path()).unwrap(),
        &"1-2".parse().unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("accuracy 1.8 is outside [0, 1]"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = ResultCache::open(empty.path()).unwrap_err();
    assert!(err.to_string().contains("no seed_N.json files"), "{err}");
}

#[test]
fn pgr_undefined_when_ceiling_does_not_beat_weak() {
    let dir = tempfile::tempdir().unwrap();
    small_cache(dir.path());
    for seed in [1, 2] {
        write(
            dir.path(),
            &format!("t_train_ceiling/S/seed_{seed}.json"),
            r#"{"strong_acc":0.5}"#,
        );
    }
    let err = ReferenceReport::build(
        &ResultCache::open(dir.path()).unwrap(),
        &"1-2".parse().unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("PGR is undefined"), "{err}");
}

#[test]
fn seed_sets_parse_ranges_and_lists() {
    let s: SeedSet = "42-44, 50".parse().unwrap();
    assert_eq!(s.seeds().collect::<Vec<_>>(), vec![42, 43, 44, 50]);
    assert!("".parse::<SeedSet>().is_err());
    assert!("5-3".parse::<SeedSet>().is_err());
    assert!("a".parse::<SeedSet>().is_err());
}
