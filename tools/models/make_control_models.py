#!/usr/bin/python3
"""make_control_models.py - a model with If and Loop (TorchScript control flow exported by torch.onnx) and torch's
outputs for it, as whole-model test cases.

    make_control_models.py OUTDIR

Writes OUTDIR/control.onnx, OUTDIR/ref/CASE/{x,steps,h,acc,trail}.npy and OUTDIR/cases.json (the format
tests/models/check_model.py reads). Small and quick (a few seconds), so it is made anew every time.

The network (torch.jit.script, so the exporter keeps the control flow as ONNX If and Loop nodes, opset 13):
  - an If on data (the sign of a sum): its branches read outer-scope values (the Gemm's output, the weights);
  - a Loop whose trip count is an input; its body reads outer-scope values (x, the weights), carries three values,
    one of which (trail) grows by one column every iteration, and holds a nested If on data (the mean of h).
Cases: control_then (the If takes its then branch, 5 iterations), control_else (else branch, batch 2, 3
iterations), control_zero (the loop runs no iteration). Inputs are fixed-seed; the generator checks that each
case really takes the branch it is named after.
"""
import json
import os
import sys
import warnings

import numpy as np
import onnx
import torch

SEED = 20261206


class Gated(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.alt = torch.nn.Linear(8, 8)
        self.mix = torch.nn.Linear(8, 8)

    def forward(self, x, steps):
        h = self.fc(x)
        if bool(h.sum() > 0):
            h = torch.relu(h)
        else:
            h = self.alt(h) * 0.5
        acc = torch.zeros_like(h)
        trail = h[:, :1]
        for i in range(int(steps)):
            h = torch.tanh(self.mix(h)) + x
            if bool(h.mean() > 0.1):
                acc = acc + h
            else:
                acc = acc - 0.5 * h
            trail = torch.cat([trail, h[:, :1] * float(i + 1)], 1)
        return h, acc, trail


def find_input(model, batch, want_then, seed):
    """A fixed-seed input whose first If takes the wanted branch (tries a bounded number of seeds)."""
    for k in range(200):
        x = np.random.default_rng(seed + k).standard_normal((batch, 8)).astype(np.float32)
        with torch.no_grad():
            took_then = bool(model.fc(torch.from_numpy(x)).sum() > 0)
        if took_then == want_then:
            return x
    raise SystemExit("make_control_models: no input found that takes the %s branch" % ("then" if want_then else "else"))


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[0]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    model = Gated().eval()
    scripted = torch.jit.script(model)
    path = os.path.join(out, "control.onnx")
    x0 = torch.zeros(3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(scripted, (x0, torch.tensor(2)), path + ".tmp", opset_version=13,
                          input_names=["x", "steps"], output_names=["h", "acc", "trail"],
                          dynamic_axes={"x": {0: "batch"}, "h": {0: "batch"}, "acc": {0: "batch"},
                                        "trail": {0: "batch", 1: "len"}})
    m = onnx.load(path + ".tmp")
    onnx.checker.check_model(m)
    ops = {n.op_type for n in m.graph.node}
    if not {"If", "Loop"} <= ops:
        raise SystemExit("make_control_models: the export has no If / Loop (ops: %s)" % sorted(ops))
    os.replace(path + ".tmp", path)
    cases = {}
    for case, batch, steps, want_then in (("control_then", 3, 5, True), ("control_else", 2, 3, False),
                                          ("control_zero", 3, 0, True)):
        x = find_input(model, batch, want_then, SEED + batch * 1000 + steps)
        s = np.array(steps, dtype=np.int64)
        with torch.no_grad():
            h, acc, trail = model(torch.from_numpy(x), torch.tensor(steps))
        d = os.path.join(out, "ref", case)
        os.makedirs(d, exist_ok=True)
        arrays = {"x": x, "steps": s, "h": h.numpy(), "acc": acc.numpy(), "trail": trail.numpy()}
        for name, a in arrays.items():
            np.save(os.path.join(d, name + ".npy"), np.array(a, order="C"))  # keeps 0-d arrays 0-d
        cases[case] = {"model": "control.onnx", "batch": batch,
                       "inputs": {n: "ref/%s/%s.npy" % (case, n) for n in ("x", "steps")},
                       "outputs": {n: "ref/%s/%s.npy" % (case, n) for n in ("h", "acc", "trail")}}
        print("make_control_models: %s: x %s, %d iterations, trail %s" % (case, x.shape, steps, trail.shape))
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=2, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
