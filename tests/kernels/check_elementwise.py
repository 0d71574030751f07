#!/usr/bin/python3
"""check_elementwise.py - element-wise, reduction and Concat graphs on odd and broadcasting shapes through `hotserve run`.

ONNX's conformance cases use few shapes; these add the ones where a kernel could go wrong: odd sizes,
either operand broadcasting (the binary kernel swaps its operands), scalars, a negative base under Pow,
keepdims 0, concatenation along every axis. Each graph runs twice: in strict mode (HS_KERNELS_STRICT=1:
the oneDNN path, no silent fallback) and as usual; both must match numpy within ONNX's tolerance.
Usage: check_elementwise.py HOTSERVE WORKDIR
"""
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hsrun import run_model

RNG = np.random.default_rng(11)


def rand(*shape, positive=False):
    x = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(x) + 0.5 if positive else x


def graph(op, inputs, consts, out_shape, attrs=None, opset=13):
    """One node named op reading the runtime inputs then the constants (name -> array)."""
    names = list(inputs) + list(consts)
    node = helper.make_node(op, names, ["y"], **(attrs or {}))
    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()]
    init = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([node], op.lower(), vi, [out], init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def cases():
    a, b = rand(3, 5, 7), rand(7)
    for op, f in [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide)]:
        yield op + "_b_bcast", graph(op, {"a": a, "b": b}, {}, None), {"a": a, "b": b}, f(a, b)
        # the first operand broadcasts: the kernel swaps them (Sub negates, Div stays plain C)
        yield op + "_a_bcast", graph(op, {"b": b, "a": a}, {}, None), {"b": b, "a": a}, f(b, a)
        c, d = rand(4, 1, 6), rand(5, 1)  # both broadcast: plain C by design
        yield op + "_both_bcast", graph(op, {"c": c, "d": d}, {}, None), {"c": c, "d": d}, f(c, d)
        s = np.array(rand(1)[0] + 2.0, dtype=np.float32).reshape(())
        yield op + "_const_scalar", graph(op, {"a": a}, {"s": s}, None), {"a": a}, f(a, s)
        p, q = rand(2, 1, 9, 1), rand(2, 3, 9, 5)  # a large broadcast of the first operand
        yield op + "_mid_bcast", graph(op, {"q": q, "p": p}, {}, None), {"q": q, "p": p}, f(q, p)
    # from 2^15 output elements plain C splits its rows over the threads: a row split inside the outer
    # dimensions, a squeeze-and-excite style channel scale and a case where both operands broadcast
    a, b = rand(2, 61, 67, 33), rand(2, 1, 1, 33)
    yield "Mul_rows_split_se", graph("Mul", {"a": a, "b": b}, {}, None), {"a": a, "b": b}, a * b
    a, b = rand(5, 1, 241, 229), rand(5, 7, 1, 229)
    yield "Add_rows_split_both_bcast", graph("Add", {"a": a, "b": b}, {}, None), {"a": a, "b": b}, a + b
    x = rand(5, 11)
    for e in [2.0, 3.0, 0.5, -1.0, 1.7]:
        base = np.abs(x) if e in (0.5, 1.7) else x  # integer exponents on negative bases
        yield "Pow_%g" % e, graph("Pow", {"x": base}, {"e": np.array(e, np.float32)}, None), {"x": base}, \
            np.power(base, np.float32(e))
    v = rand(2, 3, 4, 5)
    for op, f in [("ReduceSum", np.sum), ("ReduceMean", np.mean), ("ReduceMax", np.max), ("ReduceMin", np.min),
                  ("ReduceProd", np.prod)]:
        for axes in [[1], [0, 2], [-1], [1, 2, 3]]:
            for keep in [0, 1]:
                name = "%s_%s_k%d" % (op, "_".join(map(str, axes)), keep)
                want = f(v, axis=tuple(axes), keepdims=bool(keep))
                if op == "ReduceSum":
                    m = graph(op, {"v": v}, {"axes": np.array(axes, np.int64)}, None, {"keepdims": keep})
                else:
                    m = graph(op, {"v": v}, {}, None, {"keepdims": keep, "axes": axes})
                yield name, m, {"v": v}, want
        yield op + "_all", graph(op, {"v": v}, {}, None, {"keepdims": 0}), {"v": v}, f(v)
    for axis in range(4):
        parts = []
        for i, size in enumerate([1, 3, 2]):
            shape = [2, 3, 4, 5]
            shape[axis] = size
            parts.append(rand(*shape))
        ins = {"p%d" % i: t for i, t in enumerate(parts)}
        yield "Concat_axis%d" % axis, graph("Concat", ins, {}, None, {"axis": axis}), ins, np.concatenate(parts, axis)
    ins = {"p0": rand(3, 5)}
    cst = {"c1": rand(3, 2)}
    yield "Concat_const", graph("Concat", ins, cst, None, {"axis": -1}), ins, np.concatenate([ins["p0"], cst["c1"]], 1)



def main():
    hotserve, work = sys.argv[1], sys.argv[2]
    passed = failed = 0
    for name, model, inputs, want in cases():
        want = np.asarray(want, dtype=np.float32)
        for strict in (1, 0):
            outs, why = run_model(hotserve, os.path.join(work, name, "strict" if strict else "plain"), model, inputs,
                                  strict)
            got = outs[0] if outs else None
            ok = got is not None and got.shape == want.shape
            if got is not None and not ok:
                why = "shape %s vs %s" % (got.shape, want.shape)
            if ok:
                bad = np.abs(got.astype(np.float64) - want) > 1e-7 + 1e-3 * np.abs(want.astype(np.float64))
                if bad.any():
                    i = int(np.argmax(bad))
                    ok, why = False, "element %d: %g vs %g" % (i, got.flat[i], want.flat[i])
            print("%s %s [%s]%s" % ("PASS" if ok else "FAIL", name, "strict" if strict else "plain",
                                    "" if ok else ": " + why))
            passed += ok
            failed += not ok
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
