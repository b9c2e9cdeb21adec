//! [`Subscription`]: the committed stream from an offset, reconnecting to any endpoint from
//! the next offset after a broken connection.

use crate::conn::connect;
use crate::error::ClientError;
use crate::net::FrameReader;
use crate::tls::{ConnReader, ConnWriter};
use crate::ClientConfig;
use bytes::BytesMut;
use eventstream_core::Event;
use eventstream_proto::frame::{self, ErrorCode, Kind, SubscribeBody};
use eventstream_proto::{codec, DecodeError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// A stream of committed events; reconnects (to any endpoint) from the next offset.
pub struct Subscription {
    endpoints: Vec<String>,
    idx: usize,
    filter: SubscribeBody,
    next_offset: u64,
    cfg: ClientConfig,
    conn: Option<(FrameReader<ConnReader>, ConnWriter)>,
    buf: VecDeque<(u64, Event)>,
    /// Some endpoint accepted a connection at least once.
    answered: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next_offset", &self.next_offset)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(cfg: ClientConfig, idx: usize, filter: SubscribeBody) -> Self {
        Subscription {
            endpoints: cfg.endpoints.clone(),
            idx,
            next_offset: filter.from_offset,
            filter,
            cfg,
            conn: None,
            buf: VecDeque::new(),
            answered: false,
        }
    }

    /// The offset the next event will have at least.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    async fn open(&mut self) -> Result<(), ClientError> {
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
        written.map_err(|e| ClientError::Network {
            peer: addr.clone(),
            source: e,
        })?;
        self.conn = Some((FrameReader::new(r, self.cfg.max_frame), w));
        self.answered = true;
        Ok(())
    }

    /// The next committed event and its offset. Retries connections for up to the client's
    /// deadline before failing.
    pub async fn next(&mut self) -> Result<(u64, Event), ClientError> {
        let mut failing_since: Option<Instant> = None;
        loop {
            if let Some(x) = self.buf.pop_front() {
                self.next_offset = x.0 + 1;
                // A subscription by time continues by offset once it has an event: a
                // reconnect resumes exactly after it.
                self.filter.from_time_ms = None;
                return Ok(x);
            }
            if self.conn.is_none() {
                if let Err(e) = self.open().await {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    let limit = if self.answered {
                        self.cfg.deadline
                    } else {
                        self.cfg.unreachable_timeout.min(self.cfg.deadline)
                    };
                    if since.elapsed() > limit {
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
                        return Err(ClientError::Compacted {
                            requested: self.next_offset,
                            earliest: e.req_id,
                        });
                    }
                    return Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    });
                }
                Ok(Some((k, _))) => {
                    return Err(ClientError::Decode(DecodeError::Kind(k as u8)));
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
    ) -> Result<Option<(u64, Event)>, ClientError> {
        match tokio::time::timeout(timeout, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}
