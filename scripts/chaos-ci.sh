#!/usr/bin/env bash
# CI chaos run: `eventstream chaos` with >= 50 fault cycles on 3 real node processes, then checks
# the JSON report: no lost acknowledged event, no duplicate, no divergent offset (and the run's
# own verdict, which also covers consumer order, acknowledged offsets, unacknowledged publishes
# stored twice and phantom ids). Exit 0 only for a clean history.
#
#   scripts/chaos-ci.sh                      # 50 cycles, seed from $CHAOS_SEED or the date
#   CHAOS_CYCLES=500 scripts/chaos-ci.sh     # a longer run
#   CHAOS_NODES=5 scripts/chaos-ci.sh        # a 5-node cluster
#   EVENTSTREAM_BIN=target/debug/eventstream scripts/chaos-ci.sh
#
# A failing run keeps its directory (node logs + history.json, re-checkable with
# `eventstream chaos --check DIR/history.json`) and prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."

CYCLES="${CHAOS_CYCLES:-50}"
NODES="${CHAOS_NODES:-3}"
SEED="${CHAOS_SEED:-$(date +%Y%m%d)}"
BIN="${EVENTSTREAM_BIN:-}"
if [[ -z "$BIN" ]]; then
    # The debug build CI already has (incremental); a stale release binary might predate
    # `chaos`. EVENTSTREAM_BIN=target/release/eventstream for a release run.
    cargo build --quiet --locked --bin eventstream
    BIN=target/debug/eventstream
fi
if (( CYCLES < 50 )) && [[ "${CHAOS_ALLOW_SHORT:-}" != 1 ]]; then
    echo "chaos-ci: CI runs at least 50 cycles (got $CYCLES; CHAOS_ALLOW_SHORT=1 to override)" >&2
    exit 2
fi

OUT="$(mktemp -t chaos-ci.XXXXXX.json)"
echo "chaos-ci: $BIN chaos --nodes $NODES --cycles $CYCLES --seed $SEED --json" >&2
start=$(date +%s)
set +e
"$BIN" chaos --nodes "$NODES" --cycles "$CYCLES" --seed "$SEED" --json >"$OUT"
rc=$?
set -e
echo "chaos-ci: finished in $(( $(date +%s) - start )) s (exit $rc)" >&2
cat "$OUT"
echo

python3 - "$OUT" "$CYCLES" <<'PY'
import json, sys
path, cycles = sys.argv[1], int(sys.argv[2])
try:
    r = json.load(open(path))
except Exception as e:
    sys.exit(f"chaos-ci: no JSON report ({e})")
problems = []
for key in ("lost", "duplicates", "divergent_offsets", "ack_offset_mismatches",
            "consumer_order_violations", "unacked_duplicates", "phantom_ids",
            "incomplete_final_reads"):
    if r.get(key) != 0:
        problems.append(f"{key} = {r.get(key)}")
if r.get("cycles", 0) < cycles:
    problems.append(f"only {r.get('cycles')} of {cycles} cycles ran")
if r.get("acked", 0) == 0:
    problems.append("nothing was acknowledged")
if not r.get("valid"):
    problems.append("the run reported anomalies")
print(f"chaos-ci: seed {r.get('seed')}: {r.get('cycles')} cycles, acked {r.get('acked')}, "
      f"failed {r.get('failed_publishes')} (stored once {r.get('unacked_stored')}), "
      f"lost {r.get('lost')}, duplicates {r.get('duplicates')}, "
      f"divergent {r.get('divergent_offsets')}, max unavailable {r.get('max_unavailable_ms')} ms "
      f"{r.get('max_unavailable_ms_by_fault')}, unrecovered cycles {r.get('unrecovered_cycles')}",
      file=sys.stderr)
if r.get("kept_dir"):
    print(f"chaos-ci: history and node logs kept in {r['kept_dir']}", file=sys.stderr)
if problems:
    sys.exit("chaos-ci: FAILED: " + "; ".join(problems))
print("chaos-ci: OK", file=sys.stderr)
PY
rm -f "$OUT"
exit "$rc"
