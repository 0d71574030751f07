#!/usr/bin/python3
"""test_model_safety.py - issue 16 classes 3, 4, 6, 12, 13 and 15 through a real server.

6:  a restart with a broken newest version serves the newest older version that loads, and is ready.
13: a golden check whose expected outputs hold exact +-Inf and NaN passes a correct model; one that
    expects Inf where the model computes a finite value is refused.
15: a model with an input name longer than requests may name is refused at load with a reason, not
    reported READY.
12: shapes computed from request values that are negative answer 400 (a client error in /metrics),
    shapes too large to plan answer 413, never 500.
3:  a request whose plan needs more scratch than --max-request-memory answers 413 saying why; the
    same shapes within the budget run; after an outlier the session's arena shrinks back.
4:  a 300-byte model whose static shapes need 1 GiB per session is refused with no_memory under
    --memory-limit 768 MiB before anything is allocated, at start-up and again after a restart;
    the server listens, is ready and serves the other model.
Shutdown: SIGTERM during a load of many minutes exits 0 after a bounded wait.

--part cgroup (ctest system.model_safety_cgroup) runs classes 3 and 4 inside memory cgroups the
test creates, with neither --memory-limit nor --max-request-memory, so the limits tested are the
defaults the server derives from its group: class 4 in 768 MiB (the 300-byte model refused with
no_memory, not OOM-killed), class 3 in 1 GiB (the per-request budget is a quarter of the group's
limit, exactly 256 MiB: a 512 MiB plan answers 413 naming that budget, a 192 MiB plan runs and its
arena shrinks back). Where no memory cgroup can be made (not root, no controller) it exits 77
(skipped) with the reason.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

import hsys
from hsys import check


def save_model(path, graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="hotserve-tests")
    model.ir_version = 8
    hsys.write_file(path, model.SerializeToString())


def long_name_model(path, name_len):
    x = helper.make_tensor_value_info("x" * name_len, TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [1.0])
    node = helper.make_node("Add", ["x" * name_len, "k"], ["y"])
    save_model(path, helper.make_graph([node], "long", [x], [y], [k]))


def shape_model(path):
    """y = ReduceSum(ConstantOfShape(s, 1.0)): the request's values decide the intermediate's shape
    (its scratch memory), the output is one number (the element count). Warm-up runs s = [2, 3]
    (zeros would reduce an empty tensor)."""
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["big"], value=one),
             helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)]
    save_model(path, helper.make_graph(nodes, "cos", [s], [y]))
    vdir = os.path.dirname(path)
    os.makedirs(os.path.join(vdir, "warmup"), exist_ok=True)
    np.save(os.path.join(vdir, "warmup", "s.npy"), np.array([2, 3], dtype=np.int64))
    hsys.write_file(os.path.join(vdir, "..", "config.json"), b'{"warmup": {"runs": 1, "inputs": "files"}}')


def huge_static_model(path, side):
    """A model of a few hundred bytes whose static shapes need a side x side float intermediate:
    y = x + ReduceSum(ConstantOfShape([side, side]))."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [side, side])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    save_model(path, helper.make_graph(nodes, "huge", [x], [y], [shape]))


def infer_s(c, dims):
    """Asks shape_model for an intermediate of shape dims."""
    return c.post_json("/v2/models/cos/infer", {"inputs": [
        {"name": "s", "datatype": "INT64", "shape": [2], "data": list(dims)}]})


def expect_status(r, status, what, text=None):
    check(r.status == status, "%s: HTTP %d, wanted %d: %r" % (what, r.status, status, r.body[:300]))
    if text:
        msg = r.json().get("error", "")
        check(text in msg, "%s: error %r does not say %r" % (what, msg, text))


def test_restart_fallback(tmp):
    repo = os.path.join(tmp, "fallback")
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    hsys.write_file(os.path.join(repo, "add", "2", "model.onnx"), b"this is not an ONNX model")
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2")
    c = srv.conn()
    hsys.wait_serving(c, "add", 1)
    check(c.get("/v2/health/ready").status == 200, "not ready although version 1 serves")
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    r, out, _ = c.infer("add", x)
    check(r.status == 200, "infer on the fallback: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.expect_values(out, x, 1, "fallback version")
    srv.wait_log(r"serving older version 1", "the fallback log line")
    failed = [e for e in hsys.status_entries(c, "add") if str(e.get("version")) == "2"]
    check(failed and failed[0].get("state") == "failed", "version 2 not reported FAILED: %r" % failed)
    # a good newer version replaces the fallback, as at run time
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "v3src"), 3), os.path.join(repo, "add"), version=3)
    hsys.wait_serving(c, "add", 3)
    srv.stop()


def test_golden_inf_nan(tmp):
    repo = os.path.join(tmp, "golden")
    x = np.array([[np.inf, -np.inf, np.nan, 2.0]], dtype=np.float32)
    good = hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    hsys.write_golden(good, {"x": x}, {"y": x + np.float32(1)})
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2")
    c = srv.conn()
    hsys.wait_serving(c, "add", 1)
    # a version expecting +Inf where it computes 3.0 must be refused
    bad = hsys.make_version_src(os.path.join(tmp, "bad2"), 2)
    want = x + np.float32(2)
    want[0, 3] = np.inf
    hsys.write_golden(bad, {"x": x}, {"y": want})
    hsys.publish(bad, os.path.join(repo, "add"), version=2)
    hsys.wait_for(lambda: any(str(e.get("version")) == "2" and e.get("state") == "failed"
                              for e in hsys.status_entries(c, "add")), "version 2 to fail its golden check")
    check(hsys.serving_version(c, "add") == "1", "a golden mismatch replaced version 1")
    srv.stop()


def test_long_names(tmp):
    repo = os.path.join(tmp, "names")
    long_name_model(os.path.join(repo, "long", "1", "model.onnx"), 200)
    long_name_model(os.path.join(repo, "fits", "1", "model.onnx"), 127)
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2")
    c = srv.conn()
    hsys.wait_serving(c, "fits", 1)
    r = c.post_json("/v2/models/fits/infer", {"inputs": [
        {"name": "x" * 127, "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    check(r.status == 200, "a 127-byte input name cannot be called: HTTP %d %r" % (r.status, r.body[:200]))
    hsys.wait_for(lambda: any(e.get("state") == "failed" for e in hsys.status_entries(c, "long")),
                  "the long-named model to fail its load")
    st = [e for e in hsys.status_entries(c, "long") if e.get("state") == "failed"][0]
    check("200 bytes" in st.get("error", ""), "the refusal does not say why: %r" % st)
    check(c.get("/v2/models/long/ready").status != 200, "the long-named model is reported READY")
    srv.stop()


def test_request_shapes(tmp):
    repo = os.path.join(tmp, "shapes")
    shape_model(os.path.join(repo, "cos", "1", "model.onnx"))
    mib = 1 << 20
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--max-request-memory", 256 * mib,
                      "--instances", 1)
    c = srv.conn()
    hsys.wait_serving(c, "cos", 1)
    r = infer_s(c, [2, 3])
    check(r.status == 200, "a good shape: HTTP %d %r" % (r.status, r.body[:200]))
    y = hsys.decode_infer_response(r)["y"]
    check(float(y) == 6.0, "ReduceSum(ConstantOfShape([2,3])) gave %r" % y)
    # class 12: computed shapes that are negative are the client's error (400), too large 413
    expect_status(infer_s(c, [-1, 3]), 400, "a negative computed shape", "negative")
    expect_status(infer_s(c, [1 << 40, 1 << 40]), 413, "an overflowing computed shape")
    expect_status(infer_s(c, [1 << 20, 1 << 20]), 413, "a 4 TiB computed shape")
    # class 3: a plan over the per-request budget (512 MiB > 256 MiB) is refused before it runs
    rss0 = srv.rss_bytes()
    expect_status(infer_s(c, [16384, 8192]), 413, "a plan over --max-request-memory", "max-request-memory")
    check(srv.rss_bytes() < rss0 + 64 * mib, "a refused plan still grew the server by %d MiB"
          % ((srv.rss_bytes() - rss0) // mib))
    # within the budget (192 MiB) it runs; the session's arena grows, then shrinks back at the next
    # ordinary request
    r = infer_s(c, [8192, 6144])
    check(r.status == 200, "a plan within the budget: HTTP %d %r" % (r.status, r.body[:200]))
    check(float(hsys.decode_infer_response(r)["y"]) == 8192.0 * 6144, "the outlier's sum is wrong")
    grown = srv.rss_bytes()
    check(grown > rss0 + 128 * mib, "the outlier did not grow RSS (%d -> %d MiB): the test measures nothing"
          % (rss0 // mib, grown // mib))
    check(infer_s(c, [2, 3]).status == 200, "a small request after the outlier failed")
    after = srv.rss_bytes()
    check(after < grown - 128 * mib, "the arena did not shrink back after the outlier (%d -> %d MiB)"
          % (grown // mib, after // mib))
    m = hsys.Metrics(c.get("/metrics").body.decode())
    errs = m.get("hotserve_requests_total", model="cos", outcome="server_error")
    check(errs == 0, "shape refusals counted as server errors: %s" % errs)
    cl = m.get("hotserve_requests_total", model="cos", outcome="client_error")
    check(cl >= 4, "shape refusals not counted as client errors: %s" % cl)
    srv.stop()


def test_planned_admission(tmp):
    """Class 4: the sessions' planned memory is admitted before it is allocated."""
    repo = os.path.join(tmp, "planned")
    mib = 1 << 20
    huge = os.path.join(repo, "huge", "1", "model.onnx")
    huge_static_model(huge, 16384)  # 1 GiB of scratch per session
    check(os.path.getsize(huge) < 400, "the huge model is %d bytes, not tiny" % os.path.getsize(huge))
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    for _ in range(2):  # and again after a restart
        srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--memory-limit", 768 * mib,
                          "--max-request-memory", 4096 * mib)
        c = srv.conn()
        hsys.wait_serving(c, "add", 1)
        hsys.wait_for(lambda: any(e.get("state") == "failed" for e in hsys.status_entries(c, "huge")),
                      "the huge model to be refused")
        st = [e for e in hsys.status_entries(c, "huge") if e.get("state") == "failed"][0]
        check(st.get("reason") == "no_memory", "refused for %r, not no_memory: %r" % (st.get("reason"), st))
        check(srv.rss_bytes() < 512 * mib, "the refused model still grew the server to %d MiB"
              % (srv.rss_bytes() // mib))
        check(c.get("/v2/health/ready").status == 200, "not ready beside a refused model")
        srv.stop()


def test_planned_admission_cgroup(tmp):
    """Class 4 under a real memory limit: the server runs inside a 768 MiB memory cgroup this test
    creates, with no --memory-limit: it reads the group's limit and refuses the 300-byte model that
    plans 1 GiB per session (no_memory) instead of being OOM-killed, and stays ready. Raises
    hsys.Skip where no group can be made."""
    repo = os.path.join(tmp, "planned_cg")
    mib = 1 << 20
    huge_static_model(os.path.join(repo, "huge", "1", "model.onnx"), 16384)
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    group = hsys.MemoryCgroup("admission", 768 * mib)
    try:
        srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--max-request-memory", 4096 * mib,
                          cgroup=group)
        c = srv.conn()
        hsys.wait_serving(c, "add", 1)
        hsys.wait_for(lambda: any(e.get("state") == "failed" for e in hsys.status_entries(c, "huge")),
                      "the huge model to be refused inside the cgroup")
        st = [e for e in hsys.status_entries(c, "huge") if e.get("state") == "failed"][0]
        check(st.get("reason") == "no_memory", "inside the cgroup: refused for %r, not no_memory: %r"
              % (st.get("reason"), st))
        check(c.get("/v2/health/ready").status == 200, "not ready beside a refused model (cgroup)")
        r, out, _ = c.infer("add", np.ones((1, 4), np.float32))
        check(r.status == 200, "the other model does not answer inside the cgroup: HTTP %d" % r.status)
        srv.stop()
    finally:
        group.remove()


def test_request_budget_cgroup(tmp):
    """Class 3 under a real memory limit: inside a 1 GiB memory cgroup this test creates, with neither
    --memory-limit nor --max-request-memory, the per-request budget is the default derived from the
    group's limit (a quarter: 256 MiB). A plan of 512 MiB answers 413 naming exactly that budget and
    grows nothing; one of 192 MiB runs (the server is not OOM-killed) and its arena shrinks back.
    Raises hsys.Skip where no group can be made."""
    repo = os.path.join(tmp, "budget_cg")
    shape_model(os.path.join(repo, "cos", "1", "model.onnx"))
    mib = 1 << 20
    limit = 1024 * mib
    group = hsys.MemoryCgroup("budget", limit)
    try:
        srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", "--instances", 1, cgroup=group)
        c = srv.conn()
        hsys.wait_serving(c, "cos", 1)
        check(infer_s(c, [2, 3]).status == 200, "a small request inside the cgroup failed")
        rss0 = srv.rss_bytes()
        r = infer_s(c, [16384, 8192])  # 512 MiB of scratch
        expect_status(r, 413, "a 512 MiB plan inside a 1 GiB cgroup", "per-request budget of %d bytes" % (limit // 4))
        check(srv.rss_bytes() < rss0 + 64 * mib, "a refused plan still grew the server by %d MiB"
              % ((srv.rss_bytes() - rss0) // mib))
        r = infer_s(c, [8192, 6144])  # 192 MiB: within the derived budget
        check(r.status == 200, "a 192 MiB plan inside the cgroup: HTTP %d %r" % (r.status, r.body[:200]))
        check(float(hsys.decode_infer_response(r)["y"]) == 8192.0 * 6144, "the outlier's sum is wrong")
        grown = srv.rss_bytes()
        check(grown > rss0 + 128 * mib, "the outlier did not grow RSS (%d -> %d MiB): the test measures nothing"
              % (rss0 // mib, grown // mib))
        check(infer_s(c, [2, 3]).status == 200, "a small request after the outlier failed")
        check(srv.rss_bytes() < grown - 128 * mib, "the arena did not shrink back inside the cgroup (%d -> %d MiB)"
              % (grown // mib, srv.rss_bytes() // mib))
        check(c.get("/v2/health/ready").status == 200, "not ready after the budget checks inside the cgroup")
        srv.stop()  # checks exit status 0: not OOM-killed
    finally:
        group.remove()


def test_shutdown_during_load(tmp):
    """SIGTERM while a long warm-up runs: the server exits (0) without waiting for the whole load."""
    import signal
    import time
    repo = os.path.join(tmp, "longload")
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    hsys.make_version_src(os.path.join(repo, "slow", "1"), 1, slow=3000)
    # thousands of warm-up runs of a slow model: a load of many minutes
    hsys.write_file(os.path.join(repo, "slow", "config.json"), b'{"warmup": {"runs": 1000}, "instances": 1}')
    srv = hsys.Server(repo, "--settle", "0.1", "--poll-interval", "0.2", wait_ready=False)
    c = srv.conn()
    def loading():
        r = c.get("/v2/models/slow/status")
        return r.status == 200 and any(e.get("state") == "loading" for e in r.json().get("versions", []))

    hsys.wait_for(loading, "the slow model's load to start", timeout=60)
    time.sleep(5)  # usually into its warm-up runs
    t0 = time.monotonic()
    srv.stop(timeout=60)  # checks exit status 0
    waited = time.monotonic() - t0
    # stopped between two stages of the load, or left inside one after the bounded wait
    check(srv.log_matching(r"exiting without waiting for it|failed: shutting_down"),
          "the server did not stop the load (%.1f s)" % waited + srv._tail())
    check(not srv.log_matching(r"model slow version 1 ready"), "the long load finished: it was not long enough")


def test(tmp, args):
    hsys.require("serve")
    if args.part == "cgroup":
        test_planned_admission_cgroup(tmp)
        test_request_budget_cgroup(tmp)
        return
    test_golden_inf_nan(tmp)
    test_long_names(tmp)
    test_restart_fallback(tmp)
    test_request_shapes(tmp)
    test_planned_admission(tmp)
    test_shutdown_during_load(tmp)


if __name__ == "__main__":
    hsys.main(test, __doc__, extra=lambda p: p.add_argument(
        "--part", choices=("main", "cgroup"), default="main",
        help="cgroup: classes 3 and 4 inside memory cgroups the test creates (exit 77 where none can be made)"))
