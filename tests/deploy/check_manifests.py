#!/usr/bin/python3
"""check_manifests.py - deploy/kubernetes/hotserve.yaml keeps the promises a fleet relies on.

No cluster is needed: the manifest is read with PyYAML and checked for the startupProbe on
/v2/health/ready, readiness and liveness probes, a preStop hook, imagePullPolicy IfNotPresent with a
pinned tag, a non-root read-only securityContext matching the image's user, the polling-only switch and a
lame-duck period, a termination grace period that covers preStop + lame duck + the 30 s drain, and a
PodDisruptionBudget selecting the pods. The container's command line (the Dockerfile's ENTRYPOINT plus
the manifest's args) is given to the real `hotserve serve`, which must accept every option (it then stops
at the missing repository).
Usage: check_manifests.py --source DIR --hotserve BIN
"""
import argparse
import json
import os
import re
import subprocess
import sys

import yaml

problems = []


def want(cond, msg):
    if not cond:
        problems.append(msg)


def option(args, name):
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--hotserve", required=True)
    a = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(open(os.path.join(a.source, "deploy", "kubernetes", "hotserve.yaml"))) if d]
    kinds = {d["kind"]: d for d in docs}
    dep, pdb = kinds.get("Deployment"), kinds.get("PodDisruptionBudget")
    want(dep is not None, "no Deployment")
    want(pdb is not None, "no PodDisruptionBudget")
    want("Service" in kinds, "no Service")
    if not dep:
        return report()
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    c = pod["containers"][0]
    args = [str(x) for x in c.get("args", [])]

    want(c.get("imagePullPolicy") == "IfNotPresent", "imagePullPolicy is %r, not IfNotPresent" % c.get("imagePullPolicy"))
    want(":" in c["image"] and not c["image"].endswith(":latest"), "image %r is not a pinned tag" % c["image"])
    port_names = {p.get("name") for p in c.get("ports", [])}
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        p = c.get(probe) or {}
        want(p.get("httpGet", {}).get("path") == path, "%s does not GET %s" % (probe, path))
        want(p.get("httpGet", {}).get("port") in port_names, "%s port is not a named container port" % probe)
    sp = c.get("startupProbe") or {}
    want(sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) >= 120,
         "startupProbe allows less than 2 minutes for the start-up loads")
    pre = (c.get("lifecycle") or {}).get("preStop") or {}
    want(pre, "no preStop hook")
    pre_s = (pre.get("sleep") or {}).get("seconds", 0)

    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    want(psc.get("runAsNonRoot") is True, "pod securityContext lacks runAsNonRoot: true")
    want(csc.get("readOnlyRootFilesystem") is True, "container securityContext lacks readOnlyRootFilesystem: true")
    want(csc.get("allowPrivilegeEscalation") is False, "container allows privilege escalation")
    want("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), "container keeps its capabilities")
    docker = open(os.path.join(a.source, "deploy", "Dockerfile")).read()
    m = re.search(r"^USER\s+(\d+)", docker, re.M)
    want(m and int(m.group(1)) == psc.get("runAsUser"), "runAsUser %r is not the image's USER %s"
         % (psc.get("runAsUser"), m.group(1) if m else "(none)"))

    want("--no-inotify" in args, "args lack --no-inotify (NFS: inotify sees nothing)")
    grace = option(args, "--shutdown-grace")
    want(grace is not None, "args lack --shutdown-grace (lame-duck period)")
    need = pre_s + float(grace or 0) + 30  # cmd_serve.c drains for up to 30 s
    want(pod.get("terminationGracePeriodSeconds", 30) >= need,
         "terminationGracePeriodSeconds %s < preStop %s + lame duck %s + drain 30"
         % (pod.get("terminationGracePeriodSeconds", 30), pre_s, grace))
    if pdb:
        sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
        want(sel and all(labels.get(k) == v for k, v in sel.items()), "the PodDisruptionBudget selects no pods")
        want("maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"], "the PodDisruptionBudget sets no limit")

    # the container's command line, as the real binary parses it
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])", docker, re.M)
    want(m is not None, "the Dockerfile has no exec-form ENTRYPOINT")
    if m:
        entry = json.loads(m.group(1))
        argv = [a.hotserve] + entry[1:] + args
        repo_i = argv.index("--model-repository") + 1
        argv[repo_i] = "/nonexistent/hotserve-manifest-check"  # stops after option parsing
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        want(r.returncode == 1 and "not a readable directory" in r.stderr,
             "`hotserve %s` did not accept the manifest's options (exit %d): %s"
             % (" ".join(argv[1:]), r.returncode, r.stderr.strip()[-300:]))
    return report()


def report():
    for p in problems:
        print("check_manifests: " + p)
    print("check_manifests: %s" % ("FAILED" if problems else "ok"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
