#!/usr/bin/python3
"""test_grpc_triton.py - Triton's ModelConfig, ModelStatistics, RepositoryIndex and RepositoryModelLoad/Unload
RPCs against a real `hotserve serve --grpc-port 0`, with an independent client (python3-grpcio, stubs generated
now from proto/), each compared with the HTTP route that shares its code.

Covers: the configuration (policy, types, dims, instance group), statistics counting gRPC successes and
failures with their phase durations (equal to HTTP's), the index with every version on disk in Triton's
states and the ready filter (equal to HTTP's), a failed load (INVALID_ARGUMENT with the reason), refused load
parameters, unload holding a newly published version until a load, and the status codes of each RPC; the
control switches (token, --model-control-mode none and explicit) on the repository RPCs.
"""
import os
import time

import numpy as np

import grpc_client
import hsys
from grpc_client import grpc
from hsys import check

from test_grpc_service import expect_code


def test(tmp, args):
    hsys.require("serve", "publish")
    pb, pbg = grpc_client.load_stubs(hsys.Env.source, tmp)
    T = pb.ModelInferRequest.InferInputTensor
    IA, NF = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    repo = os.path.join(tmp, "repo")
    for k in (1, 2):
        hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "add%d" % k), k), os.path.join(repo, "add"), k)
    hsys.write_file(os.path.join(tmp, "src", "broken", "model.onnx"), b"not an onnx model at all")
    hsys.publish(os.path.join(tmp, "src", "broken"), os.path.join(repo, "broken"), 1)
    srv = hsys.Server(repo, "--grpc-port", "0", "--settle", "0")
    st = pbg.GRPCInferenceServiceStub(grpc_client.channel(grpc_client.grpc_target(srv)))
    ctl = srv.conn()
    hsys.wait_serving(ctl, "add", 2)
    check({"statistics", "model_configuration"} <= set(st.ServerMetadata(pb.ServerMetadataRequest()).extensions),
          "ServerMetadata announces statistics and model_configuration")

    # ---- ModelConfig
    cfg = st.ModelConfig(pb.ModelConfigRequest(name="add")).config
    check(cfg.name == "add" and cfg.platform == "onnx" and cfg.backend == "onnx" and cfg.max_batch_size == 0,
          "ModelConfig add: %r" % cfg)
    check(cfg.version_policy.WhichOneof("policy_choice") == "latest" and cfg.version_policy.latest.num_versions == 1,
          "ModelConfig policy: %r" % cfg.version_policy)
    check([(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("x", pb.TYPE_FP32, [1, 4])] and
          [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [("y", pb.TYPE_FP32, [1, 4])],
          "ModelConfig tensors: %r" % cfg)
    check(len(cfg.instance_group) == 1 and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU,
          "ModelConfig instance group: %r" % cfg.instance_group)
    http_cfg = ctl.get_json("/v2/models/add/config")
    check(http_cfg["input"][0]["data_type"] == pb.DataType.Name(cfg.input[0].data_type), "HTTP and gRPC types agree")
    expect_code(lambda: st.ModelConfig(pb.ModelConfigRequest(name="nope")), NF, "ModelConfig nope", "nope")
    expect_code(lambda: st.ModelConfig(pb.ModelConfigRequest(name="add", version="9")), NF, "ModelConfig add v9")

    # ---- ModelStatistics: 3 successes and 1 failure over gRPC
    x = np.array([[0.5, -1.0, 2.0, 3.0]], np.float32)
    before = st.ModelStatistics(pb.ModelStatisticsRequest(name="add", version="2")).model_stats[0].inference_stats
    t0 = int(time.time() * 1000)
    for _ in range(3):
        st.ModelInfer(pb.ModelInferRequest(model_name="add", inputs=[T(name="x", datatype="FP32", shape=[1, 4])],
                                           raw_input_contents=[x.tobytes()]))
    expect_code(lambda: st.ModelInfer(pb.ModelInferRequest(model_name="add", inputs=[
        T(name="x", datatype="FP32", shape=[2, 4])], raw_input_contents=[np.zeros((2, 4), np.float32).tobytes()])),
        IA, "a shape the model does not take")
    ms = st.ModelStatistics(pb.ModelStatisticsRequest(name="add")).model_stats
    check(len(ms) == 1 and ms[0].name == "add" and ms[0].version == "2", "ModelStatistics add: %r" % ms)
    s = ms[0].inference_stats
    check(s.success.count - before.success.count == 3 and s.fail.count - before.fail.count == 1,
          "success/fail: %r then %r" % (before, s))
    for d in (s.queue, s.compute_input, s.compute_infer, s.compute_output):
        check(d.count == s.success.count, "phase counts follow successes: %r" % s)
    check(s.compute_infer.ns > before.compute_infer.ns and s.fail.ns > before.fail.ns and
          s.success.ns >= s.compute_infer.ns, "durations: %r" % s)
    check(ms[0].inference_count == ms[0].execution_count == s.success.count, "counts: %r" % ms[0])
    check(t0 - 1000 <= ms[0].last_inference <= int(time.time() * 1000) + 1000, "last_inference: %d" % ms[0].last_inference)
    h = ctl.get_json("/v2/models/add/versions/2/stats")["model_stats"][0]
    check(h["inference_stats"]["success"]["count"] == s.success.count and
          h["inference_stats"]["fail"]["count"] == s.fail.count and h["last_inference"] == ms[0].last_inference,
          "HTTP and gRPC statistics agree: %r vs %r" % (h, ms[0]))
    every = st.ModelStatistics(pb.ModelStatisticsRequest()).model_stats
    check(("add", "2") in {(e.name, e.version) for e in every}, "ModelStatistics of every model: %r" % every)
    expect_code(lambda: st.ModelStatistics(pb.ModelStatisticsRequest(name="nope")), NF, "ModelStatistics nope")
    expect_code(lambda: st.ModelStatistics(pb.ModelStatisticsRequest(name="add", version="1")), NF,
                "ModelStatistics of a version that does not serve")
    expect_code(lambda: st.ModelStatistics(pb.ModelStatisticsRequest(version="1")), IA, "a version without a name")

    # ---- RepositoryIndex: every version on disk, Triton's states, the ready filter; equal to HTTP's
    idx = st.RepositoryIndex(pb.RepositoryIndexRequest()).models
    got = {(e.name, e.version): e for e in idx}
    check(got[("add", "2")].state == "READY" and got[("add", "1")].state == "UNAVAILABLE" and got[("add", "1")].reason,
          "RepositoryIndex add: %r" % idx)
    check(got[("broken", "1")].state == "UNAVAILABLE" and "load_error" in got[("broken", "1")].reason,
          "RepositoryIndex broken: %r" % idx)
    http_idx = ctl.request("POST", "/v2/repository/index", b"{}").json()
    check(sorted((e.name, e.version, e.state) for e in idx) ==
          sorted((e["name"], e.get("version", ""), e["state"]) for e in http_idx), "gRPC and HTTP index agree")
    ready = st.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    check([(e.name, e.version, e.state) for e in ready] == [("add", "2", "READY")], "ready filter: %r" % ready)
    expect_code(lambda: st.RepositoryIndex(pb.RepositoryIndexRequest(repository_name="other")), IA,
                "RepositoryIndex of another repository")

    # ---- RepositoryModelLoad / Unload
    e = expect_code(lambda: st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="broken")), IA,
                    "a failed load", "load_error")
    expect_code(lambda: st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="nope")), NF, "load nope")
    P = pb.ModelRepositoryParameter
    expect_code(lambda: st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(
        model_name="add", parameters={"config": P(string_param='{"instances": 3}')})), IA, "config override", "config")
    expect_code(lambda: st.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(
        model_name="add", parameters={"unload_dependents": P(bool_param=True)})), IA, "unload parameter",
        "unload_dependents")
    check(st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "refused requests changed nothing")
    st.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="add"))
    check(not st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "unloaded")
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "add3"), 3), os.path.join(repo, "add"), 3)
    idx = {(e.name, e.version): e for e in st.RepositoryIndex(pb.RepositoryIndexRequest()).models}
    check(idx[("add", "3")].state == "UNAVAILABLE" and "unloaded" in idx[("add", "3")].reason,
          "a version published after the unload stays out: %r" % idx[("add", "3")])
    check(not st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "still unloaded after a rescan")
    st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="add"))
    hsys.wait_serving(ctl, "add", 3)
    check(st.ModelReady(pb.ModelReadyRequest(name="add", version="3")).ready, "loaded again with version 3")
    srv.stop()

    # ---- the repository RPCs obey the same control switches as HTTP's repository routes
    token_file = os.path.join(tmp, "control.token")
    with open(token_file, "w") as f:
        f.write("s3cret-token\n")
    srv = hsys.Server(repo, "--grpc-port", "0", "--settle", "0", "--control-token-file", token_file)
    st = pbg.GRPCInferenceServiceStub(grpc_client.channel(grpc_client.grpc_target(srv)))
    UA, PD = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    good, bad = [("authorization", "Bearer s3cret-token")], [("authorization", "Bearer wrong")]
    for name, call in (("RepositoryIndex", lambda md: st.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=md)),
                       ("RepositoryModelUnload", lambda md: st.RepositoryModelUnload(
                           pb.RepositoryModelUnloadRequest(model_name="add"), metadata=md)),
                       ("RepositoryModelLoad", lambda md: st.RepositoryModelLoad(
                           pb.RepositoryModelLoadRequest(model_name="add"), metadata=md))):
        expect_code(lambda: call(None), UA, name + " without a token")
        expect_code(lambda: call(bad), PD, name + " with a wrong token")
        check(st.ModelReady(pb.ModelReadyRequest(name="add")).ready, name + ": a refused call changed nothing")
    check(any(e.name == "add" for e in st.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=good).models),
          "RepositoryIndex with the token")
    st.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="add"), metadata=good)
    check(not st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "unload with the token")
    st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="add"), metadata=good)
    check(st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "load with the token")
    srv.stop()
    srv = hsys.Server(repo, "--grpc-port", "0", "--settle", "0", "--model-control-mode", "none")
    st = pbg.GRPCInferenceServiceStub(grpc_client.channel(grpc_client.grpc_target(srv)))
    expect_code(lambda: st.RepositoryIndex(pb.RepositoryIndexRequest()), PD, "RepositoryIndex in control mode none")
    expect_code(lambda: st.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="add")), PD,
                "RepositoryModelUnload in control mode none")
    check(st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "control mode none: the model still serves")
    srv.stop()
    # explicit control mode: nothing loads until RepositoryModelLoad, which still needs the token
    srv = hsys.Server(repo, "--grpc-port", "0", "--settle", "0", "--model-control-mode", "explicit",
                      "--control-token-file", token_file)
    st = pbg.GRPCInferenceServiceStub(grpc_client.channel(grpc_client.grpc_target(srv)))
    check(not st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "explicit mode: loaded without a load request")
    idx = st.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=good).models
    check(any(e.name == "add" and e.state == "UNAVAILABLE" and "not loaded" in e.reason for e in idx),
          "explicit mode: the index does not list add as not loaded: %r" % list(idx))
    expect_code(lambda: st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="add")), UA,
                "explicit mode: RepositoryModelLoad without a token")
    expect_code(lambda: st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="add"), metadata=bad), PD,
                "explicit mode: RepositoryModelLoad with a wrong token")
    check(not st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "explicit mode: a refused load loaded add")
    st.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="add"), metadata=good)
    check(st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "explicit mode: load with the token")
    st.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="add"), metadata=good)
    check(not st.ModelReady(pb.ModelReadyRequest(name="add")).ready, "explicit mode: unload with the token")
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)
