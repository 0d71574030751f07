#!/usr/bin/env python3
"""The command line as users and container runtimes drive it, on real processes: --opt=value and --opt value
for every command, -h/--help, errors for unknown options and missing values, --version in the top-level
help, serve's options from HOTSERVE_* environment variables (the flag wins), and IPv6 / dual-stack --host
for HTTP and gRPC (loopback addresses only)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HOTSERVE = os.path.abspath(sys.argv[1])
SOURCE = sys.argv[2]
sys.path.insert(0, os.path.join(SOURCE, "tools", "testmodels"))
import make_test_model  # noqa: E402  (the project's generator of y = x + K models)

COMMANDS = ["serve", "run", "keygen", "sign", "verify", "publish"]
LISTEN = re.compile(r"^hotserve: listening on (http|grpc)://(\S+):(\d+)$")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run(*args, expect=0, env=None):
    p = subprocess.run([HOTSERVE, *args], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
    check(p.returncode == expect, "hotserve %s: exit %d, want %d\n%s%s" % (" ".join(args), p.returncode, expect,
                                                                           p.stdout[-500:], p.stderr[-1500:]))
    return p


class Serve:
    """A `hotserve serve` process; .http and .grpc are (host, port) from its listening lines."""
    running = []   # killed by main() when a check fails half-way

    def __init__(self, *args, env=None, want_grpc=False):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_")}
        self.p = subprocess.Popen([HOTSERVE, "serve", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, env=dict(clean, **(env or {})))
        Serve.running.append(self)
        self.http = self.grpc = None
        self.lines = []
        deadline = time.monotonic() + 60
        while self.http is None or (want_grpc and self.grpc is None):
            check(time.monotonic() < deadline, "serve %s: no listening line\n%s" % (args, "\n".join(self.lines)))
            line = self.p.stderr.readline()
            if not line:
                raise AssertionError("serve %s exited %s\n%s" % (args, self.p.wait(), "\n".join(self.lines)))
            line = line.rstrip("\n")
            self.lines.append(line)
            m = LISTEN.match(line)
            if m:
                setattr(self, m.group(1), (m.group(2).strip("[]"), int(m.group(3))))
        # the server listens before its start-up loads: wait until they are done
        while True:
            check(time.monotonic() < deadline, "serve %s: never ready\n%s" % (args, "\n".join(self.lines)))
            try:
                if http_get(*self.http, "/v2/health/ready")[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)

    def stop(self):
        Serve.running.remove(self)
        self.p.send_signal(signal.SIGTERM)
        rest = self.p.stderr.read()
        self.lines += rest.splitlines()
        check(self.p.wait(60) == 0, "serve exited %d at SIGTERM" % self.p.returncode)


def http_get(host, port, path):
    h = "[%s]" % host if ":" in host else host
    with urllib.request.urlopen("http://%s:%d%s" % (h, port, path), timeout=30) as r:
        return r.status, json.loads(r.read())


def grpc_live(target):
    """ServerLive over a raw gRPC call (empty request message): True when the server answers live."""
    import grpc
    with grpc.insecure_channel(target) as ch:
        reply = ch.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=20)
    return reply == b"\x08\x01"   # ServerLiveResponse{live: true}


def make_repo(tmp):
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "m", "1"))
    with open(os.path.join(repo, "m", "1", "model.onnx"), "wb") as f:
        f.write(make_test_model.build(1.0, [1, 4], 0, 13).SerializeToString())
    return repo


def test_help_and_errors():
    p = run("--help")
    check("--version" in p.stdout, "top-level help does not mention --version:\n" + p.stdout)
    for flag in ("--version", "-V"):
        check(run(flag).stdout.strip() == "hotserve 0.1.0", "%s output" % flag)
    for cmd in COMMANDS:
        for flag in ("-h", "--help"):
            p = run(cmd, flag)
            check(p.stdout.startswith("usage: hotserve %s" % cmd), "%s %s: %r" % (cmd, flag, p.stdout[:100]))
        p = run(cmd, "--no-such-option", expect=2)
        check("hotserve %s: unknown option --no-such-option" % cmd in p.stderr, "%s unknown option: %r" %
              (cmd, p.stderr[:300]))
    for cmd, opt in (("serve", "--http-port"), ("sign", "--key"), ("verify", "--trusted-key"),
                     ("publish", "--version"), ("run", "--repeat")):
        p = run(cmd, opt, expect=2)
        check("option %s needs a value" % opt in p.stderr, "%s %s without a value: %r" % (cmd, opt, p.stderr[:300]))
    p = run("serve", "--help")
    for name in ("HOTSERVE_HTTP_PORT", "HOTSERVE_GRPC_PORT", "HOTSERVE_MODEL_REPOSITORY", "HOTSERVE_HOST",
                 "--grpc-port", "--opt=VALUE", "dual stack"):
        check(name in p.stdout, "serve --help does not mention %s" % name)
    # every serve option has its environment variable in the help
    opts = set(re.findall(r"^  (--[a-z-]+)", p.stdout, re.M)) - {"--help"}
    envs = re.findall(r"\[(HOTSERVE_[A-Z_]+)\]", p.stdout)
    check(len(opts) >= 19 and len(envs) == len(opts), "serve --help: %d options, %d variables" % (len(opts), len(envs)))


def test_value_forms(tmp):
    """--opt=value and --opt value, options before or after operands, on real files."""
    os.chdir(tmp)
    run("keygen", "k1")
    run("keygen", "h1", "--hmac")                          # option after the operand
    check(os.path.exists("k1.pub") and os.path.exists("h1.key") and not os.path.exists("h1.pub"), "keygen files")
    src = os.path.join(tmp, "src")
    os.makedirs(src)
    with open(os.path.join(src, "model.onnx"), "wb") as f:
        f.write(make_test_model.build(2.0, [1, 4], 0, 13).SerializeToString())
    run("publish", src, "r/m", "--version=3", "--key=k1.key")
    run("publish", "--version", "5", "--key", "h1.key", src, "r/m")
    check(sorted(os.listdir("r/m")) == ["3", "5"], "publish --version forms: %s" % os.listdir("r/m"))
    run("verify", "r/m/3", "--trusted-key=k1.pub")
    run("verify", "--trusted-key", "h1.key", "r/m/5")
    p = run("verify", "r/m/5", "--trusted-key=k1.pub", expect=1)
    check("unknown_key" in p.stderr or "bad_signature" in p.stderr, "verify with the wrong key: %r" % p.stderr)
    shutil.copytree(src, "d")
    run("sign", "--key=k1.key", "d")
    run("verify", "d", "--trusted-key", "k1.pub")
    import numpy as np
    np.save("x.npy", np.arange(4, dtype=np.float32).reshape(1, 4))
    p = run("run", os.path.join(src, "model.onnx"), "--input=x=x.npy", "--repeat=2", "--output-dir", "out")
    y = np.load(os.path.join("out", "y.npy"))
    check(np.allclose(y, np.arange(4).reshape(1, 4) + 2), "run --input=...: y = %s" % y)
    run("run", "-i", "x=x.npy", os.path.join(src, "model.onnx"), "--threads=1")


def test_serve_env(tmp):
    repo = make_repo(tmp)
    # everything from the environment (the form container users pass), including gRPC
    s = Serve(env={"HOTSERVE_MODEL_REPOSITORY": repo, "HOTSERVE_HTTP_PORT": "0", "HOTSERVE_GRPC_PORT": "0",
                   "HOTSERVE_HOST": "127.0.0.1", "HOTSERVE_LOG_LEVEL": "debug",
                   "HOTSERVE_SETTLE": "0"}, want_grpc=True)
    check(http_get(*s.http, "/v2/models/m/ready")[0] == 200, "env-configured server: model not ready")
    check(grpc_live("%s:%d" % s.grpc), "env-configured gRPC not live")
    s.stop()
    check(any(" debug " in line for line in s.lines), "HOTSERVE_LOG_LEVEL=debug had no effect")
    # the flag wins over the environment
    s = Serve("--model-repository=" + repo, "--http-port=0", "--log-level", "warn",
              env={"HOTSERVE_MODEL_REPOSITORY": "/nonexistent", "HOTSERVE_HTTP_PORT": "1",
                   "HOTSERVE_LOG_LEVEL": "debug", "HOTSERVE_HOST": "127.0.0.2"})
    # the port came from the flag, the host (no flag given) from the environment
    check(s.http[0] == "127.0.0.2" and s.http[1] not in (1, 8000), "flags over environment: %s" % (s.http,))
    check(http_get(*s.http, "/v2/health/live")[0] == 200, "server from flags + environment not live")
    check(s.grpc is None, "gRPC started without --grpc-port")
    s.stop()
    check(not any(" debug " in line or " info " in line for line in s.lines), "--log-level warn lost to the env")
    # bad values from the environment are named
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOTSERVE_")}
    for var, val in (("HOTSERVE_GRPC_PORT", "abc"), ("HOTSERVE_HTTP_PORT", "70000"),
                     ("HOTSERVE_REQUIRE_SIGNATURE", "maybe")):
        p = subprocess.run([HOTSERVE, "serve", "--model-repository", repo], capture_output=True, text=True,
                           timeout=30, env=dict(clean, **{var: val}))
        check(p.returncode == 2 and var in p.stderr, "%s=%s: exit %d %r" % (var, val, p.returncode, p.stderr))
    # HOTSERVE_REQUIRE_SIGNATURE and HOTSERVE_TRUSTED_KEYS (':'-separated) work like the flags
    os.chdir(tmp)
    run("keygen", "a")
    run("keygen", "b")
    srepo = os.path.join(tmp, "signed")
    src = os.path.join(tmp, "ssrc")
    os.makedirs(src)
    shutil.copy(os.path.join(repo, "m", "1", "model.onnx"), src)
    run("publish", src, os.path.join(srepo, "m"), "--version", "1", "--key", "b.key")
    keys = "%s:%s" % (os.path.join(tmp, "a.pub"), os.path.join(tmp, "b.pub"))
    s = Serve(env={"HOTSERVE_MODEL_REPOSITORY": srepo, "HOTSERVE_HTTP_PORT": "0", "HOTSERVE_REQUIRE_SIGNATURE": "true",
                   "HOTSERVE_TRUSTED_KEYS": keys})
    check(http_get(*s.http, "/v2/models/m/ready")[0] == 200, "version signed by b (trusted by env) not served")
    s.stop()
    # a --trusted-key flag replaces the environment's keys: b is no longer trusted
    s = Serve("--http-port", "0", "--trusted-key", os.path.join(tmp, "a.pub"),
              env={"HOTSERVE_MODEL_REPOSITORY": srepo, "HOTSERVE_REQUIRE_SIGNATURE": "1", "HOTSERVE_TRUSTED_KEYS": keys})
    try:
        http_get(*s.http, "/v2/models/m/ready")
        raise AssertionError("version signed by b served though only a is trusted by flag")
    except urllib.error.HTTPError as e:
        check(e.code == 503, "ready: HTTP %d" % e.code)
    s.stop()


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as so:
            so.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6(tmp):
    repo = make_repo(tmp)
    if not ipv6_loopback():
        print("no IPv6 loopback here: IPv6 --host checks skipped")
        return
    # IPv6 only
    s = Serve("--model-repository", repo, "--settle=0", "--host", "::1", "--http-port", "0", "--grpc-port", "0", want_grpc=True)
    check(s.http[0] == "::1" and s.grpc[0] == "::1", "listening lines: %s %s" % (s.http, s.grpc))
    check(http_get("::1", s.http[1], "/v2/health/live") == (200, {"live": True}), "HTTP over ::1")
    check(grpc_live("ipv6:[::1]:%d" % s.grpc[1]), "gRPC over ::1")
    s.stop()
    # a dual-stack socket (what --host :: gives for every address) takes IPv4 clients: shown on the IPv4
    # loopback through its mapped IPv6 address, so that nothing listens beyond loopback
    s = Serve("--model-repository", repo, "--host", "::ffff:127.0.0.1", "--http-port", "0", "--grpc-port", "0",
              want_grpc=True)
    check(http_get("127.0.0.1", s.http[1], "/v2/health/live") == (200, {"live": True}), "IPv4 client, dual stack")
    check(grpc_live("127.0.0.1:%d" % s.grpc[1]), "gRPC IPv4 client, dual stack")
    s.stop()
    p = run("serve", "--model-repository", repo, "--host", "not-an-address", "--http-port", "0", expect=1)
    check("not an IPv4 or IPv6 address" in p.stderr, "bad --host: %r" % p.stderr)


def main():
    tmp = tempfile.mkdtemp(prefix="hs-cli-options-")
    try:
        test_help_and_errors()
        for fn, sub in ((test_value_forms, "forms"), (test_serve_env, "env"), (test_ipv6, "v6")):
            os.makedirs(os.path.join(tmp, sub))
            fn(os.path.join(tmp, sub))
        print("PASS")
    finally:
        for s in Serve.running:
            s.p.kill()
            s.p.wait()
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
