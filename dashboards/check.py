#!/usr/bin/env python3
"""Offline sanity check of the Grafana dashboards in this directory.

Checks, for every dashboards/*.json:
  - valid JSON with uid, title, schemaVersion; unique panel ids; panels inside the 24-column grid;
  - a templating variable `datasource` of type `datasource` (query `prometheus`), and every
    panel, every target and every query variable uses the data source `${datasource}`;
  - every non-row panel has at least one target, each with a non-empty `expr` and a unique refId;
  - every expression parses as PromQL: the expressions, with Grafana's variables replaced by
    sample values, are written as recording rules and run through `promtool check rules`;
  - every metric an expression names is in the contract alerts/metric-names.txt (histogram
    series as <family>_bucket/_sum/_count, plus Prometheus' `up`), and every label matched
    directly on a metric is one of its contract labels or a scrape label.

Library use (the live-cluster end-to-end test reuses it):
    from check import panel_queries
    for dashboard, panel, ref, expr in panel_queries(Path("dashboards"), {"job": "eventstream"}):
        ...  # run expr against a real Prometheus

Usage: dashboards/check.py [DIRECTORY]   (default: the directory of this script)

Exit status 0 when everything holds; otherwise every problem is printed and the status is 1.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTRACT = ROOT / "alerts" / "metric-names.txt"

DATASOURCE_UID = "${datasource}"
# Labels that Prometheus / the ServiceMonitor attach to every series.
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_TOKEN = re.compile(r"(?<![\w:$.])((?:eventstream|process)_[a-zA-Z0-9_]+|up)\b(\s*\{([^}]*)\})?")
LABEL_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")

# Values used to expand Grafana variables when parsing expressions offline.
DEFAULT_VARIABLES = {
    "job": "eventstream",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}


def load_contract(path: Path = CONTRACT) -> dict:
    """metric family -> (type, set of labels), from alerts/metric-names.txt."""
    contract = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2 or fields[1] not in {"counter", "gauge", "histogram", "summary"}:
            raise SystemExit(f"{path}:{line_no}: expected `name type [labels...]`, got {line!r}")
        contract[fields[0]] = (fields[1], set(fields[2:]))
    return contract


def resolve_metric(name: str, contract: dict):
    """The contract family and labels a series name belongs to, or None."""
    if name == "up":
        return "up", set()
    if name in contract and contract[name][0] != "histogram":
        return name, contract[name][1]
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            family = name[: -len(suffix)]
            if family in contract and contract[family][0] in {"histogram", "summary"}:
                labels = set(contract[family][1])
                if suffix == "_bucket":
                    labels.add("le")
                return family, labels
    return None


def check_metric_names(expr: str, contract: dict, where: str) -> list:
    """Problems with metric names / directly matched labels used in one expression."""
    problems = []
    for match in METRIC_TOKEN.finditer(expr):
        name, matchers = match.group(1), match.group(3)
        resolved = resolve_metric(name, contract)
        if resolved is None:
            problems.append(f"{where}: metric {name!r} is not in {CONTRACT.relative_to(ROOT)}")
            continue
        if matchers:
            allowed = resolved[1] | SCRAPE_LABELS
            for label in LABEL_MATCHER.findall(matchers):
                if label not in allowed:
                    problems.append(f"{where}: label {label!r} is not a label of {name}")
    return problems


def expand(expr: str, variables: dict) -> str:
    """Replace Grafana's $var, ${var} and ${var:fmt} with the given values."""

    def value(match):
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(name)
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def iter_panels(panels):
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def panel_queries(directory: Path = HERE, variables: dict = None):
    """(dashboard file, panel title, refId, expanded expr) for every target of every dashboard."""
    values = dict(DEFAULT_VARIABLES)
    values.update(variables or {})
    for path in sorted(directory.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in iter_panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                yield path.name, panel.get("title", ""), target.get("refId", ""), expand(target["expr"], values)


def uses_datasource_variable(ds) -> bool:
    if isinstance(ds, str):
        return ds in {"$datasource", DATASOURCE_UID}
    return isinstance(ds, dict) and ds.get("uid") in {"$datasource", DATASOURCE_UID}


def check_dashboard(path: Path, contract: dict) -> tuple:
    """(problems, [(where, expanded expr)]) for one dashboard file."""
    problems, exprs = [], []
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return [f"{path.name}: invalid JSON: {err}"], []

    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        if key not in dashboard:
            problems.append(f"{path.name}: missing top-level {key!r}")
    variables = dashboard.get("templating", {}).get("list", [])
    by_name = {v.get("name"): v for v in variables}
    ds_var = by_name.get("datasource")
    if ds_var is None or ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
        problems.append(f"{path.name}: needs a templating variable `datasource` of type datasource, query prometheus")
    for var in variables:
        if var.get("type") == "query" and not uses_datasource_variable(var.get("datasource")):
            problems.append(f"{path.name}: variable {var.get('name')!r} does not use ${{datasource}}")

    sample_values = dict(DEFAULT_VARIABLES)
    for var in variables:
        sample_values.setdefault(var.get("name"), ".*")

    seen_ids = set()
    panels = list(iter_panels(dashboard.get("panels", [])))
    if sum(1 for p in panels if p.get("type") != "row") == 0:
        problems.append(f"{path.name}: no panels")
    for panel in panels:
        title = panel.get("title") or "<untitled>"
        where = f"{path.name}: panel {title!r}"
        pid = panel.get("id")
        if pid in seen_ids:
            problems.append(f"{where}: duplicate panel id {pid}")
        seen_ids.add(pid)
        grid = panel.get("gridPos", {})
        if not all(k in grid for k in ("x", "y", "w", "h")) or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos {grid} is not inside the 24-column grid")
        if panel.get("type") == "row":
            continue
        if not panel.get("title"):
            problems.append(f"{where}: panel id {pid} has no title")
        if not uses_datasource_variable(panel.get("datasource")):
            problems.append(f"{where}: datasource is {panel.get('datasource')!r}, not ${{datasource}}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        refs = set()
        for target in targets:
            ref = target.get("refId")
            twhere = f"{where} target {ref}"
            if not ref or ref in refs:
                problems.append(f"{twhere}: missing or duplicate refId")
            refs.add(ref)
            if not uses_datasource_variable(target.get("datasource")):
                problems.append(f"{twhere}: datasource is {target.get('datasource')!r}, not ${{datasource}}")
            expr = (target.get("expr") or "").strip()
            if not expr:
                problems.append(f"{twhere}: empty expr")
                continue
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                problems.append(f"{twhere}: unbalanced brackets in {expr!r}")
            try:
                expanded = expand(expr, sample_values)
            except KeyError as err:
                problems.append(f"{twhere}: unknown variable ${err.args[0]} in {expr!r}")
                continue
            problems += check_metric_names(expr, contract, twhere)
            exprs.append((twhere, expanded))
    return problems, exprs


def promtool_parse(exprs: list) -> list:
    """Parse every expression with promtool (as recording rules); return problems."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return ["promtool not found: install Debian package `prometheus` (scripts/check-ops.sh does)"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        # One file per expression so that a failure names the panel it belongs to.
        files = []
        for i, (where, expr) in enumerate(exprs):
            rule_file = Path(tmp) / f"expr{i}.yml"
            rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:expr", "expr": expr}]}]}))
            files.append((where, expr, rule_file))
        result = subprocess.run([promtool, "check", "rules", *[str(f) for _, _, f in files]], capture_output=True, text=True)
        if result.returncode != 0:
            output = result.stdout + result.stderr
            for where, expr, rule_file in files:
                if f"{rule_file}: " in output or f"Checking {rule_file}\n  FAILED" in output:
                    problems.append(f"{where}: promtool cannot parse {expr!r}")
            if not problems:
                problems.append("promtool check rules failed:\n" + output)
    return problems


def report_problems(script: str, problems: list) -> bool:
    """Prints every problem, then how many there were, to stderr as `script: ...`; True if any."""
    for problem in problems:
        print(f"{script}: {problem}", file=sys.stderr)
    if problems:
        print(f"{script}: {len(problems)} problem(s)", file=sys.stderr)
    return bool(problems)


def main() -> int:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    contract = load_contract()
    dashboards = sorted(directory.glob("*.json"))
    if not dashboards:
        print(f"dashboards/check.py: no dashboards in {directory}", file=sys.stderr)
        return 1
    problems, exprs, panels = [], [], 0
    for path in dashboards:
        p, e = check_dashboard(path, contract)
        problems += p
        exprs += e
        panels += sum(1 for x in iter_panels(json.loads(path.read_text()).get("panels", [])) if x.get("type") != "row")
    problems += promtool_parse(exprs)
    if report_problems("dashboards/check.py", problems):
        return 1
    used = set()
    for _, expr in exprs:
        for m in METRIC_TOKEN.finditer(expr):
            resolved = resolve_metric(m.group(1), contract)
            used.add(resolved[0])
    print(f"dashboards/check.py: {len(dashboards)} dashboards, {panels} panels, {len(exprs)} queries parsed by promtool, "
          f"{len(used)} metric families used, all in the contract")
    return 0


if __name__ == "__main__":
    sys.exit(main())
