#!/usr/bin/python3
"""test_fleet.py - a fleet on one machine (deploy/fleet/run.sh): replicas behind HAProxy, watched by Prometheus.

Three replicas poll one shared repository with inotify off (as on NFS) and --require-signature; HAProxy
balances over them with health checks on /v2/health/ready; Prometheus scrapes them every second with the
shipped rules (deploy/prometheus/hotserve-rules.yml). While two clients send requests through HAProxy:
  - a good signed version 2 is published: every replica serves it within poll interval + its load time
    (+ a few seconds of scheduling slack), and after that every answer comes from version 2;
  - a tampered version 3 (signed, then one byte changed) is published: every replica refuses it, keeps
    serving 2, and Prometheus fires HotserveVerificationRefused for every replica (its /api/v1/alerts);
  - zero requests fail, every answer is y = x + (the version that says it answered).
Then every PromQL query of the Grafana dashboard (deploy/grafana/hotserve-fleet.json) is run against this
Prometheus and must return at least one finite sample. Finally run.sh is stopped: every process it
started must be gone and every replica must have exited 0 (run.sh's exit status). All waits are bounded.
"""
import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import numpy as np

import hsys
from hsys import check

REPLICAS = 3
POLL_S = 0.5
X = np.array([[1.0, -2.0, 0.5, 8.0]], dtype=np.float32)


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def prom_query(prom, expr):
    doc = http_json("%s/api/v1/query?%s" % (prom, urllib.parse.urlencode({"query": expr})))
    check(doc.get("status") == "success", "Prometheus query %s: %r" % (expr, doc))
    return doc["data"]["result"]


def replica_status(url, model):
    try:
        return http_json("%s/v2/models/%s/status" % (url, model))
    except OSError:
        return None


class Traffic:
    """Clients sending requests through the load balancer until stopped (bounded by a deadline)."""

    def __init__(self, host, port, n_clients, deadline):
        self.host, self.port, self.deadline = host, port, deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers = []   # (monotonic time at response, version)
        self.failures = []  # descriptions
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n_clients)]
        for t in self.threads:
            t.start()

    def _run(self):
        c = hsys.Client(self.host, self.port, timeout=30)
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                r, out, _ = c.infer("add", X)
            except Exception as e:  # a connection error is a failed request too
                with self.lock:
                    self.failures.append("connection: %s" % e)
                c.close()
                c = hsys.Client(self.host, self.port, timeout=30)
                continue
            now = time.monotonic()
            if r.status != 200:
                with self.lock:
                    self.failures.append("HTTP %d: %r" % (r.status, r.body[:200]))
                continue
            ver = out[""].get("model_version")
            y = out.get("y")
            ok = ver is not None and y is not None and np.allclose(y, X + np.float32(int(ver)), atol=1e-5)
            with self.lock:
                self.answers.append((now, ver))
                if not ok:
                    self.failures.append("version %s answered %r" % (ver, None if y is None else y.ravel()[:4]))
        c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def stage_tampered(tmp, src, key, model_dir, version):
    """Publishes a signed version into a staging model dir, changes one byte, renames it into model_dir."""
    stage = os.path.join(tmp, "stage-%d" % version)
    hsys.publish(src, stage, version, key=key)
    vdir = os.path.join(stage, str(version))
    with open(os.path.join(vdir, "model.onnx"), "r+b") as f:
        f.seek(-1, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([b[0] ^ 0x01]))
    os.rename(vdir, os.path.join(model_dir, str(version)))


def read_env(path):
    env = {}
    for line in open(path):
        k, _, v = line.strip().partition("=")
        env[k] = v.strip('"')
    return env


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test(tmp, args):
    for tool in ("haproxy", "prometheus", "curl"):
        if not shutil.which(tool):
            raise hsys.Skip("%s is not installed (bash scripts/deps.sh test)" % tool)
    hsys.require("serve", "publish", "keygen")
    slow = hsys.slow_factor()
    repo = os.path.join(tmp, "repo")
    model_dir = os.path.join(repo, "add")
    os.makedirs(model_dir)
    priv, pub = hsys.keygen(os.path.join(tmp, "fleet"))
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "1"), 1), model_dir, 1, key=priv)

    workdir = os.path.join(tmp, "fleet")
    run_log = open(os.path.join(tmp, "run.log"), "w")
    fleet = subprocess.Popen(
        ["bash", os.path.join(hsys.Env.source, "deploy", "fleet", "run.sh"), "--repo", repo,
         "--replicas", str(REPLICAS), "--duration", "600", "--poll-interval", str(POLL_S),
         "--scrape-interval", "1", "--eval-interval", "1", "--workdir", workdir, "--keep",
         "--hotserve", hsys.Env.hotserve, "--",
         "--require-signature", "--trusted-key", pub, "--log-level", "info"],
        stdin=subprocess.DEVNULL, stdout=run_log, stderr=subprocess.STDOUT, start_new_session=True)
    traffic = None
    try:
        env_path = os.path.join(workdir, "fleet.env")
        hsys.wait_for(lambda: os.path.exists(env_path) or fleet.poll() is not None, "the fleet to start", 180)
        check(fleet.poll() is None, "run.sh exited %s before the fleet was up:\n%s"
              % (fleet.returncode, open(os.path.join(tmp, "run.log")).read()[-3000:]))
        env = read_env(env_path)
        lb, prom = env["LB_URL"], env["PROMETHEUS_URL"]
        replicas = env["REPLICA_URLS"].split()
        check(len(replicas) == REPLICAS, "fleet.env lists %d replicas" % len(replicas))
        lb_host, lb_port = urllib.parse.urlsplit(lb).hostname, urllib.parse.urlsplit(lb).port
        # every replica scraped before anything changes
        hsys.wait_for(lambda: len(prom_query(prom, 'up{job="hotserve"} == 1')) == REPLICAS,
                      "Prometheus scraping every replica", 60)

        traffic = Traffic(lb_host, lb_port, 2, time.monotonic() + 240 * slow)
        hsys.wait_for(lambda: len(traffic.answers) >= 20, "traffic through HAProxy", 30)

        # --- a good version: every replica converges -------------------------------------------------------------
        t0 = time.monotonic()
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "2"), 2), model_dir, 2, key=priv)
        hsys.wait_for(lambda: all((replica_status(u, "add") or {}).get("serving_version") == "2" for u in replicas),
                      "every replica to serve version 2", 60)
        converged = time.monotonic() - t0
        load_s = 0.0
        for u in replicas:
            for v in replica_status(u, "add")["versions"]:
                if v.get("version") == "2":
                    load_s = max(load_s, (v.get("verify_ms", 0) + v.get("load_ms", 0) + v.get("warmup_ms", 0)) / 1000)
        bound = (POLL_S + load_s + 5.0) * slow   # poll interval + load time + scheduling slack on a busy machine
        print("converged on version 2 in %.2f s (poll %.1f s, slowest load %.3f s, bound %.1f s)"
              % (converged, POLL_S, load_s, bound))
        check(converged <= bound, "replicas converged in %.2f s, beyond poll interval + load time (%.1f s)"
              % (converged, bound))
        t_conv = time.monotonic()

        # --- a tampered version: refused everywhere, version 2 stays, the alert fires ----------------------------
        stage_tampered(tmp, hsys.make_version_src(os.path.join(tmp, "src", "3"), 3), priv, model_dir, 3)

        def refused_everywhere():
            for u in replicas:
                st = replica_status(u, "add") or {}
                if st.get("serving_version") != "2":
                    return False
                if not any(v.get("version") == "3" and v.get("state") == "failed" for v in st.get("versions", [])):
                    return False
            return True
        hsys.wait_for(refused_everywhere, "every replica to refuse version 3 and keep serving 2", 60)

        def alert_instances():
            doc = http_json(prom + "/api/v1/alerts")
            return {a["labels"].get("instance") for a in doc["data"]["alerts"]
                    if a["labels"].get("alertname") == "HotserveVerificationRefused" and a["state"] == "firing"
                    and a["labels"].get("model") == "add"}
        t1 = time.monotonic()
        hsys.wait_for(lambda: len(alert_instances()) == REPLICAS,
                      "HotserveVerificationRefused firing for every replica in Prometheus", 60)
        print("HotserveVerificationRefused firing for %d replicas %.1f s after the tampered version was refused"
              % (REPLICAS, time.monotonic() - t1))
        check(not [a for a in http_json(prom + "/api/v1/alerts")["data"]["alerts"]
                   if a["labels"].get("alertname") in ("HotserveLoadFailing", "HotserveReplicaNotReady")
                   and a["state"] == "firing"],
              "a refused tampered version must not fire HotserveLoadFailing or HotserveReplicaNotReady")

        # --- every dashboard query returns data ---------------------------------------------------------------------
        dash = json.load(open(os.path.join(hsys.Env.source, "deploy", "grafana", "hotserve-fleet.json")))
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        check(len(exprs) >= 8, "the dashboard has only %d queries" % len(exprs))
        for expr in exprs:
            q = expr.replace("$model", ".*")

            def finite():
                return any(math.isfinite(float(s["value"][1])) for s in prom_query(prom, q))
            hsys.wait_for(finite, "dashboard query %s to return data" % expr, 30)
        print("all %d dashboard queries returned data" % len(exprs))

        traffic.finish()
        check(not traffic.failures, "%d failed requests through HAProxy, first: %s"
              % (len(traffic.failures), traffic.failures[:3]))
        versions = {v for _, v in traffic.answers}
        check(versions <= {"1", "2"}, "answers came from versions %s (3 was tampered)" % sorted(versions))
        late = [v for t, v in traffic.answers if t > t_conv + 1.0 and v != "2"]
        check(not late, "%d answers from another version after every replica served 2" % len(late))
        check(sum(1 for t, _ in traffic.answers if t > t_conv) >= 10, "too little traffic after the swap")
        print("%d requests through HAProxy, 0 failed; versions answering: %s"
              % (len(traffic.answers), sorted(versions)))

        # --- run.sh stops everything it started ---------------------------------------------------------------------
        pids = [int(p) for p in env["PIDS"].split()]
        fleet.send_signal(signal.SIGTERM)
        try:
            fleet.wait(90)
        except subprocess.TimeoutExpired:
            raise hsys.TestFailure("run.sh did not stop within 90 s of SIGTERM")
        left = [p for p in pids if pid_alive(p)]
        check(not left, "processes of the fleet still running after run.sh stopped: %s" % left)
        check(fleet.returncode == 0, "run.sh exited %d: a replica did not exit 0 after SIGTERM:\n%s"
              % (fleet.returncode, open(os.path.join(tmp, "run.log")).read()[-2000:]))
    except hsys.TestFailure:
        for name in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
            if name.endswith(".log"):
                lines = open(os.path.join(workdir, name), errors="replace").read().splitlines()[-25:]
                print("--- %s (last %d lines) ---\n%s" % (name, len(lines), "\n".join(lines)))
        raise
    finally:
        if traffic:
            traffic.finish()
        if fleet.poll() is None:  # only what this test started: run.sh's own session
            os.killpg(fleet.pid, signal.SIGTERM)
            try:
                fleet.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(fleet.pid, signal.SIGKILL)
                fleet.wait()
        run_log.close()


if __name__ == "__main__":
    hsys.main(test, __doc__)
