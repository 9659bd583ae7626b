//! Embeds libtorch's directory as a run path so tests and binaries run without
//! LD_LIBRARY_PATH. LIBTORCH comes from .cargo/config.toml (or the environment).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Some(libtorch) = std::env::var_os("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
