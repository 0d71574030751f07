#!/usr/bin/env python3
"""keygen -> sign -> verify round trips through the real binary, and verify naming each reason."""
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

HOTSERVE = sys.argv[1]
OUTPUTS = []  # every stdout/stderr seen, checked for key material at the end


def run(*args, expect=None):
    p = subprocess.run([HOTSERVE, *args], capture_output=True, text=True, timeout=60)
    OUTPUTS.append(p.stdout + p.stderr)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"hotserve {' '.join(args)}: exit {p.returncode}, want {expect}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def expect_reason(d, reason, *keys):
    args = ["verify", d]
    for k in keys:
        args += ["--trusted-key", k]
    p = run(*args, expect=1)
    assert f": {reason}: " in p.stderr, f"want reason {reason}, got: {p.stderr}"


def main():
    tmp = tempfile.mkdtemp(prefix="hs-cli-")
    try:
        os.chdir(tmp)
        for cmd in ("keygen", "sign", "verify", "publish"):
            p = run(cmd, "--help", expect=0)
            assert p.stdout.startswith("usage: hotserve " + cmd), p.stdout
            run(cmd, expect=2)  # missing arguments: usage error
        run("sign", "x", "--bogus", expect=2)

        run("keygen", "alice", expect=0)
        run("keygen", "bob", expect=0)
        run("keygen", "--hmac", "team", expect=0)
        assert stat.S_IMODE(os.stat("alice.key").st_mode) == 0o600
        assert stat.S_IMODE(os.stat("team.key").st_mode) == 0o600
        assert "BEGIN PUBLIC KEY" in open("alice.pub").read()
        p = run("keygen", "alice", expect=1)  # never overwrites
        assert "refusing to overwrite" in p.stderr

        os.makedirs("v/sub")
        with open("v/model.onnx", "wb") as f:
            f.write(bytes(range(256)) * 64)
        with open("v/sub/data.bin", "wb") as f:
            f.write(b"external data")

        # No manifest yet.
        expect_reason("v", "unsigned", "alice.pub")

        run("sign", "v", "--key", "alice.key", expect=0)
        assert os.path.exists("v/hotserve-manifest.json") and os.path.exists("v/hotserve-manifest.sig")
        p = run("verify", "v", "--trusted-key", "alice.pub", expect=0)
        assert "ok" in p.stdout
        run("verify", "v", "--trusted-key", "bob.pub", "--trusted-key", "alice.pub", expect=0)
        expect_reason("v", "unknown_key", "bob.pub")
        expect_reason("v", "unknown_key", "team.key")

        # One flipped byte, same size.
        with open("v/model.onnx", "r+b") as f:
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 1]))
        expect_reason("v", "manifest_mismatch", "alice.pub")
        with open("v/model.onnx", "r+b") as f:
            f.seek(1000)
            f.write(b)
        run("verify", "v", "--trusted-key", "alice.pub", expect=0)

        # Extra file, then missing file.
        open("v/sub/extra", "w").write("x")
        expect_reason("v", "manifest_mismatch", "alice.pub")
        os.remove("v/sub/extra")
        os.rename("v/sub/data.bin", "data.bin")
        expect_reason("v", "manifest_mismatch", "alice.pub")
        os.rename("data.bin", "v/sub/data.bin")

        # The signature covers the manifest's bytes: change one, the signature breaks.
        man = open("v/hotserve-manifest.json").read()
        open("v/hotserve-manifest.json", "w").write(man.replace('"files"', '"files" '))
        expect_reason("v", "bad_signature", "alice.pub")
        open("v/hotserve-manifest.json", "w").write(man)
        sig = open("v/hotserve-manifest.sig").read()
        m = re.search(r'"signature": "([0-9a-f]+)"', sig)
        flipped = m.group(1)[:-1] + ("0" if m.group(1)[-1] != "0" else "1")
        open("v/hotserve-manifest.sig", "w").write(sig.replace(m.group(1), flipped))
        expect_reason("v", "bad_signature", "alice.pub")
        open("v/hotserve-manifest.sig", "w").write("not json")
        expect_reason("v", "bad_signature", "alice.pub")

        # A manifest entry leading out of the directory.
        run("sign", "v", expect=0)  # unsigned manifest
        assert not os.path.exists("v/hotserve-manifest.sig")
        expect_reason("v", "unsigned", "alice.pub")
        run("verify", "v", expect=0)  # manifest only
        open("v/hotserve-manifest.json", "w").write(
            '{"format":"hotserve-manifest/1","files":[{"path":"../alice.key","size":1,"sha256":"%s"}]}' % ("0" * 64))
        expect_reason("v", "unsafe_path")
        open("v/hotserve-manifest.json", "w").write('{"format":"hotserve-manifest/1","files":')
        expect_reason("v", "bad_manifest")

        # A symlink out of the directory is refused by sign and by verify.
        os.symlink(os.path.join(tmp, "alice.key"), "v/sub/link")
        p = run("sign", "v", "--key", "alice.key", expect=1)
        assert "unsafe_path" in p.stderr, p.stderr
        os.remove("v/sub/link")

        # HMAC round trip.
        run("sign", "v", "--key", "team.key", expect=0)
        run("verify", "v", "--trusted-key", "team.key", expect=0)
        expect_reason("v", "unknown_key", "alice.pub")

        # The server side never takes a private key, and a public key cannot sign.
        p = run("verify", "v", "--trusted-key", "alice.key", expect=2)
        assert "private key" in p.stderr
        p = run("sign", "v", "--key", "alice.pub", expect=1)
        assert "public key" in p.stderr

        # No command ever printed key material.
        secret = open("team.key").read().split()[1]
        pem_body = "".join(open("alice.key").read().splitlines()[1:-1])
        for out in OUTPUTS:
            assert secret not in out and pem_body not in out and "PRIVATE KEY" not in out, out
        print("ok")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
