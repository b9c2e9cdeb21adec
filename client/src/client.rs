//! [`Client`]: publish (retries keep event ids, so a retry is deduplicated), cluster status,
//! administrative requests, and subscriptions.
//!
//! One client multiplexes concurrent requests over one connection (request ids match
//! replies). It follows `NotLeader` redirects, rotates endpoints on connection failures, and
//! backs off on `Unavailable` / `Busy` / `Timeout` until its deadline ([`crate::retry`]).

use crate::conn::{Conn, Reply};
use crate::error::ClientError;
use crate::retry::{self, Attempts, OnCode, Policy, RetryNotice};
use crate::subscription::Subscription;
use crate::tls::{AdminToken, ClientTls};
use bytes::BytesMut;
use eventstream_core::replication::ClusterStatus;
use eventstream_core::{Event, EventId};
use eventstream_proto::admin::{self, AdminReply, AdminRequest, MemberList};
use eventstream_proto::frame::{self, Kind, SubscribeBody};
use eventstream_proto::{codec, DecodeError, Member};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// Node addresses (`host:port`); any of them, the client finds the leader.
    pub endpoints: Vec<String>,
    /// Time one attempt may take.
    pub attempt_timeout: Duration,
    /// Time a call may take including retries.
    pub deadline: Duration,
    /// A client that has never reached any endpoint gives up after this long instead of
    /// waiting out the deadline (a wrong address, a cluster that is down).
    pub unreachable_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Largest frame body accepted.
    pub max_frame: usize,
    /// TLS to the nodes (`None`: plain TCP); see [`ClientTls::from_files`].
    pub tls: Option<ClientTls>,
    /// Admin bearer token sent in every `Hello` (mutating admin operations need it when the
    /// nodes have `admin_token_file`).
    pub token: Option<AdminToken>,
    /// Told what is being retried (the first failed attempt of a call, then at most once a
    /// second); the command-line tools print it.
    pub on_retry: Option<RetryNotice>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("unreachable_timeout", &self.unreachable_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_frame", &self.max_frame)
            .field("tls", &self.tls)
            .field("token", &self.token)
            .field("on_retry", &self.on_retry.is_some())
            .finish()
    }
}

impl ClientConfig {
    /// Defaults for `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            attempt_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            unreachable_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_frame: frame::DEFAULT_MAX_FRAME,
            tls: None,
            token: None,
            on_retry: None,
        }
    }

    /// These settings with TLS and a token as the command-line tools take them: `ca` turns
    /// TLS on, `identity` (certificate, key) is presented for mutual TLS, `server_name`
    /// replaces each endpoint's host in the certificate check, `token` is sent in every
    /// `Hello`. Errors name the flag (`tls-ca`, `tls-cert`, `tls-key`, `tls-server-name`,
    /// `token`): a file that is missing or not PEM, TLS options without a CA, an empty token.
    pub fn secured(
        mut self,
        ca: Option<&std::path::Path>,
        identity: Option<(&std::path::Path, &std::path::Path)>,
        server_name: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        self.tls = match ca {
            Some(ca) => Some(ClientTls::from_files(ca, identity, server_name)?),
            None if identity.is_some() || server_name.is_some() => {
                return Err(ClientError::config(
                    "tls-ca",
                    "TLS options need --tls-ca (the CA the nodes' certificates chain to)",
                ))
            }
            None => None,
        };
        self.token = token.map(AdminToken::from_text).transpose()?;
        Ok(self)
    }
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
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
    /// Some endpoint accepted a connection at least once.
    answered: AtomicBool,
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
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::config(
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
            answered: AtomicBool::new(false),
            id_seed: seed,
            id_counter: AtomicU64::new(0),
        })
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
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

    async fn conn(&self) -> Result<Arc<Conn>, ClientError> {
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
        self.answered.store(true, Ordering::Relaxed);
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn drop_conn(&self, rotate: bool) {
        *self.conn.lock().await = None;
        if rotate {
            self.rotate.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends the request `build` makes until a node answers with something `accept` takes,
    /// retrying by `policy`. `accept` hands back replies it does not take (an unexpected
    /// frame kind: the connection is dropped and the request retried elsewhere).
    async fn call<T>(
        &self,
        policy: &Policy,
        attempt_timeout: Duration,
        build: impl Fn(&mut BytesMut, u64),
        accept: impl Fn(Reply) -> Result<Result<T, ClientError>, Reply>,
    ) -> Result<T, ClientError> {
        let mut attempts = Attempts::new(
            policy,
            self.cfg.deadline,
            self.cfg.unreachable_timeout,
            self.cfg.on_retry.as_ref(),
        );
        loop {
            let attempt = async {
                let c = self.conn().await?;
                c.request(&build, attempt_timeout).await
            };
            let last = match attempt.await {
                Err(e) => {
                    self.drop_conn(true).await;
                    e
                }
                Ok(reply) => match accept(reply) {
                    Ok(done) => return done,
                    Err(Reply::Error(e)) => {
                        let err = ClientError::Server {
                            code: e.code,
                            message: e.message.clone(),
                        };
                        if e.code == eventstream_proto::ErrorCode::NotLeader
                            && !e.leader_addr.is_empty()
                        {
                            *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(e.leader_addr.clone());
                            self.drop_conn(false).await;
                            if attempts.redirect_now() {
                                continue;
                            }
                        } else {
                            match attempts.on_code(e.code) {
                                OnCode::Fail => return Err(err),
                                OnCode::Elsewhere => self.drop_conn(true).await,
                                OnCode::Retry | OnCode::ElsewhereIfRepeated => {}
                            }
                        }
                        err
                    }
                    Err(other) => {
                        self.drop_conn(true).await;
                        ClientError::Decode(DecodeError::Kind(other.kind() as u8))
                    }
                },
            };
            attempts
                .back_off(
                    last,
                    self.answered.load(Ordering::Relaxed),
                    &self.cfg.endpoints,
                )
                .await?;
        }
    }

    /// Publishes `events` and returns their stream offsets once committed on a quorum and
    /// fsynced. Events with [`EventId::AUTO`] get a random id first; every retry resends the
    /// same ids, so an event is stored once however often it is retried. A duplicate whose
    /// original offset is no longer remembered is reported as
    /// [`frame::OFFSET_UNKNOWN`].
    pub async fn publish(&self, mut events: Vec<Event>) -> Result<Vec<u64>, ClientError> {
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
            return Err(ClientError::Decode(DecodeError::TooLong {
                len: size,
                max: self.cfg.max_frame,
            }));
        }
        self.call(
            &retry::PUBLISH,
            self.cfg.attempt_timeout,
            |b, id| frame::put_publish(b, id, &events),
            |reply| match reply {
                Reply::Offsets(o) => Ok(Ok(o)),
                other => Err(other),
            },
        )
        .await
    }

    /// The status of the node this client is connected to (one attempt, no retries).
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        let c = self.conn().await?;
        match c
            .request(frame::put_status, self.cfg.attempt_timeout)
            .await?
        {
            Reply::Status(json) => serde_json::from_slice(&json).map_err(|e| {
                ClientError::Decode(DecodeError::Invalid {
                    field: "status json",
                    reason: e.to_string(),
                })
            }),
            Reply::Error(e) => Err(ClientError::Server {
                code: e.code,
                message: e.message,
            }),
            other => Err(ClientError::Decode(DecodeError::Kind(other.kind() as u8))),
        }
    }

    /// Sends an administrative request to the leader (following `NotLeader` redirects and
    /// retrying `Unavailable` / `ShuttingDown` / lost connections until the deadline, like a
    /// publish). Refusals (`Refused`, `UnknownMember`, `BadRequest`, `ConfChangeInProgress`,
    /// `Timeout`) are returned at once: the operator decides.
    pub async fn admin(&self, req: &AdminRequest) -> Result<AdminReply, ClientError> {
        let attempt_timeout = match req {
            AdminRequest::TransferLeader { timeout, .. } => {
                (*timeout + Duration::from_secs(2)).max(self.cfg.attempt_timeout)
            }
            _ => self.cfg.attempt_timeout.max(Duration::from_secs(15)),
        };
        self.call(
            &retry::ADMIN,
            attempt_timeout,
            |b, id| admin::put_request(b, id, req),
            |reply| match reply {
                Reply::Admin(json) => Ok(admin::decode_reply(&json).map_err(ClientError::from)),
                other => Err(other),
            },
        )
        .await
    }

    /// Adds `member` as a learner (`learner = true`) or promotes the learner with its id.
    pub async fn member_add(
        &self,
        member: Member,
        learner: bool,
    ) -> Result<MemberList, ClientError> {
        self.members_reply(AdminRequest::AddMember { member, learner })
            .await
    }

    /// Removes member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MemberList, ClientError> {
        self.members_reply(AdminRequest::RemoveMember { id }).await
    }

    /// The membership, as the leader sees it.
    pub async fn member_list(&self) -> Result<MemberList, ClientError> {
        self.members_reply(AdminRequest::ListMembers).await
    }

    /// Hands leadership to `to` (or the most caught-up voter); returns `(new leader, term)`.
    pub async fn transfer_leader(
        &self,
        to: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, u64), ClientError> {
        self.transfer_leader_from(None, to, timeout).await
    }

    /// Like [`transfer_leader`](Self::transfer_leader), but only if node `only_if_leader` is
    /// the leader; otherwise the leader answers `Refused` and nothing changes.
    pub async fn transfer_leader_from(
        &self,
        only_if_leader: Option<u64>,
        to: Option<u64>,
        timeout: Duration,
    ) -> Result<(u64, u64), ClientError> {
        match self
            .admin(&AdminRequest::TransferLeader {
                to,
                timeout,
                only_if_leader,
            })
            .await?
        {
            AdminReply::Transferred { leader_id, term } => Ok((leader_id, term)),
            other => Err(ClientError::Decode(DecodeError::Invalid {
                field: "admin reply",
                reason: format!("expected a transfer result, got {other:?}"),
            })),
        }
    }

    async fn members_reply(&self, req: AdminRequest) -> Result<MemberList, ClientError> {
        match self.admin(&req).await? {
            AdminReply::Members(l) => Ok(l),
            other => Err(ClientError::Decode(DecodeError::Invalid {
                field: "admin reply",
                reason: format!("expected a member list, got {other:?}"),
            })),
        }
    }

    /// Commits consumer group `group`'s offsets — for each topic the next offset the group
    /// reads — on the leader, which replicates them as Kafka clients' commits are (the same
    /// table: `eventstream groups describe` and Kafka's OffsetFetch see them). Returns once the
    /// commit is on a quorum and fsynced: the commit's own stream offset. Retried as a publish
    /// is; committing the same offsets twice changes nothing.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<(String, u64)>,
    ) -> Result<u64, ClientError> {
        let commit = frame::GroupCommit {
            group: group.to_owned(),
            offsets,
        };
        if commit.group.is_empty() || commit.group.len() > frame::MAX_GROUP_ID_BYTES {
            return Err(ClientError::config(
                "group",
                format!(
                    "`{}` is {} bytes; 1 to {} allowed",
                    commit.group,
                    commit.group.len(),
                    frame::MAX_GROUP_ID_BYTES
                ),
            ));
        }
        self.call(
            &retry::PUBLISH,
            self.cfg.attempt_timeout,
            |b, id| frame::put_group_commit(b, id, &commit),
            |reply| match reply {
                Reply::Offsets(o) => Ok(Ok(o.first().copied().unwrap_or_default())),
                other => Err(other),
            },
        )
        .await
    }

    /// Group `group`'s committed offsets as the connected node's status reports them:
    /// `(topic, next offset to read)`.
    pub async fn committed_offsets(&self, group: &str) -> Result<Vec<(String, u64)>, ClientError> {
        let status = self.status().await?;
        Ok(status
            .groups
            .iter()
            .filter(|g| g.group == group && g.committed >= 0)
            .map(|g| (g.topic.clone(), g.committed as u64))
            .collect())
    }

    /// Subscribes to the committed stream from `filter.from_offset`.
    pub fn subscribe(&self, filter: SubscribeBody) -> Subscription {
        Subscription::new(
            self.cfg.clone(),
            self.rotate.load(Ordering::Relaxed),
            filter,
        )
    }
}

impl Reply {
    /// The frame kind this reply came in.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Reply::Offsets(_) => Kind::PublishOk,
            Reply::Error(_) => Kind::Error,
            Reply::Status(_) => Kind::StatusOk,
            Reply::Admin(_) => Kind::AdminOk,
        }
    }
}

/// The status of the node at `addr` (one short connection).
pub async fn status_of(addr: &str, timeout: Duration) -> Result<ClusterStatus, ClientError> {
    status_with(&ClientConfig::new(vec![addr.to_owned()]), addr, timeout).await
}

/// Like [`status_of`] with `base`'s TLS settings and token (its endpoints are ignored).
pub async fn status_with(
    base: &ClientConfig,
    addr: &str,
    timeout: Duration,
) -> Result<ClusterStatus, ClientError> {
    let mut cfg = base.clone();
    cfg.endpoints = vec![addr.to_owned()];
    cfg.attempt_timeout = timeout;
    cfg.connect_timeout = timeout;
    let client = Client::new(cfg)?;
    tokio::time::timeout(timeout, client.status())
        .await
        .map_err(|_| ClientError::Timeout(format!("status of {addr}")))?
}
