#!/usr/bin/python3
"""int8_accuracy.py - top-1 agreement of int8 runtimes with torch float32 on many generated images, and why it is low.

    int8_accuracy.py --hotserve BIN --cache DIR --int8-dir DIR [--models resnet50 mobilenet_v2] [--images 256]
                     [--ort bench/engine/ort_run.js] [--save DIR] [--report FILE] [--per-layer FILE] [--study DIR]

For each model: the float32 network is rebuilt in torch from tools/models/make_models.py (fixed seed; checked against
the cache's reference output), --images generated images are classified by
  - torch float32 (the reference),
  - hotserve on the QDQ file (--int8-dir/NAME_int8.onnx, from tools/quantize.py),
  - ONNX Runtime on the same QDQ file (the independent witness: its own int8 kernels) and on the float32 file;
and the table gives: each runtime's top-1 agreement with torch; torch float32's own agreement when only its input
is rounded to uint8 the way the QDQ model's first QuantizeLinear does (range min..max of the images, everything
else float32) and when N(0, 0.001^2) noise is added to the input (how chaotic the float32 network itself is); the
float32 top-1 / top-2 logit margin (quantiles, in units of the logits' standard deviation over classes); the RMS
int8 logit error in the same unit; and the agreement among the images whose float32 margin is above 4x ORT's int8
logit error (the images whose class an int8 runtime can be asked to keep).

--per-layer FILE: where the error comes from, layer by layer: the literal QDQ graph (quantize.py --literal: every
quantization step of the int8 model, run in float32 by hotserve) against the float32 graph on 8 images, for every
quantized tensor in graph order: its relative L2 error, and the same error relative to the tensor's image-dependent
part (its deviation from the mean over the 8 images, which is what tells images apart).

The images are standard-normal (what the benchmark inputs are; seed 4321, as quantize.py's samples).

--study DIR (tools/int8_study.py's output: the same graphs with trained-like weights, and images of a synthetic
task): the float32 networks are DIR/NAME_dyn.onnx, the images DIR/eval.npy (disjoint from DIR/calib.npy, which
quantize.py --calib-images calibrates on) and --int8-dir holds their QDQ files. There is no torch twin of these
networks, so ONNX Runtime float32 is the reference and hotserve float32 the second float column; the input-noise
gauge is skipped; a second table gives the task accuracy (against eval_labels.npy) of float32, hotserve int8 and ORT
int8. --per-layer then runs on the study network and the first 8 evaluation images.
Uses torch, numpy, python3-onnx and node with onnxruntime-node (bench/setup.sh); no downloads.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "models"))
import make_models  # noqa: E402
import onnx  # noqa: E402
import quantize  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

SAMPLE_SEED = 4321
BUILDERS = {"resnet50": (make_models.make_resnet50, "resnet50_dyn.onnx", "resnet50_b8"),
            "mobilenet_v2": (make_models.make_mobilenet_v2, "mobilenet_v2_dyn.onnx", "mobilenet_v2_b8")}
CHUNK = 32


def run_tool(args, outdir):
    r = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (args[0], (r.stderr or r.stdout).strip()[-400:]))
    (f,) = [f for f in os.listdir(outdir) if f.endswith(".npy") and not f.startswith("in")]
    return np.load(os.path.join(outdir, f))


def logits_of(kind, tool, model_path, x, threads):
    """Logits of x (batched in CHUNKs) from `hotserve run` (kind "hs") or ort_run.js (kind "ort")."""
    out = []
    for i in range(0, x.shape[0], CHUNK):
        with tempfile.TemporaryDirectory(prefix="hs-acc-") as d:
            p = os.path.join(d, "in.npy")
            np.save(p, np.ascontiguousarray(x[i:i + CHUNK]))
            if kind == "hs":
                args = [tool, "run", model_path, "--input", "input=" + p, "--threads", str(threads)]
            else:
                args = ["node", tool, model_path, "--input", "input=" + p, "--threads", str(threads), "--repeat", "1",
                        "--warmup", "0"]
            out.append(run_tool(args + ["--output-dir", d], d))
    return np.concatenate(out).reshape(x.shape[0], -1)


def input_rounded(x):
    """x rounded to uint8 the way the QDQ model's first QuantizeLinear does (range min..max of x, with 0)."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = (hi - lo) / 255.0
    zp = np.rint(-lo / scale)
    return ((np.clip(np.rint(x / scale) + zp, 0, 255) - zp) * scale).astype(np.float32)


def noisy(x):
    return (x + 1e-3 * np.random.default_rng(7).standard_normal(x.shape)).astype(np.float32)


def torch_logits(model, x, x_u8, x_noisy, cache, case):
    """torch float32 logits of x, x_u8 and x_noisy, after checking the rebuilt model against the cache's reference."""
    model.eval()
    ref_in = np.load(os.path.join(cache, "ref", case, "input.npy"))
    ref_out = np.load(os.path.join(cache, "ref", case, "output.npy"))
    with torch.no_grad():
        if not np.allclose(model(torch.from_numpy(ref_in)).numpy(), ref_out, atol=1e-3, rtol=1e-3):
            raise RuntimeError("%s: rebuilt torch model does not match the cache's reference" % case)
        return [np.concatenate([model(torch.from_numpy(v[i:i + CHUNK])).numpy() for i in range(0, v.shape[0], CHUNK)])
                for v in (x, x_u8, x_noisy)]


def margin_error(logits, ref):
    """The standard deviation over images of the change of the reference's top-1 - top-2 logit difference, in units
    of the reference logits' standard deviation over classes: the part of the error that can flip the class (an RMS
    over all classes hides it when most classes share one constant logit, as the study networks' untrained ones)."""
    order = np.argsort(ref, axis=1)
    i1, i2, rows = order[:, -1], order[:, -2], np.arange(ref.shape[0])
    d = (logits[rows, i1] - logits[rows, i2]) - (ref[rows, i1] - ref[rows, i2])
    return float((d / ref.std(axis=1)).std())


def margins(logits):
    """(top-1 minus top-2 logit) / the logits' standard deviation over classes, per image."""
    s = np.sort(logits, axis=1)
    return (s[:, -1] - s[:, -2]) / logits.std(axis=1)


def with_outputs(path, names, out):
    """Writes path's model to out with the named tensors added as graph outputs."""
    m = onnx.load(path)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for t in names:
        if t not in have:
            m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    onnx.save(m, out)
    return out


def per_layer(hotserve, cache, int8_dir, name, threads, study=None):
    """Markdown rows: (tensor, relative L2 error, error relative to the image-dependent part) for each quantized
    tensor of the literal QDQ graph against the float32 graph, on 8 generated images (study: the first 8 of the
    study's evaluation images, on the study's network)."""
    src = os.path.join(study or cache, BUILDERS[name][1])
    literal = os.path.join(int8_dir, name + "_int8_literal.onnx")
    names = quantize.tensors_to_quantize(onnx.load(src).graph)
    x = (np.load(os.path.join(study, "eval.npy"))[:8] if study
         else np.random.default_rng(SAMPLE_SEED).standard_normal((8, 3, 224, 224)).astype(np.float32))
    with tempfile.TemporaryDirectory(prefix="hs-acc-") as d:
        f = quantize.hotserve_run(hotserve, with_outputs(src, names, os.path.join(d, "f.onnx")), {"input": x},
                                  threads)
        q = quantize.hotserve_run(hotserve, with_outputs(literal, names, os.path.join(d, "q.onnx")), {"input": x},
                                  threads)
    rows = []
    for t in [n for n in names if n != "input"] + ["output"]:
        a, b = f[quantize.safe_name(t)], q[quantize.safe_name(t)]
        e = float(np.linalg.norm(b - a))
        rows.append("| %s | %s | %.3f | %.3f |" % (name, t, e / np.linalg.norm(a), e / np.linalg.norm(a - a.mean(0))))
    return rows


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--cache", required=True)
    p.add_argument("--int8-dir", required=True)
    p.add_argument("--ort", default=os.path.join(HERE, "..", "bench", "engine", "ort_run.js"))
    p.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save", default=None, help="directory for the logits (.npz per model)")
    p.add_argument("--report", default=None)
    p.add_argument("--per-layer", default=None, help="markdown file for the per-layer error table")
    p.add_argument("--skip-agreement", action="store_true", help="only the per-layer table")
    p.add_argument("--study", default=None,
                   help="tools/int8_study.py's output directory: its NAME_dyn.onnx networks and eval.npy images "
                        "(with eval_labels.npy) instead of the benchmark models and generated images")
    args = p.parse_args(argv)
    if args.per_layer:
        rows = ["| model | tensor | relative L2 error | error / image-dependent part |", "|---|---|---|---|"]
        for name in args.models:
            rows += per_layer(args.hotserve, args.cache, args.int8_dir, name, args.threads, args.study)
        with open(args.per_layer, "w") as f:
            f.write("\n".join(rows) + "\n")
        if args.skip_agreement:
            return 0
    torch.set_num_threads(args.threads)
    ref_label = "ORT float32 (the reference)" if args.study else "torch float32"
    other_label = "hotserve float32" if args.study else "ORT float32"
    lines = ["| model | images | top-1 = %s: hotserve int8 | ORT int8 (same QDQ file) | %s | "
             "hotserve int8 = ORT int8 | float32 margin (top-1 - top-2, in logit std) p10 / p50 / p90 | "
             "int8 logit error (RMS, in logit std): hotserve / ORT | int8 error of the top-1 - top-2 difference (std, in "
             "logit std): hotserve / ORT | images with margin > 4x ORT's int8 error: "
             "count, hotserve int8 agreement, ORT int8 agreement | float32, input rounded to uint8 | "
             "float32, input + N(0, 0.001^2) |" % (ref_label, other_label),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    task_lines = ["| model | images | classes | task accuracy: float32 | hotserve int8 | ORT int8 |",
                  "|---|---|---|---|---|---|"]
    for name in args.models:
        build, fp32_file, case = BUILDERS[name]
        if args.study:
            fp32_path = os.path.join(args.study, fp32_file)
            x = np.load(os.path.join(args.study, "eval.npy"))[:args.images]
            labels = np.load(os.path.join(args.study, "eval_labels.npy"))[:args.images]
        else:
            fp32_path = os.path.join(args.cache, fp32_file)
            x = np.random.default_rng(SAMPLE_SEED).standard_normal((args.images, 3, 224, 224)).astype(np.float32)
        x_u8, x_noisy = input_rounded(x), noisy(x)
        if args.study:
            # the study networks have no torch twin here: ONNX Runtime float32 is the reference, hotserve float32
            # the second float runtime
            # (the input-noise gauge is skipped: one pass fewer on a loaded machine)
            t32, t_u8 = (logits_of("ort", args.ort, fp32_path, v, args.threads) for v in (x, x_u8))
            t_noisy = None
            other32 = logits_of("hs", args.hotserve, fp32_path, x, args.threads)
        else:
            t32, t_u8, t_noisy = torch_logits(build(), x, x_u8, x_noisy, args.cache, case)
            other32 = logits_of("ort", args.ort, fp32_path, x, args.threads)
        qdq = os.path.join(args.int8_dir, name + "_int8.onnx")
        hs8 = logits_of("hs", args.hotserve, qdq, x, args.threads)
        ort8 = logits_of("ort", args.ort, qdq, x, args.threads)
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            np.savez(os.path.join(args.save, name + ".npz"), float32=t32, float32_u8_input=t_u8, hs8=hs8, ort8=ort8,
                     other32=other32, **({"float32_noisy": t_noisy} if t_noisy is not None else {}))
        ref = t32.argmax(1)
        agree = {k: float((v.argmax(1) == ref).mean()) for k, v in (("hs8", hs8), ("ort8", ort8), ("other32", other32))}
        std = t32.std(axis=1, keepdims=True)
        m = margins(t32)
        err_hs = float(np.sqrt((((hs8 - t32) / std) ** 2).mean()))
        err_ort = float(np.sqrt((((ort8 - t32) / std) ** 2).mean()))
        sure = m > 4 * err_ort
        n_sure = int(sure.sum())
        hs_sure = float((hs8.argmax(1) == ref)[sure].mean()) if n_sure else float("nan")
        ort_sure = float((ort8.argmax(1) == ref)[sure].mean()) if n_sure else float("nan")
        lines.append("| %s | %d | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.3f / %.3f / %.3f | %.3f / %.3f | %.3f / %.3f "
                     "| %d, %.1f%%, %.1f%% "
                     "| %.1f%% | %.1f%% |"
                     % (name, args.images, 100 * agree["hs8"], 100 * agree["ort8"], 100 * agree["other32"],
                        100 * float((hs8.argmax(1) == ort8.argmax(1)).mean()),
                        *np.percentile(m, [10, 50, 90]), err_hs, err_ort, margin_error(hs8, t32),
                        margin_error(ort8, t32), n_sure, 100 * hs_sure, 100 * ort_sure,
                        100 * float((t_u8.argmax(1) == ref).mean()),
                        100 * float((t_noisy.argmax(1) == ref).mean()) if t_noisy is not None else float("nan")))
        print(lines[-1], flush=True)
        if args.study:
            task_lines.append("| %s | %d | %d | %.1f%% | %.1f%% | %.1f%% |" % (
                name, args.images, int(labels.max()) + 1, *(100 * float((v.argmax(1) == labels).mean())
                                                            for v in (t32, hs8, ort8))))
            print(task_lines[-1], flush=True)
    table = "\n".join(lines) + ("\n\n" + "\n".join(task_lines) if args.study else "")
    print(table)
    if args.report:
        with open(args.report, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
