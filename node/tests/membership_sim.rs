//! Deterministic simulation of membership changes and leader transfer: real replicas (raft +
//! WAL + state machine) over an in-memory network with seeded delays, driven like the driver
//! thread drives them (handle_ready, then leave a joint configuration if needed).

use bytes::Bytes;
use eventstream_core::{Applier, DedupConfig, Dispatcher, Event, Priority, StatsHandle};
use eventstream_node::replica::PersistJob;
use eventstream_node::{
    AckRegistry, CommittedStream, Member, NodeMetrics, Replica, ReplicaConfig, StateMachine,
};
use eventstream_proto::admin::AdminRequest;
use eventstream_proto::codec;
use eventstream_proto::frame::ErrorCode;
use eventstream_storage::Wal;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Message,
};
use raft::StateRole;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn member(id: u64) -> Member {
    Member {
        id,
        addr: format!("127.0.0.1:{}", 20_000 + id),
        http_addr: None,
    }
}

struct SimNode {
    replica: Option<Replica>,
    stream: Arc<CommittedStream>,
    dir: std::path::PathBuf,
    /// Voters to bootstrap with when the directory holds no log (a joiner: the cluster's).
    bootstrap: Vec<u64>,
    /// Asynchronous persistence: the log moved out of the replica, and jobs not yet fsynced
    /// (lost in a crash).
    wal: Option<Wal>,
    jobs: Vec<PersistJob>,
}

struct Sim {
    nodes: BTreeMap<u64, SimNode>,
    net: Vec<(u64, u64, Message)>,
    step: u64,
    rng: Rng,
    max_delay: u64,
    /// Drive `handle_ready_async` + a simulated WAL thread (slow at random).
    async_persist: bool,
    tmp: tempfile::TempDir,
}

fn open(id: u64, dir: &std::path::Path, bootstrap: &[u64]) -> (Replica, Arc<CommittedStream>) {
    let stream = CommittedStream::new();
    let acks = AckRegistry::new();
    let applier = Applier::new(
        DedupConfig::default(),
        Arc::new(Dispatcher::new()),
        StatsHandle::detached().register("sim"),
        Duration::from_millis(10),
    );
    let sm = StateMachine::new(
        DedupConfig::default(),
        applier,
        stream.clone(),
        acks.clone(),
    );
    let mut cfg = ReplicaConfig::new(id, bootstrap.to_vec(), dir);
    // The simulation's own timing (its schedules are tuned to it), not the node's defaults.
    cfg.election_tick = 10;
    cfg.heartbeat_tick = 2;
    cfg.election_tick_range = (10 + 3 * id as usize, 11 + 3 * id as usize);
    let mut members: Vec<Member> = bootstrap.iter().map(|&i| member(i)).collect();
    if !bootstrap.contains(&id) {
        members.push(member(id));
    }
    let metrics = Arc::new(NodeMetrics::new(id, members));
    (Replica::open(&cfg, sm, acks, metrics).unwrap(), stream)
}

impl Sim {
    fn new(n: u64, seed: u64) -> Sim {
        let mut s = Sim {
            nodes: BTreeMap::new(),
            net: Vec::new(),
            step: 0,
            rng: Rng(seed | 1),
            max_delay: 3,
            async_persist: false,
            tmp: tempfile::tempdir().unwrap(),
        };
        let voters: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            s.start(id, &voters);
        }
        s
    }

    /// Starts node `id` (fresh, or from its directory).
    fn start(&mut self, id: u64, bootstrap: &[u64]) {
        let dir = self.tmp.path().join(format!("n{id}"));
        let (r, stream) = open(id, &dir, bootstrap);
        self.nodes.insert(
            id,
            SimNode {
                replica: Some(r),
                stream,
                dir,
                bootstrap: bootstrap.to_vec(),
                wal: None,
                jobs: Vec::new(),
            },
        );
    }

    /// Stops node `id` at once: what its WAL thread had not fsynced is lost.
    fn crash(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.replica = None;
        n.wal = None;
        n.jobs.clear();
    }

    fn restart(&mut self, id: u64) {
        let n = &self.nodes[&id];
        let (dir, bootstrap) = (n.dir.clone(), n.bootstrap.clone());
        let (r, stream) = open(id, &dir, &bootstrap);
        let n = self.nodes.get_mut(&id).unwrap();
        n.replica = Some(r);
        n.stream = stream;
    }

    fn r(&mut self, id: u64) -> &mut Replica {
        self.nodes.get_mut(&id).unwrap().replica.as_mut().unwrap()
    }

    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step += 1;
            let now = self.step;
            let mut due = Vec::new();
            self.net.retain(|(at, to, m)| {
                if *at <= now {
                    due.push((*to, m.clone()));
                    false
                } else {
                    true
                }
            });
            for (to, m) in due {
                if let Some(r) = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()) {
                    r.step(m);
                }
            }
            let mut out = Vec::new();
            for n in self.nodes.values_mut() {
                let Some(r) = n.replica.as_mut() else {
                    continue;
                };
                r.tick();
                r.handle_ready(&mut |msgs| out.extend(msgs)).unwrap();
                r.leave_joint_if_needed();
            }
            for m in out {
                let delay = 1 + self.rng.next() % self.max_delay;
                self.net.push((now + delay, m.to, m));
            }
        }
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .find(|r| r.role() == StateRole::Leader)
            .map(|r| r.id())
    }

    fn run_until(&mut self, what: &str, mut f: impl FnMut(&mut Sim) -> bool) {
        for _ in 0..5000 {
            if f(self) {
                return;
            }
            self.run(1);
        }
        let state: Vec<String> = self
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| format!("{r:?} term {} conf {:?}", r.term(), r.conf_state()))
            .collect();
        panic!("simulation never reached: {what}; nodes: {state:#?}");
    }

    fn run_until_leader(&mut self) -> u64 {
        self.run_until("a leader", |s| s.leader().is_some());
        self.leader().unwrap()
    }

    /// Proposes events at the leader; retries while a leader refuses them (during a transfer,
    /// or a leader that has just removed itself and is handing over).
    fn publish(&mut self, ids: std::ops::Range<u64>) {
        let evs: Vec<Event> = ids
            .map(|id| {
                Event::new("t", Priority::High, Bytes::from(id.to_le_bytes().to_vec())).with_id(id)
            })
            .collect();
        let data = codec::encode_block(&evs).to_vec();
        for _ in 0..5000 {
            let leader = self.run_until_leader();
            if self.r(leader).propose(data.clone()).is_ok() {
                return;
            }
            self.run(1);
        }
        panic!("no leader accepted the proposal");
    }

    fn ids(&self, id: u64) -> Vec<u64> {
        let mut out = Vec::new();
        self.nodes[&id]
            .stream
            .read(0, usize::MAX, |_| true, &mut out);
        out.into_iter().map(|(_, e)| e.id.0).collect()
    }

    /// Runs until every running node holds `n` events, then checks they agree.
    fn converge(&mut self, n: usize) {
        self.run_until("every node holds every event", |s| {
            let running: Vec<u64> = s
                .nodes
                .iter()
                .filter(|(_, n)| n.replica.is_some())
                .map(|(id, _)| *id)
                .collect();
            running.iter().all(|&id| s.ids(id).len() == n)
        });
        let running: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some())
            .map(|(id, _)| *id)
            .collect();
        let first = self.ids(running[0]);
        for id in &running[1..] {
            assert_eq!(self.ids(*id), first, "node {id} diverged");
        }
    }

    fn voters(&mut self, id: u64) -> Vec<u64> {
        let mut v = self.r(id).conf_state().voters.clone();
        v.sort_unstable();
        v
    }

    fn learners(&mut self, id: u64) -> Vec<u64> {
        self.r(id).conf_state().learners.clone()
    }
}

fn add(id: u64, learner: bool) -> AdminRequest {
    AdminRequest::AddMember {
        member: member(id),
        learner,
    }
}

/// Grows 3 → 4 (learner, catch-up, promotion), then removes a founding voter; every node,
/// including one restarted from its log, derives the same configuration; no event is lost.
#[test]
fn learner_joins_catches_up_is_promoted_and_a_voter_is_removed() {
    for seed in [1, 7, 42] {
        let mut s = Sim::new(3, seed);
        s.publish(1..101);
        s.converge(100);
        let leader = s.run_until_leader();
        let idx = s.r(leader).propose_member_change(&add(4, true)).unwrap();
        // Promoting before it caught up, or a second change while one is pending, is refused.
        let e = s
            .r(leader)
            .propose_member_change(&add(5, true))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ConfChangeInProgress, "{}", e.message);
        s.run_until("learner 4 added", |s| s.r(leader).applied_index() >= idx);
        let term = s.r(leader).term();
        assert_eq!(s.r(leader).conf_change_outcome(idx, term), Some(true));
        assert_eq!(s.learners(leader), vec![4]);
        let e = s
            .r(leader)
            .propose_member_change(&add(4, false))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Refused, "{}", e.message);
        assert!(e.message.contains("behind"), "{}", e.message);
        // The joiner starts with the bootstrap voters and an empty log.
        s.start(4, &[1, 2, 3]);
        s.publish(101..201);
        s.converge(200);
        assert_eq!(
            s.learners(4),
            vec![4],
            "the joiner learned its role from the log"
        );
        assert_eq!(s.r(4).role(), StateRole::Follower);
        // Promote once the leader has seen the learner's progress (as `member add` waits).
        s.run_until("the leader sees the learner caught up", |s| {
            s.r(leader)
                .member_list()
                .members
                .iter()
                .any(|m| m.id == 4 && m.match_index.unwrap_or(0) > 0 && m.lag_entries == Some(0))
        });
        let idx = s.r(leader).propose_member_change(&add(4, false)).unwrap();
        s.run_until("4 promoted", |s| s.r(leader).applied_index() >= idx);
        assert_eq!(s.voters(leader), vec![1, 2, 3, 4]);
        // Remove a founding voter that is not the leader.
        let victim = (1..=3).find(|&i| i != leader).unwrap();
        let idx = s
            .r(leader)
            .propose_member_change(&AdminRequest::RemoveMember { id: victim })
            .unwrap();
        s.run_until("voter removed", |s| s.r(leader).applied_index() >= idx);
        s.crash(victim);
        s.publish(201..301);
        s.converge(300);
        let expect: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != victim).collect();
        for id in &expect {
            s.run_until("conf applied everywhere", |s| s.voters(*id) == expect);
        }
        // A restart derives the configuration from the log (bootstrap + conf changes).
        s.crash(4);
        s.restart(4);
        assert_eq!(s.voters(4), expect);
        assert_eq!(
            s.r(4).members().iter().map(|m| m.id).collect::<Vec<_>>(),
            expect
        );
        s.publish(301..351);
        s.converge(350);
    }
}

fn joint_change(add: u64, remove: u64, transition: ConfChangeTransition) -> ConfChangeV2 {
    let mut a = ConfChangeSingle::default();
    a.set_change_type(ConfChangeType::AddNode);
    a.node_id = add;
    let mut r = ConfChangeSingle::default();
    r.set_change_type(ConfChangeType::RemoveNode);
    r.node_id = remove;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![a, r].into());
    cc.set_transition(transition);
    cc
}

/// A joint configuration (replace a voter in one step) whose leader crashes right after the
/// entering entry commits: the next leader leaves the joint configuration.
#[test]
fn leader_crash_during_a_joint_configuration_is_resolved() {
    for (seed, transition) in [
        (3, ConfChangeTransition::Auto),
        (5, ConfChangeTransition::Explicit),
        (11, ConfChangeTransition::Implicit),
    ] {
        let mut s = Sim::new(3, seed);
        s.publish(1..51);
        s.converge(50);
        let leader = s.run_until_leader();
        let idx = s.r(leader).propose_member_change(&add(4, true)).unwrap();
        s.run_until("learner added", |s| s.r(leader).applied_index() >= idx);
        s.start(4, &[1, 2, 3]);
        s.converge(50);
        let victim = (1..=3).find(|&i| i != leader).unwrap();
        let ctx = format!("4={}", member(4).addr).into_bytes();
        let idx = s
            .r(leader)
            .propose_conf_change_v2(joint_change(4, victim, transition), ctx)
            .unwrap();
        s.run_until("joint configuration entered", |s| {
            s.r(leader).applied_index() >= idx
        });
        assert!(s.r(leader).is_joint());
        s.crash(leader);
        let new_leader = s.run_until_leader();
        assert_ne!(new_leader, leader);
        let expect: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != victim).collect();
        s.run_until("joint configuration left", |s| {
            !s.r(new_leader).is_joint() && s.voters(new_leader) == expect
        });
        // If the removed voter was elected meanwhile, it hands leadership over once its
        // removal is applied.
        s.run_until("a leader of the new configuration", |s| {
            s.r(victim).role() != StateRole::Leader
                && s.leader().is_some_and(|l| expect.contains(&l))
        });
        s.crash(victim);
        s.restart(leader);
        s.publish(51..101);
        s.converge(100);
        for id in expect.clone() {
            s.run_until("every node left the joint configuration", |s| {
                !s.r(id).is_joint() && s.voters(id) == expect
            });
        }
    }
}

/// Leader transfer to a named voter and to the most caught-up one; term + 1, no loss.
#[test]
fn leader_transfer_moves_leadership_to_a_caught_up_voter() {
    let mut s = Sim::new(3, 9);
    s.publish(1..51);
    s.converge(50);
    let leader = s.run_until_leader();
    let term = s.r(leader).term();
    let target = (1..=3).find(|&i| i != leader).unwrap();
    assert_eq!(s.r(leader).start_transfer(Some(target)).unwrap(), target);
    s.run_until("transfer done", |s| s.leader() == Some(target));
    assert_eq!(s.r(target).term(), term + 1);
    let target2 = s.r(target).start_transfer(None).unwrap();
    assert_ne!(target2, target);
    s.run_until("second transfer done", |s| s.leader() == Some(target2));
    assert_eq!(s.r(target2).term(), term + 2);
    // Bad targets are refused with a clear error.
    let e = s.r(target2).start_transfer(Some(9)).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownMember);
    s.run(30);
    let e = s.r(target).start_transfer(None).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotLeader);
    s.publish(51..101);
    s.converge(100);
}

/// Unsafe or contradictory requests are refused with the right code.
#[test]
fn unsafe_membership_requests_are_refused() {
    let mut s = Sim::new(3, 13);
    let leader = s.run_until_leader();
    s.run(30);
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let code = |s: &mut Sim, id: u64, req: AdminRequest| {
        s.r(id).propose_member_change(&req).unwrap_err().code
    };
    assert_eq!(
        code(&mut s, leader, AdminRequest::RemoveMember { id: 9 }),
        ErrorCode::UnknownMember
    );
    assert_eq!(
        code(&mut s, leader, AdminRequest::RemoveMember { id: leader }),
        ErrorCode::Refused
    );
    assert_eq!(
        code(&mut s, leader, add(follower, true)),
        ErrorCode::Refused
    );
    assert_eq!(code(&mut s, leader, add(7, false)), ErrorCode::Refused);
    assert_eq!(code(&mut s, follower, add(7, true)), ErrorCode::NotLeader);
    // The same address as an existing member.
    let dup = AdminRequest::AddMember {
        member: Member {
            id: 7,
            addr: member(follower).addr,
            http_addr: None,
        },
        learner: true,
    };
    assert_eq!(code(&mut s, leader, dup), ErrorCode::Refused);
}

/// The same growth and shrink with asynchronous persistence, crashing nodes (losing what their
/// WAL thread had not fsynced) right around each conf change: the configuration a restarted
/// node derives from its log always matches the cluster's, and no event is lost.
#[test]
fn membership_changes_survive_crashes_with_asynchronous_persistence() {
    for seed in [2, 17, 99] {
        let mut s = Sim::new(3, seed);
        s.async_persist = true;
        s.publish(1..51);
        s.converge(50);
        let leader = s.run_until_leader();
        let follower = (1..=3).find(|&i| i != leader).unwrap();
        let idx = s.r(leader).propose_member_change(&add(4, true)).unwrap();
        // Crash a follower while the change is in flight, restart it a little later.
        s.run(1 + seed % 4);
        s.crash(follower);
        s.run_until("learner added", |s| s.r(leader).applied_index() >= idx);
        s.restart(follower);
        s.start(4, &[1, 2, 3]);
        s.converge(50);
        // Crash the joiner mid-catch-up and restart it from its own (partial) log.
        s.publish(51..101);
        s.run(3 + seed % 5);
        s.crash(4);
        s.restart(4);
        s.converge(100);
        assert_eq!(s.learners(4), vec![4]);
        let leader = s.run_until_leader();
        let idx = loop {
            match s.r(leader).propose_member_change(&add(4, false)) {
                Ok(i) => break i,
                Err(e)
                    if e.code == ErrorCode::Refused
                        || e.code == ErrorCode::ConfChangeInProgress =>
                {
                    s.run(5)
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        s.run(1 + seed % 3);
        s.crash(4);
        s.restart(4);
        s.run_until("4 promoted", |s| s.r(leader).applied_index() >= idx);
        s.publish(101..151);
        s.converge(150);
        for id in 1..=4 {
            s.run_until("every node sees 4 voters", |s| {
                s.voters(id) == vec![1, 2, 3, 4]
            });
        }
        // Restart everyone from their logs: the configuration is derived, not stored (up to
        // the persisted commit index; a promotion whose commit was not fsynced yet is applied
        // again once the commit index is learned).
        for id in 1..=4 {
            s.crash(id);
            s.restart(id);
        }
        for id in 1..=4 {
            s.run_until("every node sees 4 voters after restarting", |s| {
                s.voters(id) == vec![1, 2, 3, 4]
            });
        }
        s.publish(151..201);
        s.converge(200);
    }
}
