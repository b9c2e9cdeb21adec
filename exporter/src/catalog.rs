//! The metric catalog: every metric eventstream exports, in one place.
//!
//! Each [`MetricDef`] carries its exact Prometheus name, type, unit, label names and help text.
//! Alert rules, dashboards, `docs/metrics.md` and the cluster all refer to these names, so they
//! are a contract: rename nothing without updating those.
//!
//! Invariants (checked by the unit tests below):
//! * names are unique, `snake_case`, prefixed `eventstream_` or `process_`;
//! * counters end in `_total`; nothing else does;
//! * a unit, when the metric has one, is the last word of the name (before `_total`), in base
//!   units (`seconds`, `bytes`);
//! * no metric has a label named `job`, `instance`, `pod`, `namespace` or `le`/`quantile`
//!   (the first four are target labels Prometheus adds; the last two belong to histograms);
//! * every histogram's bucket edges are strictly increasing and contain the alert thresholds.

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Monotonic total; name ends in `_total`.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Classic Prometheus histogram (`_bucket{le}`, `_sum`, `_count`).
    Histogram,
}

impl MetricKind {
    /// The `# TYPE` keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Which part of the system a metric describes (and so when it is emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricGroup {
    /// The engine (always emitted).
    Engine,
    /// The exporter's own HTTP API (always emitted).
    Http,
    /// The process (Linux `/proc`; always emitted).
    Process,
    /// Replication: emitted only when a `ReplicationSource` is attached.
    Cluster,
}

/// One metric: name, type, unit, labels and help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Exact Prometheus name.
    pub name: &'static str,
    /// Type.
    pub kind: MetricKind,
    /// Unit (`seconds`, `bytes`, `events`, `requests`, `entries`, `1` for ratios/flags, ...).
    pub unit: &'static str,
    /// Label names.
    pub labels: &'static [&'static str],
    /// `# HELP` text.
    pub help: &'static str,
    /// Emitted by which part.
    pub group: MetricGroup,
}

const fn def(
    name: &'static str,
    kind: MetricKind,
    unit: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    group: MetricGroup,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        labels,
        help,
        group,
    }
}

use MetricGroup::{Cluster, Engine, Http, Process};
use MetricKind::{Counter, Gauge, Histogram};

/// Bucket edges (seconds) of the event latency histogram. Sub-microsecond to 10 s in 1-2.5-5
/// steps, so the `HighLatency` alert threshold (p99 > 1 ms) and its neighbours are edges.
pub const LATENCY_BUCKETS: [f64; 25] = [
    100e-9, 250e-9, 500e-9, 1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3,
    2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0,
];

/// Bucket edges (seconds) of the raft fsync and commit-latency histograms; 0.01, 0.05 and 0.1
/// (fsync alert thresholds) are edges.
pub const RAFT_BUCKETS: [f64; 17] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0, 10.0,
];

/// Bucket edges (seconds) of the raft snapshot duration histogram: taking or installing a
/// snapshot costs from about a millisecond (small state) to tens of seconds (large state over a
/// slow disk), so 1 ms .. 60 s in 1-2.5-5 steps.
pub const SNAPSHOT_BUCKETS: [f64; 15] = [
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Bucket edges (seconds) of the HTTP request duration histogram.
pub const HTTP_BUCKETS: [f64; 17] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0, 10.0,
];

// ---- engine ----------------------------------------------------------------------------------

/// Events waiting in a tier ring now (all lanes).
pub const QUEUE_DEPTH: MetricDef = def(
    "eventstream_queue_depth",
    Gauge,
    "events",
    &["queue"],
    "Events waiting in the tier ring now, summed over worker lanes.",
    Engine,
);
/// Slots of a tier ring (all lanes).
pub const QUEUE_CAPACITY: MetricDef = def(
    "eventstream_queue_capacity",
    Gauge,
    "events",
    &["queue"],
    "Slots of the tier ring, summed over worker lanes.",
    Engine,
);
/// Events ever pushed into a tier ring.
pub const QUEUE_PUSH: MetricDef = def(
    "eventstream_queue_push_total",
    Counter,
    "events",
    &["queue"],
    "Events pushed into the tier ring since start.",
    Engine,
);
/// Events ever popped from a tier ring.
pub const QUEUE_POP: MetricDef = def(
    "eventstream_queue_pop_total",
    Counter,
    "events",
    &["queue"],
    "Events popped from the tier ring by workers since start.",
    Engine,
);
/// Publish attempts that found a tier ring full.
pub const QUEUE_FULL: MetricDef = def(
    "eventstream_queue_full_total",
    Counter,
    "events",
    &["queue"],
    "Publish attempts that found the tier ring full (whatever the overflow policy did next).",
    Engine,
);
/// Ingest -> handler-start latency.
pub const EVENT_LATENCY: MetricDef = def(
    "eventstream_event_latency_seconds",
    Histogram,
    "seconds",
    &[],
    "Latency from ingest to handler start of dispatched events, in seconds (recorded with nanosecond precision).",
    Engine,
);
/// Events offered to publish.
pub const EVENTS_RECEIVED: MetricDef = def(
    "eventstream_events_received_total",
    Counter,
    "events",
    &[],
    "Events offered to publish (accepted, dropped or handed back).",
    Engine,
);
/// Events enqueued.
pub const EVENTS_ACCEPTED: MetricDef = def(
    "eventstream_events_accepted_total",
    Counter,
    "events",
    &[],
    "Events accepted into a tier ring.",
    Engine,
);
/// Events dispatched to handlers.
pub const EVENTS_PROCESSED: MetricDef = def(
    "eventstream_events_processed_total",
    Counter,
    "events",
    &[],
    "Events dispatched to handlers (duplicates excluded).",
    Engine,
);
/// Events dropped, by reason.
pub const EVENTS_DROPPED: MetricDef = def(
    "eventstream_events_dropped_total",
    Counter,
    "events",
    &["reason"],
    "Events accepted or offered and then discarded, by reason (queue_full, hard_stop).",
    Engine,
);
/// Events handed back to the publisher.
pub const EVENTS_REJECTED: MetricDef = def(
    "eventstream_events_rejected_total",
    Counter,
    "events",
    &[],
    "Events handed back to the publisher (full reject tier, try_publish, closed engine).",
    Engine,
);
/// Events taken from the rings by priority.
pub const EVENTS_PRIORITY: MetricDef = def(
    "eventstream_events_priority_total",
    Counter,
    "events",
    &["priority"],
    "Events taken from the rings by workers, by priority (critical, high, medium, low), duplicates included.",
    Engine,
);
/// Duplicates caught by dedup.
pub const DEDUP_HITS: MetricDef = def(
    "eventstream_dedup_hits_total",
    Counter,
    "events",
    &[],
    "Events recognised as duplicates by the dedup window and not dispatched.",
    Engine,
);
/// Fresh events passed by dedup.
pub const DEDUP_MISSES: MetricDef = def(
    "eventstream_dedup_misses_total",
    Counter,
    "events",
    &[],
    "Events checked by the dedup window and found fresh.",
    Engine,
);
/// Handler calls that panicked.
pub const HANDLER_PANICS: MetricDef = def(
    "eventstream_handler_panics_total",
    Counter,
    "calls",
    &[],
    "Handler calls that panicked (caught; the worker continues).",
    Engine,
);
/// Handler calls that returned an error.
pub const HANDLER_ERRORS: MetricDef = def(
    "eventstream_handler_errors_total",
    Counter,
    "calls",
    &[],
    "Handler calls that returned an error.",
    Engine,
);
/// Workers (and external appliers) still running.
pub const WORKERS_ALIVE: MetricDef = def(
    "eventstream_workers_alive",
    Gauge,
    "workers",
    &[],
    "Workers and external appliers that are still running.",
    Engine,
);
/// Workers (and external appliers) configured.
pub const WORKERS: MetricDef = def(
    "eventstream_workers",
    Gauge,
    "workers",
    &[],
    "Workers and external appliers registered with the engine.",
    Engine,
);
/// Build information; the value is always 1.
pub const BUILD_INFO: MetricDef = def(
    "eventstream_build_info",
    Gauge,
    "1",
    &["version", "revision", "rustc"],
    "Build information; always 1.",
    Engine,
);
/// Time since the engine started.
pub const UPTIME: MetricDef = def(
    "eventstream_uptime_seconds",
    Gauge,
    "seconds",
    &[],
    "Time since the engine started, in seconds.",
    Engine,
);

// ---- process (Linux /proc) -------------------------------------------------------------------

/// Resident set size.
pub const PROCESS_RESIDENT_MEMORY: MetricDef = def(
    "process_resident_memory_bytes",
    Gauge,
    "bytes",
    &[],
    "Resident memory size in bytes.",
    Process,
);
/// User + system CPU time.
pub const PROCESS_CPU: MetricDef = def(
    "process_cpu_seconds_total",
    Counter,
    "seconds",
    &[],
    "Total user and system CPU time spent in seconds.",
    Process,
);
/// Open file descriptors.
pub const PROCESS_OPEN_FDS: MetricDef = def(
    "process_open_fds",
    Gauge,
    "fds",
    &[],
    "Number of open file descriptors.",
    Process,
);
/// Soft limit on open file descriptors.
pub const PROCESS_MAX_FDS: MetricDef = def(
    "process_max_fds",
    Gauge,
    "fds",
    &[],
    "Maximum number of open file descriptors (soft limit).",
    Process,
);
/// OS threads.
pub const PROCESS_THREADS: MetricDef = def(
    "process_threads",
    Gauge,
    "threads",
    &[],
    "Number of OS threads in the process.",
    Process,
);
/// Start time since the Unix epoch.
pub const PROCESS_START_TIME: MetricDef = def(
    "process_start_time_seconds",
    Gauge,
    "seconds",
    &[],
    "Start time of the process since the Unix epoch in seconds.",
    Process,
);

// ---- HTTP API --------------------------------------------------------------------------------

/// Requests served, by route template, method and status.
pub const HTTP_REQUESTS: MetricDef = def(
    "eventstream_http_requests_total",
    Counter,
    "requests",
    &["path", "method", "status"],
    "HTTP requests served, by matched route template (\"other\" for unknown paths), method and status code.",
    Http,
);
/// Request duration by route template.
pub const HTTP_REQUEST_DURATION: MetricDef = def(
    "eventstream_http_request_duration_seconds",
    Histogram,
    "seconds",
    &["path"],
    "HTTP request duration in seconds, by matched route template.",
    Http,
);
/// Requests being served now.
pub const HTTP_IN_FLIGHT: MetricDef = def(
    "eventstream_http_requests_in_flight",
    Gauge,
    "requests",
    &[],
    "HTTP requests being served now.",
    Http,
);

// ---- cluster (only with a ReplicationSource) -------------------------------------------------

/// Raft role; exactly one `state` is 1.
pub const RAFT_STATE: MetricDef = def(
    "eventstream_raft_state",
    Gauge,
    "1",
    &["state"],
    "Raft role of this node: 1 for the current state (leader, follower, candidate, pre_candidate), 0 for the others.",
    Cluster,
);
/// 1 on the leader.
pub const RAFT_IS_LEADER: MetricDef = def(
    "eventstream_raft_is_leader",
    Gauge,
    "1",
    &[],
    "1 if this node is the raft leader, else 0.",
    Cluster,
);
/// 1 when a leader is known.
pub const RAFT_HAS_LEADER: MetricDef = def(
    "eventstream_raft_has_leader",
    Gauge,
    "1",
    &[],
    "1 if this node knows a raft leader, else 0.",
    Cluster,
);
/// 1 when this node's log can no longer be written.
pub const RAFT_STORAGE_FAILED: MetricDef = def(
    "eventstream_raft_storage_failed",
    Gauge,
    "1",
    &[],
    "1 if this node's log can no longer be written (full disk, failed fsync): it accepts no writes until restarted on working storage (the reason is in /ready and the status), else 0.",
    Cluster,
);
/// This node's raft id.
pub const RAFT_NODE_ID: MetricDef = def(
    "eventstream_raft_node_id",
    Gauge,
    "1",
    &[],
    "This node's raft id.",
    Cluster,
);
/// Current term.
pub const RAFT_TERM: MetricDef = def(
    "eventstream_raft_term",
    Gauge,
    "1",
    &[],
    "Current raft term.",
    Cluster,
);
/// Highest committed index.
pub const RAFT_COMMIT_INDEX: MetricDef = def(
    "eventstream_raft_commit_index",
    Gauge,
    "entries",
    &[],
    "Highest committed raft log index.",
    Cluster,
);
/// Highest applied index.
pub const RAFT_APPLIED_INDEX: MetricDef = def(
    "eventstream_raft_applied_index",
    Gauge,
    "entries",
    &[],
    "Highest applied raft log index.",
    Cluster,
);
/// First index still in the log.
pub const RAFT_FIRST_INDEX: MetricDef = def(
    "eventstream_raft_first_index",
    Gauge,
    "entries",
    &[],
    "First index still in the raft log (after compaction).",
    Cluster,
);
/// Last index in the log.
pub const RAFT_LAST_INDEX: MetricDef = def(
    "eventstream_raft_last_index",
    Gauge,
    "entries",
    &[],
    "Last index in the raft log.",
    Cluster,
);
/// Log size on disk.
pub const RAFT_LOG_BYTES: MetricDef = def(
    "eventstream_raft_log_bytes",
    Gauge,
    "bytes",
    &[],
    "Bytes the raft log takes on disk.",
    Cluster,
);
/// Voting members.
pub const RAFT_MEMBERS: MetricDef = def(
    "eventstream_raft_members",
    Gauge,
    "members",
    &[],
    "Voting members of the cluster (including this node).",
    Cluster,
);
/// Learners.
pub const RAFT_LEARNERS: MetricDef = def(
    "eventstream_raft_learners",
    Gauge,
    "members",
    &[],
    "Learners (non-voting members) of the cluster.",
    Cluster,
);
/// Peers with a live connection.
pub const RAFT_PEERS_CONNECTED: MetricDef = def(
    "eventstream_raft_peers_connected",
    Gauge,
    "members",
    &[],
    "Peers this node has a live connection to.",
    Cluster,
);
/// Leader's view of each follower's lag.
pub const RAFT_REPLICATION_LAG: MetricDef = def(
    "eventstream_raft_replication_lag_entries",
    Gauge,
    "entries",
    &["peer"],
    "Entries each peer is behind the leader's log (emitted only by the leader; peer = raft id).",
    Cluster,
);
/// Campaigns started.
pub const RAFT_ELECTIONS: MetricDef = def(
    "eventstream_raft_elections_total",
    Counter,
    "elections",
    &[],
    "Election campaigns this node started.",
    Cluster,
);
/// Leader changes observed.
pub const RAFT_LEADER_CHANGES: MetricDef = def(
    "eventstream_raft_leader_changes_total",
    Counter,
    "changes",
    &[],
    "Times the leader known to this node changed.",
    Cluster,
);
/// Proposals committed.
pub const RAFT_PROPOSALS_COMMITTED: MetricDef = def(
    "eventstream_raft_proposals_committed_total",
    Counter,
    "proposals",
    &[],
    "Raft proposals (log entries) committed.",
    Cluster,
);
/// Proposals applied.
pub const RAFT_PROPOSALS_APPLIED: MetricDef = def(
    "eventstream_raft_proposals_applied_total",
    Counter,
    "proposals",
    &[],
    "Raft proposals (log entries) applied to the engine.",
    Cluster,
);
/// Proposals failed.
pub const RAFT_PROPOSALS_FAILED: MetricDef = def(
    "eventstream_raft_proposals_failed_total",
    Counter,
    "proposals",
    &[],
    "Raft proposals that failed (dropped, not leader, ...).",
    Cluster,
);
/// Proposals waiting for commit.
pub const RAFT_PROPOSALS_PENDING: MetricDef = def(
    "eventstream_raft_proposals_pending",
    Gauge,
    "proposals",
    &[],
    "Raft proposals waiting for commit.",
    Cluster,
);
/// Heartbeats that could not be sent.
pub const RAFT_HEARTBEAT_SEND_FAILURES: MetricDef = def(
    "eventstream_raft_heartbeat_send_failures_total",
    Counter,
    "messages",
    &[],
    "Raft heartbeats that could not be sent.",
    Cluster,
);
/// Peer messages that could not be sent.
pub const RAFT_PEER_SEND_FAILURES: MetricDef = def(
    "eventstream_raft_peer_send_failures_total",
    Counter,
    "messages",
    &[],
    "Raft peer messages that could not be sent.",
    Cluster,
);
/// Snapshots sent to followers.
pub const RAFT_SNAPSHOTS_SENT: MetricDef = def(
    "eventstream_raft_snapshots_sent_total",
    Counter,
    "snapshots",
    &[],
    "Raft snapshots sent to followers.",
    Cluster,
);
/// Snapshots installed from a leader.
pub const RAFT_SNAPSHOTS_RECEIVED: MetricDef = def(
    "eventstream_raft_snapshots_received_total",
    Counter,
    "snapshots",
    &[],
    "Raft snapshots received and installed from a leader.",
    Cluster,
);
/// Log compactions.
pub const RAFT_COMPACTIONS: MetricDef = def(
    "eventstream_raft_compactions_total",
    Counter,
    "compactions",
    &[],
    "Raft log compactions done.",
    Cluster,
);
/// Snapshots that could not be delivered.
pub const RAFT_SNAPSHOT_SEND_FAILURES: MetricDef = def(
    "eventstream_raft_snapshot_send_failures_total",
    Counter,
    "snapshots",
    &[],
    "Raft snapshots that could not be sent to a follower (raft retries them).",
    Cluster,
);
/// Duration of taking or installing a snapshot.
pub const RAFT_SNAPSHOT_DURATION: MetricDef = def(
    "eventstream_raft_snapshot_duration_seconds",
    Histogram,
    "seconds",
    &[],
    "Duration of each raft snapshot taken (compaction, backup) or installed from a leader, in seconds.",
    Cluster,
);
/// First retained stream offset.
pub const STREAM_FIRST_OFFSET: MetricDef = def(
    "eventstream_stream_first_offset",
    Gauge,
    "offset",
    &[],
    "First offset still retained in the committed stream (after compaction); equals the next offset while the stream is empty.",
    Cluster,
);
/// Last stream offset.
pub const STREAM_LAST_OFFSET: MetricDef = def(
    "eventstream_stream_last_offset",
    Gauge,
    "offset",
    &[],
    "Offset of the last event committed to the stream (next offset - 1), even if compaction has since removed it; -1 while nothing was ever committed. Retained events = last - first + 1.",
    Cluster,
);
/// Segment files of the stream.
pub const STREAM_SEGMENTS: MetricDef = def(
    "eventstream_stream_segments",
    Gauge,
    "segments",
    &[],
    "Segment files this node holds for the stream (the backfill's included).",
    Cluster,
);
/// Bytes of the stream's segment files.
pub const STREAM_RETAINED_BYTES: MetricDef = def(
    "eventstream_stream_retained_bytes",
    Gauge,
    "bytes",
    &[],
    "Bytes of the stream's segment files on this node's data volume (what retention bounds).",
    Cluster,
);
/// Bytes of the stream held in memory.
pub const STREAM_CACHE_BYTES: MetricDef = def(
    "eventstream_stream_cache_bytes",
    Gauge,
    "bytes",
    &[],
    "Bytes of the newest stream batches held in memory for subscribers that are caught up.",
    Cluster,
);
/// Subscriber reads, by where they were served from.
pub const STREAM_READS: MetricDef = def(
    "eventstream_stream_reads_total",
    Counter,
    "reads",
    &["source"],
    "Subscriber reads of the stream, by where they were served from (cache: memory, disk: the segment files).",
    Cluster,
);
/// Segment indexes rebuilt at start-up.
pub const STREAM_INDEX_REBUILDS: MetricDef = def(
    "eventstream_stream_index_rebuilds_total",
    Counter,
    "segments",
    &[],
    "Sealed segments whose index had to be rebuilt by scanning at start-up (missing or stale checkpoint: a crash, or a segment sealed by an older build).",
    Cluster,
);
/// Offsets this node lacks and is copying from another member.
pub const STREAM_MISSING_EVENTS: MetricDef = def(
    "eventstream_stream_missing_events",
    Gauge,
    "events",
    &[],
    "Offsets this node lacks below its log (a snapshot took it past them) and is copying from another member; 0 when its stream is whole.",
    Cluster,
);
/// Record bytes copied from other members.
pub const STREAM_COPIED_BYTES: MetricDef = def(
    "eventstream_stream_copied_bytes_total",
    Counter,
    "bytes",
    &[],
    "Stream record bytes this node copied from other members to fill its missing offsets.",
    Cluster,
);
/// Record bytes served to members copying from this node.
pub const STREAM_COPY_SERVED_BYTES: MetricDef = def(
    "eventstream_stream_copy_served_bytes_total",
    Counter,
    "bytes",
    &[],
    "Stream record bytes this node served to members copying from it, and to backups.",
    Cluster,
);
/// Copy attempts that failed.
pub const STREAM_COPY_FAILURES: MetricDef = def(
    "eventstream_stream_copy_failures_total",
    Counter,
    "attempts",
    &[],
    "Attempts to copy missing stream offsets from another member that failed (member unreachable, bad record); the copy is retried.",
    Cluster,
);
/// Size of the data volume.
pub const STORAGE_VOLUME_SIZE: MetricDef = def(
    "eventstream_storage_volume_size_bytes",
    Gauge,
    "bytes",
    &[],
    "Size of the volume this node's data directory is on (statvfs), in bytes; 0 if unknown.",
    Cluster,
);
/// Free space of the data volume.
pub const STORAGE_VOLUME_FREE: MetricDef = def(
    "eventstream_storage_volume_free_bytes",
    Gauge,
    "bytes",
    &[],
    "Bytes an unprivileged process can still write on the data directory's volume (statvfs f_bavail); 0 if unknown. The disk alerts use free / size.",
    Cluster,
);
/// Open Kafka-protocol connections.
pub const KAFKA_CONNECTIONS: MetricDef = def(
    "eventstream_kafka_connections",
    Gauge,
    "connections",
    &[],
    "Connections open now on this node's Kafka-protocol listener (0 without a listener).",
    Cluster,
);
/// Kafka requests decoded.
pub const KAFKA_REQUESTS: MetricDef = def(
    "eventstream_kafka_requests_total",
    Counter,
    "requests",
    &[],
    "Kafka-protocol requests this node's listener decoded.",
    Cluster,
);
/// Kafka connections closed for a bad request.
pub const KAFKA_PROTOCOL_ERRORS: MetricDef = def(
    "eventstream_kafka_protocol_errors_total",
    Counter,
    "connections",
    &[],
    "Kafka-protocol connections closed for a bad request: over kafka.max_request_bytes, malformed, or an API or version not offered.",
    Cluster,
);
/// Events produced over the Kafka protocol, by acknowledgement.
pub const KAFKA_PRODUCED_EVENTS: MetricDef = def(
    "eventstream_kafka_produced_events_total",
    Counter,
    "events",
    &["acks"],
    "Events produced over the Kafka protocol: acks=\"quorum\" acknowledged after commit and fsync (acks=all|1), acks=\"none\" admitted from acks=0 requests, never answered.",
    Cluster,
);
/// Kafka produce partitions refused.
pub const KAFKA_PRODUCE_ERRORS: MetricDef = def(
    "eventstream_kafka_produce_errors_total",
    Counter,
    "partitions",
    &[],
    "Partitions of Kafka produce requests answered with an error (not the leader, busy, timed out, bad records).",
    Cluster,
);
/// Events returned by Kafka fetches.
pub const KAFKA_FETCHED_EVENTS: MetricDef = def(
    "eventstream_kafka_fetched_events_total",
    Counter,
    "events",
    &[],
    "Events returned to Kafka consumers by fetches on this node.",
    Cluster,
);
/// Each consumer group's lag per topic.
pub const KAFKA_GROUP_LAG: MetricDef = def(
    "eventstream_kafka_group_lag_offsets",
    Gauge,
    "offsets",
    &["group", "topic"],
    "Offsets between a consumer group's committed offset and its topic's end (Kafka's lag; other topics' offsets in between count too). Emitted only by the leader, from the replicated committed offsets.",
    Cluster,
);
/// Connections closed for protocol errors.
pub const PROTOCOL_ERRORS: MetricDef = def(
    "eventstream_protocol_errors_total",
    Counter,
    "connections",
    &[],
    "Client and peer connections closed for a protocol error (malformed or truncated frame, failed TLS handshake).",
    Cluster,
);
/// Failed TLS handshakes.
pub const TLS_HANDSHAKE_FAILURES: MetricDef = def(
    "eventstream_tls_handshake_failures_total",
    Counter,
    "connections",
    &[],
    "TLS handshakes on the node's port that failed or timed out.",
    Cluster,
);
/// Network publish requests answered, by outcome.
pub const PUBLISH_REQUESTS: MetricDef = def(
    "eventstream_publish_requests_total",
    Counter,
    "requests",
    &["outcome"],
    "Network publish requests this node answered, by outcome (acked, rejected_inflight, rejected_rings, rejected_raft, timed_out, other_error).",
    Cluster,
);
/// Events of network publish requests answered, by outcome.
pub const PUBLISH_EVENTS: MetricDef = def(
    "eventstream_publish_events_total",
    Counter,
    "events",
    &["outcome"],
    "Events in the network publish requests this node answered, by the request's outcome (same outcomes as eventstream_publish_requests_total).",
    Cluster,
);
/// fsync duration of the raft log.
pub const RAFT_FSYNC_DURATION: MetricDef = def(
    "eventstream_raft_fsync_duration_seconds",
    Histogram,
    "seconds",
    &[],
    "Duration of each fsync of the raft log, in seconds.",
    Cluster,
);
/// Propose -> commit latency.
pub const RAFT_COMMIT_LATENCY: MetricDef = def(
    "eventstream_raft_commit_latency_seconds",
    Histogram,
    "seconds",
    &[],
    "Latency from propose to commit of each raft proposal, in seconds.",
    Cluster,
);

/// Every metric, in documentation order.
pub const ALL: &[MetricDef] = &[
    QUEUE_DEPTH,
    QUEUE_CAPACITY,
    QUEUE_PUSH,
    QUEUE_POP,
    QUEUE_FULL,
    EVENT_LATENCY,
    EVENTS_RECEIVED,
    EVENTS_ACCEPTED,
    EVENTS_PROCESSED,
    EVENTS_DROPPED,
    EVENTS_REJECTED,
    EVENTS_PRIORITY,
    DEDUP_HITS,
    DEDUP_MISSES,
    HANDLER_PANICS,
    HANDLER_ERRORS,
    WORKERS_ALIVE,
    WORKERS,
    BUILD_INFO,
    UPTIME,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_CPU,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_THREADS,
    PROCESS_START_TIME,
    HTTP_REQUESTS,
    HTTP_REQUEST_DURATION,
    HTTP_IN_FLIGHT,
    RAFT_STATE,
    RAFT_IS_LEADER,
    RAFT_HAS_LEADER,
    RAFT_STORAGE_FAILED,
    RAFT_NODE_ID,
    RAFT_TERM,
    RAFT_COMMIT_INDEX,
    RAFT_APPLIED_INDEX,
    RAFT_FIRST_INDEX,
    RAFT_LAST_INDEX,
    RAFT_LOG_BYTES,
    RAFT_MEMBERS,
    RAFT_LEARNERS,
    RAFT_PEERS_CONNECTED,
    RAFT_REPLICATION_LAG,
    RAFT_ELECTIONS,
    RAFT_LEADER_CHANGES,
    RAFT_PROPOSALS_COMMITTED,
    RAFT_PROPOSALS_APPLIED,
    RAFT_PROPOSALS_FAILED,
    RAFT_PROPOSALS_PENDING,
    RAFT_HEARTBEAT_SEND_FAILURES,
    RAFT_PEER_SEND_FAILURES,
    RAFT_SNAPSHOTS_SENT,
    RAFT_SNAPSHOTS_RECEIVED,
    RAFT_COMPACTIONS,
    RAFT_SNAPSHOT_SEND_FAILURES,
    RAFT_SNAPSHOT_DURATION,
    RAFT_FSYNC_DURATION,
    RAFT_COMMIT_LATENCY,
    STREAM_FIRST_OFFSET,
    STREAM_LAST_OFFSET,
    STREAM_SEGMENTS,
    STREAM_RETAINED_BYTES,
    STREAM_CACHE_BYTES,
    STREAM_READS,
    STREAM_INDEX_REBUILDS,
    STREAM_MISSING_EVENTS,
    STREAM_COPIED_BYTES,
    STREAM_COPY_SERVED_BYTES,
    STREAM_COPY_FAILURES,
    STORAGE_VOLUME_SIZE,
    STORAGE_VOLUME_FREE,
    KAFKA_CONNECTIONS,
    KAFKA_REQUESTS,
    KAFKA_PROTOCOL_ERRORS,
    KAFKA_PRODUCED_EVENTS,
    KAFKA_PRODUCE_ERRORS,
    KAFKA_FETCHED_EVENTS,
    KAFKA_GROUP_LAG,
    PROTOCOL_ERRORS,
    TLS_HANDSHAKE_FAILURES,
    PUBLISH_REQUESTS,
    PUBLISH_EVENTS,
];

/// The metrics of the EventStreamCore monitoring guide — the engine eventstream replaces — by
/// the name (or description) it gives them, mapped to the names exported, so dashboards and
/// alerts written for it can be carried over (`docs/metrics.md` prints the table).
pub const REPLACED_ENGINE_NAMES: &[(&str, &str)] = &[
    (
        "eventstream_queue_depth{queue}",
        "eventstream_queue_depth{queue}",
    ),
    (
        "eventstream_queue_capacity{queue}",
        "eventstream_queue_capacity{queue}",
    ),
    (
        "eventstream_queue_push_total{queue}",
        "eventstream_queue_push_total{queue}",
    ),
    (
        "eventstream_queue_pop_total{queue}",
        "eventstream_queue_pop_total{queue}",
    ),
    (
        "eventstream_queue_full_total{queue}",
        "eventstream_queue_full_total{queue}",
    ),
    (
        "event latency histogram (ns precision, unit in name)",
        "eventstream_event_latency_seconds",
    ),
    (
        "eventstream_events_received_total",
        "eventstream_events_received_total",
    ),
    (
        "eventstream_events_processed_total",
        "eventstream_events_processed_total",
    ),
    (
        "eventstream_events_dropped_total{reason}",
        "eventstream_events_dropped_total{reason}",
    ),
    (
        "events by priority (counter)",
        "eventstream_events_priority_total{priority}",
    ),
    (
        "eventstream_dedup_hits_total",
        "eventstream_dedup_hits_total",
    ),
    (
        "eventstream_dedup_misses_total",
        "eventstream_dedup_misses_total",
    ),
    ("handler panics", "eventstream_handler_panics_total"),
    ("handler errors", "eventstream_handler_errors_total"),
    (
        "build info",
        "eventstream_build_info{version,revision,rustc}",
    ),
    ("process resident memory", "process_resident_memory_bytes"),
    ("process CPU seconds", "process_cpu_seconds_total"),
    ("process open fds", "process_open_fds"),
    ("process threads", "process_threads"),
    (
        "HTTP requests by path and status",
        "eventstream_http_requests_total{path,method,status}",
    ),
    (
        "HTTP duration histogram",
        "eventstream_http_request_duration_seconds{path}",
    ),
    ("HTTP in-flight", "eventstream_http_requests_in_flight"),
    ("snapshots sent", "eventstream_raft_snapshots_sent_total"),
    (
        "snapshots received",
        "eventstream_raft_snapshots_received_total",
    ),
    (
        "snapshot duration",
        "eventstream_raft_snapshot_duration_seconds",
    ),
    ("compactions", "eventstream_raft_compactions_total"),
    ("log size in bytes", "eventstream_raft_log_bytes"),
    ("first offset", "eventstream_stream_first_offset"),
    ("last offset", "eventstream_stream_last_offset"),
    ("member count", "eventstream_raft_members"),
    ("learners", "eventstream_raft_learners"),
];

/// Label names Prometheus attaches to targets; emitting them would clash on scrape.
pub const FORBIDDEN_LABELS: [&str; 4] = ["job", "instance", "pod", "namespace"];

impl MetricGroup {
    /// Lower-case name used in the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricGroup::Engine => "engine",
            MetricGroup::Http => "http",
            MetricGroup::Process => "process",
            MetricGroup::Cluster => "cluster",
        }
    }
}

/// The catalog as a Markdown table (`docs/metrics.md` embeds it verbatim; a test checks).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| name | type | group | unit | labels | description |\n|---|---|---|---|---|---|\n",
    );
    for m in ALL {
        let labels = if m.labels.is_empty() {
            "–".to_owned()
        } else {
            m.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} |\n",
            m.name,
            m.kind.as_str(),
            m.group.as_str(),
            m.unit,
            labels,
            m.help.replace('|', "\\|")
        ));
    }
    out
}

/// Looks a metric up by exact name.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    ALL.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_prefixed_and_snake_case() {
        let mut seen = HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "duplicate metric {}", m.name);
            assert!(
                m.name.starts_with("eventstream_") || m.name.starts_with("process_"),
                "{}",
                m.name
            );
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty() && !m.unit.is_empty(), "{}", m.name);
            assert_eq!(find(m.name), Some(m));
        }
    }

    #[test]
    fn counters_and_only_counters_end_in_total() {
        for m in ALL {
            assert_eq!(
                m.kind == MetricKind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            for reserved in ["_bucket", "_count", "_sum"] {
                assert!(!m.name.ends_with(reserved), "{}", m.name);
            }
        }
    }

    #[test]
    fn base_units_are_in_the_name() {
        for m in ALL {
            if m.unit == "seconds" || m.unit == "bytes" {
                let stem = m.name.trim_end_matches("_total");
                assert!(
                    stem.ends_with(m.unit),
                    "{} should end in {}",
                    m.name,
                    m.unit
                );
            }
        }
    }

    #[test]
    fn no_target_or_reserved_labels() {
        for m in ALL {
            for l in m.labels {
                assert!(!FORBIDDEN_LABELS.contains(l), "{} has label {l}", m.name);
                assert!(*l != "le" && *l != "quantile", "{} has label {l}", m.name);
            }
        }
    }

    #[test]
    fn bucket_edges_increase_and_hold_alert_thresholds() {
        for edges in [
            &LATENCY_BUCKETS[..],
            &RAFT_BUCKETS[..],
            &HTTP_BUCKETS[..],
            &SNAPSHOT_BUCKETS[..],
        ] {
            assert!(edges.windows(2).all(|w| w[0] < w[1]));
        }
        for t in [1e-3, 100e-9, 10.0] {
            assert!(LATENCY_BUCKETS.contains(&t), "{t}");
        }
        for t in [1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0] {
            assert!(RAFT_BUCKETS.contains(&t), "{t}");
        }
        // The snapshot histogram spans 1 ms .. 60 s.
        assert_eq!(SNAPSHOT_BUCKETS.first(), Some(&1e-3));
        assert_eq!(SNAPSHOT_BUCKETS.last(), Some(&60.0));
    }

    #[test]
    fn replaced_engine_names_map_onto_catalog_names() {
        for (_, ours) in REPLACED_ENGINE_NAMES {
            let bare = ours.split('{').next().unwrap();
            assert!(find(bare).is_some(), "{ours} not in the catalog");
        }
    }
}
