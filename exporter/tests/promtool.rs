//! `promtool check metrics` (Prometheus' own linter) on a live `/metrics`, cluster series included.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn promtool_check_metrics_is_clean() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let load = LoadedEngine::start(10_000);
    let exporter = cluster_exporter_for(load.engine());
    let addr = exporter.local_addr();
    // Exercise every route (and a 404/405) so the HTTP series have several label sets.
    for path in eventstream_exporter::ROUTES {
        get(addr, path);
    }
    get(addr, "/nope");
    request(addr, "POST", "/metrics");
    wait_for(Duration::from_secs(10), "processed events", || {
        (load.engine().stats().processed > 1_000).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let text = get(addr, "/metrics").text();
    std::fs::write(artifacts_dir().join("metrics.txt"), &text).unwrap();

    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems:\n{report}"
    );
    // The linter saw the full set: engine, process, HTTP and cluster families.
    for needle in [
        "eventstream_event_latency_seconds_bucket",
        "process_cpu_seconds_total",
        "eventstream_http_request_duration_seconds_bucket",
        "eventstream_raft_fsync_duration_seconds_bucket",
        "eventstream_raft_replication_lag_entries",
        "eventstream_raft_snapshot_duration_seconds_bucket",
        "eventstream_publish_requests_total{outcome=\"acked\"}",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
}
