"""rnn_ref.py - numpy reference for ONNX RNN / GRU / LSTM, written from the operator spec, and the test
cases gen_cases.py writes with it (every attribute the spec defines: directions, layout, activations with
alpha/beta, clip, sequence_lens, initial states, peepholes, input_forget, linear_before_reset).

Conventions not fixed by the spec follow ONNX Runtime: activation_alpha / activation_beta are consumed in
order only by the functions that take them; Y rows past a sequence's length are zero, and Y_h / Y_c hold
the state after the sequence's last step.
"""
import numpy as np

ACTS = {  # name -> (alpha/beta count, default alpha, default beta, function)
    "relu": (0, 0, 0, lambda x, a, b: np.maximum(x, 0)),
    "tanh": (0, 0, 0, lambda x, a, b: np.tanh(x)),
    "sigmoid": (0, 0, 0, lambda x, a, b: 1 / (1 + np.exp(-x))),
    "affine": (2, 1.0, 0.0, lambda x, a, b: a * x + b),
    "leakyrelu": (1, 0.01, 0, lambda x, a, b: np.where(x >= 0, x, a * x)),
    "thresholdedrelu": (1, 1.0, 0, lambda x, a, b: np.where(x > a, x, 0)),
    "scaledtanh": (2, 1.0, 1.0, lambda x, a, b: a * np.tanh(b * x)),
    "hardsigmoid": (2, 0.2, 0.5, lambda x, a, b: np.clip(a * x + b, 0, 1)),
    "elu": (1, 1.0, 0, lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1))),
    "softsign": (0, 0, 0, lambda x, a, b: x / (1 + np.abs(x))),
    "softplus": (0, 0, 0, lambda x, a, b: np.log1p(np.exp(x))),
}
DEFAULTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _acts(op, dirs, names, alphas, betas):
    """Per direction, the list of (fn, alpha, beta)."""
    k = len(DEFAULTS[op])
    names = names or DEFAULTS[op] * dirs
    if len(names) == k:
        names = names * dirs
    alphas, betas = list(alphas or []), list(betas or [])
    out = []
    for nm in names:
        cnt, a, b, fn = ACTS[nm.lower()]
        if cnt >= 1 and alphas:
            a = alphas.pop(0)
        if cnt >= 2 and betas:
            b = betas.pop(0)
        out.append((fn, a, b))
    return [out[d * k:(d + 1) * k] for d in range(dirs)]


def run(op, X, W, R, B=None, seq_lens=None, h0=None, c0=None, P=None, direction="forward", layout=0, clip=None,
        activations=None, alpha=None, beta=None, lbr=0, input_forget=0):
    """Returns Y, Y_h (and Y_c for LSTM) in the layout asked for, computed in float64."""
    f64 = lambda a: None if a is None else np.asarray(a, np.float64)
    X, W, R, B, h0, c0, P = map(f64, (X, W, R, B, h0, c0, P))
    if layout:
        X = X.transpose(1, 0, 2)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
        c0 = None if c0 is None else c0.transpose(1, 0, 2)
    T, N, _ = X.shape
    dirs = 2 if direction == "bidirectional" else 1
    H = R.shape[-1]
    acts = _acts(op, dirs, activations, alpha, beta)
    lens = np.full(N, T) if seq_lens is None else np.asarray(seq_lens)
    Y = np.zeros((T, dirs, N, H))
    Yh, Yc = np.zeros((dirs, N, H)), np.zeros((dirs, N, H))

    def act(k, d, x):
        if clip is not None:
            x = np.clip(x, -clip, clip)
        fn, a, b = acts[d][k]
        return fn(x, a, b)

    for d in range(dirs):
        rev = direction == "reverse" or d == 1
        Wd, Rd = W[d], R[d]
        Wb, Rb = (B[d][:GATES[op] * H], B[d][GATES[op] * H:]) if B is not None else (0, 0)
        if B is None:
            Wb, Rb = np.zeros(GATES[op] * H), np.zeros(GATES[op] * H)
        for n in range(N):
            h = h0[d, n].copy() if h0 is not None else np.zeros(H)
            c = c0[d, n].copy() if c0 is not None else np.zeros(H)
            L = int(lens[n])
            for s in range(L):
                t = L - 1 - s if rev else s
                x = X[t, n]
                if op == "RNN":
                    h = act(0, d, x @ Wd.T + h @ Rd.T + Wb + Rb)
                elif op == "GRU":
                    sl = lambda g: slice(g * H, (g + 1) * H)
                    z = act(0, d, x @ Wd[sl(0)].T + h @ Rd[sl(0)].T + Wb[sl(0)] + Rb[sl(0)])
                    r = act(0, d, x @ Wd[sl(1)].T + h @ Rd[sl(1)].T + Wb[sl(1)] + Rb[sl(1)])
                    if lbr:
                        hh = act(1, d, x @ Wd[sl(2)].T + r * (h @ Rd[sl(2)].T + Rb[sl(2)]) + Wb[sl(2)])
                    else:
                        hh = act(1, d, x @ Wd[sl(2)].T + (r * h) @ Rd[sl(2)].T + Rb[sl(2)] + Wb[sl(2)])
                    h = (1 - z) * hh + z * h
                else:
                    g = x @ Wd.T + h @ Rd.T + Wb + Rb
                    gi, go, gf, gc = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
                    pi, po, pf = (P[d][:H], P[d][H:2 * H], P[d][2 * H:]) if P is not None else (0, 0, 0)
                    i = act(0, d, gi + pi * c)
                    f = 1 - i if input_forget else act(0, d, gf + pf * c)
                    cc = act(1, d, gc)
                    c = f * c + i * cc
                    o = act(0, d, go + po * c)
                    fn, a, b = acts[d][2]
                    h = o * fn(c, a, b)
                Y[t, d, n] = h
            Yh[d, n], Yc[d, n] = h, c
    if layout:
        Y, Yh, Yc = Y.transpose(2, 0, 1, 3), Yh.transpose(1, 0, 2), Yc.transpose(1, 0, 2)
    outs = [Y, Yh] + ([Yc] if op == "LSTM" else [])
    return [o.astype(np.float32) for o in outs]


def add_cases(case, N):
    """Writes the recurrent cases through gen_cases.py's case() and node maker N."""
    rng = np.random.default_rng(77)

    def u(*shape, scale=0.5):
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    def one(name, op, T, Nb, I, H, opset=14, direction="forward", layout=0, use_b=True, lens=None, init=False,
            peep=False, const_weights=False, outs=None, **attrs):
        dirs = 2 if direction == "bidirectional" else 1
        G = GATES[op]
        X = u(Nb, T, I, scale=1.0) if layout else u(T, Nb, I, scale=1.0)
        W, R = u(dirs, G * H, I), u(dirs, G * H, H)
        Bv = u(dirs, 2 * G * H) if use_b else None
        hshape = (Nb, dirs, H) if layout else (dirs, Nb, H)
        h0 = u(*hshape) if init else None
        c0 = u(*hshape) if init and op == "LSTM" else None
        P = u(dirs, 3 * H) if peep else None
        sl = np.array(lens, np.int32) if lens is not None else None
        ref = run(op, X, W, R, Bv, sl, h0, c0, P, direction=direction, layout=layout, clip=attrs.get("clip"),
                  activations=attrs.get("activations"), alpha=attrs.get("activation_alpha"),
                  beta=attrs.get("activation_beta"), lbr=attrs.get("linear_before_reset", 0),
                  input_forget=attrs.get("input_forget", 0))
        slots = [("X", X), ("W", W), ("R", R), ("B", Bv), ("sequence_lens", sl), ("initial_h", h0)]
        if op == "LSTM":
            slots += [("initial_c", c0), ("P", P)]
        while slots and slots[-1][1] is None:
            slots.pop()
        names = [n if a is not None else "" for n, a in slots]
        inputs = [(n, a) for n, a in slots if a is not None and not (const_weights and n in ("W", "R", "B"))]
        inits = [(n, a) for n, a in slots if a is not None and const_weights and n in ("W", "R", "B")]
        out_names = ["Y", "Y_h", "Y_c"][:len(ref)]
        keep = outs if outs is not None else list(range(len(ref)))
        node_outs = [out_names[k] if k in keep else "" for k in range(max(keep) + 1)]
        attrs = dict(attrs, direction=direction, hidden_size=H)
        if opset >= 14:
            attrs["layout"] = layout
        case(name, [N(op, names, node_outs, **attrs)], inputs, [(out_names[k], ref[k]) for k in keep], inits=inits,
             opset=opset)

    one("lstm_bidi_seqlens", "LSTM", 5, 3, 4, 3, direction="bidirectional", lens=[5, 3, 1], init=True, peep=True)
    one("lstm_reverse_layout1_acts", "LSTM", 4, 2, 3, 5, direction="reverse", layout=1, init=True, input_forget=1,
        clip=0.7, activations=["HardSigmoid", "ScaledTanh", "Softsign"], activation_alpha=[0.3, 0.9],
        activation_beta=[0.4, 1.1])
    one("lstm_const_weights_yh_only", "LSTM", 6, 2, 5, 4, opset=13, const_weights=True, outs=[1])
    one("gru_bidi_seqlens", "GRU", 5, 3, 4, 3, direction="bidirectional", lens=[2, 5, 4], init=True,
        activations=["Sigmoid", "Tanh", "HardSigmoid", "LeakyRelu"], activation_alpha=[0.25, 0.1],
        activation_beta=[0.45])
    one("gru_lbr_reverse_layout1", "GRU", 4, 2, 3, 4, direction="reverse", layout=1, init=True,
        linear_before_reset=1, clip=1.5)
    one("gru_lbr_bidi_const", "GRU", 3, 1, 6, 5, direction="bidirectional", linear_before_reset=1,
        const_weights=True)
    one("rnn_bidi_acts", "RNN", 4, 2, 3, 4, direction="bidirectional", init=True,
        activations=["Affine", "Elu"], activation_alpha=[0.8, 1.3], activation_beta=[0.1])
    one("rnn_reverse_seqlens_layout1", "RNN", 5, 3, 2, 3, direction="reverse", layout=1, lens=[1, 5, 3],
        activations=["Softplus"], use_b=False)
    one("rnn_thresholded_relu", "RNN", 3, 2, 3, 3, activations=["ThresholdedRelu"], activation_alpha=[0.1],
        opset=7)
