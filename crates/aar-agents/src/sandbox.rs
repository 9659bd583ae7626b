//! One researcher's shell commands under bubblewrap (`bwrap`).
//!
//! What a command sees: its own workspace at [`WORKSPACE_MOUNT`] (read-write),
//! the agent-facing task data at [`DATA_MOUNT`] and the cache at
//! [`CACHE_MOUNT`] (read-only), the aar binary at [`AAR_MOUNT`] and its
//! libtorch directory at the host path its run path names (read-only), the
//! system's `/usr` (read-only), a few files of `/etc`, a fresh `/proc`, a
//! minimal `/dev` and a size-limited `/tmp`. With a Python virtual environment
//! configured ([`SandboxConfig::python_venv`]), also that environment and its
//! base interpreter's prefix (the parent of `pyvenv.cfg`'s `home`), read-only at
//! their host paths, with `<venv>/bin` first on `PATH`: `python3` is the
//! environment's (numpy, torch), writes no bytecode and ignores user site
//! packages. Nothing else of the host: not the server's database, the labeled
//! data, other workspaces or the rest of `/root`.
//!
//! What it cannot do: reach any network (`--unshare-all` gives it a network
//! namespace with only a down loopback), see the host's environment (`--clearenv`;
//! only `PATH`, `HOME`, `LANG`, the Python settings above and the configured
//! variables), outlive its wall time (the whole pid
//! namespace dies with bwrap), or exceed its memory, process and file-size
//! limits. Memory and processes are limited per command as a whole by a control
//! group of its own ([`crate::cgroup`]: every process and the `/tmp` tmpfs count
//! together), and per process by `prlimit` (inherited by everything inside; the
//! address-space limit only where the machine offers no control groups). When the host process
//! runs as root, commands run as an unprivileged uid of their own (`setpriv`),
//! so the process limit means something and root's privileges never reach the
//! sandbox. The workspace's size is checked every second while a command runs (the
//! command is killed when it outgrows its cap) and after it ends. Bubblewrap's own root
//! is remounted read-only, so the workspace and the size-limited `/tmp` are the only
//! places a command can write.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Where the workspace is mounted inside the sandbox (and `HOME`).
pub const WORKSPACE_MOUNT: &str = "/workspace";
/// Where the agent-facing task data is mounted (read-only).
pub const DATA_MOUNT: &str = "/data";
/// Where the cache (weak-teacher outputs, features) is mounted (read-only).
pub const CACHE_MOUNT: &str = "/cache";
/// Where the aar binary is mounted (read-only); its directory is on `PATH`.
pub const AAR_MOUNT: &str = "/opt/aar/bin/aar";

/// `sh -c JOIN_GROUP sh N FILE... PROGRAM ARGS...`: writes the shell's pid to the N
/// files, then execs the program (in the groups now).
const JOIN_GROUP: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done
exec "$@""#;

const SANDBOX_PATH: &str = "/opt/aar/bin:/usr/local/bin:/usr/bin:/bin";

/// How often a running command's workspace is measured against its cap.
pub const WORKSPACE_POLL: Duration = Duration::from_secs(1);

/// How a command ended.
enum Ended {
    Exited(std::process::ExitStatus),
    TimedOut,
    WorkspaceFull,
}

/// Per-command limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time of one command.
    pub wall_time: Duration,
    /// Memory of a command's processes together, its `/tmp` included, in bytes (its
    /// control group's limit); without control groups, each process's address-space
    /// limit (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Most processes of a command (its control group's) and of the sandbox's uid
    /// (`RLIMIT_NPROC`).
    pub processes: u64,
    /// Largest file a command may write (`RLIMIT_FSIZE`), in bytes.
    pub file_bytes: u64,
    /// Largest total size of the workspace, checked while a command runs and after it.
    pub workspace_bytes: u64,
    /// Size of the sandbox's `/tmp` (a tmpfs), in bytes.
    pub tmp_bytes: u64,
    /// Bytes of stdout and of stderr kept; the rest is counted and dropped.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            wall_time: Duration::from_secs(600),
            memory_bytes: 8 << 30,
            processes: 256,
            file_bytes: 2 << 30,
            workspace_bytes: 4 << 30,
            tmp_bytes: 512 << 20,
            output_bytes: 16 << 10,
        }
    }
}

/// Which uid commands run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// Unprivileged: a uid/gid of the sandbox's own (only possible as root;
    /// the workspace is handed to that uid).
    Uid {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
    /// The host process's own uid (when it is not root).
    Current,
}

impl RunAs {
    /// `Uid { 61000 + index }` when this process is root, otherwise `Current`:
    /// one uid per agent keeps their process limits apart.
    pub fn for_agent(index: u32) -> RunAs {
        if crate::fsutil::effective_uid() == Some(0) {
            RunAs::Uid {
                uid: 61_000 + index,
                gid: 61_000 + index,
            }
        } else {
            RunAs::Current
        }
    }
}

/// Configuration of one agent's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// The agent's workspace on the host (created if missing).
    pub workspace: PathBuf,
    /// Agent-facing task data (no labels), mounted at [`DATA_MOUNT`].
    pub task_data: Option<PathBuf>,
    /// Cached weak-teacher outputs and features, mounted at [`CACHE_MOUNT`].
    pub cache: Option<PathBuf>,
    /// The aar binary, mounted at [`AAR_MOUNT`].
    pub aar_binary: Option<PathBuf>,
    /// The libtorch directory the aar binary's run path names; mounted
    /// read-only at the same path so the binary finds it.
    pub libtorch: Option<PathBuf>,
    /// Further read-only directories mounted at their host paths (e.g. the
    /// models).
    pub extra_ro: Vec<PathBuf>,
    /// A Python virtual environment (the directory holding `pyvenv.cfg`, an
    /// absolute path) whose `python3` commands run: mounted read-only at its host
    /// path with its base interpreter's prefix (the parent of `pyvenv.cfg`'s
    /// `home`, unless under `/usr`), its `bin` first on `PATH`, and
    /// `PYTHONDONTWRITEBYTECODE=1`, `PYTHONNOUSERSITE=1` set.
    pub python_venv: Option<PathBuf>,
    /// Environment variables set inside, besides `PATH`, `HOME`, `LANG` and the Python
    /// environment's (the host's environment never reaches a command).
    pub env: Vec<(String, String)>,
    /// Which uid commands run as.
    pub run_as: RunAs,
    /// Per-command limits.
    pub limits: Limits,
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// The util-linux `prlimit` binary.
    pub prlimit: PathBuf,
    /// The util-linux `setpriv` binary.
    pub setpriv: PathBuf,
    /// The host's GPUs, for a sandbox that asked for one ([`crate::gpu`]): their nodes
    /// are bound in and no address-space limit is set.
    pub gpu: Option<crate::gpu::GpuDevices>,
}

impl SandboxConfig {
    /// A sandbox over `workspace` with default limits, binaries from `PATH`
    /// and [`RunAs::for_agent`]`(index)`.
    pub fn new(workspace: impl Into<PathBuf>, index: u32) -> SandboxConfig {
        SandboxConfig {
            workspace: workspace.into(),
            task_data: None,
            cache: None,
            aar_binary: None,
            libtorch: None,
            extra_ro: Vec::new(),
            python_venv: None,
            env: Vec::new(),
            run_as: RunAs::for_agent(index),
            limits: Limits::default(),
            bwrap: PathBuf::from("bwrap"),
            prlimit: PathBuf::from("prlimit"),
            setpriv: PathBuf::from("setpriv"),
            gpu: None,
        }
    }
}

/// A Python virtual environment as a sandbox mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonVenv {
    /// The environment: the directory holding `pyvenv.cfg`.
    pub venv: PathBuf,
    /// The base interpreter's prefix (the parent of `pyvenv.cfg`'s `home`), which
    /// the environment's interpreter links to; `None` when the system's `/usr`
    /// (mounted anyway) holds it.
    pub base_prefix: Option<PathBuf>,
}

impl PythonVenv {
    /// Reads `<venv>/pyvenv.cfg` for its `home` (the base interpreter's `bin`).
    pub fn read(venv: &Path) -> Result<PythonVenv, SandboxError> {
        let cfg = venv.join("pyvenv.cfg");
        let problem = |problem: String| SandboxError::PythonVenv {
            path: cfg.clone(),
            problem,
        };
        let text = std::fs::read_to_string(&cfg).map_err(|e| problem(e.to_string()))?;
        let home = pyvenv_home(&text).ok_or_else(|| problem("no `home = ...` line".into()))?;
        let home = Path::new(home);
        if !home.is_absolute() {
            return Err(problem(format!("home {} is not absolute", home.display())));
        }
        let base_prefix = base_prefix(home).map_err(problem)?;
        Ok(PythonVenv {
            venv: venv.to_owned(),
            base_prefix,
        })
    }

    /// The directories to mount read-only at their host paths.
    pub fn mounts(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.venv).chain(&self.base_prefix)
    }
}

/// The prefix to mount for the base interpreter in `home`: none when `/usr` (mounted
/// anyway, and `/bin` and the like with it) holds it; never the host's `/` through a link.
fn base_prefix(home: &Path) -> Result<Option<PathBuf>, String> {
    let Some(prefix) = home.parent() else {
        return Ok(None);
    };
    if prefix == Path::new("/") || prefix.starts_with("/usr") {
        return Ok(None);
    }
    let real = prefix
        .canonicalize()
        .map_err(|e| format!("home {}: {e}", home.display()))?;
    if real == Path::new("/") {
        return Err(format!(
            "home {}: its prefix {} is the host's /, which is never mounted",
            home.display(),
            prefix.display()
        ));
    }
    Ok(Some(prefix.to_owned()))
}

/// The value of `home` in a `pyvenv.cfg` (`key = value` lines, as Python's `site` reads them).
fn pyvenv_home(text: &str) -> Option<&str> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("home"))
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Why a command could not be run (not: why it failed inside).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A host path of the configuration is missing or unusable.
    #[error("sandbox path {path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Python virtual environment's `pyvenv.cfg` is unreadable or names no
    /// usable base interpreter.
    #[error("python virtual environment {path}: {problem}")]
    PythonVenv {
        /// The `pyvenv.cfg` file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Spawning bwrap failed (is bubblewrap installed?).
    #[error("could not start the sandbox ({program}): {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The command's control group could not be made.
    #[error("sandbox control group: {0}")]
    Cgroup(std::io::Error),
    /// Waiting for or reading from the sandbox failed.
    #[error("sandbox I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// What one command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// Whether it was killed for running past its wall time.
    pub timed_out: bool,
    /// Whether it was killed because the workspace outgrew its cap while it ran.
    pub workspace_killed: bool,
    /// Processes the kernel killed at the command's memory limit.
    pub oom_kills: u64,
    /// Stdout, at most `output_bytes` of it (lossy UTF-8).
    pub stdout: String,
    /// Stderr, at most `output_bytes` of it (lossy UTF-8).
    pub stderr: String,
    /// Total bytes written to stdout.
    pub stdout_bytes: u64,
    /// Total bytes written to stderr.
    pub stderr_bytes: u64,
    /// Whether stdout was cut at `output_bytes`.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at `output_bytes`.
    pub stderr_truncated: bool,
    /// Size of the workspace after the command.
    pub workspace_bytes: u64,
    /// Whether the workspace is over its cap.
    pub workspace_over_cap: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

impl CommandOutput {
    /// Whether it exited with status 0 within its limits.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
            && !self.timed_out
            && !self.workspace_killed
            && !self.workspace_over_cap
            && self.oom_kills == 0
    }

    /// A plain-text report for the agent, stating every truncation and limit hit.
    pub fn report(&self, limits: &Limits) -> String {
        let mut out = String::new();
        match (self.timed_out, self.exit_code) {
            _ if self.workspace_killed => {
                out += &format!(
                    "killed: the workspace grew past its cap of {} bytes while the command ran\n",
                    limits.workspace_bytes
                )
            }
            (true, _) => {
                out += &format!(
                    "killed: ran past the wall-time limit of {} s\n",
                    limits.wall_time.as_secs()
                )
            }
            (false, Some(code)) => out += &format!("exit code: {code}\n"),
            (false, None) if self.oom_kills > 0 => {}
            (false, None) => out += "killed by a signal (memory, process or file-size limit?)\n",
        }
        if self.oom_kills > 0 {
            out += &format!(
                "killed: {} process(es) at the sandbox's memory limit of {} bytes (all its \
                 processes and /tmp together)\n",
                self.oom_kills, limits.memory_bytes
            );
        }
        for (name, text, total, truncated) in [
            (
                "stdout",
                &self.stdout,
                self.stdout_bytes,
                self.stdout_truncated,
            ),
            (
                "stderr",
                &self.stderr,
                self.stderr_bytes,
                self.stderr_truncated,
            ),
        ] {
            if total == 0 {
                continue;
            }
            out += &format!("--- {name} ---\n{text}");
            if !text.ends_with('\n') {
                out.push('\n');
            }
            if truncated {
                out += &format!(
                    "[{name} truncated: showing the first {} of {total} bytes]\n",
                    limits.output_bytes
                );
            }
        }
        if self.workspace_over_cap {
            out += &format!(
                "workspace is {} bytes, over its cap of {} bytes: delete files before going on\n",
                self.workspace_bytes, limits.workspace_bytes
            );
        }
        out
    }
}

/// One agent's sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    config: SandboxConfig,
    python: Option<PythonVenv>,
}

impl Sandbox {
    /// Reads the Python environment's `pyvenv.cfg` and checks the sandbox's uid can
    /// reach the environment and its base interpreter, creates the workspace (owned
    /// by the sandbox's uid) and checks the configured paths exist.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let python = python_mounts(&config)?;
        std::fs::create_dir_all(&config.workspace).map_err(|source| SandboxError::Path {
            path: config.workspace.clone(),
            source,
        })?;
        if let RunAs::Uid { uid, gid } = config.run_as {
            std::os::unix::fs::chown(&config.workspace, Some(uid), Some(gid)).map_err(
                |source| SandboxError::Path {
                    path: config.workspace.clone(),
                    source,
                },
            )?;
        }
        let optional = [
            config.task_data.as_ref(),
            config.cache.as_ref(),
            config.aar_binary.as_ref(),
            config.libtorch.as_ref(),
        ];
        for path in optional.into_iter().flatten().chain(&config.extra_ro) {
            std::fs::metadata(path).map_err(|source| SandboxError::Path {
                path: path.clone(),
                source,
            })?;
        }
        if config.gpu.is_some() && crate::cgroup::Hierarchy::get().is_none() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "GPU sandboxes get no memory limit on this host: without control groups \
                     the only limit is an address-space one, which CUDA cannot start under"
                );
            });
        }
        Ok(Sandbox { config, python })
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The workspace on the host.
    pub fn workspace(&self) -> &Path {
        &self.config.workspace
    }

    /// Runs `command` with `bash -c` in the sandbox, its working directory the
    /// workspace, under the configured limits (`wall_time` overrides the
    /// configured wall time when it is shorter).
    pub async fn run(
        &self,
        command: &str,
        wall_time: Option<Duration>,
    ) -> Result<CommandOutput, SandboxError> {
        let limits = self.config.limits;
        let wall = wall_time.map_or(limits.wall_time, |w| w.min(limits.wall_time));
        let group = crate::cgroup::Hierarchy::get()
            .map(|hierarchy| {
                let limits = crate::cgroup::GroupLimits {
                    memory_bytes: limits.memory_bytes,
                    processes: limits.processes,
                };
                crate::cgroup::CommandGroup::create(hierarchy, limits)
            })
            .transpose()
            .map_err(SandboxError::Cgroup)?;
        let mut cmd = self.command(command, group.as_ref());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let started = Instant::now();
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .spawn()
            .map_err(|source| SandboxError::Spawn { program, source })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let cap = limits.output_bytes;
        let out_task = tokio::spawn(read_capped(stdout, cap));
        let err_task = tokio::spawn(read_capped(stderr, cap));
        let ended = self.watch(&mut child, wall).await?;
        if !matches!(ended, Ended::Exited(_)) {
            // bwrap is the process we started (prlimit and setpriv exec
            // it); killing it tears down the sandbox's pid namespace.
            child.start_kill()?;
            let _ = child.wait().await;
        }
        let (stdout, stdout_bytes, stdout_truncated) = join_reader(out_task).await?;
        let (stderr, stderr_bytes, stderr_truncated) = join_reader(err_task).await?;
        let workspace_bytes = self.workspace_size().await?;
        let oom_kills = group.as_ref().map_or(0, |g| g.oom_kills());
        if let Some(group) = group {
            group.remove().await;
        }
        let (exit_code, timed_out, workspace_killed) = match ended {
            Ended::Exited(status) => (status.code(), false, false),
            Ended::TimedOut => (None, true, false),
            Ended::WorkspaceFull => (None, false, true),
        };
        let output = CommandOutput {
            exit_code,
            timed_out,
            workspace_killed,
            oom_kills,
            stdout,
            stderr,
            stdout_bytes,
            stderr_bytes,
            stdout_truncated,
            stderr_truncated,
            workspace_bytes,
            workspace_over_cap: workspace_bytes > limits.workspace_bytes,
            elapsed: started.elapsed(),
        };
        tracing::debug!(
            exit = ?output.exit_code,
            timed_out,
            ms = output.elapsed.as_millis() as u64,
            "sandbox command done"
        );
        Ok(output)
    }

    /// `PATH` inside: the Python environment's `bin` first, when there is one.
    fn path_variable(&self) -> std::ffi::OsString {
        let mut path = std::ffi::OsString::new();
        if let Some(python) = &self.python {
            path.push(python.venv.join("bin"));
            path.push(":");
        }
        path.push(SANDBOX_PATH);
        path
    }

    /// The directories bound read-only at their host paths, each once (the Python
    /// environment is often libtorch's tree too).
    fn host_mounts(&self) -> Vec<&PathBuf> {
        let c = &self.config;
        let python = self.python.iter().flat_map(PythonVenv::mounts);
        let mut mounts: Vec<&PathBuf> = Vec::new();
        for dir in c.libtorch.iter().chain(&c.extra_ro).chain(python) {
            if !mounts.contains(&dir) {
                mounts.push(dir);
            }
        }
        mounts
    }

    /// Waits for the command to end, its wall time to pass, or the workspace to outgrow
    /// its cap (checked every [`WORKSPACE_POLL`], so a command cannot fill the disk before
    /// the check that follows it).
    async fn watch(
        &self,
        child: &mut tokio::process::Child,
        wall: Duration,
    ) -> Result<Ended, SandboxError> {
        let deadline = tokio::time::sleep(wall);
        tokio::pin!(deadline);
        let mut poll = tokio::time::interval(WORKSPACE_POLL);
        poll.tick().await;
        loop {
            tokio::select! {
                status = child.wait() => return Ok(Ended::Exited(status?)),
                () = &mut deadline => return Ok(Ended::TimedOut),
                _ = poll.tick() => {
                    if self.workspace_size().await? > self.config.limits.workspace_bytes {
                        return Ok(Ended::WorkspaceFull);
                    }
                }
            }
        }
    }

    /// The workspace's size on disk, walked off the async runtime.
    async fn workspace_size(&self) -> Result<u64, SandboxError> {
        let workspace = self.config.workspace.clone();
        Ok(
            tokio::task::spawn_blocking(move || crate::fsutil::dir_size(&workspace))
                .await
                .map_err(std::io::Error::other)??,
        )
    }

    /// The full command line: `[sh JOIN-GROUP] prlimit [setpriv] bwrap ... bash -c
    /// COMMAND`. With a control group, a shell writes its pid into the group's
    /// `cgroup.procs` files and execs the rest, so every process of the command
    /// starts inside it.
    fn command(&self, command: &str, group: Option<&crate::cgroup::CommandGroup>) -> Command {
        let c = &self.config;
        let l = &c.limits;
        let mut cmd = match group {
            Some(group) => {
                let mut cmd = Command::new("sh");
                let files: Vec<PathBuf> = group.procs_files().collect();
                cmd.args(["-c", JOIN_GROUP, "sh"])
                    .arg(files.len().to_string())
                    .args(files)
                    .arg(&c.prlimit);
                cmd
            }
            None => {
                let mut cmd = Command::new(&c.prlimit);
                // CUDA reserves far more address space than it touches: a GPU sandbox
                // without a control group has no memory limit (said once at start-up).
                if c.gpu.is_none() {
                    cmd.arg(format!("--as={}", l.memory_bytes));
                }
                cmd
            }
        };
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            // Only to find setpriv and bwrap; bwrap clears it again inside.
            cmd.env("PATH", path);
        }
        cmd.arg(format!("--nproc={}", l.processes))
            .arg(format!("--fsize={}", l.file_bytes))
            .arg("--core=0")
            .arg("--");
        if let RunAs::Uid { uid, gid } = c.run_as {
            cmd.arg(&c.setpriv)
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--inh-caps=-all")
                .arg("--");
        }
        cmd.arg(&c.bwrap);
        cmd.args([
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--cap-drop",
            "ALL",
        ]);
        cmd.arg("--setenv").arg("PATH").arg(self.path_variable());
        cmd.args(["--setenv", "HOME", WORKSPACE_MOUNT]);
        cmd.args(["--setenv", "LANG", "C.UTF-8"]);
        if self.python.is_some() {
            cmd.args(["--setenv", "PYTHONDONTWRITEBYTECODE", "1"]);
            cmd.args(["--setenv", "PYTHONNOUSERSITE", "1"]);
        }
        for (name, value) in c.gpu.iter().flat_map(|g| &g.env).chain(&c.env) {
            cmd.arg("--setenv").arg(name).arg(value);
        }
        cmd.args(["--ro-bind", "/usr", "/usr"]);
        for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            let host = Path::new(dir);
            match std::fs::read_link(host) {
                Ok(target) => {
                    cmd.arg("--symlink").arg(target).arg(dir);
                }
                Err(_) if host.is_dir() => {
                    cmd.args(["--ro-bind", dir, dir]);
                }
                Err(_) => {}
            }
        }
        for etc in [
            "/etc/alternatives",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/etc/localtime",
        ] {
            cmd.args(["--ro-bind-try", etc, etc]);
        }
        cmd.args(["--proc", "/proc", "--dev", "/dev"]);
        if let Some(gpu) = &c.gpu {
            cmd.args(gpu.bwrap_args());
        }
        cmd.arg("--size")
            .arg(l.tmp_bytes.to_string())
            .args(["--tmpfs", "/tmp"]);
        if let Some(data) = &c.task_data {
            cmd.arg("--ro-bind").arg(data).arg(DATA_MOUNT);
        }
        if let Some(cache) = &c.cache {
            cmd.arg("--ro-bind").arg(cache).arg(CACHE_MOUNT);
        }
        if let Some(aar) = &c.aar_binary {
            cmd.arg("--ro-bind").arg(aar).arg(AAR_MOUNT);
        }
        for dir in self.host_mounts() {
            cmd.arg("--ro-bind").arg(dir).arg(dir);
        }
        cmd.arg("--bind").arg(&c.workspace).arg(WORKSPACE_MOUNT);
        // Nothing outside the workspace and /tmp is writable: bubblewrap's root is a
        // tmpfs no limit counts.
        cmd.args(["--remount-ro", "/"]);
        cmd.args(["--chdir", WORKSPACE_MOUNT]);
        cmd.args(["--", "bash", "-c", command]);
        cmd
    }
}

/// The configured Python environment's mounts, each checked to be within the sandbox's reach.
fn python_mounts(config: &SandboxConfig) -> Result<Option<PythonVenv>, SandboxError> {
    let Some(venv) = &config.python_venv else {
        return Ok(None);
    };
    let python = PythonVenv::read(venv)?;
    if let RunAs::Uid { uid, gid } = config.run_as {
        for dir in python.mounts() {
            check_reachable(&config.setpriv, dir, uid, gid, venv)?;
        }
    }
    Ok(Some(python))
}

/// Fails unless `uid` can reach `dir`: bwrap runs as the sandbox's uid and resolves
/// mount sources as it, so a directory above `dir` it cannot search (pyenv's
/// interpreters under a private `/root`) would fail every command.
fn check_reachable(
    setpriv: &Path,
    dir: &Path,
    uid: u32,
    gid: u32,
    venv: &Path,
) -> Result<(), SandboxError> {
    // Every verification run builds a sandbox over the same environment: one `setpriv`
    // per (directory, uid) per process is enough, since nothing aar does changes the
    // permissions above it.
    static REACHABLE: std::sync::Mutex<BTreeSet<(PathBuf, u32, u32)>> =
        std::sync::Mutex::new(BTreeSet::new());
    let key = (dir.to_owned(), uid, gid);
    if REACHABLE.lock().is_ok_and(|known| known.contains(&key)) {
        return Ok(());
    }
    let status = std::process::Command::new(setpriv)
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .args(["--clear-groups", "--", "test", "-x"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| SandboxError::Spawn {
            program: setpriv.display().to_string(),
            source,
        })?;
    if status.success() {
        if let Ok(mut known) = REACHABLE.lock() {
            known.insert(key);
        }
        return Ok(());
    }
    Err(SandboxError::PythonVenv {
        path: venv.join("pyvenv.cfg"),
        problem: format!(
            "{} is out of reach of the sandbox's uid {uid}, which bubblewrap runs as: let \
             others search every directory above it (chmod o+x), or make the environment \
             from an interpreter outside private directories (scripts/setup.sh)",
            dir.display()
        ),
    })
}

async fn read_capped<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
) -> std::io::Result<(Vec<u8>, u64)> {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, total));
        }
        total += n as u64;
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

async fn join_reader(
    task: tokio::task::JoinHandle<std::io::Result<(Vec<u8>, u64)>>,
) -> Result<(String, u64, bool), SandboxError> {
    let (bytes, total) = task.await.map_err(std::io::Error::other)??;
    let truncated = total > bytes.len() as u64;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        total,
        truncated,
    ))
}
