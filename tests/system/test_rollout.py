#!/usr/bin/python3
"""test_rollout.py - gray release inside one server (config.json "rollout"; docs/GRAY_RELEASE.md).

One real server over one repository with a model per case, real HTTP throughout:
  split    canary weight 20: 1000 unpinned requests, the candidate's share in [0.14, 0.26]; pinned
           requests bypass the split; JSON and binary answers name the version; then, with 3 more
           clients sending unpinned requests throughout: manual promote, a second candidate rolled back
           by hand, not retried on rescans, retried once its content changes.
  good     canary of an equal version: promoted after min_requests ("healthy").
  slow     canary of a version with a chain of heavy MatMuls: rolled back on latency.
  bad      canary of a version whose input shape differs: its runs fail, each is re-run on the stable
           version (the client sees no failure), rolled back on error rate; not retried on rescans;
           the fixed content under the same number is tried and promoted.
  shright  shadow of a version with the same outputs: every answer from the stable one, then promoted.
  shwrong  shadow of a version with different outputs: rolled back on output disagreement.
  quiet    a canary that gets no traffic: rolled back ("too_few_requests") at max_seconds.
  split also checks that SIGHUP leaves an open window alone, and that a newer version arriving during
  a window retires the old candidate ("superseded") and restarts the window against the same stable one,
  and that removing the candidate from the repository ends the window ("candidate_removed").
Every inference request in the test must succeed (HTTP 200) and carry output = x + K of the version it
names (y = x + K identifies version K's model).
"""
import json
import os
import shutil
import signal
import threading
import time

import numpy as np

import hsys
from hsys import check

X = np.arange(4, dtype=np.float32).reshape(1, 4)


class Repo:
    def __init__(self, tmp):
        self.root = os.path.join(tmp, "repo")
        self.src = os.path.join(tmp, "src")
        self.stage = os.path.join(tmp, "stage")
        os.makedirs(self.root)
        self.adds = {}  # (model, version) -> K of the content answering under that number now
        self.n = 0

    def model(self, name, rollout):
        os.makedirs(os.path.join(self.root, name))
        with open(os.path.join(self.root, name, "config.json"), "w") as f:
            json.dump({"rollout": rollout}, f)

    def publish(self, name, version, add, shape=(1, 4), slow=0, extra=None):
        """Publishes a version into a staging copy and renames it in, so a scan sees all or nothing."""
        self.n += 1
        src = hsys.make_version_src(os.path.join(self.src, "%s-%d-%d" % (name, version, self.n)), add, shape, slow)
        if extra:
            hsys.write_file(os.path.join(src, "NOTES.txt"), extra.encode())
        stage = os.path.join(self.stage, str(self.n), name)
        os.makedirs(stage)
        hsys.publish(src, stage, version)
        dst = os.path.join(self.root, name, str(version))
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.rename(os.path.join(stage, str(version)), dst)
        if shape == (1, 4):
            self.adds[(name, version)] = add


class Driver:
    """Sends inference requests and checks every answer: HTTP 200, the version it names, its output."""

    def __init__(self, c, repo):
        self.c, self.repo = c, repo
        self.sent = 0

    def infer(self, model, version=None, binary=False):
        r, out, _ = self.c.infer(model, X, version=version, binary=binary)
        self.sent += 1
        check(r.status == 200, "%s infer (version %s): HTTP %d %r: a client request failed during a rollout"
              % (model, version, r.status, r.body[:300]))
        doc = out[""]
        v = doc.get("model_version")
        check(v is not None and v.isdigit(), "%s: answer has no model_version: %r" % (model, doc))
        v = int(v)
        if version is not None:
            check(v == version, "%s: pinned to version %d, answered by %d" % (model, version, v))
        k = self.repo.adds.get((model, v))
        check(k is not None, "%s: answered by version %d, which should not answer" % (model, v))
        hsys.expect_values(out, X, k, "%s version %d (%s)" % (model, v, "binary" if binary else "JSON"))
        return v


class Background:
    """Keep-alive clients sending unpinned requests to one model until stopped (bounded in count and
    time), each answer checked like Driver's: the promotes, rollbacks and restarts the test causes
    meanwhile must not fail one of them."""

    def __init__(self, srv, repo, model, n_threads=3, max_each=20000, max_seconds=120):
        self.stop_ev = threading.Event()
        self.errors = []
        self.counts = [0] * n_threads
        self.threads = []
        for i in range(n_threads):
            t = threading.Thread(target=self._run, args=(srv, repo, model, i, max_each, max_seconds), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, srv, repo, model, i, max_each, max_seconds):
        d = Driver(srv.conn(), repo)
        deadline = time.monotonic() + max_seconds * hsys.slow_factor()
        try:
            while not self.stop_ev.is_set() and self.counts[i] < max_each and time.monotonic() < deadline:
                d.infer(model, binary=(self.counts[i] % 3 == 0))
                self.counts[i] += 1
        except Exception as e:  # noqa: BLE001 (reported by stop())
            self.errors.append("background client %d: %s" % (i, e))

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)
        check(not self.errors, "; ".join(self.errors[:3]))
        check(all(n > 0 for n in self.counts), "a background client sent nothing: %r" % self.counts)
        return sum(self.counts)


def rollout(c, model):
    return c.status(model)["rollout"]


def wait_state(c, model, state, candidate=None, timeout=60):
    def ok():
        ro = rollout(c, model)
        return ro if ro["state"] == state and (candidate is None or ro["candidate_version"] == str(candidate)) \
            else None
    return hsys.wait_for(ok, "model %s rollout state %s (candidate %s)" % (model, state, candidate), timeout)


def drive_until_decided(d, c, cases, max_rounds=4000, max_seconds=240):
    """Round-robin unpinned traffic to every model in cases ({model: candidate}) until each has a
    decision about its candidate; returns {model: last_decision}."""
    left = dict(cases)
    done = {}
    deadline = time.monotonic() + max_seconds * hsys.slow_factor()
    for i in range(max_rounds):
        for m in list(left):
            d.infer(m, binary=(i % 7 == 0))
        if i % 10 == 9 or i == max_rounds - 1:
            for m, cand in list(left.items()):
                ro = rollout(c, m)
                last = ro["last_decision"]
                if ro["state"] == "idle" and last and last["version"] == str(cand):
                    done[m] = last
                    del left[m]
        if not left:
            return done
        check(time.monotonic() < deadline, "no rollout decision within %ds for %s" % (max_seconds, sorted(left)))
    raise hsys.TestFailure("no rollout decision after %d rounds for %s" % (max_rounds, sorted(left)))


def post(c, path):
    return c.request("POST", path, b"{}")


def case_split(srv, c, d, repo):
    m = "split"
    wait_state(c, m, "canary", candidate=2)
    counts = {1: 0, 2: 0}
    for i in range(1000):
        counts[d.infer(m, binary=(i % 10 == 0))] += 1
    share = counts[2] / 1000.0
    check(0.14 <= share <= 0.26, "canary weight 20: the candidate answered %.3f of 1000 requests" % share)
    print("split: the candidate answered %d of 1000 unpinned requests (weight 20)" % counts[2])
    for v in (1, 2):  # pinned requests bypass the split
        for i in range(30):
            d.infer(m, version=v, binary=(i % 2 == 0))
    ro = rollout(c, m)
    check(ro["strategy"] == "canary" and ro["stable_version"] == "1" and ro["candidate_version"] == "2",
          "status rollout during the window: %r" % ro)
    check(ro["weight"] == 20 and ro["time_left_s"] > 0, "status rollout weight/time_left: %r" % ro)
    check(hsys.serving_version(c, m) == "1", "status serving_version during the window is not the stable one")
    check(ro["candidate"]["requests"] == counts[2] and ro["stable"]["requests"] == counts[1],
          "status counts %r/%r, the client saw %r (pinned requests must not count)"
          % (ro["stable"]["requests"], ro["candidate"]["requests"], counts))
    check(ro["candidate"]["p99_ms"] is not None and ro["stable"]["p99_ms"] is not None, "p99 missing: %r" % ro)
    mt = c.metrics()
    check(mt.get("hotserve_rollout_canary_requests_total", model=m, arm="candidate") == counts[2],
          "metrics canary candidate count != %d" % counts[2])
    check(mt.get("hotserve_rollout_state", model=m, state="canary") == 1, "metrics rollout state is not canary")

    bg = Background(srv, repo, m)  # concurrent traffic through every swap from here on
    time.sleep(0.2)
    r = post(c, "/v2/repository/models/%s/rollout/promote" % m)
    check(r.status == 200 and r.json().get("outcome") == "promoted", "manual promote: HTTP %d %r" % (r.status, r.body))
    for i in range(50):
        check(d.infer(m, binary=(i % 2 == 1)) == 2, "after a promote, version 1 still answered")
    check(hsys.serving_version(c, m) == "2", "status serving_version after the promote is not 2")
    ro = rollout(c, m)
    last = ro["last_decision"]
    check(ro["state"] == "idle" and last["outcome"] == "promoted" and last["reason"] == "manual"
          and last["version"] == "2" and last["timestamp"], "status after manual promote: %r" % ro)
    r = post(c, "/v2/repository/models/%s/rollout/rollback" % m)
    check(r.status == 409, "rollback with no window open: HTTP %d, wanted 409" % r.status)
    check(c.metrics().get("hotserve_rollout_decisions_total", model=m, outcome="promoted", reason="manual") == 1,
          "decisions_total{promoted,manual} is not 1")
    srv.wait_log(r"model split: rollout: version 2 promoted", "a log line for the promote")

    # a second candidate, rolled back by hand: not retried by rescans, retried once its content changes
    repo.publish(m, 3, 3)
    hsys.rescan(c)
    wait_state(c, m, "canary", candidate=3)
    r = post(c, "/v2/repository/models/%s/rollout/rollback" % m)
    check(r.status == 200 and r.json().get("outcome") == "rolled_back", "manual rollback: HTTP %d" % r.status)
    for _ in range(50):
        check(d.infer(m) == 2, "after a rollback, version 3 still answered")
    hist = [e for e in hsys.status_entries(c, m) if e["version"] == "3"]
    check(hist and hist[-1]["reason"] == "rolled_back" and hist[-1]["timestamp"], "status history of v3: %r" % hist)
    for _ in range(2):
        hsys.rescan(c)
    check(rollout(c, m)["state"] == "idle", "a rolled-back version was tried again unchanged")
    srv.wait_log(r"model split: rollout: version 3 rolled back \(manual", "a log line for the rollback")
    check(len(srv.log_matching(r"model split version 3 ready")) == 1, "the rolled-back version 3 was loaded again")
    repo.publish(m, 3, 3, extra="same model, new content: a new fingerprint")
    hsys.rescan(c)
    wait_state(c, m, "canary", candidate=3)
    hsys.wait_for(lambda: len(srv.log_matching(r"model split version 3 ready")) == 2,
                  "the changed content of version 3 to be loaded (a second log line)")

    # SIGHUP during a window rescans and leaves the window alone
    os.kill(srv.pid, signal.SIGHUP)
    hsys.rescan(c)
    check(rollout(c, m)["candidate_version"] == "3", "SIGHUP disturbed the open window")
    # a newer version during a window: the old candidate retires, the window restarts with the newest
    repo.publish(m, 4, 4)
    hsys.rescan(c)
    ro = wait_state(c, m, "canary", candidate=4)
    check(ro["stable_version"] == "2" and ro["last_decision"]["version"] == "3"
          and (ro["last_decision"]["outcome"], ro["last_decision"]["reason"]) == ("retired", "superseded"),
          "a newer version during a window: %r" % ro)
    seen = set(d.infer(m) for _ in range(100))
    check(seen == {2, 4}, "after the restart, answers came from %s, wanted {2, 4}" % sorted(seen))
    # the candidate leaves the repository: the window ends, the stable version answers everything
    # (version 3 goes first, or the policy would make it the next candidate)
    shutil.rmtree(os.path.join(repo.root, m, "3"))
    hsys.rescan(c)
    check(rollout(c, m)["candidate_version"] == "4", "removing version 3 disturbed the window of version 4")
    shutil.rmtree(os.path.join(repo.root, m, "4"))
    hsys.rescan(c)
    ro = wait_state(c, m, "idle")
    check((ro["last_decision"]["outcome"], ro["last_decision"]["reason"]) == ("retired", "candidate_removed"),
          "the candidate removed from the repository: %r" % ro["last_decision"])
    for _ in range(30):
        check(d.infer(m) == 2, "after the candidate left the repository, version 4 still answered")
    n_bg = bg.stop()
    print("split: %d concurrent background requests through promote, rollback and restart, none failed" % n_bg)
    srv.wait_log(r"model split: rollout: candidate version 3 retired \(superseded", "a log line for the retire")


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = Repo(tmp)
    # The latency rule is what "slow" tests (its chain of MatMuls is hundreds of times slower than version 1);
    # the other cases allow a wide ratio so that a loaded or sanitized machine cannot roll an equal version back.
    fast = {"min_requests": 20, "max_seconds": 600, "max_error_rate": 0.01, "max_latency_ratio": 100}
    repo.model("split", {"strategy": "canary", "weight": 20, "min_requests": 1000000, "max_seconds": 600})
    repo.model("good", dict(fast, strategy="canary", weight=50))
    repo.model("slow", dict(fast, strategy="canary", weight=50, max_latency_ratio=5))
    repo.model("bad", dict(fast, strategy="canary", weight=50))
    repo.model("shright", dict(fast, strategy="shadow", fraction=1.0))
    repo.model("quiet", {"strategy": "canary", "weight": 50, "min_requests": 1000000, "max_seconds": 1})
    repo.model("shwrong", dict(fast, strategy="shadow", fraction=1.0, output_rtol=1e-3, output_atol=1e-4))
    for m in ("split", "good", "slow", "bad", "shright", "shwrong", "quiet"):
        repo.publish(m, 1, 1)
    srv = hsys.Server(repo.root, "--poll-interval", "0.2", "--settle", "0.1")
    c = srv.conn()
    d = Driver(c, repo)
    for m in ("split", "good", "slow", "bad", "shright", "shwrong", "quiet"):
        hsys.wait_serving(c, m, 1)
        check(rollout(c, m)["state"] == "idle", "%s: the first version must serve at once" % m)

    repo.publish("split", 2, 2)
    repo.publish("good", 2, 2)
    repo.publish("slow", 2, 2, slow=48)
    repo.publish("bad", 2, 2, shape=(1, 8))
    repo.publish("shright", 2, 1)   # same outputs as version 1
    repo.publish("shwrong", 2, 9)   # different outputs
    repo.publish("quiet", 2, 2)     # no traffic at all: max_seconds passes with too few requests
    hsys.rescan(c)
    case_split(srv, c, d, repo)

    last = hsys.wait_for(lambda: rollout(c, "quiet")["last_decision"], "quiet's window to end after max_seconds")
    check((last["outcome"], last["reason"]) == ("rolled_back", "too_few_requests"), "quiet: %r" % last)
    check(d.infer("quiet") == 1, "quiet: version 1 should answer after too few requests")

    decided = drive_until_decided(d, c, {"good": 2, "slow": 2, "bad": 2, "shright": 2, "shwrong": 2})
    want = {"good": ("promoted", "healthy"), "slow": ("rolled_back", "latency"), "bad": ("rolled_back", "error_rate"),
            "shright": ("promoted", "healthy"), "shwrong": ("rolled_back", "outputs_disagree")}
    for m, (outcome, reason) in want.items():
        got = decided[m]
        print("%s: %s (%s: %s)" % (m, got["outcome"], got["reason"], got["detail"]))
        check((got["outcome"], got["reason"]) == (outcome, reason),
              "%s: decision %s/%s (%s), wanted %s/%s" % (m, got["outcome"], got["reason"], got["detail"], outcome,
                                                         reason))
    for m, v in (("good", 2), ("slow", 1), ("bad", 1), ("shright", 2), ("shwrong", 1)):
        for _ in range(20):
            check(d.infer(m) == v, "%s: after the decision, version %d should answer" % (m, v))
    mt = c.metrics()
    check(mt.get("hotserve_rollout_decisions_total", model="slow", outcome="rolled_back", reason="latency") == 1,
          "metrics: slow's rollback not counted")
    check(mt.get("hotserve_rollout_candidate_errors_total", model="bad") >= 20, "metrics: bad's errors not counted")
    check(mt.get("hotserve_rollout_output_disagreements_total", model="shwrong") >= 20,
          "metrics: shwrong's disagreements not counted")
    check(mt.get("hotserve_rollout_output_disagreements_total", model="shright") == 0,
          "metrics: shright's equal outputs counted as disagreements")
    check(mt.get("hotserve_rollout_shadow_requests_total", model="shright", result="run") >= 20,
          "metrics: shadow runs not counted")
    check(mt.get("hotserve_requests_total", model="bad", outcome="client_error") == 0
          and mt.get("hotserve_requests_total", model="bad", outcome="server_error") == 0,
          "the bad candidate's failures reached clients")

    # the rolled-back bad version is not retried until its content changes; then it is judged again
    for _ in range(2):
        hsys.rescan(c)
    check(rollout(c, "bad")["state"] == "idle", "the rolled-back bad version was tried again unchanged")
    srv.wait_log(r"model bad: rollout: version 2 rolled back \(error_rate", "a log line for bad's rollback")
    check(len(srv.log_matching(r"model bad version 2 ready")) == 1, "the rolled-back version 2 was loaded again")
    repo.publish("bad", 2, 2)       # fixed content, same number
    hsys.rescan(c)
    wait_state(c, "bad", "canary", candidate=2)
    fixed = drive_until_decided(d, c, {"bad": 2})
    check(fixed["bad"]["outcome"] == "promoted", "the fixed bad version: %r" % fixed["bad"])
    check(d.infer("bad") == 2, "the fixed version 2 does not answer")
    print("rollout: %d inference requests, none failed" % d.sent)
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)
