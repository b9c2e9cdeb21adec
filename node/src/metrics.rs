//! What a node reports about its replication: counters (atomics, updated by the driver once
//! per loop iteration or per event class), histograms, and a status snapshot the driver
//! refreshes a few times a second. Implements core's [`ReplicationSource`] via
//! [`NodeMetrics`], which exporters read; nothing here blocks the driver for long.

use eventstream_core::hdrhistogram::Histogram;
use eventstream_core::replication::{
    ClusterStatus, GroupLag, GroupMembership, KafkaListenerStats, PublishCounts, PublishOutcome,
    RaftRole, ReplicationCounters, ReplicationHistograms, ReplicationSource, StreamStorage,
};
use eventstream_proto::Member;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Largest gap (entries) between this node's applied index and its own or the leader's commit
/// index at which it still reports ready.
pub const READY_MAX_APPLY_LAG: u64 = 10_000;

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant figures.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("static histogram bounds")
}

/// Publish requests (and their events) this node received and how each was answered: the
/// atomic twin of [`PublishCounts`], updated by the server's connection tasks. Every request is
/// counted once in `requests` when it arrives and once in exactly one outcome when it is
/// answered.
#[derive(Debug, Default)]
pub struct PublishCounters {
    requests: [AtomicU64; 2],
    /// `[requests, events]` per outcome, at [`PublishOutcome::index`].
    outcomes: [[AtomicU64; 2]; PublishOutcome::ALL.len()],
}

impl PublishCounters {
    fn add(c: &[AtomicU64; 2], events: usize) {
        c[0].fetch_add(1, Ordering::Relaxed);
        c[1].fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Counts a publish request of `events` events as it arrives.
    pub(crate) fn received(&self, events: usize) {
        Self::add(&self.requests, events);
    }

    /// Counts the answer to a publish request of `events` events.
    pub(crate) fn answered(&self, outcome: PublishOutcome, events: usize) {
        Self::add(&self.outcomes[outcome.index()], events);
    }

    /// The counters now.
    pub fn snapshot(&self) -> PublishCounts {
        let l = |c: &[AtomicU64; 2]| [c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed)];
        let mut s = PublishCounts {
            requests: l(&self.requests),
            ..PublishCounts::default()
        };
        for o in PublishOutcome::ALL {
            *s.outcomes.get_mut(o) = l(&self.outcomes[o.index()]);
        }
        s
    }
}

/// Shared replication state of one node.
#[derive(Debug)]
pub struct NodeMetrics {
    pub(crate) elections: AtomicU64,
    pub(crate) leader_changes: AtomicU64,
    pub(crate) proposals_committed: AtomicU64,
    pub(crate) proposals_applied: AtomicU64,
    pub(crate) proposals_failed: AtomicU64,
    pub(crate) heartbeat_send_failures: AtomicU64,
    pub(crate) peer_send_failures: AtomicU64,
    /// Snapshots written to a follower's connection.
    pub(crate) snapshots_sent: AtomicU64,
    /// Snapshots that could not be sent (reported to raft as failures; raft retries).
    pub(crate) snapshot_send_failures: AtomicU64,
    /// Leader snapshots installed.
    pub(crate) snapshots_received: AtomicU64,
    /// Local compactions (snapshot + log truncation).
    pub(crate) compactions: AtomicU64,
    /// First retained stream offset (refreshed with the status).
    pub(crate) stream_first_offset: AtomicU64,
    /// Next stream offset = last offset + 1 (refreshed with the status).
    pub(crate) stream_next_offset: AtomicU64,
    /// Connections the server closed for protocol errors (the server holds the same counter).
    pub(crate) protocol_errors: Arc<AtomicU64>,
    /// Failed TLS handshakes (the server holds the same counter).
    pub(crate) tls_handshake_failures: Arc<AtomicU64>,
    /// Publish outcomes (the server holds the same counters).
    pub(crate) publishes: Arc<PublishCounters>,
    /// Durations of taking (compaction, backup) and installing snapshots.
    snapshot_ns: Mutex<Histogram<u64>>,
    fsync: Mutex<Histogram<u64>>,
    commit: Mutex<Histogram<u64>>,
    status: Mutex<ClusterStatus>,
    /// Peers (every member but this node) and whether the transport holds a connection.
    /// Rebuilt when the membership changes; read on every send, written only then.
    connected: RwLock<Vec<(u64, AtomicBool)>>,
    pub(crate) leader: AtomicU64,
    /// Highest commit index a leader has announced to this node.
    pub(crate) leader_commit: AtomicU64,
    pub(crate) is_leader: AtomicBool,
    /// The term this node leads in (0 when it does not).
    pub(crate) leader_term: AtomicU64,
    /// True once this leader applied every entry committed before its term (false otherwise).
    pub(crate) leader_caught_up: AtomicBool,
    /// Highest log index raft counts as persisted on this node (refreshed with the status).
    pub(crate) persisted_index: AtomicU64,
    /// Why the log can no longer be written (set once, by the driver or the WAL thread).
    storage_failure: Mutex<Option<String>>,
    storage_failed: AtomicBool,
    /// The current member table (configuration, then whatever conf changes the log applied).
    members: RwLock<Vec<Member>>,
    /// Ids of the members that are learners (non-voting).
    learners: RwLock<Vec<u64>>,
    /// The configured `peers` (a joining node hears from members its log has not added yet).
    configured: Vec<Member>,
    id: u64,
    /// The stream and its copy counters, read for the status' [`StreamStorage`].
    stream: std::sync::OnceLock<StreamProbe>,
    /// Reads the Kafka listener's counters, once one is attached.
    kafka: std::sync::OnceLock<KafkaProbe>,
    /// Consumer groups' committed offsets (the state machine's table).
    groups: std::sync::OnceLock<Arc<crate::groups::GroupOffsets>>,
    /// The Kafka listener's coordinator: the groups' members.
    group_members: std::sync::OnceLock<GroupMembersProbe>,
}

/// Reads a front end's counters for the status (the node does not know the listener).
struct KafkaProbe(Box<dyn Fn() -> KafkaListenerStats + Send + Sync>);

impl std::fmt::Debug for KafkaProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaProbe")
    }
}

/// Where the status reads consumer groups' members from (a Kafka listener's coordinator).
struct GroupMembersProbe(Box<dyn Fn() -> Vec<GroupMembership> + Send + Sync>);

impl std::fmt::Debug for GroupMembersProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupMembersProbe")
    }
}

/// Where the status reads the stream's storage from.
#[derive(Debug)]
struct StreamProbe {
    stream: Arc<crate::stream::CommittedStream>,
    copies: Arc<crate::copy::CopyCounters>,
    data_dir: std::path::PathBuf,
}

impl StreamProbe {
    /// Each committed offset of `groups`, with its topic's end and the lag to it.
    fn group_lags(&self, groups: &crate::groups::GroupOffsets) -> Vec<GroupLag> {
        let commits = groups.export();
        if commits.is_empty() {
            return Vec::new();
        }
        let topics = self.stream.topics().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing topics for consumer-group lag");
            Vec::new()
        });
        // A topic without retained events ends where the retained stream starts.
        let empty_end = self.stream.first_offset();
        commits
            .into_iter()
            .map(|c| {
                let end = topics
                    .iter()
                    .find(|t| t.name == c.topic.as_str())
                    .map_or(empty_end, |t| t.last_offset + 1);
                GroupLag {
                    lag: end.saturating_sub(c.offset.max(0) as u64),
                    group: c.group,
                    topic: c.topic,
                    partition: c.partition,
                    committed: c.offset,
                    end,
                    commit_unix_ms: c.commit_unix_ms,
                }
            })
            .collect()
    }

    fn storage(&self) -> StreamStorage {
        let mut s = self.stream.storage();
        let c = &self.copies;
        s.copied_bytes = c.bytes.load(Ordering::Relaxed);
        s.copy_served_bytes = c.served_bytes.load(Ordering::Relaxed);
        s.copy_failures = c.failures.load(Ordering::Relaxed);
        if let Some((total, free)) = volume_of(&self.data_dir) {
            (s.volume_total_bytes, s.volume_free_bytes) = (total, free);
        }
        s
    }
}

/// Size and space available to unprivileged writers of the file system holding `dir`.
fn volume_of(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `st` points to
    // writable memory of the size `statvfs` fills; it is read only after a 0 return, when the
    // call has initialised it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `statvfs` returned 0, so it wrote the whole struct.
    let st = unsafe { st.assume_init() };
    Some((st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize))
}

impl NodeMetrics {
    /// Metrics of node `id` in a cluster of `members`.
    pub fn new(id: u64, members: Vec<Member>) -> Self {
        let status = ClusterStatus {
            node_id: id,
            role: RaftRole::Follower,
            leader_id: None,
            term: 0,
            commit_index: 0,
            applied_index: 0,
            first_index: 0,
            last_index: 0,
            log_bytes: 0,
            stream_first_offset: 0,
            stream_next_offset: 0,
            proposals_pending: 0,
            peers_connected: 0,
            members: Vec::new(),
            counters: ReplicationCounters::default(),
            stream: Default::default(),
            snapshot_max_ms: 0,
            storage_failure: None,
            kafka: None,
            groups: Vec::new(),
            group_members: Vec::new(),
        };
        NodeMetrics {
            elections: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            proposals_committed: AtomicU64::new(0),
            proposals_applied: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            heartbeat_send_failures: AtomicU64::new(0),
            peer_send_failures: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshot_send_failures: AtomicU64::new(0),
            snapshots_received: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            stream_first_offset: AtomicU64::new(0),
            stream_next_offset: AtomicU64::new(0),
            protocol_errors: Default::default(),
            tls_handshake_failures: Default::default(),
            publishes: Default::default(),
            snapshot_ns: Mutex::new(new_hist()),
            fsync: Mutex::new(new_hist()),
            commit: Mutex::new(new_hist()),
            status: Mutex::new(status),
            connected: RwLock::new(
                members
                    .iter()
                    .filter(|m| m.id != id)
                    .map(|m| (m.id, AtomicBool::new(false)))
                    .collect(),
            ),
            leader: AtomicU64::new(0),
            leader_commit: AtomicU64::new(0),
            is_leader: AtomicBool::new(false),
            leader_term: AtomicU64::new(0),
            leader_caught_up: AtomicBool::new(false),
            persisted_index: AtomicU64::new(0),
            storage_failure: Mutex::new(None),
            storage_failed: AtomicBool::new(false),
            configured: members.clone(),
            stream: std::sync::OnceLock::new(),
            kafka: std::sync::OnceLock::new(),
            groups: std::sync::OnceLock::new(),
            group_members: std::sync::OnceLock::new(),
            members: RwLock::new(members),
            learners: RwLock::new(Vec::new()),
            id,
        }
    }

    /// The current members (voters and learners), ordered by id. Starts as the configured
    /// `peers` and follows every membership change this node applies.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ids of the current learners.
    pub fn learners(&self) -> Vec<u64> {
        self.learners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The member with raft id `id`: from the member table, else from the configured `peers`
    /// (a joining node knows the current leader from its configuration before its log does).
    pub fn member(&self, id: u64) -> Option<Member> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|m| m.id == id)
            .or_else(|| self.configured.iter().find(|m| m.id == id))
            .cloned()
    }

    /// Replaces the member table (the replica calls this after applying a membership change).
    /// Connection flags of peers that stay are kept.
    pub fn set_members(&self, mut members: Vec<Member>, learners: Vec<u64>) {
        members.sort_by_key(|m| m.id);
        {
            let mut conn = self.connected.write().unwrap_or_else(|p| p.into_inner());
            let old: Vec<(u64, bool)> = conn
                .iter()
                .map(|(id, c)| (*id, c.load(Ordering::Relaxed)))
                .collect();
            *conn = members
                .iter()
                .filter(|m| m.id != self.id)
                .map(|m| {
                    let up = old.iter().any(|(id, up)| *id == m.id && *up);
                    (m.id, AtomicBool::new(up))
                })
                .collect();
        }
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = members;
        *self.learners.write().unwrap_or_else(|p| p.into_inner()) = learners;
    }

    /// Known leader id (0 = none).
    pub fn leader_id(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }

    /// True while this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }

    /// The term this node leads in; 0 when it is not the leader.
    pub fn leader_term(&self) -> u64 {
        // Pairs with the Release store in the replica's role change.
        self.leader_term.load(Ordering::Acquire)
    }

    /// True while this node is the leader and has applied every entry committed in earlier
    /// terms: what it reads from its state machine includes every acknowledged write.
    pub fn leader_caught_up(&self) -> bool {
        // Pairs with the Release stores in the replica's role change and apply steps.
        self.is_leader() && self.leader_caught_up.load(Ordering::Acquire)
    }

    /// Records that the log cannot be written any more (first reason wins). From then on the
    /// node is neither leader nor ready, and publishes are refused with this reason.
    pub fn set_storage_failure(&self, reason: impl Into<String>) {
        let mut f = self
            .storage_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            let reason = reason.into();
            tracing::error!(reason = %reason, "log storage failed: this node accepts no writes until it is restarted on working storage");
            *f = Some(reason);
        }
        self.storage_failed.store(true, Ordering::Release);
        self.is_leader.store(false, Ordering::Release);
        self.leader.store(0, Ordering::Release);
    }

    /// Highest log index raft counts as fsynced on this node (as of the last status refresh):
    /// nothing above it was reported persisted to raft, so nothing above it was applied here.
    pub fn persisted_index(&self) -> u64 {
        self.persisted_index.load(Ordering::Acquire)
    }

    /// Why the log cannot be written, if it cannot.
    pub fn storage_failure(&self) -> Option<String> {
        if !self.storage_failed.load(Ordering::Acquire) {
            return None;
        }
        self.storage_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks peer `id` connected or not (transport).
    pub fn set_connected(&self, id: u64, up: bool) {
        let conn = self.connected.read().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = conn.iter().find(|(p, _)| *p == id) {
            c.store(up, Ordering::Relaxed);
        }
    }

    /// Is peer `id` connected?
    pub fn connected(&self, id: u64) -> bool {
        self.connected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(p, c)| *p == id && c.load(Ordering::Relaxed))
    }

    pub(crate) fn record_fsync(&self, ns: u64) {
        let mut h = self.fsync.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(ns.max(1_000));
    }

    pub(crate) fn record_commits(&self, ns: &[u64]) {
        if ns.is_empty() {
            return;
        }
        let mut h = self.commit.lock().unwrap_or_else(|p| p.into_inner());
        for v in ns {
            h.saturating_record((*v).max(1_000));
        }
    }

    /// The stream's retained range `(first offset, next offset)`; `next - 1` is the last
    /// offset when `next > first`.
    pub fn stream_offsets(&self) -> (u64, u64) {
        (
            self.stream_first_offset.load(Ordering::Relaxed),
            self.stream_next_offset.load(Ordering::Relaxed),
        )
    }

    /// Durations (ns) of snapshots taken (compaction, backup) and installed.
    pub fn snapshot_durations(&self) -> Histogram<u64> {
        self.snapshot_ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn record_snapshot(&self, ns: u64) {
        let mut h = self.snapshot_ns.lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(ns.max(1_000));
    }

    /// Snapshots that could not be delivered to a follower so far.
    pub fn snapshot_send_failures(&self) -> u64 {
        self.snapshot_send_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn set_status(&self, s: ClusterStatus) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    fn counters(&self) -> ReplicationCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplicationCounters {
            elections: l(&self.elections),
            leader_changes: l(&self.leader_changes),
            proposals_committed: l(&self.proposals_committed),
            proposals_applied: l(&self.proposals_applied),
            proposals_failed: l(&self.proposals_failed),
            heartbeat_send_failures: l(&self.heartbeat_send_failures),
            peer_send_failures: l(&self.peer_send_failures),
            snapshots_sent: l(&self.snapshots_sent),
            snapshots_received: l(&self.snapshots_received),
            compactions: l(&self.compactions),
            snapshot_send_failures: l(&self.snapshot_send_failures),
            protocol_errors: l(&self.protocol_errors),
            tls_handshake_failures: l(&self.tls_handshake_failures),
            publishes: self.publishes.snapshot().outcomes,
        }
    }
}

impl NodeMetrics {
    /// Lets the status report the stream's storage (`status().stream`): its files, cache and
    /// copies, and the volume `data_dir` is on. Once; later calls are ignored.
    /// Reports a Kafka-protocol listener's counters in the status (and so on `/metrics`);
    /// the first one attached stays.
    pub fn attach_kafka(&self, probe: impl Fn() -> KafkaListenerStats + Send + Sync + 'static) {
        let _ = self.kafka.set(KafkaProbe(Box::new(probe)));
    }

    /// Reports the members of the consumer groups a Kafka listener coordinates in the status;
    /// the first one attached stays.
    pub fn attach_group_members(
        &self,
        probe: impl Fn() -> Vec<GroupMembership> + Send + Sync + 'static,
    ) {
        let _ = self.group_members.set(GroupMembersProbe(Box::new(probe)));
    }

    /// Lets the status report consumer groups' committed offsets and lag. Once.
    pub(crate) fn attach_groups(&self, groups: Arc<crate::groups::GroupOffsets>) {
        let _ = self.groups.set(groups);
    }

    pub(crate) fn attach_stream(
        &self,
        stream: Arc<crate::stream::CommittedStream>,
        copies: Arc<crate::copy::CopyCounters>,
        data_dir: &std::path::Path,
    ) {
        let _ = self.stream.set(StreamProbe {
            stream,
            copies,
            data_dir: data_dir.to_path_buf(),
        });
    }
}

impl ReplicationSource for NodeMetrics {
    fn status(&self) -> ClusterStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.counters = self.counters();
        (s.stream_first_offset, s.stream_next_offset) = self.stream_offsets();
        if let Some(p) = self.stream.get() {
            s.stream = p.storage();
        }
        s.kafka = self.kafka.get().map(|probe| (probe.0)());
        if let (Some(p), Some(g)) = (self.stream.get(), self.groups.get()) {
            s.groups = p.group_lags(g);
        }
        if let Some(probe) = self.group_members.get() {
            s.group_members = (probe.0)();
        }
        s.snapshot_max_ms = self
            .snapshot_ns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max()
            / 1_000_000;
        if let Some(why) = self.storage_failure() {
            s.storage_failure = Some(why);
            s.leader_id = None;
            s.role = RaftRole::Follower;
            for m in &mut s.members {
                m.is_leader = false;
            }
        }
        for m in &mut s.members {
            if m.id != s.node_id {
                m.connected = self.connected(m.id);
            }
        }
        s.peers_connected = self
            .connected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, c)| c.load(Ordering::Relaxed))
            .count() as u64;
        s
    }

    fn histograms(&self) -> ReplicationHistograms {
        ReplicationHistograms {
            fsync_ns: self.fsync.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            commit_ns: self
                .commit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            snapshot_ns: self.snapshot_durations(),
        }
    }

    fn ready(&self) -> Result<(), String> {
        if let Some(why) = self.storage_failure() {
            return Err(format!(
                "storage failed: {why}; this node accepts no writes"
            ));
        }
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.leader_id.is_none() {
            return Err("no leader".into());
        }
        let lag = s.commit_index.saturating_sub(s.applied_index);
        if lag > READY_MAX_APPLY_LAG {
            return Err(format!("applied index is {lag} entries behind commit"));
        }
        let behind = self
            .leader_commit
            .load(Ordering::Relaxed)
            .saturating_sub(s.applied_index);
        if behind > READY_MAX_APPLY_LAG {
            return Err(format!("{behind} entries behind the leader's commit index"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_leader_and_a_caught_up_apply() {
        let m = NodeMetrics::new(
            1,
            vec![
                Member {
                    id: 1,
                    addr: "a:1".into(),
                    http_addr: None,
                    kafka_addr: None,
                },
                Member {
                    id: 2,
                    addr: "b:1".into(),
                    http_addr: None,
                    kafka_addr: None,
                },
            ],
        );
        assert_eq!(m.ready(), Err("no leader".into()));
        let mut s = m.status();
        s.leader_id = Some(2);
        s.commit_index = 100;
        s.applied_index = 100;
        m.set_status(s.clone());
        assert_eq!(m.ready(), Ok(()));
        m.leader_commit
            .store(100 + READY_MAX_APPLY_LAG + 1, Ordering::Relaxed);
        assert!(m.ready().unwrap_err().contains("behind the leader"));
        m.leader_commit.store(0, Ordering::Relaxed);
        s.commit_index = 100 + READY_MAX_APPLY_LAG + 1;
        m.set_status(s);
        assert!(m.ready().unwrap_err().contains("behind commit"));
        m.set_connected(2, true);
        let st = m.status();
        assert_eq!(st.peers_connected, 1);
    }

    #[test]
    fn member_table_follows_membership_changes() {
        let mem = |id: u64| Member {
            id,
            addr: format!("h{id}:1"),
            http_addr: None,
            kafka_addr: None,
        };
        let m = NodeMetrics::new(1, vec![mem(1), mem(2), mem(3)]);
        m.set_connected(2, true);
        m.set_members(vec![mem(4), mem(1), mem(2)], vec![4]);
        assert_eq!(
            m.members().iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(m.learners(), vec![4]);
        assert!(
            m.connected(2),
            "a peer that stays keeps its connection flag"
        );
        assert!(!m.connected(3) && !m.connected(4));
        // A removed member is still known by its configured address (redirects, hellos).
        assert_eq!(m.member(3).map(|x| x.addr), Some("h3:1".into()));
        assert_eq!(m.member(4).map(|x| x.addr), Some("h4:1".into()));
        m.set_connected(4, true);
        assert_eq!(m.status().peers_connected, 2);
    }

    #[test]
    fn status_and_histograms_carry_the_exported_counters() {
        let m = NodeMetrics::new(
            1,
            vec![Member {
                id: 1,
                addr: "a:1".into(),
                http_addr: None,
                kafka_addr: None,
            }],
        );
        m.stream_first_offset.store(10, Ordering::Relaxed);
        m.stream_next_offset.store(25, Ordering::Relaxed);
        m.snapshot_send_failures.store(2, Ordering::Relaxed);
        // The server holds the same counters (`ServerCtx` clones these `Arc`s).
        m.protocol_errors.fetch_add(3, Ordering::Relaxed);
        m.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
        m.record_snapshot(5_000_000);
        let s = m.status();
        assert_eq!((s.stream_first_offset, s.stream_next_offset), (10, 25));
        assert_eq!(s.counters.snapshot_send_failures, 2);
        assert_eq!(s.counters.protocol_errors, 3);
        assert_eq!(s.counters.tls_handshake_failures, 1);
        assert_eq!(
            s.counters.publishes,
            eventstream_core::replication::PublishOutcomes::default()
        );
        m.publishes.received(4);
        m.publishes.answered(PublishOutcome::RejectedRings, 4);
        let c = m.publishes.snapshot();
        assert_eq!((c.requests, c.outcomes.rejected_rings), ([1, 4], [1, 4]));
        assert_eq!(m.status().counters.publishes, c.outcomes);
        let h = m.histograms();
        assert_eq!(h.snapshot_ns.len(), 1);
        assert!(h.snapshot_ns.max() >= 5_000_000);
    }
}
