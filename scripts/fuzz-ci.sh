#!/usr/bin/env bash
# CI fuzzing: every target of eventstream-fuzz (peer frames + raft message parse, client
# protocol messages and event blocks, log records, log replay from segment files, TOML
# configuration, setting overrides as flags and variables give them) for a bounded time each. A target fails on a panic
# or on a single allocation larger than 64 x input + 64 KiB (an allocation sized by an
# unchecked length); the failing input is saved under target/fuzz-artifacts/ and the command
# to reproduce it is printed.
#
#   scripts/fuzz-ci.sh                        # 15 s per target, seed from $FUZZ_SEED or the date
#   FUZZ_SECONDS=600 scripts/fuzz-ci.sh       # a longer run
#   FUZZ_TARGET=wal-replay FUZZ_SEED=42 scripts/fuzz-ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-15}"
SEED="${FUZZ_SEED:-$(date +%Y%m%d)}"
TARGET="${FUZZ_TARGET:-all}"

cargo build --quiet --locked -p eventstream-fuzz
BIN=target/debug/eventstream-fuzz
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

echo "fuzz-ci: seed $SEED, ${SECONDS_PER_TARGET} s per target ($TARGET)"
"$BIN" --target "$TARGET" --seconds "$SECONDS_PER_TARGET" --seed "$SEED" --json | tee "$OUT"

# Every target must have run and exercised both sides of its decoder.
python3 - "$OUT" "$TARGET" <<'PY'
import json, subprocess, sys
reports = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
want = subprocess.run(["target/debug/eventstream-fuzz", "--list"], capture_output=True,
                      text=True, check=True).stdout.split()
if sys.argv[2] != "all":
    want = [sys.argv[2]]
got = {r["target"]: r for r in reports}
bad = []
for t in want:
    r = got.get(t)
    if r is None:
        bad.append(f"{t}: did not run")
    elif r["execs"] == 0 or r["accepted"] == 0 or r["rejected"] == 0:
        bad.append(f"{t}: execs {r['execs']}, accepted {r['accepted']}, rejected {r['rejected']}")
    elif r["worst_alloc_to_bound"] > 1.0:
        bad.append(f"{t}: allocation above bound")
for b in bad:
    print("fuzz-ci:", b, file=sys.stderr)
if bad:
    sys.exit(1)
for t in want:
    r = got[t]
    print(f"fuzz-ci: {t:<16} {r['execs']:>9} execs {r['execs_per_sec']:>9.0f}/s  ok")
PY
