//! An in-process 3-node cluster over real loopback TCP: publish through the client, read the
//! committed stream from every node, follower redirects, dedup of retries, bad frames.

mod common;

use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::replication::ReplicationSource;
use eventstream_core::{Engine, Event, Priority};
use eventstream_proto::frame::{self, ErrorCode, Kind, SubscribeBody};
use eventstream_testkit::{test_runtime, wait_until};
use std::io::{Read, Write};
use std::time::Duration;

fn ev(i: u64) -> Event {
    Event::new(
        if i % 2 == 0 { "even" } else { "odd" },
        Priority::from_index((i % 4) as u8).unwrap(),
        Bytes::from(format!("payload-{i}")),
    )
}

#[test]
fn publish_subscribe_redirect_dedup_and_bad_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::cluster(3, dir.path(), |_| {});
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("leader");
    let eps = cluster.endpoints();
    let follower = if leader == 1 { 2 } else { 1 };
    let rt = test_runtime();
    rt.block_on(async {
        // Client pointed at a follower only: it is redirected to the leader.
        let client = Client::new(ClientConfig::new(
            vec![eps[(follower - 1) as usize].clone()],
        ))
        .unwrap();
        let mut all = Vec::new();
        for b in 0..10u64 {
            let batch: Vec<Event> = (0..50).map(|i| ev(b * 50 + i)).collect();
            let mut offsets = client.publish(batch).await.unwrap();
            // Priorities reorder a batch (realtime tier first); offsets are a permutation.
            offsets.sort_unstable();
            assert_eq!(offsets, (b * 50..b * 50 + 50).collect::<Vec<_>>());
            all.extend(offsets);
        }
        // A retry with the same ids is acknowledged with the original offsets, stored once.
        let ids: Vec<Event> = (0..5).map(|i| ev(i).with_id(1_000_000 + i)).collect();
        let first = client.publish(ids.clone()).await.unwrap();
        let again = client.publish(ids).await.unwrap();
        assert_eq!(first, again);
        // Every node serves the same committed stream.
        for ep in &eps {
            let c = Client::new(ClientConfig::new(vec![ep.clone()])).unwrap();
            let mut sub = c.subscribe(SubscribeBody::default());
            let mut got = Vec::new();
            while got.len() < 505 {
                let (off, e) = sub
                    .next_timeout(Duration::from_secs(10))
                    .await
                    .unwrap()
                    .expect("event");
                got.push((off, e.id.0));
            }
            assert_eq!(
                got.iter().map(|x| x.0).collect::<Vec<_>>(),
                (0..505).collect::<Vec<_>>()
            );
            assert!(
                sub.next_timeout(Duration::from_millis(200))
                    .await
                    .unwrap()
                    .is_none(),
                "no duplicate stored"
            );
            // Filtered subscription: only "even" topic events of priority <= Medium.
            let mut sub = c.subscribe(SubscribeBody {
                from_offset: 0,
                topic: Some("even".into()),
                min_priority: Some(Priority::Medium),
                ..SubscribeBody::default()
            });
            let mut last = None;
            for _ in 0..253 {
                let (off, e) = sub
                    .next_timeout(Duration::from_secs(5))
                    .await
                    .unwrap()
                    .expect("filtered event");
                assert!(e.topic == "even" && e.priority <= Priority::Medium, "{e:?}");
                assert!(last < Some(off));
                last = Some(off);
            }
            assert!(sub
                .next_timeout(Duration::from_millis(100))
                .await
                .unwrap()
                .is_none());
        }
        let st = client.status().await.unwrap();
        assert_eq!(st.members.len(), 3);
        assert_eq!(st.leader_id, Some(leader));
    });

    // A raw publish to a follower gets NotLeader with the leader's address.
    let mut s = std::net::TcpStream::connect(&eps[(follower - 1) as usize]).unwrap();
    let mut b = bytes::BytesMut::new();
    frame::put_frame(
        &mut b,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    frame::put_publish(&mut b, 7, &[ev(1)]);
    s.write_all(&b).unwrap();
    let mut buf = vec![0u8; 4096];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = s.read(&mut buf).unwrap();
    let (k, body, _) = frame::decode_frame(&buf[..n], 1 << 20).unwrap().unwrap();
    assert_eq!(k, Kind::Error);
    let e = frame::decode_error(body).unwrap();
    assert_eq!(
        (e.req_id, e.code, e.leader_addr.as_str()),
        (7, ErrorCode::NotLeader, eps[(leader - 1) as usize].as_str())
    );

    // Garbage and an oversized frame close only their own connections.
    let node = cluster.nodes[(leader - 1) as usize].as_ref().unwrap();
    let before = node.protocol_errors();
    let mut good = std::net::TcpStream::connect(&eps[(leader - 1) as usize]).unwrap();
    let mut hello = bytes::BytesMut::new();
    frame::put_frame(
        &mut hello,
        Kind::Hello,
        &frame::encode_hello(frame::Role::Client),
    );
    good.write_all(&hello).unwrap();
    for bad in [b"GET / HTTP/1.1\r\n\r\n".to_vec(), {
        let mut v = hello.to_vec();
        v.extend_from_slice(&[1, 10, 0, 0, 0xff, 0xff, 0xff, 0x7f]); // Publish of 2 GiB
        v
    }] {
        let mut s = std::net::TcpStream::connect(&eps[(leader - 1) as usize]).unwrap();
        s.write_all(&bad).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server says why (one BadRequest error frame), then closes the connection.
        let mut said = Vec::new();
        s.read_to_end(&mut said).unwrap();
        let (k, body, used) = frame::decode_frame(&said, 1 << 20).unwrap().unwrap();
        assert_eq!(k, Kind::Error);
        assert_eq!(
            frame::decode_error(body).unwrap().code,
            ErrorCode::BadRequest
        );
        assert_eq!(used, said.len(), "server closes the bad connection");
    }
    wait_until("two protocol errors", Duration::from_secs(5), || {
        node.protocol_errors() >= before + 2
    });
    assert_eq!(node.protocol_errors(), before + 2);
    // What the exporter publishes is the server's own count (the same counters, shared).
    {
        let counters = node.metrics().status().counters;
        assert_eq!(counters.protocol_errors, node.protocol_errors());
        // The publish the follower answered NotLeader above is an `other_error` outcome.
        let f = cluster.nodes[(follower - 1) as usize].as_ref().unwrap();
        let published = f.metrics().status().counters.publishes;
        assert!(published.other_errors[0] >= 1, "{published:?}");
        assert_eq!(published, f.publish_counts().outcomes);
    }
    // The good connection still works.
    let mut req = bytes::BytesMut::new();
    frame::put_status(&mut req, 42);
    good.write_all(&req).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hdr = [0u8; 8];
    good.read_exact(&mut hdr).unwrap();
    let (k, len) = frame::decode_header(&hdr, 1 << 20).unwrap();
    let mut body = vec![0u8; len];
    good.read_exact(&mut body).unwrap();
    assert_eq!(k, Kind::StatusOk);
    let status = node.metrics().status();
    assert_eq!(status.members.len(), 3);
    assert!(status.commit_index >= status.applied_index && status.applied_index > 0);
    assert!(node.metrics().ready().is_ok());
    assert!(!node.metrics().histograms().fsync_ns.is_empty());
    cluster.shutdown();
}

#[test]
fn stopped_follower_restarts_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster(3, dir.path(), |_| {});
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("leader");
    let victim = if leader == 3 { 2 } else { 3 };
    let rt = test_runtime();
    let client = Client::new(ClientConfig::new(cluster.endpoints())).unwrap();
    rt.block_on(async {
        client.publish((0..100).map(ev).collect()).await.unwrap();
    });
    cluster.stop_node(victim);
    rt.block_on(async {
        for _ in 0..5 {
            client.publish((0..100).map(ev).collect()).await.unwrap();
        }
    });
    cluster.restart_node(victim, Engine::builder()).unwrap();
    let node = cluster.nodes[(victim - 1) as usize].as_ref().unwrap();
    wait_until(
        "the restarted node to catch up",
        Duration::from_secs(20),
        || node.stream().next_offset() >= 600,
    );
    assert_eq!(node.stream().next_offset(), 600);
    let leader_stream = cluster.nodes[(leader - 1) as usize]
        .as_ref()
        .unwrap()
        .stream();
    let read = |s: &eventstream_node::CommittedStream| {
        let mut v = Vec::new();
        s.read(0, usize::MAX, |_| true, &mut v);
        v.into_iter().map(|(o, e)| (o, e.id.0)).collect::<Vec<_>>()
    };
    assert_eq!(read(&node.stream()), read(&leader_stream));
    cluster.shutdown();
}

/// `leader transfer --if-leader` sends a conditional transfer: asked about a follower (whose
/// status may still say leader for a moment), the request is redirected to the real leader,
/// which refuses it and keeps leading; asked about the leader, it moves leadership.
#[test]
fn conditional_leader_transfer_acts_only_on_the_named_leader() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::cluster(3, dir.path(), |_| {});
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("leader");
    let follower = if leader == 1 { 2 } else { 1 };
    let eps = cluster.endpoints();
    let rt = test_runtime();
    rt.block_on(async {
        let at_follower = Client::new(ClientConfig::new(
            vec![eps[(follower - 1) as usize].clone()],
        ))
        .unwrap();
        let err = at_follower
            .transfer_leader_from(Some(follower), None, Duration::from_secs(5))
            .await
            .unwrap_err();
        match err {
            eventstream_client::ClientError::Server { code, message } => {
                assert_eq!(code, ErrorCode::Refused);
                assert!(message.contains("nothing to do"), "{message}");
            }
            other => panic!("expected Refused, got {other}"),
        }
        assert_eq!(
            cluster.wait_for_leader(Duration::from_secs(1)),
            Some(leader)
        );
        let at_leader =
            Client::new(ClientConfig::new(vec![eps[(leader - 1) as usize].clone()])).unwrap();
        let (new_leader, _) = at_leader
            .transfer_leader_from(Some(leader), None, Duration::from_secs(10))
            .await
            .unwrap();
        assert_ne!(new_leader, leader);
    });
    cluster.shutdown();
}

/// Real TCP: a node stopped while the others compact their logs comes back and is caught up by
/// a snapshot sent over the peer transport (reported delivered to raft); then every node holds
/// the same stream and the snapshot counters show it.
#[test]
fn restarted_follower_catches_up_by_snapshot_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster(3, dir.path(), |c| {
        c.storage.snapshot_entries = 20;
        c.storage.log_keep_entries = 5;
        c.storage.compaction_interval_ms = 50;
    });
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .expect("leader");
    let down = if leader == 3 { 2 } else { 3 };
    cluster.stop_node(down);
    let eps = cluster.endpoints();
    let up: Vec<String> = (1..=3u64)
        .filter(|&id| id != down)
        .map(|id| eps[(id - 1) as usize].clone())
        .collect();
    let rt = test_runtime();
    let client = Client::new(ClientConfig::new(up)).unwrap();
    rt.block_on(async {
        // One small batch per entry: many entries, so the log is compacted past the stopped node.
        for b in 0..200u64 {
            let batch: Vec<Event> = (0..5).map(|i| ev(b * 5 + i)).collect();
            client.publish(batch).await.unwrap();
        }
    });
    let leader_metrics = cluster.nodes[(leader - 1) as usize]
        .as_ref()
        .unwrap()
        .metrics();
    wait_until("the leader to compact", Duration::from_secs(10), || {
        leader_metrics.status().first_index >= 100
    });
    cluster.restart_node(down, Engine::builder()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = cluster.nodes[(down - 1) as usize]
            .as_ref()
            .unwrap()
            .stream();
        // Caught up by snapshot, and the offsets below it copied from another member.
        if s.next_offset() == 1000 && s.missing().is_none() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {down} stuck at {}, lacking {:?}",
            s.next_offset(),
            s.missing()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |id: u64| {
        let mut out = Vec::new();
        let s = cluster.nodes[(id - 1) as usize].as_ref().unwrap().stream();
        let mut next = 0;
        while next < s.next_offset() {
            next = s.read(next, usize::MAX, |_| true, &mut out);
        }
        out.into_iter()
            .map(|(o, e)| (o, e.id.0))
            .collect::<Vec<_>>()
    };
    assert_eq!(read(down), read(leader));
    assert_eq!(read(down).len(), 1000);
    let sent = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| n.metrics().status().counters.snapshots_sent)
        .sum::<u64>();
    let received = cluster.nodes[(down - 1) as usize]
        .as_ref()
        .unwrap()
        .metrics()
        .status()
        .counters
        .snapshots_received;
    assert!(
        sent >= 1 && received >= 1,
        "sent {sent}, received {received}"
    );
    // The status reports the copy and the stream's storage.
    let storage = |id: u64| {
        cluster.nodes[(id - 1) as usize]
            .as_ref()
            .unwrap()
            .metrics()
            .status()
            .stream
    };
    let copied = storage(down);
    assert!(
        copied.copied_bytes > 0 && copied.missing_events == 0,
        "{copied:?}"
    );
    let served: u64 = (1..=3).map(|id| storage(id).copy_served_bytes).sum();
    assert!(
        served >= copied.copied_bytes,
        "served {served}, copied {copied:?}"
    );
    let l = storage(leader);
    assert!(l.segments >= 1 && l.retained_bytes > 0, "{l:?}");
    assert!(
        l.volume_total_bytes >= l.volume_free_bytes && l.volume_free_bytes > 0,
        "{l:?}"
    );
    cluster.shutdown();
}
