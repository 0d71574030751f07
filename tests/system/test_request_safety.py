#!/usr/bin/python3
"""test_request_safety.py - hostile requests get clear 4xx JSON errors and never hurt the server.

Oversized body (413), malformed JSON, bad binary headers, wrong dtype/shape/name (the message names
the input), unknown model/version (404), overflowing and negative shapes; then a parallel flood of
bad requests while good requests keep getting correct answers; metrics count client errors; the
server still exits 0 on SIGTERM.
"""
import os
import threading

import numpy as np

import hsys
from hsys import check

MAX_BODY = 65536


def expect_error(r, statuses, what, names=None):
    check(r.status in statuses, "%s: HTTP %d, wanted %s: %r" % (what, r.status, statuses, r.body[:300]))
    doc = r.json()
    check(isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"],
          "%s: error body is not {\"error\": \"...\"}: %r" % (what, r.body[:300]))
    if names:
        check(names in doc["error"], "%s: error message %r does not name %r" % (what, doc["error"], names))
    return doc["error"]


def bad_requests():
    """(what, body, headers, allowed statuses, text the message must contain) aimed at model add."""
    x = [1.0, 2.0, 3.0, 4.0]
    ok_input = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x}

    def j(doc):
        return json_bytes(doc)

    reqs = [
        ("malformed JSON", b'{"inputs": [{"name": "x", ', {}, (400,), None),
        ("JSON not an object", b'[1, 2, 3]', {}, (400,), None),
        ("no inputs", j({"id": "a"}), {}, (400,), None),
        ("wrong dtype", j({"inputs": [dict(ok_input, datatype="INT64", data=[1, 2, 3, 4])]}), {}, (400,), "x"),
        ("unknown dtype", j({"inputs": [dict(ok_input, datatype="FP128")]}), {}, (400,), "x"),
        ("wrong shape", j({"inputs": [dict(ok_input, shape=[1, 5], data=x + [5.0])]}), {}, (400,), "x"),
        ("data count differs from shape", j({"inputs": [dict(ok_input, data=x[:3])]}), {}, (400,), "x"),
        ("data not numbers", j({"inputs": [dict(ok_input, data=["a", "b", "c", "d"])]}), {}, (400,), "x"),
        ("negative dimension", j({"inputs": [dict(ok_input, shape=[-1, 4])]}), {}, (400,), "x"),
        ("overflowing shape", j({"inputs": [dict(ok_input, shape=[2 ** 62, 2 ** 62])]}), {}, (400, 413), "x"),
        ("huge dimension", j({"inputs": [dict(ok_input, shape=[9223372036854775807, 4])]}), {}, (400, 413), "x"),
        ("unknown input name", j({"inputs": [dict(ok_input, name="zz")]}), {}, (400,), "zz"),
        ("missing input", j({"inputs": []}), {}, (400,), "x"),
        ("duplicate input", j({"inputs": [ok_input, ok_input]}), {}, (400,), "x"),
        ("binary header past the body", b'{"inputs":[]}',
         {"Inference-Header-Content-Length": "4096"}, (400,), None),
        ("binary header length not a number", b'{"inputs":[]}',
         {"Inference-Header-Content-Length": "abc"}, (400,), None),
        ("binary header negative", b'{"inputs":[]}',
         {"Inference-Header-Content-Length": "-5"}, (400,), None),
    ]
    # binary_data_size that disagrees with the shape, and one that runs past the body
    hdr = json_bytes({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 12}}]})
    reqs.append(("binary size disagrees with shape", hdr + b"\0" * 12,
                 {"Inference-Header-Content-Length": str(len(hdr))}, (400,), "x"))
    hdr = json_bytes({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 16}}]})
    reqs.append(("binary data shorter than declared", hdr + b"\0" * 8,
                 {"Inference-Header-Content-Length": str(len(hdr))}, (400,), "x"))
    hdr = json_bytes({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 2 ** 63 - 1}}]})
    reqs.append(("binary size overflowing", hdr + b"\0" * 16,
                 {"Inference-Header-Content-Length": str(len(hdr))}, (400, 413), "x"))
    return reqs


def json_bytes(doc):
    import json
    return json.dumps(doc).encode()


def body_for(req):
    what, body, headers, statuses, names = req
    h = {"Content-Type": "application/octet-stream" if "Inference-Header-Content-Length" in headers
         else "application/json"}
    h.update(headers)
    return body, h


def test(tmp, args):
    hsys.require("serve")
    repo = os.path.join(tmp, "repo")
    hsys.make_version_src(os.path.join(repo, "add", "1"), 1)
    srv = hsys.Server(repo, "--max-body-bytes", MAX_BODY, "--settle", "0.1", "--poll-interval", "0.2")
    c = srv.conn()
    hsys.wait_serving(c, "add", 1)

    x = np.array([[0.5, -1.0, 2.0, 3.25]], dtype=np.float32)
    r, out, _ = c.infer("add", x)
    check(r.status == 200, "good JSON request: HTTP %d %r" % (r.status, r.body[:300]))
    hsys.expect_values(out, x, 1, "good JSON request")
    check(out[""].get("model_name") == "add" and out[""].get("model_version") == "1",
          "response names model %r version %r" % (out[""].get("model_name"), out[""].get("model_version")))
    r, out, _ = c.infer("add", x, binary=True)
    check(r.status == 200, "good binary request: HTTP %d %r" % (r.status, r.body[:300]))
    check(r.header("Inference-Header-Content-Length") is not None, "binary response lacks its header length")
    hsys.expect_values(out, x, 1, "good binary request")
    r = c.post_json("/v2/models/add/infer", {"id": "nested-1", "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [[0.5, -1.0, 2.0, 3.25]]}]})
    check(r.status == 200, "nested data: HTTP %d %r" % (r.status, r.body[:300]))
    out = hsys.decode_infer_response(r)
    hsys.expect_values(out, x, 1, "nested data")
    check(out[""].get("id") == "nested-1", "response does not echo the request id: %r" % out[""].get("id"))

    # one of each refusal, on a fresh connection each (the server may close after an error)
    n_bad_add = 0
    for req in bad_requests():
        body, h = body_for(req)
        cc = srv.conn()
        r = cc.request("POST", "/v2/models/add/infer", body, h)
        expect_error(r, req[3], req[0], req[4])
        cc.close()
        n_bad_add += 1

    cc = srv.conn()
    r = cc.request("POST", "/v2/models/add/infer", b"[" + b"1.0," * (MAX_BODY // 4) + b"1.0]")
    expect_error(r, (413,), "oversized body")
    cc.close()
    n_bad_add += 1

    cc = srv.conn()
    expect_error(cc.infer("nosuchmodel", x)[0], (404,), "unknown model", "nosuchmodel")
    expect_error(cc.infer("add", x, version=7)[0], (404,), "unknown version")
    expect_error(cc.infer("add", x, version="abc")[0], (400, 404), "non-numeric version")
    expect_error(cc.get("/v2/models/nosuchmodel"), (404,), "metadata of an unknown model")
    cc.close()

    # a flood of bad requests in parallel; good requests on their own connections keep working
    stop = threading.Event()
    errors = []
    counts = {"good": 0, "bad": 0}
    lock = threading.Lock()
    reqs = bad_requests()

    def bad_worker(i):
        k = i
        try:
            while not stop.is_set():
                req = reqs[k % len(reqs)]
                k += 1
                body, h = body_for(req)
                cc = srv.conn()
                r = cc.request("POST", "/v2/models/add/infer", body, h)
                cc.close()
                if r.status not in req[3]:
                    errors.append("flood %s: HTTP %d" % (req[0], r.status))
                    return
                with lock:
                    counts["bad"] += 1
        except Exception as e:  # a dropped connection is a failure too
            errors.append("flood worker: %r" % e)

    def good_worker(i):
        cc = srv.conn()
        rng = np.random.default_rng(i)
        try:
            while not stop.is_set():
                xi = rng.standard_normal((1, 4)).astype(np.float32)
                r, out, _ = cc.infer("add", xi, binary=bool(i % 2))
                if r.status != 200:
                    errors.append("good request during flood: HTTP %d %r" % (r.status, r.body[:200]))
                    return
                hsys.expect_values(out, xi, 1, "good request during flood")
                with lock:
                    counts["good"] += 1
        except Exception as e:
            errors.append("good worker: %r" % e)

    threads = [threading.Thread(target=bad_worker, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=good_worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    stop.wait(4)
    stop.set()
    for t in threads:
        t.join(60)
    check(not errors, "during the flood: %s" % "; ".join(errors[:5]))
    check(counts["good"] > 0 and counts["bad"] > 0, "flood made no progress: %r" % counts)
    n_bad_add += counts["bad"]

    m = c.metrics()
    ce = m.get("hotserve_requests_total", model="add", outcome="client_error")
    check(ce >= n_bad_add, "hotserve_requests_total{model=add,outcome=client_error} = %g, but %d bad requests"
          % (ce, n_bad_add))
    ok = m.get("hotserve_requests_total", model="add", outcome="success")
    check(ok >= counts["good"] + 3, "hotserve_requests_total{outcome=success} = %g < %d" % (ok, counts["good"] + 3))
    r, out, _ = c.infer("add", x)
    check(r.status == 200, "after the flood: HTTP %d" % r.status)
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)
