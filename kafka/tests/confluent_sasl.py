"""confluent-kafka (librdkafka) authenticating with SASL against eventstream's Kafka listener.

Usage: confluent_sasl.py BOOTSTRAP USER PASSWORD TOPIC
  SCRAM-SHA-256 and PLAIN with the right password each deliver 5 records; SCRAM with a wrong
  password and a client without SASL deliver nothing (the first reports an authentication
  error). Prints one JSON line; exits non-zero on any mismatch.
"""

import json
import sys

from confluent_kafka import KafkaError, Producer


def produce(conf, topic, n):
    errors, delivered = [], []

    def on_error(err):
        errors.append(err)

    conf = {**conf, "acks": "all", "message.timeout.ms": 8000, "error_cb": on_error}
    p = Producer(conf)
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(),
                  on_delivery=lambda err, msg: delivered.append(err is None))
    p.flush(20)
    return sum(delivered), errors


def main():
    bootstrap, user, password, topic = sys.argv[1:5]
    base = {"bootstrap.servers": bootstrap}
    sasl = {**base, "security.protocol": "SASL_PLAINTEXT", "sasl.username": user}
    out = {}
    for mech in ["SCRAM-SHA-256", "PLAIN"]:
        ok, errors = produce({**sasl, "sasl.mechanism": mech, "sasl.password": password}, topic, 5)
        if ok != 5:
            raise SystemExit(f"{mech} with the right password delivered {ok} of 5: {errors[:2]}")
        out[mech] = ok
    ok, errors = produce({**sasl, "sasl.mechanism": "SCRAM-SHA-256",
                          "sasl.password": password + "-wrong"}, topic, 5)
    if ok:
        raise SystemExit(f"a wrong password delivered {ok} records")
    if not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        raise SystemExit(f"no authentication error for a wrong password: {errors[:3]}")
    out["wrong_password"] = ok
    ok, _ = produce(base, topic, 5)
    if ok:
        raise SystemExit(f"a client without SASL delivered {ok} records")
    out["no_sasl"] = ok
    print(json.dumps(out))


if __name__ == "__main__":
    main()
