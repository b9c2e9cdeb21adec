//! Storage faults on in-process clusters (write and fsync errors injected with
//! `eventstream_node::fault`): a node whose log fails stops accepting writes, says why
//! (status, readiness, publish errors), and never acknowledges what it did not fsync; a torn
//! tail left by a short write is truncated on restart and the node rejoins.

mod common;

use bytes::Bytes;
use eventstream_client::{Client, ClientConfig};
use eventstream_core::replication::ReplicationSource;
use eventstream_core::{Engine, Event, Priority};
use eventstream_proto::frame::ErrorCode;
use eventstream_storage::fault::{self, WalOp, EIO, ENOSPC};
use eventstream_testkit::{raw_publish_error, test_runtime, wait_until};
use std::path::Path;
use std::time::Duration;

fn ev(i: u64) -> Event {
    Event::new("t", Priority::High, Bytes::from(format!("e{i}"))).with_id(1_000 + i)
}

fn client(eps: Vec<String>, deadline_ms: u64) -> Client {
    let mut cfg = ClientConfig::new(eps);
    cfg.deadline = Duration::from_millis(deadline_ms);
    cfg.attempt_timeout = Duration::from_millis(deadline_ms.min(2_000));
    Client::new(cfg).unwrap()
}

fn node_dir(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join(format!("node-{id}"))
}

/// With a single voter nothing commits without this node's own fsync, so an acknowledgement
/// of a write whose fsync failed would prove the node reported it persisted to raft anyway.
fn single_node_failed_fsync_is_never_acknowledged(async_persist: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::cluster(1, dir.path(), |c| {
        c.raft.async_persist = async_persist;
        c.limits.request_timeout_ms = 1_000;
    });
    cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    let eps = cluster.endpoints();
    let node = cluster.nodes[0].as_ref().unwrap();
    let rt = test_runtime();
    let c = client(eps.clone(), 3_000);
    assert_eq!(rt.block_on(c.publish(vec![ev(0)])).unwrap(), vec![0]);

    // Let the acknowledgement's own log writes (commit index) finish, so that the next fsync
    // is the one of the next publish's entry.
    let m = node.metrics();
    wait_until("an idle log", Duration::from_secs(5), || {
        let st = m.status();
        m.persisted_index() == st.last_index && st.applied_index == st.last_index
    });
    std::thread::sleep(Duration::from_millis(200));
    fault::inject(&node_dir(dir.path(), 1), WalOp::Fsync, EIO, 0, 1);
    let err = rt
        .block_on(c.publish(vec![ev(1)]))
        .expect_err("an entry whose fsync failed must not be acknowledged");
    eprintln!("publish after the failed fsync: {err}");
    wait_until("the storage failure", Duration::from_secs(5), || {
        m.storage_failure().is_some()
    });
    let why = m.storage_failure().unwrap();
    assert!(why.contains("Input/output error"), "{why}");
    assert!(m.ready().unwrap_err().starts_with("storage failed:"));
    let st = m.status();
    assert_eq!(st.storage_failure.as_deref(), Some(why.as_str()));
    assert_eq!(st.leader_id, None);
    // Raft was never told the failed entry is durable, so it was never applied either.
    assert!(st.applied_index <= m.persisted_index());
    assert!(
        m.persisted_index() < st.last_index,
        "the failed entry is not persisted: {st:?} persisted {}",
        m.persisted_index()
    );
    assert_eq!(
        node.stream().next_offset(),
        1,
        "only the acknowledged event is in the stream"
    );
    // Later publishes get a clear, non-acknowledging error naming the cause.
    let e = raw_publish_error(&eps[0], ev(2));
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("storage failed"), "{}", e.message);
    assert!(e.message.contains("Input/output error"), "{}", e.message);
    cluster.shutdown();
    fault::clear(&node_dir(dir.path(), 1));
}

#[test]
fn failed_fsync_is_never_acknowledged_async_persist() {
    single_node_failed_fsync_is_never_acknowledged(true);
}

#[test]
fn failed_fsync_is_never_acknowledged_sync_persist() {
    single_node_failed_fsync_is_never_acknowledged(false);
}

/// A full disk on the leader: a short write (torn tail), the node stops accepting writes, the
/// others elect a leader and carry on; after a restart on working storage the torn tail is
/// truncated and the node catches up with the same stream as the others.
#[test]
fn full_disk_on_the_leader_then_restart_truncates_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = common::cluster(3, dir.path(), |c| {
        c.limits.request_timeout_ms = 1_000;
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    let eps = cluster.endpoints();
    let rt = test_runtime();
    let c = client(eps.clone(), 20_000);
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.extend(rt.block_on(c.publish(vec![ev(i)])).unwrap());
    }
    fault::inject(&node_dir(dir.path(), leader), WalOp::Write, ENOSPC, 0, 1);
    // The client gets each event acknowledged by the new leader eventually (same ids).
    for i in 20..40 {
        acked.extend(rt.block_on(c.publish(vec![ev(i)])).unwrap());
    }
    let failed = cluster.nodes[(leader - 1) as usize].as_ref().unwrap();
    let m = failed.metrics();
    let why = m.storage_failure().expect("the leader's log failed");
    assert!(why.contains("No space left on device"), "{why}");
    assert!(m.ready().unwrap_err().contains("No space left on device"));
    let st = m.status();
    assert!(st.applied_index <= m.persisted_index());
    let e = raw_publish_error(&eps[(leader - 1) as usize], ev(99));
    assert!(e.message.contains("storage failed"), "{}", e.message);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    assert_ne!(new_leader, leader);

    // Restart the failed node on working storage: it truncates the torn tail and rejoins.
    fault::clear(&node_dir(dir.path(), leader));
    cluster.stop_node(leader);
    cluster.restart_node(leader, Engine::builder()).unwrap();
    for i in 40..50 {
        acked.extend(rt.block_on(c.publish(vec![ev(i)])).unwrap());
    }
    let want = acked.iter().max().unwrap() + 1;
    wait_until(
        "every node to hold every acknowledged event",
        Duration::from_secs(20),
        || {
            cluster
                .nodes
                .iter()
                .flatten()
                .all(|n| n.stream().next_offset() >= want)
        },
    );
    let streams: Vec<Vec<u64>> = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| {
            let mut v = Vec::new();
            n.stream().read(0, usize::MAX, |_: &Event| true, &mut v);
            v.iter().map(|(_, e)| e.id.0).collect()
        })
        .collect();
    assert!(streams.iter().all(|s| s == &streams[0]), "replicas agree");
    let restarted = cluster.nodes[(leader - 1) as usize].as_ref().unwrap();
    assert_eq!(restarted.metrics().storage_failure(), None);
    for id in (0..50).map(|i| 1_000 + i) {
        assert_eq!(
            streams[0].iter().filter(|&&x| x == id).count(),
            1,
            "event {id} stored exactly once"
        );
    }
    cluster.shutdown();
}

/// A follower whose fsync fails drops out; the leader and the other follower keep committing,
/// and the failed follower answers publishes with the reason instead of a redirect.
#[test]
fn failed_fsync_on_a_follower_leaves_the_cluster_writable() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = common::cluster(3, dir.path(), |_| {});
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    let eps = cluster.endpoints();
    let rt = test_runtime();
    let c = client(eps.clone(), 10_000);
    rt.block_on(c.publish(vec![ev(0)])).unwrap();
    fault::inject(&node_dir(dir.path(), follower), WalOp::Fsync, EIO, 0, 1);
    for i in 1..30 {
        rt.block_on(c.publish(vec![ev(i)])).unwrap();
    }
    let f = cluster.nodes[(follower - 1) as usize].as_ref().unwrap();
    wait_until(
        "the follower's storage failure",
        Duration::from_secs(5),
        || f.metrics().storage_failure().is_some(),
    );
    assert!(f.metrics().status().applied_index <= f.metrics().persisted_index());
    let e = raw_publish_error(&eps[(follower - 1) as usize], ev(99));
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("Input/output error"), "{}", e.message);
    assert_eq!(cluster.leader(), Some(leader), "the leader is unaffected");
    let l = cluster.nodes[(leader - 1) as usize].as_ref().unwrap();
    assert_eq!(l.stream().next_offset(), 30);
    assert!(l.metrics().ready().is_ok());
    cluster.shutdown();
}
