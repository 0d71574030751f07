#!/usr/bin/python3
"""test_signatures.py - with --require-signature only versions signed by a trusted key are served.

Keys from `hotserve keygen` (Ed25519 pair and HMAC key), versions from `hotserve publish --key` or
`hotserve sign`, all moved into the repository atomically. For each scheme: an unsigned version,
one signed by an unknown key, one whose signature was damaged, and one whose file changed after
signing are each refused: the previous version keeps answering, the status document shows the
reason, hotserve_model_verify_failures_total{model,reason} moves, and an ALERT log line names it.
A correctly signed version of either scheme is served.
"""
import json
import os

import numpy as np

import hsys
from hsys import check

X = np.array([[1.0, -2.0, 0.5, 8.0]], dtype=np.float32)


def stage_signed(tmp, version, key, tamper=None):
    """Signs a fresh version directory outside the repository; tamper in (None, 'signature', 'file').
    Returns the directory, ready to be renamed into the repository."""
    d = os.path.join(tmp, "stage", "signed", str(version))  # MODEL/VERSION: the manifest names both
    hsys.make_version_src(d, version)
    before = set(os.listdir(d))
    if key is not None:
        hsys.sign(d, key)
    elif tamper == "manifest_only":
        hsys.cli("sign", d)                         # a manifest, but no signature
    added = sorted(set(os.listdir(d)) - before)
    if key is not None:
        check(len(added) >= 2, "`hotserve sign --key` added only %s to %s" % (added, d))
    if tamper == "signature":
        sigs = [f for f in added if "sig" in f.lower()]
        check(len(sigs) == 1, "cannot tell the signature file among %s" % added)
        p = os.path.join(d, sigs[0])
        raw = open(p, "rb").read()
        try:                                        # a JSON signature record: damage only its value
            doc = json.loads(raw)
            value = doc["signature"]
            doc["signature"] = ("0" if value[0] != "0" else "1") + value[1:]
            raw = json.dumps(doc).encode()
        except (ValueError, KeyError, TypeError, IndexError):
            raw = raw[:-1] + bytes([raw[-1] ^ 0x01])  # a raw signature: flip a bit of its last byte
        open(p, "wb").write(raw)
    elif tamper == "file":
        p = os.path.join(d, "model.onnx")
        data = bytearray(open(p, "rb").read())
        data[-1] ^= 0x20
        open(p, "wb").write(bytes(data))
    return d


def test(tmp, args):
    hsys.require("serve", "publish", "sign", "keygen")
    keys = os.path.join(tmp, "keys")
    os.makedirs(keys)
    ed_priv, ed_pub = hsys.keygen(os.path.join(keys, "ed"))
    ed2_priv, _ = hsys.keygen(os.path.join(keys, "stranger"))
    hm, _ = hsys.keygen(os.path.join(keys, "hm"), hmac=True)
    hm2, _ = hsys.keygen(os.path.join(keys, "hm-stranger"), hmac=True)
    check(os.stat(ed_priv).st_mode & 0o077 == 0, "Ed25519 private key is readable by others")
    check(os.stat(hm).st_mode & 0o077 == 0, "HMAC key is readable by others")

    repo = os.path.join(tmp, "repo")
    model = os.path.join(repo, "signed")
    os.makedirs(model)
    hsys.publish(hsys.make_version_src(os.path.join(tmp, "src", "1"), 1), model, 1, key=ed_priv)
    srv = hsys.Server(repo, "--require-signature", "--trusted-key", ed_pub, "--trusted-key", hm,
                      "--poll-interval", "0.3", "--settle", "0.1")
    c = srv.conn()
    hsys.wait_serving(c, "signed", 1)
    r, out, _ = c.infer("signed", X)
    hsys.expect_values(out, X, 1, "Ed25519-signed version 1")

    serving = 1
    version = 1
    cases = [
        ("ed25519", None, None, ("unsigned",)),
        ("ed25519", None, "manifest_only", ("unsigned",)),
        ("ed25519", ed2_priv, None, ("unknown_key",)),
        ("ed25519", ed_priv, "signature", ("bad_signature",)),
        ("ed25519", ed_priv, "file", ("manifest_mismatch",)),
        ("ed25519", ed_priv, None, None),           # good: becomes serving
        ("hmac", hm2, None, ("unknown_key",)),
        ("hmac", hm, "signature", ("bad_signature",)),
        ("hmac", hm, "file", ("manifest_mismatch",)),
        ("hmac", hm, None, None),
    ]
    for scheme, key, tamper, reasons in cases:
        version += 1
        what = "%s version %d (%s)" % (scheme, version,
                                       ("unsigned, " + (tamper or "no manifest")) if key is None else
                                       "tampered " + tamper if tamper else
                                       "signed by %s" % os.path.basename(key))
        before = c.metrics().by_label("hotserve_model_verify_failures_total", "reason", model="signed")
        d = stage_signed(tmp, version, key, tamper)
        os.rename(d, os.path.join(model, str(version)))
        if reasons is None:
            hsys.wait_serving(c, "signed", version)
            serving = version
            r, out, _ = c.infer("signed", X)
            hsys.expect_values(out, X, version, what)
            continue

        def failed_entry():
            for e in hsys.status_entries(c, "signed"):
                if e["version"] == str(version) and e["state"] == "failed":
                    return e
            return None
        e = hsys.wait_for(failed_entry, "%s to be shown as failed" % what)
        check(e["reason"] in reasons, "%s refused with reason %r, wanted %s (error %r)"
              % (what, e["reason"], reasons, e.get("error")))
        check(not e["serving"], "%s is marked serving" % what)
        reason = e["reason"]
        after = c.metrics().by_label("hotserve_model_verify_failures_total", "reason", model="signed")
        check(after.get(reason, 0) == before.get(reason, 0) + 1,
              "%s: verify_failures_total{reason=%s} went %g -> %g" % (what, reason, before.get(reason, 0),
                                                                    after.get(reason, 0)))
        lines = srv.wait_log(r"model signed version %d failed: %s" % (version, reason),
                             "%s: a log line 'model signed version %d failed: %s: ...'" % (what, version, reason))
        check(any("alert" in line.lower() for line in lines), "%s: the refusal is not logged at ALERT level: %r"
              % (what, lines[0]))
        check(hsys.serving_version(c, "signed") == str(serving), "%s: serving version changed" % what)
        r, out, _ = c.infer("signed", X)
        check(r.status == 200, "%s: the old version stopped answering: HTTP %d" % (what, r.status))
        hsys.expect_values(out, X, serving, what + ": old version still serving")
        check(out[""]["model_version"] == str(serving), "%s: answered by %r" % (what, out[""]["model_version"]))

    # no key material in the log
    for path in (ed_priv, hm):
        secret = open(path, "rb").read().decode(errors="replace").strip()
        body = "".join(ch for ch in secret if ch.isalnum())[-24:]
        check(body and not any(body in line for line in srv.log_lines()), "key material of %s appears in the log"
              % os.path.basename(path))
    c.close()
    srv.stop()


if __name__ == "__main__":
    hsys.main(test, __doc__)
