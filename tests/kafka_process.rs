//! A node process's Kafka listener against hostile requests: a few bytes that declare an
//! array of two billion elements (the Kafka-protocol decoder reserves their capacity before
//! decoding one, more than the machine's memory) close that connection, and the node keeps
//! serving Kafka clients. Without the binary's allocator (src/alloc.rs) the reservation
//! aborts the process.

use std::io::{Read, Write};
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
    // Counted on /metrics (the status is refreshed every 50 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let m = get(&format!("127.0.0.1:{http}"), "/metrics");
        if m.contains("eventstream_kafka_protocol_errors_total 2") || Instant::now() > deadline {
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
