//! The fault schedule. Reproducible: the order of faults and every target choice come from
//! one [`SplitMix64`] seeded with the run's `--seed`, so the same seed and cluster size give
//! the same sequence of decisions (which node is leader at a given moment still depends on
//! real elections, so the concrete targets of leader faults follow the cluster).
//!
//! Invariant: every [`FaultKind`] appears once in each round of six consecutive cycles (the
//! order within a round is a seeded shuffle), so any run of at least six cycles exercises
//! every kind.

use crate::history::FaultKind;

/// A small, fast, seedable PRNG (Steele, Lea & Flood's SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is negligible for the tiny `n` used here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Decides the next fault and its targets.
#[derive(Debug, Clone)]
pub struct Nemesis {
    rng: SplitMix64,
    nodes: usize,
    round: Vec<FaultKind>,
}

impl Nemesis {
    /// A nemesis for a cluster of `nodes` members (ids `1..=nodes`).
    pub fn new(seed: u64, nodes: usize) -> Self {
        Nemesis {
            rng: SplitMix64::new(seed),
            nodes,
            round: Vec::new(),
        }
    }

    /// The next kind of fault.
    pub fn next_kind(&mut self) -> FaultKind {
        if self.round.is_empty() {
            let mut r = FaultKind::ALL.to_vec();
            self.rng.shuffle(&mut r);
            r.reverse();
            self.round = r;
        }
        self.round.pop().expect("refilled above")
    }

    /// The nodes `kind` is applied to, given the current leader (`None`: unknown — then a
    /// leader fault picks a random node). For partitions: the isolated side.
    pub fn targets(&mut self, kind: FaultKind, leader: Option<u64>) -> Vec<u64> {
        let all: Vec<u64> = (1..=self.nodes as u64).collect();
        let leader = leader.unwrap_or_else(|| all[self.rng.below(all.len())]);
        match kind {
            FaultKind::KillLeader | FaultKind::PartitionLeader => vec![leader],
            FaultKind::KillFollower => {
                let followers: Vec<u64> = all.iter().copied().filter(|&n| n != leader).collect();
                vec![followers[self.rng.below(followers.len())]]
            }
            FaultKind::Pause => vec![all[self.rng.below(all.len())]],
            FaultKind::PartitionMinority => {
                let mut shuffled = all.clone();
                self.rng.shuffle(&mut shuffled);
                let mut minority: Vec<u64> = shuffled[..(self.nodes - 1) / 2].to_vec();
                minority.sort_unstable();
                minority
            }
            FaultKind::RestartAll => all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_of_six_holds_every_kind_once() {
        let mut n = Nemesis::new(42, 3);
        for _ in 0..5 {
            let mut round: Vec<FaultKind> = (0..6).map(|_| n.next_kind()).collect();
            round.sort();
            assert_eq!(round, FaultKind::ALL.to_vec());
        }
    }

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let plan = |seed| {
            let mut n = Nemesis::new(seed, 5);
            (0..30)
                .map(|_| {
                    let k = n.next_kind();
                    (k, n.targets(k, Some(2)))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
    }

    #[test]
    fn targets_respect_roles_and_minority_size() {
        for nodes in [3usize, 5] {
            let mut n = Nemesis::new(3, nodes);
            for _ in 0..200 {
                assert_eq!(n.targets(FaultKind::KillLeader, Some(2)), vec![2]);
                assert_eq!(n.targets(FaultKind::PartitionLeader, Some(2)), vec![2]);
                let f = n.targets(FaultKind::KillFollower, Some(2));
                assert!(f.len() == 1 && f[0] != 2 && (1..=nodes as u64).contains(&f[0]));
                let m = n.targets(FaultKind::PartitionMinority, Some(2));
                assert_eq!(m.len(), (nodes - 1) / 2);
                assert!(m.windows(2).all(|w| w[0] < w[1]));
                assert_eq!(n.targets(FaultKind::RestartAll, None).len(), nodes);
            }
        }
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (from the reference C code).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }
}
