//! The driver thread: the only owner of the [`Replica`] (and so of raft-rs's `RawNode`).
//!
//! Each iteration: wait for a message or the next tick → step every queued raft message →
//! merge queued proposal blocks into entries of at most `max_entry_bytes` and propose them →
//! tick when due → handle the Ready (send, apply, persist + one fsync, send, advance) →
//! refresh the shared status every 50 ms. Many events per entry, many entries per fsync.

use crate::acks::{AckError, AckRegistry};
use crate::metrics::NodeMetrics;
use crate::replica::{PersistJob, Replica};
use crate::wal::Wal;
use bytes::Bytes;
use crossbeam_channel::Sender;
use crossbeam_channel::{Receiver, TryRecvError};
use raft::eraftpb::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Stop after this iteration.
    Stop,
}

/// A block of events for the log, from the engine's proposal stage.
#[derive(Debug)]
pub struct Proposal {
    /// One encoded event block (see [`crate::codec`]).
    pub block: Bytes,
    /// Ids of its events, to fail their publishes if raft refuses the entry.
    pub ids: Vec<u64>,
}

/// Where the driver sends outgoing raft messages. Must not block.
pub trait PeerSender: Send {
    /// Queues `msg` for its destination; returns false if it could not be queued.
    fn send(&mut self, msg: Message) -> bool;
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

/// Runs the driver until [`DriverMsg::Stop`], a closed channel, or a storage failure.
pub fn run(
    mut replica: Replica,
    cfg: DriverConfig,
    io: DriverIo,
) -> Result<(), crate::ClusterError> {
    let DriverIo {
        msgs,
        self_tx,
        proposals,
        mut net,
        acks,
        metrics,
    } = io;
    let mut next_tick = Instant::now() + cfg.tick;
    let mut next_status = Instant::now();
    let mut entry = Pending::default();
    let mut unreachable: Vec<u64> = Vec::new();
    let mut stop = false;
    let mut failed = None;
    let mut wal_thread = None;
    let mut jobs_tx = None;
    if cfg.async_persist {
        if let Some(wal) = replica.take_wal() {
            let (tx, rx) = crossbeam_channel::unbounded::<PersistJob>();
            let back = self_tx.clone();
            let m = metrics.clone();
            wal_thread = Some(
                std::thread::Builder::new()
                    .name(format!("es-wal-{}", replica.id()))
                    .spawn(move || wal_loop(wal, rx, back, m))
                    .map_err(|e| crate::ClusterError::Spawn {
                        what: "WAL thread",
                        source: e,
                    })?,
            );
            jobs_tx = Some(tx);
        }
    }
    let result = loop {
        let timeout = next_tick.saturating_duration_since(Instant::now());
        // Wait on both channels: raft messages first (they unblock commits), proposals next.
        crossbeam_channel::select! {
            recv(msgs) -> m => match m {
                Ok(m) => match on_msg(&mut replica, m, &mut *net, &mut unreachable) {
                    Ok(s) => stop |= s,
                    Err(e) => failed = Some(e),
                },
                Err(_) => stop = true,
            },
            recv(proposals) -> p => match p {
                Ok(p) => entry.add(p),
                Err(_) => stop = true,
            },
            default(timeout) => {}
        }
        for _ in 0..100_000 {
            if failed.is_some() {
                break;
            }
            match msgs.try_recv() {
                Ok(m) => match on_msg(&mut replica, m, &mut *net, &mut unreachable) {
                    Ok(s) => stop |= s,
                    Err(e) => failed = Some(e),
                },
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
            }
        }
        if let Some(e) = failed.take() {
            // Leave through the common exit below: join the WAL thread, publish the final
            // status, fail every waiting publish (none of them was acknowledged).
            break Err(e);
        }
        let mut drained = 0usize;
        while let Ok(p) = proposals.try_recv() {
            if !entry.data.is_empty() && entry.data.len() + p.block.len() > cfg.max_entry_bytes {
                propose(&mut replica, &mut entry);
            }
            drained += p.block.len();
            entry.add(p);
            // Bound one iteration's work so ticks and acks keep flowing.
            if drained > 8 * cfg.max_entry_bytes {
                break;
            }
        }
        if !entry.data.is_empty() {
            propose(&mut replica, &mut entry);
        }
        let now = Instant::now();
        if now >= next_tick {
            replica.tick();
            next_tick += cfg.tick;
            if next_tick < now {
                // We fell behind (a slow fsync): do not burst ticks, that would fake timeouts.
                next_tick = now + cfg.tick;
            }
        }
        let mut send = |out: Vec<Message>| {
            for m in out {
                let to = m.to;
                if !net.send(m) {
                    unreachable.push(to);
                }
            }
        };
        let r = match &jobs_tx {
            Some(jobs) => replica.handle_ready_async(&mut send, &mut |job| {
                // The WAL thread outlives this loop; a send only fails if it died, which it
                // reports as StorageFailed.
                let _ = jobs.send(job);
            }),
            None => replica.handle_ready(&mut send),
        };
        if let Err(e) = r {
            break Err(e);
        }
        if !unreachable.is_empty() {
            unreachable.sort_unstable();
            unreachable.dedup();
            for id in unreachable.drain(..) {
                replica.report_unreachable(id);
            }
        }
        if now >= next_status {
            replica.publish_status();
            next_status = now + Duration::from_millis(50);
        }
        if stop {
            break Ok(());
        }
    };
    drop(jobs_tx);
    if let Some(t) = wal_thread {
        let _ = t.join();
    }
    if let Err(
        e @ (crate::ClusterError::StorageIo { .. } | crate::ClusterError::CorruptLog { .. }),
    ) = &result
    {
        // Raft stops with the log: a node that cannot persist must not vote or acknowledge
        // appends. Everything it did not fsync was never reported persisted to raft (no
        // on_persist_ready), so none of it was acknowledged by this node.
        metrics.set_storage_failure(e.to_string());
    }
    replica.publish_status();
    acks.fail_all(AckError::ShuttingDown);
    if let Err(e) = &result {
        tracing::error!(error = %e, "raft driver stopped");
    }
    result
}

fn on_msg(
    replica: &mut Replica,
    m: DriverMsg,
    net: &mut dyn PeerSender,
    unreachable: &mut Vec<u64>,
) -> Result<bool, crate::ClusterError> {
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
            for m in messages {
                let to = m.to;
                if !net.send(m) {
                    unreachable.push(to);
                }
            }
        }
        DriverMsg::StorageFailed(e) => {
            return Err(crate::ClusterError::StorageIo {
                path: "log (WAL thread)".into(),
                source: std::io::Error::other(e),
            })
        }
        DriverMsg::Stop => return Ok(true),
    }
    Ok(false)
}

/// The WAL thread: takes every queued job, writes them, fsyncs once, reports back.
fn wal_loop(
    mut wal: Wal,
    jobs: Receiver<PersistJob>,
    driver: Sender<DriverMsg>,
    metrics: Arc<NodeMetrics>,
) {
    while let Ok(first) = jobs.recv() {
        let mut number = first.number;
        let mut messages = first.messages;
        wal.append_entries(&first.entries);
        if let Some(hs) = &first.hard_state {
            wal.set_hard_state(hs);
        }
        while let Ok(job) = jobs.try_recv() {
            number = job.number;
            messages.extend(job.messages);
            wal.append_entries(&job.entries);
            if let Some(hs) = &job.hard_state {
                wal.set_hard_state(hs);
            }
        }
        match wal.sync() {
            Ok(took) => {
                if let Some(t) = took {
                    metrics.record_fsync(t.as_nanos() as u64);
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
            Err(e) => {
                // No Persisted report for these jobs: raft never learns they are durable here.
                metrics.set_storage_failure(e.to_string());
                let _ = driver.send(DriverMsg::StorageFailed(e.to_string()));
                return;
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
    fn add(&mut self, p: Proposal) {
        self.data.extend_from_slice(&p.block);
        self.ids.extend_from_slice(&p.ids);
    }
}

fn propose(replica: &mut Replica, entry: &mut Pending) {
    let cap = entry.data.capacity();
    let data = std::mem::replace(&mut entry.data, Vec::with_capacity(cap));
    if let Err(e) = replica.propose(data) {
        let err = match replica.leader_id() {
            0 => AckError::Dropped(format!("no leader: {e}")),
            _ => AckError::Dropped(e.to_string()),
        };
        replica.fail_ids(entry.ids.iter().copied(), err);
    }
    entry.ids.clear();
}
