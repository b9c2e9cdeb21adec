//! Binary encoding of event batches: the payload of a raft entry, of a publish request and of
//! a subscription frame. Pure functions over byte slices (fuzzable).
//!
//! # Format (little-endian)
//! A *block* is `u8 magic (0xE5) | u8 version (1) | u32 count | count × event`; an event is
//! `u64 id | u8 priority | u64 ingest_ns | u16 topic_len | topic (UTF-8) | u32 payload_len |
//! payload`. An entry's data is one or more blocks back to back (the driver concatenates the
//! proposals it merges into one entry without re-encoding them).
//!
//! Invariant: decoding never allocates more than the input length justifies (counts are
//! checked against the bytes left before reserving), so a hostile count cannot exhaust memory.

use crate::error::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};
use eventstream_core::{Event, EventId, Priority, Topic};

/// First byte of every block.
pub const BLOCK_MAGIC: u8 = 0xE5;
/// First byte of a raft entry's time header: `u8 magic | u8 version (1) | u64 unix_ms`, the
/// stream time the leader gave the entry when it proposed it.
pub const ENTRY_TIME_MAGIC: u8 = 0xE7;
/// Bytes of an entry's time header.
pub const ENTRY_TIME_LEN: usize = 10;
/// Block format version written by this build.
pub const BLOCK_VERSION: u8 = 1;
/// Smallest encoded event (empty topic and payload).
const MIN_EVENT_LEN: usize = 8 + 1 + 8 + 2 + 4;
/// Bytes of the block header.
pub const BLOCK_HEADER_LEN: usize = 6;

/// Bytes `event` takes encoded (within a block: an event's encoding starts at its position).
pub fn encoded_len(event: &Event) -> usize {
    MIN_EVENT_LEN + event.topic.len() + event.payload.len()
}

/// Appends one event.
pub fn put_event(buf: &mut BytesMut, event: &Event) {
    buf.reserve(encoded_len(event));
    buf.put_u64_le(event.id.0);
    buf.put_u8(event.priority as u8);
    buf.put_u64_le(event.ingest_ns);
    // Topics longer than u16::MAX are refused by `validate_event` before they get here.
    buf.put_u16_le(event.topic.len() as u16);
    buf.put_slice(event.topic.as_bytes());
    buf.put_u32_le(event.payload.len() as u32);
    buf.put_slice(&event.payload);
}

/// Appends one block holding `events`.
pub fn put_block(buf: &mut BytesMut, events: &[Event]) {
    buf.reserve(BLOCK_HEADER_LEN + events.iter().map(encoded_len).sum::<usize>());
    buf.put_u8(BLOCK_MAGIC);
    buf.put_u8(BLOCK_VERSION);
    buf.put_u32_le(events.len() as u32);
    for e in events {
        put_event(buf, e);
    }
}

/// Encodes `events` as one block.
pub fn encode_block(events: &[Event]) -> Bytes {
    let mut buf = BytesMut::new();
    put_block(&mut buf, events);
    buf.freeze()
}

/// Checks the limits the encoding imposes.
pub fn validate_event(event: &Event, max_payload: usize) -> Result<(), DecodeError> {
    if event.topic.len() > u16::MAX as usize {
        return Err(DecodeError::TooLong {
            len: event.topic.len(),
            max: u16::MAX as usize,
        });
    }
    if event.payload.len() > max_payload {
        return Err(DecodeError::TooLong {
            len: event.payload.len(),
            max: max_payload,
        });
    }
    Ok(())
}

/// A cursor over a byte slice with bounds-checked reads.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    /// Current position.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                at: self.pos,
                needed: n - self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Reads a u8.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// The bytes of the length-prefixed string at the position, without consuming them;
    /// `None` if they do not fit.
    fn peek_str16(&self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let n = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
        rest.get(2..2 + n)
    }

    /// Skips a length-prefixed string already checked by [`peek_str16`](Self::peek_str16).
    fn str16_raw(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// Reads a `u16`-length-prefixed UTF-8 string.
    pub fn str16(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|e| DecodeError::Invalid {
            field,
            reason: e.to_string(),
        })
    }
}

/// Decodes one event at the reader's position. `src` must be the `Bytes` the reader reads, so
/// payloads are zero-copy slices of it.
fn read_event(r: &mut Reader<'_>, src: &Bytes) -> Result<Event, DecodeError> {
    read_event_cached(r, src, &mut None)
}

/// [`read_event`], reusing `last_topic` when this event's topic has the same bytes: events of
/// a block are usually of one topic, and a byte compare skips the UTF-8 check and the
/// `Topic` construction (both showed in profiles of the apply path).
fn read_event_cached(
    r: &mut Reader<'_>,
    src: &Bytes,
    last_topic: &mut Option<Topic>,
) -> Result<Event, DecodeError> {
    let id = r.u64()?;
    let p = r.u8()?;
    let priority = Priority::from_index(p).ok_or_else(|| DecodeError::Invalid {
        field: "priority",
        reason: format!("{p} is not 0..=3"),
    })?;
    let ingest_ns = r.u64()?;
    let topic = match last_topic {
        Some(t) if r.peek_str16() == Some(t.as_bytes()) => {
            r.str16_raw()?;
            t.clone()
        }
        _ => {
            let t = Topic::from(r.str16("topic")?);
            *last_topic = Some(t.clone());
            t
        }
    };
    let len = r.u32()? as usize;
    let start = r.pos();
    r.take(len)?;
    Ok(Event {
        id: EventId(id),
        topic,
        priority,
        payload: src.slice(start..start + len),
        ingest_ns,
    })
}

/// Decodes one block at the reader's position, appending its events to `out` (and, if given,
/// each event's byte position in `src` to `positions`).
fn read_block(
    r: &mut Reader<'_>,
    src: &Bytes,
    out: &mut Vec<Event>,
    mut positions: Option<&mut Vec<u32>>,
) -> Result<(), DecodeError> {
    let magic = r.u8()?;
    if magic != BLOCK_MAGIC {
        return Err(DecodeError::Invalid {
            field: "block magic",
            reason: format!("{magic:#04x}"),
        });
    }
    let v = r.u8()?;
    if v != BLOCK_VERSION {
        return Err(DecodeError::Version(v));
    }
    let count = r.u32()? as usize;
    if count > r.remaining() / MIN_EVENT_LEN {
        return Err(DecodeError::Invalid {
            field: "event count",
            reason: format!("{count} events cannot fit in {} bytes", r.remaining()),
        });
    }
    out.reserve(count);
    let mut last_topic = None;
    for _ in 0..count {
        if let Some(p) = positions.as_deref_mut() {
            p.push(r.pos() as u32);
        }
        out.push(read_event_cached(r, src, &mut last_topic)?);
    }
    Ok(())
}

/// Decodes every block of `src` (an entry's data, or the rest of a frame) into `out`.
pub fn decode_blocks(src: &Bytes, out: &mut Vec<Event>) -> Result<(), DecodeError> {
    decode_blocks_at(src, 0, out)
}

/// Like [`decode_blocks`], starting at byte `start`.
pub fn decode_blocks_at(
    src: &Bytes,
    start: usize,
    out: &mut Vec<Event>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(src);
    r.take(start)?;
    while r.remaining() > 0 {
        read_block(&mut r, src, out, None)?;
    }
    Ok(())
}

/// Like [`decode_blocks`], also recording each event's byte position (for
/// [`decode_event_at`]). `src` must be shorter than 4 GiB (entries are far smaller).
pub fn decode_blocks_with_positions(
    src: &Bytes,
    out: &mut Vec<Event>,
    positions: &mut Vec<u32>,
) -> Result<(), DecodeError> {
    if src.len() > u32::MAX as usize {
        return Err(DecodeError::TooLong {
            len: src.len(),
            max: u32::MAX as usize,
        });
    }
    let mut r = Reader::new(src);
    while r.remaining() > 0 {
        read_block(&mut r, src, out, Some(positions))?;
    }
    Ok(())
}

/// Decodes `count` events encoded back to back in `src` (no block header), which they must
/// fill exactly, appending them to `out` (payloads are slices of `src`).
pub fn decode_events_run(
    src: &Bytes,
    count: usize,
    out: &mut Vec<Event>,
) -> Result<(), DecodeError> {
    if count > src.len() / MIN_EVENT_LEN {
        return Err(DecodeError::Invalid {
            field: "event count",
            reason: format!("{count} events cannot fit in {} bytes", src.len()),
        });
    }
    let mut r = Reader::new(src);
    out.reserve(count);
    let mut last_topic = None;
    for _ in 0..count {
        out.push(read_event_cached(&mut r, src, &mut last_topic)?);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid {
            field: "event run",
            reason: format!("{} bytes after {count} events", r.remaining()),
        });
    }
    Ok(())
}

/// Starts an entry's data with its stream time (`unix_ms`, the leader's wall clock when it
/// proposes); the blocks follow.
pub fn put_entry_time(buf: &mut Vec<u8>, unix_ms: u64) {
    buf.push(ENTRY_TIME_MAGIC);
    buf.push(1);
    buf.extend_from_slice(&unix_ms.to_le_bytes());
}

/// Decodes a raft entry's data: the optional time header, then every block (events into
/// `out`, their byte positions into `positions`). Returns the entry's time, if it has one
/// (entries written before entries carried one have none).
pub fn decode_entry_with_positions(
    src: &Bytes,
    out: &mut Vec<Event>,
    positions: &mut Vec<u32>,
) -> Result<Option<u64>, DecodeError> {
    if src.len() > u32::MAX as usize {
        return Err(DecodeError::TooLong {
            len: src.len(),
            max: u32::MAX as usize,
        });
    }
    let mut r = Reader::new(src);
    let time = if src.first() == Some(&ENTRY_TIME_MAGIC) {
        r.u8()?;
        let v = r.u8()?;
        if v != 1 {
            return Err(DecodeError::Version(v));
        }
        Some(r.u64()?)
    } else {
        None
    };
    while r.remaining() > 0 {
        read_block(&mut r, src, out, Some(positions))?;
    }
    Ok(time)
}

/// Decodes the single event at byte `pos` of `src`.
pub fn decode_event_at(src: &Bytes, pos: usize) -> Result<Event, DecodeError> {
    let mut r = Reader::new(src);
    r.take(pos)?;
    read_event(&mut r, src)
}

/// Appends `(offset, event)` pairs as a subscription body: `u32 count | count × (u64 offset |
/// event)`.
pub fn put_offset_events<'a>(
    buf: &mut BytesMut,
    events: impl ExactSizeIterator<Item = (u64, &'a Event)>,
) {
    buf.put_u32_le(events.len() as u32);
    for (off, e) in events {
        buf.put_u64_le(off);
        put_event(buf, e);
    }
}

/// Decodes a subscription body written by [`put_offset_events`] starting at `start`.
pub fn decode_offset_events(src: &Bytes, start: usize) -> Result<Vec<(u64, Event)>, DecodeError> {
    let mut r = Reader::new(src);
    r.take(start)?;
    let count = r.u32()? as usize;
    if count > r.remaining() / (MIN_EVENT_LEN + 8) {
        return Err(DecodeError::Invalid {
            field: "event count",
            reason: format!("{count} events cannot fit in {} bytes", r.remaining()),
        });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let off = r.u64()?;
        out.push((off, read_event(&mut r, src)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(id: u64, topic: &str, p: Priority, payload: &[u8]) -> Event {
        Event {
            ingest_ns: id.wrapping_mul(7),
            ..Event::new(topic, p, Bytes::copy_from_slice(payload)).with_id(id)
        }
    }

    #[test]
    fn blocks_round_trip_and_concatenate() {
        let a = vec![
            ev(1, "orders", Priority::High, b"x"),
            ev(2, "", Priority::Low, b""),
        ];
        let b = vec![ev(3, "t", Priority::Critical, &[0u8; 300])];
        let mut buf = BytesMut::new();
        put_block(&mut buf, &a);
        put_block(&mut buf, &b);
        let bytes = buf.freeze();
        let mut out = Vec::new();
        decode_blocks(&bytes, &mut out).unwrap();
        let mut want = a.clone();
        want.extend(b);
        assert_eq!(out, want);
    }

    #[test]
    fn hostile_counts_and_bad_fields_are_errors() {
        let mut buf = BytesMut::new();
        buf.put_u8(BLOCK_MAGIC);
        buf.put_u8(BLOCK_VERSION);
        buf.put_u32_le(u32::MAX);
        let err = decode_blocks(&buf.freeze(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    field: "event count",
                    ..
                }
            ),
            "{err}"
        );
        let mut bytes = BytesMut::from(&encode_block(&[ev(1, "a", Priority::High, b"")])[..]);
        bytes[14] = 9; // priority byte
        let err = decode_blocks(&bytes.freeze(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    field: "priority",
                    ..
                }
            ),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(data);
            let _ = decode_blocks(&b, &mut Vec::new());
            let _ = decode_offset_events(&b, 0);
        }

        #[test]
        fn round_trip(events in proptest::collection::vec((any::<u64>(), prop_oneof!["[a-z]{0,12}", "[ab]{0,1}"], 0u8..4, proptest::collection::vec(any::<u8>(), 0..40)), 0..20)) {
            let evs: Vec<Event> = events.iter().map(|(id, t, p, pl)| ev(*id, t, Priority::from_index(*p).unwrap(), pl)).collect();
            let mut out = Vec::new();
            decode_blocks(&encode_block(&evs), &mut out).unwrap();
            prop_assert_eq!(out, evs);
        }
    }
}
