//! The committed stream a node's subscribers read: every fresh (non-duplicate) event of the
//! applied log, in log order, each at its stream offset, with the stream time its entry got.
//! On disk in the storage crate's [`StreamLog`] (segments with offset and time indexes), with
//! the newest batches also kept in memory, up to a byte limit, for subscribers that are caught
//! up.
//!
//! # Invariants
//! * Offsets are dense and assigned only by the apply step in log order, so the same offset
//!   names the same event on every replica.
//! * Appends happen on one thread (the driver's apply step); readers take the cache lock only
//!   to copy out `Bytes` handles, and read older data from the segment files.
//! * A served event's `ingest_ns` is its stream time (Unix epoch, nanoseconds at millisecond
//!   resolution), the same on every replica.
//! * Retention drops whole segments from the front only, so the retained events are the
//!   contiguous range `first_offset()..next_offset()`; a read below `first_offset()` is refused
//!   with the earliest offset.
//! * The one exception is a node a snapshot took past what it held: the log restarts at the
//!   snapshot's next offset and what it held waits in a second log (the *backfill*,
//!   `p0.backfill`) that is filled with the offsets in between, copied from another member
//!   ([`missing`](CommittedStream::missing)), and spliced back in front when it reaches the
//!   log. Until then a read in the gap finds nothing yet (it is not refused: the events come).
//! * Memory does not grow with what is retained: the cache is bounded by bytes, and the
//!   segment indexes are sparse.

use crate::error::NodeError;
use bytes::Bytes;
use eventstream_core::Event;
use eventstream_storage::stream::batch::Batch;
use eventstream_storage::stream::{RetentionPolicy, StreamConfig, StreamLog, TopicInfo};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How much of the stream a node keeps (0 = no limit). Trimming is by whole segments, so a
/// node keeps between a limit and the limit plus one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep about this many events.
    pub max_events: u64,
    /// Keep about this many bytes of segments.
    pub max_bytes: u64,
    /// Drop segments whose newest event is older than this (milliseconds).
    pub max_age_ms: u64,
}

impl Retention {
    /// True when no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_events == 0 && self.max_bytes == 0 && self.max_age_ms == 0
    }
}

/// The newest batches, in memory.
#[derive(Debug, Default)]
struct TailCache {
    batches: VecDeque<Batch>,
    bytes: u64,
    limit: u64,
}

impl TailCache {
    fn push(&mut self, b: Batch) {
        self.bytes += b.record.len() as u64;
        self.batches.push_back(b);
        while self.bytes > self.limit {
            match self.batches.pop_front() {
                Some(old) => self.bytes -= old.record.len() as u64,
                None => break,
            }
        }
    }

    /// Forgets the batches before `first` (retention removed them from the log).
    fn drop_below(&mut self, first: u64) {
        while let Some(b) = self.batches.front() {
            if b.next_offset() > first {
                break;
            }
            self.bytes -= b.record.len() as u64;
            self.batches.pop_front();
        }
    }

    /// The cached batches from the one holding `from`, if the cache reaches back that far.
    fn from(&self, from: u64) -> Option<Vec<Batch>> {
        let first = self.batches.front()?.base_offset;
        if from < first {
            return None;
        }
        let i = self.batches.partition_point(|b| b.next_offset() <= from);
        Some(self.batches.range(i..).cloned().collect())
    }
}

/// The events of `batches` at offsets `>= from` that pass `keep`, at most `max`, each with its
/// batch's stream time as `ingest_ns`; returns the offset to continue from.
fn collect(
    batches: Vec<Batch>,
    from: u64,
    max: usize,
    keep: impl Fn(&Event) -> bool,
    out: &mut Vec<(u64, Event)>,
) -> Result<u64, NodeError> {
    let mut pos = from;
    let mut examined = 0usize;
    for b in batches {
        if out.len() >= max || examined >= max.saturating_mul(16) {
            break;
        }
        let ts_ns = b.timestamp_ms.saturating_mul(1_000_000);
        for (off, mut e) in b.events()? {
            if off < pos {
                continue;
            }
            if out.len() >= max {
                return Ok(off);
            }
            examined += 1;
            e.ingest_ns = ts_ns;
            if keep(&e) {
                out.push((off, e));
            }
            pos = off + 1;
        }
    }
    Ok(pos)
}

/// Cache reads and misses, for metrics.
#[derive(Debug, Default)]
pub(crate) struct ReadCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// Offset-addressed store of committed events, on disk, trimmed from the front by retention.
#[derive(Debug)]
pub struct CommittedStream {
    log: StreamLog,
    /// Segments scanned at open for want of a valid index checkpoint.
    index_rebuilds: u64,
    /// What the node held before a snapshot took it further, being filled up to the log.
    backfill: Mutex<Option<StreamLog>>,
    backfill_dir: std::path::PathBuf,
    cfg: StreamConfig,
    cache: Mutex<TailCache>,
    next: watch::Sender<u64>,
    pub(crate) reads: ReadCounters,
}

/// How a node lays out and caches its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Segment size before a new one is started.
    pub segment_bytes: u64,
    /// Newest batches kept in memory for caught-up subscribers.
    pub cache_bytes: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            segment_bytes: 64 << 20,
            cache_bytes: 64 << 20,
        }
    }
}

impl CommittedStream {
    /// Opens the stream of the node whose data directory is `data_dir` (partition 0),
    /// recovering its tail; an empty one starts at offset 0.
    pub fn open(data_dir: &Path, settings: StreamSettings) -> Result<Arc<Self>, NodeError> {
        let dir = eventstream_storage::stream::partition_dir(data_dir, 0);
        let cfg = StreamConfig {
            segment_bytes: settings.segment_bytes,
            ..StreamConfig::default()
        };
        let (log, rec) = StreamLog::open(&dir, cfg, 0)?;
        if rec.truncated_bytes > 0 || rec.scanned > 1 {
            tracing::info!(
                dir = %dir.display(),
                scanned = rec.scanned,
                from_checkpoint = rec.from_checkpoint,
                truncated_bytes = rec.truncated_bytes,
                "stream log recovered"
            );
        }
        let backfill_dir = dir.with_extension("backfill");
        let backfill = if backfill_dir.exists() {
            Some(StreamLog::open(&backfill_dir, cfg, 0)?.0)
        } else {
            None
        };
        let next = log.next_offset();
        let stream = Arc::new(CommittedStream {
            log,
            index_rebuilds: rec.scanned as u64,
            backfill: Mutex::new(backfill),
            backfill_dir,
            cfg,
            cache: Mutex::new(TailCache {
                limit: settings.cache_bytes,
                ..TailCache::default()
            }),
            next: watch::channel(next).0,
            reads: ReadCounters::default(),
        });
        stream.splice_if_complete()?;
        Ok(stream)
    }

    fn backfill(&self) -> std::sync::MutexGuard<'_, Option<StreamLog>> {
        self.backfill.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream's storage for the status (the copy and volume fields are the caller's).
    pub fn storage(&self) -> eventstream_core::replication::StreamStorage {
        let (bf_segments, bf_bytes) = self
            .backfill()
            .as_ref()
            .map_or((0, 0), |b| (b.segments().len() as u64, b.bytes()));
        eventstream_core::replication::StreamStorage {
            segments: self.log.segments().len() as u64 + bf_segments,
            retained_bytes: self.log.bytes() + bf_bytes,
            cache_bytes: self.cache().bytes,
            cache_reads: self.reads.hits.load(Ordering::Relaxed),
            disk_reads: self.reads.misses.load(Ordering::Relaxed),
            index_rebuilds: self.index_rebuilds,
            missing_events: self.missing().map_or(0, |r| r.end.saturating_sub(r.start)),
            ..Default::default()
        }
    }

    /// The offsets this node lacks between what it held before a snapshot and the log (being
    /// copied from another member), or `None` when the stream is whole.
    pub fn missing(&self) -> Option<std::ops::Range<u64>> {
        let bf = self.backfill();
        bf.as_ref()
            .map(|b| b.next_offset()..self.log.first_offset())
    }

    /// Makes the stream describe a snapshot whose retained events are `first..next`: a log
    /// past `next` is cut back to it (the WAL after the snapshot is replayed over it); a log
    /// that ends before `next` restarts at `next`, and what it held, or nothing from `first`
    /// when it is all older than that, becomes the backfill.
    pub fn align(&self, first: u64, next: u64) -> Result<(), NodeError> {
        let (held_first, held_next) = (self.log.first_offset(), self.log.next_offset());
        if held_next >= next && held_first <= next {
            self.log.truncate_to(next)?;
        } else {
            let mut bf = self.backfill();
            if held_first < held_next && held_next >= first && held_next < next {
                if let Some(old) = bf.take() {
                    remove_log(old)?;
                }
                *bf = Some(self.log.move_to(&self.backfill_dir, next)?);
            } else {
                self.log.reset(next)?;
                let keep = bf
                    .as_ref()
                    .is_some_and(|b| b.next_offset() >= first && b.next_offset() <= next);
                if !keep {
                    if let Some(old) = bf.take() {
                        remove_log(old)?;
                    }
                    if first < next {
                        *bf = Some(StreamLog::open(&self.backfill_dir, self.cfg, first)?.0);
                    }
                }
            }
        }
        self.clear_cache();
        self.next.send_replace(self.log.next_offset());
        self.splice_if_complete()
    }

    /// Appends a record copied from another member to the backfill; splices it in front of
    /// the log when it reaches it. Returns the offset the backfill continues from.
    pub fn backfill_record(&self, record: &[u8]) -> Result<u64, NodeError> {
        let next = {
            let bf = self.backfill();
            let Some(b) = bf.as_ref() else {
                return Ok(self.log.first_offset());
            };
            b.append_record(record)?;
            b.next_offset()
        };
        self.splice_if_complete()?;
        Ok(next)
    }

    /// The member copied from no longer holds the backfill's next offset (its retention
    /// removed it): the backfill restarts empty at `first`, what the member still holds.
    pub fn backfill_restart(&self, first: u64) -> Result<(), NodeError> {
        {
            let mut bf = self.backfill();
            if let Some(old) = bf.take() {
                remove_log(old)?;
            }
            if first < self.log.first_offset() {
                *bf = Some(StreamLog::open(&self.backfill_dir, self.cfg, first)?.0);
            }
        }
        self.splice_if_complete()
    }

    /// A backfill that reaches the log is put in front of it.
    fn splice_if_complete(&self) -> Result<(), NodeError> {
        let mut bf = self.backfill();
        let complete = bf
            .as_ref()
            .is_some_and(|b| b.next_offset() >= self.log.first_offset());
        if !complete {
            return Ok(());
        }
        let b = bf.take().expect("checked");
        if b.first_offset() == b.next_offset() || b.next_offset() != self.log.first_offset() {
            return remove_log(b);
        }
        tracing::info!(
            from = b.first_offset(),
            to = b.next_offset(),
            "the stream's copied offsets are spliced in front of the log"
        );
        Ok(self.log.adopt_prefix(b)?)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TailCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clear_cache(&self) {
        let mut c = self.cache();
        c.batches.clear();
        c.bytes = 0;
    }

    /// The log on disk.
    pub fn log(&self) -> &StreamLog {
        &self.log
    }

    /// Appends `count` fresh events (their encodings back to back in `events`) at stream time
    /// `timestamp_ms`; returns the offset of the first. Written, not fsynced: the WAL holds
    /// the entry until [`sync`](Self::sync) has run and a snapshot covers it.
    pub fn append(&self, count: u32, timestamp_ms: u64, events: &[u8]) -> Result<u64, NodeError> {
        let first = self.log.next_offset();
        if count == 0 {
            return Ok(first);
        }
        let b = self.log.append(count, timestamp_ms, events)?;
        self.cache().push(b);
        self.next.send_replace(first + u64::from(count));
        Ok(first)
    }

    /// Appends a whole batch record copied from another node (checked by checksum and
    /// offset).
    pub fn append_record(&self, record: &[u8]) -> Result<(), NodeError> {
        let b = self.log.append_record(record)?;
        self.cache().push(b);
        self.next.send_replace(self.log.next_offset());
        Ok(())
    }

    /// Makes every appended event durable.
    pub fn sync(&self) -> Result<(), NodeError> {
        Ok(self.log.sync()?)
    }

    /// The offset the next appended event will get.
    pub fn next_offset(&self) -> u64 {
        *self.next.borrow()
    }

    /// The earliest offset served (= `next_offset()` when nothing is retained): the
    /// backfill's first while there is one.
    pub fn first_offset(&self) -> u64 {
        match self.backfill().as_ref() {
            Some(b) => b.first_offset().min(self.log.first_offset()),
            None => self.log.first_offset(),
        }
    }

    /// The first offset of the contiguous range that ends at `next_offset()` (what a
    /// snapshot of this node describes).
    pub fn contiguous_first(&self) -> u64 {
        self.log.first_offset()
    }

    /// Bytes of segments held on disk (the backfill's included).
    pub fn retained_bytes(&self) -> u64 {
        self.log.bytes() + self.backfill().as_ref().map_or(0, |b| b.bytes())
    }

    /// The newest event's stream time (0 before the first).
    pub fn last_timestamp_ms(&self) -> u64 {
        self.log.last_timestamp_ms()
    }

    /// A receiver that changes whenever events are appended (its value is `next_offset`).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }

    /// The first offset whose stream time is at or after `timestamp_ms`.
    pub fn offset_at_time(&self, timestamp_ms: u64) -> Result<u64, NodeError> {
        Ok(self.log.offset_at_time(timestamp_ms)?)
    }

    /// Up to `max` events at offsets `>= from` that pass `keep`, into `out`; returns the
    /// offset to continue from (past everything examined). A `from` below the first retained
    /// offset is `Err(Ok(earliest))`; a storage error is `Err(Err(_))`. May read the segment
    /// files (blocking): async callers try [`read_cached`](Self::read_cached) first.
    pub fn try_read(
        &self,
        from: u64,
        max: usize,
        keep: impl Fn(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> Result<u64, Result<u64, NodeError>> {
        if let Some(next) = self.read_cached(from, max, &keep, out) {
            return next.map_err(Err);
        }
        self.reads.misses.fetch_add(1, Ordering::Relaxed);
        if from < self.log.first_offset() {
            if let Some(r) = self.read_backfill(from) {
                let batches = r?;
                return collect(batches, from, max, keep, out).map_err(Err);
            }
        }
        let batches = match self.log.read(from, 4 << 20) {
            Ok(Ok(b)) => b,
            Ok(Err(c)) => return Err(Ok(c.earliest)),
            Err(e) => return Err(Err(e.into())),
        };
        collect(batches, from, max, keep, out).map_err(Err)
    }

    /// Batches of the backfill from `from` (empty when `from` is in the gap still being
    /// copied), or `None` when there is no backfill or `from` is before it.
    fn read_backfill(&self, from: u64) -> Option<Result<Vec<Batch>, Result<u64, NodeError>>> {
        let bf = self.backfill();
        let b = bf.as_ref()?;
        if from < b.first_offset() {
            return Some(Err(Ok(b.first_offset())));
        }
        if from >= b.next_offset() {
            return Some(Ok(Vec::new()));
        }
        Some(match b.read(from, 4 << 20) {
            Ok(Ok(batches)) => Ok(batches),
            Ok(Err(c)) => Err(Ok(c.earliest)),
            Err(e) => Err(Err(e.into())),
        })
    }

    /// Like [`try_read`](Self::try_read) from the memory cache only: `None` when `from` is
    /// older than the cache (or compacted), so the caller reads the files off its event loop.
    pub fn read_cached(
        &self,
        from: u64,
        max: usize,
        keep: impl Fn(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> Option<Result<u64, NodeError>> {
        if from >= self.next_offset() {
            return (from >= self.first_offset()).then_some(Ok(from));
        }
        let batches = self.cache().from(from)?;
        self.reads.hits.fetch_add(1, Ordering::Relaxed);
        Some(collect(batches, from, max, keep, out))
    }

    /// Like [`try_read`](Self::try_read), skipping a compacted start (reads from the first
    /// retained offset instead) and panicking on a storage error: for tests and tools.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        keep: impl Fn(&Event) -> bool,
        out: &mut Vec<(u64, Event)>,
    ) -> u64 {
        let from = from.max(self.first_offset());
        self.try_read(from, max, keep, out)
            .unwrap_or_else(|e| panic!("reading the stream from {from}: {e:?}"))
    }

    /// Up to `max` events of `topic` at offsets `>= from` (about `max_bytes` of them at most),
    /// each with its batch's stream time as `ingest_ns`, into `out`; returns the offset to
    /// continue from, past every offset examined (a long range without the topic's events is
    /// skipped in one call). Reads only that topic's events, through the segments' topic
    /// indexes (blocking file reads: call it off the event loop). Every appended event is in
    /// the log before it is in the cache, so the cache is not consulted. Refusals and errors
    /// as for [`try_read`](Self::try_read); in the backfill's gap still being copied, nothing
    /// is found and `from` is returned.
    pub fn read_topic(
        &self,
        topic: &str,
        from: u64,
        max: usize,
        max_bytes: usize,
        out: &mut Vec<(u64, Event)>,
    ) -> Result<u64, Result<u64, NodeError>> {
        let bf = self.backfill();
        let log = match bf.as_ref() {
            Some(b) if from < self.log.first_offset() => {
                if from >= b.next_offset() {
                    return Ok(from);
                }
                b
            }
            _ => &self.log,
        };
        let read = match log.read_topic(topic, from, max, max_bytes) {
            Ok(Ok(r)) => r,
            Ok(Err(c)) => return Err(Ok(c.earliest)),
            Err(e) => return Err(Err(e.into())),
        };
        out.extend(read.events.into_iter().map(|mut e| {
            e.event.ingest_ns = e.timestamp_ms.saturating_mul(1_000_000);
            (e.offset, e.event)
        }));
        Ok(read.next)
    }

    /// The topics of the retained stream (the backfill's included), by name, with their event
    /// counts and first and last offsets.
    pub fn topics(&self) -> Result<Vec<TopicInfo>, NodeError> {
        let mut all = self.log.topics()?;
        if let Some(b) = self.backfill().as_ref() {
            for t in b.topics()? {
                match all.binary_search_by(|x| x.name.cmp(&t.name)) {
                    Ok(i) => {
                        let x = &mut all[i];
                        x.events += t.events;
                        x.first_offset = t.first_offset;
                    }
                    Err(i) => all.insert(i, t),
                }
            }
        }
        Ok(all)
    }

    /// Applies `policy` at wall-clock time `now_ms`: drops whole segments from the front.
    /// Returns the number of events dropped.
    pub fn trim(&self, policy: &Retention, now_ms: u64) -> Result<u64, NodeError> {
        if policy.is_unlimited() {
            return Ok(0);
        }
        let before = self.log.first_offset();
        let p = RetentionPolicy {
            max_events: policy.max_events,
            max_bytes: policy.max_bytes,
            max_age_ms: policy.max_age_ms,
        };
        self.log.retain(p, now_ms)?;
        let first = self.log.first_offset();
        self.cache().drop_below(first);
        let mut dropped = first - before;
        if let Some(b) = self.backfill().as_ref() {
            // Only age applies to the backfill: the count and byte limits are the log's.
            let before = b.first_offset();
            b.retain(
                RetentionPolicy {
                    max_age_ms: policy.max_age_ms,
                    ..RetentionPolicy::default()
                },
                now_ms,
            )?;
            dropped += b.first_offset() - before;
        }
        Ok(dropped)
    }

    /// Makes the stream end at `next` (a snapshot's next offset, before the log after it is
    /// replayed; or a fresh start at `next` when this log does not reach it).
    pub fn truncate_to(&self, next: u64) -> Result<(), NodeError> {
        if self.log.next_offset() < next {
            self.log.reset(next)?;
        } else {
            self.log.truncate_to(next)?;
        }
        self.clear_cache();
        self.next.send_replace(self.log.next_offset());
        Ok(())
    }

    /// Drops everything and starts empty at `first` (everything this node held is older than
    /// what the cluster keeps).
    pub fn reset(&self, first: u64) -> Result<(), NodeError> {
        self.log.reset(first)?;
        self.clear_cache();
        self.next.send_replace(first);
        Ok(())
    }

    /// Writes the newest segment's index (a clean stop: the next start needs no scan).
    pub fn checkpoint(&self) -> Result<(), NodeError> {
        if let Some(b) = self.backfill().as_ref() {
            b.checkpoint()?;
        }
        Ok(self.log.checkpoint()?)
    }

    /// The raw records from the one holding `from` up to about `max_bytes` (what a follower
    /// or a backup copies).
    pub fn records(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<Result<Vec<Bytes>, u64>, NodeError> {
        Ok(match self.log.read(from, max_bytes)? {
            Ok(batches) => Ok(batches.into_iter().map(|b| b.record).collect()),
            Err(c) => Err(c.earliest),
        })
    }
}

/// Deletes a log's directory.
fn remove_log(log: StreamLog) -> Result<(), NodeError> {
    let dir = log.dir().to_path_buf();
    drop(log);
    std::fs::remove_dir_all(&dir).map_err(|e| eventstream_storage::StorageError::io(&dir, e).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use eventstream_core::Priority;
    use eventstream_proto::codec;

    fn encoded(evs: &[Event]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for e in evs {
            codec::put_event(&mut b, e);
        }
        b.to_vec()
    }

    fn small() -> StreamSettings {
        StreamSettings {
            segment_bytes: 300,
            cache_bytes: 200,
        }
    }

    #[test]
    fn reads_resume_exactly_filter_and_carry_the_stream_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = CommittedStream::open(dir.path(), small()).unwrap();
        let ev = |id: u64, t: &str| Event::new(t, Priority::Low, &b""[..]).with_id(id);
        assert_eq!(
            s.append(2, 1_000, &encoded(&[ev(1, "a"), ev(2, "b")]))
                .unwrap(),
            0
        );
        assert_eq!(s.append(1, 1_005, &encoded(&[ev(3, "a")])).unwrap(), 2);
        assert_eq!(s.next_offset(), 3);
        let mut out = Vec::new();
        let next = s.read(1, 1, |_| true, &mut out);
        assert_eq!((out.len(), out[0].0, next), (1, 1, 2));
        assert_eq!(out[0].1.ingest_ns, 1_000_000_000);
        out.clear();
        let next = s.read(0, 10, |e| e.topic == "a", &mut out);
        let got: Vec<_> = out.iter().map(|(o, e)| (*o, e.id.0, e.ingest_ns)).collect();
        assert_eq!(
            (got, next),
            (vec![(0, 1, 1_000_000_000), (2, 3, 1_005_000_000)], 3)
        );
        assert_eq!(s.offset_at_time(1_003).unwrap(), 2);
    }

    #[test]
    fn retention_trims_whole_segments_and_reads_below_are_refused() {
        // A cache smaller than a segment, and one that holds everything: neither serves what
        // retention removed.
        for cache_bytes in [200, 1 << 20] {
            retention_with_cache(StreamSettings {
                cache_bytes,
                ..small()
            });
        }
    }

    fn retention_with_cache(settings: StreamSettings) {
        let dir = tempfile::tempdir().unwrap();
        let s = CommittedStream::open(dir.path(), settings).unwrap();
        for k in 0..20u64 {
            let evs: Vec<Event> = (0..3)
                .map(|i| Event::new("a", Priority::Low, &b"xx"[..]).with_id(k * 3 + i + 1))
                .collect();
            s.append(3, 1_000 + k, &encoded(&evs)).unwrap();
        }
        let policy = Retention {
            max_events: 7,
            ..Retention::default()
        };
        let dropped = s.trim(&policy, 0).unwrap();
        let first = s.first_offset();
        assert!(dropped > 0 && dropped == first, "{dropped} {first}");
        assert!(s.next_offset() - first >= 7);
        let mut out = Vec::new();
        assert!(matches!(s.try_read(0, 10, |_| true, &mut out), Err(Ok(f)) if f == first));
        let mut next = first;
        while next < 60 {
            next = s.try_read(next, 100, |_| true, &mut out).unwrap();
        }
        let offsets: Vec<u64> = out.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (first..60).collect::<Vec<_>>());
        assert_eq!(
            out.first().map(|(o, e)| (*o, e.id.0)),
            Some((first, first + 1))
        );
        // Reopening keeps everything retained; truncation and reset move the end.
        assert!(s.read_cached(first - 1, 10, |_| true, &mut out).is_none());
        drop(s);
        let s = CommittedStream::open(dir.path(), settings).unwrap();
        assert_eq!((s.first_offset(), s.next_offset()), (first, 60));
        s.truncate_to(first + 3).unwrap();
        assert_eq!(s.next_offset(), first + 3);
        s.truncate_to(100).unwrap();
        assert_eq!((s.first_offset(), s.next_offset()), (100, 100));
    }

    #[test]
    fn a_topic_read_returns_only_its_events_with_the_stream_time_and_skips_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let s = CommittedStream::open(dir.path(), small()).unwrap();
        let ev = |id: u64, t: &str| Event::new(t, Priority::Low, &b"p"[..]).with_id(id);
        for k in 0..30u64 {
            let t = if k % 10 == 3 { "rare" } else { "bulk" };
            s.append(
                2,
                2_000 + k,
                &encoded(&[ev(2 * k, t), ev(2 * k + 1, "bulk")]),
            )
            .unwrap();
        }
        let mut out = Vec::new();
        let mut next = 0;
        while next < s.next_offset() {
            next = s.read_topic("rare", next, 2, 1 << 20, &mut out).unwrap();
        }
        let got: Vec<_> = out.iter().map(|(o, e)| (*o, e.id.0, e.ingest_ns)).collect();
        assert_eq!(
            got,
            [
                (6, 6, 2_003_000_000),
                (26, 26, 2_013_000_000),
                (46, 46, 2_023_000_000)
            ]
        );
        let names: Vec<_> = s
            .topics()
            .unwrap()
            .into_iter()
            .map(|t| (t.name.to_string(), t.events))
            .collect();
        assert_eq!(names, [("bulk".to_string(), 57), ("rare".to_string(), 3)]);
        let dropped = s
            .trim(
                &Retention {
                    max_events: 10,
                    ..Retention::default()
                },
                0,
            )
            .unwrap();
        assert!(dropped > 0);
        assert!(matches!(
            s.read_topic("rare", 0, 2, 1 << 20, &mut out),
            Err(Ok(f)) if f == s.first_offset()
        ));
    }
}
