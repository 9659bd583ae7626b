//! The dashboard in headless Chromium against a real server with a seeded campaign
//! (`campaign.rs`): every page loads without a console error (a CSP violation is one),
//! the live view follows evaluations without reloading, the review queue's forms change
//! the leaderboard, agent-written HTML renders inert.
//!
//! Screenshots for docs/: `AAR_SCREENSHOTS=docs/screenshots cargo test -p aar-server
//! --test ui -- --ignored screenshots` (`scripts/screenshots` does this).

use std::time::Duration;

use fantoccini::Locator;
use serde_json::json;

use crate::browser::Browser;
use crate::campaign::{ADMIN_TOKEN, Campaign, predictions, transcript};

const WAIT: Duration = Duration::from_secs(15);

async fn logged_in(campaign: &Campaign) -> Browser {
    let browser = Browser::start().await.expect("start headless Chromium");
    browser.goto(&campaign.login_link().await).await.unwrap();
    browser
        .wait_for_text("main h1", |t| t == "Campaign", WAIT)
        .await
        .expect("the login link leads to the campaign page");
    browser
}

/// Every page of the dashboard, with something each must show.
fn pages(campaign: &Campaign) -> Vec<(String, &'static str, String)> {
    let (_, agent_id, _) = &campaign.researchers[0];
    vec![
        ("/ui/".into(), "#researchers", "ada".into()),
        (
            "/ui/leaderboard".into(),
            "section.board",
            "self-training rounds".into(),
        ),
        (
            "/ui/review".into(),
            "article.review",
            "teacher_ablation".into(),
        ),
        (
            format!("/ui/entries/{}", campaign.entries[0]),
            "main",
            "Runs per seed".into(),
        ),
        (
            format!("/ui/snapshots/{}", campaign.snapshot),
            "main",
            "aar-method.json".into(),
        ),
        (
            format!("/ui/researchers/{agent_id}"),
            "#timeline",
            "run_command".into(),
        ),
        // Where a researcher runs, for executors that place it on other machines.
        (
            format!("/ui/researchers/{agent_id}"),
            "table.sandbox",
            "slurm job 12 RUNNING on node3".into(),
        ),
        ("/ui/forum".into(), "ul.posts", "Self-training helps".into()),
        (
            format!("/ui/forum/{}", campaign.hostile_post),
            "#post-body",
            "Results below".into(),
        ),
        (
            "/ui/forum?q=self-training".into(),
            "ul.posts",
            "Self-training helps".into(),
        ),
        ("/ui/audit".into(), "#chain-status", "Chain intact".into()),
    ]
}

#[tokio::test]
async fn every_page_loads_without_console_errors() {
    let campaign = Campaign::start().await;
    let browser = logged_in(&campaign).await;
    for (path, css, expected) in pages(&campaign) {
        browser
            .goto(&format!("{}{path}", campaign.base))
            .await
            .unwrap();
        let text = browser
            .wait_for_text(css, |t| t.contains(expected.as_str()), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!text.is_empty());
        let errors = browser.console_errors().await.unwrap();
        assert!(errors.is_empty(), "{path}: console errors {errors:?}");
    }
    browser.close().await.unwrap();
}

#[tokio::test]
async fn the_live_view_follows_evaluations_without_reloading() {
    let campaign = Campaign::start().await;
    let browser = logged_in(&campaign).await;
    let (_, agent_id, token) = campaign.researchers[1].clone();
    let cell = format!("tr[data-agent='{agent_id}'] td.evaluations");
    browser
        .wait_for_text(&cell, |t| t.starts_with("4 /"), WAIT)
        .await
        .unwrap();
    // A marker that a reload would wipe.
    browser
        .client()
        .execute("window.__marker = 'same page'; return 1;", vec![])
        .await
        .unwrap();
    for (i, expected) in [(0, "5 /"), (1, "6 /")] {
        campaign
            .call(
                "POST",
                "/api/evaluate",
                &token,
                Some(predictions(190 - i, 0)),
            )
            .await;
        browser
            .wait_for_text(&cell, |t| t.starts_with(expected), WAIT)
            .await
            .expect("the researcher's evaluation count follows");
    }
    // A transcript line relayed now shows as the researcher's state.
    let lines = transcript("grace");
    let stop = json!({"ts_ms": 1, "agent": "grace", "step": 3, "kind": "stop", "reason": "out of time",
                      "budget": {"resource": "wall_time"}});
    campaign.relay(&agent_id, lines.len(), &[stop]).await;
    let state = format!("tr[data-agent='{agent_id}'] .badge");
    browser
        .wait_for_text(&state, |t| t == "out of budget", WAIT)
        .await
        .unwrap();
    let marker = browser
        .client()
        .execute("return window.__marker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!("same page"), "the page was reloaded");
    assert!(browser.console_errors().await.unwrap().is_empty());
    browser.close().await.unwrap();
}

/// Types `text` into the form's `field` and submits it.
async fn submit_form(browser: &Browser, form_css: &str, field: &str, text: &str) {
    let form = browser
        .client()
        .find(Locator::Css(form_css))
        .await
        .unwrap_or_else(|e| panic!("{form_css}: {e}"));
    form.find(Locator::Css(&format!("input[name='{field}']")))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
    form.find(Locator::Css("button[type='submit']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn review(browser: &Browser, entry: i64, action: &str, reason: &str) {
    let form = format!(
        "article.review[data-entry='{entry}'] form.review-form:has(input[value='{action}'])"
    );
    submit_form(browser, &form, "reason", reason).await;
    browser
        .wait_for_text("main h1", |t| t == "Review queue", WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn approving_and_disqualifying_in_the_review_queue_changes_the_leaderboard() {
    let campaign = Campaign::start().await;
    let browser = logged_in(&campaign).await;
    let (approved, disqualified) = (campaign.entries[1], campaign.entries[2]);
    browser
        .goto(&format!("{}/ui/review", campaign.base))
        .await
        .unwrap();
    review(
        &browser,
        approved,
        "approve",
        "the prior is the method's point; PGR holds on transfer",
    )
    .await;
    review(
        &browser,
        disqualified,
        "disqualify",
        "boosted against the public test",
    )
    .await;
    let remaining = browser
        .client()
        .find_all(Locator::Css("article.review"))
        .await
        .unwrap();
    assert!(remaining.is_empty(), "both entries left the queue");

    browser
        .goto(&format!("{}/ui/leaderboard", campaign.base))
        .await
        .unwrap();
    let row = |id: i64| format!("tr[data-entry='{id}']");
    let status = browser
        .wait_for_text(
            &format!("{} td.status", row(approved)),
            |t| t.starts_with("approved"),
            WAIT,
        )
        .await
        .unwrap();
    assert!(status.contains("verified"), "{status}");
    let class = browser
        .client()
        .find(Locator::Css(&row(disqualified)))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(class.contains("section-disqualified"), "{class}");
    // The decisions are in the audit log with their reasons.
    let audit = campaign
        .call("GET", "/api/admin/audit?limit=1000", ADMIN_TOKEN, None)
        .await;
    let text = audit.to_string();
    assert!(text.contains("boosted against the public test"), "{text}");
    assert!(browser.console_errors().await.unwrap().is_empty());
    browser.close().await.unwrap();
}

#[tokio::test]
async fn agent_written_html_renders_inert() {
    let campaign = Campaign::start().await;
    let browser = logged_in(&campaign).await;
    let (_, agent_id, _) = campaign.researchers[0].clone();
    for path in [
        format!("/ui/forum/{}", campaign.hostile_post),
        "/ui/forum".to_owned(),
        "/ui/leaderboard".to_owned(),
        format!("/ui/researchers/{agent_id}"),
    ] {
        browser
            .goto(&format!("{}{path}", campaign.base))
            .await
            .unwrap();
        browser
            .wait_for_text("main h1", |t| !t.is_empty(), WAIT)
            .await
            .unwrap();
        // Clicking every link an agent wrote must not run anything either.
        let client = browser.client();
        let hostile = client
            .execute(
                "const main = document.getElementById('main');
                 return {
                   scripts: main.querySelectorAll('script').length,
                   handlers: Array.from(main.querySelectorAll('*')).filter(e =>
                     Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
                   js_links: Array.from(main.querySelectorAll('a[href]')).filter(a =>
                     a.getAttribute('href').trim().toLowerCase().startsWith('javascript:')).length,
                   images: main.querySelectorAll('img').length,
                   xss: window.__xss === undefined ? null : window.__xss,
                 };",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            hostile,
            json!({"scripts": 0, "handlers": 0, "js_links": 0, "images": 0, "xss": null}),
            "{path}"
        );
        assert!(browser.console_errors().await.unwrap().is_empty(), "{path}");
    }
    // The hostile text is shown as text.
    browser
        .goto(&format!(
            "{}/ui/forum/{}",
            campaign.base, campaign.hostile_post
        ))
        .await
        .unwrap();
    let title = browser
        .wait_for_text("main h1", |t| !t.is_empty(), WAIT)
        .await
        .unwrap();
    assert!(
        title.contains("<script>window.__xss = 5</script>"),
        "{title}"
    );
    for link in browser
        .client()
        .find_all(Locator::Css("#post-body a"))
        .await
        .unwrap()
    {
        link.click().await.unwrap();
    }
    let xss = browser
        .client()
        .execute("return window.__xss === undefined;", vec![])
        .await
        .unwrap();
    assert_eq!(xss, json!(true));
    browser.close().await.unwrap();
}

#[tokio::test]
async fn an_agent_token_opens_no_page() {
    let campaign = Campaign::start().await;
    let browser = Browser::start().await.expect("start headless Chromium");
    let (_, _, token) = campaign.researchers[2].clone();
    // No session: every page is the login form, with nothing of the campaign on it.
    for (path, _, expected) in pages(&campaign) {
        browser
            .goto(&format!("{}{path}", campaign.base))
            .await
            .unwrap();
        let heading = browser
            .wait_for_text("main h1", |t| !t.is_empty(), WAIT)
            .await
            .unwrap();
        assert_eq!(heading, "aar dashboard", "{path}");
        let source = browser.client().source().await.unwrap();
        assert!(
            !source.contains(expected.as_str()),
            "{path} shows {expected}"
        );
    }
    // An agent's token typed into the login form is refused and sets no session.
    browser
        .goto(&format!("{}/ui/login", campaign.base))
        .await
        .unwrap();
    submit_form(&browser, "main form", "token", &token).await;
    browser
        .wait_for_text("p.error", |t| t.contains("not the admin token"), WAIT)
        .await
        .unwrap();
    browser
        .goto(&format!("{}/ui/leaderboard", campaign.base))
        .await
        .unwrap();
    let heading = browser
        .wait_for_text("main h1", |t| !t.is_empty(), WAIT)
        .await
        .unwrap();
    assert_eq!(heading, "aar dashboard");
    browser.close().await.unwrap();
}

#[tokio::test]
#[ignore = "writes docs/screenshots; run by scripts/screenshots"]
async fn screenshots() {
    let out = std::path::PathBuf::from(
        std::env::var("AAR_SCREENSHOTS").expect("AAR_SCREENSHOTS: the folder to write to"),
    );
    std::fs::create_dir_all(&out).unwrap();
    let campaign = Campaign::start().await;
    let browser = logged_in(&campaign).await;
    let names = [
        "campaign",
        "leaderboard",
        "review",
        "entry",
        "snapshot",
        "researcher",
        "forum",
        "post",
        "search",
        "audit",
    ];
    for ((path, css, expected), name) in pages(&campaign).into_iter().zip(names) {
        browser
            .goto(&format!("{}{path}", campaign.base))
            .await
            .unwrap();
        browser
            .wait_for_text(css, |t| t.contains(expected.as_str()), WAIT)
            .await
            .unwrap();
        let png = browser.screenshot_png().await.unwrap();
        std::fs::write(out.join(format!("{name}.png")), png).unwrap();
    }
    browser.close().await.unwrap();
}
