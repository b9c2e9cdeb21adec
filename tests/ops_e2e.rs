//! The shipped operations artefacts against a real Prometheus and a live
//! cluster. Debian's `prometheus` scrapes three real `eventstream node` processes every second
//! (evaluating `alerts/eventstream.rules.yml` every second) while a background client publishes.
//!
//! Asserted:
//! * the rule file loads: every alerting rule in it (19 today), each evaluated without error;
//! * every panel query of `dashboards/overview.json` and `dashboards/cluster.json` (extracted
//!   by `dashboards/check.py`'s `panel_queries`) returns data through `/api/v1/query`;
//! * a healthy cluster under load has no alert firing, and none pending either (pending means
//!   "would fire if this lasted"; a healthy cluster must not even get there) — except
//!   EventStreamHighFsyncLatency and EventStreamHighLatency pending, which on this shared
//!   2-core machine measure the machine as much as the cluster and are only noted (as are
//!   EventStreamDiskFilling and EventStreamDiskAlmostFull pending: the nodes' data directories
//!   are on this machine's disk, however full it is); instead,
//!   each node's median event latency (through Prometheus) must be far below the 1 ms
//!   objective, which holds when the histogram measures the node's local stage;
//! * after `kill -9` of the leader (the design in docs/operate.md: a normal failover fires
//!   nothing but NodeDown for the dead node after a minute): EventStreamNodeDown goes pending
//!   for the killed instance and only for it; EventStreamNoLeader and
//!   EventStreamMultipleLeaders are at most a transient blip of pending (a scrape can land in
//!   the election) and are inactive once the new leader is scraped; EventStreamQuorumLost never
//!   appears (two of three voters are up and connected); nothing fires. Other warnings may go
//!   pending after the kill without breaking the design: EventStreamProposalsFailing (proposals
//!   in flight at the kill fail; it needs 10 minutes), EventStreamReplicationLag for the dead
//!   peer (it is behind, and stays so; 5 minutes). The rules' `for:`
//!   durations are not shortened, so "fires after a minute" is left to the promtool tests
//!   (alerts/tests/cluster.test.yml) and this test asserts pending / inactive.
//!
//! Skipped with a loud message when `prometheus` or `python3` (with PyYAML, for
//! dashboards/check.py) is missing and CI is not `true`; with `CI=true` it fails instead.

mod live_cluster;

use eventstream_testkit::{query_path, Prometheus};
use live_cluster::*;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// One entry of `/api/v1/alerts`.
#[derive(Debug, Clone)]
struct ActiveAlert {
    name: String,
    state: String,
    instance: Option<String>,
    value: String,
}

impl std::fmt::Display for ActiveAlert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (instance {}, value {})",
            self.name,
            self.state,
            self.instance.as_deref().unwrap_or("-"),
            self.value
        )
    }
}

/// What this test reads from Prometheus' HTTP API.
trait Api {
    /// `GET path` on the HTTP API; the `data` member of a `success` answer.
    fn api(&self, path: &str) -> Result<serde_json::Value, String>;

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String>;

    /// Pending and firing alerts.
    fn alerts(&self) -> Vec<ActiveAlert>;
}

impl Api for Prometheus {
    fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let (code, body) = http_get(&format!("http://{}", self.addr()), path)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{path}: not JSON ({e}): {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("{path}: HTTP {code}: {body}"));
        }
        Ok(v["data"].clone())
    }

    fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let data = self.api(&query_path(promql))?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![data["result"].clone()]),
            other => Err(format!("{promql}: unexpected result type {other:?}")),
        }
    }

    fn alerts(&self) -> Vec<ActiveAlert> {
        let data = self.api("/api/v1/alerts").expect("GET /api/v1/alerts");
        data["alerts"]
            .as_array()
            .expect("alerts array")
            .iter()
            .map(|a| ActiveAlert {
                name: a["labels"]["alertname"].as_str().unwrap_or("?").to_owned(),
                state: a["state"].as_str().unwrap_or("?").to_owned(),
                instance: a["labels"]["instance"].as_str().map(str::to_owned),
                value: a["value"].as_str().unwrap_or("?").to_owned(),
            })
            .collect()
    }
}

fn sample_value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `(dashboard, panel, refId, expr)` for every panel target, from dashboards/check.py with the
/// `job` variable set to this test's scrape job. `None` (skip) when python3 or PyYAML is
/// missing outside CI.
fn panel_queries() -> Option<Vec<(String, String, String, String)>> {
    let python = require_tool("python3")?;
    let script = "import json, sys\n\
                  from pathlib import Path\n\
                  sys.path.insert(0, sys.argv[1])\n\
                  from check import panel_queries\n\
                  print(json.dumps([list(q) for q in panel_queries(Path(sys.argv[1]), {'job': 'eventstream'})]))\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(repo_root().join("dashboards"))
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("No module named 'yaml'") && std::env::var("CI").as_deref() != Ok("true")
        {
            eprintln!("\n!!!!!!!! SKIPPED: PyYAML is missing (python3-yaml), dashboards/check.py needs it !!!!!!!!\n");
            return None;
        }
        panic!("dashboards/check.py panel_queries failed: {stderr}");
    }
    let rows: Vec<(String, String, String, String)> =
        serde_json::from_slice(&out.stdout).expect("panel_queries JSON");
    Some(rows)
}

/// Every observation of the alerts API, kept for the failure report.
#[derive(Default)]
struct AlertLog {
    lines: Vec<String>,
}

impl AlertLog {
    fn record(&mut self, since: Instant, alerts: &[ActiveAlert]) {
        let now: Vec<String> = alerts.iter().map(ToString::to_string).collect();
        self.lines.push(format!(
            "t+{:>5.2}s: {}",
            since.elapsed().as_secs_f64(),
            if now.is_empty() {
                "(none)".into()
            } else {
                now.join("; ")
            }
        ));
    }
}

#[test]
fn prometheus_on_a_live_cluster_dashboards_have_data_and_alerts_follow_a_leader_kill() {
    let Some(prometheus_bin) = require_tool("prometheus") else {
        return;
    };
    let Some(queries) = panel_queries() else {
        return;
    };
    let dashboards: BTreeSet<&str> = queries.iter().map(|q| q.0.as_str()).collect();
    assert_eq!(
        dashboards,
        BTreeSet::from(["cluster.json", "overview.json"]),
        "panel_queries must cover both dashboards"
    );
    let started = Instant::now();
    // Problems are collected so that one broken component does not hide the next one.
    let mut violations: Vec<String> = Vec::new();

    let mut cluster = LiveCluster::start(3, "ops-e2e");
    let first_leader = cluster.wait_leader(Duration::from_secs(30));
    let publisher = Publisher::start(cluster.raft_endpoints(), 20, Duration::from_millis(20));
    publisher.wait_acked(200, Duration::from_secs(20), &cluster);

    let rules = repo_root().join("alerts/eventstream.rules.yml");
    let alert_count = std::fs::read_to_string(&rules)
        .expect("read the rules file")
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert: "))
        .count();
    assert!(
        alert_count >= 15,
        "the rules file should define every alert of the operations contract, it has {alert_count}"
    );
    let prom = Prometheus::start(
        &prometheus_bin,
        cluster.dir(),
        &cluster.http_addrs(),
        Some(&rules),
    )
    .expect("prometheus starts");

    // The rule file is loaded and every rule evaluates without error.
    let rule_states = poll(
        "Prometheus to load and evaluate every alerting rule",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let data = prom.api("/api/v1/rules").ok()?;
            let mut rules = BTreeMap::new();
            for group in data["groups"].as_array()? {
                for rule in group["rules"].as_array()? {
                    if rule["type"] == "alerting" {
                        rules.insert(
                            rule["name"].as_str()?.to_owned(),
                            (
                                rule["health"].as_str().unwrap_or("").to_owned(),
                                rule["lastError"].as_str().unwrap_or("").to_owned(),
                            ),
                        );
                    }
                }
            }
            (rules.len() == alert_count && rules.values().all(|(h, _)| h != "unknown"))
                .then_some(rules)
        },
        || {
            format!(
                "rules: {:?}\nprometheus log:\n{}",
                prom.api("/api/v1/rules"),
                prom.log()
            )
        },
    );
    for (name, (health, error)) in &rule_states {
        assert_eq!(health, "ok", "rule {name} does not evaluate: {error}");
    }

    // Every node is scraped.
    poll(
        "up == 1 for the three nodes",
        Duration::from_secs(20),
        Duration::from_millis(250),
        || {
            let r = prom.query(r#"up{job="eventstream"}"#).ok()?;
            (r.len() == 3 && r.iter().all(|s| sample_value(s) == 1.0)).then_some(())
        },
        || format!("up: {:?}\n{}", prom.query("up"), cluster.describe()),
    );

    // Every panel query returns data (rates need two scrapes in their window), except those of
    // series this cluster has no cause to emit: consumer-group lag needs a Kafka consumer group
    // (tests/kafka_process.rs checks the series on a node process's /metrics). Those are still
    // queried, so they must evaluate.
    const NEEDS_CONSUMER_GROUPS: &str = "eventstream_kafka_group_lag_offsets";
    let mut empty: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        empty.clear();
        for (dashboard, panel, refid, expr) in &queries {
            match prom.query(expr) {
                Ok(r) if !r.is_empty() || expr.contains(NEEDS_CONSUMER_GROUPS) => {}
                Ok(_) => empty.push(format!("{dashboard} / {panel} / {refid}: {expr}")),
                Err(e) => panic!("{dashboard} / {panel} / {refid}: query failed: {e}"),
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        empty.is_empty(),
        "{} of {} panel queries return no data:\n{}\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n"),
        cluster.describe()
    );
    eprintln!(
        "all {} panel queries return data after {:.1} s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );

    // Healthy: several evaluations with data in every window; nothing pending or firing.
    //
    // Two alerts measure this machine as much as the cluster and, pending, are only noted (they
    // cannot fire within this window anyway):
    // - HighFsyncLatency: a busy CI box can have p99 fsync above 50 ms;
    // - HighLatency: with three debug-build nodes, a publisher and Prometheus on two cores, a
    //   preempted apply delays a whole batch, so the p99 can pass 1 ms. The median cannot: the
    //   histogram measures each node's local stage (commit received -> handler), microseconds,
    //   so the per-node median over the test must be far below the 1 ms objective. That is
    //   asserted below whether or not the alert is pending;
    // - DiskFilling / DiskAlmostFull: the nodes keep their data in a temporary directory on
    //   this machine's disk, so the free fraction is the machine's (a developer's disk 90 %
    //   full makes DiskFilling pending at once), not something the cluster did. Their `for:`
    //   (10 and 5 minutes) is longer than this test, so they cannot fire here; that they fire
    //   at the right ratio is alerts/tests/storage.test.yml's job.
    //
    // Start-up is not "healthy" yet: until every peer connection is up, a node briefly reports
    // fewer connected peers than a quorum, and QuorumLost can go pending for one evaluation.
    // So first wait (bounded) until Prometheus sees every node connected to both peers.
    let settle = Instant::now() + Duration::from_secs(20);
    loop {
        let connected = prom
            .query("min(eventstream_raft_peers_connected)")
            .ok()
            .and_then(|r| {
                r.first()
                    .and_then(|s| s["value"][1].as_str())
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        if connected >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "nodes never all connected to both peers (min peers_connected {connected})\n{}",
            cluster.describe()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // One more rule evaluation (1 s) so no state from before the connections is left.
    std::thread::sleep(Duration::from_millis(1100));
    let healthy_since = Instant::now();
    let mut alert_log = AlertLog::default();
    let mut healthy_alerts: BTreeMap<String, ActiveAlert> = BTreeMap::new();
    let mut noted: BTreeSet<String> = BTreeSet::new();
    while healthy_since.elapsed() < Duration::from_secs(6) {
        let alerts = prom.alerts();
        alert_log.record(healthy_since, &alerts);
        for a in alerts {
            let machine_dependent = matches!(
                a.name.as_str(),
                "EventStreamHighFsyncLatency"
                    | "EventStreamHighLatency"
                    | "EventStreamDiskFilling"
                    | "EventStreamDiskAlmostFull"
            );
            if machine_dependent && a.state == "pending" {
                noted.insert(format!(
                    "{} {}",
                    a.name,
                    a.instance.as_deref().unwrap_or("")
                ));
                continue;
            }
            healthy_alerts.insert(
                format!("{} {}", a.name, a.instance.as_deref().unwrap_or("")),
                a,
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for n in &noted {
        eprintln!("NOTE: pending on this machine, not a failure by itself: {n}");
    }
    if !healthy_alerts.is_empty() {
        violations.push(format!(
            "a healthy cluster under load has active alerts (the leader is node {first_leader}):\n  {}",
            healthy_alerts
                .values()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n  "),
        ));
    }
    let quantiles = |q: f64| {
        prom.query(&format!(
            "histogram_quantile({q}, sum by (instance, le) (rate(eventstream_event_latency_seconds_bucket[5m])))"
        ))
        .expect("latency quantile query")
        .iter()
        .map(|s| (s["metric"]["instance"].as_str().unwrap_or("?").to_owned(), sample_value(s)))
        .collect::<BTreeMap<String, f64>>()
    };
    let (p50, p99) = (quantiles(0.5), quantiles(0.99));
    assert_eq!(p50.len(), 3, "a latency median per node: {p50:?}");
    for (instance, median) in &p50 {
        eprintln!(
            "{instance}: latency p50 {:.1} us, p99 {:.1} us (rate over the test, through Prometheus)",
            median * 1e6,
            p99.get(instance).copied().unwrap_or(f64::NAN) * 1e6
        );
        if median.is_nan() || *median >= 0.001 {
            violations.push(format!(
                "{instance}: median event latency {:.2} ms (p99 {:.2} ms): the latency histogram \
                 does not measure the node's local stage (a healthy node handles the median \
                 event in microseconds), so EventStreamHighLatency goes pending on a healthy \
                 cluster (the leader is node {first_leader})",
                median * 1e3,
                p99.get(instance).copied().unwrap_or(f64::NAN) * 1e3
            ));
        }
    }

    // kill -9 the current leader.
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let killed_instance = cluster.http_addr(leader);
    let acked_before_kill = publisher.acked();
    let kill_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(15));
    let failover = kill_at.elapsed();
    assert_ne!(new_leader, leader, "a killed node cannot lead");
    publisher.wait_acked(100, Duration::from_secs(20), &cluster);
    eprintln!(
        "killed leader {leader} ({killed_instance}); node {new_leader} leads after {:.0} ms",
        failover.as_secs_f64() * 1e3
    );

    // Watch the alerts until NodeDown is pending for the killed node, Prometheus shows the new
    // leader, and at least 8 s (8 evaluations) have passed since the kill.
    let new_leader_query = "max(eventstream_raft_node_id{job=\"eventstream\"} and on (job, instance) eventstream_raft_is_leader{job=\"eventstream\"} == 1)";
    let mut seen: Vec<(Duration, Vec<ActiveAlert>)> = Vec::new();
    let mut node_down_pending_at: Option<Duration> = None;
    let mut prometheus_sees_new_leader;
    let watch_deadline = kill_at + Duration::from_secs(25);
    loop {
        let alerts = prom.alerts();
        alert_log.record(kill_at, &alerts);
        let at = kill_at.elapsed();
        if node_down_pending_at.is_none()
            && alerts.iter().any(|a| {
                a.name == "EventStreamNodeDown"
                    && a.state == "pending"
                    && a.instance.as_deref() == Some(killed_instance.as_str())
            })
        {
            node_down_pending_at = Some(at);
        }
        seen.push((at, alerts));
        prometheus_sees_new_leader = prom
            .query(new_leader_query)
            .ok()
            .and_then(|r| r.first().map(sample_value))
            == Some(new_leader as f64);
        if (node_down_pending_at.is_some()
            && prometheus_sees_new_leader
            && at >= Duration::from_secs(8))
            || Instant::now() > watch_deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let history = alert_log.lines.join("\n");
    assert!(
        prometheus_sees_new_leader,
        "Prometheus never showed node {new_leader} as the leader ({new_leader_query}: {:?})\n{history}",
        prom.query(new_leader_query)
    );
    match node_down_pending_at {
        Some(at) => eprintln!(
            "EventStreamNodeDown pending for {killed_instance} {:.1} s after the kill",
            at.as_secs_f64()
        ),
        None => violations.push(format!(
            "EventStreamNodeDown never went pending for the killed node {killed_instance}"
        )),
    }

    let (last_at, last) = seen.last().expect("at least one observation").clone();
    for (at, alerts) in &seen {
        for a in alerts {
            let t = at.as_secs_f64();
            match (a.name.as_str(), a.state.as_str()) {
                (_, "firing") => violations.push(format!(
                    "t+{t:.2}s after the kill: {a} is firing (no rule may fire within the test's window)"
                )),
                ("EventStreamNodeDown", _) if a.instance.as_deref() != Some(&killed_instance) => {
                    violations.push(format!("t+{t:.2}s: NodeDown for a live node: {a}"))
                }
                ("EventStreamQuorumLost", _) => violations.push(format!(
                    "t+{t:.2}s: {a}: two of three voters are up and connected, quorum holds"
                )),
                _ => {}
            }
        }
    }
    // NoLeader / MultipleLeaders: a scrape may land inside the election, so a blip of
    // pending is possible; by the end (new leader scraped, 8+ evaluations later) they must be
    // inactive, and a blip may not outlast 3 s.
    for name in ["EventStreamNoLeader", "EventStreamMultipleLeaders"] {
        if let Some(a) = last.iter().find(|a| a.name == name) {
            violations.push(format!(
                "{a} still active {:.1} s after a {:.0} ms failover",
                last_at.as_secs_f64(),
                failover.as_secs_f64() * 1e3
            ));
        }
        let present: Vec<Duration> = seen
            .iter()
            .filter(|(_, alerts)| alerts.iter().any(|a| a.name == name))
            .map(|(at, _)| *at)
            .collect();
        if let (Some(first), Some(last_present)) = (present.first(), present.last()) {
            if *last_present - *first > Duration::from_secs(3) {
                violations.push(format!(
                    "{name} was active from t+{:.1}s to t+{:.1}s after the kill (longer than a blip)",
                    first.as_secs_f64(),
                    last_present.as_secs_f64()
                ));
            }
        }
    }
    let (failed, last_error) = publisher.failed();
    if failed > 0 {
        violations.push(format!(
            "{failed} publish calls failed after retries (5 s deadline) across a {:.0} ms failover; last error: {last_error:?}",
            failover.as_secs_f64() * 1e3
        ));
    }
    eprintln!(
        "published {} events ({} after the kill); alert history:\n{history}",
        publisher.acked(),
        publisher.acked() - acked_before_kill
    );
    drop(publisher);
    assert!(
        violations.is_empty(),
        "{} problem(s):\n- {}\n\nalert history (t relative to the healthy window, then to the kill):\n{history}\n\n{}",
        violations.len(),
        violations.join("\n- "),
        cluster.describe()
    );
    eprintln!("ops_e2e took {:.1} s", started.elapsed().as_secs_f64());
}
