"""The scale-out test behind docker/scaleout-test.sh (which starts the compose project).

Against a running `docker/compose.yaml` project (name in $PROJECT, host ports in
$LB_PORT, $LB_ROUND_ROBIN_PORT, $LB_STATS_PORT, $PROMETHEUS_PORT), on real HH judge
prompts (bench/data/workload.json: 16 contexts of ~150 tokens):
  1. affinity: one routing key (X-Session-Id, or the body's context) is served by
     exactly one replica, read from each replica's /metrics;
  2. load: 300 /judge requests from 16 clients; every answer 200 or 429;
  3. the prefix-cache hit ratio (prompt tokens served from cache / all prompt tokens)
     of one workload with affinity (:8080) and round robin (:8081), replicas
     restarted before each so both start cold;
  4. failover: 300 requests from 16 clients while one replica is killed with `docker
     kill`; every request ends within its timeout, answered 200/429 or 502/503, and the
     other replicas carry on;
  5. the Grafana dashboard: every panel's queries evaluated by the live Prometheus,
     each panel with data, the main ones non-zero.
Prints what it measured; exits 1 naming each failed check. Python standard library only.
"""

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = os.environ.get("PROJECT", "self-judge-scaleout")
COMPOSE = ["docker-compose", "-f", str(ROOT / "docker" / "compose.yaml"), "-p", PROJECT]
LB = f"http://127.0.0.1:{os.environ.get('LB_PORT', '8080')}"
LB_RR = f"http://127.0.0.1:{os.environ.get('LB_ROUND_ROBIN_PORT', '8081')}"
STATS = f"http://127.0.0.1:{os.environ.get('LB_STATS_PORT', '8404')}"
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('PROMETHEUS_PORT', '9090')}"
TIMEOUT = 60.0
failures: list[str] = []


def check(ok: bool, message: str) -> bool:
    print(("ok   " if ok else "FAIL ") + message, flush=True)
    if not ok:
        failures.append(message)
    return ok


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """(status, body); status 0 when no HTTP answer came (refused, reset, timeout)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"content-type": "application/json", **(headers or {})},
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def compose(*args: str) -> str:
    return subprocess.run(COMPOSE + list(args), check=True, capture_output=True, text=True).stdout


def replicas() -> dict[str, str]:
    """Running replica containers: name -> address."""
    out = {}
    for cid in compose("ps", "-q", "self-judge").split():
        info = json.loads(subprocess.run(["docker", "inspect", cid], check=True, capture_output=True,
                                         text=True).stdout)[0]
        if info["State"]["Running"]:
            ip = next(iter(info["NetworkSettings"]["Networks"].values()))["IPAddress"]
            out[info["Name"].lstrip("/")] = f"http://{ip}:8080"
    return out


def metrics(base: str) -> dict[str, float]:
    """A replica's /metrics as {'name{labels}': value}."""
    status, body = http("GET", base + "/metrics", timeout=10)
    if status != 200:
        return {}
    out = {}
    for line in body.decode().splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def judged(base: str) -> float:
    return sum(v for k, v in metrics(base).items()
               if k.startswith('self_judge_requests_total{route="/judge"'))


def balancer_up() -> int:
    status, body = http("GET", STATS + "/stats;csv", timeout=5)
    rows = [r.split(",") for r in body.decode().splitlines()] if status == 200 else []
    return sum(1 for r in rows if len(r) > 17 and r[0] == "replicas" and r[1].startswith("replica")
               and r[17] == "UP")


def wait_ready(n: int, limit: float = 180) -> bool:
    """All n replicas healthy in the balancer and scraped by Prometheus."""
    end = time.time() + limit
    while time.time() < end:
        up = prometheus('sum(up{job="self-judge"})')
        if balancer_up() == n and up and float(up[0]["value"][1]) == n:
            return True
        time.sleep(1)
    return False


def prometheus(query: str) -> list[dict]:
    status, body = http("GET", PROMETHEUS + "/api/v1/query?" + urllib.parse.urlencode({"query": query}),
                        timeout=10)
    return json.loads(body)["data"]["result"] if status == 200 else []


WORKLOAD = json.loads((ROOT / "bench" / "data" / "workload.json").read_text())


def judge_body(context: int, pair: int) -> dict:
    """A judge request on a real HH context; the candidates are cut short so that on a
    2-core machine three replicas answer hundreds of requests in minutes (the context,
    the part the prefix cache shares, stays whole)."""
    cands = WORKLOAD["candidates"][context]
    a, b = cands[(2 * pair) % len(cands)], cands[(2 * pair + 1) % len(cands)]
    return {"context": WORKLOAD["contexts"][context], "response_a": a[:120], "response_b": b[:120]}


def run_load(base: str, jobs: list[tuple[dict, dict]], clients: int,
             on_progress=None) -> list[tuple[int, float]]:
    """Sends every (body, headers) to base/judge from `clients` threads: (status, seconds)."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    todo = list(enumerate(jobs))

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                _, (body, headers) = todo.pop(0)
            t = time.time()
            status, _ = http("POST", base + "/judge", body, headers)
            with lock:
                results.append((status, time.time() - t))
                if on_progress:
                    on_progress(len(results))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(results: list[tuple[int, float]]) -> str:
    times = sorted(t for _, t in results)
    codes = Counter(s for s, _ in results)
    return (f"{len(results)} requests: {dict(sorted(codes.items()))}, "
            f"p50 {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s")


def affinity(reps: dict[str, str]) -> None:
    print("\n== 1. one routing key, one replica", flush=True)
    owners: dict[str, str] = {}
    for i, (key, headers) in enumerate([(f"session-{k}", {"X-Session-Id": f"session-{k}"}) for k in range(6)]
                                       + [(f"context-{c}", {}) for c in range(6)]):
        context = i % 16
        before = {n: judged(u) for n, u in reps.items()}
        for pair in range(4):
            status, _ = http("POST", LB + "/judge", judge_body(context, pair), headers)
            check(status == 200, f"{key}: request {pair} answered {status}")
        gained = {n: judged(u) - before[n] for n, u in reps.items()}
        served = [n for n, g in gained.items() if g > 0]
        check(len(served) == 1 and gained[served[0]] == 4,
              f"key {key}: its 4 requests were served by {gained}")
        if served:
            owners[key] = served[0]
    print("keys per replica:", dict(Counter(owners.values())), flush=True)
    check(len(set(owners.values())) > 1, "the keys spread over more than one replica")


def load(reps: dict[str, str]) -> None:
    print("\n== 2. 300 requests from 16 clients", flush=True)
    before = {n: judged(u) for n, u in reps.items()}
    jobs = [(judge_body(c, p), {"X-Session-Id": f"ctx-{c}"} if c % 2 else {})
            for p in range(19) for c in range(16)][:300]
    random.Random(1).shuffle(jobs)
    results = run_load(LB, jobs, 16)
    print(summary(results), flush=True)
    print("requests per replica:", {n: judged(u) - before[n] for n, u in reps.items()}, flush=True)
    check(len(results) == 300 and all(s in (200, 429) for s, _ in results),
          "every request answered 200 or 429")
    served = sum(s == 200 for s, _ in results)
    check(served > len(results) // 2, f"most requests were served ({served} of {len(results)})")


def hit_ratio(base: str, label: str) -> float:
    """Restarts the replicas (cold caches, zeroed counters), sends one fixed workload,
    returns the share of judge prompt tokens served from cached prefixes."""
    compose("restart", "-t", "30", "self-judge")
    reps = replicas()
    end = time.time() + 120
    while time.time() < end and not all(http("GET", u + "/health", timeout=2)[0] == 200 for u in reps.values()):
        time.sleep(0.5)
    check(all(judged(u) == 0 for u in reps.values()), f"{label}: replicas restarted (counters zero)")
    check(wait_ready(len(reps)), f"{label}: replicas ready after a restart")
    jobs = [(judge_body(c, p), {}) for p in range(6) for c in range(16)]
    results = run_load(base, jobs, 3)
    check(all(s == 200 for s, _ in results), f"{label}: every request of the workload served ({summary(results)})")
    saved = sum(metrics(u).get("self_judge_prefix_tokens_saved_total", 0) for u in reps.values())
    computed = sum(metrics(u).get("self_judge_prefill_tokens_total", 0) for u in reps.values())
    ratio = saved / max(saved + computed, 1)
    print(f"{label}: {summary(results)}; prompt tokens from cache {int(saved)}, computed {int(computed)}, "
          f"hit ratio {ratio:.3f}", flush=True)
    return ratio


def failover() -> None:
    print("\n== 4. one replica killed during 300 requests from 16 clients", flush=True)
    reps = replicas()
    victim = sorted(reps)[0]
    killed = threading.Event()

    def progress(done: int) -> None:
        # Called under the load's lock: kill from another thread, the clients go on.
        if done == 60 and not killed.is_set():
            killed.set()
            threading.Thread(target=subprocess.run, args=(["docker", "kill", victim],),
                             kwargs={"check": True, "capture_output": True}).start()
            print(f"killing {victim} after {done} answers", flush=True)

    jobs = [(judge_body(c, p), {"X-Session-Id": f"kill-{c}"}) for p in range(19) for c in range(16)][:300]
    random.Random(2).shuffle(jobs)
    t = time.time()
    results = run_load(LB, jobs, 16, progress)
    print(summary(results), f"in {time.time() - t:.0f} s", flush=True)
    check(killed.is_set(), "a replica was killed during the load")
    check(len(results) == 300, "every request ended")
    check(max(t for _, t in results) < TIMEOUT, f"no request hung (all within {TIMEOUT:.0f} s)")
    check(all(s in (200, 429, 502, 503) for s, _ in results), "every answer was 200, 429, 502 or 503")
    # /judge bodies are buffered whole, so the balancer replays what the dead replica
    # held: none should reach a client as 502/503.
    lost = sum(s in (502, 503) for s, _ in results)
    check(lost == 0, f"no request lost to the dead replica ({lost} answered 502/503)")
    time.sleep(6)  # a scrape of the balancer after the kill
    retried = prometheus('sum(haproxy_backend_retry_warnings_total{proxy="replicas"})'
                         ' + sum(haproxy_backend_redispatch_warnings_total{proxy="replicas"})')
    retried = float(retried[0]["value"][1]) if retried else 0.0
    check(retried > 0, f"the balancer retried or redispatched what the dead replica held ({retried:.0f})")
    alive = {n: u for n, u in replicas().items() if n != victim}
    end = time.time() + 20
    while balancer_up() != len(alive) and time.time() < end:
        time.sleep(1)
    check(balancer_up() == len(alive), f"the balancer sends to the {len(alive)} replicas left")
    before = {n: judged(u) for n, u in alive.items()}
    after_kill = run_load(LB, [(judge_body(c, 7), {"X-Session-Id": f"kill-{c}"}) for c in range(16)], 2)
    check(all(s == 200 for s, _ in after_kill), f"the replicas left serve every key ({summary(after_kill)})")
    print("requests per replica after the kill:", {n: judged(u) - before[n] for n, u in alive.items()},
          flush=True)


def dashboard() -> None:
    print("\n== 5. the Grafana dashboard's queries on the live Prometheus", flush=True)
    time.sleep(6)  # one more scrape after the load
    d = json.loads((ROOT / "docker" / "grafana" / "dashboards" / "self-judge.json").read_text())
    nonzero = {"Request rate by route", "Requests by replica", "Judge batch size", "Prefix-cache hit ratio",
               "Latency p50 / p95 by route", "Replicas up"}
    for p in d["panels"]:
        values = [float(r["value"][1]) for t in p["targets"] for r in prometheus(t["expr"])]
        check(bool(values), f"panel {p['title']!r}: {len(values)} series")
        if p["title"] in nonzero:
            check(any(v > 0 for v in values), f"panel {p['title']!r}: non-zero data ({values[:4]})")


def main() -> int:
    reps = replicas()
    check(len(reps) == 3, f"3 replicas running ({sorted(reps)})")
    check(wait_ready(len(reps)), "every replica healthy in the balancer and scraped by Prometheus")
    affinity(reps)
    load(reps)
    print("\n== 3. prefix-cache hit ratio, same workload (16 contexts x 6 pairs, 3 clients)", flush=True)
    with_affinity = hit_ratio(LB, "affinity (:8080)")
    without = hit_ratio(LB_RR, "round robin (:8081)")
    check(with_affinity > without, f"affinity raises the hit ratio: {with_affinity:.3f} vs {without:.3f}")
    failover()
    dashboard()
    print(f"\n{'PASSED' if not failures else 'FAILED: ' + '; '.join(failures)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
