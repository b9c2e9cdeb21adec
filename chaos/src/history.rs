//! What a chaos run observed. Times are milliseconds since the run started (one monotonic
//! clock in the harness process).
//!
//! Invariants the recorder keeps: every publish attempted has exactly one [`PublishRecord`]
//! (its outcome is known when the client call returns); consumer deliveries are recorded in
//! the order they were received, exactly as the node sent them (no client-side filtering, so
//! the checker sees what the server did); a [`FinalRead`] is one node's whole stream read from
//! offset 0 after every fault was healed and producers stopped.

use serde::{Deserialize, Serialize};

/// The acknowledged offset of a duplicate whose original offset the node no longer remembers
/// (the protocol's `OFFSET_UNKNOWN`).
pub use eventstream_proto::frame::OFFSET_UNKNOWN;

/// The kinds of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` the current leader; restart it when the fault is healed.
    KillLeader,
    /// `kill -9` one follower; restart it when the fault is healed.
    KillFollower,
    /// `SIGSTOP` one node (leader or follower, chosen by the seed); `SIGCONT` to heal.
    Pause,
    /// Cut every link between a random minority and the rest (both directions).
    PartitionMinority,
    /// Cut every link between the current leader and the rest (both directions).
    PartitionLeader,
    /// `kill -9` every node, then restart them all.
    RestartAll,
}

impl FaultKind {
    /// Every kind, in the nemesis' base order.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::Pause,
        FaultKind::PartitionMinority,
        FaultKind::PartitionLeader,
        FaultKind::RestartAll,
    ];

    /// The snake_case name used in JSON and logs.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillFollower => "kill_follower",
            FaultKind::Pause => "pause",
            FaultKind::PartitionMinority => "partition_minority",
            FaultKind::PartitionLeader => "partition_leader",
            FaultKind::RestartAll => "restart_all",
        }
    }
}

/// How a publish ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PublishOutcome {
    /// Committed; the node answered with this stream offset.
    Acked {
        /// The offset, or [`OFFSET_UNKNOWN`].
        offset: u64,
    },
    /// The client gave up (after its retries, which resend the same id): indeterminate — the
    /// event may or may not have been stored, but at most once.
    Failed {
        /// The client's last error.
        error: String,
    },
}

/// One publish of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRecord {
    /// Event id (unique per run).
    pub id: u64,
    /// Producer index.
    pub producer: u32,
    /// When the client call started.
    pub invoked_ms: u64,
    /// When it returned.
    pub completed_ms: u64,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: PublishOutcome,
}

/// One event as a node served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Stream offset.
    pub offset: u64,
    /// Event id.
    pub id: u64,
}

/// Everything one consumer received, in order. A consumer subscribes to one node from offset
/// 0 and, after a lost connection, resubscribes to the same node from its last offset + 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerLog {
    /// Consumer index.
    pub consumer: u32,
    /// The node it reads from.
    pub node: u64,
    /// Events in the order received.
    pub deliveries: Vec<Delivery>,
    /// Subscriptions opened after the first (lost connections).
    pub reconnects: u32,
}

/// One node's stream, read from offset 0 after healing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalRead {
    /// The node.
    pub node: u64,
    /// Its events in the order served.
    pub events: Vec<Delivery>,
    /// Set when the read could not complete (the node never answered, ...).
    pub error: Option<String>,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Cycle number, from 0.
    pub cycle: u32,
    /// What was done.
    pub kind: FaultKind,
    /// The nodes it was done to (for partitions: the isolated side).
    pub targets: Vec<u64>,
    /// The leader just before the fault.
    pub leader_before: Option<u64>,
    /// When it was injected.
    pub injected_ms: u64,
    /// The leader the surviving side (every node the fault did not touch) agreed on while
    /// the fault was held, and when (`None`: none within the hold, or no surviving side, as
    /// for `restart_all`). Shows how fast the cluster itself failed over, next to what clients
    /// saw.
    #[serde(default)]
    pub survivors_leader: Option<(u64, u64)>,
    /// When it was healed (processes restarted / continued, links restored).
    pub healed_ms: u64,
    /// When every node again followed one leader (`None`: not within the recovery timeout).
    pub recovered_ms: Option<u64>,
    /// When producers got their first acknowledgement after `recovered_ms` (client-visible
    /// recovery; `None`: not within the recovery timeout). The next fault waits for it, so
    /// faults do not pile up on a cluster whose clients have not reconnected yet.
    #[serde(default)]
    pub first_ack_ms: Option<u64>,
}

/// A whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Cluster size.
    pub nodes: usize,
    /// The seed of the nemesis.
    pub seed: u64,
    /// Wall-clock time of the run's time origin (ms since the Unix epoch), to line the history
    /// up with node logs.
    pub started_unix_ms: u64,
    /// Every publish.
    pub publishes: Vec<PublishRecord>,
    /// Every consumer's deliveries.
    pub consumers: Vec<ConsumerLog>,
    /// Every node's stream after healing.
    pub final_reads: Vec<FinalRead>,
    /// Every fault.
    pub faults: Vec<FaultRecord>,
}
