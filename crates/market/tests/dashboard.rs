//! The dashboard loads in headless Chromium (Debian's `chromium`, installed
//! by `scripts/services.sh --with-chromium` when missing) and draws its
//! charts from live figures: a screenshot is taken and every chart reports
//! the points it drew.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn chromium() -> &'static str {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("--with-chromium")
        .status()
        .expect("run scripts/services.sh");
    assert!(
        status.success(),
        "scripts/services.sh --with-chromium failed: the test needs chromium"
    );
    "chromium"
}

fn headless(args: &[&str], url: &str) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .args([
            "--window-size=1280,900",
            "--virtual-time-budget=6000",
            "--run-all-compositor-stages-before-draw",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_its_charts_in_a_browser() {
    let db = TestDb::seeded().await;
    let server = serve(&db, true, &unique("market-dash")).await;
    let (c, base) = (client(), server.url());
    // Traffic for the charts to show, while the page polls.
    let traffic = {
        let (c, base) = (c.clone(), base.clone());
        let symbol = db.symbol(2).await;
        tokio::spawn(async move {
            for i in 0..2_000u32 {
                let _ = get(&c, &format!("{base}/api/stocks/{symbol}/price")).await;
                let _ = get(&c, &format!("{base}/api/users/{}/profile", 1 + i % 50)).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("dashboard.png");
    let url = format!("{base}/dashboard");
    let (dom, screenshot) = tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || {
            let dom = headless(&["--dump-dom"], &url);
            let screenshot = headless(&[&format!("--screenshot={}", shot.display())], &url);
            (dom, screenshot)
        }
    })
    .await
    .unwrap();
    traffic.abort();

    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    for chart in ["hit", "lat", "rps", "dbq", "mem", "evi"] {
        let marker = format!("data-chart=\"{chart}\"");
        let tag = html
            .split("<canvas")
            .find(|t| t.contains(&marker))
            .unwrap_or_else(|| panic!("no {chart} canvas in:\n{html}"));
        let points: u32 = tag
            .split("data-points=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("chart {chart} drew nothing: {tag}"));
        assert!(points >= 2, "chart {chart} drew {points} points");
    }
    assert!(
        html.contains("<div id=\"status\">cache on"),
        "the status line shows live figures: {html}"
    );

    assert!(
        screenshot.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&screenshot.stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot file");
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 20_000,
        "a blank page compresses far below this: {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("MARKET_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    server.stop().await.unwrap();
}
