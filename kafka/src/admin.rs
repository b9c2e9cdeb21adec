//! CreateTopics and DescribeConfigs, as far as eventstream's model has them.
//!
//! Topics are created on first use, so CreateTopics only checks: a valid name, one partition
//! (`num_partitions` 1 or -1, the broker default), and that the topic has no events yet
//! (`TOPIC_ALREADY_EXISTS` otherwise). DescribeConfigs describes what is true of every
//! topic here: delete-by-retention, the leader's append time as the timestamp, and the
//! largest event.

use crate::conn::Broker;
use crate::metadata::valid_topic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
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
