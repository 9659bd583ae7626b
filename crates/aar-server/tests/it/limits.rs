//! Oversized MCP calls against the real server process: refused with 413
//! (early by `Content-Length`, or once a chunked body passes the limit)
//! while `/health` keeps answering within a second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Http, ServerProcess, issue_agent, write_task};

/// Bytes each oversized call tries to send: 20 times the 2 MiB limit.
const OVERSIZED: usize = 40_000_000;
const PIECE: usize = 64 << 10;

/// How the oversized body is framed.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `Content-Length: 40000000`, the body sent at once.
    Declared,
    /// `Transfer-Encoding: chunked`, no length, sent slowly (a piece every 5 ms).
    ChunkedSlowly,
}

/// The start of an `upload_snapshot` call whose base64 never ends.
fn envelope() -> String {
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"upload_snapshot","arguments":{"message":"big","archive_base64":""#.to_owned()
}

/// Sends an oversized MCP call on its own connection (the body from a
/// second thread, so the answer is read as soon as it comes); returns the
/// status and how long the answer took.
fn oversized_call(
    addr: SocketAddr,
    token: String,
    framing: Framing,
) -> JoinHandle<(u16, Duration)> {
    std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        );
        head += match framing {
            Framing::Declared => format!("Content-Length: {OVERSIZED}\r\n\r\n"),
            Framing::ChunkedSlowly => "Transfer-Encoding: chunked\r\n\r\n".to_owned(),
        }
        .as_str();
        let started = Instant::now();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            // Errors end the sending: the server may close once it has answered.
            let _ = writer.write_all(head.as_bytes());
            let mut body = envelope().into_bytes();
            body.resize(OVERSIZED, b'A');
            for piece in body.chunks(PIECE) {
                let sent = match framing {
                    Framing::Declared => writer.write_all(piece),
                    Framing::ChunkedSlowly => {
                        std::thread::sleep(Duration::from_millis(5));
                        writer
                            .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                            .and_then(|()| writer.write_all(piece))
                            .and_then(|()| writer.write_all(b"\r\n"))
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        let mut status_line = String::new();
        BufReader::new(stream).read_line(&mut status_line).unwrap();
        let took = started.elapsed();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{framing:?}: no status in {status_line:?}"));
        sender.join().unwrap();
        (status, took)
    })
}

#[test]
fn oversized_mcp_calls_are_refused_while_health_keeps_answering() {
    let bin = Path::new(env!("CARGO_BIN_EXE_aar-research-server"));
    let dir = tempfile::tempdir().unwrap();
    let task_root = dir.path().join("tasks");
    write_task(&task_root, "math", 200);
    let db = format!("sqlite://{}", dir.path().join("aar.db").display());
    let server = ServerProcess::start(bin, &db, &task_root, &[]);
    let addr = server.addr;
    let token = issue_agent(addr, "big-sender");

    let calls = [
        oversized_call(addr, token.clone(), Framing::Declared),
        oversized_call(addr, token.clone(), Framing::ChunkedSlowly),
    ];
    let mut health = Http::connect(addr).unwrap();
    let (mut checks, mut slowest) = (0, Duration::ZERO);
    let started = Instant::now();
    // Ask /health throughout, and for a second more.
    while calls.iter().any(|c| !c.is_finished()) || started.elapsed() < Duration::from_secs(1) {
        let asked = Instant::now();
        let (status, _) = health.request("GET", "/health", None, None).unwrap();
        let took = asked.elapsed();
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_secs(1),
            "/health took {took:?} during oversized MCP calls"
        );
        slowest = slowest.max(took);
        checks += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the oversized calls never ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (call, framing) in calls.into_iter().zip(["declared", "chunked"]) {
        let (status, took) = call.join().unwrap();
        assert_eq!(status, 413, "{framing} oversized MCP call");
        assert!(
            took < Duration::from_secs(10),
            "{framing}: answered after {took:?}"
        );
    }
    assert!(checks >= 10, "only {checks} health checks");

    // The server is still whole: a normal MCP call is answered.
    let mut http = Http::connect(addr).unwrap();
    let list = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#;
    let (status, body) = mcp_request(&mut http, &token, list);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("upload_snapshot"), "{body}");
    eprintln!("oversized MCP calls: {checks} health checks, slowest {slowest:?}");
}

/// One MCP POST over a keep-alive connection.
fn mcp_request(http: &mut Http, token: &str, body: &[u8]) -> (u16, String) {
    let (status, bytes) = http
        .request_with_headers(
            "POST",
            "/mcp",
            Some(token),
            Some(("application/json", body)),
            &[("Accept", "application/json, text/event-stream")],
        )
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
