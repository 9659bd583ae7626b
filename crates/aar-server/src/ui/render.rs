//! Building blocks of the pages: the layout, number and time formats, charts as
//! SVG, agents' Markdown made safe, highlighted source files.

use std::sync::OnceLock;

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

/// The pages in the navigation bar: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/ui/", "Campaign"),
    ("/ui/leaderboard", "Leaderboard"),
    ("/ui/review", "Review"),
    ("/ui/forum", "Forum"),
    ("/ui/audit", "Audit"),
];

/// The `<head>` of every page; `dashboard`: a logged-in page (the script, the
/// highlighting styles), not the bare login and error pages.
fn head(title: &str, dashboard: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · aar" }
            link rel="stylesheet" href="/ui/assets/style.css";
            @if dashboard { link rel="stylesheet" href="/ui/assets/highlight.css"; }
            link rel="icon" href="/ui/assets/favicon.svg";
            @if dashboard { script src="/ui/assets/app.js" defer {} }
        }
    }
}

/// A page without navigation (login, errors).
pub(crate) fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, false))
            body { main #main { (body) } }
        }
    }
}

/// A dashboard page. `live`: the page fetches itself again on each server change.
pub(crate) fn page(title: &str, csrf: &str, live: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, true))
            body data-live=(if live { "1" } else { "0" }) data-version="0" {
                nav {
                    span.brand { "aar" }
                    @for (href, label) in NAV { a href=(href) { (label) } }
                    form.logout method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// A number with `digits` decimals, or a dash.
pub(crate) fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// `mean ± se` of a `{"mean", "se", "n"}` object (aar-core's `MeanSe`), or a dash.
pub(crate) fn mean_se(value: &Value) -> Markup {
    let Some(mean) = value["mean"].as_f64() else {
        return html! { span.muted { "–" } };
    };
    html! {
        span.num data-value=(mean) {
            (format!("{mean:.3}"))
            @if let Some(se) = value["se"].as_f64() { " ± " (format!("{se:.3}")) }
        }
    }
}

/// Unix milliseconds as UTC `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "–".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

/// JSON, indented, for evidence and raw records.
pub(crate) fn json_block(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// One line of a chart.
pub(crate) struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, x increasing.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (e.g. private scores beside public ones).
    pub dashed: bool,
    /// Colour slot (CSS class `c0`..`c7`).
    pub colour: usize,
}

const CHART_W: f64 = 640.0;
const CHART_H: f64 = 240.0;
const PAD: f64 = 36.0;

/// A step chart of PGR over time with reference lines at 0 (weak teacher) and 1
/// (ceiling). Agent-written legend text is escaped like all other text.
pub(crate) fn pgr_chart(title: &str, series: &[Series]) -> Markup {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (y_lo, y_hi) = ys.fold((0.0_f64, 1.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (y0, y1) = (y_lo.max(-1.0) - 0.05, y_hi.min(2.0) + 0.05);
    let x_span = if x1 > x0 { x1 - x0 } else { 1.0 };
    let sx = |x: f64| PAD + (x - x0) / x_span * (CHART_W - 2.0 * PAD);
    let sy = |y: f64| CHART_H - PAD - (y.clamp(y0, y1) - y0) / (y1 - y0) * (CHART_H - 2.0 * PAD);
    let path = |s: &Series| {
        let mut d = String::new();
        let mut last_y = None;
        for &(x, y) in &s.points {
            match last_y {
                None => d += &format!("M{:.1},{:.1}", sx(x), sy(y)),
                Some(prev) => {
                    d += &format!(" L{:.1},{:.1} L{:.1},{:.1}", sx(x), sy(prev), sx(x), sy(y))
                }
            }
            last_y = Some(y);
        }
        if let Some(y) = last_y {
            d += &format!(" L{:.1},{:.1}", CHART_W - PAD, sy(y));
        }
        d
    };
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {CHART_W} {CHART_H}")) role="img" aria-label=(title) {
                @for (y, label) in [(0.0, "weak (PGR 0)"), (1.0, "ceiling (PGR 1)")] {
                    line.reference x1=(PAD) x2=(CHART_W - PAD) y1=(sy(y)) y2=(sy(y)) {}
                    text.axis x=(PAD + 4.0) y=(sy(y) - 4.0) { (label) }
                }
                line.axis x1=(PAD) x2=(PAD) y1=(PAD) y2=(CHART_H - PAD) {}
                @for s in series {
                    path class=(format!("series c{}{}", s.colour % 8, if s.dashed { " dashed" } else { "" })) d=(path(s)) {}
                }
            }
            ul.legend {
                @for s in series.iter().filter(|s| !s.dashed) {
                    li { span class=(format!("swatch c{}", s.colour % 8)) {} (s.label) }
                }
                @if series.iter().any(|s| s.dashed) { li.muted { "dashed: private test" } }
            }
        }
    }
}

/// Agent-written Markdown as HTML: rendered by pulldown-cmark, then cleaned by
/// ammonia (no scripts, no event handlers, no images, links only to http(s) and
/// mailto with `rel="noopener noreferrer"`).
pub(crate) fn markdown(text: &str) -> Markup {
    let mut rendered = String::new();
    pulldown_cmark::html::push_html(&mut rendered, pulldown_cmark::Parser::new(text));
    // No images: an agent's image would load from wherever it points (a beacon).
    let clean = ammonia::Builder::default()
        .rm_tags(["img"])
        .url_schemes(["http", "https", "mailto"].into())
        .clean(&rendered)
        .to_string();
    PreEscaped(clean)
}

fn syntaxes() -> &'static syntect::parsing::SyntaxSet {
    static SET: OnceLock<syntect::parsing::SyntaxSet> = OnceLock::new();
    SET.get_or_init(syntect::parsing::SyntaxSet::load_defaults_newlines)
}

/// A source file with syntax highlighting (CSS classes; see `highlight.css`), picked
/// by extension; plain escaped text when no syntax matches or highlighting fails.
pub(crate) fn highlighted(path: &str, text: &str) -> Markup {
    let set = syntaxes();
    let extension = path.rsplit_once('.').map_or("", |(_, e)| e);
    let Some(syntax) = set.find_syntax_by_extension(extension) else {
        return html! { pre.code { (text) } };
    };
    let mut generator = syntect::html::ClassedHTMLGenerator::new_with_class_style(
        syntax,
        set,
        syntect::html::ClassStyle::Spaced,
    );
    for line in syntect::util::LinesWithEndings::from(text) {
        if generator
            .parse_html_for_line_which_includes_newline(line)
            .is_err()
        {
            return html! { pre.code { (text) } };
        }
    }
    // syntect escapes the source text it wraps in spans.
    html! { pre.code { (PreEscaped(generator.finalize())) } }
}

/// The highlighting colours, as CSS for the class names syntect emits (built once).
pub(crate) fn highlight_css() -> &'static str {
    static CSS: OnceLock<String> = OnceLock::new();
    CSS.get_or_init(|| {
        let themes = syntect::highlighting::ThemeSet::load_defaults();
        themes
            .themes
            .get("InspiredGitHub")
            .and_then(|theme| {
                syntect::html::css_for_theme_with_class_style(
                    theme,
                    syntect::html::ClassStyle::Spaced,
                )
                .ok()
            })
            .unwrap_or_default()
    })
}
