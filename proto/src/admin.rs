//! Cluster administration: membership changes (`member add|remove|list`) and leader transfer.
//!
//! Requests travel over the client protocol (frame kinds 40–44, see `docs/protocol.md`); a
//! node's leader checks them and answers once the change is applied (membership) or a new
//! leader is known (transfer). This module holds the messages and their codecs.
//!
//! # Invariants
//! * One membership change at a time: a request while a change is proposed but not applied, or
//!   while the configuration is joint, is refused (`ConfChangeInProgress`), never queued —
//!   raft-rs would silently turn a second pending change into an empty entry.
//! * A new member joins as a learner and is promoted only when nearly caught up
//!   ([`PROMOTE_MAX_LAG`]); the last voter and the current leader are never removed.
//! * The member's addresses travel in the conf-change entry's context (`ID=HOST:PORT[@HTTP]`),
//!   so every replica — and a replica replaying its log after a restart — learns them from the
//!   log itself.

use crate::error::DecodeError;
use crate::frame::{self, ErrorCode, Kind};
use crate::member::{parse_member, Member};
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A learner may be promoted when its matched index is at most this many entries behind the
/// leader's last index (entries carry many events each).
pub const PROMOTE_MAX_LAG: u64 = 64;

/// An administrative request, as the driver receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// Add `member` as a learner (`learner = true`), or promote the learner with its id.
    AddMember {
        /// Id and addresses.
        member: Member,
        /// Add as a learner (a new id must join as one).
        learner: bool,
    },
    /// Remove member `id` (voter or learner).
    RemoveMember {
        /// Raft id.
        id: u64,
    },
    /// The current membership (answered by the leader).
    ListMembers,
    /// Hand leadership to `to`, or to the most caught-up voter.
    TransferLeader {
        /// Target voter; `None` picks the voter with the highest matched index.
        to: Option<u64>,
        /// Give up after this long.
        timeout: Duration,
        /// Only if this node leads: a request that reaches another leader (a client follows
        /// `NotLeader` redirects) is refused and changes nothing. What `leader transfer
        /// --if-leader` (the Kubernetes preStop hook) needs: "move leadership off *this* pod".
        only_if_leader: Option<u64>,
    },
}

/// One member in a [`MemberList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Raft id.
    pub id: u64,
    /// Peer and client address.
    pub address: String,
    /// HTTP address, if known.
    pub http_address: Option<String>,
    /// Non-voting member.
    pub learner: bool,
    /// The leader's view of its matched index.
    pub match_index: Option<u64>,
    /// Entries behind the leader's last index.
    pub lag_entries: Option<u64>,
}

/// The membership as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// The answering leader.
    pub leader_id: u64,
    /// Its term.
    pub term: u64,
    /// Members, by id.
    pub members: Vec<MemberInfo>,
    /// Voters of the configuration the log starts from (what a joining node starts with before
    /// it applies the log's membership changes).
    pub bootstrap_voters: Vec<u64>,
    /// True while the configuration is joint (between two voter sets).
    pub joint: bool,
}

/// A successful administrative reply (JSON in an `AdminOk` frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminReply {
    /// Membership after the change (or the current one for `ListMembers`).
    Members(MemberList),
    /// Leadership moved.
    Transferred {
        /// The new leader.
        leader_id: u64,
        /// Its term.
        term: u64,
    },
}

/// A refused or failed administrative request: the error code sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// Error class (`NotLeader` redirects the client).
    pub code: ErrorCode,
    /// What went wrong, for the operator.
    pub message: String,
}

impl AdminError {
    /// An error of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AdminError {
            code,
            message: message.into(),
        }
    }
}

/// Encodes a request frame with request id `req_id`.
pub fn put_request(buf: &mut BytesMut, req_id: u64, req: &AdminRequest) {
    match req {
        AdminRequest::AddMember { member, learner } => {
            frame::put_frame_with(buf, Kind::MemberAdd, |b| {
                b.put_u64_le(req_id);
                b.put_u8(u8::from(*learner));
                let spec = member.spec();
                b.put_u16_le(spec.len() as u16);
                b.put_slice(spec.as_bytes());
            })
        }
        AdminRequest::RemoveMember { id } => frame::put_frame_with(buf, Kind::MemberRemove, |b| {
            b.put_u64_le(req_id);
            b.put_u64_le(*id);
        }),
        AdminRequest::ListMembers => frame::put_frame_with(buf, Kind::MemberList, |b| {
            b.put_u64_le(req_id);
        }),
        AdminRequest::TransferLeader {
            to,
            timeout,
            only_if_leader,
        } => frame::put_frame_with(buf, Kind::LeaderTransfer, |b| {
            b.put_u64_le(req_id);
            b.put_u64_le(to.unwrap_or(0));
            b.put_u32_le(timeout.as_millis().min(u32::MAX as u128) as u32);
            if let Some(id) = only_if_leader {
                b.put_u64_le(*id);
            }
        }),
    }
}

/// Decodes a request frame of kind `kind`: `(req_id, request)`. A malformed member
/// specification is a `DecodeError` naming it (the server answers `BadRequest`).
pub fn decode_request(kind: Kind, body: &[u8]) -> Result<(u64, AdminRequest), DecodeError> {
    let mut r = crate::codec::Reader::new(body);
    let req_id = r.u64()?;
    let req = match kind {
        Kind::MemberAdd => {
            let learner = match r.u8()? {
                0 => false,
                1 => true,
                other => {
                    return Err(DecodeError::Invalid {
                        field: "learner flag",
                        reason: other.to_string(),
                    })
                }
            };
            let spec = r.str16("member")?;
            let member = parse_member(spec).map_err(|e| DecodeError::Invalid {
                field: "member",
                reason: e.to_string(),
            })?;
            AdminRequest::AddMember { member, learner }
        }
        Kind::MemberRemove => {
            let id = r.u64()?;
            if id == 0 {
                return Err(DecodeError::Invalid {
                    field: "member id",
                    reason: "0 is reserved".into(),
                });
            }
            AdminRequest::RemoveMember { id }
        }
        Kind::MemberList => AdminRequest::ListMembers,
        Kind::LeaderTransfer => {
            let to = r.u64()?;
            let ms = r.u32()?;
            // Optional, so requests of earlier clients (without it) still decode.
            let only_if_leader = if r.remaining() >= 8 {
                Some(r.u64()?).filter(|&id| id != 0)
            } else {
                None
            };
            AdminRequest::TransferLeader {
                to: (to != 0).then_some(to),
                timeout: Duration::from_millis(u64::from(ms.max(1))),
                only_if_leader,
            }
        }
        other => return Err(DecodeError::Kind(other as u8)),
    };
    Ok((req_id, req))
}

/// Encodes an `AdminOk` frame: `u64 req_id | JSON`.
pub fn put_reply(buf: &mut BytesMut, req_id: u64, reply: &AdminReply) {
    frame::put_frame_with(buf, Kind::AdminOk, |b| {
        b.put_u64_le(req_id);
        // Plain data with string keys: serialization cannot fail.
        b.extend_from_slice(&serde_json::to_vec(reply).unwrap_or_default());
    });
}

/// Decodes the JSON part of an `AdminOk` body (after the request id).
pub fn decode_reply(json: &[u8]) -> Result<AdminReply, DecodeError> {
    serde_json::from_slice(json).map_err(|e| DecodeError::Invalid {
        field: "admin reply json",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip_and_bad_members_are_named() {
        let reqs = [
            AdminRequest::AddMember {
                member: Member {
                    id: 4,
                    addr: "10.0.0.4:7000".into(),
                    http_addr: Some("10.0.0.4:8080".into()),
                    kafka_addr: None,
                },
                learner: true,
            },
            AdminRequest::RemoveMember { id: 2 },
            AdminRequest::ListMembers,
            AdminRequest::TransferLeader {
                to: Some(3),
                timeout: Duration::from_secs(5),
                only_if_leader: None,
            },
            AdminRequest::TransferLeader {
                to: None,
                timeout: Duration::from_millis(300),
                only_if_leader: Some(2),
            },
        ];
        for (i, req) in reqs.iter().enumerate() {
            let mut b = BytesMut::new();
            put_request(&mut b, i as u64, req);
            let (k, body, _) = frame::decode_frame(&b, 1024).unwrap().unwrap();
            assert_eq!(decode_request(k, body).unwrap(), (i as u64, req.clone()));
        }
        let mut b = BytesMut::new();
        frame::put_frame_with(&mut b, Kind::MemberAdd, |b| {
            b.put_u64_le(1);
            b.put_u8(0);
            b.put_u16_le(4);
            b.put_slice(b"4=x:");
        });
        let (k, body, _) = frame::decode_frame(&b, 1024).unwrap().unwrap();
        let err = decode_request(k, body).unwrap_err().to_string();
        assert!(err.contains("member") && err.contains("port"), "{err}");
    }

    #[test]
    fn replies_round_trip() {
        let r = AdminReply::Transferred {
            leader_id: 2,
            term: 7,
        };
        let mut b = BytesMut::new();
        put_reply(&mut b, 9, &r);
        let (k, body, _) = frame::decode_frame(&b, 1024).unwrap().unwrap();
        assert_eq!(k, Kind::AdminOk);
        let (id, rest) = frame::decode_req_id(body).unwrap();
        assert_eq!((id, decode_reply(rest).unwrap()), (9, r));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            for k in [Kind::MemberAdd, Kind::MemberRemove, Kind::MemberList, Kind::LeaderTransfer] {
                let _ = decode_request(k, &data);
            }
            let _ = decode_reply(&data);
        }
    }
}
