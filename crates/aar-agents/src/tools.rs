//! The researcher's tools: shell commands in the sandbox, files confined to
//! the workspace, the research server (evaluate, forum, leaderboard,
//! snapshots) and the notebook.
//!
//! A tool never fails the loop: whatever goes wrong becomes an error result
//! the model reads.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde_json::{Value, json};

use crate::llm::ToolSpec;
use crate::sandbox::{Sandbox, WORKSPACE_MOUNT};
use crate::server_client::{NewEntry, NewPost, PostQuery, ServerClient};

/// Why a workspace path was refused or a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The path is absolute, has `..`, or is empty.
    #[error("path {0:?} refused: give a relative path inside the workspace, without `..`")]
    BadPath(String),
    /// A symbolic link leads out of the workspace.
    #[error("path {0:?} refused: a symbolic link leads out of the workspace")]
    Escapes(String),
    /// Too large.
    #[error("{what} is {size} bytes; at most {max}")]
    TooLarge {
        /// What.
        what: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Opens `rel` under `root` with `openat2(RESOLVE_BENEATH)`: the kernel resolves every
/// component, symbolic links included, and refuses any that leads out of `root`, so a
/// directory the agent's sandbox swaps for a link after the path check cannot send the
/// host (root) elsewhere. Never blocks (`O_NONBLOCK`: a FIFO or device an agent planted
/// would block a plain `open` or `read` forever, on the host's runtime), and refuses
/// anything but a regular file, checked on the opened file itself.
pub(crate) fn open_beneath(
    root: &Path,
    rel: &Path,
    flags: OFlags,
) -> std::io::Result<std::fs::File> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // openat2 takes a mode only with O_CREAT.
    let mode = if flags.contains(OFlags::CREATE) {
        Mode::from_raw_mode(0o644)
    } else {
        Mode::empty()
    };
    let fd = rustix::fs::openat2(
        &dir,
        rel,
        flags | OFlags::NONBLOCK | OFlags::CLOEXEC,
        mode,
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(beneath_error)?;
    let file = std::fs::File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (FIFOs, sockets and devices are refused)",
        ));
    }
    Ok(file)
}

/// What `RESOLVE_BENEATH` refusing a path means for the agent.
fn beneath_error(e: rustix::io::Errno) -> std::io::Error {
    match e {
        rustix::io::Errno::XDEV => std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "a symbolic link leads out of the workspace (or is absolute: use relative links)",
        ),
        other => std::io::Error::from(other),
    }
}

/// Creates the missing directories of `rel` under `root`, each `mkdirat` in a parent
/// opened with `RESOLVE_BENEATH`; returns those it created (relative to `root`).
fn create_dirs_beneath(root: &Path, rel: &Path) -> std::io::Result<Vec<PathBuf>> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut done = PathBuf::new();
    let mut created = Vec::new();
    for component in rel.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let parent = rustix::fs::openat2(
            &root_fd,
            if done.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &done
            },
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(beneath_error)?;
        done.push(name);
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => created.push(done.clone()),
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}

/// The agent's workspace as the file tools see it: every path is resolved
/// inside it or refused.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Workspace {
    /// The workspace at `root` (which must exist); files the tools create are
    /// given to `owner` (the sandbox's uid) when set.
    pub fn new(root: &Path, owner: Option<(u32, u32)>) -> Result<Workspace, WorkspaceError> {
        let root = root.canonicalize().map_err(|source| WorkspaceError::Io {
            path: root.display().to_string(),
            source,
        })?;
        Ok(Workspace { root, owner })
    }

    /// The workspace's (canonical) host path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of `rel`, after checking it stays inside. Accepts paths
    /// relative to the workspace, and absolute paths under the sandbox's
    /// mount point ([`WORKSPACE_MOUNT`]), which name the same files.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, WorkspaceError> {
        let bad = || WorkspaceError::BadPath(rel.to_owned());
        let trimmed = match rel.strip_prefix(WORKSPACE_MOUNT) {
            Some("") => ".",
            Some(rest) if rest.starts_with('/') => rest.trim_start_matches('/'),
            _ => rel,
        };
        let trimmed = if trimmed.is_empty() { "." } else { trimmed };
        let path = Path::new(trimmed);
        if rel.contains('\0') {
            return Err(bad());
        }
        let mut full = self.root.clone();
        for component in path.components() {
            match component {
                Component::Normal(c) => full.push(c),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(bad());
                }
            }
        }
        // The deepest part that exists must resolve inside the workspace
        // (this catches symbolic links anywhere along the path, dangling ones too).
        let mut existing = full.clone();
        loop {
            match existing.symlink_metadata() {
                Ok(_) => break,
                Err(_) => {
                    if !existing.pop() {
                        return Err(bad());
                    }
                }
            }
        }
        let canonical = existing
            .canonicalize()
            .map_err(|_| WorkspaceError::Escapes(rel.to_owned()))?;
        if !canonical.starts_with(&self.root) {
            return Err(WorkspaceError::Escapes(rel.to_owned()));
        }
        Ok(full)
    }

    /// Reads up to `max` bytes of `rel` from `offset`; also returns the file's size.
    pub fn read(&self, rel: &str, offset: u64, max: u64) -> Result<(Vec<u8>, u64), WorkspaceError> {
        let path = self.resolve(rel)?;
        let io = |source| WorkspaceError::Io {
            path: rel.to_owned(),
            source,
        };
        let mut file =
            open_beneath(&self.root, self.relative(&path), OFlags::RDONLY).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut bytes = Vec::new();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(io)?;
        file.take(max).read_to_end(&mut bytes).map_err(io)?;
        Ok((bytes, size))
    }

    /// Writes `bytes` to `rel`, creating parent directories.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<(), WorkspaceError> {
        let path = self.resolve(rel)?;
        let io = |source| WorkspaceError::Io {
            path: rel.to_owned(),
            source,
        };
        let rel_path = self.relative(&path);
        if let Some(parent) = rel_path.parent() {
            for dir in create_dirs_beneath(&self.root, parent).map_err(io)? {
                self.give(&self.root.join(dir)).map_err(io)?;
            }
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC;
        let mut file = open_beneath(&self.root, rel_path, flags).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        self.give(&path).map_err(io)
    }

    /// `path` (from [`Workspace::resolve`]) relative to the workspace root.
    fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(Path::new("."))
    }

    fn give(&self, path: &Path) -> std::io::Result<()> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }
}

/// The notebook: a Markdown file in the agent's state directory (outside the
/// workspace), shown at the start of every fresh session.
#[derive(Debug, Clone)]
pub struct Notebook {
    path: PathBuf,
    max_bytes: usize,
}

impl Notebook {
    /// The notebook at `path`, capped at `max_bytes`.
    pub fn new(path: PathBuf, max_bytes: usize) -> Notebook {
        Notebook { path, max_bytes }
    }

    /// Its content (empty when it does not exist yet).
    pub fn read(&self) -> std::io::Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        }
    }

    /// Replaces or appends; refuses to grow past the cap.
    pub fn update(&self, content: &str, append: bool) -> Result<usize, String> {
        let mut text = if append {
            self.read().map_err(|e| e.to_string())?
        } else {
            String::new()
        };
        if append && !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text += content;
        if text.len() > self.max_bytes {
            return Err(format!(
                "the notebook would be {} bytes; at most {}: condense it (mode \"replace\")",
                text.len(),
                self.max_bytes
            ));
        }
        crate::fsutil::atomic_write(&self.path, text.as_bytes()).map_err(|e| e.to_string())?;
        Ok(text.len())
    }
}

/// Caps of the file, notebook and snapshot tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolLimits {
    /// Most bytes `read_file` returns at once.
    pub read_bytes: u64,
    /// Largest file `write_file`/`edit_file` writes.
    pub write_bytes: u64,
    /// Largest predictions file.
    pub predictions_bytes: u64,
    /// Largest snapshot (archive) up- or downloaded.
    pub snapshot_bytes: u64,
    /// Longest shell timeout a call may ask for (the sandbox's limit also applies).
    pub shell_timeout: Duration,
}

impl Default for ToolLimits {
    fn default() -> ToolLimits {
        ToolLimits {
            read_bytes: 64 << 10,
            write_bytes: 4 << 20,
            predictions_bytes: 64 << 20,
            snapshot_bytes: 32 << 20,
            shell_timeout: Duration::from_secs(3600),
        }
    }
}

/// The result of one tool call, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// Text.
    pub content: String,
    /// Whether the call failed.
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }

    fn err(content: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: content.into(),
            is_error: true,
        }
    }
}

/// One agent's tools.
#[derive(Debug, Clone)]
pub struct Toolbox {
    sandbox: Sandbox,
    workspace: Workspace,
    server: Option<ServerClient>,
    notebook: Notebook,
    limits: ToolLimits,
}

fn str_arg<'a>(input: &'a Value, name: &str) -> Result<&'a str, String> {
    input[name]
        .as_str()
        .ok_or_else(|| format!("missing string argument `{name}`"))
}

fn opt_str(input: &Value, name: &str) -> Option<String> {
    input[name].as_str().map(str::to_owned)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Parses predictions: a JSON array of 0/1, one 0/1 per line, or the object
/// `aar run-method` writes (its `predictions` field).
pub fn parse_predictions(text: &str) -> Result<Vec<u8>, String> {
    parse_prediction_field(text, "predictions")
}

/// Like [`parse_predictions`], reading `field` of an object.
fn parse_prediction_field(text: &str, field: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim();
    let values: Vec<i64> = if trimmed.starts_with('{') {
        let object: Value =
            serde_json::from_str(trimmed).map_err(|e| format!("not a JSON object: {e}"))?;
        serde_json::from_value(object[field].clone())
            .map_err(|e| format!("field `{field}` is not an array of 0/1: {e}"))?
    } else if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array of 0/1: {e}"))?
    } else {
        trimmed
            .split_whitespace()
            .enumerate()
            .map(|(i, t)| {
                t.parse()
                    .map_err(|_| format!("item {i}: {t:?} is not 0 or 1"))
            })
            .collect::<Result<_, _>>()?
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            0 | 1 => Ok(v as u8),
            _ => Err(format!("item {i}: {v} is not 0 or 1")),
        })
        .collect()
}

impl Toolbox {
    /// The tools over `sandbox` (whose workspace the file tools share), the
    /// server (if any) and the notebook.
    pub fn new(
        sandbox: Sandbox,
        server: Option<ServerClient>,
        notebook: Notebook,
        limits: ToolLimits,
    ) -> Result<Toolbox, WorkspaceError> {
        let owner = match sandbox.config().run_as {
            crate::sandbox::RunAs::Uid { uid, gid } => Some((uid, gid)),
            crate::sandbox::RunAs::Current => None,
        };
        let workspace = Workspace::new(sandbox.workspace(), owner)?;
        Ok(Toolbox {
            sandbox,
            workspace,
            server,
            notebook,
            limits,
        })
    }

    /// The workspace.
    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// The notebook.
    pub fn notebook(&self) -> &Notebook {
        &self.notebook
    }

    /// The specs the model is given.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let spec = |name: &str, description: &str, schema: Value| ToolSpec {
            name: name.to_owned(),
            description: description.to_owned(),
            input_schema: schema,
        };
        let mut specs = vec![
            spec(
                "shell",
                "Run a bash command in your sandbox. The working directory is your workspace \
                 /workspace (read-write, persistent). Task data (no labels) is at /data, cached \
                 weak-teacher outputs and features at /cache, the `aar` tool is on PATH; there is \
                 no network. Output is truncated; long-running commands are killed at the timeout.",
                json!({"type": "object", "properties": {
                    "command": {"type": "string", "description": "bash command line"},
                    "timeout_seconds": {"type": "integer", "description": "wall-time limit (optional)"}
                }, "required": ["command"]}),
            ),
            spec(
                "read_file",
                "Read a text file of your workspace (path relative to /workspace).",
                json!({"type": "object", "properties": {
                    "path": {"type": "string"},
                    "offset": {"type": "integer", "description": "byte offset (optional)"}
                }, "required": ["path"]}),
            ),
            spec(
                "write_file",
                "Write (create or replace) a file in your workspace.",
                json!({"type": "object", "properties": {
                    "path": {"type": "string"}, "content": {"type": "string"}
                }, "required": ["path", "content"]}),
            ),
            spec(
                "edit_file",
                "Replace one exact occurrence of `old` with `new` in a workspace file.",
                json!({"type": "object", "properties": {
                    "path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}
                }, "required": ["path", "old", "new"]}),
            ),
            spec(
                "notebook_read",
                "Read your notebook: your memory across sessions.",
                json!({"type": "object", "properties": {}}),
            ),
            spec(
                "notebook_update",
                "Update your notebook (shown to you at the start of every fresh session). Keep \
                 what you tried, what worked, numbers, and next steps.",
                json!({"type": "object", "properties": {
                    "content": {"type": "string"},
                    "mode": {"type": "string", "enum": ["replace", "append"]}
                }, "required": ["content"]}),
            ),
        ];
        if self.server.is_some() {
            specs.extend([
                spec(
                    "list_tasks",
                    "List the tasks with their test sizes and fixed baselines: the weak teacher's, the \
                     ceiling's and vanilla transfer's mean public-test accuracy (vanilla is \
                     what a method has to beat).",
                    json!({"type": "object", "properties": {}}),
                ),
                spec(
                    "evaluate",
                    "Score predictions for a task's public test split on the research server. \
                     `predictions_file` is a workspace file with a JSON array of 0/1 (or one 0/1 \
                     per line), one per test example in file order. Answers are rounded and \
                     budgeted: evaluations are limited, use them for real candidates. This is \
                     for exploring; leaderboard entries are scored by the server's verifier \
                     (create_entry), not by evaluations.",
                    json!({"type": "object", "properties": {
                        "task": {"type": "string"},
                        "predictions_file": {"type": "string"},
                        "private_predictions_file": {"type": "string", "description": "optional, for the private split's inputs (default: the `private_predictions` field of an `aar run-method` output)"}
                    }, "required": ["task", "predictions_file"]}),
                ),
                spec(
                    "create_entry",
                    "Enter a method on the leaderboard. An entry is a method, never a number: \
                     a method directory (aar-method.json at its root; run `aar method check DIR` \
                     first) uploaded with upload_snapshot, whose `snapshot_id` is required. The \
                     server re-runs the snapshot in a fresh sandbox once per declared seed (3 to \
                     32, all declared up front) on the public test, the private test and the \
                     transfer set, and scores each run itself; the leaderboard shows the mean and \
                     standard error. Private-test and transfer scores are never shown to agents \
                     while the campaign runs; an entry's public score reaches its author only \
                     through the Ladder (released like an evaluation, when it beats your best by \
                     a step). Entries are budgeted: enter finished methods, not experiments. Declare \
                     every seed you have evaluated this method with: undeclared seeds you \
                     evaluated are flagged as cherry-picking.",
                    json!({"type": "object", "properties": {
                        "task": {"type": "string"},
                        "snapshot_id": {"type": "string", "description": "the uploaded method directory (upload_snapshot's answer)"},
                        "seeds": {"type": "array", "items": {"type": "integer"}, "description": "3 to 32 distinct seeds in 0..=1000000, each run once by the verifier ($AAR_SEED)"},
                        "method": {"type": "string", "description": "optional display name (default: the manifest's name)"},
                        "post_id": {"type": "integer", "description": "optional: the finding behind it"}
                    }, "required": ["task", "snapshot_id", "seeds"]}),
                ),
                spec(
                    "share_finding",
                    "Post a finding to the shared forum (kind: result, insight, hypothesis or \
                     error). Cite evaluation ids and snapshot ids as evidence; scores come only \
                     from cited evaluations.",
                    json!({"type": "object", "properties": {
                        "kind": {"type": "string", "enum": ["result", "insight", "hypothesis", "error"]},
                        "title": {"type": "string"}, "body": {"type": "string"},
                        "task": {"type": "string"},
                        "evaluations": {"type": "array", "items": {"type": "integer"}},
                        "snapshots": {"type": "array", "items": {"type": "string"}}
                    }, "required": ["kind", "title", "body"]}),
                ),
                spec(
                    "search_findings",
                    "Search the forum's findings (posts by all researchers).",
                    json!({"type": "object", "properties": {
                        "query": {"type": "string"}, "kind": {"type": "string"},
                        "task": {"type": "string"},
                        "sort": {"type": "string", "enum": ["new", "top", "discussed"]},
                        "limit": {"type": "integer"}
                    }}),
                ),
                spec(
                    "read_finding",
                    "Read one forum post with its links and comments.",
                    json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}),
                ),
                spec(
                    "leaderboard",
                    "The leaderboard of a task (server-computed scores only).",
                    json!({"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}),
                ),
                spec(
                    "upload_snapshot",
                    "Upload a directory of your workspace (default: all of it) to the shared code \
                     store; returns its content-addressed `snapshot_id`. Only regular files are \
                     included, with paths relative to that directory: to enter a method, upload \
                     its method directory (`path`), so aar-method.json is at the snapshot's root.",
                    json!({"type": "object", "properties": {
                        "path": {"type": "string"}, "message": {"type": "string"},
                        "parent": {"type": "string"}
                    }, "required": ["message"]}),
                ),
                spec(
                    "download_snapshot",
                    "Download a snapshot from the code store and unpack it into a workspace directory.",
                    json!({"type": "object", "properties": {
                        "id": {"type": "string"}, "dest": {"type": "string"}
                    }, "required": ["id", "dest"]}),
                ),
            ]);
        }
        specs
    }

    /// Runs one tool call.
    pub async fn call(&self, name: &str, input: &Value) -> ToolOutput {
        let result = match name {
            "shell" => self.shell(input).await,
            "read_file" => self.read_file(input),
            "write_file" => self.write_file(input),
            "edit_file" => self.edit_file(input),
            "notebook_read" => self
                .notebook
                .read()
                .map(|t| {
                    if t.is_empty() {
                        ToolOutput::ok("(the notebook is empty)")
                    } else {
                        ToolOutput::ok(t)
                    }
                })
                .map_err(|e| e.to_string()),
            "notebook_update" => self.notebook_update(input),
            _ => match &self.server {
                Some(server) => self.server_tool(server, name, input).await,
                None => Err(format!("unknown tool `{name}`")),
            },
        };
        result.unwrap_or_else(ToolOutput::err)
    }

    async fn shell(&self, input: &Value) -> Result<ToolOutput, String> {
        let command = str_arg(input, "command")?;
        let timeout = input["timeout_seconds"]
            .as_u64()
            .map(Duration::from_secs)
            .map(|t| t.min(self.limits.shell_timeout));
        let output = self
            .sandbox
            .run(command, timeout)
            .await
            .map_err(|e| format!("the sandbox failed: {e}"))?;
        let report = output.report(&self.sandbox.config().limits);
        Ok(ToolOutput {
            content: report,
            is_error: !output.success(),
        })
    }

    fn read_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let path = str_arg(input, "path")?;
        let offset = input["offset"].as_u64().unwrap_or(0);
        let (bytes, size) = self
            .workspace
            .read(path, offset, self.limits.read_bytes)
            .map_err(|e| e.to_string())?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        let end = offset.saturating_add(bytes.len() as u64);
        if end < size {
            text += &format!(
                "\n[file is {size} bytes; showed bytes {offset}..{end}; read on with offset {end}]"
            );
        }
        Ok(ToolOutput::ok(text))
    }

    fn write_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let path = str_arg(input, "path")?;
        let content = str_arg(input, "content")?;
        self.check_write_size(content.len())?;
        self.workspace
            .write(path, content.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(ToolOutput::ok(format!(
            "wrote {} bytes to {path}",
            content.len()
        )))
    }

    fn check_write_size(&self, len: usize) -> Result<(), String> {
        if len as u64 > self.limits.write_bytes {
            return Err(format!(
                "content is {len} bytes; at most {} (write large files with the shell)",
                self.limits.write_bytes
            ));
        }
        Ok(())
    }

    fn edit_file(&self, input: &Value) -> Result<ToolOutput, String> {
        let path = str_arg(input, "path")?;
        let old = str_arg(input, "old")?;
        let new = str_arg(input, "new")?;
        if old.is_empty() {
            return Err("`old` is empty".to_owned());
        }
        let (bytes, size) = self
            .workspace
            .read(path, 0, self.limits.write_bytes.saturating_add(1))
            .map_err(|e| e.to_string())?;
        if size > self.limits.write_bytes {
            return Err(format!("{path} is too large to edit ({size} bytes)"));
        }
        let text = String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))?;
        let count = text.matches(old).count();
        if count != 1 {
            return Err(format!(
                "`old` occurs {count} times in {path}; it must occur exactly once"
            ));
        }
        let edited = text.replacen(old, new, 1);
        self.check_write_size(edited.len())?;
        self.workspace
            .write(path, edited.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(ToolOutput::ok(format!("edited {path}")))
    }

    fn notebook_update(&self, input: &Value) -> Result<ToolOutput, String> {
        let content = str_arg(input, "content")?;
        let append = match input["mode"].as_str() {
            None | Some("replace") => false,
            Some("append") => true,
            Some(other) => return Err(format!("mode {other:?} is neither replace nor append")),
        };
        let size = self.notebook.update(content, append)?;
        Ok(ToolOutput::ok(format!("notebook saved ({size} bytes)")))
    }

    fn read_predictions(&self, rel: &str) -> Result<Vec<u8>, String> {
        let text = self.read_predictions_text(rel)?;
        parse_predictions(&text).map_err(|e| format!("{rel}: {e}"))
    }

    /// The `private_predictions` of a run-method output object, if it has them;
    /// a plain list of predictions has none.
    fn read_embedded_private_predictions(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        let text = self.read_predictions_text(rel)?;
        if !text.trim_start().starts_with('{') {
            return Ok(None);
        }
        let object: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("{rel}: not a JSON object: {e}"))?;
        if object.get("private_predictions").is_none_or(Value::is_null) {
            return Ok(None);
        }
        parse_prediction_field(&text, "private_predictions")
            .map(Some)
            .map_err(|e| format!("{rel}: {e}"))
    }

    fn read_predictions_text(&self, rel: &str) -> Result<String, String> {
        let (bytes, size) = self
            .workspace
            .read(rel, 0, self.limits.predictions_bytes.saturating_add(1))
            .map_err(|e| e.to_string())?;
        if size > self.limits.predictions_bytes {
            return Err(format!("{rel} is {size} bytes; too large"));
        }
        String::from_utf8(bytes).map_err(|_| format!("{rel} is not text"))
    }

    async fn server_tool(
        &self,
        server: &ServerClient,
        name: &str,
        input: &Value,
    ) -> Result<ToolOutput, String> {
        let answer = match name {
            "list_tasks" => server.tasks().await,
            "evaluate" => {
                let task = str_arg(input, "task")?;
                let file = str_arg(input, "predictions_file")?;
                let predictions = self.read_predictions(file)?;
                let private = match input["private_predictions_file"].as_str() {
                    Some(private_file) => Some(self.read_predictions(private_file)?),
                    // `aar run-method` writes both into one object.
                    None => self.read_embedded_private_predictions(file)?,
                };
                let entry = input["entry_id"].as_i64().zip(input["seed"].as_i64());
                server
                    .evaluate(task, &predictions, private.as_deref(), entry)
                    .await
            }
            "create_entry" => {
                let seeds: Vec<i64> = input["seeds"]
                    .as_array()
                    .ok_or("missing array argument `seeds`")?
                    .iter()
                    .map(|seed| seed.as_i64().ok_or("a seed is an integer"))
                    .collect::<Result<_, _>>()?;
                let entry = NewEntry {
                    task: str_arg(input, "task")?.to_owned(),
                    snapshot_id: str_arg(input, "snapshot_id")?.to_owned(),
                    seeds,
                    method: opt_str(input, "method"),
                    post_id: input["post_id"].as_i64(),
                };
                server.create_entry(&entry).await
            }
            "share_finding" => {
                let ints = |name: &str| -> Vec<i64> {
                    input[name]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_i64)
                        .collect()
                };
                let post = NewPost {
                    kind: str_arg(input, "kind")?.to_owned(),
                    title: str_arg(input, "title")?.to_owned(),
                    body: str_arg(input, "body")?.to_owned(),
                    task: opt_str(input, "task"),
                    evaluations: ints("evaluations"),
                    snapshots: input["snapshots"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                };
                server.create_post(&post).await
            }
            "search_findings" => {
                let query = PostQuery {
                    q: opt_str(input, "query"),
                    kind: opt_str(input, "kind"),
                    task: opt_str(input, "task"),
                    sort: opt_str(input, "sort"),
                    limit: input["limit"].as_i64(),
                };
                server.list_posts(&query).await
            }
            "read_finding" => {
                let id = input["id"]
                    .as_i64()
                    .ok_or("missing integer argument `id`")?;
                server.get_post(id).await
            }
            "leaderboard" => server.leaderboard(str_arg(input, "task")?).await,
            "upload_snapshot" => {
                let dir = input["path"].as_str().unwrap_or(".");
                let message = str_arg(input, "message")?;
                let root = self.workspace.resolve(dir).map_err(|e| e.to_string())?;
                let max = self.limits.snapshot_bytes;
                let archive = tokio::task::spawn_blocking(move || pack(&root, max))
                    .await
                    .map_err(|e| e.to_string())??;
                server
                    .upload_snapshot(archive, message, input["parent"].as_str())
                    .await
            }
            "download_snapshot" => {
                let id = str_arg(input, "id")?;
                let dest = str_arg(input, "dest")?;
                let archive = server
                    .download_snapshot(id)
                    .await
                    .map_err(|e| e.to_string())?;
                if archive.len() as u64 > self.limits.snapshot_bytes {
                    return Err(format!("snapshot is {} bytes; too large", archive.len()));
                }
                let workspace = self.workspace.clone();
                let dest_owned = dest.to_owned();
                let max = self.limits.snapshot_bytes.saturating_mul(8);
                let files = tokio::task::spawn_blocking(move || {
                    unpack(&workspace, &dest_owned, &archive, max)
                })
                .await
                .map_err(|e| e.to_string())??;
                return Ok(ToolOutput::ok(format!(
                    "unpacked {files} files of snapshot {id} into {dest}"
                )));
            }
            other => return Err(format!("unknown tool `{other}`")),
        };
        answer
            .map(|v| ToolOutput::ok(pretty(&v)))
            .map_err(|e| e.to_string())
    }
}

/// A `.tar.gz` of the regular files under `root` (symbolic links and other
/// kinds are left out, so nothing outside the workspace is read).
fn pack(root: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", rel.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = rel.join(entry.file_name());
            let meta = entry.path().symlink_metadata().map_err(|e| e.to_string())?;
            if meta.is_dir() {
                stack.push(name);
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
                if total > max_bytes {
                    return Err(format!("the directory holds more than {max_bytes} bytes"));
                }
                let file = open_beneath(root, &name, OFlags::RDONLY)
                    .map_err(|e| format!("{}: {e}", name.display()))?;
                let mut header = tar::Header::new_gnu();
                header.set_size(meta.len());
                header.set_mode(0o644);
                header.set_cksum();
                builder
                    .append_data(&mut header, &name, file.take(meta.len()))
                    .map_err(|e| format!("{}: {e}", name.display()))?;
            }
        }
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .map_err(|e| e.to_string())
}

/// Unpacks regular files of `archive` under `dest` in the workspace, every
/// path resolved through [`Workspace::resolve`]; returns how many.
fn unpack(
    workspace: &Workspace,
    dest: &str,
    archive: &[u8],
    max_bytes: u64,
) -> Result<usize, String> {
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut total = 0u64;
    let mut files = 0usize;
    for entry in reader.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let kind = entry.header().entry_type();
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let rel = format!("{}/{}", dest.trim_end_matches('/'), path.display());
        match kind {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut bytes = Vec::new();
                entry
                    .take(max_bytes.saturating_sub(total).saturating_add(1))
                    .read_to_end(&mut bytes)
                    .map_err(|e| e.to_string())?;
                total = total.saturating_add(bytes.len() as u64);
                if total > max_bytes {
                    return Err(format!("snapshot unpacks to more than {max_bytes} bytes"));
                }
                workspace.write(&rel, &bytes).map_err(|e| e.to_string())?;
                files += 1;
            }
            other => {
                return Err(format!(
                    "{}: entries of kind {other:?} are refused",
                    path.display()
                ));
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race the path check cannot see: a directory swapped for a link to the host's
    /// files after `resolve`. The kernel refuses it; links that stay inside still work.
    #[test]
    fn open_beneath_refuses_a_link_out_in_any_component() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "HOST-SECRET").unwrap();
        std::fs::write(root.join("sub/a.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("swapped")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("alias")).unwrap();
        for rel in ["swapped/secret.txt", "../outside/secret.txt"] {
            let err = open_beneath(&root, Path::new(rel), OFlags::RDONLY).unwrap_err();
            assert!(
                err.to_string().contains("out of the workspace") || rel.starts_with(".."),
                "{rel}: {err}"
            );
        }
        let created = create_dirs_beneath(&root, Path::new("swapped/new"));
        assert!(created.is_err() && !outside.join("new").exists());
        let mut text = String::new();
        open_beneath(&root, Path::new("alias/a.txt"), OFlags::RDONLY)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "inside");
    }

    #[test]
    fn predictions_parse_from_arrays_lines_and_run_method_output() {
        assert_eq!(parse_predictions("[0, 1, 1]"), Ok(vec![0, 1, 1]));
        assert_eq!(parse_predictions("1\n0\n"), Ok(vec![1, 0]));
        let output = r#"{"task": "t", "predictions": [1, 0], "private_predictions": [0, 0, 1]}"#;
        assert_eq!(parse_predictions(output), Ok(vec![1, 0]));
        assert_eq!(
            parse_prediction_field(output, "private_predictions"),
            Ok(vec![0, 0, 1])
        );
        assert!(parse_prediction_field(r#"{"predictions": [1]}"#, "private_predictions").is_err());
        assert!(parse_predictions("[0, 2]").unwrap_err().contains("item 1"));
        assert!(parse_predictions(r#"{"predictions": [0.5]}"#).is_err());
    }
}
