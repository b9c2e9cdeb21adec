//! The committed stream on disk: one log of batch records per stream partition, in segment
//! files with sparse offset and time indexes; retention by whole segments; reads by offset or
//! by time through the page cache.
//!
//! # Layout
//! `DATA_DIR/stream/p0/` holds partition 0 (one partition today; the directory per partition
//! lets a node hold several independent logs later). A segment is `BASE.log` (+ `BASE.index`
//! and `BASE.topics` once sealed); see [`segment`](self) for the formats, [`batch`] for the
//! records and `topics.rs` for the per-topic index.
//!
//! # Reading one topic
//! [`StreamLog::read_topic`] reads one topic's events through each segment's per-topic index:
//! it reads the index's runs of that topic and then only the bytes of those events, so its
//! cost follows what it returns (plus one index lookup per segment passed), not the stream.
//! The active segment's index is in memory; a sealed one's is in its `BASE.topics`, whose
//! directory is cached up to [`StreamConfig::topic_cache_bytes`]. Memory therefore does not
//! grow with retention: the active segment's index (24 bytes per run of consecutive
//! same-topic events in it, and a summary per topic) plus that cache.
//!
//! # Durability
//! The stream is written when entries are applied, after raft made them durable on a quorum
//! (the WAL): it is a second copy, so appends are not fsynced one by one. [`StreamLog::sync`]
//! makes everything appended durable; the node calls it before a snapshot lets the WAL drop
//! the entries the stream holds, so what the WAL forgets the stream has on disk. After a crash
//! the tail is recovered by checksum (torn or corrupt batches cut off) and the node replays
//! the WAL from its snapshot, truncating the stream to the snapshot's next offset first.
//!
//! A full segment is not fsynced when the next one starts: the roll only starts its
//! writeback, and the seal (fsync, then the checkpoint file) happens at the following roll
//! or the next [`StreamLog::sync`]. The applying thread so never waits for a whole segment
//! to reach the disk (a synchronous seal stalled every node's apply, and with it every
//! acknowledgement, for as long as a segment takes to write). A crash before the seal leaves
//! a segment without a checkpoint file; it may be torn like the newest one, and what
//! follows a torn segment is dropped (all of it is after the snapshot, so the WAL has it).
//!
//! # Invariants
//! * Offsets are contiguous: each segment starts where the previous one ends, and batches
//!   within a segment follow each other without gaps; `first_offset..next_offset` is held.
//! * Only the newest segment is appended to; a full one is closed, a new one started, and
//!   the full one sealed (fsynced, then its index checkpointed) by the next roll or sync.
//! * A checkpoint file exists only for a segment whose records were durable when it was
//!   written; everything up to [`StreamLog::sync`]'s return is durable.
//! * Retention deletes whole sealed segments, oldest first; the newest segment always stays,
//!   so `next_offset` survives a restart even when every event has aged out.
//! * Readers never see a partial batch: a segment's visible length only grows after the batch
//!   is written.
//! * A segment's topic index names every one of its events exactly once. `BASE.topics` is
//!   written only once the records it describes are durable (at the seal or a checkpoint,
//!   like `BASE.index`, or rebuilt from a sealed segment after an fsync), is deleted with the
//!   segment (retention, truncate, reset) and moves with it (`move_to`, `adopt_prefix`).

pub mod batch;
mod segment;
mod topics;

use crate::error::StorageError;
use batch::Batch;
use bytes::BytesMut;
use eventstream_core::{Event, Topic};
use segment::Segment;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use topics::{DirectoryCache, Run, TopicDirectory};

/// How a stream log lays out its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// A segment is sealed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// One sparse index entry per this many bytes of batches (and one per segment start).
    pub index_interval_bytes: u64,
    /// Bytes of sealed segments' topic directories kept in memory for topic reads.
    pub topic_cache_bytes: u64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            segment_bytes: 64 << 20,
            index_interval_bytes: 16 << 10,
            topic_cache_bytes: 4 << 20,
        }
    }
}

/// How much of the stream to keep; 0 = no limit. Applied to whole sealed segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most about this many events.
    pub max_events: u64,
    /// Keep at most about this many bytes of segments.
    pub max_bytes: u64,
    /// Drop segments whose newest event is older than this, milliseconds.
    pub max_age_ms: u64,
}

/// One segment as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset.
    pub base_offset: u64,
    /// One past the last offset.
    pub next_offset: u64,
    /// File bytes.
    pub bytes: u64,
    /// Newest event's time, ms since the epoch.
    pub max_timestamp_ms: u64,
}

/// What opening a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRecovery {
    /// Segments whose index came from its checkpoint (no scan).
    pub from_checkpoint: usize,
    /// Segments read through to rebuild their index.
    pub scanned: usize,
    /// Bytes of a torn or corrupt tail cut off.
    pub truncated_bytes: u64,
}

/// A read below what the log still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("offset {requested} is no longer held; the earliest is {earliest}")]
pub struct Compacted {
    /// The offset asked for.
    pub requested: u64,
    /// The first offset held.
    pub earliest: u64,
}

/// One event of a topic read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicEvent {
    /// Its stream offset.
    pub offset: u64,
    /// Its batch's stream time, ms since the epoch.
    pub timestamp_ms: u64,
    /// The event as stored.
    pub event: Event,
}

/// What [`StreamLog::read_topic`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRead {
    /// The topic's events at offsets `>= from`, in offset order.
    pub events: Vec<TopicEvent>,
    /// The offset to read from next: past every offset examined, so a range without the
    /// topic's events is skipped at once.
    pub next: u64,
}

/// A topic present in the retained segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: Topic,
    /// Its events retained.
    pub events: u64,
    /// Offset of its first retained event.
    pub first_offset: u64,
    /// Offset of its last event.
    pub last_offset: u64,
}

#[derive(Debug)]
struct Inner {
    /// By base offset; the last one is the one appended to.
    segments: BTreeMap<u64, Arc<Segment>>,
    /// Full segments whose seal (fsync, then checkpoint) is still to do, oldest first. A
    /// roll only starts their writeback, so the applying thread never waits for a whole
    /// segment to reach the disk; the next roll, [`StreamLog::sync`] or
    /// [`StreamLog::checkpoint`] completes it.
    unsealed: Vec<u64>,
}

impl Inner {
    /// The base of the segment holding `from` (the newest when `from` is past the end), or
    /// [`Compacted`] when `from` is below the first offset held.
    fn holding(&self, from: u64) -> Result<u64, Compacted> {
        let first = *self
            .segments
            .keys()
            .next()
            .expect("a log always has a segment");
        if from < first {
            return Err(Compacted {
                requested: from,
                earliest: first,
            });
        }
        Ok(*self
            .segments
            .range(..=from)
            .next_back()
            .expect("first <= from")
            .0)
    }
}

/// One partition's stream log. Shared: appends come from the applying thread, reads from
/// any number of readers at once.
#[derive(Debug)]
pub struct StreamLog {
    dir: PathBuf,
    cfg: StreamConfig,
    inner: RwLock<Inner>,
    /// Sealed segments' topic directories, bounded by `cfg.topic_cache_bytes`.
    topic_dirs: Mutex<DirectoryCache>,
    /// Held while a topic file is rebuilt, so two readers never write the same file at once.
    topic_rebuild: Mutex<()>,
}

/// The directory of partition `p` under a node's data directory.
pub fn partition_dir(data_dir: &Path, p: u32) -> PathBuf {
    data_dir.join("stream").join(format!("p{p}"))
}

impl StreamLog {
    /// Opens (or creates, empty at offset `start`) the log in `dir`. The newest segment's tail
    /// is recovered by checksum; sealed segments load their checkpointed index, or are
    /// scanned when it is missing or stale.
    pub fn open(
        dir: &Path,
        cfg: StreamConfig,
        start: u64,
    ) -> Result<(StreamLog, StreamRecovery), StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        remove_temporaries(dir)?;
        let bases = list_segments(dir)?;
        let mut rec = StreamRecovery::default();
        let mut segments = BTreeMap::new();
        let last = bases.last().copied();
        let mut expect: Option<u64> = None;
        let mut unsealed = Vec::new();
        for (i, &base) in bases.iter().enumerate() {
            let newest = Some(base) == last;
            // Only the segment before the newest can be full and unsealed (each roll seals
            // the one before it); without a checkpoint file it may be torn like the newest.
            let unsealed_full = i + 2 == bases.len() && !segment::index_path(dir, base).exists();
            let (seg, scanned) =
                Segment::open(dir, base, cfg.index_interval_bytes, newest || unsealed_full)?;
            if let Some(e) = expect {
                if base != e {
                    return Err(StorageError::CorruptLog {
                        path: seg.path.display().to_string(),
                        offset: 0,
                        reason: format!("segment starts at {base}, the previous one ends at {e}"),
                    });
                }
            }
            if scanned.from_checkpoint {
                rec.from_checkpoint += 1;
            } else {
                rec.scanned += 1;
            }
            rec.truncated_bytes += scanned.truncated_bytes;
            expect = Some(seg.state().next_offset);
            if !newest && !scanned.from_checkpoint {
                unsealed.push(base);
            }
            segments.insert(base, seg);
            if scanned.truncated_bytes > 0 && !newest {
                // A seal a crash interrupted left this segment torn: what follows it was
                // written after the hole and cannot be part of the log (the node replays it
                // from the WAL).
                for &later in &bases[i + 1..] {
                    tracing::warn!(base = later, "dropping a stream segment after a torn one");
                    remove_segment_files(dir, later)?;
                }
                unsealed.retain(|b| *b != base);
                break;
            }
        }
        if segments.is_empty() {
            segments.insert(start, Segment::create(dir, start)?);
            crate::snapshot::sync_dir(dir)?;
        }
        Ok((
            StreamLog {
                dir: dir.to_path_buf(),
                cfg,
                inner: RwLock::new(Inner { segments, unsealed }),
                topic_dirs: Mutex::new(DirectoryCache::new(cfg.topic_cache_bytes as usize)),
                topic_rebuild: Mutex::new(()),
            },
            rec,
        ))
    }

    fn inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn inner_mut(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn topic_dirs(&self) -> std::sync::MutexGuard<'_, DirectoryCache> {
        self.topic_dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self) -> Arc<Segment> {
        self.inner()
            .segments
            .values()
            .next_back()
            .cloned()
            .expect("a log always has a segment")
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first offset held.
    pub fn first_offset(&self) -> u64 {
        *self
            .inner()
            .segments
            .keys()
            .next()
            .expect("a log always has a segment")
    }

    /// One past the last offset held (the offset the next event gets).
    pub fn next_offset(&self) -> u64 {
        self.active().state().next_offset
    }

    /// Bytes of every segment.
    pub fn bytes(&self) -> u64 {
        self.inner().segments.values().map(|s| s.state().len).sum()
    }

    /// The newest event's time (0 for an empty log).
    pub fn last_timestamp_ms(&self) -> u64 {
        self.inner()
            .segments
            .values()
            .map(|s| s.state().max_timestamp_ms)
            .max()
            .unwrap_or(0)
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.inner()
            .segments
            .values()
            .map(|s| {
                let st = s.state();
                SegmentInfo {
                    base_offset: s.base,
                    next_offset: st.next_offset,
                    bytes: st.len,
                    max_timestamp_ms: st.max_timestamp_ms,
                }
            })
            .collect()
    }

    /// Appends events `next_offset()..+count`, encoded back to back in `events`, all at
    /// `timestamp_ms`, and returns the batch written. Written, not fsynced
    /// ([`sync`](Self::sync)).
    pub fn append(
        &self,
        count: u32,
        timestamp_ms: u64,
        events: &[u8],
    ) -> Result<Batch, StorageError> {
        let base_offset = self.next_offset();
        let mut buf = BytesMut::new();
        batch::put(&mut buf, base_offset, count, timestamp_ms, events);
        let b = Batch {
            base_offset,
            count,
            timestamp_ms,
            record: buf.freeze(),
        };
        self.write(&b)?;
        Ok(b)
    }

    /// Appends one whole record (as [`read`](Self::read) returns and a peer sends them):
    /// checked by checksum, and it must start at `next_offset()`.
    pub fn append_record(&self, record: &[u8]) -> Result<Batch, StorageError> {
        let bytes = bytes::Bytes::copy_from_slice(record);
        let b = match batch::decode(&bytes)? {
            Some(b) if b.record.len() == bytes.len() => b,
            _ => {
                return Err(StorageError::Decode(
                    eventstream_proto::DecodeError::Invalid {
                        field: "stream batch",
                        reason: format!("{} bytes are not one whole batch", record.len()),
                    },
                ))
            }
        };
        self.write(&b)?;
        Ok(b)
    }

    /// Writes `b` at the end, starting a new segment first when the newest one is full.
    fn write(&self, b: &Batch) -> Result<(), StorageError> {
        let mut active = self.active();
        let st = active.state();
        if b.base_offset != st.next_offset {
            return Err(StorageError::Decode(
                eventstream_proto::DecodeError::Invalid {
                    field: "stream batch offset",
                    reason: format!("{} where {} comes next", b.base_offset, st.next_offset),
                },
            ));
        }
        if st.len > 0 && st.len + b.record.len() as u64 > self.cfg.segment_bytes {
            active = self.roll(&active, st.next_offset)?;
        }
        active.append(&b.record, b, self.cfg.index_interval_bytes)
    }

    /// Closes `full` to appends, starts its writeback, seals the segments closed before it
    /// (their writeback has had a whole segment's time) and starts a segment at `next`.
    fn roll(&self, full: &Arc<Segment>, next: u64) -> Result<Arc<Segment>, StorageError> {
        // A checkpoint from a clean stop is stale once appends went on; until the seal
        // writes a fresh one, no checkpoint file marks the segment as possibly torn.
        for stale in [
            segment::index_path(&self.dir, full.base),
            topics::topics_path(&self.dir, full.base),
        ] {
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&stale, e)),
            }
        }
        full.start_writeback();
        self.seal_unsealed()?;
        let seg = Segment::create(&self.dir, next)?;
        crate::snapshot::sync_dir(&self.dir)?;
        let mut inner = self.inner_mut();
        inner.unsealed.push(full.base);
        inner.segments.insert(next, seg.clone());
        Ok(seg)
    }

    /// Seals every full segment still waiting: fsync, then the checkpoint (written only once
    /// the records it describes are durable, so a checkpoint file marks a whole segment).
    fn seal_unsealed(&self) -> Result<(), StorageError> {
        let waiting: Vec<Arc<Segment>> = {
            let inner = self.inner();
            let newest = inner.segments.keys().next_back().copied();
            inner
                .unsealed
                .iter()
                .filter(|b| Some(**b) != newest)
                .filter_map(|b| inner.segments.get(b).cloned())
                .collect()
        };
        for seg in &waiting {
            seg.sync()?;
            seg.checkpoint(&self.dir)?;
            seg.release_topics();
        }
        let mut inner = self.inner_mut();
        inner
            .unsealed
            .retain(|b| !waiting.iter().any(|s| s.base == *b));
        // Segments dropped meanwhile (retention, a reset) need no seal.
        let Inner { segments, unsealed } = &mut *inner;
        unsealed.retain(|b| segments.contains_key(b));
        Ok(())
    }

    /// Makes everything appended durable: seals the full segments still waiting, then
    /// `fdatasync` of the newest.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.seal_unsealed()?;
        self.active().sync()
    }

    /// The batches from the one holding `from` on, up to about `max_bytes` (at least one
    /// batch if `from < next_offset`). The first batch may start before `from`.
    pub fn read(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<Result<Vec<Batch>, Compacted>, StorageError> {
        let seg = {
            let inner = self.inner();
            match inner.holding(from) {
                Ok(base) => inner.segments[&base].clone(),
                Err(c) => return Ok(Err(c)),
            }
        };
        let mut out = seg.read_from(from, max_bytes)?;
        // `from` was this segment's end: the batches are in the next one.
        if out.is_empty() {
            let next = self
                .inner()
                .segments
                .range(from + 1..)
                .next()
                .map(|(_, s)| s.clone());
            if let Some(n) = next {
                out = n.read_from(from, max_bytes)?;
            }
        }
        Ok(Ok(out))
    }

    /// The first offset whose time is at or after `timestamp_ms` (`next_offset()` if none).
    pub fn offset_at_time(&self, timestamp_ms: u64) -> Result<u64, StorageError> {
        let segs: Vec<Arc<Segment>> = self.inner().segments.values().cloned().collect();
        for s in segs {
            if s.state().max_timestamp_ms >= timestamp_ms {
                return s.offset_at_time(timestamp_ms);
            }
        }
        Ok(self.next_offset())
    }

    /// Deletes the oldest sealed segments the policy no longer keeps, at `now_ms`; returns
    /// the bytes deleted. As Kafka does it: a segment goes when what remains without it still
    /// holds the limit (so between the limit and the limit plus one segment are kept), or when
    /// its newest event is older than the age limit.
    pub fn retain(&self, policy: RetentionPolicy, now_ms: u64) -> Result<u64, StorageError> {
        let mut freed = 0;
        loop {
            let (first, rest_bytes, rest_events) = {
                let inner = self.inner();
                if inner.segments.len() < 2 {
                    return Ok(freed);
                }
                let mut it = inner.segments.values();
                let first = it.next().cloned().expect("two segments");
                let rest: Vec<_> = it.map(|s| s.state()).collect();
                let bytes = rest.iter().map(|st| st.len).sum::<u64>();
                let events = rest.last().map_or(0, |st| st.next_offset) - first.state().next_offset;
                (first, bytes, events)
            };
            let st = first.state();
            let over_bytes = policy.max_bytes > 0 && rest_bytes >= policy.max_bytes;
            let over_events = policy.max_events > 0 && rest_events >= policy.max_events;
            let too_old = policy.max_age_ms > 0
                && st.max_timestamp_ms.saturating_add(policy.max_age_ms) < now_ms;
            if !(over_bytes || over_events || too_old) {
                return Ok(freed);
            }
            self.inner_mut().segments.remove(&first.base);
            self.topic_dirs().remove(first.base);
            remove_segment_files(&self.dir, first.base)?;
            freed += st.len;
        }
    }

    /// Drops every offset at or after `next` (a batch boundary), e.g. back to a snapshot's
    /// next offset before the WAL is replayed over it.
    pub fn truncate_to(&self, next: u64) -> Result<(), StorageError> {
        if next >= self.next_offset() {
            return Ok(());
        }
        if next < self.first_offset() {
            return self.reset(next);
        }
        let doomed: Vec<u64> = self
            .inner()
            .segments
            .range(next + 1..)
            .map(|(b, _)| *b)
            .collect();
        for base in doomed {
            self.inner_mut().segments.remove(&base);
            remove_segment_files(&self.dir, base)?;
        }
        let seg = self.active();
        self.topic_dirs().clear();
        seg.truncate_to(&self.dir, next, self.cfg.index_interval_bytes)
    }

    /// Drops everything and starts empty at `start` (a snapshot far ahead of this log, or
    /// retention having removed all of it elsewhere).
    pub fn reset(&self, start: u64) -> Result<(), StorageError> {
        let bases: Vec<u64> = self.inner().segments.keys().copied().collect();
        let seg = Segment::create(&self.dir, start).or_else(|_| {
            // A segment at `start` exists already: it is one of those being dropped.
            remove_segment_files(&self.dir, start)?;
            Segment::create(&self.dir, start)
        })?;
        let mut inner = self.inner_mut();
        for base in bases {
            if base != start {
                remove_segment_files(&self.dir, base)?;
            }
        }
        inner.segments.clear();
        inner.segments.insert(start, seg);
        drop(inner);
        self.topic_dirs().clear();
        crate::snapshot::sync_dir(&self.dir)
    }

    /// Moves every segment into `dir` (which must not exist yet), as a log of its own that is
    /// returned, and starts this one empty at `start` (a snapshot took the node past what it
    /// held: the old segments wait in `dir` for the offsets between them and `start` to be
    /// copied from another node). The move is one directory rename; a crash leaves either
    /// the old log or the moved one, never a mix.
    pub fn move_to(&self, dir: &Path, start: u64) -> Result<StreamLog, StorageError> {
        self.seal_unsealed()?;
        let mut inner = self.inner_mut();
        if let Some(active) = inner.segments.values().next_back() {
            active.sync()?;
            active.checkpoint(&self.dir)?;
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
        }
        std::fs::rename(&self.dir, dir).map_err(|e| StorageError::io(dir, e))?;
        std::fs::create_dir_all(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        inner.segments.clear();
        inner
            .segments
            .insert(start, Segment::create(&self.dir, start)?);
        drop(inner);
        self.topic_dirs().clear();
        if let Some(parent) = self.dir.parent() {
            crate::snapshot::sync_dir(parent)?;
        }
        crate::snapshot::sync_dir(&self.dir)?;
        let (moved, _) = StreamLog::open(dir, self.cfg, start)?;
        Ok(moved)
    }

    /// Puts `prefix` (a log ending exactly where this one starts) in front of this log: its
    /// segments move into this directory, newest first, so after a crash at any point both
    /// directories still hold contiguous logs and the splice resumes. `prefix`'s directory
    /// is removed.
    pub fn adopt_prefix(&self, prefix: StreamLog) -> Result<(), StorageError> {
        let first = self.first_offset();
        if prefix.next_offset() != first {
            return Err(StorageError::CorruptLog {
                path: prefix.dir.display().to_string(),
                offset: prefix.next_offset(),
                reason: format!(
                    "ends at {}, the log it goes before starts at {first}",
                    prefix.next_offset()
                ),
            });
        }
        prefix.checkpoint()?;
        let moving: Vec<u64> = prefix
            .inner()
            .segments
            .iter()
            .filter(|(_, s)| s.state().len > 0)
            .map(|(b, _)| *b)
            .rev()
            .collect();
        for base in moving {
            for (from, to) in [
                (
                    topics::topics_path(&prefix.dir, base),
                    topics::topics_path(&self.dir, base),
                ),
                (
                    segment::index_path(&prefix.dir, base),
                    segment::index_path(&self.dir, base),
                ),
                (
                    segment::log_path(&prefix.dir, base),
                    segment::log_path(&self.dir, base),
                ),
            ] {
                match std::fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(&from, e)),
                }
            }
            crate::snapshot::sync_dir(&self.dir)?;
            let (seg, _) = Segment::open(&self.dir, base, self.cfg.index_interval_bytes, false)?;
            self.inner_mut().segments.insert(base, seg);
        }
        let dir = prefix.dir.clone();
        drop(prefix);
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))
    }

    /// Up to `max_events` events of `topic` at offsets `>= from`, in order, stopping once about
    /// `max_bytes` of encoded events are read (at least one event when there is one), and the
    /// offset to continue from. Reads only the topic's events, found by the segments' topic
    /// indexes; a sealed segment's missing or corrupt `BASE.topics` is rebuilt by a scan. A
    /// `from` below the first offset held is [`Compacted`], as for [`read`](Self::read).
    pub fn read_topic(
        &self,
        topic: &str,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Result<TopicRead, Compacted>, StorageError> {
        let segs: Vec<Arc<Segment>> = {
            let inner = self.inner();
            match inner.holding(from) {
                Ok(base) => inner
                    .segments
                    .range(base..)
                    .map(|(_, s)| s.clone())
                    .collect(),
                Err(c) => return Ok(Err(c)),
            }
        };
        let mut out = TopicRead {
            events: Vec::new(),
            next: from,
        };
        let mut bytes = 0usize;
        for seg in segs {
            let end = seg.state().next_offset;
            for run in self.topic_runs(&seg, topic, from)? {
                let run_first = seg.base + u64::from(run.rel_offset);
                if out.events.len() >= max_events || (!out.events.is_empty() && bytes >= max_bytes)
                {
                    out.next = run_first.max(from);
                    return Ok(Ok(out));
                }
                let data = seg.read_at(u64::from(run.position), run.bytes as usize)?;
                let mut events = Vec::with_capacity(run.count as usize);
                // The run was indexed from a checked batch; a version-1 batch never carries the
                // key-and-headers flag, so allowing it decodes either version the same.
                eventstream_proto::codec::decode_events_run(
                    &data,
                    run.count as usize,
                    true,
                    &mut events,
                )?;
                for (i, event) in events.into_iter().enumerate() {
                    let offset = run_first + i as u64;
                    if offset < from {
                        continue;
                    }
                    if out.events.len() >= max_events
                        || (!out.events.is_empty() && bytes >= max_bytes)
                    {
                        out.next = offset;
                        return Ok(Ok(out));
                    }
                    bytes += eventstream_proto::codec::encoded_len(&event);
                    // Appends after `end` was read may already be in the active index.
                    out.next = offset + 1;
                    out.events.push(TopicEvent {
                        offset,
                        timestamp_ms: run.timestamp_ms,
                        event,
                    });
                }
            }
            out.next = out.next.max(end);
        }
        Ok(Ok(out))
    }

    /// `topic`'s runs in `seg` that hold offsets `>= from`: from memory for the active
    /// segment, else from its topic file (rebuilt when missing or corrupt).
    fn topic_runs(&self, seg: &Segment, topic: &str, from: u64) -> Result<Vec<Run>, StorageError> {
        if let Some(runs) = seg.topic_runs_in_memory(topic, from) {
            return Ok(runs);
        }
        let rel = from.saturating_sub(seg.base);
        let runs = match self.directory(seg, false)? {
            Some(dir) => match dir.get(topic) {
                None => return Ok(Vec::new()),
                Some(s) => match dir.runs(s) {
                    Some(runs) => runs,
                    None => self.rebuilt_runs(seg, topic)?,
                },
            },
            None => self.rebuilt_runs(seg, topic)?,
        };
        let i = runs.partition_point(|r| u64::from(r.rel_offset) + u64::from(r.count) <= rel);
        Ok(runs[i..].to_vec())
    }

    /// The directory of a sealed segment's topic file, cached; `None` when the file is
    /// missing, stale or corrupt. `rebuild` writes it anew from a scan first.
    fn directory(
        &self,
        seg: &Segment,
        rebuild: bool,
    ) -> Result<Option<Arc<TopicDirectory>>, StorageError> {
        let len = seg.state().len;
        let key = (seg.base, len);
        if !rebuild {
            if let Some(d) = self.topic_dirs().get(key) {
                return Ok(Some(d));
            }
        }
        let path = topics::topics_path(&self.dir, seg.base);
        let _rebuilding =
            rebuild.then(|| self.topic_rebuild.lock().unwrap_or_else(|p| p.into_inner()));
        if rebuild {
            let idx = seg.build_topics()?;
            tracing::info!(path = %path.display(), "rebuilding a stream segment's topic index");
            // The file describes records that must be durable first, like a checkpoint.
            seg.sync()?;
            crate::snapshot::write_atomic(&path, &idx.encode(seg.base, len))?;
            if !self.holds(seg) {
                // Retention or a reset removed the segment meanwhile: no file may outlive it.
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
        }
        let Some(d) = TopicDirectory::read(&path, seg.base, len) else {
            return Ok(None);
        };
        let d = Arc::new(d);
        self.topic_dirs().insert(key, d.clone());
        Ok(Some(d))
    }

    /// True while `seg` is one of the log's segments.
    fn holds(&self, seg: &Segment) -> bool {
        self.inner()
            .segments
            .get(&seg.base)
            .is_some_and(|s| std::ptr::eq(&**s, seg))
    }

    /// `topic`'s runs after rewriting `seg`'s topic file from a scan (none if the segment was
    /// removed meanwhile).
    fn rebuilt_runs(&self, seg: &Segment, topic: &str) -> Result<Vec<Run>, StorageError> {
        let rebuilt = self.directory(seg, true)?;
        if rebuilt.is_none() && !self.holds(seg) {
            return Ok(Vec::new());
        }
        let dir = rebuilt.ok_or_else(|| StorageError::CorruptLog {
            path: topics::topics_path(&self.dir, seg.base)
                .display()
                .to_string(),
            offset: 0,
            reason: "the topic index just written does not read back".into(),
        })?;
        Ok(match dir.get(topic) {
            Some(s) => dir.runs(s).unwrap_or_default(),
            None => Vec::new(),
        })
    }

    /// The topics present in the retained segments, by name, with their event counts and
    /// first and last offsets. Reads each sealed segment's topic directory (cached).
    pub fn topics(&self) -> Result<Vec<TopicInfo>, StorageError> {
        let segs: Vec<Arc<Segment>> = self.inner().segments.values().cloned().collect();
        let mut all: BTreeMap<Topic, TopicInfo> = BTreeMap::new();
        for seg in segs {
            let summaries = match seg.topic_summaries_in_memory() {
                Some(s) => s,
                None => match self.directory(&seg, false)? {
                    Some(d) => d.topics.clone(),
                    None => self
                        .directory(&seg, true)?
                        .map(|d| d.topics.clone())
                        .unwrap_or_default(),
                },
            };
            for s in summaries {
                let e = all.entry(s.name.clone()).or_insert(TopicInfo {
                    name: s.name,
                    events: 0,
                    first_offset: s.first_offset,
                    last_offset: s.last_offset,
                });
                e.events += s.events;
                e.last_offset = s.last_offset;
            }
        }
        Ok(all.into_values().collect())
    }

    /// Bytes of topic index held in memory: the segments' in-memory indexes and the cache of
    /// sealed segments' directories.
    pub fn topic_index_memory_bytes(&self) -> usize {
        let segs: Vec<Arc<Segment>> = self.inner().segments.values().cloned().collect();
        segs.iter().map(|s| s.topics_memory_bytes()).sum::<usize>() + self.topic_dirs().bytes()
    }

    /// Seals the newest segment's index to disk (a clean shutdown: the next open needs no
    /// scan of it). Appends may continue; the checkpoint is then stale and ignored.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.seal_unsealed()?;
        let active = self.active();
        active.sync()?;
        active.checkpoint(&self.dir)
    }
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let mut bases = Vec::new();
    for ent in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let ent = ent.map_err(|e| StorageError::io(dir, e))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(b) = stem.parse::<u64>() {
                bases.push(b);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn remove_segment_files(dir: &Path, base: u64) -> Result<(), StorageError> {
    for p in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        topics::topics_path(dir, base),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&p, e)),
        }
    }
    Ok(())
}

fn remove_temporaries(dir: &Path) -> Result<(), StorageError> {
    for ent in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let ent = ent.map_err(|e| StorageError::io(dir, e))?;
        if ent.file_name().to_string_lossy().ends_with(".tmp") {
            let p = ent.path();
            std::fs::remove_file(&p).map_err(|e| StorageError::io(&p, e))?;
        }
    }
    Ok(())
}
