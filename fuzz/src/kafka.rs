//! The Kafka listener's request decoder: requests of every offered API generated with the
//! `kafka-protocol` crate's client-side encoders (produce requests carry record batches in
//! every codec, with keys, headers and `priority` headers), then mutated; each input goes
//! through [`eventstream_kafka::check_request`], the listener's decoding without a node.

use crate::{Outcome, Rng, Target};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Kafka requests as the listener reads them (after the size prefix).
#[derive(Debug)]
pub struct KafkaRequests;

fn topic(rng: &mut Rng) -> TopicName {
    const NAMES: [&str; 5] = ["orders", "a.b-c_d", "", "x", "payments.eu"];
    TopicName(StrBytes::from_static_str(NAMES[rng.below(NAMES.len())]))
}

fn records(rng: &mut Rng) -> Bytes {
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let rs: Vec<Record> = (0..1 + rng.below(4))
        .map(|i| {
            let mut headers = indexmap::IndexMap::new();
            if rng.one_in(2) {
                let p = ["high", "low", "urgent"][rng.below(3)];
                headers.insert(
                    StrBytes::from_static_str("priority"),
                    Some(Bytes::from_static(p.as_bytes())),
                );
            }
            if rng.one_in(2) {
                headers.insert(StrBytes::from_static_str("trace"), None);
            }
            let n = rng.below(64);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: rng.next_u64() as i64 >> 20,
                key: rng.one_in(2).then(|| Bytes::from(rng.bytes(8))),
                value: Some(Bytes::from(rng.bytes(n))),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: codecs[rng.below(codecs.len())],
    };
    RecordBatchEncoder::encode(&mut buf, &rs, &options).expect("records encode");
    buf.freeze()
}

fn encode(key: ApiKey, version: i16, body: &impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut buf, version).expect("request encodes");
    buf.to_vec()
}

fn version(rng: &mut Rng, key: ApiKey) -> i16 {
    let (_, lo, hi) = eventstream_kafka::SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .expect("offered");
    lo + rng.below((hi - lo + 1) as usize) as i16
}

impl Target for KafkaRequests {
    fn name(&self) -> &'static str {
        "kafka-requests"
    }

    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        match rng.below(5) {
            0 => encode(
                ApiKey::ApiVersions,
                version(rng, ApiKey::ApiVersions),
                &ApiVersionsRequest::default(),
            ),
            1 => {
                let topics = (0..rng.below(3))
                    .map(|_| MetadataRequestTopic::default().with_name(Some(topic(rng))))
                    .collect();
                let req = MetadataRequest::default().with_topics(Some(topics));
                encode(ApiKey::Metadata, version(rng, ApiKey::Metadata), &req)
            }
            2 => {
                let data = (0..1 + rng.below(2))
                    .map(|_| {
                        TopicProduceData::default()
                            .with_name(topic(rng))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(records(rng)))])
                    })
                    .collect();
                let req = ProduceRequest::default()
                    .with_acks([-1, 0, 1][rng.below(3)])
                    .with_timeout_ms(1000)
                    .with_topic_data(data);
                encode(ApiKey::Produce, version(rng, ApiKey::Produce), &req)
            }
            3 => {
                let t = FetchTopic::default()
                    .with_topic(topic(rng))
                    .with_partitions(vec![FetchPartition::default()
                        .with_fetch_offset(rng.next_u64() as i64 >> 40)
                        .with_partition_max_bytes(1 << 20)]);
                let req = FetchRequest::default()
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![t]);
                encode(ApiKey::Fetch, version(rng, ApiKey::Fetch), &req)
            }
            _ => {
                let t = ListOffsetsTopic::default()
                    .with_name(topic(rng))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_timestamp([-1, -2, 1_700_000_000_000][rng.below(3)])]);
                let req = ListOffsetsRequest::default().with_topics(vec![t]);
                encode(ApiKey::ListOffsets, version(rng, ApiKey::ListOffsets), &req)
            }
        }
    }

    /// Two allowances. The decompressors allocate their block and window buffers whatever
    /// the input (lz4 frames up to 4 MiB blocks, zstd its window). And the `kafka-protocol`
    /// decoder reserves `count × element size` for an array before decoding an element, the
    /// count read off the wire (an `i32`): up to 2³¹ elements of at most 256 bytes. Such a
    /// reservation is served by [`eventstream_kafka::alloc::Allocator`] (installed here as in
    /// the node binary) as an uncommitted mapping; `tests/kafka_process.rs` shows a node
    /// surviving it. Allocations beyond that, and every panic, are still findings.
    fn fixed_allowance(&self) -> usize {
        (8 << 20) + (i32::MAX as usize) * 256
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        match eventstream_kafka::check_request(Bytes::copy_from_slice(input)) {
            Ok(_) => Outcome::Accepted,
            Err(_) => Outcome::Rejected,
        }
    }
}
