#!/usr/bin/env python3
"""hotserve publish: next-number choice, --version, no overwrite, and atomicity: an observer that
lists the model directory as fast as it can never sees a version directory that is incomplete. The
manifest names the bytes written (publish hashes them as it copies), and a source rewritten while it
is copied is refused instead of published half old, half new."""
import glob
import hashlib
import json
import signal
import time
import os
import shutil
import subprocess
import sys
import tempfile
import threading

HOTSERVE = sys.argv[1]


def run(*args, expect=0):
    p = subprocess.run([HOTSERVE, *args], capture_output=True, text=True, timeout=120)
    if p.returncode != expect:
        raise AssertionError(f"hotserve {' '.join(args)}: exit {p.returncode}, want {expect}\n{p.stderr}")
    return p


def main():
    tmp = tempfile.mkdtemp(prefix="hs-publish-")
    try:
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, "data"))
        big = os.urandom(1 << 20) * 24  # 24 MiB: copying takes long enough to be caught half-way
        with open(os.path.join(src, "model.onnx"), "wb") as f:
            f.write(big)
        for i in range(8):
            with open(os.path.join(src, "data", f"part{i}.bin"), "wb") as f:
                f.write(bytes([i]) * 100000)
        expected = {"model.onnx": len(big), **{f"data/part{i}.bin": 100000 for i in range(8)}}
        model = os.path.join(tmp, "repo", "m")

        stop = threading.Event()
        seen = {"checks": 0, "bad": []}

        def observe():
            while not stop.is_set():
                try:
                    names = os.listdir(model)
                except FileNotFoundError:
                    continue
                for n in names:
                    if not n.isdigit():
                        continue
                    d = os.path.join(model, n)
                    try:
                        man = json.load(open(os.path.join(d, "hotserve-manifest.json")))
                        listed = {e["path"]: e["size"] for e in man["files"]}
                        sizes = {p: os.path.getsize(os.path.join(d, p)) for p in expected}
                    except (OSError, ValueError) as e:
                        seen["bad"].append(f"{n}: {e}")
                        continue
                    if listed != expected or sizes != expected:
                        seen["bad"].append(f"{n}: incomplete {sizes}")
                    seen["checks"] += 1

        t = threading.Thread(target=observe)
        t.start()
        try:
            outs = [run("publish", src, model).stdout.strip() for _ in range(3)]
            # Two publishers racing for the next number both succeed with distinct numbers.
            procs = [subprocess.Popen([HOTSERVE, "publish", src, model], stdout=subprocess.PIPE, text=True)
                     for _ in range(2)]
            for p in procs:
                out, _ = p.communicate(timeout=120)
                assert p.returncode == 0
                outs.append(out.strip())
        finally:
            stop.set()
            t.join()
        assert outs[:3] == [f"{model}/1", f"{model}/2", f"{model}/3"], outs
        assert sorted(outs[3:]) == [f"{model}/4", f"{model}/5"], outs
        assert not seen["bad"], seen["bad"][:5]
        assert seen["checks"] > 0
        # The manifest's hashes (taken while copying) are those of the bytes in the source and the copy.
        man = json.load(open(os.path.join(model, "1", "hotserve-manifest.json")))
        for e in man["files"]:
            with open(os.path.join(src, e["path"]), "rb") as f:
                want = hashlib.sha256(f.read()).hexdigest()
            with open(os.path.join(model, "1", e["path"]), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == want == e["sha256"], e["path"]

        # --version picks the number; an existing one is never overwritten.
        assert run("publish", src, model, "--version", "10").stdout.strip() == f"{model}/10"
        p = run("publish", src, model, "--version", "3", expect=1)
        assert "already exists" in p.stderr
        assert run("publish", src, model).stdout.strip() == f"{model}/11"
        run("publish", src, model, "--version", "0", expect=2)
        run("publish", src, model, "--version", "abc", expect=2)
        # A source without model.onnx, or a missing source: refused, nothing created.
        os.makedirs(os.path.join(tmp, "empty"))
        run("publish", os.path.join(tmp, "empty"), model, expect=1)
        run("publish", os.path.join(tmp, "missing"), model, expect=1)
        leftovers = [n for n in os.listdir(model) if not n.isdigit()]
        assert leftovers == [], leftovers
        assert sorted(int(n) for n in os.listdir(model)) == [1, 2, 3, 4, 5, 10, 11]

        # Signed publish verifies; the staged copy is what was verified.
        os.chdir(tmp)
        run("keygen", "rel")
        out = run("publish", src, model, "--key", "rel.key").stdout.strip()
        run("verify", out, "--trusted-key", "rel.pub")
        p = run("verify", f"{model}/1", "--trusted-key", "rel.pub", expect=1)
        assert ": unsigned: " in p.stderr

        # Version numbers a server never serves (more than 18 digits) are refused, and the
        # automatic number stops at the highest servable one instead of running past it.
        small = os.path.join(tmp, "small")
        os.makedirs(small)
        with open(os.path.join(small, "model.onnx"), "wb") as f:
            f.write(b"x" * 100)
        top = os.path.join(tmp, "repo", "top")
        p = run("publish", small, top, "--version", "1000000000000000000", expect=2)
        assert "at most 999999999999999999" in p.stderr, p.stderr
        run("publish", small, top, "--version", "99999999999999999999999", expect=2)
        assert run("publish", small, top, "--version", "999999999999999999").stdout.strip() == f"{top}/999999999999999999"
        p = run("publish", small, top, expect=1)
        assert "no version number left" in p.stderr, p.stderr
        assert sorted(os.listdir(top)) == ["999999999999999999"], os.listdir(top)

        # Staging directories of killed publishers: an old unlocked one is removed by the next
        # publish; one whose publisher still holds its lock, and a young one, are left alone.
        import fcntl
        import time
        stale = os.path.join(model, ".staging-dead01")
        held = os.path.join(model, ".staging-live01")
        young = os.path.join(model, ".staging-young1")
        for d in (stale, held, young):
            os.makedirs(os.path.join(d, "sub"))
            with open(os.path.join(d, "sub", "model.onnx"), "wb") as f:
                f.write(b"partial")
        old = time.time() - 3600
        for d in (stale, held):
            os.utime(d, (old, old))
        lock_fd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            run("publish", small, model)
        finally:
            os.close(lock_fd)
        assert not os.path.exists(stale), "a stale unlocked staging directory was left behind"
        assert os.path.isdir(held), "a staging directory whose publisher holds the lock was removed"
        assert os.path.isdir(young), "a staging directory younger than two minutes was removed"
        run("publish", small, model)  # the lock is gone now: the old one goes too
        assert not os.path.exists(held), "an old staging directory was kept after its lock was dropped"

        source_rewritten_while_copied(tmp)
        print("ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def source_rewritten_while_copied(tmp):
    """A publisher stopped (SIGSTOP) half-way through copying model.onnx while the source's first
    byte is rewritten: it must fail and leave nothing, not sign a copy that is half old, half new."""
    src = os.path.join(tmp, "changing")
    os.makedirs(src)
    path = os.path.join(src, "model.onnx")
    size = 96 << 20
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20) * 96)
    caught = False
    for attempt in range(5):
        model = os.path.join(tmp, "repo", f"changing{attempt}")
        p = subprocess.Popen([HOTSERVE, "publish", src, model], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            stopped = False
            while p.poll() is None and time.monotonic() < deadline:
                copies = glob.glob(os.path.join(model, ".staging-*", "model.onnx"))
                try:
                    copied = os.path.getsize(copies[0]) if copies else 0
                except OSError:
                    copied = 0
                if 0 < copied < size:
                    os.kill(p.pid, signal.SIGSTOP)
                    stopped = True
                    break
                time.sleep(0.0005)
            if stopped:
                copies = glob.glob(os.path.join(model, ".staging-*", "model.onnx"))
                if copies and os.path.getsize(copies[0]) < size:  # still half-way: rewrite the source
                    with open(path, "r+b") as f:
                        first = f.read(1)
                        f.seek(0)
                        f.write(bytes([first[0] ^ 0xFF]))
                    caught = True
                os.kill(p.pid, signal.SIGCONT)
            out, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
        if not caught:  # the copy finished before it could be stopped: a good version, try again
            assert p.returncode == 0, err
            run("verify", out.strip())
            continue
        assert p.returncode == 1, (p.returncode, out, err)
        assert "changed while it was being published" in err, err
        assert os.listdir(model) == [], os.listdir(model)  # no version, no staging left
        break
    assert caught, "never caught a publisher half-way through a 96 MiB copy in 5 tries"
    # Published again once complete, the version matches the source as it is now.
    out = run("publish", src, model).stdout.strip()
    run("verify", out)
    man = json.load(open(os.path.join(out, "hotserve-manifest.json")))
    with open(path, "rb") as f:
        assert man["files"][0]["sha256"] == hashlib.sha256(f.read()).hexdigest()


if __name__ == "__main__":
    main()
