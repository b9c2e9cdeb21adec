"""A real Kafka client (confluent-kafka, which carries librdkafka) against eventstream's Kafka
listener: produces keyed records with headers under every compression codec with acks=all,
checks each delivery report's offset, produces with acks=0, then consumes the topic from the
beginning and checks that every acknowledged record is there once, in offset order, with its
key, value and headers, and that ListOffsets by time and the watermarks agree.

Usage: confluent_client.py BOOTSTRAP TOPIC
Prints one JSON line of what it saw; exits non-zero on any mismatch.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def produce(bootstrap, topic, codec, n, acks):
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "compression.type": codec,
            "linger.ms": 5,
            "message.timeout.ms": 30000,
        }
    )
    acked = []
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append((msg.offset(), msg.key(), msg.value()))

    for i in range(n):
        key = f"{codec}-{i}".encode()
        headers = [("codec", codec.encode()), ("i", str(i).encode()), ("priority", b"high")]
        p.produce(topic, key=key, value=f"value {codec} {i}".encode(), headers=headers, on_delivery=report)
    left = p.flush(30)
    if left or errors:
        raise SystemExit(f"{codec}: {left} undelivered, errors {errors[:3]}")
    return acked


def consume(bootstrap, topic, expected):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "confluent-client-test",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < expected and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise SystemExit(f"consume error: {m.error()}")
        got.append(m)
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    first_ts = got[0].timestamp()[1] if got else 0
    by_time = c.offsets_for_times([TopicPartition(topic, 0, first_ts)], timeout=10)[0].offset
    c.close()
    return got, lo, hi, by_time


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    acked = []
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        acked += produce(bootstrap, topic, codec, 50, "all")
    fire = produce(bootstrap, topic + "-acks0", "none", 20, "0")
    offsets = [o for o, _, _ in acked]
    if len(set(offsets)) != len(offsets):
        raise SystemExit("two acknowledged records share an offset")
    got, lo, hi, by_time = consume(bootstrap, topic, len(acked))
    seen = {m.offset(): m for m in got}
    for o, k, v in acked:
        m = seen.get(o)
        if m is None or m.key() != k or m.value() != v:
            raise SystemExit(f"acknowledged record at {o} missing or different: {m and (m.key(), m.value())}")
        hdrs = dict(m.headers() or [])
        if hdrs.get("codec") is None or hdrs.get("priority") != b"high":
            raise SystemExit(f"headers lost at {o}: {m.headers()}")
    read_offsets = [m.offset() for m in got]
    if read_offsets != sorted(read_offsets) or len(read_offsets) != len(set(read_offsets)):
        raise SystemExit("records not in offset order or read twice")
    if hi != max(offsets) + 1 or lo > min(offsets) or by_time != min(read_offsets):
        raise SystemExit(f"watermarks {lo}..{hi} / by time {by_time} disagree with offsets {min(offsets)}..{max(offsets)}")
    print(json.dumps({"acked": len(acked), "read": len(got), "low": lo, "high": hi,
                      "acks0_sent": len(fire), "by_time": by_time}))


if __name__ == "__main__":
    main()
