//! The committed stream a node's subscribers read: every fresh (non-duplicate) event of the
//! applied log, in log order, each at its stream offset.
//!
//! # Invariants
//! * Offsets are dense and assigned only by the apply step in log order, so the same offset
//!   names the same event on every replica. A fresh stream starts at 0; a stream restored from
//!   a snapshot starts at the snapshot's first retained offset.
//! * Appends happen on one thread (the driver's apply step); readers never block it for longer
//!   than a vector clone of the chunks they read.
//! * The stream stores no copies: a chunk is the applied entry's data (the same `Bytes` the log
//!   holds) plus the byte positions of its fresh events, decoded again when read.
//! * Retention ([`CommittedStream::trim`]) drops whole chunks from the front only, so the
//!   retained events are always the contiguous range `first_offset()..next_offset()`; a read
//!   below `first_offset()` is refused by [`CommittedStream::try_read`] with the earliest offset.

use bytes::Bytes;
use eventstream_core::Event;
use eventstream_proto::codec;
use eventstream_storage::snapshot::{self, StreamChunk};
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Debug)]
struct Chunk {
    first: u64,
    appended_unix_ms: u64,
    data: Bytes,
    positions: Vec<u32>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.first + self.positions.len() as u64
    }
}

#[derive(Debug, Default)]
struct Inner {
    chunks: VecDeque<Chunk>,
    /// First retained offset.
    first: u64,
    /// Bytes of entry data held by the chunks.
    bytes: u64,
}

/// How much of the stream a node keeps (0 = no limit). Trimming is by whole applied entries,
/// so a node may keep up to one entry's events more than a limit says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many events.
    pub max_events: u64,
    /// Keep at most this many bytes of event data.
    pub max_bytes: u64,
    /// Drop events applied longer ago than this (milliseconds).
    pub max_age_ms: u64,
}

impl Retention {
    /// True when no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_events == 0 && self.max_bytes == 0 && self.max_age_ms == 0
    }
}

/// Offset-addressed store of committed events, trimmed from the front by retention.
#[derive(Debug)]
pub struct CommittedStream {
    inner: RwLock<Inner>,
    next: watch::Sender<u64>,
}

impl Default for CommittedStream {
    fn default() -> Self {
        CommittedStream {
            inner: RwLock::new(Inner::default()),
            next: watch::channel(0).0,
        }
    }
}

impl CommittedStream {
    /// An empty stream.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the events of `data` (encoded blocks, see [`eventstream_proto::codec`]) at byte
    /// `positions` — the fresh ones, in order — and returns the offset of the first.
    pub fn append(&self, data: Bytes, positions: Vec<u32>) -> u64 {
        let first = *self.next.borrow();
        if positions.is_empty() {
            return first;
        }
        let n = positions.len() as u64;
        {
            let mut inner = self.write_inner();
            inner.bytes += data.len() as u64;
            inner.chunks.push_back(Chunk {
                first,
                appended_unix_ms: snapshot::unix_ms(),
                data,
                positions,
            });
        }
        self.next.send_replace(first + n);
        first
    }

    /// The offset the next appended event will get.
    pub fn next_offset(&self) -> u64 {
        *self.next.borrow()
    }

    /// The earliest offset still held (= `next_offset()` when nothing is retained).
    pub fn first_offset(&self) -> u64 {
        self.read_inner().first
    }

    /// Bytes of event data held.
    pub fn retained_bytes(&self) -> u64 {
        self.read_inner().bytes
    }

    /// A receiver that changes whenever events are appended (its value is `next_offset`).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }

    /// Copies up to `max` events at offsets `>= from` that pass `keep` into `out`; returns the
    /// offset to continue from (past everything examined, kept or not). Offsets below the first
    /// retained one are skipped; use [`try_read`](Self::try_read) to have that reported.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        keep: impl FnMut(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> u64 {
        let inner = self.read_inner();
        let from = from.max(inner.first);
        Self::read_locked(&inner, from, max, keep, out)
    }

    /// Like [`read`](Self::read), but a `from` below the first retained offset is an error
    /// carrying that earliest offset (the events were removed by retention).
    pub fn try_read(
        &self,
        from: u64,
        max: usize,
        keep: impl FnMut(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> Result<u64, u64> {
        let inner = self.read_inner();
        if from < inner.first {
            return Err(inner.first);
        }
        Ok(Self::read_locked(&inner, from, max, keep, out))
    }

    fn read_locked(
        inner: &Inner,
        from: u64,
        max: usize,
        mut keep: impl FnMut(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> u64 {
        let chunks = &inner.chunks;
        let mut i = chunks.partition_point(|c| c.end() <= from);
        let mut pos = from;
        let mut examined = 0usize;
        while i < chunks.len() && out.len() < max && examined < max.saturating_mul(16) {
            let c = &chunks[i];
            let start = (pos.max(c.first) - c.first) as usize;
            for (k, p) in c.positions[start..].iter().enumerate() {
                if out.len() >= max {
                    return c.first + (start + k) as u64;
                }
                examined += 1;
                // Positions were recorded while decoding this very data at apply time (or
                // validated when a snapshot was decoded).
                let Ok(e) = codec::decode_event_at(&c.data, *p as usize) else {
                    continue;
                };
                if keep(&e) {
                    out.push((c.first + (start + k) as u64, e));
                }
            }
            pos = c.end();
            i += 1;
        }
        pos
    }

    /// Applies `policy` at wall-clock time `now_ms`: drops whole chunks from the front while a
    /// limit is exceeded. Returns the number of events dropped.
    pub fn trim(&self, policy: &Retention, now_ms: u64) -> u64 {
        if policy.is_unlimited() {
            return 0;
        }
        let next = self.next_offset();
        let mut inner = self.write_inner();
        let before = inner.first;
        let mut trimmed = Vec::new();
        while let Some(c) = inner.chunks.front() {
            let events = next - c.first;
            let over_events = policy.max_events > 0 && events > policy.max_events;
            let over_bytes = policy.max_bytes > 0 && inner.bytes > policy.max_bytes;
            let too_old = policy.max_age_ms > 0
                && c.appended_unix_ms.saturating_add(policy.max_age_ms) < now_ms;
            if !(over_events || over_bytes || too_old) {
                break;
            }
            let c = inner.chunks.pop_front().expect("front exists");
            inner.bytes -= c.data.len() as u64;
            inner.first = c.end();
            trimmed.push(c);
        }
        if inner.chunks.is_empty() {
            inner.first = next;
        }
        let dropped = inner.first - before;
        drop(inner);
        // Trimmed chunks can hold hundreds of MB: freed neither under the lock readers and
        // the applier wait on, nor on the calling (driver) thread.
        if !trimmed.is_empty() {
            crate::reclaim::drop_later(trimmed);
        }
        dropped
    }

    /// The retained events as snapshot chunks, with `(first_offset, next_offset)`. Cheap: the
    /// chunk data are shared `Bytes`.
    pub fn export(&self) -> (u64, u64, Vec<StreamChunk>) {
        let inner = self.read_inner();
        let chunks = inner
            .chunks
            .iter()
            .map(|c| StreamChunk {
                first: c.first,
                appended_unix_ms: c.appended_unix_ms,
                data: c.data.clone(),
                positions: c.positions.clone(),
            })
            .collect();
        (inner.first, self.next_offset(), chunks)
    }

    /// Replaces the whole content with a snapshot's (validated by [`snapshot::decode`]:
    /// contiguous chunks from `first` to `next`).
    pub fn reset(&self, first: u64, next: u64, chunks: Vec<StreamChunk>) {
        {
            let mut inner = self.write_inner();
            inner.bytes = chunks.iter().map(|c| c.data.len() as u64).sum();
            inner.first = first;
            inner.chunks = chunks
                .into_iter()
                .map(|c| Chunk {
                    first: c.first,
                    appended_unix_ms: c.appended_unix_ms,
                    data: c.data,
                    positions: c.positions,
                })
                .collect();
        }
        self.next.send_replace(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstream_core::Priority;

    #[test]
    fn read_resumes_exactly_and_filters() {
        let s = CommittedStream::new();
        let ev = |id: u64, t: &str| Event::new(t, Priority::Low, &b""[..]).with_id(id);
        let chunk = |evs: Vec<Event>| {
            let data = codec::encode_block(&evs);
            let mut out = Vec::new();
            let mut pos = Vec::new();
            codec::decode_blocks_with_positions(&data, &mut out, &mut pos).unwrap();
            (data, pos)
        };
        let (d, p) = chunk(vec![ev(1, "a"), ev(2, "b")]);
        assert_eq!(s.append(d, p), 0);
        // Only the second event of this entry is fresh.
        let (d, p) = chunk(vec![ev(1, "a"), ev(3, "a")]);
        assert_eq!(s.append(d, p[1..].to_vec()), 2);
        assert_eq!(s.next_offset(), 3);
        let mut out = Vec::new();
        let next = s.read(1, 1, |_| true, &mut out);
        assert_eq!((out.len(), out[0].0, next), (1, 1, 2));
        out.clear();
        let next = s.read(0, 10, |e| e.topic == "a", &mut out);
        let got: Vec<_> = out.iter().map(|(o, e)| (*o, e.id.0)).collect();
        assert_eq!((got, next), (vec![(0, 1), (2, 3)], 3));
    }

    #[test]
    fn retention_trims_whole_chunks_and_reads_below_are_refused() {
        let s = CommittedStream::new();
        for k in 0..5u64 {
            let evs: Vec<Event> = (0..3)
                .map(|i| Event::new("a", Priority::Low, &b"xx"[..]).with_id(k * 3 + i + 1))
                .collect();
            let data = codec::encode_block(&evs);
            let mut out = Vec::new();
            let mut pos = Vec::new();
            codec::decode_blocks_with_positions(&data, &mut out, &mut pos).unwrap();
            s.append(data, pos);
        }
        let policy = Retention {
            max_events: 7,
            ..Retention::default()
        };
        // 15 events; keeping at most 7 drops 3 chunks (9 events), leaving 6.
        assert_eq!(s.trim(&policy, snapshot::unix_ms()), 9);
        assert_eq!((s.first_offset(), s.next_offset()), (9, 15));
        let mut out = Vec::new();
        assert_eq!(s.try_read(3, 10, |_| true, &mut out), Err(9));
        assert_eq!(s.try_read(9, 10, |_| true, &mut out), Ok(15));
        assert_eq!(out.first().map(|(o, e)| (*o, e.id.0)), Some((9, 10)));
        // Snapshot export / reset round trip keeps offsets.
        let (first, next, chunks) = s.export();
        let t = CommittedStream::new();
        t.reset(first, next, chunks);
        let mut a = Vec::new();
        let mut b = Vec::new();
        s.read(0, 100, |_| true, &mut a);
        t.read(0, 100, |_| true, &mut b);
        assert_eq!(a, b);
        let age = Retention {
            max_age_ms: 1,
            ..Retention::default()
        };
        assert_eq!(t.trim(&age, snapshot::unix_ms() + 10_000), 6);
        assert_eq!((t.first_offset(), t.next_offset()), (15, 15));
    }
}
