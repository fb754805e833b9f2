//! The quickstart's live page in a real browser (headless Chromium over
//! WebDriver): rows appear for the simulator's tags and their values and
//! times change as group messages stream in. Leaves a screenshot at
//! `target/live-page.png` for the docs and for a human to look at.

mod support;

use std::time::{Duration, Instant};
use support::browser::Browser;
use support::site::{Quickstart, repo_root};

/// (tag, value text, read-at text) of every row on the page.
const ROWS: &str = "return [...document.querySelectorAll('#tags tr')]
    .map(r => [r.cells[2].textContent, r.cells[3].textContent, r.cells[4].textContent]);";

#[tokio::test(flavor = "multi_thread")]
async fn the_live_page_shows_values_changing() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = Quickstart::new(dir.path());
    let mut site = quickstart.start(dir.path());
    let url = format!("http://127.0.0.1:{}/", quickstart.http_port);

    let mut site_ready = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !site_ready {
        site.assert_alive();
        assert!(
            Instant::now() < deadline,
            "site did not serve; log:\n{}",
            site.log()
        );
        site_ready = std::net::TcpStream::connect(("127.0.0.1", quickstart.http_port)).is_ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let seen = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.goto(&url);
        let updates = || browser.eval("return Number(document.body.dataset.updates || 0);");
        let wait_for_updates = |at_least: i64| {
            let deadline = Instant::now() + Duration::from_secs(15);
            while updates().as_i64().unwrap() < at_least {
                assert!(Instant::now() < deadline, "page got no live updates");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        wait_for_updates(1);
        let first = browser.eval(ROWS);
        // The simulator and the poll are on 1 s: wait two more messages.
        let before = updates().as_i64().unwrap();
        wait_for_updates(before + 2);
        let later = browser.eval(ROWS);
        browser.screenshot(&repo_root().join("target/live-page.png"));
        (first, later)
    })
    .await
    .unwrap();

    let temperature = |rows: &serde_json::Value| -> (f64, String) {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == "temperature")
            .unwrap_or_else(|| panic!("no temperature row in {rows}"));
        (
            row[1].as_str().unwrap().parse().unwrap(),
            row[2].as_str().unwrap().to_string(),
        )
    };
    let (first_value, first_time) = temperature(&seen.0);
    let (later_value, later_time) = temperature(&seen.1);
    assert!((280.0..=309.0).contains(&first_value), "{first_value}");
    assert!((280.0..=309.0).contains(&later_value), "{later_value}");
    assert_ne!(first_time, later_time, "the row's read-at time moves on");
    assert_eq!(
        seen.1.as_array().unwrap().len(),
        2,
        "temperature and humidity: {}",
        seen.1
    );
}
