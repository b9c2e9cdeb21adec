#!/usr/bin/env python3
"""Runs eventstream's headline benchmarks and prints their medians as a Markdown table.

Every number in the README's benchmark section comes from this script:

    scripts/bench-report.py [--runs N] [--skip-criterion]

It builds the release binary, runs `eventstream bench pipeline` N times closed loop (with the
crossbeam-channel baseline in the same process, right after each run) and N times open loop at
5 M events/s, then the criterion pipeline benchmark (eventstream vs crossbeam-channel vs
disruptor in one run), and reports medians and ratios. Run it on a quiet machine: the numbers
are only as good as the machine is idle.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "eventstream")


def run_json(args):
    out = subprocess.run([BIN] + args, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def median(xs):
    return statistics.median(xs)


def criterion_median_ns(group, name):
    path = os.path.join(ROOT, "target", "criterion", group, name, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-criterion", action="store_true")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)

    closed = [run_json(["bench", "pipeline", "--events", "20000000", "--compare", "--json"]) for _ in range(a.runs)]
    opened = [run_json(["bench", "pipeline", "--events", "10000000", "--rate", "5000000", "--json"]) for _ in range(a.runs)]

    rows = []
    es = median([r["events_per_sec"] for r in closed])
    cb = median([r["baseline_crossbeam"]["events_per_sec"] for r in closed])
    ratio = median([r["speedup_vs_crossbeam"] for r in closed])
    rows.append(("closed loop, 1 producer → 1 pinned worker, dedup on, batch 64",
                 "`eventstream bench pipeline --events 20000000 --compare --json`",
                 f"**{es/1e6:.1f} M events/s** (target ≥ 20 M)"))
    rows.append(("same work on crossbeam-channel, same process, right after",
                 "(the `baseline_crossbeam` field of the same command)",
                 f"{cb/1e6:.1f} M events/s → eventstream **{ratio:.1f}×** (target ≥ 4×)"))
    p50 = median([r["p50_ns"] for r in opened])
    p99 = median([r["p99_ns"] for r in opened])
    p999 = median([r["p999_ns"] for r in opened])
    mx = median([r["max_ns"] for r in opened])
    rows.append(("open loop at 5 M events/s offered (latency from each event's intended send time)",
                 "`eventstream bench pipeline --events 10000000 --rate 5000000 --json`",
                 f"p50 {p50} ns, **p99 {p99} ns** (target ≤ 1 µs), **p99.9 {p999} ns** (target ≤ 10 µs), max {mx} ns"))

    if not a.skip_criterion:
        subprocess.run(["cargo", "bench", "-p", "eventstream-bench", "--bench", "pipeline", "--quiet"],
                       cwd=ROOT, check=True, capture_output=True)
        t = {n: criterion_median_ns("pipeline", n) for n in ("eventstream", "crossbeam_channel", "disruptor")}
        per_s = {n: (1 << 20) / (v / 1e9) for n, v in t.items()}  # events per iteration: 2^20
        rows.append(("criterion `pipeline` (2^20 events per iteration, same run)",
                     "`cargo bench -p eventstream-bench --bench pipeline`",
                     "eventstream {:.1} M/s; crossbeam-channel {:.1} M/s ({:.1}×); disruptor {:.1} M/s ({:.2}×)".format(
                         per_s["eventstream"] / 1e6, per_s["crossbeam_channel"] / 1e6,
                         per_s["eventstream"] / per_s["crossbeam_channel"], per_s["disruptor"] / 1e6,
                         per_s["eventstream"] / per_s["disruptor"])))

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}; "
          f"medians of {a.runs} runs.\n")
    print("| what | command | result |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    json.dump({"closed": closed, "open": opened}, open(os.path.join(ROOT, "target", "bench-report.json"), "w"))


if __name__ == "__main__":
    sys.exit(main())
