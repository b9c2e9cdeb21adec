//! The fuzz targets. Each one generates valid inputs with the crate's own encoders (so
//! mutations start from the real format) and checks, besides "no panic", that whatever
//! decodes re-encodes to the same value where the encoding is canonical.

use crate::{Outcome, Rng, Target};
use bytes::{Bytes, BytesMut};
use eventstream_core::{Event, Priority};
use eventstream_node::config::{Kind as SettingKind, Source};
use eventstream_node::NodeConfig;
use eventstream_proto::codec;
use eventstream_proto::frame::{self, ErrorBody, ErrorCode, Kind, Role, SubscribeBody};
use eventstream_storage::wal::{self, Record, RECORD_HEADER};
use eventstream_storage::Wal;
use protobuf::{Message as _, ProtobufEnum};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType};

/// Every target, by name.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(PeerFrames),
        Box::new(ClientProtocol),
        Box::new(WalRecords),
        Box::new(WalReplay::new()),
        Box::new(ConfigToml),
        Box::new(ConfigOverrides),
        Box::new(crate::kafka::KafkaRequests),
    ]
}

fn outcome<T, E>(r: &Result<T, E>) -> Outcome {
    if r.is_ok() {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

fn gen_string(rng: &mut Rng, max: usize) -> String {
    const PARTS: [&str; 8] = ["orders", "a", "é", "日本", "-", "_", "x.y", "🙂"];
    let n = rng.below(max + 1);
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(PARTS[rng.below(PARTS.len())]);
    }
    s
}

fn gen_event(rng: &mut Rng) -> Event {
    let max = if rng.one_in(16) { 4096 } else { 64 };
    let n = rng.below(max);
    let payload = rng.bytes(n);
    let mut e = Event::new(
        gen_string(rng, 3).as_str(),
        Priority::from_index(rng.below(4) as u8).expect("0..4 is a priority"),
        Bytes::from(payload),
    )
    .with_id(rng.next_u64());
    e.ingest_ns = rng.next_u64();
    if rng.one_in(3) {
        let n = rng.below(16);
        e = e.with_key(rng.bytes(n));
    }
    for _ in 0..if rng.one_in(3) { rng.below(4) } else { 0 } {
        let value = if rng.one_in(4) {
            None
        } else {
            let n = rng.below(16);
            Some(Bytes::from(rng.bytes(n)))
        };
        e = e.with_header(gen_string(rng, 2), value);
    }
    e
}

fn gen_events(rng: &mut Rng) -> Vec<Event> {
    (0..rng.below(6)).map(|_| gen_event(rng)).collect()
}

fn same_events(a: &[Event], b: &[Event]) -> bool {
    a == b
}

fn frame_body(f: &BytesMut) -> Vec<u8> {
    f[frame::HEADER_LEN..].to_vec()
}

// ---- peer frames ------------------------------------------------------------------------------

/// A peer connection's byte stream: frames split by `decode_frame` (header checks, length
/// limit), `Hello` bodies, and raft messages parsed by protobuf as the server does.
#[derive(Debug)]
pub struct PeerFrames;

fn gen_raft_message(rng: &mut Rng) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::from_i32(rng.below(20) as i32).unwrap_or(MessageType::MsgAppend));
    m.to = rng.below(6) as u64;
    m.from = rng.below(6) as u64;
    m.term = rng.below(100) as u64;
    m.log_term = rng.below(100) as u64;
    m.index = rng.next_u64() % 10_000;
    m.commit = rng.next_u64() % 10_000;
    m.reject = rng.one_in(4);
    m.reject_hint = rng.below(1000) as u64;
    let entries: Vec<Entry> = (0..rng.below(4))
        .map(|i| {
            let mut e = Entry {
                index: m.index + i as u64 + 1,
                term: m.term,
                data: codec::encode_block(&gen_events(rng)),
                ..Entry::default()
            };
            e.set_entry_type(EntryType::EntryNormal);
            e
        })
        .collect();
    m.set_entries(entries.into());
    if rng.one_in(4) {
        let n = rng.below(16);
        m.context = Bytes::from(rng.bytes(n));
    }
    m
}

impl Target for PeerFrames {
    fn name(&self) -> &'static str {
        "peer-frame"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut b = BytesMut::new();
        frame::put_frame(
            &mut b,
            Kind::Hello,
            &frame::encode_hello(Role::Peer {
                from: 1 + rng.below(5) as u64,
            }),
        );
        for _ in 0..1 + rng.below(3) {
            let m = gen_raft_message(rng);
            let body = m.write_to_bytes().expect("a generated message encodes");
            frame::put_frame(&mut b, Kind::Raft, &body);
        }
        b.to_vec()
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        if input.len() >= frame::HEADER_LEN {
            let mut h = [0u8; frame::HEADER_LEN];
            h.copy_from_slice(&input[..frame::HEADER_LEN]);
            let _ = frame::decode_header(&h, 1 << 20);
        }
        let mut rest = input;
        let mut all_ok = true;
        loop {
            match frame::decode_frame(rest, 1 << 20) {
                Ok(Some((kind, body, used))) => {
                    assert!(used > 0 && used <= rest.len());
                    assert_eq!(used, frame::HEADER_LEN + body.len());
                    let ok = match kind {
                        Kind::Hello => {
                            let r = frame::decode_hello(body);
                            if let Ok(role) = r {
                                assert_eq!(
                                    frame::decode_hello(&frame::encode_hello(role)),
                                    Ok(role)
                                );
                            }
                            r.is_ok()
                        }
                        Kind::Raft => {
                            let src = Bytes::copy_from_slice(body);
                            let r = eventstream_node::decode_raft_message(&src);
                            if let Ok(m) = &r {
                                let again = m.write_to_bytes().expect("a parsed message encodes");
                                let m2 = eventstream_node::decode_raft_message(&Bytes::from(again))
                                    .expect("a re-encoded message parses");
                                assert_eq!(&m2, m, "raft message round trip");
                            }
                            r.is_ok()
                        }
                        _ => false,
                    };
                    all_ok &= ok;
                    rest = &rest[used..];
                }
                Ok(None) => break,
                Err(_) => {
                    all_ok = false;
                    break;
                }
            }
        }
        if all_ok && rest.is_empty() {
            Outcome::Accepted
        } else {
            Outcome::Rejected
        }
    }
}

// ---- client protocol --------------------------------------------------------------------------

/// Client protocol bodies: the first input byte picks the decoder (publish, subscribe, error,
/// hello, publish-ok, event blocks with positions, subscription events, group commit, request
/// id), the rest
/// is the body. Decoded values must re-encode to an equal value.
#[derive(Debug)]
pub struct ClientProtocol;

impl Target for ClientProtocol {
    fn name(&self) -> &'static str {
        "client-protocol"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let which = rng.below(9) as u8;
        let mut f = BytesMut::new();
        let body = match which {
            0 => {
                frame::put_publish(&mut f, rng.next_u64(), &gen_events(rng));
                frame_body(&f)
            }
            1 => {
                let s = SubscribeBody {
                    from_offset: rng.next_u64(),
                    topic: rng.one_in(2).then(|| gen_string(rng, 3)),
                    min_priority: rng
                        .one_in(2)
                        .then(|| Priority::from_index(rng.below(4) as u8).expect("0..4")),
                    from_time_ms: rng.one_in(2).then(|| rng.next_u64()),
                };
                frame::put_subscribe(&mut f, &s);
                frame_body(&f)
            }
            2 => {
                frame::put_error(
                    &mut f,
                    &ErrorBody {
                        req_id: rng.next_u64(),
                        code: [ErrorCode::NotLeader, ErrorCode::Busy, ErrorCode::BadRequest]
                            [rng.below(3)],
                        leader_id: rng.below(4) as u64,
                        leader_addr: gen_string(rng, 2),
                        message: gen_string(rng, 6),
                    },
                );
                frame_body(&f)
            }
            3 => frame::encode_hello(if rng.one_in(2) {
                Role::Client
            } else {
                Role::Peer {
                    from: 1 + rng.below(9) as u64,
                }
            }),
            4 => {
                let offsets: Vec<u64> = (0..rng.below(8)).map(|_| rng.next_u64()).collect();
                frame::put_publish_ok(&mut f, rng.next_u64(), &offsets);
                frame_body(&f)
            }
            5 => {
                let mut v = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    v.extend_from_slice(&codec::encode_block(&gen_events(rng)));
                }
                v
            }
            6 => {
                let evs = gen_events(rng);
                let mut b = BytesMut::new();
                codec::put_offset_events(
                    &mut b,
                    evs.iter().enumerate().map(|(i, e)| (i as u64 * 3, e)),
                    rng.one_in(2),
                );
                b.to_vec()
            }
            7 => {
                let c = frame::GroupCommit {
                    group: gen_string(rng, 4) + "g",
                    offsets: (0..rng.below(4))
                        .map(|_| (gen_string(rng, 3), rng.next_u64()))
                        .collect(),
                };
                frame::put_group_commit(&mut f, rng.next_u64(), &c);
                frame_body(&f)
            }
            _ => rng.next_u64().to_le_bytes().to_vec(),
        };
        let mut v = vec![which];
        v.extend_from_slice(&body);
        v
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let Some((&which, body)) = input.split_first() else {
            return Outcome::Rejected;
        };
        match which % 9 {
            0 => {
                let src = Bytes::copy_from_slice(body);
                let r = frame::decode_publish(&src);
                if let Ok((req, events)) = &r {
                    let mut f = BytesMut::new();
                    frame::put_publish(&mut f, *req, events);
                    let again = frame::decode_publish(&Bytes::from(frame_body(&f)))
                        .expect("a re-encoded publish decodes");
                    assert_eq!(again.0, *req);
                    assert!(same_events(&again.1, events), "publish round trip");
                    for e in events {
                        // What the server checks next must not panic either.
                        let _ = codec::validate_event(e, 512 << 10);
                    }
                }
                outcome(&r)
            }
            1 => {
                let r = frame::decode_subscribe(body);
                if let Ok(s) = &r {
                    let mut f = BytesMut::new();
                    frame::put_subscribe(&mut f, s);
                    assert_eq!(frame::decode_subscribe(&frame_body(&f)).as_ref(), Ok(s));
                }
                outcome(&r)
            }
            2 => {
                let r = frame::decode_error(body);
                if let Ok(e) = &r {
                    if e.message.len() <= 4096 {
                        let mut f = BytesMut::new();
                        frame::put_error(&mut f, e);
                        assert_eq!(frame::decode_error(&frame_body(&f)).as_ref(), Ok(e));
                    }
                }
                outcome(&r)
            }
            3 => {
                let r = frame::decode_hello(body);
                if let Ok(role) = r {
                    assert_eq!(frame::decode_hello(&frame::encode_hello(role)), Ok(role));
                }
                outcome(&r)
            }
            4 => {
                let r = frame::decode_publish_ok(body);
                if let Ok((req, offsets)) = &r {
                    let mut f = BytesMut::new();
                    frame::put_publish_ok(&mut f, *req, offsets);
                    assert_eq!(
                        frame::decode_publish_ok(&frame_body(&f)),
                        Ok((*req, offsets.clone()))
                    );
                }
                outcome(&r)
            }
            5 => {
                let src = Bytes::copy_from_slice(body);
                let mut out = Vec::new();
                let mut positions = Vec::new();
                let r = codec::decode_blocks_with_positions(&src, &mut out, &mut positions);
                if r.is_ok() {
                    assert_eq!(out.len(), positions.len());
                    for (e, p) in out.iter().zip(&positions) {
                        let again = codec::decode_event_at(&src, *p as usize)
                            .expect("a recorded position decodes");
                        assert!(same_events(std::slice::from_ref(e), &[again]));
                    }
                    let mut plain = Vec::new();
                    codec::decode_blocks(&src, &mut plain).expect("same input, same result");
                    assert!(same_events(&plain, &out));
                }
                outcome(&r)
            }
            6 => {
                let src = Bytes::copy_from_slice(body);
                let r = codec::decode_offset_events(&src, 0);
                if let Ok(evs) = &r {
                    let mut b = BytesMut::new();
                    codec::put_offset_events(&mut b, evs.iter().map(|(o, e)| (*o, e)), true);
                    let again = codec::decode_offset_events(&b.freeze(), 0).expect("re-encoded");
                    assert_eq!(&again, evs);
                }
                outcome(&r)
            }
            7 => {
                let r = frame::decode_group_commit(body);
                if let Ok((req, c)) = &r {
                    let mut f = BytesMut::new();
                    frame::put_group_commit(&mut f, *req, c);
                    assert_eq!(
                        frame::decode_group_commit(&frame_body(&f)),
                        Ok((*req, c.clone()))
                    );
                }
                outcome(&r)
            }
            _ => outcome(&frame::decode_req_id(body)),
        }
    }
}

// ---- log records ------------------------------------------------------------------------------

fn gen_records(rng: &mut Rng) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut index = 1 + rng.below(5) as u64;
    for _ in 0..1 + rng.below(5) {
        match rng.below(5) {
            4 => {
                // A snapshot installed from a leader voids the entries before it.
                index += rng.below(4) as u64;
                wal::put_snapshot_record(&mut buf, index, 1 + rng.below(5) as u64);
                index += 1;
            }
            0 => wal::put_hard_state_record(
                &mut buf,
                &HardState {
                    term: rng.below(9) as u64,
                    vote: rng.below(4) as u64,
                    commit: index.saturating_sub(1),
                    ..HardState::default()
                },
            ),
            1 => {
                let voters: Vec<u64> = (1..=rng.below(5) as u64).collect();
                wal::put_conf_state_record(&mut buf, &ConfState::from((voters, vec![])))
            }
            _ => {
                if rng.one_in(4) {
                    // A conflicting rewrite from a new leader.
                    index = index.saturating_sub(rng.below(3) as u64).max(1);
                }
                let entries: Vec<Entry> = (0..1 + rng.below(3))
                    .map(|_| {
                        let e = Entry {
                            index,
                            term: 1 + rng.below(5) as u64,
                            data: codec::encode_block(&gen_events(rng)),
                            ..Entry::default()
                        };
                        index += 1;
                        e
                    })
                    .collect();
                wal::put_entries_record(&mut buf, &entries)
            }
        }
    }
    buf
}

/// Makes every record's length fit and its checksum match again, so a mutated body is judged
/// by the body decoder rather than the checksum.
fn fix_records(buf: &mut [u8]) {
    let mut pos = 0;
    while buf.len() - pos >= RECORD_HEADER {
        let room = buf.len() - pos - RECORD_HEADER;
        let mut len = u32::from_le_bytes(buf[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if len > room {
            len = room;
            buf[pos..pos + 4].copy_from_slice(&(len as u32).to_le_bytes());
        }
        let body = &buf[pos + RECORD_HEADER..pos + RECORD_HEADER + len];
        let crc = crc32fast_hash(body);
        buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos += RECORD_HEADER + len;
    }
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    // The log's checksum is CRC-32 (IEEE), as crc32fast computes it; a small table-free
    // version keeps this crate's dependencies to the code under test.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Log records decoded one after another as replay does; every record that decodes must
/// re-encode to exactly the bytes it was decoded from (the encoding is canonical).
#[derive(Debug)]
pub struct WalRecords;

impl Target for WalRecords {
    fn name(&self) -> &'static str {
        "wal-record"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        gen_records(rng)
    }

    fn fix_up(&self, input: &mut Vec<u8>) {
        fix_records(input);
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let mut pos = 0;
        loop {
            match wal::decode_record(&input[pos..]) {
                Ok(Some((rec, used))) => {
                    let mut again = Vec::new();
                    match &rec {
                        Record::Entries(es) => wal::put_entries_record(&mut again, es),
                        Record::HardState(hs) => wal::put_hard_state_record(&mut again, hs),
                        Record::ConfState(cs) => wal::put_conf_state_record(&mut again, cs),
                        Record::SnapshotInstalled { index, term } => {
                            wal::put_snapshot_record(&mut again, *index, *term)
                        }
                    }
                    assert_eq!(&again[..], &input[pos..pos + used], "record round trip");
                    pos += used;
                }
                Ok(None) => {
                    return if pos == input.len() {
                        Outcome::Accepted
                    } else {
                        Outcome::Rejected
                    }
                }
                Err(_) => return Outcome::Rejected,
            }
        }
    }
}

/// `Wal::open` on a data directory holding the input as one or two segment files (the first
/// byte says where to split): replay must truncate a bad tail of the newest segment, refuse
/// a bad record in an older one, and never panic. What it recovers must be a contiguous log.
#[derive(Debug)]
pub struct WalReplay {
    dir: tempfile::TempDir,
}

impl WalReplay {
    fn new() -> WalReplay {
        // tmpfs when there is one: replay fsyncs what it truncates.
        let dir = tempfile::Builder::new()
            .prefix("es-fuzz-wal-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("a temporary directory");
        WalReplay { dir }
    }
}

impl Target for WalReplay {
    fn name(&self) -> &'static str {
        "wal-replay"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut v = vec![rng.next_u64() as u8];
        v.extend(gen_records(rng));
        v
    }

    fn fix_up(&self, input: &mut Vec<u8>) {
        if input.len() > 1 {
            fix_records(&mut input[1..]);
        }
    }

    /// `Wal::open` reserves its 1 MiB write buffer up front, whatever it replays.
    fn fixed_allowance(&self) -> usize {
        1 << 20
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let Some((&split, data)) = input.split_first() else {
            return Outcome::Rejected;
        };
        for e in std::fs::read_dir(self.dir.path())
            .expect("readable")
            .flatten()
        {
            std::fs::remove_file(e.path()).expect("removable");
        }
        let cut = if split & 1 == 0 {
            data.len()
        } else {
            (split as usize >> 1).min(data.len())
        };
        let seg = |n: u64| self.dir.path().join(format!("{n:016x}.wal"));
        std::fs::write(seg(0), &data[..cut]).expect("writable");
        if cut < data.len() {
            std::fs::write(seg(1), &data[cut..]).expect("writable");
        }
        let r = Wal::open(self.dir.path(), 1 << 16);
        if let Ok((wal, rec)) = &r {
            for w in rec.entries.windows(2) {
                assert_eq!(
                    w[1].index,
                    w[0].index + 1,
                    "replay recovered a log with a gap"
                );
            }
            assert!(wal.total_bytes() <= data.len() as u64);
        }
        outcome(&r)
    }
}

// ---- configuration ----------------------------------------------------------------------------

/// `(section, key, values)`: the first value is valid, the others are mostly not.
const FIELDS: [(&str, &str, &[&str]); 14] = [
    (
        "",
        "id",
        &["1", "0", "3", "-1", "18446744073709551615", "\"x\""],
    ),
    (
        "",
        "peers",
        &[
            "[\"1=127.0.0.1:7000\", \"2=127.0.0.1:7001\", \"3=127.0.0.1:7002\"]",
            "[\"1=127.0.0.1:7000@127.0.0.1:9000\"]",
            "[]",
            "[\"1=:7000\"]",
            "[\"1=h:99999\"]",
            "[\"x\"]",
        ],
    ),
    ("", "listen", &["\"0.0.0.0:7000\"", "\"nope\""]),
    ("", "data_dir", &["\"/tmp/x\"", "\"\""]),
    ("http", "port", &["9090", "0", "70000"]),
    ("raft", "tick_ms", &["20", "0", "100000", "\"fast\""]),
    ("raft", "election_ticks", &["15", "0", "2", "1001"]),
    ("raft", "heartbeat_ticks", &["3", "0", "15"]),
    ("raft", "max_entry_bytes", &["1048576", "0", "1e9"]),
    (
        "limits",
        "max_frame_bytes",
        &["16777216", "1", "4294967296"],
    ),
    (
        "engine",
        "ring_capacity",
        &["65536", "3", "0", "1099511627776"],
    ),
    ("engine", "dedup_window", &["262144", "0"]),
    ("engine", "io_threads", &["2", "0", "1024"]),
    ("raft", "async_persist", &["true", "false", "1"]),
];

/// The accepted configuration is checked the same way whatever it came from: validation names
/// a field when it fails, and the derived raft settings and the TOML round trip work when it
/// passes.
fn check_config(cfg: &NodeConfig) -> Outcome {
    let again = cfg.to_toml();
    assert_eq!(
        toml::from_str::<NodeConfig>(&again).expect("a configuration parses again"),
        *cfg,
        "configuration round trip"
    );
    match cfg.validate() {
        Ok(members) => {
            let _ = cfg.replica_config(&members);
            let _ = cfg.tick();
            Outcome::Accepted
        }
        Err(e) => {
            assert!(
                e.to_string().contains('`'),
                "the error names the field: {e}"
            );
            Outcome::Rejected
        }
    }
}

/// TOML text → `NodeConfig` (serde, unknown fields refused) → `validate()` → the derived raft
/// settings; a parsed configuration must survive a TOML round trip unchanged.
#[derive(Debug)]
pub struct ConfigToml;

impl Target for ConfigToml {
    fn name(&self) -> &'static str {
        "config-toml"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        // At most one field gets an unusual (often invalid) value: validation is then reached
        // with one bad field at a time, as its errors name exactly one.
        let odd = rng.below(FIELDS.len() * 2);
        let mut top = String::new();
        let mut sections: Vec<(&str, String)> = Vec::new();
        for (i, (section, name, values)) in FIELDS.iter().enumerate() {
            if rng.one_in(3) && *name != "id" && *name != "peers" {
                continue;
            }
            let v = if i == odd {
                values[rng.below(values.len())]
            } else {
                values[0]
            };
            let line = format!("{name} = {v}\n");
            if section.is_empty() {
                top.push_str(&line);
            } else if let Some((_, body)) = sections.iter_mut().find(|(s, _)| s == section) {
                body.push_str(&line);
            } else {
                sections.push((section, line));
            }
        }
        if rng.one_in(8) {
            top.push_str("unknown_field = 1\n");
        }
        for (section, body) in sections {
            top.push_str(&format!("[{section}]\n{body}"));
        }
        top.into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(input);
        match toml::from_str::<NodeConfig>(&text) {
            Ok(cfg) => check_config(&cfg),
            Err(_) => Outcome::Rejected,
        }
    }
}

/// `(setting key, value)` overrides as flags and `EVENTSTREAM_*` variables carry them, applied
/// by `NodeConfig::merge` to a small base file: an override of an unknown key, a value of the
/// wrong kind or out of range is an error naming the setting; whatever merges is checked as a
/// parsed file is. Input: `key=value` pairs separated by NUL bytes.
#[derive(Debug)]
pub struct ConfigOverrides;

const BASE: &str = "id = 1\npeers = [\"1=127.0.0.1:7000\"]\n";

impl Target for ConfigOverrides {
    fn name(&self) -> &'static str {
        "config-overrides"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let settings = NodeConfig::settings();
        let mut pairs: Vec<String> = Vec::new();
        for _ in 0..rng.below(4) {
            let s = &settings[rng.below(settings.len())];
            let v = match s.kind {
                SettingKind::Int => {
                    ["20", "0", "-1", "x", "18446744073709551615", "65536"][rng.below(6)]
                }
                SettingKind::Bool => ["true", "false", "maybe", ""][rng.below(4)],
                SettingKind::List => ["1=127.0.0.1:7000", "1=a:1,2=b:2", ",,", ""][rng.below(4)],
                SettingKind::Str | SettingKind::Section(_) => {
                    ["127.0.0.1:7000", "", "block", "/tmp/x"][rng.below(4)]
                }
            };
            // Files named by overrides are never read here: TLS and token paths are skipped.
            if s.key.starts_with("tls.") || s.key.starts_with("admin.") {
                continue;
            }
            pairs.push(format!("{}={v}", s.key));
        }
        if rng.one_in(8) {
            pairs.push("raft.nope=1".into());
        }
        pairs.join("\0").into_bytes()
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let text = String::from_utf8_lossy(input);
        let mut overrides = Vec::new();
        for (i, pair) in text.split('\0').filter(|p| !p.is_empty()).enumerate() {
            let Some((k, v)) = pair.split_once('=') else {
                return Outcome::Rejected;
            };
            // Never read a file named by fuzzed bytes (it could be /dev/zero).
            if k.starts_with("tls.") || k.starts_with("admin.") {
                return Outcome::Rejected;
            }
            let source = if i % 2 == 0 {
                Source::Env
            } else {
                Source::Flag
            };
            overrides.push((k.to_owned(), v.to_owned(), source));
        }
        match NodeConfig::merge(Some(BASE), &overrides) {
            Ok(cfg) => check_config(&cfg),
            Err(e) => {
                assert!(
                    e.to_string().contains('`'),
                    "the error names the setting: {e}"
                );
                Outcome::Rejected
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_logs_checksum() {
        let mut buf = Vec::new();
        wal::put_hard_state_record(&mut buf, &HardState::default());
        let stored = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        assert_eq!(crc32fast_hash(&buf[RECORD_HEADER..]), stored);
    }

    #[test]
    fn generated_inputs_reach_the_decoders() {
        let mut rng = Rng::new(1);
        for mut t in all() {
            let accepted = (0..50)
                .filter(|_| {
                    let input = t.generate(&mut rng);
                    crate::run_one(t.as_mut(), &input).expect("no panic").0 == Outcome::Accepted
                })
                .count();
            assert!(
                accepted >= 10,
                "{}: only {accepted} of 50 generated inputs accepted",
                t.name()
            );
        }
    }

    #[test]
    fn a_short_run_of_every_target_is_clean() {
        for mut t in all() {
            let mut f = crate::Fuzzer::new(7, 4096);
            let rep = f
                .run(t.as_mut(), std::time::Duration::from_secs(60), Some(300))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rep.execs, 300);
            assert!(rep.rejected > 0 && rep.accepted > 0, "{rep:?}");
        }
    }
}
