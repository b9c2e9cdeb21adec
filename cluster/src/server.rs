//! The node's listener: one TCP port for peers and clients. The first frame (`Hello`) says
//! which. Every connection is its own task; a protocol error (garbage, an oversized or unknown
//! frame) closes that connection only.

use crate::acks::{AckError, AckRegistry};
use crate::codec;
use crate::config::OverloadPolicy;
use crate::driver::{DriverMsg, Proposal};
use crate::frame::{self, ErrorBody, ErrorCode, Kind, Role};
use crate::metrics::NodeMetrics;
use crate::net::{invalid, FrameReader};
use crate::stream::CommittedStream;
use bytes::BytesMut;
use eventstream_core::replication::ReplicationSource;
use eventstream_core::{Engine, Event};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// What connection tasks share.
#[derive(Debug)]
pub struct ServerCtx {
    /// This node's id.
    pub id: u64,
    /// Replication state (leader, members).
    pub metrics: Arc<NodeMetrics>,
    /// The embedded engine (publish goes through its tier rings).
    pub engine: Arc<Engine>,
    /// Waiting publishes.
    pub acks: Arc<AckRegistry>,
    /// The committed stream.
    pub stream: Arc<CommittedStream>,
    /// The driver's inbox (raft messages from peers).
    pub driver: crossbeam_channel::Sender<DriverMsg>,
    /// Largest frame body.
    pub max_frame: usize,
    /// Largest event payload.
    pub max_event_bytes: usize,
    /// Publish commit timeout.
    pub request_timeout: Duration,
    /// Connections closed for protocol errors (for tests and logs).
    pub protocol_errors: AtomicU64,
    /// What a publish gets when an in-flight limit is reached.
    pub overload_policy: OverloadPolicy,
    /// Publish requests one connection may have in flight.
    pub max_inflight_per_connection: usize,
    /// Events in flight over all connections: one permit per event, held until the answer is
    /// queued for the connection's writer.
    pub inflight_events: Arc<Semaphore>,
    /// The number of permits `inflight_events` was created with.
    pub max_inflight_events: usize,
    /// What happened to the publishes this node received.
    pub publishes: PublishCounters,
}

/// Publish requests (and their events) this node received and how each was answered. Every
/// request is counted once in `requests` and once in exactly one outcome.
#[derive(Debug, Default)]
pub struct PublishCounters {
    requests: [AtomicU64; 2],
    acked: [AtomicU64; 2],
    rejected_inflight: [AtomicU64; 2],
    rejected_rings: [AtomicU64; 2],
    rejected_raft: [AtomicU64; 2],
    timed_out: [AtomicU64; 2],
    other_errors: [AtomicU64; 2],
}

/// A snapshot of [`PublishCounters`]: `[requests, events]` per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishCountsSnapshot {
    /// Publish requests received.
    pub requests: [u64; 2],
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

impl PublishCounters {
    fn add(c: &[AtomicU64; 2], events: usize) {
        c[0].fetch_add(1, Ordering::Relaxed);
        c[1].fetch_add(events as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> PublishCountsSnapshot {
        let l = |c: &[AtomicU64; 2]| [c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed)];
        PublishCountsSnapshot {
            requests: l(&self.requests),
            acked: l(&self.acked),
            rejected_inflight: l(&self.rejected_inflight),
            rejected_rings: l(&self.rejected_rings),
            rejected_raft: l(&self.rejected_raft),
            timed_out: l(&self.timed_out),
            other_errors: l(&self.other_errors),
        }
    }
}

/// Accepts connections until the runtime stops.
pub async fn serve(listener: TcpListener, ctx: Arc<ServerCtx>) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(sock, &ctx).await {
                        // A malformed frame, or a stream cut inside a frame.
                        if matches!(
                            e.kind(),
                            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                        ) {
                            ctx.protocol_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, error = %e, "protocol error; connection closed");
                        } else {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn handle(sock: TcpStream, ctx: &Arc<ServerCtx>) -> io::Result<()> {
    let _ = sock.set_nodelay(true);
    let (r, mut w) = sock.into_split();
    let mut reader = FrameReader::new(r, ctx.max_frame);
    let hello = async {
        let hello = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
        let Some((kind, body)) = hello else {
            return Ok(None);
        };
        if kind != Kind::Hello {
            return Err(invalid(format!("first frame must be Hello, got {kind:?}")));
        }
        frame::decode_hello(&body).map_err(invalid).map(Some)
    }
    .await;
    match hello {
        Ok(None) => Ok(()),
        Ok(Some(Role::Peer { from })) => serve_peer(from, reader, ctx).await,
        Ok(Some(Role::Client)) => serve_client(reader, w, ctx).await,
        Err(e) => {
            if e.kind() == io::ErrorKind::InvalidData {
                // Say why before closing: whoever connected may not speak this protocol
                // (version) at all, but a client of another version can still read the error.
                let _ = w.write_all(&protocol_error_frame(0, ctx, &e)).await;
                let _ = w.shutdown().await;
            }
            Err(e)
        }
    }
}

/// The last frame on a connection closed for a protocol error.
fn protocol_error_frame(req_id: u64, ctx: &ServerCtx, e: &io::Error) -> BytesMut {
    error_frame(
        req_id,
        ErrorCode::BadRequest,
        ctx,
        format!("protocol error: {e}; closing this connection"),
    )
}

async fn serve_peer(
    from: u64,
    mut reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    ctx: &Arc<ServerCtx>,
) -> io::Result<()> {
    if ctx.metrics.member(from).is_none() || from == ctx.id {
        return Err(invalid(format!("hello from unknown peer {from}")));
    }
    while let Some((kind, body)) = reader.next().await? {
        if kind != Kind::Raft {
            return Err(invalid(format!(
                "unexpected {kind:?} frame on a peer connection"
            )));
        }
        let msg = frame::decode_raft_message(&body).map_err(invalid)?;
        if msg.to != ctx.id || msg.from != from {
            return Err(invalid(format!(
                "raft message {}→{} on the connection of peer {from} to node {}",
                msg.from, msg.to, ctx.id
            )));
        }
        if ctx.driver.send(DriverMsg::Raft(Box::new(msg))).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

async fn writer_task(mut w: OwnedWriteHalf, mut rx: mpsc::Receiver<BytesMut>) {
    let mut buf = BytesMut::with_capacity(64 << 10);
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < (1 << 20) {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

fn error_frame(
    req_id: u64,
    code: ErrorCode,
    ctx: &ServerCtx,
    message: impl Into<String>,
) -> BytesMut {
    let leader = ctx.metrics.leader_id();
    let leader_addr = ctx
        .metrics
        .member(leader)
        .map(|m| m.addr.clone())
        .unwrap_or_default();
    let mut b = BytesMut::new();
    frame::put_error(
        &mut b,
        &ErrorBody {
            req_id,
            code,
            leader_id: leader,
            leader_addr,
            message: message.into(),
        },
    );
    b
}

async fn serve_client(
    mut reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    w: OwnedWriteHalf,
    ctx: &Arc<ServerCtx>,
) -> io::Result<()> {
    // Small: it bounds what a slow reader (a lagging subscriber) can make us buffer.
    let (tx, rx) = mpsc::channel::<BytesMut>(64);
    let writer = tokio::spawn(writer_task(w, rx));
    // A Mutex only to make the (per-connection, uncontended) publisher `Sync` across awaits.
    let publisher = std::sync::Mutex::new(ctx.engine.publisher());
    // Set when the protocol error was already answered (with the failing request's id).
    let told = std::sync::atomic::AtomicBool::new(false);
    let conn_slots = Arc::new(Semaphore::new(ctx.max_inflight_per_connection));
    let result = async {
        while let Some((kind, body)) = reader.next().await? {
            match kind {
                Kind::Publish => {
                    let (req_id, mut events) = match frame::decode_publish(&body) {
                        Ok(p) => p,
                        Err(e) => {
                            // Answer the request itself (its id is the first field), so a
                            // client fails it as a bad request instead of retrying it.
                            let e = invalid(format!("bad publish: {e}"));
                            let req_id = body
                                .get(..8)
                                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                            told.store(true, Ordering::Relaxed);
                            let _ = tx.send(protocol_error_frame(req_id, ctx, &e)).await;
                            return Err(e);
                        }
                    };
                    let n_events = events.len();
                    PublishCounters::add(&ctx.publishes.requests, n_events);
                    if let Some(reply) = check_publish(req_id, &events, ctx) {
                        PublishCounters::add(&ctx.publishes.other_errors, n_events);
                        if tx.send(reply).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let permits = match inflight_permits(&conn_slots, n_events, ctx).await {
                        Ok(p) => p,
                        Err(why) => {
                            PublishCounters::add(&ctx.publishes.rejected_inflight, n_events);
                            let reply = error_frame(req_id, ErrorCode::Busy, ctx, why);
                            if tx.send(reply).await.is_err() {
                                break;
                            }
                            continue;
                        }
                    };
                    let (ticket, done, ids, outcome) = {
                        let publisher = publisher.lock().unwrap_or_else(|p| p.into_inner());
                        for e in &mut events {
                            if e.id.is_auto() {
                                e.id = publisher.next_id();
                            }
                        }
                        let ids: Vec<u64> = events.iter().map(|e| e.id.0).collect();
                        let (ticket, done) = ctx.acks.register(&ids);
                        let outcome = publisher.publish_batch(&mut events);
                        (ticket, done, ids, outcome)
                    };
                    if !outcome.rejected.is_empty() || outcome.dropped > 0 {
                        ctx.acks.cancel(ticket, &ids);
                        let code = if ctx.engine.workers_alive() {
                            ErrorCode::Busy
                        } else {
                            ErrorCode::ShuttingDown
                        };
                        PublishCounters::add(&ctx.publishes.rejected_rings, n_events);
                        let msg = format!(
                            "{} of {} events refused by full tier rings; retry with the same ids",
                            outcome.rejected.len() + outcome.dropped,
                            ids.len()
                        );
                        if tx.send(error_frame(req_id, code, ctx, msg)).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let tx = tx.clone();
                    let ctx2 = ctx.clone();
                    tokio::spawn(async move {
                        let counters = &ctx2.publishes;
                        let answer = tokio::time::timeout(ctx2.request_timeout, done).await;
                        let counter = match &answer {
                            Ok(Ok(Ok(_))) => &counters.acked,
                            Ok(Ok(Err(AckError::Dropped(_)))) => &counters.rejected_raft,
                            Err(_) => &counters.timed_out,
                            _ => &counters.other_errors,
                        };
                        PublishCounters::add(counter, n_events);
                        let reply = match answer {
                            Ok(Ok(Ok(offsets))) => {
                                let mut b = BytesMut::with_capacity(24 + offsets.len() * 8);
                                frame::put_publish_ok(&mut b, req_id, &offsets);
                                b
                            }
                            Ok(Ok(Err(AckError::NotLeader))) => error_frame(
                                req_id,
                                ErrorCode::NotLeader,
                                &ctx2,
                                "leadership lost before commit; retry with the same ids",
                            ),
                            Ok(Ok(Err(AckError::Dropped(why)))) => {
                                let code = if ctx2.metrics.leader_id() == 0 {
                                    ErrorCode::Unavailable
                                } else {
                                    ErrorCode::Busy
                                };
                                error_frame(req_id, code, &ctx2, why)
                            }
                            Ok(Ok(Err(AckError::ShuttingDown))) | Ok(Err(_))
                                if ctx2.metrics.storage_failure().is_some() =>
                            {
                                let why = ctx2.metrics.storage_failure().unwrap_or_default();
                                storage_failed_frame(req_id, &ctx2, &why)
                            }
                            Ok(Ok(Err(AckError::ShuttingDown))) | Ok(Err(_)) => error_frame(
                                req_id,
                                ErrorCode::ShuttingDown,
                                &ctx2,
                                "node shutting down",
                            ),
                            Err(_) => {
                                ctx2.acks.cancel(ticket, &ids);
                                error_frame(
                                    req_id,
                                    ErrorCode::Timeout,
                                    &ctx2,
                                    "not committed in time; retry with the same ids",
                                )
                            }
                        };
                        let _ = tx.send(reply).await;
                        // The request stops counting against the limits once its answer is
                        // queued: a client that does not read its answers runs out of slots.
                        drop(permits);
                    });
                }
                Kind::Subscribe => {
                    let sub = frame::decode_subscribe(&body).map_err(invalid)?;
                    return subscribe(sub, reader, &tx, ctx).await;
                }
                Kind::Status => {
                    let (req_id, _) = frame::decode_req_id(&body).map_err(invalid)?;
                    // The status, plus this node's publish outcomes (clients that parse only
                    // the status ignore the extra field).
                    let mut v = serde_json::to_value(ctx.metrics.status()).map_err(invalid)?;
                    if let Some(o) = v.as_object_mut() {
                        let p = serde_json::to_value(ctx.publishes.snapshot()).map_err(invalid)?;
                        o.insert("publishes".into(), p);
                    }
                    let json = serde_json::to_vec(&v).map_err(invalid)?;
                    let mut b = BytesMut::new();
                    frame::put_frame_with(&mut b, Kind::StatusOk, |b| {
                        b.extend_from_slice(&req_id.to_le_bytes());
                        b.extend_from_slice(&json);
                    });
                    if tx.send(b).await.is_err() {
                        break;
                    }
                }
                other => return Err(invalid(format!("unexpected {other:?} frame from a client"))),
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        if e.kind() == io::ErrorKind::InvalidData && !told.load(Ordering::Relaxed) {
            let _ = tx.send(protocol_error_frame(0, ctx, e)).await;
        }
    }
    drop(tx);
    let _ = writer.await;
    result
}

/// Takes a connection slot and one node-wide permit per event, per the overload policy:
/// `Block` waits (the connection is not read meanwhile), `Reject` says why it cannot.
async fn inflight_permits(
    conn_slots: &Arc<Semaphore>,
    events: usize,
    ctx: &ServerCtx,
) -> Result<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>), String> {
    // A request larger than the whole node-wide budget takes all of it (never waits forever).
    let n = events.min(ctx.max_inflight_events) as u32;
    let closed = || "node shutting down".to_string();
    match ctx.overload_policy {
        OverloadPolicy::Block => {
            let slot = conn_slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| closed())?;
            let ev = if n == 0 {
                None
            } else {
                Some(
                    ctx.inflight_events
                        .clone()
                        .acquire_many_owned(n)
                        .await
                        .map_err(|_| closed())?,
                )
            };
            Ok((slot, ev))
        }
        OverloadPolicy::Reject => {
            let slot = conn_slots.clone().try_acquire_owned().map_err(|_| {
                format!(
                    "{} publishes already in flight on this connection; retry with the same ids",
                    ctx.max_inflight_per_connection
                )
            })?;
            let ev = if n == 0 {
                None
            } else {
                Some(
                    ctx.inflight_events
                        .clone()
                        .try_acquire_many_owned(n)
                        .map_err(|_| {
                            format!(
                                "node at its limit of {} events in flight; retry with the same ids",
                                ctx.max_inflight_events
                            )
                        })?,
                )
            };
            Ok((slot, ev))
        }
    }
}

/// The answer to a publish on a node whose log cannot be written: not acknowledged, retryable
/// on another node (its events were not persisted here; if a quorum committed them anyway, a
/// retry with the same ids is deduplicated to the original offsets).
fn storage_failed_frame(req_id: u64, ctx: &ServerCtx, why: &str) -> BytesMut {
    error_frame(
        req_id,
        ErrorCode::Unavailable,
        ctx,
        format!(
            "storage failed on node {}: {why}; this node accepts no writes, publish to another node",
            ctx.id
        ),
    )
}

fn check_publish(req_id: u64, events: &[Event], ctx: &ServerCtx) -> Option<BytesMut> {
    if let Some(why) = ctx.metrics.storage_failure() {
        return Some(storage_failed_frame(req_id, ctx, &why));
    }
    if !ctx.metrics.is_leader() {
        let (code, msg) = if ctx.metrics.leader_id() == 0 {
            (ErrorCode::Unavailable, "no leader elected yet; retry")
        } else {
            (ErrorCode::NotLeader, "publish to the leader")
        };
        return Some(error_frame(req_id, code, ctx, msg));
    }
    for e in events {
        if let Err(err) = codec::validate_event(e, ctx.max_event_bytes) {
            return Some(error_frame(
                req_id,
                ErrorCode::BadRequest,
                ctx,
                format!("event {}: {err}", e.id),
            ));
        }
    }
    None
}

async fn subscribe(
    sub: frame::SubscribeBody,
    mut reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    tx: &mpsc::Sender<BytesMut>,
    ctx: &Arc<ServerCtx>,
) -> io::Result<()> {
    let mut watch = ctx.stream.watch();
    let mut next = sub.from_offset;
    let mut batch = Vec::new();
    let topic = sub.topic.clone();
    let min_p = sub.min_priority;
    let keep = move |e: &Event| {
        topic.as_deref().is_none_or(|t| e.topic == t) && min_p.is_none_or(|p| e.priority <= p)
    };
    let budget = (ctx.max_frame / 2).max(1 << 16);
    loop {
        batch.clear();
        next = ctx.stream.read(next, 4096, &keep, &mut batch);
        if !batch.is_empty() {
            let mut b = BytesMut::new();
            let mut start = 0;
            while start < batch.len() {
                // Keep each frame under the size limit the client enforces.
                let mut end = start;
                let mut size = 0;
                while end < batch.len()
                    && (end == start || size + codec::encoded_len(&batch[end].1) + 8 < budget)
                {
                    size += codec::encoded_len(&batch[end].1) + 8;
                    end += 1;
                }
                frame::put_frame_with(&mut b, Kind::Events, |b| {
                    codec::put_offset_events(b, batch[start..end].iter().map(|(o, e)| (*o, e)));
                });
                start = end;
            }
            if tx.send(b).await.is_err() {
                return Ok(());
            }
            continue;
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return Ok(()) },
            // A subscriber sends nothing after Subscribe; anything else (or EOF) ends it.
            f = reader.next() => {
                return match f? {
                    None => Ok(()),
                    Some((k, _)) => Err(invalid(format!("unexpected {k:?} frame on a subscription"))),
                };
            }
        }
    }
}

/// Sends proposals from the engine to the driver (see [`crate::node`]).
pub(crate) fn proposal(block: bytes::Bytes, ids: Vec<u64>) -> Proposal {
    Proposal { block, ids }
}
