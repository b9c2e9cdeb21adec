//! Idempotent producers' sequences: replicated state, like the consumer groups' offsets.
//!
//! An idempotent producer (Kafka's `enable.idempotence`) numbers its records per partition
//! from 0 within an epoch. The leader checks every batch against the last sequence stored
//! (or admitted in its term) for that (producer, topic, partition) before admitting it:
//! the next sequence is stored, a repeat goes through the dedup window (and is answered with
//! the first attempt's offsets), anything else is refused as out of order, an older epoch as
//! fenced ([`check`]).
//!
//! * A checked batch is published with one more event after its own, of the reserved topic
//!   [`PRODUCER_STATE_TOPIC`] (payload: producer id, epoch, topic, partition, last
//!   sequence), in the tier of the batch's last event, so it is committed after them. Every
//!   replica's state machine applies it to its [`ProducerSequences`] table, so the member
//!   that becomes leader checks exactly as the old one did.
//! * The leader also remembers what it admitted in its term and has not applied yet
//!   ([`Admissions`]): pipelined batches (librdkafka keeps up to five in flight) are checked
//!   against each other. An admission whose batch was refused is undone.
//!
//! Invariants:
//! * The table is a function of the log: replicas that applied the same entries hold the same
//!   table; a restart rebuilds it (snapshot section 7, then the log replayed after it).
//! * An entry older than [`PRODUCER_EXPIRY_MS`] of stream time counts as absent (Kafka's
//!   `producer.id.expiration.ms`): a producer unknown to the table is accepted at any
//!   sequence, as Kafka accepts one whose state expired. The table holds at most
//!   [`MAX_PRODUCERS`] entries; past it the oldest are dropped first.
//! * A state event that does not decode changes nothing, on every replica alike. Clients
//!   cannot publish to the reserved topic; only [`crate::Producer::publish_sequenced`]
//!   writes such events.

use eventstream_core::{Event, EventId, Priority};
use eventstream_storage::SnapshotProducer;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// The reserved topic producer-sequence events belong to.
pub const PRODUCER_STATE_TOPIC: &str = "__producer_state";

/// A producer idle this long (stream time) is forgotten: 7 days, Kafka's default.
pub const PRODUCER_EXPIRY_MS: u64 = 7 * 24 * 3600 * 1000;

/// Most (producer, topic, partition) entries kept.
pub const MAX_PRODUCERS: usize = 100_000;

/// A batch of one idempotent producer for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer id (from InitProducerId).
    pub producer_id: i64,
    /// The producer's epoch.
    pub epoch: i16,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The first record's sequence.
    pub first_sequence: i32,
    /// The last record's sequence.
    pub last_sequence: i32,
}

/// Why a sequenced batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not follow the last one stored or admitted.
    #[error("producer {producer_id} sent sequence {got} where {expected} was expected")]
    OutOfOrder {
        /// The producer.
        producer_id: i64,
        /// The sequence the batch started with.
        got: i32,
        /// The sequence that would follow.
        expected: i32,
    },
    /// A newer epoch of this producer id has written: this one is fenced.
    #[error("producer {producer_id} epoch {got} is fenced by epoch {current}")]
    Fenced {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        got: i16,
        /// The newest epoch stored.
        current: i16,
    },
}

/// What the check made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The batch follows (or the producer is unknown): store it.
    Next,
    /// The batch starts at or before the last sequence: a retry, for the dedup window.
    Retry,
}

/// The last sequence known for one (producer, topic, partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Last {
    pub epoch: i16,
    pub sequence: i32,
}

/// Kafka's sequences wrap from `i32::MAX` to 0.
fn following(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// Kafka's rule for a batch given the last sequence known.
pub(crate) fn check(batch: &ProducerBatch, last: Option<Last>) -> Result<Verdict, SequenceError> {
    let Some(last) = last else {
        return Ok(Verdict::Next);
    };
    let out_of_order = |expected| SequenceError::OutOfOrder {
        producer_id: batch.producer_id,
        got: batch.first_sequence,
        expected,
    };
    if batch.epoch < last.epoch {
        return Err(SequenceError::Fenced {
            producer_id: batch.producer_id,
            got: batch.epoch,
            current: last.epoch,
        });
    }
    if batch.epoch > last.epoch {
        // A new epoch starts its sequences again.
        return match batch.first_sequence {
            0 => Ok(Verdict::Next),
            _ => Err(out_of_order(0)),
        };
    }
    let expected = following(last.sequence);
    if batch.first_sequence == expected {
        Ok(Verdict::Next)
    } else if batch.first_sequence <= last.sequence {
        Ok(Verdict::Retry)
    } else {
        Err(out_of_order(expected))
    }
}

type Key = (i64, String, i32);

fn key_of(b: &ProducerBatch) -> Key {
    (b.producer_id, b.topic.clone(), b.partition)
}

/// The state event published after a checked batch.
pub(crate) fn state_event(batch: &ProducerBatch, priority: Priority) -> Event {
    let mut payload = Vec::with_capacity(20 + batch.topic.len());
    payload.extend_from_slice(&batch.producer_id.to_le_bytes());
    payload.extend_from_slice(&batch.epoch.to_le_bytes());
    payload.extend_from_slice(&batch.partition.to_le_bytes());
    payload.extend_from_slice(&batch.last_sequence.to_le_bytes());
    payload.extend_from_slice(batch.topic.as_bytes());
    // A retry of the batch carries the same state event: the dedup window keeps it once.
    let id = state_event_id(batch);
    Event::new(PRODUCER_STATE_TOPIC, priority, payload).with_id(id)
}

/// A 64-bit mix of the batch's identity (never [`EventId::AUTO`]).
fn state_event_id(b: &ProducerBatch) -> u64 {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finalizer.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let topic = b.topic.bytes().fold(0x6c62_272e_07bb_0142u64, |h, c| {
        (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3)
    });
    let seq = (u64::from(b.epoch as u16) << 32) | u64::from(b.last_sequence as u32);
    let part = u64::from(b.partition as u32) << 17;
    let id = mix(topic ^ part ^ mix(b.producer_id as u64 ^ mix(seq ^ 0x5e9)));
    let id = id.max(1);
    debug_assert_ne!(id, EventId::AUTO.0);
    id
}

/// A state event's payload: (key, last).
fn decode_state(payload: &[u8]) -> Option<(Key, Last)> {
    let fixed = payload.get(..18)?;
    let producer_id = i64::from_le_bytes(fixed[0..8].try_into().ok()?);
    let epoch = i16::from_le_bytes(fixed[8..10].try_into().ok()?);
    let partition = i32::from_le_bytes(fixed[10..14].try_into().ok()?);
    let sequence = i32::from_le_bytes(fixed[14..18].try_into().ok()?);
    let topic = std::str::from_utf8(&payload[18..]).ok()?.to_owned();
    Some(((producer_id, topic, partition), Last { epoch, sequence }))
}

#[derive(Debug, Clone, Copy)]
struct Stored {
    last: Last,
    unix_ms: u64,
}

/// The replicated table (see the module's invariants). Written only by the state machine.
#[derive(Debug, Default)]
pub struct ProducerSequences {
    table: RwLock<HashMap<Key, Stored>>,
}

impl ProducerSequences {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, Stored>> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Stored>> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one state event's payload at stream time `time_ms`.
    pub(crate) fn apply(&self, payload: &[u8], time_ms: u64) {
        let Some((key, last)) = decode_state(payload) else {
            tracing::error!("undecodable producer-sequence event skipped");
            return;
        };
        let mut table = self.write();
        let entry = table.entry(key).or_insert(Stored { last, unix_ms: 0 });
        // A retry's state event may come after a later batch's: never go back.
        let newer = last.epoch > entry.last.epoch
            || (last.epoch == entry.last.epoch && last.sequence >= entry.last.sequence);
        if newer {
            entry.last = last;
        }
        entry.unix_ms = entry.unix_ms.max(time_ms);
        if table.len() > MAX_PRODUCERS {
            evict_oldest(&mut table);
        }
    }

    /// The last sequence stored for a batch's (producer, topic, partition), unless it expired
    /// by stream time `now_ms`.
    pub(crate) fn last(&self, batch: &ProducerBatch, now_ms: u64) -> Option<Last> {
        let table = self.read();
        let s = table.get(&key_of(batch))?;
        (s.unix_ms.saturating_add(PRODUCER_EXPIRY_MS) >= now_ms).then_some(s.last)
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table as a snapshot carries it, sorted by (producer id, topic, partition).
    pub(crate) fn export(&self) -> Vec<SnapshotProducer> {
        let mut out: Vec<SnapshotProducer> = self
            .read()
            .iter()
            .map(|((producer_id, topic, partition), s)| SnapshotProducer {
                producer_id: *producer_id,
                topic: topic.clone(),
                partition: *partition,
                epoch: s.last.epoch,
                last_sequence: s.last.sequence,
                unix_ms: s.unix_ms,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.producer_id, &a.topic, a.partition).cmp(&(b.producer_id, &b.topic, b.partition))
        });
        out
    }

    /// Replaces the table with a snapshot's.
    pub(crate) fn restore(&self, producers: &[SnapshotProducer]) {
        let mut table = self.write();
        table.clear();
        for p in producers {
            let last = Last {
                epoch: p.epoch,
                sequence: p.last_sequence,
            };
            let s = Stored {
                last,
                unix_ms: p.unix_ms,
            };
            table.insert((p.producer_id, p.topic.clone(), p.partition), s);
        }
    }
}

/// Drops the oldest hundredth of the table (by stream time, then key: the same choice on
/// every replica).
fn evict_oldest(table: &mut HashMap<Key, Stored>) {
    let mut by_age: Vec<(u64, Key)> = table.iter().map(|(k, s)| (s.unix_ms, k.clone())).collect();
    by_age.sort();
    let drop = (table.len() / 100).max(table.len() - MAX_PRODUCERS);
    for (_, k) in by_age.into_iter().take(drop) {
        table.remove(&k);
    }
}

/// What the leader admitted in its current term (see the module's docs), by key.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    admitted: Mutex<HashMap<Key, (u64, Last)>>,
}

/// An admission to keep or undo once the batch was handed to the tier rings or refused.
#[derive(Debug)]
pub(crate) struct Admission {
    key: Key,
    term: u64,
    /// What was admitted before this one (restored when this one is undone).
    before: Option<(u64, Last)>,
    ours: Last,
}

impl Admissions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u64, Last)>> {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `batch` against the newer of what this leader admitted in `term` and what the
    /// table holds, and records it as admitted when it is stored (not a retry).
    pub(crate) fn check_and_admit(
        &self,
        batch: &ProducerBatch,
        term: u64,
        stored: Option<Last>,
    ) -> Result<(Verdict, Option<Admission>), SequenceError> {
        let key = key_of(batch);
        let mut admitted = self.lock();
        let before = admitted.get(&key).copied();
        let in_term = before.filter(|(t, _)| *t == term).map(|(_, l)| l);
        // What this term admitted follows what the table held when the term began.
        let verdict = check(batch, in_term.or(stored))?;
        if verdict == Verdict::Retry {
            return Ok((verdict, None));
        }
        let ours = Last {
            epoch: batch.epoch,
            sequence: batch.last_sequence,
        };
        admitted.insert(key.clone(), (term, ours));
        if admitted.len() > MAX_PRODUCERS {
            admitted.retain(|_, (t, _)| *t == term);
        }
        let admission = Admission {
            key,
            term,
            before,
            ours,
        };
        Ok((verdict, Some(admission)))
    }

    /// Undoes an admission whose batch was not handed to the rings (if nothing was admitted
    /// after it).
    pub(crate) fn undo(&self, a: Admission) {
        let mut admitted = self.lock();
        if admitted.get(&a.key) != Some(&(a.term, a.ours)) {
            return;
        }
        match a.before {
            Some(b) => admitted.insert(a.key, b),
            None => admitted.remove(&a.key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first: i32, last: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: 7,
            epoch,
            topic: "orders".into(),
            partition: 0,
            first_sequence: first,
            last_sequence: last,
        }
    }

    fn last(epoch: i16, sequence: i32) -> Option<Last> {
        Some(Last { epoch, sequence })
    }

    #[test]
    fn kafkas_sequence_rule() {
        // Unknown producer: any sequence.
        assert_eq!(check(&batch(0, 17, 20), None), Ok(Verdict::Next));
        assert_eq!(check(&batch(0, 10, 19), last(0, 9)), Ok(Verdict::Next));
        // A retry of what is stored (or part of it).
        assert_eq!(check(&batch(0, 0, 9), last(0, 9)), Ok(Verdict::Retry));
        assert_eq!(check(&batch(0, 5, 14), last(0, 9)), Ok(Verdict::Retry));
        // A gap.
        assert_eq!(
            check(&batch(0, 11, 19), last(0, 9)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                got: 11,
                expected: 10
            })
        );
        // A new epoch starts at 0; an old one is fenced.
        assert_eq!(check(&batch(1, 0, 4), last(0, 9)), Ok(Verdict::Next));
        assert!(matches!(
            check(&batch(1, 3, 4), last(0, 9)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        assert!(matches!(
            check(&batch(0, 10, 12), last(1, 4)),
            Err(SequenceError::Fenced { current: 1, .. })
        ));
        // Sequences wrap.
        assert_eq!(check(&batch(0, 0, 3), last(0, i32::MAX)), Ok(Verdict::Next));
    }

    #[test]
    fn pipelined_batches_check_against_each_other_and_undo_restores() {
        let a = Admissions::default();
        let stored = last(0, 9);
        let (v, first) = a.check_and_admit(&batch(0, 10, 19), 3, stored).unwrap();
        assert_eq!(v, Verdict::Next);
        // The next one follows the admitted one, not the table.
        let (_, second) = a.check_and_admit(&batch(0, 20, 29), 3, stored).unwrap();
        assert!(a.check_and_admit(&batch(0, 40, 49), 3, stored).is_err());
        // The second is refused by the rings: the next expected is 20 again.
        a.undo(second.unwrap());
        assert!(a.check_and_admit(&batch(0, 30, 39), 3, stored).is_err());
        let (v, _) = a.check_and_admit(&batch(0, 20, 29), 3, stored).unwrap();
        assert_eq!(v, Verdict::Next);
        // Undoing an admission that was followed by another changes nothing.
        a.undo(first.unwrap());
        assert!(a.check_and_admit(&batch(0, 10, 19), 3, stored).is_ok());
        // A new term starts from the table.
        let (v, _) = a.check_and_admit(&batch(0, 10, 19), 4, stored).unwrap();
        assert_eq!(v, Verdict::Next);
    }

    #[test]
    fn the_table_applies_state_events_never_backwards_and_expires_idle_producers() {
        let t = ProducerSequences::default();
        let b = batch(0, 10, 19);
        t.apply(&state_event(&b, Priority::Low).payload, 1_000);
        assert_eq!(t.last(&b, 1_000), last(0, 19));
        // A retry's state event after a newer one.
        t.apply(
            &state_event(&batch(0, 20, 29), Priority::Low).payload,
            2_000,
        );
        t.apply(&state_event(&b, Priority::Low).payload, 3_000);
        assert_eq!(t.last(&b, 3_000), last(0, 29));
        // A new epoch replaces it.
        t.apply(&state_event(&batch(1, 0, 4), Priority::Low).payload, 4_000);
        assert_eq!(t.last(&b, 4_000), last(1, 4));
        // Idle past the expiry: unknown.
        assert_eq!(t.last(&b, 4_000 + PRODUCER_EXPIRY_MS + 1), None);
        // Garbage changes nothing.
        t.apply(b"short", 5_000);
        assert_eq!(t.len(), 1);
        // Export and restore give the same table.
        let u = ProducerSequences::default();
        u.restore(&t.export());
        assert_eq!(u.export(), t.export());
        assert_eq!(u.last(&b, 4_000), last(1, 4));
    }

    #[test]
    fn state_event_ids_differ_by_batch_and_repeat_for_a_retry() {
        let a = state_event(&batch(0, 10, 19), Priority::Low);
        assert_eq!(a.id, state_event(&batch(0, 10, 19), Priority::Low).id);
        assert_ne!(a.id, state_event(&batch(0, 20, 29), Priority::Low).id);
        assert_ne!(a.id, state_event(&batch(1, 10, 19), Priority::Low).id);
        assert!(!a.id.is_auto());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = ProducerSequences::default();
        for p in 0..(MAX_PRODUCERS as i64 + 10) {
            let b = ProducerBatch {
                producer_id: p,
                ..batch(0, 0, 0)
            };
            t.apply(&state_event(&b, Priority::Low).payload, p as u64);
        }
        assert!(t.len() <= MAX_PRODUCERS);
        // The oldest went first.
        assert_eq!(t.last(&batch(0, 0, 0), 0), None);
    }
}
