//! The project's Python environment (`.venv`, made by `scripts/setup.sh`) as the
//! sandbox's `python3`: it runs with numpy and torch, is the one `PATH` finds, and
//! stays read-only. These tests never skip: without the environment they fail and
//! say how to make it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aar_agents::sandbox::{Limits, PythonVenv, RunAs, Sandbox, SandboxConfig, SandboxError};

use crate::support::{mkdir, tempdir};

const VERSIONS: &str = "import numpy, torch; print(numpy.__version__, torch.__version__)";

/// The project's virtual environment, or a failure naming the fix.
fn project_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv");
    assert!(
        venv.join("pyvenv.cfg").is_file() && venv.join("bin/python").is_file(),
        "no Python virtual environment at {}: run scripts/setup.sh",
        venv.display()
    );
    venv.canonicalize().unwrap()
}

/// A sandbox over `root/ws` with the project's environment; importing torch on a busy
/// machine takes a while.
fn venv_sandbox(root: &Path, venv: &Path, run_as: RunAs) -> Sandbox {
    let mut config = SandboxConfig::new(root.join("ws"), 0);
    config.task_data = Some(mkdir(root, "data"));
    config.python_venv = Some(venv.to_owned());
    config.run_as = run_as;
    config.limits = Limits {
        wall_time: Duration::from_secs(300),
        ..Limits::default()
    };
    Sandbox::new(config).unwrap()
}

/// `python3` and `python` inside are the environment's, import numpy and torch at the
/// versions they have outside, and the Python settings are there.
async fn venv_python3_imports_numpy_and_torch(run_as: RunAs) {
    let venv = project_venv();
    let host = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", VERSIONS])
        .output()
        .unwrap();
    assert!(host.status.success(), "outside the sandbox: {host:?}");
    let expected = String::from_utf8(host.stdout).unwrap();
    let root = tempdir();
    let sb = venv_sandbox(root.path(), &venv, run_as);
    let script = format!(
        "which python3; which python; echo $PYTHONDONTWRITEBYTECODE $PYTHONNOUSERSITE; python3 -c '{VERSIONS}'"
    );
    let out = sb.run(&script, None).await.unwrap();
    assert!(out.success(), "{out:?}");
    let bin = venv.join("bin");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let python3 = bin.join("python3");
    let python = bin.join("python");
    let expected_head = [python3.to_str().unwrap(), python.to_str().unwrap(), "1 1"];
    assert_eq!(lines.get(..3), Some(&expected_head[..]), "{out:?}");
    assert_eq!(lines[3..].join("\n") + "\n", expected, "{out:?}");
}

#[tokio::test]
async fn venv_python3_imports_numpy_and_torch_as_the_hosts_uid() {
    venv_python3_imports_numpy_and_torch(RunAs::Current).await;
}

/// As researchers and verification runs do: as root, an unprivileged uid, which must
/// reach the environment and its base interpreter.
#[tokio::test]
async fn venv_python3_imports_numpy_and_torch_as_an_agents_uid() {
    venv_python3_imports_numpy_and_torch(RunAs::for_agent(0)).await;
}

#[tokio::test]
async fn venv_and_base_interpreter_are_read_only() {
    let venv = project_venv();
    let mounts = PythonVenv::read(&venv).unwrap();
    let mut targets = vec![venv.clone(), venv.join("lib")];
    targets.extend(mounts.base_prefix.clone());
    let probes: Vec<PathBuf> = targets
        .iter()
        .map(|dir| dir.join(format!("aar-write-probe-{}", std::process::id())))
        .collect();
    // The host's own uid (the owner of the environment, which could otherwise write
    // there): only the read-only mount stops it.
    let root = tempdir();
    let sb = venv_sandbox(root.path(), &venv, RunAs::Current);
    let script: Vec<String> = probes
        .iter()
        .map(|p| format!("mkdir {0}; echo x > {0}.txt", p.display()))
        .collect();
    let out = sb.run(&script.join("; "), None).await.unwrap();
    let mut leaked = Vec::new();
    for probe in &probes {
        for path in [probe.clone(), probe.with_extension("txt")] {
            if path.exists() {
                leaked.push(path.clone());
                let _ = std::fs::remove_dir(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
    }
    assert!(leaked.is_empty(), "wrote from the sandbox: {leaked:?}");
    assert_eq!(
        out.stderr.matches("Read-only file system").count(),
        2 * probes.len(),
        "{out:?}"
    );
}

#[test]
fn a_venv_without_pyvenv_cfg_is_an_error_naming_the_file() {
    let root = tempdir();
    let venv = mkdir(root.path(), "venv");
    let mut config = SandboxConfig::new(root.path().join("ws"), 0);
    config.python_venv = Some(venv.clone());
    let err = Sandbox::new(config.clone()).unwrap_err();
    assert!(matches!(err, SandboxError::PythonVenv { .. }), "{err:?}");
    let cfg = venv.join("pyvenv.cfg");
    assert!(
        err.to_string().contains(&cfg.display().to_string()),
        "{err}"
    );

    std::fs::write(&cfg, "version = 3.11.7\n").unwrap();
    let err = Sandbox::new(config).unwrap_err().to_string();
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(err.contains("home"), "{err}");
}

#[test]
fn a_base_interpreter_out_of_the_sandbox_uids_reach_is_an_error_naming_it() {
    let root = tempdir();
    let private = mkdir(root.path(), "private");
    let bin = mkdir(&private, "base/bin");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let venv = mkdir(root.path(), "venv");
    std::fs::write(
        venv.join("pyvenv.cfg"),
        format!("home = {}\n", bin.display()),
    )
    .unwrap();
    let mut config = SandboxConfig::new(root.path().join("ws"), 0);
    config.python_venv = Some(venv.clone());
    config.run_as = RunAs::Uid {
        uid: 61_000,
        gid: 61_000,
    };
    let err = Sandbox::new(config).unwrap_err().to_string();
    let prefix = private.join("base");
    for part in [
        venv.join("pyvenv.cfg").display().to_string(),
        format!(
            "{} is out of reach of the sandbox's uid 61000",
            prefix.display()
        ),
    ] {
        assert!(err.contains(&part), "{err}");
    }
}

/// A sandbox that asks for the GPU sees it: torch inside finds CUDA and multiplies on
/// the device, and the sandbox has no address-space limit (CUDA could not start under
/// one). Run on a host with an NVIDIA GPU:
/// `cargo test -p aar-agents --test it gpu_sandbox -- --ignored`.
#[tokio::test]
#[ignore = "needs an NVIDIA GPU and its driver"]
async fn gpu_sandbox_runs_torch_on_cuda() {
    let gpu = aar_agents::gpu::GpuDevices::host()
        .cloned()
        .expect("no NVIDIA device nodes under /dev: this test needs a GPU host");
    let venv = project_venv();
    let root = tempdir();
    let mut config = SandboxConfig::new(root.path().join("ws"), 0);
    config.python_venv = Some(venv);
    config.gpu = Some(gpu);
    config.limits = Limits {
        wall_time: Duration::from_secs(300),
        ..Limits::default()
    };
    let sb = Sandbox::new(config).unwrap();
    let script = "ulimit -v; python3 -c 'import torch; x = torch.ones(512, 512, device=\"cuda\"); \
                  print(torch.cuda.device_count(), float((x @ x).sum()))'";
    let out = sb.run(script, None).await.unwrap();
    assert!(out.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"unlimited"), "{out:?}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(fields[0].parse::<usize>().unwrap() >= 1, "{out:?}");
    // 512 x 512 ones squared: every entry is 512, summed over 512^2 entries.
    assert_eq!(fields[1].parse::<f64>().unwrap(), 512.0f64.powi(3));
}
