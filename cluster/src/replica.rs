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
//! Restart: the WAL is replayed into a [`MemStorage`]; entries up to the persisted commit index
//! are replayed into the state machine without dispatch, and raft starts with `applied` equal
//! to that index, so `applied <= commit <= last_index` always holds.

use crate::acks::{AckError, AckRegistry};
use crate::error::ClusterError;
use crate::metrics::NodeMetrics;
use crate::state::StateMachine;
use crate::wal::Wal;
use eventstream_core::replication::{ClusterStatus, MemberStatus, RaftRole};
use raft::eraftpb::{ConfState, Entry, HardState, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole, Storage};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

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
    /// Log segment size before rotation.
    pub segment_bytes: u64,
}

impl ReplicaConfig {
    /// Defaults for node `id` of `voters`, storing in `data_dir`.
    pub fn new(id: u64, voters: Vec<u64>, data_dir: impl Into<PathBuf>) -> Self {
        ReplicaConfig {
            id,
            voters,
            data_dir: data_dir.into(),
            election_tick: 10,
            heartbeat_tick: 2,
            election_tick_range: (0, 0),
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 64,
            max_uncommitted_size: 256 << 20,
            segment_bytes: 64 << 20,
        }
    }
}

fn role(r: StateRole) -> RaftRole {
    match r {
        StateRole::Leader => RaftRole::Leader,
        StateRole::Follower => RaftRole::Follower,
        StateRole::Candidate => RaftRole::Candidate,
        StateRole::PreCandidate => RaftRole::PreCandidate,
    }
}

/// One Ready's durable part, for the WAL thread (asynchronous persistence).
#[derive(Debug)]
pub struct PersistJob {
    /// The Ready's number (for `on_persist_ready`).
    pub number: u64,
    /// Entries to append.
    pub entries: Vec<Entry>,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// Messages that may only be sent once this is fsynced (votes, append responses).
    pub messages: Vec<Message>,
}

/// A replica: consensus + log + state machine.
pub struct Replica {
    raw: RawNode<MemStorage>,
    /// `None` once moved to a WAL thread ([`Replica::take_wal`], asynchronous persistence).
    wal: Option<Wal>,
    sm: StateMachine,
    acks: Arc<AckRegistry>,
    metrics: Arc<NodeMetrics>,
    /// Leader only: `(log index, when proposed)` of proposals not yet committed.
    proposed: VecDeque<(u64, Instant)>,
    written_hs: HardState,
    role: StateRole,
    leader: u64,
    commit_lat: Vec<u64>,
    /// Log size reported by the WAL thread (asynchronous persistence).
    log_bytes: u64,
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
    ) -> Result<Replica, ClusterError> {
        let (mut wal, rec) = Wal::open(&cfg.data_dir, cfg.segment_bytes)?;
        let conf = match rec.conf_state {
            Some(cs) => cs,
            None => {
                let cs = ConfState::from((cfg.voters.clone(), vec![]));
                wal.set_conf_state(&cs);
                wal.sync()?;
                cs
            }
        };
        let storage = MemStorage::new_with_conf_state(conf);
        let hs = rec.hard_state.unwrap_or_default();
        {
            let mut w = storage.wl();
            if !rec.entries.is_empty() {
                w.append(&rec.entries)?;
            }
            w.set_hardstate(hs.clone());
        }
        let last = storage.last_index()?;
        let commit = hs.commit.min(last);
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
            storage.wl().set_hardstate(hs);
        }
        let replay_to = commit as usize;
        sm.replay(
            rec.entries
                .iter()
                .take_while(|e| e.index as usize <= replay_to),
        );
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
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        rc.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&rc, storage, &logger)?;
        Ok(Replica {
            raw,
            wal: Some(wal),
            sm,
            acks,
            metrics,
            proposed: VecDeque::new(),
            written_hs: hs,
            role: StateRole::Follower,
            leader: 0,
            commit_lat: Vec::new(),
            log_bytes: 0,
        })
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
    pub fn campaign(&mut self) -> Result<(), ClusterError> {
        Ok(self.raw.campaign()?)
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
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), ClusterError> {
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
    /// leader's messages at once (before persisting), refuse snapshots. `None` without a Ready.
    fn begin_ready(
        &mut self,
        send: &mut dyn FnMut(Vec<Message>),
    ) -> Result<Option<raft::Ready>, ClusterError> {
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
        if !ready.snapshot().is_empty() {
            // Snapshots arrive with the snapshot/compaction issue; this build never compacts,
            // so no leader ever sends one.
            return Err(ClusterError::Raft(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            )));
        }
        Ok(Some(ready))
    }

    /// Handles one Ready if there is one. `send` is called with outgoing messages as soon as
    /// the protocol allows sending them.
    pub fn handle_ready(
        &mut self,
        send: &mut dyn FnMut(Vec<Message>),
    ) -> Result<bool, ClusterError> {
        let Some(mut ready) = self.begin_ready(send)? else {
            return Ok(false);
        };
        // Committed entries are already persisted, so they may be applied before or after this
        // Ready's fsync. The leader applies first (its clients' acknowledgements do not wait for
        // the next fsync); a follower persists first (its append responses, which the leader's
        // commit waits for, do not wait for applying).
        let mut committed = ready.take_committed_entries();
        if self.raw.raft.state == StateRole::Leader {
            self.apply(std::mem::take(&mut committed));
        }
        let entries = ready.take_entries();
        let Some(wal) = self.wal.as_mut() else {
            return Err(ClusterError::Closed);
        };
        wal.append_entries(&entries);
        if let Some(hs) = ready.hs() {
            self.written_hs = hs.clone();
            wal.set_hard_state(hs);
        } else {
            // A commit index advanced by a LightReady is written with the next batch.
            let cur = self.raw.store().rl().hard_state().clone();
            if cur != self.written_hs && wal.has_pending() {
                wal.set_hard_state(&cur);
                self.written_hs = cur;
            }
        }
        if let Some(took) = wal.sync()? {
            self.metrics.record_fsync(took.as_nanos() as u64);
        }
        {
            let mut w = self.raw.mut_store().wl();
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
        self.apply(committed);
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        let msgs = light.take_messages();
        if !msgs.is_empty() {
            send(msgs);
        }
        self.apply(light.take_committed_entries());
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
    ) -> Result<bool, ClusterError> {
        let Some(mut ready) = self.begin_ready(send)? else {
            return Ok(false);
        };
        self.apply(ready.take_committed_entries());
        let entries = ready.take_entries();
        let hs = ready.hs().cloned();
        {
            // raft must be able to read the entries back from storage before
            // advance_append_async; they count as persisted only after on_persisted.
            let mut w = self.raw.mut_store().wl();
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
            entries,
            hard_state: hs,
            messages: ready.take_persisted_messages(),
        });
        self.raw.advance_append_async(ready);
        self.raw.advance_apply();
        self.observe_commit();
        Ok(true)
    }

    /// The WAL thread has fsynced every job up to Ready `number`.
    pub fn on_persisted(&mut self, number: u64) {
        self.raw.on_persist_ready(number);
    }

    fn on_soft_state(&mut self, new_role: StateRole, leader: u64) {
        if new_role != self.role {
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
            self.metrics
                .is_leader
                .store(new_role == StateRole::Leader, Ordering::Release);
        }
        if leader != self.leader {
            if leader != 0 {
                self.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            }
            self.leader = leader;
            self.metrics.leader.store(leader, Ordering::Release);
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut proposals = 0;
        for e in &entries {
            if e.index <= self.sm.applied() {
                continue;
            }
            if self.sm.apply(e).proposal {
                proposals += 1;
            }
        }
        self.metrics
            .proposals_applied
            .fetch_add(proposals, Ordering::Relaxed);
        self.metrics
            .proposals_committed
            .fetch_add(proposals, Ordering::Relaxed);
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
        let raft = &self.raw.raft;
        self.metrics
            .persisted_index
            .store(raft.raft_log.persisted, Ordering::Release);
        let is_leader = raft.state == StateRole::Leader;
        let last = raft.raft_log.last_index();
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
                    learner: false,
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
            proposals_pending: self.proposed.len() as u64,
            peers_connected: 0,
            members,
            counters: Default::default(),
            storage_failure: None,
        };
        self.metrics.set_status(status);
    }

    /// True if the message is a heartbeat (for failure accounting).
    pub fn is_heartbeat(m: &Message) -> bool {
        m.get_msg_type() == MessageType::MsgHeartbeat
    }
}
