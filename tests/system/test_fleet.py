#!/usr/bin/python3
"""test_fleet.py - a fleet on one machine (deploy/fleet/run.sh): replicas behind HAProxy, watched by Prometheus.

Three replicas poll one shared repository with inotify off (as on NFS) and --require-signature; HAProxy
balances over them with health checks on /v2/health/ready; Prometheus scrapes them every second with the
shipped rules (deploy/prometheus/hotserve-rules.yml). Three models: "add" (immediate swaps), "canary" (a
canary rollout, weight 20) and "shadow" (a shadow rollout), each with clients sending requests through
HAProxy the whole time. While they do:
  - a good signed version 2 of add is published: every replica serves it within poll interval + its load
    time (+ a few seconds of scheduling slack), and after that every add answer comes from version 2;
  - a good version 2 of canary and a version 2 of shadow with wrong outputs are published together: while
    every replica has its canary window open, the share of canary answers naming version 2 (model_version
    of each response) is close to the weight; every replica promotes canary 2 ("healthy") and rolls back
    shadow 2 ("outputs_disagree"), and converges within poll interval + load time + the window's
    max_seconds (+ slack);
  - a slow version 3 of canary (a chain of heavy MatMuls, as in test_rollout.py) is rolled back on latency
    by every replica, which keep serving 2;
  - a tampered version 3 of add (signed, then one byte changed) is published: every replica refuses it,
    keeps serving 2, and Prometheus fires HotserveVerificationRefused for every replica (its /api/v1/alerts);
  - Prometheus fires HotserveRolloutRolledBack for every replica, for canary (latency) and shadow
    (outputs_disagree);
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
# Short windows (docs/GRAY_RELEASE.md): judged after 200 candidate requests per replica, which at weight 20 is
# about 1000 canary requests per replica; a run decides on min_requests in 1-5 s (17 s seen for the slow version on
# a machine loaded by other builds). max_seconds is only a safety net, generous for a sanitized build on a busy
# machine: reaching it would roll a version back for the wrong reason (too_few_requests), most of all the slow
# one, whose runs hold the canary clients and take CPU from every replica.
# max_latency_ratio 10: an equal version is never 10x slower, the slow one is hundreds of times slower. Each
# replica runs --instances 4, more runs at once than the canary clients send, so stable requests never queue
# behind the slow candidate's runs for a compute slot (canary latency counts queue time; docs/GRAY_RELEASE.md).
WEIGHT = 20
CANARY = {"strategy": "canary", "weight": WEIGHT, "min_requests": 200, "max_seconds": 120,
          "max_error_rate": 0.01, "max_latency_ratio": 10}
SHADOW = {"strategy": "shadow", "fraction": 1.0, "min_requests": 50, "max_seconds": 45,
          "max_error_rate": 0.01, "max_latency_ratio": 10}
CLIENTS = {"add": 2, "canary": 3, "shadow": 1}   # client threads per model
X = np.array([[1.0, -2.0, 0.5, 8.0]], dtype=np.float32)
SLOW = 32   # the slow version: a chain of 32 heavy MatMuls (hsys.model_bytes), 20-50 ms a run against ~0.05 ms


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
    """Clients sending requests through the load balancer until stopped (bounded by a deadline): per model,
    CLIENTS[model] keep-alive clients."""

    def __init__(self, host, port, deadline):
        self.host, self.port, self.deadline = host, port, deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answers = {m: [] for m in CLIENTS}   # model -> [(monotonic time at response, version)]
        self.failures = []  # descriptions
        self.threads = [threading.Thread(target=self._run, args=(m,), daemon=True)
                        for m, n in CLIENTS.items() for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, model):
        c = hsys.Client(self.host, self.port, timeout=30)
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            try:
                r, out, _ = c.infer(model, X)
            except Exception as e:  # a connection error is a failed request too
                with self.lock:
                    self.failures.append("%s: connection: %s" % (model, e))
                c.close()
                c = hsys.Client(self.host, self.port, timeout=30)
                continue
            now = time.monotonic()
            if r.status != 200:
                with self.lock:
                    self.failures.append("%s: HTTP %d: %r" % (model, r.status, r.body[:200]))
                continue
            ver = out[""].get("model_version")
            y = out.get("y")
            ok = ver is not None and y is not None and np.allclose(y, X + np.float32(int(ver)), atol=1e-5)
            with self.lock:
                self.answers[model].append((now, ver))
                if not ok:
                    self.failures.append("%s: version %s answered %r" % (model, ver,
                                                                         None if y is None else y.ravel()[:4]))
        c.close()

    def between(self, model, t0, t1):
        with self.lock:
            return [v for t, v in self.answers[model] if t0 <= t <= t1]

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


class Rollouts:
    """Watches the rollout status of a model on every replica (GET /v2/models/<m>/status), bounded in time."""

    def __init__(self, replicas, model):
        self.replicas, self.model = replicas, model

    def all(self):
        sts = [replica_status(u, self.model) for u in self.replicas]
        return None if any(st is None for st in sts) else sts

    def decided(self, version, outcome, serving):
        """True once every replica has decided `outcome` about `version` and serves `serving`."""
        sts = self.all()
        return sts is not None and all(
            st["rollout"]["state"] == "idle" and (st["rollout"].get("last_decision") or {}).get("version") == version
            and st["rollout"]["last_decision"]["outcome"] == outcome and st.get("serving_version") == serving
            for st in sts)

    def wait_decided(self, version, outcome, serving, timeout):
        """Waits (bounded) until every replica decided `outcome` about `version`; fails at once on another
        decision about it."""
        def done():
            for st in self.all() or []:
                ld = st["rollout"].get("last_decision") or {}
                if ld.get("version") == version and ld.get("outcome") != outcome:
                    raise hsys.TestFailure("model %s version %s: a replica decided %s (%s: %s), wanted %s"
                                           % (self.model, version, ld["outcome"], ld.get("reason"), ld.get("detail"),
                                              outcome))
            return self.decided(version, outcome, serving)
        hsys.wait_for(done, "every replica to decide %s about %s version %s" % (outcome, self.model, version),
                      timeout, interval=0.05)

    def window_on_all(self, candidate):
        sts = self.all()
        return sts is not None and all(st["rollout"]["state"] != "idle"
                                       and st["rollout"].get("candidate_version") == candidate for st in sts)


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


def decision_detail(replicas, model):
    return ["%s %s (%s)" % (u, st["rollout"]["last_decision"]["outcome"], st["rollout"]["last_decision"]["detail"])
            for u, st in ((u, replica_status(u, model)) for u in replicas)
            if st and st["rollout"].get("last_decision")]


def firing(prom, alertname):
    """{(instance, model, reason)} of the firing alerts with that name."""
    doc = http_json(prom + "/api/v1/alerts")
    return {(a["labels"].get("instance"), a["labels"].get("model"), a["labels"].get("reason"))
            for a in doc["data"]["alerts"] if a["labels"].get("alertname") == alertname and a["state"] == "firing"}


def test(tmp, args):
    for tool in ("haproxy", "prometheus", "curl"):
        if not shutil.which(tool):
            raise hsys.Skip("%s is not installed (bash scripts/deps.sh test)" % tool)
    hsys.require("serve", "publish", "keygen")
    slow = hsys.slow_factor()
    repo = os.path.join(tmp, "repo")
    model_dir = os.path.join(repo, "add")
    canary_dir = os.path.join(repo, "canary")
    shadow_dir = os.path.join(repo, "shadow")
    priv, pub = hsys.keygen(os.path.join(tmp, "fleet"))
    for d, policy in ((model_dir, None), (canary_dir, CANARY), (shadow_dir, SHADOW)):
        os.makedirs(d)
        if policy:
            hsys.write_file(os.path.join(d, "config.json"), json.dumps({"rollout": policy}).encode())
            hsys.sign(os.path.join(d, "config.json"), priv)   # --require-signature covers config.json too
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", os.path.basename(d), "1"), 1), d, 1, key=priv)

    workdir = os.path.join(tmp, "fleet")
    run_log = open(os.path.join(tmp, "run.log"), "w")
    fleet = subprocess.Popen(
        ["bash", os.path.join(hsys.Env.source, "deploy", "fleet", "run.sh"), "--repo", repo,
         "--replicas", str(REPLICAS), "--duration", "900", "--poll-interval", str(POLL_S),
         "--scrape-interval", "1", "--eval-interval", "1", "--workdir", workdir, "--keep",
         "--hotserve", hsys.Env.hotserve, "--",
         "--require-signature", "--trusted-key", pub, "--instances", "4", "--log-level", "info"],
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

        traffic = Traffic(lb_host, lb_port, time.monotonic() + 420 * slow)
        hsys.wait_for(lambda: all(len(a) >= 20 for a in traffic.answers.values()), "traffic through HAProxy", 30)

        # --- a good version: every replica converges -------------------------------------------------------------
        t0 = time.monotonic()
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "add", "2"), 2), model_dir, 2, key=priv)
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

        # --- a good canary and a wrong shadow, together --------------------------------------------------------------
        can, sha = Rollouts(replicas, "canary"), Rollouts(replicas, "shadow")
        t_pub = time.monotonic()
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "canary", "2"), 2), canary_dir, 2, key=priv)
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "shadow", "2"), 9), shadow_dir, 2, key=priv)
        # The share is measured over [a, b]: a = the end of the first status poll that saw every replica's window
        # open, b = the start of the last poll that still did (a window opens once and closes once, so every
        # replica's window was open throughout [a, b]).
        a = b = None
        deadline = time.monotonic() + (60 + CANARY["max_seconds"]) * slow
        while not can.decided("2", "promoted", "2"):
            check(time.monotonic() < deadline, "canary 2 not promoted on every replica in time: %s"
                  % decision_detail(replicas, "canary"))
            started = time.monotonic()
            if can.window_on_all("2"):
                if a is None:
                    a = time.monotonic()
                else:
                    b = started
            elif any((st["rollout"].get("last_decision") or {}).get("version") == "2"
                     and st["rollout"]["last_decision"]["outcome"] != "promoted" for st in can.all() or []):
                raise hsys.TestFailure("canary 2 was not promoted: %s" % decision_detail(replicas, "canary"))
            time.sleep(0.05)
        t_promoted = time.monotonic() - t_pub
        check(a is not None and b is not None, "no status poll saw every replica's canary window open")
        in_window = traffic.between("canary", a, b)
        check(len(in_window) >= 200, "only %d canary answers while every window was open (%.2f s)"
              % (len(in_window), b - a))
        share = sum(1 for v in in_window if v == "2") / len(in_window)
        print("canary share through HAProxy: %.3f of %d answers named version 2 (weight %d%%) over %.2f s"
              % (share, len(in_window), WEIGHT, b - a))
        check(abs(share - WEIGHT / 100.0) <= 0.07, "canary weight %d: version 2 answered %.3f of %d requests"
              % (WEIGHT, share, len(in_window)))
        for u in replicas:
            ld = replica_status(u, "canary")["rollout"]["last_decision"]
            check(ld["reason"] == "healthy", "%s promoted canary 2 with reason %r" % (u, ld))
        sha.wait_decided("2", "rolled_back", "1", 30 + SHADOW["max_seconds"])
        t_shadow = time.monotonic() - t_pub
        for u in replicas:
            ld = replica_status(u, "shadow")["rollout"]["last_decision"]
            check(ld["reason"] == "outputs_disagree", "%s rolled back shadow 2 with reason %r" % (u, ld))
        bound = (POLL_S + CANARY["max_seconds"] + 10.0) * slow
        print("canary 2 promoted on every replica %.2f s after the publish, shadow 2 rolled back after %.2f s "
              "(bound: poll + load + max_seconds + slack = %.1f s)" % (t_promoted, t_shadow, bound))
        check(max(t_promoted, t_shadow) <= bound, "replicas took %.2f s to decide (bound %.1f s)"
              % (max(t_promoted, t_shadow), bound))
        t_promote_seen = time.monotonic()

        # --- a slow canary: rolled back on latency everywhere ----------------------------------------------------------
        t_pub = t_slow_pub = time.monotonic()
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "canary", "3"), 3, slow=SLOW), canary_dir, 3,
                     key=priv)
        can.wait_decided("3", "rolled_back", "2", 60 + CANARY["max_seconds"])
        t_rolled_back = time.monotonic() - t_pub
        t_rollback_seen = time.monotonic()
        for u in replicas:
            ld = replica_status(u, "canary")["rollout"]["last_decision"]
            check(ld["reason"] == "latency", "%s rolled back canary 3 with reason %r" % (u, ld))
        print("canary 3 (slow) rolled back on every replica %.2f s after the publish: %s"
              % (t_rolled_back, decision_detail(replicas, "canary")[0]))
        check(t_rolled_back <= bound, "replicas took %.2f s to roll back (bound %.1f s)" % (t_rolled_back, bound))

        # --- a tampered version: refused everywhere, version 2 stays, the alert fires ----------------------------
        stage_tampered(tmp, hsys.make_version_src(os.path.join(tmp, "src", "add", "3"), 3), priv, model_dir, 3)

        def refused_everywhere():
            for u in replicas:
                st = replica_status(u, "add") or {}
                if st.get("serving_version") != "2":
                    return False
                if not any(v.get("version") == "3" and v.get("state") == "failed" for v in st.get("versions", [])):
                    return False
            return True
        hsys.wait_for(refused_everywhere, "every replica to refuse version 3 and keep serving 2", 60)

        t1 = time.monotonic()
        hsys.wait_for(lambda: {i for i, m, _ in firing(prom, "HotserveVerificationRefused") if m == "add"}
                      >= {urllib.parse.urlsplit(u).netloc for u in replicas},
                      "HotserveVerificationRefused firing for every replica in Prometheus", 60)
        print("HotserveVerificationRefused firing for %d replicas %.1f s after the tampered version was refused"
              % (REPLICAS, time.monotonic() - t1))
        want = {(urllib.parse.urlsplit(u).netloc, m, r) for u in replicas
                for m, r in (("canary", "latency"), ("shadow", "outputs_disagree"))}
        hsys.wait_for(lambda: firing(prom, "HotserveRolloutRolledBack") >= want,
                      "HotserveRolloutRolledBack firing for every replica (canary: latency, shadow: outputs_disagree)",
                      60)
        print("HotserveRolloutRolledBack firing: %s" % sorted(firing(prom, "HotserveRolloutRolledBack")))
        check(not [a for a in http_json(prom + "/api/v1/alerts")["data"]["alerts"]
                   if a["labels"].get("alertname") in ("HotserveLoadFailing", "HotserveReplicaNotReady")
                   and a["state"] == "firing"],
              "a refused tampered version or a rollback must not fire HotserveLoadFailing or HotserveReplicaNotReady")

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
        n_answers = sum(len(a) for a in traffic.answers.values())
        check(not traffic.failures, "%d failed requests through HAProxy, first: %s"
              % (len(traffic.failures), traffic.failures[:3]))
        add = traffic.answers["add"]
        versions = {v for _, v in add}
        check(versions <= {"1", "2"}, "add answers came from versions %s (3 was tampered)" % sorted(versions))
        late = [v for t, v in add if t > t_conv + 1.0 and v != "2"]
        check(not late, "%d answers from another version after every replica served 2" % len(late))
        check(sum(1 for t, _ in add if t > t_conv) >= 10, "too little traffic after the swap")
        late = [v for t, v in traffic.answers["canary"] if t_promote_seen + 1.0 < t < t_slow_pub and v != "2"]
        check(not late, "%d canary answers from another version than 2 after every replica promoted it" % len(late))
        late = [v for t, v in traffic.answers["canary"] if t > t_rollback_seen + 1.0 and v != "2"]
        check(not late, "%d canary answers from another version than 2 after every replica rolled 3 back" % len(late))
        check({v for _, v in traffic.answers["shadow"]} == {"1"}, "shadow answers came from versions %s"
              % sorted({v for _, v in traffic.answers["shadow"]}))
        print("%d requests through HAProxy, 0 failed (add %d, canary %d, shadow %d); add versions answering: %s"
              % (n_answers, len(add), len(traffic.answers["canary"]), len(traffic.answers["shadow"]),
                 sorted(versions)))

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
