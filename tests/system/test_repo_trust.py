#!/usr/bin/python3
"""test_repo_trust.py - with --require-signature nothing unsigned chooses what code or model runs.

Issue 16 classes 1 and 8, through a real server with --require-signature and one trusted key:
- a config.json naming a backend library through a directory symlink that leads out of the
  repository ("backend": "lib/evil.so") is refused: a backend is a plug-in name, never a path;
- an unsigned config.json (here naming a plug-in) is refused, and so is a config.json with a
  signature made for another model's config (replayed);
- a signed config.json naming a plug-in fails to load without --backend-dir;
- a signed version copied into another model, or under a higher number of its own model, is
  refused (wrong_binding) and the older version keeps serving; a signed manifest that names no
  model and version (as older hotserve wrote them) is refused (unbound); `hotserve verify` names
  wrong_binding for the copy;
- the evil library's constructor never ran (its marker file does not exist).
Positive control: a second server with --backend-dir DIR (outside the repository) loads the
plug-in the signed config names (the marker appears, proving the marker works), and a
--backend-dir inside the repository is refused at start.
"""
import os
import shutil
import subprocess

import numpy as np

import hsys
from hsys import check

X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def failed_entry(c, model, version):
    for e in hsys.status_entries(c, model):
        if e["version"] == str(version) and e["state"] == "failed":
            return e
    return None


def wait_refused(c, model, version, reason):
    e = hsys.wait_for(lambda: failed_entry(c, model, version), "%s version %s to be refused (%s)"
                      % (model, version, reason), timeout=30)
    check(e["reason"] == reason, "%s version %s refused as %r (%r), wanted %r"
          % (model, version, e["reason"], e.get("error"), reason))


def write_config(model_dir, text):
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        f.write(text)


def test(tmp, args):
    hsys.require("serve", "publish", "sign", "keygen", "verify")
    evil_src = os.path.abspath(args.evil_backend)
    check(os.path.isfile(evil_src), "the test plug-in %s was not built" % evil_src)
    marker = os.path.join(tmp, "evil-was-loaded")
    os.environ["HS_EVIL_MARKER"] = marker
    outside = os.path.join(tmp, "outside")          # not in the repository
    os.makedirs(outside)
    shutil.copy(evil_src, os.path.join(outside, "evil.so"))
    keys = os.path.join(tmp, "keys")
    os.makedirs(keys)
    priv, pub = hsys.keygen(os.path.join(keys, "rel"))

    repo = os.path.join(tmp, "repo")
    src = lambda k: hsys.make_version_src(os.path.join(tmp, "src", str(k)), k)  # noqa: E731
    good = os.path.join(repo, "good")
    hsys.publish(src(1), good, 1, key=priv)
    # 1. "backend" through a directory symlink that leads out of the repository.
    m = os.path.join(repo, "evil_path")
    hsys.publish(src(1), m, 1, key=priv)
    os.symlink(outside, os.path.join(m, "lib"))
    write_config(m, '{"backend": "lib/evil.so"}')
    hsys.cli("sign", os.path.join(m, "config.json"), "--key", priv)   # even signed: a path is refused
    # 2. unsigned config.json naming a plug-in
    m = os.path.join(repo, "evil_unsigned")
    hsys.publish(src(1), m, 1, key=priv)
    write_config(m, '{"backend": "evil"}')
    # 3. a config signature replayed from another model
    m = os.path.join(repo, "cfg_replay")
    hsys.publish(src(1), m, 1, key=priv)
    other = os.path.join(tmp, "elsewhere", "other")
    write_config(other, '{"backend": "evil"}')
    hsys.cli("sign", os.path.join(other, "config.json"), "--key", priv)
    shutil.copy(os.path.join(other, "config.json"), os.path.join(m, "config.json"))
    shutil.copy(os.path.join(other, "config.json.sig"), os.path.join(m, "config.json.sig"))
    # 4. a signed config naming a plug-in: needs --backend-dir
    m = os.path.join(repo, "plugin")
    hsys.publish(src(1), m, 1, key=priv)
    write_config(m, '{"backend": "evil"}')
    hsys.cli("sign", os.path.join(m, "config.json"), "--key", priv)
    # 5. signed good/1 copied into another model
    shutil.copytree(os.path.join(good, "1"), os.path.join(repo, "copied", "1"))
    # 6. a signed manifest without model and version (signed where DIR is not MODEL/VERSION)
    d = os.path.join(tmp, "unbound-src")
    hsys.make_version_src(d, 1)
    hsys.sign(d, priv)
    os.makedirs(os.path.join(repo, "unbound"))
    os.rename(d, os.path.join(repo, "unbound", "1"))

    srv = hsys.Server(repo, "--require-signature", "--trusted-key", pub, "--poll-interval", "0.3", "--settle", "0.1")
    c = srv.conn()
    hsys.wait_serving(c, "good", 1)
    r, out, _ = c.infer("good", X)
    hsys.expect_values(out, X, 1, "good signed version")
    srv.wait_log(r"model evil_path: config\.json refused.*is a path", "evil_path's config.json refused (a path)")
    srv.wait_log(r"model evil_unsigned: config\.json refused.*not signed", "evil_unsigned's config.json refused")
    srv.wait_log(r"model cfg_replay: config\.json refused.*config\.json\.sig", "cfg_replay's config signature refused")
    srv.wait_log(r"model plugin version 1 failed.*without --backend-dir", "plugin refused without --backend-dir")
    wait_refused(c, "copied", 1, "wrong_binding")
    wait_refused(c, "unbound", 1, "unbound")
    for name in ("evil_path", "evil_unsigned", "cfg_replay", "plugin", "copied", "unbound"):
        check(hsys.serving_version(c, name) is None, "%s is served" % name)

    # good/1 copied under a higher number of its own model: refused, version 1 keeps serving.
    shutil.copytree(os.path.join(good, "1"), os.path.join(tmp, "replay"))
    os.rename(os.path.join(tmp, "replay"), os.path.join(good, "7"))
    wait_refused(c, "good", 7, "wrong_binding")
    check(hsys.serving_version(c, "good") == "1", "good no longer serves version 1 after the replay")
    r, out, _ = c.infer("good", X)
    hsys.expect_values(out, X, 1, "good after the replayed copy")
    v = hsys.cli("verify", os.path.join(repo, "copied", "1"), "--trusted-key", pub, check_rc=False)
    check(v.returncode == 1 and "wrong_binding" in v.stderr, "hotserve verify of the copy: exit %d, %r"
          % (v.returncode, v.stderr.strip()))
    v = hsys.cli("verify", os.path.join(good, "1"), "--trusted-key", pub, check_rc=False)
    check(v.returncode == 0, "hotserve verify of good/1: exit %d, %r" % (v.returncode, v.stderr.strip()))
    check("for model good version 1" in v.stdout, "hotserve verify does not name the binding: %r" % v.stdout.strip())
    check(not os.path.exists(marker), "the server loaded the evil library (its constructor ran)")
    c.close()
    srv.stop()

    # Positive control: with --backend-dir the signed config's plug-in is loaded (the marker
    # appears: its constructor ran; it offers no backend, so the load then fails).
    srv = hsys.Server(repo, "--require-signature", "--trusted-key", pub, "--backend-dir", outside,
                      "--poll-interval", "0.3", "--settle", "0.1")
    hsys.wait_for(lambda: os.path.exists(marker), "the plug-in of --backend-dir to be loaded")
    srv.wait_log(r"model plugin version 1 failed", "the plug-in without hs_backend_init result refused")
    check(not srv.log_matching(r"model evil_path version 1 ready"), "evil_path loaded")
    srv.stop()

    # A --backend-dir inside the repository is refused at start.
    inside = os.path.join(repo, "good", "1")
    p = subprocess.run([hsys.Env.hotserve, "serve", "--model-repository", repo, "--http-port", "0",
                        "--backend-dir", inside], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    check(p.returncode != 0 and "inside the model repository" in p.stderr,
          "--backend-dir inside the repository: exit %d, %r" % (p.returncode, p.stderr.strip()[-300:]))


if __name__ == "__main__":
    hsys.main(test, __doc__, extra=lambda p: p.add_argument("--evil-backend", required=True))
