//! Runs untrusted Python programs to label code examples: a child process in an
//! empty temporary directory, environment cleared, with wall-clock, CPU and
//! address-space limits (`prlimit`), a fixed string-hash seed (so set order,
//! hence printed outputs, is the same on every run), and without network (`unshare -n`) where
//! the platform allows it (root on Linux). Where `unshare` cannot be used the
//! program still runs, with network: the programs come from pinned packages,
//! not from agents, and the limits still hold.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{AssetError, Result};

/// How to run programs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The Python interpreter (its site-packages decide what programs can import).
    pub python: PathBuf,
    /// Wall-clock limit per run.
    pub timeout: Duration,
    /// Address-space limit per run, bytes.
    pub memory_bytes: u64,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            python: PathBuf::from("python3"),
            timeout: Duration::from_secs(10),
            memory_bytes: 2 << 30,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exited with status 0 within the time limit.
    pub success: bool,
    /// Killed for running past the wall-clock limit or its CPU-time limit.
    pub timed_out: bool,
    /// Standard output.
    pub stdout: String,
}

/// The kernel sends SIGXCPU when a process passes its `RLIMIT_CPU` soft limit.
fn killed_for_cpu_time(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    const SIGXCPU: i32 = 24;
    status.signal() == Some(SIGXCPU)
}

/// Runs Python programs under limits; probes once which isolation tools work.
#[derive(Debug, Clone)]
pub struct Runner {
    config: RunnerConfig,
    use_prlimit: bool,
    use_unshare: bool,
}

impl Runner {
    /// Probes `prlimit` and `unshare -n`, and checks that the interpreter starts.
    pub fn new(config: RunnerConfig) -> Result<Runner> {
        let works = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let use_prlimit = works("prlimit", &["--as=1073741824", "true"]);
        let use_unshare = works("unshare", &["-n", "true"]);
        if !use_unshare {
            tracing::warn!(
                "`unshare -n` is unavailable (not root?): labeling programs run with network access"
            );
        }
        if !use_prlimit {
            tracing::warn!(
                "`prlimit` is unavailable: labeling programs run without memory or CPU limits"
            );
        }
        let runner = Runner {
            config,
            use_prlimit,
            use_unshare,
        };
        let probe = runner.run("print('ok')", "")?;
        if !probe.success || probe.stdout.trim() != "ok" {
            return Err(AssetError::Runner(format!(
                "{} does not run a trivial program",
                runner.config.python.display()
            )));
        }
        Ok(runner)
    }

    /// Runs `script` with `stdin` as input. An error means the runner itself failed,
    /// never that the program did.
    pub fn run(&self, script: &str, stdin: &str) -> Result<RunOutput> {
        let workdir =
            tempfile::tempdir().map_err(|e| AssetError::Runner(format!("temp dir: {e}")))?;
        let script_path = workdir.path().join("program.py");
        std::fs::write(&script_path, script)
            .map_err(|e| AssetError::Runner(format!("write program: {e}")))?;
        // One second above the wall-clock limit: a single-threaded loop then always meets
        // the wall clock first, and the CPU limit only stops programs that burn several cores.
        let cpu_seconds = self.config.timeout.as_secs().max(1) + 1;
        let mut argv: Vec<String> = Vec::new();
        if self.use_prlimit {
            argv.extend([
                "prlimit".to_owned(),
                format!("--as={}", self.config.memory_bytes),
                format!("--cpu={cpu_seconds}"),
                "--".to_owned(),
            ]);
        }
        if self.use_unshare {
            argv.extend(["unshare".to_owned(), "-n".to_owned(), "--".to_owned()]);
        }
        // -s: no user site directory. Not -I: it would also ignore PYTHONHASHSEED,
        // and set/dict-of-str iteration order must not change between runs.
        argv.extend([
            self.config.python.to_string_lossy().into_owned(),
            "-s".to_owned(),
            "program.py".to_owned(),
        ]);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(workdir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| AssetError::Runner(format!("cannot start {}: {e}", argv[0])))?;
        if let Some(mut input) = child.stdin.take() {
            // A program that exits without reading its input closes the pipe: not our error.
            let _ = input.write_all(stdin.as_bytes());
        }
        // Read stdout on a thread so a chatty program cannot block on a full pipe.
        let mut stdout_pipe = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = stdout_pipe.as_mut() {
                let _ = pipe.take(16 << 20).read_to_end(&mut out);
            }
            out
        });
        let started = Instant::now();
        let (success, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status.success(), killed_for_cpu_time(&status)),
                Ok(None) if started.elapsed() > self.config.timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break (false, true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(AssetError::Runner(format!("wait: {e}"))),
            }
        };
        let stdout = reader.join().unwrap_or_default();
        Ok(RunOutput {
            success,
            timed_out,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
        })
    }
}
