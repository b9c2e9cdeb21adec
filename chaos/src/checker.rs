//! The history checker: a pure function from a [`History`] to a [`CheckReport`] that lists
//! every anomaly it finds (counts plus up to [`MAX_EXAMPLES`] examples of each kind).
//!
//! What it verifies, after healing:
//! * **lost** — every acknowledged event is in every node's final stream;
//! * **ack offset** — an acknowledged event sits at the offset it was acknowledged with;
//! * **duplicates** — no id is stored at two offsets (in any node's final stream) or delivered
//!   at two offsets to one consumer;
//! * **divergence** — at every offset, every node's final stream and every consumer delivery
//!   hold the same id, and no node's stream lacks an offset another one has;
//! * **consumer order** — each consumer's offsets start at 0 and go up by exactly one;
//! * **unacknowledged** — a publish that failed is stored at most once;
//! * **phantoms** — every stored id was published by the run.
//!
//! Availability is measured, not judged: `max_unavailable_ms` is the longest gap between two
//! consecutive acknowledgements (over all producers) during the run.

use crate::history::{Delivery, FaultKind, History, PublishOutcome, PublishRecord, OFFSET_UNKNOWN};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Examples kept per anomaly kind (the counts are always complete).
pub const MAX_EXAMPLES: usize = 20;

/// An acknowledged event missing from some node's final stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEvent {
    /// The event id.
    pub id: u64,
    /// The offset it was acknowledged with.
    pub acked_offset: u64,
    /// The nodes whose final stream does not hold it.
    pub missing_on: Vec<u64>,
}

/// An id stored or delivered at more than one offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    /// The event id.
    pub id: u64,
    /// Where: `node N` (final stream) or `consumer C (node N)`.
    pub source: String,
    /// The offsets it was found at.
    pub offsets: Vec<u64>,
}

/// An offset where observers disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The stream offset.
    pub offset: u64,
    /// What each node's final stream holds there (`None`: nothing).
    pub final_ids: BTreeMap<u64, Option<u64>>,
    /// Ids consumers received at this offset, with who received them.
    pub delivered: Vec<(String, u64)>,
}

/// An acknowledged event found at another offset than the acknowledged one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMismatch {
    /// The event id.
    pub id: u64,
    /// The acknowledged offset.
    pub acked_offset: u64,
    /// What the reference stream holds at that offset.
    pub found_id: Option<u64>,
}

/// A consumer order violation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerAnomaly {
    /// Consumer index.
    pub consumer: u32,
    /// Its node.
    pub node: u64,
    /// The offset expected next.
    pub expected: u64,
    /// The offset received.
    pub got: u64,
    /// `gap` (got > expected) or `not_increasing` (got < expected).
    pub kind: String,
}

/// Everything the checker found. `is_valid()` is true only when no anomaly was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Faults injected.
    pub cycles: usize,
    /// Faults whose cluster did not recover (one leader followed by all, then an
    /// acknowledged publish) in time.
    pub unrecovered_cycles: usize,
    /// Longest time from healing a fault to the next acknowledged publish, ms.
    pub max_heal_to_ack_ms: u64,
    /// Longest time from the surviving side electing a leader (during a fault) to the next
    /// acknowledged publish, ms: how long clients take to find a leader that exists.
    pub max_failover_to_ack_ms: u64,
    /// Faults during which the survivors elected a leader but no publish was acknowledged
    /// before the fault was healed (clients never reached the new leader).
    pub faults_acked_only_after_heal: usize,
    /// Publishes attempted.
    pub published: usize,
    /// Publishes acknowledged.
    pub acked: usize,
    /// Publishes that failed (indeterminate).
    pub failed_publishes: usize,
    /// Failed publishes whose event is nevertheless stored (once): allowed.
    pub unacked_stored: usize,
    /// Events in the reference (longest) final stream.
    pub final_stream_len: usize,
    /// Events received by all consumers together.
    pub delivered: usize,
    /// Acknowledged events missing from at least one node's final stream.
    pub lost: usize,
    /// Distinct ids stored or delivered at more than one offset.
    pub duplicates: usize,
    /// Offsets where observers disagree.
    pub divergent_offsets: usize,
    /// Acknowledged events found elsewhere than at their acknowledged offset.
    pub ack_offset_mismatches: usize,
    /// Consumer order violations (gaps or offsets not increasing).
    pub consumer_order_violations: usize,
    /// Failed publishes stored more than once.
    pub unacked_duplicates: usize,
    /// Stored ids that no producer published.
    pub phantom_ids: usize,
    /// Nodes whose final read did not complete.
    pub incomplete_final_reads: usize,
    /// Longest gap between consecutive acknowledgements, ms.
    pub max_unavailable_ms: u64,
    /// Longest acknowledgement gap overlapping each kind of fault, ms.
    pub max_unavailable_ms_by_fault: BTreeMap<String, u64>,
    /// Examples of lost events.
    pub lost_examples: Vec<LostEvent>,
    /// Examples of duplicates.
    pub duplicate_examples: Vec<Duplicate>,
    /// Examples of divergent offsets.
    pub divergence_examples: Vec<Divergence>,
    /// Examples of acknowledged-offset mismatches.
    pub ack_mismatch_examples: Vec<AckMismatch>,
    /// Examples of consumer order violations.
    pub consumer_examples: Vec<ConsumerAnomaly>,
    /// Examples of failed publishes stored more than once.
    pub unacked_duplicate_examples: Vec<u64>,
    /// Examples of phantom ids.
    pub phantom_examples: Vec<u64>,
    /// Why final reads were incomplete.
    pub incomplete_reasons: Vec<String>,
}

impl CheckReport {
    /// No anomaly of any kind (availability is reported, not judged).
    pub fn is_valid(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.divergent_offsets == 0
            && self.ack_offset_mismatches == 0
            && self.consumer_order_violations == 0
            && self.unacked_duplicates == 0
            && self.phantom_ids == 0
            && self.incomplete_final_reads == 0
    }
}

fn push_example<T>(v: &mut Vec<T>, x: T) {
    if v.len() < MAX_EXAMPLES {
        v.push(x);
    }
}

/// Offsets of each id in a sequence of deliveries, in id order (so that the examples kept do not
/// depend on hashing).
fn offsets_by_id(events: &[Delivery]) -> BTreeMap<u64, Vec<u64>> {
    let mut m: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for d in events {
        let v = m.entry(d.id).or_default();
        if !v.contains(&d.offset) {
            v.push(d.offset);
        }
    }
    m
}

/// A stream as `offset -> id`.
type Stream = BTreeMap<u64, u64>;

/// An id and who received it: `node N (re-sent)` or `consumer C (node N)`.
type Sighting = (String, u64);

/// Checks a history. Pure: the same history always gives the same report.
///
/// Each step below fills its own fields of the report, so their order does not matter.
pub fn check(h: &History) -> CheckReport {
    let mut r = CheckReport {
        cycles: h.faults.len(),
        published: h.publishes.len(),
        acked: h.publishes.iter().filter(|p| is_acked(p)).count(),
        failed_publishes: h.publishes.iter().filter(|p| !is_acked(p)).count(),
        delivered: h.consumers.iter().map(|c| c.deliveries.len()).sum(),
        ..CheckReport::default()
    };
    let finals = final_streams(h, &mut r);
    let reference = reference_stream(&finals.by_node);
    r.final_stream_len = reference.len();

    lost_acknowledged(h, &finals.by_node, &mut r);
    acknowledged_offsets(h, &reference, &mut r);
    duplicates(h, &mut r);
    divergent_offsets(h, &finals.by_node, finals.resent, &mut r);
    consumer_order(h, &mut r);
    unacknowledged_stored(h, &reference, &mut r);
    phantom_ids(h, &finals.by_node, &mut r);

    let ack_times = ack_times(h);
    recovery(h, &ack_times, &mut r);
    unavailability(h, &ack_times, &mut r);
    r
}

fn is_acked(p: &PublishRecord) -> bool {
    matches!(p.outcome, PublishOutcome::Acked { .. })
}

/// Every node's final stream, as read back after healing.
struct FinalStreams {
    /// Per node, the first id seen at each offset.
    by_node: BTreeMap<u64, Stream>,
    /// Per offset, the other ids a node served there within one read (itself a divergence).
    resent: BTreeMap<u64, Vec<Sighting>>,
}

/// Reads the final streams as `offset -> id` (the first id seen at an offset wins; a second one
/// at the same offset within one read is kept in `resent`), and counts incomplete final reads
/// (no final read at all is one).
fn final_streams(h: &History, r: &mut CheckReport) -> FinalStreams {
    let mut by_node: BTreeMap<u64, Stream> = BTreeMap::new();
    let mut resent: BTreeMap<u64, Vec<Sighting>> = BTreeMap::new();
    for f in &h.final_reads {
        if let Some(e) = &f.error {
            r.incomplete_final_reads += 1;
            push_example(&mut r.incomplete_reasons, format!("node {}: {e}", f.node));
        }
        let m = by_node.entry(f.node).or_default();
        for d in &f.events {
            if let Some(&prev) = m.get(&d.offset) {
                if prev != d.id {
                    resent
                        .entry(d.offset)
                        .or_default()
                        .push((format!("node {} (re-sent)", f.node), d.id));
                }
            } else {
                m.insert(d.offset, d.id);
            }
        }
    }
    if h.final_reads.is_empty() {
        r.incomplete_final_reads += 1;
        push_example(&mut r.incomplete_reasons, "no final reads recorded".into());
    }
    FinalStreams { by_node, resent }
}

/// The reference stream: the longest final read (lowest node id on ties).
fn reference_stream(by_node: &BTreeMap<u64, Stream>) -> Stream {
    by_node
        .values()
        .max_by(|a, b| a.len().cmp(&b.len()).then(std::cmp::Ordering::Greater))
        .cloned()
        .unwrap_or_default()
}

/// **lost**: every acknowledged event is in every node's final stream (with no final stream at
/// all, every acknowledged event is lost).
fn lost_acknowledged(h: &History, by_node: &BTreeMap<u64, Stream>, r: &mut CheckReport) {
    let node_ids: Vec<(u64, HashSet<u64>)> = by_node
        .iter()
        .map(|(node, m)| (*node, m.values().copied().collect()))
        .collect();
    for p in &h.publishes {
        let PublishOutcome::Acked { offset } = p.outcome else {
            continue;
        };
        let missing_on: Vec<u64> = node_ids
            .iter()
            .filter(|(_, ids)| !ids.contains(&p.id))
            .map(|(n, _)| *n)
            .collect();
        if !missing_on.is_empty() || node_ids.is_empty() {
            r.lost += 1;
            push_example(
                &mut r.lost_examples,
                LostEvent {
                    id: p.id,
                    acked_offset: offset,
                    missing_on,
                },
            );
        }
    }
}

/// **ack offset**: an acknowledged event sits at the offset it was acknowledged with in the
/// reference stream ([`OFFSET_UNKNOWN`] is not checked).
fn acknowledged_offsets(h: &History, reference: &Stream, r: &mut CheckReport) {
    for p in &h.publishes {
        let PublishOutcome::Acked { offset } = p.outcome else {
            continue;
        };
        if offset == OFFSET_UNKNOWN {
            continue;
        }
        let found = reference.get(&offset).copied();
        if found != Some(p.id) {
            r.ack_offset_mismatches += 1;
            push_example(
                &mut r.ack_mismatch_examples,
                AckMismatch {
                    id: p.id,
                    acked_offset: offset,
                    found_id: found,
                },
            );
        }
    }
}

/// **duplicates**: no id at two offsets in any node's final stream or in one consumer's
/// deliveries; counted once per id.
fn duplicates(h: &History, r: &mut CheckReport) {
    let sources = h
        .final_reads
        .iter()
        .map(|f| (format!("node {}", f.node), &f.events))
        .chain(h.consumers.iter().map(|c| {
            (
                format!("consumer {} (node {})", c.consumer, c.node),
                &c.deliveries,
            )
        }));
    let mut dup_ids: BTreeSet<u64> = BTreeSet::new();
    for (source, events) in sources {
        for (id, offs) in offsets_by_id(events) {
            if offs.len() > 1 {
                dup_ids.insert(id);
                push_example(
                    &mut r.duplicate_examples,
                    Duplicate {
                        id,
                        source: source.clone(),
                        offsets: offs,
                    },
                );
            }
        }
    }
    r.duplicates = dup_ids.len();
}

/// **divergence**: at every offset any observer saw, every node's final stream and every
/// delivery hold the same id, and no node's stream lacks it.
fn divergent_offsets(
    h: &History,
    by_node: &BTreeMap<u64, Stream>,
    resent: BTreeMap<u64, Vec<Sighting>>,
    r: &mut CheckReport,
) {
    let mut delivered_at = resent;
    for c in &h.consumers {
        for d in &c.deliveries {
            delivered_at
                .entry(d.offset)
                .or_default()
                .push((format!("consumer {} (node {})", c.consumer, c.node), d.id));
        }
    }
    let mut all_offsets: BTreeSet<u64> = delivered_at.keys().copied().collect();
    for m in by_node.values() {
        all_offsets.extend(m.keys().copied());
    }
    for &off in &all_offsets {
        let final_ids: BTreeMap<u64, Option<u64>> = by_node
            .iter()
            .map(|(node, m)| (*node, m.get(&off).copied()))
            .collect();
        let mut ids: HashSet<u64> = final_ids.values().flatten().copied().collect();
        let any_missing = final_ids.values().any(Option::is_none);
        let delivered = delivered_at.remove(&off).unwrap_or_default();
        ids.extend(delivered.iter().map(|(_, id)| *id));
        if ids.len() > 1 || any_missing {
            r.divergent_offsets += 1;
            // Keep only the disagreeing consumers in the example (all agree is the norm).
            let majority = final_ids.values().flatten().next().copied();
            let delivered = delivered
                .into_iter()
                .filter(|(_, id)| Some(*id) != majority)
                .take(8)
                .collect();
            push_example(
                &mut r.divergence_examples,
                Divergence {
                    offset: off,
                    final_ids,
                    delivered,
                },
            );
        }
    }
}

/// **consumer order**: each consumer's offsets start at 0 and go up by exactly one.
fn consumer_order(h: &History, r: &mut CheckReport) {
    for c in &h.consumers {
        let mut expected = 0u64;
        for d in &c.deliveries {
            if d.offset != expected {
                r.consumer_order_violations += 1;
                push_example(
                    &mut r.consumer_examples,
                    ConsumerAnomaly {
                        consumer: c.consumer,
                        node: c.node,
                        expected,
                        got: d.offset,
                        kind: if d.offset > expected {
                            "gap".into()
                        } else {
                            "not_increasing".into()
                        },
                    },
                );
            }
            expected = expected.max(d.offset + 1);
        }
    }
}

/// **unacknowledged**: a publish that failed is stored at most once in the reference stream
/// (once is counted as allowed, more is an anomaly).
fn unacknowledged_stored(h: &History, reference: &Stream, r: &mut CheckReport) {
    let mut stored: HashMap<u64, usize> = HashMap::with_capacity(reference.len());
    for &id in reference.values() {
        *stored.entry(id).or_default() += 1;
    }
    for p in &h.publishes {
        if is_acked(p) {
            continue;
        }
        match stored.get(&p.id).copied().unwrap_or(0) {
            0 => {}
            1 => r.unacked_stored += 1,
            _ => {
                r.unacked_duplicates += 1;
                push_example(&mut r.unacked_duplicate_examples, p.id);
            }
        }
    }
}

/// **phantoms**: every id in a final stream or a delivery was published by the run.
fn phantom_ids(h: &History, by_node: &BTreeMap<u64, Stream>, r: &mut CheckReport) {
    let published: HashSet<u64> = h.publishes.iter().map(|p| p.id).collect();
    let stored = by_node.values().flat_map(|m| m.values().copied());
    let delivered = h
        .consumers
        .iter()
        .flat_map(|c| c.deliveries.iter().map(|d| d.id));
    let phantoms: BTreeSet<u64> = stored
        .chain(delivered)
        .filter(|id| !published.contains(id))
        .collect();
    r.phantom_ids = phantoms.len();
    r.phantom_examples = phantoms.into_iter().take(MAX_EXAMPLES).collect();
}

/// When each acknowledged publish completed, in time order.
fn ack_times(h: &History) -> Vec<u64> {
    let mut t: Vec<u64> = h
        .publishes
        .iter()
        .filter(|p| is_acked(p))
        .map(|p| p.completed_ms)
        .collect();
    t.sort_unstable();
    t
}

/// Recovery from each fault (measured, not judged): cycles that did not recover, the longest
/// time from heal to the next acknowledgement, and from the survivors' election to the next
/// acknowledgement.
fn recovery(h: &History, ack_times: &[u64], r: &mut CheckReport) {
    r.unrecovered_cycles = h
        .faults
        .iter()
        .filter(|f| f.recovered_ms.is_none() || f.first_ack_ms.is_none())
        .count();
    r.max_heal_to_ack_ms = h
        .faults
        .iter()
        .filter_map(|f| f.first_ack_ms.map(|a| a.saturating_sub(f.healed_ms)))
        .max()
        .unwrap_or(0);
    for f in &h.faults {
        let Some((_, elected)) = f.survivors_leader else {
            continue;
        };
        let next = ack_times.partition_point(|&t| t < elected);
        match ack_times.get(next) {
            Some(&ack) => {
                r.max_failover_to_ack_ms = r.max_failover_to_ack_ms.max(ack - elected);
                if ack > f.healed_ms {
                    r.faults_acked_only_after_heal += 1;
                }
            }
            None => r.faults_acked_only_after_heal += 1,
        }
    }
}

/// Unavailability (measured, not judged): the longest gap between consecutive
/// acknowledgements, overall and per kind of fault (every kind injected has an entry).
fn unavailability(h: &History, ack_times: &[u64], r: &mut CheckReport) {
    for w in ack_times.windows(2) {
        let (start, end) = (w[0], w[1]);
        let gap = end - start;
        r.max_unavailable_ms = r.max_unavailable_ms.max(gap);
        // Each gap belongs to the last fault injected before it ended (faults do not
        // overlap: the next one starts only after an acknowledgement).
        let owner = h
            .faults
            .iter()
            .filter(|f| f.injected_ms < end)
            .max_by_key(|f| f.injected_ms);
        if let Some(f) = owner {
            let slot = r
                .max_unavailable_ms_by_fault
                .entry(f.kind.name().to_owned())
                .or_insert(0);
            *slot = (*slot).max(gap);
        }
    }
    for kind in FaultKind::ALL {
        if h.faults.iter().any(|f| f.kind == kind) {
            r.max_unavailable_ms_by_fault
                .entry(kind.name().to_owned())
                .or_insert(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{ConsumerLog, FaultRecord, FinalRead, PublishRecord};
    use proptest::prelude::*;

    fn d(offset: u64, id: u64) -> Delivery {
        Delivery { offset, id }
    }

    fn acked(id: u64, offset: u64, at: u64) -> PublishRecord {
        PublishRecord {
            id,
            producer: 0,
            invoked_ms: at.saturating_sub(1),
            completed_ms: at,
            outcome: PublishOutcome::Acked { offset },
        }
    }

    fn failed(id: u64, at: u64) -> PublishRecord {
        PublishRecord {
            id,
            producer: 1,
            invoked_ms: at.saturating_sub(1),
            completed_ms: at,
            outcome: PublishOutcome::Failed {
                error: "timed out".into(),
            },
        }
    }

    fn stream(ids: &[u64]) -> Vec<Delivery> {
        ids.iter()
            .enumerate()
            .map(|(o, &id)| d(o as u64, id))
            .collect()
    }

    /// A clean 3-node history: ids 10, 11, 12 acked at offsets 0, 1, 2 (and 13 failed and not
    /// stored); every node and consumer holds exactly them.
    fn clean() -> History {
        let s = stream(&[10, 11, 12]);
        History {
            nodes: 3,
            seed: 1,
            started_unix_ms: 0,
            publishes: vec![
                acked(10, 0, 100),
                acked(11, 1, 110),
                acked(12, 2, 400),
                failed(13, 500),
            ],
            consumers: (1..=3)
                .map(|n| ConsumerLog {
                    consumer: n as u32 - 1,
                    node: n,
                    deliveries: s.clone(),
                    reconnects: 0,
                })
                .collect(),
            final_reads: (1..=3)
                .map(|n| FinalRead {
                    node: n,
                    events: s.clone(),
                    error: None,
                })
                .collect(),
            faults: vec![FaultRecord {
                cycle: 0,
                kind: FaultKind::KillLeader,
                targets: vec![1],
                leader_before: Some(1),
                injected_ms: 150,
                survivors_leader: Some((2, 200)),
                healed_ms: 300,
                recovered_ms: Some(350),
                first_ack_ms: Some(400),
            }],
        }
    }

    #[test]
    fn clean_history_is_valid_and_measures_unavailability() {
        let r = check(&clean());
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!((r.acked, r.failed_publishes, r.unacked_stored), (3, 1, 0));
        assert_eq!(r.final_stream_len, 3);
        assert_eq!(r.delivered, 9);
        // Acks at 100, 110, 400: the 290 ms gap overlaps the kill_leader fault.
        assert_eq!(r.max_unavailable_ms, 290);
        assert_eq!(r.max_unavailable_ms_by_fault["kill_leader"], 290);
        assert_eq!(r.max_heal_to_ack_ms, 100);
        // Survivors elected at 200; the next ack (400) came after the heal (300).
        assert_eq!(r.max_failover_to_ack_ms, 200);
        assert_eq!(r.faults_acked_only_after_heal, 1);
        assert_eq!(r.unrecovered_cycles, 0);
    }

    #[test]
    fn lost_acknowledged_event_is_reported_with_the_nodes_missing_it() {
        let mut h = clean();
        h.final_reads[2].events = stream(&[10, 11]);
        let r = check(&h);
        assert!(!r.is_valid());
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_examples[0].id, 12);
        assert_eq!(r.lost_examples[0].missing_on, vec![3]);
        // Node 3 lacks offset 2 that the others hold: also a divergence.
        assert_eq!(r.divergent_offsets, 1);
    }

    #[test]
    fn event_lost_everywhere_is_lost_and_its_offset_mismatches() {
        let mut h = clean();
        for f in &mut h.final_reads {
            f.events = stream(&[10, 11]);
        }
        for c in &mut h.consumers {
            c.deliveries = stream(&[10, 11]);
        }
        let r = check(&h);
        assert_eq!(r.lost, 1);
        assert_eq!(r.ack_offset_mismatches, 1);
        assert_eq!(r.ack_mismatch_examples[0].found_id, None);
        assert_eq!(r.divergent_offsets, 0);
    }

    #[test]
    fn id_stored_twice_is_a_duplicate() {
        let mut h = clean();
        let s = stream(&[10, 11, 12, 11]);
        for f in &mut h.final_reads {
            f.events = s.clone();
        }
        let r = check(&h);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.duplicate_examples[0].id, 11);
        assert_eq!(r.duplicate_examples[0].offsets, vec![1, 3]);
        assert!(!r.is_valid());
    }

    #[test]
    fn id_delivered_twice_to_one_consumer_is_a_duplicate() {
        let mut h = clean();
        // The node re-sent offset 2's event as offset 3 to consumer 0 only.
        h.consumers[0].deliveries.push(d(3, 12));
        let r = check(&h);
        assert_eq!(r.duplicates, 1);
        assert!(r.duplicate_examples[0].source.starts_with("consumer 0"));
        // Offset 3 is in no final stream: a divergence too.
        assert_eq!(r.divergent_offsets, 1);
    }

    #[test]
    fn the_same_history_always_gives_the_same_report() {
        // More duplicated ids than examples are kept: which ones are kept, and in what order,
        // must not depend on hashing.
        let mut h = clean();
        let ids: Vec<u64> = (0..2 * MAX_EXAMPLES as u64).map(|i| 1000 + i).collect();
        let twice: Vec<u64> = ids.iter().chain(&ids).copied().collect();
        for f in &mut h.final_reads {
            f.events = stream(&twice);
        }
        let first = check(&h);
        assert_eq!(first.duplicates, ids.len());
        for _ in 0..20 {
            assert_eq!(check(&h), first);
        }
        let kept: Vec<u64> = first.duplicate_examples.iter().map(|d| d.id).collect();
        assert_eq!(kept, ids[..MAX_EXAMPLES]);
    }

    #[test]
    fn replicas_disagreeing_at_an_offset_is_divergence() {
        let mut h = clean();
        h.final_reads[1].events = stream(&[10, 12, 11]);
        let r = check(&h);
        assert_eq!(r.divergent_offsets, 2);
        let ex = &r.divergence_examples[0];
        assert_eq!(ex.offset, 1);
        assert_eq!(ex.final_ids[&1], Some(11));
        assert_eq!(ex.final_ids[&2], Some(12));
        assert!(!r.is_valid());
    }

    #[test]
    fn consumer_seeing_an_uncommitted_event_is_divergence() {
        let mut h = clean();
        // A deposed leader served id 99 at offset 2 before it was truncated.
        h.consumers[1].deliveries[2] = d(2, 99);
        h.publishes.push(failed(99, 600));
        let r = check(&h);
        assert_eq!(r.divergent_offsets, 1);
        assert_eq!(r.divergence_examples[0].delivered[0].1, 99);
    }

    #[test]
    fn consumer_gap_and_going_backwards_are_order_violations() {
        let mut h = clean();
        h.consumers[0].deliveries = vec![d(0, 10), d(2, 12)];
        h.consumers[1].deliveries = vec![d(0, 10), d(1, 11), d(1, 11), d(2, 12)];
        let r = check(&h);
        assert_eq!(r.consumer_order_violations, 2);
        let kinds: Vec<&str> = r
            .consumer_examples
            .iter()
            .map(|c| c.kind.as_str())
            .collect();
        assert_eq!(kinds, ["gap", "not_increasing"]);
        assert!(!r.is_valid());
    }

    #[test]
    fn consumer_not_starting_at_zero_is_a_gap() {
        let mut h = clean();
        h.consumers[2].deliveries = vec![d(1, 11), d(2, 12)];
        let r = check(&h);
        assert_eq!(r.consumer_order_violations, 1);
        assert_eq!(r.consumer_examples[0].expected, 0);
    }

    #[test]
    fn unacknowledged_publish_stored_once_is_allowed_twice_is_not() {
        let mut h = clean();
        let once = stream(&[10, 11, 12, 13]);
        for f in &mut h.final_reads {
            f.events = once.clone();
        }
        for c in &mut h.consumers {
            c.deliveries = once.clone();
        }
        let r = check(&h);
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.unacked_stored, 1);

        let twice = stream(&[10, 11, 12, 13, 13]);
        for f in &mut h.final_reads {
            f.events = twice.clone();
        }
        let r = check(&h);
        assert_eq!(r.unacked_duplicates, 1);
        assert_eq!(r.unacked_duplicate_examples, vec![13]);
        assert_eq!(r.duplicates, 1);
    }

    #[test]
    fn acknowledged_at_the_wrong_offset_is_reported() {
        let mut h = clean();
        h.publishes[0] = acked(10, 1, 100);
        let r = check(&h);
        assert_eq!(r.ack_offset_mismatches, 1);
        assert_eq!(r.ack_mismatch_examples[0].found_id, Some(11));
        // An unknown offset (deduplicated retry) is not a mismatch.
        h.publishes[0] = acked(10, OFFSET_UNKNOWN, 100);
        assert_eq!(check(&h).ack_offset_mismatches, 0);
    }

    #[test]
    fn never_published_id_is_a_phantom() {
        let mut h = clean();
        let s = stream(&[10, 11, 12, 777]);
        for f in &mut h.final_reads {
            f.events = s.clone();
        }
        let r = check(&h);
        assert_eq!(r.phantom_ids, 1);
        assert_eq!(r.phantom_examples, vec![777]);
    }

    #[test]
    fn incomplete_or_missing_final_reads_invalidate_the_run() {
        let mut h = clean();
        h.final_reads[0].error = Some("node never answered".into());
        assert_eq!(check(&h).incomplete_final_reads, 1);
        h.final_reads.clear();
        let r = check(&h);
        assert!(!r.is_valid());
        // With nothing read back, every acknowledged event counts as lost.
        assert_eq!(r.lost, 3);
    }

    #[test]
    fn each_gap_is_charged_to_the_last_fault_injected_before_it_ended() {
        let mut h = clean();
        let mut second = h.faults[0].clone();
        second.cycle = 1;
        second.kind = FaultKind::Pause;
        second.injected_ms = 420;
        second.healed_ms = 500;
        second.recovered_ms = Some(510);
        second.first_ack_ms = Some(900);
        h.faults.push(second);
        h.publishes.push(acked(14, 3, 900));
        for f in &mut h.final_reads {
            f.events = stream(&[10, 11, 12, 14]);
        }
        for c in &mut h.consumers {
            c.deliveries = stream(&[10, 11, 12, 14]);
        }
        let r = check(&h);
        assert!(r.is_valid(), "{r:#?}");
        assert_eq!(r.max_unavailable_ms, 500);
        assert_eq!(r.max_unavailable_ms_by_fault["kill_leader"], 290);
        assert_eq!(r.max_unavailable_ms_by_fault["pause"], 500);
    }

    #[test]
    fn fault_without_acknowledgement_after_heal_is_unrecovered() {
        let mut h = clean();
        h.faults[0].first_ack_ms = None;
        let r = check(&h);
        assert_eq!(r.unrecovered_cycles, 1);
        // Availability is reported, not a safety anomaly.
        assert!(r.is_valid());
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = check(&clean());
        let back: CheckReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let h = clean();
        let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    proptest! {
        /// Any history where every replica and consumer holds exactly the acknowledged events
        /// at their acknowledged offsets is valid; dropping any one stored acknowledged event
        /// from one replica is always caught as lost.
        #[test]
        fn consistent_histories_pass_and_any_single_loss_is_caught(
            n in 1usize..60,
            failed_mask in proptest::collection::vec(any::<bool>(), 60),
            victim in any::<proptest::sample::Index>(),
            node in 0usize..3,
        ) {
            let ids: Vec<u64> = (0..n as u64).map(|i| 1000 + i).collect();
            let s = stream(&ids);
            let mut h = History { nodes: 3, ..History::default() };
            for (o, &id) in ids.iter().enumerate() {
                h.publishes.push(if failed_mask[o] { failed(id, o as u64) } else { acked(id, o as u64, o as u64) });
            }
            for node in 1..=3 {
                h.final_reads.push(FinalRead { node, events: s.clone(), error: None });
                h.consumers.push(ConsumerLog { consumer: node as u32, node, deliveries: s.clone(), reconnects: 0 });
            }
            let r = check(&h);
            prop_assert!(r.is_valid());
            let acked_ids: Vec<u64> = ids.iter().enumerate().filter(|(o, _)| !failed_mask[*o]).map(|(_, id)| *id).collect();
            prop_assume!(!acked_ids.is_empty());
            let gone = *victim.get(&acked_ids);
            h.final_reads[node].events.retain(|d| d.id != gone);
            let r = check(&h);
            prop_assert_eq!(r.lost, 1);
            prop_assert!(!r.is_valid());
        }
    }
}
