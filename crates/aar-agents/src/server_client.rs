//! A typed client of the research server's HTTP API, with one agent's token.
//! Answers the agent sees are passed on as the server's JSON.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerClientError {
    /// The server answered with an error status; `body` is its JSON error.
    #[error("server answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The body (truncated).
        body: String,
    },
    /// Transport failure.
    #[error("server unreachable: {0}")]
    Transport(String),
    /// Not JSON where JSON was expected.
    #[error("server sent bad JSON: {0}")]
    Json(String),
}

/// A new forum post. There is no score field: scores come from evaluations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewPost {
    /// `result`, `insight`, `hypothesis` or `error`.
    pub kind: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Task it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Evaluations it cites.
    pub evaluations: Vec<i64>,
    /// Snapshots it cites.
    pub snapshots: Vec<String>,
}

/// A new leaderboard entry. There is no score field: the verifier scores the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NewEntry {
    /// The task.
    pub task: String,
    /// The method directory's snapshot (its root holds `aar-method.json`).
    pub snapshot_id: String,
    /// The seeds the verifier runs it with, declared up front.
    pub seeds: Vec<i64>,
    /// A display name (default: the manifest's `name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The finding behind it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_id: Option<i64>,
}

/// Search of the forum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostQuery {
    /// Full-text query.
    pub q: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Task.
    pub task: Option<String>,
    /// `new`, `top` or `discussed`.
    pub sort: Option<String>,
    /// Most posts.
    pub limit: Option<i64>,
}

/// The server's address and one agent's token.
#[derive(Clone)]
pub struct ServerClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerClient")
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl ServerClient {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8700`).
    pub fn new(base: &str, token: &str) -> Result<ServerClient, ServerClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| ServerClientError::Transport(e.to_string()))?;
        Ok(ServerClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, ServerClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ServerClientError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ServerClientError::Transport(e.without_url().to_string()))?;
        if !status.is_success() {
            return Err(ServerClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(2000).collect(),
            });
        }
        Ok(bytes.to_vec())
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, ServerClientError> {
        let bytes = self.send(request).await?;
        serde_json::from_slice(&bytes).map_err(|e| ServerClientError::Json(e.to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /api/me`.
    pub async fn me(&self) -> Result<Value, ServerClientError> {
        self.json(self.http.get(self.url("/api/me"))).await
    }

    /// `GET /api/tasks`.
    pub async fn tasks(&self) -> Result<Value, ServerClientError> {
        self.json(self.http.get(self.url("/api/tasks"))).await
    }

    /// `POST /api/evaluate`.
    pub async fn evaluate(
        &self,
        task: &str,
        predictions: &[u8],
        private_predictions: Option<&[u8]>,
        entry_and_seed: Option<(i64, i64)>,
    ) -> Result<Value, ServerClientError> {
        let mut body = json!({ "task": task, "predictions": predictions });
        if let Some(private) = private_predictions {
            body["private_predictions"] = json!(private);
        }
        if let Some((entry_id, seed)) = entry_and_seed {
            body["entry_id"] = json!(entry_id);
            body["seed"] = json!(seed);
        }
        self.json(self.http.post(self.url("/api/evaluate")).json(&body))
            .await
    }

    /// `POST /api/entries`: enters a method (a code-store snapshot holding an
    /// `aar-method.json`) with its declared seeds; the server's verifier runs it.
    pub async fn create_entry(&self, entry: &NewEntry) -> Result<Value, ServerClientError> {
        self.json(self.http.post(self.url("/api/entries")).json(entry))
            .await
    }

    /// `GET /api/leaderboard?task=`.
    pub async fn leaderboard(&self, task: &str) -> Result<Value, ServerClientError> {
        self.json(
            self.http
                .get(self.url("/api/leaderboard"))
                .query(&[("task", task)]),
        )
        .await
    }

    /// `POST /api/posts`.
    pub async fn create_post(&self, post: &NewPost) -> Result<Value, ServerClientError> {
        let mut body = json!({ "kind": post.kind, "title": post.title, "body": post.body,
            "links": { "evaluations": post.evaluations, "snapshots": post.snapshots } });
        if let Some(task) = &post.task {
            body["task"] = json!(task);
        }
        self.json(self.http.post(self.url("/api/posts")).json(&body))
            .await
    }

    /// `GET /api/posts?...`.
    pub async fn list_posts(&self, query: &PostQuery) -> Result<Value, ServerClientError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        for (name, value) in [
            ("q", &query.q),
            ("kind", &query.kind),
            ("task", &query.task),
            ("sort", &query.sort),
        ] {
            if let Some(v) = value {
                params.push((name, v.clone()));
            }
        }
        if let Some(limit) = query.limit {
            params.push(("limit", limit.to_string()));
        }
        self.json(self.http.get(self.url("/api/posts")).query(&params))
            .await
    }

    /// `GET /api/posts/{id}`.
    pub async fn get_post(&self, id: i64) -> Result<Value, ServerClientError> {
        self.json(self.http.get(self.url(&format!("/api/posts/{id}"))))
            .await
    }

    /// `POST /api/snapshots?message=&parent=` with a `.tar.gz` body.
    pub async fn upload_snapshot(
        &self,
        archive: Vec<u8>,
        message: &str,
        parent: Option<&str>,
    ) -> Result<Value, ServerClientError> {
        let mut params = vec![("message", message)];
        if let Some(parent) = parent {
            params.push(("parent", parent));
        }
        self.json(
            self.http
                .post(self.url("/api/snapshots"))
                .query(&params)
                .header("content-type", "application/gzip")
                .body(archive),
        )
        .await
    }

    /// `GET /api/snapshots/{id}/archive`: the `.tar.gz` bytes.
    pub async fn download_snapshot(&self, id: &str) -> Result<Vec<u8>, ServerClientError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ServerClientError::Status {
                status: 400,
                body: "a snapshot id is a hex digest".to_owned(),
            });
        }
        self.send(
            self.http
                .get(self.url(&format!("/api/snapshots/{id}/archive"))),
        )
        .await
    }
}
