"""int8_rows.py - engine_bench.py's int8 rows: hotserve on a calibrated QDQ model against ONNX Runtime on the float32
model and on the same QDQ file.

The QDQ models come from tools/quantize.py (RESNET/MOBILENET/BERT_ENCODER_int8.onnx in --int8-dir, dynamic batch). Each row runs
ROUNDS interleaved rounds of: hotserve on the QDQ file, ORT on the float32 file the benchmark's float rows use, ORT
on the QDQ file; each round is `--repeat` timed runs after warm-up, and the row reports the median of the round
medians, the spread (min-max of round medians) and each runtime's worst p99. Top-1 agreement is counted against
torch's float32 reference output of the case (cases.json), image by image; for the encoder, token by token (the
largest of a token's output features, as if they were logits), followed by hotserve int8's largest absolute
difference from torch and its relative L2 distance.
"""
import os
import tempfile

import numpy as np

ROUNDS = 3

# (label, batch, QDQ file in --int8-dir, float32 file in the cache, case in cases.json)
INT8_ROWS = [
    ("ResNet-50 int8", 1, "resnet50_int8.onnx", "resnet50.onnx", "resnet50_b1"),
    ("ResNet-50 int8", 8, "resnet50_int8.onnx", "resnet50_dyn.onnx", "resnet50_b8"),
    ("MobileNetV2 int8", 1, "mobilenet_v2_int8.onnx", "mobilenet_v2.onnx", "mobilenet_v2_b1"),
    ("MobileNetV2 int8", 8, "mobilenet_v2_int8.onnx", "mobilenet_v2_dyn.onnx", "mobilenet_v2_b8"),
    ("BERT encoder int8", 1, "bert_encoder_int8.onnx", "bert_encoder.onnx", "bert_encoder_b1"),
    ("BERT encoder int8", 8, "bert_encoder_int8.onnx", "bert_encoder.onnx", "bert_encoder_b8"),
]


def _is_encoder(label):
    return "encoder" in label


def _top1(a, label=""):
    """The predicted class of each image, or for an encoder the largest feature of each token."""
    if _is_encoder(label):
        return a.reshape(-1, a.shape[-1]).argmax(axis=1)
    return a.reshape(a.shape[0], -1).argmax(axis=1)


def _one(run, cmd, out_dir, out_name):
    rc, text = run(cmd)
    if rc != 0:
        return {"error": text.strip().splitlines()[-1][:160] if text.strip() else "exit %d" % rc}, None
    try:
        out = np.load(os.path.join(out_dir, out_name + ".npy"))
    except (OSError, ValueError):
        out = None
    return {"text": text}, out


def bench_int8(args, cases, run, ms_after, last_json, here):
    """Runs the int8 rows; returns a list of row dicts for format_int8."""
    rows = []
    for label, batch, qdq, fp32, case in INT8_ROWS:
        if args.only and label not in args.only:
            continue
        qdq_path, fp32_path = os.path.join(args.int8_dir, qdq), os.path.join(args.cache, fp32)
        (in_name, x_rel), = cases[case]["inputs"].items()
        (out_name, ref_rel), = cases[case]["outputs"].items()
        x_path = os.path.join(args.cache, x_rel)
        ref = np.load(os.path.join(args.cache, ref_rel))
        res = {"label": label, "batch": batch, "hs": [], "ort32": [], "ort8": [], "errors": [],
               "images": _top1(ref, label).shape[0]}
        if not os.path.exists(qdq_path):
            res["errors"].append("%s missing (run tools/quantize.py)" % qdq_path)
            rows.append(res)
            continue
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory(prefix="hs-int8-") as d:
                r, out = _one(run, [args.hotserve, "run", qdq_path, "--input", in_name + "=" + x_path, "--threads",
                                    str(args.threads), "--warmup", "3", "--repeat", str(args.repeat),
                                    "--output-dir", d], d, out_name)
                if "error" in r:
                    res["errors"].append("hotserve: " + r["error"])
                else:
                    res["hs"].append((ms_after(r["text"], "median"), ms_after(r["text"], "p99")))
                    if out is not None:
                        res["hs_agree"] = int((_top1(out, label) == _top1(ref, label)).sum())
                        if _is_encoder(label):
                            res["hs_maxdiff"] = float(np.abs(out - ref).max())
                            res["hs_rel_l2"] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
            for key, model in (("ort32", fp32_path), ("ort8", qdq_path)):
                with tempfile.TemporaryDirectory(prefix="hs-int8-") as d:
                    rc, text = run(["node", os.path.join(here, "ort_run.js"), model, "--input", in_name + "=" + x_path,
                                    "--threads", str(args.threads), "--warmup", "3", "--repeat", str(args.repeat),
                                    "--output-dir", d])
                    if rc != 0:
                        res["errors"].append("ORT %s: %s" % (key, text.strip()[-160:]))
                        continue
                    j = last_json(text)
                    res[key].append((j["median_ms"], j["p99_ms"]))
                    try:
                        out = np.load(os.path.join(d, out_name + ".npy"))
                        res[key + "_agree"] = int((_top1(out, label) == _top1(ref, label)).sum())
                    except (OSError, ValueError):
                        pass
        rows.append(res)
    return rows


def _summary(samples):
    """'median (spread min-max, worst p99)' of the round medians, and the median itself."""
    meds = sorted(m for m, _ in samples if m is not None)
    if not meds:
        return "n/a", None
    med = meds[len(meds) // 2]
    p99 = max(p for _, p in samples if p is not None)
    return "%.2f (%.2f-%.2f, p99 %.1f)" % (med, meds[0], meds[-1], p99), med


def format_int8(rows):
    lines = ["| model | batch | hotserve int8 ms | ORT float32 ms | ORT int8 (same QDQ file) ms | "
             "hotserve int8 / ORT float32 | hotserve int8 / ORT int8 | top-1 = torch float32: hotserve int8, "
             "ORT int8, ORT float32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["errors"] and not r["hs"]:
            lines.append("| %s | %d | error: %s | | | | | |" % (r["label"], r["batch"], "; ".join(r["errors"])[:200]))
            continue
        cells, meds = [], []
        for key in ("hs", "ort32", "ort8"):
            text, med = _summary(r[key])
            cells.append(text)
            meds.append(med)
        ratio = lambda a, b: "%.2f" % (a / b) if a and b else "n/a"
        agree = ", ".join("%s/%d" % (r.get(k, "n/a"), r["images"]) for k in ("hs_agree", "ort8_agree", "ort32_agree"))
        if "hs_maxdiff" in r:
            agree += " tokens; hotserve int8 max abs diff %.3g, relative L2 %.3f" % (r["hs_maxdiff"], r["hs_rel_l2"])
        lines.append("| %s | %d | %s | %s | %s | %s | %s | %s |" % (r["label"], r["batch"], cells[0], cells[1], cells[2],
                                                                  ratio(meds[0], meds[1]), ratio(meds[0], meds[2]),
                                                                  agree))
    return "\n".join(lines)
