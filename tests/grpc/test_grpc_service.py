#!/usr/bin/python3
"""test_grpc_service.py - every RPC of inference.GRPCInferenceService against a real `hotserve serve
--grpc-port 0`, with an independent client (python3-grpcio, stubs generated now from proto/).

Covers: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelInfer with typed contents
and raw_input_contents for every datatype hotserve serves (FP16 raw only), the reply form (raw for raw
requests, typed for typed ones, binary_data_output to choose), request ids, version pinning, and each
status code: NOT_FOUND (unknown model, version not loaded), INVALID_ARGUMENT (bad tensors, malformed
messages and versions, unsupported parameters), RESOURCE_EXHAUSTED (message size, input count, element
limits), UNAVAILABLE (a model with no version serving), UNIMPLEMENTED (other methods). Also: gRPC requests
land in the shared per-model metrics, the gRPC counter and the trace, and SIGTERM lets a call in flight
finish before the server exits 0.
"""
import json
import os
import threading
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

import grpc_client
import hsys
from grpc_client import grpc
from hsys import check

# (KServe datatype, numpy type, ONNX type, typed contents field)
DTYPES = [("FP32", np.float32, TensorProto.FLOAT, "fp32_contents"),
          ("FP64", np.float64, TensorProto.DOUBLE, "fp64_contents"),
          ("INT64", np.int64, TensorProto.INT64, "int64_contents"),
          ("INT32", np.int32, TensorProto.INT32, "int_contents"),
          ("INT16", np.int16, TensorProto.INT16, "int_contents"),
          ("INT8", np.int8, TensorProto.INT8, "int_contents"),
          ("UINT8", np.uint8, TensorProto.UINT8, "uint_contents"),
          ("BOOL", np.bool_, TensorProto.BOOL, "bool_contents"),
          ("FP16", np.float16, TensorProto.FLOAT16, None)]
SHAPE = [2, 3]


def multi_model(with_fp16=True):
    """One model with an input per datatype, each copied to an output (Identity): in_FP32 -> out_FP32..."""
    nodes, ins, outs = [], [], []
    for name, _, onnx_t, field in DTYPES:
        if field is None and not with_fp16:
            continue
        ins.append(helper.make_tensor_value_info("in_" + name, onnx_t, SHAPE))
        outs.append(helper.make_tensor_value_info("out_" + name, onnx_t, SHAPE))
        nodes.append(helper.make_node("Identity", ["in_" + name], ["out_" + name]))
    g = helper.make_graph(nodes, "multi", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m.SerializeToString()


def sample(np_t, seed):
    rng = np.random.default_rng(seed)
    if np_t == np.bool_:
        return rng.integers(0, 2, SHAPE).astype(np.bool_)
    if np.issubdtype(np_t, np.integer):
        info = np.iinfo(np_t)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), SHAPE, endpoint=True).astype(np_t)
    return rng.standard_normal(SHAPE).astype(np_t)


def expect_code(fn, code, what, contains=None):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, "%s: status %s (%s), wanted %s" % (what, e.code(), e.details(), code))
        if contains:
            check(contains in (e.details() or ""), "%s: details %r do not name %r" % (what, e.details(), contains))
        return e
    raise hsys.TestFailure("%s: succeeded, wanted %s" % (what, code))


def test(tmp, args):
    hsys.require("serve", "publish")
    pb, pbg = grpc_client.load_stubs(hsys.Env.source, tmp)
    T = pb.ModelInferRequest.InferInputTensor
    Out = pb.ModelInferRequest.InferRequestedOutputTensor
    repo = os.path.join(tmp, "repo")
    for k in (1, 2):
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "add%d" % k), k), os.path.join(repo, "add"), k)
    with open(os.path.join(repo, "add", "config.json"), "w") as f:
        json.dump({"version_policy": {"all": {}}}, f)
    hsys.write_file(os.path.join(tmp, "src", "multi", "model.onnx"), multi_model())
    hsys.publish(os.path.join(tmp, "src", "multi"), os.path.join(repo, "multi"), 1)
    hsys.write_file(os.path.join(tmp, "src", "typed", "model.onnx"), multi_model(with_fp16=False))
    hsys.publish(os.path.join(tmp, "src", "typed"), os.path.join(repo, "typed"), 1)
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "slow"), 5, slow=1), os.path.join(repo, "slow"), 1)
    hsys.write_file(os.path.join(tmp, "src", "broken", "model.onnx"), b"not an onnx model at all")
    hsys.publish(os.path.join(tmp, "src", "broken"), os.path.join(repo, "broken"), 1)
    trace = os.path.join(tmp, "trace.jsonl")
    max_body = 1 << 20
    srv = hsys.Server(repo, "--grpc-port", "0", "--settle", "0", "--max-body-bytes", max_body, "--trace", trace)
    target = grpc_client.grpc_target(srv)
    check(target.startswith("127.0.0.1:"), "gRPC listens on %s, wanted loopback" % target)
    ch = grpc_client.channel(target)
    st = pbg.GRPCInferenceServiceStub(ch)
    ctl = srv.conn()
    hsys.wait_serving(ctl, "add", 2)
    hsys.wait_serving(ctl, "multi", 1)
    hsys.wait_serving(ctl, "typed", 1)

    # ---- health and metadata
    check(st.ServerLive(pb.ServerLiveRequest()).live is True, "ServerLive: not live")
    # "broken" has a complete version on disk that failed to load: a model that never served does not
    # take a ready server out of rotation (docs/SERVING.md, readiness); ServerReady agrees with HTTP
    check(ctl.get("/v2/health/ready").status == 200, "HTTP not ready because of a failed new model")
    check(st.ServerReady(pb.ServerReadyRequest()).ready is True, "ServerReady: not ready because of a failed new model")
    md = st.ServerMetadata(pb.ServerMetadataRequest())
    check(md.name == "hotserve" and md.version, "ServerMetadata: %r" % md)
    check(st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "ModelReady add: not ready")
    check(st.ModelReady(pb.ModelReadyRequest(name="add", version="1")).ready, "ModelReady add v1: not ready")
    check(not st.ModelReady(pb.ModelReadyRequest(name="add", version="7")).ready, "ModelReady add v7: ready")
    check(not st.ModelReady(pb.ModelReadyRequest(name="broken")).ready, "ModelReady broken: ready")
    expect_code(lambda: st.ModelReady(pb.ModelReadyRequest(name="nope")), grpc.StatusCode.NOT_FOUND, "ModelReady nope")
    expect_code(lambda: st.ModelReady(pb.ModelReadyRequest(name="add", version="x1")),
                grpc.StatusCode.INVALID_ARGUMENT, "ModelReady version x1")
    mm = st.ModelMetadata(pb.ModelMetadataRequest(name="add"))
    check(mm.name == "add" and mm.platform == "onnx" and sorted(mm.versions) == ["1", "2"],
          "ModelMetadata add: %r" % mm)
    check([(t.name, t.datatype, list(t.shape)) for t in mm.inputs] == [("x", "FP32", [1, 4])] and
          [(t.name, t.datatype, list(t.shape)) for t in mm.outputs] == [("y", "FP32", [1, 4])],
          "ModelMetadata add tensors: %r" % mm)
    check(list(st.ModelMetadata(pb.ModelMetadataRequest(name="add", version="1")).versions) == ["1"],
          "ModelMetadata add v1: versions")
    mm = st.ModelMetadata(pb.ModelMetadataRequest(name="multi"))
    check([t.datatype for t in mm.inputs] == [d[0] for d in DTYPES], "ModelMetadata multi datatypes: %r" % mm)
    expect_code(lambda: st.ModelMetadata(pb.ModelMetadataRequest(name="nope")), grpc.StatusCode.NOT_FOUND,
                "ModelMetadata nope")
    expect_code(lambda: st.ModelMetadata(pb.ModelMetadataRequest(name="add", version="9")),
                grpc.StatusCode.NOT_FOUND, "ModelMetadata add v9")
    expect_code(lambda: st.ModelMetadata(pb.ModelMetadataRequest(name="broken")), grpc.StatusCode.UNAVAILABLE,
                "ModelMetadata broken")

    # ---- ModelInfer on add: raw and typed, ids, pinning
    x = np.array([[0.5, -1.0, 2.25, 7.0]], dtype=np.float32)
    n_ok = 0

    def infer_add(version="", raw=True, rid="", params=None):
        t = T(name="x", datatype="FP32", shape=[1, 4])
        rq = pb.ModelInferRequest(model_name="add", model_version=version, id=rid)
        if raw:
            rq.raw_input_contents.append(x.tobytes())
        else:
            t.contents.fp32_contents.extend(x.ravel().tolist())
        rq.inputs.append(t)
        for k, v in (params or {}).items():
            rq.parameters[k].bool_param = v
        return st.ModelInfer(rq)

    for raw in (True, False):
        for version, k in (("", 2), ("2", 2), ("1", 1)):
            r = infer_add(version, raw, rid="req-%s-%s" % (raw, version))
            n_ok += 1
            what = "ModelInfer add version %r %s" % (version, "raw" if raw else "typed")
            check(r.model_name == "add" and r.model_version == str(k), "%s: answered %s v%s" %
                  (what, r.model_name, r.model_version))
            check(r.id == "req-%s-%s" % (raw, version), "%s: id %r not echoed" % (what, r.id))
            check(len(r.outputs) == 1 and r.outputs[0].name == "y" and r.outputs[0].datatype == "FP32" and
                  list(r.outputs[0].shape) == [1, 4], "%s: outputs %r" % (what, r.outputs))
            if raw:
                check(len(r.raw_output_contents) == 1 and not r.outputs[0].HasField("contents"),
                      "%s: reply is not raw" % what)
                y = np.frombuffer(r.raw_output_contents[0], dtype=np.float32)
            else:
                check(len(r.raw_output_contents) == 0, "%s: reply is raw, wanted typed" % what)
                y = np.array(r.outputs[0].contents.fp32_contents, dtype=np.float32)
            check(np.array_equal(y, (x + np.float32(k)).ravel()), "%s: y = %s, wanted x + %d" % (what, y, k))
    r = infer_add(raw=True, params={"binary_data_output": False})
    n_ok += 1
    check(len(r.raw_output_contents) == 0 and len(r.outputs[0].contents.fp32_contents) == 4,
          "binary_data_output=false: reply not typed")
    r = infer_add(raw=False, params={"binary_data_output": True})
    n_ok += 1
    check(len(r.raw_output_contents) == 1, "binary_data_output=true: reply not raw")
    r = st.ModelInfer(pb.ModelInferRequest(model_name="add", inputs=[T(name="x", datatype="FP32", shape=[1, 4])],
                                           outputs=[Out(name="y")], raw_input_contents=[x.tobytes()]))
    n_ok += 1
    check([o.name for o in r.outputs] == ["y"], "requested output y: %r" % r.outputs)

    # ---- every datatype: raw through "multi" (FP16 included), typed through "typed" (no FP16: it has no
    # typed field), and the reply in either form
    def multi_request(model, raw, seed, outputs=()):
        rq = pb.ModelInferRequest(model_name=model, id="%s-%s" % (model, raw))
        data = {}
        for i, (name, np_t, _, field) in enumerate(DTYPES):
            if model == "typed" and field is None:
                continue
            data[name] = a = sample(np_t, seed + i)
            t = T(name="in_" + name, datatype=name, shape=SHAPE)
            if raw:
                rq.raw_input_contents.append(a.tobytes())
            else:
                getattr(t.contents, field).extend(a.ravel().tolist())
            rq.inputs.append(t)
        for o in outputs:
            rq.outputs.append(Out(name="out_" + o))
        return rq, data

    def reply_arrays(r, what):
        raw = len(r.raw_output_contents) > 0
        check(not raw or len(r.raw_output_contents) == len(r.outputs), "%s: %d raw for %d outputs" %
              (what, len(r.raw_output_contents), len(r.outputs)))
        got = {}
        for k, o in enumerate(r.outputs):
            name = o.name[len("out_"):]
            np_t, field = [(d[1], d[3]) for d in DTYPES if d[0] == name][0]
            check(o.datatype == name and list(o.shape) == SHAPE, "%s %s: %s %s" % (what, name, o.datatype, o.shape))
            if raw:
                check(not o.HasField("contents"), "%s %s: raw reply with typed contents" % (what, name))
                got[name] = np.frombuffer(r.raw_output_contents[k], dtype=np_t).reshape(SHAPE)
            else:
                got[name] = np.array(getattr(o.contents, field), dtype=np_t).reshape(SHAPE)
        return raw, got

    for model, raw in (("multi", True), ("typed", False), ("typed", True)):
        what = "%s %s" % (model, "raw" if raw else "typed")
        rq, data = multi_request(model, raw, 10)
        r = st.ModelInfer(rq)
        n_ok += 1
        check(r.id == rq.id, "%s: id %r" % (what, r.id))
        was_raw, got = reply_arrays(r, what)
        check(was_raw == raw, "%s: reply raw=%s, wanted the request's form" % (what, was_raw))
        check(sorted(got) == sorted(data), "%s: outputs %s" % (what, sorted(got)))
        for name in data:
            check(np.array_equal(got[name], data[name]), "%s %s: %s != %s" % (what, name, got[name], data[name]))
    # binary_data_output=false asks for typed contents, but an FP16 output has none: the reply stays raw
    rq, data = multi_request("multi", True, 20, outputs=("FP16", "INT8"))
    rq.parameters["binary_data_output"].bool_param = False
    raw, got = reply_arrays(st.ModelInfer(rq), "FP16 with binary_data_output=false")
    n_ok += 1
    check(raw and np.array_equal(got["FP16"], data["FP16"]) and np.array_equal(got["INT8"], data["INT8"]),
          "FP16 with binary_data_output=false: raw=%s" % raw)
    rq, data = multi_request("multi", True, 30, outputs=("INT16", "BOOL"))
    rq.parameters["binary_data_output"].bool_param = False
    raw, got = reply_arrays(st.ModelInfer(rq), "binary_data_output=false")
    n_ok += 1
    check(not raw and all(np.array_equal(got[n], data[n]) for n in ("INT16", "BOOL")) and len(got) == 2,
          "requested outputs INT16, BOOL typed: raw=%s, %s" % (raw, sorted(got)))
    # FP16 cannot come typed: the input is named, with the way to send it
    bad, _ = multi_request("typed", False, 40)
    t = T(name="in_FP16", datatype="FP16", shape=SHAPE)
    t.contents.fp32_contents.extend([0.0] * 6)
    bad.model_name = "multi"
    bad.inputs.append(t)
    expect_code(lambda: st.ModelInfer(bad), grpc.StatusCode.INVALID_ARGUMENT, "typed FP16", "raw_input_contents")

    # ---- INVALID_ARGUMENT
    IA = grpc.StatusCode.INVALID_ARGUMENT

    def add_req(**kw):
        rq = pb.ModelInferRequest(model_name="add")
        t = T(name=kw.get("name", "x"), datatype=kw.get("datatype", "FP32"), shape=kw.get("shape", [1, 4]))
        rq.inputs.append(t)
        if "raw" in kw:
            for b in kw["raw"]:
                rq.raw_input_contents.append(b)
        else:
            t.contents.fp32_contents.extend(kw.get("typed", [1.0, 2.0, 3.0, 4.0]))
        return rq

    cases = [
        ("wrong datatype", add_req(datatype="FP64", raw=[np.zeros(4).tobytes()]), "FP64"),
        ("unknown datatype", add_req(datatype="FLOAT", raw=[x.tobytes()]), "FLOAT"),
        ("wrong shape", add_req(shape=[2, 2], raw=[x.tobytes()]), "shape"),
        ("negative dimension", add_req(shape=[1, -4], raw=[x.tobytes()]), "negative"),
        ("raw size", add_req(raw=[x.tobytes()[:12]]), "12 bytes"),
        ("raw count", add_req(raw=[x.tobytes(), x.tobytes()]), "raw_input_contents"),
        ("typed count", add_req(typed=[1.0, 2.0, 3.0]), "fp32_contents"),
        ("unknown input", add_req(name="z", raw=[x.tobytes()]), "z"),
        ("no inputs", pb.ModelInferRequest(model_name="add"), "missing"),
        ("malformed version", pb.ModelInferRequest(model_name="add", model_version="01"), "01"),
    ]
    mixed = add_req(raw=[x.tobytes()])
    mixed.inputs[0].contents.fp32_contents.extend([1.0] * 4)
    cases.append(("raw and typed", mixed, "one or the other"))
    dup = add_req(raw=[x.tobytes(), x.tobytes()])
    dup.inputs.append(T(name="x", datatype="FP32", shape=[1, 4]))
    cases.append(("duplicate input", dup, "twice"))
    wrong_field = add_req(typed=[])
    wrong_field.inputs[0].contents.int_contents.extend([1, 2, 3, 4])
    cases.append(("typed field of another datatype", wrong_field, "fp32_contents"))
    rng_req, _ = multi_request("typed", False, 50)
    rng_req.inputs[5].contents.int_contents[2] = 300   # INT8 out of range
    cases.append(("INT8 out of range", rng_req, "out of range"))
    unknown_out = add_req(raw=[x.tobytes()])
    unknown_out.outputs.append(Out(name="nope"))
    cases.append(("unknown output", unknown_out, "nope"))
    p_req = add_req(raw=[x.tobytes()])
    p_req.parameters["sequence_id"].int64_param = 7
    cases.append(("unsupported request parameter", p_req, "sequence_id"))
    p_in = add_req(raw=[x.tobytes()])
    p_in.inputs[0].parameters["shared_memory_region"].string_param = "r0"
    cases.append(("unsupported input parameter", p_in, "shared_memory_region"))
    p_out = add_req(raw=[x.tobytes()])
    p_out.outputs.append(Out(name="y"))
    p_out.outputs[0].parameters["classification"].int64_param = 3
    cases.append(("unsupported output parameter", p_out, "classification"))
    for what, rq, needle in cases:
        expect_code(lambda: st.ModelInfer(rq), IA, what, needle)
    raw_call = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    expect_code(lambda: raw_call(b"\xff\xff\xff\xff"), IA, "malformed ModelInferRequest bytes")
    expect_code(lambda: ch.unary_unary("/inference.GRPCInferenceService/ModelStreamInfer")(b""),
                grpc.StatusCode.UNIMPLEMENTED, "unknown method")

    # ---- NOT_FOUND
    expect_code(lambda: st.ModelInfer(pb.ModelInferRequest(model_name="nope")), grpc.StatusCode.NOT_FOUND,
                "unknown model", "nope")
    expect_code(lambda: infer_add(version="3"), grpc.StatusCode.NOT_FOUND, "version 3 of add")

    # ---- RESOURCE_EXHAUSTED
    RE = grpc.StatusCode.RESOURCE_EXHAUSTED
    big = np.zeros(max_body // 4 + 16, dtype=np.float32)
    expect_code(lambda: st.ModelInfer(add_req(shape=[1, big.size], raw=[big.tobytes()])), RE,
                "message above --max-body-bytes")
    many = pb.ModelInferRequest(model_name="add")
    for i in range(65):
        many.inputs.append(T(name="x%d" % i, datatype="FP32", shape=[1]))
        many.raw_input_contents.append(b"\0\0\0\0")
    expect_code(lambda: st.ModelInfer(many), RE, "65 inputs")
    expect_code(lambda: st.ModelInfer(add_req(shape=[1 << 20, 1 << 20], raw=[b""])), RE, "2^40 elements")

    # ---- UNAVAILABLE
    expect_code(lambda: st.ModelInfer(pb.ModelInferRequest(model_name="broken", inputs=[T(name="x", datatype="FP32",
                shape=[1, 4])], raw_input_contents=[x.tobytes()])), grpc.StatusCode.UNAVAILABLE, "broken model")
    os.rename(os.path.join(repo, "broken", "1"), os.path.join(tmp, "broken-1"))
    hsys.rescan(ctl)
    check(ctl.get("/v2/health/ready").status == 200, "HTTP not ready once the failed version is gone")
    check(st.ServerReady(pb.ServerReadyRequest()).ready is True, "ServerReady: not ready once the failed version is gone")

    # ---- shared metrics and trace
    m = ctl.metrics()
    grpc_ok = m.get("hotserve_grpc_requests_total", outcome="success")
    check(grpc_ok == n_ok, "hotserve_grpc_requests_total{success} = %g, made %d" % (grpc_ok, n_ok))
    check(m.get("hotserve_grpc_requests_total", outcome="client_error") > 20, "gRPC client errors not counted")
    check(m.get("hotserve_grpc_requests_total", outcome="server_error") >= 1, "UNAVAILABLE not counted")
    add_ok = m.get("hotserve_requests_total", model="add", outcome="success")
    n_add_ok = 9   # the successful calls to "add" above (and none over HTTP)
    check(add_ok == n_add_ok, "hotserve_requests_total{model=add,success} = %g, made %d over gRPC" % (add_ok, n_add_ok))

    # ---- SIGTERM lets a call in flight finish
    result = {}

    def slow_call():
        try:
            r = st.ModelInfer(pb.ModelInferRequest(model_name="slow", inputs=[T(name="x", datatype="FP32",
                              shape=[1, 4])], raw_input_contents=[x.tobytes()]), timeout=60)
            result["y"] = np.frombuffer(r.raw_output_contents[0], dtype=np.float32)
        except grpc.RpcError as e:
            result["err"] = "%s %s" % (e.code(), e.details())

    hsys.wait_serving(ctl, "slow", 1)
    t = threading.Thread(target=slow_call)
    t.start()
    hsys.wait_for(lambda: ctl.metrics().get("hotserve_inflight_requests", model="slow") >= 1 or "y" in result,
                  "the slow call to start", timeout=30)
    srv.stop()
    t.join(60)
    check("y" in result, "call in flight at SIGTERM: %s" % result.get("err", "no answer"))
    check(np.allclose(result["y"], (x + 5).ravel()), "call in flight at SIGTERM: y = %s" % result["y"])
    with open(trace) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    reqs = [e for e in lines if e.get("ev") == "request" and e.get("model") == "add" and e["outcome"] == "success"]
    check(len(reqs) == n_add_ok, "trace has %d successful add requests, made %d over gRPC" % (len(reqs), n_add_ok))
    ch.close()


if __name__ == "__main__":
    hsys.main(test, __doc__)
