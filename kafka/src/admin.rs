//! CreateTopics, DescribeConfigs and InitProducerId, as far as eventstream's model has them.
//!
//! Topics are created on first use, so CreateTopics only checks: a valid name, one partition
//! (`num_partitions` 1 or -1, the broker default), and that the topic has no events yet
//! (`TOPIC_ALREADY_EXISTS` otherwise). DescribeConfigs describes what is true of every
//! topic here: delete-by-retention, the leader's append time as the timestamp, and the
//! largest event.
//!
//! InitProducerId hands an idempotent producer a random 63-bit producer id (any node may:
//! ids need no coordination to be unique), or the next epoch of the id it has (KIP-360).
//! Its records' sequences become event ids (`records::idempotent_id`), which the replicated
//! dedup window checks. A transactional id is refused: transactions are not offered.

use crate::conn::Broker;
use crate::metadata::valid_topic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Config source: the broker's static configuration.
const SOURCE_STATIC_BROKER: i8 = 4;

pub(crate) async fn create_topics(b: &Broker, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let existing = b.gateway.topics().await.unwrap_or_default();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let r = CreatableTopicResult::default()
                .with_name(t.name)
                .with_num_partitions(1)
                .with_replication_factor(b.gateway.members().len() as i16);
            let refuse = |e: ResponseError, msg: String| {
                r.clone()
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(msg)))
            };
            if !valid_topic(&name) {
                refuse(
                    ResponseError::InvalidTopicException,
                    format!("`{name}`: 1 to 249 of [A-Za-z0-9._-]"),
                )
            } else if t.num_partitions != 1 && t.num_partitions != -1 {
                refuse(
                    ResponseError::InvalidPartitions,
                    format!("a topic has one partition here, not {}", t.num_partitions),
                )
            } else if existing.iter().any(|x| x.name == name.as_str()) {
                refuse(
                    ResponseError::TopicAlreadyExists,
                    format!("topic `{name}` already has events"),
                )
            } else {
                r
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(crate) fn describe_configs(b: &Broker, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let topic_configs = [
        ("cleanup.policy", "delete".to_owned()),
        ("message.timestamp.type", "LogAppendTime".to_owned()),
        ("max.message.bytes", b.gateway.max_event_bytes().to_string()),
    ];
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let configs = if r.resource_type == RESOURCE_TOPIC {
                topic_configs
                    .iter()
                    .filter(|(k, _)| {
                        r.configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.iter().any(|x| &**x == *k))
                    })
                    .map(|(k, v)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(k))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                            .with_read_only(true)
                            .with_config_source(SOURCE_STATIC_BROKER)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A new producer id: random, non-negative.
fn new_producer_id() -> i64 {
    use std::hash::BuildHasher;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // `RandomState` is keyed from the OS's randomness once per process.
    let h = std::collections::hash_map::RandomState::new().hash_one((nanos, n));
    (h >> 1) as i64
}

pub(crate) fn init_producer_id(req: InitProducerIdRequest) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default();
    if req.transactional_id.as_ref().is_some_and(|t| !t.is_empty()) {
        return r
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let (id, epoch) = (req.producer_id.0, req.producer_epoch);
    let (id, epoch) = if id >= 0 && (0..i16::MAX - 1).contains(&epoch) {
        (id, epoch + 1)
    } else {
        (new_producer_id(), 0)
    };
    r.with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_new_and_epochs_bump() {
        let a = init_producer_id(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1)),
        );
        let b = init_producer_id(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1)),
        );
        assert_eq!((a.error_code, a.producer_epoch), (0, 0));
        assert!(a.producer_id.0 >= 0 && a.producer_id != b.producer_id);
        let bumped = init_producer_id(
            InitProducerIdRequest::default()
                .with_producer_id(a.producer_id)
                .with_producer_epoch(0),
        );
        assert_eq!(
            (bumped.producer_id, bumped.producer_epoch),
            (a.producer_id, 1)
        );
        let exhausted = init_producer_id(
            InitProducerIdRequest::default()
                .with_producer_id(a.producer_id)
                .with_producer_epoch(i16::MAX - 1),
        );
        assert_ne!(exhausted.producer_id, a.producer_id);
        let txn = init_producer_id(InitProducerIdRequest::default().with_transactional_id(Some(
            kafka_protocol::messages::TransactionalId(StrBytes::from_static_str("t")),
        )));
        assert_eq!(
            txn.error_code,
            ResponseError::TransactionalIdAuthorizationFailed.code()
        );
    }
}
