"""Kafka consumer groups (confluent-kafka, librdkafka inside) against eventstream's Kafka
listener, which coordinates the group on the raft leader and replicates committed offsets.

Usage:
  confluent_group.py produce BOOTSTRAP TOPIC N
      N keyed records with headers, acks=all; prints {"produced", "first", "last"}
  confluent_group.py share BOOTSTRAP TOPIC GROUP N
      two consumers of GROUP: the first reads about half, the second joins (a rebalance:
      exactly one member owns the one partition), the first leaves, the second reads the
      rest from the committed offset. Every record read once, keys and headers intact.
  confluent_group.py commit BOOTSTRAP TOPIC GROUP K
      reads K records, commits after the last, closes; prints {"committed": offset}
  confluent_group.py resume BOOTSTRAP TOPIC GROUP
      a new consumer of GROUP: prints {"committed": ..., "first": offset of the first record}
  confluent_group.py idempotent BOOTSTRAP TOPIC N
      N records from an idempotent producer (enable.idempotence, acks=all), printing
      "progress K" as deliveries are reported (the caller kills the leader meanwhile);
      prints {"acked": ..., "failed": ...}
  confluent_group.py read-all BOOTSTRAP TOPIC GROUP N
      two consumers of GROUP read until N distinct records are seen: prints {"read", "twice"};
      exits non-zero if a record is missing, read twice or stored twice
Exits non-zero on any mismatch.
"""

import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def produce(bootstrap, topic, n):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    acked, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked.append(msg.offset())

    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                  headers=[("i", str(i).encode())], on_delivery=report)
    left = p.flush(30)
    if left or errors:
        raise SystemExit(f"{left} undelivered, errors {errors[:3]}")
    return sorted(acked)


def consumer(bootstrap, group):
    debug = {"debug": os.environ["KAFKA_DEBUG"]} if os.environ.get("KAFKA_DEBUG") else {}
    return Consumer({
        **debug,
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
    })


def check(m):
    """A record's key, value and header agree with what `produce` sent."""
    i = dict(m.headers() or []).get("i", b"?").decode()
    if m.key() != f"k{i}".encode() or m.value() != f"v{i}".encode():
        raise SystemExit(f"record at {m.offset()} changed: {m.key()} {m.value()} {m.headers()}")


def poll_one(c, timeout=0.2):
    m = c.poll(timeout)
    if m is None:
        return None
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            return None
        raise SystemExit(f"consume error: {m.error()}")
    check(m)
    # Committed before the next record is read: whoever owns the partition next starts here.
    c.commit(message=m, asynchronous=False)
    return m


def describe(admin, group):
    d = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return str(d.state), len(d.members)


def share(bootstrap, topic, group, n):
    read = {}
    a = consumer(bootstrap, group)
    a.subscribe([topic])
    deadline = time.time() + 60
    while len(read) < n // 2 and time.time() < deadline:
        m = poll_one(a)
        if m is not None:
            read.setdefault(m.offset(), []).append("a")
    b = consumer(bootstrap, group)
    b.subscribe([topic])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Both members in one generation: exactly one of them owns the partition.
    both = None
    while time.time() < deadline:
        for name, c in (("a", a), ("b", b)):
            m = poll_one(c, 0.1)
            if m is not None:
                read.setdefault(m.offset(), []).append(name)
        owners = [name for name, c in (("a", a), ("b", b)) if c.assignment()]
        state, members = describe(admin, group)
        if members == 2 and state.endswith("STABLE") and len(owners) == 1:
            both = {"state": state, "members": members, "owner": owners[0]}
            break
    if both is None:
        raise SystemExit("the two consumers never formed a stable group")
    listed = [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid]
    if group not in listed:
        raise SystemExit(f"{group} not in ListGroups: {listed}")
    a.close()
    while len(read) < n and time.time() < deadline:
        m = poll_one(b)
        if m is not None:
            read.setdefault(m.offset(), []).append("b")
    b.close()
    twice = {o: who for o, who in read.items() if len(who) > 1}
    if twice:
        raise SystemExit(f"records read twice: {list(twice.items())[:5]}")
    if len(read) != n:
        raise SystemExit(f"read {len(read)} of {n}")
    by = {"a": 0, "b": 0}
    for who in read.values():
        by[who[0]] += 1
    return {"read": len(read), "by_a": by["a"], "by_b": by["b"], **both}


def commit(bootstrap, topic, group, k):
    c = consumer(bootstrap, group)
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < k and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        check(m)
        got.append(m)
    if len(got) < k:
        raise SystemExit(f"read {len(got)} of {k}")
    c.commit(message=got[-1], asynchronous=False)
    committed = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    c.close()
    if committed != got[-1].offset() + 1:
        raise SystemExit(f"committed {committed}, expected {got[-1].offset() + 1}")
    return {"committed": committed}


def resume(bootstrap, topic, group):
    c = consumer(bootstrap, group)
    c.subscribe([topic])
    deadline = time.time() + 60
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        c.close()
        return {"committed": committed, "first": m.offset()}
    raise SystemExit("nothing read after resuming")


def idempotent(bootstrap, topic, n):
    p = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120000,
    })
    acked, failed = [0], []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            acked[0] += 1
            if acked[0] % 5000 == 0:
                print(f"progress {acked[0]}", flush=True)

    for i in range(n):
        while True:
            try:
                p.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                          headers=[("i", str(i).encode())], on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(120)
    return {"acked": acked[0], "failed": len(failed), "undelivered": left, "errors": failed[:3]}


def read_all(bootstrap, topic, group, n):
    cs = [consumer(bootstrap, group), consumer(bootstrap, group)]

    def revoked(c, partitions):
        # Hand over at a rebalance: the next owner starts after what this one read.
        try:
            c.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise

    for c in cs:
        c.subscribe([topic], on_revoke=revoked)
    keys, offsets, twice = set(), set(), 0
    deadline = time.time() + 120
    while len(keys) < n and time.time() < deadline:
        for c in cs:
            for m in c.consume(num_messages=1000, timeout=0.05):
                if m.error():
                    continue
                check(m)
                if m.offset() in offsets:
                    twice += 1
                    continue
                offsets.add(m.offset())
                if m.key() in keys:
                    raise SystemExit(f"key {m.key()} stored twice (offset {m.offset()})")
                keys.add(m.key())
    # Nothing after the last record read: no second copy of any record is stored.
    _, hi = cs[0].get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    if offsets and hi != max(offsets) + 1:
        raise SystemExit(f"the topic ends at {hi}, past the last record read ({max(offsets)})")
    for c in cs:
        revoked(c, None)
        c.close()
    if twice:
        raise SystemExit(f"{twice} records read twice")
    if len(keys) < n:
        raise SystemExit(f"read {len(keys)} of {n}")
    return {"read": len(keys), "twice": twice}


def main():
    mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "produce":
        offsets = produce(bootstrap, topic, int(sys.argv[4]))
        out = {"produced": len(offsets), "first": offsets[0], "last": offsets[-1]}
    elif mode == "share":
        out = share(bootstrap, topic, sys.argv[4], int(sys.argv[5]))
    elif mode == "commit":
        out = commit(bootstrap, topic, sys.argv[4], int(sys.argv[5]))
    elif mode == "resume":
        out = resume(bootstrap, topic, sys.argv[4])
    elif mode == "idempotent":
        out = idempotent(bootstrap, topic, int(sys.argv[4]))
    elif mode == "read-all":
        out = read_all(bootstrap, topic, sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
