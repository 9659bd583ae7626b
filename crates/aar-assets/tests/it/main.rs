//! Integration tests for aar-assets. Python-backed tests use the project venv
//! (`.venv/bin/python`, or `AAR_PYTHON`) with the packages of
//! `scripts/requirements-test.txt`; they fail, never skip, when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a panic is the failure report

mod convert;
mod fetch;
mod packs;

use std::path::PathBuf;
use std::process::Command;

/// The Python interpreter holding the reference packages.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("AAR_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python at {} (run scripts/setup.sh or set AAR_PYTHON); these tests need the gguf, safetensors and tokenizers packages",
        venv.display()
    );
    venv
}

/// Runs a Python script, panicking with its stderr when it fails.
pub fn run_python(args: &[&str]) -> String {
    let output = Command::new(python()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
