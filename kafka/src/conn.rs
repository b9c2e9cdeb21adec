//! The accept loop and one Kafka connection's life.
//!
//! A request is `i32 size | header | body`. The reader decodes each request, hands it to its
//! own task and queues that task's handle; the writer awaits the handles in queue order, so
//! answers leave in the order the requests came (Kafka's rule) while a long-polling fetch or
//! a produce waiting for its commit does not stop the connection from reading on.
//!
//! Invariants:
//! * A request over `max_request_bytes`, one that does not decode, or one of an API or
//!   version this listener does not offer (other than ApiVersions, which answers
//!   `UNSUPPORTED_VERSION` as Kafka does) closes that connection only, after the answers to
//!   the requests before it; it is counted in `protocol_errors` and logged.
//! * With `kafka.tls` every connection starts with a TLS handshake with the node's
//!   certificate; one that fails (plain bytes, an untrusted client certificate) is counted
//!   in `protocol_errors` like a bad request.
//! * With `kafka.sasl_users_file` a connection must authenticate (SaslHandshake, then
//!   SaslAuthenticate) before any request but ApiVersions; another request first, or a failed
//!   authentication, closes it after its answer, counted in `protocol_errors`. The exchange is
//!   handled in the reader, in order, so no request is served before the answer that
//!   authenticates the connection.
//! * An `acks=0` produce has no answer; the writer skips it.
//! * Produce requests hand their batches to the node in the order they came (each waits for
//!   the one before to have handed its over), so a producer's pipelined batches are stored in
//!   order; their commits and every other request still overlap.
//! * Answers queued per connection are bounded (`MAX_QUEUED`): a client that pipelines more
//!   waits for the oldest to be answered.

use crate::api;
use crate::error::KafkaError;
use crate::sasl::{self, SaslUsers};
use bytes::{Bytes, BytesMut};
use eventstream_core::Priority;
use eventstream_node::{Gateway, NodeTls};
use kafka_protocol::messages::ApiKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Requests one connection may have waiting for their answers.
const MAX_QUEUED: usize = 64;

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Largest request accepted, bytes (the size prefix excluded).
    pub max_request_bytes: usize,
    /// Priority of records without a `priority` header.
    pub default_priority: Priority,
    /// This node's address as Kafka clients are told it (`host:port`); `None`: the member
    /// table's Kafka address for this node.
    pub advertised: Option<String>,
    /// The cluster id Metadata reports.
    pub cluster_id: String,
    /// TLS with the node's certificate (`kafka.tls`); `None`: plain TCP.
    pub tls: Option<Arc<NodeTls>>,
    /// Users clients must authenticate as with SASL (`kafka.sasl_users_file`); `None`: no
    /// authentication.
    pub sasl: Option<Arc<SaslUsers>>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            max_request_bytes: 16 << 20,
            default_priority: Priority::Medium,
            advertised: None,
            cluster_id: "eventstream".into(),
            tls: None,
            sasl: None,
        }
    }
}

/// What the listener did, for metrics. Every field only grows, except `open_connections`.
#[derive(Debug, Default)]
pub struct KafkaCounters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open_connections: AtomicU64,
    /// Requests decoded.
    pub requests: AtomicU64,
    /// Connections closed for a bad request (oversized, malformed, unsupported).
    pub protocol_errors: AtomicU64,
    /// Events acknowledged to Kafka producers (`acks=all|1`).
    pub produced_events: AtomicU64,
    /// Events of `acks=0` produce requests admitted (not answered).
    pub unacknowledged_events: AtomicU64,
    /// Produce partitions refused (not leader, busy, bad records, ...).
    pub produce_errors: AtomicU64,
    /// Events returned by fetches.
    pub fetched_events: AtomicU64,
}

impl KafkaCounters {
    /// The counters now, as a node's status carries them.
    pub fn stats(&self) -> eventstream_core::replication::KafkaListenerStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        eventstream_core::replication::KafkaListenerStats {
            open_connections: l(&self.open_connections),
            connections: l(&self.connections),
            requests: l(&self.requests),
            protocol_errors: l(&self.protocol_errors),
            produced_events: l(&self.produced_events),
            unacknowledged_events: l(&self.unacknowledged_events),
            produce_errors: l(&self.produce_errors),
            fetched_events: l(&self.fetched_events),
        }
    }
}

/// What every request of every connection shares.
#[derive(Debug)]
pub(crate) struct Broker {
    pub gateway: Gateway,
    pub opts: KafkaOptions,
    pub counters: Arc<KafkaCounters>,
    /// The consumer groups this node coordinates (while it leads).
    pub groups: Arc<crate::group::Groups>,
}

/// The consumer groups a listener coordinates, shared with whoever reports them (a node's
/// status). Pass the same one to [`serve`] and to the status probe.
#[derive(Debug, Clone, Default)]
pub struct Coordinator(Arc<crate::group::Groups>);

impl Coordinator {
    /// Every group with members or a rebalance under way: state, generation, members.
    pub fn memberships(&self) -> Vec<eventstream_core::replication::GroupMembership> {
        self.0.memberships()
    }
}

/// Serves Kafka clients on `listener` until the runtime stops.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    opts: KafkaOptions,
    counters: Arc<KafkaCounters>,
    coordinator: Coordinator,
) {
    let broker = Arc::new(Broker {
        gateway,
        opts,
        counters,
        groups: coordinator.0,
    });
    tokio::spawn(crate::coordinator::sweep(broker.clone()));
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "kafka listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let broker = broker.clone();
        broker.counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            broker
                .counters
                .open_connections
                .fetch_add(1, Ordering::Relaxed);
            if let Err(e) = connection(sock, peer, &broker).await {
                if !matches!(e, KafkaError::Io(_)) {
                    broker
                        .counters
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, error = %e, "kafka connection closed");
                } else {
                    tracing::debug!(%peer, error = %e, "kafka connection ended");
                }
            }
            broker
                .counters
                .open_connections
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Handshakes (with TLS on), then serves the connection.
async fn connection(
    sock: TcpStream,
    peer: std::net::SocketAddr,
    broker: &Arc<Broker>,
) -> Result<(), KafkaError> {
    match &broker.opts.tls {
        None => {
            let (rd, wr) = sock.into_split();
            serve_connection(rd, wr, peer, broker).await
        }
        Some(tls) => {
            let (rd, wr, _) = tls
                .accept(sock)
                .await
                .map_err(|e| KafkaError::Tls(e.to_string()))?;
            serve_connection(rd, wr, peer, broker).await
        }
    }
}

/// Reads requests until the client closes or sends a bad one; answers in order.
async fn serve_connection<R, W>(
    mut rd: R,
    wr: W,
    peer: std::net::SocketAddr,
    broker: &Arc<Broker>,
) -> Result<(), KafkaError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<JoinHandle<Option<Bytes>>>(MAX_QUEUED);
    let writer = tokio::spawn(write_answers(wr, rx));
    let client = Arc::new(api::Client {
        producer: broker.gateway.producer(),
        host: peer.ip().to_string(),
    });
    let result = read_requests(&mut rd, broker, &client, &tx).await;
    drop(tx);
    let _ = writer.await;
    result
}

async fn read_requests(
    rd: &mut (impl AsyncRead + Unpin),
    broker: &Arc<Broker>,
    client: &Arc<api::Client>,
    tx: &mpsc::Sender<JoinHandle<Option<Bytes>>>,
) -> Result<(), KafkaError> {
    let mut session = broker.opts.sasl.as_ref().map(|_| sasl::Session::new());
    // The last produce request's turn: the next one hands its batches over after it.
    let mut last_produce = None;
    while let Some(body) = read_frame(rd, broker.opts.max_request_bytes).await? {
        let req = api::decode(body)?;
        broker.counters.requests.fetch_add(1, Ordering::Relaxed);
        let gate = match (&mut session, &broker.opts.sasl) {
            (Some(s), Some(users)) if !s.authenticated() => crate::auth::gate(users, s, &req),
            _ => crate::auth::Gate::Pass,
        };
        let req = match gate {
            crate::auth::Gate::Pass => req,
            crate::auth::Gate::Answer(answer) => {
                let answered = tokio::spawn(async move { Some(answer) });
                if tx.send(answered).await.is_err() {
                    break;
                }
                continue;
            }
            crate::auth::Gate::Close(answer, why) => {
                if let Some(answer) = answer {
                    let _ = tx.send(tokio::spawn(async move { Some(answer) })).await;
                }
                return Err(why);
            }
        };
        let turn =
            (req.key == ApiKey::Produce).then(|| crate::produce::Turn::next(&mut last_produce));
        let task = tokio::spawn(api::answer(broker.clone(), client.clone(), req, turn));
        if tx.send(task).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// One request's bytes after its size prefix; `None` at a clean end of the stream.
async fn read_frame(
    rd: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> Result<Option<Bytes>, KafkaError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = i32::from_be_bytes(len);
    if n < 0 || n as usize > max {
        return Err(KafkaError::Oversized { len: n.into(), max });
    }
    let mut body = BytesMut::zeroed(n as usize);
    rd.read_exact(&mut body).await?;
    Ok(Some(body.freeze()))
}

/// Writes each answer, size-prefixed, in the order the requests came.
async fn write_answers(
    mut wr: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<JoinHandle<Option<Bytes>>>,
) {
    while let Some(task) = rx.recv().await {
        let answer = match task.await {
            Ok(Some(a)) => a,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "kafka request task failed");
                break;
            }
        };
        let len = (answer.len() as u32).to_be_bytes();
        if wr.write_all(&len).await.is_err() || wr.write_all(&answer).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}
