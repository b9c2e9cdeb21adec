//! A `ReplicationSource` with a settable status, standing in for a raft node.

use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::new_latency_histogram;
use eventstream_core::replication::{
    ClusterStatus, GroupLag, MemberStatus, PublishOutcomes, RaftRole, ReplicationCounters,
    ReplicationHistograms, ReplicationSource, StreamStorage,
};
use std::sync::Mutex;

/// A fake node: status, histograms and readiness are whatever the test sets.
#[derive(Debug)]
pub struct FakeCluster {
    pub status: Mutex<ClusterStatus>,
    pub ready: Mutex<Result<(), String>>,
    pub fsync_ns: Mutex<Histogram<u64>>,
    pub commit_ns: Mutex<Histogram<u64>>,
    pub snapshot_ns: Mutex<Histogram<u64>>,
}

fn member(id: u64, leader: bool, lag: u64) -> MemberStatus {
    MemberStatus {
        id,
        address: format!("127.0.0.1:{}", 7000 + id),
        http_address: Some(format!("127.0.0.1:{}", 8000 + id)),
        learner: id == 4,
        is_leader: leader,
        connected: true,
        match_index: Some(1000 - lag),
        lag_entries: Some(lag),
    }
}

impl FakeCluster {
    /// Node 1 leading a 3-voter + 1-learner cluster, with some fsync/commit samples.
    pub fn leader() -> Self {
        let mut fsync = new_latency_histogram();
        let mut commit = new_latency_histogram();
        for i in 0..1000u64 {
            fsync.record(200_000 + i * 1_000).unwrap(); // 0.2 .. 1.2 ms
            commit.record(500_000 + i * 2_000).unwrap(); // 0.5 .. 2.5 ms
        }
        fsync.record(150_000_000).unwrap(); // one slow fsync: 150 ms
        let mut snapshot = new_latency_histogram();
        snapshot.record(3_000_000).unwrap(); // 3 ms
        snapshot.record(40_000_000_000).unwrap(); // 40 s
        FakeCluster {
            status: Mutex::new(ClusterStatus {
                node_id: 1,
                role: RaftRole::Leader,
                leader_id: Some(1),
                term: 7,
                commit_index: 1000,
                applied_index: 998,
                first_index: 1,
                last_index: 1000,
                log_bytes: 1 << 20,
                stream_first_offset: 500,
                stream_next_offset: 1500,
                stream: StreamStorage {
                    segments: 3,
                    retained_bytes: 150 << 20,
                    cache_bytes: 32 << 20,
                    cache_reads: 900,
                    disk_reads: 100,
                    index_rebuilds: 1,
                    missing_events: 0,
                    copied_bytes: 1 << 20,
                    copy_served_bytes: 2 << 20,
                    copy_failures: 2,
                    volume_total_bytes: 100 << 30,
                    volume_free_bytes: 40 << 30,
                },
                snapshot_max_ms: 40_000,
                proposals_pending: 2,
                peers_connected: 3,
                members: vec![
                    member(1, true, 0),
                    member(2, false, 3),
                    member(3, false, 250),
                    member(4, false, 10),
                ],
                counters: ReplicationCounters {
                    elections: 2,
                    leader_changes: 3,
                    proposals_committed: 1000,
                    proposals_applied: 998,
                    proposals_failed: 1,
                    heartbeat_send_failures: 4,
                    peer_send_failures: 5,
                    snapshots_sent: 1,
                    snapshots_received: 0,
                    compactions: 2,
                    snapshot_send_failures: 6,
                    protocol_errors: 7,
                    tls_handshake_failures: 3,
                    publishes: PublishOutcomes {
                        acked: [90, 900],
                        rejected_inflight: [2, 20],
                        rejected_rings: [1, 5],
                        rejected_raft: [0, 0],
                        timed_out: [1, 10],
                        other_errors: [4, 40],
                    },
                },
                storage_failure: None,
                kafka: None,
                groups: vec![GroupLag {
                    group: "billing \"eu\"".into(),
                    topic: "orders".into(),
                    partition: 0,
                    committed: 40,
                    end: 100,
                    lag: 60,
                    commit_unix_ms: 1_700_000_000_000,
                }],
                group_members: Vec::new(),
            }),
            ready: Mutex::new(Ok(())),
            fsync_ns: Mutex::new(fsync),
            commit_ns: Mutex::new(commit),
            snapshot_ns: Mutex::new(snapshot),
        }
    }
}

impl ReplicationSource for FakeCluster {
    fn status(&self) -> ClusterStatus {
        self.status.lock().unwrap().clone()
    }

    fn histograms(&self) -> ReplicationHistograms {
        ReplicationHistograms {
            fsync_ns: self.fsync_ns.lock().unwrap().clone(),
            commit_ns: self.commit_ns.lock().unwrap().clone(),
            snapshot_ns: self.snapshot_ns.lock().unwrap().clone(),
        }
    }

    fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap().clone()
    }
}
