//! Membership on a replica: applying conf-change entries (raft-rs `apply_conf_change`), the
//! member table (id → addresses, from the configuration and from conf-change contexts),
//! checked membership proposals, leader transfer and leaving joint configurations.
//!
//! # Invariants
//! * The `ConfState` is never read back from a later WAL record: on open it is the bootstrap
//!   configuration the log starts from (the first conf-state record) plus every conf-change
//!   entry `<= commit`, re-applied in log order ([`replay_conf_entry`]); conf changes above the
//!   commit index are applied when they come out of raft as committed entries. So there is no
//!   window between applying a change and persisting a conf state in which a crash could leave
//!   them inconsistent: the log is the only record.
//! * Once this node is in its applied configuration, the member table holds exactly the ids
//!   of that configuration (incoming and outgoing voters, learners) whose address is known;
//!   before (a joiner replaying the log), every address it knows.

use super::Replica;
use crate::config::parse_member;
use crate::error::NodeError;
use eventstream_proto::admin::{AdminError, AdminRequest, MemberInfo, MemberList, PROMOTE_MAX_LAG};
use eventstream_proto::frame::ErrorCode;
use eventstream_proto::Member;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType,
};
use raft::{RawNode, StateRole};
use std::collections::BTreeMap;

/// Conf changes remembered for answering the requests that proposed them.
const APPLIED_CONF_KEPT: usize = 64;

/// The conf change an entry carries, if it is a conf-change entry.
pub(crate) fn decode_conf_change(e: &Entry) -> Option<Result<ConfChangeV2, String>> {
    match e.get_entry_type() {
        EntryType::EntryConfChangeV2 => {
            let mut cc = ConfChangeV2::default();
            Some(
                cc.merge_from_bytes(&e.data)
                    .map(|_| cc)
                    .map_err(|err| err.to_string()),
            )
        }
        EntryType::EntryConfChange => {
            let mut cc = ConfChange::default();
            Some(
                cc.merge_from_bytes(&e.data)
                    .map(|_| single(cc.get_change_type(), cc.node_id))
                    .map_err(|err| err.to_string()),
            )
        }
        EntryType::EntryNormal => None,
    }
}

/// Applies the conf change in `e` to `raw` and the address table `known`. Used both while
/// replaying the log on open and when a committed conf change is applied.
pub(crate) fn replay_conf_entry(
    raw: &mut RawNode<super::SnapStorage>,
    known: &mut BTreeMap<u64, Member>,
    e: &Entry,
) -> Result<ConfState, String> {
    let cc = match decode_conf_change(e) {
        Some(r) => r?,
        None => return Err("not a conf-change entry".into()),
    };
    let cs = raw.apply_conf_change(&cc).map_err(|err| err.to_string())?;
    let ctx = std::str::from_utf8(&e.context)
        .ok()
        .and_then(|s| parse_member(s).ok());
    for ch in cc.get_changes() {
        match ch.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                if let Some(m) = ctx.as_ref().filter(|m| m.id == ch.node_id) {
                    known.insert(m.id, m.clone());
                }
            }
            ConfChangeType::RemoveNode => {
                known.remove(&ch.node_id);
            }
        }
    }
    raw.mut_store().mem.wl().set_conf_state(cs.clone());
    Ok(cs)
}

fn conf_ids(cs: &ConfState) -> Vec<u64> {
    let mut ids: Vec<u64> = cs
        .voters
        .iter()
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners)
        .chain(&cs.learners_next)
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn single(kind: ConfChangeType, id: u64) -> ConfChangeV2 {
    let mut ch = ConfChangeSingle::default();
    ch.set_change_type(kind);
    ch.node_id = id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![ch].into());
    cc.set_transition(ConfChangeTransition::Auto);
    cc
}

impl Replica {
    /// The current configuration.
    pub fn conf_state(&self) -> ConfState {
        self.raw.raft.prs().conf().to_conf_state()
    }

    /// True while the configuration is joint (two voter sets).
    pub fn is_joint(&self) -> bool {
        !self
            .raw
            .raft
            .prs()
            .conf()
            .to_conf_state()
            .voters_outgoing
            .is_empty()
    }

    /// Voters of the configuration the log starts from.
    pub fn bootstrap_voters(&self) -> &[u64] {
        &self.bootstrap_voters
    }

    /// The member table: every member of the configuration whose address is known. A node not
    /// (yet) in its own applied configuration — a joiner replaying the log up to its own
    /// addition — uses every address it knows (its `peers` and the log's), so it can talk to
    /// a leader that joined after the bootstrap configuration.
    pub fn members(&self) -> Vec<Member> {
        let ids = conf_ids(&self.conf_state());
        if ids.binary_search(&self.id()).is_err() {
            return self.known.values().cloned().collect();
        }
        self.known
            .values()
            .filter(|m| ids.binary_search(&m.id).is_ok())
            .cloned()
            .collect()
    }

    /// True once after the member table changed (the driver then updates the transport).
    pub fn take_members_changed(&mut self) -> bool {
        std::mem::take(&mut self.members_changed)
    }

    /// Pushes the member table and learner flags to the shared metrics.
    pub(crate) fn sync_members(&mut self) {
        let cs = self.conf_state();
        let mut learners: Vec<u64> = cs
            .learners
            .iter()
            .chain(&cs.learners_next)
            .copied()
            .collect();
        learners.sort_unstable();
        learners.dedup();
        self.metrics.set_members(self.members(), learners);
        self.members_changed = true;
    }

    /// Applies a committed conf-change entry (the state machine has already counted it).
    pub(crate) fn apply_conf_entry(&mut self, e: &Entry) {
        let ok = match replay_conf_entry(&mut self.raw, &mut self.known, e) {
            Ok(cs) => {
                tracing::info!(id = self.id(), index = e.index, ?cs, "membership changed");
                true
            }
            Err(err) => {
                // Every replica refuses the same entry the same way: they stay identical.
                tracing::error!(index = e.index, error = %err, "conf change not applied");
                false
            }
        };
        if self.applied_conf.len() == APPLIED_CONF_KEPT {
            self.applied_conf.pop_front();
        }
        self.applied_conf.push_back((e.index, e.term, ok));
        self.sync_members();
    }

    /// What became of the conf change proposed at `index` in `term`: `None` while not applied,
    /// `Some(true)` applied, `Some(false)` lost (another entry took its place) or refused.
    pub fn conf_change_outcome(&self, index: u64, term: u64) -> Option<bool> {
        if self.sm.applied() < index {
            return None;
        }
        Some(
            self.applied_conf
                .iter()
                .any(|&(i, t, ok)| i == index && t == term && ok),
        )
    }

    /// The membership as this node sees it (match indexes only on the leader).
    pub fn member_list(&self) -> MemberList {
        let raft = &self.raw.raft;
        let cs = self.conf_state();
        let last = raft.raft_log.last_index();
        let leader = raft.state == StateRole::Leader;
        let members = self
            .members()
            .into_iter()
            .map(|m| {
                let matched = leader
                    .then(|| raft.prs().get(m.id))
                    .flatten()
                    .map(|p| p.matched);
                MemberInfo {
                    learner: cs.learners.contains(&m.id) || cs.learners_next.contains(&m.id),
                    id: m.id,
                    address: m.addr,
                    http_address: m.http_addr,
                    match_index: matched,
                    lag_entries: matched.map(|x| last.saturating_sub(x)),
                }
            })
            .collect();
        MemberList {
            leader_id: raft.leader_id,
            term: raft.term,
            members,
            bootstrap_voters: self.bootstrap_voters.clone(),
            joint: !cs.voters_outgoing.is_empty(),
        }
    }

    fn require_leader(&self) -> Result<(), AdminError> {
        if self.raw.raft.state == StateRole::Leader {
            return Ok(());
        }
        Err(match self.raw.raft.leader_id {
            0 => AdminError::new(ErrorCode::Unavailable, "no leader elected yet; retry"),
            l => AdminError::new(ErrorCode::NotLeader, format!("node {l} is the leader")),
        })
    }

    /// Checks a membership request against the current configuration and proposes it.
    /// Returns the log index of the proposed conf change (answer the request once
    /// [`conf_change_outcome`](Self::conf_change_outcome) is known).
    pub fn propose_member_change(&mut self, req: &AdminRequest) -> Result<u64, AdminError> {
        self.require_leader()?;
        if self.raw.raft.has_pending_conf() || self.is_joint() {
            return Err(AdminError::new(
                ErrorCode::ConfChangeInProgress,
                "another membership change is not applied yet; retry when `member list` shows it",
            ));
        }
        if self.raw.raft.lead_transferee.is_some() {
            return Err(AdminError::new(
                ErrorCode::ConfChangeInProgress,
                "a leader transfer is in progress; retry",
            ));
        }
        let cs = self.conf_state();
        let is_voter = |id: u64| cs.voters.contains(&id);
        let is_learner = |id: u64| cs.learners.contains(&id);
        let (cc, context) = match req {
            AdminRequest::AddMember { member, learner } => {
                let id = member.id;
                if let Some(other) = self
                    .members()
                    .into_iter()
                    .find(|m| m.id != id && m.addr == member.addr)
                {
                    return Err(AdminError::new(
                        ErrorCode::Refused,
                        format!(
                            "address {} already belongs to member {}",
                            member.addr, other.id
                        ),
                    ));
                }
                if is_voter(id) {
                    return Err(AdminError::new(
                        ErrorCode::Refused,
                        format!("member {id} is already a voter"),
                    ));
                }
                if is_learner(id) {
                    if *learner {
                        return Err(AdminError::new(
                            ErrorCode::Refused,
                            format!("member {id} is already a learner; add it without --learner to promote it"),
                        ));
                    }
                    let last = self.raw.raft.raft_log.last_index();
                    let matched = self.raw.raft.prs().get(id).map_or(0, |p| p.matched);
                    let lag = last.saturating_sub(matched);
                    if matched == 0 || lag > PROMOTE_MAX_LAG {
                        return Err(AdminError::new(
                            ErrorCode::Refused,
                            format!("learner {id} is {lag} entries behind (matched {matched} of {last}); promote it once it is within {PROMOTE_MAX_LAG}"),
                        ));
                    }
                    (
                        single(ConfChangeType::AddNode, id),
                        member.spec().into_bytes(),
                    )
                } else {
                    if !*learner {
                        return Err(AdminError::new(
                            ErrorCode::Refused,
                            format!("member {id} is new: it joins as a learner first (`member add --learner`), then is promoted"),
                        ));
                    }
                    (
                        single(ConfChangeType::AddLearnerNode, id),
                        member.spec().into_bytes(),
                    )
                }
            }
            AdminRequest::RemoveMember { id } => {
                let id = *id;
                if !is_voter(id) && !is_learner(id) {
                    return Err(AdminError::new(
                        ErrorCode::UnknownMember,
                        format!("no member has id {id}"),
                    ));
                }
                if id == self.id() {
                    return Err(AdminError::new(
                        ErrorCode::Refused,
                        format!("member {id} is the leader; move leadership first (`eventstream leader transfer`)"),
                    ));
                }
                if is_voter(id) && cs.voters.len() == 1 {
                    return Err(AdminError::new(
                        ErrorCode::Refused,
                        "cannot remove the last voter",
                    ));
                }
                (single(ConfChangeType::RemoveNode, id), Vec::new())
            }
            other => {
                return Err(AdminError::new(
                    ErrorCode::BadRequest,
                    format!("{other:?} is not a membership change"),
                ))
            }
        };
        self.propose_conf_change_v2(cc, context)
            .map_err(|e| AdminError::new(ErrorCode::Busy, format!("proposal refused: {e}")))
    }

    /// Proposes any `ConfChangeV2` (joint changes included) with `context`; returns its log
    /// index. Unchecked: [`propose_member_change`](Self::propose_member_change) is the checked
    /// path; the simulation uses this one for joint configurations.
    pub fn propose_conf_change_v2(
        &mut self,
        cc: ConfChangeV2,
        context: Vec<u8>,
    ) -> Result<u64, NodeError> {
        let before = self.raw.raft.raft_log.last_index();
        self.raw.propose_conf_change(context, cc)?;
        let idx = self.raw.raft.raft_log.last_index();
        if idx == before {
            return Err(NodeError::Raft(raft::Error::ProposalDropped));
        }
        Ok(idx)
    }

    /// Starts handing leadership to `to` (or the voter with the highest matched index).
    /// Returns the target; the transfer is done once [`leader_id`](Self::leader_id) is it.
    pub fn start_transfer(&mut self, to: Option<u64>) -> Result<u64, AdminError> {
        self.require_leader()?;
        let cs = self.conf_state();
        let me = self.id();
        let target = match to {
            Some(t) if t == me => return Ok(me),
            Some(t) => {
                if cs.learners.contains(&t) || cs.learners_next.contains(&t) {
                    return Err(AdminError::new(
                        ErrorCode::Refused,
                        format!("member {t} is a learner; only a voter can lead"),
                    ));
                }
                if !cs.voters.contains(&t) {
                    return Err(AdminError::new(
                        ErrorCode::UnknownMember,
                        format!("no voter has id {t}"),
                    ));
                }
                t
            }
            None => {
                let prs = self.raw.raft.prs();
                cs.voters
                    .iter()
                    .copied()
                    .filter(|&v| v != me)
                    .max_by_key(|&v| (prs.get(v).map_or(0, |p| p.matched), std::cmp::Reverse(v)))
                    .ok_or_else(|| {
                        AdminError::new(ErrorCode::Refused, "no other voter to hand leadership to")
                    })?
            }
        };
        self.raw.transfer_leader(target);
        Ok(target)
    }

    /// True while a leader transfer started here is in progress.
    pub fn transferring(&self) -> bool {
        self.raw.raft.lead_transferee.is_some()
    }

    /// A leader left in a joint configuration (e.g. elected after the previous leader entered
    /// it, or with an explicit transition) proposes leaving it. raft-rs auto-leaves only when
    /// the leader that applied the entering entry stays leader; this covers the rest.
    ///
    /// Also: raft-rs keeps a leader that removed itself in office but refuses its proposals;
    /// such a leader hands leadership to the most caught-up remaining voter (again after a
    /// transfer timed out).
    pub fn leave_joint_if_needed(&mut self) {
        if self.raw.raft.state == StateRole::Leader
            && !self.transferring()
            && !self.conf_state().voters.contains(&self.id())
            && !self.is_joint()
        {
            match self.start_transfer(None) {
                Ok(to) => tracing::info!(id = self.id(), to, "removed leader hands over"),
                Err(err) => tracing::warn!(error = %err.message, "removed leader cannot hand over"),
            }
        }
        if self.raw.raft.state != StateRole::Leader
            || !self.is_joint()
            || self.raw.raft.has_pending_conf()
        {
            return;
        }
        let cc = ConfChangeV2::default();
        match self.propose_conf_change_v2(cc, Vec::new()) {
            Ok(idx) => tracing::info!(
                id = self.id(),
                index = idx,
                "proposed leaving the joint configuration"
            ),
            Err(e) => {
                tracing::debug!(error = %e, "leaving the joint configuration: proposal refused")
            }
        }
    }
}
