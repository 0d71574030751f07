#!/usr/bin/python3
"""test_repo_control.py - issue 16 classes 10 and 11 through a real server.

10: model folders that appear and vanish are forgotten: gone from /v2/repository/index and from
    /metrics (the series count returns to its baseline after every round), also while a request
    on a vanishing model is in flight.
11: --control-token-file: the repository API (index, load, unload) answers 401 without a token, 403
    with a wrong one, and works with the right one; inference and health need no token.
    --model-control-mode none: the API answers 403; the repository is still followed.
    --model-control-mode explicit: nothing loads at start but what --load-model names ('*': all);
    load makes a model READY and callable, unload makes it unavailable until the next load; a
    model folder that appears is listed but not loaded; a loaded model still hot-swaps a new
    version; the index lists every model with its state; the token still guards load/unload.
"""
import os
import shutil
import time

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
    req = hsys.BackgroundInfer(srv, "brief", x)
    req.wait_inflight(c, "the slow request to start")
    check(req.running(), "the slow request finished before its folder could be removed: the test measures nothing")
    shutil.rmtree(os.path.join(repo, "brief"))
    r, out, _ = req.join(120)
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


def index_entries(c, headers=None):
    r = c.request("POST", "/v2/repository/index", b"{}", headers or {})
    check(r.status == 200, "index: HTTP %d %r" % (r.status, r.body[:200]))
    return {(e["name"], e.get("version", "")): e for e in r.json()}


def expect_not_loaded(c, model, x, what):
    """model is listed by the index, every version UNAVAILABLE with a not-loaded reason, and not callable."""
    entries = [e for (n, _), e in index_entries(c).items() if n == model]
    check(entries, "%s: the index does not list %s" % (what, model))
    for e in entries:
        check(e["state"] == "UNAVAILABLE" and ("not loaded" in e.get("reason", "") or
                                               "unloaded" in e.get("reason", "")),
              "%s: index entry of %s: %r" % (what, model, e))
    check(hsys.serving_version(c, model) is None, "%s: %s serves version %r" % (what, model,
                                                                               hsys.serving_version(c, model)))
    r, _, _ = c.infer(model, x)
    check(r.status in (404, 503), "%s: inference on %s: HTTP %d %r" % (what, model, r.status, r.body[:200]))


def test_mode_explicit(tmp):
    repo = os.path.join(tmp, "explicit")
    for name, k in (("a", 1), ("b", 2)):
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "xsrc", "%s1" % name), k), os.path.join(repo, name),
                     version=1)
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    opts = ("--settle", "0.1", "--poll-interval", "0.2", "--model-control-mode", "explicit")
    # no --load-model: nothing is loaded, the server is ready, the index lists both models
    srv = hsys.Server(repo, *opts)
    c = srv.conn()
    check(c.get("/v2/health/ready").status == 200, "explicit mode with nothing loaded: not ready")
    for name in ("a", "b"):
        expect_not_loaded(c, name, x, "explicit start without --load-model")
    e = index_entries(c)[("a", "1")]
    check("model-control-mode explicit" in e.get("reason", ""), "the reason does not say why: %r" % e)
    # load: READY and callable; the other model stays unloaded
    r = c.request("POST", "/v2/repository/models/a/load", b"{}")
    check(r.status == 200, "load a: HTTP %d %r" % (r.status, r.body[:200]))
    check(index_entries(c)[("a", "1")]["state"] == "READY", "a is not READY after its load")
    r, out, _ = c.infer("a", x)
    check(r.status == 200, "inference on a after its load: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.expect_values(out, x, 1, "a after its load")
    expect_not_loaded(c, "b", x, "b after a's load")
    # a loaded model follows its folder: a new version swaps in
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "xsrc", "a2"), 12), os.path.join(repo, "a"), version=2)
    hsys.wait_serving(c, "a", 2)
    r, out, _ = c.infer("a", x)
    hsys.expect_values(out, x, 12, "a after its new version")
    # a model folder that appears is listed but not loaded (the rescan has seen it and settled it)
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "xsrc", "c1"), 3), os.path.join(repo, "c"), version=1)
    time.sleep(0.6)  # three poll intervals: the watcher's scans have seen it too
    expect_not_loaded(c, "c", x, "a model that appeared")
    # unload: unavailable, and a version published meanwhile stays out until the next load
    r = c.request("POST", "/v2/repository/models/a/unload", b"{}")
    check(r.status == 200, "unload a: HTTP %d %r" % (r.status, r.body[:200]))
    expect_not_loaded(c, "a", x, "a after its unload")
    check("unloaded by request" in index_entries(c)[("a", "2")].get("reason", ""), "unload reason missing")
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "xsrc", "a3"), 13), os.path.join(repo, "a"), version=3)
    time.sleep(0.6)
    expect_not_loaded(c, "a", x, "a after a publish while unloaded")
    r = c.request("POST", "/v2/repository/models/c/load", b"{}")
    check(r.status == 200, "load c: HTTP %d %r" % (r.status, r.body[:200]))
    r, out, _ = c.infer("c", x)
    hsys.expect_values(out, x, 3, "c after its load")
    r = c.request("POST", "/v2/repository/models/a/load", b"{}")
    check(r.status == 200, "load a again: HTTP %d %r" % (r.status, r.body[:200]))
    check(hsys.serving_version(c, "a") == "3", "a serves %r after its load, not the newest version 3" %
          hsys.serving_version(c, "a"))
    r = c.request("POST", "/v2/repository/models/nosuch/load", b"{}")
    check(r.status in (400, 404), "load of a model not in the repository: HTTP %d" % r.status)
    check(c.get("/v2/health/ready").status == 200, "not ready after loads and unloads in explicit mode")
    srv.stop()
    # --load-model names what loads at start; '*' loads every model
    srv = hsys.Server(repo, *opts, "--load-model", "b")
    c = srv.conn()
    hsys.wait_serving(c, "b", 1)
    expect_not_loaded(c, "a", x, "a with --load-model b")
    expect_not_loaded(c, "c", x, "c with --load-model b")
    srv.stop()
    srv = hsys.Server(repo, *opts, "--load-model", "*")
    c = srv.conn()
    for name, v in (("a", 3), ("b", 1), ("c", 1)):
        hsys.wait_serving(c, name, v)
    srv.stop()
    r = hsys.cli("serve", "--model-repository", repo, "--http-port", "0", "--load-model", "a", check_rc=False)
    check(r.returncode == 2 and "explicit" in r.stderr, "--load-model without explicit mode: exit %d %r" %
          (r.returncode, r.stderr))
    # the control token still guards load and unload in explicit mode
    token_file = os.path.join(tmp, "explicit.token")
    with open(token_file, "w") as f:
        f.write("xpl1cit\n")
    srv = hsys.Server(repo, *opts, "--control-token-file", token_file)
    c = srv.conn()
    for path in ("/v2/repository/models/a/load", "/v2/repository/models/a/unload"):
        r = c.request("POST", path, b"{}")
        check(r.status == 401, "explicit mode, %s without a token: HTTP %d" % (path, r.status))
        r = c.request("POST", path, b"{}", {"Authorization": "Bearer wrong"})
        check(r.status == 403, "explicit mode, %s with a wrong token: HTTP %d" % (path, r.status))
    good = {"Authorization": "Bearer xpl1cit"}
    check(hsys.serving_version(c, "a") is None, "a refused load loaded the model")
    r = c.request("POST", "/v2/repository/models/a/load", b"{}", good)
    check(r.status == 200, "explicit mode, load with the token: HTTP %d %r" % (r.status, r.body[:200]))
    r, out, _ = c.infer("a", x)
    hsys.expect_values(out, x, 13, "a loaded with the token")
    srv.stop()


def test(tmp, args):
    hsys.require("serve")
    test_mode_explicit(tmp)
    test_token(tmp)
    test_mode_none(tmp)
    test_forget(tmp)


if __name__ == "__main__":
    hsys.main(test, __doc__)
