//! The Rust client: publish (with retries that keep event ids, so a retry is deduplicated),
//! subscribe from an offset (reconnecting to any node), and cluster status.
//!
//! One [`Client`] multiplexes concurrent requests over one connection (request ids match
//! replies). It follows `NotLeader` redirects, rotates endpoints on connection failures, and
//! backs off on `Unavailable` / `Busy` / `Timeout`, until its overall deadline.

use crate::codec;
use crate::error::ClusterError;
use crate::frame::{self, ErrorBody, ErrorCode, Kind, SubscribeBody};
use crate::net::FrameReader;
use crate::tls::{self, AdminToken, ClientTls, ConnReader, ConnWriter};
use bytes::{Bytes, BytesMut};
use eventstream_core::replication::ClusterStatus;
use eventstream_core::{Event, EventId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Node addresses (`host:port`); any of them, the client finds the leader.
    pub endpoints: Vec<String>,
    /// Time one attempt may take.
    pub attempt_timeout: Duration,
    /// Time a call may take including retries.
    pub deadline: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Largest frame body accepted.
    pub max_frame: usize,
    /// TLS to the nodes (`None`: plain TCP); see [`ClientTls::from_files`].
    pub tls: Option<ClientTls>,
    /// Admin bearer token sent in every `Hello` (mutating admin operations need it when the
    /// nodes have `admin_token_file`).
    pub token: Option<AdminToken>,
}

impl ClientConfig {
    /// Defaults for `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            max_frame: frame::DEFAULT_MAX_FRAME,
            tls: None,
            token: None,
        }
    }
}

enum Reply {
    Offsets(Vec<u64>),
    Error(ErrorBody),
    Status(Bytes),
    Admin(Bytes),
}

type PendingMap = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

struct Conn {
    addr: String,
    tx: mpsc::Sender<BytesMut>,
    pending: PendingMap,
    next_req: AtomicU64,
    dead: Arc<AtomicBool>,
    /// Why the reader stopped (a TLS alert, a decode error), for the "connection lost" error.
    ended: Arc<Mutex<Option<String>>>,
}

/// Connects (TCP, then the TLS handshake when configured, each within the connect timeout)
/// and says hello.
async fn connect(addr: &str, cfg: &ClientConfig) -> Result<(ConnReader, ConnWriter), ClusterError> {
    let s = tcp_connect(addr, cfg.connect_timeout).await?;
    let (r, mut w) = match &cfg.tls {
        None => tls::plain(s),
        Some(t) => tokio::time::timeout(cfg.connect_timeout, t.connect(s, addr))
            .await
            .map_err(|_| ClusterError::Network {
                peer: addr.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ),
            })?
            .map_err(|e| ClusterError::Network {
                peer: addr.to_owned(),
                source: e,
            })?,
    };
    hello(&mut w, addr, cfg.token.as_ref()).await?;
    Ok((r, w))
}

async fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClusterError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ClusterError::Network {
            peer: addr.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|e| ClusterError::Network {
            peer: addr.to_owned(),
            source: e,
        })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

async fn hello(
    w: &mut ConnWriter,
    addr: &str,
    token: Option<&AdminToken>,
) -> Result<(), ClusterError> {
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_client_hello(token.map(AdminToken::as_bytes)),
    );
    let written = match w.write_all(&b).await {
        Ok(()) => w.flush().await,
        Err(e) => Err(e),
    };
    written.map_err(|e| ClusterError::Network {
        peer: addr.to_owned(),
        source: e,
    })
}

impl Conn {
    async fn open(addr: &str, cfg: &ClientConfig) -> Result<Conn, ClusterError> {
        let (r, mut w) = connect(addr, cfg).await?;
        let (tx, mut rx) = mpsc::channel::<BytesMut>(1024);
        let pending: PendingMap = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let d = dead.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while let Some(first) = rx.recv().await {
                buf.clear();
                buf.extend_from_slice(&first);
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(&more);
                    if buf.len() > 1 << 20 {
                        break;
                    }
                }
                if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                    d.store(true, Ordering::Release);
                    return;
                }
            }
        });
        let p = pending.clone();
        let d = dead.clone();
        let max = cfg.max_frame;
        let ended: Arc<Mutex<Option<String>>> = Arc::default();
        let why = ended.clone();
        let plain = cfg.tls.is_none();
        tokio::spawn(async move {
            let mut reader = FrameReader::new(r, max);
            loop {
                let (kind, body) = match reader.next().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        *why.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(describe_read_error(&e, plain));
                        break;
                    }
                };
                let parsed = match kind {
                    Kind::PublishOk => {
                        frame::decode_publish_ok(&body).map(|(id, o)| (id, Reply::Offsets(o)))
                    }
                    Kind::Error => frame::decode_error(&body).map(|e| (e.req_id, Reply::Error(e))),
                    Kind::StatusOk => frame::decode_req_id(&body)
                        .map(|(id, _)| (id, Reply::Status(body.slice(8..)))),
                    Kind::AdminOk => frame::decode_req_id(&body)
                        .map(|(id, _)| (id, Reply::Admin(body.slice(8..)))),
                    other => Err(crate::error::DecodeError::Kind(other as u8)),
                };
                let Ok((id, reply)) = parsed else { break };
                let waiter = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send(reply);
                }
            }
            d.store(true, Ordering::Release);
            // Dropping the senders fails every request still waiting on this connection.
            p.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        Ok(Conn {
            addr: addr.to_owned(),
            tx,
            pending,
            next_req: AtomicU64::new(1),
            dead,
            ended,
        })
    }

    async fn request(
        &self,
        build: impl FnOnce(&mut BytesMut, u64),
        timeout: Duration,
    ) -> Result<Reply, ClusterError> {
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut b = BytesMut::new();
        build(&mut b, id);
        let lost = || {
            let why = self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone();
            ClusterError::Network {
                peer: self.addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    why.map_or_else(
                        || "connection lost".into(),
                        |w| format!("connection lost: {w}"),
                    ),
                ),
            }
        };
        // The reader may have died (failing every pending request) just before this one was
        // registered: then nobody would ever answer it.
        if self.dead.load(Ordering::Acquire) || self.tx.send(b).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(lost());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(lost()),
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(ClusterError::Timeout(format!(
                    "no reply from {} in {timeout:?}",
                    self.addr
                )))
            }
        }
    }
}

/// A read error as the user should see it: a plain client reading a TLS record (alert 0x15,
/// handshake 0x16) is talking to a TLS node.
fn describe_read_error(e: &std::io::Error, plain: bool) -> String {
    let tls_record = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::error::DecodeError>())
        .is_some_and(|d| matches!(d, crate::error::DecodeError::Version(0x15 | 0x16)));
    if plain && tls_record {
        "the node answered with TLS: connect with --tls-ca (and --tls-cert/--tls-key for mutual TLS)"
            .into()
    } else {
        e.to_string()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A cluster client. Cheap to share (`Arc<Client>`); calls may run concurrently.
pub struct Client {
    cfg: ClientConfig,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    preferred: Mutex<Option<String>>,
    rotate: AtomicUsize,
    id_seed: u64,
    id_counter: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.cfg.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `cfg.endpoints` (connects lazily).
    pub fn new(cfg: ClientConfig) -> Result<Client, ClusterError> {
        if cfg.endpoints.is_empty() {
            return Err(ClusterError::config(
                "endpoints",
                "at least one endpoint is required",
            ));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let seed = splitmix(
            nanos
                ^ (u64::from(std::process::id()) << 32)
                ^ splitmix(INSTANCE.fetch_add(1, Ordering::Relaxed)),
        );
        Ok(Client {
            rotate: AtomicUsize::new((seed % cfg.endpoints.len() as u64) as usize),
            cfg,
            conn: tokio::sync::Mutex::new(None),
            preferred: Mutex::new(None),
            id_seed: seed,
            id_counter: AtomicU64::new(0),
        })
    }

    /// A fresh random event id (never 0).
    pub fn next_id(&self) -> EventId {
        loop {
            let id =
                splitmix(self.id_seed ^ splitmix(self.id_counter.fetch_add(1, Ordering::Relaxed)));
            if id != 0 {
                return EventId(id);
            }
        }
    }

    async fn conn(&self) -> Result<Arc<Conn>, ClusterError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.dead.load(Ordering::Acquire) {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let addr = self
            .preferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| {
                let i = self.rotate.load(Ordering::Relaxed) % self.cfg.endpoints.len();
                self.cfg.endpoints[i].clone()
            });
        let c = Arc::new(Conn::open(&addr, &self.cfg).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn drop_conn(&self, rotate: bool) {
        *self.conn.lock().await = None;
        if rotate {
            self.rotate.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes `events` and returns their stream offsets once committed on a quorum and
    /// fsynced. Events with [`EventId::AUTO`] get a random id first; every retry resends the
    /// same ids, so an event is stored once however often it is retried. A duplicate whose
    /// original offset is no longer remembered is reported as [`crate::acks::OFFSET_UNKNOWN`].
    pub async fn publish(&self, mut events: Vec<Event>) -> Result<Vec<u64>, ClusterError> {
        let mut size = 8 + codec::BLOCK_HEADER_LEN;
        for e in &mut events {
            if e.id.is_auto() {
                e.id = self.next_id();
            }
            codec::validate_event(e, self.cfg.max_frame)?;
            size += codec::encoded_len(e);
        }
        // The server closes a connection that sends an oversized frame; refuse it here with a
        // clear error instead of retrying it until the deadline.
        if size > self.cfg.max_frame {
            return Err(ClusterError::Decode(crate::error::DecodeError::TooLong {
                len: size,
                max: self.cfg.max_frame,
            }));
        }
        let start = Instant::now();
        let mut backoff = Duration::from_millis(10);
        let mut last_err;
        let mut stale_answers = 0u32;
        loop {
            let attempt = async {
                let c = self.conn().await?;
                c.request(
                    |b, id| frame::put_publish(b, id, &events),
                    self.cfg.attempt_timeout,
                )
                .await
            };
            match attempt.await {
                Ok(Reply::Offsets(o)) => return Ok(o),
                Ok(Reply::Error(e)) => {
                    let err = ClusterError::Server {
                        code: e.code,
                        message: e.message.clone(),
                    };
                    match e.code {
                        ErrorCode::BadRequest => return Err(err),
                        ErrorCode::NotLeader if !e.leader_addr.is_empty() => {
                            *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(e.leader_addr.clone());
                            self.drop_conn(false).await;
                            last_err = err;
                            // Redirect immediately once; back off if it keeps bouncing.
                            if start.elapsed() < Duration::from_millis(50) {
                                continue;
                            }
                        }
                        ErrorCode::NotLeader | ErrorCode::ShuttingDown => {
                            self.drop_conn(true).await;
                            last_err = err;
                        }
                        // "No leader" or "not committed in time" twice from the same node: it
                        // may be an old leader cut off from the majority, which has long since
                        // elected a new one — try the next endpoint instead of waiting it out.
                        ErrorCode::Unavailable | ErrorCode::Timeout => {
                            stale_answers += 1;
                            if stale_answers >= 2 {
                                stale_answers = 0;
                                self.drop_conn(true).await;
                            }
                            last_err = err;
                        }
                        _ => last_err = err,
                    }
                }
                Ok(Reply::Status(_) | Reply::Admin(_)) => {
                    last_err =
                        ClusterError::Decode(crate::error::DecodeError::Kind(Kind::StatusOk as u8));
                    self.drop_conn(true).await;
                }
                Err(e) => {
                    self.drop_conn(true).await;
                    last_err = e;
                }
            }
            tracing::debug!(error = %last_err, elapsed = ?start.elapsed(), "publish attempt failed; retrying with the same ids");
            if start.elapsed() + backoff > self.cfg.deadline {
                return Err(ClusterError::Timeout(format!(
                    "publish gave up after {:?}: {last_err}",
                    start.elapsed()
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The status of the node this client is connected to.
    pub async fn status(&self) -> Result<ClusterStatus, ClusterError> {
        let c = self.conn().await?;
        match c
            .request(frame::put_status, self.cfg.attempt_timeout)
            .await?
        {
            Reply::Status(json) => serde_json::from_slice(&json).map_err(|e| {
                ClusterError::Decode(crate::error::DecodeError::Invalid {
                    field: "status json",
                    reason: e.to_string(),
                })
            }),
            Reply::Error(e) => Err(ClusterError::Server {
                code: e.code,
                message: e.message,
            }),
            Reply::Offsets(_) | Reply::Admin(_) => Err(ClusterError::Decode(
                crate::error::DecodeError::Kind(Kind::PublishOk as u8),
            )),
        }
    }

    /// Sends an administrative request to the leader (following `NotLeader` redirects and
    /// retrying `Unavailable` / `ShuttingDown` / lost connections until the deadline, like a
    /// publish). Refusals (`Refused`, `UnknownMember`, `BadRequest`, `ConfChangeInProgress`,
    /// `Timeout`) are returned at once: the operator decides.
    pub async fn admin(
        &self,
        req: &crate::admin::AdminRequest,
    ) -> Result<crate::admin::AdminReply, ClusterError> {
        let attempt_timeout = match req {
            crate::admin::AdminRequest::TransferLeader { timeout, .. } => {
                (*timeout + Duration::from_secs(2)).max(self.cfg.attempt_timeout)
            }
            _ => self.cfg.attempt_timeout.max(Duration::from_secs(15)),
        };
        let start = Instant::now();
        let mut backoff = Duration::from_millis(20);
        let mut last_err;
        loop {
            let attempt = async {
                let c = self.conn().await?;
                c.request(
                    |b, id| crate::admin::put_request(b, id, req),
                    attempt_timeout,
                )
                .await
            };
            match attempt.await {
                Ok(Reply::Admin(json)) => return Ok(crate::admin::decode_reply(&json)?),
                Ok(Reply::Error(e)) => {
                    let err = ClusterError::Server {
                        code: e.code,
                        message: e.message.clone(),
                    };
                    match e.code {
                        ErrorCode::NotLeader if !e.leader_addr.is_empty() => {
                            *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(e.leader_addr.clone());
                            self.drop_conn(false).await;
                            last_err = err;
                            // Redirect immediately once; back off if it keeps bouncing.
                            if start.elapsed() < Duration::from_millis(50) {
                                continue;
                            }
                        }
                        ErrorCode::NotLeader | ErrorCode::ShuttingDown => {
                            self.drop_conn(true).await;
                            last_err = err;
                        }
                        ErrorCode::Unavailable | ErrorCode::Busy => last_err = err,
                        _ => return Err(err),
                    }
                }
                Ok(_) => {
                    self.drop_conn(true).await;
                    last_err = ClusterError::Decode(crate::error::DecodeError::Kind(
                        Kind::PublishOk as u8,
                    ));
                }
                Err(e) => {
                    self.drop_conn(true).await;
                    last_err = e;
                }
            }
            if start.elapsed() + backoff > self.cfg.deadline {
                return Err(ClusterError::Timeout(format!(
                    "administrative request gave up after {:?}: {last_err}",
                    start.elapsed()
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Adds `member` as a learner (`learner = true`) or promotes the learner with its id.
    pub async fn member_add(
        &self,
        member: crate::Member,
        learner: bool,
    ) -> Result<crate::admin::MemberList, ClusterError> {
        self.members_reply(crate::admin::AdminRequest::AddMember { member, learner })
            .await
    }

    /// Removes member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<crate::admin::MemberList, ClusterError> {
        self.members_reply(crate::admin::AdminRequest::RemoveMember { id })
            .await
    }

    /// The membership, as the leader sees it.
    pub async fn member_list(&self) -> Result<crate::admin::MemberList, ClusterError> {
        self.members_reply(crate::admin::AdminRequest::ListMembers)
            .await
    }

    /// Hands leadership to `to` (or the most caught-up voter); returns `(new leader, term)`.
    pub async fn transfer_leader(
        &self,
        to: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, u64), ClusterError> {
        self.transfer_leader_from(None, to, timeout).await
    }

    /// Like [`transfer_leader`](Self::transfer_leader), but only if node `only_if_leader` is
    /// the leader; otherwise the leader answers `Refused` and nothing changes.
    pub async fn transfer_leader_from(
        &self,
        only_if_leader: Option<u64>,
        to: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, u64), ClusterError> {
        match self
            .admin(&crate::admin::AdminRequest::TransferLeader {
                to,
                timeout,
                only_if_leader,
            })
            .await?
        {
            crate::admin::AdminReply::Transferred { leader_id, term } => Ok((leader_id, term)),
            other => Err(ClusterError::Decode(crate::error::DecodeError::Invalid {
                field: "admin reply",
                reason: format!("expected a transfer result, got {other:?}"),
            })),
        }
    }

    async fn members_reply(
        &self,
        req: crate::admin::AdminRequest,
    ) -> Result<crate::admin::MemberList, ClusterError> {
        match self.admin(&req).await? {
            crate::admin::AdminReply::Members(l) => Ok(l),
            other => Err(ClusterError::Decode(crate::error::DecodeError::Invalid {
                field: "admin reply",
                reason: format!("expected a member list, got {other:?}"),
            })),
        }
    }

    /// Subscribes to the committed stream from `filter.from_offset`.
    pub fn subscribe(&self, filter: SubscribeBody) -> Subscription {
        Subscription {
            endpoints: self.cfg.endpoints.clone(),
            idx: self.rotate.load(Ordering::Relaxed),
            next_offset: filter.from_offset,
            filter,
            cfg: self.cfg.clone(),
            conn: None,
            buf: VecDeque::new(),
        }
    }
}

/// The status of the node at `addr` (one short connection).
pub async fn status_of(addr: &str, timeout: Duration) -> Result<ClusterStatus, ClusterError> {
    status_with(&ClientConfig::new(vec![addr.to_owned()]), addr, timeout).await
}

/// Like [`status_of`] with `base`'s TLS settings and token (its endpoints are ignored).
pub async fn status_with(
    base: &ClientConfig,
    addr: &str,
    timeout: Duration,
) -> Result<ClusterStatus, ClusterError> {
    let mut cfg = base.clone();
    cfg.endpoints = vec![addr.to_owned()];
    cfg.attempt_timeout = timeout;
    cfg.connect_timeout = timeout;
    let client = Client::new(cfg)?;
    tokio::time::timeout(timeout, client.status())
        .await
        .map_err(|_| ClusterError::Timeout(format!("status of {addr}")))?
}

/// Downloads a consistent snapshot of the applied state of the node at `addr` (a backup; any
/// member can serve it, a caught-up follower spares the leader). The bytes are checked with
/// [`crate::snapshot::decode`] before they are returned.
/// `base` gives the TLS settings and the admin token (a backup is an admin operation).
pub async fn snapshot_of(
    base: &ClientConfig,
    addr: &str,
    timeout: Duration,
) -> Result<Bytes, ClusterError> {
    let work = async {
        let mut cfg = base.clone();
        cfg.connect_timeout = timeout.min(Duration::from_secs(5));
        let (r, mut w) = connect(addr, &cfg).await?;
        let mut b = BytesMut::new();
        frame::put_snapshot_request(&mut b, 1);
        let net = |e: std::io::Error| ClusterError::Network {
            peer: addr.to_owned(),
            source: e,
        };
        w.write_all(&b).await.map_err(net)?;
        w.flush().await.map_err(net)?;
        let mut reader = FrameReader::new(r, frame::SNAPSHOT_CHUNK_BYTES + 64);
        let mut out: Vec<u8> = Vec::new();
        let mut total = None;
        loop {
            let Some((kind, body)) = reader.next().await.map_err(net)? else {
                return Err(net(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the snapshot transfer",
                )));
            };
            match kind {
                Kind::SnapshotChunk => {
                    let c = frame::decode_snapshot_chunk(&body)?;
                    let t = *total.get_or_insert(c.total);
                    if c.total != t || c.offset != out.len() as u64 {
                        return Err(ClusterError::Decode(crate::error::DecodeError::Invalid {
                            field: "snapshot chunk",
                            reason: format!(
                                "piece at {} of {} after {} bytes of {t}",
                                c.offset,
                                c.total,
                                out.len()
                            ),
                        }));
                    }
                    if out.is_empty() {
                        // The announced total is only trusted up to what actually arrives.
                        out.reserve(t.min(64 << 20) as usize);
                    }
                    out.extend_from_slice(c.data);
                    if out.len() as u64 == t {
                        break;
                    }
                }
                Kind::Error => {
                    let e = frame::decode_error(&body)?;
                    return Err(ClusterError::Server {
                        code: e.code,
                        message: e.message,
                    });
                }
                other => {
                    return Err(ClusterError::Decode(crate::error::DecodeError::Kind(
                        other as u8,
                    )))
                }
            }
        }
        let bytes = Bytes::from(out);
        crate::snapshot::decode(&bytes).map_err(|e| ClusterError::CorruptSnapshot {
            path: format!("snapshot from {addr}"),
            reason: e.to_string(),
        })?;
        Ok(bytes)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClusterError::Timeout(format!("snapshot from {addr} within {timeout:?}")))?
}

/// A stream of committed events; reconnects (to any endpoint) from the next offset.
pub struct Subscription {
    endpoints: Vec<String>,
    idx: usize,
    filter: SubscribeBody,
    next_offset: u64,
    cfg: ClientConfig,
    conn: Option<(FrameReader<ConnReader>, ConnWriter)>,
    buf: VecDeque<(u64, Event)>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The offset the next event will have at least.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    async fn open(&mut self) -> Result<(), ClusterError> {
        let addr = self.endpoints[self.idx % self.endpoints.len()].clone();
        let (r, mut w) = connect(&addr, &self.cfg).await?;
        let mut b = BytesMut::new();
        let f = SubscribeBody {
            from_offset: self.next_offset,
            ..self.filter.clone()
        };
        frame::put_subscribe(&mut b, &f);
        let written = match w.write_all(&b).await {
            Ok(()) => w.flush().await,
            Err(e) => Err(e),
        };
        written.map_err(|e| ClusterError::Network {
            peer: addr.clone(),
            source: e,
        })?;
        self.conn = Some((FrameReader::new(r, self.cfg.max_frame), w));
        Ok(())
    }

    /// The next committed event and its offset. Retries connections for up to the client's
    /// deadline before failing.
    pub async fn next(&mut self) -> Result<(u64, Event), ClusterError> {
        let mut failing_since: Option<Instant> = None;
        loop {
            if let Some(x) = self.buf.pop_front() {
                self.next_offset = x.0 + 1;
                return Ok(x);
            }
            if self.conn.is_none() {
                if let Err(e) = self.open().await {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.cfg.deadline {
                        return Err(e);
                    }
                    self.idx += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let (reader, _) = self.conn.as_mut().expect("opened above");
            match reader.next().await {
                Ok(Some((Kind::Events, body))) => {
                    let evs = codec::decode_offset_events(&body, 0)?;
                    failing_since = None;
                    self.buf
                        .extend(evs.into_iter().filter(|(o, _)| *o >= self.next_offset));
                }
                Ok(Some((Kind::Error, body))) => {
                    let e = frame::decode_error(&body)?;
                    if e.code == ErrorCode::Compacted {
                        return Err(ClusterError::Compacted {
                            requested: self.next_offset,
                            earliest: e.req_id,
                        });
                    }
                    return Err(ClusterError::Server {
                        code: e.code,
                        message: e.message,
                    });
                }
                Ok(Some((k, _))) => {
                    return Err(ClusterError::Decode(crate::error::DecodeError::Kind(
                        k as u8,
                    )));
                }
                Ok(None) | Err(_) => {
                    self.conn = None;
                    self.idx += 1;
                    failing_since.get_or_insert_with(Instant::now);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Like [`next`](Self::next) but gives up after `timeout` with `Ok(None)`.
    pub async fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(u64, Event)>, ClusterError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}
