#!/usr/bin/python3
"""test_repo_fifo.py - a FIFO where a repository file is expected never blocks the server.

A FIFO (named pipe) opened for reading blocks until a writer comes; a loader that opened one would
never reload anything again, never answer POST /v2/repository/index, never exit on SIGTERM. Here a
FIFO stands in place of config.json, of a version's manifest, of its signature and of its
model.onnx (and of config.json of a model that appears while the server runs). Each is refused
with a reason in the log, and: a cold start over that repository still listens, the good model
still answers, the index answers, a new version of the good model is still loaded, and SIGTERM
exits promptly.
"""
import os

import numpy as np

import hsys
from hsys import check

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    good = os.path.join(repo, "good")
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "g1"), 1), good, 1)

    # config.json is a FIFO
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "c1"), 1), os.path.join(repo, "fifo_config"), 1)
    os.mkfifo(os.path.join(repo, "fifo_config", "config.json"))
    # model.onnx is a FIFO (no manifest: the version is judged by its listing once settled)
    os.makedirs(os.path.join(repo, "fifo_model", "1"))
    os.mkfifo(os.path.join(repo, "fifo_model", "1", "model.onnx"))
    # the manifest is a FIFO
    d = os.path.join(repo, "fifo_manifest", "1")
    hsys.make_version_src(d, 1)
    os.mkfifo(os.path.join(d, "hotserve-manifest.json"))
    # the signature is a FIFO beside a real manifest
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "s1"), 1), os.path.join(repo, "fifo_sig"), 1)
    os.mkfifo(os.path.join(repo, "fifo_sig", "1", "hotserve-manifest.sig"))
    # a symlink (inside the model) that leads to a FIFO
    d = os.path.join(repo, "fifo_link", "1")
    hsys.make_version_src(d, 1)
    os.mkfifo(os.path.join(repo, "fifo_link", "pipe"))
    os.symlink("../pipe", os.path.join(d, "extra.bin"))

    # A cold start over all of them listens (Server waits for the listening line).
    srv = hsys.Server(repo, "--poll-interval", "0.3", "--settle", "0.1", start_timeout=60)
    c = srv.conn(timeout=30)
    hsys.wait_serving(c, "good", 1)
    r, out, _ = c.infer("good", X)
    hsys.expect_values(out, X, 1, "good model beside the FIFOs")

    for name in ("fifo_config", "fifo_model", "fifo_manifest", "fifo_sig", "fifo_link"):
        srv.wait_log(r"%s.*(not a regular file)" % name, "a log line refusing %s's FIFO as not a regular file" % name,
                     timeout=20)
        check(hsys.serving_version(c, name) is None, "%s serves a version although a file is a FIFO" % name)

    # The index answers (a rescan that would open the FIFO would never return).
    r = c.request("POST", "/v2/repository/index", b"{}")
    check(r.status == 200, "POST /v2/repository/index: HTTP %d: %r" % (r.status, r.body[:300]))

    # A model that appears while the server runs with a FIFO config.json, then a new good version.
    late = os.path.join(tmp, "late")
    os.makedirs(os.path.join(late, "1"))
    with open(os.path.join(late, "1", "model.onnx"), "wb") as f:
        f.write(hsys.model_bytes(1))
    os.mkfifo(os.path.join(late, "config.json"))
    os.rename(late, os.path.join(repo, "late_fifo"))
    srv.wait_log(r"late_fifo.*not a regular file", "the late model's FIFO config.json refused", timeout=20)
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "g2"), 2), good, 2)
    hsys.wait_serving(c, "good", 2)
    r, out, _ = c.infer("good", X)
    hsys.expect_values(out, X, 2, "good model version 2 loaded after the FIFOs")
    r = c.request("POST", "/v2/repository/index", b"{}")
    check(r.status == 200, "POST /v2/repository/index after the late FIFO: HTTP %d" % r.status)
    c.close()
    srv.stop(timeout=20)  # SIGTERM must not wait on a FIFO


if __name__ == "__main__":
    hsys.main(test, __doc__)
