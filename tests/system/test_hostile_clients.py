#!/usr/bin/python3
"""test_hostile_clients.py - request smuggling, invalid UTF-8 echoes and slowloris are all refused.

1. Framing (issue 16 class 9): a request with two Content-Length headers, with Content-Length and
   Transfer-Encoding together, or with a Content-Length that is not a plain number gets 400 and
   the connection is closed, so the bytes after it are never run as a second request (here: an
   unload of the served model, which must stay served).
2. Error bodies (class 16): requests whose model name, input name or malformed body carry invalid
   UTF-8 get a JSON error body that is valid UTF-8.
3. Slowloris (class 5): with --max-connections 8, connections from other loopback addresses
   (127.0.0.2 ...) that trickle their request head or body one byte at a time are cut by the
   server within --request-timeout (well before --idle-timeout), one address holds at most
   --max-client-connections, and /v2/health/live, /v2/health/ready and /metrics keep answering from
   127.0.0.1 while every ordinary slot is taken; afterwards inference works again.
Every socket has a timeout and every loop a bound.
"""
import json
import socket
import threading
import time

import numpy as np

import hsys
from hsys import check

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def raw_exchange(srv, data, timeout=10):
    """Sends data on a fresh connection and reads until the server closes it (or timeout).
    Returns (bytes read, closed_by_server)."""
    s = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(got) < 1 << 20:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return got, False
            if not chunk:
                return got, True
            got += chunk
        return got, False
    finally:
        s.close()


def status_lines(raw):
    return [line for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


def check_framing(srv, c):
    infer_body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                         "data": [1, 2, 3, 4]}]}).encode()
    smuggled = b"POST /v2/repository/models/m/unload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    cases = [
        ("two Content-Length headers",
         b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(infer_body), len(infer_body) + len(smuggled))
         + infer_body + smuggled),
        ("Content-Length with Transfer-Encoding",
         b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
         b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(infer_body)
         + b"%x\r\n" % len(infer_body) + infer_body + b"\r\n0\r\n\r\n" + smuggled),
        ("Content-Length with a sign",
         b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
         b"Content-Length: +%d\r\n\r\n" % len(infer_body) + infer_body + smuggled),
    ]
    for what, data in cases:
        raw, closed = raw_exchange(srv, data)
        lines = status_lines(raw)
        check(lines, "%s: no HTTP answer at all: %r" % (what, raw[:200]))
        check(b" 400 " in lines[0], "%s: answered %r, wanted 400" % (what, lines[0]))
        # (libmicrohttpd's own 400 for a malformed Content-Length repeats its status line; a
        # smuggled unload that ran would answer 200)
        check(all(b" 400 " in line for line in lines), "%s: a second request ran on the connection: %r"
              % (what, lines))
        check(closed, "%s: the server kept the connection open after the 400" % what)
        check(hsys.serving_version(c, "m") == "1", "%s: model m is no longer served (smuggled unload ran?)" % what)
    r, out, _ = c.infer("m", X)
    hsys.expect_values(out, X, 1, "after the framing cases")


def check_utf8(srv, c):
    cases = [
        ("model name with invalid UTF-8", "POST", "/v2/models/%FF%FEbad%C3%28/infer", b"{}"),
        ("input name with invalid UTF-8", "POST", "/v2/models/m/infer",
         b'{"inputs":[{"name":"\xff\xfe\xc3(","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'),
        ("malformed body with invalid UTF-8", "POST", "/v2/models/m/infer", b'{"inputs": [\xff\xfe\xed\xa0\x80 oops'),
        ("status of a model named in invalid UTF-8", "GET", "/v2/models/%ED%A0%80%F8/status", None),
    ]
    for what, method, path, body in cases:
        r = c.request(method, path, body)
        check(400 <= r.status < 500, "%s: HTTP %d, wanted a 4xx: %r" % (what, r.status, r.body[:200]))
        try:
            text = r.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise hsys.TestFailure("%s: the error body is not valid UTF-8 (%s): %r" % (what, e, r.body[:200]))
        doc = json.loads(text)
        check(isinstance(doc.get("error"), str) and doc["error"], "%s: no error message: %r" % (what, text[:200]))


class Trickler:
    """One connection from source address src that trickles its request one byte per step, until
    the server closes it or the attack ends; with whole_head the head goes at once and only the
    body trickles."""

    def __init__(self, srv, src, head, body=b"", whole_head=False):
        self.closed_at = None
        self.refused = False
        self.started = time.monotonic()
        self.data = body if whole_head else head + body
        try:
            self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.s.settimeout(5)
            self.s.bind((src, 0))
            self.s.connect((srv.host, srv.port))
            if whole_head:
                self.s.sendall(head)
        except OSError:
            self.refused = True
            self.s = None

    def step(self, i):
        """Sends byte i (if the connection is still open); notices a close by the server."""
        if self.s is None or self.closed_at is not None:
            return
        try:
            self.s.setblocking(False)
            try:
                if self.s.recv(4096) == b"":
                    self.closed_at = time.monotonic()
                    return
            except BlockingIOError:
                pass
            finally:
                self.s.setblocking(True)
            if i < len(self.data):
                self.s.send(self.data[i:i + 1])
        except OSError:
            self.closed_at = time.monotonic()

    def close(self):
        if self.s is not None:
            self.s.close()


def hold_slots(srv, body_head):
    """Eight connections (127.0.0.3 and .4, four each) whose heads are complete and whose bodies have
    not come: they hold every ordinary slot. libmicrohttpd counts a closed connection until its thread
    has been cleaned up, so right after other requests it may turn some of them away at its own limit;
    those are made again (bounded: 5 tries), so that the check below starts from slots really held."""
    for _ in range(5):
        held = [Trickler(srv, "127.0.0.%d" % k, body_head, b"{" * 64, whole_head=True) for k in (3, 4) for _ in range(4)]
        time.sleep(0.3)
        for a in held:
            a.step(len(a.data))  # sends nothing: only notices a connection the server closed
        if all(not a.refused and a.closed_at is None for a in held):
            return held
        for a in held:
            a.close()
        time.sleep(1)
    raise hsys.TestFailure("the server kept closing the connections meant to hold its slots")


def check_slowloris(srv, c):
    head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 64\r\n"
    # A body of 600000 bytes has --request-timeout (4 s) + 600000 / 65536 (about 9 s) to arrive.
    body_head = head.replace(b"Content-Length: 64", b"Content-Length: 600000") + b"\r\n"
    # Phase 1: one address tries to take every slot; it gets at most --max-client-connections.
    attackers = [Trickler(srv, "127.0.0.2", head) for _ in range(8)]
    time.sleep(0.2)
    for a in attackers:
        a.step(len(a.data))  # sends nothing: notes at once the ones the server turned away
    # More addresses whose heads are complete and whose bodies trickle: every ordinary slot
    # (--max-connections 8) holds a request in progress.
    attackers += hold_slots(srv, body_head)
    # Saturated: another ordinary request is turned away (503), while probes answer (below).
    # (Bounded retries for at most 6 s, inside the ~13 s before the bodies are cut: a loaded
    # machine may need a moment to read all eight heads; --request-timeout is 4 s, not less, so that
    # a connection whose thread a loaded machine starts late is not cut before its head is read.)
    statuses = []
    t_sat = time.monotonic()
    while time.monotonic() - t_sat < 6 and 503 not in statuses:
        probe = hsys.Client(srv.host, srv.port, timeout=10)
        r, _, _ = probe.infer("m", X)
        probe.close()  # no kept-alive connection left to take a slot of its own
        statuses.append(r.status)
        time.sleep(0.1)
    check(503 in statuses, "infer requests while every ordinary slot is held: HTTP %s, wanted a 503" % statuses)
    probes = 0
    rounds = 0
    t0 = time.monotonic()
    # Bounded: at most 75 rounds of 0.4 s (30 s); heads are due within 4 s, bodies within ~13 s.
    while rounds < 75:
        for a in attackers:
            a.step(rounds)
        if rounds % 3 == 1:
            p = hsys.Client(srv.host, srv.port, timeout=10)
            for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
                r = p.get(path)
                check(r.status == 200, "GET %s from 127.0.0.1 during the slowloris: HTTP %d" % (path, r.status))
            p.close()
            probes += 1
        if all(a.refused or a.closed_at is not None for a in attackers) and probes >= 3:
            break
        rounds += 1
        time.sleep(0.4)
    held = [a for a in attackers if not a.refused and a.closed_at is None]
    for a in attackers:
        a.close()
    check(probes >= 3, "only %d probe rounds ran" % probes)
    check(not held, "%d trickling connections were still open after %.1f s (heads due in 4 s, bodies in ~13 s, idle timeout 60 s)"
          % (len(held), time.monotonic() - t0))
    # At most --max-client-connections (4) of 127.0.0.2's 8 were ever served a head: the rest were
    # refused or closed at once (well before the 4 s deadline could have cut them).
    quick = sum(1 for a in attackers[:8] if a.refused or (a.closed_at is not None and a.closed_at - a.started < 1.5))
    check(quick >= 4, "127.0.0.2 held %d connections; --max-client-connections is 4" % (8 - quick))
    r, out, _ = hsys.Client(srv.host, srv.port, timeout=10).infer("m", X)
    hsys.expect_values(out, X, 1, "inference after the slowloris")


def test(tmp, args):
    hsys.require("serve", "publish")
    import os
    repo = os.path.join(tmp, "repo")
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "1"), 1), os.path.join(repo, "m"), 1)
    limits = ("--max-connections", "8", "--max-client-connections", "4", "--request-timeout", "4",
              "--idle-timeout", "60", "--poll-interval", "0.5", "--settle", "0.1")
    srv = hsys.Server(repo, *limits)
    c = srv.conn(timeout=30)
    hsys.wait_serving(c, "m", 1)
    check_framing(srv, c)
    check_utf8(srv, c)
    c.close()
    srv.stop(timeout=30)
    # The slowloris counts connection slots: it gets a server of its own, so that no connection the
    # checks above left open (kept alive until --idle-timeout) takes one of them.
    srv = hsys.Server(repo, *limits)
    c = srv.conn(timeout=30)
    hsys.wait_serving(c, "m", 1)
    check_slowloris(srv, c)
    c.close()
    srv.stop(timeout=30)


if __name__ == "__main__":
    hsys.main(test, __doc__)
