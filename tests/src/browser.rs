//! Headless Chromium for the page tests: load a local HTML file, let its scripts run,
//! and return the DOM as serialized after the `load` event (`--dump-dom`). The pages
//! under test carry a small harness script that writes its findings into the DOM.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Chromium executable (Debian's `chromium` package), if installed.
pub fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(move |d| d.join(name))
        })
        .find(|p| p.is_file())
}

/// Load `page` in headless Chromium and return the serialized DOM and Chromium's
/// standard error. `profile` is a fresh directory for the browser profile.
pub fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> (String, String) {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// Take a PNG screenshot of `page` at `width`x`height` into `png`.
pub fn screenshot(chromium: &Path, page: &Path, profile: &Path, png: &Path, size: (u32, u32)) {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text of the element `<pre id="test-out">` that a harness script wrote, parsed
/// as JSON (HTML entities of text content undone).
pub fn harness_output(dom: &str) -> serde_json::Value {
    let start = dom
        .find("<pre id=\"test-out\">")
        .unwrap_or_else(|| panic!("no harness output in the page: {dom:.2000}"))
        + "<pre id=\"test-out\">".len();
    let end = start + dom[start..].find("</pre>").expect("end of harness output");
    let text = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&text).expect("harness output is JSON")
}
