//! The driver thread: the only owner of the [`Replica`] (and so of raft-rs's `RawNode`).
//!
//! Each iteration: wait for a message or the next tick → step every queued raft message →
//! merge queued proposal blocks into entries of at most `max_entry_bytes` and propose them →
//! tick when due → handle the Ready (send, apply, persist + one fsync, send, advance) →
//! refresh the shared status every 50 ms. Many events per entry, many entries per fsync.
//! Every `compaction_interval` it runs retention and compaction ([`Replica::compact`]); with
//! asynchronous persistence the WAL thread saves the snapshot and deletes old segments after
//! the fsync of the batch it is in. A backup request ([`DriverMsg::TakeSnapshot`]) is answered
//! with the applied state collected between two applies (so it is consistent); it is encoded
//! by the requester, off the driver thread.
//!
//! One iteration is [`Driver::iteration`], each phase a method of [`Driver`]. Their order is
//! the raft-rs contract and must not change: step, tick and propose before the Ready; in the
//! Ready send, persist, advance and apply (see [`Replica::handle_ready`]); a message that fails
//! the node (storage) ends the loop before the next phase.

use crate::acks::{AckError, AckRegistry};
use crate::metrics::NodeMetrics;
use crate::replica::{Compacted, Compaction, PersistJob, PreparedCompaction, Replica};
use bytes::Bytes;
use crossbeam_channel::Sender;
use crossbeam_channel::{Receiver, TryRecvError};
use eventstream_proto::admin::{AdminError, AdminReply, AdminRequest};
use eventstream_proto::codec;
use eventstream_proto::frame::ErrorCode;
use eventstream_proto::Member;
use eventstream_storage::snapshot;
use eventstream_storage::wal::Wal;
use raft::eraftpb::{Message, MessageType};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The driver's answer to one request.
pub type AdminResult = Result<AdminReply, AdminError>;

/// Where the driver sends the answer (a tokio oneshot for connections, a std channel for the
/// node's own shutdown hand-off).
pub struct AdminReplyTo(Box<dyn FnOnce(AdminResult) + Send>);

impl AdminReplyTo {
    /// Wraps a callback.
    pub fn new(f: impl FnOnce(AdminResult) + Send + 'static) -> Self {
        AdminReplyTo(Box::new(f))
    }

    /// Answers the request.
    pub fn send(self, r: AdminResult) {
        (self.0)(r)
    }
}

impl std::fmt::Debug for AdminReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminReplyTo")
    }
}

/// What the network and the engine hand the driver.
#[derive(Debug)]
pub enum DriverMsg {
    /// A message from a peer.
    Raft(Box<Message>),
    /// A peer cannot be reached.
    Unreachable(u64),
    /// The WAL thread fsynced every job up to Ready `number`; `messages` may go out now.
    Persisted {
        /// Highest Ready number persisted.
        number: u64,
        /// Messages held back until the fsync.
        messages: Vec<Message>,
        /// Log size after the write.
        log_bytes: u64,
    },
    /// The WAL thread failed (I/O error): the node must stop.
    StorageFailed(String),
    /// The transport's verdict on a snapshot message to `to`.
    SnapshotSent {
        /// The follower.
        to: u64,
        /// Written to its connection (`false`: dropped or the connection failed).
        delivered: bool,
    },
    /// The WAL thread finished a compaction.
    Compacted(Box<Compacted>),
    /// A client wants a consistent snapshot of the applied state (backup). The driver only
    /// collects it (shared `Bytes` of the stream, copies of the dedup window and offset index);
    /// the requester encodes it off the driver thread.
    TakeSnapshot(
        tokio::sync::oneshot::Sender<Result<eventstream_storage::snapshot::SnapshotData, String>>,
    ),
    /// Stop after this iteration.
    Stop,
    /// A membership change, member list or leader transfer (see [`eventstream_proto::admin`]).
    Admin {
        /// The request.
        req: AdminRequest,
        /// Where the answer goes.
        reply: AdminReplyTo,
    },
}

/// A block of events for the log, from the engine's proposal stage.
#[derive(Debug)]
pub struct Proposal {
    /// One encoded event block (see [`eventstream_proto::codec`]).
    pub block: Bytes,
    /// Ids of its events, to fail their publishes if raft refuses the entry.
    pub ids: Vec<u64>,
}

/// Where the driver sends outgoing raft messages. Must not block.
pub trait PeerSender: Send {
    /// Queues `msg` for its destination; returns false if it could not be queued.
    fn send(&mut self, msg: Message) -> bool;

    /// The membership changed: start talking to new members, stop talking to removed ones.
    fn set_members(&mut self, _members: &[Member]) {}
}

/// Driver settings.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    /// One tick.
    pub tick: Duration,
    /// Largest merged entry.
    pub max_entry_bytes: usize,
    /// Persist on a separate WAL thread (raft-rs asynchronous Ready); otherwise the driver
    /// fsyncs inline.
    pub async_persist: bool,
    /// How often retention and compaction run.
    pub compaction_interval: Duration,
    /// Largest frame a peer accepts (`max_peer_frame_bytes`): a bigger snapshot is not sent
    /// (the follower would drop the connection) but reported to raft as failed, loudly.
    pub max_peer_frame: usize,
}

/// Work for the WAL thread.
#[derive(Debug)]
pub enum WalJob {
    /// One Ready's durable part.
    Persist(PersistJob),
    /// Adopt a prepared snapshot file and delete old segments.
    Compact(Box<PreparedCompaction>),
}

/// The driver's channels and shared state.
pub struct DriverIo {
    /// Raft messages, persistence reports, stop.
    pub msgs: Receiver<DriverMsg>,
    /// A sender into `msgs` (for the WAL thread).
    pub self_tx: Sender<DriverMsg>,
    /// Event blocks from the engine's proposal stage.
    pub proposals: Receiver<Proposal>,
    /// Outgoing raft messages.
    pub net: Box<dyn PeerSender>,
    /// Waiting publishes (failed at shutdown).
    pub acks: Arc<AckRegistry>,
    /// Replication metrics.
    pub metrics: Arc<NodeMetrics>,
}

impl std::fmt::Debug for DriverIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverIo").finish_non_exhaustive()
    }
}

/// Niceness of the driver and WAL threads (see [`raise_thread_priority`]).
const RAFT_THREAD_NICE: libc::c_int = -10;

/// Gives the calling thread (the driver or the WAL thread) a higher CPU share than the
/// node's other threads, best-effort (needs root or CAP_SYS_NICE; otherwise it stays at the
/// default and says so at debug level). Why: under overload on a small machine the client
/// connections, the engine worker, snapshot encoding and the producers compete for the same
/// cores; `bench overload` measured the leader's driver loop stalled up to ~0.5-0.7 s (ticks
/// late, the same snapshot collection 3-5x slower on the leader than on its followers), long
/// enough for a follower's 300-600 ms election timeout to run out: heartbeats are sent only
/// by this loop. At nice -10 CFS gives the thread ~9x the weight of a nice-0 thread.
pub fn raise_thread_priority(what: &str) {
    set_thread_nice(what, RAFT_THREAD_NICE);
}

/// Sets the calling thread's nice value, best-effort: on failure (no root or CAP_SYS_NICE to
/// raise it) the thread keeps the default and says so at debug level.
fn set_thread_nice(what: &str, nice: libc::c_int) {
    // SAFETY: gettid and setpriority take no pointers; they act on the calling thread only.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if r != 0 {
        tracing::debug!(
            thread = what,
            nice,
            error = %std::io::Error::last_os_error(),
            "cannot change thread priority; it keeps the default"
        );
    }
}

/// Nice value of background threads: snapshot encoding, freeing compacted memory.
pub const BACKGROUND_THREAD_NICE: libc::c_int = 10;

/// Gives the calling background thread (snapshot encoding, reclaim) a lower CPU share than
/// the request path, best-effort. Why: `bench overload` saw the leader's driver wait 30-55 ms
/// for the acknowledgement table's lock every 5 s, exactly when the snapshot thread encoded
/// and wrote ~140 MB; the lock's holder (a client connection thread at the default priority)
/// was waiting for a core the background work held.
pub fn lower_thread_priority(what: &str) {
    set_thread_nice(what, BACKGROUND_THREAD_NICE);
}

/// A driver iteration at least this long is logged (debug) with its phases.
const SLOW_ITERATION: Duration = Duration::from_millis(10);

/// A WAL write + fsync at least this long is logged (at debug level).
const SLOW_LOG_WRITE: Duration = Duration::from_millis(10);

/// Runs the driver until [`DriverMsg::Stop`], a closed channel, or a storage failure.
pub fn run(replica: Replica, cfg: DriverConfig, io: DriverIo) -> Result<(), crate::NodeError> {
    raise_thread_priority("raft driver");
    let mut driver = Driver::start(replica, cfg, io)?;
    let result = loop {
        if let Err(e) = driver.iteration() {
            break Err(e);
        }
        if driver.stop {
            break Ok(());
        }
    };
    driver.shut_down(&result);
    result
}

/// The driver loop's state: the replica, its channels, and what one iteration leaves for the
/// next.
struct Driver {
    replica: Replica,
    cfg: DriverConfig,
    msgs: Receiver<DriverMsg>,
    self_tx: Sender<DriverMsg>,
    proposals: Receiver<Proposal>,
    out: Outbox,
    acks: Arc<AckRegistry>,
    metrics: Arc<NodeMetrics>,
    /// The entry being assembled from proposal blocks.
    entry: Pending,
    admin: AdminState,
    held: Held,
    /// The WAL thread, with asynchronous persistence.
    wal: Option<WalThread>,
    next_tick: Instant,
    next_status: Instant,
    next_compaction: Instant,
    /// Stop after this iteration.
    stop: bool,
    /// A message failed the node (storage): leave before anything else.
    failed: Option<crate::NodeError>,
}

/// The thread that writes and fsyncs the log, and its queue.
struct WalThread {
    jobs: Sender<WalJob>,
    thread: std::thread::JoinHandle<()>,
}

/// Outgoing raft messages, and what to report to raft about them once the Ready is handled.
struct Outbox {
    net: Box<dyn PeerSender>,
    /// See [`DriverConfig::max_peer_frame`].
    max_peer_frame: usize,
    /// Peers a message could not be queued for.
    unreachable: Vec<u64>,
    /// Followers a snapshot could not be sent to.
    snapshots_failed: Vec<u64>,
}

impl Outbox {
    /// Sends a Ready's messages. A snapshot larger than a peer accepts is not sent (the
    /// follower would drop the connection) but reported failed, loudly.
    fn send_ready(&mut self, out: Vec<Message>) {
        for m in out {
            let to = m.to;
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            if is_snapshot && m.get_snapshot().data.len() + 4096 > self.max_peer_frame {
                tracing::error!(
                    to,
                    bytes = m.get_snapshot().data.len(),
                    max = self.max_peer_frame,
                    "snapshot larger than max_peer_frame_bytes: not sent; lower the retention or raise the limit"
                );
                self.snapshots_failed.push(to);
                continue;
            }
            if !self.net.send(m) {
                self.unreachable.push(to);
                if is_snapshot {
                    self.snapshots_failed.push(to);
                }
            }
        }
    }

    /// Sends messages that waited for the fsync of their Ready.
    fn send_persisted(&mut self, messages: Vec<Message>) {
        for m in messages {
            let to = m.to;
            if !self.net.send(m) {
                self.unreachable.push(to);
            }
        }
    }
}

/// When the phases of one iteration ended, for the "slow driver iteration" line.
#[derive(Debug, Clone, Copy)]
struct Phases {
    woke: Instant,
    msgs_done: Instant,
    proposals_done: Instant,
    ready_done: Instant,
}

impl Driver {
    /// The driver's state, and the WAL thread when persistence is asynchronous.
    fn start(
        mut replica: Replica,
        cfg: DriverConfig,
        io: DriverIo,
    ) -> Result<Self, crate::NodeError> {
        let DriverIo {
            msgs,
            self_tx,
            proposals,
            net,
            acks,
            metrics,
        } = io;
        let next_tick = Instant::now() + cfg.tick;
        let next_status = Instant::now();
        let next_compaction = Instant::now() + cfg.compaction_interval;
        let wal = if cfg.async_persist {
            match replica.take_wal() {
                Some(wal) => Some(spawn_wal_thread(wal, replica.id(), &self_tx, &metrics)?),
                None => None,
            }
        } else {
            None
        };
        Ok(Driver {
            replica,
            cfg,
            msgs,
            self_tx,
            proposals,
            out: Outbox {
                net,
                max_peer_frame: cfg.max_peer_frame,
                unreachable: Vec::new(),
                snapshots_failed: Vec::new(),
            },
            acks,
            metrics,
            entry: Pending::default(),
            admin: AdminState::default(),
            held: Held::default(),
            wal,
            next_tick,
            next_status,
            next_compaction,
            stop: false,
            failed: None,
        })
    }

    /// One iteration: wait for a message or the next tick → step the queued messages →
    /// propose the queued blocks → tick when due → handle the Ready (send, apply, persist,
    /// advance) → what the Ready changed → compaction when due → unreachable peers → status
    /// when due. `Err` ends the loop (through [`Driver::shut_down`]).
    fn iteration(&mut self) -> Result<(), crate::NodeError> {
        self.wait_for_work();
        // Phases of one iteration, for the "slow driver iteration" debug line: a stall here
        // delays heartbeats, and a leader that misses them under check_quorum steps down.
        let woke = Instant::now();
        self.step_queued_messages();
        if let Some(e) = self.failed.take() {
            // Leave through the common exit: join the WAL thread, publish the final status,
            // fail every waiting publish (none of them was acknowledged).
            return Err(e);
        }
        let msgs_done = Instant::now();
        self.propose_queued();
        let now = Instant::now();
        let proposals_done = now;
        self.tick_if_due(now);
        self.handle_ready()?;
        let ready_done = Instant::now();
        self.after_ready();
        self.compact_if_due(now)?;
        self.report_unreachable();
        if now >= self.next_status {
            self.replica.publish_status();
            self.next_status = now + Duration::from_millis(50);
        }
        self.log_if_slow(Phases {
            woke,
            msgs_done,
            proposals_done,
            ready_done,
        });
        Ok(())
    }

    /// Waits for a message, a proposal block or the next tick (not at all while raft has a
    /// Ready: more committed entries than one Ready applies). Raft messages first: they
    /// unblock commits.
    fn wait_for_work(&mut self) {
        let timeout = if self.replica.has_ready() {
            Duration::ZERO
        } else {
            self.next_tick.saturating_duration_since(Instant::now())
        };
        crossbeam_channel::select! {
            recv(self.msgs) -> m => match m {
                Ok(m) => self.receive(m),
                Err(_) => self.stop = true,
            },
            recv(self.proposals) -> p => match p {
                Ok(p) => self.entry.add(p),
                Err(_) => self.stop = true,
            },
            default(timeout) => {}
        }
    }

    /// Takes every queued message (a bounded number), until one fails the node.
    fn step_queued_messages(&mut self) {
        for _ in 0..100_000 {
            if self.failed.is_some() {
                break;
            }
            match self.msgs.try_recv() {
                Ok(m) => self.receive(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.stop = true;
                    break;
                }
            }
        }
    }

    /// One message from a peer, the WAL thread, the transport or a client.
    fn receive(&mut self, m: DriverMsg) {
        match m {
            DriverMsg::Admin { req, reply } => self.admin.start(&mut self.replica, req, reply),
            m => match on_msg(&mut self.replica, m, &mut self.out) {
                Ok(s) => self.stop |= s,
                Err(e) => self.failed = Some(e),
            },
        }
    }

    /// Merges queued proposal blocks into entries of at most `max_entry_bytes` and proposes
    /// them, up to a bound per iteration so that ticks and acks keep flowing.
    fn propose_queued(&mut self) {
        let mut drained = 0usize;
        while let Ok(p) = self.proposals.try_recv() {
            if !self.entry.data.is_empty()
                && self.entry.data.len() + p.block.len() > self.cfg.max_entry_bytes
            {
                propose(&mut self.replica, &mut self.entry, &mut self.held);
            }
            drained += p.block.len();
            self.entry.add(p);
            if drained > 8 * self.cfg.max_entry_bytes {
                break;
            }
        }
        if !self.entry.data.is_empty() {
            propose(&mut self.replica, &mut self.entry, &mut self.held);
        }
    }

    /// Ticks raft when a tick is due; after a stall, the next tick is one tick from now.
    fn tick_if_due(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.replica.tick();
        self.next_tick += self.cfg.tick;
        if self.next_tick < now {
            // We fell behind (a slow fsync, a starved thread): do not burst ticks, that
            // would fake timeouts.
            let late = now - self.next_tick;
            if late >= self.cfg.tick * 5 {
                tracing::debug!(late_ms = late.as_millis() as u64, "raft tick late");
            }
            self.next_tick = now + self.cfg.tick;
        }
    }

    /// The Ready: send, apply, persist (inline with one fsync, or queued for the WAL thread),
    /// advance.
    fn handle_ready(&mut self) -> Result<(), crate::NodeError> {
        let out = &mut self.out;
        let mut send = |msgs: Vec<Message>| out.send_ready(msgs);
        let r = match &self.wal {
            Some(wal) => self.replica.handle_ready_async(&mut send, &mut |job| {
                // The WAL thread outlives this loop; a send only fails if it died, which it
                // reports as StorageFailed.
                let _ = wal.jobs.send(WalJob::Persist(job));
            }),
            None => self.replica.handle_ready(&mut send),
        };
        r.map(|_| ())
    }

    /// What the Ready may have changed: leave a joint configuration, tell the transport the
    /// members, answer admin requests, release held entries, report failed snapshots.
    fn after_ready(&mut self) {
        self.replica.leave_joint_if_needed();
        if self.replica.take_members_changed() {
            self.out.net.set_members(&self.replica.members());
        }
        self.admin.poll(&mut self.replica);
        self.held.release(&mut self.replica);
        for to in self.out.snapshots_failed.drain(..) {
            self.replica.report_snapshot(to, false);
        }
    }

    /// Every `compaction_interval`, or when raft wants a snapshot: retention and compaction
    /// ([`Replica::compact`]); the snapshot is written off this thread.
    fn compact_if_due(&mut self, now: Instant) -> Result<(), crate::NodeError> {
        if now < self.next_compaction && !self.replica.snapshot_wanted() {
            return Ok(());
        }
        self.next_compaction = now + self.cfg.compaction_interval;
        let collecting = Instant::now();
        let compacted = self.replica.compact();
        // Retention and collecting the snapshot state run on this thread: a long one
        // delays ticks and heartbeats (see "raft tick late").
        if collecting.elapsed() >= self.cfg.tick {
            tracing::debug!(
                took_ms = collecting.elapsed().as_millis() as u64,
                "retention + snapshot collection on the driver"
            );
        }
        match compacted? {
            Some(job) => self.write_snapshot(job),
            None => Ok(()),
        }
    }

    /// Encoding and writing a big snapshot takes long: on a thread of its own, so neither
    /// this loop nor the WAL thread's fsyncs wait for it. Only the rename and the segment
    /// deletion go through the WAL thread (ordered with snapshots installed from a leader).
    fn write_snapshot(&self, job: Compaction) -> Result<(), crate::NodeError> {
        let Some(wal) = &self.wal else {
            return Ok(());
        };
        let jobs = wal.jobs.clone();
        let back = self.self_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("es-snap-{}", self.replica.id()))
            .spawn(move || {
                lower_thread_priority("snapshot");
                let prepared = job.prepare();
                match prepared {
                    Ok(p) => {
                        let _ = jobs.send(WalJob::Compact(Box::new(p)));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "writing a snapshot failed");
                        let _ = back.send(DriverMsg::StorageFailed(e.to_string()));
                    }
                }
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => Err(crate::NodeError::Spawn {
                what: "snapshot thread",
                source: e,
            }),
        }
    }

    /// Tells raft about the peers messages could not be queued for, once each.
    fn report_unreachable(&mut self) {
        let unreachable = &mut self.out.unreachable;
        if !unreachable.is_empty() {
            unreachable.sort_unstable();
            unreachable.dedup();
            for id in unreachable.drain(..) {
                self.replica.report_unreachable(id);
            }
        }
    }

    /// Logs an iteration of at least [`SLOW_ITERATION`] with its phases and the Ready's.
    fn log_if_slow(&self, p: Phases) {
        let end = Instant::now();
        if end - p.woke < SLOW_ITERATION {
            return;
        }
        let ms = |d: Duration| d.as_micros() as f64 / 1000.0;
        let ready = &self.replica.last_ready;
        tracing::debug!(
            total_ms = ms(end - p.woke),
            msgs_ms = ms(p.msgs_done - p.woke),
            proposals_ms = ms(p.proposals_done - p.msgs_done),
            ready_ms = ms(p.ready_done - p.proposals_done),
            rest_ms = ms(end - p.ready_done),
            ready_raft_ms = ms(ready.ready),
            ready_snapshot_ms = ms(ready.snapshot),
            ready_apply_ms = ms(ready.apply),
            ready_applied_entries = ready.applied_entries,
            ready_store_ms = ms(ready.store),
            ready_advance_ms = ms(ready.advance),
            "slow driver iteration"
        );
    }

    /// The common exit: fail the waiting admin requests, let the WAL thread finish its queue,
    /// record a storage failure, publish the final status, fail every waiting publish.
    fn shut_down(mut self, result: &Result<(), crate::NodeError>) {
        self.admin.fail_all("node shutting down");
        if let Some(WalThread { jobs, thread }) = self.wal.take() {
            drop(jobs);
            let _ = thread.join();
        }
        if let Err(e @ crate::NodeError::Storage(_)) = result {
            // Raft stops with the log: a node that cannot persist must not vote or acknowledge
            // appends. Everything it did not fsync was never reported persisted to raft (no
            // on_persist_ready), so none of it was acknowledged by this node.
            self.metrics.set_storage_failure(e.to_string());
        }
        self.replica.publish_status();
        self.acks.fail_all(AckError::ShuttingDown);
        if let Err(e) = result {
            tracing::error!(error = %e, "raft driver stopped");
        }
    }
}

/// Starts the WAL thread ([`wal_loop`]) of node `id`: it reports back into `driver`.
fn spawn_wal_thread(
    wal: Wal,
    id: u64,
    driver: &Sender<DriverMsg>,
    metrics: &Arc<NodeMetrics>,
) -> Result<WalThread, crate::NodeError> {
    let (tx, rx) = crossbeam_channel::unbounded::<WalJob>();
    let back = driver.clone();
    let m = metrics.clone();
    let thread = std::thread::Builder::new()
        .name(format!("es-wal-{id}"))
        .spawn(move || {
            raise_thread_priority("WAL");
            wal_loop(wal, rx, back, m)
        })
        .map_err(|e| crate::NodeError::Spawn {
            what: "WAL thread",
            source: e,
        })?;
    Ok(WalThread { jobs: tx, thread })
}

/// Handles one message (admin requests go to [`AdminState::start`]); `Ok(true)`: stop after
/// this iteration.
fn on_msg(replica: &mut Replica, m: DriverMsg, out: &mut Outbox) -> Result<bool, crate::NodeError> {
    match m {
        DriverMsg::Raft(m) => replica.step(*m),
        DriverMsg::Unreachable(id) => replica.report_unreachable(id),
        DriverMsg::Persisted {
            number,
            messages,
            log_bytes,
        } => {
            replica.on_persisted(number);
            replica.set_log_bytes(log_bytes);
            out.send_persisted(messages);
        }
        DriverMsg::SnapshotSent { to, delivered } => replica.report_snapshot(to, delivered),
        DriverMsg::Compacted(done) => replica.finish_compaction(*done)?,
        DriverMsg::TakeSnapshot(reply) => {
            let _ = reply.send(replica.snapshot_data().map_err(|e| e.to_string()));
        }
        DriverMsg::StorageFailed(e) => {
            return Err(crate::NodeError::io(
                "log (WAL thread)",
                std::io::Error::other(e),
            ))
        }
        DriverMsg::Stop => return Ok(true),
        DriverMsg::Admin { reply, .. } => reply.send(Err(AdminError::new(
            ErrorCode::Internal,
            "administrative request routed past the driver",
        ))),
    }
    Ok(false)
}

/// The WAL thread: takes every queued job, writes them, fsyncs once, reports back; then
/// finishes the compactions queued among them (their snapshot files were prepared by a
/// snapshot thread): rename into place, delete old segments, report back.
fn wal_loop(
    mut wal: Wal,
    jobs: Receiver<WalJob>,
    driver: Sender<DriverMsg>,
    metrics: Arc<NodeMetrics>,
) {
    let fail = |e: crate::NodeError| {
        // No Persisted report for the failed jobs: raft never learns they are durable here.
        metrics.set_storage_failure(e.to_string());
        tracing::error!(error = %e, "log write failed; stopping the node");
        let _ = driver.send(DriverMsg::StorageFailed(e.to_string()));
    };
    while let Ok(first) = jobs.recv() {
        let mut number = None;
        let mut messages = Vec::new();
        let mut compactions = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                WalJob::Persist(job) => {
                    if let Err(e) = job.write_to(&mut wal) {
                        return fail(e);
                    }
                    number = Some(job.number);
                    messages.extend(job.messages);
                }
                WalJob::Compact(c) => compactions.push(c),
            }
            next = jobs.try_recv().ok();
        }
        if let Some(number) = number {
            let started = Instant::now();
            match wal.sync() {
                Ok(took) => {
                    if let Some(t) = took {
                        metrics.record_fsync(t.as_nanos() as u64);
                    }
                    let total = started.elapsed();
                    if total >= SLOW_LOG_WRITE {
                        // Every acknowledgement waits for this: a slow one is a latency spike.
                        tracing::debug!(
                            total_ms = total.as_micros() as f64 / 1000.0,
                            fsync_ms = took.unwrap_or_default().as_micros() as f64 / 1000.0,
                            "slow log write"
                        );
                    }
                    let msg = DriverMsg::Persisted {
                        number,
                        messages,
                        log_bytes: wal.total_bytes(),
                    };
                    if driver.send(msg).is_err() {
                        return;
                    }
                }
                Err(e) => return fail(e.into()),
            }
        }
        for c in compactions {
            match c.adopt(&mut wal) {
                Ok(done) => {
                    if driver.send(DriverMsg::Compacted(Box::new(done))).is_err() {
                        return;
                    }
                }
                Err(e) => return fail(e),
            }
        }
    }
}

/// An entry being assembled from proposal blocks.
#[derive(Debug, Default)]
struct Pending {
    data: Vec<u8>,
    ids: Vec<u64>,
}

impl Pending {
    /// Appends a proposal's block; the first one opens the entry with its stream time (the
    /// leader's wall clock, what `--from-time` subscriptions and time retention go by).
    fn add(&mut self, p: Proposal) {
        if self.data.is_empty() {
            codec::put_entry_time(&mut self.data, snapshot::unix_ms());
        }
        self.data.extend_from_slice(&p.block);
        self.ids.extend_from_slice(&p.ids);
    }
}

/// Entries that arrived while this leader was handing leadership over (raft refuses proposals
/// then). When the transfer ends they are proposed (it was aborted) or their publishes are
/// failed with `NotLeader` naming the new leader, so clients go straight there instead of
/// backing off on `Busy`.
#[derive(Debug, Default)]
struct Held {
    entries: Vec<(Vec<u8>, Vec<u64>)>,
    bytes: usize,
}

/// Bytes held during one transfer before further entries are refused (`Busy`).
const HELD_MAX_BYTES: usize = 64 << 20;

impl Held {
    fn release(&mut self, replica: &mut Replica) {
        if self.entries.is_empty() || replica.transferring() {
            return;
        }
        let leading = replica.role() == raft::StateRole::Leader;
        for (data, ids) in self.entries.drain(..) {
            if leading {
                if let Err(e) = replica.propose(data) {
                    replica.fail_ids(ids, AckError::Dropped(e.to_string()));
                }
            } else {
                replica.fail_ids(ids, AckError::NotLeader);
            }
        }
        self.bytes = 0;
    }
}

fn propose(replica: &mut Replica, entry: &mut Pending, held: &mut Held) {
    // raft keeps the proposed Vec's allocation (as the entry's `Bytes`) for as long as the
    // entry is in the log or the committed stream retains its events. Handing over the assembly
    // buffer itself would pin its high-water capacity (up to `max_entry_bytes`) per entry, even
    // for a 10 KB entry: the leader's memory then grew with every entry retention kept. So the
    // entry gets an exact-size copy and the assembly buffer is reused.
    let data = entry.data.as_slice().to_vec();
    entry.data.clear();
    if replica.transferring() && held.bytes + data.len() <= HELD_MAX_BYTES {
        held.bytes += data.len();
        held.entries.push((data, std::mem::take(&mut entry.ids)));
        return;
    }
    if let Err(e) = replica.propose(data) {
        let err = match replica.leader_id() {
            0 => AckError::Dropped(format!("no leader: {e}")),
            _ => AckError::Dropped(e.to_string()),
        };
        replica.fail_ids(entry.ids.iter().copied(), err);
    }
    entry.ids.clear();
}

/// Administrative requests waiting for their outcome.
#[derive(Debug, Default)]
struct AdminState {
    /// Membership changes: `(log index, term, reply, give up at)`.
    conf: Vec<(u64, u64, AdminReplyTo, Instant)>,
    /// The leader transfer in progress: `(target, reply, give up at)`.
    transfer: Option<(u64, AdminReplyTo, Instant)>,
}

/// How long a membership change may take to be applied before its request is answered with
/// `Timeout` (it may still be applied later: `member list` tells).
const CONF_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

impl AdminState {
    fn start(&mut self, replica: &mut Replica, req: AdminRequest, reply: AdminReplyTo) {
        match req {
            AdminRequest::ListMembers => {
                let r = if replica.role() == raft::StateRole::Leader {
                    Ok(AdminReply::Members(replica.member_list()))
                } else {
                    Err(not_leader(replica))
                };
                reply.send(r);
            }
            AdminRequest::TransferLeader {
                to,
                timeout,
                only_if_leader,
            } => {
                if let Some(id) = only_if_leader.filter(|&id| id != replica.id()) {
                    if replica.role() == raft::StateRole::Leader {
                        reply.send(Err(AdminError::new(
                            ErrorCode::Refused,
                            format!(
                                "node {id} is not the leader (leader: {}); nothing to do",
                                replica.id()
                            ),
                        )));
                        return;
                    }
                }
                if self.transfer.is_some() || !self.conf.is_empty() {
                    reply.send(Err(AdminError::new(
                        ErrorCode::ConfChangeInProgress,
                        "a leader transfer or membership change is in progress; retry",
                    )));
                    return;
                }
                match replica.start_transfer(to) {
                    Ok(target) if target == replica.id() => {
                        reply.send(Ok(AdminReply::Transferred {
                            leader_id: target,
                            term: replica.term(),
                        }))
                    }
                    Ok(target) => {
                        tracing::info!(from = replica.id(), to = target, "transferring leadership");
                        self.transfer = Some((target, reply, Instant::now() + timeout));
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
            req @ (AdminRequest::AddMember { .. } | AdminRequest::RemoveMember { .. }) => {
                if self.transfer.is_some() {
                    reply.send(Err(AdminError::new(
                        ErrorCode::ConfChangeInProgress,
                        "a leader transfer is in progress; retry",
                    )));
                    return;
                }
                match replica.propose_member_change(&req) {
                    Ok(index) => {
                        tracing::info!(?req, index, "membership change proposed");
                        self.conf.push((
                            index,
                            replica.term(),
                            reply,
                            Instant::now() + CONF_CHANGE_TIMEOUT,
                        ));
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
        }
    }

    fn poll(&mut self, replica: &mut Replica) {
        if self.conf.is_empty() && self.transfer.is_none() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.conf.len() {
            let (index, term, _, deadline) = &self.conf[i];
            let outcome = replica.conf_change_outcome(*index, *term);
            let done = match outcome {
                Some(true) => Some(Ok(AdminReply::Members(replica.member_list()))),
                Some(false) => Some(Err(AdminError::new(
                    ErrorCode::NotLeader,
                    "leadership changed before the membership change was committed; check `member list` and retry",
                ))),
                None if now >= *deadline => Some(Err(AdminError::new(
                    ErrorCode::Timeout,
                    format!("membership change at index {index} not applied within {CONF_CHANGE_TIMEOUT:?}; check `member list`"),
                ))),
                None => None,
            };
            match done {
                Some(r) => {
                    let (_, _, reply, _) = self.conf.swap_remove(i);
                    reply.send(r);
                }
                None => i += 1,
            }
        }
        if let Some((target, _, deadline)) = &self.transfer {
            let leader = replica.leader_id();
            let r = if leader != 0 && leader != replica.id() {
                Some(Ok(AdminReply::Transferred {
                    leader_id: leader,
                    term: replica.term(),
                }))
            } else if now >= *deadline {
                Some(Err(AdminError::new(
                    ErrorCode::Timeout,
                    format!("leadership not handed to {target} in time; it may be behind or unreachable"),
                )))
            } else if replica.role() == raft::StateRole::Leader && !replica.transferring() {
                // raft-rs aborted the transfer (its election timeout passed): try again.
                replica.start_transfer(Some(*target)).err().map(Err)
            } else {
                None
            };
            if let Some(r) = r {
                if let Some((_, reply, _)) = self.transfer.take() {
                    reply.send(r);
                }
            }
        }
    }

    fn fail_all(&mut self, why: &str) {
        for (_, _, reply, _) in self.conf.drain(..) {
            reply.send(Err(AdminError::new(ErrorCode::ShuttingDown, why)));
        }
        if let Some((_, reply, _)) = self.transfer.take() {
            reply.send(Err(AdminError::new(ErrorCode::ShuttingDown, why)));
        }
    }
}

fn not_leader(replica: &Replica) -> AdminError {
    match replica.leader_id() {
        0 => AdminError::new(ErrorCode::Unavailable, "no leader elected yet; retry"),
        l => AdminError::new(ErrorCode::NotLeader, format!("node {l} is the leader")),
    }
}
