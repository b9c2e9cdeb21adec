//! Metadata: every member with a Kafka address is a broker, the raft leader leads every
//! partition, every topic has one partition. A topic named in the request exists whether or
//! not it has events yet (topics are created on first use); a request for all topics lists
//! those of the retained stream.

use crate::conn::Broker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// A broker as Kafka clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddr {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// The members with a Kafka address (this node's advertised one in place of its table entry).
pub(crate) fn brokers(b: &Broker) -> Vec<BrokerAddr> {
    let me = b.gateway.node_id();
    b.gateway
        .members()
        .into_iter()
        .filter_map(|m| {
            let addr = if m.id == me {
                b.opts.advertised.clone().or(m.kafka_addr)
            } else {
                m.kafka_addr
            }?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(BrokerAddr {
                id: i32::try_from(m.id).ok()?,
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

/// The partition leader's broker id: the raft leader, if it is a broker (-1: none now).
pub(crate) fn leader(b: &Broker, brokers: &[BrokerAddr]) -> i32 {
    let l = b.gateway.leader_id();
    brokers
        .iter()
        .find(|x| u64::try_from(x.id) == Ok(l))
        .map_or(-1, |x| x.id)
}

/// A Kafka topic name: 1..=249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

pub(crate) async fn answer(b: &Broker, req: MetadataRequest, _version: i16) -> MetadataResponse {
    let brokers = brokers(b);
    let leader = leader(b, &brokers);
    let names: Vec<String> = match req.topics {
        Some(ts) => ts
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect(),
        None => match b.gateway.topics().await {
            Ok(ts) => ts.into_iter().map(|t| t.name.to_string()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing topics for kafka metadata");
                Vec::new()
            }
        },
    };
    let ids: Vec<BrokerId> = brokers.iter().map(|x| BrokerId(x.id)).collect();
    let topics = names
        .into_iter()
        .map(|name| topic(name, leader, &ids))
        .collect();
    MetadataResponse::default()
        .with_brokers(
            brokers
                .iter()
                .map(|x| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(x.id))
                        .with_host(StrBytes::from_string(x.host.clone()))
                        .with_port(x.port)
                })
                .collect(),
        )
        .with_cluster_id(Some(StrBytes::from_string(b.opts.cluster_id.clone())))
        .with_controller_id(BrokerId(leader))
        .with_topics(topics)
}

fn topic(name: String, leader: i32, ids: &[BrokerId]) -> MetadataResponseTopic {
    let t = MetadataResponseTopic::default()
        .with_is_internal(eventstream_node::is_reserved_topic(&name))
        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
    if !valid_topic(&name) {
        return t.with_error_code(ResponseError::InvalidTopicException.code());
    }
    let partition = MetadataResponsePartition::default()
        .with_partition_index(0)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(0)
        .with_replica_nodes(ids.to_vec())
        .with_isr_nodes(ids.to_vec())
        .with_error_code(if leader < 0 {
            ResponseError::LeaderNotAvailable.code()
        } else {
            0
        });
    t.with_partitions(vec![partition])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_topic_names_are_checked() {
        for ok in ["orders", "orders.eu-1", "a_b", &"x".repeat(249)] {
            assert!(valid_topic(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "a/b", "é", &"x".repeat(250)] {
            assert!(!valid_topic(bad), "{bad}");
        }
    }
}
