//! The web UI in a real browser (headless Chromium from the distribution's packages): the
//! invocations list is in the page's DOM once loaded, and on a 390-pixel-wide screen (a
//! phone) no page scrolls sideways. Skipped where Chromium is not installed, unless
//! `RESTATE_REQUIRE_CHROMIUM` is set (`scripts/test` installs it and sets it).

mod support;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{App, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// The Chromium binary, if installed.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("RESTATE_REQUIRE_CHROMIUM").is_none(),
            "RESTATE_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        eprintln!("skipped: Chromium is not installed");
    }
    found
}

/// The DOM of `url` once loaded, as headless Chromium dumps it (scripts run), with a window
/// `width` pixels wide. `extra` flags come first.
fn dump_dom(browser: &Path, url: &str, width: u32, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args(extra)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            &format!("--window-size={width},900"),
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Serves, on a loopback port of its own, the page that frames the URL after its `#` 390
/// pixels wide and titles itself with the framed page's content width; `/wide` is a page
/// 1000 pixels wide. Returns its base URL.
fn serve_harness() -> String {
    const FRAME: &str = "<!doctype html><body style=\"margin:0\"><iframe id=\"f\" \
        style=\"width:390px;height:800px;border:0\"></iframe><script>var f=document.\
        getElementById('f');f.onload=function(){document.title='width='+f.contentDocument.\
        documentElement.scrollWidth};f.src=location.hash.slice(1)</script></body>";
    const WIDE: &str = "<!doctype html><body style=\"margin:0\"><div style=\"width:1000px\">\
        wide</div></body>";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let page = if request[..n].starts_with(b"GET /wide") {
                WIDE
            } else {
                FRAME
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    base
}

#[tokio::test]
async fn the_invocations_are_in_the_dom_and_no_page_scrolls_sideways_on_a_phone() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(BIN, &dir.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        // Each waits a minute: running or suspended while the browser looks.
        let sent = client
            .post(format!("{}/Waits/nap/send", app.ingress))
            .json(&json!(60_000 + n))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 202);
        let body: serde_json::Value = sent.json().await.unwrap();
        ids.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    let marked = client
        .post(format!("{}/Steps/run/send", app.ingress))
        .json(&json!(3))
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 202);
    // Listed by the admin API before the browser looks.
    poll(Duration::from_secs(30), || async {
        let listed = reqwest::get(format!("{}/invocations?service=Waits", app.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ids.iter().all(|id| listed.contains(id.as_str()))
    })
    .await;

    let list = dump_dom(&browser, &format!("{}/ui", app.admin), 1280, &[]);
    for id in &ids {
        assert!(
            list.contains(&format!("data-invocation=\"{id}\"")),
            "{id} is not in the DOM:\n{list}"
        );
    }
    let detail = dump_dom(
        &browser,
        &format!("{}/ui/invocations/{}", app.admin, ids[0]),
        1280,
        &[],
    );
    assert!(detail.contains("id=\"journal\""), "{detail}");
    assert!(detail.contains("sleep"), "{detail}");

    // A page of the test's own, served from another port, frames each UI page 390 pixels
    // wide and writes down how wide its content is (web security off: the frame's origin
    // differs).
    let harness = serve_harness();
    for path in [
        "/ui".to_owned(),
        "/ui/services".to_owned(),
        format!("/ui/invocations/{}", ids[0]),
        format!("/ui/invocations/{}/kill", ids[0]),
    ] {
        let dom = dump_dom(
            &browser,
            &format!("{harness}#{}{path}", app.admin),
            390,
            &["--disable-web-security"],
        );
        let width: u32 = dom
            .split("<title>width=")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the frame of {path} did not load:\n{dom}"));
        assert!(width <= 390, "{path} is {width} pixels wide on a phone");
    }
    // The measure measures: a page made wider than a phone is found out.
    let wide = dump_dom(
        &browser,
        &format!("{harness}#{harness}wide"),
        390,
        &["--disable-web-security"],
    );
    assert!(wide.contains("<title>width=1000"), "{wide}");
    drop(app);
}
