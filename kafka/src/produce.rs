//! Produce: each partition's record batches become one publish through the node's gateway
//! (the tier rings, raft, the quorum's fsync), answered with the first event's offset once
//! committed. The partitions of one request are published concurrently.
//!
//! `acks=all` and `acks=1` are the same here: a produce is answered only after the quorum
//! commit and fsync (there is no weaker acknowledgement to give). `acks=0` is admitted and
//! not answered, as Kafka does; its events are counted in `unacknowledged_events`.

use crate::api::Client;
use crate::conn::Broker;
use crate::decompress::Budget;
use crate::metadata::valid_topic;
use crate::records;
use eventstream_node::{Producer, Refusal, GROUP_OFFSETS_TOPIC};
use eventstream_proto::frame::ErrorCode;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A produce request's compressed batches may expand to this many times
/// `kafka.max_request_bytes` in all; past it the partition is answered `CORRUPT_MESSAGE`.
pub(crate) const DECOMPRESSION_FACTOR: usize = 4;

/// The Kafka error a refused publish is answered with.
pub(crate) fn kafka_error(code: ErrorCode) -> ResponseError {
    match code {
        // The client refreshes its metadata and sends to the leader.
        ErrorCode::NotLeader | ErrorCode::ShuttingDown => ResponseError::NotLeaderOrFollower,
        ErrorCode::Unavailable => ResponseError::LeaderNotAvailable,
        // Not stored; the client retries.
        ErrorCode::Busy | ErrorCode::Timeout => ResponseError::RequestTimedOut,
        ErrorCode::BadRequest => ResponseError::InvalidRecord,
        ErrorCode::Unauthorized => ResponseError::TopicAuthorizationFailed,
        _ => ResponseError::UnknownServerError,
    }
}

/// One partition's outcome: the first offset, or the error and its message.
type Outcome = Result<u64, (ResponseError, String)>;

pub(crate) async fn answer(
    b: &Arc<Broker>,
    client: &Arc<Client>,
    req: ProduceRequest,
) -> Option<ProduceResponse> {
    let fire_and_forget = req.acks == 0;
    // What all of the request's compressed batches may expand to.
    let budget = Arc::new(Budget::new(
        b.opts
            .max_request_bytes
            .saturating_mul(DECOMPRESSION_FACTOR),
    ));
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = t.name.0.to_string();
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let (b, client, name) = (b.clone(), client.clone(), name.clone());
            let budget = budget.clone();
            let records = p.records.unwrap_or_default();
            let task = tokio::spawn(async move {
                let batch = Batch {
                    topic: &name,
                    partition: p.index,
                    records,
                    budget: &budget,
                };
                publish(&b, &client.producer, batch, fire_and_forget).await
            });
            parts.push((p.index, task));
        }
        topics.push((t.name, parts));
    }
    let mut responses = Vec::with_capacity(topics.len());
    for (name, parts) in topics {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for (index, task) in parts {
            let outcome = task.await.unwrap_or_else(|e| {
                Err((
                    ResponseError::UnknownServerError,
                    format!("produce task: {e}"),
                ))
            });
            if outcome.is_err() {
                b.counters.produce_errors.fetch_add(1, Ordering::Relaxed);
            }
            partition_responses.push(partition_response(index, outcome));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses),
        );
    }
    (!fire_and_forget).then(|| ProduceResponse::default().with_responses(responses))
}

fn partition_response(index: i32, outcome: Outcome) -> PartitionProduceResponse {
    let r = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    match outcome {
        Ok(base) => r.with_base_offset(base as i64),
        Err((e, msg)) => r
            .with_error_code(e.code())
            .with_base_offset(-1)
            .with_error_message(Some(StrBytes::from_string(msg))),
    }
}

/// One partition's part of a produce request.
struct Batch<'a> {
    topic: &'a str,
    partition: i32,
    records: bytes::Bytes,
    budget: &'a Budget,
}

async fn publish(
    b: &Broker,
    producer: &Producer,
    batch: Batch<'_>,
    fire_and_forget: bool,
) -> Outcome {
    let Batch {
        topic,
        partition,
        records,
        budget,
    } = batch;
    if partition != 0 {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("topic `{topic}` has one partition (0), not {partition}"),
        ));
    }
    if !valid_topic(topic) {
        return Err((
            ResponseError::InvalidTopicException,
            format!("`{topic}` is not a valid topic name"),
        ));
    }
    if topic == GROUP_OFFSETS_TOPIC {
        return Err((
            ResponseError::InvalidTopicException,
            format!("`{topic}` is internal: consumer groups commit to it through OffsetCommit"),
        ));
    }
    let events = records::decode_produce(topic, &records, b.opts.default_priority, budget)
        .map_err(|e| (ResponseError::CorruptMessage, e.to_string()))?;
    let n = events.len() as u64;
    if n == 0 {
        return Ok(b.gateway.next_offset());
    }
    let refused = |r: Refusal| (kafka_error(r.code), r.message);
    if fire_and_forget {
        producer
            .publish_unacknowledged(events)
            .await
            .map_err(refused)?;
        b.counters
            .unacknowledged_events
            .fetch_add(n, Ordering::Relaxed);
        return Ok(0);
    }
    let offsets = producer.publish(events).await.map_err(refused)?;
    b.counters.produced_events.fetch_add(n, Ordering::Relaxed);
    Ok(offsets.first().copied().unwrap_or_default())
}
