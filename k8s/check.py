#!/usr/bin/env python3
"""Policy checks on the built manifests (`kubectl kustomize k8s/` output): what a production
deployment needs beyond schema validity (kubernetes-validate / check-jsonschema do that).

Usage: kubectl kustomize k8s/ | k8s/check.py -     or     k8s/check.py BUILT.yaml

Checked:
  - every object is in namespace `eventstream` (the Namespace itself aside);
  - StatefulSet: 3 replicas, podManagementPolicy Parallel, serviceName = a headless Service with
    publishNotReadyAddresses; a volumeClaimTemplate mounted by the container; liveness on
    /health, readiness on /ready, a startup probe allowing >= 2 minutes of log replay; a preStop
    hook that runs `eventstream leader transfer`, and terminationGracePeriodSeconds covering it;
    restricted security context (non-root, read-only root fs, no privilege escalation, all
    capabilities dropped, seccomp RuntimeDefault); Guaranteed QoS (requests == limits for cpu and
    memory in every container) with an integer CPU count; the node ConfigMap is mounted;
  - the client/metrics Service has a port named `metrics` that targets the container's http port;
  - ServiceMonitor: selects that Service (and not the headless one), scrapes port `metrics` every
    15s with scrapeTimeout <= interval, and carries a `release` label;
  - PodDisruptionBudget: maxUnavailable 1, selecting the StatefulSet's pods;
  - PrometheusRule: `release` label, groups equal to alerts/eventstream.rules.yml;
  - dashboards ConfigMap: label grafana_dashboard "1", one entry per dashboards/*.json with the
    same content;
  - Dockerfile: the runtime USER uid:gid equals runAsUser/runAsGroup, and the binary it copies
    is the path the StatefulSet runs;
  - node ConfigMap: eventstream.toml is TOML whose keys (and section keys) are all settings of
    the binary's NodeConfig (node/src/config.rs), without `id` (prepended per pod); data_dir, http.port,
    listen port and the `peers` list agree with the StatefulSet (one entry per replica, id =
    ordinal + 1, peer DNS through the headless Service); node-ids is present and read;
  - disk budget: retention.max_bytes is set, and it plus one stream segment plus the raft log
    between snapshots fits in 85 % of the data volume claim.
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "eventstream"


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, rest = 0.0, text
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(value) * units[unit]
        rest = rest.replace(f"{value}{unit}", "", 1)
    if rest.strip():
        raise ValueError(f"bad duration {text!r}")
    return total


def quantity(text) -> float:
    text = str(text)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in sorted(suffixes.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


class Checker:
    def __init__(self, objects):
        self.objects = objects
        self.problems = []

    def require(self, condition, message):
        if not condition:
            self.problems.append(message)
        return bool(condition)

    def one(self, kind, name=None):
        found = [o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
        if len(found) != 1:
            self.problems.append(f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
            return None
        return found[0]

    def run(self):
        for obj in self.objects:
            if obj["kind"] != "Namespace":
                self.require(obj["metadata"].get("namespace") == NAMESPACE,
                             f"{obj['kind']}/{obj['metadata']['name']}: namespace is {obj['metadata'].get('namespace')!r}")
        sts = self.one("StatefulSet")
        services = [o for o in self.objects if o["kind"] == "Service"]
        if sts:
            self.statefulset(sts, services)
        metrics_svc = self.metrics_service(services, sts)
        self.servicemonitor(metrics_svc, services)
        self.pdb(sts)
        self.prometheus_rule()
        self.dashboards()
        if sts:
            self.dockerfile(sts)
            self.node_config(sts, services)
        return self.problems

    def statefulset(self, sts, services):
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        pod_labels = spec["template"]["metadata"].get("labels", {})
        self.require(spec.get("replicas") == 3, f"StatefulSet replicas is {spec.get('replicas')}, expected 3")
        self.require(spec.get("podManagementPolicy") == "Parallel", "StatefulSet podManagementPolicy is not Parallel")
        headless = [s for s in services if s["metadata"]["name"] == spec.get("serviceName")]
        if self.require(headless, f"serviceName {spec.get('serviceName')!r} is not a Service in the build"):
            hs = headless[0]["spec"]
            self.require(hs.get("clusterIP") == "None", "the StatefulSet's service is not headless (clusterIP: None)")
            self.require(hs.get("publishNotReadyAddresses") is True, "the headless service lacks publishNotReadyAddresses: true")
            self.require(selects(hs.get("selector"), pod_labels), "the headless service does not select the pods")
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        self.require(claims, "StatefulSet has no volumeClaimTemplates")

        psc = pod.get("securityContext", {})
        self.require(psc.get("runAsNonRoot") is True, "pod securityContext.runAsNonRoot is not true")
        self.require(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, "pod runAsUser is not a non-root uid")
        self.require(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile is not RuntimeDefault")

        grace = pod.get("terminationGracePeriodSeconds", 30)
        config_maps = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
        generated = [o["metadata"]["name"] for o in self.objects if o["kind"] == "ConfigMap"]
        self.require(any(name.startswith("eventstream-config") and name in generated for name in config_maps),
                     f"the node ConfigMap is not mounted (volumes reference {config_maps}, build has {generated})")

        for container in pod.get("containers", []):
            cname = container["name"]
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            self.require(claims & mounts, f"container {cname}: does not mount the volumeClaimTemplate {sorted(claims)}")
            probes = {p: container.get(p, {}) for p in ("livenessProbe", "readinessProbe", "startupProbe")}
            self.require(probes["livenessProbe"].get("httpGet", {}).get("path") == "/health", f"container {cname}: liveness is not GET /health")
            self.require(probes["readinessProbe"].get("httpGet", {}).get("path") == "/ready", f"container {cname}: readiness is not GET /ready")
            startup = probes["startupProbe"]
            budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
            self.require(startup and budget >= 120, f"container {cname}: startup probe allows {budget}s of log replay, want >= 120s")
            pre_stop = json.dumps(container.get("lifecycle", {}).get("preStop", {}))
            match = re.search(r"leader transfer.*--timeout (\d+)s.*sleep (\d+)", pre_stop)
            if self.require(match, f"container {cname}: preStop does not run `eventstream leader transfer --timeout Ns ...; sleep N`"):
                needed = int(match.group(1)) + int(match.group(2)) + 10
                self.require(grace >= needed, f"terminationGracePeriodSeconds {grace} < preStop budget {needed}s")

            sc = container.get("securityContext", {})
            self.require(sc.get("allowPrivilegeEscalation") is False, f"container {cname}: allowPrivilegeEscalation is not false")
            self.require(sc.get("readOnlyRootFilesystem") is True, f"container {cname}: readOnlyRootFilesystem is not true")
            self.require(sc.get("capabilities", {}).get("drop") == ["ALL"], f"container {cname}: capabilities.drop is not [ALL]")
            self.require(not sc.get("capabilities", {}).get("add"), f"container {cname}: adds capabilities")
            self.require(sc.get("privileged") in (None, False), f"container {cname}: privileged")

            res = container.get("resources", {})
            req, lim = res.get("requests", {}), res.get("limits", {})
            for r in ("cpu", "memory"):
                self.require(r in req and r in lim and quantity(req[r]) == quantity(lim[r]),
                             f"container {cname}: {r} requests {req.get(r)} != limits {lim.get(r)} (not Guaranteed QoS)")
            if "cpu" in req:
                cpu = quantity(req["cpu"])
                self.require(cpu >= 1 and cpu == int(cpu), f"container {cname}: cpu {req['cpu']} is not an integer (no exclusive cores)")

    def metrics_service(self, services, sts):
        candidates = [s for s in services if any(p.get("name") == "metrics" for p in s["spec"].get("ports", []))]
        if not self.require(len(candidates) == 1, f"expected one Service with a port named metrics, found {len(candidates)}"):
            return None
        svc = candidates[0]
        port = next(p for p in svc["spec"]["ports"] if p["name"] == "metrics")
        if sts:
            container_ports = {p["name"]: p["containerPort"] for c in sts["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
            self.require(port.get("targetPort") in container_ports or port.get("targetPort") in container_ports.values(),
                         f"metrics port targets {port.get('targetPort')!r}, not a container port")
            self.require(container_ports.get(port.get("targetPort")) == 8080 or port.get("targetPort") == 8080,
                         "metrics port does not reach the http port 8080")
            self.require(selects(svc["spec"].get("selector"), sts["spec"]["template"]["metadata"]["labels"]),
                         "the metrics Service does not select the StatefulSet's pods")
        return svc

    def servicemonitor(self, metrics_svc, services):
        sm = self.one("ServiceMonitor")
        if not sm:
            return
        self.require("release" in sm["metadata"].get("labels", {}), "ServiceMonitor has no `release` label")
        selector = sm["spec"].get("selector", {}).get("matchLabels", {})
        selected = [s["metadata"]["name"] for s in services if selects(selector, s["metadata"].get("labels", {}))]
        if metrics_svc:
            self.require(selected == [metrics_svc["metadata"]["name"]],
                         f"ServiceMonitor selects Services {selected}, expected only {metrics_svc['metadata']['name']}")
        endpoints = sm["spec"].get("endpoints", [])
        if self.require(len(endpoints) == 1, f"ServiceMonitor has {len(endpoints)} endpoints, expected 1"):
            ep = endpoints[0]
            self.require(ep.get("port") == "metrics", f"ServiceMonitor port is {ep.get('port')!r}, expected the port name 'metrics'")
            self.require(ep.get("interval") == "15s", f"ServiceMonitor interval is {ep.get('interval')!r}, expected 15s")
            if self.require("scrapeTimeout" in ep, "ServiceMonitor has no scrapeTimeout"):
                self.require(duration_seconds(ep["scrapeTimeout"]) <= duration_seconds(ep.get("interval", "30s")),
                             "ServiceMonitor scrapeTimeout exceeds its interval")
            self.require(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor path is not /metrics")

    def pdb(self, sts):
        pdb = self.one("PodDisruptionBudget")
        if not pdb:
            return
        self.require(pdb["spec"].get("maxUnavailable") == 1, f"PDB maxUnavailable is {pdb['spec'].get('maxUnavailable')!r}, expected 1")
        if sts:
            self.require(selects(pdb["spec"].get("selector", {}).get("matchLabels"), sts["spec"]["template"]["metadata"]["labels"]),
                         "PDB does not select the StatefulSet's pods")

    def prometheus_rule(self):
        rule = self.one("PrometheusRule")
        if not rule:
            return
        self.require("release" in rule["metadata"].get("labels", {}), "PrometheusRule has no `release` label")
        rules = yaml.safe_load((ROOT / "alerts" / "eventstream.rules.yml").read_text())
        self.require(rule["spec"].get("groups") == rules["groups"],
                     "PrometheusRule groups differ from alerts/eventstream.rules.yml (run alerts/gen-prometheusrule.py)")

    def dashboards(self):
        cms = [o for o in self.objects if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        if not self.require(len(cms) == 1, f"expected one ConfigMap labelled grafana_dashboard=1, found {len(cms)}"):
            return
        data = cms[0].get("data", {})
        sources = sorted((ROOT / "dashboards").glob("*.json"))
        self.require(len(data) == len(sources), f"dashboards ConfigMap has {len(data)} entries, dashboards/ has {len(sources)}")
        contents = {json.dumps(json.loads(v), sort_keys=True) for v in data.values()}
        for src in sources:
            self.require(json.dumps(json.loads(src.read_text()), sort_keys=True) in contents,
                         f"dashboards ConfigMap lacks the current {src.relative_to(ROOT)} (run alerts/gen-prometheusrule.py)")

    def dockerfile(self, sts):
        dockerfile = ROOT / "Dockerfile"
        if not self.require(dockerfile.is_file(), "Dockerfile is missing"):
            return
        text = dockerfile.read_text()
        stages = re.split(r"(?m)^FROM ", text)
        final = stages[-1]
        user = re.findall(r"(?m)^USER (\d+):(\d+)\s*$", final)
        psc = sts["spec"]["template"]["spec"].get("securityContext", {})
        if self.require(user, "the final Dockerfile stage has no numeric `USER uid:gid`"):
            uid, gid = map(int, user[-1])
            self.require(uid != 0, "the image runs as root")
            self.require((uid, gid) == (psc.get("runAsUser"), psc.get("runAsGroup")),
                         f"Dockerfile USER {uid}:{gid} != runAsUser/runAsGroup {psc.get('runAsUser')}:{psc.get('runAsGroup')}")
        binary = re.findall(r"(?m)^COPY --from=\S+ \S+ (\S+)\s*$", final)
        script = json.dumps(sts["spec"]["template"]["spec"]["containers"][0])
        self.require(binary and binary[-1] in script, f"the StatefulSet does not run the binary the image installs ({binary})")


    def node_config(self, sts, services):
        """The node ConfigMap parses as the binary's NodeConfig and agrees with the manifests."""
        cms = [o for o in self.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("eventstream-config")]
        if not self.require(len(cms) == 1 and "eventstream.toml" in cms[0].get("data", {}),
                            "no eventstream-config ConfigMap with an eventstream.toml entry"):
            return
        self.require("node-ids" in cms[0]["data"], "the node ConfigMap has no node-ids entry (read by the entrypoint)")
        try:
            config = tomllib.loads(cms[0]["data"]["eventstream.toml"])
        except tomllib.TOMLDecodeError as err:
            self.problems.append(f"eventstream.toml is not valid TOML: {err}")
            return
        self.require("id" not in config, "eventstream.toml sets `id`; the entrypoint prepends each pod's id")
        unknown = unknown_keys(config, "NodeConfig", node_config_sections())
        self.require(not unknown, f"eventstream.toml keys {unknown} are not NodeConfig settings ({NODE_CONFIG.relative_to(ROOT)})")
        spec = sts["spec"]
        container = spec["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
        self.require(config.get("data_dir") == mounts.get(claim),
                     f"data_dir {config.get('data_dir')!r} is not the data volume's mount path {mounts.get(claim)!r}")
        http_port = config.get("http", {}).get("port")
        self.require(http_port == ports.get("http"), f"http.port {http_port} != container port http {ports.get('http')}")
        listen_port = int(str(config.get("listen", ":0")).rsplit(":", 1)[1])
        self.require(listen_port == ports.get("peer"), f"listen port {listen_port} != container port peer {ports.get('peer')}")
        service = spec["serviceName"]
        expected = [f"{i + 1}={spec_name(sts, i)}.{service}:{ports.get('peer')}@{spec_name(sts, i)}.{service}:{ports.get('http')}"
                    for i in range(spec.get("replicas", 0))]
        self.require(config.get("peers") == expected,
                     f"peers {config.get('peers')} do not match the {spec.get('replicas')} StatefulSet pods: expected {expected}")
        script = " ".join(container.get("args", []))
        self.require("/etc/eventstream/eventstream.toml" in script and "/etc/eventstream/node-ids" in script,
                     "the entrypoint does not read /etc/eventstream/eventstream.toml and /etc/eventstream/node-ids")
        self.disk_budget(config, spec)

    def disk_budget(self, config, spec):
        """The stream's retention fits the data volume: retained bytes + one segment (retention
        deletes whole segments) + the raft log between snapshots stay within 85 % of the claim,
        the level EventStreamDiskFilling warns at."""
        claim = quantity(spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"])
        retention = config.get("retention", {}).get("max_bytes", 0)
        storage = config.get("storage", {})
        if not self.require(retention > 0, "retention.max_bytes is unset: the stream would grow until the volume is full"):
            return
        segment = storage.get("stream_segment_bytes", 64 << 20)
        wal = storage.get("snapshot_bytes", 256 << 20) + storage.get("segment_bytes", 64 << 20)
        need = retention + segment + wal
        self.require(need <= 0.85 * claim,
                     f"retention.max_bytes {retention} + a stream segment {segment} + the log between snapshots {wal} "
                     f"= {need} bytes exceeds 85 % of the {claim:.0f}-byte data volume")


NODE_CONFIG = ROOT / "node" / "src" / "config.rs"


def node_config_sections() -> dict:
    """Every `settings!` struct of the node crate's configuration: name -> {field: type}."""
    text = NODE_CONFIG.read_text()  # a missing file is a failure, not a skipped check
    structs = {}
    for name, body in re.findall(r"settings! \{.*?pub struct (\w+) \{(.*?)\n    \}\n\}", text, re.S):
        structs[name] = dict(re.findall(r"^\s*pub (\w+): ([^=]+?) =", body, re.M))
    if "NodeConfig" not in structs or len(structs) < 2:
        raise SystemExit(f"check.py: cannot find the settings of NodeConfig in {NODE_CONFIG}")
    return structs


def unknown_keys(table: dict, struct: str, structs: dict, prefix: str = "") -> list:
    """Keys of `table` that are not settings of `struct` (sections checked recursively)."""
    fields = structs[struct]
    out = []
    for key, value in table.items():
        ty = fields.get(key, "").strip()
        if not ty:
            out.append(prefix + key)
        elif ty in structs:
            if isinstance(value, dict):
                out += unknown_keys(value, ty, structs, f"{prefix}{key}.")
            else:
                out.append(prefix + key)
    return out


def spec_name(sts, ordinal: int) -> str:
    return f"{sts['metadata']['name']}-{ordinal}"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = sys.stdin.read() if sys.argv[1] == "-" else Path(sys.argv[1]).read_text()
    objects = [o for o in yaml.safe_load_all(text) if o]
    problems = Checker(objects).run()
    if problems:
        for problem in problems:
            print(f"k8s/check.py: {problem}", file=sys.stderr)
        return 1
    kinds = sorted({o["kind"] for o in objects})
    print(f"k8s/check.py: {len(objects)} objects ({', '.join(kinds)}) meet the deployment policy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
