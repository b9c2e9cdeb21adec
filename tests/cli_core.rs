//! The binary's embedded-engine commands, run as a user would.

mod common;

use common::{eventstream, http_get};

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

#[test]
fn bench_pipeline_json_has_every_field_and_accounts_for_every_event() {
    let out = eventstream()
        .args([
            "bench", "pipeline", "--events", "200000", "--no-pin", "--json",
        ])
        .output()
        .unwrap();
    let v = json_of(&out);
    for key in [
        "events",
        "seconds",
        "events_per_sec",
        "p50_ns",
        "p90_ns",
        "p99_ns",
        "p999_ns",
        "max_ns",
        "dropped",
        "dedup_hits",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["events"], 200_000);
    assert_eq!(v["processed"], 200_000);
    assert_eq!(v["latency_samples"], 200_000);
    assert!(v["events_per_sec"].as_f64().unwrap() > 0.0);
    let (p50, p99, max) = (
        v["p50_ns"].as_u64().unwrap(),
        v["p99_ns"].as_u64().unwrap(),
        v["max_ns"].as_u64().unwrap(),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{v}");
}

#[test]
fn bench_pipeline_open_loop_and_crossbeam_comparison() {
    let out = eventstream()
        .args([
            "bench",
            "pipeline",
            "--events",
            "100000",
            "--rate",
            "500000",
            "--compare",
            "--no-pin",
            "--json",
        ])
        .output()
        .unwrap();
    let v = json_of(&out);
    assert_eq!(v["offered_rate"], 500_000);
    // Open loop at 500 k/s: 100 k events take at least ~0.2 s.
    assert!(v["seconds"].as_f64().unwrap() >= 0.19, "{v}");
    assert!(v["baseline_crossbeam"]["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["speedup_vs_crossbeam"].as_f64().unwrap() > 0.0);
    // The producer reports the time it was not running, within the run's length.
    let stalls = &v["producer_stalls"];
    let stalled_ms = stalls["stalled_ms"].as_f64().unwrap();
    assert!(
        stalled_ms >= 0.0 && stalled_ms <= v["seconds"].as_f64().unwrap() * 1e3,
        "{v}"
    );
    assert!(stalls["gaps"].as_u64().unwrap() >= stalls["gaps_over_100us"].as_u64().unwrap());
    // Progress goes to stderr, never into the JSON on stdout.
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() == 1);
}

#[test]
fn bench_hiccups_reports_every_allowed_core() {
    let out = eventstream()
        .args(["bench", "hiccups", "--seconds", "0.2", "--json"])
        .output()
        .unwrap();
    let v = json_of(&out);
    let cores = v["cores"].as_array().unwrap();
    assert!(!cores.is_empty(), "{v}");
    for c in cores {
        let pct = c["stalled_pct"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&pct), "{v}");
        assert!(c["max_gap_us"].as_f64().unwrap() <= 0.2e6 + 1e5, "{v}");
    }
    let out = eventstream()
        .args(["bench", "hiccups", "--seconds", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seconds"));
}

#[test]
fn bench_pipeline_rejects_bad_flags_with_the_flag_named() {
    let out = eventstream()
        .args(["bench", "pipeline", "--batch", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch"));
    let out = eventstream()
        .args(["bench", "pipeline", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

/// `GET path` on `addr`: the body of a 200 answer.
fn get_ok(addr: &str, path: &str) -> String {
    let (code, body) = http_get(addr, path);
    assert_eq!(code, 200, "{path}: {body}");
    body
}

/// Runs `eventstream demo ARGS`, reading stdout as it comes; calls `during` once the first
/// summary line is out (the demo is running), with every URL printed so far. Returns stdout.
fn run_demo(args: &[&str], during: impl FnOnce(&[String])) -> String {
    use std::io::BufRead;
    let mut child = eventstream()
        .arg("demo")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let mut urls = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        urls.extend(
            line.split_whitespace()
                .filter(|w| w.starts_with("http://"))
                .map(str::to_owned),
        );
        if line.contains("events/s=") {
            break;
        }
    }
    during(&urls);
    for line in lines {
        stdout.push_str(&line.unwrap());
        stdout.push('\n');
    }
    assert!(child.wait().unwrap().success(), "{stdout}");
    stdout
}

#[test]
fn embedded_demo_serves_metrics_prints_a_live_summary_and_shuts_down_cleanly() {
    let stdout = run_demo(
        &[
            "--embedded",
            "--duration",
            "3",
            "--rate",
            "20000",
            "--http",
            "127.0.0.1:0",
        ],
        |urls| {
            let m = urls
                .iter()
                .find(|u| u.ends_with("/metrics"))
                .expect("metrics URL");
            let metrics = get_ok(m, "/metrics");
            assert!(
                metrics.contains("eventstream_events_processed_total"),
                "{metrics}"
            );
            assert!(metrics.contains("eventstream_event_latency_seconds_bucket"));
            assert!(get_ok(m, "/").contains("<html"));
        },
    );
    let summary: Vec<&str> = stdout.lines().filter(|l| l.contains("events/s=")).collect();
    assert!(!summary.is_empty(), "no summary lines: {stdout}");
    for field in ["p50=", "p99=", "fill realtime=", "drops=", "dedup_hits="] {
        assert!(
            summary[0].contains(field),
            "{field} missing: {}",
            summary[0]
        );
    }
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("shutdown:"), "{stdout}");
    // The demo retries 1 in 50 ids: dedup must have caught some.
    let hits: u64 = last
        .split("dedup hits ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(hits > 0, "{last}");
}

#[test]
fn cluster_demo_runs_three_nodes_each_with_status_page_and_metrics() {
    let stdout = run_demo(&["--duration", "3", "--http", "127.0.0.1:0"], |urls| {
        let pages: Vec<&String> = urls.iter().filter(|u| u.ends_with('/')).collect();
        assert_eq!(pages.len(), 3, "{urls:?}");
        for page in pages {
            assert!(get_ok(page, "/").contains("<html"));
            let metrics = get_ok(page, "/metrics");
            assert!(metrics.contains("eventstream_raft_term"), "{metrics}");
            let status = get_ok(page, "/api/v1/cluster/status");
            let json: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
            let text = json.to_string();
            for id in ["1", "2", "3"] {
                assert!(
                    text.contains(&format!("\"id\":{id}")),
                    "member {id} missing: {text}"
                );
            }
        }
    });
    let summary: Vec<&str> = stdout.lines().filter(|l| l.contains("events/s=")).collect();
    assert!(!summary.is_empty(), "{stdout}");
    for field in [
        "commit p50=",
        "p99=",
        "leader=",
        "term=",
        "fill realtime=",
        "drops=",
        "dedup_hits=",
    ] {
        assert!(
            summary[0].contains(field),
            "{field} missing: {}",
            summary[0]
        );
    }
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("shutdown: acknowledged "), "{stdout}");
    let acked: u64 = last.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(acked > 0, "{last}");
    assert!(last.contains("failed 0"), "{last}");
}

#[test]
fn doctor_that_cannot_run_exits_3_not_a_grade() {
    let out = eventstream()
        .args(["doctor", "--endpoint", "https://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Error:") && err.contains("https"), "{err}");
    let out = eventstream()
        .args([
            "doctor",
            "--endpoint",
            "http://127.0.0.1:1",
            "--interval",
            "0.01",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));
}
