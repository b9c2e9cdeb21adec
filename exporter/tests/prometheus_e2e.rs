//! End to end: Debian's real `prometheus` scrapes a running engine's exporter; PromQL through
//! Prometheus' HTTP API must return sane values for rates, histogram quantiles and queue depth.

mod common;

use common::*;
use eventstream_testkit::{query_path, Prometheus};
use std::net::SocketAddr;
use std::time::Duration;

/// Instant queries through Prometheus' HTTP API.
trait Query {
    /// Runs an instant query; `None` while Prometheus is not answering yet.
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>>;

    /// Polls `promql` until `accept` likes the result (or 30 s pass).
    fn eventually(
        &self,
        promql: &str,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value>;
}

impl Query for Prometheus {
    fn query(&self, promql: &str) -> Option<Vec<serde_json::Value>> {
        let addr: SocketAddr = self.addr().parse().unwrap();
        let r = raw(
            addr,
            format!(
                "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                query_path(promql)
            )
            .as_bytes(),
        )
        .ok()?;
        if r.status != 200 {
            return None;
        }
        let v = r.json();
        assert_eq!(v["status"], "success", "{promql}: {v}");
        Some(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    fn eventually(
        &self,
        promql: &str,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut last = None;
        for _ in 0..150 {
            if let Some(r) = self.query(promql) {
                if accept(&r) {
                    return r;
                }
                last = Some(r);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "query {promql} never became acceptable; last result {last:?}\nprometheus log:\n{}",
            self.log()
        );
    }
}

fn scalar(sample: &serde_json::Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn prometheus_scrapes_and_promql_answers() {
    let Some(binary) = tool("prometheus") else {
        return;
    };
    let load = LoadedEngine::start(10_000);
    let exporter = cluster_exporter_for(load.engine());
    let dir = temp_dir("prometheus");
    let prom = Prometheus::start(&binary, &dir, &[exporter.local_addr().to_string()], None)
        .expect("prometheus starts");

    prom.eventually(r#"up{job="eventstream"}"#, |r| {
        r.len() == 1 && scalar(&r[0]) == 1.0
    });

    let rate = prom.eventually("rate(eventstream_events_processed_total[5s])", |r| {
        r.len() == 1 && scalar(&r[0]) > 0.0
    });
    let rate = scalar(&rate[0]);
    assert!(
        (100.0..100_000.0).contains(&rate),
        "processed rate {rate}/s (producer paces 10k/s)"
    );
    // Target labels come from Prometheus (our series never carry them, so nothing clashes).
    let r = prom.query("eventstream_events_processed_total").unwrap();
    assert_eq!(r[0]["metric"]["job"], "eventstream", "{:?}", r[0]["metric"]);
    assert_eq!(
        r[0]["metric"]["instance"],
        exporter.local_addr().to_string()
    );

    let p99 = prom.eventually(
        "histogram_quantile(0.99, sum by (le) (rate(eventstream_event_latency_seconds_bucket[5s])))",
        |r| r.len() == 1 && scalar(&r[0]).is_finite() && scalar(&r[0]) > 0.0,
    );
    let p99 = scalar(&p99[0]);
    assert!(p99 > 1e-7 && p99 < 5.0, "p99 latency {p99} s");
    let p50 = scalar(
        &prom
            .query("histogram_quantile(0.5, sum by (le) (rate(eventstream_event_latency_seconds_bucket[5s])))")
            .unwrap()[0],
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");

    let depth = prom.eventually("eventstream_queue_depth", |r| r.len() == 3);
    let mut tiers: Vec<&str> = depth
        .iter()
        .map(|s| s["metric"]["queue"].as_str().unwrap())
        .collect();
    tiers.sort();
    assert_eq!(tiers, ["batch", "realtime", "transactional"]);
    let fill = prom.eventually(
        "eventstream_queue_depth / eventstream_queue_capacity",
        |r| r.len() == 3,
    );
    for s in &fill {
        let f = scalar(s);
        assert!((0.0..=1.0).contains(&f), "fill {f} of {}", s["metric"]);
    }

    let drops = prom.eventually("eventstream_events_dropped_total", |r| r.len() == 2);
    assert!(drops.iter().all(|s| scalar(s) >= 0.0));
    let by_prio = prom.eventually(
        "sum by (priority) (rate(eventstream_events_priority_total[5s]))",
        |r| r.len() == 4 && r.iter().all(|s| scalar(s) > 0.0),
    );
    assert_eq!(by_prio.len(), 4);

    // Cluster series from the fake source: a leader; fsync quantile from raw cumulative buckets.
    let leader = prom.eventually("eventstream_raft_is_leader", |r| r.len() == 1);
    assert_eq!(scalar(&leader[0]), 1.0);
    let fsync = prom.eventually(
        "histogram_quantile(0.5, eventstream_raft_fsync_duration_seconds_bucket)",
        |r| r.len() == 1,
    );
    let fsync = scalar(&fsync[0]);
    assert!(
        (2.5e-4..=1e-3).contains(&fsync),
        "median fsync {fsync} s (fake: 0.2..1.2 ms)"
    );

    // Prometheus' own scrapes show up in the HTTP request metrics.
    prom.eventually(
        r#"rate(eventstream_http_requests_total{path="/metrics",method="GET",status="200"}[5s])"#,
        |r| r.len() == 1 && scalar(&r[0]) > 0.0,
    );
}
