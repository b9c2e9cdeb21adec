//! Produce: each partition's record batches become one publish through the node's gateway
//! (the tier rings, raft, the quorum's fsync), answered with the first event's offset once
//! committed. The partitions of one request are committed concurrently; the batches of a
//! connection's requests are handed to the node in the order the requests came ([`Turn`]).
//! An idempotent producer's batch is checked against its last sequence first: a gap is
//! answered `OUT_OF_ORDER_SEQUENCE_NUMBER`, an older epoch `INVALID_PRODUCER_EPOCH`.
//!
//! `acks=all` and `acks=1` are the same here: a produce is answered only after the quorum
//! commit and fsync (there is no weaker acknowledgement to give). `acks=0` is admitted and
//! not answered, as Kafka does; its events are counted in `unacknowledged_events`.

use crate::api::Client;
use crate::conn::Broker;
use crate::decompress::Budget;
use crate::metadata::valid_topic;
use crate::records::{self, Decoded};
use bytes::Bytes;
use eventstream_node::{
    is_reserved_topic, Pending, Producer, Refusal, SequenceError, SequencedError,
};
use eventstream_proto::frame::ErrorCode;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;

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

/// A produce request's place in its connection's order: it may hand its batches to the node
/// once the request before it has ([`Turn::wait`]), and lets the next one go when it drops.
/// So one producer's pipelined batches are stored in the order it sent them, while their
/// commits overlap.
#[derive(Debug)]
pub(crate) struct Turn {
    before: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    /// The next turn after `last` (the previous produce request's), which becomes this one's.
    pub(crate) fn next(last: &mut Option<oneshot::Receiver<()>>) -> Turn {
        let (done, after) = oneshot::channel();
        Turn {
            before: last.replace(after),
            _done: done,
        }
    }

    /// Waits until the request before has handed its batches over (or is gone).
    async fn wait(&mut self) {
        if let Some(before) = self.before.take() {
            // An error is the sender dropped: that request is past its turn.
            let _ = before.await;
        }
    }
}

pub(crate) async fn answer(
    b: &Arc<Broker>,
    client: &Arc<Client>,
    req: ProduceRequest,
    mut turn: Turn,
) -> Option<ProduceResponse> {
    let fire_and_forget = req.acks == 0;
    // What all of the request's compressed batches may expand to.
    let budget = Budget::new(
        b.opts
            .max_request_bytes
            .saturating_mul(DECOMPRESSION_FACTOR),
    );
    // Decoded before the turn: requests decode in parallel, only hand-over is ordered.
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let name = t.name.0.to_string();
        let parts: Vec<(i32, Result<Decoded, Failure>)> = t
            .partition_data
            .into_iter()
            .map(|p| {
                let records = p.records.unwrap_or_default();
                (p.index, decode(b, &name, p.index, &records, &budget))
            })
            .collect();
        topics.push((t.name, name, parts));
    }
    turn.wait().await;
    let mut submitted = Vec::with_capacity(topics.len());
    for (kafka_name, name, parts) in topics {
        let mut ps = Vec::with_capacity(parts.len());
        for (index, decoded) in parts {
            let s = match decoded {
                Ok(d) => submit(b, &client.producer, &name, d, fire_and_forget).await,
                Err(e) => Submitted::Done(Err(e)),
            };
            ps.push((index, s));
        }
        submitted.push((kafka_name, ps));
    }
    drop(turn);
    let mut responses = Vec::with_capacity(submitted.len());
    for (name, parts) in submitted {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for (index, s) in parts {
            let outcome = s.outcome(b).await;
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

/// Why a partition is answered with an error.
type Failure = (ResponseError, String);

/// One partition's records as events, or why the partition is refused before any is
/// handed to the node.
fn decode(
    b: &Broker,
    topic: &str,
    partition: i32,
    records: &Bytes,
    budget: &Budget,
) -> Result<Decoded, Failure> {
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
    if is_reserved_topic(topic) {
        return Err((
            ResponseError::InvalidTopicException,
            format!("`{topic}` is internal: only the node writes it (consumer groups commit through OffsetCommit)"),
        ));
    }
    records::decode_produce_batch(topic, records, b.opts.default_priority, budget)
        .map_err(|e| (ResponseError::CorruptMessage, e.to_string()))
}

/// A partition handed to the node (or answered already).
enum Submitted {
    Done(Outcome),
    Pending(Pending, u64),
}

impl Submitted {
    async fn outcome(self, b: &Broker) -> Outcome {
        match self {
            Submitted::Done(o) => o,
            Submitted::Pending(p, n) => {
                let offsets = p.committed().await.map_err(refused)?;
                b.counters.produced_events.fetch_add(n, Ordering::Relaxed);
                Ok(offsets.first().copied().unwrap_or_default())
            }
        }
    }
}

fn refused(r: Refusal) -> Failure {
    (kafka_error(r.code), r.message)
}

/// Hands one partition's events to the node: an idempotent producer's batch checked against
/// its last sequence first.
async fn submit(
    b: &Broker,
    producer: &Producer,
    topic: &str,
    decoded: Decoded,
    fire_and_forget: bool,
) -> Submitted {
    let Decoded { events, sequence } = decoded;
    let n = events.len() as u64;
    if n == 0 {
        return Submitted::Done(Ok(b.gateway.next_offset()));
    }
    let pending = match sequence {
        Some(batch) => producer
            .submit_sequenced(events, &batch)
            .await
            .map_err(|e| match e {
                SequencedError::Refused(r) => refused(r),
                SequencedError::Sequence(e) => sequence_error(topic, &e),
            }),
        None => producer.submit(events).await.map_err(refused),
    };
    let pending = match pending {
        Ok(p) => p,
        Err(e) => return Submitted::Done(Err(e)),
    };
    if fire_and_forget {
        b.counters
            .unacknowledged_events
            .fetch_add(n, Ordering::Relaxed);
        // Not answered; the commit is still counted in the node's publish outcomes.
        tokio::spawn(pending.committed());
        return Submitted::Done(Ok(0));
    }
    Submitted::Pending(pending, n)
}

fn sequence_error(topic: &str, e: &SequenceError) -> Failure {
    let code = match e {
        SequenceError::OutOfOrder { .. } => ResponseError::OutOfOrderSequenceNumber,
        SequenceError::Fenced { .. } => ResponseError::InvalidProducerEpoch,
    };
    (code, format!("{topic}/0: {e}"))
}
