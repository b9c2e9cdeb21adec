//! One segment of the stream log: a file of batch records starting at `base` offset, and its
//! sparse indexes, kept in memory and checkpointed to a file when the segment is sealed.
//!
//! # Files
//! * `BASE.log` — batch records ([`super::batch`]), `BASE` = the first offset, 20 digits.
//! * `BASE.topics` — the per-topic index ([`super::topics`]): in memory while the segment is
//!   appended to, written beside `BASE.index` when it is sealed.
//! * `BASE.index` — the checkpoint of a sealed segment: `b"ESIX" | u32 version (1) | u64 base |
//!   u64 next_offset | u64 log_len | u64 max_timestamp_ms | u32 n | n × (u32 rel_offset | u32
//!   position | u64 timestamp_ms) | u32 crc32(everything before)`. Valid only while the log
//!   file is exactly `log_len` bytes; otherwise it is rebuilt by scanning the log.
//!
//! Invariants:
//! * Index entries are increasing in offset, position and timestamp; each points at the start
//!   of a batch; the first batch of a non-empty segment always has one.
//! * Bytes beyond `len` are never read: a reader sees only whole, checksummed batches.

use super::batch::{self, Batch};
use super::topics::{self, Run, TopicIndex, TopicSummary};
use crate::error::StorageError;
use bytes::{Bytes, BytesMut};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const INDEX_MAGIC: &[u8; 4] = b"ESIX";
const INDEX_VERSION: u32 = 1;
const INDEX_HEADER: usize = 4 + 4 + 8 + 8 + 8 + 8 + 4;
const INDEX_ENTRY: usize = 4 + 4 + 8;

/// One sparse index entry: the batch starting at `base + rel_offset` is at `position`, and the
/// stream reached `timestamp_ms` with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub rel_offset: u32,
    pub position: u32,
    pub timestamp_ms: u64,
}

/// What a segment holds now.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentState {
    /// Bytes of whole batches.
    pub len: u64,
    /// One past the last offset.
    pub next_offset: u64,
    /// Largest timestamp of its batches (0 if empty).
    pub max_timestamp_ms: u64,
    /// Sparse index.
    pub index: Vec<IndexEntry>,
    /// Bytes appended since the last index entry.
    pub since_index: u64,
}

/// A segment file and its in-memory index.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    file: File,
    pub state: RwLock<SegmentState>,
    /// The per-topic index while it is held in memory (the active segment, and one closed but
    /// not yet sealed); `None` once it is on disk only.
    topics: RwLock<Option<TopicIndex>>,
}

/// What recovery found in a segment file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The checkpointed index was valid and used.
    pub from_checkpoint: bool,
    /// Bytes of a torn or corrupt tail cut off.
    pub truncated_bytes: u64,
}

pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

impl Segment {
    /// Creates an empty segment starting at `base` (the file must not exist).
    pub fn create(dir: &Path, base: u64) -> Result<Arc<Segment>, StorageError> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        Ok(Arc::new(Segment {
            base,
            path,
            file,
            state: RwLock::new(SegmentState {
                next_offset: base,
                ..SegmentState::default()
            }),
            topics: RwLock::new(Some(TopicIndex::default())),
        }))
    }

    /// Opens an existing segment: its checkpoint if valid, else a scan. `tail` allows a torn or
    /// corrupt end, which is cut off (the newest segment, or a full one whose seal a crash
    /// interrupted); elsewhere it is corruption. A `tail` segment (still to be appended to or
    /// sealed) gets its per-topic index rebuilt in memory by reading it; any other one reads
    /// its `BASE.topics` when a topic is asked for.
    pub fn open(
        dir: &Path,
        base: u64,
        index_interval: u64,
        tail: bool,
    ) -> Result<(Arc<Segment>, Scanned), StorageError> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| StorageError::io(&path, e))?
            .len();
        let mut scanned = Scanned::default();
        let state = match read_checkpoint(&index_path(dir, base), base, file_len) {
            Some(st) if !tail => {
                scanned.from_checkpoint = true;
                st
            }
            _ => {
                let (st, torn) = scan(&file, &path, base, file_len, index_interval, tail)?;
                if torn > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        bytes = torn,
                        "truncating torn or corrupt stream log tail"
                    );
                    file.set_len(st.len)
                        .map_err(|e| StorageError::io(&path, e))?;
                    file.sync_all().map_err(|e| StorageError::io(&path, e))?;
                }
                scanned.truncated_bytes = torn;
                st
            }
        };
        let seg = Arc::new(Segment {
            base,
            path,
            file,
            state: RwLock::new(state),
            topics: RwLock::new(None),
        });
        if tail {
            let idx = seg.build_topics()?;
            *seg.topics_mut() = Some(idx);
        }
        Ok((seg, scanned))
    }

    pub fn state(&self) -> SegmentState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn topics_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<TopicIndex>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn topics_ref(&self) -> std::sync::RwLockReadGuard<'_, Option<TopicIndex>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The per-topic index of every batch in the segment, by reading it.
    pub fn build_topics(&self) -> Result<TopicIndex, StorageError> {
        let st = self.state();
        let mut idx = TopicIndex::default();
        let mut pos = 0u64;
        while pos < st.len {
            let got = self.batches_from(pos, &st, 8 << 20, |_| true)?;
            if got.is_empty() {
                break;
            }
            for b in &got {
                let events = b.events()?;
                idx.note_events(self.base, b, pos, events);
                pos += b.record.len() as u64;
            }
        }
        Ok(idx)
    }

    /// `topic`'s runs holding offsets `>= from`, if the index is in memory.
    pub fn topic_runs_in_memory(&self, topic: &str, from: u64) -> Option<Vec<Run>> {
        let guard = self.topics_ref();
        let idx = guard.as_ref()?;
        let Some(t) = idx.topics.get(topic) else {
            return Some(Vec::new());
        };
        let rel = from.saturating_sub(self.base);
        let i = t
            .runs
            .partition_point(|r| u64::from(r.rel_offset) + u64::from(r.count) <= rel);
        Some(t.runs[i..].to_vec())
    }

    /// The topics of the segment, if the index is in memory.
    pub fn topic_summaries_in_memory(&self) -> Option<Vec<TopicSummary>> {
        self.topics_ref().as_ref().map(TopicIndex::summaries)
    }

    /// Drops the in-memory per-topic index (the segment is sealed: its file holds it).
    pub fn release_topics(&self) {
        *self.topics_mut() = None;
    }

    /// Bytes of the in-memory per-topic index (0 once released).
    pub fn topics_memory_bytes(&self) -> usize {
        self.topics_ref()
            .as_ref()
            .map_or(0, TopicIndex::memory_bytes)
    }

    /// Appends one encoded record of `batch` (written, not yet fsynced).
    pub fn append(
        &self,
        record: &[u8],
        batch: &Batch,
        index_interval: u64,
    ) -> Result<(), StorageError> {
        // The events are decoded before anything is written, so a batch the topic index cannot
        // account for is refused whole.
        let mut topics = self.topics_mut();
        let events = match topics.as_ref() {
            Some(_) => Some(batch.events()?),
            None => None,
        };
        (&self.file)
            .write_all(record)
            .map_err(|e| StorageError::io(&self.path, e))?;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let position = st.len;
        note_batch(&mut st, self.base, batch, index_interval);
        if let (Some(idx), Some(events)) = (topics.as_mut(), events) {
            idx.note_events(self.base, batch, position, events);
        }
        Ok(())
    }

    /// `fdatasync` of the file.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// Asks the kernel to start writing the file's dirty pages back, without waiting (a
    /// sealed segment: its [`sync`](Self::sync) later then finds little left to write).
    /// Best effort: a failure only means the later sync does all the work.
    pub fn start_writeback(&self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to `self.file`, which stays open for the whole call;
        // sync_file_range reads its integer arguments only and touches no memory of ours.
        let _ = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
        };
    }

    /// Reads `n` bytes at `pos` (whole batches: the caller stays within `len`).
    pub fn read_at(&self, pos: u64, n: usize) -> Result<Bytes, StorageError> {
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| StorageError::io(&self.path, e))?;
        Ok(Bytes::from(buf))
    }

    /// The batches from the one holding `offset` on, up to about `max_bytes` (at least one
    /// batch when there is one).
    pub fn read_from(&self, offset: u64, max_bytes: usize) -> Result<Vec<Batch>, StorageError> {
        let st = self.state();
        if offset >= st.next_offset || st.len == 0 {
            return Ok(Vec::new());
        }
        let rel = offset.saturating_sub(self.base);
        let start = match st.index.partition_point(|e| u64::from(e.rel_offset) <= rel) {
            0 => 0,
            i => u64::from(st.index[i - 1].position),
        };
        self.batches_from(start, &st, max_bytes, |b| b.next_offset() > offset)
    }

    /// The first offset whose batch has a timestamp at or after `ts` (`next_offset` if none).
    pub fn offset_at_time(&self, ts: u64) -> Result<u64, StorageError> {
        let st = self.state();
        if st.max_timestamp_ms < ts {
            return Ok(st.next_offset);
        }
        let start = match st.index.partition_point(|e| e.timestamp_ms < ts) {
            0 => 0,
            i => u64::from(st.index[i - 1].position),
        };
        let mut pos = start;
        while pos < st.len {
            let got = self.batches_from(pos, &st, 1 << 20, |_| true)?;
            for b in &got {
                if b.timestamp_ms >= ts {
                    return Ok(b.base_offset);
                }
                pos += b.record.len() as u64;
            }
            if got.is_empty() {
                break;
            }
        }
        Ok(st.next_offset)
    }

    /// Whole batches from byte `start`, skipping those `keep` refuses while nothing is kept
    /// yet, up to about `max_bytes`.
    fn batches_from(
        &self,
        start: u64,
        st: &SegmentState,
        max_bytes: usize,
        keep: impl Fn(&Batch) -> bool,
    ) -> Result<Vec<Batch>, StorageError> {
        let mut out = Vec::new();
        let mut taken = 0usize;
        let mut pos = start;
        // Read in pieces of at least 256 KiB (one pread for many small batches).
        let chunk = (max_bytes as u64).clamp(256 << 10, 8 << 20);
        while pos < st.len && (out.is_empty() || taken < max_bytes) {
            let n = chunk.min(st.len - pos) as usize;
            let buf = self.read_at(pos, n)?;
            let mut at = 0usize;
            loop {
                let rest = buf.slice(at..);
                let b = match batch::decode(&rest) {
                    Ok(Some(b)) => b,
                    // A batch larger than this read: read from its start with room for it.
                    Ok(None) if at == 0 => {
                        let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default());
                        let whole = batch::RECORD_HEADER + len as usize;
                        let buf = self.read_at(pos, whole)?;
                        match batch::decode(&buf) {
                            Ok(Some(b)) => b,
                            _ => return Err(corrupt(&self.path, pos, "batch does not decode")),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(corrupt(&self.path, pos + at as u64, &e.to_string())),
                };
                let len = b.record.len();
                at += len;
                if !out.is_empty() || keep(&b) {
                    taken += len;
                    out.push(b);
                }
                if at >= buf.len() || (!out.is_empty() && taken >= max_bytes) {
                    break;
                }
            }
            pos += at as u64;
        }
        Ok(out)
    }

    /// Writes the checkpoint index file (the segment is sealed: no more appends).
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StorageError> {
        let st = self.state();
        let mut b = BytesMut::with_capacity(INDEX_HEADER + st.index.len() * INDEX_ENTRY + 4);
        b.extend_from_slice(INDEX_MAGIC);
        b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        for v in [self.base, st.next_offset, st.len, st.max_timestamp_ms] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(st.index.len() as u32).to_le_bytes());
        for e in &st.index {
            b.extend_from_slice(&e.rel_offset.to_le_bytes());
            b.extend_from_slice(&e.position.to_le_bytes());
            b.extend_from_slice(&e.timestamp_ms.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        if let Some(idx) = self.topics_ref().as_ref() {
            crate::snapshot::write_atomic(
                &topics::topics_path(dir, self.base),
                &idx.encode(self.base, st.len),
            )?;
        }
        crate::snapshot::write_atomic(&index_path(dir, self.base), &b)
    }

    /// Cuts the segment after the batch ending at `next` (an offset at a batch boundary in
    /// this segment) and drops its checkpoint.
    pub fn truncate_to(
        &self,
        dir: &Path,
        next: u64,
        index_interval: u64,
    ) -> Result<(), StorageError> {
        let st = self.state();
        let batches = self.batches_from(0, &st, usize::MAX, |_| true)?;
        let mut fresh = SegmentState {
            next_offset: self.base,
            ..SegmentState::default()
        };
        let mut topics = TopicIndex::default();
        for b in batches.iter().take_while(|b| b.next_offset() <= next) {
            topics.note_events(self.base, b, fresh.len, b.events()?);
            note_batch(&mut fresh, self.base, b, index_interval);
        }
        if fresh.next_offset != next {
            return Err(corrupt(
                &self.path,
                fresh.len,
                &format!("offset {next} is not at a batch boundary"),
            ));
        }
        self.file
            .set_len(fresh.len)
            .map_err(|e| StorageError::io(&self.path, e))?;
        self.file
            .sync_all()
            .map_err(|e| StorageError::io(&self.path, e))?;
        let _ = std::fs::remove_file(index_path(dir, self.base));
        let _ = std::fs::remove_file(topics::topics_path(dir, self.base));
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        *self.topics_mut() = Some(topics);
        Ok(())
    }
}

/// Accounts for `b`, appended at the segment's current end.
fn note_batch(st: &mut SegmentState, base: u64, b: &Batch, index_interval: u64) {
    if st.index.is_empty() || st.since_index >= index_interval {
        st.index.push(IndexEntry {
            rel_offset: (b.base_offset - base) as u32,
            position: st.len as u32,
            timestamp_ms: b.timestamp_ms,
        });
        st.since_index = 0;
    }
    let len = b.record.len() as u64;
    st.len += len;
    st.since_index += len;
    st.next_offset = b.next_offset();
    st.max_timestamp_ms = st.max_timestamp_ms.max(b.timestamp_ms);
}

fn corrupt(path: &Path, offset: u64, reason: &str) -> StorageError {
    StorageError::CorruptLog {
        path: path.display().to_string(),
        offset,
        reason: reason.to_owned(),
    }
}

/// Rebuilds a segment's state by reading it; returns it and the bytes of a torn tail.
fn scan(
    file: &File,
    path: &Path,
    base: u64,
    file_len: u64,
    index_interval: u64,
    tail: bool,
) -> Result<(SegmentState, u64), StorageError> {
    let mut st = SegmentState {
        next_offset: base,
        ..SegmentState::default()
    };
    let mut pos = 0u64;
    const PIECE: u64 = 8 << 20;
    'outer: while pos < file_len {
        let n = PIECE.min(file_len - pos) as usize;
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| StorageError::io(path, e))?;
        let buf = Bytes::from(buf);
        let mut at = 0usize;
        loop {
            let rest = buf.slice(at..);
            match batch::decode(&rest) {
                Ok(Some(b)) if b.base_offset == st.next_offset => {
                    at += b.record.len();
                    note_batch(&mut st, base, &b, index_interval);
                }
                Ok(Some(b)) => {
                    let why = format!(
                        "batch at offset {} where {} was expected",
                        b.base_offset, st.next_offset
                    );
                    if tail {
                        break 'outer;
                    }
                    return Err(corrupt(path, pos + at as u64, &why));
                }
                Ok(None) if at == 0 && rest.len() == n && n as u64 == PIECE => {
                    // One batch larger than a piece: read it whole.
                    let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default());
                    let whole = (batch::RECORD_HEADER + len as usize) as u64;
                    if pos + whole > file_len {
                        break 'outer;
                    }
                    let mut big = vec![0u8; whole as usize];
                    file.read_exact_at(&mut big, pos)
                        .map_err(|e| StorageError::io(path, e))?;
                    match batch::decode(&Bytes::from(big)) {
                        Ok(Some(b)) if b.base_offset == st.next_offset => {
                            note_batch(&mut st, base, &b, index_interval);
                            pos += whole;
                            continue 'outer;
                        }
                        _ if tail => break 'outer,
                        _ => return Err(corrupt(path, pos, "batch does not decode")),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if tail {
                        break 'outer;
                    }
                    return Err(corrupt(path, pos + at as u64, &e.to_string()));
                }
            }
        }
        if at == 0 {
            break;
        }
        pos += at as u64;
    }
    if st.len < file_len && !tail {
        return Err(corrupt(path, st.len, "a partial batch in a sealed segment"));
    }
    Ok((st.clone(), file_len - st.len))
}

/// A valid checkpoint of the segment at `base` whose log is `file_len` bytes, if any.
fn read_checkpoint(path: &Path, base: u64, file_len: u64) -> Option<SegmentState> {
    let data = std::fs::read(path).ok()?;
    if data.len() < INDEX_HEADER + 4 {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = eventstream_proto::codec::Reader::new(body);
    if r.take(4).ok()? != INDEX_MAGIC || r.u32().ok()? != INDEX_VERSION {
        return None;
    }
    let (b, next_offset, len, max_ts) =
        (r.u64().ok()?, r.u64().ok()?, r.u64().ok()?, r.u64().ok()?);
    let n = r.u32().ok()? as usize;
    if b != base
        || len != file_len
        || n != r.remaining() / INDEX_ENTRY
        || r.remaining() % INDEX_ENTRY != 0
    {
        return None;
    }
    let mut index = Vec::with_capacity(n);
    for _ in 0..n {
        index.push(IndexEntry {
            rel_offset: r.u32().ok()?,
            position: r.u32().ok()?,
            timestamp_ms: r.u64().ok()?,
        });
    }
    Some(SegmentState {
        len,
        next_offset,
        max_timestamp_ms: max_ts,
        index,
        since_index: 0,
    })
}
