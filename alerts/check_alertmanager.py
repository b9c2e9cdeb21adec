#!/usr/bin/env python3
"""Checks of the example Alertmanager configuration (alerts/alertmanager.yml).

  1. Routing: `amtool config routes test` sends each severity to its receiver
     (critical -> pager, warning -> chat, info -> tickets).
  2. Inhibition, on a real Alertmanager: the config (with its receivers' integrations removed,
     so nothing is ever sent anywhere) is loaded by a local Alertmanager on 127.0.0.1; alerts
     are posted through its API and their status read back:
       - while EventStreamQuorumLost or EventStreamNoLeader fires for a cluster, that cluster's
         warnings and infos are suppressed;
       - critical alerts of that cluster, and warnings of another cluster (another namespace or
         job), stay active;
       - without a NoLeader/QuorumLost source, warnings are active;
       - EventStreamDiskAlmostFull suppresses EventStreamDiskFilling of the same node only.

Usage: alerts/check_alertmanager.py [CONFIG]   (default: alerts/alertmanager.yml)

Exit status 0 when everything holds; otherwise the problems are printed and the status is 1.
"""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CONFIG = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "alertmanager.yml"

ROUTES = {"critical": "pager", "warning": "chat", "info": "tickets"}


def find_binary(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"check_alertmanager: none of {names} found: install Debian package prometheus-alertmanager")


def check_routes(amtool: str) -> list:
    problems = []
    for severity, receiver in ROUTES.items():
        result = subprocess.run([amtool, "config", "routes", "test", f"--config.file={CONFIG}",
                                 "alertname=EventStreamExample", f"severity={severity}", "namespace=eventstream", "job=eventstream"],
                                capture_output=True, text=True)
        got = result.stdout.strip()
        if result.returncode != 0 or got != receiver:
            problems.append(f"severity={severity} routes to {got!r} (exit {result.returncode}), expected {receiver!r}: {result.stderr.strip()}")
    return problems


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, data=None):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as response:
        text = response.read().decode()
        return json.loads(text) if text.strip().startswith(("[", "{")) else text


def alert(name: str, severity: str, namespace: str, job: str = "eventstream", instance: str = "") -> dict:
    now = datetime.now(timezone.utc)
    labels = {"alertname": name, "severity": severity, "namespace": namespace, "job": job}
    if instance:
        labels["instance"] = instance
    return {
        "labels": labels,
        "annotations": {"summary": f"{name} test alert"},
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(minutes=30)).isoformat(),
    }


def check_inhibition(alertmanager: str) -> list:
    config = yaml.safe_load(CONFIG.read_text())
    # Keep routes and inhibit rules exactly; drop integrations so that nothing leaves the machine.
    config["receivers"] = [{"name": r["name"]} for r in config["receivers"]]
    config.pop("global", None)

    alerts = [
        alert("EventStreamQuorumLost", "critical", "ns-quorum"),
        alert("EventStreamReplicationLag", "warning", "ns-quorum"),
        alert("EventStreamFollowerSnapshotInstalled", "info", "ns-quorum"),
        alert("EventStreamNodeDown", "critical", "ns-quorum"),
        alert("EventStreamReplicationLag", "warning", "ns-quorum", job="eventstream-other"),
        alert("EventStreamNoLeader", "critical", "ns-noleader"),
        alert("EventStreamProposalsFailing", "warning", "ns-noleader"),
        alert("EventStreamHighLatency", "warning", "ns-healthy"),
        alert("EventStreamNodeDown", "critical", "ns-healthy"),
        alert("EventStreamDiskAlmostFull", "critical", "ns-disk", instance="es-0:8080"),
        alert("EventStreamDiskFilling", "warning", "ns-disk", instance="es-0:8080"),
        alert("EventStreamDiskFilling", "warning", "ns-disk", instance="es-1:8080"),
    ]
    expected = {
        ("EventStreamQuorumLost", "ns-quorum", "eventstream"): "active",
        ("EventStreamReplicationLag", "ns-quorum", "eventstream"): "suppressed",
        ("EventStreamFollowerSnapshotInstalled", "ns-quorum", "eventstream"): "suppressed",
        ("EventStreamNodeDown", "ns-quorum", "eventstream"): "active",
        ("EventStreamReplicationLag", "ns-quorum", "eventstream-other"): "active",
        ("EventStreamNoLeader", "ns-noleader", "eventstream"): "active",
        ("EventStreamProposalsFailing", "ns-noleader", "eventstream"): "suppressed",
        ("EventStreamHighLatency", "ns-healthy", "eventstream"): "active",
        ("EventStreamNodeDown", "ns-healthy", "eventstream"): "active",
        ("EventStreamDiskAlmostFull", "ns-disk", "eventstream", "es-0:8080"): "active",
        ("EventStreamDiskFilling", "ns-disk", "eventstream", "es-0:8080"): "suppressed",
        ("EventStreamDiskFilling", "ns-disk", "eventstream", "es-1:8080"): "active",
    }

    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(Path(tmp) / "alertmanager.log", "w+")
        process = subprocess.Popen([alertmanager, f"--config.file={config_path}", f"--storage.path={tmp}",
                                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    request(f"{base}/-/ready")
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        return [f"alertmanager did not become ready:\n{log.read()}"]
                    time.sleep(0.2)
            request(f"{base}/api/v2/alerts", alerts)
            deadline = time.monotonic() + 10
            while True:
                got = {}
                for a in request(f"{base}/api/v2/alerts"):
                    labels = a["labels"]
                    key = (labels["alertname"], labels["namespace"], labels["job"])
                    if "instance" in labels:
                        key += (labels["instance"],)
                    got[key] = a["status"]["state"]
                if got == expected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            for key, state in expected.items():
                if got.get(key) != state:
                    problems.append(f"alert {key}: state {got.get(key)!r}, expected {state!r}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
    return problems


def main() -> int:
    amtool = find_binary("amtool")
    alertmanager = find_binary("alertmanager", "prometheus-alertmanager")
    problems = [f"routing: {p}" for p in check_routes(amtool)]
    problems += [f"inhibition: {p}" for p in check_inhibition(alertmanager)]
    if problems:
        for problem in problems:
            print(f"alerts/check_alertmanager.py: {problem}", file=sys.stderr)
        return 1
    print("alerts/check_alertmanager.py: routes critical->pager, warning->chat, info->tickets; "
          "NoLeader/QuorumLost suppress their cluster's warnings and infos, DiskAlmostFull its node's DiskFilling, "
          "on a live Alertmanager, nothing else")
    return 0


if __name__ == "__main__":
    sys.exit(main())
