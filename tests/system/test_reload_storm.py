#!/usr/bin/python3
"""test_reload_storm.py - zero failed requests while versions change every 200 ms, broken ones included.

8 keep-alive clients (JSON and binary bodies) call model "storm" for the whole storm (>= 10 s) while
a publisher adds good version K (y = x + K) with `hotserve publish` every 200 ms and, between two
good ones, a broken version: a truncated model file, garbage bytes, a file changed after its
manifest was written, or a model whose shipped golden outputs don't match. Asserts: no request
fails or drops; every answer equals x + K for the model_version it reports, and K is a good
version; per client the version never goes backwards; broken versions are never served (answers
or status), are shown as failed with the right reason in the status document, counted in
/metrics, and named in the log; the last good version ends up serving.
"""
import os
import threading
import time

import numpy as np

import hsys
from hsys import check

KINDS = ["truncated", "garbage", "manifest_mismatch", "golden_mismatch"]
REASON = {"truncated": ("load_error",), "garbage": ("load_error",), "manifest_mismatch": ("manifest_mismatch",),
          "golden_mismatch": ("golden_mismatch",)}


def add_args(p):
    p.add_argument("--duration", type=float, default=10.0, help="storm length in seconds (>= 10 for the proof)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--period", type=float, default=0.2, help="seconds between good versions")


def prepare(tmp, n_good):
    """Builds every source directory before the storm so the publisher keeps its pace.
    Returns a list of (version, kind, src_dir); kind "good" or one of KINDS."""
    plan = []
    v = 2
    rng = np.random.default_rng(7)
    for i in range(n_good):
        kind = KINDS[i % len(KINDS)]
        d = hsys.make_version_src(os.path.join(tmp, "src", str(v)), v)
        if i % 2 == 0:                              # half the good versions pass a golden check
            gx = np.linspace(-2, 2, 4, dtype=np.float32).reshape(1, 4)
            hsys.write_golden(d, {"x": gx}, {"y": gx + np.float32(v)})
        plan.append((v, "good", d))
        if i == n_good - 1:
            break                                   # the storm ends on a good version
        b = v + 1
        d = os.path.join(tmp, "src", str(b))
        good = hsys.model_bytes(b)
        if kind == "truncated":
            hsys.write_file(os.path.join(d, "model.onnx"), good[:len(good) // 2])
        elif kind == "garbage":
            hsys.write_file(os.path.join(d, "model.onnx"), rng.integers(0, 256, len(good), dtype=np.uint8).tobytes())
        elif kind == "manifest_mismatch":
            d = stage_mismatch(tmp, b)             # moved into the repository in its slot
        else:
            hsys.make_version_src(d, b)
            gx = np.arange(4, dtype=np.float32).reshape(1, 4)
            hsys.write_golden(d, {"x": gx}, {"y": gx + np.float32(b + 1)})   # wrong by one
        plan.append((b, kind, d))
        v += 2
    return plan


def stage_mismatch(tmp, version):
    """Publishes version to a stage repository and changes one bit of its model after the manifest
    was written (same size). Done before the storm, like every other source, so that in its slot the
    publisher only renames it in: a version that took longer to appear than the others would mostly
    be hidden by the next one before a scan saw it. Returns the staged version directory."""
    src = hsys.make_version_src(os.path.join(tmp, "src", str(version)), version)
    stage = os.path.join(tmp, "stage", str(version))
    os.makedirs(stage)
    hsys.publish(src, os.path.join(stage, "storm"), version)
    vdir = os.path.join(stage, "storm", str(version))
    mf = os.path.join(vdir, "model.onnx")
    data = bytearray(open(mf, "rb").read())
    data[len(data) // 2] ^= 0x01                    # same size, one bit changed after the manifest
    with open(mf, "wb") as f:
        f.write(bytes(data))
    return vdir


def publish_one(repo_model, version, kind, src):
    if kind == "manifest_mismatch":
        os.rename(src, os.path.join(repo_model, str(version)))   # appears complete, atomically
    else:
        hsys.publish(src, repo_model, version)


def test(tmp, args):
    hsys.require("serve", "publish")
    check(args.duration >= 1 and args.clients >= 1, "bad arguments")
    repo = os.path.join(tmp, "repo")
    repo_model = os.path.join(repo, "storm")
    os.makedirs(repo_model)
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "1"), 1), repo_model, 1)
    n_good = max(2, int(args.duration / args.period))
    plan = prepare(tmp, n_good)
    good = {1}
    broken = {}                                     # version -> kind
    lock = threading.Lock()

    # --settle 0: every version here is published with a manifest, so a mismatch is refused at
    # once instead of being kept pending (a copy in progress) until the next good version hides it
    srv = hsys.Server(repo, "--poll-interval", "0.5", "--settle", "0")
    ctl = srv.conn()
    hsys.wait_serving(ctl, "storm", 1)

    stop_clients = threading.Event()
    stop_monitor = threading.Event()
    errors = []
    per_client = [dict(n=0, versions=set(), last=0) for _ in range(args.clients)]

    def client(i):
        c = srv.conn()
        rng = np.random.default_rng(100 + i)
        st = per_client[i]
        try:
            while not stop_clients.is_set():
                x = rng.standard_normal((1, 4)).astype(np.float32)
                binary = (st["n"] % 2) == 1
                r, out, _ = c.infer("storm", x, binary=binary)
                what = "client %d request %d (%s)" % (i, st["n"], "binary" if binary else "json")
                if r.status != 200:
                    errors.append("%s: HTTP %d %r" % (what, r.status, r.body[:200]))
                    return
                ver = out[""].get("model_version")
                if not (isinstance(ver, str) and ver.isdigit()):
                    errors.append("%s: model_version %r" % (what, ver))
                    return
                k = int(ver)
                hsys.expect_values(out, x, k, what + " on version %d" % k)
                with lock:
                    if k not in good:
                        errors.append("%s: served version %d, which is %s" %
                                      (what, k, "broken (%s)" % broken[k] if k in broken else "not published"))
                        return
                if k < st["last"]:
                    errors.append("%s: version went backwards %d -> %d" % (what, st["last"], k))
                    return
                st["last"] = k
                st["versions"].add(k)
                st["n"] += 1
        except hsys.TestFailure as e:
            errors.append(str(e))
        except Exception as e:                      # reset, timeout, dropped: all failed requests
            errors.append("client %d after %d requests: %r" % (i, st["n"], e))
        finally:
            c.close()

    seen_failed = {}                                # version -> reason, from the status document
    status_violations = []
    serving_seen = []

    def monitor():
        c = srv.conn()
        try:
            while not stop_monitor.is_set():
                doc = c.status("storm")
                sv = doc.get("serving_version")
                if sv is not None and (not serving_seen or serving_seen[-1] != sv):
                    serving_seen.append(sv)
                for e in doc.get("versions", []):
                    v = int(e["version"])
                    with lock:
                        bad = v in broken
                    if bad and (e.get("serving") or e.get("state") in ("ready", "retiring")):
                        status_violations.append("broken version %d (%s) shown as %s, serving=%r" %
                                                 (v, broken[v], e.get("state"), e.get("serving")))
                    if e.get("state") == "failed":
                        seen_failed[v] = e.get("reason")
                time.sleep(0.05)
        except Exception as e:
            errors.append("status monitor: %r" % e)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    mon = threading.Thread(target=monitor)
    for t in threads:
        t.start()
    mon.start()

    t0 = time.monotonic()
    step = args.period / 2
    for n, (version, kind, src) in enumerate(plan):
        target = t0 + (n + 1) * step
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with lock:
            if kind == "good":
                good.add(version)
            else:
                broken[version] = kind
        publish_one(repo_model, version, kind, src)
        if errors:
            break
    last_good = max(good)
    if not errors:
        hsys.wait_serving(ctl, "storm", last_good, timeout=60)
        time.sleep(0.5)                             # a few requests on the final version
    storm_s = time.monotonic() - t0
    stop_clients.set()
    for t in threads:
        t.join(120)
    stop_monitor.set()
    mon.join(60)

    check(not errors, "%d failure(s) during the storm; first: %s" % (len(errors), "; ".join(errors[:3])))
    check(not status_violations, "status document: %s" % "; ".join(status_violations[:3]))
    total = sum(st["n"] for st in per_client)
    served = set().union(*(st["versions"] for st in per_client))
    print("storm: %.1f s, %d requests by %d clients, %d good and %d broken versions published, "
          "%d versions answered, serving sequence %s"
          % (storm_s, total, args.clients, len(good) - 1, len(broken), len(served), " ".join(serving_seen)))
    check(storm_s >= args.duration * 0.9, "the storm ended early (%.1f s)" % storm_s)
    check(all(st["n"] > 0 for st in per_client), "a client made no request: %r" % [st["n"] for st in per_client])
    check(last_good in served, "no request was answered by the last version %d" % last_good)
    check(len(served) >= 3, "only versions %s answered requests: the storm did not reload" % sorted(served))

    print("broken versions shown failed in the status document: %s" %
          ", ".join("%s %d/%d" % (kind, sum(1 for v in seen_failed if broken.get(v) == kind),
                                  sum(1 for k in broken.values() if k == kind)) for kind in KINDS))
    # every broken version the status showed failed has its kind's reason; each kind was reported
    for v, reason in seen_failed.items():
        check(v in broken, "good version %d shown as failed (%s)" % (v, reason))
        check(reason in REASON[broken[v]], "version %d (%s) failed with reason %r, wanted %s"
              % (v, broken[v], reason, REASON[broken[v]]))
    for kind in KINDS:
        check(any(broken[v] == kind for v in seen_failed), "no %s version was ever shown as failed in the status "
              "document (failed seen: %s)" % (kind, sorted(seen_failed.items())))

    m = ctl.metrics()
    loadf = m.by_label("hotserve_model_load_failures_total", "reason", model="storm")
    verf = m.by_label("hotserve_model_verify_failures_total", "reason", model="storm")
    count = {}
    for v, reason in seen_failed.items():
        count[reason] = count.get(reason, 0) + 1
    for reason, n in count.items():
        got = verf.get(reason, 0) if reason == "manifest_mismatch" else loadf.get(reason, 0)
        check(got >= n, "metrics count %g failures with reason %s, the status showed %d (load %r, verify %r)"
              % (got, reason, n, loadf, verf))
    for v, reason in seen_failed.items():
        srv.wait_log(r"model storm version %d failed: %s" % (v, reason),
                     "a log line 'model storm version %d failed: %s: ...'" % (v, reason))
    check(m.get("hotserve_model_serving_version", model="storm") == last_good, "serving_version gauge != %d"
          % last_good)
    check(m.get("hotserve_requests_total", model="storm", outcome="server_error") == 0, "server errors counted")
    ctl.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__, add_args)
