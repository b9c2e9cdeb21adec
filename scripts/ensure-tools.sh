#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: Debian's prometheus (with promtool),
# prometheus-alertmanager (amtool), chromium and kcat, and PyPI's confluent-kafka (a real
# librdkafka client for the Kafka listener's tests), and make and a C compiler, with which the
# rdkafka crate builds librdkafka for `bench kafka`. Idempotent; prints what it does.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  # Deduplicate.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "ensure-tools: installing ${need[*]}"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  # The packages' services cannot start in a container without systemd; that is fine, the
  # tests run their own instances on loopback.
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for t in promtool prometheus amtool chromium kcat make cc; do
  command -v "$t" >/dev/null 2>&1 || { echo "ensure-tools: $t is still missing" >&2; exit 1; }
done
if ! python3 -c 'import confluent_kafka' >/dev/null 2>&1; then
  echo "ensure-tools: installing confluent-kafka (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check confluent-kafka
fi
python3 -c 'import confluent_kafka' || { echo "ensure-tools: confluent-kafka is still missing" >&2; exit 1; }
echo "ensure-tools: promtool, prometheus, amtool, chromium, kcat, make, cc, confluent-kafka present"
