//! NVIDIA GPUs for sandboxes that ask for one: the device nodes and the driver's
//! user-space libraries, found once on the host.
//!
//! bubblewrap's `--dev /dev` gives a sandbox a fresh `/dev` with only the harmless
//! nodes, so a GPU must be bound in by name: `/dev/nvidiactl`, one `/dev/nvidiaN` per
//! card, the unified-memory nodes CUDA needs (`nvidia-uvm`, `nvidia-uvm-tools`) and the
//! capability nodes of MIG slices (`/dev/nvidia-caps/*`). The driver's libraries
//! (`libcuda.so.1`, `libnvidia-ml.so.1`) are usually under `/usr` or `/lib`, which every
//! sandbox already sees read-only; when the dynamic linker finds them elsewhere (a
//! container runtime's `/usr/local/nvidia` is under `/usr`, but some hosts use `/opt` or
//! `/run`), their directories are bound too. CUDA reserves far more address space than
//! it uses, so a GPU sandbox never gets an address-space limit: its memory is held by
//! its control group only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The driver libraries CUDA programs load by name.
const DRIVER_LIBRARIES: [&str; 2] = ["libcuda.so.1", "libnvidia-ml.so.1"];

/// Host directories every sandbox mounts anyway (see `Sandbox::command`).
const ALWAYS_MOUNTED: [&str; 6] = ["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin"];

/// Environment variables that choose devices: kept when the host sets them, so a host
/// that hands aar one GPU of eight keeps that choice inside the sandbox.
const DEVICE_VARIABLES: [&str; 3] = [
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
];

/// What a sandbox needs to use the host's NVIDIA GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevices {
    /// Device nodes, bound read-write at their host paths.
    pub nodes: Vec<PathBuf>,
    /// Directories holding driver libraries outside the always-mounted system
    /// directories, bound read-only at their host paths.
    pub library_dirs: Vec<PathBuf>,
    /// Device-selection variables the host sets.
    pub env: Vec<(String, String)>,
}

impl GpuDevices {
    /// The host's GPUs, found once per process (detection runs `ldconfig`, and every
    /// GPU sandbox asks).
    pub fn host() -> Option<&'static GpuDevices> {
        static FOUND: std::sync::OnceLock<Option<GpuDevices>> = std::sync::OnceLock::new();
        FOUND.get_or_init(GpuDevices::detect).as_ref()
    }

    /// The host's GPUs, or `None` when it has no NVIDIA device (no `/dev/nvidiactl`
    /// or no `/dev/nvidiaN`).
    pub fn detect() -> Option<GpuDevices> {
        let nodes = device_nodes(Path::new("/dev"))?;
        let library_dirs = library_dirs(&ldconfig_listing());
        let env = DEVICE_VARIABLES
            .iter()
            .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
            .collect();
        Some(GpuDevices {
            nodes,
            library_dirs,
            env,
        })
    }

    /// bubblewrap arguments that bind them (after `--dev /dev`).
    pub fn bwrap_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        for node in &self.nodes {
            args.push("--dev-bind".into());
            args.push(node.into());
            args.push(node.into());
        }
        for dir in &self.library_dirs {
            args.push("--ro-bind".into());
            args.push(dir.into());
            args.push(dir.into());
        }
        args
    }
}

/// The NVIDIA nodes under `dev`, in a stable order; `None` without a control node and
/// at least one card.
fn device_nodes(dev: &Path) -> Option<Vec<PathBuf>> {
    let ctl = dev.join("nvidiactl");
    if !ctl.exists() {
        return None;
    }
    let mut cards = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dev).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("nvidia") else {
            continue;
        };
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            cards.push(entry.path());
        } else if ["-uvm", "-uvm-tools", "-modeset"].contains(&rest) {
            others.push(entry.path());
        }
    }
    if cards.is_empty() {
        return None;
    }
    cards.sort();
    others.sort();
    let mut nodes = vec![ctl];
    nodes.extend(cards);
    nodes.extend(others);
    // MIG slices are reached through capability nodes; a host without MIG has none.
    if let Ok(caps) = std::fs::read_dir(dev.join("nvidia-caps")) {
        let mut caps: Vec<PathBuf> = caps.flatten().map(|e| e.path()).collect();
        caps.sort();
        nodes.extend(caps);
    }
    Some(nodes)
}

/// `ldconfig -p`'s listing, empty when it cannot run.
fn ldconfig_listing() -> String {
    ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|program| {
            let output = Command::new(program)
                .arg("-p")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .unwrap_or_default()
}

/// Directories of the driver libraries in an `ldconfig -p` listing
/// (`\tlibcuda.so.1 (libc6,x86-64) => /opt/nvidia/lib/libcuda.so.1`) that a sandbox
/// would not otherwise see.
fn library_dirs(listing: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = listing
        .lines()
        .filter_map(|line| {
            let (name, path) = line.trim().split_once(" => ")?;
            let name = name.split_whitespace().next()?;
            DRIVER_LIBRARIES
                .contains(&name)
                .then(|| Path::new(path.trim()).parent().map(Path::to_path_buf))
                .flatten()
        })
        .filter(|dir| !ALWAYS_MOUNTED.iter().any(|m| dir.starts_with(m)))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, names: &[&str]) {
        for name in names {
            std::fs::write(dir.join(name), b"").unwrap();
        }
    }

    #[test]
    fn finds_the_control_node_cards_and_uvm_in_order() {
        let dev = tempfile::tempdir().unwrap();
        touch(
            dev.path(),
            &[
                "nvidia1",
                "nvidiactl",
                "nvidia0",
                "nvidia-uvm",
                "nvidia-uvm-tools",
                "null",
                "nvidia-foo",
            ],
        );
        std::fs::create_dir(dev.path().join("nvidia-caps")).unwrap();
        touch(&dev.path().join("nvidia-caps"), &["nvidia-cap1"]);
        let nodes = device_nodes(dev.path()).unwrap();
        let names: Vec<String> = nodes
            .iter()
            .map(|p| p.strip_prefix(dev.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "nvidiactl",
                "nvidia0",
                "nvidia1",
                "nvidia-uvm",
                "nvidia-uvm-tools",
                "nvidia-caps/nvidia-cap1"
            ]
        );
    }

    #[test]
    fn no_control_node_or_no_card_means_no_gpu() {
        let dev = tempfile::tempdir().unwrap();
        touch(dev.path(), &["nvidia0", "null"]);
        assert_eq!(device_nodes(dev.path()), None);
        let dev = tempfile::tempdir().unwrap();
        touch(dev.path(), &["nvidiactl", "nvidia-uvm"]);
        assert_eq!(device_nodes(dev.path()), None);
    }

    #[test]
    fn driver_libraries_outside_system_directories_are_bound() {
        let listing = "3 libs found in cache `/etc/ld.so.cache'\n\
            \tlibcuda.so.1 (libc6,x86-64) => /opt/nvidia/lib64/libcuda.so.1\n\
            \tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n\
            \tlibcudart.so.12 (libc6,x86-64) => /elsewhere/libcudart.so.12\n\
            \tlibcuda.so.1 (libc6) => /opt/nvidia/lib64/libcuda.so.1\n";
        assert_eq!(library_dirs(listing), [PathBuf::from("/opt/nvidia/lib64")]);
        let gpu = GpuDevices {
            nodes: vec![PathBuf::from("/dev/nvidiactl")],
            library_dirs: library_dirs(listing),
            env: Vec::new(),
        };
        let args: Vec<String> = gpu
            .bwrap_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--dev-bind",
                "/dev/nvidiactl",
                "/dev/nvidiactl",
                "--ro-bind",
                "/opt/nvidia/lib64",
                "/opt/nvidia/lib64"
            ]
        );
    }
}
