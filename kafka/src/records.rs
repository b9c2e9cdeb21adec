//! Kafka record batches ↔ eventstream events.
//!
//! * **In** (Produce): every record batch of a partition's `records` is decoded (v2 only, CRC
//!   checked, gzip/snappy/lz4/zstd decompressed) into events of the topic: the value is the
//!   payload (a null value becomes an empty payload), the key and the headers are kept in
//!   order, the priority comes from a `priority` header (`critical|high|medium|low`) or the
//!   listener's default. The producer's record timestamp is not kept: the leader gives every
//!   event its stream time, which is what consumers read back (`LogAppendTime`).
//! * **Idempotent producers**: a record of a batch with a producer id gets the event id
//!   [`idempotent_id`] of (producer id, epoch, topic, sequence). A batch retried after a
//!   failover carries the same ids, so the node's replicated dedup window stores it once and
//!   acknowledges the retry with the offsets the first attempt got. The partition's
//!   [`ProducerBatch`] (producer id, epoch, first and last sequence) goes with the events, so
//!   the leader checks that it follows the producer's last one ([`decode_produce_batch`]).
//! * **Out** (Fetch): events with their offsets become one v2 batch (uncompressed). Offsets
//!   of a topic may have gaps (other topics' events sit there), which a batch's offset deltas
//!   carry as they are; clients accept gaps, as in a compacted Kafka topic.

use crate::decompress::{decompress, Budget};
use crate::error::KafkaError;
use bytes::{Buf, Bytes, BytesMut};
use eventstream_core::{Event, Header, Priority};
use eventstream_node::ProducerBatch;
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The record header that names an event's priority.
pub const PRIORITY_HEADER: &str = "priority";

/// One partition's produced records as events, and the idempotent producer's batch if the
/// records carry a producer id.
#[derive(Debug)]
pub struct Decoded {
    /// The events, in record order.
    pub events: Vec<Event>,
    /// The producer, epoch and sequences of an idempotent producer's records.
    pub sequence: Option<ProducerBatch>,
}

/// The events of `records` (one partition's record batches) for `topic`; compressed batches
/// expand within `budget` ([`crate::decompress`]).
pub fn decode_produce(
    topic: &str,
    records: &Bytes,
    default_priority: Priority,
    budget: &Budget,
) -> Result<Vec<Event>, KafkaError> {
    Ok(decode_produce_batch(topic, records, default_priority, budget)?.events)
}

/// [`decode_produce`] with the producer's sequences: every record of an idempotent producer
/// has the same producer id and epoch, and the batches of one partition follow each other
/// (else the records are refused); records without a producer id have no sequence.
pub fn decode_produce_batch(
    topic: &str,
    records: &Bytes,
    default_priority: Priority,
    budget: &Budget,
) -> Result<Decoded, KafkaError> {
    let mut buf = records.clone();
    let mut sets = Vec::new();
    while buf.has_remaining() {
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|c: &mut Bytes, codec| decompress(c, codec, budget).map_err(Into::into)),
        )
        .map_err(|e| KafkaError::BadRecords(format!("{e:#}")))?;
        sets.push(set);
    }
    let mut events = Vec::new();
    let mut sequence: Option<ProducerBatch> = None;
    for set in sets {
        for r in set.records {
            if r.control {
                continue;
            }
            follow_sequence(&mut sequence, topic, &r, events.is_empty())?;
            events.push(event_of(topic, r, default_priority)?);
        }
    }
    Ok(Decoded { events, sequence })
}

/// Extends the partition's sequence with record `r` (`first`: no record before it).
fn follow_sequence(
    seq: &mut Option<ProducerBatch>,
    topic: &str,
    r: &Record,
    first: bool,
) -> Result<(), KafkaError> {
    let idempotent = r.producer_id >= 0;
    let refuse = |why: String| Err(KafkaError::BadRecords(why));
    match seq {
        None if first && idempotent => {
            *seq = Some(ProducerBatch {
                producer_id: r.producer_id,
                epoch: r.producer_epoch,
                topic: topic.to_owned(),
                partition: 0,
                first_sequence: r.sequence,
                last_sequence: r.sequence,
            });
            Ok(())
        }
        None if idempotent => {
            refuse("records with and without a producer id in one partition".into())
        }
        None => Ok(()),
        Some(_) if !idempotent => {
            refuse("records with and without a producer id in one partition".into())
        }
        Some(s) if s.producer_id != r.producer_id || s.epoch != r.producer_epoch => {
            refuse(format!(
                "records of producers {}/{} and {}/{} in one partition",
                s.producer_id, s.epoch, r.producer_id, r.producer_epoch
            ))
        }
        Some(s) if r.sequence != s.last_sequence.wrapping_add(1).max(0) => refuse(format!(
            "record sequence {} does not follow {} within the request",
            r.sequence, s.last_sequence
        )),
        Some(s) => {
            s.last_sequence = r.sequence;
            Ok(())
        }
    }
}

/// The event id of an idempotent producer's record: a 64-bit mix of (producer id, epoch,
/// topic, sequence), the same on every node and in every build (a retry may reach another
/// leader), never [`eventstream_core::EventId::AUTO`].
pub fn idempotent_id(producer_id: i64, epoch: i16, topic: &str, sequence: i32) -> u64 {
    fn mix(mut z: u64) -> u64 {
        // splitmix64's finalizer.
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    // FNV-1a of the topic.
    let topic_hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let seq = (u64::from(epoch as u16) << 32) | u64::from(sequence as u32);
    let id = mix(topic_hash ^ mix(producer_id as u64 ^ mix(seq)));
    id.max(1)
}

fn event_of(topic: &str, r: Record, default_priority: Priority) -> Result<Event, KafkaError> {
    if r.transactional {
        return Err(KafkaError::BadRecords(
            "transactional batches are not accepted: transactions are not offered".into(),
        ));
    }
    let mut priority = default_priority;
    let mut e = Event::new(topic, priority, r.value.unwrap_or_default());
    if r.producer_id >= 0 {
        e = e.with_id(idempotent_id(
            r.producer_id,
            r.producer_epoch,
            topic,
            r.sequence,
        ));
    }
    if let Some(k) = r.key {
        e = e.with_key(k);
    }
    for (name, value) in r.headers {
        if &*name == PRIORITY_HEADER {
            let text = value.as_deref().unwrap_or_default();
            priority = std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    KafkaError::BadRecords(format!(
                        "header `priority` is `{}`: expected critical, high, medium or low",
                        String::from_utf8_lossy(text)
                    ))
                })?;
        }
        e = e.with_header(name.to_string(), value);
    }
    e.priority = priority;
    Ok(e)
}

/// One v2 record batch holding `events` (offset order), timestamps in milliseconds from
/// each event's stream time (`ingest_ns` as read from the stream).
pub fn encode_fetch(events: &[(u64, Event)]) -> Result<Bytes, KafkaError> {
    if events.is_empty() {
        return Ok(Bytes::new());
    }
    let records: Vec<Record> = events.iter().map(|(o, e)| record_of(*o, e)).collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| KafkaError::Encode(format!("{e:#}")))?;
    Ok(buf.freeze())
}

fn record_of(offset: u64, e: &Event) -> Record {
    let headers: IndexMap<StrBytes, Option<Bytes>> = e
        .headers()
        .iter()
        .map(|Header { name, value }| (StrBytes::from_string(name.clone()), value.clone()))
        .collect();
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::LogAppend,
        offset: offset as i64,
        // The encoder starts a new batch where `offset - sequence` changes; a constant keeps
        // a topic's events with gaps between their offsets in one batch.
        sequence: offset as i32,
        timestamp: (e.ingest_ns / 1_000_000) as i64,
        key: e.key().cloned(),
        value: Some(e.payload.clone()),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    fn produced(value: &str, key: Option<&str>, headers: &[(&str, Option<&str>)]) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_700_000_000_000,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        StrBytes::from_string((*n).to_owned()),
                        v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn produced_records_become_events_with_key_headers_and_priority() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut second = produced("b", None, &[("priority", Some("critical"))]);
            second.offset = 1;
            let rs = [
                produced("a", Some("k1"), &[("trace", Some("t-1")), ("n", None)]),
                second,
            ];
            let events = decode_produce(
                "orders",
                &batch(&rs, c),
                Priority::Low,
                &Budget::new(1 << 20),
            )
            .unwrap();
            assert_eq!(events.len(), 2, "{c:?}");
            assert_eq!(&events[0].payload[..], b"a");
            assert_eq!(events[0].topic, "orders");
            assert_eq!(events[0].priority, Priority::Low);
            assert_eq!(events[0].key().map(|k| &k[..]), Some(&b"k1"[..]));
            let h = events[0].headers();
            assert_eq!(
                (h[0].name.as_str(), h[0].value.as_deref()),
                ("trace", Some(&b"t-1"[..]))
            );
            assert_eq!((h[1].name.as_str(), h[1].value.as_deref()), ("n", None));
            assert_eq!(events[1].priority, Priority::Critical);
            assert_eq!(events[1].key(), None);
        }
    }

    #[test]
    fn an_idempotent_batch_carries_its_producer_and_sequences() {
        let rec = |pid: i64, seq: i32, offset: i64| {
            let mut r = produced("v", None, &[]);
            (r.producer_id, r.producer_epoch, r.sequence, r.offset) = (pid, 2, seq, offset);
            r
        };
        let decode = |sets: &[&[Record]]| {
            let mut b = BytesMut::new();
            for rs in sets {
                b.extend_from_slice(&batch(rs, Compression::None));
            }
            decode_produce_batch("t", &b.freeze(), Priority::Low, &Budget::new(1 << 20))
        };
        let d = decode(&[&[rec(7, 10, 0), rec(7, 11, 1)], &[rec(7, 12, 0)]]).unwrap();
        assert_eq!(
            d.sequence,
            Some(ProducerBatch {
                producer_id: 7,
                epoch: 2,
                topic: "t".into(),
                partition: 0,
                first_sequence: 10,
                last_sequence: 12,
            })
        );
        assert_eq!(d.events.len(), 3);
        // Plain records have none.
        let plain = produced("v", None, &[]);
        assert_eq!(
            decode(&[std::slice::from_ref(&plain)]).unwrap().sequence,
            None
        );
        // Batches that do not follow, mixed producers, mixed with plain records: refused.
        assert!(decode(&[&[rec(7, 10, 0)], &[rec(7, 12, 0)]]).is_err());
        assert!(decode(&[&[rec(7, 10, 0)], &[rec(8, 11, 0)]]).is_err());
        assert!(decode(&[&[rec(7, 10, 0)], std::slice::from_ref(&plain)]).is_err());
        assert!(decode(&[&[plain], &[rec(7, 10, 0)]]).is_err());
    }

    #[test]
    fn an_idempotent_producers_records_get_ids_from_their_sequences() {
        let idempotent = |seq: i32, offset: i64| {
            let mut r = produced("v", None, &[]);
            (r.producer_id, r.producer_epoch, r.sequence, r.offset) = (7, 2, seq, offset);
            r
        };
        let decode = |rs: &[Record]| {
            decode_produce(
                "t",
                &batch(rs, Compression::None),
                Priority::Low,
                &Budget::new(1 << 20),
            )
            .unwrap()
            .iter()
            .map(|e| e.id.0)
            .collect::<Vec<_>>()
        };
        let first = decode(&[idempotent(10, 0), idempotent(11, 1)]);
        assert_eq!(
            first,
            [idempotent_id(7, 2, "t", 10), idempotent_id(7, 2, "t", 11)]
        );
        // The same batch retried: the same ids, which the dedup window drops.
        assert_eq!(decode(&[idempotent(10, 0), idempotent(11, 1)]), first);
        // Another epoch, producer or topic is another id.
        let others = [
            idempotent_id(7, 3, "t", 10),
            idempotent_id(8, 2, "t", 10),
            idempotent_id(7, 2, "u", 10),
        ];
        assert!(others.iter().all(|id| !first.contains(id)));
        // The values are part of the replicated state: they must not change between builds.
        assert_eq!(idempotent_id(1, 0, "orders", 0), 0xa164_4f42_e2ef_a255);
        // A producer without an id gets automatic ids.
        assert_eq!(decode(&[produced("v", None, &[])]), [0]);
    }

    #[test]
    fn a_bad_priority_header_or_garbage_is_refused() {
        let rs = [produced("a", None, &[("priority", Some("urgent"))])];
        let err = decode_produce(
            "t",
            &batch(&rs, Compression::None),
            Priority::Low,
            &Budget::new(1 << 20),
        )
        .unwrap_err();
        assert!(err.to_string().contains("urgent"), "{err}");
        let mut bytes = batch(&[produced("a", None, &[])], Compression::None).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        assert!(decode_produce(
            "t",
            &Bytes::from(bytes),
            Priority::Low,
            &Budget::new(1 << 20)
        )
        .is_err());
        assert!(decode_produce(
            "t",
            &Bytes::from_static(b"\x00\x01"),
            Priority::Low,
            &Budget::new(1 << 20)
        )
        .is_err());
    }

    #[test]
    fn fetched_events_keep_offsets_with_gaps_in_one_batch() {
        let evs: Vec<(u64, Event)> = [3u64, 7, 8, 20]
            .iter()
            .map(|&o| {
                let mut e = Event::new("t", Priority::High, format!("v{o}"))
                    .with_key(format!("k{o}"))
                    .with_header("h", Some(Bytes::from_static(b"x")));
                e.ingest_ns = (1_700_000_000_000 + o) * 1_000_000;
                (o, e)
            })
            .collect();
        let mut bytes = encode_fetch(&evs).unwrap();
        let sets = RecordBatchDecoder::decode_all(&mut bytes).unwrap();
        assert_eq!(sets.len(), 1, "one batch");
        let got: Vec<(i64, i64, Option<Bytes>)> = sets[0]
            .records
            .iter()
            .map(|r| (r.offset, r.timestamp, r.key.clone()))
            .collect();
        assert_eq!(
            got,
            evs.iter()
                .map(|(o, e)| (*o as i64, (1_700_000_000_000 + o) as i64, e.key().cloned()))
                .collect::<Vec<_>>()
        );
        assert_eq!(sets[0].records[0].headers.len(), 1);
        assert!(encode_fetch(&[]).unwrap().is_empty());
    }
}
