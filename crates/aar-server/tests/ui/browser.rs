//! A headless-Chromium harness for browser tests, driven over WebDriver.
//!
//! [`Browser::start`] launches Debian's `chromedriver` on a free localhost port,
//! opens a session with headless Chromium (`/usr/bin/chromium`) and keeps every
//! file either process writes (profile, home, temporary files, driver log) in
//! one temporary directory, removed on drop. Missing binaries are a panic that
//! names the fix (`bash scripts/setup.sh --test`): these tests never skip.
//!
//! Browser console output is collected through chromedriver's log endpoint, so
//! [`Browser::console_errors`] sees `console.error` calls, uncaught exceptions,
//! failed loads and Content-Security-Policy violations.

// The test binary allows these for its tests; the harness itself reports errors.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The Chromium binary the session drives (Debian's `chromium` package).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package installs `chromedriver`, used when
/// it is not on `PATH`.
pub const CHROMEDRIVER_FALLBACK: &str = "/usr/bin/chromedriver";
/// Viewport width in CSS pixels after [`Browser::start`] (screenshots have it).
pub const VIEWPORT_WIDTH: u32 = 1280;
/// Viewport height in CSS pixels after [`Browser::start`] (screenshots have it).
pub const VIEWPORT_HEIGHT: u32 = 900;
/// How long `chromedriver` may take to answer `/status` with `ready: true`.
pub const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Log endpoints for the browser console, in the order tried: chromedriver's
/// current path, then the legacy JSON-wire path (both drain the same buffer).
const LOG_ENDPOINTS: [&str; 2] = ["se/log", "log"];
/// Attempts at starting `chromedriver`, each on a fresh port (another process
/// may take the port between choosing it and the driver binding it).
const DRIVER_START_ATTEMPTS: usize = 3;
/// Interval between polls in [`Browser::wait_for_text`] and driver start-up.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// `chromedriver` did not start or did not become ready.
    #[error("chromedriver did not start: {0}")]
    Driver(String),
    /// The WebDriver session with Chromium could not be created.
    #[error("could not open a Chromium session: {0}")]
    Session(#[from] fantoccini::error::NewSessionError),
    /// A WebDriver command failed.
    #[error("WebDriver command failed: {0}")]
    Command(#[from] fantoccini::error::CmdError),
    /// A wait ran out of time.
    #[error("timed out after {timeout:?}: {what}")]
    Timeout {
        /// What was being waited for, and the last state seen.
        what: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The window could not be resized to the requested viewport.
    #[error("could not size the viewport: {0}")]
    Viewport(String),
    /// The browser log had an unexpected shape.
    #[error("unexpected browser log response: {0}")]
    Log(String),
    /// A local I/O operation (temporary directory, process spawn) failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One entry of the browser console log, as chromedriver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO` or `DEBUG`.
    pub level: String,
    /// Where the entry came from: `console-api`, `javascript`, `network`,
    /// `security` (CSP violations), ...
    pub source: String,
    /// The text, usually prefixed with the URL and line:column of its origin.
    pub message: String,
}

impl LogEntry {
    /// Whether this entry counts as an error: a `SEVERE` entry or a security
    /// (Content-Security-Policy) report at any level.
    pub fn is_error(&self) -> bool {
        self.level == "SEVERE" || self.source == "security"
    }
}

/// A running `chromedriver` and headless Chromium session.
///
/// Dropping it ends the session (so Chromium exits), kills `chromedriver` and
/// removes the temporary directory; [`Browser::close`] does the same with
/// errors reported.
pub struct Browser {
    client: Client,
    session_id: Option<String>,
    driver: Driver,
    /// Dropped after `driver` (field order), once nothing writes into it.
    dir: TempDir,
    /// The index in [`LOG_ENDPOINTS`] of the log endpoint that last worked.
    log_endpoint: AtomicUsize,
    closed: bool,
}

impl Browser {
    /// Starts `chromedriver` and opens a headless Chromium session.
    ///
    /// # Panics
    ///
    /// When `chromedriver` or Chromium is not installed: run
    /// `bash scripts/setup.sh --test`.
    pub async fn start() -> Result<Self, BrowserError> {
        let chromedriver = find_chromedriver();
        if !Path::new(CHROMIUM).is_file() {
            panic!(
                "Chromium not found at {CHROMIUM}: run `bash scripts/setup.sh --test` \
                 (installs Debian's chromium and chromium-driver)"
            );
        }
        let dir = tempfile::Builder::new().prefix("aar-ui-").tempdir()?;
        let driver = Driver::start(&chromedriver, dir.path()).await?;

        let profile = dir.path().join("profile");
        let args = vec![
            "--headless=new".to_owned(),
            // The tests run as root, where Chromium's sandbox refuses to start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // The outer window; `set_viewport` then sizes the page area exactly.
            format!("--window-size={VIEWPORT_WIDTH},{VIEWPORT_HEIGHT}"),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-extensions".to_owned(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("json! of an object literal is an object");
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await?;
        let session_id = match client.session_creation_response() {
            Some(response) => Some(response.session_id().to_owned()),
            None => client.session_id().await?,
        };
        // Built before anything else can fail, so that drop ends the session.
        let browser = Self {
            client,
            session_id,
            driver,
            dir,
            log_endpoint: AtomicUsize::new(0),
            closed: false,
        };
        browser
            .set_viewport(VIEWPORT_WIDTH, VIEWPORT_HEIGHT)
            .await?;
        Ok(browser)
    }

    /// Resizes the window so that the viewport (the page area, what
    /// [`Browser::screenshot_png`] captures) is `width` x `height` CSS pixels.
    /// Headless Chromium's `--window-size` sizes the outer window, whose
    /// browser UI takes some height.
    pub async fn set_viewport(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        let mut inner = (0, 0);
        for _ in 0..3 {
            let size = self
                .client
                .execute("return [window.innerWidth, window.innerHeight];", vec![])
                .await?;
            inner = (
                size[0].as_u64().unwrap_or_default(),
                size[1].as_u64().unwrap_or_default(),
            );
            if inner == (u64::from(width), u64::from(height)) {
                return Ok(());
            }
            let (outer_width, outer_height) = self.client.get_window_size().await?;
            let outer = |outer: u64, want: u32, have: u64| {
                u32::try_from((outer + u64::from(want)).saturating_sub(have)).unwrap_or(want)
            };
            self.client
                .set_window_size(
                    outer(outer_width, width, inner.0),
                    outer(outer_height, height, inner.1),
                )
                .await?;
        }
        Err(BrowserError::Viewport(format!(
            "wanted {width}x{height}, still {}x{} after resizing",
            inner.0, inner.1
        )))
    }

    /// The underlying WebDriver client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The process id of the Chromium browser process, as chromedriver
    /// reports it (`goog:processID`).
    pub fn chromium_pid(&self) -> Option<u32> {
        self.client
            .capabilities()?
            .get("goog:processID")?
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
    }

    /// The temporary directory holding the profile and `chromedriver.log`.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        Ok(self.client.goto(url).await?)
    }

    /// All browser console entries logged since the previous call to this or
    /// [`Browser::console_errors`] (reading drains chromedriver's buffer).
    pub async fn console_entries(&self) -> Result<Vec<LogEntry>, BrowserError> {
        let start = self.log_endpoint.load(Ordering::Relaxed);
        let mut first_error = None;
        for offset in 0..LOG_ENDPOINTS.len() {
            let index = (start + offset) % LOG_ENDPOINTS.len();
            let command = BrowserLog {
                path: LOG_ENDPOINTS[index],
            };
            match self.client.issue_cmd(command).await {
                Ok(value) => {
                    self.log_endpoint.store(index, Ordering::Relaxed);
                    return parse_log(value);
                }
                Err(e) if e.is_unknown_command() || e.is_unknown_method() => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Err(BrowserError::Log("no log endpoint to try".to_owned())),
        }
    }

    /// The browser console's errors since the previous call: `SEVERE` entries
    /// (`console.error`, uncaught exceptions, failed loads) and
    /// Content-Security-Policy violations, each as its message text.
    pub async fn console_errors(&self) -> Result<Vec<String>, BrowserError> {
        Ok(self
            .console_entries()
            .await?
            .into_iter()
            .filter(LogEntry::is_error)
            .map(|entry| entry.message)
            .collect())
    }

    /// A PNG screenshot of the viewport.
    pub async fn screenshot_png(&self) -> Result<Vec<u8>, BrowserError> {
        Ok(self.client.screenshot().await?)
    }

    /// Polls the text of the first element matching `css` until `predicate`
    /// accepts it, and returns that text. A missing element counts as not yet.
    pub async fn wait_for_text(
        &self,
        css: &str,
        predicate: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String, BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.client.find(Locator::Css(css)).await {
                Ok(element) => match element.text().await {
                    Ok(text) if predicate(&text) => return Ok(text),
                    Ok(text) => format!("text {text:?}"),
                    Err(e) if e.is_stale_element_reference() => "a stale element".to_owned(),
                    Err(e) => return Err(e.into()),
                },
                Err(e) if e.is_no_such_element() => "no such element".to_owned(),
                Err(e) => return Err(e.into()),
            };
            if Instant::now() >= deadline {
                return Err(BrowserError::Timeout {
                    what: format!("text of {css:?} to match (last seen: {last})"),
                    timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Ends the session (Chromium exits) and stops `chromedriver`.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        self.closed = true;
        let result = self.client.clone().close().await;
        self.driver.stop();
        Ok(result?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            // Chromium outlives a killed chromedriver, so end the session
            // first; synchronously, as a test that panicked cannot await.
            if let Some(id) = &self.session_id {
                delete_session(self.driver.addr, id);
            }
        }
        self.driver.stop();
    }
}

/// A `chromedriver` process, killed on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
    url: String,
}

impl Driver {
    /// Spawns `chromedriver` on a free port and waits until it is ready; all
    /// it and Chromium write goes under `dir`.
    async fn start(chromedriver: &Path, dir: &Path) -> Result<Self, BrowserError> {
        for sub in ["home", "tmp", "config", "cache"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let log = dir.join("chromedriver.log");
        let mut last_failure = String::new();
        for _ in 0..DRIVER_START_ATTEMPTS {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                // Keep Chromium's and the driver's stray files in the temporary
                // directory: home, XDG directories, and temporary files.
                .env("HOME", dir.join("home"))
                .env("XDG_CONFIG_HOME", dir.join("config"))
                .env("XDG_CACHE_HOME", dir.join("cache"))
                .env("TMPDIR", dir.join("tmp"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    BrowserError::Driver(format!("spawning {}: {e}", chromedriver.display()))
                })?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut driver = Self {
                child,
                addr,
                url: format!("http://{addr}/"),
            };
            match driver.wait_ready().await {
                Ok(()) => return Ok(driver),
                Err(failure) => {
                    driver.stop();
                    last_failure = format!("{failure}; log:\n{}", tail(&log, 20));
                }
            }
        }
        Err(BrowserError::Driver(format!(
            "{} attempt(s) failed, the last: {last_failure}",
            DRIVER_START_ATTEMPTS
        )))
    }

    /// Polls `GET /status` until it reports `ready: true`.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("chromedriver exited early ({status})"));
            }
            let addr = self.addr;
            let probe = tokio::task::spawn_blocking(move || {
                http_request(addr, "GET", "/status", Duration::from_secs(2))
            });
            let last = match probe.await {
                Ok(Ok(body)) => match serde_json::from_str::<Value>(&body) {
                    Ok(status) if status["value"]["ready"] == Value::Bool(true) => return Ok(()),
                    Ok(status) => format!("not ready: {status}"),
                    Err(e) => format!("unparsable /status ({e}): {body}"),
                },
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} /status not ready within {DRIVER_START_TIMEOUT:?} (last: {last})",
                    self.url
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Kills and reaps the process (idempotent).
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds `chromedriver` on `PATH` or at [`CHROMEDRIVER_FALLBACK`].
///
/// # Panics
///
/// When it is in neither place.
fn find_chromedriver() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromedriver"))
            .find(|candidate| candidate.is_file())
    });
    match on_path {
        Some(found) => found,
        None if Path::new(CHROMEDRIVER_FALLBACK).is_file() => PathBuf::from(CHROMEDRIVER_FALLBACK),
        None => panic!(
            "chromedriver not found on PATH or at {CHROMEDRIVER_FALLBACK}: run \
             `bash scripts/setup.sh --test` (installs Debian's chromium and chromium-driver)"
        ),
    }
}

/// The browser console log command: `POST /session/{id}/{path}` with
/// `{"type": "browser"}`.
#[derive(Debug)]
struct BrowserLog {
    path: &'static str,
}

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        // Without a session chromedriver answers "invalid session id".
        let id = session_id.unwrap_or_default();
        base_url.join(&format!("session/{id}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

/// Turns the log command's value (an array of entries) into [`LogEntry`]s.
fn parse_log(value: Value) -> Result<Vec<LogEntry>, BrowserError> {
    let Value::Array(entries) = value else {
        return Err(BrowserError::Log(format!("not an array: {value}")));
    };
    entries
        .into_iter()
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap_or_default().to_owned();
            match entry["message"].as_str() {
                Some(message) => Ok(LogEntry {
                    level: field("level"),
                    source: field("source"),
                    message: message.to_owned(),
                }),
                None => Err(BrowserError::Log(format!(
                    "entry without a message: {entry}"
                ))),
            }
        })
        .collect()
}

/// Ends a WebDriver session with a blocking request, errors ignored: used on
/// drop, where nothing can be awaited.
fn delete_session(addr: SocketAddr, session_id: &str) {
    let path = format!("/session/{session_id}");
    let _ = http_request(addr, "DELETE", &path, Duration::from_secs(10));
}

/// A minimal blocking HTTP/1.1 request to chromedriver, returning the body of
/// a `200` response. The body is read by `Content-Length`: chromedriver sends
/// `Connection: close` but keeps the connection open.
fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let incomplete = || std::io::Error::other("incomplete HTTP response");
    let mut response = Vec::new();
    let mut chunk = [0; 4096];
    let (head, body_start) = loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(incomplete());
        }
        response.extend_from_slice(&chunk[..read]);
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&response[..end]).into_owned(),
                end + 4,
            );
        }
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("HTTP status {status:?}")));
    }
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .ok_or_else(|| std::io::Error::other("HTTP response without Content-Length"))?;
    while response.len() < body_start + length {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(incomplete());
        }
        response.extend_from_slice(&chunk[..read]);
    }
    Ok(String::from_utf8_lossy(&response[body_start..body_start + length]).into_owned())
}

/// The last `lines` lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
