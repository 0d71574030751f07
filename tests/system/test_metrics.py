#!/usr/bin/python3
"""test_metrics.py - /metrics passes `promtool check metrics` and carries the contract's families.

Makes every family non-trivial first: successful and failed requests, a reload, a failed load
(garbage model) and a verification failure (a file changed after publishing), then checks the
exposition with promtool and checks the values that the test itself caused.
"""
import os
import shutil
import subprocess

import numpy as np

import hsys
from hsys import check

FAMILIES = {
    "hotserve_requests_total": "counter",
    "hotserve_request_duration_seconds": "histogram",
    "hotserve_queue_duration_seconds": "histogram",
    "hotserve_compute_duration_seconds": "histogram",
    "hotserve_inflight_requests": "gauge",
    "hotserve_model_serving_version": "gauge",
    "hotserve_model_loads_total": "counter",
    "hotserve_model_load_failures_total": "counter",
    "hotserve_model_verify_failures_total": "counter",
    "hotserve_model_load_duration_seconds": "histogram",
    "hotserve_model_swap_duration_seconds": "histogram",
    "hotserve_model_drain_duration_seconds": "histogram",
    "hotserve_model_versions_live": "gauge",
    "hotserve_model_memory_bytes": "gauge",
    "hotserve_process_resident_memory_bytes": "gauge",
    "hotserve_ready": "gauge",
    "hotserve_model_reload_cpu_seconds_total": "counter",
    "hotserve_model_reload_bytes_total": "counter",
    "hotserve_weight_pool_bytes": "gauge",
    "hotserve_model_reload_weight_bytes_total": "counter",
    "hotserve_shared_kernels": "gauge",
    "hotserve_shared_kernel_bytes": "gauge",
    "hotserve_session_arenas": "gauge",
    "hotserve_session_arena_bytes": "gauge",
    "hotserve_session_arenas_created_total": "counter",
}


def test(tmp, args):
    hsys.require("serve", "publish")
    check(shutil.which("promtool") is not None, "promtool is not installed (Debian package prometheus)")
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "m"))
    src = os.path.join(tmp, "src")
    hsys.publish(hsys.make_version_src(os.path.join(src, "1"), 1), os.path.join(repo, "m"), 1)
    srv = hsys.Server(repo, "--poll-interval", "0.2", "--settle", "0.1")
    c = srv.conn()
    hsys.wait_serving(c, "m", 1)
    x = np.ones((1, 4), dtype=np.float32)
    for _ in range(5):
        r, out, _ = c.infer("m", x)
        check(r.status == 200, "infer: HTTP %d" % r.status)
    check(c.infer("m", np.ones((1, 3), dtype=np.float32))[0].status == 400, "wrong shape is not a 400")

    # a good reload, a load failure and a verification failure
    hsys.publish(hsys.make_version_src(os.path.join(src, "2"), 2), os.path.join(repo, "m"), 2)
    hsys.wait_serving(c, "m", 2)
    g = os.path.join(src, "3")
    os.makedirs(g)
    hsys.write_file(os.path.join(g, "model.onnx"), b"this is not an onnx model\n" * 40)
    hsys.publish(g, os.path.join(repo, "m"), 3)
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_load_failures_total", model="m") >= 1,
                  "a load failure to be counted")
    stage = os.path.join(tmp, "stage")
    os.makedirs(stage)
    hsys.publish(hsys.make_version_src(os.path.join(src, "4"), 4), stage + "/m", 4)
    mf = os.path.join(stage, "m", "4", "model.onnx")
    data = bytearray(open(mf, "rb").read())
    data[-1] ^= 0x55                                  # same size, different content than the manifest
    open(mf, "wb").write(bytes(data))
    os.rename(os.path.join(stage, "m", "4"), os.path.join(repo, "m", "4"))
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_verify_failures_total", model="m") >= 1,
                  "a verify failure to be counted")

    body = c.get("/metrics")
    check(body.status == 200, "GET /metrics: HTTP %d" % body.status)
    ctype = body.header("Content-Type") or ""
    check(ctype.startswith("text/plain"), "/metrics Content-Type is %r, wanted text/plain" % ctype)
    p = subprocess.run(["promtool", "check", "metrics"], input=body.body, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    check(p.returncode == 0 and not p.stdout.strip(),
          "promtool check metrics failed (%d):\n%s" % (p.returncode, p.stdout.decode(errors="replace")))

    text = body.body.decode()
    m = hsys.Metrics(text)
    for fam, kind in FAMILIES.items():
        check("# TYPE %s %s" % (fam, kind) in text, "/metrics lacks '# TYPE %s %s'" % (fam, kind))
        sample = fam + "_bucket" if kind == "histogram" else fam
        check(m.has(sample), "/metrics has no sample of %s" % sample)
    check(m.get("hotserve_requests_total", model="m", outcome="success") >= 5, "successes not counted")
    check(m.get("hotserve_requests_total", model="m", outcome="client_error") >= 1, "client error not counted")
    check(m.get("hotserve_model_serving_version", model="m") == 2, "serving version gauge is not 2")
    check(m.get("hotserve_model_loads_total", model="m") >= 2, "loads_total < 2")
    check(m.get("hotserve_model_load_failures_total", model="m", reason="load_error") >= 1,
          "the garbage model is not counted as reason=load_error: %r"
          % m.by_label("hotserve_model_load_failures_total", "reason", model="m"))
    check(m.get("hotserve_model_verify_failures_total", model="m", reason="manifest_mismatch") >= 1,
          "the changed file is not counted as reason=manifest_mismatch: %r"
          % m.by_label("hotserve_model_verify_failures_total", "reason", model="m"))
    check(m.get("hotserve_request_duration_seconds_count", model="m") >= 5, "request histogram count < 5")
    check(m.get("hotserve_compute_duration_seconds_count", model="m") >= 5, "compute histogram count < 5")
    check(m.get("hotserve_model_swap_duration_seconds_count") >= 1, "no swap observed")
    hsys.wait_for(lambda: c.metrics().get("hotserve_model_versions_live") == 1,
                  "hotserve_model_versions_live to be 1 (version 1 retired and freed)")
    check(m.get("hotserve_process_resident_memory_bytes") > 1 << 20, "resident memory < 1 MiB?")
    check(m.get("hotserve_ready") == 1, "hotserve_ready is not 1 on a ready server (refused versions keep it ready)")
    # the loader's cost: CPU per stage, bytes read once and hashed (every version is published with a
    # manifest, so all bytes read were hashed); version 2's status entry carries its own share
    for stage in ("read", "load", "warmup"):
        check(m.get("hotserve_model_reload_cpu_seconds_total", model="m", stage=stage) > 0,
              "no loader CPU counted for stage %s" % stage)
    size2 = os.path.getsize(os.path.join(repo, "m", "2", "model.onnx"))
    read = m.get("hotserve_model_reload_bytes_total", model="m", kind="read")
    check(read >= 2 * size2, "bytes read %r < two versions' model files (%d)" % (read, 2 * size2))
    check(m.get("hotserve_model_reload_bytes_total", model="m", kind="hashed") >= 2 * size2, "bytes hashed too few")
    v2 = [e for e in hsys.status_entries(c, "m") if e["version"] == "2"][-1]
    check(v2["bytes_read"] >= size2 and v2["bytes_hashed"] == v2["bytes_read"],
          "version 2's status: bytes_read %r, bytes_hashed %r" % (v2["bytes_read"], v2["bytes_hashed"]))
    check(v2["load_cpu_ms"] > 0 and v2["read_cpu_ms"] >= 0 and v2["warmup_cpu_ms"] >= 0,
          "version 2's status lacks its CPU times: %r" % v2)
    # the hash ran beside the load: its CPU is part of the read stage's, and the wait is a wall time
    check(0 <= v2["hash_cpu_ms"] <= v2["read_cpu_ms"] and v2["hash_wait_ms"] >= 0,
          "version 2's status: hash_cpu_ms %r, read_cpu_ms %r, hash_wait_ms %r"
          % (v2.get("hash_cpu_ms"), v2["read_cpu_ms"], v2.get("hash_wait_ms")))
    # the load stage's parts (a streamed load): the decode, of it the waits on the read's ring, then
    # the compile; both within the load stage, by wall time and by the loader's CPU
    check(v2["decode_ms"] > 0 and 0 <= v2["ring_wait_ms"] <= v2["decode_ms"] and v2["compile_ms"] > 0
          and 0 <= v2["gate_wait_ms"] <= v2["load_ms"]
          and v2["decode_ms"] + v2["compile_ms"] <= v2["load_ms"] + 1,
          "version 2's status: decode_ms %r, ring_wait_ms %r, compile_ms %r, gate_wait_ms %r, load_ms %r"
          % (v2.get("decode_ms"), v2.get("ring_wait_ms"), v2.get("compile_ms"), v2.get("gate_wait_ms"), v2["load_ms"]))
    check(0 < v2["decode_cpu_ms"] and 0 < v2["compile_cpu_ms"]
          and v2["decode_cpu_ms"] + v2["compile_cpu_ms"] <= v2["load_cpu_ms"] + 0.5,
          "version 2's status: decode_cpu_ms %r, compile_cpu_ms %r, load_cpu_ms %r"
          % (v2.get("decode_cpu_ms"), v2.get("compile_cpu_ms"), v2["load_cpu_ms"]))
    r, out, _ = c.infer("m", x)
    hsys.expect_values(out, x, 2, "after the failures")
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)
