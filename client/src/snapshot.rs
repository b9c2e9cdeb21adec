//! Backups over the client protocol: download a consistent snapshot of a node's applied
//! state in chunks.

use crate::conn::connect;
use crate::error::ClientError;
use crate::net::FrameReader;
use crate::ClientConfig;
use bytes::{Bytes, BytesMut};
use eventstream_proto::frame::{self, Kind};
use eventstream_proto::DecodeError;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Downloads a consistent snapshot of the applied state of the node at `addr` (a backup; any
/// member can serve it, a caught-up follower spares the leader). The chunks are checked to
/// arrive in order and add up to the announced total; the snapshot's own checksums are the
/// caller's to verify (`eventstream_storage::snapshot::decode`).
/// `base` gives the TLS settings and the admin token (a backup is an admin operation).
pub async fn snapshot_of(
    base: &ClientConfig,
    addr: &str,
    timeout: Duration,
) -> Result<Bytes, ClientError> {
    let work = async {
        let mut cfg = base.clone();
        cfg.connect_timeout = timeout.min(Duration::from_secs(5));
        let (r, mut w) = connect(addr, &cfg).await?;
        let mut b = BytesMut::new();
        frame::put_snapshot_request(&mut b, 1);
        let net = |e: std::io::Error| ClientError::Network {
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
                        return Err(ClientError::Decode(DecodeError::Invalid {
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
                    return Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    });
                }
                other => return Err(ClientError::Decode(DecodeError::Kind(other as u8))),
            }
        }
        Ok(Bytes::from(out))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ClientError::Timeout(format!("snapshot from {addr} within {timeout:?}")))?
}

/// A connection that reads the stream's batch records (what a backup stores next to the
/// snapshot; an admin operation). Each [`fetch`](Self::fetch) is one request and one chunk.
pub struct RecordReader {
    addr: String,
    reader: FrameReader<crate::tls::ConnReader>,
    writer: crate::tls::ConnWriter,
    req_id: u64,
    timeout: Duration,
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RecordReader {
    /// Connects to the node at `addr` with `base`'s TLS settings and admin token; every
    /// fetch must answer within `timeout`.
    pub async fn connect(
        base: &ClientConfig,
        addr: &str,
        timeout: Duration,
    ) -> Result<RecordReader, ClientError> {
        let mut cfg = base.clone();
        cfg.connect_timeout = timeout.min(Duration::from_secs(5));
        let (r, w) = connect(addr, &cfg).await?;
        Ok(RecordReader {
            addr: addr.to_owned(),
            reader: FrameReader::new(r, frame::MAX_STREAM_CHUNK_BYTES as usize + 64),
            writer: w,
            req_id: 0,
            timeout,
        })
    }

    /// The records of the batches from the one holding `from` that start before `to`, up to
    /// `max_bytes` (the node caps it at [`frame::MAX_STREAM_CHUNK_BYTES`]), with the node's
    /// retained range. No records and a first offset above `from`: the node no longer holds
    /// `from`.
    pub async fn fetch(
        &mut self,
        from: u64,
        to: u64,
        max_bytes: u32,
    ) -> Result<frame::StreamChunk, ClientError> {
        self.req_id += 1;
        let mut b = BytesMut::new();
        frame::put_stream_fetch(
            &mut b,
            &frame::StreamFetch {
                req_id: self.req_id,
                from,
                to,
                max_bytes,
            },
        );
        let addr = self.addr.clone();
        let net = |e: std::io::Error| ClientError::Network {
            peer: addr.clone(),
            source: e,
        };
        let work = async {
            self.writer.write_all(&b).await.map_err(net)?;
            self.writer.flush().await.map_err(net)?;
            match self.reader.next().await.map_err(net)? {
                Some((Kind::StreamChunk, body)) => Ok(frame::decode_stream_chunk(&body)?),
                Some((Kind::Error, body)) => {
                    let e = frame::decode_error(&body)?;
                    Err(ClientError::Server {
                        code: e.code,
                        message: e.message,
                    })
                }
                Some((k, _)) => Err(ClientError::Decode(DecodeError::Kind(k as u8))),
                None => Err(net(std::io::ErrorKind::UnexpectedEof.into())),
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(format!("stream records from {}", self.addr)))?
    }
}
