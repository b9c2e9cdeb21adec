//! One record of the stream log: a batch of consecutive events (one applied raft entry's fresh
//! events) with the stream time they were given. The same bytes are what a follower copies
//! from the leader, so they carry their own checksum.
//!
//! # Layout (little-endian)
//! ```text
//! u32 body_len | u32 crc32(body) | body
//! body = u8 version (2) | u64 base_offset | u32 count | u64 timestamp_ms | events
//! events = count × event, encoded as the protocol's event codec encodes them
//! ```
//!
//! Version 2 lets events carry a key and headers (the codec's meta flag in the priority
//! byte); version 1, written by earlier builds, has events without them and still decodes.
//! An event's bytes are the same in both, so records are written as version 2 always.
//!
//! Invariants (checked by [`decode_header`] and [`Batch::events`]): the checksum matches, the
//! body is at least a header long, the count is not larger than the bytes can hold, and the
//! events decode to exactly the body's end. Decoding is pure and never allocates by an
//! unchecked length.

use bytes::{Bytes, BytesMut};
use eventstream_core::Event;
use eventstream_proto::codec;
use eventstream_proto::DecodeError;

/// `u32 len | u32 crc`.
pub const RECORD_HEADER: usize = 8;
/// version, base offset, count, timestamp.
pub const BODY_HEADER: usize = 1 + 8 + 4 + 8;
/// Format version written by this build.
pub const VERSION: u8 = 2;
/// The format earlier builds wrote (events without keys and headers); still read.
pub const VERSION_V1: u8 = 1;
/// Largest batch body accepted on recovery or from a peer (64 MiB; an entry is at most
/// `raft.max_entry_bytes`, 64 MiB at most).
pub const MAX_BODY: usize = 64 << 20;
/// Smallest encoded event (see the codec).
const MIN_EVENT_LEN: usize = 8 + 1 + 8 + 2 + 4;

/// A decoded batch header and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Offset of the first event.
    pub base_offset: u64,
    /// Events in the batch (offsets `base_offset..base_offset + count`).
    pub count: u32,
    /// The stream time of every event of the batch, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The whole record, header included (what is written and copied).
    pub record: Bytes,
}

impl Batch {
    /// One past the last offset.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.count)
    }

    /// The encoded events (after the body header).
    pub fn events_bytes(&self) -> Bytes {
        self.record.slice(RECORD_HEADER + BODY_HEADER..)
    }

    /// The events with their offsets; payloads are slices of the record (no copy).
    pub fn events(&self) -> Result<Vec<(u64, Event)>, DecodeError> {
        let src = self.events_bytes();
        let mut out = Vec::with_capacity(self.count as usize);
        let allow_meta = self.record[RECORD_HEADER] == VERSION;
        codec::decode_events_run(&src, self.count as usize, allow_meta, &mut out)?;
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, e)| (self.base_offset + i as u64, e))
            .collect())
    }
}

/// Appends a record for events `base_offset..` (their encodings back to back in `events`).
pub fn put(buf: &mut BytesMut, base_offset: u64, count: u32, timestamp_ms: u64, events: &[u8]) {
    let body_len = BODY_HEADER + events.len();
    buf.reserve(RECORD_HEADER + body_len);
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&[VERSION]);
    buf.extend_from_slice(&base_offset.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(events);
    let crc = crc32fast::hash(&buf[start + RECORD_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Splits one record off the front of `buf`: `Ok(None)` if `buf` ends inside it (a torn
/// tail), an error if it is corrupt. The events themselves are checked by [`Batch::events`];
/// here the checksum vouches for them.
pub fn decode(buf: &Bytes) -> Result<Option<Batch>, DecodeError> {
    if buf.len() < RECORD_HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(BODY_HEADER..=MAX_BODY).contains(&len) {
        return Err(DecodeError::Invalid {
            field: "stream batch length",
            reason: format!("{len} is outside {BODY_HEADER}..={MAX_BODY}"),
        });
    }
    if buf.len() < RECORD_HEADER + len {
        return Ok(None);
    }
    let stored = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[RECORD_HEADER..RECORD_HEADER + len];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    decode_header(&buf.slice(..RECORD_HEADER + len)).map(Some)
}

/// The header of a complete, checksummed record.
fn decode_header(record: &Bytes) -> Result<Batch, DecodeError> {
    let mut r = codec::Reader::new(&record[RECORD_HEADER..]);
    let version = r.u8()?;
    if version != VERSION && version != VERSION_V1 {
        return Err(DecodeError::Version(version));
    }
    let base_offset = r.u64()?;
    let count = r.u32()?;
    let timestamp_ms = r.u64()?;
    if count as usize > r.remaining() / MIN_EVENT_LEN {
        return Err(DecodeError::Invalid {
            field: "stream batch count",
            reason: format!("{count} events cannot fit in {} bytes", r.remaining()),
        });
    }
    base_offset
        .checked_add(u64::from(count))
        .ok_or(DecodeError::Invalid {
            field: "stream batch offset",
            reason: format!("{base_offset} + {count} overflows"),
        })?;
    Ok(Batch {
        base_offset,
        count,
        timestamp_ms,
        record: record.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstream_core::Priority;
    use proptest::prelude::*;

    fn encoded(ids: &[u64]) -> Vec<u8> {
        let mut b = BytesMut::new();
        for &id in ids {
            codec::put_event(
                &mut b,
                &Event::new("t", Priority::High, id.to_le_bytes().to_vec()).with_id(id),
            );
        }
        b.to_vec()
    }

    #[test]
    fn batches_round_trip_with_offsets_and_time() {
        let mut buf = BytesMut::new();
        put(&mut buf, 10, 3, 1_700_000_000_123, &encoded(&[7, 8, 9]));
        put(&mut buf, 13, 1, 1_700_000_000_124, &encoded(&[1]));
        let all = buf.freeze();
        let a = decode(&all).unwrap().unwrap();
        assert_eq!(
            (a.base_offset, a.count, a.timestamp_ms),
            (10, 3, 1_700_000_000_123)
        );
        let evs = a.events().unwrap();
        assert_eq!(
            evs.iter().map(|(o, e)| (*o, e.id.0)).collect::<Vec<_>>(),
            [(10, 7), (11, 8), (12, 9)]
        );
        let b = decode(&all.slice(a.record.len()..)).unwrap().unwrap();
        assert_eq!((b.base_offset, b.next_offset()), (13, 14));
        // A torn record is "not yet", a flipped byte is corruption.
        assert_eq!(decode(&all.slice(..a.record.len() - 1)).unwrap(), None);
        let mut bad = all.to_vec();
        bad[RECORD_HEADER + 3] ^= 1;
        assert!(matches!(
            decode(&Bytes::from(bad)),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn version_1_records_still_decode_and_version_2_keeps_key_and_headers() {
        let mut buf = BytesMut::new();
        put(&mut buf, 5, 2, 1_000, &encoded(&[1, 2]));
        let mut v1 = buf.to_vec();
        // The record as an earlier build wrote it: version 1, checksum over the body.
        v1[RECORD_HEADER] = VERSION_V1;
        let crc = crc32fast::hash(&v1[RECORD_HEADER..]);
        v1[4..8].copy_from_slice(&crc.to_le_bytes());
        let old = decode(&Bytes::from(v1)).unwrap().unwrap();
        let ids: Vec<_> = old
            .events()
            .unwrap()
            .iter()
            .map(|(o, e)| (*o, e.id.0))
            .collect();
        assert_eq!(ids, [(5, 1), (6, 2)]);

        let e = Event::new("t", Priority::Low, &b"p"[..])
            .with_id(9)
            .with_key(&b"k"[..])
            .with_header("h", None);
        let mut b = BytesMut::new();
        codec::put_event(&mut b, &e);
        let mut buf = BytesMut::new();
        put(&mut buf, 0, 1, 1_000, &b);
        let record = decode(&buf.freeze()).unwrap().unwrap();
        assert_eq!(record.record[RECORD_HEADER], VERSION);
        assert_eq!(record.events().unwrap(), [(0, e)]);
        // The same event bytes in a version-1 record are refused: version 1 has no meta.
        let mut v1 = record.record.to_vec();
        v1[RECORD_HEADER] = VERSION_V1;
        let crc = crc32fast::hash(&v1[RECORD_HEADER..]);
        v1[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&Bytes::from(v1)).unwrap().unwrap().events().is_err());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let b = Bytes::from(data);
            if let Ok(Some(batch)) = decode(&b) {
                let _ = batch.events();
            }
        }
    }
}
