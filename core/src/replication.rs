//! What a replicated node reports about itself: plain data, filled in by `eventstream-node`
//! and read by `eventstream-exporter`. It lives in core so that those two crates need not know
//! each other (dependency direction: core ← node, core ← exporter).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A raft role as seen by one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    /// Accepts proposals.
    Leader,
    /// Replicates from the leader (what a node is before it hears of one).
    #[default]
    Follower,
    /// Campaigning.
    Candidate,
    /// Pre-vote campaign (does not disturb the term).
    PreCandidate,
}

impl RaftRole {
    /// Every role, for `state` gauges that set exactly one to 1.
    pub const ALL: [RaftRole; 4] = [
        RaftRole::Leader,
        RaftRole::Follower,
        RaftRole::Candidate,
        RaftRole::PreCandidate,
    ];

    /// Label value (`leader`, `follower`, `candidate`, `pre_candidate`).
    pub fn as_str(self) -> &'static str {
        match self {
            RaftRole::Leader => "leader",
            RaftRole::Follower => "follower",
            RaftRole::Candidate => "candidate",
            RaftRole::PreCandidate => "pre_candidate",
        }
    }
}

/// One member of the cluster, as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Raft id.
    pub id: u64,
    /// Client/peer address.
    pub address: String,
    /// HTTP (metrics/API) address, if known.
    pub http_address: Option<String>,
    /// Voter or learner.
    pub learner: bool,
    /// Is this member the leader (as far as this node knows)?
    pub is_leader: bool,
    /// This node has a live connection to it (always true for itself).
    pub connected: bool,
    /// Leader's view of the member's matched log index (`None` on followers).
    pub match_index: Option<u64>,
    /// Leader's view of how many entries the member is behind (`None` on followers).
    pub lag_entries: Option<u64>,
}

/// Monotonic counters of one node's replication.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationCounters {
    /// Campaigns this node started.
    pub elections: u64,
    /// Times the known leader changed.
    pub leader_changes: u64,
    /// Proposals (entries) committed.
    pub proposals_committed: u64,
    /// Proposals applied.
    pub proposals_applied: u64,
    /// Proposals that failed (dropped, not leader, ...).
    pub proposals_failed: u64,
    /// Heartbeats that could not be sent.
    pub heartbeat_send_failures: u64,
    /// Peer messages that could not be sent.
    pub peer_send_failures: u64,
    /// Snapshots sent to followers.
    pub snapshots_sent: u64,
    /// Snapshots installed from a leader.
    pub snapshots_received: u64,
    /// Log compactions done.
    pub compactions: u64,
    /// Snapshots that could not be delivered to a follower (raft retries them).
    #[serde(default)]
    pub snapshot_send_failures: u64,
    /// Client/peer connections closed for a protocol error (bad frame, failed TLS handshake, ...).
    #[serde(default)]
    pub protocol_errors: u64,
    /// Failed TLS handshakes on the node's port (also counted in `protocol_errors`).
    #[serde(default)]
    pub tls_handshake_failures: u64,
    /// Network publish requests the node answered, by outcome.
    #[serde(default)]
    pub publishes: PublishOutcomes,
}

/// How a network publish request was answered (one request, one outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishOutcome {
    /// Acknowledged with offsets (committed).
    Acked,
    /// `Busy`: an in-flight limit was reached; nothing of the request was published.
    RejectedInflight,
    /// `Busy`: a tier ring was full (events before the full ring may have been published).
    RejectedRings,
    /// `Busy` / `Unavailable`: raft refused the proposal (uncommitted limit, no leader).
    RejectedRaft,
    /// `Timeout`: not committed in time (may still commit).
    TimedOut,
    /// Anything else: not leader, no leader, storage failed, shutting down, bad request.
    OtherError,
}

impl PublishOutcome {
    /// Every outcome, in the order of [`PublishOutcomes::by_outcome`].
    pub const ALL: [PublishOutcome; 6] = [
        PublishOutcome::Acked,
        PublishOutcome::RejectedInflight,
        PublishOutcome::RejectedRings,
        PublishOutcome::RejectedRaft,
        PublishOutcome::TimedOut,
        PublishOutcome::OtherError,
    ];

    /// This outcome's position in [`PublishOutcome::ALL`] (for arrays of per-outcome
    /// counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Label value (`acked`, `rejected_inflight`, `rejected_rings`, `rejected_raft`,
    /// `timed_out`, `other_error`).
    pub fn as_str(self) -> &'static str {
        match self {
            PublishOutcome::Acked => "acked",
            PublishOutcome::RejectedInflight => "rejected_inflight",
            PublishOutcome::RejectedRings => "rejected_rings",
            PublishOutcome::RejectedRaft => "rejected_raft",
            PublishOutcome::TimedOut => "timed_out",
            PublishOutcome::OtherError => "other_error",
        }
    }
}

/// Adds `[requests, events]` pairs.
fn add_pair(a: &mut [u64; 2], b: [u64; 2]) {
    a[0] += b[0];
    a[1] += b[1];
}

/// Network publish requests answered, by outcome, each as `[requests, events]`. Every
/// answered request is counted in exactly one outcome. The one record of publish outcomes: a
/// node's counters ([`PublishCounts`]), its exported status ([`ReplicationCounters`]) and a
/// client's tally (`bench overload`) all hold it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcomes {
    /// Acknowledged with offsets (committed).
    pub acked: [u64; 2],
    /// `Busy`: an in-flight limit was reached; nothing of the request was published.
    pub rejected_inflight: [u64; 2],
    /// `Busy`: a tier ring was full (events before the full ring may have been published).
    pub rejected_rings: [u64; 2],
    /// `Busy` / `Unavailable`: raft refused the proposal (uncommitted limit, no leader).
    pub rejected_raft: [u64; 2],
    /// `Timeout`: not committed in time (may still commit).
    pub timed_out: [u64; 2],
    /// Anything else: not leader, no leader, storage failed, shutting down, bad request.
    pub other_errors: [u64; 2],
}

impl PublishOutcomes {
    /// `[requests, events]` of `outcome`.
    pub fn get(&self, outcome: PublishOutcome) -> [u64; 2] {
        // A copy (96 bytes) keeps the outcome → field mapping in one place: `get_mut`.
        let mut copy = *self;
        *copy.get_mut(outcome)
    }

    /// `[requests, events]` of `outcome`, to change.
    pub fn get_mut(&mut self, outcome: PublishOutcome) -> &mut [u64; 2] {
        match outcome {
            PublishOutcome::Acked => &mut self.acked,
            PublishOutcome::RejectedInflight => &mut self.rejected_inflight,
            PublishOutcome::RejectedRings => &mut self.rejected_rings,
            PublishOutcome::RejectedRaft => &mut self.rejected_raft,
            PublishOutcome::TimedOut => &mut self.timed_out,
            PublishOutcome::OtherError => &mut self.other_errors,
        }
    }

    /// Counts one request of `events` events answered with `outcome`.
    pub fn count(&mut self, outcome: PublishOutcome, events: u64) {
        add_pair(self.get_mut(outcome), [1, events]);
    }

    /// Adds `other` outcome by outcome (the outcomes of several nodes or connections).
    pub fn add(&mut self, other: &PublishOutcomes) {
        for o in PublishOutcome::ALL {
            add_pair(self.get_mut(o), other.get(o));
        }
    }

    /// `[requests, events]` over every outcome: every answered request.
    pub fn total(&self) -> [u64; 2] {
        let mut t = [0; 2];
        for o in PublishOutcome::ALL {
            add_pair(&mut t, self.get(o));
        }
        t
    }

    /// Every outcome with its label value ([`PublishOutcome::as_str`]) and
    /// `[requests, events]`, in [`PublishOutcome::ALL`] order.
    pub fn by_outcome(&self) -> [(&'static str, [u64; 2]); 6] {
        PublishOutcome::ALL.map(|o| (o.as_str(), self.get(o)))
    }
}

/// Publish requests a node received and how it answered them: `requests` counts every
/// request once when it arrives, the outcome once when it is answered (so `requests` minus
/// `outcomes.total()` are waiting for their answer). Serialized flat: `requests` next to the
/// outcome fields (the `publishes` object of a node's status frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishCounts {
    /// Publish requests received.
    pub requests: [u64; 2],
    /// How the answered ones were answered.
    #[serde(flatten)]
    pub outcomes: PublishOutcomes,
}

impl PublishCounts {
    /// Adds `other` field by field (counters of several nodes).
    pub fn add(&mut self, other: &PublishCounts) {
        add_pair(&mut self.requests, other.requests);
        self.outcomes.add(&other.outcomes);
    }
}

/// A node's replication state at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This node's raft id.
    pub node_id: u64,
    /// This node's role.
    pub role: RaftRole,
    /// Known leader.
    pub leader_id: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Highest committed log index.
    pub commit_index: u64,
    /// Highest applied log index.
    pub applied_index: u64,
    /// First index still in the log (after compaction).
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Bytes the log takes on disk.
    pub log_bytes: u64,
    /// First stream offset still retained (after compaction).
    #[serde(default)]
    pub stream_first_offset: u64,
    /// Offset the next committed event will get; the last offset is `stream_next_offset - 1`
    /// when `stream_next_offset > stream_first_offset` (else the stream holds nothing).
    #[serde(default)]
    pub stream_next_offset: u64,
    /// Proposals waiting for commit.
    pub proposals_pending: u64,
    /// Peers this node has a live connection to.
    pub peers_connected: u64,
    /// Every member (including this node).
    pub members: Vec<MemberStatus>,
    /// Counters.
    pub counters: ReplicationCounters,
    /// The stream's storage: segment files, cache, copying, the data volume.
    #[serde(default)]
    pub stream: StreamStorage,
    /// Longest snapshot taken or installed since start, ms.
    #[serde(default)]
    pub snapshot_max_ms: u64,
    /// Why this node's log can no longer be written (full disk, failed fsync), if it cannot:
    /// such a node accepts no writes and is not ready until restarted on working storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_failure: Option<String>,
    /// The node's Kafka-protocol listener, if it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaListenerStats>,
    /// Every consumer group's committed offset per topic, and how far behind the topic's end
    /// it is (the replicated table: every node reports the same commits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupLag>,
    /// The consumer groups this node coordinates (the leader, with a Kafka listener): state
    /// and members. Membership is the coordinator's memory, not replicated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_members: Vec<GroupMembership>,
}

/// A consumer group as its coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupMembership {
    /// The group.
    pub group: String,
    /// Empty, PreparingRebalance, CompletingRebalance or Stable.
    pub state: String,
    /// The generation (grows with every completed rebalance).
    pub generation: i32,
    /// The protocol type (`consumer` for Kafka consumers).
    pub protocol_type: String,
    /// The assignment protocol the members agreed on (`range`, `roundrobin`, ...).
    pub protocol: String,
    /// The members, in join order.
    pub members: Vec<GroupMember>,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupMember {
    /// The id the coordinator gave it.
    pub member_id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
}

/// One consumer group's position in one topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupLag {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition (0: every topic has one).
    pub partition: i32,
    /// The committed offset: the next one the group reads.
    pub committed: i64,
    /// The topic's end: one past its last retained event (Kafka's log-end offset).
    pub end: u64,
    /// `end - committed` (0 when the group is at or past the end): what Kafka's tools call
    /// the lag. Stream offsets of other topics between them count too, so it is the offsets
    /// to pass, an upper bound on the group's events still to read.
    pub lag: u64,
    /// Stream time of the commit, ms since the epoch.
    pub commit_unix_ms: u64,
}

/// What a node's Kafka-protocol listener did since start (counters only grow, except
/// `open_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaListenerStats {
    /// Connections open now.
    pub open_connections: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Requests decoded.
    pub requests: u64,
    /// Connections closed for a bad request (oversized, malformed, unsupported).
    pub protocol_errors: u64,
    /// Events acknowledged to producers after their commit (`acks=all|1`).
    pub produced_events: u64,
    /// Events of `acks=0` produce requests admitted (never answered).
    pub unacknowledged_events: u64,
    /// Produce partitions refused (not leader, busy, bad records, ...).
    pub produce_errors: u64,
    /// Events returned by fetches.
    pub fetched_events: u64,
}

/// How a node stores its stream: segment files on disk, the memory cache in front of them,
/// offsets being copied from another member, and the volume the data directory is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamStorage {
    /// Segment files held (the backfill's included).
    pub segments: u64,
    /// Bytes of those files.
    pub retained_bytes: u64,
    /// Bytes of the newest batches held in memory.
    pub cache_bytes: u64,
    /// Subscriber reads served from the memory cache (monotonic).
    pub cache_reads: u64,
    /// Subscriber reads that went to the segment files (monotonic).
    pub disk_reads: u64,
    /// Sealed segments whose index had to be rebuilt by scanning at start-up (missing or
    /// stale checkpoint: a crash, or a segment sealed by an older build).
    pub index_rebuilds: u64,
    /// Offsets this node lacks below its log (a snapshot took it past them) and is copying
    /// from another member; 0 when the stream is whole.
    pub missing_events: u64,
    /// Record bytes copied from other members (monotonic).
    pub copied_bytes: u64,
    /// Record bytes served to members copying from this node, and to backups (monotonic).
    pub copy_served_bytes: u64,
    /// Copy attempts that failed (member unreachable, bad record) (monotonic).
    pub copy_failures: u64,
    /// Size of the volume the data directory is on, bytes (0 if unknown).
    pub volume_total_bytes: u64,
    /// Bytes an unprivileged process can still write there (0 if unknown).
    pub volume_free_bytes: u64,
}

/// Latency histograms of one node's replication, in nanoseconds.
#[derive(Debug, Clone)]
pub struct ReplicationHistograms {
    /// Duration of each fsync of the log.
    pub fsync_ns: Histogram<u64>,
    /// Propose → commit latency of each proposal.
    pub commit_ns: Histogram<u64>,
    /// Duration of taking (compaction, backup) or installing each snapshot.
    pub snapshot_ns: Histogram<u64>,
}

/// Implemented by a replicated node; read by exporters. Calls must be cheap and never block
/// the node's driver loop for long.
pub trait ReplicationSource: Send + Sync + 'static {
    /// The node's state now.
    fn status(&self) -> ClusterStatus;
    /// The node's histograms since start.
    fn histograms(&self) -> ReplicationHistograms;
    /// Ready to serve: has a leader and is caught up (applied close to commit).
    fn ready(&self) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_outcomes_add_total_and_labels() {
        let mut a = PublishOutcomes::default();
        a.count(PublishOutcome::Acked, 10);
        a.count(PublishOutcome::OtherError, 3);
        let mut b = a;
        b.count(PublishOutcome::TimedOut, 5);
        a.add(&b);
        assert_eq!(a.acked, [2, 20]);
        assert_eq!(a.other_errors, [2, 6]);
        assert_eq!(a.timed_out, [1, 5]);
        assert_eq!(a.total(), [5, 31]);
        let labels: Vec<_> = a.by_outcome().iter().map(|(l, _)| *l).collect();
        assert_eq!(
            labels,
            [
                "acked",
                "rejected_inflight",
                "rejected_rings",
                "rejected_raft",
                "timed_out",
                "other_error"
            ]
        );
        assert_eq!(a.by_outcome()[4], ("timed_out", [1, 5]));
        for (i, o) in PublishOutcome::ALL.into_iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }

    #[test]
    fn publish_counts_serialize_flat() {
        let mut c = PublishCounts {
            requests: [3, 30],
            ..PublishCounts::default()
        };
        c.outcomes.count(PublishOutcome::RejectedInflight, 10);
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(v["requests"], serde_json::json!([3, 30]));
        assert_eq!(v["rejected_inflight"], serde_json::json!([1, 10]));
        assert_eq!(v["other_errors"], serde_json::json!([0, 0]));
        assert!(v.get("outcomes").is_none(), "{v}");
        let back: PublishCounts = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let mut sum = c;
        sum.add(&c);
        assert_eq!(
            (sum.requests, sum.outcomes.rejected_inflight),
            ([6, 60], [2, 20])
        );
    }
}
