//! Fetch and ListOffsets.
//!
//! Fetch reads each asked topic from its offset through the stream's per-topic index and
//! long-polls: while fewer than `min_bytes` are found it waits for appends, up to
//! `max_wait_ms`. Any member serves fetches from its own committed stream (they all hold the
//! same offsets). A topic's high watermark is one past its last event (the stream's first
//! offset while it has none), so a consumer that read all of a topic has no lag whatever the
//! other topics hold; an offset is out of range below the stream's first retained offset or
//! past its end.
//!
//! ListOffsets: `-2` (earliest) is the topic's first retained event, `-1` (latest) its high
//! watermark, a timestamp the first event of the topic at or after it (through the stream's
//! time index), `-3` (max timestamp) the topic's last event.

use crate::conn::Broker;
use crate::records;
use eventstream_node::{NodeError, TopicInfo};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use kafka_protocol::ResponseError;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// Longest long-poll honoured, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Events one partition of one fetch returns at most.
const MAX_EVENTS: usize = 10_000;

/// A topic's retained range as Kafka offsets: its first event and its high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub first: u64,
    pub high_watermark: u64,
    /// The offset of its last event, if it has any.
    pub last: Option<u64>,
}

pub(crate) fn bounds(topics: &[TopicInfo], topic: &str, stream_first: u64) -> Bounds {
    match topics.iter().find(|t| t.name == topic) {
        Some(t) => Bounds {
            first: t.first_offset.max(stream_first),
            high_watermark: t.last_offset + 1,
            last: Some(t.last_offset),
        },
        None => Bounds {
            first: stream_first,
            high_watermark: stream_first,
            last: None,
        },
    }
}

async fn topics(b: &Broker) -> Vec<TopicInfo> {
    b.gateway.topics().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "listing topics for a kafka fetch");
        Vec::new()
    })
}

pub(crate) async fn answer(b: &Broker, req: FetchRequest, _version: i16) -> FetchResponse {
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut watch = b.gateway.watch();
    loop {
        watch.borrow_and_update();
        let (response, bytes) = fetch_once(b, &req).await;
        if bytes >= min_bytes.max(1) || Instant::now() >= deadline {
            return response;
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return response },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// One pass over the asked partitions: the response and the record bytes it carries.
async fn fetch_once(b: &Broker, req: &FetchRequest) -> (FetchResponse, usize) {
    let all = topics(b).await;
    let stream_first = b.gateway.first_offset();
    let mut budget = req.max_bytes.max(1) as usize;
    let mut total = 0;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.topic.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let bounds = bounds(&all, &name, stream_first);
            let limit = (p.partition_max_bytes.max(1) as usize).min(budget.max(1));
            let data = partition(b, &name, p.partition, p.fetch_offset, limit, bounds).await;
            let n = data.records.as_ref().map_or(0, |r| r.len());
            total += n;
            budget = budget.saturating_sub(n);
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    (FetchResponse::default().with_responses(responses), total)
}

async fn partition(
    b: &Broker,
    topic: &str,
    index: i32,
    offset: i64,
    max_bytes: usize,
    bounds: Bounds,
) -> PartitionData {
    let data = PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(bounds.high_watermark as i64)
        .with_last_stable_offset(bounds.high_watermark as i64)
        .with_log_start_offset(bounds.first as i64)
        .with_preferred_read_replica(BrokerId(-1));
    let error = |e: ResponseError| data.clone().with_error_code(e.code());
    if index != 0 {
        return error(ResponseError::UnknownTopicOrPartition);
    }
    let next = b.gateway.next_offset();
    if offset < 0 || (offset as u64) > next {
        return error(ResponseError::OffsetOutOfRange);
    }
    let read = match b
        .gateway
        .read_topic(topic, offset as u64, MAX_EVENTS, max_bytes)
        .await
    {
        Ok(r) => r,
        Err(NodeError::Compacted { .. }) => return error(ResponseError::OffsetOutOfRange),
        Err(e) => {
            tracing::warn!(topic, offset, error = %e, "kafka fetch");
            return error(ResponseError::KafkaStorageError);
        }
    };
    if read.events.is_empty() {
        return data.with_records(Some(bytes::Bytes::new()));
    }
    b.counters
        .fetched_events
        .fetch_add(read.events.len() as u64, Ordering::Relaxed);
    match records::encode_fetch(&read.events) {
        Ok(r) => data.with_records(Some(r)),
        Err(e) => {
            tracing::error!(topic, offset, error = %e, "encoding fetched records");
            error(ResponseError::UnknownServerError)
        }
    }
}

pub(crate) async fn list_offsets(b: &Broker, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let all = topics(b).await;
    let stream_first = b.gateway.first_offset();
    let mut out = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let bounds = bounds(&all, &name, stream_first);
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let r = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1);
            let r = if p.partition_index != 0 {
                r.with_error_code(ResponseError::UnknownTopicOrPartition.code())
            } else {
                match offset_for(b, &name, p.timestamp, bounds).await {
                    Ok((offset, ts)) => r.with_offset(offset as i64).with_timestamp(ts),
                    Err(e) => r.with_error_code(e.code()).with_offset(-1),
                }
            };
            partitions.push(r);
        }
        out.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(out)
}

/// The offset (and its event's timestamp, -1 when not one event's) for a ListOffsets
/// timestamp.
async fn offset_for(
    b: &Broker,
    topic: &str,
    timestamp: i64,
    bounds: Bounds,
) -> Result<(u64, i64), ResponseError> {
    match timestamp {
        -2 => Ok((bounds.first, -1)),
        -1 => Ok((bounds.high_watermark, -1)),
        -3 => match bounds.last {
            Some(last) => first_event_from(b, topic, last, bounds).await,
            None => Ok((bounds.high_watermark, -1)),
        },
        ts if ts >= 0 => {
            let from = b
                .gateway
                .offset_at_time(ts as u64)
                .await
                .map_err(|_| ResponseError::KafkaStorageError)?;
            first_event_from(b, topic, from, bounds).await
        }
        _ => Err(ResponseError::InvalidRequest),
    }
}

/// The topic's first event at or after `from` and its timestamp, or the high watermark.
async fn first_event_from(
    b: &Broker,
    topic: &str,
    from: u64,
    bounds: Bounds,
) -> Result<(u64, i64), ResponseError> {
    let from = from.max(bounds.first);
    match b.gateway.read_topic(topic, from, 1, 1).await {
        Ok(r) => Ok(r
            .events
            .first()
            .map_or((bounds.high_watermark, -1), |(o, e)| {
                (*o, (e.ingest_ns / 1_000_000) as i64)
            })),
        Err(NodeError::Compacted { .. }) => Err(ResponseError::OffsetOutOfRange),
        Err(_) => Err(ResponseError::KafkaStorageError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_without_events_sits_at_the_streams_start() {
        let info = TopicInfo {
            name: "orders".into(),
            events: 3,
            first_offset: 10,
            last_offset: 40,
        };
        let b = bounds(std::slice::from_ref(&info), "orders", 5);
        assert_eq!(
            b,
            Bounds {
                first: 10,
                high_watermark: 41,
                last: Some(40)
            }
        );
        let none = bounds(&[info], "payments", 5);
        assert_eq!((none.first, none.high_watermark, none.last), (5, 5, None));
    }
}
