//! The Kafka listener against real Kafka clients nobody here wrote: kcat (librdkafka's CLI)
//! and confluent-kafka (Python, librdkafka inside), on a 3-node in-process cluster whose
//! members advertise their Kafka addresses. Also: bad requests close only their connection,
//! a producer follows a leader change without a restart, and an idempotent producer's
//! sequence gaps are refused by every leader.
//!
//! kcat and confluent-kafka come from `scripts/ensure-tools.sh`; outside CI a missing tool
//! skips the test that needs it, loudly; with `CI=true` it fails.

use bytes::{BufMut, BytesMut};
use eventstream_core::{Engine, Event, Priority};
use eventstream_kafka::{KafkaCounters, KafkaOptions, SaslUsers};
use eventstream_node::LocalCluster;
use eventstream_testkit::Pki;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

struct Cluster {
    nodes: LocalCluster,
    kafka: Vec<SocketAddr>,
    counters: Vec<Arc<KafkaCounters>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        Self::start_with(n, None, None)
    }

    /// `n` nodes; with `pki`, every node and its Kafka listener use TLS with the PKI's `node`
    /// certificate; with `sasl`, Kafka clients must authenticate as one of its users.
    fn start_with(n: usize, pki: Option<&Pki>, sasl: Option<Arc<SaslUsers>>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let kafka: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let nodes = LocalCluster::start(
            n,
            dir.path(),
            |c| {
                for (i, p) in c.peers.iter_mut().enumerate() {
                    p.push_str(&format!("+{}", kafka[i]));
                }
                if let Some(pki) = pki {
                    c.tls.cert = Some(pki.path("node.pem"));
                    c.tls.key = Some(pki.path("node.key"));
                    c.tls.ca = Some(pki.path("ca.pem"));
                    c.kafka.tls = true;
                }
            },
            |_| Engine::builder(),
        )
        .unwrap();
        let mut counters = Vec::new();
        for (node, l) in nodes.nodes.iter().flatten().zip(listeners) {
            l.set_nonblocking(true).unwrap();
            let rt = node.runtime_handle();
            let l = {
                let _g = rt.enter();
                tokio::net::TcpListener::from_std(l).unwrap()
            };
            let c = Arc::new(KafkaCounters::default());
            counters.push(c.clone());
            let opts = KafkaOptions {
                max_request_bytes: 1 << 20,
                tls: node.tls(),
                sasl: sasl.clone(),
                ..KafkaOptions::default()
            };
            let coordinator = eventstream_kafka::Coordinator::default();
            let shown = coordinator.clone();
            node.metrics()
                .attach_group_members(move || shown.memberships());
            rt.spawn(eventstream_kafka::serve(
                l,
                node.gateway(),
                opts,
                c,
                coordinator,
            ));
        }
        nodes
            .wait_for_leader(Duration::from_secs(15))
            .expect("a leader");
        Cluster {
            nodes,
            kafka,
            counters,
            _dir: dir,
        }
    }

    fn bootstrap(&self) -> String {
        self.kafka
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Stops the leader and waits for another: (old leader, new leader, the survivors'
    /// Kafka bootstrap list, whose metadata names the new leader).
    fn stop_leader(&mut self) -> (u64, u64, String) {
        let old = self.nodes.leader().unwrap();
        self.nodes.stop_node(old);
        let new = loop {
            match self.nodes.wait_for_leader(Duration::from_secs(15)) {
                Some(l) if l != old => break l,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let survivors: Vec<String> = self
            .kafka
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 + 1 != old)
            .map(|(_, a)| a.to_string())
            .collect();
        (old, new, survivors.join(","))
    }

    /// A follower's Kafka address: clients must find the leader from its metadata.
    fn follower_kafka(&self) -> String {
        let leader = self.nodes.leader().expect("leader");
        let i = (0..self.kafka.len())
            .find(|i| *i as u64 + 1 != leader)
            .unwrap();
        self.kafka[i].to_string()
    }
}

/// `name` on PATH; `None` (skip) outside CI when missing, a failure with `CI=true`.
fn require(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "`{name}` is not installed and CI=true: scripts/ensure-tools.sh must install it"
        );
        eprintln!(
            "\n!!!!!!!! SKIPPED: `{name}` is not on PATH (scripts/ensure-tools.sh) !!!!!!!!\n"
        );
    }
    found
}

fn run(cmd: &mut Command, stdin: &[u8]) -> String {
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// Publishes `n` events of `topic` through the native gateway of the leader (other topics'
/// events between a Kafka topic's offsets).
fn publish_native(c: &Cluster, topic: &str, n: usize) -> Vec<u64> {
    let leader = c.nodes.leader().unwrap();
    let node = c.nodes.nodes[(leader - 1) as usize].as_ref().unwrap();
    let gw = node.gateway();
    node.runtime_handle().block_on(async move {
        let p = gw.producer();
        let events = (0..n)
            .map(|i| Event::new(topic, Priority::Low, format!("native {i}")))
            .collect();
        p.publish(events).await.expect("native publish")
    })
}

#[test]
fn kcat_produces_and_consumes_keys_headers_and_offsets_with_gaps() {
    let Some(kcat) = require("kcat") else { return };
    let c = Cluster::start(3);
    let follower = c.follower_kafka();
    publish_native(&c, "other", 5);
    run(
        Command::new(&kcat).args([
            "-P", "-b", &follower, "-t", "orders", "-K:", "-H", "trace=t1",
        ]),
        b"k1:first\nk2:second\n",
    );
    let gap = publish_native(&c, "other", 5);
    run(
        Command::new(&kcat).args([
            "-P",
            "-b",
            &follower,
            "-t",
            "orders",
            "-K:",
            "-H",
            "priority=critical",
        ]),
        b"k3:third\n",
    );
    let out = run(
        Command::new(&kcat).args([
            "-C",
            "-b",
            &c.bootstrap(),
            "-t",
            "orders",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%o|%k|%s|%h\n",
        ]),
        b"",
    );
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let offsets: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(offsets[1], offsets[0] + 1, "{out}");
    assert!(
        offsets[2] > *gap.last().unwrap(),
        "the native events sit between: {out}"
    );
    assert_eq!(rows[0][1..], ["k1", "first", "trace=t1"], "{out}");
    assert_eq!(rows[2][1..], ["k3", "third", "priority=critical"], "{out}");
    // The native subscriber side sees the same events with their keys.
    let leader = c.nodes.leader().unwrap();
    let gw = c.nodes.nodes[(leader - 1) as usize]
        .as_ref()
        .unwrap()
        .gateway();
    let read = c.nodes.nodes[(leader - 1) as usize]
        .as_ref()
        .unwrap()
        .runtime_handle()
        .block_on(async move { gw.read_topic("orders", 0, 100, 1 << 20).await.unwrap() });
    let keys: Vec<&[u8]> = read
        .events
        .iter()
        .map(|(_, e)| &e.key().unwrap()[..])
        .collect();
    assert_eq!(keys, [b"k1", b"k2", b"k3"]);
    assert_eq!(read.events[2].1.priority, Priority::Critical);
    // Metadata lists every broker and the topic.
    let meta = run(
        Command::new(&kcat).args(["-L", "-b", &follower, "-t", "orders"]),
        b"",
    );
    assert!(meta.contains("3 brokers"), "{meta}");
    assert!(meta.contains(&format!("leader {leader},")), "{meta}");
    let produced: u64 = c
        .counters
        .iter()
        .map(|x| x.produced_events.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(produced, 3);
    c.nodes.shutdown();
}

/// Runs `tests/confluent_group.py` with `args`; its JSON line.
fn group_script(python: &std::path::Path, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent_group.py");
    let out = run(Command::new(python).arg(script).args(args), b"");
    let line = out.trim().lines().last().unwrap_or_default().to_owned();
    eprintln!("confluent_group.py {}: {line}", args[0]);
    line
}

/// The integer after `"key": ` in a JSON line.
fn json_int(line: &str, key: &str) -> i64 {
    let at = line
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("{key} not in {line}"));
    line[at + key.len() + 4..]
        .split(|c: char| c != '-' && !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

#[test]
fn confluent_kafka_produces_every_codec_and_reads_it_all_back() {
    let Some(python) = eventstream_testkit::confluent_kafka_python() else {
        return;
    };
    let c = Cluster::start(3);
    publish_native(&c, "noise", 100);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent_client.py");
    let out = run(
        Command::new(&python)
            .arg(script)
            .arg(c.follower_kafka())
            .arg("events"),
        b"",
    );
    let v: Vec<&str> = out.trim().lines().collect();
    assert!(
        v.last().unwrap().contains("\"acked\": 250, \"read\": 250"),
        "{out}"
    );
    let unacked: u64 = c
        .counters
        .iter()
        .map(|x| {
            x.unacknowledged_events
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    assert_eq!(unacked, 20, "acks=0 records are counted");
    c.nodes.shutdown();
}

/// `i32 size | api_key | version | correlation_id | client_id(null)` + `body`.
fn raw_request(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32((2 + 2 + 4 + 2 + body.len()) as i32);
    b.put_i16(api_key);
    b.put_i16(version);
    b.put_i32(42);
    b.put_i16(-1);
    b.put_slice(body);
    b.to_vec()
}

/// True when the server closed `s` (EOF) within a few seconds.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_bad_request_closes_only_its_connection_and_is_counted() {
    let c = Cluster::start(1);
    let addr = c.kafka[0];
    let mut good = TcpStream::connect(addr).unwrap();
    // Oversized (over the 1 MiB limit), a negative size, garbage, an API not offered.
    let bad: Vec<Vec<u8>> = vec![
        (2u32 << 20).to_be_bytes().to_vec(),
        (-5i32).to_be_bytes().to_vec(),
        [&8i32.to_be_bytes()[..], b"\xff\xff\xff\xff\x00\x00\x00\x00"].concat(),
        raw_request(1, 13, &[0; 40]), // Fetch v13 (topic ids): not offered
    ];
    for b in &bad {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b).unwrap();
        assert!(closed(&mut s), "{b:?} did not close the connection");
    }
    // ApiVersions v0 on the connection opened before: still answered.
    good.write_all(&raw_request(18, 0, &[])).unwrap();
    let mut len = [0u8; 4];
    good.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    good.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[..4], &42i32.to_be_bytes(), "correlation id");
    assert_eq!(&resp[4..6], &[0, 0], "no error");
    // An ApiVersions newer than offered gets UNSUPPORTED_VERSION (35) and the list.
    good.write_all(&raw_request(18, 9, &[])).unwrap();
    good.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    good.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[4..6], &35i16.to_be_bytes());
    let errors = c.counters[0]
        .protocol_errors
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(errors, bad.len() as u64);
    c.nodes.shutdown();
}

#[test]
fn a_kafka_producer_follows_a_leader_change() {
    let Some(kcat) = require("kcat") else { return };
    let mut c = Cluster::start(3);
    let all = c.bootstrap();
    // Idempotent producers: a batch retried across an election (the answer lost with the
    // old leader) is stored once, so the topic holds exactly what was sent.
    run(
        Command::new(&kcat).args([
            "-P",
            "-b",
            &all,
            "-t",
            "moves",
            "-X",
            "enable.idempotence=true",
        ]),
        b"before\n",
    );
    // Bootstrap from the survivors: their metadata names the new leader.
    let (_, new, survivors) = c.stop_leader();
    run(
        Command::new(&kcat).args([
            "-P",
            "-b",
            &survivors,
            "-t",
            "moves",
            "-X",
            "message.timeout.ms=20000",
            "-X",
            "enable.idempotence=true",
        ]),
        b"after\n",
    );
    let out = run(
        Command::new(&kcat).args([
            "-C",
            "-b",
            &survivors,
            "-t",
            "moves",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ]),
        b"",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["before", "after"],
        "new leader {new}"
    );
    c.nodes.shutdown();
}

/// A record of `value` (with `producer`: an idempotent producer's `(id, epoch, sequence)`).
fn record(value: Vec<u8>, producer: Option<(i64, i16, i32)>) -> Record {
    let (producer_id, producer_epoch, sequence) = producer.unwrap_or((-1, -1, -1));
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 0,
        key: None,
        value: Some(value.into()),
        headers: Default::default(),
    }
}

/// A Produce v9 request (`acks=all`) with one record batch of `records` for `topic`/0.
fn produce_request(topic: &'static str, records: &[Record], compression: Compression) -> Vec<u8> {
    let mut batch = BytesMut::new();
    let opts = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut batch, records, &opts).unwrap();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.freeze()))])]);
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(9)
        .with_correlation_id(5)
        .encode(&mut body, ApiKey::Produce.request_header_version(9))
        .unwrap();
    req.encode(&mut body, 9).unwrap();
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&body);
    framed
}

/// Reads one produce answer: the partition's (error code, base offset).
fn produce_answer(s: &mut TcpStream) -> (i16, i64) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    let mut resp = bytes::Bytes::from(resp);
    ResponseHeader::decode(&mut resp, ApiKey::Produce.response_header_version(9)).unwrap();
    let r = ProduceResponse::decode(&mut resp, 9).unwrap();
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn produce_once(s: &mut TcpStream, req: Vec<u8>) -> (i16, i64) {
    s.write_all(&req).unwrap();
    produce_answer(s)
}

#[test]
fn a_compressed_batch_expanding_past_the_budget_is_refused_and_the_connection_stays() {
    let c = Cluster::start(1); // max_request_bytes 1 MiB: 4 MiB may be decompressed per request
    let produce =
        |value: Vec<u8>| produce_request("bombs", &[record(value, None)], Compression::Zstd);
    let mut s = TcpStream::connect(c.kafka[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // 64 MiB of zeros compress to a few KB.
    let bomb = produce(vec![0; 64 << 20]);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let (code, _) = produce_once(&mut s, bomb);
    assert_eq!(code, 2, "CORRUPT_MESSAGE");
    // The same connection still produces a batch within the budget.
    let (code, offset) = produce_once(&mut s, produce(vec![7; 100_000]));
    assert_eq!((code, offset), (0, 0));
    c.nodes.shutdown();
}

/// Kafka error codes the sequence test expects.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

#[test]
fn an_idempotent_producers_sequence_gap_is_refused_by_every_leader() {
    let mut c = Cluster::start(3);
    // Producer 4242's batch of `n` records from sequence `first` in `epoch`.
    let batch = |epoch: i16, first: i32, n: i32| {
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let mut r = record(vec![b'x'; 20], Some((4242, epoch, first + i)));
                r.offset = i64::from(i);
                r
            })
            .collect();
        produce_request("sequenced", &records, Compression::None)
    };
    let connect = |c: &Cluster| {
        let leader = c.nodes.wait_for_leader(Duration::from_secs(15)).unwrap();
        let s = TcpStream::connect(c.kafka[(leader - 1) as usize]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    let mut s = connect(&c);
    assert_eq!(produce_once(&mut s, batch(0, 0, 5)).0, 0);
    let (code, second) = produce_once(&mut s, batch(0, 5, 5));
    assert_eq!(code, 0);
    // A gap: sequence 11 where 10 comes next.
    let (code, _) = produce_once(&mut s, batch(0, 11, 5));
    assert_eq!(code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    // A retry of a stored batch is answered with its first offsets, stored once.
    assert_eq!(produce_once(&mut s, batch(0, 5, 5)), (0, second));
    // Pipelined batches are stored in the order sent: every one follows the one before.
    let mut pipelined = Vec::new();
    for k in 0..4 {
        pipelined.extend(batch(0, 10 + 3 * k, 3));
    }
    s.write_all(&pipelined).unwrap();
    let answers: Vec<(i16, i64)> = (0..4).map(|_| produce_answer(&mut s)).collect();
    assert!(answers.iter().all(|a| a.0 == 0), "{answers:?}");
    assert!(answers.windows(2).all(|w| w[0].1 < w[1].1), "{answers:?}");
    // A new epoch starts at 0 and fences the old one.
    assert_eq!(produce_once(&mut s, batch(1, 0, 2)).0, 0);
    assert_eq!(
        produce_once(&mut s, batch(0, 22, 2)).0,
        INVALID_PRODUCER_EPOCH
    );
    // The sequences are replicated: the next leader refuses the same gap.
    c.stop_leader();
    let mut s = connect(&c);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let code = loop {
        // NOT_LEADER_OR_FOLLOWER (6) and LEADER_NOT_AVAILABLE (5) until it is ready.
        let (code, _) = produce_once(&mut s, batch(1, 3, 2));
        if !matches!(code, 5 | 6) || std::time::Instant::now() > deadline {
            break code;
        }
        std::thread::sleep(Duration::from_millis(100));
        s = connect(&c);
    };
    assert_eq!(code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(produce_once(&mut s, batch(1, 2, 2)).0, 0);
    // Nothing stored twice, nothing refused stored: 5 + 5 + 12 + 2 + 2 records.
    let leader = c.nodes.leader().unwrap();
    let node = c.nodes.nodes[(leader - 1) as usize].as_ref().unwrap();
    let gw = node.gateway();
    let read = node
        .runtime_handle()
        .block_on(async move { gw.read_topic("sequenced", 0, 1000, 1 << 20).await })
        .unwrap();
    assert_eq!(read.events.len(), 26);
    c.nodes.shutdown();
}

#[test]
fn a_consumer_group_of_two_shares_the_topic_and_reads_every_record_once() {
    let Some(python) = eventstream_testkit::confluent_kafka_python() else {
        return;
    };
    let c = Cluster::start(3);
    let boot = c.bootstrap();
    publish_native(&c, "noise", 50);
    group_script(&python, &["produce", &boot, "shared", "400"]);
    publish_native(&c, "noise", 50);
    let out = group_script(&python, &["share", &boot, "shared", "readers", "400"]);
    assert_eq!(json_int(&out, "read"), 400, "{out}");
    assert_eq!(json_int(&out, "members"), 2, "{out}");
    assert!(
        json_int(&out, "by_a") >= 200 && json_int(&out, "by_b") > 0,
        "{out}"
    );
    // The group's commits are replicated: every node's table holds the last one.
    let last = c.nodes.nodes.iter().flatten().map(|n| {
        let committed = n.gateway().committed_offsets("readers");
        committed
            .iter()
            .find(|o| o.topic == "shared")
            .map(|o| o.offset)
    });
    let last: Vec<_> = last.collect();
    assert!(last[0].is_some(), "{last:?}");
    assert!(last.iter().all(|l| *l == last[0]), "{last:?}");
    c.nodes.shutdown();
}

#[test]
fn a_consumer_resumes_at_its_committed_offset_after_the_leader_is_killed() {
    let Some(python) = eventstream_testkit::confluent_kafka_python() else {
        return;
    };
    let mut c = Cluster::start(3);
    let boot = c.bootstrap();
    group_script(&python, &["produce", &boot, "resumed", "100"]);
    let out = group_script(&python, &["commit", &boot, "resumed", "billing", "30"]);
    let committed = json_int(&out, "committed");
    let (_, new, survivors) = c.stop_leader();
    let out = group_script(&python, &["resume", &survivors, "resumed", "billing"]);
    assert_eq!(
        json_int(&out, "committed"),
        committed,
        "new leader {new}: {out}"
    );
    assert_eq!(
        json_int(&out, "first"),
        committed,
        "new leader {new}: {out}"
    );
    c.nodes.shutdown();
}

#[test]
fn clients_cannot_write_the_reserved_offsets_topic() {
    let Some(kcat) = require("kcat") else { return };
    let c = Cluster::start(3);
    let mut cmd = Command::new(&kcat);
    cmd.args(["-P", "-b", &c.bootstrap(), "-t", "__consumer_offsets"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"forged\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() || stderr.contains("nvalid"),
        "kcat wrote the reserved topic: {stderr}"
    );
    // Nor through the native gateway.
    let leader = c.nodes.leader().unwrap();
    let node = c.nodes.nodes[(leader - 1) as usize].as_ref().unwrap();
    let gw = node.gateway();
    let refused = node.runtime_handle().block_on(async move {
        gw.producer()
            .publish(vec![Event::new("__consumer_offsets", Priority::High, "{}")])
            .await
    });
    assert!(refused.unwrap_err().message.contains("reserved"));
    c.nodes.shutdown();
}

#[test]
fn a_tls_listener_serves_tls_clients_and_refuses_plaintext() {
    let Some(python) = eventstream_testkit::confluent_kafka_python() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::generate(certs.path());
    let c = Cluster::start_with(3, Some(&pki), None);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent_tls.py");
    let ca = pki.path("ca.pem");
    let out = run(
        Command::new(&python)
            .arg(script)
            .arg(c.bootstrap())
            .arg(&ca)
            .arg("secrets"),
        b"",
    );
    assert!(
        out.contains("\"tls_acked\": 20, \"tls_read\": 20, \"plaintext_delivered\": 0"),
        "{out}"
    );
    // The plaintext attempts failed their handshakes and were counted.
    let refused: u64 = c
        .counters
        .iter()
        .map(|x| x.protocol_errors.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(
        refused > 0,
        "plaintext connections counted as protocol errors"
    );
    c.nodes.shutdown();
}

#[test]
fn sasl_scram_and_plain_admit_the_right_password_only() {
    let Some(python) = eventstream_testkit::confluent_kafka_python() else {
        return;
    };
    let users = SaslUsers::parse("producer:correct horse battery staple\n").unwrap();
    let c = Cluster::start_with(3, None, Some(Arc::new(users)));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confluent_sasl.py");
    let out = run(
        Command::new(&python).arg(script).args([
            &c.bootstrap(),
            "producer",
            "correct horse battery staple",
            "guarded",
        ]),
        b"",
    );
    assert!(
        out.contains("\"SCRAM-SHA-256\": 5, \"PLAIN\": 5, \"wrong_password\": 0, \"no_sasl\": 0"),
        "{out}"
    );
    // Only the authenticated producers' records were stored.
    let leader = c.nodes.leader().unwrap();
    let node = c.nodes.nodes[(leader - 1) as usize].as_ref().unwrap();
    let gw = node.gateway();
    let read = node
        .runtime_handle()
        .block_on(async move { gw.read_topic("guarded", 0, 1000, 1 << 20).await })
        .unwrap();
    assert_eq!(read.events.len(), 10);
    c.nodes.shutdown();
}
