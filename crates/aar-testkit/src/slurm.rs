//! A single-node Slurm cluster (Debian's `slurm-wlm` and `munge`) in a temporary
//! directory, started and stopped by the repository's `scripts/slurm-local`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster; `SLURM_CONF` must point at [`SlurmCluster::conf`] for Slurm's
/// commands (and for `aar up --executor slurm`) to reach it.
pub struct SlurmCluster {
    dir: tempfile::TempDir,
    /// Its `slurm.conf`.
    pub conf: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm-local")
}

impl SlurmCluster {
    /// Starts the daemons (installing the packages when missing); panics with the logs
    /// when the node does not come up.
    pub fn start() -> SlurmCluster {
        let dir = tempfile::Builder::new()
            .prefix("aar-slurm-")
            .tempdir()
            .unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("scripts/slurm-local runs");
        assert!(
            out.status.success(),
            "scripts/slurm-local start failed (it must run as root, with Debian's slurm-wlm and munge): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.path().join("slurm.conf");
        assert!(
            conf.is_file(),
            "no slurm.conf under {}",
            dir.path().display()
        );
        SlurmCluster { dir, conf }
    }

    /// A Slurm client command pointed at this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// The daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["log/slurmctld.log", "log/slurmd.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {name}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Jobs first, so that none outlives the daemons holding its processes.
        let _ = self.command("scancel").arg("--user=root").output();
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
