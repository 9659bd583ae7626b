//! The dashboard's pages. Each reads through the functions the JSON API uses and
//! renders with maud, which escapes every interpolated string.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::render::{self, Series, json_block, mean_se, num, page, time};
use super::{PageResult, UiError, UiSession};
use aar_store::ChainCheck;

use crate::AppState;
use crate::entries::{Viewer, build_leaderboard, build_review_queue, entry_view};
use crate::error::AppError;
use crate::researchers::{progress_series, researcher_overview, transcript_page};
use crate::snapshots::snapshot_files;

async fn agent_names(state: &AppState) -> Result<HashMap<String, String>, UiError> {
    Ok(state
        .store()
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

fn researcher_link(names: &HashMap<String, String>, agent_id: &str) -> Markup {
    let name = names.get(agent_id).map_or(agent_id, String::as_str);
    html! { a href=(format!("/ui/researchers/{agent_id}")) { (name) } }
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("badge state-{state}")) { (state.replace('_', " ")) } }
}

/// `GET /ui/`: researchers, their state and spend, the time left, PGR over time.
pub(crate) async fn campaign(State(state): State<AppState>, session: UiSession) -> PageResult {
    let overview = researcher_overview(&state).await?;
    let progress = progress_series(&state).await?;
    let closed = state.store().campaign_closed_at().await?;
    let researchers = overview["researchers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ends_at = researchers
        .iter()
        .filter_map(|r| r["status"]["campaign"]["ends_at_ms"].as_i64())
        .max();
    let body = html! {
        p.summary {
            @if let Some(at) = closed { "Closed at " (time(Some(at))) "." }
            @else if let Some(end) = ends_at {
                "Ends at " (time(Some(end))) " (" span #time-left data-ends-at=(end) { (minutes_left(end)) } ")."
            } @else { "Open." }
            " " (researchers.len()) " researchers."
        }
        (researcher_table(&researchers))
        h2 { "PGR over time" }
        @if progress["tasks"].as_array().is_none_or(Vec::is_empty) { p.muted { "No evaluation yet." } }
        @for task in progress["tasks"].as_array().into_iter().flatten() {
            (task_chart(task))
        }
    };
    Ok(page("Campaign", &session.csrf, true, body))
}

fn minutes_left(ends_at_ms: i64) -> String {
    let left = (ends_at_ms - aar_store::now_millis()).max(0) as f64 / 60_000.0;
    format!("{left:.0} min left")
}

fn researcher_table(researchers: &[Value]) -> Markup {
    html! {
        table.sortable #researchers {
            thead { tr {
                th { "Researcher" } th { "State" } th { "Doing" }
                th data-sort="num" { "Dollars" } th data-sort="num" { "Evaluations" }
                th data-sort="num" { "Agent hours" } th { "Last activity" }
            } }
            tbody {
                @for r in researchers {
                    @let status = &r["status"];
                    tr data-agent=(r["agent_id"].as_str().unwrap_or("")) {
                        td { a href=(format!("/ui/researchers/{}", r["agent_id"].as_str().unwrap_or(""))) { (r["name"].as_str().unwrap_or("")) } }
                        td { (state_badge(r["state"].as_str().unwrap_or("idle"))) }
                        td.doing { (r["doing"].as_str().unwrap_or("")) }
                        td.num data-value=(status["spend"]["dollars"].as_f64().unwrap_or(0.0)) {
                            "$" (num(status["spend"]["dollars"].as_f64(), 2))
                            @if let Some(b) = status["budget"]["dollars"].as_f64() { " / $" (format!("{b:.2}")) }
                        }
                        td.num.evaluations data-value=(r["evaluations"].as_i64().unwrap_or(0)) {
                            (r["evaluations"].as_i64().unwrap_or(0)) " / " (r["evaluation_budget"].as_i64().unwrap_or(0))
                        }
                        td.num data-value=(status["spend"]["agent_seconds"].as_f64().unwrap_or(0.0)) {
                            (num(status["spend"]["agent_seconds"].as_f64().map(|s| s / 3600.0), 2))
                            @if let Some(b) = status["budget"]["agent_seconds"].as_f64() { " / " (format!("{:.2}", b / 3600.0)) }
                        }
                        td { (time(r["last_event_at"].as_i64())) }
                    }
                }
            }
        }
    }
}

fn task_chart(task: &Value) -> Markup {
    let mut series = Vec::new();
    for (i, s) in task["series"].as_array().into_iter().flatten().enumerate() {
        let points = s["points"].as_array().cloned().unwrap_or_default();
        let column = |k: usize| -> Vec<(f64, f64)> {
            points
                .iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[k].as_f64()?)))
                .collect()
        };
        let label = s["name"].as_str().unwrap_or("").to_owned();
        series.push(Series {
            label: label.clone(),
            points: column(1),
            dashed: false,
            colour: i,
        });
        series.push(Series {
            label,
            points: column(2),
            dashed: true,
            colour: i,
        });
    }
    let title = format!("{}: best PGR so far", task["task"].as_str().unwrap_or(""));
    render::pgr_chart(&title, &series)
}

/// `?task=` of the leaderboard.
#[derive(Debug, Deserialize)]
pub(crate) struct BoardQuery {
    #[serde(default)]
    task: Option<String>,
}

/// `GET /ui/leaderboard[?task=]`: every verified entry with public, private and
/// transfer PGR, flags and status; baselines as reference rows.
pub(crate) async fn leaderboard(
    State(state): State<AppState>,
    session: UiSession,
    Query(q): Query<BoardQuery>,
) -> PageResult {
    let names = agent_names(&state).await?;
    let tasks: Vec<String> = state.tasks().iter().map(|t| t.name.clone()).collect();
    let shown: Vec<&String> = tasks
        .iter()
        .filter(|t| q.task.as_ref().is_none_or(|want| want == *t))
        .collect();
    let mut boards = Vec::new();
    for task in shown {
        boards.push(build_leaderboard(&state, task, Viewer::Admin).await?);
    }
    let body = html! {
        p.muted { "Scores come from the verifier's runs only: mean ± SE over each entry's declared seeds. Ranked by held-out (private, transfer) PGR. Click a column to sort." }
        @for board in &boards { (board_table(board, &names)) }
    };
    Ok(page("Leaderboard", &session.csrf, true, body))
}

const SECTIONS: &[&str] = &["ranked", "pending", "flagged", "failed", "disqualified"];

fn board_table(board: &Value, names: &HashMap<String, String>) -> Markup {
    let task = board["task"].as_str().unwrap_or("");
    html! {
        section.board data-task=(task) {
            h2 { (task) }
            table.sortable {
                thead { tr {
                    th data-sort="num" { "#" } th { "Entry" } th { "Researcher" } th { "Method" } th { "Status" }
                    th data-sort="num" { "Public PGR" } th data-sort="num" { "Private PGR" }
                    th data-sort="num" { "Transfer PGR" } th data-sort="num" { "Flags" }
                } }
                tbody {
                    @for name in SECTIONS {
                        @for (rank, row) in board[*name].as_array().into_iter().flatten().enumerate() {
                            (board_row(row, name, rank, names))
                        }
                    }
                }
                tfoot {
                    @if let Some(b) = board["baselines"].as_object() {
                        tr.reference { td {} td colspan="4" { "weak teacher (public test accuracy " (num(b.get("weak").and_then(Value::as_f64), 3)) ")" } td { "0" } td {} td {} td {} }
                        tr.reference { td {} td colspan="4" { "ceiling (public test accuracy " (num(b.get("ceiling").and_then(Value::as_f64), 3)) ")" } td { "1" } td {} td {} td {} }
                    }
                }
            }
        }
    }
}

fn board_row(row: &Value, section: &str, rank: usize, names: &HashMap<String, String>) -> Markup {
    let id = row["entry_id"].as_i64().unwrap_or(0);
    let splits = &row["admin"]["splits"];
    let flags = row["admin"]["flags"].as_array().map_or(0, Vec::len);
    html! {
        tr class=(format!("entry section-{section}")) data-entry=(id) {
            td.num data-value=(if section == "ranked" { rank + 1 } else { 9999 }) {
                @if section == "ranked" { (rank + 1) } @else { "–" }
            }
            td { a href=(format!("/ui/entries/{id}")) { "#" (id) } }
            td { (researcher_link(names, row["agent_id"].as_str().unwrap_or(""))) }
            td { (row["method"].as_str().unwrap_or("")) }
            td.status { (row["status"].as_str().unwrap_or("")) " · " (row["verification"].as_str().unwrap_or("")) }
            td { (mean_se(&splits["test"]["pgr"])) }
            td { (mean_se(&splits["test_private"]["pgr"])) }
            td { (mean_se(&splits["transfer"]["pgr"])) }
            td.num data-value=(flags) { (flags) }
        }
    }
}

/// `GET /ui/review`: flagged entries with the probes' evidence, the method's files,
/// the finding they cite, and approve / disqualify forms.
pub(crate) async fn review(State(state): State<AppState>, session: UiSession) -> PageResult {
    let queue = build_review_queue(&state).await?;
    let names = agent_names(&state).await?;
    let items = queue["flagged_entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut cards = Vec::new();
    for item in &items {
        cards.push(review_card(&state, item, &names, &session.csrf).await?);
    }
    let body = html! {
        @if items.is_empty() { p.muted #empty-queue { "Nothing to review." } }
        @for card in cards { (card) }
        @if let Some(flags) = queue["agent_flags"].as_array().filter(|f| !f.is_empty()) {
            h2 { "Flags about researchers' conduct" }
            ul { @for f in flags { li { (researcher_link(&names, f["agent_id"].as_str().unwrap_or(""))) ": " strong { (f["probe"].as_str().unwrap_or("")) } " — " (f["summary"].as_str().unwrap_or("")) } } }
        }
    };
    Ok(page("Review queue", &session.csrf, false, body))
}

async fn review_card(
    state: &AppState,
    item: &Value,
    names: &HashMap<String, String>,
    csrf: &str,
) -> Result<Markup, UiError> {
    let id = item["entry_id"].as_i64().unwrap_or(0);
    let files = match item["snapshot_id"].as_str() {
        Some(snapshot) => snapshot_files(state, snapshot).await.ok(),
        None => None,
    };
    let finding = match item["post_id"].as_i64() {
        Some(post) => crate::forum::read_finding(state, post).await.ok(),
        None => None,
    };
    Ok(html! {
        article.review data-entry=(id) {
            h2 { a href=(format!("/ui/entries/{id}")) { "Entry #" (id) } ": " (item["method"].as_str().unwrap_or("")) }
            p { "by " (researcher_link(names, item["agent_id"].as_str().unwrap_or(""))) " on " (item["task"].as_str().unwrap_or("")) }
            (evidence(&item["admin"]))
            @if let Some(post) = &finding {
                p { "Cites the finding " a href=(format!("/ui/forum/{}", post["post_id"])) { (post["title"].as_str().unwrap_or("")) } }
            }
            @if let Some(files) = &files { details { summary { "The method's files" } (file_list(files)) } }
            (review_forms(id, csrf))
        }
    })
}

fn evidence(admin: &Value) -> Markup {
    html! {
        table {
            thead { tr { th { "Split" } th { "PGR" } th { "Accuracy" } } }
            tbody { @for split in ["test", "test_private", "transfer"] {
                tr { td { (split) } td { (mean_se(&admin["splits"][split]["pgr"])) } td { (mean_se(&admin["splits"][split]["accuracy"])) } }
            } }
        }
        @if let Some(variants) = admin["variants"].as_array().filter(|v| !v.is_empty()) {
            h3 { "Probe runs" }
            table { thead { tr { th { "Variant" } th { "Split" } th { "PGR" } } }
                tbody { @for v in variants { tr { td { (v["variant"].as_str().unwrap_or("")) } td { (v["split"].as_str().unwrap_or("")) } td { (mean_se(&v["pgr"])) } } } } }
        }
        @for flag in admin["flags"].as_array().into_iter().flatten() {
            div.flag {
                p { strong { (flag["probe"].as_str().unwrap_or("")) } " (about the " (flag["about"].as_str().unwrap_or("")) "): " (flag["summary"].as_str().unwrap_or("")) }
                details { summary { "Evidence" } (json_block(&flag["evidence"])) }
            }
        }
    }
}

fn review_forms(id: i64, csrf: &str) -> Markup {
    html! {
        div.actions {
            @for (action, label) in [("approve", "Approve"), ("disqualify", "Disqualify")] {
                form.review-form method="post" action=(format!("/ui/review/{id}")) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="action" value=(action);
                    input type="text" name="reason" placeholder="Reason (recorded in the audit log)" required maxlength="2000";
                    button type="submit" class=(action) { (label) }
                }
            }
        }
    }
}

/// The review form's fields.
#[derive(Debug, Deserialize)]
pub(crate) struct ReviewForm {
    csrf: String,
    action: String,
    reason: String,
}

/// `POST /ui/review/{id}`: approve or disqualify, then back to the queue.
pub(crate) async fn review_action(
    State(state): State<AppState>,
    session: UiSession,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ReviewForm>,
) -> Result<Response, UiError> {
    session.check_form(&headers, &form.csrf)?;
    if !matches!(form.action.as_str(), "approve" | "disqualify") {
        return Err(AppError::unprocessable("bad_action", "approve or disqualify").into());
    }
    crate::board::apply_review(&state, id, &form.action, &form.reason).await?;
    Ok(Redirect::to("/ui/review").into_response())
}

fn file_list(files: &Value) -> Markup {
    html! {
        @for file in files["files"].as_array().into_iter().flatten() {
            @let path = file["path"].as_str().unwrap_or("");
            section.file {
                h4 { code { (path) } " " span.muted { (file["size"].as_u64().unwrap_or(0)) " bytes" } }
                @match file["text"].as_str() {
                    Some(text) => (render::highlighted(path, text)),
                    None => p.muted { "binary or too large to show" },
                }
            }
        }
    }
}

/// `GET /ui/entries/{id}`: scores per split and seed, probe runs, flags, the method's
/// files and the snapshot's lineage.
pub(crate) async fn entry(
    State(state): State<AppState>,
    session: UiSession,
    Path(id): Path<i64>,
) -> PageResult {
    let entry = entry_view(&state, id, Viewer::Admin).await?;
    let names = agent_names(&state).await?;
    let files = match entry["snapshot_id"].as_str() {
        Some(snapshot) => Some(snapshot_files(&state, snapshot).await?),
        None => None,
    };
    let body = html! {
        p { (entry["method"].as_str().unwrap_or("")) " by " (researcher_link(&names, entry["agent_id"].as_str().unwrap_or("")))
            " on " (entry["task"].as_str().unwrap_or("")) " · status " strong.status { (entry["status"].as_str().unwrap_or("")) }
            " · verification " (entry["verification"].as_str().unwrap_or("")) }
        @if let Some(reason) = entry["status_reason"].as_str() { p { "Reason: " (reason) } }
        @if let Some(error) = entry["verification_error"].as_str() { p.error { (error) } }
        (evidence(&entry["admin"]))
        h3 { "Runs per seed" }
        table { thead { tr { th { "Seed" } th { "Variant" } th { "Split" } th { "Accuracy" } th { "Seconds" } th { "Error" } } }
            tbody { @for run in entry["runs"].as_array().into_iter().flatten() {
                tr { td { (run["seed"]) } td { (run["variant"].as_str().unwrap_or("")) } td { (run["split"].as_str().unwrap_or("")) }
                     td { (num(run["accuracy"].as_f64(), 4)) } td { (num(run["seconds"].as_f64(), 1)) } td { (run["error"].as_str().unwrap_or("")) } }
            } } }
        @if let Some(files) = &files { (snapshot_body(files)) }
    };
    Ok(page(&format!("Entry #{id}"), &session.csrf, false, body))
}

fn snapshot_body(files: &Value) -> Markup {
    let meta = &files["snapshot"];
    html! {
        h2 { "Snapshot " code { (short(meta["snapshot_id"].as_str().unwrap_or(""))) } }
        p { "“" (meta["message"].as_str().unwrap_or("")) "” · " (meta["file_count"]) " files · " (time(meta["created_at"].as_i64())) }
        h3 { "Lineage" }
        ol.lineage {
            li { code { (short(meta["snapshot_id"].as_str().unwrap_or(""))) } " (this snapshot)" }
            @for parent in files["lineage"].as_array().into_iter().flatten() {
                @let pid = parent["snapshot_id"].as_str().unwrap_or("");
                li { a href=(format!("/ui/snapshots/{pid}")) { code { (short(pid)) } } " " (parent["message"].as_str().unwrap_or("")) }
            }
        }
        (file_list(files))
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `GET /ui/snapshots/{id}`.
pub(crate) async fn snapshot(
    State(state): State<AppState>,
    session: UiSession,
    Path(id): Path<String>,
) -> PageResult {
    let files = snapshot_files(&state, &id).await?;
    Ok(page(
        "Snapshot",
        &session.csrf,
        false,
        snapshot_body(&files),
    ))
}

/// `?after=` over a transcript.
#[derive(Debug, Deserialize)]
pub(crate) struct AfterQuery {
    #[serde(default)]
    after: Option<i64>,
}

/// `GET /ui/researchers/{id}`: state, spend, sandbox, notebook and the transcript as a timeline.
pub(crate) async fn researcher(
    State(state): State<AppState>,
    session: UiSession,
    Path(id): Path<String>,
    Query(q): Query<AfterQuery>,
) -> PageResult {
    let overview = researcher_overview(&state).await?;
    let row = overview["researchers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["agent_id"] == id.as_str())
        .cloned()
        .ok_or_else(|| AppError::not_found("researcher"))?;
    let after = q.after.unwrap_or(-1);
    let page_size = 500;
    let transcript = transcript_page(&state, &id, after, page_size).await?;
    let lines = transcript["lines"].as_array().cloned().unwrap_or_default();
    let status = &row["status"];
    let body = html! {
        (researcher_table(std::slice::from_ref(&row)))
        div.columns {
            section {
                h2 { "Notebook" }
                @match status["notebook"].as_str() {
                    Some(text) if !text.is_empty() => div.notebook { (render::markdown(text)) },
                    _ => p.muted { "Empty." },
                }
                h2 { "Sandbox" }
                @if status["sandbox"].is_object() { (sandbox_table(&status["sandbox"])) } @else { p.muted { "No resource figures relayed." } }
            }
            section {
                h2 { "Timeline" }
                ol.timeline #timeline { @for line in &lines { (timeline_item(line)) } }
                @if let Some(last) = lines.last().and_then(|l| l["seq"].as_i64()).filter(|_| lines.len() as i64 == page_size) {
                    a href=(format!("/ui/researchers/{id}?after={last}")) { "Later events" }
                }
            }
        }
    };
    let title = row["name"].as_str().unwrap_or("Researcher").to_owned();
    Ok(page(&title, &session.csrf, true, body))
}

fn sandbox_table(sandbox: &Value) -> Markup {
    let mib = |v: &Value| num(v.as_f64().map(|b| b / (1024.0 * 1024.0)), 1);
    let now = &sandbox["now"];
    html! {
        table.sandbox {
            @if let Some(place) = sandbox["runs_on"].as_str() {
                tr { th { "Runs on" } td { (place) } }
            }
            tr { th { "Workspace" } td { (mib(&sandbox["workspace_bytes"])) " MiB" } }
            tr { th { "Processes now" } td { (num(now["processes"].as_f64(), 0)) } }
            tr { th { "Resident memory now" } td { (mib(&now["resident_bytes"])) " MiB" } }
            tr { th { "CPU of running processes" } td { (num(now["cpu_seconds_of_running_processes"].as_f64(), 1)) " s" } }
        }
    }
}

fn timeline_item(item: &Value) -> Markup {
    let line = &item["line"];
    let kind = line["kind"].as_str().unwrap_or("");
    html! {
        li class=(format!("event kind-{kind}")) {
            span.when { (time(line["ts_ms"].as_i64())) } " "
            span.kind { (kind.replace('_', " ")) } " "
            @match kind {
                "message" => (message_item(&line["message"])),
                "tool_call" => {
                    strong { (line["name"].as_str().unwrap_or("")) }
                    @if line["is_error"] == true { " " span.error { "failed" } }
                    " " span.muted { (line["elapsed_ms"].as_u64().unwrap_or(0)) " ms" }
                    details { summary { "input and output" } (json_block(&line["input"])) pre.output { (line["output"].as_str().unwrap_or("")) } }
                },
                "usage" => span.muted { (line["model"].as_str().unwrap_or("")) ": " (line["usage"].to_string()) },
                "stop" => strong { (line["reason"].as_str().unwrap_or("")) },
                "session_start" => span { "session " (line["session"]) " (" (line["reason"].as_str().unwrap_or("")) ")" },
                _ => (json_block(line)),
            }
        }
    }
}

fn message_item(message: &Value) -> Markup {
    html! {
        span.role { (message["role"].as_str().unwrap_or("")) }
        @for block in message["content"].as_array().into_iter().flatten() {
            @match block["type"].as_str() {
                Some("text") => div.text { (block["text"].as_str().unwrap_or("")) },
                Some("tool_use") => div.tool-use { "calls " strong { (block["name"].as_str().unwrap_or("")) } " " code { (block["input"].to_string()) } },
                Some("tool_result") => details.tool-result { summary { "tool result" } pre { (block["content"].as_str().map_or_else(|| block["content"].to_string(), str::to_owned)) } },
                _ => (json_block(block)),
            }
        }
    }
}

/// `?q=&sort=` of the forum.
#[derive(Debug, Deserialize)]
pub(crate) struct ForumQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    sort: Option<String>,
}

/// `GET /ui/forum`: posts, full-text search, votes.
pub(crate) async fn forum(
    State(state): State<AppState>,
    session: UiSession,
    Query(q): Query<ForumQuery>,
) -> PageResult {
    let text = q.q.clone().filter(|t| !t.trim().is_empty());
    let query = crate::forum::ListQuery {
        q: text.clone(),
        sort: q.sort.clone().filter(|s| !s.is_empty()),
        limit: Some(200),
        ..Default::default()
    };
    let posts = crate::forum::search_findings(&state, query).await?;
    let body = html! {
        form.search method="get" action="/ui/forum" {
            input type="search" name="q" value=(text.as_deref().unwrap_or("")) placeholder="Search posts";
            select name="sort" { @for s in ["new", "top", "discussed"] { option value=(s) selected[q.sort.as_deref() == Some(s)] { (s) } } }
            button type="submit" { "Search" }
        }
        ul.posts {
            @for post in posts["posts"].as_array().into_iter().flatten() {
                li.post {
                    a href=(format!("/ui/forum/{}", post["post_id"])) { (post["title"].as_str().unwrap_or("")) }
                    " " span.muted { (post["kind"].as_str().unwrap_or("")) " · " (post["author"]["agent_name"].as_str().unwrap_or(""))
                        " · +" (post["upvotes"]) " −" (post["downvotes"]) " · " (post["comment_count"]) " comments · " (time(post["created_at"].as_i64())) }
                }
            }
        }
    };
    Ok(page("Forum", &session.csrf, true, body))
}

/// `GET /ui/forum/{id}`: one post (its Markdown made safe), links and comments.
pub(crate) async fn post(
    State(state): State<AppState>,
    session: UiSession,
    Path(id): Path<i64>,
) -> PageResult {
    let post = crate::forum::read_finding(&state, id).await?;
    let body = html! {
        p.muted { (post["kind"].as_str().unwrap_or("")) " by " a href=(format!("/ui/researchers/{}", post["author"]["agent_id"].as_str().unwrap_or(""))) { (post["author"]["agent_name"].as_str().unwrap_or("")) }
            " · " (time(post["created_at"].as_i64())) " · +" (post["upvotes"]) " −" (post["downvotes"]) }
        article.post-body #post-body { (render::markdown(post["body"].as_str().unwrap_or(""))) }
        @if let Some(links) = post["links"].as_array().filter(|l| !l.is_empty()) {
            h2 { "Links" }
            ul { @for link in links { li { (link_target(link)) } } }
        }
        h2 { "Comments" }
        @for c in post["comments"].as_array().into_iter().flatten() {
            div.comment { p.muted { (c["author"]["agent_name"].as_str().unwrap_or("")) " · " (time(c["created_at"].as_i64())) } (render::markdown(c["body"].as_str().unwrap_or(""))) }
        }
    };
    Ok(page(
        post["title"].as_str().unwrap_or("Post"),
        &session.csrf,
        false,
        body,
    ))
}

fn link_target(link: &Value) -> Markup {
    let kind = link["kind"].as_str().unwrap_or("");
    let target = link["target"]
        .as_str()
        .map_or_else(|| link["target"].to_string(), str::to_owned);
    let href = match kind {
        "snapshot" => Some(format!("/ui/snapshots/{target}")),
        "entry" => Some(format!("/ui/entries/{target}")),
        "post" => Some(format!("/ui/forum/{target}")),
        _ => None,
    };
    html! {
        (kind) " "
        @match href { Some(href) => a href=(href) { code { (target) } }, None => code { (target) } }
    }
}

/// `GET /ui/audit`: the hash chain's state and its latest records.
pub(crate) async fn audit(State(state): State<AppState>, session: UiSession) -> PageResult {
    let check = state.store().verify_audit_chain().await?;
    let total = match &check {
        ChainCheck::Intact { records, .. } => *records,
        ChainCheck::Broken { .. } => state.store().audit_head_seq().await?,
    };
    let records = state
        .store()
        .audit_records((total - 500).max(0), 500)
        .await?;
    let body = html! {
        @match &check {
            ChainCheck::Intact { records, head } => p.ok #chain-status { "Chain intact: " (records) " records, head " code { (short(head)) } },
            ChainCheck::Broken { seq, reason } => p.error #chain-status { "Chain broken at record " (seq) ": " (reason) },
        }
        table {
            thead { tr { th { "#" } th { "When" } th { "Actor" } th { "Action" } th { "Detail" } th { "Hash" } } }
            tbody { @for r in records.iter().rev() {
                tr { td { (r.seq) } td { (time(Some(r.at))) } td { (r.actor) } td { (r.action) } td { code.detail { (r.detail) } } td { code { (short(&r.hash)) } } }
            } }
        }
    };
    Ok(page("Audit log", &session.csrf, true, body))
}
