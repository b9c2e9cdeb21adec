//! The status page in real headless Chromium: no JavaScript errors, live numbers in the DOM,
//! and a screenshot kept as a test artifact (`target/artifacts/status-page.png`).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn chromium() -> Option<std::path::PathBuf> {
    // Debian installs `chromium`; other distributions use other names.
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|n| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join(n))
                    .find(|f| f.is_file())
            })
        })
        .or_else(|| tool("chromium"))
}

fn run_chromium(binary: &Path, extra: &[String], url: &str) -> Output {
    let profile = temp_dir("chromium");
    let mut cmd = Command::new(binary);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let out = cmd.output().expect("chromium runs");
    let _ = std::fs::remove_dir_all(profile);
    out
}

fn attr<'a>(dom: &'a str, name: &str) -> &'a str {
    let body = &dom[dom.find("<body").expect("a body")..];
    let key = format!("{name}=\"");
    let start = body
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in body"))
        + key.len();
    &body[start..start + body[start..].find('"').unwrap()]
}

fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let key = format!("id=\"{id}\"");
    let at = dom.find(&key).unwrap_or_else(|| panic!("no #{id}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    &dom[start..start + dom[start..].find('<').unwrap()]
}

#[test]
fn status_page_renders_live_numbers_without_js_errors() {
    let Some(binary) = chromium() else {
        return;
    };
    let load = LoadedEngine::start(10_000);
    let exporter = cluster_exporter_for(load.engine());
    let url = format!("http://{}/", exporter.local_addr());
    // Let a few seconds of history accumulate so the charts have lines.
    wait_for(Duration::from_secs(20), "history", || {
        let m = get(exporter.local_addr(), "/api/v1/metrics/current").json();
        (m["history"].as_array().unwrap().len() >= 4).then_some(())
    });

    let out = run_chromium(
        &binary,
        &["--virtual-time-budget=4000".into(), "--dump-dom".into()],
        &url,
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    let context = || format!("DOM:\n{dom}\nchromium stderr:\n{stderr}");
    assert_eq!(attr(&dom, "data-js-errors"), "0", "{}", context());
    assert_eq!(attr(&dom, "data-fetch-errors"), "0", "{}", context());
    assert_eq!(attr(&dom, "data-status"), "ok", "{}", context());
    let updates: u32 = attr(&dom, "data-updates").parse().unwrap();
    assert!(updates >= 2, "page polled {updates} times\n{}", context());
    assert!(!stderr.contains("Uncaught"), "{}", context());
    assert!(!stderr.contains("Content Security Policy"), "{}", context());

    // Live numbers: the processed total is a positive number, rates and percentiles are set.
    let processed: u64 = attr(&dom, "data-processed").parse().unwrap();
    assert!(processed > 0, "{}", context());
    let shown: u64 = element_text(&dom, "k-processed")
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(shown > 0);
    for id in ["k-rate1", "k-p50", "k-p99", "k-dedup", "k-workers"] {
        let t = element_text(&dom, id);
        assert!(
            t != "–" && !t.is_empty(),
            "#{id} still shows {t:?}\n{}",
            context()
        );
    }
    assert_eq!(element_text(&dom, "k-workers"), "2 / 2");
    for tier in ["realtime", "transactional", "batch"] {
        assert!(
            dom.contains(&format!("data-tier=\"{tier}\"")),
            "tier {tier} missing"
        );
    }
    assert!(
        dom.contains("<polyline"),
        "throughput/latency charts have lines"
    );
    assert!(dom.contains("<rect"), "latency distribution has bars");
    // Cluster table for the fake leader with 4 members.
    assert!(
        !dom.contains("class=\"panel hidden\" id=\"cluster\""),
        "cluster panel shown"
    );
    assert_eq!(dom.matches("(this node)</td>").count(), 1, "{}", context());
    assert!(dom.contains("<td>leader</td>"), "{}", context());
    assert!(element_text(&dom, "raft-summary").contains("term 7"));
    // The fake's stream holds offsets 500 ..= 1499.
    let summary = element_text(&dom, "raft-summary");
    assert!(summary.contains("offsets 500–1,499"), "{summary}");
    // The fake's stream storage: 3 segments, 150 MiB, 40 of 100 GiB free, nothing missing.
    let stream = element_text(&dom, "stream-summary");
    for part in [
        "3 segments",
        "150.0 MiB retained",
        "40.0 GiB free of 100.0 GiB (40 %)",
        "no missing events",
    ] {
        assert!(stream.contains(part), "{part}: {stream}");
    }
    // The fake's one consumer group, its name escaped.
    assert!(
        !dom.contains("id=\"groups-panel\" class=\"hidden\""),
        "{}",
        context()
    );
    assert!(
        dom.contains("<td>billing \"eu\"</td><td>orders</td><td class=\"num\">40</td><td class=\"num\">100</td><td class=\"num\">60</td>"),
        "{}",
        context()
    );

    let shot = artifacts_dir().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = run_chromium(
        &binary,
        &[
            "--virtual-time-budget=4000".into(),
            "--window-size=1280,1250".into(),
            format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}
