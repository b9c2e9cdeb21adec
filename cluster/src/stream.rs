//! The committed stream a node's subscribers read: every fresh (non-duplicate) event of the
//! applied log, in log order, each at its stream offset.
//!
//! # Invariants
//! * Offsets are dense, start at 0, and are assigned only by the apply step in log order, so
//!   the same offset names the same event on every replica.
//! * Appends happen on one thread (the driver's apply step); readers never block it for longer
//!   than a vector clone of the chunks they read.
//! * The stream stores no copies: a chunk is the applied entry's data (the same `Bytes` the log
//!   holds) plus the byte positions of its fresh events, decoded again when read. It is kept
//!   in memory and rebuilt from the log on restart (retention/compaction is a later issue).

use crate::codec;
use bytes::Bytes;
use eventstream_core::Event;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Debug)]
struct Chunk {
    first: u64,
    data: Bytes,
    positions: Vec<u32>,
}

/// Append-only, offset-addressed store of committed events.
#[derive(Debug)]
pub struct CommittedStream {
    chunks: RwLock<Vec<Chunk>>,
    next: watch::Sender<u64>,
}

impl Default for CommittedStream {
    fn default() -> Self {
        CommittedStream {
            chunks: RwLock::new(Vec::new()),
            next: watch::channel(0).0,
        }
    }
}

impl CommittedStream {
    /// An empty stream.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Appends the events of `data` (encoded blocks, see [`crate::codec`]) at byte
    /// `positions` — the fresh ones, in order — and returns the offset of the first.
    pub fn append(&self, data: Bytes, positions: Vec<u32>) -> u64 {
        let first = *self.next.borrow();
        if positions.is_empty() {
            return first;
        }
        let n = positions.len() as u64;
        self.chunks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Chunk {
                first,
                data,
                positions,
            });
        self.next.send_replace(first + n);
        first
    }

    /// The offset the next appended event will get (= number of events in the stream).
    pub fn next_offset(&self) -> u64 {
        *self.next.borrow()
    }

    /// A receiver that changes whenever events are appended (its value is `next_offset`).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }

    /// Copies up to `max` events at offsets `>= from` that pass `keep` into `out`; returns the
    /// offset to continue from (past everything examined, kept or not).
    pub fn read(
        &self,
        from: u64,
        max: usize,
        mut keep: impl FnMut(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> u64 {
        let chunks = self.chunks.read().unwrap_or_else(|p| p.into_inner());
        let mut i = chunks.partition_point(|c| c.first + c.positions.len() as u64 <= from);
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
                // Positions were recorded while decoding this very data at apply time.
                let Ok(e) = codec::decode_event_at(&c.data, *p as usize) else {
                    continue;
                };
                if keep(&e) {
                    out.push((c.first + (start + k) as u64, e));
                }
            }
            pos = c.first + c.positions.len() as u64;
            i += 1;
        }
        pos
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
}
