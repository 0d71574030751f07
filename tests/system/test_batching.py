#!/usr/bin/python3
"""test_batching.py - dynamic batching through a real server: each client gets exactly its own outputs.

Models (built here with onnx): "bat" (x [N,W] -> y = x + 1, s = row sums of x) with dynamic batching
(max_batch_size 8, preferred 4 and 8, a long delay so concurrent requests surely meet), "ref" the
same model without batching (the unbatched reference), "gat" (x [N,4], idx [N] -> y = x + 1,
z = rows idx of a table) with batching, where an index out of range fails the run at run time,
and two models whose config the server must refuse: a fixed first dimension, and a preferred size
over max_batch_size. Asserts:
- 16 concurrent clients with mixed trailing shapes ([r,4] and [r,6], r = 1 or 2), JSON and binary,
  get exactly the answers of the unbatched model for their own inputs;
- hotserve_batch_size shows runs of more than one row, and the trace's request lines carry the
  batch size (> 1 for some "bat" requests, 1 for every "ref" request) and a queue time;
- a bad request in a batch fails alone with its own error (400 naming the index) while the requests
  batched with it succeed, and the retry is counted (hotserve_batch_retries_total);
- the refused configs are reported (fixed dimension: version failed with reason bad_config; preferred
  size over the maximum: config.json refused, named in the log) and nothing of them is served.
"""
import json
import os
import threading

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import hsys
from hsys import check

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4) * 0.5


def rowsum_model(add, fixed_batch=False):
    """x [N,W] -> y = x + add, s = sum over W (keepdims): every output row depends on its input row only."""
    n = 1 if fixed_batch else "N"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, "W"])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT, [n, 1])
    inits = [numpy_helper.from_array(np.array([add], dtype=np.float32), "k"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    nodes = [helper.make_node("Add", ["x", "k"], ["y"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=1)]
    g = helper.make_graph(nodes, "rowsum", [x], [y, s], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="hotserve-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def gather_model(add):
    """x [N,4], idx [N] int64 -> y = x + add, z = TABLE[idx] (an index outside 0..9 fails the run)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.array([add], dtype=np.float32), "k"), numpy_helper.from_array(TABLE, "table")]
    nodes = [helper.make_node("Add", ["x", "k"], ["y"]), helper.make_node("Gather", ["table", "idx"], ["z"], axis=0)]
    g = helper.make_graph(nodes, "gather", [x, idx], [y, z], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="hotserve-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


def put(repo, name, version, model, config=None):
    hsys.write_file(os.path.join(repo, name, str(version), "model.onnx"), model)
    if config is not None:
        hsys.write_file(os.path.join(repo, name, "config.json"), json.dumps(config).encode())


def batching(max_batch, preferred, delay_us):
    return {"max_batch_size": max_batch,
            "dynamic_batching": {"preferred_batch_size": preferred, "max_queue_delay_microseconds": delay_us}}


def infer_multi(c, model, inputs, binary):
    """inputs: list of (name, ndarray). Returns (Response, outputs)."""
    kt = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    path = c.infer_path(model)
    if not binary:
        doc = {"inputs": [{"name": n, "datatype": kt[a.dtype], "shape": list(a.shape), "data": a.ravel().tolist()}
                          for n, a in inputs]}
        r = c.post_json(path, doc)
    else:
        raws = [np.ascontiguousarray(a).tobytes() for _, a in inputs]
        hdr = json.dumps({"inputs": [{"name": n, "datatype": kt[a.dtype], "shape": list(a.shape),
                                      "parameters": {"binary_data_size": len(raw)}}
                                     for (n, a), raw in zip(inputs, raws)],
                          "parameters": {"binary_data_output": True}}).encode()
        r = c.request("POST", path, hdr + b"".join(raws), {"Content-Type": "application/octet-stream",
                                                            "Inference-Header-Content-Length": str(len(hdr))})
    return r, (hsys.decode_infer_response(r) if r.status == 200 else None)


def run_concurrently(n, fn, timeout=120):
    """Runs fn(i, barrier) on n threads started together; returns the errors they reported."""
    errors = []
    barrier = threading.Barrier(n, timeout=timeout)

    def body(i):
        try:
            fn(i, barrier)
        except hsys.TestFailure as e:
            errors.append(str(e))
        except Exception as e:  # a dropped connection or a broken barrier is a failure too
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * hsys.slow_factor())
    check(not any(t.is_alive() for t in threads), "a client thread did not finish")
    return errors


def test(tmp, args):
    hsys.require("serve")
    repo = os.path.join(tmp, "repo")
    put(repo, "bat", 1, rowsum_model(1.0), batching(8, [4, 8], 100000))
    put(repo, "ref", 1, rowsum_model(1.0))
    put(repo, "gat", 1, gather_model(1.0), batching(8, [8], 200000))
    put(repo, "fixed", 1, rowsum_model(1.0, fixed_batch=True), batching(8, [4], 500))
    put(repo, "badcfg", 1, rowsum_model(1.0), batching(8, [4, 16], 500))
    trace = os.path.join(tmp, "trace.jsonl")
    srv = hsys.Server(repo, "--instances", "2", "--trace", trace)
    ctl = srv.conn()
    for name in ("bat", "ref", "gat"):
        hsys.wait_serving(ctl, name, 1)

    # --- the model config endpoint says what batching does (Triton's meaning: dims without the batch) --
    cfg = ctl.get_json("/v2/models/bat/config")
    check(cfg.get("max_batch_size") == 8 and
          cfg.get("dynamic_batching") == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100000},
          "bat's config: %r" % cfg)
    check([(t["name"], t["dims"]) for t in cfg["input"]] == [("x", [-1])] and
          [(t["name"], t["dims"]) for t in cfg["output"]] == [("y", [-1]), ("s", [1])],
          "bat's config dims should leave out the batch dimension: %r" % cfg)
    cfg = ctl.get_json("/v2/models/ref/config")
    check(cfg.get("max_batch_size") == 0 and "dynamic_batching" not in cfg and cfg["input"][0]["dims"] == [-1, -1],
          "ref's config (no batching): %r" % cfg)

    # --- refused configs ------------------------------------------------------------------------
    fixed = hsys.wait_for(lambda: [e for e in hsys.status_entries(ctl, "fixed") if e.get("state") == "failed"],
                          "model fixed's version to be refused")
    check(fixed[0].get("reason") == "bad_config" and "fixed first dimension" in fixed[0].get("error", ""),
          "a fixed batch dimension with dynamic_batching: status %r" % fixed[0])
    srv.wait_log(r"model badcfg: config.json refused.*preferred_batch_size\[1\].*max_batch_size \(8\)",
                 "the log to name the preferred size over max_batch_size")
    for name in ("fixed", "badcfg"):
        r, _ = infer_multi(ctl, name, [("x", np.ones((1, 4), np.float32))], False)
        check(r.status == 503, "model %s with a refused batching config answered HTTP %d" % (name, r.status))

    # --- concurrent clients, mixed trailing shapes: each gets its own answer -----------------------
    rounds, clients = 6, 16
    answered = [0] * clients

    def client(i, barrier):
        c = srv.conn()
        rng = np.random.default_rng(1000 + i)
        try:
            for k in range(rounds):
                w = 4 if (i + k) % 3 else 6
                rows = 2 if (i + k) % 5 == 0 else 1
                x = rng.standard_normal((rows, w)).astype(np.float32)
                binary = (i + k) % 2 == 1
                barrier.wait()
                r, out = infer_multi(c, "bat", [("x", x)], binary)
                what = "client %d round %d (x %s, %s)" % (i, k, x.shape, "binary" if binary else "json")
                check(r.status == 200, "%s: HTTP %d %r" % (what, r.status, r.body[:200]))
                r2, ref = infer_multi(c, "ref", [("x", x)], binary)
                check(r2.status == 200, "%s on ref: HTTP %d" % (what, r2.status))
                for name in ("y", "s"):
                    check(out[name].shape == ref[name].shape and np.array_equal(out[name], ref[name]),
                          "%s: output %s %s differs from the unbatched model's %s" %
                          (what, name, out[name].ravel()[:6], ref[name].ravel()[:6]))
                check(np.allclose(out["y"], x + 1, atol=1e-6) and np.allclose(out["s"], x.sum(1, keepdims=True),
                                                                              atol=1e-4),
                      "%s: outputs are not this request's (y %s for x %s)" % (what, out["y"].ravel()[:4],
                                                                            x.ravel()[:4]))
                answered[i] += 1
        finally:
            c.close()

    errors = run_concurrently(clients, client)
    check(not errors, "%d client(s) failed; first: %s" % (len(errors), "; ".join(errors[:3])))
    check(sum(answered) == rounds * clients, "answered %d of %d" % (sum(answered), rounds * clients))

    m = ctl.metrics()
    runs = m.get("hotserve_batch_size_count", model="bat")
    single = m.get("hotserve_batch_size_bucket", model="bat", le="1")
    rows = m.get("hotserve_batch_size_sum", model="bat")
    print("bat: %d requests in %d runs (%d of one row), mean batch %.2f rows" %
          (sum(answered), runs, single, rows / runs if runs else 0))
    total_rows = sum(2 if (i + k) % 5 == 0 else 1 for i in range(clients) for k in range(rounds))
    check(rows == total_rows, "hotserve_batch_size_sum is %g, the clients sent %d rows" % (rows, total_rows))
    check(runs > single, "no run of model bat had more than one row under 16 concurrent clients")
    check(m.get("hotserve_batch_size_count", model="ref") == 0, "model ref (no batching) counted batches")
    check(m.get("hotserve_requests_total", model="bat", outcome="success") == rounds * clients,
          "requests_total for bat != %d" % (rounds * clients))

    # --- one bad request in a batch fails alone ----------------------------------------------------
    bad_rounds, gclients = 4, 8
    bad_seen = []

    def gclient(i, barrier):
        c = srv.conn()
        rng = np.random.default_rng(2000 + i)
        try:
            for k in range(bad_rounds):
                x = rng.standard_normal((1, 4)).astype(np.float32)
                bad = i == k % gclients
                idx = np.array([99 if bad else (i + k) % 10], dtype=np.int64)
                barrier.wait()
                r, out = infer_multi(c, "gat", [("x", x), ("idx", idx)], binary=(k % 2 == 1))
                what = "gat client %d round %d (%s)" % (i, k, "bad" if bad else "good")
                if bad:
                    check(r.status == 400 and b"index 99 out of range" in r.body,
                          "%s: HTTP %d %r, wanted 400 naming index 99" % (what, r.status, r.body[:200]))
                    bad_seen.append(k)
                    continue
                check(r.status == 200, "%s: HTTP %d %r (a bad request in its batch failed it?)" %
                      (what, r.status, r.body[:200]))
                check(np.allclose(out["y"], x + 1, atol=1e-6) and np.array_equal(out["z"], TABLE[idx]),
                      "%s: outputs are not this request's" % what)
        finally:
            c.close()

    errors = run_concurrently(gclients, gclient)
    check(not errors, "%d gat client(s) failed; first: %s" % (len(errors), "; ".join(errors[:3])))
    check(len(bad_seen) == bad_rounds, "bad requests answered: %r" % bad_seen)
    m = ctl.metrics()
    retries = m.get("hotserve_batch_retries_total", model="gat")
    print("gat: %g batches retried one by one" % retries)
    check(retries >= 1, "no batch of model gat failed and was retried: the bad requests never shared a batch")
    check(m.get("hotserve_requests_total", model="gat", outcome="client_error") == bad_rounds,
          "client errors counted for gat != %d" % bad_rounds)
    check(m.get("hotserve_requests_total", model="gat", outcome="success") == bad_rounds * (gclients - 1),
          "successes counted for gat != %d" % (bad_rounds * (gclients - 1)))
    ctl.close()
    srv.stop()

    # --- the trace names each request's batch size and queue time -----------------------------------
    with open(trace) as f:
        reqs = [e for e in map(json.loads, f) if e.get("ev") == "request"]
    bat = [e for e in reqs if e["model"] == "bat" and e["outcome"] == "success"]
    ref = [e for e in reqs if e["model"] == "ref" and e["outcome"] == "success"]
    check(len(bat) == rounds * clients and len(ref) == rounds * clients, "trace has %d bat and %d ref requests"
          % (len(bat), len(ref)))
    check(all(e["batch"] == 1 for e in ref), "an unbatched model's trace line has batch != 1")
    check(all(1 <= e["batch"] <= 8 for e in bat), "a bat trace line's batch is outside 1..8")
    check(any(e["batch"] > 1 for e in bat), "no bat request's trace line shows a batch > 1")
    check(all(e["queue_ns"] + e["compute_ns"] <= e["total_ns"] for e in bat), "queue + compute > total in a bat line")


if __name__ == "__main__":
    hsys.main(test, __doc__)
