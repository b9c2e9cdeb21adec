//! `eventstream doctor` (the binary) against live systems.
//!
//! * A slow handler fills a queue: an in-process engine whose handler sleeps, with an exporter on
//!   127.0.0.1:0, is fed faster than it drains until the realtime tier is more than 80 % full;
//!   the doctor must name that queue as the bottleneck (EventStreamQueueFull, its runbook),
//!   grade the resulting latency as a warning too but rank the queue first (upstream), and exit 1.
//! * A live 3-node cluster under load: healthy, every area is ok — except that a slow disk
//!   (disk fsync, which also grades the free space of this machine's disk) or a p99 latency
//!   above 1 ms in the doctor's 1 s sample is only noted, since on a shared 2-core machine they
//!   measure the machine; each node's *median* latency over the
//!   doctor's window must be far below 1 ms instead — and the overall grade, exit code and
//!   bottleneck agree with the areas; every node has a finding in every area; after `kill -9` of a follower (publishing continues), the killed
//!   node is reported down (critical, EventStreamNodeDown, the bottleneck, exit 2), and the
//!   leader reports the killed peer as its most lagging follower with a lag of at least the
//!   entries appended since the kill (a warning, EventStreamReplicationLag, exactly when that
//!   exceeds the rule's 1000 entries), while the survivors show no leadership or quorum problem.

mod live_cluster;

use eventstream_core::{Engine, Event, HandlerError, OverflowPolicy, Priority, Published};
use eventstream_exporter::{Exporter, ExporterConfig};
use live_cluster::*;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Runs `eventstream doctor --json`; returns the exit code and the report.
fn doctor_json(endpoints: &[String], interval: &str) -> (i32, Value) {
    let mut cmd = Command::new(EXE);
    cmd.arg("doctor");
    for e in endpoints {
        cmd.args(["--endpoint", e]);
    }
    let out = cmd
        .args(["--interval", interval, "--json"])
        .output()
        .expect("run eventstream doctor");
    let code = out.status.code().expect("doctor exited normally");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}); exit {code}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn area_grade<'a>(report: &'a Value, area: &str) -> &'a str {
    report["areas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["area"] == area)
        .unwrap_or_else(|| panic!("area {area} missing: {report}"))["grade"]
        .as_str()
        .unwrap()
}

fn findings<'a>(report: &'a Value, endpoint: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["endpoint"] == endpoint)
        .collect()
}

/// The first number in `text` after `marker`.
fn number_after(text: &str, marker: &str) -> Option<f64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let num: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

#[test]
fn doctor_names_a_queue_filled_by_a_slow_handler_as_the_bottleneck() {
    const CAPACITY: usize = 1024;
    let slow = Arc::new(AtomicBool::new(true));
    let handler_slow = slow.clone();
    let engine = Engine::builder()
        .configure(|c| {
            c.workers = 1;
            c.pin_workers = false;
            // One event per handler call: the ring drains one slot per sleep.
            c.max_batch = 1;
            c.tiers.realtime.capacity = CAPACITY;
            c.tiers.realtime.overflow = OverflowPolicy::Block;
        })
        .on(
            "slow",
            move |_events: &[Event]| -> Result<(), HandlerError> {
                if handler_slow.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            },
        )
        .start()
        .expect("engine starts");
    let mut config = ExporterConfig::listening_on("127.0.0.1:0".parse().unwrap());
    config.publish_interval = Duration::from_millis(50);
    let exporter = Exporter::builder(config, engine.stats_handle())
        .start()
        .expect("exporter starts");
    let endpoint = format!("http://{}", exporter.local_addr());

    // 95 % of the ring at once; the handler drains at most 20/s, so the ring stays above 80 %
    // for more than 7 s, much longer than the doctor's two scrapes 0.5 s apart.
    let publisher = engine.publisher();
    let burst = CAPACITY * 95 / 100;
    for i in 0..burst {
        let outcome = publisher
            .publish(Event::new("slow", Priority::High, format!("{i}")))
            .expect("publish into a ring with room");
        assert_eq!(outcome, Published::Accepted);
    }
    let fill = poll(
        "the exporter to show the realtime queue above 80 %",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let m = metrics(&endpoint);
            let depth = metric_value(&m, "eventstream_queue_depth", &[("queue", "realtime")])?;
            let cap = metric_value(&m, "eventstream_queue_capacity", &[("queue", "realtime")])?;
            (depth / cap > 0.85).then_some(depth / cap)
        },
        || {
            format!(
                "{:?}",
                metrics(&endpoint)
                    .iter()
                    .filter(|s| s.name.starts_with("eventstream_queue"))
                    .collect::<Vec<_>>()
            )
        },
    );

    let (code, report) = doctor_json(std::slice::from_ref(&endpoint), "0.5");
    slow.store(false, Ordering::Relaxed); // let shutdown drain at full speed
    let ctx = serde_json::to_string_pretty(&report).unwrap();

    assert_eq!(
        code, 1,
        "warning exit code expected (fill was {fill:.2} before the doctor ran):\n{ctx}"
    );
    assert_eq!(report["overall"], "warning", "{ctx}");
    let b = &report["bottleneck"];
    assert_eq!(b["alert"], "EventStreamQueueFull", "{ctx}");
    assert_eq!(b["area"], "queues and drops", "{ctx}");
    assert_eq!(b["grade"], "warning", "{ctx}");
    assert_eq!(b["endpoint"], endpoint.as_str(), "{ctx}");
    assert_eq!(
        b["runbook"], "alerts/runbooks/EventStreamQueueFull.md",
        "{ctx}"
    );
    assert!(
        repo_root().join(b["runbook"].as_str().unwrap()).is_file(),
        "the runbook the doctor links must exist"
    );
    let summary = b["summary"].as_str().unwrap();
    let percent = number_after(summary, "realtime queue").expect("fill in the summary");
    assert!(
        summary.starts_with("realtime queue") && percent > 80.0 && percent <= 100.0,
        "{summary}"
    );
    // Only the realtime tier is full; the others are empty and ok.
    for f in findings(&report, &endpoint) {
        let s = f["summary"].as_str().unwrap();
        if s.starts_with("transactional queue") || s.starts_with("batch queue") {
            assert_eq!(f["grade"], "ok", "{s}");
        }
    }
    // Events waited in the ring for up to seconds: latency is a warning too, yet the queue
    // (upstream of latency) is named as the bottleneck.
    assert_eq!(area_grade(&report, "latency"), "warning", "{ctx}");
    assert_eq!(area_grade(&report, "queues and drops"), "warning", "{ctx}");
    for area in [
        "handlers",
        "dedup",
        "replication and elections",
        "disk fsync",
    ] {
        assert_eq!(area_grade(&report, area), "ok", "{area}: {ctx}");
    }
    // Nothing is dropped on a Block tier below capacity.
    assert!(
        !report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["alert"] == "EventStreamEventsDropped"),
        "{ctx}"
    );

    exporter.shutdown();
    let stats = engine.shutdown().expect("engine drains");
    assert_eq!(
        stats.processed, burst as u64,
        "every queued event is handled"
    );
}

#[test]
fn doctor_on_a_live_cluster_healthy_then_with_a_killed_follower() {
    let mut cluster = LiveCluster::start(3, "doctor-live");
    let leader = cluster.wait_leader(Duration::from_secs(30));
    let publisher = Publisher::start(cluster.raft_endpoints(), 20, Duration::from_millis(20));
    publisher.wait_acked(300, Duration::from_secs(20), &cluster);
    let endpoints = cluster.http_endpoints();

    // Healthy, under load. The nodes' latency histograms are read around the doctor's run, so
    // the median over the same window can be checked too.
    let before: Vec<_> = endpoints.iter().map(|e| metrics(e)).collect();
    let (code, report) = doctor_json(&endpoints, "1");
    let after: Vec<_> = endpoints.iter().map(|e| metrics(e)).collect();
    let ctx = format!(
        "{}\n{}",
        serde_json::to_string_pretty(&report).unwrap(),
        cluster.describe()
    );
    let mut problems = Vec::new();
    // Two areas depend on this machine more than on the cluster, so a non-ok grade there is
    // reported loudly but is not a failure by itself:
    // - disk fsync: a busy CI box can have a p99 fsync above 50 ms in a 1 s sample, and the
    //   nodes' data directories are on this machine's disk, so the free space the area grades
    //   (EventStreamDiskFilling below 15 %) is the machine's, however full it is;
    // - latency: the doctor grades the p99 of a 1 s sample; with three debug-build nodes, a
    //   publisher and the doctor sharing two cores, a preempted apply delays a whole batch, so
    //   a few percent of events can exceed 1 ms. What is not machine noise is the median: the
    //   histogram measures the node's local stage (commit received -> handler), which takes
    //   microseconds, so the median must be far below the 1 ms objective on every node.
    let tolerated = ["disk fsync", "latency"];
    for area in tolerated {
        if area_grade(&report, area) != "ok" {
            eprintln!(
                "NOTE: the doctor grades `{area}` {} on this machine (p99 of a 1 s sample, \
                 or this machine's free disk space); not a failure by itself",
                area_grade(&report, area)
            );
        }
    }
    for (e, (first, second)) in endpoints.iter().zip(before.iter().zip(&after)) {
        match window_quantile(first, second, "eventstream_event_latency_seconds", 0.5) {
            Some((p50, n)) if p50 < 0.001 => {
                eprintln!("{e}: median latency {:.1} us over {n} events", p50 * 1e6)
            }
            Some((p50, n)) => problems.push(format!(
                "{e}: median event latency {:.2} ms over {n} events: the latency histogram does \
                 not measure this node's local stage (a healthy node handles the median event \
                 in microseconds)",
                p50 * 1e3
            )),
            None => problems.push(format!("{e}: no events handled during the doctor's run")),
        }
    }
    let grade_rank = |g: &Value| match g.as_str() {
        Some("ok") => 0,
        Some("warning") => 1,
        Some("critical") => 2,
        _ => panic!("unknown grade {g}"),
    };
    let mut worst = 0;
    for a in report["areas"].as_array().unwrap() {
        worst = worst.max(grade_rank(&a["grade"]));
        if a["grade"] != "ok" && !tolerated.contains(&a["area"].as_str().unwrap()) {
            problems.push(format!("area {} is {}", a["area"], a["grade"]));
        }
    }
    for f in report["findings"].as_array().unwrap() {
        if f["grade"] != "ok" && !tolerated.contains(&f["area"].as_str().unwrap()) {
            problems.push(format!(
                "{} {}: {} ({}) [{}]",
                f["grade"], f["endpoint"], f["summary"], f["evidence"], f["alert"]
            ));
        }
    }
    // Overall grade, exit code and bottleneck agree with the areas.
    if grade_rank(&report["overall"]) != worst
        || code != worst
        || report["bottleneck"].is_null() != (worst == 0)
    {
        problems.push(format!(
            "exit {code}, overall {}, bottleneck {} do not match the worst area grade {worst}",
            report["overall"], report["bottleneck"]["summary"]
        ));
    }
    // Every node was measured in every area that applies to it.
    let leader_endpoint = cluster.http_endpoint(leader);
    for e in &endpoints {
        let fs = findings(&report, e);
        let has = |area: &str, prefix: &str| {
            fs.iter()
                .any(|f| f["area"] == area && f["summary"].as_str().unwrap().starts_with(prefix))
        };
        for (area, prefix) in [
            ("latency", "p99 latency"),
            ("queues and drops", "realtime queue"),
            ("queues and drops", "transactional queue"),
            ("queues and drops", "batch queue"),
            ("handlers", "no handler panics"),
            ("dedup", ""),
            ("replication and elections", "apply lag"),
            ("disk fsync", "p99 fsync"),
            ("resources", ""),
        ] {
            if !has(area, prefix) {
                problems.push(format!("{e}: no `{area}` finding starting with `{prefix}`"));
            }
        }
        let leads = has("replication and elections", "largest follower lag");
        if leads != (*e == leader_endpoint) {
            problems.push(format!(
                "{e}: follower lag reported {leads}, but only the leader ({leader_endpoint}) knows it"
            ));
        }
    }
    // Recorded, not asserted yet: the failure scenario below still runs, so one broken
    // component does not hide the next one.
    let healthy_problems = if problems.is_empty() {
        None
    } else {
        Some(format!(
            "a healthy cluster under load is not healthy to the doctor:\n- {}\n\n{ctx}",
            problems.join("\n- ")
        ))
    };

    // kill -9 a follower; publishing continues on the remaining majority.
    let follower = cluster
        .alive()
        .into_iter()
        .find(|&id| id != leader)
        .unwrap();
    let killed_endpoint = cluster.http_endpoint(follower);
    cluster.kill(follower);
    let last_index = |c: &LiveCluster| {
        c.status(leader)
            .and_then(|s| s["raft"]["last_index"].as_u64())
    };
    // The killed follower cannot have matched more than the leader held right after the kill.
    let at_kill = poll(
        "the leader's status after the kill",
        Duration::from_secs(5),
        Duration::from_millis(50),
        || last_index(&cluster),
        || cluster.describe(),
    );
    publisher.wait_acked(500, Duration::from_secs(20), &cluster);
    let before_doctor = poll(
        "the leader to append 50 entries after the kill",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || last_index(&cluster).filter(|&l| l >= at_kill + 50),
        || cluster.describe(),
    );

    let (code, report) = doctor_json(&endpoints, "1");
    let ctx = format!(
        "{}\n{}",
        serde_json::to_string_pretty(&report).unwrap(),
        cluster.describe()
    );
    assert_eq!(code, 2, "critical exit code expected:\n{ctx}");
    assert_eq!(report["overall"], "critical", "{ctx}");
    let b = &report["bottleneck"];
    assert_eq!(b["alert"], "EventStreamNodeDown", "{ctx}");
    assert_eq!(b["grade"], "critical", "{ctx}");
    assert_eq!(b["endpoint"], killed_endpoint.as_str(), "{ctx}");
    assert_eq!(
        b["runbook"], "alerts/runbooks/EventStreamNodeDown.md",
        "{ctx}"
    );
    assert!(repo_root().join(b["runbook"].as_str().unwrap()).is_file());
    // The unreachable node has exactly that one finding.
    let down = findings(&report, &killed_endpoint);
    assert_eq!(down.len(), 1, "{ctx}");
    assert_eq!(down[0]["summary"], "node is down or unreachable", "{ctx}");

    // The leader's view: the killed peer is the most lagging follower, by at least the entries
    // appended since the kill; warning exactly when that exceeds the rule's 1000 entries.
    let lag_finding = findings(&report, &leader_endpoint)
        .into_iter()
        .find(|f| {
            f["summary"]
                .as_str()
                .unwrap()
                .starts_with("largest follower lag")
        })
        .unwrap_or_else(|| panic!("the leader reports no follower lag:\n{ctx}"));
    let summary = lag_finding["summary"].as_str().unwrap();
    let lag = number_after(summary, "largest follower lag").unwrap();
    let peer = number_after(summary, "(peer").unwrap();
    assert_eq!(
        peer, follower as f64,
        "the killed peer lags most: {summary}"
    );
    assert!(
        lag >= (before_doctor - at_kill) as f64,
        "lag {lag} < {} entries appended since the kill ({at_kill} -> {before_doctor}): {summary}",
        before_doctor - at_kill
    );
    let over = lag > 1000.0;
    assert_eq!(
        lag_finding["grade"],
        if over { "warning" } else { "ok" },
        "{summary}"
    );
    assert_eq!(
        lag_finding["alert"],
        if over {
            Value::from("EventStreamReplicationLag")
        } else {
            Value::Null
        },
        "{summary}"
    );

    // The two survivors: one leader, quorum, no leadership problem.
    for f in report["findings"].as_array().unwrap() {
        let alert = f["alert"].as_str().unwrap_or("");
        assert!(
            !matches!(
                alert,
                "EventStreamNoLeader"
                    | "EventStreamMultipleLeaders"
                    | "EventStreamQuorumLost"
                    | "EventStreamHighLeaderChanges"
            ),
            "{alert} on a cluster that lost one follower: {ctx}"
        );
        if f["alert"] == "EventStreamNodeDown" {
            assert_eq!(f["endpoint"], killed_endpoint.as_str(), "{ctx}");
        }
    }
    let (failed, last_error) = publisher.failed();
    assert_eq!(
        failed, 0,
        "publishing to the majority failed: {last_error:?}"
    );
    eprintln!(
        "killed follower {follower}: leader {leader} reports lag {lag} entries ({} appended since the kill)",
        before_doctor - at_kill
    );
    if let Some(p) = healthy_problems {
        panic!("{p}");
    }
}
