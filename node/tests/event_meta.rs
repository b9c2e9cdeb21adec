//! Events' record keys and headers through a 3-node cluster over loopback TCP: published by
//! the client, committed, served to subscribers on every node, and read back from the segment
//! files after every node restarts; and the protocol-version rule: a version-1 client's
//! publish is accepted and what it is sent as a subscriber decodes as version 1.

mod common;

use bytes::{Bytes, BytesMut};
use eventstream_client::{Client, ClientConfig};
use eventstream_core::{Engine, Event, Priority};
use eventstream_proto::codec;
use eventstream_proto::frame::{self, Kind, SubscribeBody};
use eventstream_testkit::test_runtime;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Event `i`: every third without key and headers, the others with a key and headers (one of
/// them a null value, one an empty value, a repeated name).
fn ev(i: u64) -> Event {
    let e = Event::new(
        "orders",
        Priority::High,
        Bytes::from(format!("payload-{i}")),
    )
    .with_id(1_000 + i);
    if i % 3 == 0 {
        return e;
    }
    e.with_key(format!("key-{}", i % 5))
        .with_header("trace", Some(Bytes::from(format!("t{i}"))))
        .with_header("null", None)
        .with_header("trace", Some(Bytes::new()))
}

/// The first `n` events a subscriber on `addr` receives, as (offset, event).
async fn read_all(addr: &str, n: usize) -> Vec<(u64, Event)> {
    let c = Client::new(ClientConfig::new(vec![addr.to_owned()])).unwrap();
    let mut sub = c.subscribe(SubscribeBody::default());
    let mut got = Vec::new();
    while got.len() < n {
        let next = sub.next_timeout(Duration::from_secs(10)).await.unwrap();
        got.push(next.expect("an event within 10 s"));
    }
    got
}

/// Only what a subscriber compares: id, payload, key, headers (the node sets the time).
fn comparable(evs: &[(u64, Event)]) -> Vec<(u64, Bytes, Option<Box<eventstream_core::EventMeta>>)> {
    let mut v: Vec<_> = evs
        .iter()
        .map(|(_, e)| (e.id.0, e.payload.clone(), e.meta.clone()))
        .collect();
    v.sort_by_key(|x| x.0);
    v
}

#[test]
fn keys_and_headers_survive_commit_subscribe_and_a_restart_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster(3, dir.path(), |_| {});
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("leader");
    let eps = cluster.endpoints();
    let published: Vec<(u64, Event)> = (0..30).map(|i| (i, ev(i))).collect();
    let rt = test_runtime();
    rt.block_on(async {
        let client = Client::new(ClientConfig::new(eps.clone())).unwrap();
        let evs: Vec<Event> = published.iter().map(|(_, e)| e.clone()).collect();
        client.publish(evs).await.unwrap();
        for ep in &eps {
            let got = read_all(ep, published.len()).await;
            assert_eq!(comparable(&got), comparable(&published), "node {ep}");
        }
    });
    for id in 1..=3 {
        cluster.stop_node(id);
    }
    for id in 1..=3 {
        cluster.restart_node(id, Engine::builder()).unwrap();
    }
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("leader after the restart");
    rt.block_on(async {
        for ep in &cluster.endpoints() {
            let got = read_all(ep, published.len()).await;
            assert_eq!(
                comparable(&got),
                comparable(&published),
                "node {ep} restarted"
            );
        }
    });
    cluster.shutdown();
}

/// Reads one frame from `s`.
fn read_frame(s: &mut TcpStream) -> (Kind, Bytes) {
    let mut hdr = [0u8; frame::HEADER_LEN];
    s.read_exact(&mut hdr).unwrap();
    let (kind, len) = frame::decode_header(&hdr, 16 << 20).unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (kind, Bytes::from(body))
}

/// A connection that said protocol version 1 in its hello (the `u64` field 0, as version-1
/// clients send it).
fn v1_connection(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    s.write_all(&b).unwrap();
    s
}

/// Decodes a subscription body strictly as version 1 does: `u32 count | count × (u64 offset |
/// u64 id | u8 priority (0..=3) | u64 ingest_ns | u16 len | topic | u32 len | payload)`, to
/// the body's end. Returns (offset, id, payload) per event.
fn decode_v1_events(body: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut r = codec::Reader::new(body);
    let count = r.u32().unwrap();
    let mut out = Vec::new();
    for _ in 0..count {
        let off = r.u64().unwrap();
        let id = r.u64().unwrap();
        let p = r.u8().unwrap();
        assert!(p <= 3, "priority byte {p:#04x} is not version 1");
        r.u64().unwrap();
        let n = r.u16().unwrap() as usize;
        r.take(n).unwrap();
        let n = r.u32().unwrap() as usize;
        out.push((off, id, r.take(n).unwrap().to_vec()));
    }
    assert_eq!(r.remaining(), 0, "bytes after the version-1 events");
    out
}

#[test]
fn a_version_1_client_publishes_and_subscribes_in_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::cluster(1, dir.path(), |_| {});
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("leader");
    let addr = cluster.endpoints()[0].clone();
    // A current client stores events with keys and headers first.
    let rt = test_runtime();
    rt.block_on(async {
        let client = Client::new(ClientConfig::new(vec![addr.clone()])).unwrap();
        client.publish((1..=4).map(ev).collect()).await.unwrap();
    });
    // A version-1 publish: a version-1 block.
    let mut s = v1_connection(&addr);
    let old = Event::new("orders", Priority::Low, &b"from-v1"[..]).with_id(77);
    let mut b = BytesMut::new();
    frame::put_publish(&mut b, 9, std::slice::from_ref(&old));
    assert_eq!(b[frame::HEADER_LEN + 9], codec::BLOCK_VERSION_V1);
    s.write_all(&b).unwrap();
    let (kind, body) = read_frame(&mut s);
    assert_eq!(kind, Kind::PublishOk);
    assert_eq!(frame::decode_publish_ok(&body).unwrap(), (9, vec![4]));

    // A version-1 subscriber gets every event, keys and headers left out.
    let mut sub = v1_connection(&addr);
    let mut b = BytesMut::new();
    frame::put_subscribe(&mut b, &SubscribeBody::default());
    sub.write_all(&b).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let (kind, body) = read_frame(&mut sub);
        assert_eq!(kind, Kind::Events);
        got.extend(decode_v1_events(&body));
    }
    let want: Vec<_> = (1..=4)
        .map(ev)
        .chain([old])
        .enumerate()
        .map(|(o, e)| (o as u64, e.id.0, e.payload.to_vec()))
        .collect();
    assert_eq!(got, want);

    // The same stream to a current client keeps them.
    rt.block_on(async {
        let got = read_all(&addr, 5).await;
        assert_eq!(got[0].1.key(), ev(1).key());
        assert_eq!(got[0].1.headers(), ev(1).headers());
        assert!(got[0].1.key().is_some());
        assert_eq!(got[4].1.meta, None);
    });
    cluster.shutdown();
}
