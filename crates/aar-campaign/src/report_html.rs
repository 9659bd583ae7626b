//! The campaign report as one self-contained HTML file (`report.html`): the same
//! data as `report.md` (the [`Report`] built in `report.rs`; no PGR is recomputed
//! here) in HTML tables, with one inline SVG chart per task of the best public-test
//! PGR so far per researcher.
//!
//! Invariants: the file has no scripts and refers to nothing outside itself (inline
//! `<style>`, inline SVG; the only URL is the SVG namespace plotters writes). Every
//! piece of agent-written text (method names, snapshot ids, flags, reasons, errors,
//! findings, researcher names) goes through maud's escaping after control and
//! invisible format characters are shown as `\u{..}`; the only unescaped strings are
//! this module's CSS and the SVG plotters draws, which holds numbers and this
//! module's axis titles but no agent text: chart legends are HTML.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use plotters::prelude::*;

use aar_core::text::terminal_line;
use aar_server::scores::PgrView;

use crate::report::{
    EntryRow, Report, ResearcherReport, TaskReport, builtins_text, comparison_text, neighbours_text,
};

/// The page's style sheet (no `<`, `>` or URLs in it).
const CSS: &str = "
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { max-width: 24em; overflow-wrap: anywhere; }
ul.flags { margin: 0; padding-left: 1.2em; }
.swatch { display: inline-block; width: 1.5em; height: 0.4em; margin-right: 0.4em; vertical-align: middle; }
figure { margin: 0 0 2em; }
figcaption { font-size: 0.9em; }
figcaption ul { list-style: none; padding: 0; }
.error { color: #a00; }
";

/// Chart size in pixels.
const CHART_SIZE: (u32, u32) = (720, 360);

/// PGR range drawn; values outside it are drawn at its edge.
const Y_RANGE: (f64, f64) = (-0.5, 1.5);

/// Agent-written text made inert for display: control and invisible format
/// characters (bidirectional overrides, zero-width characters) are shown as
/// `\u{..}`; maud escapes the HTML characters when the result is interpolated.
fn shown(text: &str) -> String {
    terminal_line(text)
}

/// `0.123`, or `-` when absent.
fn num(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

/// `PGR ± SE` (the total error) as in `report.md`, or `-` when absent.
fn mean_se(value: Option<PgrView>) -> String {
    crate::report::pgr_text(value).replace("+-", "±")
}

/// The error's parts, for a cell's title: seeds and test rows.
fn error_parts(value: Option<PgrView>) -> Option<String> {
    let v = value?;
    let part = |p: Option<f64>| p.map_or_else(|| "-".to_owned(), |p| format!("{p:.3}"));
    Some(format!(
        "n = {}, SE over seeds {}, SE over test rows {}",
        v.n,
        part(v.se_seeds),
        part(v.se_test)
    ))
}

/// A researcher's colour, the same as in `pgr.png` (by position in the report's table).
fn colour(index: usize) -> PaletteColor<Palette99> {
    Palette99::pick(index)
}

/// The colour as a CSS value.
fn css_colour(index: usize) -> String {
    let (r, g, b) = colour(index).to_backend_color().rgb;
    format!("background: #{r:02x}{g:02x}{b:02x}")
}

/// The report as one self-contained HTML page.
pub fn html(report: &Report) -> String {
    let span = TimeSpan::of(report);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "aar campaign report (preset " (shown(&report.preset)) ")" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "aar campaign report (preset " code { (shown(&report.preset)) } ")" }
                p {
                    "Entries are ranked by held-out PGR (mean of private and transfer), from the \
                     verifier's runs: PGR ± SE over the declared seeds and the test's rows (paired \
                     bootstrap), and each entry's difference against vanilla and against the entry \
                     ranked just above it (significant: beyond 1.96 SE); flags are the probes' \
                     findings, for a person to judge. PGR 0 is the weak teacher, 1 the ceiling."
                }
                @if !report.tasks.is_empty() {
                    nav { ul {
                        @for (i, task) in report.tasks.iter().enumerate() {
                            li { a href=(format!("#task-{i}")) { (shown(&task.task)) } }
                        }
                        li { a href="#researchers" { "Researchers" } }
                        li { a href="#findings" { "Findings" } }
                    } }
                }
                @for (i, task) in report.tasks.iter().enumerate() {
                    (task_section(report, task, i, &span))
                }
                (researchers_section(&report.researchers))
                (placements_section(&report.placements))
                (findings_section(report))
            }
        }
    };
    page.into_string()
}

/// One task: baselines, entries, the testbed's baseline methods and the chart.
fn task_section(report: &Report, task: &TaskReport, index: usize, span: &TimeSpan) -> Markup {
    html! {
        section id=(format!("task-{index}")) {
            h2 { (shown(&task.task)) }
            (baselines_table(task))
            h3 { "Entries" }
            (entries_table(&task.entries))
            @let neighbours = neighbours_text(&task.entries);
            @if !neighbours.is_empty() { p { (neighbours) } }
            h3 { "Built-in methods (the testbed's runs; PGR ± SE over their seeds and the test's rows)" }
            @if task.builtins.is_empty() {
                p { "None." }
            } @else {
                table {
                    thead { tr {
                        th { "built-in" } th { "PGR public" } th { "PGR private" } th { "PGR transfer" }
                    } }
                    tbody {
                        @for b in &task.builtins {
                            tr {
                                td.text { (shown(&b.method)) }
                                td.num title=[error_parts(b.public)] { (mean_se(b.public)) }
                                td.num title=[error_parts(b.private)] { (mean_se(b.private)) }
                                td.num title=[error_parts(b.transfer)] { (mean_se(b.transfer)) }
                            }
                        }
                    }
                }
            }
            (task_chart(report, &task.task, span))
        }
    }
}

/// W, S and vanilla transfer PGR on the public test, private test and transfer set.
fn baselines_table(task: &TaskReport) -> Markup {
    let splits = [
        ("public test", task.public, task.vanilla_pgr.0),
        ("private test", task.private, task.vanilla_pgr.1),
        ("transfer set", task.transfer, task.vanilla_pgr.2),
    ];
    html! {
        table {
            thead { tr { th { "split" } th { "W (weak teacher)" } th { "S (ceiling)" } th { "vanilla transfer PGR" } } }
            tbody {
                @for (split, ws, vanilla) in splits {
                    tr {
                        td { (split) }
                        td.num { (num(ws.map(|(w, _)| w))) }
                        td.num { (num(ws.map(|(_, s)| s))) }
                        td.num { (num(vanilla)) }
                    }
                }
            }
        }
    }
}

/// The entries of one task, in the report's order.
fn entries_table(entries: &[EntryRow]) -> Markup {
    if entries.is_empty() {
        return html! { p { "No entries." } };
    }
    html! {
        table {
            thead { tr {
                th { "entry" } th { "researcher" } th { "method" } th { "snapshot" }
                th { "seeds" } th { "board" } th { "PGR public" } th { "PGR private" }
                th { "PGR transfer" } th { "vs vanilla" } th { "vs built-ins" } th { "vs entry above" }
                th { "flags" } th { "verified in" } th { "verification error" }
            } }
            tbody {
                @for e in entries { (entry_row(e)) }
            }
        }
    }
}

/// One entry's table row.
fn entry_row(e: &EntryRow) -> Markup {
    let seeds = e
        .seeds
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        tr {
            td.num { (e.entry_id) }
            td.text { (shown(&e.researcher)) }
            td.text { (shown(&e.method)) }
            td.text { code { (shown(e.snapshot_id.as_deref().unwrap_or("-"))) } }
            td { (seeds) }
            td.text { (shown(&e.board())) }
            td.num title=[error_parts(e.public_pgr)] { (mean_se(e.public_pgr)) }
            td.num title=[error_parts(e.private_pgr)] { (mean_se(e.private_pgr)) }
            td.num title=[error_parts(e.transfer_pgr)] { (mean_se(e.transfer_pgr)) }
            td.text {
                (comparison_text(e.private_vs.vs_vanilla.as_ref(), e.transfer_vs.vs_vanilla.as_ref()))
            }
            td.text { (builtins_text(&e.private_vs, &e.transfer_vs)) }
            td.text {
                (comparison_text(e.private_vs.vs_above.as_ref(), e.transfer_vs.vs_above.as_ref()))
            }
            td.text {
                @if e.flags.is_empty() {
                    "-"
                } @else {
                    ul.flags {
                        @for (probe, summary) in &e.flags {
                            li { strong { (shown(probe)) } ": " (shown(summary)) }
                        }
                    }
                }
            }
            td.num {
                (e.verification_seconds.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")))
            }
            td.text.error { (shown(e.verification_error.as_deref().unwrap_or(""))) }
        }
    }
}

/// Spend and activity per researcher, with totals.
fn researchers_section(researchers: &[ResearcherReport]) -> Markup {
    let per_hour = |dollars: f64, hours: f64| if hours > 0.0 { dollars / hours } else { 0.0 };
    let sum = |f: fn(&ResearcherReport) -> f64| researchers.iter().map(f).sum::<f64>();
    let (dollars, hours) = (sum(|r| r.dollars), sum(|r| r.hours));
    let tool_calls: u64 = researchers.iter().map(|r| r.tool_calls).sum();
    let llm_calls: u64 = researchers.iter().map(|r| r.llm_calls).sum();
    html! {
        section id="researchers" {
            h2 { "Researchers" }
            table {
                thead { tr {
                    th { "researcher" } th { "tool calls" } th { "LLM calls" } th { "dollars" }
                    th { "hours" } th { "dollars per agent-hour" }
                } }
                tbody {
                    @for (i, r) in researchers.iter().enumerate() {
                        tr {
                            td.text { span.swatch style=(css_colour(i)) {} (shown(&r.name)) }
                            td.num { (r.tool_calls) }
                            td.num { (r.llm_calls) }
                            td.num { (format!("{:.4}", r.dollars)) }
                            td.num { (format!("{:.2}", r.hours)) }
                            td.num { (format!("{:.4}", per_hour(r.dollars, r.hours))) }
                        }
                    }
                }
                tfoot { tr {
                    th { "total" }
                    td.num { (tool_calls) }
                    td.num { (llm_calls) }
                    td.num { (format!("{dollars:.4}")) }
                    td.num { (format!("{hours:.2}")) }
                    td.num { (format!("{:.4}", per_hour(dollars, hours))) }
                } }
            }
        }
    }
}

/// Where each researcher ran, when researchers ran as jobs (cluster executors).
fn placements_section(placements: &[crate::executor::Placement]) -> Markup {
    html! {
        @if placements.iter().any(|p| !p.jobs.is_empty()) {
            section id="placements" {
                h2 { "Where researchers ran" }
                table {
                    thead { tr {
                        th { "researcher" } th { "executor" } th { "jobs" } th { "last node" } th { "last state" }
                    } }
                    tbody {
                        @for p in placements {
                            tr {
                                td.text { (shown(&p.researcher)) }
                                td { (shown(&p.executor)) }
                                td.text { (shown(&p.jobs.join(", "))) }
                                td { (shown(p.node.as_deref().unwrap_or("-"))) }
                                td { (shown(&p.state)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The findings researchers posted, in the server's order.
fn findings_section(report: &Report) -> Markup {
    html! {
        section id="findings" {
            h2 { "Findings" }
            @if report.findings.is_empty() {
                p { "None." }
            } @else {
                table {
                    thead { tr { th { "kind" } th { "task" } th { "title" } th { "researcher" } } }
                    tbody {
                        @for (who, kind, task, title) in &report.findings {
                            tr {
                                td { (shown(kind)) }
                                td { (shown(task)) }
                                td.text { (shown(title)) }
                                td.text { (shown(who)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The campaign's time axis: every chart shares it, so charts can be compared.
struct TimeSpan {
    /// First evaluation, milliseconds since the epoch.
    start: i64,
    /// Minutes from the first to the last evaluation (at least a millisecond).
    minutes: f64,
}

impl TimeSpan {
    fn of(report: &Report) -> TimeSpan {
        let times = report.evaluations.iter().map(|e| e.created_at);
        let start = times.clone().min().unwrap_or(0);
        let end = times.max().unwrap_or(start).max(start + 1);
        TimeSpan {
            start,
            minutes: (end - start) as f64 / 60_000.0,
        }
    }
}

/// One researcher's best public-test PGR so far on `task`: (minutes, PGR) at each
/// evaluation with a finite PGR, clamped to the drawn range.
fn best_so_far(report: &Report, task: &str, researcher: &str, span: &TimeSpan) -> Vec<(f64, f64)> {
    let mut evaluations: Vec<(i64, f64)> = report
        .evaluations
        .iter()
        .filter(|e| e.task == task && e.researcher == researcher)
        .filter_map(|e| Some((e.created_at, e.public_pgr.filter(|p| p.is_finite())?)))
        .collect();
    evaluations.sort_by_key(|(at, _)| *at);
    let mut best = f64::NEG_INFINITY;
    evaluations
        .into_iter()
        .map(|(at, pgr)| {
            best = best.max(pgr);
            (
                (at - span.start) as f64 / 60_000.0,
                best.clamp(Y_RANGE.0, Y_RANGE.1),
            )
        })
        .collect()
}

/// One task's chart with its legend (HTML, so agent-chosen names never reach the SVG).
fn task_chart(report: &Report, task: &str, span: &TimeSpan) -> Markup {
    let series: Vec<(usize, Vec<(f64, f64)>)> = report
        .researchers
        .iter()
        .enumerate()
        .map(|(i, r)| (i, best_so_far(report, task, &r.name, span)))
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let svg = svg_chart(&series, span.minutes);
    html! {
        figure {
            @match svg {
                Ok(svg) => { (PreEscaped(svg)) }
                Err(error) => { p.error { "The chart could not be drawn: " (shown(&error)) } }
            }
            figcaption {
                "Best public-test PGR so far on " (shown(task)) ", per researcher, against \
                 minutes since the campaign's first evaluation; grey lines at PGR 0 (weak \
                 teacher) and 1 (ceiling); values outside [-0.5, 1.5] are drawn at the edge."
                @if series.is_empty() {
                    " No evaluations with a public-test PGR on this task."
                } @else {
                    ul {
                        @for (i, _) in &series {
                            li {
                                span.swatch style=(css_colour(*i)) {}
                                (shown(report.researchers.get(*i).map_or("", |r| r.name.as_str())))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The chart as an SVG string: reference lines at PGR 0 and 1, one line with
/// markers per researcher (by colour index). Axis labels only when the plot font
/// is there (plotters lays text out with it).
fn svg_chart(series: &[(usize, Vec<(f64, f64)>)], minutes: f64) -> Result<String, String> {
    let text = crate::report::plot_font_registered();
    let mut svg = String::new();
    let draw = |svg: &mut String| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(15);
        if text {
            builder.x_label_area_size(40).y_label_area_size(50);
        }
        let mut chart = builder.build_cartesian_2d(0f64..minutes, Y_RANGE.0..Y_RANGE.1)?;
        if text {
            chart
                .configure_mesh()
                .x_desc("minutes since the first evaluation")
                .y_desc("best public-test PGR")
                // Rounding error would otherwise show as "-0.0".
                .y_label_formatter(&|v| format!("{:.1}", if v.abs() < 1e-9 { 0.0 } else { *v }))
                .label_style(("sans-serif", 14))
                .draw()?;
        }
        for level in [0.0, 1.0] {
            chart.draw_series(LineSeries::new(
                [(0.0, level), (minutes, level)],
                BLACK.mix(0.6).stroke_width(1),
            ))?;
        }
        for (index, points) in series {
            let colour = colour(*index);
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))?;
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
        }
        root.present()?;
        Ok(())
    };
    draw(&mut svg).map_err(|e| e.to_string())?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ScoredEvaluation;

    const EVIL: &str = "<script>alert(1)</script><img src=x onerror=alert(1)> \
                        <a href=\"javascript:alert(1)\">x</a> \" onerror=\"alert(1)\u{202e}";

    fn entry(text: &str) -> EntryRow {
        EntryRow {
            entry_id: 1,
            researcher: text.into(),
            method: text.into(),
            snapshot_id: Some(text.into()),
            seeds: vec![1, 2, 3],
            section: "disqualified".into(),
            status: "disqualified".into(),
            status_reason: Some(text.into()),
            public_pgr: Some(PgrView::seeds_only(aar_core::metrics::MeanSe {
                mean: 0.3,
                se: Some(0.01),
                n: 3,
            })),
            private_pgr: Some(PgrView::seeds_only(aar_core::metrics::MeanSe {
                mean: 0.2,
                se: None,
                n: 1,
            })),
            transfer_pgr: None,
            private_vs: Default::default(),
            transfer_vs: Default::default(),
            flags: vec![(text.into(), text.into())],
            verification_seconds: Some(12.0),
            verification_error: Some(text.into()),
        }
    }

    fn task(name: &str, text: &str) -> TaskReport {
        TaskReport {
            task: name.into(),
            public: Some((0.6, 0.8)),
            private: Some((0.61, 0.79)),
            transfer: None,
            vanilla_pgr: (Some(0.3), None, Some(0.25)),
            builtins: vec![crate::report::BuiltinRow {
                method: text.into(),
                public: Some(PgrView::seeds_only(aar_core::metrics::MeanSe {
                    mean: 0.1,
                    se: Some(0.02),
                    n: 5,
                })),
                private: None,
                transfer: None,
            }],
            entries: vec![entry(text)],
        }
    }

    fn evaluation(researcher: &str, task: &str, minute: i64, pgr: f64) -> ScoredEvaluation {
        ScoredEvaluation {
            researcher: researcher.into(),
            task: task.into(),
            created_at: 1_700_000_000_000 + minute * 60_000,
            public_pgr: Some(pgr),
            private_pgr: None,
        }
    }

    /// A report in which every agent-written field holds `text`, on two tasks.
    fn report(text: &str) -> Report {
        let researcher = |name: &str| ResearcherReport {
            name: name.into(),
            tool_calls: 10,
            llm_calls: 5,
            dollars: 1.25,
            hours: 0.5,
        };
        Report {
            placements: Vec::new(),
            preset: text.into(),
            researchers: vec![researcher(text), researcher("researcher-2")],
            tasks: vec![task("sentiment", text), task(text, text)],
            evaluations: vec![
                evaluation(text, "sentiment", 0, 0.1),
                evaluation(text, "sentiment", 5, 0.4),
                evaluation("researcher-2", "sentiment", 3, 2.5),
                evaluation("researcher-2", text, 7, -0.2),
                evaluation("researcher-2", text, 9, f64::NAN),
            ],
            findings: vec![(text.into(), text.into(), text.into(), text.into())],
        }
    }

    /// The tags of an HTML document: the text between each `<` and the next `>`.
    fn tags(html: &str) -> Vec<&str> {
        html.split('<')
            .skip(1)
            .filter_map(|rest| rest.split_once('>').map(|(tag, _)| tag))
            .collect()
    }

    /// Whether every element opened is closed, in order (void and self-closed
    /// elements and the doctype aside).
    fn balanced(html: &str) -> bool {
        const VOID: &[&str] = &["meta", "br", "hr", "img", "input", "link"];
        let mut stack = Vec::new();
        for tag in tags(html) {
            let name = tag
                .trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            if tag.starts_with('!') || tag.ends_with('/') || VOID.contains(&name) {
                continue;
            }
            if tag.starts_with('/') {
                if stack.pop() != Some(name) {
                    return false;
                }
            } else {
                stack.push(name);
            }
        }
        stack.is_empty()
    }

    #[test]
    fn agent_text_is_escaped() {
        let html = html(&report(EVIL));
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        for tag in tags(&html) {
            assert!(!tag.contains("onerror"), "an attribute leaked: <{tag}>");
            assert!(!tag.contains("javascript:"), "an attribute leaked: <{tag}>");
        }
        assert!(
            !html.contains('\u{202e}'),
            "bidirectional controls are shown escaped"
        );
        assert!(html.contains("\\u{202e}"));
    }

    #[test]
    fn researchers_run_as_jobs_are_placed_in_a_table() {
        let mut report = report("plain");
        assert!(!html(&report).contains("Where researchers ran"));
        report.placements = vec![crate::executor::Placement {
            researcher: "researcher-1".into(),
            executor: "slurm".into(),
            job: Some("13".into()),
            node: Some(EVIL.into()),
            state: "COMPLETED".into(),
            jobs: vec!["12".into(), "13".into()],
        }];
        let page = html(&report);
        assert!(page.contains("Where researchers ran"), "{page}");
        assert!(page.contains("12, 13") && page.contains("COMPLETED"));
        assert!(!page.contains("<script"), "a node name is shown as text");
        assert!(balanced(&page));
        assert!(
            report
                .markdown()
                .contains("| researcher-1 | slurm | 12, 13 |")
        );
    }

    #[test]
    fn one_inline_svg_per_task_and_nothing_external() {
        let report = report(EVIL);
        let html = html(&report);
        assert_eq!(html.matches("<svg").count(), report.tasks.len(), "{html}");
        let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!without_namespace.contains("http://"));
        assert!(!without_namespace.contains("https://"));
        assert!(!without_namespace.contains("url("));
        for tag in tags(&html) {
            assert!(!tag.starts_with("link") && !tag.contains("src="), "<{tag}>");
            assert!(
                !tag.contains("href=") || tag.contains("href=\"#"),
                "<{tag}>"
            );
        }
        // Agent-chosen names never reach the SVG (the legends are HTML).
        for svg in html.split("<svg").skip(1) {
            let svg = svg.split("</svg>").next().unwrap_or("");
            assert!(!svg.contains("alert"), "{svg}");
            assert!(svg.contains("<polyline") || svg.contains("<path"), "{svg}");
        }
    }

    #[test]
    fn tags_balance() {
        for report in [
            report(EVIL),
            report("plain"),
            Report {
                placements: Vec::new(),
                preset: "empty".into(),
                researchers: Vec::new(),
                tasks: vec![TaskReport {
                    entries: Vec::new(),
                    builtins: Vec::new(),
                    ..task("t", "t")
                }],
                evaluations: Vec::new(),
                findings: Vec::new(),
            },
        ] {
            let html = html(&report);
            for element in ["table", "tr", "td", "section", "svg", "figure", "ul", "li"] {
                assert_eq!(
                    html.matches(&format!("<{element}>")).count()
                        + html.matches(&format!("<{element} ")).count(),
                    html.matches(&format!("</{element}>")).count(),
                    "<{element}> in {html}"
                );
            }
            assert!(balanced(&html), "{html}");
            assert!(html.starts_with("<!DOCTYPE html>"));
        }
    }

    #[test]
    fn write_report_writes_the_html_beside_the_others() {
        let dir = tempfile::tempdir().expect("temporary directory");
        crate::report::write_report(&report(EVIL), dir.path()).expect("report written");
        for file in ["report.md", "report.json", "report.html", "pgr.png"] {
            assert!(dir.path().join(file).is_file(), "{file}");
        }
        let written = std::fs::read_to_string(dir.path().join("report.html")).expect("html");
        assert_eq!(written, html(&report(EVIL)));
    }

    #[test]
    fn shows_the_reports_numbers() {
        let html = html(&report("plain"));
        assert!(html.contains("0.300 ± 0.010"), "{html}");
        assert!(html.contains("0.200"), "{html}");
        assert!(html.contains("12.0 s"));
        assert!(html.contains("disqualified (disqualified: plain)"));
        assert!(html.contains("2.5000"), "total dollars: {html}");
    }
}
