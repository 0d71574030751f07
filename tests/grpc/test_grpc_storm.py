#!/usr/bin/python3
"""test_grpc_storm.py - a reload storm over gRPC: zero failed calls while a new version is published every
half second.

Several client threads, each on its own gRPC channel, call ModelInfer on model "storm" (raw and typed
tensors in turn) for the whole storm while a publisher adds version K (y = x + K) with `hotserve publish`
every --period seconds for --duration seconds. Asserts: no call fails; every answer equals x + K for the
model_version it reports, and K was published; per client the version never goes backwards; the last
version ends up serving, over gRPC too; the server exits 0 on SIGTERM.
"""
import os
import threading
import time

import numpy as np

import grpc_client
import hsys
from grpc_client import grpc
from hsys import check


def add_args(p):
    p.add_argument("--duration", type=float, default=5.0, help="storm length in seconds")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--period", type=float, default=0.5, help="seconds between versions")


def test(tmp, args):
    hsys.require("serve", "publish")
    check(1 <= args.duration <= 120 and 1 <= args.clients <= 64 and args.period > 0, "bad arguments")
    pb, pbg = grpc_client.load_stubs(hsys.Env.source, tmp)
    T = pb.ModelInferRequest.InferInputTensor
    repo_model = os.path.join(tmp, "repo", "storm")
    n_versions = int(args.duration / args.period)
    srcs = {k: hsys.make_version_src(os.path.join(tmp, "src", str(k)), k) for k in range(1, n_versions + 2)}
    hsys.publish(srcs[1], repo_model, 1)
    srv = hsys.Server(os.path.join(tmp, "repo"), "--grpc-port", "0", "--poll-interval", "0.2", "--settle", "0")
    target = grpc_client.grpc_target(srv)
    ctl = srv.conn()
    hsys.wait_serving(ctl, "storm", 1)

    published = {1}
    lock = threading.Lock()
    stop = threading.Event()
    errors = []
    stats = [dict(n=0, last=0, versions=set()) for _ in range(args.clients)]

    def client(i):
        ch = grpc_client.channel(target)
        stub = pbg.GRPCInferenceServiceStub(ch)
        rng = np.random.default_rng(100 + i)
        s = stats[i]
        try:
            while not stop.is_set():
                x = rng.standard_normal((1, 4)).astype(np.float32)
                raw = s["n"] % 2 == 0
                t = T(name="x", datatype="FP32", shape=[1, 4])
                rq = pb.ModelInferRequest(model_name="storm", id="c%d-%d" % (i, s["n"]))
                if raw:
                    rq.raw_input_contents.append(x.tobytes())
                else:
                    t.contents.fp32_contents.extend(x.ravel().tolist())
                rq.inputs.append(t)
                what = "client %d call %d (%s)" % (i, s["n"], "raw" if raw else "typed")
                r = stub.ModelInfer(rq, timeout=60)
                check(r.id == rq.id, "%s: id %r" % (what, r.id))
                k = int(r.model_version)
                y = (np.frombuffer(r.raw_output_contents[0], dtype=np.float32) if raw
                     else np.array(r.outputs[0].contents.fp32_contents, dtype=np.float32))
                check(np.allclose(y, (x + np.float32(k)).ravel(), atol=1e-5),
                      "%s: y = %s is not x + %d" % (what, y, k))
                with lock:
                    check(k in published, "%s: version %d was never published" % (what, k))
                check(k >= s["last"], "%s: version went backwards %d -> %d" % (what, s["last"], k))
                s["last"] = k
                s["versions"].add(k)
                s["n"] += 1
        except hsys.TestFailure as e:
            errors.append(str(e))
        except grpc.RpcError as e:
            errors.append("client %d after %d calls: %s %s" % (i, s["n"], e.code(), e.details()))
        except Exception as e:
            errors.append("client %d after %d calls: %r" % (i, s["n"], e))
        finally:
            ch.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    for n, k in enumerate(range(2, n_versions + 2)):
        delay = t0 + (n + 1) * args.period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with lock:
            published.add(k)
        hsys.publish(srcs[k], repo_model, k)
        if errors:
            break
    last = max(published)
    if not errors:
        hsys.wait_serving(ctl, "storm", last, timeout=60)
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(120)
    check(not any(t.is_alive() for t in threads), "a client thread is stuck")
    check(not errors, "%d client(s) failed; first: %s" % (len(errors), errors[0] if errors else ""))
    total = sum(s["n"] for s in stats)
    seen = set().union(*(s["versions"] for s in stats))
    print("%d calls over %.1f s, %d versions published, %d seen by clients" %
          (total, time.monotonic() - t0, len(published), len(seen)))
    check(all(s["n"] > 0 for s in stats), "a client made no call")
    check(len(seen) >= 2, "the clients saw only versions %s: no reload happened under load" % sorted(seen))
    check(all(s["last"] == last for s in stats), "not every client ended on version %d: %s" %
          (last, [s["last"] for s in stats]))
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__, add_args)
