//! One raft replica without threads or sockets: [`RawNode`] + the durable [`Wal`] + the
//! [`StateMachine`]. The threaded driver ([`crate::driver`]) and the deterministic simulation
//! tests both drive it through `tick` / `step` / `propose` / `handle_ready`.
//!
//! `handle_ready` follows raft-rs's Ready protocol exactly:
//! 1. send the leader's messages (before persisting: followers fsync in parallel);
//! 2. persist new entries + hard state in one buffered write and **one fsync**;
//! 3. send persisted messages (votes, append responses: only after the fsync);
//! 4. apply the Ready's committed entries (persisted earlier) — a leader does this before
//!    step 2 so client acknowledgements do not wait for the fsync, a follower after step 3 so
//!    its append responses do not wait for applying;
//! 5. `advance`, then handle the LightReady (commit index, messages, committed entries);
//! 6. `advance_apply`.
//!
//! Restart: `DATA_DIR/state.snapshot` (if any) is loaded into the storage and the state
//! machine, then the WAL entries after the snapshot are replayed into a [`MemStorage`]; entries
//! up to the persisted commit index are replayed into the state machine without dispatch, and
//! raft starts with `applied` equal to that index, so `snapshot <= applied <= commit <= last`
//! always holds.
//!
//! Snapshots and compaction (see [`eventstream_storage::snapshot`] for the format):
//! * [`Replica::compact`] (the driver calls it every `compaction_interval_ms`) trims the stream
//!   by the retention policy and, once `snapshot_entries` entries (or `snapshot_bytes` of
//!   entry data) were applied since the last snapshot, collects the state machine at the
//!   applied index `A`; the WAL's owner encodes it, saves `state.snapshot` and deletes whole
//!   segments below the cut (`A - log_keep_entries`, raised to keep at most `log_keep_bytes`);
//!   then [`Replica::finish_compaction`] serves the snapshot to raft ([`SnapStorage`]) and drops
//!   the same entries from memory (slightly behind followers still catch up from the log).
//!   With no snapshot due it still drops in-memory entries below the cut; the WAL keeps them.
//! * Invariant: the served snapshot reaches the in-memory log (`snapshot + 1 >= first index`)
//!   or raft is told it is temporarily unavailable and a fresh one is taken at once.
//! * A Ready carrying a leader's snapshot: it is decoded (a bad one stops the node: it came
//!   from a leader running this code), applied to the storage and the state machine, and made
//!   durable (snapshot file + WAL record) before raft is told it is persisted.
//! * The leader learns whether a snapshot reached the follower's connection through
//!   [`Replica::report_snapshot`] (raft retries after a failure).

use crate::acks::{AckError, AckRegistry};
use crate::config::{RaftConfig, RetentionConfig, StorageConfig};
use crate::error::NodeError;
use crate::metrics::NodeMetrics;
use crate::state::StateMachine;
use crate::stream::Retention;
use bytes::Bytes;
use eventstream_core::replication::{ClusterStatus, MemberStatus, RaftRole};
use eventstream_proto::Member;
use eventstream_storage::snapshot::{self, SnapshotData, SnapshotMember};
use eventstream_storage::wal::Wal;
use eventstream_storage::StorageError;
use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType, Snapshot};
use raft::storage::{MemStorage, RaftState};
use raft::{GetEntriesContext, RawNode, SnapshotStatus, StateRole, Storage};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Raft and storage settings of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's raft id.
    pub id: u64,
    /// Every voter's id (including this node).
    pub voters: Vec<u64>,
    /// Directory of the log.
    pub data_dir: PathBuf,
    /// Ticks without a leader before a campaign (randomised up to 2×).
    pub election_tick: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_tick: usize,
    /// Randomised election timeout range `[min, max)` in ticks; `(0, 0)` = raft's default
    /// `[election_tick, 2 × election_tick)`. A one-tick range per node makes simulations fully
    /// deterministic (raft-rs draws election timeouts from an unseeded RNG).
    pub election_tick_range: (usize, usize),
    /// Largest append message in bytes.
    pub max_size_per_msg: u64,
    /// Append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Uncommitted bytes the leader accepts before refusing proposals.
    pub max_uncommitted_size: u64,
    /// Committed entry bytes handed to the state machine per Ready (raft-rs
    /// `max_committed_size_per_ready`; at least one entry). Applying is the longest part of a
    /// driver iteration: unbounded, a backlog of commits was applied in one go (50–155 ms
    /// under overload), delaying ticks and heartbeats; bounded, the rest waits for the next
    /// iteration a moment later.
    pub max_apply_bytes_per_ready: u64,
    /// Log segment size before rotation.
    pub segment_bytes: u64,
    /// How much of the stream to keep.
    pub retention: Retention,
    /// Entries applied since the last snapshot before the next one is taken (compaction).
    pub snapshot_entries: u64,
    /// Entries kept in the log below the applied index at compaction (≥ 1), so a follower only
    /// slightly behind catches up from the log instead of by snapshot.
    pub log_keep_entries: u64,
    /// Bytes of entries applied since the last snapshot before the next one (whichever of this
    /// and `snapshot_entries` comes first; 0 = count only).
    pub snapshot_bytes: u64,
    /// At most this many bytes of the `log_keep_entries` are kept (at least one entry is;
    /// 0 = count only). The in-memory log is trimmed to it at every [`Replica::compact`]
    /// check, snapshot or not (the WAL keeps the entries until a snapshot covers them).
    pub log_keep_bytes: u64,
}

/// Where one Ready of [`Replica::handle_ready_async`] spent its time: logged by the driver
/// when an iteration is slow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadyPhases {
    /// `RawNode::ready` and sending the leader's messages.
    pub ready: Duration,
    /// Installing a snapshot from the leader.
    pub snapshot: Duration,
    /// Applying committed entries (dedup, stream, dispatch, acknowledgements).
    pub apply: Duration,
    /// Committed entries applied.
    pub applied_entries: usize,
    /// Appending new entries to the in-memory log and queueing the persist job.
    pub store: Duration,
    /// `advance_append_async`.
    pub advance: Duration,
}

impl ReplicaConfig {
    /// Defaults for node `id` of `voters`, storing in `data_dir`: the node configuration's
    /// defaults ([`crate::config`]), the one source of them.
    pub fn new(id: u64, voters: Vec<u64>, data_dir: impl Into<PathBuf>) -> Self {
        Self::from_sections(
            id,
            voters,
            data_dir,
            &RaftConfig::default(),
            &StorageConfig::default(),
            &RetentionConfig::default(),
        )
    }

    /// The replica part of a node's configuration sections.
    pub fn from_sections(
        id: u64,
        voters: Vec<u64>,
        data_dir: impl Into<PathBuf>,
        raft: &RaftConfig,
        storage: &StorageConfig,
        retention: &RetentionConfig,
    ) -> Self {
        ReplicaConfig {
            id,
            voters,
            data_dir: data_dir.into(),
            election_tick: raft.election_ticks as usize,
            heartbeat_tick: raft.heartbeat_ticks as usize,
            election_tick_range: (0, 0),
            max_size_per_msg: raft.max_msg_bytes,
            max_inflight_msgs: raft.max_inflight_msgs as usize,
            max_uncommitted_size: raft.max_uncommitted_bytes,
            // Two of the largest entries per Ready: big enough that applying keeps up, small
            // enough that one iteration of the driver stays short.
            max_apply_bytes_per_ready: 2 * raft.max_entry_bytes,
            segment_bytes: storage.segment_bytes,
            retention: Retention {
                max_events: retention.max_events,
                max_bytes: retention.max_bytes,
                max_age_ms: retention.max_age_secs.saturating_mul(1000),
            },
            snapshot_entries: storage.snapshot_entries,
            log_keep_entries: storage.log_keep_entries,
            snapshot_bytes: storage.snapshot_bytes,
            log_keep_bytes: storage.log_keep_bytes,
        }
    }
}

mod membership;

fn role(r: StateRole) -> RaftRole {
    match r {
        StateRole::Leader => RaftRole::Leader,
        StateRole::Follower => RaftRole::Follower,
        StateRole::Candidate => RaftRole::Candidate,
        StateRole::PreCandidate => RaftRole::PreCandidate,
    }
}

/// raft storage: the in-memory log ([`MemStorage`]) plus the latest snapshot *with data*
/// (MemStorage's own snapshots carry metadata only) and the term of the last compacted entry
/// (raft asks for the term just below the first kept entry).
pub struct SnapStorage {
    mem: MemStorage,
    snapshot: Snapshot,
    /// raft asked for a snapshot for a member the served snapshot's configuration does not
    /// contain (a node added after it was taken): the next compaction check takes a fresh one
    /// at once instead of waiting for `snapshot_entries` (the member would refuse this one).
    fresh_wanted: std::sync::atomic::AtomicBool,
    /// `(index, term)` of the last entry dropped by compaction.
    compacted: (u64, u64),
}

impl std::fmt::Debug for SnapStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapStorage")
            .field("snapshot_index", &self.snapshot_index())
            .field("compacted", &self.compacted)
            .finish_non_exhaustive()
    }
}

impl SnapStorage {
    /// The in-memory log.
    pub fn mem(&self) -> &MemStorage {
        &self.mem
    }

    /// Index of the snapshot raft is served (0 = none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
}

impl Storage for SnapStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx != 0 && idx == self.compacted.0 {
            return Ok(self.compacted.1);
        }
        let m = self.snapshot.get_metadata();
        if idx != 0 && idx == m.index {
            return Ok(m.term);
        }
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let idx = self.snapshot.get_metadata().index;
        let cs = self.snapshot.get_metadata().get_conf_state();
        let knows_to = cs
            .get_voters()
            .iter()
            .chain(cs.get_learners())
            .chain(cs.get_voters_outgoing())
            .chain(cs.get_learners_next())
            .any(|id| *id == to);
        if idx != 0 && !knows_to {
            // raft-rs on `to` refuses a snapshot whose configuration lacks it.
            self.fresh_wanted.store(true, Ordering::Relaxed);
        }
        // The in-memory log may have been trimmed past the served snapshot (`log_keep_bytes`
        // between snapshots): a follower installing it could not continue from the log.
        let first = self.mem.first_index()?;
        let reaches_log = idx + 1 >= first;
        if !reaches_log {
            self.fresh_wanted.store(true, Ordering::Relaxed);
        }
        if idx == 0 || idx < request_index || !knows_to || !reaches_log {
            // raft asks again later (the next compaction makes a newer one).
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// A local compaction in progress: the state collected at the applied index. Whoever owns the
/// WAL runs it ([`Compaction::run`]: encode, save `state.snapshot`, delete old segments — off
/// the driver thread with asynchronous persistence) and hands the result back with
/// [`Replica::finish_compaction`], which serves the snapshot to raft and trims the in-memory log.
#[derive(Debug)]
pub struct Compaction {
    /// The state to snapshot.
    pub data: SnapshotData,
    /// Segments whose entries are all `<=` this may be deleted.
    pub log_upto: u64,
    /// The data directory.
    pub dir: PathBuf,
    started: Instant,
}

/// A finished [`Compaction`].
#[derive(Debug)]
pub struct Compacted {
    /// The encoded snapshot (now in `DATA_DIR/state.snapshot`).
    pub snapshot: Bytes,
    /// Its index.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Its membership.
    pub conf: ConfState,
    /// Events it holds.
    pub events: u64,
    /// Log entries `<=` this may go from memory too.
    pub log_upto: u64,
    /// Log bytes deleted.
    pub freed_bytes: u64,
    /// Log bytes left.
    pub log_bytes: u64,
    started: Instant,
}

/// A compaction whose snapshot is encoded and fsynced in a temporary file next to
/// `state.snapshot` ([`Compaction::prepare`], on a thread of its own); the WAL's owner
/// finishes it with [`PreparedCompaction::adopt`].
#[derive(Debug)]
pub struct PreparedCompaction {
    tmp: std::path::PathBuf,
    done: Compacted,
}

impl Compaction {
    /// Encodes the snapshot, saves it durably, then compacts the log (all inline).
    pub fn run(self, wal: &mut Wal) -> Result<Compacted, NodeError> {
        self.prepare()?.adopt(wal)
    }

    /// The slow half, which needs no access to the log: encode the snapshot and write it,
    /// fsynced, to a temporary file in the data directory.
    pub fn prepare(self) -> Result<PreparedCompaction, NodeError> {
        let snapshot = snapshot::encode(&self.data);
        let tmp = self.dir.join(format!(
            "{}.{}.tmp",
            snapshot::DATA_DIR_FILE,
            self.data.index
        ));
        snapshot::write_synced(&tmp, &snapshot)?;
        Ok(PreparedCompaction {
            tmp,
            done: Compacted {
                snapshot,
                index: self.data.index,
                term: self.data.term,
                conf: conf_of(&self.data),
                events: self.data.events(),
                log_upto: self.log_upto,
                freed_bytes: 0,
                log_bytes: 0,
                started: self.started,
            },
        })
    }
}

impl PreparedCompaction {
    /// The quick half, by the log's owner (ordered with installed snapshots): the file becomes
    /// `state.snapshot` unless a newer snapshot was installed meanwhile, then old segments go.
    pub fn adopt(mut self, wal: &mut Wal) -> Result<Compacted, NodeError> {
        if wal.adopt_snapshot_file(&self.tmp, self.done.index)? {
            self.done.freed_bytes = wal.compact(self.done.log_upto)?;
        }
        self.done.log_bytes = wal.total_bytes();
        Ok(self.done)
    }
}

/// The index up to which a compaction drops the log: at most `keep_entries` entries up to
/// `applied` stay, and of those at most `keep_bytes` bytes by the `(index, bytes)` sizes of
/// applied entries in `sizes` (oldest first) — but the entry at `applied` always stays. Entries
/// older than `sizes` covers (replayed at restart) are held to the count only.
fn keep_cut(sizes: &VecDeque<(u64, u64)>, applied: u64, keep_entries: u64, keep_bytes: u64) -> u64 {
    let by_count = applied.saturating_sub(keep_entries);
    let mut kept = 0u64;
    for &(index, bytes) in sizes.iter().rev() {
        if index > applied {
            continue;
        }
        if index <= by_count {
            break;
        }
        kept += bytes;
        if kept > keep_bytes && index < applied {
            return index;
        }
    }
    by_count
}

fn raft_snapshot(data: Bytes, index: u64, term: u64, conf: ConfState) -> Snapshot {
    let mut snap = Snapshot {
        data,
        ..Snapshot::default()
    };
    let meta = snap.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf);
    snap
}

fn conf_of(s: &SnapshotData) -> ConfState {
    ConfState::from((s.voters.clone(), s.learners.clone()))
}

/// One Ready's durable part, for the WAL thread (asynchronous persistence).
#[derive(Debug)]
pub struct PersistJob {
    /// The Ready's number (for `on_persist_ready`).
    pub number: u64,
    /// A leader's snapshot to install durably before the entries (rare).
    pub snapshot: Option<Snapshot>,
    /// Entries to append.
    pub entries: Vec<Entry>,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// Messages that may only be sent once this is fsynced (votes, append responses).
    pub messages: Vec<Message>,
}

impl PersistJob {
    /// Writes the job's durable part into `wal`'s buffer; the caller fsyncs with
    /// [`Wal::sync`]. Used by the WAL thread and the simulation.
    pub fn write_to(&self, wal: &mut Wal) -> Result<(), NodeError> {
        wal.write_ready(
            self.snapshot.as_ref(),
            &self.entries,
            self.hard_state.as_ref(),
        )?;
        Ok(())
    }
}

/// The WAL entries that continue a snapshot at `(index, term)`: those after it, if the log
/// agrees with the snapshot at its index (or starts right after it); none if the log is older
/// than the snapshot (it was installed from a leader, and the log's tail is void).
fn entries_after_snapshot(
    entries: Vec<Entry>,
    index: u64,
    term: u64,
    dir: &std::path::Path,
) -> Result<Vec<Entry>, NodeError> {
    if index == 0 {
        return Ok(entries);
    }
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(entries);
    };
    let (first, last) = (first.index, last.index);
    if first > index + 1 {
        return Err(StorageError::CorruptLog {
            path: dir.display().to_string(),
            offset: 0,
            reason: format!("log starts at index {first}, after the snapshot at {index}: a gap"),
        }
        .into());
    }
    if last <= index {
        return Ok(Vec::new());
    }
    if first == index + 1 {
        return Ok(entries);
    }
    let at = (index - first) as usize;
    if entries[at].term != term {
        return Ok(Vec::new());
    }
    Ok(entries.into_iter().skip(at + 1).collect())
}

/// A replica: consensus + log + state machine.
pub struct Replica {
    /// Where the last asynchronous Ready spent its time (see [`ReadyPhases`]).
    pub last_ready: ReadyPhases,
    raw: RawNode<SnapStorage>,
    /// `None` once moved to a WAL thread ([`Replica::take_wal`], asynchronous persistence).
    wal: Option<Wal>,
    sm: StateMachine,
    acks: Arc<AckRegistry>,
    metrics: Arc<NodeMetrics>,
    /// Leader only: `(log index, when proposed)` of proposals not yet committed.
    proposed: VecDeque<(u64, Instant)>,
    written_hs: HardState,
    role: StateRole,
    /// While leader: the index of the entry raft appended when this node became leader. Once
    /// it is applied, every entry committed in earlier terms is applied too.
    term_start: u64,
    leader: u64,
    commit_lat: Vec<u64>,
    /// Log size reported by the WAL thread (asynchronous persistence).
    log_bytes: u64,
    /// Addresses of members: the configured `peers`, then conf-change contexts.
    known: BTreeMap<u64, Member>,
    /// Voters of the configuration the log starts from.
    bootstrap_voters: Vec<u64>,
    /// The member table changed since the driver last looked.
    members_changed: bool,
    /// `(index, term, applied)` of the most recent conf-change entries.
    applied_conf: VecDeque<(u64, u64, bool)>,
    retention: Retention,
    snapshot_entries: u64,
    log_keep_entries: u64,
    snapshot_bytes: u64,
    log_keep_bytes: u64,
    /// `(index, data bytes)` of the entries applied since the last compaction's cut, oldest
    /// first: what the byte limits of compaction are computed from.
    applied_sizes: VecDeque<(u64, u64)>,
    /// Data bytes applied since the last snapshot was started.
    applied_bytes_since_snapshot: u64,
    /// Asynchronous persistence: `(ready number, applied index)` of an installed snapshot the
    /// WAL thread has not made durable yet.
    snapshot_unpersisted: Option<(u64, u64)>,
    /// A [`Compaction`] handed to the WAL thread has not been finished yet.
    compaction_in_flight: bool,
    data_dir: PathBuf,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.raw.raft.id)
            .field("role", &self.role)
            .field("leader", &self.leader)
            .field("applied", &self.sm.applied())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens the log in `cfg.data_dir` (replaying it) and starts raft.
    pub fn open(
        cfg: &ReplicaConfig,
        mut sm: StateMachine,
        acks: Arc<AckRegistry>,
        metrics: Arc<NodeMetrics>,
    ) -> Result<Replica, NodeError> {
        let (mut wal, rec) = Wal::open(&cfg.data_dir, cfg.segment_bytes)?;
        snapshot::remove_stale_temporaries(&cfg.data_dir)?;
        let snap = snapshot::load_from_data_dir(&cfg.data_dir)?;
        wal.set_snapshot_index(snap.as_ref().map_or(0, |(_, s)| s.index));
        if let Some((_, s)) = &snap {
            if !s.voters.contains(&cfg.id) && !s.learners.contains(&cfg.id) {
                return Err(NodeError::config(
                    "id",
                    format!(
                        "the snapshot in {} lists members {:?} + learners {:?}, not this node's id {}",
                        cfg.data_dir.display(),
                        s.voters,
                        s.learners,
                        cfg.id
                    ),
                ));
            }
        }
        let conf = match (rec.conf_state, &snap) {
            (Some(cs), _) => cs,
            (None, Some((_, s))) => {
                let cs = conf_of(s);
                wal.set_conf_state(&cs);
                wal.sync()?;
                cs
            }
            (None, None) => {
                let cs = ConfState::from((cfg.voters.clone(), vec![]));
                wal.set_conf_state(&cs);
                wal.sync()?;
                cs
            }
        };
        // The voters the WAL's log starts from (bootstrap, or a restored backup's): what a
        // joining node starts from when the log is not compacted.
        let bootstrap_voters = conf.voters.clone();
        let mem = MemStorage::new_with_conf_state(conf);
        let mut storage = SnapStorage {
            mem,
            snapshot: Snapshot::default(),
            fresh_wanted: std::sync::atomic::AtomicBool::new(false),
            compacted: (0, 0),
        };
        let (snap_index, snap_term) = snap.as_ref().map_or((0, 0), |(_, s)| (s.index, s.term));
        let entries = entries_after_snapshot(rec.entries, snap_index, snap_term, &cfg.data_dir)?;
        let mut hs = rec.hard_state.unwrap_or_default();
        if let Some((bytes, s)) = &snap {
            // The snapshot's membership is the base; conf changes committed after it are
            // re-applied below, like every other state after the snapshot.
            let rs = raft_snapshot(bytes.clone(), s.index, s.term, conf_of(s));
            storage.mem.wl().apply_snapshot(rs.clone())?;
            storage.snapshot = rs;
            hs.term = hs.term.max(s.term);
            hs.commit = hs.commit.max(s.index);
            sm.restore(s)?;
            tracing::info!(
                id = cfg.id,
                index = s.index,
                events = s.events(),
                "loaded snapshot"
            );
        } else {
            sm.start_empty()?;
        }
        {
            let mut w = storage.mem.wl();
            if !entries.is_empty() {
                w.append(&entries)?;
            }
            w.set_hardstate(hs.clone());
        }
        let last = storage.last_index()?;
        let commit = hs.commit.min(last).max(snap_index);
        if hs.commit > last {
            // A corrupt tail cut off entries an earlier hard state had committed: this node
            // forgets that commit (raft would refuse to start) and learns it from the leader.
            tracing::warn!(
                id = cfg.id,
                commit = hs.commit,
                last,
                "log ends before its commit index; catching up from the leader"
            );
            let mut hs = hs.clone();
            hs.commit = last;
            storage.mem.wl().set_hardstate(hs);
        }
        sm.replay(entries.iter().take_while(|e| e.index <= commit))?;
        if commit > 0 {
            tracing::info!(id = cfg.id, commit, last, term = hs.term, "replayed log");
        }
        let rc = raft::Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            min_election_tick: cfg.election_tick_range.0,
            max_election_tick: cfg.election_tick_range.1,
            applied: commit,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            max_uncommitted_size: cfg.max_uncommitted_size,
            max_committed_size_per_ready: cfg.max_apply_bytes_per_ready,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        rc.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut raw = RawNode::new(&rc, storage, &logger)?;
        // The configuration is the snapshot's (or the bootstrap one) plus every committed conf
        // change after it, re-applied in log order (see `membership`): the log is its only
        // durable record.
        let mut known: BTreeMap<u64, Member> =
            metrics.members().into_iter().map(|m| (m.id, m)).collect();
        if let Some((_, s)) = &snap {
            known.extend(s.members.iter().map(|m| (m.id, member_of(m))));
        }
        for e in entries.iter().take_while(|e| e.index <= commit) {
            if membership::decode_conf_change(e).is_some() {
                if let Err(err) = membership::replay_conf_entry(&mut raw, &mut known, e) {
                    tracing::error!(index = e.index, error = %err, "conf change not applied");
                }
            }
        }
        let mut r = Replica {
            raw,
            wal: Some(wal),
            sm,
            acks,
            metrics,
            proposed: VecDeque::new(),
            written_hs: hs,
            role: StateRole::Follower,
            term_start: 0,
            leader: 0,
            commit_lat: Vec::new(),
            log_bytes: 0,
            known,
            bootstrap_voters,
            members_changed: true,
            applied_conf: VecDeque::new(),
            retention: cfg.retention,
            snapshot_entries: cfg.snapshot_entries.max(1),
            log_keep_entries: cfg.log_keep_entries.max(1),
            snapshot_bytes: match cfg.snapshot_bytes {
                0 => u64::MAX,
                n => n,
            },
            log_keep_bytes: match cfg.log_keep_bytes {
                0 => u64::MAX,
                n => n,
            },
            applied_sizes: VecDeque::new(),
            applied_bytes_since_snapshot: 0,
            snapshot_unpersisted: None,
            last_ready: ReadyPhases::default(),
            compaction_in_flight: false,
            data_dir: cfg.data_dir.clone(),
        };
        r.note_missing_stream();
        r.sync_members();
        Ok(r)
    }

    /// Logs the offsets the stream lacks, if a snapshot took it past what it held (they are
    /// copied from another member: [`missing_stream`](Self::missing_stream)).
    fn note_missing_stream(&self) {
        let Some(range) = self.missing_stream() else {
            return;
        };
        tracing::info!(
            id = self.raw.raft.id,
            from = range.start,
            to = range.end,
            "the stream lacks events below the snapshot; copying them from another member"
        );
    }

    /// The stream offsets this node lacks below what it applied, if any: a snapshot took it
    /// past them. The node copies them from another member.
    pub fn missing_stream(&self) -> Option<std::ops::Range<u64>> {
        self.sm.stream().missing()
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// Current role.
    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    /// Known leader (0 = none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// Current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Commit index.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The metrics this replica reports into.
    pub fn metrics(&self) -> &Arc<NodeMetrics> {
        &self.metrics
    }

    /// First index still in the in-memory log.
    pub fn first_index(&self) -> u64 {
        self.raw.raft.raft_log.first_index()
    }

    /// Index of the latest snapshot (taken here or installed from a leader; 0 = none).
    pub fn snapshot_index(&self) -> u64 {
        self.raw.store().snapshot_index()
    }

    /// Applied index.
    pub fn applied_index(&self) -> u64 {
        self.sm.applied()
    }

    /// The state machine (stream, applier).
    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Starts a campaign now (tests, leader transfer).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        Ok(self.raw.campaign()?)
    }

    /// Asks the leader (this node) to hand leadership to `to` (tests, maintenance).
    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// Feeds a message from a peer. Messages for other nodes or stale terms are ignored by raft.
    pub fn step(&mut self, m: Message) {
        if matches!(
            m.get_msg_type(),
            MessageType::MsgHeartbeat | MessageType::MsgAppend
        ) {
            // The leader's commit index: how far this node is behind (for readiness).
            self.metrics
                .leader_commit
                .fetch_max(m.commit, Ordering::Relaxed);
        }
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft step refused a message");
        }
    }

    /// A peer could not be reached (transport): raft slows replication to it down to probes.
    pub fn report_unreachable(&mut self, id: u64) {
        self.raw.report_unreachable(id);
    }

    /// Proposes one entry holding one or more event blocks. On refusal the waiting publishes of
    /// its events are failed here, so nothing hangs.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), NodeError> {
        let len = data.len();
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                if self.raw.raft.state == StateRole::Leader {
                    let idx = self.raw.raft.raft_log.last_index();
                    self.proposed.push_back((idx, Instant::now()));
                }
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .proposals_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, bytes = len, "proposal refused");
                Err(e.into())
            }
        }
    }

    /// Fails the waiting publishes of `ids` (their proposal was refused).
    pub fn fail_ids(&self, ids: impl IntoIterator<Item = u64>, err: AckError) {
        self.acks.fail(ids, err);
    }

    /// The start every Ready shares, sync or async: take it, note soft-state changes, send the
    /// leader's messages at once (before persisting). `None` without a Ready.
    /// True when raft has work for the next [`handle_ready`](Self::handle_ready) (for example
    /// committed entries beyond one Ready's apply limit): the driver then does not wait.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    fn begin_ready(
        &mut self,
        send: &mut dyn FnMut(Vec<Message>),
    ) -> Result<Option<raft::Ready>, NodeError> {
        if !self.raw.has_ready() {
            return Ok(None);
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.raft_state, ss.leader_id);
        }
        if !ready.messages().is_empty() {
            send(ready.take_messages());
        }
        Ok(Some(ready))
    }

    /// Installs a leader's snapshot in memory: storage, state machine, served snapshot. The
    /// caller makes it durable before raft learns it is persisted.
    fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), NodeError> {
        let started = Instant::now();
        let data = snapshot::decode(&snap.data).map_err(|e| StorageError::CorruptSnapshot {
            path: format!(
                "snapshot from the leader at index {}",
                snap.get_metadata().index
            ),
            reason: e.to_string(),
        })?;
        self.raw.mut_store().mem.wl().apply_snapshot(snap.clone())?;
        let store = self.raw.mut_store();
        store.snapshot = snap.clone();
        store.compacted = (0, 0);
        self.sm.restore(&data)?;
        self.note_missing_stream();
        // raft took the snapshot's configuration; the addresses come with it.
        self.known
            .extend(data.members.iter().map(|m| (m.id, member_of(m))));
        self.sync_members();
        self.metrics
            .snapshots_received
            .fetch_add(1, Ordering::Relaxed);
        self.metrics
            .record_snapshot(started.elapsed().as_nanos() as u64);
        tracing::info!(
            id = self.raw.raft.id,
            index = data.index,
            events = data.events(),
            bytes = snap.data.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Handles one Ready if there is one. `send` is called with outgoing messages as soon as
    /// the protocol allows sending them.
    pub fn handle_ready(&mut self, send: &mut dyn FnMut(Vec<Message>)) -> Result<bool, NodeError> {
        let Some(mut ready) = self.begin_ready(send)? else {
            return Ok(false);
        };
        // Committed entries are already persisted, so they may be applied before or after this
        // Ready's fsync. The leader applies first (its clients' acknowledgements do not wait for
        // the next fsync); a follower persists first (its append responses, which the leader's
        // commit waits for, do not wait for applying).
        let mut committed = ready.take_committed_entries();
        if self.raw.raft.state == StateRole::Leader {
            self.apply(std::mem::take(&mut committed))?;
        }
        let entries = ready.take_entries();
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
            let Some(wal) = self.wal.as_mut() else {
                return Err(NodeError::Closed);
            };
            let m = snap.get_metadata();
            wal.install_snapshot(&snap.data, m.index, m.term)?;
        }
        let Some(wal) = self.wal.as_mut() else {
            return Err(NodeError::Closed);
        };
        wal.append_entries(&entries);
        if let Some(hs) = ready.hs() {
            self.written_hs = hs.clone();
            wal.set_hard_state(hs);
        } else {
            // A commit index advanced by a LightReady is written with the next batch.
            let cur = self.raw.store().mem.rl().hard_state().clone();
            if cur != self.written_hs && wal.has_pending() {
                wal.set_hard_state(&cur);
                self.written_hs = cur;
            }
        }
        if let Some(took) = wal.sync()? {
            self.metrics.record_fsync(took.as_nanos() as u64);
        }
        {
            let mut w = self.raw.mut_store().mem.wl();
            if !entries.is_empty() {
                w.append(&entries)?;
            }
            if let Some(hs) = ready.hs() {
                w.set_hardstate(hs.clone());
            }
        }
        if !ready.persisted_messages().is_empty() {
            send(ready.take_persisted_messages());
        }
        self.apply(committed)?;
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .mem
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        let msgs = light.take_messages();
        if !msgs.is_empty() {
            send(msgs);
        }
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.observe_commit();
        Ok(true)
    }

    /// Moves the log out for a WAL thread; afterwards use
    /// [`handle_ready_async`](Self::handle_ready_async) and [`on_persisted`](Self::on_persisted).
    pub fn take_wal(&mut self) -> Option<Wal> {
        self.wal.take()
    }

    /// Records the log size reported by the WAL thread (for the status).
    pub fn set_log_bytes(&mut self, bytes: u64) {
        self.log_bytes = bytes;
    }

    /// The Ready protocol with asynchronous persistence (raft-rs `advance_append_async`):
    /// leader messages are sent at once, committed entries (raft hands out only locally
    /// persisted ones) are applied, new entries and hard state go to the in-memory storage and,
    /// as a [`PersistJob`], to the WAL thread together with the messages that may only be sent
    /// after the fsync. The WAL thread reports back through [`on_persisted`](Self::on_persisted).
    /// Proposals therefore never wait behind an fsync in progress, and one fsync covers every
    /// job queued meanwhile (group commit).
    pub fn handle_ready_async(
        &mut self,
        send: &mut dyn FnMut(Vec<Message>),
        persist: &mut dyn FnMut(PersistJob),
    ) -> Result<bool, NodeError> {
        let t0 = Instant::now();
        self.last_ready = ReadyPhases::default();
        let Some(mut ready) = self.begin_ready(send)? else {
            return Ok(false);
        };
        let t_begin = Instant::now();
        let snapshot = if ready.snapshot().is_empty() {
            None
        } else {
            let snap = ready.snapshot().clone();
            self.install_snapshot(&snap)?;
            Some(snap)
        };
        let snapshot_index = snapshot.as_ref().map(|s| s.get_metadata().index);
        let t_snapshot = Instant::now();
        let committed = ready.take_committed_entries();
        let applied_entries = committed.len();
        self.apply(committed)?;
        let t_apply = Instant::now();
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        {
            // raft must be able to read the entries back from storage before
            // advance_append_async; they count as persisted only after on_persisted.
            let mut w = self.raw.mut_store().mem.wl();
            if !entries.is_empty() {
                w.append(&entries)?;
            }
            if let Some(hs) = &hs {
                w.set_hardstate(hs.clone());
            }
        }
        // Every Ready gets a job, even an empty one: persisted messages must keep their order
        // behind earlier fsyncs.
        persist(PersistJob {
            number: ready.number(),
            snapshot,
            entries,
            hard_state: hs,
            messages: ready.take_persisted_messages(),
        });
        let t_store = Instant::now();
        let number = ready.number();
        self.raw.advance_append_async(ready);
        let t_end = Instant::now();
        self.last_ready = ReadyPhases {
            ready: t_begin - t0,
            snapshot: t_snapshot - t_begin,
            apply: t_apply - t_snapshot,
            applied_entries,
            store: t_store - t_apply,
            advance: t_end - t_store,
        };
        if let Some(snap) = self.snapshot_unpersisted {
            // raft refuses an applied index above its persisted one: report the snapshot as
            // applied once the WAL thread has made it durable (see on_persisted).
            debug_assert!(snap.0 <= number);
        } else if snapshot_index.is_some() {
            self.snapshot_unpersisted = Some((number, self.sm.applied()));
        } else {
            self.raw.advance_apply();
        }
        self.observe_commit();
        Ok(true)
    }

    /// The WAL thread has fsynced every job up to Ready `number`.
    pub fn on_persisted(&mut self, number: u64) {
        self.raw.on_persist_ready(number);
        if let Some((ready, _)) = self.snapshot_unpersisted {
            if number >= ready {
                self.snapshot_unpersisted = None;
                self.raw.advance_apply_to(self.sm.applied());
            }
        }
    }

    /// The transport's verdict on a snapshot sent to `to`: delivered to its connection, or not
    /// (raft then probes and sends a snapshot again).
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let (status, counter) = if delivered {
            (SnapshotStatus::Finish, &self.metrics.snapshots_sent)
        } else {
            (
                SnapshotStatus::Failure,
                &self.metrics.snapshot_send_failures,
            )
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.raw.report_snapshot(to, status);
    }

    /// The state at the applied index as a snapshot (what a backup saves). Consistent: the
    /// stream, dedup window and offsets all describe exactly the entries up to `applied`.
    pub fn snapshot_data(&self) -> Result<SnapshotData, NodeError> {
        let mut s = SnapshotData::default();
        self.sm.export_into(&mut s)?;
        s.term = self.raw.store().term(s.index).or_else(|_| {
            // The applied entry may still be only in raft's unstable log on a leader.
            self.raw.raft.raft_log.term(s.index)
        })?;
        let cs = self.raw.raft.prs().conf().to_conf_state();
        s.voters = cs.get_voters().to_vec();
        s.learners = cs.get_learners().to_vec();
        s.created_unix_ms = snapshot::unix_ms();
        s.members = self
            .members()
            .iter()
            .map(|m| SnapshotMember {
                id: m.id,
                addr: m.addr.clone(),
                http_addr: m.http_addr.clone(),
                kafka_addr: m.kafka_addr.clone(),
                learner: s.learners.contains(&m.id),
            })
            .collect();
        Ok(s)
    }

    /// Retention and compaction, called periodically: trims the stream by the retention
    /// policy; then, once `snapshot_entries` entries were applied since the last snapshot (and
    /// no compaction is in flight), collects the state at the applied index. When this replica
    /// owns the WAL the compaction runs inline (returns `None`); otherwise the returned
    /// [`Compaction`] is for the WAL thread, which reports back for
    /// [`finish_compaction`](Self::finish_compaction).
    pub fn compact(&mut self) -> Result<Option<Compaction>, NodeError> {
        let trimmed = self
            .sm
            .stream()
            .trim(&self.retention, snapshot::unix_ms())?;
        if trimmed > 0 {
            tracing::debug!(events = trimmed, "retention trimmed the stream");
        }
        let applied = self.sm.applied();
        let snap_index = self.raw.store().snapshot_index();
        if self.compaction_in_flight || applied == 0 {
            return Ok(None);
        }
        let fresh_wanted = self.snapshot_wanted();
        if !fresh_wanted
            && applied < snap_index + self.snapshot_entries
            && self.applied_bytes_since_snapshot < self.snapshot_bytes
        {
            // No snapshot due: still keep the in-memory log within `log_keep_bytes`. The WAL
            // keeps every entry since the last snapshot (restarts replay it); a follower that
            // needs a dropped entry gets a fresh snapshot (`SnapStorage::snapshot`).
            if self.log_keep_bytes != u64::MAX {
                let cut = keep_cut(
                    &self.applied_sizes,
                    applied,
                    self.log_keep_entries,
                    self.log_keep_bytes,
                );
                self.forget_applied_sizes(cut);
                self.drop_memory_log(cut)?;
            }
            return Ok(None);
        }
        self.raw
            .store()
            .fresh_wanted
            .store(false, Ordering::Relaxed);
        let log_upto = keep_cut(
            &self.applied_sizes,
            applied,
            self.log_keep_entries,
            self.log_keep_bytes,
        );
        self.forget_applied_sizes(log_upto);
        self.applied_bytes_since_snapshot = 0;
        let job = Compaction {
            data: self.snapshot_data()?,
            log_upto,
            dir: self.data_dir.clone(),
            started: Instant::now(),
        };
        match self.wal.as_mut() {
            Some(wal) => {
                let done = job.run(wal)?;
                self.finish_compaction(done)?;
                Ok(None)
            }
            None => {
                self.compaction_in_flight = true;
                Ok(Some(job))
            }
        }
    }

    /// True when raft needs a newer snapshot than the one it is served (a member added after
    /// it was taken): the driver then runs [`compact`](Self::compact) without waiting.
    pub fn snapshot_wanted(&self) -> bool {
        !self.compaction_in_flight
            && self.raw.store().fresh_wanted.load(Ordering::Relaxed)
            && self.sm.applied() > self.raw.store().snapshot_index()
    }

    /// A compaction is durable: serve its snapshot to raft (unless a newer one was installed
    /// meanwhile) and drop in-memory entries up to its `log_upto`.
    pub fn finish_compaction(&mut self, done: Compacted) -> Result<(), NodeError> {
        self.compaction_in_flight = false;
        self.log_bytes = done.log_bytes;
        let store = self.raw.mut_store();
        let freeing = Instant::now();
        if done.index > store.snapshot_index() {
            let old = std::mem::replace(
                &mut store.snapshot,
                raft_snapshot(done.snapshot.clone(), done.index, done.term, done.conf),
            );
            // The previous snapshot is as big as the retained stream.
            crate::reclaim::drop_later(old);
        }
        let upto = self.drop_memory_log(done.log_upto)?;
        let freeing = freeing.elapsed();
        if freeing >= Duration::from_millis(20) {
            tracing::debug!(
                took_ms = freeing.as_millis() as u64,
                "dropping the compacted log on the driver"
            );
        }
        self.metrics.compactions.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .record_snapshot(done.started.elapsed().as_nanos() as u64);
        tracing::info!(
            id = self.raw.raft.id,
            index = done.index,
            events = done.events,
            bytes = done.snapshot.len(),
            log_upto = upto,
            freed_bytes = done.freed_bytes,
            took_ms = done.started.elapsed().as_millis() as u64,
            "snapshot taken, log compacted"
        );
        Ok(())
    }

    /// Drops the in-memory log's entries up to `upto` (never the last entry: an empty
    /// MemStorage would report its first index from its own stale snapshot metadata). Returns
    /// the index actually dropped up to.
    fn drop_memory_log(&mut self, upto: u64) -> Result<u64, NodeError> {
        let store = self.raw.mut_store();
        let last = store.mem.last_index()?;
        let upto = upto.min(last.saturating_sub(1));
        let first = store.mem.first_index()?;
        if upto >= first {
            let term = store.mem.term(upto)?;
            // Hold the payloads of the entries compacted away (cheap clones: shared `Bytes`),
            // so that compacting only drops references and the memory is freed on the
            // reclaim thread: hundreds of MB freed here stalled the driver for long enough to
            // miss heartbeats.
            let doomed =
                store
                    .mem
                    .entries(first, upto + 1, None, GetEntriesContext::empty(false))?;
            store.mem.wl().compact(upto + 1)?;
            store.compacted = (upto, term);
            crate::reclaim::drop_later(doomed);
        }
        Ok(upto)
    }

    /// Forgets the sizes of applied entries up to `upto` (they are being compacted).
    fn forget_applied_sizes(&mut self, upto: u64) {
        while self
            .applied_sizes
            .front()
            .is_some_and(|&(index, _)| index <= upto)
        {
            self.applied_sizes.pop_front();
        }
    }

    fn on_soft_state(&mut self, new_role: StateRole, leader: u64) {
        if new_role != self.role {
            // Leader -> follower at an unchanged term is raft's check-quorum step-down (no
            // answer from a quorum within an election timeout); with a higher term another
            // node campaigned (it missed heartbeats for an election timeout).
            tracing::info!(
                id = self.id(),
                from = ?self.role,
                to = ?new_role,
                term = self.raw.raft.term,
                leader,
                "raft role changed"
            );
            if new_role == StateRole::Candidate {
                self.metrics.elections.fetch_add(1, Ordering::Relaxed);
            }
            if self.role == StateRole::Leader {
                // Entries we proposed may or may not survive; clients retry with the same ids
                // and dedup keeps each event once either way.
                let lost = self.proposed.len() as u64;
                self.metrics
                    .proposals_failed
                    .fetch_add(lost, Ordering::Relaxed);
                self.proposed.clear();
                self.acks.fail_all(AckError::NotLeader);
            }
            self.role = new_role;
            let term = match new_role {
                StateRole::Leader => self.raw.raft.term,
                _ => 0,
            };
            // Pairs with the Acquire load in `NodeMetrics::leader_term`.
            self.metrics.leader_term.store(term, Ordering::Release);
            self.metrics
                .is_leader
                .store(new_role == StateRole::Leader, Ordering::Release);
            self.term_start = if new_role == StateRole::Leader {
                self.raw.raft.raft_log.last_index()
            } else {
                0
            };
            self.metrics
                .leader_caught_up
                .store(false, Ordering::Release);
            self.note_caught_up();
        }
        if leader != self.leader {
            if leader != 0 {
                self.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            self.leader = leader;
            self.metrics.leader.store(leader, Ordering::Release);
        }
    }

    /// Tells the front ends once a leader has applied every entry of earlier terms (state
    /// read from the state machine, such as committed group offsets, is then complete).
    fn note_caught_up(&mut self) {
        if self.term_start > 0 && self.sm.applied() >= self.term_start {
            self.term_start = 0;
            // Pairs with the Acquire load in `NodeMetrics::leader_caught_up`.
            self.metrics.leader_caught_up.store(true, Ordering::Release);
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut proposals = 0;
        for e in &entries {
            if e.index <= self.sm.applied() {
                continue;
            }
            if self.sm.apply(e)?.proposal {
                proposals += 1;
            }
            self.applied_sizes.push_back((e.index, e.data.len() as u64));
            self.applied_bytes_since_snapshot += e.data.len() as u64;
            if e.get_entry_type() != raft::eraftpb::EntryType::EntryNormal {
                self.apply_conf_entry(e);
            }
        }
        self.note_caught_up();
        self.metrics
            .proposals_applied
            .fetch_add(proposals, Ordering::Relaxed);
        self.metrics
            .proposals_committed
            .fetch_add(proposals, Ordering::Relaxed);
        Ok(())
    }

    fn observe_commit(&mut self) {
        let committed = self.raw.raft.raft_log.committed;
        let now = Instant::now();
        while let Some(&(idx, at)) = self.proposed.front() {
            if idx > committed {
                break;
            }
            self.commit_lat
                .push(now.duration_since(at).as_nanos() as u64);
            self.proposed.pop_front();
        }
        if !self.commit_lat.is_empty() {
            self.metrics.record_commits(&self.commit_lat);
            self.commit_lat.clear();
        }
    }

    /// Proposals waiting for commit (leader).
    pub fn proposals_pending(&self) -> u64 {
        self.proposed.len() as u64
    }

    /// Builds this replica's status and stores it in the shared metrics.
    pub fn publish_status(&mut self) {
        self.sm.flush();
        let stream = self.sm.stream();
        self.metrics
            .stream_first_offset
            .store(stream.first_offset(), Ordering::Relaxed);
        self.metrics
            .stream_next_offset
            .store(stream.next_offset(), Ordering::Relaxed);
        let raft = &self.raw.raft;
        self.metrics
            .persisted_index
            .store(raft.raft_log.persisted, Ordering::Release);
        let is_leader = raft.state == StateRole::Leader;
        let last = raft.raft_log.last_index();
        let learners = self.metrics.learners();
        let members = self
            .metrics
            .members()
            .iter()
            .map(|m| {
                // A new leader resets every follower's `matched` to 0 and probes: until the
                // follower answers, its position is unknown, not "the whole log behind".
                let matched = is_leader
                    .then(|| raft.prs().get(m.id))
                    .flatten()
                    .filter(|p| {
                        m.id == raft.id || p.matched > 0 || p.state != raft::ProgressState::Probe
                    })
                    .map(|p| p.matched);
                MemberStatus {
                    id: m.id,
                    address: m.addr.clone(),
                    http_address: m.http_addr.clone(),
                    learner: learners.contains(&m.id),
                    is_leader: m.id == raft.leader_id,
                    connected: m.id == raft.id,
                    match_index: matched,
                    lag_entries: matched.map(|x| last.saturating_sub(x)),
                }
            })
            .collect();
        let status = ClusterStatus {
            node_id: raft.id,
            role: role(raft.state),
            leader_id: (raft.leader_id != 0).then_some(raft.leader_id),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.sm.applied(),
            first_index: raft.raft_log.first_index(),
            last_index: last,
            log_bytes: self
                .wal
                .as_ref()
                .map_or(self.log_bytes, |w| w.total_bytes()),
            stream_first_offset: stream.first_offset(),
            stream_next_offset: stream.next_offset(),
            proposals_pending: self.proposed.len() as u64,
            peers_connected: 0,
            members,
            counters: Default::default(),
            stream: Default::default(),
            snapshot_max_ms: 0,
            storage_failure: None,
            kafka: None,
            groups: Vec::new(),
            group_members: Vec::new(),
        };
        self.metrics.set_status(status);
    }

    /// True if the message is a heartbeat (for failure accounting).
    pub fn is_heartbeat(m: &Message) -> bool {
        m.get_msg_type() == MessageType::MsgHeartbeat
    }
}

fn member_of(m: &SnapshotMember) -> Member {
    Member {
        id: m.id,
        addr: m.addr.clone(),
        http_addr: m.http_addr.clone(),
        kafka_addr: m.kafka_addr.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::keep_cut;
    use std::collections::VecDeque;

    #[test]
    fn compaction_keeps_entries_by_count_and_by_bytes_and_always_the_applied_one() {
        // Entries 1..=10 of 100 bytes each, all applied.
        let sizes: VecDeque<(u64, u64)> = (1..=10).map(|i| (i, 100)).collect();
        // Count only: keep 3 → drop up to 7.
        assert_eq!(keep_cut(&sizes, 10, 3, u64::MAX), 7);
        // Bytes bind first: 250 bytes keep entries 9 and 10.
        assert_eq!(keep_cut(&sizes, 10, 5, 250), 8);
        // Exactly at the limit keeps the entry.
        assert_eq!(keep_cut(&sizes, 10, 5, 300), 7);
        // The applied entry stays even when it alone is over the limit.
        assert_eq!(keep_cut(&sizes, 10, 5, 0), 9);
        let big: VecDeque<(u64, u64)> = [(9, 10), (10, 1_000)].into();
        assert_eq!(keep_cut(&big, 10, 5, 10), 9);
        // Sizes newer than `applied` are ignored.
        assert_eq!(keep_cut(&sizes, 6, 2, 150), 5);
        // Entries older than the known sizes (replayed at restart) are held to the count.
        let recent: VecDeque<(u64, u64)> = [(9, 1), (10, 1)].into();
        assert_eq!(keep_cut(&recent, 10, 5, 1_000), 5);
        assert_eq!(keep_cut(&VecDeque::new(), 10, 5, 0), 5);
        // Fewer entries than the count: nothing to drop.
        assert_eq!(keep_cut(&sizes, 3, 5, u64::MAX), 0);
    }
}
