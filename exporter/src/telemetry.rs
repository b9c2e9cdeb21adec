//! [`Telemetry`]: turns engine (and cluster) snapshots into metrics and JSON views.
//!
//! One publisher (the exporter's interval task, or a test/bench calling [`Telemetry::publish`])
//! takes a [`Stats`] snapshot, the merged latency histogram, `/proc` readings and — when a
//! [`ReplicationSource`] is attached — the cluster's status and histograms. It stores counters
//! and gauges into a local `metrics` recorder (metrics-exporter-prometheus, built with
//! `build_recorder`, never installed globally, so several exporters can live in one process),
//! buckets the HDR histograms, and swaps in a new immutable [`Published`] view. HTTP handlers
//! only read the latest view; nothing here ever touches the engine's hot path.
//!
//! Invariants: a [`Published`] view is always present (one is taken in [`Telemetry::new`]);
//! every series of the catalog (cluster series only with a source) is registered up front, so
//! `/metrics` always lists them, with `eventstream_events_dropped_total` for both reasons.

use crate::catalog::{self, MetricDef, MetricKind};
use crate::config::BuildInfo;
use crate::histogram::{fmt_f64, write_header, Buckets};
use crate::process::{self, ProcessSample};
use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::replication::{
    ClusterStatus, KafkaListenerStats, PublishOutcomes, RaftRole, ReplicationSource, StreamStorage,
};
use eventstream_core::{LatencySummary, Priority, Stats, StatsHandle, Tier};
use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const METADATA: Metadata<'static> = Metadata::new(
    "eventstream_exporter",
    Level::INFO,
    Some("eventstream_exporter"),
);

/// Events per second over the last 1 s and 10 s.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Throughput {
    /// Processed events per second, last ~1 s.
    pub processed_per_sec_1s: f64,
    /// Processed events per second, last ~10 s.
    pub processed_per_sec_10s: f64,
    /// Received events per second, last ~1 s.
    pub received_per_sec_1s: f64,
    /// Received events per second, last ~10 s.
    pub received_per_sec_10s: f64,
    /// Dropped events per second, last ~10 s.
    pub dropped_per_sec_10s: f64,
}

/// One point of the status page's history (one a second).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HistoryPoint {
    /// Wall-clock time, ms since the Unix epoch.
    pub t_ms: u64,
    /// Processed events per second over the last second.
    pub processed_per_sec: f64,
    /// Received events per second over the last second.
    pub received_per_sec: f64,
    /// Dropped events per second over the last second.
    pub dropped_per_sec: f64,
    /// Median latency of the last window (ns); 0 when nothing was processed.
    pub p50_ns: u64,
    /// 99th percentile latency of the last window (ns).
    pub p99_ns: u64,
}

/// Latency of the most recent window (difference of two cumulative histograms ~1 s apart).
#[derive(Debug, Clone, PartialEq)]
pub struct RecentLatency {
    /// Window length in seconds.
    pub window_seconds: f64,
    /// Percentiles of the window.
    pub summary: LatencySummary,
    /// The window's histogram on the latency bucket edges.
    pub buckets: Buckets,
}

/// The cluster's part of a published view.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSnapshot {
    /// The node's status.
    pub status: ClusterStatus,
    /// `ReplicationSource::ready()` at publish time.
    pub ready: Result<(), String>,
    /// fsync durations.
    pub fsync: Buckets,
    /// Propose → commit latency.
    pub commit: Buckets,
    /// Snapshot take/install durations.
    pub snapshot: Buckets,
}

/// One immutable published view: what `/metrics`, the JSON API and the page read.
#[derive(Debug, Clone)]
pub struct Published {
    /// When it was taken (ms since the Unix epoch).
    pub taken_at_ms: u64,
    /// Engine counters.
    pub stats: Stats,
    /// Cumulative latency since start.
    pub latency: Buckets,
    /// Latency of the last window.
    pub recent: RecentLatency,
    /// Rates.
    pub throughput: Throughput,
    /// `/proc` readings.
    pub process: ProcessSample,
    /// Cluster view, when a source is attached.
    pub cluster: Option<ClusterSnapshot>,
    /// Per-second history, oldest first.
    pub history: Vec<HistoryPoint>,
}

#[derive(Debug, Clone, Copy)]
struct RateSample {
    at: Instant,
    processed: u64,
    received: u64,
    dropped: u64,
}

/// Rate of `field` between the newest sample and the newest one at least `window` older.
fn rate(samples: &VecDeque<RateSample>, window: Duration, field: fn(&RateSample) -> u64) -> f64 {
    let Some(last) = samples.back() else {
        return 0.0;
    };
    let base = samples
        .iter()
        .rev()
        .find(|s| last.at.duration_since(s.at) >= window)
        .or_else(|| samples.front())
        .expect("non-empty");
    let dt = last.at.duration_since(base.at).as_secs_f64();
    if dt <= 0.0 {
        return 0.0;
    }
    field(last).saturating_sub(field(base)) as f64 / dt
}

fn register_counter(r: &PrometheusRecorder, def: &MetricDef, labels: &[(&str, &str)]) -> Counter {
    debug_assert_eq!(def.kind, MetricKind::Counter);
    r.register_counter(&key(def, labels), &METADATA)
}

fn register_gauge(r: &PrometheusRecorder, def: &MetricDef, labels: &[(&str, &str)]) -> Gauge {
    debug_assert_eq!(def.kind, MetricKind::Gauge);
    r.register_gauge(&key(def, labels), &METADATA)
}

fn key(def: &MetricDef, labels: &[(&str, &str)]) -> Key {
    debug_assert_eq!(def.labels.len(), labels.len(), "{}", def.name);
    Key::from_parts(
        def.name,
        labels
            .iter()
            .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    )
}

fn unit_of(def: &MetricDef) -> Option<Unit> {
    match def.unit {
        "seconds" => Some(Unit::Seconds),
        "bytes" => Some(Unit::Bytes),
        _ => None,
    }
}

/// Counters and gauges of the engine, registered once.
#[derive(Debug)]
struct EngineSeries {
    depth: [Gauge; 3],
    capacity: [Gauge; 3],
    pushed: [Counter; 3],
    popped: [Counter; 3],
    full: [Counter; 3],
    received: Counter,
    accepted: Counter,
    processed: Counter,
    rejected: Counter,
    dropped_queue_full: Counter,
    dropped_hard_stop: Counter,
    priority: [Counter; 4],
    dedup_hits: Counter,
    dedup_misses: Counter,
    panics: Counter,
    errors: Counter,
    workers_alive: Gauge,
    workers: Gauge,
    uptime: Gauge,
    rss: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    threads: Gauge,
    start_time: Gauge,
}

impl EngineSeries {
    fn register(r: &PrometheusRecorder, build: &BuildInfo) -> Self {
        use catalog::*;
        let per_tier =
            |def: &MetricDef| Tier::ALL.map(|t| register_counter(r, def, &[("queue", t.as_str())]));
        let per_tier_gauge =
            |def: &MetricDef| Tier::ALL.map(|t| register_gauge(r, def, &[("queue", t.as_str())]));
        register_gauge(
            r,
            &BUILD_INFO,
            &[
                ("version", &build.version),
                ("revision", &build.revision),
                ("rustc", &build.rustc),
            ],
        )
        .set(1.0);
        EngineSeries {
            depth: per_tier_gauge(&QUEUE_DEPTH),
            capacity: per_tier_gauge(&QUEUE_CAPACITY),
            pushed: per_tier(&QUEUE_PUSH),
            popped: per_tier(&QUEUE_POP),
            full: per_tier(&QUEUE_FULL),
            received: register_counter(r, &EVENTS_RECEIVED, &[]),
            accepted: register_counter(r, &EVENTS_ACCEPTED, &[]),
            processed: register_counter(r, &EVENTS_PROCESSED, &[]),
            rejected: register_counter(r, &EVENTS_REJECTED, &[]),
            dropped_queue_full: register_counter(r, &EVENTS_DROPPED, &[("reason", "queue_full")]),
            dropped_hard_stop: register_counter(r, &EVENTS_DROPPED, &[("reason", "hard_stop")]),
            priority: Priority::ALL
                .map(|p| register_counter(r, &EVENTS_PRIORITY, &[("priority", p.as_str())])),
            dedup_hits: register_counter(r, &DEDUP_HITS, &[]),
            dedup_misses: register_counter(r, &DEDUP_MISSES, &[]),
            panics: register_counter(r, &HANDLER_PANICS, &[]),
            errors: register_counter(r, &HANDLER_ERRORS, &[]),
            workers_alive: register_gauge(r, &WORKERS_ALIVE, &[]),
            workers: register_gauge(r, &WORKERS, &[]),
            uptime: register_gauge(r, &UPTIME, &[]),
            rss: register_gauge(r, &PROCESS_RESIDENT_MEMORY, &[]),
            open_fds: register_gauge(r, &PROCESS_OPEN_FDS, &[]),
            max_fds: register_gauge(r, &PROCESS_MAX_FDS, &[]),
            threads: register_gauge(r, &PROCESS_THREADS, &[]),
            start_time: register_gauge(r, &PROCESS_START_TIME, &[]),
        }
    }

    fn update(&self, s: &Stats, p: &ProcessSample) {
        for (i, t) in s.tiers.iter().enumerate() {
            self.depth[i].set(t.depth as f64);
            self.capacity[i].set(t.capacity as f64);
            self.pushed[i].absolute(t.pushed);
            self.popped[i].absolute(t.popped);
            self.full[i].absolute(t.full);
        }
        self.received.absolute(s.received);
        self.accepted.absolute(s.accepted);
        self.processed.absolute(s.processed);
        self.rejected.absolute(s.rejected);
        self.dropped_queue_full.absolute(s.dropped.queue_full);
        self.dropped_hard_stop.absolute(s.dropped.hard_stop);
        for (c, v) in self.priority.iter().zip(s.by_priority) {
            c.absolute(v);
        }
        self.dedup_hits.absolute(s.dedup_hits);
        self.dedup_misses.absolute(s.dedup_misses);
        self.panics.absolute(s.handler_panics);
        self.errors.absolute(s.handler_errors);
        self.workers_alive
            .set(s.workers.iter().filter(|w| w.alive).count() as f64);
        self.workers.set(s.configured_workers as f64);
        self.uptime.set(s.uptime.as_secs_f64());
        let set = |g: &Gauge, v: Option<f64>| {
            if let Some(v) = v {
                g.set(v);
            }
        };
        set(&self.rss, p.resident_memory_bytes.map(|v| v as f64));
        set(&self.open_fds, p.open_fds.map(|v| v as f64));
        set(&self.max_fds, p.max_fds.map(|v| v as f64));
        set(&self.threads, p.threads.map(|v| v as f64));
        set(&self.start_time, p.start_time_seconds);
    }
}

/// Counters and gauges of replication, registered once a source is attached.
#[derive(Debug)]
struct ClusterSeries {
    state: [Gauge; 4],
    is_leader: Gauge,
    has_leader: Gauge,
    storage_failed: Gauge,
    node_id: Gauge,
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    first_index: Gauge,
    last_index: Gauge,
    log_bytes: Gauge,
    members: Gauge,
    learners: Gauge,
    peers_connected: Gauge,
    proposals_pending: Gauge,
    elections: Counter,
    leader_changes: Counter,
    committed: Counter,
    applied: Counter,
    failed: Counter,
    heartbeat_failures: Counter,
    peer_failures: Counter,
    snapshots_sent: Counter,
    snapshots_received: Counter,
    compactions: Counter,
    snapshot_send_failures: Counter,
    stream_first_offset: Gauge,
    stream_last_offset: Gauge,
    stream: StreamSeries,
    kafka: KafkaSeries,
    protocol_errors: Counter,
    tls_handshake_failures: Counter,
    /// `[requests, events]` per outcome, in `PublishOutcomes::by_outcome` order.
    publishes: Vec<[Counter; 2]>,
}

impl ClusterSeries {
    fn register(r: &PrometheusRecorder) -> Self {
        use catalog::*;
        let g = |def: &MetricDef| register_gauge(r, def, &[]);
        let c = |def: &MetricDef| register_counter(r, def, &[]);
        ClusterSeries {
            state: RaftRole::ALL
                .map(|role| register_gauge(r, &RAFT_STATE, &[("state", role.as_str())])),
            is_leader: g(&RAFT_IS_LEADER),
            has_leader: g(&RAFT_HAS_LEADER),
            storage_failed: g(&RAFT_STORAGE_FAILED),
            node_id: g(&RAFT_NODE_ID),
            term: g(&RAFT_TERM),
            commit_index: g(&RAFT_COMMIT_INDEX),
            applied_index: g(&RAFT_APPLIED_INDEX),
            first_index: g(&RAFT_FIRST_INDEX),
            last_index: g(&RAFT_LAST_INDEX),
            log_bytes: g(&RAFT_LOG_BYTES),
            members: g(&RAFT_MEMBERS),
            learners: g(&RAFT_LEARNERS),
            peers_connected: g(&RAFT_PEERS_CONNECTED),
            proposals_pending: g(&RAFT_PROPOSALS_PENDING),
            elections: c(&RAFT_ELECTIONS),
            leader_changes: c(&RAFT_LEADER_CHANGES),
            committed: c(&RAFT_PROPOSALS_COMMITTED),
            applied: c(&RAFT_PROPOSALS_APPLIED),
            failed: c(&RAFT_PROPOSALS_FAILED),
            heartbeat_failures: c(&RAFT_HEARTBEAT_SEND_FAILURES),
            peer_failures: c(&RAFT_PEER_SEND_FAILURES),
            snapshots_sent: c(&RAFT_SNAPSHOTS_SENT),
            snapshots_received: c(&RAFT_SNAPSHOTS_RECEIVED),
            compactions: c(&RAFT_COMPACTIONS),
            snapshot_send_failures: c(&RAFT_SNAPSHOT_SEND_FAILURES),
            stream_first_offset: g(&STREAM_FIRST_OFFSET),
            stream_last_offset: g(&STREAM_LAST_OFFSET),
            stream: StreamSeries::register(r),
            kafka: KafkaSeries::register(r),
            protocol_errors: c(&PROTOCOL_ERRORS),
            tls_handshake_failures: c(&TLS_HANDSHAKE_FAILURES),
            publishes: PublishOutcomes::default()
                .by_outcome()
                .iter()
                .map(|(outcome, _)| {
                    [
                        register_counter(r, &PUBLISH_REQUESTS, &[("outcome", outcome)]),
                        register_counter(r, &PUBLISH_EVENTS, &[("outcome", outcome)]),
                    ]
                })
                .collect(),
        }
    }

    fn update(&self, s: &ClusterStatus) {
        for (g, role) in self.state.iter().zip(RaftRole::ALL) {
            g.set(if s.role == role { 1.0 } else { 0.0 });
        }
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        self.is_leader.set(flag(s.role == RaftRole::Leader));
        self.has_leader.set(flag(s.leader_id.is_some()));
        self.storage_failed.set(flag(s.storage_failure.is_some()));
        self.node_id.set(s.node_id as f64);
        self.term.set(s.term as f64);
        self.commit_index.set(s.commit_index as f64);
        self.applied_index.set(s.applied_index as f64);
        self.first_index.set(s.first_index as f64);
        self.last_index.set(s.last_index as f64);
        self.log_bytes.set(s.log_bytes as f64);
        self.members
            .set(s.members.iter().filter(|m| !m.learner).count() as f64);
        self.learners
            .set(s.members.iter().filter(|m| m.learner).count() as f64);
        self.peers_connected.set(s.peers_connected as f64);
        self.proposals_pending.set(s.proposals_pending as f64);
        let c = &s.counters;
        self.elections.absolute(c.elections);
        self.leader_changes.absolute(c.leader_changes);
        self.committed.absolute(c.proposals_committed);
        self.applied.absolute(c.proposals_applied);
        self.failed.absolute(c.proposals_failed);
        self.heartbeat_failures.absolute(c.heartbeat_send_failures);
        self.peer_failures.absolute(c.peer_send_failures);
        self.snapshots_sent.absolute(c.snapshots_sent);
        self.snapshots_received.absolute(c.snapshots_received);
        self.compactions.absolute(c.compactions);
        self.snapshot_send_failures
            .absolute(c.snapshot_send_failures);
        self.stream_first_offset.set(s.stream_first_offset as f64);
        self.stream_last_offset.set(stream_last_offset(s));
        self.stream.update(&s.stream);
        self.kafka.update(&s.kafka.unwrap_or_default());
        self.protocol_errors.absolute(c.protocol_errors);
        self.tls_handshake_failures
            .absolute(c.tls_handshake_failures);
        for (series, (_, counts)) in self.publishes.iter().zip(c.publishes.by_outcome()) {
            series[0].absolute(counts[0]);
            series[1].absolute(counts[1]);
        }
    }
}

/// The Kafka-protocol listener's counters (zero on a node without one).
#[derive(Debug)]
struct KafkaSeries {
    connections: Gauge,
    requests: Counter,
    protocol_errors: Counter,
    produced_quorum: Counter,
    produced_none: Counter,
    produce_errors: Counter,
    fetched: Counter,
}

impl KafkaSeries {
    fn register(r: &PrometheusRecorder) -> Self {
        use catalog::*;
        let c = |def: &MetricDef| register_counter(r, def, &[]);
        KafkaSeries {
            connections: register_gauge(r, &KAFKA_CONNECTIONS, &[]),
            requests: c(&KAFKA_REQUESTS),
            protocol_errors: c(&KAFKA_PROTOCOL_ERRORS),
            produced_quorum: register_counter(r, &KAFKA_PRODUCED_EVENTS, &[("acks", "quorum")]),
            produced_none: register_counter(r, &KAFKA_PRODUCED_EVENTS, &[("acks", "none")]),
            produce_errors: c(&KAFKA_PRODUCE_ERRORS),
            fetched: c(&KAFKA_FETCHED_EVENTS),
        }
    }

    fn update(&self, k: &KafkaListenerStats) {
        self.connections.set(k.open_connections as f64);
        self.requests.absolute(k.requests);
        self.protocol_errors.absolute(k.protocol_errors);
        self.produced_quorum.absolute(k.produced_events);
        self.produced_none.absolute(k.unacknowledged_events);
        self.produce_errors.absolute(k.produce_errors);
        self.fetched.absolute(k.fetched_events);
    }
}

/// The stream's storage (segment files, cache, copying, the data volume), registered with the
/// other cluster series and set from [`StreamStorage`] at each publish.
#[derive(Debug)]
struct StreamSeries {
    segments: Gauge,
    retained_bytes: Gauge,
    cache_bytes: Gauge,
    cache_reads: Counter,
    disk_reads: Counter,
    index_rebuilds: Counter,
    missing_events: Gauge,
    copied_bytes: Counter,
    copy_served_bytes: Counter,
    copy_failures: Counter,
    volume_size_bytes: Gauge,
    volume_free_bytes: Gauge,
}

impl StreamSeries {
    fn register(r: &PrometheusRecorder) -> Self {
        use catalog::*;
        let g = |def: &MetricDef| register_gauge(r, def, &[]);
        let c = |def: &MetricDef| register_counter(r, def, &[]);
        StreamSeries {
            segments: g(&STREAM_SEGMENTS),
            retained_bytes: g(&STREAM_RETAINED_BYTES),
            cache_bytes: g(&STREAM_CACHE_BYTES),
            cache_reads: register_counter(r, &STREAM_READS, &[("source", "cache")]),
            disk_reads: register_counter(r, &STREAM_READS, &[("source", "disk")]),
            index_rebuilds: c(&STREAM_INDEX_REBUILDS),
            missing_events: g(&STREAM_MISSING_EVENTS),
            copied_bytes: c(&STREAM_COPIED_BYTES),
            copy_served_bytes: c(&STREAM_COPY_SERVED_BYTES),
            copy_failures: c(&STREAM_COPY_FAILURES),
            volume_size_bytes: g(&STORAGE_VOLUME_SIZE),
            volume_free_bytes: g(&STORAGE_VOLUME_FREE),
        }
    }

    fn update(&self, s: &StreamStorage) {
        self.segments.set(s.segments as f64);
        self.retained_bytes.set(s.retained_bytes as f64);
        self.cache_bytes.set(s.cache_bytes as f64);
        self.cache_reads.absolute(s.cache_reads);
        self.disk_reads.absolute(s.disk_reads);
        self.index_rebuilds.absolute(s.index_rebuilds);
        self.missing_events.set(s.missing_events as f64);
        self.copied_bytes.absolute(s.copied_bytes);
        self.copy_served_bytes.absolute(s.copy_served_bytes);
        self.copy_failures.absolute(s.copy_failures);
        self.volume_size_bytes.set(s.volume_total_bytes as f64);
        self.volume_free_bytes.set(s.volume_free_bytes as f64);
    }
}

/// `eventstream_stream_last_offset`: the last committed offset (`next - 1`), or -1 while
/// nothing was ever committed (offsets start at 0).
fn stream_last_offset(s: &ClusterStatus) -> f64 {
    match s.stream_next_offset.checked_sub(1) {
        Some(last) => last as f64,
        None => -1.0,
    }
}

/// What the publisher alone mutates.
#[derive(Debug)]
struct PublisherState {
    samples: VecDeque<RateSample>,
    /// Cumulative latency histogram at the start of the current recent-latency window.
    window_start: Option<(Instant, Histogram<u64>)>,
    recent: RecentLatency,
    history: VecDeque<HistoryPoint>,
    last_history: Option<RateSample>,
}

/// The metrics registry and published views of one exporter.
pub struct Telemetry {
    stats: StatsHandle,
    replication: Option<Arc<dyn ReplicationSource>>,
    recorder: PrometheusRecorder,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    engine: EngineSeries,
    cluster: Option<ClusterSeries>,
    http_in_flight: Gauge,
    history_len: usize,
    state: Mutex<PublisherState>,
    latest: RwLock<Arc<Published>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("replication", &self.replication.is_some())
            .field("history_len", &self.history_len)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Telemetry {
    /// Builds the recorder, registers every series and takes the first snapshot.
    /// `history_seconds` bounds the status page's history.
    pub fn new(
        stats: StatsHandle,
        replication: Option<Arc<dyn ReplicationSource>>,
        build: &BuildInfo,
        history_seconds: usize,
    ) -> Result<Self, crate::ExporterError> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(catalog::HTTP_REQUEST_DURATION.name.to_owned()),
                &catalog::HTTP_BUCKETS,
            )?
            .build_recorder();
        for def in catalog::ALL {
            let name = metrics::KeyName::from_const_str(def.name);
            let help = SharedString::const_str(def.help);
            match def.kind {
                MetricKind::Counter => recorder.describe_counter(name, unit_of(def), help),
                MetricKind::Gauge => recorder.describe_gauge(name, unit_of(def), help),
                MetricKind::Histogram => recorder.describe_histogram(name, unit_of(def), help),
            }
        }
        let engine = EngineSeries::register(&recorder, build);
        let cluster = replication
            .as_ref()
            .map(|_| ClusterSeries::register(&recorder));
        let http_in_flight = register_gauge(&recorder, &catalog::HTTP_IN_FLIGHT, &[]);
        http_in_flight.set(0.0);
        let handle = recorder.handle();
        let empty = Published {
            taken_at_ms: now_ms(),
            stats: stats.stats(),
            latency: Buckets::empty(&catalog::LATENCY_BUCKETS),
            recent: RecentLatency {
                window_seconds: 0.0,
                summary: LatencySummary::default(),
                buckets: Buckets::empty(&catalog::LATENCY_BUCKETS),
            },
            throughput: Throughput::default(),
            process: ProcessSample::default(),
            cluster: None,
            history: Vec::new(),
        };
        let telemetry = Telemetry {
            state: Mutex::new(PublisherState {
                samples: VecDeque::new(),
                window_start: None,
                recent: empty.recent.clone(),
                history: VecDeque::new(),
                last_history: None,
            }),
            latest: RwLock::new(Arc::new(empty)),
            stats,
            replication,
            recorder,
            handle,
            engine,
            cluster,
            http_in_flight,
            history_len: history_seconds.max(1),
        };
        telemetry.publish();
        Ok(telemetry)
    }

    /// The attached replication source, if any.
    pub fn replication(&self) -> Option<&Arc<dyn ReplicationSource>> {
        self.replication.as_ref()
    }

    /// Takes a snapshot of everything and publishes it. Called every publish interval.
    pub fn publish(&self) {
        let (stats, hist) = self.stats.snapshot();
        let process = process::sample();
        let cluster = self.replication.as_ref().map(|src| {
            let status = src.status();
            let h = src.histograms();
            ClusterSnapshot {
                ready: src.ready(),
                fsync: Buckets::from_hdr(&h.fsync_ns, &catalog::RAFT_BUCKETS),
                commit: Buckets::from_hdr(&h.commit_ns, &catalog::RAFT_BUCKETS),
                snapshot: Buckets::from_hdr(&h.snapshot_ns, &catalog::SNAPSHOT_BUCKETS),
                status,
            }
        });
        self.engine.update(&stats, &process);
        if let (Some(series), Some(c)) = (&self.cluster, &cluster) {
            series.update(&c.status);
        }
        // Histogram samples of the HTTP metrics accumulate in the recorder between renders;
        // upkeep folds them into buckets so memory stays bounded without scrapes.
        self.handle.run_upkeep();

        let now = Instant::now();
        let latency = Buckets::from_hdr(&hist, &catalog::LATENCY_BUCKETS);
        let sample = RateSample {
            at: now,
            processed: stats.processed,
            received: stats.received,
            dropped: stats.dropped.total(),
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.samples.push_back(sample);
        while st
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > Duration::from_secs(11))
        {
            st.samples.pop_front();
        }
        let throughput = Throughput {
            processed_per_sec_1s: rate(&st.samples, Duration::from_secs(1), |s| s.processed),
            processed_per_sec_10s: rate(&st.samples, Duration::from_secs(10), |s| s.processed),
            received_per_sec_1s: rate(&st.samples, Duration::from_secs(1), |s| s.received),
            received_per_sec_10s: rate(&st.samples, Duration::from_secs(10), |s| s.received),
            dropped_per_sec_10s: rate(&st.samples, Duration::from_secs(10), |s| s.dropped),
        };
        self.roll_window(&mut st, now, hist);
        let due = st
            .last_history
            .is_none_or(|l| now.duration_since(l.at) >= Duration::from_secs(1));
        if due {
            if let Some(prev) = st.last_history {
                let dt = now.duration_since(prev.at).as_secs_f64();
                let per_sec = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                let point = HistoryPoint {
                    t_ms: now_ms(),
                    processed_per_sec: per_sec(sample.processed, prev.processed),
                    received_per_sec: per_sec(sample.received, prev.received),
                    dropped_per_sec: per_sec(sample.dropped, prev.dropped),
                    p50_ns: st.recent.summary.p50_ns,
                    p99_ns: st.recent.summary.p99_ns,
                };
                st.history.push_back(point);
                while st.history.len() > self.history_len {
                    st.history.pop_front();
                }
            }
            st.last_history = Some(sample);
        }
        let published = Published {
            taken_at_ms: now_ms(),
            stats,
            latency,
            recent: st.recent.clone(),
            throughput,
            process,
            cluster,
            history: st.history.iter().copied().collect(),
        };
        drop(st);
        *self.latest.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(published);
    }

    /// Closes the recent-latency window once it is at least a second old: the window's
    /// histogram is the cumulative one minus the one at the window's start.
    fn roll_window(&self, st: &mut PublisherState, now: Instant, hist: Histogram<u64>) {
        match st.window_start.take() {
            None => st.window_start = Some((now, hist)),
            Some((started, base)) if now.duration_since(started) >= Duration::from_secs(1) => {
                let mut window = hist.clone();
                if window.subtract(&base).is_err() {
                    // Only if the cumulative histogram shrank (it never should): start over.
                    window.reset();
                }
                st.recent = RecentLatency {
                    window_seconds: now.duration_since(started).as_secs_f64(),
                    summary: LatencySummary::of(&window),
                    buckets: Buckets::from_hdr(&window, &catalog::LATENCY_BUCKETS),
                };
                st.window_start = Some((now, hist));
            }
            Some(open) => st.window_start = Some(open),
        }
    }

    /// The latest published view.
    pub fn latest(&self) -> Arc<Published> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The Prometheus text exposition of the latest view (what `GET /metrics` returns).
    pub fn render_prometheus(&self) -> String {
        let mut out = self.handle.render();
        let p = self.latest();
        out.reserve(8 * 1024);
        p.latency
            .write_prometheus(&mut out, &catalog::EVENT_LATENCY);
        if let Some(cpu) = p.process.cpu_seconds {
            // Rendered here rather than through the recorder: `metrics` counters are integers.
            write_header(&mut out, &catalog::PROCESS_CPU);
            let _ = writeln!(out, "{} {}", catalog::PROCESS_CPU.name, fmt_f64(cpu));
        }
        if let Some(c) = &p.cluster {
            c.fsync
                .write_prometheus(&mut out, &catalog::RAFT_FSYNC_DURATION);
            c.commit
                .write_prometheus(&mut out, &catalog::RAFT_COMMIT_LATENCY);
            c.snapshot
                .write_prometheus(&mut out, &catalog::RAFT_SNAPSHOT_DURATION);
            // Per-peer lag: only the leader knows it, and peers come and go, so these series are
            // rendered from the snapshot instead of living forever in the recorder.
            if c.status.role == RaftRole::Leader {
                let lags: Vec<(u64, u64)> = c
                    .status
                    .members
                    .iter()
                    .filter(|m| m.id != c.status.node_id)
                    .filter_map(|m| Some((m.id, m.lag_entries?)))
                    .collect();
                if !lags.is_empty() {
                    write_header(&mut out, &catalog::RAFT_REPLICATION_LAG);
                    for (peer, lag) in lags {
                        let _ = writeln!(
                            out,
                            "{}{{peer=\"{peer}\"}} {lag}",
                            catalog::RAFT_REPLICATION_LAG.name
                        );
                    }
                }
                // Groups come and go too; every node holds the same commits, so only the
                // leader reports them (one series per group and topic in the cluster).
                write_group_lags(&mut out, &c.status.groups);
            }
        }
        out
    }

    /// Marks one HTTP request as started; the guard records it when finished.
    pub(crate) fn http_request_started(&self) -> InFlightGuard<'_> {
        self.http_in_flight.increment(1.0);
        InFlightGuard { telemetry: self }
    }

    /// Counts one finished HTTP request. `path` must be a route template or `other`.
    pub(crate) fn record_http(&self, path: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.recorder
            .register_counter(
                &key(
                    &catalog::HTTP_REQUESTS,
                    &[("path", path), ("method", method), ("status", &status)],
                ),
                &METADATA,
            )
            .increment(1);
        self.recorder
            .register_histogram(
                &key(&catalog::HTTP_REQUEST_DURATION, &[("path", path)]),
                &METADATA,
            )
            .record(elapsed.as_secs_f64());
    }

    /// Registers the request series of `paths` with zero counts, so that dashboards see them
    /// before the first request.
    pub(crate) fn preregister_http(&self, paths: &[&str]) {
        for path in paths {
            // A histogram only appears once it has a sample; registering is enough for counters.
            let _ = self.recorder.register_histogram(
                &key(&catalog::HTTP_REQUEST_DURATION, &[("path", path)]),
                &METADATA,
            );
        }
    }
}

/// Decrements the in-flight gauge when dropped (also when a handler future is cancelled).
#[derive(Debug)]
pub(crate) struct InFlightGuard<'a> {
    telemetry: &'a Telemetry,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.telemetry.http_in_flight.decrement(1.0);
    }
}

/// `eventstream_kafka_group_lag_offsets{group, topic}` for every committed offset.
fn write_group_lags(out: &mut String, groups: &[eventstream_core::replication::GroupLag]) {
    if groups.is_empty() {
        return;
    }
    write_header(out, &catalog::KAFKA_GROUP_LAG);
    for g in groups {
        let _ = writeln!(
            out,
            "{}{{group=\"{}\",topic=\"{}\"}} {}",
            catalog::KAFKA_GROUP_LAG.name,
            label_value(&g.group),
            label_value(&g.topic),
            g.lag
        );
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped (the text format's rules).
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(u64, u64)]) -> VecDeque<RateSample> {
        let t0 = Instant::now();
        points
            .iter()
            .map(|&(ms, n)| RateSample {
                at: t0 + Duration::from_millis(ms),
                processed: n,
                received: n,
                dropped: 0,
            })
            .collect()
    }

    #[test]
    fn rate_uses_the_newest_sample_a_full_window_back() {
        // 1000 events/s for 10 s, then 5000 events/s for the last second.
        let mut pts: Vec<(u64, u64)> = (0..=10).map(|s| (s * 1000, s * 1000)).collect();
        pts.push((10_500, 12_500));
        pts.push((11_000, 15_000));
        let s = samples(&pts);
        let one = rate(&s, Duration::from_secs(1), |s| s.processed);
        assert!((one - 5000.0).abs() < 1e-6, "{one}");
        let ten = rate(&s, Duration::from_secs(10), |s| s.processed);
        assert!((ten - 1400.0).abs() < 1e-6, "{ten}");
    }

    #[test]
    fn rate_with_short_history_uses_what_there_is() {
        let s = samples(&[(0, 0), (250, 100)]);
        assert!((rate(&s, Duration::from_secs(10), |s| s.processed) - 400.0).abs() < 1e-6);
        assert_eq!(
            rate(&samples(&[(0, 5)]), Duration::from_secs(1), |s| s.processed),
            0.0
        );
        assert_eq!(
            rate(&VecDeque::new(), Duration::from_secs(1), |s| s.processed),
            0.0
        );
    }

    #[test]
    fn two_recorders_in_one_process_are_independent() {
        let a = Telemetry::new(StatsHandle::detached(), None, &BuildInfo::default(), 10).unwrap();
        let b = Telemetry::new(StatsHandle::detached(), None, &BuildInfo::default(), 10).unwrap();
        a.record_http("/metrics", "GET", 200, Duration::from_millis(1));
        let ra = a.render_prometheus();
        let rb = b.render_prometheus();
        assert!(ra.contains("eventstream_http_requests_total{path=\"/metrics\",method=\"GET\",status=\"200\"} 1"), "{ra}");
        assert!(!rb.contains("eventstream_http_requests_total{"), "{rb}");
        assert!(rb.contains("eventstream_events_dropped_total{reason=\"hard_stop\"} 0"));
        assert!(rb.contains("eventstream_events_dropped_total{reason=\"queue_full\"} 0"));
        assert!(
            !rb.contains("eventstream_raft_"),
            "no cluster series without a source"
        );
    }
}
