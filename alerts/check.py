#!/usr/bin/env python3
"""Offline checks of the alerting rules beyond what promtool does.

  - every alert has a severity of critical / warning / info, and summary, description and
    runbook_url annotations; runbook_url ends in alerts/runbooks/<alertname>.md, that file
    exists and names the alert; the alerts of the operations contract are all present;
  - every metric the rules name is in alerts/metric-names.txt (same check as the dashboards),
    and that contract matches the exporter's catalog (exporter/src/catalog.rs) in name, type
    and labels;
  - runbooks and docs/{deploy-kubernetes,operate}.md: relative links resolve, and every
    `eventstream ...` / `es ...` command they show uses a real CLI subcommand;
  - every alert has, in alerts/tests/*.yml, at least one test expecting it to fire and at least
    one expecting it silent (`exp_alerts: []`);
  - those cases really evaluate the alert (mutation test): for each alert, its firing cases
    alone must fail against a rules file where that alert never fires, and its silent cases
    alone must fail against one where it always fires.

Exit status 0 when everything holds; otherwise every problem is printed and the status is 1.
"""

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RULES = HERE / "eventstream.rules.yml"
TESTS = sorted((HERE / "tests").glob("*.yml"))
RUNBOOKS = HERE / "runbooks"


def _load_dashboard_checks():
    """dashboards/check.py, imported under its own name (both files are called check.py)."""
    spec = importlib.util.spec_from_file_location("dashboard_checks", ROOT / "dashboards" / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_dashboard_checks = _load_dashboard_checks()
check_metric_names = _dashboard_checks.check_metric_names
load_contract = _dashboard_checks.load_contract
report_problems = _dashboard_checks.report_problems

SEVERITIES = {"critical", "warning", "info"}
REQUIRED_ALERTS = {
    "EventStreamHighLatency", "EventStreamQueueFull", "EventStreamNodeDown", "EventStreamNoLeader",
    "EventStreamMultipleLeaders", "EventStreamQuorumLost", "EventStreamHighLeaderChanges",
    "EventStreamReplicationLag", "EventStreamFollowerApplyLag", "EventStreamProposalsFailing",
    "EventStreamHighFsyncLatency", "EventStreamEventsDropped", "EventStreamHandlerPanics",
}
# Procedures the operations contract has runbooks for, besides the per-alert ones.
REQUIRED_PROCEDURES = ["leader-failover.md", "add-remove-node.md", "compaction-retention.md", "backup-restore.md"]
RUNBOOK_URL = re.compile(r"^https?://\S+/alerts/runbooks/([A-Za-z0-9_-]+\.md)$")


def alerts_of(rules: dict):
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


def check_metadata(rules: dict, contract: dict) -> list:
    problems = []
    names = [r["alert"] for r in alerts_of(rules)]
    for missing in sorted(REQUIRED_ALERTS - set(names)):
        problems.append(f"required alert {missing} is missing")
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"alert {dup} is defined more than once")
    for rule in alerts_of(rules):
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} is not one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: annotation {key} is missing")
        url = str(annotations.get("runbook_url", ""))
        match = RUNBOOK_URL.match(url)
        if not match:
            problems.append(f"{name}: runbook_url {url!r} does not point at alerts/runbooks/<file>.md")
        else:
            runbook = RUNBOOKS / match.group(1)
            if match.group(1) != f"{name}.md":
                problems.append(f"{name}: runbook_url should end in {name}.md, not {match.group(1)}")
            if not runbook.is_file():
                problems.append(f"{name}: runbook {runbook.relative_to(ROOT)} does not exist")
            elif name not in runbook.read_text():
                problems.append(f"{name}: runbook {runbook.relative_to(ROOT)} does not mention the alert")
        problems += check_metric_names(str(rule["expr"]), contract, f"{name}")
    for procedure in REQUIRED_PROCEDURES:
        if not (RUNBOOKS / procedure).is_file():
            problems.append(f"procedure runbook alerts/runbooks/{procedure} is missing")
    return problems


CATALOG = ROOT / "exporter" / "src" / "catalog.rs"
CATALOG_ENTRY = re.compile(r'def\(\s*"([a-z0-9_]+)",\s*(\w+),\s*"[^"]*",\s*&\[([^\]]*)\]')


def check_catalog(contract: dict) -> list:
    """The contract must match the exporter's metric catalog (names, types, labels): the rules
    and dashboards rely on exactly those series."""
    catalog = {}
    for name, kind, labels in CATALOG_ENTRY.findall(CATALOG.read_text()):
        catalog[name] = (kind.lower(), set(re.findall(r'"([a-z0-9_]+)"', labels)))
    if not catalog:
        return [f"{CATALOG.relative_to(ROOT)}: no `def(\"name\", Kind, \"unit\", &[labels], ...)` entries found"]
    problems = []
    for name, (kind, labels) in sorted(contract.items()):
        if name not in catalog:
            problems.append(f"contract metric {name} is not in the exporter catalog {CATALOG.relative_to(ROOT)}")
        elif catalog[name] != (kind, labels):
            problems.append(f"contract metric {name} is {kind} {sorted(labels)} but the catalog says {catalog[name][0]} {sorted(catalog[name][1])}")
    return problems


# The CLI the runbooks may use: subcommand -> allowed sub-subcommands (None: none).
CLI = {
    "node": None, "status": None, "doctor": None, "publish": None, "subscribe": None,
    "demo": None, "chaos": None,
    "bench": {"pipeline", "replication", "failover", "restart", "overload", "hiccups"},
    "member": {"add", "remove", "list"},
    "leader": {"transfer"},
    "snapshot": {"save", "status", "restore"},
    "groups": {"list", "describe"},
}
DOCS = [ROOT / "docs" / "deploy-kubernetes.md", ROOT / "docs" / "operate.md"]
CODE = re.compile(r"```[a-z]*\n(.*?)```|`([^`\n]+)`", re.S)
CLI_CALL = re.compile(r"(?<![-\w/.=$])(?<!-n )(?:eventstream|es)[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def check_docs() -> list:
    """Runbooks and operations docs: relative links resolve, and every `eventstream ...` /
    `es ...` command in code uses a subcommand of the CLI."""
    problems = []
    files = sorted(RUNBOOKS.glob("*.md")) + [d for d in DOCS if d.is_file()]
    for missing in [d for d in DOCS if not d.is_file()]:
        problems.append(f"{missing.relative_to(ROOT)} is missing")
    for path in files:
        text = path.read_text()
        where = path.relative_to(ROOT)
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+://", target) or target.startswith("#"):
                continue
            if not (path.parent / target.split("#", 1)[0]).exists():
                problems.append(f"{where}: link to {target} does not resolve")
        for block, inline in CODE.findall(text):
            for sub, subsub in CLI_CALL.findall(block or inline):
                if sub not in CLI:
                    problems.append(f"{where}: `{sub}` is not an eventstream subcommand")
                elif CLI[sub] is not None and subsub not in CLI[sub]:
                    problems.append(f"{where}: `{sub} {subsub}` is not an eventstream subcommand")
    return problems


COUNTED = [ROOT / "README.md", ROOT / "alerts" / "README.md", ROOT / "docs" / "operate.md"]


def check_counts(rules: dict) -> list:
    """Wherever the docs say how many alerts there are ("16 alerts"), the number is right."""
    n = len(list(alerts_of(rules)))
    problems = []
    for path in [p for p in COUNTED if p.is_file()]:
        for said in re.findall(r"\b(\d+) alerts\b", path.read_text()):
            if int(said) != n:
                problems.append(f"{path.relative_to(ROOT)} says {said} alerts; the rules define {n}")
    return problems


def check_test_coverage(rules: dict) -> list:
    fires, silent = set(), set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    problems = []
    for rule in alerts_of(rules):
        name = rule["alert"]
        if name not in fires:
            problems.append(f"{name}: no test expects it to fire")
        if name not in silent:
            problems.append(f"{name}: no test expects it to stay silent")
    return problems


def run_promtool_tests(tests_dir: Path) -> tuple:
    result = subprocess.run(["promtool", "test", "rules", *[str(p) for p in sorted(tests_dir.glob("*.yml"))]],
                            capture_output=True, text=True)
    return result.returncode == 0, result.stdout + result.stderr


def write_filtered_tests(tests_dir: Path, alertname: str, firing: bool) -> int:
    """Copy the tests keeping only `alertname`'s firing (or silent) cases; return how many."""
    for old in tests_dir.glob("*.yml"):
        old.unlink()
    kept = 0
    for path in TESTS:
        suite = yaml.safe_load(path.read_text())
        groups = []
        for test in suite.get("tests", []):
            cases = [c for c in test.get("alert_rule_test", [])
                     if c["alertname"] == alertname and bool(c.get("exp_alerts")) == firing]
            if cases:
                groups.append(dict(test, alert_rule_test=cases))
                groups[-1].pop("promql_expr_test", None)
                kept += len(cases)
        if groups:
            (tests_dir / path.name).write_text(yaml.safe_dump(dict(suite, tests=groups), sort_keys=False))
    return kept


def check_mutants(rules: dict) -> list:
    """Each alert's firing cases must fail against a never-firing mutant of the alert, and its
    silent cases against an always-firing mutant: proof that every case evaluates the alert it
    names at a time when that alert's verdict matters."""
    if shutil.which("promtool") is None:
        return ["promtool not found: install Debian package `prometheus` (scripts/check-ops.sh does)"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tests_dir = work / "tests"
        tests_dir.mkdir()
        for path in TESTS:
            shutil.copy(path, tests_dir / path.name)
        shutil.copy(RULES, work / "eventstream.rules.yml")
        ok, output = run_promtool_tests(tests_dir)
        if not ok:
            return ["promtool test rules fails on the unmodified rules:\n" + output]
        for rule in alerts_of(rules):
            name = rule["alert"]
            for firing, mutant_expr, label in ((True, "vector(1) == 2", "never fires"),
                                               (False, "vector(1)", "always fires")):
                mutant = copy.deepcopy(rules)
                for candidate in alerts_of(mutant):
                    if candidate["alert"] == name:
                        candidate["expr"] = mutant_expr
                        candidate.pop("for", None)
                (work / "eventstream.rules.yml").write_text(yaml.safe_dump(mutant, sort_keys=False))
                if write_filtered_tests(tests_dir, name, firing) == 0:
                    continue  # reported by check_test_coverage
                ok, _ = run_promtool_tests(tests_dir)
                if ok:
                    kind = "firing" if firing else "silent"
                    problems.append(f"{name}: its {kind} test cases still pass when the alert {label}")
    return problems


def main() -> int:
    rules = yaml.safe_load(RULES.read_text())
    contract = load_contract()
    problems = (check_metadata(rules, contract) + check_catalog(contract) + check_test_coverage(rules)
                + check_docs() + check_counts(rules))
    if not problems:
        problems += check_mutants(rules)
    if report_problems("alerts/check.py", problems):
        return 1
    count = sum(1 for _ in alerts_of(rules))
    print(f"alerts/check.py: {count} alerts: severities, annotations, runbooks, metric names ok; "
          f"each has firing and silent tests, and the tests catch a never-firing and an always-firing mutant of each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
