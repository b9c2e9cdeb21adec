//! What a replicated node reports about itself: plain data, filled in by `eventstream-cluster`
//! and read by `eventstream-exporter`. It lives in core so that those two crates need not know
//! each other (dependency direction: core ← cluster, core ← exporter).

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

/// Network publish requests a node answered, by outcome, each as `[requests, events]`. Every
/// answered request is counted in exactly one outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOutcomes {
    /// Acknowledged with offsets (committed).
    pub acked: [u64; 2],
    /// `Busy`: an in-flight limit was reached; nothing of the request was published.
    pub rejected_inflight: [u64; 2],
    /// `Busy`: a tier ring was full.
    pub rejected_rings: [u64; 2],
    /// `Busy` / `Unavailable`: raft refused the proposal.
    pub rejected_raft: [u64; 2],
    /// `Timeout`: not committed in time (may still commit).
    pub timed_out: [u64; 2],
    /// Anything else: not leader, no leader, storage failed, shutting down, bad request.
    pub other_errors: [u64; 2],
}

impl PublishOutcomes {
    /// Every outcome with its label value (`acked`, `rejected_inflight`, `rejected_rings`,
    /// `rejected_raft`, `timed_out`, `other_error`) and `[requests, events]`.
    pub fn by_outcome(&self) -> [(&'static str, [u64; 2]); 6] {
        [
            ("acked", self.acked),
            ("rejected_inflight", self.rejected_inflight),
            ("rejected_rings", self.rejected_rings),
            ("rejected_raft", self.rejected_raft),
            ("timed_out", self.timed_out),
            ("other_error", self.other_errors),
        ]
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
    /// Why this node's log can no longer be written (full disk, failed fsync), if it cannot:
    /// such a node accepts no writes and is not ready until restarted on working storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_failure: Option<String>,
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
