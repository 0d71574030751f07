"""benchlib.py - shared pieces of bench/serve and bench/reload: wrk runs with post.lua, histogram
deltas from /metrics, machine description, and writing result tables (bench/results/, README)."""
import datetime
import json
import os
import platform
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "system"))
import hsys  # noqa: E402  (server process, CLI and HTTP helpers shared with the system tests)

LUA = os.path.join(HERE, "post.lua")


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    return "%d cores (%s), %s, load average %s at the end (other work on the machine)" % (
        os.cpu_count() or 0, cpu, platform.platform(), load)


def git_rev():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def wrk(url, body_file, hdr_len, connections, duration, threads=None):
    """Runs wrk with post.lua; returns the summary dict (latencies in microseconds)."""
    threads = threads or max(1, min(2, connections))
    env = dict(os.environ, HS_BENCH_BODY=body_file, HS_BENCH_HDR_LEN="" if hdr_len is None else str(hdr_len))
    p = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", "%ds" % duration,
                        "--timeout", "30s", "-s", LUA, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=env)
    m = re.search(r"^HSBENCH (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError("wrk failed (%d):\n%s" % (p.returncode, p.stdout))
    s = json.loads(m.group(1))
    s["rps"] = s["requests"] / (s["duration_us"] / 1e6)
    s["errors"] = s["connect"] + s["read"] + s["write"] + s["timeout"]
    return s


def hist_mean_delta(before, after, name, **labels):
    """Mean of a histogram's observations between two scrapes (seconds), or None."""
    dn = after.get(name + "_count", **labels) - before.get(name + "_count", **labels)
    ds = after.get(name + "_sum", **labels) - before.get(name + "_sum", **labels)
    return (ds / dn if dn > 0 else None), dn


def write_result(kind, title, command, table_md, notes=""):
    """Writes bench/results/<kind>-<stamp>.md and replaces the <kind> section of bench/README.md."""
    now = datetime.datetime.now(datetime.timezone.utc)
    head = ("### %s\n\n%s UTC, commit %s, %s\n\nCommand: `%s`\n\n"
            % (title, now.strftime("%Y-%m-%d %H:%M"), git_rev(), machine(), command))
    text = head + table_md.rstrip() + "\n" + (("\n" + notes.rstrip() + "\n") if notes else "")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "bench", "results", "%s-%s.md" % (kind, now.strftime("%Y%m%d-%H%M")))
    with open(path, "w") as f:
        f.write(text)
    readme = os.path.join(ROOT, "bench", "README.md")
    begin, end = "<!-- %s-results:begin -->" % kind, "<!-- %s-results:end -->" % kind
    old = open(readme).read() if os.path.exists(readme) else "# hotserve benchmarks\n"
    block = "%s\n%s%s" % (begin, text, end)
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    with open(readme, "w") as f:
        f.write(new)
    return path


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out) + "\n"
