#!/usr/bin/python3
"""test_repo_untouched.py - the server never writes into the model repository (invariant 4).

A repository with a published (manifest) model carrying a golden check and warm-up files, and a
manifest-less model that settles, is snapshotted entry by entry (type, mode, size, mtime, inode,
for every file, directory and link). The server then serves, reloads, rescans (SIGHUP and
POST /v2/repository/index), unloads and loads, refuses a broken version, and stops. Every entry
that the test itself did not write must be exactly as it was, and no entry may have appeared.
"""
import os
import shutil
import signal

import numpy as np

import hsys
from hsys import check


def snapshot(root):
    """{relative path: (type, mode, size, mtime_ns, inode)} for every entry below root."""
    snap = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            snap[os.path.relpath(p, root)] = (st.st_mode >> 12, st.st_mode & 0o7777, st.st_size,
                                              st.st_mtime_ns, st.st_ino)
    st = os.lstat(root)
    snap["."] = (st.st_mode >> 12, st.st_mode & 0o7777, st.st_size, st.st_mtime_ns, st.st_ino)
    return snap


def diff(before, after):
    changed = [p for p in before if p in after and before[p] != after[p]]
    return changed, sorted(set(after) - set(before)), sorted(set(before) - set(after))


def test(tmp, args):
    hsys.require("serve", "publish")
    repo = os.path.join(tmp, "repo")
    src = os.path.join(tmp, "src")
    x = np.arange(4, dtype=np.float32).reshape(1, 4)

    # model "m": published with a manifest, a golden check and warm-up files, plus a config
    v1 = hsys.make_version_src(os.path.join(src, "1"), 1)
    hsys.write_golden(v1, {"x": x}, {"y": x + 1})
    os.makedirs(os.path.join(v1, "warmup"))
    np.save(os.path.join(v1, "warmup", "x.npy"), x)
    os.makedirs(os.path.join(repo, "m"))
    hsys.write_file(os.path.join(repo, "m", "config.json"),
                    b'{"version_policy": {"latest": {"num_versions": 1}}, "warmup": {"runs": 2, "inputs": "files"}}')
    hsys.publish(v1, os.path.join(repo, "m"), 1)
    # model "plain": no manifest, counts once its files have settled
    hsys.make_version_src(os.path.join(repo, "plain", "1"), 5)

    srv = hsys.Server(repo, "--poll-interval", "0.2", "--settle", "0.2")
    c = srv.conn()
    hsys.wait_serving(c, "m", 1)
    hsys.wait_serving(c, "plain", 1)
    before = snapshot(repo)

    for model, k in (("m", 1), ("plain", 5)):
        r, out, _ = c.infer(model, x)
        check(r.status == 200, "infer %s: HTTP %d" % (model, r.status))
        hsys.expect_values(out, x, k, "model %s" % model)
    os.kill(srv.pid, signal.SIGHUP)
    hsys.rescan(c)
    for path in ("/v2/repository/models/plain/unload", "/v2/repository/models/plain/load"):
        r = c.request("POST", path, b"{}")
        check(r.status == 200, "POST %s: HTTP %d %r" % (path, r.status, r.body[:200]))
    hsys.wait_serving(c, "plain", 1)

    # a reload (the test writes version 2 through the publisher) and a refused version 3
    v2 = hsys.make_version_src(os.path.join(src, "2"), 2)
    hsys.write_golden(v2, {"x": x}, {"y": x + 2})
    os.makedirs(os.path.join(v2, "warmup"))
    np.save(os.path.join(v2, "warmup", "x.npy"), x)
    hsys.publish(v2, os.path.join(repo, "m"), 2)
    written = snapshot(repo)  # what the publisher changed is the test's own doing
    hsys.wait_serving(c, "m", 2)
    g = os.path.join(src, "3")
    hsys.write_file(os.path.join(g, "model.onnx"), b"not a model\n" * 64)
    hsys.publish(g, os.path.join(repo, "m"), 3)
    written = snapshot(repo)
    hsys.wait_for(lambda: any(e.get("version") == "3" and e.get("state") == "failed"
                              for e in hsys.status_entries(c, "m")), "version 3 to be refused")
    r, out, _ = c.infer("m", x)
    hsys.expect_values(out, x, 2, "after the refused version")
    c.close()
    srv.stop()

    after = snapshot(repo)
    changed, added, removed = diff(written, after)
    check(not changed, "the server changed repository entries: %s" % changed[:10])
    check(not added, "the server created repository entries: %s" % added[:10])
    check(not removed, "the server removed repository entries: %s" % removed[:10])
    # entries that existed before serving and that the publisher did not touch are unchanged too
    untouched = [p for p in before if p in after and before[p] == written.get(p)]
    check(all(after[p] == before[p] for p in untouched), "an entry from before serving changed")
    check(len(untouched) >= 10, "snapshot covers only %d entries; the test is not looking" % len(untouched))


if __name__ == "__main__":
    hsys.main(test, __doc__)
