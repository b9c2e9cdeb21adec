//! Storage faults on real node processes.
//!
//! * A corrupt and torn log tail: `kill -9` the leader, flip a byte in the last record of its
//!   newest segment and append half a record, restart it: it detects the bad tail by its
//!   checksum, truncates it (and says so in its log), rejoins, catches up, and every node holds
//!   every acknowledged event exactly once at its offset.
//! * A full disk (root only; a 2 MiB tmpfs as one node's data directory, filled up): that node
//!   stops accepting writes and says why — status `storage_failure`, `/ready` 503 with the
//!   reason, `eventstream_raft_storage_failed 1`, a log line, publishes answered `Unavailable`
//!   with the reason — while the other two keep committing.

mod common;

use bytes::Bytes;
use common::{http_get, publish_batches};
use eventstream_client::{Client, ClientConfig};
use eventstream_core::{Event, Priority};
use eventstream_proto::frame::ErrorCode;
use eventstream_testkit::ProcessCluster;
use eventstream_testkit::{raw_publish_error, test_runtime, verify_acked, Verified};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Offset of the last complete record in a segment (records: `u32 len | u32 crc | body`).
fn last_record_start(data: &[u8]) -> usize {
    let (mut pos, mut last) = (0, 0);
    while pos + 8 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > data.len() {
            break;
        }
        last = pos;
        pos += 8 + len;
    }
    last
}

#[test]
fn corrupt_and_torn_tail_is_truncated_and_the_node_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::start(Path::new(EXE), 3, dir.path(), &[]).unwrap();
    let eps = cluster.endpoints().to_vec();
    test_runtime().block_on(async {
        let leader = cluster.wait_healthy(Duration::from_secs(30)).await.unwrap();
        let client = Client::new(ClientConfig::new(eps.clone())).unwrap();
        let mut acked = Vec::new();
        acked.extend(publish_batches(&client, 40, 10, "p").await);
        cluster.kill(leader);

        let seg = newest_segment(&dir.path().join(format!("node-{leader}")));
        let mut data = std::fs::read(&seg).unwrap();
        let last = last_record_start(&data);
        assert!(data.len() > last + 9, "a last record with a body");
        let mid = last + 8 + (data.len() - last - 8) / 2;
        data[mid] ^= 0x5a; // the checksum no longer matches
        data.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]); // and half a record after it
        std::fs::write(&seg, &data).unwrap();

        acked.extend(publish_batches(&client, 20, 10, "p").await);
        cluster.restart(leader).unwrap();
        cluster.wait_healthy(Duration::from_secs(60)).await.unwrap();
        acked.extend(publish_batches(&client, 10, 10, "p").await);
        let verified = verify_acked(&eps, &acked).await.unwrap();
        assert_eq!(
            verified,
            Verified::default(),
            "nothing lost, duplicated or diverged"
        );
    });
    let log = std::fs::read_to_string(dir.path().join(format!(
        "node-{}.log",
        (1..=3)
            .find(|id| std::fs::read_to_string(dir.path().join(format!("node-{id}.log")))
                .unwrap_or_default()
                .contains("truncating torn log tail"))
            .expect("the restarted node logged the truncation")
    )))
    .unwrap();
    assert!(
        log.contains("truncating torn log tail") && log.contains("bytes"),
        "{log}"
    );
}

/// Root can mount a tmpfs; CI runs as root, so this runs there (as root a failed mount is a
/// test failure, never a skip). Without root it says why it cannot run and passes, unless
/// EVENTSTREAM_REQUIRE_TMPFS=1.
#[test]
fn full_disk_stops_writes_on_that_node_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("node-3");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        let must = root || std::env::var("EVENTSTREAM_REQUIRE_TMPFS").is_ok_and(|v| v == "1");
        assert!(!must, "running as root but could not mount a tmpfs");
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let http = eventstream_testkit::free_ports(1).unwrap()[0];
    // Node 3 (restarted with an HTTP port) has the tmpfs as its data directory.
    let mut cluster = ProcessCluster::start(Path::new(EXE), 3, dir.path(), &[]).unwrap();
    let eps = cluster.endpoints().to_vec();
    let rt = test_runtime();
    rt.block_on(async { cluster.wait_healthy(Duration::from_secs(30)).await.unwrap() });
    cluster
        .restart_with(3, &["--http-port".into(), http.to_string()])
        .unwrap();
    let leader =
        rt.block_on(async { cluster.wait_healthy(Duration::from_secs(30)).await.unwrap() });
    // Fill the tmpfs but for a little room: the next few log writes of node 3 fail.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len.saturating_sub(16 << 10))
        .unwrap();

    let client = Client::new(ClientConfig::new(eps.clone())).unwrap();
    let mut acked = Vec::new();
    let http_addr = format!("127.0.0.1:{http}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status3 = loop {
        acked.extend(rt.block_on(publish_batches(&client, 10, 10, "p")));
        let (code, body) = http_get(&http_addr, "/ready");
        if code == 503 && body.contains("storage failed") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never reported its full disk: {body}"
        );
    };
    assert!(status3.contains("No space left on device"), "{status3}");
    let (_, metrics) = http_get(&http_addr, "/metrics");
    assert!(
        metrics.contains("eventstream_raft_storage_failed 1"),
        "{metrics}"
    );
    let st = rt
        .block_on(eventstream_client::status_of(
            &eps[2],
            Duration::from_secs(5),
        ))
        .unwrap();
    let why = st.storage_failure.expect("the status says why");
    assert!(why.contains("No space left on device"), "{why}");
    // A publish sent to node 3 is refused with the reason.
    let e = raw_publish_error(
        &eps[2],
        Event::new("t", Priority::High, Bytes::from_static(b"x")),
    );
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message.contains("No space left on device"),
        "{}",
        e.message
    );
    // The other two keep committing; node 3 logged why.
    acked.extend(rt.block_on(publish_batches(&client, 10, 10, "p")));
    let log = std::fs::read_to_string(dir.path().join("node-3.log")).unwrap();
    assert!(log.contains("log storage failed"), "{log}");
    let healthy: Vec<String> = (1..=3u64)
        .filter(|&id| id != 3)
        .map(|id| eps[(id - 1) as usize].clone())
        .collect();
    let verified = rt.block_on(verify_acked(&healthy, &acked)).unwrap();
    assert_eq!(verified, Verified::default(), "leader {leader}");
    drop(cluster);
}
