//! Copying stream offsets between members. A node that a snapshot took past what it held
//! lacks the offsets in between ([`CommittedStream::missing`]); it fetches them from another
//! member over a peer connection and they are spliced in front of its log.
//!
//! * Serving: a peer connection whose first frame is `StreamFetch` is a copy connection; each
//!   `StreamFetch` is answered with one `StreamChunk` of whole batch records read from the
//!   segment files (on the blocking pool, so a copy never holds up the connections the
//!   runtime serves). Raft traffic keeps its own connections and runtime.
//! * Fetching: [`run`] polls for missing offsets and copies them from the leader (or, when
//!   this node leads or the leader fails, from another member), paced to
//!   `storage.copy_bytes_per_sec`. Every record is checked by checksum and offset before it
//!   is stored ([`store_chunk`]); a bad one closes the connection and the next member is tried.
//!
//! # Invariants
//! * Only whole batch records at exactly the backfill's next offset are stored: the offsets of
//!   a record are those of the same batch on the member it came from (offsets are assigned by
//!   the replicated apply step), so the copied range is identical to the cluster's.
//! * A member that no longer holds the backfill's next offset (its retention removed it)
//!   restarts the backfill at its first offset: what is copied is always contiguous.

use crate::error::NodeError;
use crate::metrics::NodeMetrics;
use crate::stream::CommittedStream;
use crate::tls::NodeTls;
use bytes::{Bytes, BytesMut};
use eventstream_client::net::{invalid, FrameReader};
use eventstream_client::tls::{self, ConnReader, ConnWriter};
use eventstream_proto::frame::{self, Kind, Role, StreamChunk, StreamFetch};
use eventstream_storage::stream::batch;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use eventstream_proto::frame::MAX_STREAM_CHUNK_BYTES as MAX_CHUNK_BYTES;

/// Progress of copying, for metrics and status.
#[derive(Debug, Default)]
pub struct CopyCounters {
    /// Record bytes copied from other members.
    pub bytes: AtomicU64,
    /// Batches copied.
    pub batches: AtomicU64,
    /// Times the backfill restarted further on (the member had deleted its start).
    pub restarts: AtomicU64,
    /// Copy connections that failed (unreachable member, bad record).
    pub failures: AtomicU64,
    /// Record bytes served to other members.
    pub served_bytes: AtomicU64,
}

/// What storing one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Records stored; copying continues from `next`.
    Copied {
        /// Where copying continues.
        next: u64,
        /// Record bytes stored.
        bytes: u64,
    },
    /// The member no longer holds the backfill's start: it restarted at `at`.
    Restarted {
        /// The member's first offset.
        at: u64,
    },
    /// The member has nothing for the range yet (it is behind too).
    Nothing,
    /// Nothing is missing any more.
    Done,
}

/// Stores the records of `chunk` that continue the backfill (records before its next offset
/// are skipped, none at or past the log's first offset is wanted). A record that does not
/// decode, fails its checksum or does not start at the next offset is an error: the member
/// sent something wrong and is not asked again on this connection.
pub fn store_chunk(stream: &CommittedStream, chunk: &StreamChunk) -> Result<Stored, NodeError> {
    let Some(missing) = stream.missing() else {
        return Ok(Stored::Done);
    };
    if chunk.first > missing.start {
        stream.backfill_restart(chunk.first)?;
        return Ok(Stored::Restarted { at: chunk.first });
    }
    let mut rest: Bytes = chunk.records.clone();
    let (mut next, mut bytes) = (missing.start, 0u64);
    while !rest.is_empty() {
        let Some(b) = batch::decode(&rest)? else {
            return Err(NodeError::Decode(eventstream_proto::DecodeError::Invalid {
                field: "stream chunk",
                reason: format!("{} bytes that are not a whole batch record", rest.len()),
            }));
        };
        rest = rest.slice(b.record.len()..);
        if b.next_offset() <= next {
            continue;
        }
        if b.base_offset >= missing.end {
            break;
        }
        next = stream.backfill_record(&b.record)?;
        bytes += b.record.len() as u64;
    }
    Ok(if bytes == 0 {
        Stored::Nothing
    } else {
        Stored::Copied { next, bytes }
    })
}

/// The answer to `f` from this node's stream: the records of the batches from the one
/// holding `f.from` that start before `f.to`, up to about `f.max_bytes` (capped); an empty
/// chunk with this node's first offset when `f.from` is older than that.
pub fn answer_fetch(stream: &CommittedStream, f: &StreamFetch) -> Result<BytesMut, NodeError> {
    let max = f.max_bytes.clamp(1, MAX_CHUNK_BYTES) as usize;
    let (first, next) = (stream.contiguous_first(), stream.next_offset());
    let mut records = BytesMut::new();
    if f.from >= first {
        if let Ok(batches) = stream.records(f.from, max)? {
            for r in batches {
                let Some(b) = batch::decode(&r)? else { break };
                if b.base_offset >= f.to {
                    break;
                }
                records.extend_from_slice(&r);
            }
        }
    }
    let mut out = BytesMut::with_capacity(records.len() + 64);
    frame::put_stream_chunk(&mut out, f.req_id, first, next, &records);
    Ok(out)
}

/// Serves a copy connection (a member copying offsets it lacks, or a backup) whose first
/// fetch was `first`: one chunk per fetch, queued to the connection's writer `tx`, until the
/// other side hangs up. Anything but a fetch closes the connection.
pub(crate) async fn serve(
    first: StreamFetch,
    mut reader: FrameReader<ConnReader>,
    tx: mpsc::Sender<BytesMut>,
    stream: Arc<CommittedStream>,
    counters: Arc<CopyCounters>,
) -> io::Result<()> {
    let mut f = first;
    loop {
        let s = stream.clone();
        let answer = tokio::task::spawn_blocking(move || answer_fetch(&s, &f))
            .await
            .map_err(io::Error::other)?
            .map_err(io::Error::other)?;
        counters
            .served_bytes
            .fetch_add(answer.len() as u64, Ordering::Relaxed);
        if tx.send(answer).await.is_err() {
            return Ok(());
        }
        f = match reader.next().await? {
            None => return Ok(()),
            Some((Kind::StreamFetch, body)) => {
                frame::decode_stream_fetch(&body).map_err(invalid)?
            }
            Some((k, _)) => {
                return Err(invalid(format!(
                    "unexpected {k:?} frame on a copy connection"
                )))
            }
        };
    }
}

/// What the copying task needs.
pub(crate) struct Copier {
    pub id: u64,
    pub stream: Arc<CommittedStream>,
    pub metrics: Arc<NodeMetrics>,
    pub tls: Option<Arc<NodeTls>>,
    pub bytes_per_sec: u64,
    pub max_frame: usize,
    pub counters: Arc<CopyCounters>,
}

/// Copies missing offsets until the runtime stops: checks every `poll`, tries the leader
/// first, then every other member.
pub(crate) async fn run(c: Copier, poll: Duration) {
    loop {
        tokio::time::sleep(poll).await;
        if c.stream.missing().is_none() {
            continue;
        }
        for source in sources(&c) {
            match copy_from(&c, source).await {
                Ok(()) => break,
                Err(e) => {
                    c.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(id = c.id, source, error = %e, "copying the stream from a member failed");
                }
            }
        }
    }
}

/// Members to copy from, the leader first.
fn sources(c: &Copier) -> Vec<u64> {
    let leader = c.metrics.leader_id();
    let mut ids: Vec<u64> = c
        .metrics
        .members()
        .iter()
        .map(|m| m.id)
        .filter(|&id| id != c.id)
        .collect();
    ids.sort_by_key(|&id| id != leader);
    ids
}

/// Copies from member `source` until nothing is missing, the member has nothing more for
/// now, or the connection fails.
async fn copy_from(c: &Copier, source: u64) -> Result<(), NodeError> {
    let Some(m) = c.metrics.member(source) else {
        return Ok(());
    };
    let net = |e: io::Error| NodeError::Network {
        peer: m.addr.clone(),
        source: e,
    };
    let (r, mut w) = tokio::time::timeout(Duration::from_secs(5), dial(&m.addr, c))
        .await
        .map_err(|_| NodeError::Timeout(format!("connecting to member {source} at {}", m.addr)))?
        .map_err(net)?;
    let mut reader = FrameReader::new(r, c.max_frame);
    let started = Instant::now();
    let mut copied = 0u64;
    let mut req_id = 0;
    while let Some(missing) = c.stream.missing() {
        req_id += 1;
        let mut b = BytesMut::new();
        frame::put_stream_fetch(
            &mut b,
            &StreamFetch {
                req_id,
                from: missing.start,
                to: missing.end,
                max_bytes: MAX_CHUNK_BYTES,
            },
        );
        w.write_all(&b).await.map_err(net)?;
        w.flush().await.map_err(net)?;
        let chunk = match reader.next().await.map_err(net)? {
            Some((Kind::StreamChunk, body)) => frame::decode_stream_chunk(&body)?,
            Some((k, _)) => {
                return Err(NodeError::Decode(eventstream_proto::DecodeError::Kind(
                    k as u8,
                )))
            }
            None => return Err(net(io::ErrorKind::UnexpectedEof.into())),
        };
        let stream = c.stream.clone();
        let stored = tokio::task::spawn_blocking(move || store_chunk(&stream, &chunk))
            .await
            .map_err(|_| NodeError::Closed)??;
        match stored {
            Stored::Copied { bytes, .. } => {
                copied += bytes;
                c.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                c.counters.batches.fetch_add(1, Ordering::Relaxed);
                pace(c.bytes_per_sec, copied, started).await;
            }
            Stored::Restarted { at } => {
                c.counters.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    id = c.id,
                    source,
                    at,
                    "member no longer holds the offsets to copy; copying from its first"
                );
            }
            Stored::Nothing => {
                return Err(NodeError::Timeout(format!(
                    "member {source} has nothing from {} yet",
                    missing.start
                )))
            }
            Stored::Done => break,
        }
    }
    if copied > 0 {
        tracing::info!(
            id = c.id,
            source,
            bytes = copied,
            secs = started.elapsed().as_secs_f64(),
            "stream copy complete"
        );
    }
    Ok(())
}

/// Sleeps until `copied` bytes since `started` are within `bytes_per_sec` (0 = no limit).
async fn pace(bytes_per_sec: u64, copied: u64, started: Instant) {
    if bytes_per_sec == 0 {
        return;
    }
    let due = Duration::from_secs_f64(copied as f64 / bytes_per_sec as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// A peer connection to `addr`: TLS when on, then the peer `Hello`.
async fn dial(addr: &str, c: &Copier) -> io::Result<(ConnReader, ConnWriter)> {
    let s = TcpStream::connect(addr).await?;
    let _ = s.set_nodelay(true);
    let (r, mut w) = match &c.tls {
        None => tls::plain(s),
        Some(t) => t.connect(s, addr).await?,
    };
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(Role::Peer { from: c.id }),
    );
    w.write_all(&b).await?;
    Ok((r, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamSettings;
    use bytes::BytesMut;
    use eventstream_core::{Event, Priority};
    use eventstream_proto::codec;

    fn settings() -> StreamSettings {
        StreamSettings {
            segment_bytes: 1 << 10,
            cache_bytes: 0,
        }
    }

    /// A stream of `n` one-event batches, event id = offset + 1.
    fn source(dir: &std::path::Path, n: u64) -> Arc<CommittedStream> {
        let s = CommittedStream::open(dir, settings()).unwrap();
        for i in 0..n {
            let mut b = BytesMut::new();
            codec::put_event(
                &mut b,
                &Event::new("t", Priority::Low, vec![7; 40]).with_id(i + 1),
            );
            s.append(1, 1_000 + i, &b).unwrap();
        }
        s
    }

    /// A node whose snapshot is at `next` and that held nothing: it lacks `first..next`.
    fn behind(dir: &std::path::Path, first: u64, next: u64) -> Arc<CommittedStream> {
        let s = CommittedStream::open(dir, settings()).unwrap();
        s.align(first, next).unwrap();
        assert_eq!(s.missing(), Some(first..next));
        s
    }

    fn chunk_of(s: &CommittedStream, from: u64, to: u64, max_bytes: u32) -> StreamChunk {
        let f = StreamFetch {
            req_id: 1,
            from,
            to,
            max_bytes,
        };
        let b = answer_fetch(s, &f).unwrap().freeze();
        let (kind, body, _) = frame::decode_frame(&b, usize::MAX).unwrap().unwrap();
        assert_eq!(kind, Kind::StreamChunk);
        frame::decode_stream_chunk(&Bytes::copy_from_slice(body)).unwrap()
    }

    #[test]
    fn copying_chunk_by_chunk_fills_the_gap_and_splices() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = source(a.path(), 100);
        let dst = behind(b.path(), 0, 100);
        let mut rounds = 0;
        while let Some(m) = dst.missing() {
            let c = chunk_of(&src, m.start, m.end, 600);
            assert!(
                c.records.len() <= 600 + 200,
                "about max_bytes: {}",
                c.records.len()
            );
            match store_chunk(&dst, &c).unwrap() {
                Stored::Copied { next, .. } => assert!(next > m.start),
                other => panic!("{other:?}"),
            }
            rounds += 1;
        }
        assert!(rounds > 3, "copied in {rounds} chunks");
        let mut out = Vec::new();
        let mut next = 0;
        while next < 100 {
            next = dst.read(next, 1000, |_| true, &mut out);
        }
        let ids: Vec<u64> = out.iter().map(|(o, e)| (o + 1) * 1000 + e.id.0).collect();
        assert_eq!(
            ids,
            (0..100).map(|o| (o + 1) * 1000 + o + 1).collect::<Vec<_>>()
        );
        assert_eq!(
            store_chunk(&dst, &chunk_of(&src, 0, 100, 600)).unwrap(),
            Stored::Done
        );
    }

    #[test]
    fn a_forged_torn_or_misplaced_record_is_refused_and_only_whole_checked_records_are_stored() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = source(a.path(), 20);
        let dst = behind(b.path(), 0, 20);
        let good = chunk_of(&src, 0, 20, 400);
        // A flipped byte in the first record: its checksum fails, nothing is stored.
        let mut forged = good.records.to_vec();
        forged[30] ^= 0x40;
        let forged = StreamChunk {
            records: Bytes::from(forged),
            ..good.clone()
        };
        assert!(store_chunk(&dst, &forged).is_err());
        assert_eq!(dst.missing(), Some(0..20));
        // Records that start after the gap's start (offsets 5.. when 0 is next) do not fit.
        let later = chunk_of(&src, 5, 20, 400);
        assert!(store_chunk(&dst, &later).is_err());
        assert_eq!(dst.missing(), Some(0..20));
        // A torn last record: the whole ones before it are stored (each checked), not it.
        let torn = StreamChunk {
            records: good.records.slice(..good.records.len() - 3),
            ..good.clone()
        };
        assert!(store_chunk(&dst, &torn).is_err());
        let m = dst.missing().unwrap();
        assert!(m.start > 0 && m.end == 20, "{m:?}");
        let next = chunk_of(&src, m.start, 20, 400);
        assert!(matches!(
            store_chunk(&dst, &next).unwrap(),
            Stored::Copied { .. }
        ));
    }

    #[test]
    fn a_member_that_deleted_the_start_restarts_the_copy_at_its_first_offset() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = source(a.path(), 60);
        src.trim(
            &crate::stream::Retention {
                max_events: 20,
                ..Default::default()
            },
            0,
        )
        .unwrap();
        let first = src.contiguous_first();
        assert!(first > 0);
        let dst = behind(b.path(), 0, 60);
        let c = chunk_of(&src, 0, 60, 400);
        assert!(c.records.is_empty() && c.first == first);
        assert_eq!(
            store_chunk(&dst, &c).unwrap(),
            Stored::Restarted { at: first }
        );
        assert_eq!(dst.missing(), Some(first..60));
        assert_eq!(dst.first_offset(), first);
        while let Some(m) = dst.missing() {
            store_chunk(&dst, &chunk_of(&src, m.start, m.end, 400)).unwrap();
        }
        assert_eq!((dst.first_offset(), dst.next_offset()), (first, 60));
    }
}
