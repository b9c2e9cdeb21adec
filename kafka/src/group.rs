//! Kafka's classic consumer-group protocol, without I/O: members, generations, rebalances and
//! session timeouts of every group this node coordinates. Time comes in as an argument, so
//! the tests drive it; answers that must wait (a join until the rebalance completes, a sync
//! until the leader's assignment) are handed back as a receiver.
//!
//! A group moves `Empty → PreparingRebalance → CompletingRebalance → Stable`, and back to
//! `PreparingRebalance` whenever a member joins, leaves or times out:
//! * **PreparingRebalance** waits until every known member has (re)joined, or the rebalance
//!   timeout (the largest of the members') passes; members that did not rejoin are removed.
//!   Completing it bumps the generation, picks the protocol every member supports (each
//!   member votes for its first choice) and answers every join: the leader's answer carries
//!   every member's metadata.
//! * **CompletingRebalance** waits for the leader's SyncGroup with the assignments; then the
//!   group is **Stable** and every waiting sync gets its member's assignment.
//!
//! Invariants:
//! * The generation only grows; a heartbeat, sync or commit of another generation gets
//!   `ILLEGAL_GENERATION`, of an unknown member `UNKNOWN_MEMBER_ID`.
//! * A member that neither heartbeats nor requests for its session timeout is removed (not
//!   while its join waits for the rebalance to complete, as in Kafka).
//! * Membership is this coordinator's memory only: a new leader starts with no members and
//!   members rejoin (Kafka loses them on a coordinator move too). Committed offsets are not
//!   kept here: they are replicated (`eventstream_node::GroupOffsets`).
//! * Static membership (`group.instance.id`) is recorded and shown, not honoured: such a
//!   member is treated as a dynamic one.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Shortest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`
/// is 6 s; shorter is allowed here for fast failure detection on a local network).
pub(crate) const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Longest session timeout a member may ask for (Kafka's `group.max.session.timeout.ms`).
pub(crate) const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where a group is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka's tools show.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, as the state machine needs it.
#[derive(Debug, Clone)]
pub(crate) struct Join {
    pub group: String,
    /// Empty for a new member.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets `MEMBER_ID_REQUIRED` with its id, and joins
    /// with it (KIP-394).
    pub require_known_member: bool,
}

/// A member as the group leader's join answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct JoinAnswer {
    /// 0 or a Kafka error code.
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member, for the leader only.
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SyncAnswer {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

/// An answer now, or one to wait for.
#[derive(Debug)]
pub(crate) enum Pending<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A group member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups and ListGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupView {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join: Option<oneshot::Sender<JoinAnswer>>,
    sync: Option<oneshot::Sender<SyncAnswer>>,
}

impl Member {
    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| Some(n.as_str()) == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(n, _)| n == protocol)
    }
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// Members by id; ids are issued in increasing order, so this is join order.
    members: BTreeMap<String, Member>,
    /// Ids handed out with `MEMBER_ID_REQUIRED`, and until when they may join with them.
    pending: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
        }
    }

    fn error_join(error: ResponseError, member_id: &str) -> JoinAnswer {
        JoinAnswer {
            error: error.code(),
            generation: -1,
            member_id: member_id.to_owned(),
            ..JoinAnswer::default()
        }
    }

    /// Why `j` cannot join this group's protocol, if it cannot.
    fn protocol_mismatch(&self, j: &Join) -> bool {
        if self.members.is_empty() {
            return false;
        }
        self.protocol_type.as_deref() != Some(j.protocol_type.as_str())
            || !j.protocols.iter().any(|(name, _)| {
                self.members
                    .iter()
                    .filter(|(id, _)| **id != j.member_id)
                    .all(|(_, m)| m.supports(name))
            })
    }

    /// Starts a rebalance: every member must join again.
    fn prepare_rebalance(&mut self, now: Instant) {
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(SyncAnswer {
                    error: ResponseError::RebalanceInProgress.code(),
                    ..SyncAnswer::default()
                });
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    /// Completes the join phase when every member has joined, or `forced` (the rebalance
    /// timeout passed: members that did not join are removed).
    fn try_complete_join(&mut self, forced: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.pending.is_empty() && self.members.values().all(|m| m.join.is_some());
        if !all_joined && !forced {
            return;
        }
        self.members.retain(|_, m| m.join.is_some());
        self.pending.clear();
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_type = None;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.vote();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        self.answer_joins();
    }

    /// The protocol every member supports that most members prefer (ties: the earliest
    /// member's choice).
    fn vote(&self) -> Option<String> {
        let common: Vec<&str> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| self.members.values().all(|m| m.supports(n)))
            .collect();
        let mut votes: Vec<(&str, usize)> = common.iter().map(|n| (*n, 0)).collect();
        for m in self.members.values() {
            if let Some(choice) = m
                .protocols
                .iter()
                .find(|(n, _)| common.contains(&n.as_str()))
            {
                if let Some(v) = votes.iter_mut().find(|(n, _)| *n == choice.0) {
                    v.1 += 1;
                }
            }
        }
        let best = votes.iter().map(|(_, c)| *c).max()?;
        votes
            .iter()
            .find(|(_, c)| *c == best)
            .map(|(n, _)| (*n).to_owned())
    }

    fn answer_joins(&mut self) {
        let protocol = self.protocol.clone();
        let leader = self.leader.clone().unwrap_or_default();
        let everyone: Vec<JoinedMember> = self
            .members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol.as_deref()),
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            let Some(tx) = m.join.take() else { continue };
            let _ = tx.send(JoinAnswer {
                error: 0,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader {
                    everyone.clone()
                } else {
                    Vec::new()
                },
            });
        }
    }

    /// A member left or timed out: the others must rebalance.
    fn membership_lost(&mut self, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.try_complete_join(false);
            }
            GroupState::PreparingRebalance => self.try_complete_join(false),
            GroupState::Empty => {}
        }
    }

    /// The member, after checking it is one of this generation's.
    fn member_of_generation(
        &mut self,
        member_id: &str,
        generation: i32,
    ) -> Result<&mut Member, ResponseError> {
        if generation != self.generation && self.members.contains_key(member_id) {
            return Err(ResponseError::IllegalGeneration);
        }
        self.members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)
    }

    fn view(&self) -> GroupView {
        GroupView {
            state: self.state,
            generation: self.generation,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: self.protocol.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata(self.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// Every group this node coordinates (see the module's invariants).
#[derive(Debug)]
pub(crate) struct Groups {
    groups: Mutex<HashMap<String, Group>>,
    /// Makes member ids unique on this node across restarts and leader changes.
    epoch: u64,
    next_member: std::sync::atomic::AtomicU64,
}

impl Default for Groups {
    fn default() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Groups {
            groups: Mutex::new(HashMap::new()),
            epoch,
            next_member: Default::default(),
        }
    }
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{client}-{:x}-{n:08x}", self.epoch)
    }

    /// JoinGroup.
    pub(crate) fn join(&self, j: Join, now: Instant) -> Pending<JoinAnswer> {
        if j.group.is_empty() {
            return Pending::Now(Group::error_join(
                ResponseError::InvalidGroupId,
                &j.member_id,
            ));
        }
        if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&j.session_timeout) {
            return Pending::Now(Group::error_join(
                ResponseError::InvalidSessionTimeout,
                &j.member_id,
            ));
        }
        if j.protocol_type.is_empty() || j.protocols.is_empty() {
            return Pending::Now(Group::error_join(
                ResponseError::InconsistentGroupProtocol,
                &j.member_id,
            ));
        }
        let mut groups = self.lock();
        let g = groups.entry(j.group.clone()).or_insert_with(Group::new);
        if g.protocol_mismatch(&j) {
            return Pending::Now(Group::error_join(
                ResponseError::InconsistentGroupProtocol,
                &j.member_id,
            ));
        }
        let mut j = j;
        if j.member_id.is_empty() {
            j.member_id = self.new_member_id(&j.client_id);
            if j.require_known_member {
                g.pending
                    .insert(j.member_id.clone(), now + j.session_timeout);
                return Pending::Now(Group::error_join(
                    ResponseError::MemberIdRequired,
                    &j.member_id,
                ));
            }
        } else if !g.members.contains_key(&j.member_id) && g.pending.remove(&j.member_id).is_none()
        {
            return Pending::Now(Group::error_join(
                ResponseError::UnknownMemberId,
                &j.member_id,
            ));
        }
        Self::add_member(g, j, now)
    }

    /// Adds or updates a member that may join, and either answers at once (a known follower
    /// rejoining a stable group unchanged) or waits for the rebalance.
    fn add_member(g: &mut Group, j: Join, now: Instant) -> Pending<JoinAnswer> {
        let unchanged = g
            .members
            .get(&j.member_id)
            .is_some_and(|m| m.protocols == j.protocols);
        if g.state == GroupState::Stable
            && unchanged
            && g.leader.as_deref() != Some(j.member_id.as_str())
        {
            let m = g.members.get_mut(&j.member_id).expect("checked above");
            m.last_seen = now;
            return Pending::Now(JoinAnswer {
                error: 0,
                generation: g.generation,
                protocol_type: g.protocol_type.clone(),
                protocol_name: g.protocol.clone(),
                leader: g.leader.clone().unwrap_or_default(),
                member_id: j.member_id,
                members: Vec::new(),
            });
        }
        let (tx, rx) = oneshot::channel();
        let member = g.members.entry(j.member_id).or_insert_with(|| Member {
            group_instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: j.session_timeout,
            rebalance_timeout: j.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_seen: now,
            join: None,
            sync: None,
        });
        member.group_instance_id = j.group_instance_id;
        member.client_id = j.client_id;
        member.client_host = j.client_host;
        member.session_timeout = j.session_timeout;
        member.rebalance_timeout = j.rebalance_timeout;
        member.protocols = j.protocols;
        member.last_seen = now;
        // A second join of the same member replaces the first (whose receiver then fails).
        member.join = Some(tx);
        g.protocol_type = Some(j.protocol_type);
        if g.state != GroupState::PreparingRebalance {
            g.prepare_rebalance(now);
        }
        g.try_complete_join(false);
        Pending::Later(rx)
    }

    /// SyncGroup: the leader's call carries every member's assignment.
    pub(crate) fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncAnswer> {
        let fail = |e: ResponseError| {
            Pending::Now(SyncAnswer {
                error: e.code(),
                ..SyncAnswer::default()
            })
        };
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let (protocol_type, protocol_name) = (g.protocol_type.clone(), g.protocol.clone());
        let state = g.state;
        let is_leader = g.leader.as_deref() == Some(member_id);
        let member = match g.member_of_generation(member_id, generation) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        member.last_seen = now;
        match state {
            GroupState::Empty => fail(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ResponseError::RebalanceInProgress),
            GroupState::Stable => Pending::Now(SyncAnswer {
                error: 0,
                protocol_type,
                protocol_name,
                assignment: member.assignment.clone(),
            }),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                member.sync = Some(tx);
                if is_leader {
                    let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = assigned.remove(id).unwrap_or_default();
                        if let Some(tx) = m.sync.take() {
                            let _ = tx.send(SyncAnswer {
                                error: 0,
                                protocol_type: protocol_type.clone(),
                                protocol_name: protocol_name.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                    g.state = GroupState::Stable;
                }
                Pending::Later(rx)
            }
        }
    }

    /// Heartbeat: 0, or the error that tells the member to rejoin.
    pub(crate) fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return ResponseError::UnknownMemberId.code();
        };
        let state = g.state;
        match g.member_of_generation(member_id, generation) {
            Err(e) => e.code(),
            Ok(m) => {
                m.last_seen = now;
                if state == GroupState::PreparingRebalance {
                    ResponseError::RebalanceInProgress.code()
                } else {
                    0
                }
            }
        }
    }

    /// LeaveGroup: each member's outcome.
    pub(crate) fn leave(&self, group: &str, members: &[String], now: Instant) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![ResponseError::UnknownMemberId.code(); members.len()];
        };
        let mut lost = false;
        let out = members
            .iter()
            .map(|id| {
                if g.members.remove(id).is_some() || g.pending.remove(id).is_some() {
                    lost = true;
                    0
                } else {
                    ResponseError::UnknownMemberId.code()
                }
            })
            .collect();
        if lost {
            g.membership_lost(now);
        }
        out
    }

    /// Whether `member_id` of `generation` may commit offsets for `group` now: a member of
    /// the current generation (not while the leader's assignment is awaited), or anyone with
    /// generation -1 and no member id while the group has no members (a consumer that
    /// assigns itself partitions).
    pub(crate) fn may_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return if generation < 0 {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        };
        if generation < 0 && member_id.is_empty() && g.members.is_empty() {
            return Ok(());
        }
        if g.state == GroupState::CompletingRebalance && g.members.contains_key(member_id) {
            return Err(ResponseError::RebalanceInProgress);
        }
        g.member_of_generation(member_id, generation)?.last_seen = now;
        Ok(())
    }

    /// Removes members whose session timed out, expires unused member ids, and completes
    /// rebalances whose timeout passed. Called every few tens of milliseconds.
    pub(crate) fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            g.pending.retain(|_, until| *until > now);
            let preparing = g.state == GroupState::PreparingRebalance;
            let before = g.members.len();
            g.members.retain(|_, m| {
                (preparing && m.join.is_some())
                    || now.duration_since(m.last_seen) < m.session_timeout
            });
            if g.members.len() != before {
                tracing::info!(
                    members = g.members.len(),
                    removed = before - g.members.len(),
                    "kafka group members' sessions timed out"
                );
                g.membership_lost(now);
            }
            if g.rebalance_deadline.is_some_and(|d| d <= now) {
                g.try_complete_join(true);
            }
            if g.state == GroupState::PreparingRebalance {
                g.try_complete_join(false);
            }
        }
        groups.retain(|_, g| g.state != GroupState::Empty || !g.pending.is_empty());
    }

    /// Forgets every group (this node stopped being the coordinator): waiting joins and
    /// syncs fail, and members rejoin at the new coordinator.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// One group's state, if it has members.
    pub(crate) fn view(&self, group: &str) -> Option<GroupView> {
        self.lock().get(group).map(Group::view)
    }

    /// Every group with members or a rebalance under way, as a node's status shows it.
    pub(crate) fn memberships(&self) -> Vec<eventstream_core::replication::GroupMembership> {
        use eventstream_core::replication::{GroupMember, GroupMembership};
        let mut out: Vec<GroupMembership> = self
            .lock()
            .iter()
            .map(|(name, g)| {
                let v = g.view();
                GroupMembership {
                    group: name.clone(),
                    state: v.state.name().to_owned(),
                    generation: v.generation,
                    protocol_type: v.protocol_type,
                    protocol: v.protocol,
                    members: v
                        .members
                        .into_iter()
                        .map(|m| GroupMember {
                            member_id: m.member_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                        })
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Every group with members or a rebalance under way, with its protocol type and state.
    pub(crate) fn list(&self) -> Vec<(String, String, GroupState)> {
        let mut out: Vec<_> = self
            .lock()
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn join(member: &str, protocols: &[&str]) -> Join {
        Join {
            group: "g".into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("{member}:{p}"))))
                .collect(),
            require_known_member: true,
        }
    }

    fn now_answer<T: std::fmt::Debug>(p: Pending<T>) -> T {
        match p {
            Pending::Now(a) => a,
            Pending::Later(_) => panic!("expected an answer now"),
        }
    }

    fn later<T>(p: Pending<T>) -> oneshot::Receiver<T> {
        match p {
            Pending::Later(rx) => rx,
            Pending::Now(_) => panic!("expected to wait"),
        }
    }

    /// A member id from MEMBER_ID_REQUIRED, then the join with it.
    fn join_new(g: &Groups, protocols: &[&str], now: Instant) -> oneshot::Receiver<JoinAnswer> {
        let first = now_answer(g.join(join("", protocols), now));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        assert!(!first.member_id.is_empty());
        later(g.join(join(&first.member_id, protocols), now))
    }

    fn sync_all(g: &Groups, joined: &[JoinAnswer], now: Instant) -> Vec<SyncAnswer> {
        let leader = joined.iter().find(|a| a.member_id == a.leader).unwrap();
        let assignments: Vec<(String, Bytes)> = leader
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.clone(),
                    Bytes::from(format!("to {}", m.member_id)),
                )
            })
            .collect();
        let mut rxs: Vec<_> = joined
            .iter()
            .filter(|a| a.member_id != a.leader)
            .map(|a| later(g.sync("g", a.generation, &a.member_id, Vec::new(), now)))
            .collect();
        rxs.push(later(g.sync(
            "g",
            leader.generation,
            &leader.member_id,
            assignments,
            now,
        )));
        rxs.into_iter()
            .map(|mut rx| rx.try_recv().unwrap())
            .collect()
    }

    #[test]
    fn two_members_join_sync_and_get_their_assignments() {
        let g = Groups::default();
        let t = Instant::now();
        let mut a = join_new(&g, &["range", "roundrobin"], t);
        // One member: the rebalance completes at once.
        let a1 = a.try_recv().unwrap();
        assert_eq!((a1.error, a1.generation), (0, 1));
        assert_eq!(a1.leader, a1.member_id);
        assert_eq!(a1.members.len(), 1);
        sync_all(&g, std::slice::from_ref(&a1), t);
        assert_eq!(g.view("g").unwrap().state, GroupState::Stable);
        // A second member: the first learns of the rebalance from its heartbeat.
        let mut b = join_new(&g, &["roundrobin"], t);
        assert!(
            b.try_recv().is_err(),
            "waits for the first member to rejoin"
        );
        assert_eq!(
            g.heartbeat("g", 1, &a1.member_id, t),
            ResponseError::RebalanceInProgress.code()
        );
        let mut a = later(g.join(join(&a1.member_id, &["range", "roundrobin"]), t));
        let (a2, b2) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert_eq!((a2.generation, b2.generation), (2, 2));
        // Only roundrobin is common to both.
        assert_eq!(a2.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(a2.leader, a1.member_id, "the leader stays");
        assert_eq!(a2.members.len(), 2);
        assert!(b2.members.is_empty(), "only the leader gets the members");
        let synced = sync_all(&g, &[a2.clone(), b2.clone()], t);
        let mut got: Vec<_> = synced.iter().map(|s| s.assignment.clone()).collect();
        got.sort();
        let mut want = vec![
            Bytes::from(format!("to {}", a2.member_id)),
            Bytes::from(format!("to {}", b2.member_id)),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(g.heartbeat("g", 2, &b2.member_id, t), 0);
        assert_eq!(
            g.heartbeat("g", 1, &b2.member_id, t),
            ResponseError::IllegalGeneration.code()
        );
        assert_eq!(
            g.heartbeat("g", 2, "stranger", t),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn a_silent_member_times_out_and_the_rest_rebalance() {
        let g = Groups::default();
        let t = Instant::now();
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        sync_all(&g, std::slice::from_ref(&a1), t);
        let mut b = join_new(&g, &["range"], t);
        let a2 = later(g.join(join(&a1.member_id, &["range"]), t))
            .try_recv()
            .unwrap();
        let b2 = b.try_recv().unwrap();
        sync_all(&g, &[a2.clone(), b2.clone()], t);
        // `b` heartbeats, `a` (the leader) goes silent past its session timeout.
        let later_t = t + SESSION + Duration::from_millis(1);
        assert_eq!(g.heartbeat("g", 2, &b2.member_id, t + SESSION / 2), 0);
        g.tick(later_t);
        let v = g.view("g").unwrap();
        assert_eq!(v.members.len(), 1);
        assert_eq!(v.state, GroupState::PreparingRebalance);
        assert_eq!(
            g.heartbeat("g", 2, &b2.member_id, later_t),
            ResponseError::RebalanceInProgress.code()
        );
        let b3 = later(g.join(join(&b2.member_id, &["range"]), later_t))
            .try_recv()
            .unwrap();
        assert_eq!(
            (b3.generation, b3.leader.as_str()),
            (3, b2.member_id.as_str())
        );
        sync_all(&g, &[b3], later_t);
        assert_eq!(
            g.may_commit("g", 2, &b2.member_id, later_t),
            Err(ResponseError::IllegalGeneration)
        );
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_the_rebalance_timeout_is_removed() {
        let g = Groups::default();
        let t = Instant::now();
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        sync_all(&g, std::slice::from_ref(&a1), t);
        let mut b = join_new(&g, &["range"], t);
        // `a` keeps heartbeating but never rejoins.
        let mut now = t;
        while now < t + REBALANCE {
            now += Duration::from_secs(1);
            g.heartbeat("g", 1, &a1.member_id, now);
            g.tick(now);
        }
        let b2 = b.try_recv().expect("the rebalance completed without `a`");
        assert_eq!((b2.generation, b2.members.len()), (2, 1));
        assert_eq!(
            g.heartbeat("g", 2, &a1.member_id, now),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn leaving_rebalances_and_the_last_member_empties_the_group() {
        let g = Groups::default();
        let t = Instant::now();
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        sync_all(&g, std::slice::from_ref(&a1), t);
        assert_eq!(
            g.leave("g", &[a1.member_id.clone(), "nobody".into()], t),
            vec![0, ResponseError::UnknownMemberId.code()]
        );
        // Empty: a consumer without a group generation may commit now.
        assert_eq!(g.may_commit("g", -1, "", t), Ok(()));
        g.tick(t);
        assert!(g.view("g").is_none(), "an empty group is forgotten");
        assert_eq!(
            g.may_commit("g", 3, "x", t),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn joins_are_checked() {
        let g = Groups::default();
        let t = Instant::now();
        let code = |j: Join| now_answer(g.join(j, t)).error;
        let mut bad = join("", &["range"]);
        bad.group.clear();
        assert_eq!(code(bad), ResponseError::InvalidGroupId.code());
        let mut bad = join("", &["range"]);
        bad.session_timeout = Duration::from_millis(10);
        assert_eq!(code(bad), ResponseError::InvalidSessionTimeout.code());
        assert_eq!(
            code(join("made-up", &["range"])),
            ResponseError::UnknownMemberId.code()
        );
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        sync_all(&g, &[a1], t);
        let mut other = join("", &["sticky"]);
        assert_eq!(
            code(other.clone()),
            ResponseError::InconsistentGroupProtocol.code()
        );
        other.protocol_type = "connect".into();
        assert_eq!(code(other), ResponseError::InconsistentGroupProtocol.code());
        // Old clients (v0-v3) join in one step.
        let mut old = join("", &["range"]);
        old.require_known_member = false;
        assert!(matches!(g.join(old, t), Pending::Later(_)));
    }

    #[test]
    fn a_commit_needs_the_current_generation_and_no_pending_assignment() {
        let g = Groups::default();
        let t = Instant::now();
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        assert_eq!(
            g.may_commit("g", 1, &a1.member_id, t),
            Err(ResponseError::RebalanceInProgress)
        );
        sync_all(&g, std::slice::from_ref(&a1), t);
        assert_eq!(g.may_commit("g", 1, &a1.member_id, t), Ok(()));
        assert_eq!(
            g.may_commit("g", -1, "", t),
            Err(ResponseError::UnknownMemberId),
            "a group with members takes commits from its members only"
        );
    }

    #[test]
    fn memberships_show_each_groups_state_and_members_for_the_status() {
        let g = Groups::default();
        let t = Instant::now();
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        sync_all(&g, std::slice::from_ref(&a1), t);
        let m = g.memberships();
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].group.as_str(), m[0].state.as_str(), m[0].generation),
            ("g", "Stable", 1)
        );
        assert_eq!(
            (m[0].protocol_type.as_str(), m[0].protocol.as_str()),
            ("consumer", "range")
        );
        assert_eq!(m[0].members.len(), 1);
        assert_eq!(m[0].members[0].member_id, a1.member_id);
        assert_eq!(
            (
                m[0].members[0].client_id.as_str(),
                m[0].members[0].client_host.as_str()
            ),
            ("c", "/127.0.0.1")
        );
    }

    #[test]
    fn clearing_fails_waiting_joins() {
        let g = Groups::default();
        let t = Instant::now();
        let a1 = join_new(&g, &["range"], t).try_recv().unwrap();
        sync_all(&g, std::slice::from_ref(&a1), t);
        let mut b = join_new(&g, &["range"], t);
        g.clear();
        assert!(matches!(
            b.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(g.list().is_empty());
    }
}
