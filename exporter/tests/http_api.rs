//! The JSON API, health/readiness, request accounting and bad requests, against a real engine.

mod common;

use common::fake_cluster::FakeCluster;
use common::*;
use eventstream_core::replication::RaftRole;
use eventstream_exporter::{Exporter, ExporterConfig, ExporterError};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn current_metrics_reports_live_engine_numbers() {
    let load = LoadedEngine::start(20_000);
    let exporter = exporter_for(load.engine());
    let addr = exporter.local_addr();
    // Wait until at least 1.5 s of samples exist so that both rates and the recent window are set.
    let m = wait_for(
        Duration::from_secs(20),
        "throughput and recent latency",
        || {
            let m = get(addr, "/api/v1/metrics/current").json();
            (m["throughput"]["processed_per_sec_10s"].as_f64().unwrap() > 1000.0
                && m["latency"]["recent"]["count"].as_u64().unwrap() > 0
                && m["history"].as_array().unwrap().len() >= 2)
                .then_some(m)
        },
    );
    let r = get(addr, "/api/v1/metrics/current");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));

    let t = &m["throughput"];
    for k in [
        "processed_per_sec_1s",
        "processed_per_sec_10s",
        "received_per_sec_1s",
        "received_per_sec_10s",
    ] {
        let v = t[k].as_f64().unwrap();
        // The producer paces to 20k/s; allow for a slow, shared 2-core machine.
        assert!((500.0..60_000.0).contains(&v), "{k} = {v}");
    }
    let lat = &m["latency"];
    let p50 = lat["since_start"]["p50_ns"].as_u64().unwrap();
    let p99 = lat["since_start"]["p99_ns"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99, "p50 {p50} p99 {p99}");
    let buckets = lat["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 26, "25 edges + +Inf");
    assert_eq!(buckets.last().unwrap()["le"], "+Inf");
    let bucketed: u64 = buckets
        .iter()
        .map(|b| b["since_start"].as_u64().unwrap())
        .sum();
    assert_eq!(bucketed, lat["since_start"]["count"].as_u64().unwrap());

    let tiers = m["tiers"].as_array().unwrap();
    let names: Vec<&str> = tiers.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["realtime", "transactional", "batch"]);
    for t in tiers {
        let cap = t["capacity"].as_u64().unwrap();
        let depth = t["depth"].as_u64().unwrap();
        assert!(cap > 0 && depth <= cap, "{t}");
        assert!(t["pushed"].as_u64().unwrap() > 0, "{t}");
        let ratio = t["fill_ratio"].as_f64().unwrap();
        assert!((ratio - depth as f64 / cap as f64).abs() < 1e-9);
    }
    assert!(
        m["dedup"]["hits"].as_u64().unwrap() > 0,
        "every 10th event is a duplicate"
    );
    assert!(m["dedup"]["misses"].as_u64().unwrap() > 0);
    assert!(
        m["totals"]["handler_errors"].as_u64().unwrap() > 0,
        "the flaky topic errors"
    );
    assert_eq!(
        m["drops"]["total"],
        m["drops"]["queue_full"].as_u64().unwrap() + m["drops"]["hard_stop"].as_u64().unwrap()
    );
    for p in ["critical", "high", "medium", "low"] {
        assert!(m["priorities"][p].as_u64().unwrap() > 0, "{p}");
    }
    assert_eq!(m["workers"]["alive"], 2);
    assert_eq!(m["workers"]["total"], 2);
    assert!(m["process"]["resident_memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(m["running"], true);
}

#[test]
fn health_and_ready_report_why() {
    let load = LoadedEngine::start(2_000);
    let alive = Arc::new(AtomicBool::new(true));
    let alive2 = alive.clone();
    let cluster = Arc::new(FakeCluster::leader());
    let exporter = Exporter::builder(test_config(), load.engine().stats_handle())
        .replication(cluster.clone())
        .liveness(move || {
            if alive2.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("worker thread 1 exited".into())
            }
        })
        .start()
        .unwrap();
    let addr = exporter.local_addr();

    let h = get(addr, "/health");
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(h.json()["status"], "ok");
    let r = get(addr, "/ready");
    assert_eq!(r.status, 200, "{}", r.text());

    alive.store(false, Ordering::Relaxed);
    let h = get(addr, "/health");
    assert_eq!(h.status, 503);
    let body = h.json();
    assert_eq!(body["status"], "fail");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("worker thread 1 exited"),
        "{body}"
    );

    *cluster.ready.lock().unwrap() = Err("no leader known".into());
    let r = get(addr, "/ready");
    assert_eq!(r.status, 503);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("no leader known"),
        "{}",
        r.text()
    );

    // The cluster endpoint shows members, leader and term from the source.
    cluster.status.lock().unwrap().role = RaftRole::Follower;
    std::thread::sleep(Duration::from_millis(300)); // > publish interval
    let c = get(addr, "/api/v1/cluster/status").json();
    assert_eq!(c["mode"], "replicated");
    assert_eq!(c["raft"]["role"], "follower");
    assert_eq!(c["raft"]["term"], 7);
    assert_eq!(c["raft"]["apply_lag"], 2);
    // This node's stream storage, as the fake reports it.
    let stream = &c["raft"]["stream"];
    assert_eq!(stream["segments"], 3);
    assert_eq!(stream["retained_bytes"], 150u64 << 20);
    assert_eq!(stream["missing_events"], 0);
    assert_eq!(stream["volume_total_bytes"], 100u64 << 30);
    assert_eq!(stream["volume_free_bytes"], 40u64 << 30);
    assert_eq!(c["members"].as_array().unwrap().len(), 4);
    assert_eq!(c["node"]["ready"], false);
    assert_eq!(c["node"]["healthy"], false);
    assert!(c["node"]["not_ready_reason"]
        .as_str()
        .unwrap()
        .contains("no leader"));
}

#[test]
fn ready_fails_once_the_engine_is_shut_down() {
    let mut load = LoadedEngine::start(2_000);
    let exporter = exporter_for(load.engine());
    let addr = exporter.local_addr();
    assert_eq!(get(addr, "/ready").status, 200);
    let c = get(addr, "/api/v1/cluster/status").json();
    assert_eq!(c["mode"], "standalone");
    assert_eq!(c["members"].as_array().unwrap().len(), 0);
    assert_eq!(c["node"]["http_address"], addr.to_string());
    load.stop_load();
    load.engine.take().unwrap().shutdown().unwrap();
    let r = wait_for(Duration::from_secs(5), "ready to turn 503", || {
        let r = get(addr, "/ready");
        (r.status == 503).then_some(r)
    });
    assert!(
        r.json()["reason"].as_str().unwrap().contains("shut down"),
        "{}",
        r.text()
    );
    // Workers exited cleanly: liveness reports them stopped.
    let h = get(addr, "/health");
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(h.text().contains("stopped: worker-0"), "{}", h.text());
}

#[test]
fn bad_requests_get_clear_errors_and_never_break_the_server() {
    let load = LoadedEngine::start(1_000);
    let exporter = exporter_for(load.engine());
    let addr = exporter.local_addr();

    let r = get(addr, "/nope/../../etc/passwd");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such endpoint");
    assert_eq!(get(addr, "/metrics/").status, 404);

    for (method, path) in [
        ("POST", "/metrics"),
        ("DELETE", "/api/v1/metrics/current"),
        ("PUT", "/"),
    ] {
        let r = request(addr, method, path);
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET,HEAD"), "{:?}", r.headers);
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("method not allowed"));
    }

    // Oversized body by Content-Length: 413 without reading it.
    let r = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\npartial",
    )
    .unwrap();
    assert_eq!(r.status, 413);
    // Oversized chunked body: 413 after reading at most the limit.
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend_from_slice(&[b'a'; 8192]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(addr, &req).unwrap().status, 413);
    // A small body on a GET is tolerated.
    let r = raw(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(r.status, 200);

    // Oversized head: 431.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\nConnection: close\r\n\r\n",
        "j".repeat(64 * 1024)
    );
    assert_eq!(raw(addr, big.as_bytes()).unwrap().status, 431);
    // Garbage: 400, connection closed.
    assert_eq!(
        raw(addr, b"\x16\x03\x01 not http at all\r\n\r\n")
            .unwrap()
            .status,
        400
    );
    // A client that connects and goes away, or sends half a request line.
    drop(TcpStream::connect(addr).unwrap());
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /met").unwrap();
    }

    // Still serving, and the requests were counted under bounded labels.
    let text = get(addr, "/metrics").text();
    assert!(
        text.contains(
            r#"eventstream_http_requests_total{path="other",method="GET",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"eventstream_http_requests_total{path="/metrics",method="POST",status="405"} 1"#
    ));
    assert!(text.contains(r#"path="/metrics",method="POST",status="413"} 1"#));
    assert!(text.contains(r#"path="/metrics",method="GET",status="413"} 1"#));
    assert!(!text.contains("passwd"), "raw paths never become labels");
    assert!(
        text.contains("eventstream_http_requests_in_flight 1"),
        "this request is in flight"
    );
    assert!(text.contains(
        r#"eventstream_http_request_duration_seconds_bucket{path="/health",le="0.001"}"#
    ));
}

#[test]
fn keep_alive_serves_several_requests_per_connection() {
    let load = LoadedEngine::start(1_000);
    let exporter = exporter_for(load.engine());
    let mut s = TcpStream::connect(exporter.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
}

#[test]
fn status_page_is_self_contained() {
    let load = LoadedEngine::start(1_000);
    let exporter = exporter_for(load.engine());
    let r = get(exporter.local_addr(), "/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    let html = r.text();
    for external in ["http://", "https://", "//cdn", "<link", "src=\""] {
        assert!(!html.contains(external), "page references {external}");
    }
    assert!(html.contains("/api/v1/metrics/current") && html.contains("/api/v1/cluster/status"));
}

#[test]
fn start_errors_name_the_problem() {
    let load = LoadedEngine::start(1_000);
    let e = Exporter::builder(
        ExporterConfig {
            publish_interval: Duration::from_millis(1),
            ..test_config()
        },
        load.engine().stats_handle(),
    )
    .start()
    .unwrap_err();
    assert!(
        matches!(
            e,
            ExporterError::InvalidConfig {
                field: "publish_interval",
                ..
            }
        ),
        "{e}"
    );

    let first = exporter_for(load.engine());
    let e = Exporter::builder(
        ExporterConfig::listening_on(first.local_addr()),
        load.engine().stats_handle(),
    )
    .start()
    .unwrap_err();
    assert!(matches!(e, ExporterError::Bind { .. }), "{e}");
    assert!(
        e.to_string().contains(&first.local_addr().to_string()),
        "{e}"
    );
}

#[test]
fn urls_and_shutdown() {
    let load = LoadedEngine::start(1_000);
    let exporter = exporter_for(load.engine());
    let addr = exporter.local_addr();
    let urls = exporter.urls();
    assert_eq!(urls[0].1, format!("http://{addr}/"));
    assert!(urls.iter().any(|(_, u)| u.ends_with("/metrics")));
    exporter.shutdown();
    assert!(
        TcpStream::connect(addr).is_err()
            || raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err()
    );
}

#[test]
fn spawn_on_an_existing_runtime() {
    let load = LoadedEngine::start(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let exporter = Exporter::builder(test_config(), load.engine().stats_handle())
        .spawn(rt.handle())
        .unwrap();
    assert_eq!(get(exporter.local_addr(), "/health").status, 200);
    exporter.shutdown();
}
