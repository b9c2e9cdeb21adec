//! Node processes' Kafka listeners.
//!
//! * Hostile requests: a few bytes that declare an array of two billion elements (the
//!   Kafka-protocol decoder reserves their capacity before decoding one, more than the
//!   machine's memory) close that connection, and the node keeps serving Kafka clients.
//!   Without the binary's allocator (src/alloc.rs) the reservation aborts the process.
//! * An idempotent producer (confluent-kafka, `enable.idempotence=true`, `acks=all`) keeps
//!   producing while the leader is killed with SIGKILL; a consumer group of two then reads
//!   every acknowledged record exactly once, none stored twice.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_eventstream");

/// `i32 size | api_key | version | correlation_id | client_id (null) | body`.
fn request(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((10 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&api_key.to_be_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b.extend_from_slice(&7i32.to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn connect(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("kafka listener {addr} never came up: {e}"),
        }
    }
}

/// Sends ApiVersions v0 and reads its answer: the listener is serving.
fn api_versions_answered(addr: &str) -> bool {
    let mut s = connect(addr);
    s.write_all(&request(18, 0, &[])).unwrap();
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).is_ok() && body[..4] == 7i32.to_be_bytes() && body[4..6] == [0, 0]
}

/// The body of `GET path` (HTTP/1.0, read to the end).
fn get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_request_declaring_billions_of_elements_closes_its_connection_not_the_node() {
    let ports = eventstream_testkit::free_ports(3).unwrap();
    let (node, kafka) = (ports.addrs()[0].clone(), ports.addrs()[1].clone());
    let http = ports[2];
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(EXE)
        .args(["node", "--id", "1", "--peers", &format!("1={node}+{kafka}")])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--http-port", &http.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(api_versions_answered(&kafka), "the listener answers first");
    // Metadata v0 (topics: i32 count) and Produce v3 (topic_data: i32 count, after a null
    // transactional id, acks and timeout), each declaring i32::MAX elements.
    let hostile = [
        request(3, 0, &i32::MAX.to_be_bytes()),
        request(
            0,
            3,
            &[
                &(-1i16).to_be_bytes()[..],
                &1i16.to_be_bytes(),
                &1000i32.to_be_bytes(),
                &i32::MAX.to_be_bytes(),
            ]
            .concat(),
        ),
    ];
    for h in &hostile {
        let mut s = connect(&kafka);
        s.write_all(h).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the connection is closed without an answer");
        assert!(child.try_wait().unwrap().is_none(), "the node process died");
    }
    assert!(
        api_versions_answered(&kafka),
        "the node still serves Kafka clients"
    );
    // Counted on /metrics (the status is sampled periodically: one sample may show the two
    // errors before the last ApiVersions, so wait for both counts).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = get(&format!("127.0.0.1:{http}"), "/metrics");
        let both = m.contains("eventstream_kafka_protocol_errors_total 2")
            && m.contains("eventstream_kafka_requests_total 2");
        if both || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains("eventstream_kafka_protocol_errors_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eventstream_kafka_requests_total 2"),
        "two ApiVersions decoded: {metrics}"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("kafka connection closed"), "{log}");
}

const GROUP_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/kafka/tests/confluent_group.py"
);

/// The node whose /metrics says it leads.
fn leader(http: &[String]) -> Option<usize> {
    http.iter()
        .position(|h| get(h, "/metrics").contains("eventstream_raft_is_leader 1"))
}

#[test]
fn an_idempotent_producer_survives_a_leader_sigkill_and_a_group_reads_every_record_once() {
    let Some(python) = eventstream_testkit::confluent_kafka_python() else {
        return;
    };
    const RECORDS: usize = 100_000;
    let ports = eventstream_testkit::free_ports(9).unwrap();
    let a = ports.addrs();
    let (peer, kafka, http) = (&a[0..3], &a[3..6], &a[6..9]);
    let peers = (0..3)
        .map(|i| format!("{}={}+{}", i + 1, peer[i], kafka[i]))
        .collect::<Vec<_>>()
        .join(",");
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Nodes(
        (0..3)
            .map(|i| {
                Command::new(EXE)
                    .args(["node", "--id", &(i + 1).to_string(), "--peers", &peers])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("node-{}", i + 1)))
                    .args(["--http-port", &ports[6 + i].to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let old = loop {
        if let Some(l) = leader(http) {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut producer = Command::new(&python)
        .args([GROUP_SCRIPT, "idempotent", &kafka.join(","), "orders"])
        .arg(RECORDS.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the leader once a fifth of the records are acknowledged.
    let mut lines = std::io::BufReader::new(producer.stdout.take().unwrap()).lines();
    let mut last = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("progress 20000") {
            nodes.0[old].kill().unwrap();
            let _ = nodes.0[old].wait();
        }
        last = line;
        if last.starts_with('{') {
            break;
        }
    }
    assert!(producer.wait().unwrap().success(), "{last}");
    assert!(
        last.contains(&format!("\"acked\": {RECORDS}, \"failed\": 0")),
        "every record acknowledged: {last}"
    );
    assert!(
        nodes.0[old].try_wait().unwrap().is_some(),
        "the leader was killed while the producer ran: {last}"
    );
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != old)
        .map(|i| kafka[i].clone())
        .collect();
    let out = Command::new(&python)
        .args([
            GROUP_SCRIPT,
            "read-all",
            &survivors.join(","),
            "orders",
            "readers",
        ])
        .arg(RECORDS.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("\"read\": {RECORDS}, \"twice\": 0")),
        "{stdout}"
    );
    // The group's final commit is replicated: the CLI and the leader's /metrics show it at the
    // topic's end, nothing left to read.
    let survivors_peer: Vec<String> = (0..3)
        .filter(|i| *i != old)
        .map(|i| peer[i].clone())
        .collect();
    let out = Command::new(EXE)
        .args(["groups", "describe", "readers", "--json", "--endpoints"])
        .arg(survivors_peer.join(","))
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{described}");
    // The topic's offsets have gaps where the producer's sequence state sits (one event per
    // batch), so its end is past the record count; the group committed exactly there.
    let v: serde_json::Value = serde_json::from_str(described.trim()).unwrap();
    let o = &v["offsets"][0];
    assert_eq!(o["topic"], "orders", "{described}");
    assert_eq!(o["committed"], o["end"], "{described}");
    assert_eq!(o["lag"], 0, "{described}");
    let end = o["end"].as_u64().unwrap();
    assert!(
        (RECORDS as u64..RECORDS as u64 + RECORDS as u64 / 10).contains(&end),
        "{described}"
    );
    let lag_zero = "eventstream_kafka_group_lag_offsets{group=\"readers\",topic=\"orders\"} 0";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http.iter().any(|h| get(h, "/metrics").contains(lag_zero)) {
        assert!(
            Instant::now() < deadline,
            "no node's /metrics shows {lag_zero}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Node processes, killed when the test ends, passed or failed (a failed assertion must not
/// leave a cluster running on the machine).
struct Nodes(Vec<std::process::Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &mut self.0 {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}
