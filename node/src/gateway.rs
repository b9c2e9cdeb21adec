//! A front end's way into a node: publish events and wait for their offsets, read the
//! committed stream, see the cluster. The native protocol's connections and every other
//! listener (the Kafka-protocol one) go through the same steps, so a publish is admitted,
//! limited, counted and acknowledged the same way whichever protocol carried it.
//!
//! Invariants:
//! * A [`Producer`] is one connection's publishing side: it holds that connection's slots
//!   (`limits.max_inflight_per_connection`) and draws on the node-wide event permits, like a
//!   native connection; its publishes are counted in the node's publish outcomes.
//! * [`Producer::publish`] answers `Ok` only with offsets committed on a quorum and fsynced
//!   (the acknowledgement the native protocol gives); every `Err` is a [`Refusal`] whose code
//!   says whether the same ids may be sent again.
//! * [`Producer::submit`] returns once the events are in the tier rings: two submits of one
//!   producer awaited one after the other are stored in that order, even when their commits
//!   are awaited together ([`Pending::committed`]).
//! * Reads never block the runtime: segment files are read on the blocking pool.

use crate::error::NodeError;
use crate::groups::{self, CommittedOffset, OffsetCommit};
use crate::producers::{self, ProducerBatch, SequenceError};
use crate::server::{self, Filter, Origin, Refusal, ServerCtx};
use eventstream_core::{Event, Publisher};
use eventstream_proto::frame::ErrorCode;
use eventstream_proto::Member;
use eventstream_storage::stream::TopicInfo;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// A node's publish and read steps, for a listener of another protocol. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    ctx: Arc<ServerCtx>,
}

/// Events read from the committed stream.
#[derive(Debug, Default)]
pub struct StreamRead {
    /// The events, with their offsets, in offset order.
    pub events: Vec<(u64, Event)>,
    /// Where to read on from: past everything examined (events filtered out included).
    pub next: u64,
}

impl Gateway {
    pub(crate) fn new(ctx: Arc<ServerCtx>) -> Self {
        Gateway { ctx }
    }

    /// The publishing side of one connection.
    pub fn producer(&self) -> Producer {
        Producer {
            ctx: self.ctx.clone(),
            publisher: std::sync::Mutex::new(self.ctx.engine.publisher()),
            slots: Arc::new(Semaphore::new(self.ctx.max_inflight_per_connection)),
        }
    }

    /// This node's raft id.
    pub fn node_id(&self) -> u64 {
        self.ctx.id
    }

    /// The leader this node knows of (0: none right now).
    pub fn leader_id(&self) -> u64 {
        self.ctx.metrics.leader_id()
    }

    /// The cluster's members as this node knows them.
    pub fn members(&self) -> Vec<Member> {
        self.ctx.metrics.members()
    }

    /// The first offset this node serves.
    pub fn first_offset(&self) -> u64 {
        self.ctx.stream.first_offset()
    }

    /// One past the last committed offset.
    pub fn next_offset(&self) -> u64 {
        self.ctx.stream.next_offset()
    }

    /// The largest event payload a publish may carry.
    pub fn max_event_bytes(&self) -> usize {
        self.ctx.max_event_bytes
    }

    /// Changes whenever committed events are appended (the value: the next offset).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.ctx.stream.watch()
    }

    /// The first offset whose stream time is at or after `unix_ms` (the next offset when
    /// none is).
    pub async fn offset_at_time(&self, unix_ms: u64) -> Result<u64, NodeError> {
        let stream = self.ctx.stream.clone();
        server::blocking(move || stream.offset_at_time(unix_ms)).await?
    }

    /// Events at offsets `>= from`, of `topic` only when given; `Err(Compacted)` when `from`
    /// is below what retention kept.
    pub async fn read(&self, from: u64, topic: Option<&str>) -> Result<StreamRead, NodeError> {
        let filter = Filter {
            topic: topic.map(str::to_owned),
            min_priority: None,
        };
        let (next, events) = server::read_stream(&self.ctx, from, &filter).await;
        stream_read(from, next, events)
    }

    /// Events of `topic` only, at offsets `>= from` (at most `max` of them, stopping once
    /// `max_bytes` of payload are read), through the stream's per-topic index: the cost is
    /// what it returns, however little of the stream the topic is. `next` skips every offset
    /// examined, so a long stretch without the topic is passed in one call.
    pub async fn read_topic(
        &self,
        topic: &str,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<StreamRead, NodeError> {
        let (stream, topic) = (self.ctx.stream.clone(), topic.to_owned());
        let (next, events) = server::blocking(move || {
            let mut out = Vec::new();
            let r = stream.read_topic(&topic, from, max, max_bytes, &mut out);
            (r, out)
        })
        .await?;
        stream_read(from, next, events)
    }

    /// True while this node is the leader and its state includes every acknowledged write
    /// (it applied every entry of earlier terms): it may then answer for consumer groups.
    pub fn is_caught_up_leader(&self) -> bool {
        self.ctx.metrics.leader_caught_up()
    }

    /// The consumer groups that committed offsets, in name order.
    pub fn group_names(&self) -> Vec<String> {
        self.ctx.groups.groups()
    }

    /// `group`'s committed offsets as this node applied them (empty for an unknown group).
    pub fn committed_offsets(&self, group: &str) -> Vec<CommittedOffset> {
        self.ctx.groups.group(group)
    }

    /// The topics of the retained stream: name, events, first and last offsets.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>, NodeError> {
        let stream = self.ctx.stream.clone();
        server::blocking(move || stream.topics()).await?
    }
}

/// A stream read's outcome as the gateway answers it: a `from` below retention is
/// `Compacted`.
fn stream_read(
    from: u64,
    next: Result<u64, Result<u64, NodeError>>,
    events: Vec<(u64, Event)>,
) -> Result<StreamRead, NodeError> {
    match next {
        Ok(next) => Ok(StreamRead { events, next }),
        Err(Ok(earliest)) => Err(NodeError::Compacted {
            requested: from,
            earliest,
        }),
        Err(Err(e)) => Err(e),
    }
}

/// Why a sequenced batch was not submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequencedError {
    /// Refused as any publish may be (not leader, busy, bad event, ...).
    Refused(Refusal),
    /// Out of order or fenced: sending it again changes nothing.
    Sequence(SequenceError),
}

/// A submitted publish, waiting for its commit.
#[derive(Debug)]
pub struct Pending {
    ctx: Arc<ServerCtx>,
    admitted: server::Admitted,
    /// Events the node added after the client's (a producer-state event).
    trailing: usize,
}

impl Pending {
    /// Waits until the events are committed on a quorum and fsynced: their offsets, in order
    /// (an event whose id was seen before gets its first offset), or why not.
    pub async fn committed(self) -> Result<Vec<u64>, Refusal> {
        let (result, permits) = server::await_commit(&self.ctx, self.admitted).await;
        drop(permits);
        let mut offsets = result?;
        offsets.truncate(offsets.len().saturating_sub(self.trailing));
        Ok(offsets)
    }
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One connection's publishing side (see the module's invariants).
#[derive(Debug)]
pub struct Producer {
    ctx: Arc<ServerCtx>,
    publisher: std::sync::Mutex<Publisher>,
    slots: Arc<Semaphore>,
}

impl Producer {
    async fn admit(&self, events: Vec<Event>, origin: Origin) -> Result<server::Admitted, Refusal> {
        server::admit(&self.ctx, &self.publisher, &self.slots, events, origin).await
    }

    /// Publishes `events` and waits until they are committed: their offsets, in order (an
    /// event whose id was seen before gets its first offset), or why not.
    pub async fn publish(&self, events: Vec<Event>) -> Result<Vec<u64>, Refusal> {
        self.submit(events).await?.committed().await
    }

    /// Puts `events` into the tier rings and returns what waits for their commit.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Pending, Refusal> {
        let admitted = self.admit(events, Origin::Client).await?;
        Ok(Pending {
            ctx: self.ctx.clone(),
            admitted,
            trailing: 0,
        })
    }

    /// [`Producer::submit`] for an idempotent producer's batch: refused when `batch` does not
    /// follow the last sequence stored or admitted for its producer and partition
    /// ([`crate::producers`]), else submitted with the producer's new state after its events.
    /// A retry (a batch at or before the last sequence) is submitted for the dedup window.
    pub async fn submit_sequenced(
        &self,
        mut events: Vec<Event>,
        batch: &ProducerBatch,
    ) -> Result<Pending, SequencedError> {
        let Some(last_priority) = events.last().map(|e| e.priority) else {
            return Err(SequencedError::Refused(Refusal::new(
                ErrorCode::BadRequest,
                "a sequenced batch has at least one event",
            )));
        };
        let term = self.ctx.metrics.leader_term();
        if term != 0 && !self.ctx.metrics.leader_caught_up() {
            return Err(SequencedError::Refused(Refusal::new(
                ErrorCode::Unavailable,
                "the new leader is still applying earlier terms' entries; retry",
            )));
        }
        let stored = self.ctx.producers.last(batch, unix_now_ms());
        let (_, admission) = self
            .ctx
            .admissions
            .check_and_admit(batch, term, stored)
            .map_err(SequencedError::Sequence)?;
        events.push(producers::state_event(batch, last_priority));
        match self.admit(events, Origin::Sequenced).await {
            Ok(admitted) => Ok(Pending {
                ctx: self.ctx.clone(),
                admitted,
                trailing: 1,
            }),
            Err(r) => {
                if let Some(a) = admission {
                    self.ctx.admissions.undo(a);
                }
                Err(SequencedError::Refused(r))
            }
        }
    }

    /// Commits `offsets` for consumer group `group` and waits until the commit is on a
    /// quorum and fsynced (then every replica's table has it): the commit event's offset, or
    /// why not. A group id or a metadata string longer than its limit is refused.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<OffsetCommit>,
    ) -> Result<u64, Refusal> {
        if group.len() > groups::MAX_GROUP_ID_BYTES {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "group id is {} bytes; at most {} are allowed",
                    group.len(),
                    groups::MAX_GROUP_ID_BYTES
                ),
            ));
        }
        if let Some(o) = offsets
            .iter()
            .find(|o| o.metadata.len() > groups::MAX_COMMIT_METADATA_BYTES)
        {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!(
                    "commit metadata for {}/{} is {} bytes; at most {} are allowed",
                    o.topic,
                    o.partition,
                    o.metadata.len(),
                    groups::MAX_COMMIT_METADATA_BYTES
                ),
            ));
        }
        let event = groups::commit_event(group, offsets);
        let admitted = self.admit(vec![event], Origin::Node).await?;
        let (result, permits) = server::await_commit(&self.ctx, admitted).await;
        drop(permits);
        Ok(result?.first().copied().unwrap_or_default())
    }

    /// Publishes `events` without waiting for their commit (a fire-and-forget producer):
    /// `Err` only when they were not admitted. The commit is still counted in the node's
    /// publish outcomes.
    pub async fn publish_unacknowledged(&self, events: Vec<Event>) -> Result<(), Refusal> {
        let admitted = self.admit(events, Origin::Client).await?;
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let (_, permits) = server::await_commit(&ctx, admitted).await;
            drop(permits);
        });
        Ok(())
    }
}
