#!/usr/bin/python3
"""check_packages.py - the container image's package lists match what CMake and the binary need.

deploy/Dockerfile installs its build stage from `scripts/deps.sh build` and its runtime stage from
`scripts/deps.sh runtime` (the one list). This check, run against a configured build tree on Debian:
  1. the Dockerfile installs through deps.sh only (no second package list) and .dockerignore keeps
     build trees out of the image's sources;
  2. build: every file CMake resolved (CMakeCache.txt paths: libraries, config packages, compilers;
     not the HS_* test tools)
     and every pkg-config module CMakeLists.txt asks for belongs to a package of the "build" group or
     to one of their dependencies (dpkg's database);
  3. runtime: every library the hotserve binary links directly (its NEEDED entries) belongs to a
     package of the "runtime" group (or to the few every Debian image has), and every "runtime"
     package provides one of them (no stale entries).
Usage: check_packages.py --source DIR --build DIR --binary build/src/hotserve
Exit status 0 when all hold, 1 with one line per mismatch otherwise, 77 (skipped) on a sanitizer build tree.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

BASE = {"libc6", "libgcc-s1", "libstdc++6"}  # in every Debian 12 image, debian:12-slim included


def sh(*argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout


def group(source, name):
    out = subprocess.run(["bash", os.path.join(source, "scripts", "deps.sh"), "--list", name],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    return set(out.split())


def owners(path):
    """Debian packages owning path (tries the merged-/usr spellings and the resolved link)."""
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        cands.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for p in cands:
        out = sh("dpkg", "-S", p)
        pkgs = set()
        for line in out.splitlines():
            if ": " in line and line.split(": ", 1)[1] == p:
                pkgs.update(x.strip().split(":")[0] for x in line.split(": ", 1)[0].split(","))
        if pkgs:
            return pkgs
    return set()


def installed_closure(roots):
    """roots plus everything they depend on (Depends, Pre-Depends; every alternative), installed."""
    provides, deps = {}, {}
    for line in sh("dpkg-query", "-W", "-f=${Package}\t${Provides}\t${Depends}, ${Pre-Depends}\n").splitlines():
        name, prov, dep = (line.split("\t") + ["", ""])[:3]
        deps[name] = {re.sub(r"[:\s(].*", "", d.strip()) for d in re.split(r"[,|]", dep) if d.strip()}
        for p in prov.split(","):
            p = re.sub(r"[\s(].*", "", p.strip())
            if p:
                provides.setdefault(p, set()).add(name)
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        for real in ({p} if p in deps else set()) | provides.get(p, set()):
            if real not in seen:
                seen.add(real)
                todo.extend(deps.get(real, ()))
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--build", required=True, help="a configured CMake build tree (CMakeCache.txt)")
    ap.add_argument("--binary", required=True, help="the built hotserve binary")
    a = ap.parse_args()
    problems = []

    # 1. the Dockerfile uses the one list
    docker = open(os.path.join(a.source, "deploy", "Dockerfile")).read()
    if "apt-get install" in docker:
        problems.append("deploy/Dockerfile runs apt-get install itself: install through scripts/deps.sh")
    for g in ("build", "runtime"):
        if not re.search(r"deps\.sh %s\b" % g, docker):
            problems.append("deploy/Dockerfile does not install the '%s' group (scripts/deps.sh %s)" % (g, g))
    ignore = os.path.join(a.source, ".dockerignore")
    patterns = open(ignore).read().split() if os.path.exists(ignore) else []
    if not any(p.strip("/") in ("build", "build*") for p in patterns):
        problems.append(".dockerignore does not exclude build trees (build*/)")

    cache = open(os.path.join(a.build, "CMakeCache.txt")).read()
    if re.search(r"^HS_SANITIZE:\w+=[^\n]+$", cache, re.M) or re.search(r"^HS_FUZZ:\w+=(ON|1|TRUE)$", cache, re.M):
        print("check_packages: skipped: a sanitizer build links sanitizer runtimes the image never ships")
        return 77
    build, runtime = group(a.source, "build"), group(a.source, "runtime")
    for g, pkgs in (("build", build), ("runtime", runtime)):
        for p in sorted(pkgs):
            if not sh("dpkg-query", "-W", "-f=${Status}", p).endswith("installed"):
                problems.append("group %s: %s is not installed here, so this check cannot vouch for it" % (g, p))
    closure = installed_closure(build)

    # 2. build: what CMake resolved, and the pkg-config modules it asks for
    needs = {}  # path -> why
    for line in cache.splitlines():
        m = re.match(r"^([A-Za-z0-9_]+):(FILEPATH|PATH)=(/usr/\S+)$", line.strip())
        # HS_*: the project's own settings and test tools (python, promtool), from the "test" group
        if not m or m.group(1) == "CMAKE_INSTALL_PREFIX" or m.group(1).startswith("HS_") or "NOTFOUND" in m.group(3):
            continue
        needs[m.group(3)] = m.group(1)
    cmake = shutil.which("cmake")
    if cmake:
        needs[cmake] = "cmake itself"
    cml = open(os.path.join(a.source, "CMakeLists.txt")).read()
    for mod in re.findall(r"pkg_check_modules\(\s*\w+\s+REQUIRED\s+(?:IMPORTED_TARGET\s+)?([\w.+-]+)", cml):
        pc = sh("pkg-config", "--path", mod).strip()
        if not pc:
            problems.append("pkg-config module %s (CMakeLists.txt) is not installed" % mod)
        else:
            needs[pc] = "pkg-config module " + mod
    checked = 0
    for path, why in sorted(needs.items()):
        pkgs = owners(path)
        if len(pkgs) != 1:
            continue  # a directory many packages share (/usr/include), or a file of no package
        checked += 1
        if not pkgs & closure:
            problems.append("build: %s (%s) comes from %s, which the 'build' group does not install"
                            % (path, why, ", ".join(sorted(pkgs))))

    # 3. runtime: the binary's direct libraries
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", sh("readelf", "-d", a.binary))
    if not needed:
        problems.append("runtime: no NEEDED entries read from %s" % a.binary)
    resolved = {}
    for line in sh("ldd", a.binary).splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            resolved[m.group(1)] = m.group(2)
    provided = set()
    for lib in needed:
        if lib not in resolved:
            problems.append("runtime: %s does not resolve here (ldd)" % lib)
            continue
        pkgs = owners(resolved[lib])
        provided |= pkgs
        if not pkgs & (runtime | BASE):
            problems.append("runtime: %s comes from %s, which the 'runtime' group does not install"
                            % (lib, ", ".join(sorted(pkgs)) or "no package"))
    for p in sorted(runtime - provided):
        problems.append("runtime: %s is in the 'runtime' group but provides none of %s" % (p, ", ".join(needed)))

    for p in problems:
        print("check_packages: " + p)
    print("check_packages: %s (%d CMake paths, %d linked libraries checked; build %d, runtime %d packages)"
          % ("FAILED" if problems else "ok", checked, len(needed), len(build), len(runtime)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
