//! `/metrics` against the catalog: every series present, well-formed exposition, values that
//! agree with the engine, histograms that are real histograms, and docs that list every name.

mod common;

use common::fake_cluster::FakeCluster;
use common::*;
use eventstream_core::Tier;
use eventstream_exporter::catalog::{self, MetricGroup, MetricKind};
use eventstream_exporter::{Exporter, Telemetry};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict-enough parser of the text format: every sample must belong to a family declared by
/// `# HELP` and `# TYPE` before it, families are contiguous, label syntax is valid.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(helps.insert(name.clone()), "duplicate HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap().to_owned();
            let ty = it.next().unwrap().to_owned();
            assert!(helps.contains(&name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.clone(), ty).is_none(),
                "duplicate TYPE {name}"
            );
            if let Some(prev) = current.replace(name) {
                finished_families.insert(prev);
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name {k} in {line}"
                    );
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (n.to_owned(), labels)
            }
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&name)
            .to_owned();
        assert_eq!(
            current.as_deref(),
            Some(family.as_str()),
            "sample outside its family: {line}"
        );
        assert!(
            !finished_families.contains(&family),
            "family {family} not contiguous"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found = find(samples, name, labels);
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].value
}

fn check_histogram(samples: &[Sample], name: &str, edges: &[f64], extra: &[(&str, &str)]) {
    let buckets = find(samples, &format!("{name}_bucket"), extra);
    assert_eq!(buckets.len(), edges.len() + 1, "{name}");
    let mut prev = 0.0;
    for (b, e) in buckets.iter().zip(
        edges
            .iter()
            .map(|e| e.to_string())
            .chain(["+Inf".to_owned()]),
    ) {
        assert_eq!(b.labels["le"], e, "{name} bucket order");
        assert!(b.value >= prev, "{name} not cumulative");
        prev = b.value;
    }
    assert_eq!(
        prev,
        value(samples, &format!("{name}_count"), extra),
        "{name} +Inf == count"
    );
    assert!(value(samples, &format!("{name}_sum"), extra) >= 0.0);
}

#[test]
fn every_catalog_series_is_present_and_well_formed() {
    let mut load = LoadedEngine::start(20_000);
    let cluster = Arc::new(FakeCluster::leader());
    let exporter = Exporter::builder(test_config(), load.engine().stats_handle())
        .replication(cluster)
        .start()
        .unwrap();
    let addr = exporter.local_addr();
    for path in eventstream_exporter::ROUTES {
        get(addr, path);
    }
    wait_for(Duration::from_secs(10), "processed events", || {
        (load.engine().stats().processed > 5_000).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text();
    let (types, samples) = parse(&text);

    for def in catalog::ALL {
        assert_eq!(
            types.get(def.name).map(String::as_str),
            Some(def.kind.as_str()),
            "{} missing or wrong type",
            def.name
        );
        let sample_name = if def.kind == MetricKind::Histogram {
            format!("{}_count", def.name)
        } else {
            def.name.to_owned()
        };
        let found = find(&samples, &sample_name, &[]);
        assert!(!found.is_empty(), "{} has no samples", def.name);
        for s in &found {
            let names: HashSet<&str> = s.labels.keys().map(String::as_str).collect();
            let expected: HashSet<&str> = def.labels.iter().copied().collect();
            assert_eq!(names, expected, "{} labels", def.name);
        }
    }
    for s in &samples {
        for l in catalog::FORBIDDEN_LABELS {
            assert!(!s.labels.contains_key(l), "{} has label {l}", s.name);
        }
        assert!(s.value.is_finite() || s.labels.contains_key("le"), "{s:?}");
    }
    for tier in Tier::ALL {
        let q = [("queue", tier.as_str())];
        assert!(value(&samples, "eventstream_queue_capacity", &q) > 0.0);
        assert!(
            value(&samples, "eventstream_queue_depth", &q)
                <= value(&samples, "eventstream_queue_capacity", &q)
        );
        assert!(value(&samples, "eventstream_queue_push_total", &q) > 0.0);
    }
    for reason in ["queue_full", "hard_stop"] {
        value(
            &samples,
            "eventstream_events_dropped_total",
            &[("reason", reason)],
        );
    }
    for p in ["critical", "high", "medium", "low"] {
        assert!(
            value(
                &samples,
                "eventstream_events_priority_total",
                &[("priority", p)]
            ) > 0.0
        );
    }
    assert_eq!(
        find(&samples, "eventstream_raft_state", &[])
            .iter()
            .filter(|s| s.value == 1.0)
            .count(),
        1,
        "exactly one raft state"
    );
    assert_eq!(
        value(&samples, "eventstream_raft_state", &[("state", "leader")]),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "eventstream_raft_replication_lag_entries",
            &[("peer", "3")]
        ),
        250.0
    );
    assert!(
        find(
            &samples,
            "eventstream_raft_replication_lag_entries",
            &[("peer", "1")]
        )
        .is_empty(),
        "no lag for self"
    );
    assert_eq!(value(&samples, "eventstream_raft_members", &[]), 3.0);
    assert_eq!(value(&samples, "eventstream_raft_learners", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "eventstream_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    check_histogram(
        &samples,
        "eventstream_event_latency_seconds",
        &catalog::LATENCY_BUCKETS,
        &[],
    );
    check_histogram(
        &samples,
        "eventstream_raft_fsync_duration_seconds",
        &catalog::RAFT_BUCKETS,
        &[],
    );
    check_histogram(
        &samples,
        "eventstream_raft_commit_latency_seconds",
        &catalog::RAFT_BUCKETS,
        &[],
    );
    check_histogram(
        &samples,
        "eventstream_raft_snapshot_duration_seconds",
        &catalog::SNAPSHOT_BUCKETS,
        &[],
    );
    // The fake's snapshots: one of 3 ms, one of 40 s.
    for (le, want) in [("0.001", 0.0), ("0.005", 1.0), ("30", 1.0), ("60", 2.0)] {
        assert_eq!(
            value(
                &samples,
                "eventstream_raft_snapshot_duration_seconds_bucket",
                &[("le", le)]
            ),
            want,
            "le={le}"
        );
    }
    // Stream range [500, 1500): first 500, last 1499; the reliability counters as the fake set them.
    assert_eq!(
        value(&samples, "eventstream_stream_first_offset", &[]),
        500.0
    );
    assert_eq!(
        value(&samples, "eventstream_stream_last_offset", &[]),
        1499.0
    );
    // The stream's storage, as the fake node reports it.
    for (name, labels, want) in [
        ("eventstream_stream_segments", &[][..], 3.0),
        ("eventstream_stream_retained_bytes", &[], 150.0 * MIB),
        ("eventstream_stream_cache_bytes", &[], 32.0 * MIB),
        (
            "eventstream_stream_reads_total",
            &[("source", "cache")],
            900.0,
        ),
        (
            "eventstream_stream_reads_total",
            &[("source", "disk")],
            100.0,
        ),
        ("eventstream_stream_index_rebuilds_total", &[], 1.0),
        ("eventstream_stream_missing_events", &[], 0.0),
        ("eventstream_stream_copied_bytes_total", &[], MIB),
        ("eventstream_stream_copy_served_bytes_total", &[], 2.0 * MIB),
        ("eventstream_stream_copy_failures_total", &[], 2.0),
        ("eventstream_storage_volume_size_bytes", &[], 100.0 * GIB),
        ("eventstream_storage_volume_free_bytes", &[], 40.0 * GIB),
    ] {
        assert_eq!(value(&samples, name, labels), want, "{name}{labels:?}");
    }
    for (name, want) in [
        ("eventstream_raft_snapshot_send_failures_total", 6.0),
        ("eventstream_protocol_errors_total", 7.0),
        ("eventstream_tls_handshake_failures_total", 3.0),
    ] {
        assert_eq!(value(&samples, name, &[]), want, "{name}");
    }
    for (outcome, requests, events) in [
        ("acked", 90.0, 900.0),
        ("rejected_inflight", 2.0, 20.0),
        ("rejected_rings", 1.0, 5.0),
        ("rejected_raft", 0.0, 0.0),
        ("timed_out", 1.0, 10.0),
        ("other_error", 4.0, 40.0),
    ] {
        let o = [("outcome", outcome)];
        assert_eq!(
            value(&samples, "eventstream_publish_requests_total", &o),
            requests,
            "{outcome}"
        );
        assert_eq!(
            value(&samples, "eventstream_publish_events_total", &o),
            events,
            "{outcome}"
        );
    }
    check_histogram(
        &samples,
        "eventstream_http_request_duration_seconds",
        &catalog::HTTP_BUCKETS,
        &[("path", "/health")],
    );
    // The fake's fsyncs: 1000 in 0.2..1.2 ms, one at 150 ms.
    assert_eq!(
        value(
            &samples,
            "eventstream_raft_fsync_duration_seconds_count",
            &[]
        ),
        1001.0
    );
    assert_eq!(
        value(
            &samples,
            "eventstream_raft_fsync_duration_seconds_bucket",
            &[("le", "0.1")]
        ),
        1000.0
    );
    assert_eq!(
        value(
            &samples,
            "eventstream_raft_fsync_duration_seconds_bucket",
            &[("le", "0.25")]
        ),
        1001.0
    );
    assert!(value(&samples, "eventstream_event_latency_seconds_count", &[]) > 1000.0);

    // After shutdown the exported totals equal the engine's final statistics exactly.
    load.stop_load();
    let engine = load.engine.take().unwrap();
    let stats_handle = engine.stats_handle();
    let final_stats = engine.shutdown().unwrap();
    let telemetry = Telemetry::new(stats_handle.clone(), None, &Default::default(), 10).unwrap();
    let (_, samples) = parse(&telemetry.render_prometheus());
    for (name, engine_total) in [
        ("eventstream_events_processed_total", final_stats.processed),
        ("eventstream_events_received_total", final_stats.received),
        ("eventstream_events_accepted_total", final_stats.accepted),
        ("eventstream_dedup_hits_total", final_stats.dedup_hits),
        (
            "eventstream_handler_errors_total",
            final_stats.handler_errors,
        ),
        (
            "eventstream_event_latency_seconds_count",
            stats_handle.latency_histogram().len(),
        ),
    ] {
        assert_eq!(value(&samples, name, &[]), engine_total as f64, "{name}");
    }
    assert_eq!(value(&samples, "eventstream_workers_alive", &[]), 0.0);
    assert_eq!(value(&samples, "eventstream_workers", &[]), 2.0);
}

#[test]
fn cluster_series_only_with_a_source_and_lag_only_on_the_leader() {
    let load = LoadedEngine::start(1_000);
    let standalone =
        Telemetry::new(load.engine().stats_handle(), None, &Default::default(), 10).unwrap();
    let text = standalone.render_prometheus();
    for cluster_only in [
        "eventstream_raft_",
        "eventstream_stream_",
        "eventstream_storage_",
        "eventstream_publish_",
        "eventstream_protocol_errors_total",
        "eventstream_tls_handshake_failures_total",
    ] {
        assert!(!text.contains(cluster_only), "{cluster_only}: {text}");
    }

    let cluster = Arc::new(FakeCluster::leader());
    let t = Telemetry::new(
        load.engine().stats_handle(),
        Some(cluster.clone()),
        &Default::default(),
        10,
    )
    .unwrap();
    let text = t.render_prometheus();
    assert!(text.contains("eventstream_raft_replication_lag_entries{peer=\"2\"} 3"));
    // Group lag, from the leader only, with the label value escaped.
    assert!(
        text.contains(
            "eventstream_kafka_group_lag_offsets{group=\"billing \\\"eu\\\"\",topic=\"orders\"} 60"
        ),
        "{text}"
    );
    {
        let mut s = cluster.status.lock().unwrap();
        s.role = eventstream_core::replication::RaftRole::Candidate;
        s.leader_id = None;
        s.term = 8;
        // A fresh node: nothing committed yet; the learner (node 4) was promoted to voter.
        s.stream_first_offset = 0;
        s.stream_next_offset = 0;
        // It is copying the stream it lacks, and its volume is nearly full.
        s.stream.missing_events = 250;
        s.stream.copied_bytes = 3 << 20;
        s.stream.volume_free_bytes = 1 << 20;
        for m in &mut s.members {
            m.learner = false;
        }
    }
    t.publish();
    let (_, samples) = parse(&t.render_prometheus());
    assert!(find(&samples, "eventstream_raft_replication_lag_entries", &[]).is_empty());
    assert!(find(&samples, "eventstream_kafka_group_lag_offsets", &[]).is_empty());
    assert_eq!(
        value(
            &samples,
            "eventstream_raft_state",
            &[("state", "candidate")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "eventstream_raft_state", &[("state", "leader")]),
        0.0
    );
    assert_eq!(value(&samples, "eventstream_raft_has_leader", &[]), 0.0);
    assert_eq!(value(&samples, "eventstream_raft_is_leader", &[]), 0.0);
    assert_eq!(value(&samples, "eventstream_raft_term", &[]), 8.0);
    assert_eq!(value(&samples, "eventstream_stream_first_offset", &[]), 0.0);
    assert_eq!(value(&samples, "eventstream_stream_last_offset", &[]), -1.0);
    assert_eq!(
        value(&samples, "eventstream_stream_missing_events", &[]),
        250.0
    );
    assert_eq!(
        value(&samples, "eventstream_stream_copied_bytes_total", &[]),
        3.0 * MIB
    );
    assert_eq!(
        value(&samples, "eventstream_storage_volume_free_bytes", &[]),
        MIB
    );
    assert_eq!(value(&samples, "eventstream_raft_members", &[]), 4.0);
    assert_eq!(value(&samples, "eventstream_raft_learners", &[]), 0.0);
}

#[test]
fn docs_list_every_metric_and_the_issue_mapping() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .expect("docs/metrics.md exists");
    assert!(
        docs.contains(&catalog::markdown_table()),
        "docs/metrics.md must embed the catalog table verbatim; regenerate it with \
         `cargo run -p eventstream-exporter --example print_catalog`"
    );
    for def in catalog::ALL {
        assert!(
            docs.contains(&format!("`{}`", def.name)),
            "docs/metrics.md lacks {}",
            def.name
        );
        if def.group == MetricGroup::Cluster {
            assert!(
                docs.contains(&format!("`{}` | {} | cluster", def.name, def.kind.as_str())),
                "docs/metrics.md should mark {} as a cluster metric",
                def.name
            );
        }
    }
    for (theirs, ours) in catalog::REPLACED_ENGINE_NAMES {
        assert!(
            docs.contains(theirs),
            "docs/metrics.md lacks the EventStreamCore name {theirs}"
        );
        assert!(docs.contains(ours), "docs/metrics.md lacks {ours}");
    }
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/http-api.md"))
        .expect("docs/http-api.md exists");
    for route in eventstream_exporter::ROUTES {
        assert!(
            api.contains(&format!("`GET {route}`")),
            "docs/http-api.md lacks {route}"
        );
    }
}
