"""Cross-reference checks of the deployment files, which a schema cannot see.

Kubernetes (deploy/k8s): the kustomization lists every manifest; selectors, probe ports
and the HPA's target name things that exist; the server's arguments name files the
image holds; grace periods outlast the balancer's longest request; the HPA's metric is
one the prometheus-adapter rules serve. Compose and Kubernetes serve the same model.
Grafana: panel ids unique, panels do not overlap, every query uses the provisioned
datasource. `--dashboard-rules` prints the dashboard's queries as a Prometheus rule
file (for `promtool check rules`). Exits 1 naming every problem found.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "self-judge.json"
DATASOURCES = ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
problems: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok and message not in problems:
        problems.append(message)


def seconds(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m)?", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n // 1000, "s": n, "m": 60 * n}[unit]


def haproxy_server_timeout() -> int:
    cfg = (ROOT / "docker" / "haproxy" / "haproxy.cfg").read_text()
    m = re.search(r"^\s*timeout server (\S+)", cfg, re.M)
    check(m is not None, "haproxy.cfg: no `timeout server`")
    return seconds(m.group(1)) if m else 0


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def server_args_ok(where: str, args: list[str]) -> None:
    for name, folder in (("--config", "configs"), ("--adapter", "adapters")):
        value = flag(args, name)
        check(value is not None, f"{where}: no {name}")
        if value:
            prefix = f"/opt/self-judge/{folder}/"
            check(value.startswith(prefix), f"{where}: {name} {value} is not under {prefix}")
            check((ROOT / folder / value.removeprefix(prefix)).exists(),
                  f"{where}: {name} {value}: {folder}/{value.removeprefix(prefix)} is not in the repository")
    fetch = (ROOT / "scripts" / "fetch-smollm2.sh").read_text()
    model = re.search(r'^NAME="([^"]+)"', fetch, re.M).group(1)
    check(flag(args, "--model") == f"/models/{model}", f"{where}: --model is not /models/{model}")


def kubernetes(timeout: int) -> list[str]:
    files = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    check(sorted(kustomization["resources"]) == files,
          f"kustomization.yaml lists {sorted(kustomization['resources'])}, the folder has {files}")
    docs = [d for f in files for d in yaml.safe_load_all((K8S / f).read_text()) if d]
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})

    def selects(selector: dict, what: str) -> list[str]:
        hits = [n for n, d in deployments.items()
                if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        check(bool(hits), f"{what}: selector {selector} matches no Deployment's pods")
        return hits

    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        selects(d["spec"]["selector"]["matchLabels"], f"Deployment {name}")
        check(spec.get("terminationGracePeriodSeconds", 30) > timeout,
              f"Deployment {name}: terminationGracePeriodSeconds is not longer than the balancer's {timeout} s")
        for c in spec["containers"]:
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if p:
                    port = (p.get("httpGet") or p.get("tcpSocket"))["port"]
                    check(port in ports, f"Deployment {name}: {probe} port {port} is not a named port {sorted(ports)}")
    server = deployments["self-judge"]["spec"]["template"]["spec"]["containers"][0]
    server_args_ok("deploy/k8s/deployment.yaml", server["args"])
    for name, s in by_kind.get("Service", {}).items():
        for hit in selects(s["spec"]["selector"], f"Service {name}"):
            names = {p["name"] for c in deployments[hit]["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                check(p["targetPort"] in names, f"Service {name}: targetPort {p['targetPort']} not in {hit}")
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    replicas = min((h["spec"]["minReplicas"] for h in hpas.values()),
                   default=deployments["self-judge"]["spec"].get("replicas", 1))
    for name, p in by_kind.get("PodDisruptionBudget", {}).items():
        selects(p["spec"]["selector"]["matchLabels"], f"PodDisruptionBudget {name}")
        check(p["spec"]["minAvailable"] < replicas, f"PodDisruptionBudget {name}: minAvailable blocks every drain")
    rules = yaml.safe_load(by_kind["ConfigMap"]["self-judge-adapter-rules"]["data"]["config.yaml"])
    served = {r["name"]["as"] for r in rules["rules"]}
    for name, h in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = h["spec"]["scaleTargetRef"]
        check(target["kind"] == "Deployment" and target["name"] in deployments,
              f"HPA {name}: scales {target['kind']} {target['name']}, which is not here")
        for m in h["spec"]["metrics"]:
            metric = m["pods"]["metric"]["name"]
            check(metric in served, f"HPA {name}: metric {metric} is not served by the adapter rules ({sorted(served)})")
    return server["args"]


def compose(timeout: int, k8s_args: list[str]) -> None:
    c = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    server = c["services"]["self-judge"]
    args = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in server["command"]]
    server_args_ok("docker/compose.yaml", args)
    for name in ("--model", "--adapter", "--config"):
        check(flag(args, name) == flag(k8s_args, name), f"compose and Kubernetes serve different {name}")
    check(seconds(server["stop_grace_period"]) > timeout,
          f"compose: stop_grace_period is not longer than the balancer's {timeout} s")


def dashboard() -> dict:
    d = json.loads(DASHBOARD.read_text())
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    ids = [p["id"] for p in d["panels"]]
    check(len(ids) == len(set(ids)), f"dashboard: panel ids repeat: {ids}")
    cells: dict[tuple[int, int], str] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        check(g["x"] + g["w"] <= 24, f"dashboard: panel {p['title']!r} is wider than the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), p["title"])
                check(other == p["title"], f"dashboard: {p['title']!r} overlaps {other!r}")
        check(bool(p["targets"]), f"dashboard: panel {p['title']!r} has no query")
        for t in [p] + p["targets"]:
            check(t["datasource"]["uid"] == uid, f"dashboard: {p['title']!r} does not use datasource {uid}")
    return d


def dashboard_rules(d: dict) -> str:
    rules = [{"record": f"dashboard:panel{p['id']}:{t['refId']}", "expr": t["expr"]}
             for p in d["panels"] for t in p["targets"]]
    return yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False)


def main() -> int:
    d = dashboard()
    if sys.argv[1:] == ["--dashboard-rules"]:
        if not problems:
            print(dashboard_rules(d))
    else:
        timeout = haproxy_server_timeout()
        compose(timeout, kubernetes(timeout))
    for p in problems:
        print(f"deploy check: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
