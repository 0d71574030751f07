#!/usr/bin/python3
"""test_served_mismatch.py - issue 16 class 7, second half: a served version whose files no longer
match its manifest, through a real server with --require-signature and signed versions.

With the loader reading and hashing each version once, the scan checks a new version's names and
sizes only; a same-size replacement of a served version's file changes the file's stat key (inode,
mtime, ctime), and the scan then hashes that version's files in full. This test replaces model.onnx
of a served, signed version with bytes of the same size:

- another good version is on disk (retire): the tampered version stops serving, the older signed
  version answers, a request in flight on the tampered version finishes on it; the status shows the
  version failed with manifest_mismatch, hotserve_model_verify_failures_total{reason=
  "manifest_mismatch"} moves, an ALERT line names it;
- it is the only version (flag): it keeps answering (nothing else can), its status entry stays
  serving with reason manifest_mismatch, hotserve_model_mismatched_versions_serving is 1, the
  counter and the ALERT as above; a good signed version published then replaces it and the gauge
  goes back to 0.
"""
import os

import numpy as np

import hsys
from hsys import check

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def tamper_same_size(vdir):
    """Rewrites vdir/model.onnx in place with bytes of the same size that differ from the signed ones."""
    p = os.path.join(vdir, "model.onnx")
    data = bytearray(open(p, "rb").read())
    size = len(data)
    data[-1] ^= 0x20
    with open(p, "r+b") as f:
        f.write(bytes(data))
    check(os.path.getsize(p) == size, "the tampered file changed size")


def entries_of(c, model, version):
    return [e for e in hsys.status_entries(c, model) if str(e.get("version")) == str(version)]


def verify_failures(c, model):
    return c.metrics().get("hotserve_model_verify_failures_total", model=model, reason="manifest_mismatch") or 0


def test_retire(tmp, srv, c, repo, key):
    model = os.path.join(repo, "pair")
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "pair1"), 1), model, 1, key=key)
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "pair2"), 2, slow=2500), model, 2, key=key)
    hsys.wait_serving(c, "pair", 2, timeout=60)
    check(verify_failures(c, "pair") == 0, "a verification failure before any tampering")
    req = hsys.BackgroundInfer(srv, "pair", X)
    req.wait_inflight(c, "the slow request on version 2 to start")
    check(req.running(), "the slow request finished before the tampering: the test measures nothing")
    tamper_same_size(os.path.join(model, "2"))
    hsys.wait_serving(c, "pair", 1, timeout=30)
    r, out, _ = req.join(60, "the request in flight on the retired version")
    check(r.status == 200, "the request in flight on the retired version: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.expect_values(out, X, 2, "the request in flight on the retired version")
    r, out, _ = c.infer("pair", X)
    check(r.status == 200, "after the retirement: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.expect_values(out, X, 1, "after the retirement (the older signed version)")
    r, _, _ = c.infer("pair", X, version=2)
    check(r.status in (404, 503), "the tampered version still answers when asked by number: HTTP %d" % r.status)
    check(verify_failures(c, "pair") >= 1, "the mismatch is not counted as a verification failure")
    check(any(e.get("reason") == "manifest_mismatch" for e in entries_of(c, "pair", 2)),
          "version 2's status does not say manifest_mismatch: %r" % entries_of(c, "pair", 2))
    check(not any(e.get("serving") for e in entries_of(c, "pair", 2)), "version 2 still marked serving")
    lines = srv.wait_log(r"model pair version 2 failed: manifest_mismatch", "the ALERT line for pair")
    check(any("alert" in line.lower() for line in lines), "not logged at ALERT level: %r" % lines)
    check(c.metrics().get("hotserve_model_mismatched_versions_serving", model="pair") == 0,
          "a retired version counted as served with a mismatch")


def test_flag(tmp, srv, c, repo, key):
    model = os.path.join(repo, "solo")
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "solo1"), 5), model, 1, key=key)
    hsys.wait_serving(c, "solo", 1, timeout=60)
    tamper_same_size(os.path.join(model, "1"))
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_mismatched_versions_serving", model="solo") == 1,
                  "the only version to be flagged in /metrics")
    r, out, _ = c.infer("solo", X)
    check(r.status == 200, "the flagged only version stopped answering: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.expect_values(out, X, 5, "the flagged only version (the bytes verified at load)")
    check(hsys.serving_version(c, "solo") == "1", "the flagged version is not serving")
    serving = [e for e in entries_of(c, "solo", 1) if e.get("serving")]
    check(serving and serving[-1].get("reason") == "manifest_mismatch" and "flagged" in serving[-1].get("error", ""),
          "the serving entry is not flagged: %r" % entries_of(c, "solo", 1))
    check(verify_failures(c, "solo") >= 1, "the mismatch of the flagged version is not counted")
    lines = srv.wait_log(r"model solo version 1 failed: manifest_mismatch", "the ALERT line for solo")
    check(any("alert" in line.lower() for line in lines), "not logged at ALERT level: %r" % lines)
    before = verify_failures(c, "solo")
    hsys.rescan(c)
    check(verify_failures(c, "solo") == before, "a rescan counted the same mismatch again")
    # a good version replaces it; the gauge goes back to 0
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "solo2"), 6), model, 2, key=key)
    hsys.wait_serving(c, "solo", 2, timeout=60)
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_mismatched_versions_serving", model="solo") == 0,
                  "the gauge to return to 0 once a good version serves")
    r, out, _ = c.infer("solo", X)
    hsys.expect_values(out, X, 6, "the good version that replaced the flagged one")


def test(tmp, args):
    hsys.require("serve", "publish", "keygen")
    os.makedirs(os.path.join(tmp, "keys"))
    priv, pub = hsys.keygen(os.path.join(tmp, "keys", "ed"))
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--require-signature", "--trusted-key", pub,
                      "--instances", 2)
    c = srv.conn()
    test_retire(tmp, srv, c, repo, priv)
    test_flag(tmp, srv, c, repo, priv)
    check(c.get("/v2/health/ready").status == 200, "not ready after the mismatches")
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)
