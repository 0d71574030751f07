"""hsys.py - shared harness for hotserve's system tests: a real `hotserve serve` process on a free
loopback port over a temporary model repository, real HTTP (KServe v2) and real CLI calls.

Every test script is a plain program:  python3 test_x.py  (ctest passes --hotserve and --source).
Exit status: 0 passed, 1 failed (the message says what the server did wrong), 77 skipped because
a subcommand it needs is still a placeholder ("not built yet").  Only the standard library and
numpy are used; the ONNX test models come from tools/testmodels/make_test_model.py (imported).
"""
import argparse
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

SKIP = 77


class TestFailure(Exception):
    """A broken promise of the server's contract; the message names it."""


class Skip(Exception):
    """The test cannot run yet (a subcommand it needs is a placeholder)."""


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


# ---------------------------------------------------------------------------------------------
# configuration: where the binary and the sources are
# ---------------------------------------------------------------------------------------------
class Env:
    hotserve = None      # path of build/src/hotserve
    source = None        # repository root
    keep = False         # keep temp dirs even on success
    sanitized = os.environ.get("HS_SANITIZED", "")  # "address" / "thread" under run_sanitized.sh


def parse_args(description, extra=None):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", ".."))
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--hotserve", default=os.environ.get("HOTSERVE", os.path.join(root, "build", "src", "hotserve")))
    p.add_argument("--source", default=root)
    p.add_argument("--keep", action="store_true", help="keep the temporary repository and logs")
    if extra:
        extra(p)
    a = p.parse_args()
    Env.hotserve = os.path.abspath(a.hotserve)
    Env.source = os.path.abspath(a.source)
    Env.keep = a.keep
    return a


def run_test(fn, args):
    """Runs fn(tmpdir, args) and turns the outcome into an exit status."""
    tmp = tempfile.mkdtemp(prefix="hs-systest-")
    ok = False
    try:
        fn(tmp, args)
        ok = True
        print("PASS")
        return 0
    except Skip as e:
        ok = True
        print("SKIP: %s" % e)
        return SKIP
    except TestFailure as e:
        print("FAIL: %s" % e)
        Server.dump_all_logs()
        return 1
    except Exception:  # a harness error or an unexpected server answer: still a failure
        traceback.print_exc()
        Server.dump_all_logs()
        return 1
    finally:
        Server.stop_all()
        if ok and not Env.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("temporary files kept in %s" % tmp)


def main(fn, description, extra=None):
    args = parse_args(description, extra)
    sys.exit(run_test(fn, args))


# ---------------------------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------------------------
def cli(*argv, check_rc=True, timeout=60):
    """Runs `hotserve ARGV...`; returns CompletedProcess (text). Raises Skip for a placeholder."""
    r = subprocess.run([Env.hotserve] + [str(a) for a in argv], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout)
    if r.returncode != 0 and "not built yet" in r.stderr:
        raise Skip("`hotserve %s` is not built yet" % argv[0])
    if check_rc and r.returncode != 0:
        raise TestFailure("`hotserve %s` exited %d: %s" % (" ".join(map(str, argv)), r.returncode,
                                                          r.stderr.strip()[-2000:]))
    return r


def require(*subcommands):
    """Skips the test when any of the subcommands is still a placeholder."""
    for sc in subcommands:
        r = subprocess.run([Env.hotserve, sc, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        if "not built yet" in (r.stderr + r.stdout):
            raise Skip("`hotserve %s` is not built yet" % sc)


def publish(src, model_dir, version=None, key=None):
    argv = ["publish", src, model_dir]
    if version is not None:
        argv += ["--version", version]
    if key is not None:
        argv += ["--key", key]
    return cli(*argv)


def sign(d, key):
    return cli("sign", d, "--key", key)


def keygen(name, hmac=False):
    """Makes keys; returns (private_or_shared_key, public_key_or_same)."""
    if hmac:
        cli("keygen", "--hmac", name)
        return name + ".key", name + ".key"
    cli("keygen", name)
    return name + ".key", name + ".pub"


# ---------------------------------------------------------------------------------------------
# test models (output y = x + K identifies version K)
# ---------------------------------------------------------------------------------------------
_mtm = None


def _model_module():
    global _mtm
    if _mtm is None:
        sys.path.insert(0, os.path.join(Env.source, "tools", "testmodels"))
        import make_test_model  # noqa: E402  (the project's generator)
        _mtm = make_test_model
    return _mtm


_model_cache = {}


def model_bytes(add, shape=(1, 4), slow=0):
    key = (float(add), tuple(shape), slow)
    if key not in _model_cache:
        _model_cache[key] = _model_module().build(float(add), list(shape), slow, 13).SerializeToString()
    return _model_cache[key]


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def publish_bytes(tmp, model_dir, version, data):
    """Publishes model file bytes data as model_dir/<version> (`hotserve publish` from tmp/src<version>)."""
    src = os.path.join(tmp, "src%s" % version)
    write_file(os.path.join(src, "model.onnx"), data)
    return publish(src, model_dir, version)


def make_version_src(d, add, shape=(1, 4), slow=0):
    """Writes a source directory d/model.onnx (y = x + add) ready for `hotserve publish`."""
    write_file(os.path.join(d, "model.onnx"), model_bytes(add, shape, slow))
    return d


def replace_atomically(path, data, scratch):
    """Writes data to a file in scratch (same filesystem, outside the repository) and renames it
    over path, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=scratch)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def write_golden(vdir, inputs, outputs):
    """Ships a golden check: vdir/golden/inputs/<input>.npy and vdir/golden/outputs/<output>.npy."""
    for sub, arrays in (("inputs", inputs), ("outputs", outputs)):
        d = os.path.join(vdir, "golden", sub)
        os.makedirs(d, exist_ok=True)
        for name, arr in arrays.items():
            np.save(os.path.join(d, name + ".npy"), arr)


# ---------------------------------------------------------------------------------------------
# the server process
# ---------------------------------------------------------------------------------------------
LISTEN_RE = re.compile(r"^hotserve: listening on http://([0-9.]+):(\d+)\s*$")


class MemoryCgroup:
    """A memory cgroup this test creates (cgroup v2 where the memory controller can be enabled for a
    child, else the v1 memory hierarchy), limited to limit_bytes; Server(..., cgroup=g) starts the
    server inside it. Skips (77) where no group can be made (not root, no memory controller).
    remove() after the servers in it have stopped."""

    def __init__(self, name, limit_bytes):
        name = "hotserve-test-%s-%d" % (name, os.getpid())
        v2 = "/sys/fs/cgroup/cgroup.controllers"
        try:
            if os.path.exists(v2) and "memory" in open(v2).read().split():
                with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
                    f.write("+memory")
                self.path = os.path.join("/sys/fs/cgroup", name)
                os.mkdir(self.path)
                with open(os.path.join(self.path, "memory.max"), "w") as f:
                    f.write(str(limit_bytes))
                with open(os.path.join(self.path, "memory.swap.max"), "w") as f:
                    f.write("0")
            elif os.path.isdir("/sys/fs/cgroup/memory"):
                self.path = os.path.join("/sys/fs/cgroup/memory", name)
                os.mkdir(self.path)
                with open(os.path.join(self.path, "memory.limit_in_bytes"), "w") as f:
                    f.write(str(limit_bytes))
            else:
                raise Skip("no memory cgroup controller here")
        except OSError as e:
            raise Skip("cannot create a memory cgroup here: %s" % e)

    def remove(self):
        for _ in range(50):  # bounded: the group empties once its processes have exited
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


class Server:
    """A `hotserve serve` child process; its stderr is captured line by line in .log."""
    _all = []

    def __init__(self, repo, *extra, log_level="info", start_timeout=120, wait_ready=True, cgroup=None):
        self.repo = repo
        argv = [Env.hotserve, "serve", "--model-repository", repo, "--host", "127.0.0.1",
                "--http-port", "0", "--log-level", log_level] + [str(e) for e in extra]
        self.argv = argv
        self.log = []
        self.log_lock = threading.Lock()
        self.listening = threading.Event()
        self.host = self.port = None
        join = None
        if cgroup is not None:  # the server starts inside the group (MemoryCgroup), before it reads any limit
            procs = os.path.join(cgroup.path, "cgroup.procs")

            def join():
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace", preexec_fn=join)
        Server._all.append(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + start_timeout
        while not self.listening.is_set():
            if self.proc.poll() is not None:
                self.reader.join(5)
                if any("not built yet" in line for line in self.log):
                    raise Skip("`hotserve serve` is not built yet")
                raise TestFailure("server exited with %d before listening" % self.proc.returncode)
            check(time.monotonic() < deadline, "server did not print its listening line in %ds" % start_timeout)
            self.listening.wait(0.05)
        # It listens before its start-up loads; /v2/health/ready says 503 until they are done.
        while wait_ready and not self.ready():
            check(self.proc.poll() is None, "server exited with %s before it was ready" % self.proc.returncode)
            check(time.monotonic() < deadline, "server not ready %ds after start" % start_timeout)
            time.sleep(0.05)

    def ready(self):
        """GET /v2/health/ready on a fresh connection: True on 200."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            c.request("GET", "/v2/health/ready")
            r = c.getresponse()
            r.read()
            return r.status == 200
        finally:
            c.close()

    def _read(self):
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            with self.log_lock:
                self.log.append(line)
            m = LISTEN_RE.match(line)
            if m and not self.listening.is_set():
                self.host, self.port = m.group(1), int(m.group(2))
                self.listening.set()

    @property
    def pid(self):
        return self.proc.pid

    def log_lines(self):
        with self.log_lock:
            return list(self.log)

    def log_matching(self, pattern):
        rx = re.compile(pattern)
        return [line for line in self.log_lines() if rx.search(line)]

    def wait_log(self, pattern, what, timeout=10):
        """Lines matching pattern, waiting a little: the server may update its status document
        before the log line has made it through the pipe."""
        return wait_for(lambda: self.log_matching(pattern), what, timeout)

    def conn(self, timeout=60):
        return Client(self.host, self.port, timeout)

    def rss_bytes(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise TestFailure("no VmRSS for the server")

    def stop(self, timeout=60):
        """SIGTERM; the contract says: finish in-flight requests and exit 0 (sanitizers report here)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise TestFailure("server did not exit within %ds of SIGTERM" % timeout)
        self.reader.join(10)
        if self in Server._all:
            Server._all.remove(self)
        check(self.proc.returncode == 0, "server exited with status %d after SIGTERM (sanitizer report or crash?)"
              % self.proc.returncode + self._tail())

    def _tail(self, n=60):
        lines = self.log_lines()[-n:]
        return "\n--- server log (last %d lines) ---\n%s" % (len(lines), "\n".join(lines))

    @classmethod
    def dump_all_logs(cls):
        for s in cls._all:
            print(s._tail(120))

    @classmethod
    def stop_all(cls):
        for s in list(cls._all):
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
            cls._all.remove(s)


# ---------------------------------------------------------------------------------------------
# HTTP client (one keep-alive connection per Client)
# ---------------------------------------------------------------------------------------------
class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise TestFailure("response (HTTP %d) is not JSON: %r (%s)" % (self.status, self.body[:200], e))

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Client:
    def __init__(self, host, port, timeout=60):
        self.host, self.port, self.timeout = host, port, timeout
        self.c = http.client.HTTPConnection(host, port, timeout=timeout)

    def close(self):
        self.c.close()

    def request(self, method, path, body=None, headers=None):
        """One request on the kept-alive connection; connection errors propagate (they are failures)."""
        h = dict(headers or {})
        if body is not None and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        if r.getheader("Connection", "").lower() == "close":
            self.c.close()
        return Response(r.status, r.getheaders(), data)

    def get(self, path):
        return self.request("GET", path)

    def get_json(self, path, want=200):
        r = self.get(path)
        check(r.status == want, "GET %s: HTTP %d (wanted %d): %r" % (path, r.status, want, r.body[:300]))
        return r.json()

    def post_json(self, path, doc):
        return self.request("POST", path, json.dumps(doc).encode())

    # --- inference -----------------------------------------------------------------------------
    @staticmethod
    def infer_path(model, version=None):
        if version is None:
            return "/v2/models/%s/infer" % model
        return "/v2/models/%s/versions/%s/infer" % (model, version)

    def infer(self, model, x, version=None, binary=False, input_name="x"):
        """POSTs one FP32 input; returns (Response, outputs dict name -> ndarray or None, doc)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        path = self.infer_path(model, version)
        if not binary:
            doc = {"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                               "data": x.ravel().tolist()}]}
            r = self.post_json(path, doc)
        else:
            raw = x.tobytes()
            hdr = json.dumps({"inputs": [{"name": input_name, "datatype": "FP32", "shape": list(x.shape),
                                          "parameters": {"binary_data_size": len(raw)}}],
                              "parameters": {"binary_data_output": True}}).encode()
            r = self.request("POST", path, hdr + raw, {"Content-Type": "application/octet-stream",
                                                        "Inference-Header-Content-Length": str(len(hdr))})
        if r.status != 200:
            return r, None, None
        return r, decode_infer_response(r), None

    def metrics(self):
        r = self.get("/metrics")
        check(r.status == 200, "GET /metrics: HTTP %d" % r.status)
        return Metrics(r.body.decode())

    def status(self, model):
        return self.get_json("/v2/models/%s/status" % model)


DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8,
          "INT8": np.int8, "FP16": np.float16, "INT16": np.int16, "BOOL": np.bool_}


def decode_infer_response(r):
    """Returns {output name: ndarray} plus '' -> the response JSON; JSON or binary bodies."""
    hlen = r.header("Inference-Header-Content-Length")
    if hlen is not None:
        n = int(hlen)
        check(0 <= n <= len(r.body), "Inference-Header-Content-Length %s > body %d" % (hlen, len(r.body)))
        doc = json.loads(r.body[:n].decode())
        off = n
        out = {"": doc}
        for o in doc.get("outputs", []):
            dt = DTYPES[o["datatype"]]
            shape = o["shape"]
            size = (o.get("parameters") or {}).get("binary_data_size")
            if size is None:
                out[o["name"]] = np.array(o["data"], dtype=dt).reshape(shape)
                continue
            check(off + size <= len(r.body), "binary output %s runs past the body" % o["name"])
            out[o["name"]] = np.frombuffer(r.body[off:off + size], dtype=dt).reshape(shape)
            off += size
        check(off == len(r.body), "binary response has %d trailing bytes" % (len(r.body) - off))
        return out
    doc = r.json()
    out = {"": doc}
    for o in doc.get("outputs", []):
        out[o["name"]] = np.array(o["data"], dtype=DTYPES[o["datatype"]]).reshape(o["shape"])
    return out


# ---------------------------------------------------------------------------------------------
# Prometheus text
# ---------------------------------------------------------------------------------------------
_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = []   # (name, {labels}, value)
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line)
            check(m is not None, "unparsable metrics line: %r" % line)
            labels = dict(_LABEL_RE.findall(m.group(3) or ""))
            self.samples.append((m.group(1), labels, float(m.group(4))))

    def get(self, name, **labels):
        """Sum of the samples called name whose labels include the given ones (0 when none)."""
        return sum(v for n, l, v in self.samples
                   if n == name and all(l.get(k) == str(w) for k, w in labels.items()))

    def has(self, name, **labels):
        return any(n == name and all(l.get(k) == str(w) for k, w in labels.items())
                   for n, l, _ in self.samples)

    def by_label(self, name, label, **labels):
        out = {}
        for n, l, v in self.samples:
            if n == name and all(l.get(k) == str(w) for k, w in labels.items()):
                out[l.get(label)] = out.get(l.get(label), 0) + v
        return out


# ---------------------------------------------------------------------------------------------
# waiting (liveness bounds, not speed assertions: the limits are generous)
# ---------------------------------------------------------------------------------------------
def slow_factor():
    return 4 if Env.sanitized else 1


def wait_for(pred, what, timeout=30, interval=0.02):
    deadline = time.monotonic() + timeout * slow_factor()
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TestFailure("timed out after %gs waiting for %s" % (timeout * slow_factor(), what))
        time.sleep(interval)


class BackgroundInfer:
    """One inference request (Client.infer(model, x, **infer_kw)) on its own connection in a thread, for the
    tests that change the repository while a request is in flight. wait_inflight() waits until the server
    counts it (or it has ended), running() says whether it has not answered yet, join() collects it."""

    def __init__(self, srv, model, x, conn_timeout=60, **infer_kw):
        self.model = model
        self.resp = None       # (Response, outputs, doc) as Client.infer returns it
        self.exc = None        # what the request raised instead
        self.done_at = None    # time.monotonic() when the response arrived
        self.took = None       # seconds from sending to the response
        self.thread = threading.Thread(target=self._run, args=(srv, x, conn_timeout, infer_kw))
        self.thread.start()

    def _run(self, srv, x, conn_timeout, infer_kw):
        cc = srv.conn(timeout=conn_timeout)
        try:
            t = time.monotonic()
            self.resp = cc.infer(self.model, x, **infer_kw)
            self.done_at = time.monotonic()
            self.took = self.done_at - t
        except Exception as e:  # join() reports it
            self.exc = e
        finally:
            cc.close()

    def running(self):
        """True while the request has neither answered nor raised."""
        return self.resp is None and self.exc is None

    def wait_inflight(self, client, what):
        """Waits until /metrics counts a request in flight on the model, or this one has ended."""
        wait_for(lambda: client.metrics().get("hotserve_inflight_requests", model=self.model) >= 1
                 or not self.running(), what)

    def join(self, timeout, what="the in-flight request"):
        """Waits up to timeout seconds; fails unless the request answered; returns (Response, outputs, doc)."""
        self.thread.join(timeout)
        check(not self.thread.is_alive(), "%s never finished" % what)
        check(self.exc is None and self.resp is not None, "%s failed: %r" % (what, self.exc))
        return self.resp


def timed_infers(client, model, x, rounds=3, what="calibration request", **infer_kw):
    """Sends the same request rounds times; fails unless each answers 200; returns (the shortest wall time in
    seconds, the outputs of every round)."""
    best, outs = None, []
    for _ in range(rounds):
        t = time.monotonic()
        r, out, _ = client.infer(model, x, **infer_kw)
        check(r.status == 200, "%s: HTTP %d %r" % (what, r.status, r.body[:200]))
        best = min(best or 1e9, time.monotonic() - t)
        outs.append(out)
    return best, outs


def serving_version(client, model):
    r = client.get("/v2/models/%s/status" % model)
    if r.status != 200:
        return None
    return r.json().get("serving_version")


def wait_serving(client, model, version, timeout=30):
    wait_for(lambda: serving_version(client, model) == str(version),
             "model %s to serve version %s" % (model, version), timeout)


def status_entries(client, model):
    return client.status(model).get("versions", [])


def expect_values(outputs, x, k, what):
    y = outputs.get("y")
    check(y is not None, "%s: response has no output y" % what)
    want = np.asarray(x, dtype=np.float32) + np.float32(k)
    check(y.shape == want.shape, "%s: output shape %s, wanted %s" % (what, y.shape, want.shape))
    check(np.allclose(y, want, rtol=1e-5, atol=1e-5),
          "%s: output %s is not x + %s (= %s)" % (what, y.ravel()[:4], k, want.ravel()[:4]))


def rescan(client):
    r = client.request("POST", "/v2/repository/index", b"{}")
    check(r.status == 200, "POST /v2/repository/index: HTTP %d %r" % (r.status, r.body[:200]))
    return r.json()
