//! `bench kafka` at a tiny size: every event of every run acknowledged, through the Kafka
//! listener (librdkafka and the wire client) and the native client, and held by every node
//! at the acknowledged offsets. No timing is asserted.

use eventstream_bench::kafka::{self, KafkaBenchOptions, KafkaClient, KafkaCompression, RunReport};

fn assert_exact(r: &RunReport, events: u64) {
    assert_eq!(r.events, events, "{r:?}");
    assert_eq!(r.failed_requests, 0, "{r:?}");
    assert!(r.verified, "{r:?}");
    assert_eq!(r.stored_events, events, "{r:?}");
    // Read back in full, by a native subscriber or a librdkafka consumer.
    assert_eq!(r.consumed_events, events, "{r:?}");
    assert!(r.consume_error.is_none(), "{r:?}");
    // The topic's offsets cover every acknowledged event.
    assert!(r.topic_end_offset - r.topic_first_offset >= events, "{r:?}");
}

#[test]
fn librdkafka_and_native_runs_store_every_acknowledged_event() {
    let scratch = eventstream_testkit::Scratch::new("bench-kafka-test");
    let opts = KafkaBenchOptions {
        events: 3000,
        batch: 100,
        payload_bytes: 100,
        connections: 2,
        in_flight: 3,
        rounds: 2,
        data_dir: Some(scratch.path().to_path_buf()),
        ..KafkaBenchOptions::default()
    };
    let r = kafka::run(&opts).unwrap();
    assert_eq!((r.client.as_str(), r.rounds.len()), ("librdkafka", 2));
    for round in &r.rounds {
        assert_exact(&round.native, 3000);
        assert_eq!(round.native.requests, 30, "{round:?}");
        assert_eq!(round.native.listener_requests, 0, "{round:?}");
        assert_exact(&round.kafka, 3000);
        // librdkafka batched: at least 3000 / 100 produce requests reached a listener, and
        // fewer than one per record.
        let served = round.kafka.listener_requests;
        assert!((30..3000).contains(&served), "{round:?}");
    }
    assert!(r.verified && r.complete, "{r:?}");
    assert_eq!(r.produce_version, None);
    assert_eq!(
        (r.listener_produce_errors, r.listener_protocol_errors),
        (0, 0)
    );
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["kafka_to_native_ratio"].is_number(), "{json}");
}

#[test]
fn an_idempotent_lz4_librdkafka_producer_stores_every_record_once() {
    let scratch = eventstream_testkit::Scratch::new("bench-kafka-test");
    let opts = KafkaBenchOptions {
        events: 2000,
        batch: 50,
        payload_bytes: 40,
        rounds: 1,
        compression: KafkaCompression::Lz4,
        idempotent: true,
        data_dir: Some(scratch.path().to_path_buf()),
        ..KafkaBenchOptions::default()
    };
    let r = kafka::run(&opts).unwrap();
    assert_exact(&r.rounds[0].kafka, 2000);
    assert!(r.verified && r.complete, "{r:?}");
}

#[test]
fn wire_lz4_batches_with_a_short_last_one_on_a_fresh_cluster_per_run() {
    let scratch = eventstream_testkit::Scratch::new("bench-kafka-test");
    let opts = KafkaBenchOptions {
        events: 2000,
        batch: 7, // 285 full requests and one of 5
        payload_bytes: 40,
        connections: 3,
        in_flight: 2,
        rounds: 1,
        compression: KafkaCompression::Lz4,
        client: KafkaClient::Wire,
        fresh_cluster: true,
        data_dir: Some(scratch.path().to_path_buf()),
        ..KafkaBenchOptions::default()
    };
    let r = kafka::run(&opts).unwrap();
    for run in [&r.rounds[0].native, &r.rounds[0].kafka] {
        assert_exact(run, 2000);
        assert_eq!(run.requests, 286, "{run:?}");
    }
    assert!(r.verified && r.complete, "{r:?}");
    assert_eq!(r.produce_version, Some(9));
}
