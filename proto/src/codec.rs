//! Binary encoding of event batches: the payload of a raft entry, of a publish request and of
//! a subscription frame. Pure functions over byte slices (fuzzable).
//!
//! # Format (little-endian)
//! A *block* is `u8 magic (0xE5) | u8 version (1 or 2) | u32 count | count × event`; an event
//! is `u64 id | u8 priority | u64 ingest_ns | u16 topic_len | topic (UTF-8) | u32 payload_len |
//! payload [| meta]`. An entry's data is one or more blocks back to back (the driver
//! concatenates the proposals it merges into one entry without re-encoding them).
//!
//! The priority byte's low bits are the priority (0..=3); bit 7 ([`META_FLAG`]) says the
//! event's key and headers follow its payload:
//! `meta = u32 key_len (0xFFFF_FFFF: no key) | key | u16 header_count | header_count × (u16
//! name_len | name (UTF-8) | u32 value_len (0xFFFF_FFFF: null value) | value)`.
//! An event without key and headers is encoded exactly as in version 1, so every version-1
//! event is a valid version-2 event and raw event bytes can be copied between blocks and stream
//! records of either version. The flag is allowed only in version-2 blocks; a block is written
//! as version 1 when none of its events carries meta, so readers of version 1 (older clients and
//! members) read everything that has no key or headers.
//!
//! Invariant: decoding never allocates more than the input length justifies (counts are
//! checked against the bytes left before reserving), so a hostile count cannot exhaust memory.

use crate::error::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};
use eventstream_core::{Event, EventId, EventMeta, Header, Priority, Topic};

/// First byte of every block.
pub const BLOCK_MAGIC: u8 = 0xE5;
/// First byte of a raft entry's time header: `u8 magic | u8 version (1) | u64 unix_ms`, the
/// stream time the leader gave the entry when it proposed it.
pub const ENTRY_TIME_MAGIC: u8 = 0xE7;
/// Bytes of an entry's time header.
pub const ENTRY_TIME_LEN: usize = 10;
/// Block format version written by this build for blocks where some event has a key or
/// headers (others are written as [`BLOCK_VERSION_V1`]).
pub const BLOCK_VERSION: u8 = 2;
/// The block format without keys and headers (still written when no event has them).
pub const BLOCK_VERSION_V1: u8 = 1;
/// Bit of an event's priority byte saying that its key and headers follow the payload.
pub const META_FLAG: u8 = 0x80;
/// Longest record key accepted (64 KiB).
pub const MAX_KEY_LEN: usize = 64 << 10;
/// Most headers an event may carry.
pub const MAX_HEADERS: usize = 256;
/// Most bytes an event's headers may take together (names and values, 64 KiB).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Length written for an absent key or a null header value.
const NULL_LEN: u32 = u32::MAX;
/// Smallest encoded header (empty name, null value).
const MIN_HEADER_LEN: usize = 2 + 4;
/// Smallest encoded event (empty topic and payload).
const MIN_EVENT_LEN: usize = 8 + 1 + 8 + 2 + 4;
/// Bytes of the block header.
pub const BLOCK_HEADER_LEN: usize = 6;

/// Bytes `meta` takes encoded.
fn meta_len(meta: &EventMeta) -> usize {
    4 + meta.key.as_ref().map_or(0, |k| k.len())
        + 2
        + meta
            .headers
            .iter()
            .map(|h| MIN_HEADER_LEN + h.name.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// Bytes `event` takes encoded (within a block: an event's encoding starts at its position).
pub fn encoded_len(event: &Event) -> usize {
    MIN_EVENT_LEN
        + event.topic.len()
        + event.payload.len()
        + event.meta.as_deref().map_or(0, meta_len)
}

/// Bytes `event` takes encoded without its key and headers (see [`put_event_v1`]).
pub fn encoded_len_v1(event: &Event) -> usize {
    MIN_EVENT_LEN + event.topic.len() + event.payload.len()
}

/// Appends one event, with its key and headers if it has them.
pub fn put_event(buf: &mut BytesMut, event: &Event) {
    put_event_as(buf, event, true);
}

/// Appends one event in the version-1 encoding: its key and headers are left out (for
/// readers that speak only version 1).
pub fn put_event_v1(buf: &mut BytesMut, event: &Event) {
    put_event_as(buf, event, false);
}

fn put_event_as(buf: &mut BytesMut, event: &Event, with_meta: bool) {
    let meta = event.meta.as_deref().filter(|_| with_meta);
    buf.reserve(encoded_len_v1(event) + meta.map_or(0, meta_len));
    buf.put_u64_le(event.id.0);
    buf.put_u8(event.priority as u8 | if meta.is_some() { META_FLAG } else { 0 });
    buf.put_u64_le(event.ingest_ns);
    // Topics longer than u16::MAX are refused by `validate_event` before they get here.
    buf.put_u16_le(event.topic.len() as u16);
    buf.put_slice(event.topic.as_bytes());
    buf.put_u32_le(event.payload.len() as u32);
    buf.put_slice(&event.payload);
    if let Some(m) = meta {
        put_nullable(buf, m.key.as_ref());
        // Counts and lengths beyond the limits are refused by `validate_event` first.
        buf.put_u16_le(m.headers.len() as u16);
        for h in &m.headers {
            buf.put_u16_le(h.name.len() as u16);
            buf.put_slice(h.name.as_bytes());
            put_nullable(buf, h.value.as_ref());
        }
    }
}

/// `u32 len | bytes`, or [`NULL_LEN`] alone for `None`.
fn put_nullable(buf: &mut BytesMut, v: Option<&Bytes>) {
    match v {
        Some(v) => {
            buf.put_u32_le(v.len() as u32);
            buf.put_slice(v);
        }
        None => buf.put_u32_le(NULL_LEN),
    }
}

/// The version a block of `events` is written as: 1 unless some event has a key or headers.
pub fn block_version(events: &[Event]) -> u8 {
    if events.iter().any(|e| e.meta.is_some()) {
        BLOCK_VERSION
    } else {
        BLOCK_VERSION_V1
    }
}

/// Appends one block holding `events` (version 1 when none has a key or headers).
pub fn put_block(buf: &mut BytesMut, events: &[Event]) {
    buf.reserve(BLOCK_HEADER_LEN + events.iter().map(encoded_len).sum::<usize>());
    buf.put_u8(BLOCK_MAGIC);
    buf.put_u8(block_version(events));
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

/// `Err` naming `field` when `len` exceeds `max`.
fn at_most(field: &'static str, len: usize, max: usize) -> Result<(), DecodeError> {
    if len > max {
        return Err(DecodeError::Invalid {
            field,
            reason: format!("{len} is more than the {max} allowed"),
        });
    }
    Ok(())
}

/// Checks the limits the encoding imposes: topic and payload length, and the key's length,
/// the number of headers, each name's length and the headers' total bytes.
pub fn validate_event(event: &Event, max_payload: usize) -> Result<(), DecodeError> {
    if let Some(m) = event.meta.as_deref() {
        at_most(
            "key length",
            m.key.as_ref().map_or(0, |k| k.len()),
            MAX_KEY_LEN,
        )?;
        at_most("header count", m.headers.len(), MAX_HEADERS)?;
        let mut total = 0;
        for h in &m.headers {
            at_most("header name length", h.name.len(), u16::MAX as usize)?;
            total += h.name.len() + h.value.as_ref().map_or(0, |v| v.len());
        }
        at_most("header bytes", total, MAX_HEADER_BYTES)?;
    }
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
    read_event_cached(r, src, &mut None, true)
}

/// [`read_event`], reusing `last_topic` when this event's topic has the same bytes: events of
/// a block are usually of one topic, and a byte compare skips the UTF-8 check and the
/// `Topic` construction (both showed in profiles of the apply path). `allow_meta`: the
/// container's version allows [`META_FLAG`] (a version-1 block does not).
fn read_event_cached(
    r: &mut Reader<'_>,
    src: &Bytes,
    last_topic: &mut Option<Topic>,
    allow_meta: bool,
) -> Result<Event, DecodeError> {
    let id = r.u64()?;
    let byte = r.u8()?;
    let has_meta = allow_meta && byte & META_FLAG != 0;
    let p = if has_meta { byte & !META_FLAG } else { byte };
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
    let payload = read_slice(r, src)?;
    let meta = if has_meta {
        Some(Box::new(read_meta(r, src)?))
    } else {
        None
    };
    Ok(Event {
        id: EventId(id),
        topic,
        priority,
        payload,
        ingest_ns,
        meta,
    })
}

/// A `u32`-length-prefixed byte string, as a slice of `src`.
fn read_slice(r: &mut Reader<'_>, src: &Bytes) -> Result<Bytes, DecodeError> {
    let len = r.u32()? as usize;
    let start = r.pos();
    r.take(len)?;
    Ok(src.slice(start..start + len))
}

/// Like [`read_slice`], with [`NULL_LEN`] read as `None`.
fn read_nullable(r: &mut Reader<'_>, src: &Bytes) -> Result<Option<Bytes>, DecodeError> {
    let len = r.u32()?;
    if len == NULL_LEN {
        return Ok(None);
    }
    let start = r.pos();
    r.take(len as usize)?;
    Ok(Some(src.slice(start..start + len as usize)))
}

/// An event's key and headers (after its payload, when its priority byte has [`META_FLAG`]).
fn read_meta(r: &mut Reader<'_>, src: &Bytes) -> Result<EventMeta, DecodeError> {
    let key = read_nullable(r, src)?;
    let count = r.u16()? as usize;
    if count > MAX_HEADERS || count > r.remaining() / MIN_HEADER_LEN {
        return Err(DecodeError::Invalid {
            field: "header count",
            reason: format!(
                "{count} headers (at most {MAX_HEADERS}) cannot fit in {} bytes",
                r.remaining()
            ),
        });
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.str16("header name")?.to_owned();
        let value = read_nullable(r, src)?;
        headers.push(Header { name, value });
    }
    Ok(EventMeta { key, headers })
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
    if v != BLOCK_VERSION && v != BLOCK_VERSION_V1 {
        return Err(DecodeError::Version(v));
    }
    let allow_meta = v == BLOCK_VERSION;
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
        out.push(read_event_cached(r, src, &mut last_topic, allow_meta)?);
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
/// fill exactly, appending them to `out` (payloads are slices of `src`). `allow_meta`: the
/// container's format version allows keys and headers ([`META_FLAG`]).
pub fn decode_events_run(
    src: &Bytes,
    count: usize,
    allow_meta: bool,
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
        out.push(read_event_cached(&mut r, src, &mut last_topic, allow_meta)?);
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
/// event)`. `with_meta`: events keep their keys and headers (a subscriber of protocol version
/// 2); without, they are encoded as version 1 encodes them.
pub fn put_offset_events<'a>(
    buf: &mut BytesMut,
    events: impl ExactSizeIterator<Item = (u64, &'a Event)>,
    with_meta: bool,
) {
    buf.put_u32_le(events.len() as u32);
    for (off, e) in events {
        buf.put_u64_le(off);
        put_event_as(buf, e, with_meta);
    }
}

/// Decodes a subscription body written by [`put_offset_events`] starting at `start` (with or
/// without keys and headers).
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

    fn with_meta(e: Event) -> Event {
        e.with_key(&b"k"[..])
            .with_header("a", Some(Bytes::from_static(b"1")))
            .with_header("null", None)
            .with_header("", Some(Bytes::new()))
    }

    #[test]
    fn key_and_headers_round_trip_in_a_version_2_block() {
        let evs = vec![
            with_meta(ev(1, "orders", Priority::High, b"x")),
            ev(2, "orders", Priority::Low, b"y"),
            ev(3, "t", Priority::Critical, b"").with_key(Bytes::new()),
        ];
        let block = encode_block(&evs);
        assert_eq!(block[1], BLOCK_VERSION);
        let mut out = Vec::new();
        let mut positions = Vec::new();
        decode_blocks_with_positions(&block, &mut out, &mut positions).unwrap();
        assert_eq!(out, evs);
        for (i, p) in positions.iter().enumerate() {
            assert_eq!(decode_event_at(&block, *p as usize).unwrap(), evs[i]);
            let next = positions.get(i + 1).map_or(block.len(), |n| *n as usize);
            assert_eq!(next - *p as usize, encoded_len(&evs[i]), "event {i}");
        }
    }

    #[test]
    fn blocks_without_meta_are_written_as_version_1_byte_for_byte() {
        let evs = vec![ev(1, "orders", Priority::High, b"x")];
        let block = encode_block(&evs);
        assert_eq!(block[1], BLOCK_VERSION_V1);
        // The version-1 layout, written by hand.
        let mut want = vec![BLOCK_MAGIC, 1, 1, 0, 0, 0];
        want.extend_from_slice(&1u64.to_le_bytes());
        want.push(Priority::High as u8);
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&6u16.to_le_bytes());
        want.extend_from_slice(b"orders");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.push(b'x');
        assert_eq!(&block[..], &want[..]);
        let mut out = Vec::new();
        decode_blocks(&Bytes::from(want), &mut out).unwrap();
        assert_eq!(out, evs);
    }

    #[test]
    fn the_meta_flag_is_refused_in_a_version_1_block() {
        let mut bytes =
            BytesMut::from(&encode_block(&[with_meta(ev(1, "a", Priority::High, b""))])[..]);
        bytes[1] = BLOCK_VERSION_V1;
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

    #[test]
    fn subscription_bodies_keep_or_drop_meta() {
        let evs = [
            with_meta(ev(1, "a", Priority::High, b"p")),
            ev(2, "a", Priority::Low, b""),
        ];
        let mut b = BytesMut::new();
        put_offset_events(
            &mut b,
            evs.iter().enumerate().map(|(i, e)| (i as u64, e)),
            true,
        );
        let got = decode_offset_events(&b.freeze(), 0).unwrap();
        assert_eq!(got[0].1, evs[0]);
        let mut b = BytesMut::new();
        put_offset_events(
            &mut b,
            evs.iter().enumerate().map(|(i, e)| (i as u64, e)),
            false,
        );
        let b = b.freeze();
        // Without meta no priority byte has the flag: a version-1 reader takes every event.
        assert_eq!(b[4 + 8 + 8] & META_FLAG, 0);
        let got = decode_offset_events(&b, 0).unwrap();
        assert_eq!(got[0].1.meta, None);
        assert_eq!(got[0].1.payload, evs[0].payload);
        assert_eq!(
            b.len(),
            4 + 16 + evs.iter().map(encoded_len_v1).sum::<usize>()
        );
    }

    #[test]
    fn hostile_header_counts_and_lengths_are_errors() {
        let mut b = BytesMut::from(&encode_block(&[ev(1, "", Priority::High, b"")])[..]);
        b[1] = BLOCK_VERSION;
        b[BLOCK_HEADER_LEN + 8] |= META_FLAG;
        b.put_u32_le(NULL_LEN);
        b.put_u16_le(u16::MAX);
        let err = decode_blocks(&b.freeze(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Invalid {
                    field: "header count",
                    ..
                }
            ),
            "{err}"
        );
        let mut b = BytesMut::from(&encode_block(&[ev(1, "", Priority::High, b"")])[..]);
        b[1] = BLOCK_VERSION;
        b[BLOCK_HEADER_LEN + 8] |= META_FLAG;
        b.put_u32_le(1 << 30); // a key longer than the input
        b.put_u16_le(0);
        let err = decode_blocks(&b.freeze(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }), "{err}");
    }

    #[test]
    fn validation_names_the_key_and_header_limit_exceeded() {
        let field = |e: &Event| match validate_event(e, 1 << 20) {
            Err(DecodeError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let base = ev(1, "t", Priority::High, b"");
        assert!(validate_event(&with_meta(base.clone()), 1 << 20).is_ok());
        let long_key = base.clone().with_key(vec![0u8; MAX_KEY_LEN + 1]);
        assert_eq!(field(&long_key), "key length");
        let ok_key = base.clone().with_key(vec![0u8; MAX_KEY_LEN]);
        assert!(validate_event(&ok_key, 1 << 20).is_ok());
        let many = (0..=MAX_HEADERS).fold(base.clone(), |e, i| e.with_header(i.to_string(), None));
        assert_eq!(field(&many), "header count");
        let big = base
            .clone()
            .with_header("a", Some(Bytes::from(vec![0u8; MAX_HEADER_BYTES])));
        assert_eq!(field(&big), "header bytes");
        let long_name = base.with_header("n".repeat(u16::MAX as usize + 1), None);
        assert_eq!(field(&long_name), "header name length");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let b = Bytes::from(data);
            let _ = decode_blocks(&b, &mut Vec::new());
            let _ = decode_offset_events(&b, 0);
        }

        #[test]
        fn round_trip(events in proptest::collection::vec((any::<u64>(), prop_oneof!["[a-z]{0,12}", "[ab]{0,1}"], 0u8..4, proptest::collection::vec(any::<u8>(), 0..40), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)), proptest::collection::vec(("[a-z]{0,4}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3)), 0..20)) {
            let evs: Vec<Event> = events.iter().map(|(id, t, p, pl, key, headers)| {
                let mut e = ev(*id, t, Priority::from_index(*p).unwrap(), pl);
                if let Some(k) = key {
                    e = e.with_key(k.clone());
                }
                for (n, v) in headers {
                    e = e.with_header(n.clone(), v.clone().map(Bytes::from));
                }
                e
            }).collect();
            let mut out = Vec::new();
            decode_blocks(&encode_block(&evs), &mut out).unwrap();
            prop_assert_eq!(out, evs);
        }
    }
}
