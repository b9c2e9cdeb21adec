#!/usr/bin/env bash
# Offline checks of the operations artefacts: alerts/, dashboards/, k8s/, Dockerfile, runbooks.
#
#   scripts/check-ops.sh            run every check; exit 1 if any fails
#
# Environment:
#   SCHEMAS_DIR   CRD JSON schemas (default: <repo>/k8s/schemas, committed with their source)
#   KEEP_TMP=1    keep the scratch directory (built manifests, logs) and print its path
#
# Installs what it needs when missing (as root): Debian packages prometheus (promtool),
# prometheus-alertmanager (amtool, alertmanager) and, only if no kubectl is on PATH,
# kubernetes-client (kubectl 1.20; k8s/ builds with its kustomize v2 too); PyPI packages
# PyYAML, kubernetes-validate and check-jsonschema at pinned versions.
#
# Every step prints PASS or FAIL with its last output line; a failing step prints its whole log.
# The last line is "N passed, M failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCHEMAS_DIR="${SCHEMAS_DIR:-$ROOT/k8s/schemas}"
KUBERNETES_VALIDATE_VERSION="1.37.0"
CHECK_JSONSCHEMA_VERSION="0.39.0"
PYYAML_VERSION="6.0.3"
KUBERNETES_MIN_VERSION="1.27.0"
PYTHON="${PYTHON:-python3}"

TMP="$(mktemp -d)"
if [ "${KEEP_TMP:-0}" = 1 ]; then
    echo "check-ops: scratch directory $TMP"
else
    trap 'rm -rf "$TMP"' EXIT
fi

die() { echo "check-ops: FATAL: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------ tools
APT_UPDATED=0
apt_install() {
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $* (or install it yourself)"
    if [ "$APT_UPDATED" = 0 ]; then
        echo "check-ops: apt-get update"
        apt-get update -qq >"$TMP/apt-update.log" 2>&1 || { cat "$TMP/apt-update.log" >&2; die "apt-get update failed"; }
        APT_UPDATED=1
    fi
    echo "check-ops: apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$TMP/apt-install.log" 2>&1 \
        || { cat "$TMP/apt-install.log" >&2; die "apt-get install $* failed"; }
}

pip_version() { "$PYTHON" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pip_ensure() { # name version
    if [ "$(pip_version "$1")" != "$2" ]; then
        echo "check-ops: pip install $1==$2"
        "$PYTHON" -m pip install -q --disable-pip-version-check "$1==$2" >"$TMP/pip.log" 2>&1 \
            || { cat "$TMP/pip.log" >&2; die "pip install $1==$2 failed"; }
    fi
}

command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
command -v promtool >/dev/null || apt_install prometheus
{ command -v amtool >/dev/null && { command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null; }; } \
    || apt_install prometheus-alertmanager
command -v kubectl >/dev/null || apt_install kubernetes-client
pip_ensure PyYAML "$PYYAML_VERSION"
pip_ensure kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
pip_ensure check-jsonschema "$CHECK_JSONSCHEMA_VERSION"
# pip puts console scripts next to the interpreter; make sure they are found.
PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH"
for tool in promtool amtool kubectl kubernetes-validate check-jsonschema; do
    command -v "$tool" >/dev/null || die "$tool still missing after installation"
done
[ -d "$SCHEMAS_DIR" ] || die "CRD schemas not found in $SCHEMAS_DIR (set SCHEMAS_DIR)"
for schema in servicemonitor_v1.json prometheusrule_v1.json; do
    [ -f "$SCHEMAS_DIR/$schema" ] || die "$SCHEMAS_DIR/$schema missing"
done

echo "check-ops: $(promtool --version 2>&1 | head -1)"
echo "check-ops: $(amtool --version 2>&1 | head -1)"
echo "check-ops: kubectl $(kubectl version --client 2>/dev/null | head -1 | tr -s ' ')"
echo "check-ops: kubernetes-validate $(pip_version kubernetes-validate), check-jsonschema $(pip_version check-jsonschema)"

# ------------------------------------------------------------------------------ steps
PASSED=0
FAILED=0
FAILED_STEPS=()
step() { # name command...
    local name="$1"; shift
    local log="$TMP/step-$((PASSED + FAILED)).log"
    if (cd "$ROOT" && "$@") >"$log" 2>&1; then
        PASSED=$((PASSED + 1))
        printf 'PASS  %-44s %s\n' "$name" "$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-150)"
    else
        FAILED=$((FAILED + 1))
        FAILED_STEPS+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      | /' "$log"
    fi
}

build_k8s() {
    kubectl kustomize k8s/ >"$TMP/built.yaml" 2>"$TMP/kustomize.err" || { cat "$TMP/kustomize.err"; return 1; }
    grep -v "'bases' is deprecated" "$TMP/kustomize.err" || true
    "$PYTHON" - "$TMP/built.yaml" "$TMP/objects" <<'EOF'
import sys, yaml
from pathlib import Path
out = Path(sys.argv[2]); (out / "builtin").mkdir(parents=True); (out / "crd").mkdir()
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for i, d in enumerate(docs):
    group = "crd" if d["apiVersion"].startswith("monitoring.coreos.com/") else "builtin"
    (out / group / f"{i:02d}-{d['kind']}-{d['metadata']['name']}.yaml").write_text(yaml.safe_dump(d))
print(f"kubectl kustomize k8s/: {len(docs)} objects: " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
EOF
}

validate_builtin() {
    local files=("$TMP"/objects/builtin/*.yaml)
    [ -e "${files[0]}" ] || { echo "no built-in objects in the build"; return 1; }
    # The bundled default (newest) Kubernetes, and the oldest one docs/deploy-kubernetes.md supports.
    kubernetes-validate --strict "${files[@]}" || return 1
    kubernetes-validate --strict --kubernetes-version "$KUBERNETES_MIN_VERSION" "${files[@]}" || return 1
    echo "kubernetes-validate --strict: ${#files[@]} built-in objects valid for Kubernetes $KUBERNETES_MIN_VERSION and the newest"
}

validate_crds() {
    local sm pr
    sm=("$TMP"/objects/crd/*-ServiceMonitor-*.yaml)
    pr=("$TMP"/objects/crd/*-PrometheusRule-*.yaml)
    [ -e "${sm[0]}" ] || { echo "no ServiceMonitor in the build"; return 1; }
    [ -e "${pr[0]}" ] || { echo "no PrometheusRule in the build"; return 1; }
    check-jsonschema --schemafile "$SCHEMAS_DIR/servicemonitor_v1.json" "${sm[@]}" || return 1
    check-jsonschema --schemafile "$SCHEMAS_DIR/prometheusrule_v1.json" "${pr[@]}" || return 1
    local f
    for f in "$TMP"/objects/crd/*.yaml; do
        case "$f" in
            *-ServiceMonitor-*|*-PrometheusRule-*) ;;
            *) echo "custom resource without a schema check: $f"; return 1 ;;
        esac
    done
    echo "check-jsonschema: ServiceMonitor and PrometheusRule valid against $SCHEMAS_DIR"
}

promtool_built_rules() {
    # The PrometheusRule as built is itself a valid Prometheus rule file (its spec).
    "$PYTHON" - "$TMP"/objects/crd/*-PrometheusRule-*.yaml "$TMP/built-rules.yml" <<'EOF' || return 1
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(yaml.safe_dump(rule["spec"], sort_keys=False))
EOF
    promtool check rules "$TMP/built-rules.yml"
}

validate_runbook_manifests() {
    # Manifests embedded in runbooks as here-documents (<<YAML ... YAML) must be valid too.
    mkdir -p "$TMP/runbook-manifests"
    "$PYTHON" - "$TMP/runbook-manifests" <<'EOF' || return 1
import re, sys
from pathlib import Path
out, n = Path(sys.argv[1]), 0
for md in sorted(Path("alerts/runbooks").glob("*.md")):
    for body in re.findall(r"<<-?'?YAML'?\n(.*?)\nYAML\n", md.read_text(), re.S):
        n += 1
        (out / f"{md.stem}-{n}.yaml").write_text(re.sub(r"\$\{N\}|\$N\b", "0", body) + "\n")
print(f"{n} embedded manifests")
EOF
    local files=("$TMP"/runbook-manifests/*.yaml)
    [ -e "${files[0]}" ] || { echo "no manifests embedded in the runbooks"; return 1; }
    kubernetes-validate --strict "${files[@]}" || return 1
    echo "kubernetes-validate --strict: ${#files[@]} manifests embedded in runbooks valid"
}

step "promtool check rules"               promtool check rules alerts/eventstream.rules.yml
step "promtool test rules"                bash -c 'promtool test rules alerts/tests/*.yml'
step "rules: metadata, runbooks, mutants" "$PYTHON" alerts/check.py
step "amtool check-config"                amtool check-config alerts/alertmanager.yml
step "alertmanager routes + inhibition"   "$PYTHON" alerts/check_alertmanager.py
step "dashboards/check.py"                "$PYTHON" dashboards/check.py
step "generated k8s files in sync"        "$PYTHON" alerts/gen-prometheusrule.py --check
step "kubectl kustomize k8s/"             build_k8s
if [ -s "$TMP/built.yaml" ]; then
    step "kubernetes-validate --strict"   validate_builtin
    step "check-jsonschema CRDs"          validate_crds
    step "promtool check built rule"      promtool_built_rules
    step "k8s/check.py deployment policy" "$PYTHON" k8s/check.py "$TMP/built.yaml"
fi
step "runbook manifests validate"         validate_runbook_manifests

echo
if [ "$FAILED" -gt 0 ]; then
    echo "check-ops: FAILED: ${FAILED_STEPS[*]}"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
