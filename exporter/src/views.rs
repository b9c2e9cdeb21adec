//! JSON bodies of the HTTP API, built from a [`Published`] view.
//!
//! Field names are part of the API (see `docs/http-api.md`); add fields, never rename.

use crate::catalog::LATENCY_BUCKETS;
use crate::config::BuildInfo;
use crate::process::ProcessSample;
use crate::telemetry::{HistoryPoint, Published, Throughput};
use eventstream_core::replication::{ClusterStatus, GroupLag, ReplicationCounters, StreamStorage};
use eventstream_core::{LatencySummary, Priority, WorkerStatus};
use serde::Serialize;

/// `GET /api/v1/metrics/current`.
#[derive(Debug, Clone, Serialize)]
pub struct CurrentMetrics {
    /// When the underlying snapshot was taken (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Engine uptime.
    pub uptime_seconds: f64,
    /// Engine running (between start and shutdown).
    pub running: bool,
    /// Build information.
    pub build: BuildInfo,
    /// Event rates.
    pub throughput: Throughput,
    /// Event totals since start.
    pub totals: Totals,
    /// Latency percentiles and distribution.
    pub latency: LatencyView,
    /// One entry per tier, in drain order.
    pub tiers: Vec<TierView>,
    /// Drops and hand-backs.
    pub drops: DropsView,
    /// Dedup counters.
    pub dedup: DedupView,
    /// Events taken from the rings by priority.
    pub priorities: PrioritiesView,
    /// Worker liveness.
    pub workers: WorkersView,
    /// Process resources.
    pub process: ProcessView,
    /// One point a second, oldest first.
    pub history: Vec<HistoryPoint>,
}

/// Totals since start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Totals {
    /// Offered to publish.
    pub received: u64,
    /// Enqueued.
    pub accepted: u64,
    /// Dispatched to handlers.
    pub processed: u64,
    /// Accepted, not yet processed, deduplicated or dropped.
    pub in_flight: u64,
    /// Handler calls that panicked.
    pub handler_panics: u64,
    /// Handler calls that returned an error.
    pub handler_errors: u64,
}

/// Latency since start and over the most recent window.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyView {
    /// Percentiles since start (ns).
    pub since_start: LatencySummary,
    /// Percentiles over the last window (ns).
    pub recent: LatencySummary,
    /// Length of that window (s).
    pub recent_window_seconds: f64,
    /// Per-bucket (non-cumulative) counts on the Prometheus bucket edges, `+Inf` last.
    pub buckets: Vec<BucketView>,
}

/// One latency bucket.
#[derive(Debug, Clone, Serialize)]
pub struct BucketView {
    /// Upper edge in seconds as in `le` (`"+Inf"` for the last).
    pub le: String,
    /// Events in this bucket since start.
    pub since_start: u64,
    /// Events in this bucket in the recent window.
    pub recent: u64,
}

/// One tier.
#[derive(Debug, Clone, Serialize)]
pub struct TierView {
    /// `realtime`, `transactional`, `batch`.
    pub name: &'static str,
    /// Slots (all lanes).
    pub capacity: u64,
    /// Waiting now.
    pub depth: u64,
    /// `depth / capacity`.
    pub fill_ratio: f64,
    /// Ever pushed.
    pub pushed: u64,
    /// Ever popped.
    pub popped: u64,
    /// Publishes that found it full.
    pub full: u64,
    /// Dropped by `DropNewest`.
    pub dropped: u64,
    /// Handed back to publishers.
    pub rejected: u64,
}

/// Drops by reason plus hand-backs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DropsView {
    /// `DropNewest` tier full.
    pub queue_full: u64,
    /// Queued at hard stop.
    pub hard_stop: u64,
    /// Sum of the reasons.
    pub total: u64,
    /// Handed back to the publisher (not dropped: the caller got the event back).
    pub rejected: u64,
    /// Drops per second over the last 10 s.
    pub per_sec_10s: f64,
}

/// Dedup counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DedupView {
    /// Duplicates caught.
    pub hits: u64,
    /// Fresh events.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 when nothing was checked.
    pub hit_ratio: f64,
}

/// Events by priority.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PrioritiesView {
    /// Critical.
    pub critical: u64,
    /// High.
    pub high: u64,
    /// Medium.
    pub medium: u64,
    /// Low.
    pub low: u64,
}

/// Worker liveness.
#[derive(Debug, Clone, Serialize)]
pub struct WorkersView {
    /// Registered workers and appliers.
    pub total: usize,
    /// Still running.
    pub alive: usize,
    /// Each one.
    pub list: Vec<WorkerStatus>,
}

/// Process resources.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessView {
    /// RSS bytes.
    pub resident_memory_bytes: Option<u64>,
    /// CPU seconds.
    pub cpu_seconds: Option<f64>,
    /// Open fds.
    pub open_fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
}

impl From<ProcessSample> for ProcessView {
    fn from(p: ProcessSample) -> Self {
        ProcessView {
            resident_memory_bytes: p.resident_memory_bytes,
            cpu_seconds: p.cpu_seconds,
            open_fds: p.open_fds,
            threads: p.threads,
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl CurrentMetrics {
    /// Builds the view.
    pub fn of(p: &Published, build: &BuildInfo) -> Self {
        let s = &p.stats;
        let since = p.latency.per_bucket();
        let recent = p.recent.buckets.per_bucket();
        let buckets = LATENCY_BUCKETS
            .iter()
            .map(|e| e.to_string())
            .chain(std::iter::once("+Inf".to_owned()))
            .zip(since.into_iter().zip(recent))
            .map(|(le, (since_start, recent))| BucketView {
                le,
                since_start,
                recent,
            })
            .collect();
        CurrentMetrics {
            timestamp_ms: p.taken_at_ms,
            uptime_seconds: s.uptime.as_secs_f64(),
            running: s.running,
            build: build.clone(),
            throughput: p.throughput,
            totals: Totals {
                received: s.received,
                accepted: s.accepted,
                processed: s.processed,
                in_flight: s.in_flight(),
                handler_panics: s.handler_panics,
                handler_errors: s.handler_errors,
            },
            latency: LatencyView {
                since_start: s.latency,
                recent: p.recent.summary,
                recent_window_seconds: p.recent.window_seconds,
                buckets,
            },
            tiers: s
                .tiers
                .iter()
                .map(|t| TierView {
                    name: t.tier.as_str(),
                    capacity: t.capacity,
                    depth: t.depth,
                    fill_ratio: ratio(t.depth, t.capacity),
                    pushed: t.pushed,
                    popped: t.popped,
                    full: t.full,
                    dropped: t.dropped,
                    rejected: t.rejected,
                })
                .collect(),
            drops: DropsView {
                queue_full: s.dropped.queue_full,
                hard_stop: s.dropped.hard_stop,
                total: s.dropped.total(),
                rejected: s.rejected,
                per_sec_10s: p.throughput.dropped_per_sec_10s,
            },
            dedup: DedupView {
                hits: s.dedup_hits,
                misses: s.dedup_misses,
                hit_ratio: ratio(s.dedup_hits, s.dedup_hits + s.dedup_misses),
            },
            priorities: PrioritiesView {
                critical: s.priority(Priority::Critical),
                high: s.priority(Priority::High),
                medium: s.priority(Priority::Medium),
                low: s.priority(Priority::Low),
            },
            workers: WorkersView {
                total: s.workers.len(),
                alive: s.workers.iter().filter(|w| w.alive).count(),
                list: s.workers.clone(),
            },
            process: p.process.into(),
            history: p.history.clone(),
        }
    }
}

/// `GET /api/v1/cluster/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    /// `standalone` (no replication attached) or `replicated`.
    pub mode: &'static str,
    /// This node as the exporter sees it.
    pub node: NodeView,
    /// Replication state (absent when standalone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftView>,
    /// Every member, this node included; empty when standalone.
    pub members: Vec<eventstream_core::replication::MemberStatus>,
}

/// This node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Address the HTTP API listens on.
    pub http_address: String,
    /// Engine running.
    pub running: bool,
    /// Liveness (see `/health`).
    pub healthy: bool,
    /// Readiness (see `/ready`).
    pub ready: bool,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
    /// Engine uptime.
    pub uptime_seconds: f64,
    /// Build information.
    pub build: BuildInfo,
}

/// Replication state of this node.
#[derive(Debug, Clone, Serialize)]
pub struct RaftView {
    /// Raft id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `pre_candidate`.
    pub role: eventstream_core::replication::RaftRole,
    /// Known leader.
    pub leader_id: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Highest committed index.
    pub commit_index: u64,
    /// Highest applied index.
    pub applied_index: u64,
    /// `commit_index - applied_index`.
    pub apply_lag: u64,
    /// First log index.
    pub first_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Log bytes on disk.
    pub log_bytes: u64,
    /// First offset still retained in the committed stream.
    pub stream_first_offset: u64,
    /// Offset of the last event committed to the stream (`null` before the first).
    pub stream_last_offset: Option<u64>,
    /// Proposals waiting for commit.
    pub proposals_pending: u64,
    /// Live peer connections.
    pub peers_connected: u64,
    /// Counters.
    pub counters: ReplicationCounters,
    /// The stream's storage: segment files, cache, offsets being copied, the data volume.
    pub stream: StreamStorage,
    /// Consumer groups' committed offsets and lag per topic.
    pub groups: Vec<GroupLag>,
}

impl RaftView {
    /// Builds the view of a status.
    pub fn of(s: &ClusterStatus) -> Self {
        RaftView {
            node_id: s.node_id,
            role: s.role,
            leader_id: s.leader_id,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            apply_lag: s.commit_index.saturating_sub(s.applied_index),
            first_index: s.first_index,
            last_index: s.last_index,
            log_bytes: s.log_bytes,
            stream_first_offset: s.stream_first_offset,
            stream_last_offset: s.stream_next_offset.checked_sub(1),
            proposals_pending: s.proposals_pending,
            peers_connected: s.peers_connected,
            counters: s.counters,
            stream: s.stream,
            groups: s.groups.clone(),
        }
    }
}

/// Body of `/health` and `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `ok` or `fail`.
    pub status: &'static str,
    /// Why it failed (absent when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every check that was made, by name.
    pub checks: Vec<Check>,
}

/// One named check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Name.
    pub name: &'static str,
    /// Passed.
    pub ok: bool,
    /// Details.
    pub detail: String,
}

impl CheckReport {
    /// Combines checks: ok iff all are; the reason lists the failures.
    pub fn of(checks: Vec<Check>) -> Self {
        let failures: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        CheckReport {
            status: if failures.is_empty() { "ok" } else { "fail" },
            reason: (!failures.is_empty()).then(|| failures.join("; ")),
            checks,
        }
    }

    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}
