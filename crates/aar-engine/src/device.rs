//! Device selection. libtorch registers its CUDA backend when `libtorch_cuda.so` is loaded,
//! but as-needed linking can drop that library from a binary that references none of its
//! symbols; so the engine loads it explicitly before asking whether CUDA is available.
//!
//! libtorch decides once per process whether CUDA exists, at the first call that asks
//! (`manual_seed` does, for one): a binary that may use CUDA must call [`best_device`] or
//! [`load_cuda_backend`] before any other engine call. [`crate::Model::load`] does it for a
//! CUDA device, which is enough when loading a model is the first thing done.

use std::sync::OnceLock;

use tch::Device;

/// Loads `libtorch_cuda.so` once per process (a no-op where it is absent, e.g. CPU-only
/// libtorch); returns whether it is loaded.
pub fn load_cuda_backend() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        let mut candidates = vec![std::path::PathBuf::from("libtorch_cuda.so")];
        if let Some(libtorch) = std::env::var_os("LIBTORCH") {
            candidates.push(std::path::Path::new(&libtorch).join("lib/libtorch_cuda.so"));
        }
        for candidate in candidates {
            // SAFETY: loading libtorch_cuda runs only its static initialisers, which register
            // the CUDA backend with the libtorch this process already uses; the library is
            // never unloaded (forgotten below), so no symbol outlives it.
            #[allow(unsafe_code)]
            let loaded = unsafe { libloading::Library::new(&candidate) };
            match loaded {
                Ok(library) => {
                    std::mem::forget(library);
                    tracing::debug!(library = %candidate.display(), "loaded the CUDA backend");
                    return true;
                }
                Err(err) => {
                    tracing::debug!(library = %candidate.display(), %err, "no CUDA backend")
                }
            }
        }
        false
    })
}

/// Whether a CUDA device can be used (after loading the CUDA backend).
pub fn cuda_is_available() -> bool {
    load_cuda_backend();
    tch::Cuda::is_available()
}

/// CUDA device 0 when available, else the CPU.
pub fn best_device() -> Device {
    if cuda_is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}
