//! Helpers shared by the process-level tests and the load benchmark: a task
//! fixture on disk, the server as a child process, a tiny keep-alive HTTP/1.1
//! client and a throwaway PostgreSQL server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "admin-token-for-process-tests-0123";

/// Writes a binary-format labeled task `name` under `root` with `n_test` test
/// rows; returns the test labels (0/1).
pub fn write_task(root: &Path, name: &str, n_test: usize) -> Vec<u8> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 10 < 6
    };
    let mut write = |file: &str, n: usize| -> Vec<u8> {
        let mut text = String::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = next();
            labels.push(u8::from(label));
            text += &format!("{{\"question\":\"q{i}\",\"choice\":\"c{i}\",\"label\":{label}}}\n");
        }
        std::fs::write(dir.join(file), text).unwrap();
        labels
    };
    write("train_label.jsonl", 20);
    write("train_unlabel.jsonl", 20);
    let labels = write("test.jsonl", n_test);
    std::fs::write(
        dir.join("baselines.json"),
        r#"{"weak":[0.60,0.61],"ceiling":[0.80,0.81]}"#,
    )
    .unwrap();
    labels
}

/// A free loopback port (bound then released).
pub use aar_testkit::free_port;

/// The server binary running as a child process.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `bin` and waits until `/health` answers.
    pub fn start(
        bin: &Path,
        database_url: &str,
        task_root: &Path,
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(bin);
        command
            .env("AAR_BIND", addr.to_string())
            .env("AAR_DATABASE_URL", database_url)
            .env("AAR_TASK_ROOT", task_root)
            .env("AAR_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut http) = Http::connect(addr)
                && let Ok((200, _)) = http.request("GET", "/health", None, None)
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("server exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ServerProcess { child, addr }
    }

    /// The server's process id (the load benchmark reads its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The server next to a benchmark example's binary (`target/<profile>/aar-research-server`)
/// on `database_url`, with budgets too large to refuse anything: the load benchmarks
/// measure the server, not its budgets.
pub fn start_unbudgeted(task_root: &Path, database_url: &str) -> Result<ServerProcess, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("aar-research-server"))
        .ok_or("no binary dir")?;
    if !bin.exists() {
        return Err(format!(
            "{} is missing: cargo build --release -p aar-server --bin aar-research-server",
            bin.display()
        ));
    }
    let big = "1000000000";
    let env = [
        ("AAR_BUDGET_AGENT_HOUR", big),
        ("AAR_BUDGET_AGENT_TOTAL", big),
        ("AAR_BUDGET_CAMPAIGN_HOUR", big),
        ("AAR_BUDGET_CAMPAIGN_TOTAL", big),
    ];
    Ok(ServerProcess::start(&bin, database_url, task_root, &env))
}

/// One keep-alive HTTP/1.1 connection.
pub struct Http {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

/// A request body: content type and bytes.
pub type Body<'a> = (&'a str, &'a [u8]);

impl Http {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Http> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Http {
            reader: BufReader::new(stream),
            addr,
        })
    }

    /// Sends a request and reads the whole response: (status, body).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Body<'_>>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        self.request_with_headers(method, path, token, body, &[])
    }

    /// [`Http::request`] with extra headers.
    pub fn request_with_headers(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Body<'_>>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(token) = token {
            head += &format!("Authorization: Bearer {token}\r\n");
        }
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", b""));
        head += &format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            bytes.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(bytes)?;
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }

    /// JSON in, JSON out.
    pub fn json(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        let text = body.map(|b| b.to_string());
        let (status, bytes) = self.request(
            method,
            path,
            token,
            text.as_deref().map(|t| ("application/json", t.as_bytes())),
        )?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// Registers an agent through the admin API; returns its token.
pub fn issue_agent(addr: SocketAddr, name: &str) -> String {
    let mut http = Http::connect(addr).unwrap();
    let (status, body) = http
        .json(
            "POST",
            "/api/admin/agents",
            Some(ADMIN_TOKEN),
            Some(&serde_json::json!({ "name": name })),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A throwaway PostgreSQL server (shared with the other crates' tests).
#[allow(unused_imports)] // not every binary including this file starts one
pub use aar_testkit::Postgres;

/// A small `.tar.gz` with one file whose content is `content`.
pub fn tiny_archive(content: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "work/notes.txt", content.as_bytes())
        .unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// Reads a whole response body as a string (for messages).
pub fn text(bytes: &[u8]) -> String {
    let mut s = String::new();
    let _ = (&bytes[..]).read_to_string(&mut s);
    s
}
