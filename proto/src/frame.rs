//! Wire frames shared by the peer transport and the client protocol (see `docs/protocol.md`).
//!
//! A frame is an 8-byte header — `u8 frame version (1) | u8 kind | u16 reserved (0) | u32 length`,
//! little-endian — followed by `length` bytes of body. A length above the connection's maximum,
//! an unknown version, kind or non-zero reserved field is a protocol error that closes that
//! connection only. Every decoder here is a pure function over a byte slice.

use crate::codec::{self, Reader};
use crate::error::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};
use eventstream_core::{Event, Priority};

/// The frame header's version byte (the header layout; unchanged by protocol versions).
pub const FRAME_VERSION: u8 = 1;
/// The client protocol version this build speaks: 2 adds events' keys and headers. A client
/// says its version in its `Hello`; the node answers in the lower of the two.
pub const PROTOCOL_VERSION: u8 = 2;
/// The first client protocol version (events without keys and headers).
pub const PROTOCOL_V1: u8 = 1;
/// Frame header length.
pub const HEADER_LEN: usize = 8;
/// Default largest frame body accepted (16 MiB).
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// The offset a `PublishOk` reports for a duplicate whose original offset is no longer
/// remembered (it is stored once, at an offset this node cannot name).
pub const OFFSET_UNKNOWN: u64 = u64::MAX;
/// Longest admin token accepted (in a token file or a client `Hello`).
pub const MAX_TOKEN_LEN: usize = 4096;

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// First frame on every connection: who is speaking.
    Hello = 1,
    /// One raft message (protobuf), peer connections only.
    Raft = 2,
    /// Publish a batch of events.
    Publish = 10,
    /// Offsets of a committed publish.
    PublishOk = 11,
    /// A request failed.
    Error = 12,
    /// Subscribe to the committed stream.
    Subscribe = 20,
    /// Committed events for a subscriber.
    Events = 21,
    /// Commit a consumer group's offsets ([`GroupCommit`]); answered with `PublishOk`
    /// carrying the commit's own stream offset.
    GroupCommit = 22,
    /// Ask for the node's cluster status.
    Status = 30,
    /// The node's cluster status (JSON).
    StatusOk = 31,
    /// Add a learner or promote one (see [`crate::admin`]).
    MemberAdd = 40,
    /// Remove a member.
    MemberRemove = 41,
    /// List the members (leader).
    MemberList = 42,
    /// Hand leadership to another voter.
    LeaderTransfer = 43,
    /// An administrative request succeeded (JSON).
    AdminOk = 44,
    /// Ask for a consistent snapshot of the node's applied state (backup).
    SnapshotRequest = 50,
    /// One piece of a snapshot: `u64 req_id | u64 total_len | u64 chunk_offset | bytes`.
    SnapshotChunk = 51,
    /// Ask for the stream's batch records from an offset (a follower copying what it lacks,
    /// a backup): `u64 req_id | u64 from | u64 to | u32 max_bytes`.
    StreamFetch = 52,
    /// Batch records answering a fetch: `u64 req_id | u64 first | u64 next | records`.
    StreamChunk = 53,
}

impl Kind {
    /// Parses a kind byte.
    pub fn from_u8(b: u8) -> Result<Kind, DecodeError> {
        Ok(match b {
            1 => Kind::Hello,
            2 => Kind::Raft,
            10 => Kind::Publish,
            11 => Kind::PublishOk,
            12 => Kind::Error,
            20 => Kind::Subscribe,
            21 => Kind::Events,
            22 => Kind::GroupCommit,
            30 => Kind::Status,
            31 => Kind::StatusOk,
            40 => Kind::MemberAdd,
            41 => Kind::MemberRemove,
            42 => Kind::MemberList,
            43 => Kind::LeaderTransfer,
            44 => Kind::AdminOk,
            50 => Kind::SnapshotRequest,
            51 => Kind::SnapshotChunk,
            52 => Kind::StreamFetch,
            53 => Kind::StreamChunk,
            other => return Err(DecodeError::Kind(other)),
        })
    }
}

/// Validates a header; returns the kind and body length.
pub fn decode_header(h: &[u8; HEADER_LEN], max_body: usize) -> Result<(Kind, usize), DecodeError> {
    if h[0] != FRAME_VERSION {
        return Err(DecodeError::Version(h[0]));
    }
    let kind = Kind::from_u8(h[1])?;
    if h[2] != 0 || h[3] != 0 {
        return Err(DecodeError::Invalid {
            field: "reserved",
            reason: "must be zero".into(),
        });
    }
    let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > max_body {
        return Err(DecodeError::TooLong { len, max: max_body });
    }
    Ok((kind, len))
}

/// A decoded frame borrowed from the input: kind, body, bytes consumed.
pub type RawFrame<'a> = (Kind, &'a [u8], usize);

/// Splits one frame off the front of `buf`: `Ok(None)` if more bytes are needed.
pub fn decode_frame(buf: &[u8], max_body: usize) -> Result<Option<RawFrame<'_>>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&buf[..HEADER_LEN]);
    let (kind, len) = decode_header(&h, max_body)?;
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some((
        kind,
        &buf[HEADER_LEN..HEADER_LEN + len],
        HEADER_LEN + len,
    )))
}

/// Appends a frame header for a body of `len` bytes.
pub fn put_header(buf: &mut BytesMut, kind: Kind, len: usize) {
    buf.put_u8(FRAME_VERSION);
    buf.put_u8(kind as u8);
    buf.put_u16_le(0);
    buf.put_u32_le(len as u32);
}

/// Appends a whole frame.
pub fn put_frame(buf: &mut BytesMut, kind: Kind, body: &[u8]) {
    buf.reserve(HEADER_LEN + body.len());
    put_header(buf, kind, body.len());
    buf.put_slice(body);
}

/// Writes a frame whose body is produced by `body` into `buf` (length patched afterwards).
pub fn put_frame_with(buf: &mut BytesMut, kind: Kind, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    put_header(buf, kind, 0);
    body(buf);
    let len = (buf.len() - start - HEADER_LEN) as u32;
    buf[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client (publish / subscribe / status).
    Client,
    /// Raft peer `from`.
    Peer {
        /// The sender's raft id.
        from: u64,
    },
}

/// Encodes a hello body; a client's is that of protocol version 1 (see
/// [`encode_client_hello`] for the current one).
pub fn encode_hello(role: Role) -> Vec<u8> {
    let mut v = Vec::with_capacity(9);
    match role {
        Role::Client => {
            v.push(1);
            v.extend_from_slice(&0u64.to_le_bytes());
        }
        Role::Peer { from } => {
            v.push(2);
            v.extend_from_slice(&from.to_le_bytes());
        }
    }
    v
}

/// Decodes a hello body.
pub fn decode_hello(body: &[u8]) -> Result<Role, DecodeError> {
    let mut r = Reader::new(body);
    let role = r.u8()?;
    let from = r.u64()?;
    match role {
        1 => Ok(Role::Client),
        2 if from != 0 => Ok(Role::Peer { from }),
        _ => Err(DecodeError::Invalid {
            field: "hello role",
            reason: format!("role {role} from {from}"),
        }),
    }
}

/// A decoded `Hello`: who is speaking and, for a client, the admin bearer token it sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Client or peer.
    pub role: Role,
    /// The optional trailing `u16 len | token` of a client hello (see `docs/protocol.md`).
    pub token: Option<Vec<u8>>,
    /// The protocol version the connection speaks: a client's (its hello's `u64` field, 0
    /// meaning 1), at most [`PROTOCOL_VERSION`]; [`PROTOCOL_VERSION`] for a peer.
    pub version: u8,
}

/// Encodes a client hello of protocol version [`PROTOCOL_VERSION`] carrying `token` (at most
/// [`MAX_TOKEN_LEN`] bytes, which the token file reader and the client check).
pub fn encode_client_hello(token: Option<&[u8]>) -> Vec<u8> {
    encode_client_hello_as(PROTOCOL_VERSION, token)
}

/// Encodes a client hello saying protocol `version`: `u8 role (1) | u64 version | [u16 len |
/// token]`. A node of version 1 ignores the `u64` field of a client hello (it was 0).
pub fn encode_client_hello_as(version: u8, token: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(11 + token.map_or(0, |t| t.len()));
    v.push(1);
    v.extend_from_slice(&u64::from(version).to_le_bytes());
    if let Some(t) = token {
        let t = &t[..t.len().min(MAX_TOKEN_LEN)];
        v.extend_from_slice(&(t.len() as u16).to_le_bytes());
        v.extend_from_slice(t);
    }
    v
}

/// Decodes a hello body including a client's optional token. Strict: a peer hello has no
/// trailer; a client trailer is exactly `u16 len (1..=4096) | token`.
pub fn decode_hello_with_token(body: &[u8]) -> Result<Hello, DecodeError> {
    let role = decode_hello(body)?;
    let mut r = Reader::new(body);
    r.take(1)?;
    let version = match role {
        // A client from before versions were said sent 0; a newer one than this build is
        // answered in this build's version.
        Role::Client => r.u64()?.clamp(1, u64::from(PROTOCOL_VERSION)) as u8,
        Role::Peer { .. } => {
            r.u64()?;
            PROTOCOL_VERSION
        }
    };
    if r.remaining() == 0 {
        return Ok(Hello {
            role,
            token: None,
            version,
        });
    }
    let invalid = |reason: String| DecodeError::Invalid {
        field: "hello token",
        reason,
    };
    if role != Role::Client {
        return Err(invalid(format!(
            "{} trailing bytes on a peer hello",
            r.remaining()
        )));
    }
    let len = r.u16()? as usize;
    if len == 0 || len > MAX_TOKEN_LEN {
        return Err(invalid(format!(
            "length {len} outside 1..={}",
            MAX_TOKEN_LEN
        )));
    }
    let token = r.take(len)?.to_vec();
    if r.remaining() != 0 {
        return Err(invalid(format!("{} bytes after the token", r.remaining())));
    }
    Ok(Hello {
        role,
        token: Some(token),
        version,
    })
}

/// Error classes of the client protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum ErrorCode {
    /// This node is not the leader; the leader's address is attached when known.
    NotLeader = 1,
    /// No leader is known right now (election in progress): retry later.
    Unavailable = 2,
    /// The node's queues are full: retry later.
    Busy = 3,
    /// The request was not committed in time; retrying with the same ids is safe.
    Timeout = 4,
    /// The request is malformed; retrying will not help.
    BadRequest = 5,
    /// The node is shutting down.
    ShuttingDown = 6,
    /// Anything else.
    Internal = 7,
    /// A subscription asked for an offset removed by retention; the error's `req_id` field
    /// carries the earliest available offset (subscriptions have no request id).
    Compacted = 8,
    /// A membership change is still in progress (proposed but not applied, or the
    /// configuration is joint): retry once it is applied.
    ConfChangeInProgress = 9,
    /// The administrative request is unsafe or contradicts the membership (duplicate add,
    /// removing the last voter or the leader, promoting a learner far behind, ...).
    Refused = 10,
    /// No member has that id.
    UnknownMember = 11,
    /// A mutating admin operation without the node's admin bearer token (see
    /// `docs/security.md`); retrying with the same connection will not help.
    Unauthorized = 12,
}

impl ErrorCode {
    fn from_u8(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => ErrorCode::NotLeader,
            2 => ErrorCode::Unavailable,
            3 => ErrorCode::Busy,
            4 => ErrorCode::Timeout,
            5 => ErrorCode::BadRequest,
            6 => ErrorCode::ShuttingDown,
            7 => ErrorCode::Internal,
            8 => ErrorCode::Compacted,
            9 => ErrorCode::ConfChangeInProgress,
            10 => ErrorCode::Refused,
            11 => ErrorCode::UnknownMember,
            12 => ErrorCode::Unauthorized,
            other => {
                return Err(DecodeError::Invalid {
                    field: "error code",
                    reason: other.to_string(),
                })
            }
        })
    }

    /// True when the same request may succeed if retried (same ids: dedup keeps it once).
    pub fn retryable(self) -> bool {
        !matches!(
            self,
            ErrorCode::BadRequest
                | ErrorCode::Compacted
                | ErrorCode::Refused
                | ErrorCode::UnknownMember
                | ErrorCode::Unauthorized
        )
    }
}

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// The request it answers (0 for a subscription).
    pub req_id: u64,
    /// Error class.
    pub code: ErrorCode,
    /// Known leader id (0 if unknown).
    pub leader_id: u64,
    /// Known leader's client address ("" if unknown).
    pub leader_addr: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Encodes an error frame.
pub fn put_error(buf: &mut BytesMut, e: &ErrorBody) {
    put_frame_with(buf, Kind::Error, |b| {
        b.put_u64_le(e.req_id);
        b.put_u8(e.code as u8);
        b.put_u64_le(e.leader_id);
        let addr = &e.leader_addr.as_bytes()[..e.leader_addr.len().min(u16::MAX as usize)];
        b.put_u16_le(addr.len() as u16);
        b.put_slice(addr);
        let msg = truncate_utf8(&e.message, 4096);
        b.put_u16_le(msg.len() as u16);
        b.put_slice(msg.as_bytes());
    });
}

/// A `u16`-length-prefixed string, cut at a character boundary to fit.
fn put_str16(b: &mut BytesMut, s: &str) {
    let s = truncate_utf8(s, u16::MAX as usize);
    b.put_u16_le(s.len() as u16);
    b.put_slice(s.as_bytes());
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Decodes an error body.
pub fn decode_error(body: &[u8]) -> Result<ErrorBody, DecodeError> {
    let mut r = Reader::new(body);
    Ok(ErrorBody {
        req_id: r.u64()?,
        code: ErrorCode::from_u8(r.u8()?)?,
        leader_id: r.u64()?,
        leader_addr: r.str16("leader address")?.to_owned(),
        message: r.str16("message")?.to_owned(),
    })
}

/// Encodes a publish request: `u64 req_id | block`.
pub fn put_publish(buf: &mut BytesMut, req_id: u64, events: &[Event]) {
    put_frame_with(buf, Kind::Publish, |b| {
        b.put_u64_le(req_id);
        codec::put_block(b, events);
    });
}

/// Decodes a publish request body (zero-copy payloads from `body`).
pub fn decode_publish(body: &Bytes) -> Result<(u64, Vec<Event>), DecodeError> {
    let mut r = Reader::new(body);
    let req_id = r.u64()?;
    let mut events = Vec::new();
    codec::decode_blocks_at(body, 8, &mut events)?;
    Ok((req_id, events))
}

/// Encodes a publish acknowledgement: `u64 req_id | u32 n | n × u64 offset`.
pub fn put_publish_ok(buf: &mut BytesMut, req_id: u64, offsets: &[u64]) {
    put_frame_with(buf, Kind::PublishOk, |b| {
        b.put_u64_le(req_id);
        b.put_u32_le(offsets.len() as u32);
        for o in offsets {
            b.put_u64_le(*o);
        }
    });
}

/// Longest consumer-group id a [`GroupCommit`] may carry, bytes.
pub const MAX_GROUP_ID_BYTES: usize = 255;

/// A consumer group's commit: for each topic, the next offset the group reads.
/// Body: `u64 req_id | str16 group | u32 n | n × (str16 topic | u64 offset)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommit {
    /// The group's id (1 to [`MAX_GROUP_ID_BYTES`] bytes).
    pub group: String,
    /// `(topic, next offset)` pairs.
    pub offsets: Vec<(String, u64)>,
}

/// Writes a [`Kind::GroupCommit`] frame.
pub fn put_group_commit(buf: &mut BytesMut, req_id: u64, c: &GroupCommit) {
    put_frame_with(buf, Kind::GroupCommit, |b| {
        b.put_u64_le(req_id);
        put_str16(b, &c.group);
        b.put_u32_le(c.offsets.len() as u32);
        for (topic, offset) in &c.offsets {
            put_str16(b, topic);
            b.put_u64_le(*offset);
        }
    });
}

/// Decodes a [`Kind::GroupCommit`] body: its request id and the commit.
pub fn decode_group_commit(body: &[u8]) -> Result<(u64, GroupCommit), DecodeError> {
    let mut r = Reader::new(body);
    let req_id = r.u64()?;
    let group = r.str16("group")?.to_owned();
    if group.is_empty() || group.len() > MAX_GROUP_ID_BYTES {
        return Err(DecodeError::Invalid {
            field: "group",
            reason: format!("{} bytes; 1 to {MAX_GROUP_ID_BYTES} allowed", group.len()),
        });
    }
    let n = r.u32()? as usize;
    // Each pair is at least 10 bytes: check the count against what is left first.
    if n > r.remaining() / 10 {
        return Err(DecodeError::Invalid {
            field: "group commit count",
            reason: format!("{n} pairs in {} bytes", r.remaining()),
        });
    }
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = r.str16("group commit topic")?.to_owned();
        offsets.push((topic, r.u64()?));
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid {
            field: "group commit",
            reason: format!("{} trailing bytes", r.remaining()),
        });
    }
    Ok((req_id, GroupCommit { group, offsets }))
}

/// Decodes a publish acknowledgement.
pub fn decode_publish_ok(body: &[u8]) -> Result<(u64, Vec<u64>), DecodeError> {
    let mut r = Reader::new(body);
    let req_id = r.u64()?;
    let n = r.u32()? as usize;
    if n > r.remaining() / 8 {
        return Err(DecodeError::Truncated {
            at: r.pos(),
            needed: n * 8 - r.remaining(),
        });
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.u64()?);
    }
    Ok((req_id, v))
}

/// What a subscriber asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeBody {
    /// First stream offset wanted.
    pub from_offset: u64,
    /// Only this topic.
    pub topic: Option<String>,
    /// Only events at least this important (Critical is the most important).
    pub min_priority: Option<Priority>,
    /// Start at the first event whose stream time is at or after this (milliseconds since the
    /// Unix epoch) instead of at `from_offset`.
    pub from_time_ms: Option<u64>,
}

/// Encodes a subscribe request: `u64 from | u8 flags | u16 topic_len | topic | u8 priority`,
/// then `u64 from_time_ms` when flag 4 is set.
pub fn put_subscribe(buf: &mut BytesMut, s: &SubscribeBody) {
    put_frame_with(buf, Kind::Subscribe, |b| {
        b.put_u64_le(s.from_offset);
        let flags = u8::from(s.topic.is_some())
            | (u8::from(s.min_priority.is_some()) << 1)
            | (u8::from(s.from_time_ms.is_some()) << 2);
        b.put_u8(flags);
        let t = s.topic.as_deref().unwrap_or("");
        b.put_u16_le(t.len() as u16);
        b.put_slice(t.as_bytes());
        b.put_u8(s.min_priority.map_or(0, |p| p as u8));
        if let Some(ms) = s.from_time_ms {
            b.put_u64_le(ms);
        }
    });
}

/// Decodes a subscribe request.
pub fn decode_subscribe(body: &[u8]) -> Result<SubscribeBody, DecodeError> {
    let mut r = Reader::new(body);
    let from_offset = r.u64()?;
    let flags = r.u8()?;
    if flags & !7 != 0 {
        return Err(DecodeError::Invalid {
            field: "subscribe flags",
            reason: format!("{flags:#04x}"),
        });
    }
    let topic = r.str16("topic")?;
    let p = r.u8()?;
    let min_priority = if flags & 2 != 0 {
        Some(Priority::from_index(p).ok_or_else(|| DecodeError::Invalid {
            field: "priority",
            reason: p.to_string(),
        })?)
    } else {
        None
    };
    let from_time_ms = if flags & 4 != 0 { Some(r.u64()?) } else { None };
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid {
            field: "subscribe",
            reason: format!("{} bytes after the body", r.remaining()),
        });
    }
    Ok(SubscribeBody {
        from_offset,
        topic: (flags & 1 != 0).then(|| topic.to_owned()),
        min_priority,
        from_time_ms,
    })
}

/// Encodes a status request / response header: `u64 req_id` (+ JSON for the response).
pub fn put_status(buf: &mut BytesMut, req_id: u64) {
    put_frame(buf, Kind::Status, &req_id.to_le_bytes());
}

/// Most record bytes a node answers one [`Kind::StreamFetch`] with.
pub const MAX_STREAM_CHUNK_BYTES: u32 = 4 << 20;

/// A request for the stream's records `from..to` (at most `max_bytes` of them per answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFetch {
    /// Request id.
    pub req_id: u64,
    /// First offset wanted.
    pub from: u64,
    /// One past the last offset wanted.
    pub to: u64,
    /// Bytes of records per answer, at most.
    pub max_bytes: u32,
}

/// Encodes a [`Kind::StreamFetch`] frame.
pub fn put_stream_fetch(buf: &mut BytesMut, f: &StreamFetch) {
    put_frame_with(buf, Kind::StreamFetch, |b| {
        b.put_u64_le(f.req_id);
        b.put_u64_le(f.from);
        b.put_u64_le(f.to);
        b.put_u32_le(f.max_bytes);
    });
}

/// Decodes a [`Kind::StreamFetch`] body.
pub fn decode_stream_fetch(body: &[u8]) -> Result<StreamFetch, DecodeError> {
    let mut r = Reader::new(body);
    let f = StreamFetch {
        req_id: r.u64()?,
        from: r.u64()?,
        to: r.u64()?,
        max_bytes: r.u32()?,
    };
    if r.remaining() != 0 || f.to < f.from {
        return Err(DecodeError::Invalid {
            field: "stream fetch",
            reason: format!(
                "range {}..{} with {} bytes after it",
                f.from,
                f.to,
                r.remaining()
            ),
        });
    }
    Ok(f)
}

/// The header of a [`Kind::StreamChunk`]: the sender's retained range, then the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// The request answered.
    pub req_id: u64,
    /// The sender's first retained offset.
    pub first: u64,
    /// The sender's next offset.
    pub next: u64,
    /// Whole batch records, back to back (empty: nothing more in the range yet).
    pub records: Bytes,
}

/// Encodes a [`Kind::StreamChunk`] frame around `records`.
pub fn put_stream_chunk(buf: &mut BytesMut, req_id: u64, first: u64, next: u64, records: &[u8]) {
    put_frame_with(buf, Kind::StreamChunk, |b| {
        b.put_u64_le(req_id);
        b.put_u64_le(first);
        b.put_u64_le(next);
        b.put_slice(records);
    });
}

/// Decodes a [`Kind::StreamChunk`] body (the records are checked by whoever stores them).
pub fn decode_stream_chunk(body: &Bytes) -> Result<StreamChunk, DecodeError> {
    let mut r = Reader::new(body);
    let req_id = r.u64()?;
    let first = r.u64()?;
    let next = r.u64()?;
    if next < first {
        return Err(DecodeError::Invalid {
            field: "stream chunk",
            reason: format!("range {first}..{next}"),
        });
    }
    Ok(StreamChunk {
        req_id,
        first,
        next,
        records: body.slice(24..),
    })
}

/// Largest snapshot piece per [`Kind::SnapshotChunk`] frame (well under any frame limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Encodes a snapshot request: `u64 req_id`.
pub fn put_snapshot_request(buf: &mut BytesMut, req_id: u64) {
    put_frame(buf, Kind::SnapshotRequest, &req_id.to_le_bytes());
}

/// Encodes one snapshot piece.
pub fn put_snapshot_chunk(buf: &mut BytesMut, req_id: u64, total: u64, offset: u64, data: &[u8]) {
    put_frame_with(buf, Kind::SnapshotChunk, |b| {
        b.put_u64_le(req_id);
        b.put_u64_le(total);
        b.put_u64_le(offset);
        b.put_slice(data);
    });
}

/// A decoded snapshot piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunkBody<'a> {
    /// The request it answers.
    pub req_id: u64,
    /// Length of the whole snapshot.
    pub total: u64,
    /// Where this piece goes.
    pub offset: u64,
    /// The bytes.
    pub data: &'a [u8],
}

/// Decodes a snapshot piece (checks that it lies inside the announced total).
pub fn decode_snapshot_chunk(body: &[u8]) -> Result<SnapshotChunkBody<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let req_id = r.u64()?;
    let total = r.u64()?;
    let offset = r.u64()?;
    let data = &body[24..];
    if offset
        .checked_add(data.len() as u64)
        .is_none_or(|end| end > total)
    {
        return Err(DecodeError::Invalid {
            field: "snapshot chunk",
            reason: format!("{} bytes at {offset} exceed {total}", data.len()),
        });
    }
    Ok(SnapshotChunkBody {
        req_id,
        total,
        offset,
        data,
    })
}

/// Decodes `u64 req_id | rest`.
pub fn decode_req_id(body: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let id = r.u64()?;
    Ok((id, &body[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn group_commits_round_trip_and_bad_ones_are_named() {
        let c = GroupCommit {
            group: "billing".into(),
            offsets: vec![("orders".into(), 42), ("refunds".into(), 7)],
        };
        let mut b = BytesMut::new();
        put_group_commit(&mut b, 9, &c);
        let (kind, len) = decode_header(b[..HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!((kind, len), (Kind::GroupCommit, b.len() - HEADER_LEN));
        assert_eq!(
            decode_group_commit(&b[HEADER_LEN..]).unwrap(),
            (9, c.clone())
        );
        // Every truncation fails; so does an empty group or a count past the bytes.
        for cut in HEADER_LEN..b.len() - 1 {
            assert!(
                decode_group_commit(&b[HEADER_LEN..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut e = BytesMut::new();
        put_group_commit(
            &mut e,
            1,
            &GroupCommit {
                group: String::new(),
                ..c
            },
        );
        let err = decode_group_commit(&e[HEADER_LEN..]).unwrap_err();
        assert!(err.to_string().contains("group"), "{err}");
        let mut huge = 1u64.to_le_bytes().to_vec();
        huge.extend_from_slice(&[1, 0, b'g']);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_group_commit(&huge).is_err());
    }

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, Kind::Hello, &encode_hello(Role::Peer { from: 3 }));
        put_error(
            &mut buf,
            &ErrorBody {
                req_id: 9,
                code: ErrorCode::NotLeader,
                leader_id: 2,
                leader_addr: "127.0.0.1:1".into(),
                message: "go there".into(),
            },
        );
        let (k, body, used) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(
            (k, decode_hello(body).unwrap()),
            (Kind::Hello, Role::Peer { from: 3 })
        );
        let (k, body, _) = decode_frame(&buf[used..], 1024).unwrap().unwrap();
        assert_eq!(k, Kind::Error);
        let e = decode_error(body).unwrap();
        assert_eq!(
            (e.req_id, e.code, e.leader_addr.as_str()),
            (9, ErrorCode::NotLeader, "127.0.0.1:1")
        );
        assert_eq!(decode_frame(&buf[..5], 1024).unwrap(), None);
        assert!(matches!(
            decode_frame(&buf, 4),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            decode_frame(b"GET / HTTP/1.1\r\n", 1024),
            Err(DecodeError::Version(b'G'))
        ));
    }

    #[test]
    fn snapshot_chunks_round_trip_and_stay_inside_the_total() {
        let mut buf = BytesMut::new();
        put_snapshot_chunk(&mut buf, 7, 10, 4, b"abc");
        let (k, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(k, Kind::SnapshotChunk);
        let c = decode_snapshot_chunk(body).unwrap();
        assert_eq!(
            (c.req_id, c.total, c.offset, c.data),
            (7, 10, 4, &b"abc"[..])
        );
        let mut buf = BytesMut::new();
        put_snapshot_chunk(&mut buf, 7, 5, 4, b"abc");
        let (_, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert!(decode_snapshot_chunk(body).is_err());
        assert!(!ErrorCode::Compacted.retryable());
        assert_eq!(ErrorCode::from_u8(8).unwrap(), ErrorCode::Compacted);
    }

    #[test]
    fn stream_fetches_and_chunks_round_trip() {
        let f = StreamFetch {
            req_id: 3,
            from: 10,
            to: 90,
            max_bytes: 1 << 20,
        };
        let mut buf = BytesMut::new();
        put_stream_fetch(&mut buf, &f);
        let (k, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(
            (k, decode_stream_fetch(body).unwrap()),
            (Kind::StreamFetch, f)
        );
        let mut bad = body.to_vec();
        bad[16..24].copy_from_slice(&5u64.to_le_bytes());
        assert!(decode_stream_fetch(&bad).is_err());
        let mut buf = BytesMut::new();
        put_stream_chunk(&mut buf, 3, 4, 90, b"records");
        let (k, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(k, Kind::StreamChunk);
        let c = decode_stream_chunk(&Bytes::copy_from_slice(body)).unwrap();
        assert_eq!(
            (c.req_id, c.first, c.next, &c.records[..]),
            (3, 4, 90, &b"records"[..])
        );
    }

    #[test]
    fn subscribe_round_trip() {
        let s = SubscribeBody {
            from_offset: 42,
            topic: Some("orders".into()),
            min_priority: Some(Priority::Medium),
            from_time_ms: None,
        };
        let mut buf = BytesMut::new();
        put_subscribe(&mut buf, &s);
        let (_, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(decode_subscribe(body).unwrap(), s);
        // Without a time the body is the one earlier clients send, byte for byte.
        assert_eq!(body.len(), 8 + 1 + 2 + 6 + 1);
        let t = SubscribeBody {
            from_time_ms: Some(1_700_000_000_000),
            ..s
        };
        let mut buf = BytesMut::new();
        put_subscribe(&mut buf, &t);
        let (_, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(decode_subscribe(body).unwrap(), t);
        assert!(decode_subscribe(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn client_hello_token_is_optional_and_length_checked() {
        // Without a token the body is the version-1 hello's 9 bytes, the u64 saying the
        // version.
        let plain = encode_client_hello(None);
        assert_eq!(plain.len(), 9);
        assert_eq!(plain[..2], [1, PROTOCOL_VERSION]);
        assert_eq!(
            decode_hello_with_token(&encode_client_hello(None)).unwrap(),
            Hello {
                role: Role::Client,
                token: None,
                version: PROTOCOL_VERSION,
            }
        );
        let with = encode_client_hello(Some(b"s3cret"));
        assert_eq!(&with[9..], b"\x06\x00s3cret");
        assert_eq!(
            decode_hello_with_token(&with).unwrap().token.as_deref(),
            Some(&b"s3cret"[..])
        );
        // An old decoder ignores the trailer: old nodes accept new clients.
        assert_eq!(decode_hello(&with).unwrap(), Role::Client);
        // Truncated token, zero or oversized length, junk after it, a token on a peer hello.
        assert!(decode_hello_with_token(&with[..with.len() - 1]).is_err());
        assert!(decode_hello_with_token(&with[..10]).is_err());
        let mut zero = encode_hello(Role::Client);
        zero.extend_from_slice(&[0, 0]);
        assert!(decode_hello_with_token(&zero).is_err());
        let mut huge = encode_hello(Role::Client);
        huge.extend_from_slice(&u16::MAX.to_le_bytes());
        huge.extend_from_slice(&vec![b'x'; u16::MAX as usize]);
        assert!(decode_hello_with_token(&huge).is_err());
        let mut junk = with.clone();
        junk.push(0);
        assert!(decode_hello_with_token(&junk).is_err());
        let mut peer = encode_hello(Role::Peer { from: 2 });
        peer.extend_from_slice(&with[9..]);
        assert!(decode_hello_with_token(&peer).is_err());
    }

    #[test]
    fn client_hello_says_its_protocol_version_and_the_node_answers_in_the_lower() {
        let version = |body: &[u8]| decode_hello_with_token(body).unwrap().version;
        // A version-1 client sent 0 in the u64 field.
        assert_eq!(version(&encode_hello(Role::Client)), PROTOCOL_V1);
        assert_eq!(version(&encode_client_hello_as(1, Some(b"t"))), PROTOCOL_V1);
        assert_eq!(version(&encode_client_hello(Some(b"t"))), PROTOCOL_VERSION);
        assert_eq!(
            version(&encode_client_hello_as(200, None)),
            PROTOCOL_VERSION
        );
        // A node of version 1 reads a version-2 client hello as a client hello.
        assert_eq!(
            decode_hello(&encode_client_hello(None)).unwrap(),
            Role::Client
        );
        assert_eq!(
            version(&encode_hello(Role::Peer { from: 2 })),
            PROTOCOL_VERSION
        );
    }

    #[test]
    fn unauthorized_error_code_round_trips_and_is_final() {
        let mut buf = BytesMut::new();
        put_error(
            &mut buf,
            &ErrorBody {
                req_id: 5,
                code: ErrorCode::Unauthorized,
                leader_id: 0,
                leader_addr: String::new(),
                message: "admin token required".into(),
            },
        );
        let (_, body, _) = decode_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(body[8], 12);
        let e = decode_error(body).unwrap();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(!e.code.retryable());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_frame(&data, 1 << 20);
            let _ = decode_hello(&data);
            let _ = decode_hello_with_token(&data);
            let _ = decode_error(&data);
            let _ = decode_publish(&Bytes::from(data.clone()));
            let _ = decode_publish_ok(&data);
            let _ = decode_subscribe(&data);
            let _ = decode_snapshot_chunk(&data);
            let _ = decode_stream_fetch(&data);
            let _ = decode_stream_chunk(&Bytes::from(data.clone()));
        }
    }
}
