"""A `self-judge serve` process for the evaluation and data scripts: started on a local
port, waited for until /health answers, stopped on exit; `post` sends one JSON request."""

import json
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

def post(port, route, body, timeout=900):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{route}", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@contextmanager
def serving(binary, model, config, port, adapter=None):
    """Runs the server while the block runs; exits the script if it dies at start-up."""
    cmd = [str(binary), "serve", "--model", str(model), "--config", str(config),
           "--port", str(port)]
    if adapter:
        cmd += ["--adapter", str(adapter)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except Exception:
                if server.poll() is not None:
                    sys.exit(f"error: the server exited ({server.returncode})")
                time.sleep(0.5)
        yield server
    finally:
        server.terminate()
        server.wait()
