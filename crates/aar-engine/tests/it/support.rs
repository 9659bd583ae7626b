//! Fixture generation (PyTorch reference via the project venv) and tensor comparisons.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tch::{Kind, Tensor};

/// The project's Python (with torch, transformers and peft), or `AAR_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var_os("AAR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

/// Directory of reference fixtures, generated once per test run.
///
/// Panics with instructions when the Python reference is unavailable: parity tests must
/// never pass without their reference.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        load_cuda_backend_for_gpu_tests();
        // Pre-generated fixtures (e.g. carried to a GPU machine without the test venv).
        if let Some(dir) = std::env::var_os("AAR_FIXTURES_DIR") {
            return PathBuf::from(dir);
        }
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aar-engine-fixtures");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_fixtures.py");
        let python = python();
        let output = Command::new(&python).arg(&script).arg(&out).output();
        match output {
            Ok(output) if output.status.success() => out,
            Ok(output) => panic!(
                "the PyTorch reference failed ({} {}): {}\n\
                 install it with `scripts/setup.sh --test` (or .venv/bin/pip install -r scripts/requirements-test.txt)",
                python.display(),
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => panic!(
                "cannot run the PyTorch reference {}: {err}\n\
                 create it with `scripts/setup.sh --test`, or point AAR_PYTHON at a python with torch, transformers and peft",
                python.display()
            ),
        }
    })
}

/// All tensors of a safetensors file by name.
pub fn read(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Largest absolute difference between two tensors (as fp32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let diff = (a.to_kind(Kind::Float) - b.to_kind(Kind::Float))
        .abs()
        .max();
    f64::try_from(diff).unwrap()
}

/// Row `row`'s positions where `mask` is 1, as an index tensor.
pub fn real_positions(mask: &Tensor, row: i64) -> Tensor {
    mask.get(row).nonzero().squeeze_dim(-1)
}

/// libtorch's RNG is global to the process: tests that seed or draw from it hold this.
pub fn global_rng() -> std::sync::MutexGuard<'static, ()> {
    load_cuda_backend_for_gpu_tests();
    static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GLOBAL_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// With `AAR_GPU_TESTS=1`, loads the CUDA backend before any test touches libtorch: libtorch
/// settles whether CUDA exists at the first query (tests run concurrently, in any order).
fn load_cuda_backend_for_gpu_tests() {
    if std::env::var("AAR_GPU_TESTS").is_ok_and(|v| v == "1") {
        aar_engine::device::load_cuda_backend();
    }
}
