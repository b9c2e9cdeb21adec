//! Bad input on the client port, one test each: an oversized frame, a wrong protocol version,
//! an unknown priority in a publish block, a stream cut inside a frame. Each test asserts
//! that the offending connection gets a clear error (where it can still read one) and is
//! closed, that the node counts one protocol error, and that a client connection opened
//! before it and the cluster keep working: a publish is acknowledged and an open
//! subscription on another node receives it.

mod common;

use bytes::{Bytes, BytesMut};
use eventstream_core::{Event, Priority};
use eventstream_node::LocalCluster;
use eventstream_proto::codec;
use eventstream_proto::frame::{self, ErrorBody, ErrorCode, Kind, SubscribeBody};
use eventstream_testkit::wait_until;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A raw client connection speaking the wire protocol.
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    fn client(addr: &str) -> Raw {
        let mut r = Raw::connect(addr);
        r.send(&hello());
        r
    }

    fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    /// The next frame, or `None` at end of stream.
    fn frame(&mut self) -> Option<(Kind, Vec<u8>)> {
        let mut hdr = [0u8; 8];
        match self.0.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
        let (kind, len) = frame::decode_header(&hdr, 64 << 20).unwrap();
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        Some((kind, body))
    }

    /// The error frame that closes this connection (a bad request whose message contains
    /// `says`), then the end of stream.
    fn closing_error(&mut self, says: &str) -> ErrorBody {
        let (kind, body) = self.frame().expect("an error frame before the close");
        assert_eq!(kind, Kind::Error);
        let e = frame::decode_error(&body).unwrap();
        assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
        assert!(e.message.contains(says), "{}", e.message);
        assert!(
            self.frame().is_none(),
            "the connection is closed after the error"
        );
        e
    }
}

fn hello() -> BytesMut {
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    b
}

fn publish_frame(req_id: u64, id: u64) -> BytesMut {
    let e = Event::new("t", Priority::High, Bytes::from_static(b"payload")).with_id(id);
    let mut b = BytesMut::new();
    frame::put_publish(&mut b, req_id, &[e]);
    b
}

/// A cluster with a publisher connection on the leader and a subscription on a follower, both
/// opened before any bad input.
struct World {
    _dir: tempfile::TempDir,
    cluster: LocalCluster,
    leader: u64,
    addr: String,
    publisher: Raw,
    subscriber: Raw,
    next_id: u64,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let cluster = common::cluster(3, dir.path(), |_| {});
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
        let eps = cluster.endpoints();
        let follower = if leader == 1 { 2 } else { 1 };
        let publisher = Raw::client(&eps[(leader - 1) as usize]);
        let mut subscriber = Raw::client(&eps[(follower - 1) as usize]);
        let mut b = BytesMut::new();
        frame::put_subscribe(&mut b, &SubscribeBody::default());
        subscriber.send(&b);
        let mut w = World {
            _dir: dir,
            addr: eps[(leader - 1) as usize].clone(),
            cluster,
            leader,
            publisher,
            subscriber,
            next_id: 1,
        };
        w.still_works();
        w
    }

    fn leader_node(&self) -> &eventstream_node::Node {
        self.cluster.nodes[(self.leader - 1) as usize]
            .as_ref()
            .unwrap()
    }

    fn protocol_errors(&self) -> u64 {
        self.leader_node().protocol_errors()
    }

    /// Whether the leader's committed stream holds an event with this id.
    fn leader_stored(&self, id: u64) -> bool {
        let mut all = Vec::new();
        self.leader_node()
            .stream()
            .read(0, usize::MAX, |_: &Event| true, &mut all);
        all.iter().any(|(_, e)| e.id.0 == id)
    }

    fn wait_protocol_errors(&self, want: u64) {
        wait_until("the protocol error", Duration::from_secs(5), || {
            self.protocol_errors() >= want
        });
        assert_eq!(
            self.protocol_errors(),
            want,
            "exactly one protocol error counted"
        );
    }

    /// The connections opened before keep working: a publish on the old publisher connection
    /// is acknowledged and the old subscription on a follower delivers it.
    fn still_works(&mut self) {
        let id = 10_000 + self.next_id;
        self.next_id += 1;
        self.publisher.send(&publish_frame(id, id));
        let (kind, body) = self.publisher.frame().expect("publish answered");
        assert_eq!(kind, Kind::PublishOk, "{:?}", frame::decode_error(&body));
        let (req, offsets) = frame::decode_publish_ok(&body).unwrap();
        assert_eq!((req, offsets.len()), (id, 1));
        loop {
            let (kind, body) = self.subscriber.frame().expect("subscription open");
            assert_eq!(kind, Kind::Events);
            let evs = codec::decode_offset_events(&Bytes::from(body), 0).unwrap();
            if evs.iter().any(|(o, e)| e.id.0 == id && *o == offsets[0]) {
                return;
            }
        }
    }
}

#[test]
fn oversized_frame_closes_only_its_connection() {
    let mut w = World::new();
    let before = w.protocol_errors();
    let mut bad = Raw::client(&w.addr);
    bad.send(&[1, Kind::Publish as u8, 0, 0, 0xff, 0xff, 0xff, 0x7f]); // a 2 GiB publish
    bad.closing_error("exceeds maximum");
    w.wait_protocol_errors(before + 1);
    w.still_works();
    w.cluster.shutdown();
}

#[test]
fn wrong_protocol_version_closes_only_its_connection() {
    let mut w = World::new();
    let before = w.protocol_errors();
    let mut bad = Raw::client(&w.addr);
    let mut f = BytesMut::new();
    frame::put_status(&mut f, 1);
    f[0] = 2; // a version this build does not speak
    bad.send(&f);
    bad.closing_error("unsupported version 2");
    w.wait_protocol_errors(before + 1);
    // Before the hello, too: the first frame's version is checked the same way.
    let mut bad = Raw::connect(&w.addr);
    let mut h = hello();
    h[0] = 9;
    bad.send(&h);
    bad.closing_error("unsupported version 9");
    w.wait_protocol_errors(before + 2);
    w.still_works();
    w.cluster.shutdown();
}

#[test]
fn unknown_priority_is_a_bad_request_and_closes_only_its_connection() {
    let mut w = World::new();
    let before = w.protocol_errors();
    let mut bad = Raw::client(&w.addr);
    let mut f = publish_frame(77, 5);
    // header 8 | req_id 8 | block header 6 | event id 8 | priority
    assert_eq!(f[30], Priority::High as u8);
    f[30] = 9;
    bad.send(&f);
    let e = bad.closing_error("priority");
    assert_eq!(e.req_id, 77, "the error answers the bad request");
    w.wait_protocol_errors(before + 1);
    w.still_works();
    assert!(!w.leader_stored(5), "nothing of the bad request was stored");
    w.cluster.shutdown();
}

#[test]
fn stream_cut_inside_a_frame_closes_only_its_connection() {
    let mut w = World::new();
    let before = w.protocol_errors();
    let mut bad = Raw::client(&w.addr);
    let f = publish_frame(3, 3);
    bad.send(&f[..f.len() / 2]);
    bad.0.shutdown(Shutdown::Write).unwrap();
    assert!(
        bad.frame().is_none(),
        "closed without an answer to the cut request"
    );
    w.wait_protocol_errors(before + 1);
    w.still_works();
    assert!(!w.leader_stored(3), "the cut publish was not stored");
    w.cluster.shutdown();
}
