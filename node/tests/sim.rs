//! Deterministic multi-node simulation: real replicas (raft + WAL + state machine) over an
//! in-memory network that drops, delays and partitions messages under a seeded RNG.

mod common;

use common::sim::{block, Rng, Sim};
use eventstream_core::replication::ReplicationSource;
use eventstream_node::ReplicaConfig;
use std::collections::HashSet;

impl Sim {
    fn is_up(&self, id: u64) -> bool {
        self.nodes[&id].replica.is_some()
    }

    fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn propose_events(&mut self, leader: u64, ids: &[u64]) {
        self.r(leader).propose(block(ids.iter().copied())).unwrap();
    }

    fn assert_converged(&mut self, expect_ids: &HashSet<u64>) {
        self.run(300);
        let reference = self.stream_ids(1);
        let got: HashSet<u64> = reference.iter().map(|x| x.1).collect();
        assert_eq!(
            got.len(),
            reference.len(),
            "an event appears twice in the stream"
        );
        assert_eq!(&got, expect_ids);
        for (i, (o, _)) in reference.iter().enumerate() {
            assert_eq!(*o, i as u64, "offsets are dense");
        }
        for id in 2..=self.nodes.len() as u64 {
            assert_eq!(
                self.stream_ids(id),
                reference,
                "node {id} differs from node 1"
            );
        }
    }
}

#[test]
fn three_nodes_elect_replicate_and_dedup_identically() {
    let mut sim = Sim::new(3, 7);
    let leader = sim.run_until_leader(None);
    let acks = sim.nodes[&leader].acks.clone();
    let (_, mut rx) = acks.register(&[1, 2, 3]);
    let mut expect = HashSet::new();
    for batch in 0..20u64 {
        let ids: Vec<u64> = (batch * 10 + 1..=batch * 10 + 10).collect();
        expect.extend(ids.iter().copied());
        sim.propose_events(leader, &ids);
        // A retry of the previous batch: every id a duplicate.
        if batch > 0 {
            let again: Vec<u64> = ((batch - 1) * 10 + 1..=(batch - 1) * 10 + 10).collect();
            sim.propose_events(leader, &again);
        }
        sim.run(3);
    }
    sim.assert_converged(&expect);
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![0, 1, 2]));
    // A late retry of ids 1..3 is acknowledged with their original offsets.
    let (_, mut rx) = acks.register(&[2, 3, 1]);
    sim.propose_events(leader, &[2, 3, 1]);
    sim.run(20);
    assert_eq!(rx.try_recv().unwrap(), Ok(vec![1, 2, 0]));
    assert_eq!(sim.stream_ids(leader).len(), 200);
}

#[test]
fn partitioned_leader_is_replaced_and_its_uncommitted_writes_vanish() {
    let mut sim = Sim::new(3, 11);
    let old = sim.run_until_leader(None);
    let mut expect: HashSet<u64> = (1..=10).collect();
    sim.propose_events(old, &(1..=10).collect::<Vec<_>>());
    sim.run(50);
    sim.isolate(old);
    // Proposed on the isolated leader: can never commit.
    sim.propose_events(old, &[1000, 1001]);
    let new = sim.run_until_leader(Some(old));
    assert_ne!(new, old);
    sim.propose_events(new, &(11..=20).collect::<Vec<_>>());
    expect.extend(11..=20);
    sim.run(100);
    sim.cut.clear();
    sim.assert_converged(&expect);
    assert_eq!(
        sim.leader(),
        Some(new),
        "pre-vote + check-quorum: the healed node does not disrupt"
    );
}

#[test]
fn lossy_delaying_network_still_converges() {
    let mut sim = Sim::new(5, 99);
    sim.drop_pct = 20;
    sim.max_delay = 5;
    let mut expect = HashSet::new();
    let mut next = 1u64;
    for _ in 0..40 {
        let leader = sim.run_until_leader(None);
        let ids: Vec<u64> = (next..next + 5).collect();
        next += 5;
        sim.propose_events(leader, &ids);
        sim.run(10);
    }
    sim.drop_pct = 0;
    sim.run(500);
    // Proposals to a leader that was deposed in flight may be lost: that is allowed (they
    // were never acknowledged). What is in the stream must be identical everywhere.
    let reference = sim.stream_ids(1);
    for (_, id) in &reference {
        expect.insert(*id);
    }
    assert!(
        reference.len() >= 100,
        "most proposals commit ({})",
        reference.len()
    );
    sim.assert_converged(&expect);
}

#[test]
fn restarted_node_rebuilds_state_from_its_log_and_catches_up() {
    let mut sim = Sim::new(3, 5);
    let leader = sim.run_until_leader(None);
    sim.propose_events(leader, &(1..=30).collect::<Vec<_>>());
    sim.run(50);
    let victim = if leader == 3 { 2 } else { 3 };
    let before = sim.stream_ids(victim);
    assert_eq!(before.len(), 30);
    // Crash: drop the replica (no shutdown), then write more while it is down.
    sim.crash(victim);
    sim.propose_events(leader, &(31..=60).collect::<Vec<_>>());
    // Retry of already-committed ids while the victim is down.
    sim.propose_events(leader, &(1..=5).collect::<Vec<_>>());
    sim.run(50);
    sim.restart(victim);
    let r = sim.r(victim);
    assert!(r.applied_index() > 0 && r.applied_index() <= r.commit_index());
    assert_eq!(
        sim.stream_ids(victim)[..before.len().min(sim.stream_ids(victim).len())],
        before[..before.len().min(sim.stream_ids(victim).len())]
    );
    sim.assert_converged(&(1..=60).collect());
    // And the whole cluster restarts from disk with identical streams.
    for id in 1..=3u64 {
        sim.crash(id);
    }
    for id in 1..=3u64 {
        sim.restart(id);
    }
    let leader = sim.run_until_leader(None);
    sim.propose_events(leader, &[1, 61]);
    let mut expect: HashSet<u64> = (1..=60).collect();
    expect.insert(61);
    sim.assert_converged(&expect);
}

/// Randomised schedules (seeded, reproducible): partitions, message loss and delay, crashes
/// and restarts from disk, proposals to whoever is leader. Safety: at every check, each node's
/// stream is a prefix of the longest one (no two nodes ever disagree on an offset), and no id
/// is stored twice. Liveness after healing: all nodes converge.
#[test]
fn randomized_faults_never_make_replicas_disagree() {
    for seed in [3u64, 8, 17, 29, 42, 97, 1234, 2026] {
        random_schedule(seed, false);
    }
}

/// The same schedules through the asynchronous Ready path (a simulated WAL thread that
/// sometimes lags, so several Readies share one fsync and crashes lose unsynced jobs).
#[test]
fn randomized_faults_with_asynchronous_persistence() {
    for seed in [3u64, 8, 17, 29, 42, 97, 1234, 2026] {
        random_schedule(seed, true);
    }
}

/// The same schedules with aggressive compaction: followers that were partitioned or crashed
/// catch up by snapshot, nodes restart from snapshot + log — and still never disagree.
#[test]
fn randomized_faults_with_compaction_and_snapshots() {
    for seed in [3u64, 8, 17, 42, 97, 2026] {
        random_schedule_with(seed, seed % 2 == 0, compacting, 4);
    }
}

#[test]
fn a_seed_replays_identically() {
    assert_eq!(random_schedule(42, false), random_schedule(42, false));
    assert_eq!(random_schedule(42, true), random_schedule(42, true));
}

/// Runs one randomised schedule and returns the converged stream `(offset, id)`.
fn random_schedule(seed: u64, async_persist: bool) -> Vec<(u64, u64)> {
    random_schedule_with(seed, async_persist, |_| {}, 0)
}

fn random_schedule_with(
    seed: u64,
    async_persist: bool,
    tune: fn(&mut ReplicaConfig),
    compact_every: u64,
) -> Vec<(u64, u64)> {
    {
        let n = 3 + (seed % 2) * 2; // 3 or 5 nodes
        let mut sim = Sim::with(n, seed, tune);
        sim.async_persist = async_persist;
        sim.compact_every = compact_every;
        let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut next_id = 1u64;
        for round in 0..60 {
            match rng.next() % 10 {
                0 => {
                    let victim = 1 + rng.next() % n;
                    sim.isolate(victim);
                }
                1 => sim.cut.clear(),
                2 => {
                    // Crash a node (if a majority stays up) and bring it back later.
                    let victim = 1 + rng.next() % n;
                    let down = n - sim.up().len() as u64;
                    if down < (n - 1) / 2 {
                        sim.crash(victim);
                    }
                }
                3 => {
                    for id in 1..=n {
                        if !sim.is_up(id) {
                            sim.restart(id);
                        }
                    }
                }
                4 => sim.drop_pct = rng.next() % 30,
                5 => sim.max_delay = rng.next() % 6,
                _ => {
                    if let Some(l) = sim.leader() {
                        let k = 1 + rng.next() % 8;
                        let mut ids: Vec<u64> = (next_id..next_id + k).collect();
                        next_id += k;
                        // Sometimes retry a few old ids: they must not be stored again.
                        if next_id > 10 && rng.chance(30) {
                            ids.push(1 + rng.next() % (next_id - 1));
                        }
                        sim.propose_events(l, &ids);
                    }
                }
            }
            sim.run(5 + rng.next() % 20);
            // Safety check on the streams of live nodes.
            let streams: Vec<Vec<(u64, u64)>> =
                sim.up().into_iter().map(|id| sim.stream_ids(id)).collect();
            let longest = streams
                .iter()
                .max_by_key(|s| s.len())
                .cloned()
                .unwrap_or_default();
            for s in &streams {
                assert_eq!(
                    &longest[..s.len()],
                    &s[..],
                    "seed {seed} round {round}: replicas disagree"
                );
            }
            let unique: HashSet<u64> = longest.iter().map(|x| x.1).collect();
            assert_eq!(
                unique.len(),
                longest.len(),
                "seed {seed} round {round}: an id stored twice"
            );
        }
        // Heal everything and check convergence.
        sim.cut.clear();
        sim.drop_pct = 0;
        sim.max_delay = 0;
        for id in 1..=n {
            if !sim.is_up(id) {
                sim.restart(id);
            }
        }
        let leader = sim.run_until_leader(None);
        sim.propose_events(leader, &[u64::MAX - seed]);
        sim.run(300);
        let expect: HashSet<u64> = sim.stream_ids(1).iter().map(|x| x.1).collect();
        assert!(expect.contains(&(u64::MAX - seed)));
        assert!(
            expect.len() >= 20,
            "seed {seed}: only {} events committed",
            expect.len()
        );
        eprintln!(
            "seed {seed}: {n} nodes, {} events committed under faults, {} snapshots delivered, {} lost",
            expect.len(),
            sim.snapshots_delivered,
            sim.snapshots_lost
        );
        sim.assert_converged(&expect);
        sim.stream_ids(1)
    }
}

/// Proposes 40 batches of 5 fresh ids (100..300) on `leader`, running the sim between them
/// and 30 steps after; returns the ids.
fn propose_40_batches(sim: &mut Sim, leader: u64) -> HashSet<u64> {
    let mut ids_proposed = HashSet::new();
    for b in 0..40u64 {
        let ids: Vec<u64> = (100 + b * 5..105 + b * 5).collect();
        ids_proposed.extend(ids.iter().copied());
        sim.propose_events(leader, &ids);
        sim.run(3);
    }
    sim.run(30);
    ids_proposed
}

/// A 3-node sim tuned by `tune` whose leader commits ids 1..=3 with everyone, then 40 batches
/// while one follower is cut off: `(sim, leader, follower, every id proposed)`.
fn follower_cut_off_during_load(
    tune: fn(&mut ReplicaConfig),
    async_persist: bool,
    seed: u64,
) -> (Sim, u64, u64, HashSet<u64>) {
    let mut sim = Sim::with(3, seed, tune);
    sim.async_persist = async_persist;
    sim.compact_every = 7;
    let leader = sim.run_until_leader(None);
    let follower = if leader == 1 { 2 } else { 1 };
    sim.propose_events(leader, &[1, 2, 3]);
    sim.run(20);
    sim.isolate(follower);
    let mut expect: HashSet<u64> = (1..=3).collect();
    expect.extend(propose_40_batches(&mut sim, leader));
    (sim, leader, follower, expect)
}

fn compacting(cfg: &mut ReplicaConfig) {
    cfg.snapshot_entries = 5;
    cfg.log_keep_entries = 2;
}

/// Ids of the stream of `id` from offset `from`.
fn ids_from(sim: &Sim, id: u64, from: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let stream = &sim.nodes[&id].stream;
    let mut next = from;
    while next < stream.next_offset() {
        let n = stream
            .try_read(next, usize::MAX, |_| true, &mut out)
            .expect("offset retained");
        assert!(n > next, "node {id} has a gap at {next}");
        next = n;
    }
    out.into_iter().map(|(o, e)| (o, e.id.0)).collect()
}

/// A follower cut off while the others compact their logs can only catch up by snapshot; after
/// installing it, every replica holds the same stream and decides dedup identically — also on
/// the snapshot-installed node as leader: a retry of ids from the window is a duplicate there
/// and is acknowledged with the original offsets (the offset index travels in the snapshot).
fn far_behind_follower_catches_up_by_snapshot(async_persist: bool, seed: u64) {
    let (mut sim, leader, follower, mut expect) =
        follower_cut_off_during_load(compacting, async_persist, seed);
    let first_index = sim.r(leader).first_index();
    assert!(
        first_index > 10,
        "the leader compacted its log (first index {first_index})"
    );
    sim.cut.clear();
    sim.run(200);
    assert!(sim.snapshots_delivered >= 1, "caught up by snapshot");
    assert!(sim.r(follower).snapshot_index() > 0);
    sim.assert_converged(&expect);

    // The snapshot-installed node leads; a retry of window ids is deduplicated with the
    // original offsets.
    let original: Vec<(u64, u64)> = sim
        .stream_ids(follower)
        .into_iter()
        .filter(|(_, id)| (295..300).contains(id))
        .collect();
    assert_eq!(original.len(), 5);
    let leader = sim.leader().unwrap();
    sim.r(leader).transfer_leader(follower);
    sim.run(60);
    assert_eq!(sim.leader(), Some(follower));
    let acks = sim.nodes[&follower].acks.clone();
    let ids: Vec<u64> = original.iter().map(|x| x.1).collect();
    let (_, mut rx) = acks.register(&ids);
    sim.propose_events(follower, &ids);
    sim.run(20);
    let offsets: Vec<u64> = original.iter().map(|x| x.0).collect();
    assert_eq!(rx.try_recv().unwrap(), Ok(offsets));
    sim.assert_converged(&expect);

    // Everyone restarts from snapshot + log: same applied state, same stream.
    let before: Vec<Vec<(u64, u64)>> = (1..=3).map(|id| sim.stream_ids(id)).collect();
    for id in 1..=3 {
        sim.crash(id);
    }
    for id in 1..=3 {
        sim.restart(id);
        let r = sim.r(id);
        assert!(
            r.snapshot_index() > 0,
            "node {id} restarted from a snapshot"
        );
        assert!(r.snapshot_index() <= r.applied_index() && r.applied_index() <= r.commit_index());
    }
    for id in 1..=3u64 {
        let now = sim.stream_ids(id);
        assert_eq!(now[..], before[(id - 1) as usize][..now.len()], "node {id}");
    }
    let leader = sim.run_until_leader(None);
    sim.propose_events(leader, &[1, 2, 7777]);
    expect.insert(7777);
    sim.assert_converged(&expect);
}

/// Compaction by bytes: with the entry count out of reach, `snapshot_bytes` of applied entry
/// data still triggers snapshots and `log_keep_bytes` bounds what stays in the log; with both
/// off, nothing is compacted.
fn compaction_by_bytes(tune: fn(&mut ReplicaConfig), seed: u64) -> (u64, u64) {
    let mut sim = Sim::with(3, seed, tune);
    sim.compact_every = 7;
    let leader = sim.run_until_leader(None);
    let expect = propose_40_batches(&mut sim, leader);
    sim.assert_converged(&expect);
    let leader = sim.leader().unwrap();
    (sim.r(leader).first_index(), sim.r(leader).snapshot_index())
}

#[test]
fn snapshot_bytes_triggers_compaction_and_log_keep_bytes_bounds_the_log() {
    fn by_bytes(cfg: &mut ReplicaConfig) {
        cfg.snapshot_entries = 1 << 40;
        cfg.log_keep_entries = 1 << 40;
        // Each entry here carries one 5-event block (a few hundred bytes).
        cfg.snapshot_bytes = 2_000;
        cfg.log_keep_bytes = 1_000;
    }
    fn count_only(cfg: &mut ReplicaConfig) {
        cfg.snapshot_entries = 1 << 40;
        cfg.log_keep_entries = 1 << 40;
    }
    let (first_index, snapshot_index) = compaction_by_bytes(by_bytes, 31);
    assert!(
        snapshot_index > 10,
        "snapshots were taken (at {snapshot_index})"
    );
    assert!(
        first_index > 10,
        "the log was compacted (first index {first_index})"
    );
    let (first_index, snapshot_index) = compaction_by_bytes(count_only, 31);
    assert_eq!(snapshot_index, 0, "no byte trigger: no snapshot");
    assert!(
        first_index <= 2,
        "nothing compacted (first index {first_index})"
    );
}

/// Between snapshots the in-memory log is trimmed to `log_keep_bytes` without taking one (the
/// WAL keeps the entries). A follower that needs a trimmed entry makes the leader take a
/// fresh snapshot on demand — the older one would not reach the log — and converges.
fn memory_trimmed_log_serves_a_far_behind_follower(async_persist: bool, seed: u64) {
    fn trim_only(cfg: &mut ReplicaConfig) {
        cfg.snapshot_entries = 1 << 40;
        cfg.log_keep_entries = 1 << 40;
        cfg.log_keep_bytes = 1_000;
    }
    let (mut sim, leader, _follower, expect) =
        follower_cut_off_during_load(trim_only, async_persist, seed);
    let first_index = sim.r(leader).first_index();
    assert!(
        first_index > 10,
        "the leader trimmed its log (first index {first_index})"
    );
    assert_eq!(
        sim.r(leader).snapshot_index(),
        0,
        "trimmed without a snapshot"
    );
    sim.cut.clear();
    sim.run(300);
    assert!(
        sim.snapshots_delivered >= 1,
        "caught up by a snapshot taken on demand"
    );
    sim.assert_converged(&expect);
}

#[test]
fn memory_trimmed_log_serves_a_far_behind_follower_sync_persist() {
    memory_trimmed_log_serves_a_far_behind_follower(false, 41);
}

#[test]
fn memory_trimmed_log_serves_a_far_behind_follower_async_persist() {
    memory_trimmed_log_serves_a_far_behind_follower(true, 42);
}

#[test]
fn far_behind_follower_catches_up_by_snapshot_sync_persist() {
    far_behind_follower_catches_up_by_snapshot(false, 21);
}

#[test]
fn far_behind_follower_catches_up_by_snapshot_async_persist() {
    far_behind_follower_catches_up_by_snapshot(true, 22);
}

/// Lost snapshot transfers are reported to raft, which sends the snapshot again.
#[test]
fn failed_snapshot_transfer_is_reported_and_retried() {
    let mut sim = Sim::with(3, 31, compacting);
    sim.compact_every = 5;
    let leader = sim.run_until_leader(None);
    let follower = if leader == 3 { 2 } else { 3 };
    sim.isolate(follower);
    let mut expect = HashSet::new();
    for b in 0..20u64 {
        let ids: Vec<u64> = (b * 4 + 1..=b * 4 + 4).collect();
        expect.extend(ids.iter().copied());
        sim.propose_events(leader, &ids);
        sim.run(3);
    }
    sim.run(20);
    sim.drop_snapshots = 2;
    sim.cut.clear();
    sim.run(400);
    assert_eq!(sim.snapshots_lost, 2, "two transfers failed");
    assert!(sim.snapshots_delivered >= 1, "and raft retried");
    sim.assert_converged(&expect);
}

/// With retention, a follower installed by snapshot copies only the retained events from
/// another member: its stream starts at the snapshot's first retained offset, reads below it
/// are refused with the earliest offset, and every node agrees on every offset they both hold.
#[test]
fn retention_limits_what_a_snapshot_carries() {
    fn tune(cfg: &mut ReplicaConfig) {
        compacting(cfg);
        cfg.retention.max_events = 30;
    }
    let mut sim = Sim::with(3, 41, tune);
    sim.compact_every = 5;
    let leader = sim.run_until_leader(None);
    let follower = if leader == 1 { 3 } else { 1 };
    sim.isolate(follower);
    for b in 0..40u64 {
        let ids: Vec<u64> = (b * 4 + 1..=b * 4 + 4).collect();
        sim.propose_events(leader, &ids);
        sim.run(3);
    }
    sim.cut.clear();
    sim.run(300);
    assert!(sim.snapshots_delivered >= 1);
    let stream = sim.nodes[&follower].stream.clone();
    let first = stream.first_offset();
    assert!(first > 0 && stream.next_offset() == 160, "first {first}");
    // Whole segments are deleted: the oldest one is still needed to keep 30 events.
    let segments = stream.log().segments();
    assert!(
        stream.next_offset() - segments[0].next_offset < 30,
        "{segments:?}"
    );
    assert!(
        sim.copies.iter().any(|(to, _, _)| *to == follower),
        "the follower copied"
    );
    let mut out = Vec::new();
    assert!(matches!(stream.try_read(0, 10, |_| true, &mut out), Err(Ok(f)) if f == first));
    // What the node reports: stream range, snapshot counters and durations.
    let r = sim.r(follower);
    r.publish_status();
    let m = r.metrics().clone();
    assert_eq!(m.stream_offsets(), (first, 160));
    assert!(m.status().counters.snapshots_received >= 1);
    assert!(!m.snapshot_durations().is_empty());
    let leader = sim.leader().unwrap();
    let lm = sim.r(leader).metrics().clone();
    let c = lm.status().counters;
    assert!(c.snapshots_sent >= 1 && c.compactions >= 1, "{c:?}");
    let from = (1..=3u64)
        .map(|id| sim.nodes[&id].stream.first_offset())
        .max()
        .unwrap();
    let reference = ids_from(&sim, 1, from);
    assert!(!reference.is_empty());
    for id in 2..=3 {
        assert_eq!(ids_from(&sim, id, from), reference, "node {id}");
    }
    // Offsets are still the global ones: event id k sits at offset k - 1.
    assert!(reference.iter().all(|(o, id)| *id == o + 1));
}
