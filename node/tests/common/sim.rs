//! The deterministic simulation `sim.rs` and `membership_sim.rs` drive: real replicas (raft +
//! WAL + state machine) over an in-memory network that drops, delays and partitions messages
//! under one seeded RNG, each stepped as the driver thread steps it (tick, Ready — synchronous
//! or through a simulated WAL thread —, leave a joint configuration if needed).
//!
//! Each test binary adds the checks it alone needs in its own `impl Sim` block.

use bytes::Bytes;
use eventstream_core::{Applier, DedupConfig, Dispatcher, Event, Priority, StatsHandle};
use eventstream_node::replica::PersistJob;
use eventstream_node::{
    answer_fetch, store_chunk, AckRegistry, CommittedStream, Member, NodeMetrics, Replica,
    ReplicaConfig, StateMachine, Stored, StreamSettings,
};
use eventstream_proto::codec;
use eventstream_proto::frame::{self, Kind, StreamFetch};
use eventstream_storage::Wal;
use raft::eraftpb::{Message, MessageType};
use raft::StateRole;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// xorshift64: the only source of chance in a simulation, so a seed replays identically.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// The member record of node `id` (an address nothing listens on: messages go through the
/// simulated network).
pub fn member(id: u64) -> Member {
    Member {
        id,
        addr: format!("127.0.0.1:{}", 20_000 + id),
        http_addr: None,
        kafka_addr: None,
    }
}

/// A block of events with these ids, as a proposal's data.
pub fn block(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let evs: Vec<Event> = ids
        .into_iter()
        .map(|id| {
            Event::new(
                format!("t{}", id % 3),
                Priority::from_index((id % 4) as u8).unwrap(),
                Bytes::from(id.to_le_bytes().to_vec()),
            )
            .with_id(id)
        })
        .collect();
    codec::encode_block(&evs).to_vec()
}

pub struct Node {
    /// `None` while the node is down.
    pub replica: Option<Replica>,
    pub stream: Arc<CommittedStream>,
    pub acks: Arc<AckRegistry>,
    pub dir: PathBuf,
    /// Voters to bootstrap with when the directory holds no log (a joiner: the cluster's).
    bootstrap: Vec<u64>,
    /// Asynchronous persistence: the log, moved out of the replica, and the persist jobs not
    /// yet fsynced (lost if the node crashes, as on a real machine).
    wal: Option<Wal>,
    jobs: Vec<PersistJob>,
}

pub struct Sim {
    pub nodes: BTreeMap<u64, Node>,
    /// (deliver at step, to, message)
    net: Vec<(u64, u64, Message)>,
    step: u64,
    rng: Rng,
    /// Chance in percent that a message is lost.
    pub drop_pct: u64,
    /// Messages take 1 to this many steps (0: always 1).
    pub max_delay: u64,
    /// Links (from, to) that lose every message.
    pub cut: HashSet<(u64, u64)>,
    /// Drive `handle_ready_async` + a simulated WAL thread (slow at random) instead of
    /// `handle_ready`.
    pub async_persist: bool,
    /// Run retention/compaction (`Replica::compact`) every this many steps (0 = never).
    pub compact_every: u64,
    /// Snapshot messages delivered / lost (reported back to the leader either way).
    pub snapshots_delivered: u64,
    pub snapshots_lost: u64,
    /// Drop this many snapshot messages (a failing transfer) before letting them through.
    pub drop_snapshots: u64,
    /// Every chunk a node copied: (to, from, what was stored).
    pub copies: Vec<(u64, u64, Stored)>,
    /// Replica settings of every node, also when restarted.
    tune: fn(&mut ReplicaConfig),
    tmp: tempfile::TempDir,
}

/// Opens the replica of node `id` on `dir`, bootstrapping with `bootstrap` if `dir` holds no
/// log.
fn open(
    id: u64,
    dir: &std::path::Path,
    bootstrap: &[u64],
    tune: fn(&mut ReplicaConfig),
) -> (Replica, Arc<CommittedStream>, Arc<AckRegistry>) {
    // Small segments and cache: retention, reads from the files and restarts over a log of
    // many segments all happen within a short simulation.
    let settings = StreamSettings {
        segment_bytes: 4 << 10,
        cache_bytes: 2 << 10,
    };
    let stream = CommittedStream::open(dir, settings).unwrap();
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
    // A distinct one-tick election timeout per node: raft-rs's own draw is unseeded, and a
    // fixed schedule keeps every run of a seed identical.
    cfg.election_tick_range = (10 + 3 * id as usize, 11 + 3 * id as usize);
    tune(&mut cfg);
    let mut members: Vec<Member> = bootstrap.iter().map(|&i| member(i)).collect();
    if !bootstrap.contains(&id) {
        members.push(member(id));
    }
    let metrics = Arc::new(NodeMetrics::new(id, members));
    (
        Replica::open(&cfg, sm, acks.clone(), metrics).unwrap(),
        stream,
        acks,
    )
}

impl Sim {
    /// Voters 1..=n with the default replica settings, on a reliable network (every message
    /// takes one step).
    pub fn new(n: u64, seed: u64) -> Sim {
        Sim::with(n, seed, |_| {})
    }

    /// Like [`Sim::new`], with `tune` applied to every replica's settings.
    pub fn with(n: u64, seed: u64, tune: fn(&mut ReplicaConfig)) -> Sim {
        let mut sim = Sim {
            nodes: BTreeMap::new(),
            net: Vec::new(),
            step: 0,
            rng: Rng::new(seed),
            drop_pct: 0,
            max_delay: 0,
            cut: HashSet::new(),
            async_persist: false,
            compact_every: 0,
            copies: Vec::new(),
            snapshots_delivered: 0,
            snapshots_lost: 0,
            drop_snapshots: 0,
            tune,
            tmp: tempfile::tempdir().unwrap(),
        };
        let voters: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            sim.start(id, &voters);
        }
        sim
    }

    /// Starts node `id` on a fresh directory (a joiner: `bootstrap` is the cluster's voters).
    pub fn start(&mut self, id: u64, bootstrap: &[u64]) {
        let dir = self.tmp.path().join(format!("n{id}"));
        let (r, stream, acks) = open(id, &dir, bootstrap, self.tune);
        self.nodes.insert(
            id,
            Node {
                replica: Some(r),
                stream,
                acks,
                dir,
                bootstrap: bootstrap.to_vec(),
                wal: None,
                jobs: Vec::new(),
            },
        );
    }

    /// Stops node `id` at once (no shutdown): what its WAL thread had not fsynced is lost.
    pub fn crash(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        n.replica = None;
        n.wal = None;
        n.jobs.clear();
    }

    /// Opens node `id` again from its directory (after a crash).
    pub fn restart(&mut self, id: u64) {
        let n = self.nodes.get_mut(&id).unwrap();
        let (r, stream, acks) = open(id, &n.dir, &n.bootstrap, self.tune);
        n.replica = Some(r);
        n.stream = stream;
        n.acks = acks;
        n.wal = None;
        n.jobs.clear();
    }

    /// The ids of the nodes that are up.
    pub fn up(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn r(&mut self, id: u64) -> &mut Replica {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.replica.as_mut())
            .expect("node is up")
    }

    pub fn run(&mut self, steps: u64) {
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
            self.copy_missing_stream();
            let compact = self.compact_every > 0 && now % self.compact_every == 0;
            let mut out = Vec::new();
            for node in self.nodes.values_mut() {
                let Some(r) = node.replica.as_mut() else {
                    continue;
                };
                r.tick();
                if !self.async_persist {
                    r.handle_ready(&mut |msgs| out.extend(msgs)).unwrap();
                    r.leave_joint_if_needed();
                    if compact {
                        assert!(r.compact().unwrap().is_none(), "owns its WAL");
                    }
                    continue;
                }
                if node.wal.is_none() {
                    node.wal = r.take_wal();
                }
                if compact {
                    if let Some(c) = r.compact().unwrap() {
                        let done = c.run(node.wal.as_mut().expect("wal taken above")).unwrap();
                        r.finish_compaction(done).unwrap();
                    }
                }
                let jobs = &mut node.jobs;
                r.handle_ready_async(&mut |msgs| out.extend(msgs), &mut |j| jobs.push(j))
                    .unwrap();
                r.leave_joint_if_needed();
                // The simulated WAL thread is sometimes slow: jobs pile up and share an fsync.
                if !node.jobs.is_empty() && self.rng.chance(60) {
                    let wal = node.wal.as_mut().expect("wal taken above");
                    let mut number = 0;
                    for j in node.jobs.drain(..) {
                        j.write_to(wal).unwrap();
                        number = j.number;
                        out.extend(j.messages);
                    }
                    wal.sync().unwrap();
                    r.on_persisted(number);
                }
            }
            for m in out {
                let mut lost = self.cut.contains(&(m.from, m.to))
                    || (self.drop_pct > 0 && self.rng.chance(self.drop_pct));
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    if !lost && self.drop_snapshots > 0 {
                        self.drop_snapshots -= 1;
                        lost = true;
                    }
                    // What the TCP transport does: report whether the snapshot went out.
                    if lost {
                        self.snapshots_lost += 1;
                    } else {
                        self.snapshots_delivered += 1;
                    }
                    if let Some(r) = self.nodes.get_mut(&m.from).and_then(|n| n.replica.as_mut()) {
                        r.report_snapshot(m.to, !lost);
                    }
                }
                if lost {
                    continue;
                }
                let delay = if self.max_delay > 0 {
                    1 + self.rng.next() % self.max_delay
                } else {
                    1
                };
                self.net.push((now + delay, m.to, m));
            }
        }
    }

    /// What a node's copy task does, one chunk per step: a node lacking stream offsets (a
    /// snapshot took it past them) fetches them from the leader, or another node, over a link
    /// that is not cut.
    fn copy_missing_stream(&mut self) {
        let up: Vec<u64> = self.up();
        let leader = self.leader();
        for &dst in &up {
            let Some(missing) = self.nodes[&dst].stream.missing() else {
                continue;
            };
            let mut sources: Vec<u64> = up.iter().copied().filter(|&s| s != dst).collect();
            sources.sort_by_key(|&s| Some(s) != leader);
            let Some(src) = sources
                .into_iter()
                .find(|&s| !self.cut.contains(&(dst, s)) && !self.cut.contains(&(s, dst)))
            else {
                continue;
            };
            let fetch = StreamFetch {
                req_id: self.step,
                from: missing.start,
                to: missing.end,
                max_bytes: 4096,
            };
            let answer = answer_fetch(&self.nodes[&src].stream, &fetch)
                .unwrap()
                .freeze();
            let (kind, body, _) = frame::decode_frame(&answer, usize::MAX).unwrap().unwrap();
            assert_eq!(kind, Kind::StreamChunk);
            let chunk = frame::decode_stream_chunk(&Bytes::copy_from_slice(body)).unwrap();
            let stored = store_chunk(&self.nodes[&dst].stream, &chunk).unwrap();
            self.copies.push((dst, src, stored));
        }
    }

    /// The first node (by id) that believes it leads.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .find(|r| r.role() == StateRole::Leader)
            .map(|r| r.id())
    }

    /// Runs until `f` holds (checked before each step); panics with every node's state if it
    /// never does.
    pub fn run_until(&mut self, what: &str, mut f: impl FnMut(&mut Sim) -> bool) {
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

    /// Runs one step, then until a node other than `except` leads; returns it.
    pub fn run_until_leader(&mut self, except: Option<u64>) -> u64 {
        self.run(1);
        self.run_until("a leader", |s| {
            s.leader().is_some_and(|l| Some(l) != except)
        });
        self.leader().unwrap()
    }

    /// The stream of node `id` as `(offset, event id)`, up to a gap it is still copying.
    pub fn stream_ids(&self, id: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let s = &self.nodes[&id].stream;
        let mut next = s.first_offset();
        while next < s.next_offset() {
            let n = s.read(next, usize::MAX, |_| true, &mut out);
            if n == next {
                break;
            }
            next = n;
        }
        out.into_iter().map(|(o, e)| (o, e.id.0)).collect()
    }
}
