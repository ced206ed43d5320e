#!/usr/bin/env bash
# Offline checks of the deployment files (part of scripts/test.sh):
#  - deploy/k8s: every manifest against the Kubernetes API schemas of kubernetes-validate
#    (PyPI; strict: unknown fields are errors) for an older and the newest release it
#    knows, then the cross-references between them (check_manifests.py);
#  - docker/haproxy/haproxy.cfg with `haproxy -c`, docker/prometheus/*.yml and every
#    query of the Grafana dashboard with `promtool` (Debian's haproxy and prometheus);
#  - each check must also refuse a broken copy, so none of them can pass by not looking.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet kubernetes-validate==1.37.0
fi
if ! command -v haproxy >/dev/null || ! command -v promtool >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q haproxy prometheus >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q haproxy prometheus >/dev/null; }
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
expect_fail() { # what, command...
    if "${@:2}" >"$tmp/out" 2>&1; then
        echo "deploy check: a broken $1 passed" >&2
        exit 1
    fi
}

manifests=$(ls deploy/k8s/*.yaml | grep -v kustomization.yaml)
for version in 1.30.0 1.37.0; do
    # shellcheck disable=SC2086
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" $manifests
done
sed 's/periodSeconds: 5/periodSecond: 5/' deploy/k8s/deployment.yaml >"$tmp/bad.yaml"
expect_fail manifest "$venv/bin/kubernetes-validate" --strict --quiet "$tmp/bad.yaml"
"$venv/bin/python" scripts/deploy/check_manifests.py

REPLICAS_DNS=self-judge:8080 haproxy -c -q -f docker/haproxy/haproxy.cfg
sed 's/balance hash var(txn.route_key)/balance hash-by-nothing/' docker/haproxy/haproxy.cfg >"$tmp/bad.cfg"
expect_fail "haproxy.cfg" env REPLICAS_DNS=x:1 haproxy -c -q -f "$tmp/bad.cfg"

promtool check config docker/prometheus.yml >/dev/null
promtool check config docker/prometheus/prometheus.yml >/dev/null
# The dashboard's queries as recording rules: promtool parses every expression.
"$venv/bin/python" scripts/deploy/check_manifests.py --dashboard-rules >"$tmp/rules.yml"
promtool check rules "$tmp/rules.yml" >/dev/null
sed 's/rate(/rate((/' "$tmp/rules.yml" >"$tmp/bad-rules.yml"
expect_fail "dashboard query" promtool check rules "$tmp/bad-rules.yml"
echo "deploy check: manifests, balancer, Prometheus and dashboard queries valid"
