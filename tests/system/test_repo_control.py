#!/usr/bin/python3
"""test_repo_control.py - issue 16 classes 10 and 11 through a real server.

10: model folders that appear and vanish are forgotten: gone from /v2/repository/index and from
    /metrics (the series count returns to its baseline after every round), also while a request
    on a vanishing model is in flight.
11: --control-token-file: the repository API (index, load, unload) answers 401 without a token, 403
    with a wrong one, and works with the right one; inference and health need no token.
    --model-control-mode none: the API answers 403; the repository is still followed.
"""
import os
import shutil
import threading

import numpy as np

import hsys
from hsys import check


def index_names(c, headers=None):
    r = c.request("POST", "/v2/repository/index", b"{}", headers or {})
    check(r.status == 200, "index: HTTP %d %r" % (r.status, r.body[:200]))
    return {e["name"] for e in r.json()}


def series(c):
    return [line for line in c.get("/metrics").body.decode().splitlines() if line and not line.startswith("#")]


def test_forget(tmp):
    repo = os.path.join(tmp, "forget")
    src = hsys.make_version_src(os.path.join(tmp, "src_fast"), 1)
    hsys.make_version_src(os.path.join(repo, "keep", "1"), 1)
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--instances", 1)
    c = srv.conn()
    hsys.wait_serving(c, "keep", 1)
    baseline = len(series(c))
    for rnd in range(3):
        names = ["tmp%d_%d" % (rnd, i) for i in range(20)]
        for n in names:
            shutil.copytree(src, os.path.join(repo, n, "1"))
        hsys.wait_for(lambda: names[-1] in index_names(c) and all(
            hsys.serving_version(c, n) == "1" for n in names), "round %d's models to serve" % rnd)
        check(any('model="%s"' % names[0] in line for line in series(c)), "a served model has no series")
        for n in names:
            shutil.rmtree(os.path.join(repo, n))
        hsys.wait_for(lambda: not (set(names) & index_names(c)), "round %d's models to be forgotten" % rnd)
        hsys.wait_for(lambda: len(series(c)) == baseline,
                      "/metrics back to %d series after round %d (has %d)" % (baseline, rnd, len(series(c))))
        check(c.get("/v2/models/%s" % names[0]).status == 404, "a forgotten model still answers metadata")
    # a request in flight on a model whose folder vanishes finishes (on its version), and the
    # model is forgotten afterwards
    slow = hsys.make_version_src(os.path.join(tmp, "src_slow"), 2, slow=3000)
    shutil.copytree(slow, os.path.join(repo, "brief", "1"))
    hsys.wait_serving(c, "brief", 1)
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    result = {}

    def call():
        try:
            result["r"] = srv.conn().infer("brief", x)
        except Exception as e:  # reported below
            result["e"] = e

    t = threading.Thread(target=call)
    t.start()
    hsys.wait_for(lambda: hsys.Metrics(c.get("/metrics").body.decode()).get(
        "hotserve_inflight_requests", model="brief") > 0 or not t.is_alive(), "the slow request to start")
    check(t.is_alive(), "the slow request finished before its folder could be removed: the test measures nothing")
    shutil.rmtree(os.path.join(repo, "brief"))
    t.join(120)
    check(not t.is_alive(), "the in-flight request never finished")
    check("r" in result, "the in-flight request failed: %r" % result.get("e"))
    r, out, _ = result["r"]
    check(r.status in (200, 503, 404), "in-flight request on a vanishing model: HTTP %d %r" % (r.status, r.body[:200]))
    if r.status == 200:
        hsys.expect_values(out, x, 2, "in-flight request on a vanishing model")
    hsys.wait_for(lambda: "brief" not in index_names(c), "the vanished model to be forgotten")
    check(c.get("/v2/health/ready").status == 200, "not ready after models came and went")
    srv.stop()


def test_token(tmp):
    repo = os.path.join(tmp, "token")
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    token_file = os.path.join(tmp, "control.token")
    with open(token_file, "w") as f:
        f.write("s3cret-Token_42\n")
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--control-token-file", token_file)
    c = srv.conn()
    hsys.wait_serving(c, "add", 1)
    good = {"Authorization": "Bearer s3cret-Token_42"}
    for path in ("/v2/repository/index", "/v2/repository/models/add/unload", "/v2/repository/models/add/load"):
        r = c.request("POST", path, b"{}")
        check(r.status == 401, "%s without a token: HTTP %d" % (path, r.status))
        check((r.header("WWW-Authenticate") or "").startswith("Bearer"), "%s: 401 without WWW-Authenticate" % path)
        r = c.request("POST", path, b"{}", {"Authorization": "Bearer s3cret-Token_43"})
        check(r.status == 403, "%s with a wrong token: HTTP %d" % (path, r.status))
        r = c.request("POST", path, b"{}", {"Authorization": "Basic czNjcmV0LVRva2VuXzQy"})
        check(r.status == 401, "%s with Basic auth: HTTP %d" % (path, r.status))
    check(hsys.serving_version(c, "add") == "1", "a refused unload unloaded the model")
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    r, out, _ = c.infer("add", x)
    check(r.status == 200, "inference needs no token: HTTP %d" % r.status)
    check(c.get("/v2/health/ready").status == 200, "health needs no token")
    check("add" in index_names(c, good), "index with the token does not list the model")
    r = c.request("POST", "/v2/repository/models/add/unload", b"{}", good)
    check(r.status == 200, "unload with the token: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.wait_for(lambda: hsys.serving_version(c, "add") != "1", "the unload to take effect")
    r = c.request("POST", "/v2/repository/models/add/load", b"{}", good)
    check(r.status == 200, "load with the token: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.wait_serving(c, "add", 1)
    srv.stop()
    # a token file that is empty is refused at start
    with open(token_file, "w") as f:
        f.write("\n")
    r = hsys.cli("serve", "--model-repository", repo, "--http-port", "0", "--control-token-file", token_file,
                 check_rc=False)
    check(r.returncode == 2 and "token" in r.stderr, "an empty token file: exit %d %r" % (r.returncode, r.stderr))


def test_mode_none(tmp):
    repo = os.path.join(tmp, "none")
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--model-control-mode", "none")
    c = srv.conn()
    hsys.wait_serving(c, "add", 1)
    for path in ("/v2/repository/index", "/v2/repository/models/add/unload", "/v2/repository/models/add/load"):
        r = c.request("POST", path, b"{}")
        check(r.status == 403 and "model-control-mode" in r.json().get("error", ""),
              "%s with control mode none: HTTP %d %r" % (path, r.status, r.body[:200]))
    check(hsys.serving_version(c, "add") == "1", "a refused unload unloaded the model")
    # the repository is still followed
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "v2src"), 2), os.path.join(repo, "add"), version=2)
    hsys.wait_serving(c, "add", 2)
    srv.stop()
    r = hsys.cli("serve", "--model-repository", repo, "--http-port", "0", "--model-control-mode", "explicitly",
                 check_rc=False)
    check(r.returncode == 2, "an unknown control mode: exit %d" % r.returncode)


def test(tmp, args):
    hsys.require("serve")
    test_token(tmp)
    test_mode_none(tmp)
    test_forget(tmp)


if __name__ == "__main__":
    hsys.main(test, __doc__)
