//! One multiplexed connection to a node: connect (TCP, then TLS when configured, then
//! `Hello`), a writer task that batches queued frames, a reader task that matches replies to
//! requests by request id.
//!
//! Invariant: a request is registered before it is sent, and a reader that stops fails every
//! request still registered (by dropping its sender), so no caller waits for an answer that
//! cannot come; a request registered after the reader stopped sees `dead` and fails at once.

use crate::error::ClientError;
use crate::net::FrameReader;
use crate::tls::{self, AdminToken, ConnReader, ConnWriter};
use crate::ClientConfig;
use bytes::{Bytes, BytesMut};
use eventstream_proto::frame::{self, ErrorBody, Kind};
use eventstream_proto::DecodeError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// A node's answer to one request.
pub(crate) enum Reply {
    /// `PublishOk`: the events' offsets.
    Offsets(Vec<u64>),
    /// `Error`.
    Error(ErrorBody),
    /// `StatusOk`: the status JSON.
    Status(Bytes),
    /// `AdminOk`: the reply JSON.
    Admin(Bytes),
}

type PendingMap = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

pub(crate) struct Conn {
    pub(crate) addr: String,
    tx: mpsc::Sender<BytesMut>,
    pending: PendingMap,
    next_req: AtomicU64,
    pub(crate) dead: Arc<AtomicBool>,
    /// Why the reader stopped (a TLS alert, a decode error), for the "connection lost" error.
    ended: Arc<Mutex<Option<String>>>,
}

/// Connects (TCP, then the TLS handshake when configured, each within the connect timeout)
/// and says hello.
pub(crate) async fn connect(
    addr: &str,
    cfg: &ClientConfig,
) -> Result<(ConnReader, ConnWriter), ClientError> {
    let s = tcp_connect(addr, cfg.connect_timeout).await?;
    let (r, mut w) = match &cfg.tls {
        None => tls::plain(s),
        Some(t) => tokio::time::timeout(cfg.connect_timeout, t.connect(s, addr))
            .await
            .map_err(|_| {
                ClientError::network(
                    addr,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"),
                )
            })?
            .map_err(|e| ClientError::Network {
                peer: addr.to_owned(),
                source: e,
            })?,
    };
    hello(&mut w, addr, cfg.token.as_ref()).await?;
    Ok((r, w))
}

async fn tcp_connect(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Network {
            peer: addr.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        })?
        .map_err(|e| ClientError::Network {
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
) -> Result<(), ClientError> {
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
    written.map_err(|e| ClientError::Network {
        peer: addr.to_owned(),
        source: e,
    })
}

impl Conn {
    pub(crate) async fn open(addr: &str, cfg: &ClientConfig) -> Result<Conn, ClientError> {
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
                    other => Err(DecodeError::Kind(other as u8)),
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

    pub(crate) async fn request(
        &self,
        build: impl FnOnce(&mut BytesMut, u64),
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
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
            ClientError::Network {
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
                Err(ClientError::Timeout(format!(
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
        .and_then(|inner| inner.downcast_ref::<DecodeError>())
        .is_some_and(|d| matches!(d, DecodeError::Version(0x15 | 0x16)));
    if plain && tls_record {
        "the node answered with TLS: connect with --tls-ca (and --tls-cert/--tls-key for mutual TLS)"
            .into()
    } else {
        e.to_string()
    }
}
