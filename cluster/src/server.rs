//! The node's listener: one TCP port for peers and clients. The first frame (`Hello`) says
//! which. Every connection is its own task; a protocol error (garbage, an oversized or unknown
//! frame) closes that connection only.

use crate::acks::{AckError, AckRegistry};
use crate::codec;
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
use tokio::sync::mpsc;

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
                    if let Some(reply) = check_publish(req_id, &events, ctx) {
                        if tx.send(reply).await.is_err() {
                            break;
                        }
                        continue;
                    }
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
                        let reply = match tokio::time::timeout(ctx2.request_timeout, done).await {
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
                    });
                }
                Kind::Subscribe => {
                    let sub = frame::decode_subscribe(&body).map_err(invalid)?;
                    return subscribe(sub, reader, &tx, ctx).await;
                }
                Kind::Status => {
                    let (req_id, _) = frame::decode_req_id(&body).map_err(invalid)?;
                    let json = serde_json::to_vec(&ctx.metrics.status()).map_err(invalid)?;
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
