#!/usr/bin/python3
"""int8_study.py - int8 study models: the benchmark CNNs' graphs with weights that behave like a trained network's,
and a synthetic image task whose images belong to classes, so that int8 top-1 agreement means something.

    int8_study.py --hotserve BIN --out DIR [--models mobilenet_v2 resnet50] [--branch-gain 0.2] [--classes 16]
                  [--train-per-class 16] [--head-wd 1e-3] [--calib 32] [--eval 256]

Why: the benchmark models (tools/models/make_models.py) have fixed-seed random weights and are fed standard-normal
images. Such networks amplify any perturbation layer by layer (bench/results/int8-2026-12-06.md: rounding only the
float32 network's input to uint8 flips 17-30% of the top-1 classes), and their logits have no class margins, so no
8-bit runtime can agree with float32 on 99% of the images. Trained networks are different in two ways this script
reproduces without pretrained weights (none can be downloaded here):
  1. ordered residual branches: trained ResNets end most residual branches with small BatchNorm gains (and are
     often initialised with zero gains there), so each block adds a small correction to its shortcut.
     --branch-gain scales the last BatchNorm of every residual branch (ResNet-50: each Bottleneck's bn3;
     MobileNetV2: the projection BatchNorm of each InvertedResidual with a shortcut); 1.0 leaves the benchmark's
     weights as they are;
  2. BatchNorm statistics of the data and a classifier with real margins: the running statistics of every BatchNorm
     are re-estimated on the task's training images (train-mode forward passes, no gradients), and the final Linear
     (ResNet-50's fc, MobileNetV2's classifier[1]; all 1000 outputs) is trained by logistic regression on the
     frozen backbone's features of the training images, computed by hotserve float32 (the backbone itself is not
     trained: torch on 2 shared cores is too slow for that).
The task: --classes classes of colour textures, each a fixed random 3 x 3 x 5 x 5 filter; a texture of a class is
its filter applied to fresh white noise, scaled to unit standard deviation. An image is 0.8 x a texture of its class
+ 0.6 x a texture of a random other class (so the images are mixtures and the margins vary from image to image),
about unit variance per pixel like the benchmark's standard-normal inputs. Textures are what globally pooled
convolutional features tell apart (a smooth pattern's layout is not: a first try with layout classes reached 11%
on held-out images). Classes are output indices 0 .. classes-1 of the 1000. Training, calibration and evaluation
images are drawn from separate seeds (disjoint sets); nothing is tuned on the evaluation images.

Writes into DIR:
  NAME_dyn.onnx           the study network, exported exactly as make_models.py exports NAME_dyn.onnx (opset 13,
                          dynamic batch, BatchNorm folded): the same graph, other weights
  calib.npy               calibration images for tools/quantize.py --calib-images (never evaluated on)
  eval.npy, eval_labels.npy   the evaluation images and their classes
  cases.json              {} (so tools/quantize.py --cache DIR finds no benchmark cases to compare)
  study.json              the parameters and, per model, the float32 accuracy on the training images
Fixed seeds throughout: the same command writes the same files. Uses torch, torchvision, numpy, python3-onnx.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "models"))
import make_models  # noqa: E402
import onnx  # noqa: E402
import quantize  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

PROTO_SEED, TRAIN_SEED, CALIB_SEED, EVAL_SEED, BN_SEED = 101, 102, 103, 104, 105
IMAGE = (3, 224, 224)
TAP = 5  # class texture filters: 3 x 3 x TAP x TAP
SIGNAL, DISTRACTOR = 0.8, 0.6  # weights of the class's own texture and of another class's (unit variance each)
BN_IMAGES, BN_BATCH = 32, 16
HEAD_STEPS, HEAD_LR = 300, 0.05
ARCH = {"resnet50": make_models.make_resnet50, "mobilenet_v2": make_models.make_mobilenet_v2}


def class_filters(k):
    """k colour texture filters (k, 3, 3, TAP, TAP), normal."""
    return torch.randn((k, 3, 3, TAP, TAP), generator=torch.Generator().manual_seed(PROTO_SEED))


def textures(filters, classes, gen):
    """One texture image of each given class: its filter applied to white noise, unit standard deviation."""
    out = torch.empty((len(classes),) + IMAGE)
    for i, c in enumerate(classes.tolist()):
        w = torch.randn((1,) + IMAGE, generator=gen)
        t = torch.nn.functional.conv2d(w, filters[c], padding=TAP // 2)[0]
        out[i] = (t - t.mean()) / t.std()
    return out


def task_images(filters, per_class, seed):
    """per_class images of every class, shuffled: SIGNAL x a texture of the class + DISTRACTOR x a texture of a
    random other class. Returns (images, labels)."""
    gen = torch.Generator().manual_seed(seed)
    k = filters.shape[0]
    labels = torch.arange(k).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=gen)]
    other = (labels + torch.randint(1, k, labels.shape, generator=gen)) % k
    x = SIGNAL * textures(filters, labels, gen) + DISTRACTOR * textures(filters, other, gen)
    return x.contiguous(), labels


def branch_norms(model):
    """The last BatchNorm of every residual branch."""
    if isinstance(model, torchvision.models.ResNet):
        return [b.bn3 for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    return [m.conv[-1] for m in model.modules()
            if isinstance(m, torchvision.models.mobilenetv2.InvertedResidual) and m.use_res_connect]


def reestimate_batchnorm(model, x):
    """Every BatchNorm's running statistics measured anew on x (train-mode forward passes, no gradients)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(0, x.shape[0], BN_BATCH):
            model(x[i:i + BN_BATCH])
    model.eval()


def head_node(model):
    """The final Gemm of an exported CNN."""
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    return gemm


def features(hotserve, path, x, threads):
    """The final Gemm's input for the images x, run by hotserve in float32."""
    m = onnx.load(path)
    feat = head_node(m).input[0]
    m.graph.output.append(helper.make_tensor_value_info(feat, TensorProto.FLOAT, None))
    tmp = path + ".features.onnx"
    onnx.save(m, tmp)
    try:
        return np.concatenate([quantize.hotserve_run(hotserve, tmp, {"input": x[i:i + 16]}, threads)[
            quantize.safe_name(feat)] for i in range(0, x.shape[0], 16)])
    finally:
        os.remove(tmp)


def train_head(f, labels, classes, outputs, wd):
    """Logistic regression of all `outputs` classes on the features f (standardised for the optimiser, folded back
    into the weight and bias). Classes with no training image (outputs classes .. outputs-1) get the same gradient
    from a zero start, so they are trained as one row whose logit stands for all of them (+ log of their count) and
    that row is copied to each. Returns (weight [outputs, features], bias, final loss)."""
    torch.manual_seed(BN_SEED)
    f = torch.from_numpy(f.reshape(f.shape[0], -1)).float()
    mu, sd = f.mean(0), f.std(0) + 1e-6
    z = (f - mu) / sd
    w = torch.zeros(classes + 1, f.shape[1], requires_grad=True)
    b = torch.zeros(classes + 1, requires_grad=True)
    rest = torch.zeros(classes + 1)
    rest[classes] = float(np.log(outputs - classes))
    opt = torch.optim.Adam([w, b], lr=HEAD_LR)
    for _ in range(HEAD_STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.t() + b + rest, labels) + wd * (w ** 2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        wf, bf = w / sd, b - (w * (mu / sd)).sum(1)
        idx = torch.clamp(torch.arange(outputs), max=classes)
        return wf[idx].numpy(), bf[idx].numpy(), float(loss)


def set_head(path, weight, bias):
    """Replaces the final Gemm's weight and bias initializers of the ONNX file at path."""
    m = onnx.load(path)
    gemm = head_node(m)
    for t in m.graph.initializer:
        if t.name == gemm.input[1]:
            t.CopyFrom(numpy_helper.from_array(weight, t.name))
        elif t.name == gemm.input[2]:
            t.CopyFrom(numpy_helper.from_array(bias, t.name))
    onnx.save(m, path)


def build(name, args, train, train_labels):
    """Writes OUT/NAME_dyn.onnx; returns (training accuracy, head loss)."""
    model = ARCH[name]()
    with torch.no_grad():
        for bn in branch_norms(model):
            bn.weight.mul_(args.branch_gain)
            bn.bias.mul_(args.branch_gain)
    reestimate_batchnorm(model, train[:BN_IMAGES])
    path = os.path.join(args.out, name + "_dyn.onnx")
    if os.path.exists(path):
        os.remove(path)
    make_models.export(model, IMAGE, path, 13, True, ("input", "output"))
    f = features(args.hotserve, path, train.numpy(), args.threads)
    outputs = int(numpy_helper.to_array([t for t in onnx.load(path).graph.initializer
                                         if t.name == head_node(onnx.load(path)).input[2]][0]).shape[0])
    weight, bias, loss = train_head(f, train_labels, args.classes, outputs, args.head_wd)
    set_head(path, weight, bias)
    train_acc = float(((f.reshape(f.shape[0], -1) @ weight.T + bias).argmax(1) == train_labels.numpy()).mean())
    return train_acc, loss


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hotserve", required=True, help="hotserve binary (computes the backbone features)")
    p.add_argument("--out", required=True)
    p.add_argument("--models", nargs="+", default=list(ARCH), choices=list(ARCH))
    p.add_argument("--branch-gain", type=float, default=0.2)
    p.add_argument("--head-wd", type=float, default=1e-3,
                   help="L2 penalty on the head's weights (in units of the standardised features)")
    p.add_argument("--classes", type=int, default=16)
    p.add_argument("--train-per-class", type=int, default=16)
    p.add_argument("--calib", type=int, default=32, help="calibration images (a multiple of 8)")
    p.add_argument("--eval", type=int, default=256, help="evaluation images")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    filters = class_filters(args.classes)
    train, train_labels = task_images(filters, args.train_per_class, TRAIN_SEED)
    calib, _ = task_images(filters, -(-args.calib // args.classes), CALIB_SEED)
    ev, ev_labels = task_images(filters, -(-args.eval // args.classes), EVAL_SEED)
    calib, ev, ev_labels = calib[:args.calib], ev[:args.eval], ev_labels[:args.eval]
    np.save(os.path.join(args.out, "calib.npy"), calib.numpy())
    np.save(os.path.join(args.out, "eval.npy"), ev.numpy())
    np.save(os.path.join(args.out, "eval_labels.npy"), ev_labels.numpy())
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump({}, f)
    info = {"branch_gain": args.branch_gain, "head_wd": args.head_wd, "classes": args.classes,
            "train_per_class": args.train_per_class, "calib": args.calib, "eval": args.eval, "signal": SIGNAL,
            "distractor": DISTRACTOR, "models": {}}
    for name in args.models:
        t0 = time.time()
        acc, loss = build(name, args, train, train_labels)
        info["models"][name] = {"train_accuracy": acc, "head_loss": loss, "seconds": round(time.time() - t0, 1)}
        print("int8_study: %s: float32 training accuracy %.3f, head loss %.3f (%.0f s)" % (
            name, acc, loss, time.time() - t0), file=sys.stderr, flush=True)
    with open(os.path.join(args.out, "study.json"), "w") as f:
        json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
