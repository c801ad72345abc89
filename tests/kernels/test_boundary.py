"""The C++ boundary: every _C kernel fed what real programs hand it (arrays from pickle, read-only, misaligned,
strided, byte-swapped, empty, extreme-valued), checked against the numpy reference (numpy_ref.py) or for a clear
error (ValueError / TypeError naming the op); every output lives inside a byte buffer of canaries, so a write
outside it fails the test. Then the items of issue 12 that sit at the boundary: pickled models, log_softmax
precision, the limits of gelu and layer_norm, thread counts, environment variables and the ISA report."""
import math
import os
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitensor as mt
from minitensor.backend import numpy_ref

from .conftest import _C

PAD = 64  # canary bytes on each side of an output
CANARY = 0xA5


class ByteCanaried:
    """An output array inside a uint8 buffer of canary bytes: at byte offset `misalign` from an aligned start, rows
    `gap` elements apart (a strided output); `check()` asserts that no byte outside the array changed."""

    def __init__(self, shape, dtype, misalign=0, gap=0):
        dtype = np.dtype(dtype)
        shape = tuple(shape)
        cols = shape[-1] if shape else 1
        rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        row_stride = (cols + gap) * dtype.itemsize
        strides = [dtype.itemsize] * len(shape)
        if shape:
            strides[-1] = dtype.itemsize
            acc = row_stride
            for d in range(len(shape) - 2, -1, -1):
                strides[d] = acc
                acc *= shape[d]
        nbytes = rows * row_stride
        self.buffer = np.full(2 * PAD + nbytes + 8, CANARY, np.uint8)
        self.offset = PAD + misalign
        self.array = np.ndarray(shape, dtype, buffer=self.buffer, offset=self.offset, strides=strides)
        owned = np.zeros_like(self.buffer)
        np.ndarray(shape, np.dtype(f"u{dtype.itemsize}"), buffer=owned, offset=self.offset, strides=strides)[...] = \
            np.iinfo(f"u{dtype.itemsize}").max
        self.outside = owned == 0

    def check(self):
        bad = self.buffer[self.outside] != CANARY
        assert not bad.any(), f"kernel wrote {int(bad.sum())} byte(s) outside its output"


# ---------------------------------------------------------------------------------------------- the kernels
# Each case: dims (name -> size), inputs(rng, dtype, dims) -> {name: array}, outputs(dims) -> {name: shape},
# call(C, ins, outs), reference(ins) -> {output name: expected}. Inputs are drawn in float64 and rounded.

def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _conv_geom(d):
    oh = numpy_ref.conv_out_size(d["H"], d["KH"], 2, 1, 1)
    ow = numpy_ref.conv_out_size(d["W"], d["KW"], 2, 1, 1)
    return oh, ow


STRIDE, PADDING, DILATION = (2, 2), (1, 1), (1, 1)


class Case:
    def __init__(self, name, dims, zero_dims, inputs, outputs, call, reference, ops):
        self.name, self.dims, self.zero_dims = name, dims, zero_dims
        self.inputs, self.outputs, self.call, self.reference, self.ops = inputs, outputs, call, reference, ops


def _softmax_case(log):
    return Case(
        "log_softmax" if log else "softmax", {"R": 5, "N": 19}, ("R", "N"),
        lambda rng, dt, d: {"x": _normal(rng, (d["R"], d["N"]), dt, 3),
                            "mask": np.where(rng.random((d["R"], d["N"])) < 0.3, -np.inf, 0).astype(dt)},
        lambda d: {"out": (d["R"], d["N"])},
        lambda C, i, o, d: C.softmax_forward(i["x"], o["out"], i["mask"], log),
        lambda i, d: {"out": (numpy_ref.log_softmax if log else numpy_ref.softmax)(i["x"], i["mask"])},
        ("softmax", "log_softmax"))


def _softmax_backward_case(log):
    def inputs(rng, dt, d):
        x = rng.standard_normal((d["R"], d["N"]))
        return {"y": (numpy_ref.log_softmax if log else numpy_ref.softmax)(x).astype(dt),
                "grad": _normal(rng, (d["R"], d["N"]), dt)}
    return Case(
        "log_softmax_backward" if log else "softmax_backward", {"R": 4, "N": 21}, ("R", "N"), inputs,
        lambda d: {"out": (d["R"], d["N"])},
        lambda C, i, o, d: C.softmax_backward(i["y"], i["grad"], o["out"], log),
        lambda i, d: {"out": (numpy_ref.log_softmax_backward if log else numpy_ref.softmax_backward)(i["y"], i["grad"])},
        ("softmax_backward", "log_softmax_backward"))


def _ln_backward_inputs(rng, dt, d):
    x = _normal(rng, (d["R"], d["N"]), dt)
    _, mean, rstd = numpy_ref.layer_norm(x, None, None, 1e-5)
    return {"grad": _normal(rng, x.shape, dt), "x": x, "mean": mean.astype(dt), "rstd": rstd.astype(dt),
            "weight": _normal(rng, (d["N"],), dt)}


def _conv_inputs(rng, dt, d):
    return {"x": _normal(rng, (d["N"], d["C"], d["H"], d["W"]), dt),
            "weight": _normal(rng, (d["OC"], d["C"], d["KH"], d["KW"]), dt), "bias": _normal(rng, (d["OC"],), dt)}


def _conv_backward_inputs(rng, dt, d):
    ins = _conv_inputs(rng, dt, d)
    del ins["bias"]
    oh, ow = _conv_geom(d)
    ins["grad"] = _normal(rng, (d["N"], d["OC"], oh, ow), dt)
    return ins


def _cols_inputs(rng, dt, d):
    oh, ow = _conv_geom(d)
    return {"cols": _normal(rng, (d["N"], d["C"] * d["KH"] * d["KW"], oh * ow), dt)}


def _sdpa_inputs(rng, dt, d):
    ins = {"q": _normal(rng, (d["N"], d["H"], d["L"], d["E"]), dt), "k": _normal(rng, (d["N"], d["H"], d["S"], d["E"]), dt),
           "v": _normal(rng, (d["N"], d["H"], d["S"], d["Ev"]), dt),
           "mask": np.where(rng.random((d["N"], d["H"], d["L"], d["S"])) < 0.2, -np.inf, 0).astype(dt)}
    ins["mask"][..., 0] = 0  # no fully masked row (those are NaN on both sides, checked in test_rows)
    return ins


def _sdpa_backward_inputs(rng, dt, d):
    ins = _sdpa_inputs(rng, dt, d)
    out, lse = numpy_ref.sdpa(*(ins[n].astype(np.float64) for n in ("q", "k", "v", "mask")), False, 0.5)
    ins.update(out=out.astype(dt), lse=lse.astype(dt), grad=_normal(rng, out.shape, dt))
    return ins


SDPA_DIMS = {"N": 2, "H": 2, "L": 5, "S": 6, "E": 4, "Ev": 3}
CONV_DIMS = {"N": 2, "C": 3, "H": 7, "W": 6, "OC": 4, "KH": 3, "KW": 2}
LSTM_DIMS = {"N": 3, "H": 5}

CASES = [
    Case("gemm", {"M": 7, "K": 9, "N": 5}, ("M", "K", "N"),
         lambda rng, dt, d: {"a": _normal(rng, (d["M"], d["K"]), dt), "b": _normal(rng, (d["K"], d["N"]), dt)},
         lambda d: {"c": (d["M"], d["N"])},
         lambda C, i, o, d: C.gemm(i["a"], i["b"], o["c"]),
         lambda i, d: {"c": i["a"] @ i["b"]}, ("gemm",)),
    Case("gemm_bias_gelu", {"M": 6, "K": 8, "N": 5}, ("M", "K"),
         lambda rng, dt, d: {"a": _normal(rng, (d["M"], d["K"]), dt), "b": _normal(rng, (d["K"], d["N"]), dt),
                             "bias": _normal(rng, (d["N"],), dt)},
         lambda d: {"c": (d["M"], d["N"])},
         lambda C, i, o, d: C.gemm(i["a"], i["b"], o["c"], bias=i["bias"], activation="gelu"),
         lambda i, d: {"c": numpy_ref.gelu(i["a"] @ i["b"] + i["bias"])}, ("gemm",)),
    _softmax_case(False), _softmax_case(True), _softmax_backward_case(False), _softmax_backward_case(True),
    Case("layer_norm", {"R": 4, "N": 13}, ("R", "N"),
         lambda rng, dt, d: {"x": _normal(rng, (d["R"], d["N"]), dt, 2), "weight": _normal(rng, (d["N"],), dt),
                             "bias": _normal(rng, (d["N"],), dt)},
         lambda d: {"out": (d["R"], d["N"]), "mean": (d["R"],), "rstd": (d["R"],)},
         lambda C, i, o, d: C.layer_norm_forward(i["x"], i["weight"], i["bias"], 1e-5, o["out"], o["mean"], o["rstd"]),
         lambda i, d: dict(zip(("out", "mean", "rstd"), numpy_ref.layer_norm(i["x"], i["weight"], i["bias"], 1e-5))),
         ("layer_norm",)),
    Case("layer_norm_backward", {"R": 4, "N": 11}, ("R",), _ln_backward_inputs,
         lambda d: {"dx": (d["R"], d["N"]), "dweight": (d["N"],), "dbias": (d["N"],)},
         lambda C, i, o, d: C.layer_norm_backward(i["grad"], i["x"], i["mean"], i["rstd"], i["weight"], o["dx"],
                                               o["dweight"], o["dbias"]),
         lambda i, d: dict(zip(("dx", "dweight", "dbias"),
                            numpy_ref.layer_norm_backward(i["grad"], i["x"], i["mean"], i["rstd"], i["weight"]))),
         ("layer_norm_backward",)),
    Case("im2col", CONV_DIMS, ("N", "C"),
         lambda rng, dt, d: {"x": _normal(rng, (d["N"], d["C"], d["H"], d["W"]), dt)},
         lambda d: {"out": (d["N"], d["C"] * d["KH"] * d["KW"], math.prod(_conv_geom(d)))},
         lambda C, i, o, d: C.im2col(i["x"], CONV_DIMS["KH"], CONV_DIMS["KW"], list(STRIDE), list(PADDING),
                                  list(DILATION), o["out"]),
         lambda i, d: {"out": numpy_ref.im2col(i["x"], CONV_DIMS["KH"], CONV_DIMS["KW"], STRIDE, PADDING, DILATION)},
         ("im2col",)),
    Case("col2im", CONV_DIMS, ("N", "C"), _cols_inputs,
         lambda d: {"out": (d["N"], d["C"], d["H"], d["W"])},
         lambda C, i, o, d: C.col2im(i["cols"], list(o["out"].shape), CONV_DIMS["KH"], CONV_DIMS["KW"], list(STRIDE),
                                  list(PADDING), list(DILATION), o["out"]),
         lambda i, d: {"out": numpy_ref.col2im(i["cols"], (d["N"], d["C"], d["H"], d["W"]), CONV_DIMS["KH"],
                                               CONV_DIMS["KW"], STRIDE, PADDING, DILATION)},
         ("col2im",)),
    Case("conv2d", CONV_DIMS, ("N",), _conv_inputs,
         lambda d: {"out": (d["N"], d["OC"]) + _conv_geom(d)},
         lambda C, i, o, d: C.conv2d_forward(i["x"], i["weight"], i["bias"], list(STRIDE), list(PADDING), list(DILATION),
                                          o["out"]),
         lambda i, d: {"out": numpy_ref.conv2d(i["x"], i["weight"], i["bias"], STRIDE, PADDING, DILATION)},
         ("conv2d",)),
    Case("conv2d_backward", CONV_DIMS, (), _conv_backward_inputs,
         lambda d: {"dx": (d["N"], d["C"], d["H"], d["W"]), "dweight": (d["OC"], d["C"], d["KH"], d["KW"]),
                    "dbias": (d["OC"],)},
         lambda C, i, o, d: C.conv2d_backward(i["grad"], i["x"], i["weight"], list(STRIDE), list(PADDING),
                                           list(DILATION), o["dx"], o["dweight"], o["dbias"]),
         lambda i, d: dict(zip(("dx", "dweight", "dbias"), numpy_ref.conv2d_backward(
             i["grad"], i["x"], i["weight"], STRIDE, PADDING, DILATION, True, True, True))),
         ("conv2d_backward",)),
    Case("erf", {"R": 3, "N": 37}, ("R",),
         lambda rng, dt, d: {"x": _normal(rng, (d["R"], d["N"]), dt, 2)},
         lambda d: {"out": (d["R"], d["N"])},
         lambda C, i, o, d: C.erf(i["x"], o["out"]),
         lambda i, d: {"out": numpy_ref.erf(i["x"])}, ("erf",)),
    Case("gelu", {"R": 3, "N": 37}, ("R",),
         lambda rng, dt, d: {"x": _normal(rng, (d["R"], d["N"]), dt, 3)},
         lambda d: {"out": (d["R"], d["N"])},
         lambda C, i, o, d: C.gelu(i["x"], o["out"]),
         lambda i, d: {"out": numpy_ref.gelu(i["x"])}, ("gelu",)),
    Case("gelu_tanh_backward", {"R": 3, "N": 37}, ("R",),
         lambda rng, dt, d: {"x": _normal(rng, (d["R"], d["N"]), dt, 3), "grad": _normal(rng, (d["R"], d["N"]), dt)},
         lambda d: {"out": (d["R"], d["N"])},
         lambda C, i, o, d: C.gelu_backward(i["x"], i["grad"], o["out"], True),
         lambda i, d: {"out": numpy_ref.gelu_backward(i["x"], i["grad"], "tanh")}, ("gelu_backward",)),
    Case("lstm_cell", LSTM_DIMS, ("N",),
         lambda rng, dt, d: {"gates": _normal(rng, (d["N"], 4 * d["H"]), dt), "c": _normal(rng, (d["N"], d["H"]), dt)},
         lambda d: {"h": (d["N"], d["H"]), "c_next": (d["N"], d["H"])},
         lambda C, i, o, d: C.lstm_cell_forward(i["gates"], i["c"], o["h"], o["c_next"]),
         lambda i, d: dict(zip(("h", "c_next"), numpy_ref.lstm_cell(i["gates"], i["c"]))), ("lstm_cell",)),
    Case("lstm_cell_backward", LSTM_DIMS, ("N",),
         lambda rng, dt, d: {"gates": _normal(rng, (d["N"], 4 * d["H"]), dt), "c": _normal(rng, (d["N"], d["H"]), dt),
                             "dh": _normal(rng, (d["N"], d["H"]), dt), "dc": _normal(rng, (d["N"], d["H"]), dt)},
         lambda d: {"d_gates": (d["N"], 4 * d["H"]), "d_c": (d["N"], d["H"])},
         lambda C, i, o, d: C.lstm_cell_backward(i["gates"], i["c"], i["dh"], i["dc"], o["d_gates"], o["d_c"]),
         lambda i, d: dict(zip(("d_gates", "d_c"), numpy_ref.lstm_cell_backward(i["gates"], i["c"], i["dh"], i["dc"]))),
         ("lstm_cell",)),
    Case("sdpa", SDPA_DIMS, ("N", "L"), _sdpa_inputs,
         lambda d: {"out": (d["N"], d["H"], d["L"], d["Ev"]), "lse": (d["N"], d["H"], d["L"])},
         lambda C, i, o, d: C.sdpa_forward(i["q"], i["k"], i["v"], i["mask"], False, 0.5, o["out"], o["lse"]),
         lambda i, d: dict(zip(("out", "lse"), numpy_ref.sdpa(i["q"], i["k"], i["v"], i["mask"], False, 0.5))),
         ("scaled_dot_product_attention",)),
    Case("sdpa_backward", SDPA_DIMS, ("N", "L"), _sdpa_backward_inputs,
         lambda d: {"dq": (d["N"], d["H"], d["L"], d["E"]), "dk": (d["N"], d["H"], d["S"], d["E"]),
                    "dv": (d["N"], d["H"], d["S"], d["Ev"])},
         lambda C, i, o, d: C.sdpa_backward(i["q"], i["k"], i["v"], i["mask"], False, 0.5, i["out"], i["lse"],
                                         i["grad"], o["dq"], o["dk"], o["dv"]),
         lambda i, d: dict(zip(("dq", "dk", "dv"), numpy_ref.sdpa_backward(
             i["q"], i["k"], i["v"], i["mask"], False, 0.5, i["out"], i["lse"], i["grad"]))),
         ("scaled_dot_product_attention_backward",)),
    Case("add", {"R": 3, "N": 29}, ("R", "N"),
         lambda rng, dt, d: {"a": _normal(rng, (d["R"], d["N"]), dt), "b": _normal(rng, (d["R"], d["N"]), dt)},
         lambda d: {"out": (d["R"], d["N"])},
         lambda C, i, o, d: C.add(i["a"], i["b"], o["out"]),
         lambda i, d: {"out": i["a"] + i["b"]}, ("add",)),
    Case("copy", {"R": 3, "N": 29}, ("R", "N"),
         lambda rng, dt, d: {"src": _normal(rng, (d["R"], d["N"]), dt)},
         lambda d: {"dst": (d["R"], d["N"])},
         lambda C, i, o, d: C.copy(i["src"], o["dst"]),
         lambda i, d: {"dst": i["src"].copy()}, ("copy",)),
]
CASE_NAMES = [c.name for c in CASES]


def test_every_kernel_of_C_has_a_case(C):
    """A kernel added to bindings.cpp without a boundary case fails here."""
    covered = {"gemm", "softmax_forward", "softmax_backward", "layer_norm_forward", "layer_norm_backward", "im2col",
               "col2im", "conv2d_forward", "conv2d_backward", "erf", "gelu", "gelu_backward", "lstm_cell_forward",
               "lstm_cell_backward", "sdpa_forward", "sdpa_backward", "add", "copy"}
    not_kernels = {"info", "set_num_threads", "get_num_threads", "tune_malloc", "peak_gflops"}
    public = {n for n in dir(C) if not n.startswith("_") and callable(getattr(C, n))}
    assert public - not_kernels == covered


# ---------------------------------------------------------------------------------------------- variants
def _pickled(a):
    return pickle.loads(pickle.dumps(a))


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _misaligned(a):
    """The same values, at byte offset 1 of a uint8 buffer (numpy marks it unaligned)."""
    buf = np.empty(a.nbytes + a.itemsize + 1, np.uint8)
    out = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
    out[...] = a
    return out


def _strided(a):
    """The same values as a non-contiguous view (every other element of a bigger array)."""
    if a.ndim == 0:
        return a
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _transposed(a):
    """The same values through reversed strides (a Fortran-ordered copy)."""
    return np.asfortranarray(a)


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder())


INPUT_VARIANTS = {"pickled": _pickled, "read_only": _read_only, "misaligned": _misaligned, "strided": _strided,
                  "fortran": _transposed, "byteswapped": _byteswapped}
MUST_WORK = ("pickled", "read_only")  # nothing about these arrays is unusual to a kernel


def _tolerance(dtype):
    return (2e-4, 2e-5) if dtype == np.float32 else (1e-9, 1e-12)


def _clear_error(exc, case):
    """A ValueError/TypeError whose message starts with the op's name."""
    assert isinstance(exc, (ValueError, TypeError)), f"{case.name}: {type(exc).__name__}: {exc}"
    assert re.match(rf"({'|'.join(case.ops)}): \S", str(exc)), f"{case.name}: unclear error: {exc}"


def _run(C, case, dtype, dims, in_variant=None, in_target=None, out_kind="plain", seed=0):
    """Call the case's kernel with one input transformed (or outputs placed oddly); returns the outputs' arrays and
    the reference's, or raises what the kernel raised. Canaries are checked either way."""
    rng = np.random.default_rng(seed)
    ins = case.inputs(rng, dtype, dims)
    with warnings.catch_warnings():  # numpy's on empty rows (the kernel may refuse those: checked below)
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = case.reference({k: v.astype(np.float64) for k, v in ins.items()}, dims)
    if in_variant is not None:
        ins[in_target] = INPUT_VARIANTS[in_variant](ins[in_target])
    outs = {n: ByteCanaried(s, dtype, misalign=1 if out_kind == "misaligned" else 0,
                            gap=3 if out_kind == "strided" else 0) for n, s in case.outputs(dims).items()}
    arrays = {n: o.array for n, o in outs.items()}
    if out_kind == "read_only":
        for a in arrays.values():
            a.flags.writeable = False
    try:
        case.call(C, ins, arrays, dims)
    finally:
        for o in outs.values():
            o.check()
    return arrays, expected


def _assert_matches(case, dtype, arrays, expected):
    rtol, atol = _tolerance(dtype)
    for n, a in arrays.items():
        np.testing.assert_allclose(a, expected[n], rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=f"{case.name}: output {n}")


def _input_names(case):
    return list(case.inputs(np.random.default_rng(0), np.float32, case.dims))


@pytest.mark.parametrize("case", CASES, ids=CASE_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_inputs_match_the_reference(C, case, dtype):
    arrays, expected = _run(C, case, dtype, case.dims)
    _assert_matches(case, dtype, arrays, expected)


FIXED_DIMS = ("KH", "KW")  # the conv cases' kernel size is part of their call


@st.composite
def _dims(draw, case, zero=None):
    """The case's dims, each drawn from 1 .. twice its default (`zero`: that one 0)."""
    dims = {n: v if n in FIXED_DIMS else draw(st.integers(1, 2 * v), label=n) for n, v in case.dims.items()}
    if zero is not None:
        dims[zero] = 0
    return dims


DTYPES = st.sampled_from([np.float32, np.float64])


@pytest.mark.parametrize("variant", sorted(INPUT_VARIANTS))
@pytest.mark.parametrize("case", CASES, ids=CASE_NAMES)
@given(dtype=DTYPES, data=st.data())
@settings(max_examples=6, deadline=None)
def test_unusual_inputs_match_or_raise_a_clear_error(C, case, variant, dtype, data):
    """Pickled and read-only inputs must work; misaligned and strided inputs work (the kernel copies, or reads
    through strides) or give a clear error; byte-swapped inputs are always a clear TypeError."""
    dims = data.draw(_dims(case), label="dims")
    target = data.draw(st.sampled_from(_input_names(case)), label="input")
    try:
        arrays, expected = _run(C, case, dtype, dims, variant, target, seed=data.draw(st.integers(0, 9), label="seed"))
    except (ValueError, TypeError) as exc:
        assert variant not in MUST_WORK, f"{case.name}: {variant} {target} raised {exc}"
        _clear_error(exc, case)
        if variant == "byteswapped":
            assert isinstance(exc, TypeError) and "non-native byte order (dtype '>f" in str(exc), str(exc)
        return
    assert variant != "byteswapped", f"{case.name}: a byte-swapped {target} was accepted"
    _assert_matches(case, dtype, arrays, expected)


@pytest.mark.parametrize("out_kind", ["misaligned", "strided", "read_only"])
@pytest.mark.parametrize("case", CASES, ids=CASE_NAMES)
@given(dtype=DTYPES, data=st.data())
@settings(max_examples=3, deadline=None)
def test_unusual_outputs_are_refused_clearly_or_written_in_place(C, case, out_kind, dtype, data):
    try:
        arrays, expected = _run(C, case, dtype, data.draw(_dims(case), label="dims"), out_kind=out_kind)
    except (ValueError, TypeError) as exc:
        _clear_error(exc, case)
        return
    assert out_kind != "read_only", f"{case.name}: wrote into a read-only output"
    _assert_matches(case, dtype, arrays, expected)


@pytest.mark.parametrize("case, zero", [(c, z) for c in CASES for z in c.zero_dims],
                         ids=[f"{c.name}-{z}=0" for c in CASES for z in c.zero_dims])
@given(dtype=DTYPES, data=st.data())
@settings(max_examples=3, deadline=None)
def test_size_zero_inputs_match_or_raise_a_clear_error(C, case, zero, dtype, data):
    try:
        arrays, expected = _run(C, case, dtype, data.draw(_dims(case, zero), label="dims"))
    except (ValueError, TypeError) as exc:
        _clear_error(exc, case)
        return
    _assert_matches(case, dtype, arrays, expected)


# ---------------------------------------------------------------------------------------------- extreme values
EXTREMES = [np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-45, -1e-45, 0.0, -0.0, 1.0, -2.5]


def _extreme(rng, shape, dtype):
    with np.errstate(over="ignore"):
        return rng.choice(np.array(EXTREMES), size=shape).astype(dtype)


# Kernels whose every output element depends on one element per input, or on one row through a max-shifted or
# pivoted reduction: on extreme values they must agree with the reference exactly in NaN / inf pattern, and
# within tolerance elsewhere.
ELEMENTWISE = {"erf": "x", "gelu": "x", "gelu_tanh_backward": "x", "add": "a", "copy": "src", "lstm_cell": "gates",
               "softmax": "x", "log_softmax": "x", "im2col": "x"}


@given(name=st.sampled_from(sorted(ELEMENTWISE)), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_extreme_values_in_elementwise_and_row_kernels_match_the_reference(C, name, dtype, seed):
    case = CASES[CASE_NAMES.index(name)]
    rng = np.random.default_rng(seed)
    ins = case.inputs(rng, dtype, case.dims)
    target = ELEMENTWISE[name]
    ins[target] = _extreme(rng, ins[target].shape, dtype)
    outs = {n: ByteCanaried(s, dtype) for n, s in case.outputs(case.dims).items()}
    case.call(C, ins, {n: o.array for n, o in outs.items()}, case.dims)
    for o in outs.values():
        o.check()
    with np.errstate(all="ignore"):
        expected = case.reference(ins, case.dims)  # in the kernel's dtype: overflow to inf happens where the kernel's does
    rtol, atol = _tolerance(dtype)
    for n, o in outs.items():
        np.testing.assert_allclose(o.array, expected[n], rtol=rtol * 4, atol=atol, equal_nan=True,
                                   err_msg=f"{name}: output {n}")


@given(name=st.sampled_from([c.name for c in CASES if c.name not in ELEMENTWISE]), dtype=DTYPES,
       seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=80, deadline=None)
def test_extreme_values_in_reductions_never_crash_or_write_outside(C, name, dtype, seed, data):
    """Kernels that sum many terms overflow (or not) depending on their summation order, so on extreme inputs they
    are held to returning normally (or raising a clear error) and writing nothing outside their outputs; the values
    of the GEMM, which every other reduction builds on, are checked in the next test."""
    case = CASES[CASE_NAMES.index(name)]
    rng = np.random.default_rng(seed)
    ins = case.inputs(rng, dtype, case.dims)
    target = data.draw(st.sampled_from(sorted(ins)), label="input")
    ins[target] = _extreme(rng, ins[target].shape, dtype)
    outs = {n: ByteCanaried(s, dtype) for n, s in case.outputs(case.dims).items()}
    try:
        case.call(C, ins, {n: o.array for n, o in outs.items()}, case.dims)
    except (ValueError, TypeError) as exc:
        _clear_error(exc, case)
    for o in outs.values():
        o.check()


@given(dtype=DTYPES, seed=st.integers(0, 2**16), m=st.integers(1, 40), k=st.integers(1, 70), n=st.integers(1, 40))
@settings(max_examples=60, deadline=None)
def test_gemm_on_extreme_values_is_right_wherever_the_answer_is_determined(C, dtype, seed, m, k, n):
    """Against the float64 product (which cannot overflow here): NaN where it is NaN (inf * 0, inf - inf: NaN stays
    NaN whatever the order); inf or NaN where it is +-inf (an inf term; a float32 overflow of the other sign on the
    way can turn it into NaN); within the rounding bound k * eps * sum|a||b| where no partial sum can overflow."""
    rng = np.random.default_rng(seed)
    a = _extreme(rng, (m, k), dtype)
    b = (rng.standard_normal((k, n)) * rng.choice([1, 1e-30, 1e30], size=(k, n))).astype(dtype)
    out = ByteCanaried((m, n), dtype)
    C.gemm(a, b, out.array)
    out.check()
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    tiny = np.finfo(dtype).tiny
    with np.errstate(all="ignore"):
        exact = a64 @ b64
        bound = np.abs(a64) @ np.abs(b64)
        # the kernels flush subnormal inputs and results to zero (FlushSubnormals in common.h)
        flushed = np.where(np.abs(a64) < tiny, np.abs(a64), 0) @ np.abs(b64) + 4 * k * tiny
    got = out.array
    assert np.isnan(got[np.isnan(exact)]).all()
    assert not np.isfinite(got[np.isinf(exact)]).any()
    safe = np.isfinite(bound) & (bound < np.finfo(dtype).max / 4)
    err = k * np.finfo(dtype).eps * bound + flushed
    assert (np.abs(got[safe] - exact[safe]) <= err[safe]).all()


# ---------------------------------------------------------------------------------------------- item 1: pickle
def test_pickled_arrays_reach_the_kernels():
    a = pickle.loads(pickle.dumps(np.ones((4, 4), np.float32)))
    assert a.dtype is not np.dtype(np.float32)  # what pickle gives: an equal but distinct dtype object
    np.testing.assert_array_equal((mt.tensor(a) @ mt.tensor(a)).numpy(), np.full((4, 4), 4, np.float32))


def test_pickled_vit_tiny_runs_forward():
    from minitensor.models.vit import vit_tiny

    mt.manual_seed(0)
    model = vit_tiny()
    model.eval()
    x = mt.randn(2, 1, 28, 28)
    with mt.no_grad():
        expected = model(x).numpy()
        clone = pickle.loads(pickle.dumps(model))
        got = clone(mt.tensor(pickle.loads(pickle.dumps(x.numpy())))).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("variant", ["pickled", "read_only", "misaligned", "strided", "fortran"])
@given(seed=st.integers(0, 2**16), dtype=DTYPES)
@settings(max_examples=8, deadline=None)
def test_unusual_arrays_through_the_tensor_api_match_the_numpy_backend(variant, seed, dtype):
    """The same arrays, shared with tensors (from_numpy: no copy), through ops on every kernel family: the native
    backend hands the kernels what they can read and agrees with the numpy backend."""
    if _C is None:
        pytest.skip("minitensor._C is not built: no native backend to compare")
    F = mt.nn.functional
    rng = np.random.default_rng(seed)
    make = INPUT_VARIANTS[variant]
    x = mt.from_numpy(make(_normal(rng, (2, 3, 6, 8), dtype)))
    w = mt.from_numpy(make(_normal(rng, (8, 8), dtype)))
    kernel = mt.from_numpy(make(_normal(rng, (4, 3, 3, 3), dtype)))
    gates, c = mt.from_numpy(make(_normal(rng, (5, 16), dtype))), mt.from_numpy(make(_normal(rng, (5, 4), dtype)))

    def pipeline():
        h = F.gelu(F.layer_norm(x, (8,)) @ w)
        attn = F.scaled_dot_product_attention(h, h, h)
        feat = F.conv2d(attn, kernel, padding=1)
        return [F.log_softmax(feat, -1), F.softmax(feat.reshape(2, -1), -1), *F.lstm_cell(gates, c)]

    before = mt.get_backend()
    try:
        mt.set_backend("numpy")
        expected = pipeline()
        mt.set_backend("native")
        got = pipeline()
    finally:
        mt.set_backend(before)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.detach().numpy(), e.detach().numpy(), rtol=rtol, atol=rtol)


def test_byteswapped_arrays():
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    t = mt.tensor(big_endian)  # converted: a copy is made anyway
    assert t.dtype == mt.float32 and t.numpy().dtype.isnative
    np.testing.assert_array_equal((t @ t.T).numpy(), big_endian.astype(np.float32) @ big_endian.astype(np.float32).T)
    np.testing.assert_array_equal(mt.as_tensor(big_endian).numpy(), big_endian)
    with pytest.raises(ValueError, match="from_numpy: the array has non-native byte order"):
        mt.from_numpy(big_endian)
    legacy = mt.Tensor(np.arange(3, dtype=">f8"))  # the legacy constructor converts too (to the default float)
    assert legacy.dtype == mt.float32 and legacy.tolist() == [0.0, 1.0, 2.0]


def test_kernels_read_misaligned_contiguous_inputs_through_a_copy(C):
    x = _misaligned(np.linspace(-3, 3, 40, dtype=np.float32).reshape(4, 10))
    assert not x.flags.aligned
    out = ByteCanaried(x.shape, np.float32)
    C.softmax_forward(x, out.array, None, True)
    out.check()
    np.testing.assert_allclose(out.array, numpy_ref.log_softmax(np.array(x, np.float64)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="gemm: a is not aligned"):
        C.gemm(x, np.ones((10, 2), np.float32), np.empty((4, 2), np.float32))


# ---------------------------------------------------------------------------------------------- item 2: log_softmax
@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_keeps_its_precision_at_large_logits(backend, dtype):
    if backend == "native" and _C is None:
        pytest.skip("minitensor._C is not built: no native kernels")
    kernels = numpy_ref if backend == "numpy" else __import__("minitensor.backend.native", fromlist=["x"])
    true_first = -math.log(sum(math.exp(-i) for i in range(4)))  # -0.44019
    x = np.array([[1e7, 1e7 - 1, 1e7 - 2, 1e7 - 3], [-3e38] * 4], dtype)
    y = kernels.log_softmax(x)
    np.testing.assert_allclose(y[0], [true_first - i for i in range(4)], rtol=1e-6)
    np.testing.assert_allclose(y[1], [-math.log(4)] * 4, rtol=1e-6)
    masked = kernels.log_softmax(x, np.array([0, -np.inf, 0, 0], dtype))
    lse = -math.log(1 + math.exp(-2) + math.exp(-3))
    np.testing.assert_allclose(masked[0], [lse, -np.inf, lse - 2, lse - 3], rtol=1e-6)
    np.testing.assert_allclose(masked[1], [-math.log(3), -np.inf, -math.log(3), -math.log(3)], rtol=1e-6)
    # backward from those outputs: g - exp(y) * sum(g)
    g = np.ones_like(y)
    np.testing.assert_allclose(kernels.log_softmax_backward(y, g), 1 - 4 * np.exp(y.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)


def test_cross_entropy_at_large_logits():
    logits = mt.tensor([[1e7, 1e7 - 1, 1e7 - 2, 1e7 - 3]], requires_grad=True)
    loss = mt.nn.functional.cross_entropy(logits, mt.tensor([0]))
    assert abs(loss.item() - 0.44019) < 1e-4
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy()[0, 0], math.exp(-0.44019) - 1, rtol=1e-3)


# ---------------------------------------------------------------------------------------------- item 3: extremes
def _both_backends():
    names = ["numpy"] + (["native"] if _C is not None else [])
    return [numpy_ref if n == "numpy" else __import__("minitensor.backend.native", fromlist=["x"]) for n in names]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_of_a_constant_huge_row_is_the_bias(dtype):
    x = np.full((2, 4), 3e38, dtype)
    x[1] = -3e38
    w, b = np.full(4, 2.0, dtype), np.arange(4, dtype=dtype)
    for kernels in _both_backends():
        y, mean, rstd = kernels.layer_norm(x, w, b, 1e-5)
        np.testing.assert_array_equal(y, np.stack([b, b]), err_msg=kernels.NAME)
        np.testing.assert_array_equal(mean, x[:, 0], err_msg=kernels.NAME)
        dx, dw, db = kernels.layer_norm_backward(np.ones_like(x), x, mean, rstd, w)
        np.testing.assert_array_equal(dx, np.zeros_like(x), err_msg=kernels.NAME)
        np.testing.assert_array_equal(db, np.full(4, 2, dtype), err_msg=kernels.NAME)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_at_the_infinities(approximate, dtype):
    x = np.array([-np.inf, np.inf, -3e38, 3e38, np.nan, -40.0, 40.0] * 3, dtype)  # 21: full vectors and a tail
    for kernels in _both_backends():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no RuntimeWarning from numpy either
            y = kernels.gelu(x, approximate)
            dy = kernels.gelu_backward(x, np.ones_like(x), approximate)
        expect_y = np.array([-0.0, np.inf, -0.0, 3e38, np.nan, -0.0, 40.0] * 3, dtype)
        np.testing.assert_array_equal(y, expect_y, err_msg=kernels.NAME)
        assert np.signbit(y[0]) and np.signbit(y[2]), kernels.NAME  # the limit from the left is -0
        np.testing.assert_array_equal(dy, np.array([0, 1, 0, 1, np.nan, 0, 1] * 3, dtype), err_msg=kernels.NAME)


def test_gelu_through_the_tensor_api():
    x = mt.tensor([-np.inf, np.inf, 0.5], requires_grad=True)
    y = mt.nn.functional.gelu(x)
    y.sum().backward()
    assert y.detach().numpy()[0] == 0 and y.detach().numpy()[1] == np.inf
    np.testing.assert_allclose(x.grad.numpy(), [0, 1, 0.8674951], rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_with_infinities_match_pytorch(dtype):
    """Rows with inf, -inf, all -inf and NaN: PyTorch 2.13's values (NaN where an inf is the max or every entry is
    masked, 0 weight for -inf, equal weights for equal huge values)."""
    rows = np.array([[np.inf, 0], [-np.inf, 0], [-np.inf, -np.inf], [np.nan, 0], [3e38, 3e38], [3e38, -3e38]], dtype)
    soft = [[np.nan, np.nan], [0, 1], [np.nan, np.nan], [np.nan, np.nan], [0.5, 0.5], [1, 0]]
    logs = [[np.nan, np.nan], [-np.inf, 0], [np.nan, np.nan], [np.nan, np.nan], [-math.log(2)] * 2,
            [0, -np.inf if dtype == np.float32 else -6e38]]  # -6e38 overflows float32
    for kernels in _both_backends():
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(kernels.softmax(rows), soft, rtol=1e-6, err_msg=kernels.NAME)
            np.testing.assert_allclose(kernels.log_softmax(rows), logs, rtol=1e-6, err_msg=kernels.NAME)
            mask = np.array([0, -np.inf], dtype)
            np.testing.assert_allclose(kernels.softmax(rows[1:2], mask), [[np.nan, np.nan]], err_msg=kernels.NAME)


# ---------------------------------------------------------------------------------------------- items 4-6: subprocesses
def _python(code, **env):
    full = dict(os.environ)
    for var in ("MINITENSOR_BACKEND", "MINITENSOR_ISA", "MINITENSOR_MALLOC", "OMP_NUM_THREADS"):
        full.pop(var, None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.parametrize("bad, error", [("2", TypeError), (2.0, TypeError), (True, TypeError), (None, TypeError),
                                        (0, ValueError), (-3, ValueError)])
def test_set_num_threads_rejects_what_is_not_a_positive_int(bad, error):
    with pytest.raises(error, match=re.escape(f"set_num_threads: expected a positive int, got {bad!r}")):
        mt.set_num_threads(bad)


def test_set_num_threads_caps_at_the_available_cores_with_one_warning():
    code = ("import warnings, numpy as np, minitensor as mt\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    mt.set_num_threads(2**31 - 1)\n"
            "print(len(w), w[0].category.__name__, w[0].message)\n"
            "print(mt.get_num_threads())\n"
            "a = mt.randn(300, 300); print(float((a @ a).sum()) == float((a @ a).sum()))\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    cores = _cores()
    assert lines[0] == (f"1 RuntimeWarning set_num_threads: 2147483647 threads requested, but this process may use "
                        f"{cores} core(s); using {cores}")
    if _C is not None:
        assert lines[1] == str(cores)
    assert lines[2] == "True"


def test_omp_num_threads_too_large_is_capped_at_import():
    out = _python("import minitensor as mt; a = mt.randn(200, 200); (a @ a).sum(); print(mt.get_num_threads())",
                  OMP_NUM_THREADS="2147483647")
    assert out.returncode == 0, out.stderr
    if _C is not None:
        assert out.stdout.split() == [str(_cores())]
        assert f"OMP_NUM_THREADS: 2147483647 threads requested, but this process may use {_cores()} core(s)" in out.stderr


ENV_ERRORS = [
    ("MINITENSOR_BACKEND", "cuda", "MINITENSOR_BACKEND='cuda': expected 'native' or 'numpy'"),
    ("MINITENSOR_ISA", "avx1024", "MINITENSOR_ISA='avx1024': expected 'scalar', 'avx2' or 'avx512'"),
    ("MINITENSOR_MALLOC", "forever", "MINITENSOR_MALLOC='forever': expected 'retain' or 'default'"),
    ("OMP_NUM_THREADS", "lots", "OMP_NUM_THREADS='lots': expected a positive int"),
    ("OMP_NUM_THREADS", "0", "OMP_NUM_THREADS='0': expected a positive int"),
]


@pytest.mark.parametrize("var, value, message", ENV_ERRORS, ids=[f"{v}={x}" for v, x, _ in ENV_ERRORS])
def test_a_bad_environment_variable_stops_every_kernel_until_set_backend(var, value, message):
    code = ("import minitensor as mt\n"
            "from minitensor.backend import environment_error\n"
            "print(environment_error())\n"
            "a = mt.ones(2, 2)\n"
            "try:\n"
            "    a @ a\n"
            "except ValueError as e:\n"
            "    print('raised', e)\n"
            "mt.set_backend('numpy')\n"
            "print((a @ a).numpy().tolist(), mt.get_backend())\n")
    out = _python(code, **{var: value})
    assert out.returncode == 0, out.stderr
    first, raised, after = out.stdout.splitlines()
    assert first.startswith(message), first
    assert raised == f"raised {first}"
    assert after == "[[2.0, 2.0], [2.0, 2.0]] numpy"
    assert "Traceback" not in out.stderr


def test_a_valid_environment_reports_no_error():
    out = _python("from minitensor.backend import environment_error; print(environment_error())",
                  MINITENSOR_BACKEND="numpy", MINITENSOR_ISA="scalar", MINITENSOR_MALLOC="default", OMP_NUM_THREADS="1")
    assert out.returncode == 0 and out.stdout.split() == ["None"], out.stderr


def test_isa_supported_reports_the_cpu_not_the_cap(C):
    supported = C.info()["isa_supported"]
    out = _python("from minitensor import _C; i = _C.info(); print(i['isa'], ','.join(i['isa_supported']))",
                  MINITENSOR_ISA="scalar")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["scalar", ",".join(supported)]
