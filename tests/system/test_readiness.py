#!/usr/bin/python3
"""test_readiness.py - readiness a fleet can live with, polling alone, a busy port, the lame-duck period.

- The server listens before its start-up loads (a model whose warm-up takes seconds) and answers
  /v2/health/ready with 503 until they are done, then 200.
- With --no-inotify the process holds no inotify descriptor, and a new version is still picked up
  by polling alone.
- A new model whose only version fails to load, and one whose only version fails verification,
  leave a ready server ready (both paths agree); the same repository under --strict-readiness
  answers 503 naming the strict rule, and 200 again once the bad models are gone.
- A second hotserve on the first one's port exits with "address in use" (no SO_REUSEPORT).
- --shutdown-grace: after SIGTERM, ready answers 503 ("shutting down", hotserve_ready 0) while
  inference still answers 200; then the server drains and exits 0.
"""
import os
import shutil
import signal
import subprocess
import time

import numpy as np

import hsys
from hsys import check

X = np.array([[1.0, -2.0, 0.5, 8.0]], dtype=np.float32)


def ready_answer(srv):
    c = srv.conn(timeout=30)
    try:
        r = c.get("/v2/health/ready")
        return r.status, r.body.decode(errors="replace")
    finally:
        c.close()


def inotify_fds(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if "inotify" in os.readlink("/proc/%d/fd/%s" % (pid, fd)):
                n += 1
        except OSError:
            pass
    return n


def status_reasons(c, model):
    r = c.get("/v2/models/%s/status" % model)
    if r.status != 200:
        return []
    return [v.get("reason") for v in r.json().get("versions", []) if v.get("state") == "failed"]


def test(tmp, args):
    repo = os.path.join(tmp, "repo")
    src = os.path.join(tmp, "src")
    os.makedirs(repo)
    hsys.publish(hsys.make_version_src(os.path.join(src, "a1"), 1), os.path.join(repo, "add"), 1)
    # a start-up load that takes seconds: a chain of MatMuls warmed up many times
    slow = os.path.join(repo, "slowstart")
    hsys.publish(hsys.make_version_src(os.path.join(src, "s1"), 5, shape=(1, 256), slow=16), slow, 1)
    hsys.write_file(os.path.join(slow, "config.json"), b'{"warmup": {"runs": 400, "inputs": "zeros"}}')

    # --- listening before the start-up loads, not-ready until they are done ---------------------
    srv = hsys.Server(repo, "--no-inotify", "--poll-interval", "0.3", "--settle", "0.3", wait_ready=False)
    st, body = ready_answer(srv)
    check(st == 503 and "start-up" in body, "right after the listening line, ready should be 503 (start-up loads "
          "running), got %d %s" % (st, body))
    hsys.wait_for(srv.ready, "ready after the start-up loads", 120)
    c = srv.conn()
    for model, k in (("add", 1), ("slowstart", 5)):
        check(hsys.serving_version(c, model) == "1", "%s serves version 1 once ready" % model)

    # --- polling only ----------------------------------------------------------------------------
    check(inotify_fds(srv.pid) == 0, "--no-inotify: the server holds an inotify descriptor")
    hsys.publish(hsys.make_version_src(os.path.join(src, "a2"), 2), os.path.join(repo, "add"), 2)
    hsys.wait_serving(c, "add", 2, timeout=30)
    r, out, _ = c.infer("add", X)
    check(r.status == 200, "infer after the polled swap: HTTP %d" % r.status)
    hsys.expect_values(out, X, 2, "version 2 (seen by polling)")

    # --- new models that fail: load failure and verification failure agree -----------------------
    hsys.write_file(os.path.join(src, "broken", "model.onnx"), b"\x08\x07 this is not an ONNX model")
    hsys.publish(os.path.join(src, "broken"), os.path.join(repo, "broken"), 1)
    stage = os.path.join(tmp, "stage", "1")
    hsys.publish(hsys.make_version_src(os.path.join(src, "t1"), 3), os.path.join(tmp, "stage-model"), 1)
    os.makedirs(os.path.dirname(stage), exist_ok=True)
    os.rename(os.path.join(tmp, "stage-model", "1"), stage)
    with open(os.path.join(stage, "model.onnx"), "r+b") as f:   # tampered after its manifest was written
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0x01]))
    os.makedirs(os.path.join(repo, "tampered"))
    os.rename(stage, os.path.join(repo, "tampered", "1"))
    hsys.wait_for(lambda: status_reasons(c, "broken"), "the broken model's load failure in its status", 30)
    hsys.wait_for(lambda: status_reasons(c, "tampered"), "the tampered model's refusal in its status", 30)
    load_reason, verify_reason = status_reasons(c, "broken")[0], status_reasons(c, "tampered")[0]
    for _ in range(5):   # over several polls: still ready
        st, body = ready_answer(srv)
        check(st == 200, "a new model that fails (%s, %s) took the server out of rotation: %d %s"
              % (load_reason, verify_reason, st, body))
        time.sleep(0.3)

    strict = hsys.Server(repo, "--strict-readiness", "--poll-interval", "0.3", "--settle", "0.3", wait_ready=False)
    sc = strict.conn()
    hsys.wait_for(lambda: status_reasons(sc, "broken") and status_reasons(sc, "tampered"),
                  "both refusals in the strict server's status", 60)
    st, body = ready_answer(strict)
    check(st == 503 and "strict readiness" in body, "--strict-readiness with refused versions: %d %s" % (st, body))
    shutil.rmtree(os.path.join(repo, "broken"))
    shutil.rmtree(os.path.join(repo, "tampered"))
    hsys.wait_for(strict.ready, "strict readiness back once the bad models are gone", 30)
    strict.stop()

    # --- a busy port fails loudly ------------------------------------------------------------------
    second = subprocess.run([hsys.Env.hotserve, "serve", "--model-repository", repo, "--host", "127.0.0.1",
                             "--http-port", str(srv.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, timeout=60)
    check(second.returncode != 0, "a second server on busy port %d exited %d: %s"
          % (srv.port, second.returncode, second.stderr[-500:]))
    check("address in use" in second.stderr, "the busy-port error should say 'address in use': %s" % second.stderr)
    check("listening" not in second.stderr, "the second server claims to listen: %s" % second.stderr)
    srv.stop()

    # --- lame duck on SIGTERM ------------------------------------------------------------------------
    lame = hsys.Server(repo, "--shutdown-grace", "3", "--poll-interval", "0.3")
    lc = lame.conn()
    lame.proc.send_signal(signal.SIGTERM)
    hsys.wait_for(lambda: ready_answer(lame)[0] == 503, "ready 503 in the lame-duck period", 10)
    st, body = ready_answer(lame)
    check("shutting down" in body, "lame-duck readiness reason: %s" % body)
    check(lc.metrics().get("hotserve_ready") == 0, "hotserve_ready is not 0 in the lame-duck period")
    r, out, _ = lc.infer("add", X)
    check(r.status == 200, "inference during the lame-duck period: HTTP %d" % r.status)
    hsys.expect_values(out, X, 2, "answer during the lame-duck period")
    lc.close()
    lame.stop(timeout=60)
    check(lame.log_matching(r"lame duck for 3\.0 s"), "lame-duck log line")


if __name__ == "__main__":
    hsys.main(test, __doc__)
