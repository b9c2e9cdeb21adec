//! Snapshots with real `eventstream node` processes, driven by exactly the commands of
//! `alerts/runbooks/backup-restore.md` and `alerts/runbooks/compaction-retention.md`:
//! * a backup (snapshot + stream segments + manifest) saved from a live, loaded 3-node
//!   cluster, checked with `snapshot status` (a flipped or truncated segment is refused),
//!   restored into a fresh 3-node cluster: every event up to the snapshot offset is there (ids,
//!   offsets, order, payloads), and a re-published id from the dedup window is deduplicated
//!   with its original offset;
//! * retention: a subscriber asking for a compacted offset gets an error naming the earliest
//!   available offset; a node killed and restarted after compaction starts from its snapshot.

mod common;

use bytes::Bytes;
use common::publish_batches;
use eventstream_client::{Client, ClientConfig, ClientError};
use eventstream_core::{Event, Priority};
use eventstream_proto::frame::SubscribeBody;
use eventstream_testkit::{free_ports, test_runtime, ProcessCluster};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

use eventstream_testkit::Scratch;

/// Runs `eventstream ARGS...`.
fn es(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for ent in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(ent.file_name());
        if ent.file_type().unwrap().is_dir() {
            copy_dir(&ent.path(), &target);
        } else {
            std::fs::copy(ent.path(), target).unwrap();
        }
    }
}

/// Reads offsets `0..n` from `endpoint`: `(offset, id, payload)`.
async fn read(endpoint: &str, n: u64) -> Vec<(u64, u64, Bytes)> {
    let client = Client::new(ClientConfig::new(vec![endpoint.to_owned()])).unwrap();
    let mut sub = client.subscribe(SubscribeBody::default());
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let (o, e) = sub
            .next_timeout(Duration::from_secs(20))
            .await
            .unwrap()
            .expect("events keep coming");
        out.push((o, e.id.0, e.payload.clone()));
    }
    out
}

#[test]
fn backup_of_a_loaded_cluster_restores_into_a_fresh_cluster() {
    let dir = Scratch::new("backup");
    let old_dir = dir.path().join("old");
    std::fs::create_dir_all(&old_dir).unwrap();
    // Compaction on, so the source nodes serve snapshots while they are also compacting.
    let tuning: Vec<String> = [
        "--storage-snapshot-entries",
        "100",
        "--storage-log-keep-entries",
        "20",
        "--storage-compaction-interval-ms",
        "300",
    ]
    .map(String::from)
    .to_vec();
    let mut old = ProcessCluster::start(Path::new(EXE), 3, &old_dir, &tuning).unwrap();
    let eps = old.endpoints().to_vec();
    let rt = test_runtime();
    let leader = rt
        .block_on(old.wait_healthy(Duration::from_secs(30)))
        .unwrap();
    let follower = eps[if leader == 1 { 1 } else { 0 }].clone();
    let client = Client::new(ClientConfig::new(eps.clone())).unwrap();
    // EVENTSTREAM_SNAPSHOT_TEST_BATCHES scales the load (× 50 events, twice) for measurements.
    let batches: usize = std::env::var("EVENTSTREAM_SNAPSHOT_TEST_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut acked = rt.block_on(publish_batches(&client, batches, 50, "a"));
    // Load keeps coming while the backup is taken.
    let bg_client = Client::new(ClientConfig::new(eps.clone())).unwrap();
    let bg = rt.spawn(async move { publish_batches(&bg_client, batches, 50, "b").await });
    std::thread::sleep(Duration::from_millis(200));
    let backup = dir.path().join("backup-1");
    let file_s = backup.to_str().unwrap();
    let started = Instant::now();
    let saved = ok(
        es(&["snapshot", "save", file_s, "--endpoint", &follower]),
        "snapshot save",
    );
    let save_took = started.elapsed();
    assert!(saved.contains("saved"), "{saved}");
    acked.extend(rt.block_on(bg).unwrap());
    let human = ok(es(&["snapshot", "status", file_s]), "snapshot status");
    assert!(
        human.contains("index ")
            && human.contains("checksum crc32:")
            && human.contains("segment files"),
        "{human}"
    );
    let status: serde_json::Value = serde_json::from_str(&ok(
        es(&["snapshot", "status", file_s, "--json"]),
        "snapshot status --json",
    ))
    .unwrap();
    let next = status["next_offset"].as_u64().unwrap();
    let events = status["events"].as_u64().unwrap();
    let size = status["size_bytes"].as_u64().unwrap() + status["stream_bytes"].as_u64().unwrap();
    assert!(status["stream_segments"].as_u64().unwrap() >= 1);
    assert_eq!(status["first_offset"].as_u64(), Some(0));
    assert_eq!(events, next);
    assert!(
        next >= 5_000,
        "the snapshot holds the first load at least ({next})"
    );
    assert_eq!(status["voters"], serde_json::json!([1, 2, 3]));
    eprintln!(
        "snapshot save: {events} events, {size} bytes, index {}, took {save_took:?}",
        status["index"]
    );
    // The reference: what the old cluster holds below the snapshot offset.
    let reference = rt.block_on(read(&eps[0], next));
    let by_offset: std::collections::HashMap<u64, u64> =
        acked.iter().map(|(id, o)| (*o, *id)).collect();
    for (o, id, _) in &reference {
        assert_eq!(
            by_offset.get(o),
            Some(id),
            "acknowledged event at offset {o}"
        );
    }
    drop(old);

    // A corrupt copy (a flipped byte in a segment file) and a truncated one (a segment file
    // cut short) are refused by status, and so by restore.
    for (name, damage) in [("flipped", 0usize), ("truncated", 1)] {
        let bad = dir.path().join(name);
        copy_dir(&backup, &bad);
        let segment = std::fs::read_dir(bad.join("stream"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let mut bytes = std::fs::read(&segment).unwrap();
        if damage == 0 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 1;
        } else {
            bytes.truncate(bytes.len() - 7);
        }
        std::fs::write(&segment, &bytes).unwrap();
        let out = es(&["snapshot", "status", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} backup accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("corrupt backup") && err.contains(".log"),
            "{err}"
        );
        let out = es(&[
            "snapshot",
            "restore",
            bad.to_str().unwrap(),
            "--data-dir",
            dir.path().join(format!("{name}-data")).to_str().unwrap(),
            "--initial-cluster",
            "1=127.0.0.1:1",
        ]);
        assert!(!out.status.success(), "{name} backup restored");
    }

    // Restore into a fresh 3-node cluster (new ports, new directories).
    let ports = free_ports(3).unwrap();
    let cluster: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let new_dir = dir.path().join("new");
    std::fs::create_dir_all(&new_dir).unwrap();
    let started = Instant::now();
    for n in 1..=3 {
        let data = new_dir.join(format!("node-{n}"));
        let out = ok(
            es(&[
                "snapshot",
                "restore",
                file_s,
                "--data-dir",
                data.to_str().unwrap(),
                "--initial-cluster",
                &cluster,
            ]),
            "snapshot restore",
        );
        assert!(out.contains("restored"), "{out}");
    }
    let restore_took = started.elapsed();
    let mut new =
        ProcessCluster::start_at(Path::new(EXE), &ports.addrs(), &new_dir, &[], None).unwrap();
    let new_eps = new.endpoints().to_vec();
    rt.block_on(new.wait_healthy(Duration::from_secs(30)))
        .unwrap();
    eprintln!("snapshot restore into 3 data dirs took {restore_took:?}");
    for ep in &new_eps {
        let got = rt.block_on(read(ep, next));
        assert_eq!(
            got, reference,
            "node {ep} holds every event up to the snapshot"
        );
    }
    // Re-publishing ids from the dedup window: duplicates, acknowledged at their offsets.
    let client = Client::new(ClientConfig::new(new_eps.clone())).unwrap();
    let again: Vec<(u64, u64)> = reference[reference.len() - 5..]
        .iter()
        .map(|(o, id, _)| (*id, *o))
        .collect();
    let evs: Vec<Event> = again
        .iter()
        .map(|(id, _)| Event::new("orders", Priority::High, &b"retry"[..]).with_id(*id))
        .collect();
    let offs = rt.block_on(client.publish(evs)).unwrap();
    assert_eq!(offs, again.iter().map(|x| x.1).collect::<Vec<_>>());
    let fresh = Event::new("orders", Priority::High, &b"new"[..]).with_id(client.next_id().0);
    let offs = rt.block_on(client.publish(vec![fresh])).unwrap();
    assert_eq!(offs, vec![next], "the duplicates took no offsets");
}

#[test]
fn retention_compacts_and_subscribers_get_the_earliest_offset() {
    let dir = Scratch::new("retention");
    let flags: Vec<String> = [
        "--retention-max-events",
        "1000",
        "--storage-snapshot-entries",
        "20",
        "--storage-log-keep-entries",
        "5",
        "--storage-compaction-interval-ms",
        "200",
        "--storage-stream-segment-bytes",
        "65536",
    ]
    .map(String::from)
    .to_vec();
    let mut cluster = ProcessCluster::start(Path::new(EXE), 3, dir.path(), &flags).unwrap();
    let eps = cluster.endpoints().to_vec();
    let rt = test_runtime();
    rt.block_on(cluster.wait_healthy(Duration::from_secs(30)))
        .unwrap();
    let client = Client::new(ClientConfig::new(eps.clone())).unwrap();
    rt.block_on(publish_batches(&client, 100, 50, "r"));
    // A few retention passes (every 200 ms) after the last write: the earliest offset settles.
    std::thread::sleep(Duration::from_millis(1500));
    // `eventstream subscribe --from 0` on a node that has trimmed: a clear error.
    let deadline = Instant::now() + Duration::from_secs(10);
    let earliest = loop {
        let out = es(&[
            "subscribe",
            "--endpoints",
            &eps[0],
            "--from",
            "0",
            "--limit",
            "1",
        ]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            assert!(err.contains("is compacted"), "{err}");
            let n: u64 = err
                .split("earliest available offset is ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("no earliest offset in {err}"));
            break n;
        }
        assert!(Instant::now() < deadline, "retention never trimmed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        earliest > 0 && earliest <= 5_000 - 1_000,
        "earliest {earliest}"
    );
    let line = ok(
        es(&[
            "subscribe",
            "--endpoints",
            &eps[0],
            "--from",
            &earliest.to_string(),
            "--limit",
            "1",
            "--json",
        ]),
        "subscribe from the earliest offset",
    );
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["offset"].as_u64(), Some(earliest));

    // Kill a node after compaction; it restarts from its snapshot + log and serves again.
    let status = rt
        .block_on(eventstream_client::status_of(
            &eps[2],
            Duration::from_secs(2),
        ))
        .unwrap();
    assert!(status.first_index > 1, "node 3 compacted its log");
    assert!(status.counters.compactions > 0);
    cluster.kill(3);
    cluster.restart(3).unwrap();
    rt.block_on(cluster.wait_healthy(Duration::from_secs(30)))
        .unwrap();
    let after = rt
        .block_on(eventstream_client::status_of(
            &eps[2],
            Duration::from_secs(2),
        ))
        .unwrap();
    assert!(after.applied_index >= status.applied_index);
    assert!(after.first_index > 1);
    let c3 = Client::new(ClientConfig::new(vec![eps[2].clone()])).unwrap();
    let mut sub = c3.subscribe(SubscribeBody::default());
    match rt.block_on(sub.next_timeout(Duration::from_secs(10))) {
        Err(ClientError::Compacted {
            requested,
            earliest,
        }) => {
            assert_eq!(requested, 0);
            assert!(earliest > 0);
            let mut sub = c3.subscribe(SubscribeBody {
                from_offset: earliest,
                ..SubscribeBody::default()
            });
            let (o, _) = rt
                .block_on(sub.next_timeout(Duration::from_secs(10)))
                .unwrap()
                .unwrap();
            assert_eq!(o, earliest);
        }
        other => panic!("expected a Compacted error, got {other:?}"),
    }
}
