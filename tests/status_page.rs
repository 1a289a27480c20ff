//! The status page in a real browser: headless Chromium loads `/` from the admin listener,
//! runs its script, and the DOM must show every backend with its health.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it). Without it the test is skipped with a
//! loud message, except under CI (`CI` set), where a missing browser fails the test.

mod support;
#[path = "support/web.rs"]
mod web;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use support::{Fulcrum, Toml, closed_addr, free_port, temp_dir, wait_for_async};
use web::{get, http_backend};

/// One Chromium run; a hung browser is killed, and the caller's poll tries again.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);

fn chromium_installed() -> bool {
    std::process::Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The DOM of `url` after its script ran for up to 3s of virtual time.
async fn dump_dom(url: &str) -> Option<String> {
    let profile = temp_dir("chromium");
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(CHROMIUM_TIMEOUT, run)
        .await
        .ok()?
        .ok()?;
    let _ = std::fs::remove_dir_all(&profile);
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `data-health` of the table row of backend `addr`, if the page drew one.
fn health_of(dom: &str, addr: &str) -> Option<String> {
    let at = dom.find(&format!("data-backend=\"{addr}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[at..tag_end];
    let h = tag.find("data-health=\"")? + "data-health=\"".len();
    let len = tag[h..].find('"')?;
    Some(tag[h..h + len].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_backend_with_its_health_in_a_browser() {
    if !chromium_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium must be installed in CI (.ci/run installs it)"
        );
        eprintln!("\n*** SKIPPED: chromium is not installed; the status page was NOT tested ***\n");
        return;
    }
    let live = http_backend("live").await;
    let dead = closed_addr();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _f = Fulcrum::start(
        &Toml::new()
            .admin(admin.port())
            .listener("web", web.port(), "http", "app")
            .upstream("app", [(live, 3), (dead, 1)])
            .health("check = \"none\"\ninterval = \"1h\""),
    );
    // Passive failures mark the refusing backend down.
    wait_for_async("the refusing backend to be marked down", || async {
        let _ = get(web, "/").await;
        let (_, body) = get(admin, "/status").await.ok()?;
        body.contains("\"healthy\":false").then_some(())
    })
    .await;

    let url = format!("http://{admin}/");
    let (live, dead) = (live.to_string(), dead.to_string());
    let dom = wait_for_async("the page to draw both backends", || async {
        let dom = dump_dom(&url).await?;
        (health_of(&dom, &live).is_some() && health_of(&dom, &dead).is_some()).then_some(dom)
    })
    .await;
    assert_eq!(
        health_of(&dom, &live).as_deref(),
        Some("up"),
        "the page must show the live backend up"
    );
    assert_eq!(
        health_of(&dom, &dead).as_deref(),
        Some("down"),
        "the page must show the refusing backend down"
    );
    assert!(
        dom.contains(">UP<") && dom.contains(">DOWN<"),
        "health is spelled out, not only coloured"
    );
    assert!(
        dom.contains("1/2 up"),
        "the upstream's heading counts healthy backends"
    );
}
