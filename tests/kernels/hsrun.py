"""hsrun.py - runs one ONNX model through `hotserve run`, for the kernel checks (check_*.py)."""
import os
import subprocess

import numpy as np
import onnx


def run_model(hotserve, d, model, inputs, strict, verbose=False):
    """Saves model and the inputs its graph names under folder d and runs it on 2 threads, with the
    kernels' strict mode on or off (HS_KERNELS_STRICT) and their log of which kernel ran
    (HS_KERNELS_VERBOSE) when verbose. Returns (outputs in graph order, stderr), or (None, the end of
    stderr) when the run failed."""
    os.makedirs(d, exist_ok=True)
    mp = os.path.join(d, "model.onnx")
    onnx.save(model, mp)
    args = [hotserve, "run", mp, "--output-dir", d, "--threads", "2"]
    for k in [i.name for i in model.graph.input]:
        p = os.path.join(d, "in_%s.npy" % k)
        np.save(p, inputs[k])
        args += ["--input", "%s=%s" % (k, p)]
    env = dict(os.environ, HS_KERNELS_STRICT="1" if strict else "0")
    if verbose:
        env["HS_KERNELS_VERBOSE"] = "1"
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    if r.returncode != 0:
        return None, r.stderr.strip()[-300:] or "exit %d" % r.returncode
    return [np.load(os.path.join(d, o.name + ".npy")) for o in model.graph.output], r.stderr
