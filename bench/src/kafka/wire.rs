//! The wire client: a Kafka load client on the listener's own codec (`kafka-protocol`),
//! pipelining ProduceRequests of exactly `batch` records on each of `connections`
//! connections to the partition leader.
//!
//! Each request carries one record batch v2 (`acks=-1`, the highest Produce version both
//! sides know), encoded per request as a producer encodes each batch (uncompressed or lz4),
//! without a producer id (not idempotent). Answers are read in order; a request's latency is
//! from its send to its answer; a partition answer with an error code is a failed request.

use super::{KafkaCompression, Load, Plan};
use crate::error::BenchError;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The highest Produce version the load client speaks (the last one with topic names).
const MAX_PRODUCE_VERSION: i16 = 9;

/// The lowest Produce version that carries record batches v2.
const MIN_PRODUCE_VERSION: i16 = 3;

/// How long the load client waits for one answer before it gives the connection up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The Kafka run: finds the leader and the Produce version through `bootstrap`, then
/// `connections` connections pipelining produce requests. The load and the Produce version.
pub(super) async fn load(
    plan: &Arc<Plan>,
    bootstrap: SocketAddr,
) -> Result<(Load, i16), BenchError> {
    let (leader, version) = find_leader(bootstrap, &plan.topic).await?;
    let mut socks = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let s = TcpStream::connect(&leader)
            .await
            .map_err(|source| BenchError::Network {
                peer: leader.clone(),
                source,
            })?;
        let _ = s.set_nodelay(true);
        socks.push(s);
    }
    let start = Instant::now();
    let tasks: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(kafka_connection(s, plan.clone(), version, i as i32)))
        .collect();
    let mut all = Load::of_batches();
    for t in tasks {
        match t.await {
            Ok(l) => all.merge(l),
            Err(e) => all.fail(1, || format!("connection task: {e}")),
        }
    }
    all.seconds = start.elapsed().as_secs_f64();
    Ok((all, version))
}

/// A request sent and not yet answered; its permit frees a place in the pipeline once
/// answered.
struct Sent {
    correlation_id: i32,
    events: usize,
    at: Instant,
    _slot: OwnedSemaphorePermit,
}

/// One Kafka connection: a writer task sends requests while fewer than `in_flight` are
/// unanswered; this task reads the answers in order.
async fn kafka_connection(sock: TcpStream, plan: Arc<Plan>, version: i16, conn: i32) -> Load {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(64 << 10, rd);
    let slots = Arc::new(Semaphore::new(plan.in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<Sent>();
    let writer = {
        let plan = plan.clone();
        tokio::spawn(async move {
            let records = records_of(&plan);
            // Correlation ids: distinct per connection, for the logs of both sides.
            let mut correlation_id = conn.wrapping_mul(1 << 24);
            let mut unsent: (u64, Option<String>) = (0, None);
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let Some(n) = plan.take() else { break };
                correlation_id = correlation_id.wrapping_add(1);
                let req = match produce_request(&plan, &records[..n], version, correlation_id) {
                    Ok(r) => r,
                    Err(e) => {
                        unsent = (1, Some(e.to_string()));
                        break;
                    }
                };
                let sent = Sent {
                    correlation_id,
                    events: n,
                    at: Instant::now(),
                    _slot: slot,
                };
                if tx.send(sent).is_err() {
                    unsent = (1, None);
                    break;
                }
                if let Err(e) = wr.write_all(&req).await {
                    // The reader finds the connection broken and fails what is queued.
                    unsent.1 = Some(format!("writing a produce request: {e}"));
                    break;
                }
            }
            let _ = wr.shutdown().await;
            unsent
        })
    };
    let mut load = Load::of_batches();
    while let Some(sent) = rx.recv().await {
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, read_answer(&mut rd)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                load.fail(1, || format!("reading a produce answer: {e}"));
                break;
            }
            Err(_) => {
                load.fail(1, || {
                    format!("no produce answer in {} s", ANSWER_TIMEOUT.as_secs())
                });
                break;
            }
        };
        load.hist
            .saturating_record(sent.at.elapsed().as_nanos() as u64);
        match produce_outcome(answer, version, sent.correlation_id) {
            Ok(base) => {
                load.acked += sent.events as u64;
                load.requests += 1;
                load.offsets.push(base);
            }
            Err(why) => load.fail(1, || why),
        }
    }
    // After a broken connection: what was sent and never answered failed too.
    rx.close();
    while let Ok(_unanswered) = rx.try_recv() {
        load.fail(1, || "connection lost".into());
    }
    match writer.await {
        Ok((n, why)) => {
            load.fail(n, || why.clone().unwrap_or_else(|| "not sent".into()));
            if let (None, Some(w)) = (&load.first_error, why) {
                load.first_error = Some(w);
            }
        }
        Err(e) => load.fail(1, || format!("writer task: {e}")),
    }
    load
}

/// The records of a full batch, built once per connection (no producer id, so not
/// idempotent: `sequence` is `offset - 1`, which makes the batch's base sequence -1 as a
/// plain producer sends it).
fn records_of(plan: &Plan) -> Vec<Record> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (0..plan.batch)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: None,
            value: Some(plan.payload.clone()),
            headers: Default::default(),
        })
        .collect()
}

/// One size-prefixed ProduceRequest (`acks=-1`) of one record batch of `records`, encoded
/// now as a producer encodes each batch.
fn produce_request(
    plan: &Plan,
    records: &[Record],
    version: i16,
    correlation_id: i32,
) -> Result<Bytes, BenchError> {
    let mut batch = BytesMut::with_capacity(records.len() * (plan.payload.len() + 16) + 64);
    RecordBatchEncoder::encode(
        &mut batch,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec(plan.compression),
        },
    )
    .map_err(codec_error("encoding a record batch"))?;
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(plan.topic.clone())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.freeze()))])]);
    request(ApiKey::Produce, version, correlation_id, &req)
}

/// The base offset of a produce answer with no error, or what is wrong with it.
fn produce_outcome(answer: Bytes, version: i16, correlation_id: i32) -> Result<u64, String> {
    let r: ProduceResponse = decode_answer(answer, ApiKey::Produce, version, correlation_id)
        .map_err(|e| e.to_string())?;
    let [topic] = &r.responses[..] else {
        return Err(format!("{} topics in a produce answer", r.responses.len()));
    };
    let [p] = &topic.partition_responses[..] else {
        return Err(format!(
            "{} partitions in a produce answer",
            topic.partition_responses.len()
        ));
    };
    if p.error_code != 0 {
        let name = kafka_protocol::ResponseError::try_from_code(p.error_code)
            .map_or_else(|| "unknown".to_owned(), |e| format!("{e:?}"));
        return Err(format!(
            "produce answered error {} ({name}): {}",
            p.error_code,
            p.error_message.as_deref().unwrap_or("")
        ));
    }
    u64::try_from(p.base_offset).map_err(|_| format!("base offset {}", p.base_offset))
}

/// The partition leader's Kafka address for `topic` and the Produce version to use, asked of
/// `bootstrap` (ApiVersions, then Metadata until a leader is named, at most 10 s).
async fn find_leader(bootstrap: SocketAddr, topic: &str) -> Result<(String, i16), BenchError> {
    let peer = bootstrap.to_string();
    let net = |source| BenchError::Network {
        peer: peer.clone(),
        source,
    };
    let mut s = TcpStream::connect(bootstrap).await.map_err(net)?;
    let v = 3;
    s.write_all(&request(
        ApiKey::ApiVersions,
        v,
        1,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("eventstream-bench"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION"))),
    )?)
    .await
    .map_err(net)?;
    let versions: ApiVersionsResponse = decode_answer(
        read_answer(&mut s).await.map_err(net)?,
        ApiKey::ApiVersions,
        v,
        1,
    )?;
    let offered = |key: ApiKey| {
        versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    let (lo, hi) = offered(ApiKey::Produce)
        .ok_or_else(|| BenchError::Failed("the listener offers no Produce".into()))?;
    let produce = hi.min(MAX_PRODUCE_VERSION);
    if produce < lo.max(MIN_PRODUCE_VERSION) {
        return Err(BenchError::Failed(format!(
            "the listener offers Produce v{lo}..=v{hi}; this client speaks v{MIN_PRODUCE_VERSION}..=v{MAX_PRODUCE_VERSION}"
        )));
    }
    let (_, mhi) = offered(ApiKey::Metadata)
        .ok_or_else(|| BenchError::Failed("the listener offers no Metadata".into()))?;
    let mv = mhi.min(12);
    let deadline = Instant::now() + Duration::from_secs(10);
    for correlation_id in 2.. {
        let req =
            MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
        s.write_all(&request(ApiKey::Metadata, mv, correlation_id, &req)?)
            .await
            .map_err(net)?;
        let m: MetadataResponse = decode_answer(
            read_answer(&mut s).await.map_err(net)?,
            ApiKey::Metadata,
            mv,
            correlation_id,
        )?;
        let leader = m
            .topics
            .first()
            .and_then(|t| t.partitions.iter().find(|p| p.partition_index == 0))
            .filter(|p| p.error_code == 0)
            .map(|p| p.leader_id);
        if let Some(b) = leader.and_then(|id| m.brokers.iter().find(|b| b.node_id == id)) {
            return Ok((format!("{}:{}", b.host.as_str(), b.port), produce));
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Timeout(format!(
        "no partition leader of `{topic}` in the metadata of {bootstrap} within 10 s"
    )))
}

/// `i32 size | header | body`.
fn request(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> Result<Bytes, BenchError> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("eventstream-bench")))
        .encode(&mut buf, key.request_header_version(version))
        .map_err(codec_error("encoding a request header"))?;
    body.encode(&mut buf, version)
        .map_err(codec_error("encoding a request"))?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| BenchError::option("batch", "a produce request over 2 GiB"))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// One answer's bytes after its size prefix.
async fn read_answer(rd: &mut (impl tokio::io::AsyncRead + Unpin)) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await?;
    let n = i32::from_be_bytes(len);
    let n = usize::try_from(n).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("answer size {n}"))
    })?;
    let mut body = BytesMut::zeroed(n);
    rd.read_exact(&mut body).await?;
    Ok(body.freeze())
}

/// Decodes an answer's header (checking its correlation id) and body.
fn decode_answer<T: Decodable>(
    mut answer: Bytes,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<T, BenchError> {
    // ApiVersions answers always carry the oldest header (KIP-511).
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let h = ResponseHeader::decode(&mut answer, header_version)
        .map_err(codec_error("decoding an answer header"))?;
    if h.correlation_id != correlation_id {
        return Err(BenchError::Failed(format!(
            "{key:?} answer with correlation id {}, expected {correlation_id}",
            h.correlation_id
        )));
    }
    T::decode(&mut answer, version).map_err(codec_error("decoding an answer"))
}

fn codec(c: KafkaCompression) -> Compression {
    match c {
        KafkaCompression::None => Compression::None,
        KafkaCompression::Lz4 => Compression::Lz4,
    }
}

fn codec_error<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> BenchError {
    move |e| BenchError::Failed(format!("{what}: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::KafkaBenchOptions;

    #[test]
    fn a_produce_request_decodes_as_the_listener_decodes_it() {
        for compression in [KafkaCompression::None, KafkaCompression::Lz4] {
            let a = KafkaBenchOptions {
                batch: 5,
                payload_bytes: 10,
                compression,
                ..KafkaBenchOptions::default()
            };
            let p = Plan::new(&a, "orders");
            let records = records_of(&p);
            let req = produce_request(&p, &records[..3], 9, 7).unwrap();
            assert_eq!(
                eventstream_kafka::check_request(req.slice(4..)).unwrap(),
                3,
                "{compression}"
            );
        }
    }
}
