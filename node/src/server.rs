//! The node's listener: one TCP port for peers and clients. The first frame (`Hello`) says
//! which. Every connection is its own task; a protocol error (garbage, an oversized or unknown
//! frame) closes that connection only.
//!
//! With TLS on (see [`crate::tls`]) the handshake comes before the `Hello`; a failed handshake
//! (plain bytes, an untrusted certificate) is a protocol error of that connection. A peer
//! `Hello` needs a certificate valid for that member; a client `Hello` may carry the admin
//! bearer token, which sets [`ConnState::authorized`] for [`require_admin`].
//!
//! A client connection ([`serve_client`]) is a reader loop — read a frame, dispatch it by kind
//! to one `handle_*` step of [`ClientConn`], queue the answer — and a writer task. Invariants:
//!
//! * Answers go through one bounded queue to the writer: a client that does not read slows
//!   its own connection only.
//! * A publish holds a connection slot and one node-wide permit per event from admission until
//!   its answer is queued ([`inflight_permits`]): under `Block` the connection is not read
//!   meanwhile, under `Reject` the request is refused with `Busy`.
//! * Every publish request is counted once as received and, when answered, once in exactly one
//!   outcome ([`crate::metrics::PublishCounters`]).
//! * A protocol error is answered (`BadRequest`, naming the failed request when it can) and
//!   closes the connection; a refused request (not leader, unauthorized, busy) does not.
//! * Mutating admin requests and backups need the admin token; read-only ones do not.
//! * A peer connection carries only raft messages from that peer to this node, on the peer
//!   runtime, so that client overload cannot delay them.

use crate::acks::{AckError, AckRegistry, Ticket};
use crate::config::OverloadPolicy;
use crate::driver::{DriverMsg, Proposal};
use crate::error::NodeError;
use crate::metrics::{NodeMetrics, PublishCounters};
use crate::stream::CommittedStream;
use crate::tls::{NodeTls, PeerCert};
use bytes::{Bytes, BytesMut};
use eventstream_client::net::{invalid, FrameReader};
use eventstream_client::tls::{self, AdminToken, ConnReader, ConnWriter};
use eventstream_core::replication::{PublishOutcome, ReplicationSource};
use eventstream_core::{Engine, Event, Publisher};
use eventstream_proto::codec;
use eventstream_proto::frame::{self, ErrorBody, ErrorCode, Kind, Role};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

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
    /// Consumer groups' committed offsets (the state machine writes them).
    pub groups: Arc<crate::groups::GroupOffsets>,
    /// Idempotent producers' last sequences (the state machine writes them).
    pub producers: Arc<crate::producers::ProducerSequences>,
    /// What this node admitted as leader for idempotent producers, in its current term.
    pub(crate) admissions: crate::producers::Admissions,
    /// Copies of the stream to and from other members.
    pub copies: Arc<crate::copy::CopyCounters>,
    /// The driver's inbox (raft messages from peers).
    pub driver: crossbeam_channel::Sender<DriverMsg>,
    /// Largest frame body.
    pub max_frame: usize,
    /// Largest frame body on a peer connection (a snapshot is one raft message).
    pub max_peer_frame: usize,
    /// Largest event payload.
    pub max_event_bytes: usize,
    /// Publish commit timeout.
    pub request_timeout: Duration,
    /// Connections closed for protocol errors (shared with [`NodeMetrics`], which exports it).
    pub protocol_errors: Arc<AtomicU64>,
    /// TLS for this node's port (`None`: plain TCP).
    pub tls: Option<Arc<NodeTls>>,
    /// Bearer token mutating admin operations require (`None`: they are open).
    pub admin_token: Option<AdminToken>,
    /// Failed TLS handshakes (also counted in `protocol_errors`; shared with [`NodeMetrics`]).
    pub tls_handshake_failures: Arc<AtomicU64>,
    /// What a publish gets when an in-flight limit is reached.
    pub overload_policy: OverloadPolicy,
    /// Publish requests one connection may have in flight.
    pub max_inflight_per_connection: usize,
    /// Events in flight over all connections: one permit per event, held until the answer is
    /// queued for the connection's writer.
    pub inflight_events: Arc<Semaphore>,
    /// The number of permits `inflight_events` was created with.
    pub max_inflight_events: usize,
    /// What happened to the publishes this node received (shared with [`NodeMetrics`]).
    pub publishes: Arc<PublishCounters>,
    /// Where inbound peer connections are served (`None`: on the accepting runtime). Kept
    /// apart from client connections so that overload cannot delay raft's messages.
    pub peer_runtime: Option<tokio::runtime::Handle>,
}

/// What the server knows about one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnState {
    /// May run mutating admin operations: the node has no admin token, or the client's
    /// `Hello` carried the right one.
    pub authorized: bool,
    /// The client presented a certificate that chains to `tls.ca` (mutual TLS).
    pub client_cert: bool,
    /// The protocol version the connection speaks (its `Hello` said it): a subscriber of
    /// version 1 gets its events without keys and headers.
    pub version: u8,
}

impl ConnState {
    /// The state of a client connection whose `Hello` carried `presented` (compared in
    /// constant time with the node's token).
    pub fn for_client(
        presented: Option<&[u8]>,
        expected: Option<&AdminToken>,
        cert: &PeerCert,
        version: u8,
    ) -> Self {
        let authorized = match expected {
            None => true,
            Some(t) => presented.is_some_and(|p| t.matches(p)),
        };
        ConnState {
            authorized,
            client_cert: cert.0.is_some(),
            version,
        }
    }
}

/// Call first in every mutating admin handler (member add/remove, leader transfer, snapshot):
/// `Err` is the `Unauthorized` error frame to send back for `req_id` (the connection stays
/// open; read-only requests keep working).
pub fn require_admin(conn: &ConnState, ctx: &ServerCtx, req_id: u64) -> Result<(), BytesMut> {
    if conn.authorized {
        return Ok(());
    }
    Err(error_frame(
        req_id,
        ErrorCode::Unauthorized,
        ctx,
        "admin operation refused: this node requires an admin bearer token \
         (client: --token or EVENTSTREAM_TOKEN; node: admin_token_file)",
    ))
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

/// One connection: the TLS handshake (when on), the `Hello`, then a peer's raft messages or a
/// client's requests.
async fn handle(sock: TcpStream, ctx: &Arc<ServerCtx>) -> io::Result<()> {
    let _ = sock.set_nodelay(true);
    // One deadline for the TLS handshake and the Hello.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // `w` lives until this connection ends, also on a peer connection that never writes.
    let (r, mut w, cert) = accept_tls(sock, ctx, deadline).await?;
    let mut reader = FrameReader::new(r, ctx.max_frame);
    let Some(hello) = read_hello(&mut reader, &mut w, ctx, deadline).await? else {
        return Ok(());
    };
    match hello.role {
        Role::Peer { from } => accept_peer(from, &cert, reader, w, ctx).await,
        Role::Client => {
            let conn_state = ConnState::for_client(
                hello.token.as_deref(),
                ctx.admin_token.as_ref(),
                &cert,
                hello.version,
            );
            serve_client(reader, w, ctx, conn_state).await
        }
    }
}

/// The TLS handshake by `deadline` (plain TCP when TLS is off); a failure is counted.
async fn accept_tls(
    sock: TcpStream,
    ctx: &ServerCtx,
    deadline: tokio::time::Instant,
) -> io::Result<(ConnReader, ConnWriter, PeerCert)> {
    let Some(t) = &ctx.tls else {
        let (r, w) = tls::plain(sock);
        return Ok((r, w, PeerCert::default()));
    };
    let accepted = match tokio::time::timeout_at(deadline, t.accept(sock)).await {
        Ok(accepted) => accepted,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake")),
    };
    if accepted.is_err() {
        ctx.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }
    accepted
}

/// The connection's first frame, which must be a `Hello`, by `deadline`. `None`: the
/// connection closed before it. A malformed one is answered with the protocol error before
/// the connection is closed.
async fn read_hello(
    reader: &mut FrameReader<ConnReader>,
    w: &mut ConnWriter,
    ctx: &ServerCtx,
    deadline: tokio::time::Instant,
) -> io::Result<Option<frame::Hello>> {
    let hello = async {
        let hello = tokio::time::timeout_at(deadline, reader.next())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
        let Some((kind, body)) = hello else {
            return Ok(None);
        };
        if kind != Kind::Hello {
            return Err(invalid(format!("first frame must be Hello, got {kind:?}")));
        }
        frame::decode_hello_with_token(&body)
            .map_err(invalid)
            .map(Some)
    }
    .await;
    if let Err(e) = &hello {
        if e.kind() == io::ErrorKind::InvalidData {
            // Say why before closing: whoever connected may not speak this protocol
            // (version) at all, but a client of another version can still read the error.
            let _ = w.write_all(&protocol_error_frame(0, ctx, e)).await;
            let _ = w.flush().await;
            let _ = w.shutdown().await;
        }
    }
    hello
}

/// A peer's connection: with TLS on, its certificate must be valid for that member. Its
/// first frame says what it is: raft messages, served on the peer runtime (when there is
/// one), or stream fetches of a member copying offsets it lacks ([`crate::copy`]), served
/// here.
async fn accept_peer(
    from: u64,
    cert: &PeerCert,
    mut reader: FrameReader<ConnReader>,
    w: ConnWriter,
    ctx: &Arc<ServerCtx>,
) -> io::Result<()> {
    if ctx.metrics.member(from).is_none() || from == ctx.id {
        return Err(invalid(format!("hello from unknown peer {from}")));
    }
    if let (Some(t), Some(m)) = (&ctx.tls, ctx.metrics.member(from)) {
        t.check_peer(cert, &m.addr)
            .map_err(|e| invalid(format!("peer {from}: {e}")))?;
    }
    // Snapshots travel as one raft message: peers get the larger frame limit.
    reader.set_max_body(ctx.max_peer_frame);
    let first = match reader.next().await? {
        None => return Ok(()),
        Some((Kind::StreamFetch, body)) => {
            let f = frame::decode_stream_fetch(&body).map_err(invalid)?;
            let (tx, rx) = mpsc::channel::<BytesMut>(4);
            let writer = tokio::spawn(writer_task(w, rx));
            let served =
                crate::copy::serve(f, reader, tx, ctx.stream.clone(), ctx.copies.clone()).await;
            let _ = writer.await;
            return served;
        }
        Some(first) => first,
    };
    match &ctx.peer_runtime {
        Some(rt) => {
            let ctx = ctx.clone();
            rt.spawn(async move { serve_peer(from, first, reader, &ctx).await })
                .await
                .unwrap_or(Ok(()))
        }
        None => serve_peer(from, first, reader, ctx).await,
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

/// Hands a peer's raft messages, `first` and then every following frame, to the driver.
async fn serve_peer(
    from: u64,
    first: (Kind, Bytes),
    mut reader: FrameReader<ConnReader>,
    ctx: &Arc<ServerCtx>,
) -> io::Result<()> {
    let mut next = Some(first);
    while let Some((kind, body)) = next {
        if kind != Kind::Raft {
            return Err(invalid(format!(
                "unexpected {kind:?} frame on a peer connection"
            )));
        }
        let msg = crate::transport::decode_raft_message(&body).map_err(invalid)?;
        if msg.to != ctx.id || msg.from != from {
            return Err(invalid(format!(
                "raft message {}→{} on the connection of peer {from} to node {}",
                msg.from, msg.to, ctx.id
            )));
        }
        if ctx.driver.send(DriverMsg::Raft(Box::new(msg))).is_err() {
            return Ok(());
        }
        next = reader.next().await?;
    }
    Ok(())
}

async fn writer_task(mut w: ConnWriter, mut rx: mpsc::Receiver<BytesMut>) {
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
        // TLS holds records until flushed; a no-op on plain TCP.
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
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

/// Serves one client connection: a writer task sends the queued answers, this task reads the
/// requests ([`ClientConn::serve`]). A protocol error is answered before the connection
/// closes: with the failed request's id when it names one (a malformed publish), else 0.
async fn serve_client(
    reader: FrameReader<ConnReader>,
    w: ConnWriter,
    ctx: &Arc<ServerCtx>,
    conn_state: ConnState,
) -> io::Result<()> {
    tracing::debug!(?conn_state, "client connected");
    // Small: it bounds what a slow reader (a lagging subscriber) can make us buffer.
    let (tx, rx) = mpsc::channel::<BytesMut>(64);
    let writer = tokio::spawn(writer_task(w, rx));
    let mut conn = ClientConn {
        ctx,
        state: conn_state,
        tx,
        publisher: std::sync::Mutex::new(ctx.engine.publisher()),
        slots: Arc::new(Semaphore::new(ctx.max_inflight_per_connection)),
        failed_req_id: 0,
    };
    let result = conn.serve(reader).await;
    if let Err(e) = &result {
        if e.kind() == io::ErrorKind::InvalidData {
            let _ = conn
                .tx
                .send(protocol_error_frame(conn.failed_req_id, ctx, e))
                .await;
        }
    }
    // The writer ends once this and every answer task's sender are gone.
    drop(conn);
    let _ = writer.await;
    result
}

/// What a request handler leaves for the connection loop.
#[derive(Debug)]
enum Step {
    /// Queue this answer, then read the next request.
    Answer(BytesMut),
    /// Read the next request: the answer comes from a task (publish, admin) or is queued
    /// already (a backup's chunks).
    Read,
    /// Queue this answer and stop reading (the node is shutting down).
    Last(BytesMut),
    /// The connection's writer is gone: stop reading.
    Gone,
    /// The connection becomes this subscription (a subscriber sends nothing more).
    Subscribe(frame::SubscribeBody),
    /// The connection serves stream records from this fetch on (a backup).
    Copy(frame::StreamFetch),
}

/// One client connection, as its request handlers see it.
struct ClientConn<'a> {
    ctx: &'a Arc<ServerCtx>,
    state: ConnState,
    /// Answers, to the connection's writer task.
    tx: mpsc::Sender<BytesMut>,
    /// Gives events without an id one (and puts them into the tier rings).
    publisher: std::sync::Mutex<Publisher>,
    /// One permit per publish request in flight on this connection.
    slots: Arc<Semaphore>,
    /// The request a protocol error answers (0: it names none).
    failed_req_id: u64,
}

impl ClientConn<'_> {
    /// Reads request frames and dispatches them by kind, queueing the answers, until the
    /// client closes, the writer is gone or a `Subscribe` turns the connection into a
    /// subscription. `Err`: a protocol error (or a broken stream) closes the connection.
    async fn serve(&mut self, mut reader: FrameReader<ConnReader>) -> io::Result<()> {
        while let Some((kind, body)) = reader.next().await? {
            match self.dispatch(kind, &body).await? {
                Step::Answer(reply) => {
                    if self.tx.send(reply).await.is_err() {
                        break;
                    }
                }
                Step::Read => {}
                Step::Last(reply) => {
                    let _ = self.tx.send(reply).await;
                    break;
                }
                Step::Gone => break,
                Step::Subscribe(sub) => {
                    let with_meta = self.state.version >= 2;
                    return subscribe(sub, with_meta, reader, &self.tx, self.ctx).await;
                }
                Step::Copy(f) => {
                    let (stream, copies) = (self.ctx.stream.clone(), self.ctx.copies.clone());
                    return crate::copy::serve(f, reader, self.tx.clone(), stream, copies).await;
                }
            }
        }
        Ok(())
    }

    /// Hands a request to the step for its kind; any other kind is a protocol error.
    async fn dispatch(&mut self, kind: Kind, body: &Bytes) -> io::Result<Step> {
        match kind {
            Kind::Publish => self.handle_publish(body).await,
            Kind::Subscribe => Ok(Step::Subscribe(
                frame::decode_subscribe(body).map_err(invalid)?,
            )),
            Kind::Status => self.handle_status(body),
            Kind::GroupCommit => self.handle_group_commit(body),
            Kind::MemberAdd | Kind::MemberRemove | Kind::MemberList | Kind::LeaderTransfer => {
                self.handle_admin(kind, body)
            }
            Kind::SnapshotRequest => self.handle_snapshot_request(body).await,
            Kind::StreamFetch => self.handle_stream_fetch(body),
            other => Err(invalid(format!("unexpected {other:?} frame from a client"))),
        }
    }

    /// A publish: admitted ([`admit`]) or answered with why not; an admitted one is answered
    /// by a task once it is committed, failed or timed out ([`answer_publish`]), holding its
    /// in-flight permits until then.
    async fn handle_publish(&mut self, body: &Bytes) -> io::Result<Step> {
        let ctx = self.ctx;
        let (req_id, events) = match frame::decode_publish(body) {
            Ok(p) => p,
            Err(e) => {
                // Answer the request itself (its id is the first field), so a client fails it
                // as a bad request instead of retrying it.
                self.failed_req_id = body
                    .get(..8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                return Err(invalid(format!("bad publish: {e}")));
            }
        };
        match admit(ctx, &self.publisher, &self.slots, events, Origin::Client).await {
            Ok(admitted) => {
                tokio::spawn(answer_publish(
                    ctx.clone(),
                    self.tx.clone(),
                    req_id,
                    admitted,
                ));
                Ok(Step::Read)
            }
            Err(r) => Ok(Step::Answer(error_frame(req_id, r.code, ctx, r.message))),
        }
    }

    /// A consumer group's commit from a native subscriber: replicated like a Kafka client's
    /// OffsetCommit ([`crate::Producer::commit_offsets`]) by a task, which answers
    /// `PublishOk` with the commit event's offset or the refusal.
    fn handle_group_commit(&self, body: &[u8]) -> io::Result<Step> {
        let (req_id, c) = frame::decode_group_commit(body).map_err(invalid)?;
        let (ctx, tx) = (self.ctx.clone(), self.tx.clone());
        tokio::spawn(async move {
            let offsets = c
                .offsets
                .into_iter()
                .map(|(topic, offset)| crate::groups::OffsetCommit {
                    topic,
                    partition: 0,
                    offset: offset.min(i64::MAX as u64) as i64,
                    metadata: String::new(),
                })
                .collect();
            let producer = crate::Gateway::new(ctx.clone()).producer();
            let reply = match producer.commit_offsets(&c.group, offsets).await {
                Ok(at) => {
                    let mut b = BytesMut::with_capacity(32);
                    frame::put_publish_ok(&mut b, req_id, &[at]);
                    b
                }
                Err(r) => error_frame(req_id, r.code, ctx.as_ref(), r.message),
            };
            let _ = tx.send(reply).await;
        });
        Ok(Step::Read)
    }

    /// The node's status, plus its publish counters and the stream's retained range.
    fn handle_status(&self, body: &[u8]) -> io::Result<Step> {
        let (req_id, _) = frame::decode_req_id(body).map_err(invalid)?;
        Ok(Step::Answer(status_frame(req_id, self.ctx)?))
    }

    /// A membership change, member list or leader transfer: mutating ones need the admin
    /// token; a follower or a malformed request is answered at once ([`admin_request`]);
    /// the rest goes to the driver, and a task answers it ([`answer_admin`]).
    fn handle_admin(&self, kind: Kind, body: &[u8]) -> io::Result<Step> {
        let ctx = self.ctx;
        if kind != Kind::MemberList {
            // Mutating: the connection's Hello must have carried the admin token.
            let (req_id, _) = frame::decode_req_id(body).map_err(invalid)?;
            if let Err(reply) = require_admin(&self.state, ctx, req_id) {
                return Ok(Step::Answer(reply));
            }
        }
        if let Some(reply) = admin_request(kind, body, ctx) {
            return Ok(Step::Answer(reply));
        }
        let (req_id, req) =
            eventstream_proto::admin::decode_request(kind, body).map_err(invalid)?;
        let wait = match &req {
            eventstream_proto::admin::AdminRequest::TransferLeader { timeout, .. } => {
                *timeout + Duration::from_secs(1)
            }
            _ => ctx.request_timeout.max(Duration::from_secs(12)),
        };
        let (otx, orx) = tokio::sync::oneshot::channel();
        let msg = DriverMsg::Admin {
            req,
            reply: crate::driver::AdminReplyTo::new(move |r| {
                let _ = otx.send(r);
            }),
        };
        if ctx.driver.send(msg).is_err() {
            return Ok(Step::Last(error_frame(
                req_id,
                ErrorCode::ShuttingDown,
                ctx,
                "node shutting down",
            )));
        }
        tokio::spawn(answer_admin(
            ctx.clone(),
            self.tx.clone(),
            req_id,
            wait,
            orx,
        ));
        Ok(Step::Read)
    }

    /// A backup: admin only (it hands out every event); sent in chunks ([`send_snapshot`]).
    /// A backup reading the stream's records: an admin operation, like the snapshot.
    fn handle_stream_fetch(&mut self, body: &[u8]) -> io::Result<Step> {
        let f = frame::decode_stream_fetch(body).map_err(invalid)?;
        if let Err(reply) = require_admin(&self.state, self.ctx, f.req_id) {
            return Ok(Step::Answer(reply));
        }
        Ok(Step::Copy(f))
    }

    async fn handle_snapshot_request(&mut self, body: &[u8]) -> io::Result<Step> {
        let (req_id, _) = frame::decode_req_id(body).map_err(invalid)?;
        if let Err(reply) = require_admin(&self.state, self.ctx, req_id) {
            return Ok(Step::Answer(reply));
        }
        Ok(if send_snapshot(req_id, &self.tx, self.ctx).await {
            Step::Read
        } else {
            Step::Gone
        })
    }
}

/// A publish in the tier rings, waiting for the offsets of its events, with the in-flight
/// permits it holds until it is answered.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Events in the request.
    events: usize,
    ticket: Ticket,
    ids: Vec<u64>,
    done: oneshot::Receiver<Result<Vec<u64>, AckError>>,
    permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

/// Who wrote a publish: a client (which may not write reserved topics) or the node itself
/// (consumer-group commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Client,
    Node,
    /// A client's events followed by one the node adds (an idempotent producer's state).
    Sequenced,
}

/// Admits a publish: counts it as received; refuses it when this node cannot take it
/// ([`publish_refusal`]) or an in-flight limit is reached ([`inflight_permits`]); else gives
/// the events without an id one, registers the request for their offsets and puts them into
/// the tier rings. Every refusal is counted in its outcome.
pub(crate) async fn admit(
    ctx: &ServerCtx,
    publisher: &std::sync::Mutex<Publisher>,
    slots: &Arc<Semaphore>,
    mut events: Vec<Event>,
    origin: Origin,
) -> Result<Admitted, Refusal> {
    let n_events = events.len();
    ctx.publishes.received(n_events);
    if let Some(r) = publish_refusal(&events, ctx, origin) {
        ctx.publishes.answered(PublishOutcome::OtherError, n_events);
        return Err(r);
    }
    let permits = inflight_permits(slots, n_events, ctx)
        .await
        .map_err(|why| {
            ctx.publishes
                .answered(PublishOutcome::RejectedInflight, n_events);
            Refusal::new(ErrorCode::Busy, why)
        })?;
    // Not held across an await: the publisher is one connection's, the lock never contended
    // but by that connection's own requests.
    let publisher = publisher.lock().unwrap_or_else(|p| p.into_inner());
    for e in events.iter_mut() {
        if e.id.is_auto() {
            e.id = publisher.next_id();
        }
    }
    let ids: Vec<u64> = events.iter().map(|e| e.id.0).collect();
    let (ticket, done) = ctx.acks.register(&ids);
    let outcome = publisher.publish_batch(&mut events);
    drop(publisher);
    if !outcome.rejected.is_empty() || outcome.dropped > 0 {
        ctx.acks.cancel(ticket, &ids);
        let code = if ctx.engine.workers_alive() {
            ErrorCode::Busy
        } else {
            ErrorCode::ShuttingDown
        };
        ctx.publishes
            .answered(PublishOutcome::RejectedRings, n_events);
        return Err(Refusal::new(
            code,
            format!(
                "{} of {} events refused by full tier rings; retry with the same ids",
                outcome.rejected.len() + outcome.dropped,
                ids.len()
            ),
        ));
    }
    Ok(Admitted {
        events: n_events,
        ticket,
        ids,
        done,
        permits,
    })
}

/// What waiting for a publish's commit ended with: offsets or why not, the registry gone
/// (shutting down), or the request timeout.
type CommitWait = Result<
    Result<Result<Vec<u64>, AckError>, oneshot::error::RecvError>,
    tokio::time::error::Elapsed,
>;

/// Waits (up to the request timeout) for an admitted publish to be committed and counts its
/// outcome. Its in-flight permits are released when the caller drops what this returns with.
pub(crate) async fn await_commit(
    ctx: &ServerCtx,
    a: Admitted,
) -> (
    Result<Vec<u64>, Refusal>,
    (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
) {
    let answer = tokio::time::timeout(ctx.request_timeout, a.done).await;
    let outcome = match &answer {
        Ok(Ok(Ok(_))) => PublishOutcome::Acked,
        Ok(Ok(Err(AckError::Dropped(_)))) => PublishOutcome::RejectedRaft,
        Err(_) => PublishOutcome::TimedOut,
        _ => PublishOutcome::OtherError,
    };
    ctx.publishes.answered(outcome, a.events);
    (commit_result(answer, a.ticket, &a.ids, ctx), a.permits)
}

/// Waits for a publish's commit and queues its answer. The request stops counting against
/// the in-flight limits only once its answer is queued: a client that does not read its
/// answers runs out of slots.
async fn answer_publish(
    ctx: Arc<ServerCtx>,
    tx: mpsc::Sender<BytesMut>,
    req_id: u64,
    admitted: Admitted,
) {
    let (result, permits) = await_commit(&ctx, admitted).await;
    let reply = match result {
        Ok(offsets) => {
            let mut b = BytesMut::with_capacity(24 + offsets.len() * 8);
            frame::put_publish_ok(&mut b, req_id, &offsets);
            b
        }
        Err(r) => error_frame(req_id, r.code, ctx.as_ref(), r.message),
    };
    let _ = tx.send(reply).await;
    drop(permits);
}

/// Why a publish was not stored (or not known to be): the protocol's error class and a
/// message for the client. Every front end (the native protocol, the Kafka listener) answers
/// with its own encoding of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error class (`retryable()` tells whether the same ids may be sent again).
    pub code: ErrorCode,
    /// What happened, for a person.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// The offsets a publish that waited for its commit got, or why not; a timed-out one is
/// cancelled.
pub(crate) fn commit_result(
    answer: CommitWait,
    ticket: Ticket,
    ids: &[u64],
    ctx: &ServerCtx,
) -> Result<Vec<u64>, Refusal> {
    match answer {
        Ok(Ok(Ok(offsets))) => Ok(offsets),
        Ok(Ok(Err(AckError::NotLeader))) => Err(Refusal::new(
            ErrorCode::NotLeader,
            "leadership lost before commit; retry with the same ids",
        )),
        Ok(Ok(Err(AckError::Dropped(why)))) => {
            let code = if ctx.metrics.leader_id() == 0 {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Busy
            };
            Err(Refusal::new(code, why))
        }
        Ok(Ok(Err(AckError::ShuttingDown))) | Ok(Err(_))
            if ctx.metrics.storage_failure().is_some() =>
        {
            let why = ctx.metrics.storage_failure().unwrap_or_default();
            Err(storage_failed(ctx, &why))
        }
        Ok(Ok(Err(AckError::ShuttingDown))) | Ok(Err(_)) => {
            Err(Refusal::new(ErrorCode::ShuttingDown, "node shutting down"))
        }
        Err(_) => {
            ctx.acks.cancel(ticket, ids);
            Err(Refusal::new(
                ErrorCode::Timeout,
                "not committed in time; retry with the same ids",
            ))
        }
    }
}

/// `StatusOk`: the node's status, plus this node's publish counters (clients that parse only
/// the status ignore the extra fields) and the stream's retained range read now (not the
/// 50 ms status copy).
fn status_frame(req_id: u64, ctx: &ServerCtx) -> io::Result<BytesMut> {
    let mut v = serde_json::to_value(ctx.metrics.status()).map_err(invalid)?;
    if let Some(o) = v.as_object_mut() {
        let p = serde_json::to_value(ctx.publishes.snapshot()).map_err(invalid)?;
        o.insert("publishes".into(), p);
        // The stream's offsets as of now, next to its storage figures.
        if let Some(st) = o.get_mut("stream").and_then(|v| v.as_object_mut()) {
            st.insert("first_offset".into(), ctx.stream.first_offset().into());
            st.insert("next_offset".into(), ctx.stream.next_offset().into());
        }
    }
    let json = serde_json::to_vec(&v).map_err(invalid)?;
    let mut b = BytesMut::new();
    frame::put_frame_with(&mut b, Kind::StatusOk, |b| {
        b.extend_from_slice(&req_id.to_le_bytes());
        b.extend_from_slice(&json);
    });
    Ok(b)
}

/// Waits (up to `wait`) for the driver's answer to an administrative request and queues it.
async fn answer_admin(
    ctx: Arc<ServerCtx>,
    tx: mpsc::Sender<BytesMut>,
    req_id: u64,
    wait: Duration,
    answer: oneshot::Receiver<crate::driver::AdminResult>,
) {
    let reply = match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(r))) => {
            let mut b = BytesMut::new();
            eventstream_proto::admin::put_reply(&mut b, req_id, &r);
            b
        }
        Ok(Ok(Err(e))) => error_frame(req_id, e.code, &ctx, e.message),
        Ok(Err(_)) => error_frame(req_id, ErrorCode::ShuttingDown, &ctx, "node shutting down"),
        Err(_) => error_frame(
            req_id,
            ErrorCode::Timeout,
            &ctx,
            "no answer from the raft driver in time; check `member list`",
        ),
    };
    let _ = tx.send(reply).await;
}

/// Answers an administrative request at once when it cannot go to the driver: a follower
/// redirects to the leader (like a publish), a malformed request gets `BadRequest` (the
/// connection stays open). `None`: hand it to the driver.
fn admin_request(kind: Kind, body: &[u8], ctx: &ServerCtx) -> Option<BytesMut> {
    let req_id = frame::decode_req_id(body).map(|(id, _)| id).unwrap_or(0);
    if let Err(e) = eventstream_proto::admin::decode_request(kind, body) {
        return Some(error_frame(
            req_id,
            ErrorCode::BadRequest,
            ctx,
            e.to_string(),
        ));
    }
    if !ctx.metrics.is_leader() {
        let (code, msg) = if ctx.metrics.leader_id() == 0 {
            (ErrorCode::Unavailable, "no leader elected yet; retry")
        } else {
            (
                ErrorCode::NotLeader,
                "send administrative requests to the leader",
            )
        };
        return Some(error_frame(req_id, code, ctx, msg));
    }
    None
}

/// Answers a backup request: the driver collects the applied state (consistent: between two
/// applies), a blocking task encodes it (the driver does not wait for that), sent in [`frame::SNAPSHOT_CHUNK_BYTES`] pieces through the
/// connection's bounded queue (a slow reader slows the transfer, nothing more). False when the
/// connection is gone.
async fn send_snapshot(req_id: u64, tx: &mpsc::Sender<BytesMut>, ctx: &Arc<ServerCtx>) -> bool {
    let (reply, rx) = tokio::sync::oneshot::channel();
    let taken = if ctx.driver.send(DriverMsg::TakeSnapshot(reply)).is_err() {
        Err("node shutting down".to_owned())
    } else {
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("node shutting down".to_owned()),
            Err(_) => Err("snapshot not taken within 60 s".to_owned()),
        }
    };
    let taken = match taken {
        Ok(data) => {
            tokio::task::spawn_blocking(move || eventstream_storage::snapshot::encode(&data))
                .await
                .map_err(|e| format!("encoding the snapshot failed: {e}"))
        }
        Err(e) => Err(e),
    };
    let bytes = match taken {
        Ok(b) => b,
        Err(msg) => {
            return tx
                .send(error_frame(req_id, ErrorCode::Internal, ctx, msg))
                .await
                .is_ok()
        }
    };
    let total = bytes.len() as u64;
    let mut offset = 0usize;
    loop {
        let end = (offset + frame::SNAPSHOT_CHUNK_BYTES).min(bytes.len());
        let mut b = BytesMut::with_capacity(end - offset + 40);
        frame::put_snapshot_chunk(&mut b, req_id, total, offset as u64, &bytes[offset..end]);
        if tx.send(b).await.is_err() {
            return false;
        }
        offset = end;
        if offset >= bytes.len() {
            return true;
        }
    }
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
fn storage_failed(ctx: &ServerCtx, why: &str) -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        format!(
            "storage failed on node {}: {why}; this node accepts no writes, publish to another node",
            ctx.id
        ),
    )
}

/// Why this node cannot take `events` now (storage failed, not the leader, an invalid event,
/// a client's event of the reserved consumer-group topic), or `None`.
pub(crate) fn publish_refusal(
    events: &[Event],
    ctx: &ServerCtx,
    origin: Origin,
) -> Option<Refusal> {
    if let Some(why) = ctx.metrics.storage_failure() {
        return Some(storage_failed(ctx, &why));
    }
    if !ctx.metrics.is_leader() {
        return Some(if ctx.metrics.leader_id() == 0 {
            Refusal::new(ErrorCode::Unavailable, "no leader elected yet; retry")
        } else {
            Refusal::new(ErrorCode::NotLeader, "publish to the leader")
        });
    }
    let client_events = match origin {
        Origin::Client => events.len(),
        Origin::Sequenced => events.len().saturating_sub(1),
        Origin::Node => 0,
    };
    events.iter().enumerate().find_map(|(i, e)| {
        if i < client_events && crate::is_reserved_topic(&e.topic) {
            return Some(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "event {}: topic {} is reserved (consumer-group commits, producer sequences)",
                    e.id, e.topic
                ),
            ));
        }
        codec::validate_event(e, ctx.max_event_bytes)
            .err()
            .map(|err| Refusal::new(ErrorCode::BadRequest, format!("event {}: {err}", e.id)))
    })
}

/// What a subscriber asked to see.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    pub(crate) topic: Option<String>,
    pub(crate) min_priority: Option<eventstream_core::Priority>,
}

impl Filter {
    fn keeps(&self, e: &Event) -> bool {
        self.topic.as_deref().is_none_or(|t| e.topic == t)
            && self.min_priority.is_none_or(|p| e.priority <= p)
    }
}

/// Events from `next` on: from the memory cache inline, from the segment files on a blocking
/// thread (a subscriber catching up from far back must not hold up the connections this
/// runtime serves).
pub(crate) async fn read_stream(
    ctx: &Arc<ServerCtx>,
    next: u64,
    filter: &Filter,
) -> (Result<u64, Result<u64, NodeError>>, Vec<(u64, Event)>) {
    let mut batch = Vec::new();
    if let Some(r) = ctx
        .stream
        .read_cached(next, 4096, |e| filter.keeps(e), &mut batch)
    {
        return (r.map_err(Err), batch);
    }
    let (stream, filter) = (ctx.stream.clone(), filter.clone());
    blocking(move || {
        let mut batch = Vec::new();
        let r = stream.try_read(next, 4096, |e| filter.keeps(e), &mut batch);
        (r, batch)
    })
    .await
    .unwrap_or_else(|e| (Err(Err(e)), Vec::new()))
}

/// Runs `f` on tokio's blocking pool. A panic in `f` is re-raised here; a runtime shutting
/// down is `Closed`.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NodeError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(NodeError::Closed),
    }
}

/// Encodes `batch` as `Events` frames, each under the size limit the client enforces;
/// `with_meta`: with the events' keys and headers (a subscriber of protocol version 2).
fn events_frames(batch: &[(u64, Event)], budget: usize, with_meta: bool) -> BytesMut {
    let len = if with_meta {
        codec::encoded_len
    } else {
        codec::encoded_len_v1
    };
    let mut b = BytesMut::new();
    let mut start = 0;
    while start < batch.len() {
        let mut end = start;
        let mut size = 0;
        while end < batch.len() && (end == start || size + len(&batch[end].1) + 8 < budget) {
            size += len(&batch[end].1) + 8;
            end += 1;
        }
        frame::put_frame_with(&mut b, Kind::Events, |b| {
            codec::put_offset_events(b, batch[start..end].iter().map(|(o, e)| (*o, e)), with_meta);
        });
        start = end;
    }
    b
}

/// Where a subscription starts: its offset, or the first event at or after its time.
async fn start_offset(ctx: &Arc<ServerCtx>, sub: &frame::SubscribeBody) -> Result<u64, NodeError> {
    let Some(ms) = sub.from_time_ms else {
        return Ok(sub.from_offset);
    };
    let stream = ctx.stream.clone();
    blocking(move || stream.offset_at_time(ms)).await?
}

async fn subscribe(
    sub: frame::SubscribeBody,
    with_meta: bool,
    mut reader: FrameReader<ConnReader>,
    tx: &mpsc::Sender<BytesMut>,
    ctx: &Arc<ServerCtx>,
) -> io::Result<()> {
    let mut watch = ctx.stream.watch();
    let filter = Filter {
        topic: sub.topic.clone(),
        min_priority: sub.min_priority,
    };
    let budget = (ctx.max_frame / 2).max(1 << 16);
    let mut next = match start_offset(ctx, &sub).await {
        Ok(n) => n,
        Err(e) => {
            let _ = tx
                .send(error_frame(0, ErrorCode::Internal, ctx, e.to_string()))
                .await;
            return Ok(());
        }
    };
    loop {
        let from = next;
        let (read, batch) = read_stream(ctx, next, &filter).await;
        next = match read {
            Ok(n) => n,
            Err(Ok(earliest)) => {
                let msg = format!(
                    "offset {next} is compacted; the earliest available offset is {earliest}"
                );
                // The earliest offset travels in the request-id field (see docs/protocol.md).
                let _ = tx
                    .send(error_frame(earliest, ErrorCode::Compacted, ctx, msg))
                    .await;
                return Ok(());
            }
            Err(Err(e)) => {
                tracing::error!(error = %e, "reading the stream for a subscriber");
                let _ = tx
                    .send(error_frame(
                        0,
                        ErrorCode::Internal,
                        ctx,
                        format!("reading the stream: {e}"),
                    ))
                    .await;
                return Ok(());
            }
        };
        if !batch.is_empty() {
            if tx
                .send(events_frames(&batch, budget, with_meta))
                .await
                .is_err()
            {
                return Ok(());
            }
            continue;
        }
        if next != from {
            // Everything read was filtered out: read on.
            continue;
        }
        // Caught up: wait for an append. Or `next` is in offsets this node is still copying
        // from another member (after a snapshot): look again shortly.
        let copying = next < ctx.stream.next_offset();
        tokio::select! {
            changed = watch.changed(), if !copying => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep(Duration::from_millis(200)), if copying => {}
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

#[cfg(test)]
mod admin_auth_tests {
    use super::*;
    use eventstream_proto::Member;

    fn ctx(token: Option<&[u8]>) -> (ServerCtx, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let members = vec![Member {
            id: 1,
            addr: "127.0.0.1:7001".into(),
            http_addr: None,
            kafka_addr: None,
        }];
        let ctx = ServerCtx {
            id: 1,
            metrics: Arc::new(NodeMetrics::new(1, members)),
            engine: Arc::new(Engine::builder().start().expect("engine")),
            acks: AckRegistry::new(),
            stream: CommittedStream::open(dir.path(), Default::default()).unwrap(),
            groups: Default::default(),
            producers: Default::default(),
            admissions: Default::default(),
            copies: Default::default(),
            driver: crossbeam_channel::unbounded().0,
            max_frame: 1 << 20,
            max_peer_frame: 1 << 20,
            max_event_bytes: 1 << 10,
            request_timeout: Duration::from_secs(1),
            protocol_errors: Default::default(),
            tls: None,
            admin_token: token.map(|t| AdminToken::new(t.to_vec())),
            tls_handshake_failures: Default::default(),
            overload_policy: OverloadPolicy::Reject,
            max_inflight_per_connection: 8,
            inflight_events: Arc::new(Semaphore::new(64)),
            max_inflight_events: 64,
            publishes: Default::default(),
            peer_runtime: None,
        };
        (ctx, dir)
    }

    /// The hello a client sent, as the server decodes it, to the connection's state.
    fn state_after_hello(token: Option<&[u8]>, ctx: &ServerCtx) -> ConnState {
        let hello = frame::decode_hello_with_token(&frame::encode_client_hello(token)).unwrap();
        ConnState::for_client(
            hello.token.as_deref(),
            ctx.admin_token.as_ref(),
            &PeerCert::default(),
            hello.version,
        )
    }

    #[test]
    fn hello_token_decides_admin_authorization() {
        let (protected, _d1) = ctx(Some(b"s3cret"));
        assert!(state_after_hello(Some(b"s3cret"), &protected).authorized);
        assert!(!state_after_hello(Some(b"s3creT"), &protected).authorized);
        assert!(!state_after_hello(Some(b"s3cret-and-more"), &protected).authorized);
        assert!(!state_after_hello(None, &protected).authorized);
        // No admin token configured: admin operations are open, token or not.
        let (open, _d2) = ctx(None);
        assert!(state_after_hello(None, &open).authorized);
        assert!(state_after_hello(Some(b"anything"), &open).authorized);
        assert!(!format!("{protected:?}").contains("s3cret"));
    }

    #[test]
    fn require_admin_answers_unauthorized_with_the_request_id() {
        let (ctx, _dir) = ctx(Some(b"s3cret"));
        let denied = state_after_hello(Some(b"nope"), &ctx);
        let frame_bytes = require_admin(&denied, &ctx, 77).unwrap_err();
        let (kind, body, used) = frame::decode_frame(&frame_bytes, 1 << 20)
            .unwrap()
            .expect("one whole frame");
        assert_eq!((kind, used), (Kind::Error, frame_bytes.len()));
        let e = frame::decode_error(body).unwrap();
        assert_eq!((e.req_id, e.code), (77, ErrorCode::Unauthorized));
        assert!(e.message.contains("admin bearer token"), "{}", e.message);
        let allowed = state_after_hello(Some(b"s3cret"), &ctx);
        assert!(require_admin(&allowed, &ctx, 78).is_ok());
    }
}
