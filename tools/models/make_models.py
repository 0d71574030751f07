#!/usr/bin/python3
"""make_models.py - exports the whole-model test and benchmark models and their torch reference outputs.

    make_models.py OUTDIR [--only NAME ...] [--list]

Writes into OUTDIR (created if missing), skipping every file that already exists (a cache):
  resnet50.onnx, resnet50_dyn.onnx          torchvision ResNet-50, batch 1 / dynamic batch axis, opset 13
  mobilenet_v2.onnx, mobilenet_v2_dyn.onnx  torchvision MobileNetV2, batch 1 / dynamic batch axis, opset 13
  mobilenet_v2_op10.onnx                    the same network at opset 10, dynamic batch (OpenCV 4.6 DNN loads only this)
  mobilenet_v3.onnx, mobilenet_v3_dyn.onnx  torchvision MobileNetV3-Large (hard-swish, squeeze-and-excite), batch 1 /
                                            dynamic batch, opset 17
  text_det.onnx, text_det_dyn.onnx          a DBNet-style text detector at 640x640: MobileNetV3-Large x0.5 backbone,
                                            FPN neck (nearest 2x upsampling + add, every level upsampled to 1/4 and
                                            concatenated), DB head (ConvTranspose) with a sigmoid map; opset 17
  text_rec.onnx, text_rec_dyn.onnx          a CRNN-style text recognizer at 48x320: depthwise-separable conv backbone
                                            with hard-swish, SE and (2,1) strides, then a 2-layer BiLSTM and a Linear
                                            per column (97 classes); opset 17
  mobilenet_v2_bn.onnx                      the same MobileNetV2 network, dynamic batch, exported with TrainingMode.PRESERVE: the
                                            BatchNormalization nodes (inference mode) and Identity nodes stay in the
                                            graph, as other exporters emit them (the default export folds BN into Conv)
  transformer.onnx                          a small pre-norm transformer encoder block, dynamic batch, opset 17
                                            (LayerNormalization, MatMul, Softmax, GELU via Erf)
  transformer_op13.onnx                     the same block at opset 13 (LayerNorm decomposed into Reduce/Pow/Sqrt ops)
  bert_encoder.onnx                         a BERT-style encoder: 6 post-norm layers, width 768, 12 heads, FFN 3072, seq
                                            128, separate Q/K/V Linears as Hugging Face's BertLayer, erf GELU,
                                            dynamic batch, opset 17 (the engine benchmark's transformer rows)
  lstm_tagger.onnx                          a sequence tagger: bidirectional 2-layer LSTM (batch_first) + Linear per
                                            token, dynamic batch, opset 14
  gru.onnx                                  a 2-layer GRU (torch's GRU is ONNX's linear_before_reset=1) + Linear per
                                            step, dynamic batch, opset 17
  cnn_f16.onnx                              a small CNN (Conv, ReLU, MaxPool, Linear) whose weights, input and output
                                            are float16, as GPU exports are (exported in float32, then every float
                                            tensor and type made float16); its reference is torch in float32 on the
                                            float16-rounded weights and input, rounded to float16
  ref/CASE/input.npy, ref/CASE/output.npy   fixed-seed inputs and torch (eval mode) outputs for each case
  cases.json                                every case: model file, input and output names -> .npy paths, batch
  .make_models-version                      CACHE_VERSION of the script that wrote the cache

Weights are fixed-seed (torch.manual_seed, no downloads). The BatchNorm layers get realistic running statistics from
a few fixed-seed calibration batches (train-mode forward passes), and non-trivial affine parameters, so activations
keep unit scale through the depth of the network and folding BatchNorm into Conv is really exercised.

The CNNs have one float32 input named "input" and one float32 output named "output"; the transformer's are named
"tokens" and "hidden" (cases.json has the names).
Files are written to a temporary name and renamed, so an interrupted run never leaves a truncated file that a later
run would take as cached.
"""
import argparse
import json
import os
import shutil
import sys
import warnings

import numpy as np
import onnx
import torch
import torchvision

SEED = 20240531
# Bump when the models or references change: a cache written by another version is cleared and made anew.
CACHE_VERSION = 2


def _atomic_path(path):
    return path + ".tmp%d" % os.getpid()


def save_npy(path, array):
    if os.path.exists(path):
        return
    tmp = _atomic_path(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------------
# Networks

def norm_gain(shape, gen):
    """A non-trivial normalization scale: uniform in [0.6, 1.4)."""
    return torch.rand(shape, generator=gen) * 0.8 + 0.6


def norm_shift(shape, gen):
    """A non-trivial normalization offset: uniform in [-0.1, 0.1)."""
    return (torch.rand(shape, generator=gen) - 0.5) * 0.2


def randomize_affine(norm, gen):
    """Draws a BatchNorm or LayerNorm layer's weight (norm_gain), then its bias (norm_shift) from gen."""
    with torch.no_grad():
        norm.weight.copy_(norm_gain(norm.weight.shape, gen))
        norm.bias.copy_(norm_shift(norm.bias.shape, gen))


def calibrate_batchnorm(model, shape, batches=3, seed=SEED):
    """Gives every BatchNorm layer non-trivial affine parameters and running statistics measured on random data."""
    gen = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            randomize_affine(m, gen)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(shape, generator=gen))
    model.eval()


def calibrated_cnn(seed, make, calib_shape, classifier=None):
    """make() under torch.manual_seed(seed), its classifier layer (index into model.classifier) scaled up, its
    BatchNorms calibrated on calib_shape batches."""
    torch.manual_seed(seed)
    model = make()
    if classifier is not None:
        # torchvision initialises the classifier with N(0, 0.01): tiny logits. Scale it up so the outputs are O(1).
        with torch.no_grad():
            model.classifier[classifier].weight.mul_(30.0)
    calibrate_batchnorm(model, calib_shape)
    return model


def make_resnet50():
    return calibrated_cnn(SEED, lambda: torchvision.models.resnet50(weights=None), (8, 3, 224, 224))


def make_mobilenet_v2():
    return calibrated_cnn(SEED + 2, lambda: torchvision.models.mobilenet_v2(weights=None), (8, 3, 224, 224),
                          classifier=1)


def make_mobilenet_v3():
    return calibrated_cnn(SEED + 10, lambda: torchvision.models.mobilenet_v3_large(weights=None), (8, 3, 224, 224),
                          classifier=3)


class TextDetector(torch.nn.Module):
    """DBNet-style text detector (as PaddleOCR's mobile detector): MobileNetV3-Large x0.5 backbone tapped at strides
    4, 8, 16 and 32; FPN neck: 1x1 laterals to `inner` channels, top-down nearest 2x upsampling + add, a 3x3 conv per
    level to inner/4 channels, every level upsampled to stride 4 and concatenated; DB head: 3x3 conv-BN-ReLU, two 2x2
    stride-2 ConvTranspose back to full resolution, sigmoid (the probability map)."""

    TAPS = (3, 6, 12, 16)  # features[i] ends the stride-4, -8, -16 and -32 stages

    def __init__(self, inner=96):
        super().__init__()
        self.features = torchvision.models.mobilenet_v3_large(weights=None, width_mult=0.5).features
        with torch.no_grad():
            chans = [t.shape[1] for t in self.tapped(torch.zeros(1, 3, 64, 64))]
        conv = torch.nn.Conv2d
        self.lateral = torch.nn.ModuleList([conv(c, inner, 1, bias=False) for c in chans])
        self.smooth = torch.nn.ModuleList([conv(inner, inner // 4, 3, padding=1, bias=False) for _ in chans])
        q = inner // 4
        self.head = torch.nn.Sequential(
            conv(inner, q, 3, padding=1, bias=False), torch.nn.BatchNorm2d(q), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(q, q, 2, stride=2), torch.nn.BatchNorm2d(q), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(q, 1, 2, stride=2), torch.nn.Sigmoid())

    def tapped(self, x):
        """The backbone's outputs at the TAPS, finest first."""
        taps = []
        for i, f in enumerate(self.features):
            x = f(x)
            if i in self.TAPS:
                taps.append(x)
        return taps

    def forward(self, x):
        up = torch.nn.functional.interpolate
        lat = [l(t) for l, t in zip(self.lateral, self.tapped(x))]
        for i in range(len(lat) - 2, -1, -1):  # top-down: each level plus the coarser one upsampled
            lat[i] = lat[i] + up(lat[i + 1], scale_factor=2.0, mode="nearest")
        outs = [s(p) for s, p in zip(self.smooth, lat)]
        outs = [outs[0]] + [up(o, scale_factor=float(2 ** i), mode="nearest") for i, o in enumerate(outs) if i > 0]
        return self.head(torch.cat(outs[::-1], dim=1))


def make_text_det():
    return calibrated_cnn(SEED + 11, TextDetector, (2, 3, 640, 640))


class DepthwiseSeparable(torch.nn.Module):
    """Depthwise kxk conv-BN-hard-swish, optional squeeze-and-excite (hard-sigmoid gate), pointwise conv-BN-hard-swish
    (PP-LCNet's block, as in PaddleOCR's recognizer backbone)."""

    def __init__(self, cin, cout, stride, k=3, se=False):
        super().__init__()
        self.dw = torch.nn.Sequential(torch.nn.Conv2d(cin, cin, k, stride, k // 2, groups=cin, bias=False),
                                      torch.nn.BatchNorm2d(cin), torch.nn.Hardswish())
        self.se = torchvision.ops.SqueezeExcitation(cin, cin // 4, scale_activation=torch.nn.Hardsigmoid) \
            if se else torch.nn.Identity()
        self.pw = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, bias=False), torch.nn.BatchNorm2d(cout),
                                      torch.nn.Hardswish())

    def forward(self, x):
        return self.pw(self.se(self.dw(x)))


class TextRecognizer(torch.nn.Module):
    """CRNN-style recognizer: a depthwise-separable backbone that halves the height more often than the width
    ((2, 1) strides) so a 48x320 line becomes 80 columns, max-pooled to height 1; then a 2-layer bidirectional LSTM
    over the columns and a Linear to the class logits per column (CTC-style output: batch x 80 x classes)."""

    def __init__(self, classes=97, hidden=48):
        super().__init__()
        blocks = [(16, 32, 1, 3, False), (32, 64, 1, 3, False), (64, 64, 1, 3, False), (64, 128, (2, 1), 3, False),
                  (128, 128, 1, 3, False), (128, 256, (2, 1), 3, False)] + [(256, 256, 1, 5, False)] * 5 + \
                 [(256, 512, (2, 1), 5, True), (512, 512, 1, 5, True)]
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.Hardswish(),
            *[DepthwiseSeparable(*b) for b in blocks], torch.nn.MaxPool2d(2, 2))
        self.rnn = torch.nn.LSTM(512, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = torch.nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.backbone(x).squeeze(2).permute(0, 2, 1)  # batch x columns x channels
        y, _ = self.rnn(f)
        return self.fc(y)


def make_text_rec():
    return calibrated_cnn(SEED + 12, TextRecognizer, (8, 3, 48, 320))


class EncoderBlock(torch.nn.Module):
    """Pre-norm transformer encoder block: x + MHA(LN(x)), then + FFN(LN(.)) with exact (Erf) GELU."""

    def __init__(self, dim=64, heads=4, hidden=256):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.ln1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.ln2 = torch.nn.LayerNorm(dim)
        self.fc1 = torch.nn.Linear(dim, hidden)
        self.act = torch.nn.GELU()  # approximate='none': exported as Erf
        self.fc2 = torch.nn.Linear(hidden, dim)

    def forward(self, x):
        b, s, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) / (self.head_dim ** 0.5), dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(y)
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


def make_transformer():
    torch.manual_seed(SEED + 4)
    model = EncoderBlock()
    gen = torch.Generator().manual_seed(SEED + 5)
    for ln in (model.ln1, model.ln2):  # non-trivial LayerNorm affine parameters
        randomize_affine(ln, gen)
    return model.eval()


class BertLayer(torch.nn.Module):
    """Post-norm encoder layer shaped like Hugging Face's BertLayer: LN(x + MHA(x)), then LN(. + FFN(.))."""

    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = torch.nn.Linear(dim, dim)
        self.k = torch.nn.Linear(dim, dim)
        self.v = torch.nn.Linear(dim, dim)
        self.out = torch.nn.Linear(dim, dim)
        self.ln1 = torch.nn.LayerNorm(dim, eps=1e-12)
        self.fc1 = torch.nn.Linear(dim, hidden)
        self.act = torch.nn.GELU()  # approximate='none': exported as Erf
        self.fc2 = torch.nn.Linear(hidden, dim)
        self.ln2 = torch.nn.LayerNorm(dim, eps=1e-12)

    def split(self, t):
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / (self.head_dim ** 0.5)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).reshape(b, s, d)
        x = self.ln1(x + self.out(ctx))
        return self.ln2(x + self.fc2(self.act(self.fc1(x))))


class BertEncoder(torch.nn.Module):
    """A stack of BertLayers over token embeddings (the embedding lookup is left out: the input is the embeddings)."""

    def __init__(self, layers=6, dim=768, heads=12, hidden=3072):
        super().__init__()
        self.layers = torch.nn.ModuleList([BertLayer(dim, heads, hidden) for _ in range(layers)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def make_bert_encoder():
    torch.manual_seed(SEED + 6)
    model = BertEncoder()
    gen = torch.Generator().manual_seed(SEED + 7)
    with torch.no_grad():  # BERT's init: N(0, 0.02) weights, zero biases would hide the bias fusion; small ones
        for name, prm in model.named_parameters():
            if "ln" in name:
                prm.copy_(norm_gain(prm.shape, gen) if name.endswith("weight") else norm_shift(prm.shape, gen))
            elif name.endswith("weight"):
                prm.copy_(torch.randn(prm.shape, generator=gen) * 0.02 * 3)
            else:
                prm.copy_((torch.rand(prm.shape, generator=gen) - 0.5) * 0.1)
    return model.eval()


class LSTMTagger(torch.nn.Module):
    """Per-token tagger over feature vectors: bidirectional 2-layer LSTM, then a Linear to the tag logits."""

    def __init__(self, features=32, hidden=48, tags=9):
        super().__init__()
        self.lstm = torch.nn.LSTM(features, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.out = torch.nn.Linear(2 * hidden, tags)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.out(y)


class GRUNet(torch.nn.Module):
    """2-layer unidirectional GRU over feature vectors, then a Linear per step."""

    def __init__(self, features=24, hidden=40, classes=6):
        super().__init__()
        self.gru = torch.nn.GRU(features, hidden, num_layers=2, batch_first=True)
        self.out = torch.nn.Linear(hidden, classes)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.out(y)


class SmallCNN(torch.nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(32, classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.relu(self.c2(x)).mean(dim=(2, 3))
        return self.fc(x)


def make_cnn_f16():
    """SmallCNN with every parameter rounded to float16 (kept float32 in torch for the reference)."""
    torch.manual_seed(SEED + 8)
    model = SmallCNN().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    return model


def to_float16(path):
    """Rewrites an exported float32 model as a float16 one: initializers, Constant tensors, graph input and output
    types, Casts to float become float16; intermediate value_info is dropped."""
    from onnx import TensorProto, numpy_helper
    m = onnx.load(path)
    g = m.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    onnx.checker.check_model(m)
    onnx.save(m, path)


def make_lstm_tagger():
    torch.manual_seed(SEED + 6)
    return LSTMTagger().eval()


def make_gru():
    torch.manual_seed(SEED + 7)
    return GRUNet().eval()


# ---------------------------------------------------------------------------------------------------------------------
# What to write

IMAGE = (3, 224, 224)
SEQ = (16, 64)  # tokens, width
BERT_SEQ = (128, 768)  # tokens, width (DistilBERT geometry)
TAGGER_SEQ = (20, 32)  # tokens, features
SMALL_IMAGE = (3, 32, 32)
GRU_SEQ = (15, 24)  # steps, features
DET_IMAGE = (3, 640, 640)
REC_IMAGE = (3, 48, 320)

# name -> (builder, per-sample input shape, [(file, opset, dynamic batch)], [(case, file, batch)], (input, output))
# dynamic batch: False, True, or "keep-bn" (dynamic, and BatchNormalization kept as nodes)
NETWORKS = {
    "resnet50": (make_resnet50, IMAGE,
                 [("resnet50.onnx", 13, False), ("resnet50_dyn.onnx", 13, True)],
                 [("resnet50_b1", "resnet50.onnx", 1), ("resnet50_b8", "resnet50_dyn.onnx", 8)],
                 ("input", "output")),
    "mobilenet_v2": (make_mobilenet_v2, IMAGE,
                     [("mobilenet_v2.onnx", 13, False), ("mobilenet_v2_dyn.onnx", 13, True),
                      ("mobilenet_v2_op10.onnx", 10, True), ("mobilenet_v2_bn.onnx", 13, "keep-bn")],
                     [("mobilenet_v2_b1", "mobilenet_v2.onnx", 1), ("mobilenet_v2_b8", "mobilenet_v2_dyn.onnx", 8),
                      ("mobilenet_v2_bn_b2", "mobilenet_v2_bn.onnx", 2)],
                     ("input", "output")),
    "mobilenet_v3": (make_mobilenet_v3, IMAGE,
                     [("mobilenet_v3.onnx", 17, False), ("mobilenet_v3_dyn.onnx", 17, True)],
                     [("mobilenet_v3_b1", "mobilenet_v3.onnx", 1), ("mobilenet_v3_b8", "mobilenet_v3_dyn.onnx", 8)],
                     ("input", "output")),
    "text_det": (make_text_det, DET_IMAGE,
                 [("text_det.onnx", 17, False), ("text_det_dyn.onnx", 17, True)],
                 [("text_det_b1", "text_det.onnx", 1), ("text_det_b8", "text_det_dyn.onnx", 8)],
                 ("input", "output")),
    "text_rec": (make_text_rec, REC_IMAGE,
                 [("text_rec.onnx", 17, False), ("text_rec_dyn.onnx", 17, True)],
                 [("text_rec_b1", "text_rec.onnx", 1), ("text_rec_b8", "text_rec_dyn.onnx", 8)],
                 ("input", "output")),
    "transformer": (make_transformer, SEQ,
                    [("transformer.onnx", 17, True), ("transformer_op13.onnx", 13, True)],
                    [("transformer_b1", "transformer.onnx", 1), ("transformer_b4", "transformer.onnx", 4),
                     ("transformer_op13_b4", "transformer_op13.onnx", 4)],
                    ("tokens", "hidden")),
    "bert_encoder": (make_bert_encoder, BERT_SEQ,
                     [("bert_encoder.onnx", 17, True)],
                     [("bert_encoder_b1", "bert_encoder.onnx", 1), ("bert_encoder_b8", "bert_encoder.onnx", 8)],
                     ("tokens", "hidden")),
    "lstm_tagger": (make_lstm_tagger, TAGGER_SEQ,
                    [("lstm_tagger.onnx", 14, True)],
                    [("lstm_tagger_b1", "lstm_tagger.onnx", 1), ("lstm_tagger_b4", "lstm_tagger.onnx", 4)],
                    ("features", "tags")),
    "gru": (make_gru, GRU_SEQ,
            [("gru.onnx", 17, True)],
            [("gru_b1", "gru.onnx", 1), ("gru_b3", "gru.onnx", 3)],
            ("features", "logits")),
    "cnn_f16": (make_cnn_f16, SMALL_IMAGE,
                [("cnn_f16.onnx", 13, "f16")],
                [("cnn_f16_b2", "cnn_f16.onnx", 2)],
                ("input", "output")),
}
F16_NETWORKS = {"cnn_f16"}  # inputs, outputs and references in float16 (the model converted by to_float16)


def export(model, sample_shape, path, opset, dynamic, io_names):
    if os.path.exists(path):
        return
    dummy = torch.randn((1,) + sample_shape, generator=torch.Generator().manual_seed(SEED + 9))
    in_name, out_name = io_names
    axes = {in_name: {0: "batch"}, out_name: {0: "batch"}} if dynamic else None
    mode = torch.onnx.TrainingMode.PRESERVE if dynamic == "keep-bn" else torch.onnx.TrainingMode.EVAL
    f16 = dynamic == "f16"
    dynamic = True if f16 else dynamic
    tmp = _atomic_path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, dummy, tmp, opset_version=opset, input_names=[in_name], output_names=[out_name],
                          dynamic_axes=axes, do_constant_folding=True, training=mode)
    onnx.checker.check_model(onnx.load(tmp))
    if f16:
        to_float16(tmp)
    os.replace(tmp, path)
    print("make_models: wrote %s (opset %d%s%s)" % (path, opset, ", dynamic batch" if dynamic else "",
                                                    ", BatchNormalization kept" if dynamic == "keep-bn" else ""))


def case_input(case, batch, sample_shape):
    """Fixed-seed input for one case: the seed depends only on the case name, so inputs never change between runs."""
    seed = SEED + sum(ord(c) * (i + 1) for i, c in enumerate(case))
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch,) + sample_shape).astype(np.float32)


def build_network(outdir, name):
    builder, sample_shape, files, cases, io_names = NETWORKS[name]
    in_name, out_name = io_names
    ref_paths = []
    for case, _, _ in cases:
        ref_paths += [os.path.join(outdir, "ref", case, n + ".npy") for n in io_names]
    wanted = [os.path.join(outdir, f) for f, _, _ in files] + ref_paths
    entries = {}
    for case, model_file, batch in cases:
        entries[case] = {"model": model_file, "batch": batch,
                         "inputs": {in_name: "ref/%s/%s.npy" % (case, in_name)},
                         "outputs": {out_name: "ref/%s/%s.npy" % (case, out_name)}}
    if all(os.path.exists(p) for p in wanted):
        return entries
    model = builder()
    for f, opset, dynamic in files:
        export(model, sample_shape, os.path.join(outdir, f), opset, dynamic, io_names)
    for case, _, batch in cases:
        d = os.path.join(outdir, "ref", case)
        os.makedirs(d, exist_ok=True)
        x = case_input(case, batch, sample_shape)
        if name in F16_NETWORKS:
            x = x.astype(np.float16)
        with torch.no_grad():
            y = model(torch.from_numpy(x.astype(np.float32))).numpy()
        if name in F16_NETWORKS:
            y = y.astype(np.float16)
        save_npy(os.path.join(d, in_name + ".npy"), x)
        save_npy(os.path.join(d, out_name + ".npy"), np.ascontiguousarray(y, dtype=y.dtype))
        print("make_models: reference %s: input %s -> output %s, |y| max %.3g" % (case, x.shape, y.shape,
                                                                                  np.abs(y).max()))
    return entries


def clear_stale_cache(outdir):
    """Removes this script's files from outdir when they were written by another CACHE_VERSION (or by none)."""
    stamp = os.path.join(outdir, ".make_models-version")
    try:
        with open(stamp) as f:
            if f.read().strip() == str(CACHE_VERSION):
                return
    except OSError:
        pass
    for _, _, files, cases, _ in NETWORKS.values():
        for f, _, _ in files:
            if os.path.exists(os.path.join(outdir, f)):
                os.remove(os.path.join(outdir, f))
        for case, _, _ in cases:
            shutil.rmtree(os.path.join(outdir, "ref", case), ignore_errors=True)
    if os.path.exists(os.path.join(outdir, "cases.json")):
        os.remove(os.path.join(outdir, "cases.json"))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outdir")
    p.add_argument("--only", nargs="+", choices=sorted(NETWORKS), help="networks to build (default: all)")
    args = p.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    cases_path = os.path.join(args.outdir, "cases.json")
    clear_stale_cache(args.outdir)
    cases = {}
    if os.path.exists(cases_path):
        with open(cases_path) as f:
            cases = json.load(f)
    for name in args.only or sorted(NETWORKS):
        cases.update(build_network(args.outdir, name))
    tmp = _atomic_path(cases_path)
    with open(tmp, "w") as f:
        json.dump(cases, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, cases_path)
    with open(os.path.join(args.outdir, ".make_models-version"), "w") as f:
        f.write("%d\n" % CACHE_VERSION)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
