//! Shared fixtures.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aar_agents::sandbox::{Limits, Sandbox, SandboxConfig};

/// A temporary directory outside `/tmp` (so a sandbox's tmpfs `/tmp` cannot
/// hide a leak) and traversable by the sandbox's unprivileged uid.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A directory `name` under `root`, world-readable.
pub fn mkdir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A sandbox for agent `index` with its workspace at `root/ws-{index}` and
/// task data at `root/data`.
pub fn sandbox(root: &Path, index: u32, limits: Limits) -> Sandbox {
    let data = mkdir(root, "data");
    let mut config = SandboxConfig::new(root.join(format!("ws-{index}")), index);
    config.task_data = Some(data);
    config.limits = limits;
    Sandbox::new(config).unwrap()
}

/// Default limits with a short wall time.
pub fn limits() -> Limits {
    Limits {
        wall_time: std::time::Duration::from_secs(30),
        ..Limits::default()
    }
}
