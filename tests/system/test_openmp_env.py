#!/usr/bin/python3
"""test_openmp_env.py - the OpenMP idle policy a running server really has (cli/main.c).

libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded, so hotserve sets its
default (GOMP_SPINCOUNT=1000: a ~10 us spin, then sleep) and re-executes itself before anything runs.
What counts is the environment of the process that serves, so this reads /proc/PID/environ of a real
`hotserve serve`:
  - neither variable set: GOMP_SPINCOUNT=1000, no OMP_WAIT_POLICY;
  - OMP_WAIT_POLICY=PASSIVE set by the operator: kept, no GOMP_SPINCOUNT added;
  - GOMP_SPINCOUNT=5 set by the operator: kept as 5.
"""
import os

import hsys
from hsys import check


def served_env(repo, env):
    saved = {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        srv = hsys.Server(repo, wait_ready=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        with open("/proc/%d/environ" % srv.proc.pid, "rb") as f:
            raw = f.read()
    finally:
        srv.stop()
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


def test(tmp, args):
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    e = served_env(repo, {})
    check(e.get("GOMP_SPINCOUNT") == "1000", "default GOMP_SPINCOUNT is %r, wanted '1000'" % e.get("GOMP_SPINCOUNT"))
    check("OMP_WAIT_POLICY" not in e, "the server set OMP_WAIT_POLICY=%r by itself" % e.get("OMP_WAIT_POLICY"))
    e = served_env(repo, {"OMP_WAIT_POLICY": "PASSIVE"})
    check(e.get("OMP_WAIT_POLICY") == "PASSIVE", "the operator's OMP_WAIT_POLICY became %r" % e.get("OMP_WAIT_POLICY"))
    check("GOMP_SPINCOUNT" not in e, "GOMP_SPINCOUNT=%r added beside the operator's policy" % e.get("GOMP_SPINCOUNT"))
    e = served_env(repo, {"GOMP_SPINCOUNT": "5"})
    check(e.get("GOMP_SPINCOUNT") == "5", "the operator's GOMP_SPINCOUNT became %r" % e.get("GOMP_SPINCOUNT"))


if __name__ == "__main__":
    hsys.main(test, __doc__)
