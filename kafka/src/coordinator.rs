//! The group coordinator's requests: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups.
//!
//! The raft leader is every group's coordinator. Membership lives in this node's
//! [`Groups`](crate::group::Groups) (the protocol's state machine); committed offsets go
//! through the node ([`eventstream_node::Producer::commit_offsets`]): replicated, fsynced on a
//! quorum, and applied by every replica, so a new leader answers OffsetFetch with every
//! acknowledged commit.
//!
//! Invariants:
//! * Only a leader that has applied every entry of earlier terms answers; another leader
//!   answers `COORDINATOR_LOAD_IN_PROGRESS` (clients retry), a follower `NOT_COORDINATOR`
//!   (clients look the coordinator up again).
//! * The sweeper ([`sweep`]) forgets every group when this node stops leading, so waiting
//!   joins and syncs fail with `NOT_COORDINATOR` and members rejoin at the new leader.

use crate::conn::Broker;
use crate::group::{Join, JoinAnswer, Pending, SyncAnswer};
use crate::metadata;
use eventstream_node::{OffsetCommit, Producer, Refusal};
use eventstream_proto::frame::ErrorCode;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often session and rebalance timeouts are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// DescribeGroups' `authorized_operations` when the client did not ask for them.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// FindCoordinator's key type of a transaction coordinator (not offered).
const KEY_TYPE_TRANSACTION: i8 = 1;

fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Expires sessions and rebalances while this node leads; forgets every group when it
/// stops (see the module's invariants). Runs until the runtime stops.
pub(crate) async fn sweep(b: Arc<Broker>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if b.gateway.is_caught_up_leader() {
            b.groups.tick(Instant::now());
        } else {
            b.groups.clear();
        }
    }
}

/// `Err(code)` unless this node may answer for groups now.
fn coordinating(b: &Broker) -> Result<(), ResponseError> {
    if b.gateway.is_caught_up_leader() {
        Ok(())
    } else if b.gateway.leader_id() == b.gateway.node_id() {
        Err(ResponseError::CoordinatorLoadInProgress)
    } else {
        Err(ResponseError::NotCoordinator)
    }
}

pub(crate) fn find_coordinator(
    b: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let brokers = metadata::brokers(b);
    let leader = metadata::leader(b, &brokers);
    let found = brokers.iter().find(|x| x.id == leader);
    let answer = |key: StrBytes| -> Coordinator {
        let c = Coordinator::default().with_key(key);
        match found {
            // Fatal for the client, rather than a retriable error it would retry forever.
            _ if req.key_type == KEY_TYPE_TRANSACTION => c
                .with_node_id(BrokerId(-1))
                .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                .with_error_message(Some(str("transactions are not supported"))),
            Some(x) => c
                .with_node_id(BrokerId(x.id))
                .with_host(str(x.host.clone()))
                .with_port(x.port),
            None => c
                .with_node_id(BrokerId(-1))
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_error_message(Some(str("no leader elected yet"))),
        }
    };
    if version >= 4 {
        let coordinators = req.coordinator_keys.into_iter().map(answer).collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = answer(req.key);
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(c.error_message)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}

pub(crate) async fn join_group(
    b: &Broker,
    req: JoinGroupRequest,
    header: &RequestHeader,
    peer: &str,
    version: i16,
) -> JoinGroupResponse {
    let answer = match coordinating(b) {
        Err(e) => JoinAnswer {
            error: e.code(),
            generation: -1,
            member_id: req.member_id.to_string(),
            ..JoinAnswer::default()
        },
        Ok(()) => {
            let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
            let rebalance = if version == 0 || req.rebalance_timeout_ms < 0 {
                session
            } else {
                Duration::from_millis(req.rebalance_timeout_ms as u64)
            };
            let join = Join {
                group: req.group_id.0.to_string(),
                member_id: req.member_id.to_string(),
                group_instance_id: req.group_instance_id.map(|s| s.to_string()),
                client_id: header
                    .client_id
                    .as_ref()
                    .map_or_else(String::new, |c| c.to_string()),
                client_host: format!("/{peer}"),
                session_timeout: session,
                rebalance_timeout: rebalance,
                protocol_type: req.protocol_type.to_string(),
                protocols: req
                    .protocols
                    .into_iter()
                    .map(|p| (p.name.to_string(), p.metadata))
                    .collect(),
                require_known_member: version >= 4,
            };
            let member = join.member_id.clone();
            wait(b.groups.join(join, Instant::now()))
                .await
                .unwrap_or(JoinAnswer {
                    error: ResponseError::NotCoordinator.code(),
                    generation: -1,
                    member_id: member,
                    ..JoinAnswer::default()
                })
        }
    };
    JoinGroupResponse::default()
        .with_error_code(answer.error)
        .with_generation_id(answer.generation)
        .with_protocol_type(answer.protocol_type.map(str))
        .with_protocol_name(answer.protocol_name.map(str).or_else(|| {
            // Before v7 the name is not nullable.
            (version < 7).then(StrBytes::default)
        }))
        .with_leader(str(answer.leader))
        .with_member_id(str(answer.member_id))
        .with_members(
            answer
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(str))
                        .with_metadata(m.metadata)
                })
                .collect(),
        )
}

/// The answer of a pending step; `None` when it was abandoned (the coordinator moved).
async fn wait<T>(p: Pending<T>) -> Option<T> {
    match p {
        Pending::Now(a) => Some(a),
        Pending::Later(rx) => rx.await.ok(),
    }
}

pub(crate) async fn sync_group(b: &Broker, req: SyncGroupRequest) -> SyncGroupResponse {
    let answer = match coordinating(b) {
        Err(e) => SyncAnswer {
            error: e.code(),
            ..SyncAnswer::default()
        },
        Ok(()) => {
            let assignments = req
                .assignments
                .into_iter()
                .map(|a| (a.member_id.to_string(), a.assignment))
                .collect();
            let pending = b.groups.sync(
                &req.group_id.0,
                req.generation_id,
                &req.member_id,
                assignments,
                Instant::now(),
            );
            wait(pending).await.unwrap_or(SyncAnswer {
                error: ResponseError::NotCoordinator.code(),
                ..SyncAnswer::default()
            })
        }
    };
    SyncGroupResponse::default()
        .with_error_code(answer.error)
        .with_protocol_type(answer.protocol_type.map(str))
        .with_protocol_name(answer.protocol_name.map(str))
        .with_assignment(answer.assignment)
}

pub(crate) fn heartbeat(b: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = match coordinating(b) {
        Err(e) => e.code(),
        Ok(()) => b.groups.heartbeat(
            &req.group_id.0,
            req.generation_id,
            &req.member_id,
            Instant::now(),
        ),
    };
    HeartbeatResponse::default().with_error_code(code)
}

pub(crate) fn leave_group(b: &Broker, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    // v0-v2 name one member; v3+ a list (KIP-345).
    let ids: Vec<String> = if version >= 3 {
        req.members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![req.member_id.to_string()]
    };
    let codes = match coordinating(b) {
        Err(e) => return LeaveGroupResponse::default().with_error_code(e.code()),
        Ok(()) => b.groups.leave(&req.group_id.0, &ids, Instant::now()),
    };
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(codes[0]);
    }
    let members = req
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, code)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// The OffsetCommit error a refused commit is answered with.
fn commit_error(r: &Refusal) -> ResponseError {
    match r.code {
        ErrorCode::NotLeader | ErrorCode::ShuttingDown => ResponseError::NotCoordinator,
        ErrorCode::Unavailable => ResponseError::CoordinatorNotAvailable,
        ErrorCode::Busy | ErrorCode::Timeout => ResponseError::RequestTimedOut,
        ErrorCode::BadRequest => ResponseError::InvalidCommitOffsetSize,
        _ => ResponseError::UnknownServerError,
    }
}

/// Why one partition of a commit is refused before it is replicated, if it is.
fn partition_refusal(topic: &str, partition: i32, metadata: &str) -> Option<ResponseError> {
    if !metadata::valid_topic(topic) || eventstream_node::is_reserved_topic(topic) {
        Some(ResponseError::InvalidTopicException)
    } else if partition != 0 {
        Some(ResponseError::UnknownTopicOrPartition)
    } else if metadata.len() > eventstream_node::MAX_COMMIT_METADATA_BYTES {
        Some(ResponseError::OffsetMetadataTooLarge)
    } else {
        None
    }
}

/// A partition of a commit: its index, and the error it was refused with before
/// replication (`None`: it is part of the replicated commit).
type PartitionOutcome = (i32, Option<ResponseError>);

pub(crate) async fn offset_commit(
    b: &Broker,
    producer: &Producer,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let allowed = coordinating(b).and_then(|()| {
        if group.is_empty() || group.len() > eventstream_node::MAX_GROUP_ID_BYTES {
            return Err(ResponseError::InvalidGroupId);
        }
        b.groups.may_commit(
            &group,
            req.generation_id_or_member_epoch,
            &req.member_id,
            Instant::now(),
        )
    });
    // Each partition's outcome: refused now, or `None` until the commit is replicated.
    let mut outcomes: Vec<(TopicName, Vec<PartitionOutcome>)> = Vec::new();
    let mut commits = Vec::new();
    for t in req.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let metadata = p
                .committed_metadata
                .map_or_else(String::new, |m| m.to_string());
            let refused = allowed
                .err()
                .or_else(|| partition_refusal(&t.name.0, p.partition_index, &metadata));
            if refused.is_none() {
                commits.push(OffsetCommit {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata,
                });
            }
            parts.push((p.partition_index, refused));
        }
        outcomes.push((t.name, parts));
    }
    let replicated = if commits.is_empty() {
        None
    } else {
        producer
            .commit_offsets(&group, commits)
            .await
            .err()
            .map(|r| {
                tracing::debug!(%group, reason = %r.message, "kafka offset commit refused");
                commit_error(&r)
            })
    };
    let topics = outcomes
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, refused)| {
                    let code = refused.or(replicated).map_or(0, |e| e.code());
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One partition's committed offset and metadata (-1 and empty when none).
type Committed = (i64, String);

/// `group`'s committed offsets by topic and partition, as replicated.
fn committed(b: &Broker, group: &str) -> BTreeMap<(String, i32), Committed> {
    b.gateway
        .committed_offsets(group)
        .into_iter()
        .map(|c| ((c.topic, c.partition), (c.offset, c.metadata)))
        .collect()
}

/// The (topic, partitions) asked for, or every committed one when `None`.
fn wanted(
    asked: Option<Vec<(TopicName, Vec<i32>)>>,
    table: &BTreeMap<(String, i32), Committed>,
) -> Vec<(TopicName, Vec<i32>)> {
    asked.unwrap_or_else(|| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in table.keys() {
            by_topic.entry(topic).or_default().push(*partition);
        }
        by_topic
            .into_iter()
            .map(|(t, ps)| (TopicName(str(t)), ps))
            .collect()
    })
}

fn lookup(table: &BTreeMap<(String, i32), Committed>, topic: &str, partition: i32) -> Committed {
    table
        .get(&(topic.to_owned(), partition))
        .cloned()
        .unwrap_or((-1, String::new()))
}

pub(crate) fn offset_fetch(
    b: &Broker,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let gate = coordinating(b).err().map_or(0, |e| e.code());
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let table = committed(b, &g.group_id.0);
                let asked = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect()
                });
                let topics = if gate != 0 {
                    Vec::new()
                } else {
                    wanted(asked, &table)
                        .into_iter()
                        .map(|(name, parts)| {
                            let partitions = parts
                                .into_iter()
                                .map(|p| {
                                    let (offset, metadata) = lookup(&table, &name.0, p);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(str(metadata)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(partitions)
                        })
                        .collect()
                };
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(gate)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let table = committed(b, &req.group_id.0);
    let asked = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let topics = wanted(asked, &table)
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|p| {
                    let (offset, metadata) = if gate == 0 {
                        lookup(&table, &name.0, p)
                    } else {
                        (-1, String::new())
                    };
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(str(metadata)))
                        // v1 has no top-level error: each partition carries it.
                        .with_error_code(gate)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default()
        .with_error_code(gate)
        .with_topics(topics)
}

pub(crate) fn list_groups(b: &Broker, req: ListGroupsRequest) -> ListGroupsResponse {
    if let Err(e) = coordinating(b) {
        return ListGroupsResponse::default().with_error_code(e.code());
    }
    // Groups with members, then those that only have committed offsets (Empty).
    let mut groups: BTreeMap<String, (String, &'static str)> = b
        .groups
        .list()
        .into_iter()
        .map(|(name, protocol_type, state)| (name, (protocol_type, state.name())))
        .collect();
    for name in b.gateway.group_names() {
        groups
            .entry(name)
            .or_insert_with(|| ("consumer".to_owned(), "Empty"));
    }
    let listed = groups
        .into_iter()
        .filter(|(_, (_, state))| {
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(state))
        })
        .map(|(name, (protocol_type, state))| {
            ListedGroup::default()
                .with_group_id(GroupId(str(name)))
                .with_protocol_type(str(protocol_type))
                .with_group_state(StrBytes::from_static_str(state))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

pub(crate) fn describe_groups(b: &Broker, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let gate = coordinating(b).err().map_or(0, |e| e.code());
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let d = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(OPERATIONS_NOT_REQUESTED);
            if gate != 0 {
                return d.with_error_code(gate);
            }
            let Some(v) = b.groups.view(&id.0) else {
                // Kafka describes a group it does not know (or that has only offsets) as
                // `Dead` or `Empty` with no members.
                let state = if b.gateway.group_names().iter().any(|g| g == &*id.0) {
                    "Empty"
                } else {
                    "Dead"
                };
                return d.with_group_state(StrBytes::from_static_str(state));
            };
            let members = v
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(str(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(str))
                        .with_client_id(str(m.client_id))
                        .with_client_host(str(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            d.with_group_state(StrBytes::from_static_str(v.state.name()))
                .with_protocol_type(str(v.protocol_type))
                .with_protocol_data(str(v.protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
