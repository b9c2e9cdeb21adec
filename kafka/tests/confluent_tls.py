"""confluent-kafka (librdkafka) over TLS (security.protocol=SSL) against eventstream's Kafka
listener serving the node's certificate.

Usage: confluent_tls.py BOOTSTRAP CA_PEM TOPIC
  produces 20 records over TLS verifying the listener against CA_PEM, reads them back over
  TLS, then checks that a plaintext producer gets nothing delivered. Prints one JSON line;
  exits non-zero on any mismatch.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def main():
    bootstrap, ca, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    tls = {"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": ca}
    p = Producer({**tls, "acks": "all"})
    acked, errors = [], []

    def report(err, msg):
        (errors.append(str(err)) if err else acked.append(msg.offset()))

    for i in range(20):
        p.produce(topic, key=f"k{i}".encode(), value=f"secret {i}".encode(), on_delivery=report)
    if p.flush(30) or errors:
        raise SystemExit(f"TLS produce failed: {errors[:3]}")
    c = Consumer({**tls, "group.id": "tls-readers", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < 20 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode())
    c.close()
    if got != [f"secret {i}" for i in range(20)]:
        raise SystemExit(f"read back over TLS: {got}")
    plain = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 3000})
    plain_acked = []
    plain.produce(topic, value=b"plaintext", on_delivery=lambda err, msg: plain_acked.append(err is None))
    plain.flush(10)
    if any(plain_acked):
        raise SystemExit("a plaintext producer was served on the TLS listener")
    print(json.dumps({"tls_acked": len(acked), "tls_read": len(got), "plaintext_delivered": 0}))


if __name__ == "__main__":
    main()
