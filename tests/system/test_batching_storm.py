#!/usr/bin/python3
"""test_batching_storm.py - a reload storm on a model with dynamic batching loses nothing and never mixes versions.

Model "storm" (y = x + K for version K, x [N,4]) has max_batch_size 8 and a 5 ms queue delay. 8
keep-alive clients send requests of 1 to 3 rows (JSON and binary) for the whole storm while a new
version is published every --period seconds. Asserts: every request succeeds; every answer equals
x + K for the model_version it reports (a batch that mixed versions, or outputs split to the wrong
request, would break this); per client the version never goes backwards; batches of more than one
row did run; the last version ends up serving and the retired versions are all freed.
"""
import json
import os
import threading
import time

import numpy as np

import hsys
from hsys import check


def add_args(p):
    p.add_argument("--duration", type=float, default=8.0, help="storm length in seconds")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--period", type=float, default=0.25, help="seconds between versions")


def test(tmp, args):
    hsys.require("serve", "publish")
    repo_model = os.path.join(tmp, "repo", "storm")
    os.makedirs(repo_model)
    hsys.write_file(os.path.join(repo_model, "config.json"), json.dumps(
        {"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": 5000}}
    ).encode())
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "1"), 1, shape=(-1, 4)), repo_model, 1)
    n_versions = max(2, int(args.duration / args.period))
    srcs = [hsys.make_version_src(os.path.join(tmp, "src", str(v)), v, shape=(-1, 4)) for v in range(2, n_versions + 2)]
    srv = hsys.Server(repo_model[:-len("/storm")], "--poll-interval", "0.5", "--settle", "0", "--instances", "2")
    ctl = srv.conn()
    hsys.wait_serving(ctl, "storm", 1)

    stop = threading.Event()
    errors = []
    per_client = [dict(n=0, versions=set(), last=0) for _ in range(args.clients)]

    def client(i):
        c = srv.conn()
        rng = np.random.default_rng(300 + i)
        st = per_client[i]
        try:
            while not stop.is_set() and not errors:
                x = rng.standard_normal((1 + st["n"] % 3, 4)).astype(np.float32)
                binary = st["n"] % 2 == 1
                r, out, _ = c.infer("storm", x, binary=binary)
                what = "client %d request %d (%d rows)" % (i, st["n"], x.shape[0])
                check(r.status == 200, "%s: HTTP %d %r" % (what, r.status, r.body[:200]))
                ver = out[""].get("model_version")
                check(isinstance(ver, str) and ver.isdigit(), "%s: model_version %r" % (what, ver))
                k = int(ver)
                hsys.expect_values(out, x, k, what + " on version %d" % k)
                check(k >= st["last"], "%s: version went backwards %d -> %d" % (what, st["last"], k))
                st["last"] = k
                st["versions"].add(k)
                st["n"] += 1
        except hsys.TestFailure as e:
            errors.append(str(e))
        except Exception as e:  # reset, timeout, dropped: all failed requests
            errors.append("client %d after %d requests: %r" % (i, st["n"], e))
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    for n, src in enumerate(srcs):
        delay = t0 + (n + 1) * args.period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if errors:
            break
        hsys.publish(src, repo_model, n + 2)
    last = n_versions + 1
    if not errors:
        hsys.wait_serving(ctl, "storm", last, timeout=60)
        time.sleep(0.5)  # a few requests on the final version
    stop.set()
    for t in threads:
        t.join(120 * hsys.slow_factor())
    check(not any(t.is_alive() for t in threads), "a client did not finish")
    check(not errors, "%d failure(s) during the storm; first: %s" % (len(errors), "; ".join(errors[:3])))

    total = sum(st["n"] for st in per_client)
    served = set().union(*(st["versions"] for st in per_client))
    m = ctl.metrics()
    runs = m.get("hotserve_batch_size_count", model="storm")
    rows = m.get("hotserve_batch_size_sum", model="storm")
    single = m.get("hotserve_batch_size_bucket", model="storm", le="1")
    print("storm: %d requests by %d clients, %d versions published, %d answered; %d runs, mean batch %.2f rows"
          % (total, args.clients, n_versions, len(served), runs, rows / runs if runs else 0))
    check(all(st["n"] > 0 for st in per_client), "a client made no request")
    check(len(served) >= 3, "only versions %s answered: the storm did not reload" % sorted(served))
    check(last in served, "no request was answered by the last version %d" % last)
    # requests_total shows only the newest versions' series; the duration histogram counts them all
    check(m.get("hotserve_request_duration_seconds_count", model="storm") == total,
          "request_duration_seconds_count != the %d answers the clients got" % total)
    check(m.get("hotserve_requests_total", model="storm", outcome="server_error") == 0, "server errors counted")
    check(runs > single, "no run had more than one row: nothing was batched during the storm")
    hsys.wait_for(lambda: ctl.metrics().get("hotserve_model_versions_live") == 1,
                  "the retired versions to be freed (versions_live back to 1)", timeout=30)
    ctl.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__, add_args)
