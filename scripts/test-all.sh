#!/usr/bin/env bash
# Runs every test of eventstream: formatting, lints, unit/integration/property/doc tests, loom
# model checks of the lock-free ring, the operations checks (alerts, k8s, dashboards) and the
# end-to-end tests against real Prometheus and Chromium, 50 chaos cycles and bounded fuzzing. Installs what it needs when missing.
#
# Usage: scripts/test-all.sh        (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
[ "${CI:-}" = "true" ] && export CARGO_INCREMENTAL=0

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%T)"; }

step "tools"
bash scripts/ensure-tools.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace: unit, integration, property, doc, end-to-end)"
cargo test --workspace --locked

step "loom model checks of the ring"
LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
  cargo test -p eventstream-core --release --lib --locked loom_tests

step "operations checks (alerts, k8s, dashboards)"
bash scripts/check-ops.sh

step "chaos: 50 fault cycles against real node processes, history checked"
bash scripts/chaos-ci.sh

step "fuzz: decoders and config parsers, 15 s per target, allocation-bounded"
bash scripts/fuzz-ci.sh

step "all tests passed"
