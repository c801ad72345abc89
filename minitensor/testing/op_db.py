"""The op registry: one OpInfo per differentiable op. Adding an entry here is all it takes for an op to be
tested (forward vs numpy, gradients vs finite differences, second derivatives, layouts, size 0, both
backends, parity with PyTorch). See opinfo.py for what each field means.
"""
import math

import numpy as np
from hypothesis import strategies as st

import minitensor as mt
from minitensor.ops.conv import conv2d

from . import strategies as mts
from .opinfo import OpInfo, Sample, binary, last_dim, reduce_dims, reduction, unary


def _torch():
    import torch

    return torch


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def _softplus(x, beta=1.0, threshold=20.0):
    return np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _t(name):
    """torch.<name> as a callable (resolved only when the parity tests run)."""
    return lambda *a, **k: getattr(_torch(), name)(*a, **k)


OPS = []


def register(*infos):
    OPS.extend(infos)


# ---------------------------------------------------------------------------- unary elementwise
register(
    OpInfo("neg", lambda x: -x, lambda x: -x, unary(), torch_op=_t("neg")),
    OpInfo("abs", mt.abs, np.abs, unary(avoid=(0.0,)), torch_op=_t("abs")),
    OpInfo("sign", mt.sign, np.sign, unary(avoid=(0.0,)), torch_op=_t("sign")),
    OpInfo("exp", mt.exp, np.exp, unary(), torch_op=_t("exp")),
    OpInfo("log", mt.log, np.log, unary(0.1, 3.0), torch_op=_t("log")),
    OpInfo("sqrt", mt.sqrt, np.sqrt, unary(0.1, 3.0), torch_op=_t("sqrt")),
    OpInfo("rsqrt", mt.rsqrt, lambda x: 1 / np.sqrt(x), unary(0.1, 3.0), torch_op=_t("rsqrt")),
    OpInfo("sin", mt.sin, np.sin, unary(), torch_op=_t("sin")),
    OpInfo("cos", mt.cos, np.cos, unary(), torch_op=_t("cos")),
    OpInfo("tanh", mt.tanh, np.tanh, unary(), torch_op=_t("tanh")),
    OpInfo("sigmoid", mt.sigmoid, lambda x: 1 / (1 + np.exp(-x)), unary(-6.0, 6.0), torch_op=_t("sigmoid")),
    OpInfo("relu", mt.relu, lambda x: np.maximum(x, 0), unary(avoid=(0.0,)), torch_op=_t("relu")),
    OpInfo("erf", mt.erf, _erf, unary(), torch_op=_t("erf")),
    OpInfo("gelu", mt.gelu, lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))), unary(-4.0, 4.0),
           torch_op=lambda x: _torch().nn.functional.gelu(x)),
    OpInfo("gelu_tanh", lambda x: mt.gelu(x, approximate="tanh"), _gelu_tanh, unary(-4.0, 4.0),
           torch_op=lambda x: _torch().nn.functional.gelu(x, approximate="tanh")),
    OpInfo("softplus", mt.softplus, _softplus, unary(-5.0, 5.0), torch_op=lambda x: _torch().nn.functional.softplus(x)),
    OpInfo("softplus_beta", lambda x: mt.softplus(x, beta=2.0, threshold=4.0),
           lambda x: _softplus(x, 2.0, 4.0), unary(-4.0, 4.0, avoid=(2.0,)),
           torch_op=lambda x: _torch().nn.functional.softplus(x, beta=2.0, threshold=4.0)),
    OpInfo("clamp", lambda x: mt.clamp(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7),
           unary(avoid=(-0.5, 0.7)), torch_op=lambda x: _torch().clamp(x, -0.5, 0.7)),
    OpInfo("clamp_min", lambda x: x.clamp(min=0.2), lambda x: np.maximum(x, 0.2), unary(avoid=(0.2,)),
           torch_op=lambda x: x.clamp(min=0.2)),
    OpInfo("pow_scalar", lambda x: x ** 3, lambda x: x ** 3, unary(), torch_op=lambda x: x ** 3),
    OpInfo("pow_fractional", lambda x: x ** -1.5, lambda x: x ** -1.5, unary(0.2, 3.0),
           torch_op=lambda x: x ** -1.5),
    OpInfo("rpow", lambda x: 2.0 ** x, lambda x: 2.0 ** x, unary(), torch_op=lambda x: 2.0 ** x),
    OpInfo("scalar_arith", lambda x: (3.0 - x) / 2.0 * 1.5 + 0.25, lambda x: (3.0 - x) / 2.0 * 1.5 + 0.25, unary(),
           torch_op=lambda x: (3.0 - x) / 2.0 * 1.5 + 0.25),
    OpInfo("rdiv", lambda x: 1.0 / x, lambda x: 1.0 / x, unary(0.3, 3.0), torch_op=lambda x: 1.0 / x),
)

# ---------------------------------------------------------------------------- binary elementwise
def _no_ties(sample):
    """maximum/minimum have a kink where a == b: keep the operands apart (finite differences straddle it)."""
    a, b = sample.arrays
    return bool(np.all(np.abs(np.subtract(a, b)) > 1e-3))


register(
    OpInfo("add", lambda a, b: a + b, np.add, binary(), torch_op=_t("add")),
    OpInfo("sub", lambda a, b: a - b, np.subtract, binary(), torch_op=_t("sub")),
    OpInfo("mul", lambda a, b: a * b, np.multiply, binary(), torch_op=_t("mul")),
    OpInfo("div", lambda a, b: a / b, np.divide, binary(avoid=((), (0.0,)), low=(-2.0, -2.0)).filter(
        lambda s: np.all(np.abs(s.arrays[1]) > 0.2)), torch_op=_t("div")),
    OpInfo("pow", lambda a, b: a ** b, np.power, binary(low=(0.2, -2.0), high=(2.0, 2.0)), torch_op=_t("pow")),
    OpInfo("maximum", mt.maximum, np.maximum, binary().filter(_no_ties), torch_op=_t("maximum")),
    OpInfo("minimum", mt.minimum, np.minimum, binary().filter(_no_ties), torch_op=_t("minimum")),
)


@st.composite
def _where_sample(draw, max_dims=3):
    sc, sa, sb = draw(mts.broadcastable_shapes(3, 0, max_dims, 0, 4))
    return Sample((draw(mts.arrays(sa)), draw(mts.arrays(sb))), {"cond": draw(mts.bool_masks(sc))})


@st.composite
def _masked_fill_sample(draw, max_dims=3):
    shape = draw(mts.shapes(0, max_dims, 0, 4))
    mask_shape = shape[draw(st.integers(0, len(shape))):]  # a trailing part of the shape: broadcasts
    return Sample((draw(mts.arrays(shape)),), {"mask": draw(mts.bool_masks(mask_shape)), "value": -1.5})


register(
    OpInfo("where", lambda a, b, cond: mt.where(mt.tensor(cond), a, b), lambda a, b, cond: np.where(cond, a, b),
           _where_sample(), torch_op=lambda a, b, cond: _torch().where(_torch().from_numpy(cond), a, b)),
    OpInfo("masked_fill", lambda x, mask, value: x.masked_fill(mt.tensor(mask), value),
           lambda x, mask, value: np.where(mask, value, x), _masked_fill_sample(),
           torch_op=lambda x, mask, value: x.masked_fill(_torch().from_numpy(mask), value)),
)

# ---------------------------------------------------------------------------- reductions
register(
    OpInfo("sum", lambda x, dim, keepdim: x.sum(dim, keepdim),
           lambda x, dim, keepdim: np.sum(x, axis=reduce_dims(dim, x.ndim), keepdims=keepdim),
           reduction(min_side=0), torch_op=lambda x, dim, keepdim: x.sum(dim=dim, keepdim=keepdim)),
    OpInfo("mean", lambda x, dim, keepdim: x.mean(dim, keepdim),
           lambda x, dim, keepdim: np.mean(x, axis=reduce_dims(dim, x.ndim), keepdims=keepdim),
           reduction(), torch_op=lambda x, dim, keepdim: x.mean(dim=dim, keepdim=keepdim), supports_size0=False),
    OpInfo("var", lambda x, dim, keepdim: x.var(dim, keepdim=keepdim, correction=0),
           lambda x, dim, keepdim: np.var(x, axis=reduce_dims(dim, x.ndim), keepdims=keepdim),
           reduction(), torch_op=lambda x, dim, keepdim: x.var(dim, keepdim=keepdim, correction=0), supports_size0=False),
    OpInfo("std_unbiased", lambda x, dim: x.std(dim),
           lambda x, dim: np.std(x, axis=reduce_dims(dim, x.ndim), ddof=1),
           reduction(keepdim=False).filter(lambda s: s.arrays[0].size // max(
               np.asarray(np.mean(s.arrays[0], axis=reduce_dims(s.kwargs["dim"], s.arrays[0].ndim))).size, 1) > 1),
           torch_op=lambda x, dim: x.std(dim), supports_size0=False),
    OpInfo("amax", lambda x, dim, keepdim: x.amax(dim, keepdim),
           lambda x, dim, keepdim: np.max(x, axis=reduce_dims(dim, x.ndim), keepdims=keepdim),
           reduction(allow_none=False), torch_op=lambda x, dim, keepdim: x.amax(dim, keepdim), supports_size0=False),
    OpInfo("amin", lambda x, dim, keepdim: x.amin(dim, keepdim),
           lambda x, dim, keepdim: np.min(x, axis=reduce_dims(dim, x.ndim), keepdims=keepdim),
           reduction(allow_none=False), torch_op=lambda x, dim, keepdim: x.amin(dim, keepdim), supports_size0=False),
    OpInfo("max_all", lambda x: x.max(), np.max, unary(min_side=1), torch_op=lambda x: x.max(), supports_size0=False),
    OpInfo("max_dim", lambda x, dim, keepdim: x.max(dim, keepdim).values,
           lambda x, dim, keepdim: np.max(x, axis=dim, keepdims=keepdim),
           reduction(allow_none=False, allow_tuple=False, min_side=1).filter(lambda s: s.arrays[0].ndim > 0),
           torch_op=lambda x, dim, keepdim: x.max(dim, keepdim).values, supports_size0=False),
    OpInfo("min_dim", lambda x, dim: x.min(dim).values, lambda x, dim: np.min(x, axis=dim),
           reduction(allow_none=False, allow_tuple=False, keepdim=False).filter(lambda s: s.arrays[0].ndim > 0),
           torch_op=lambda x, dim: x.min(dim).values, supports_size0=False),
    OpInfo("logsumexp", lambda x, dim, keepdim: x.logsumexp(dim, keepdim),
           lambda x, dim, keepdim: np.log(np.sum(np.exp(x), axis=reduce_dims(dim, x.ndim), keepdims=keepdim)),
           reduction(allow_none=False), torch_op=lambda x, dim, keepdim: x.logsumexp(() if dim is None else dim, keepdim), supports_size0=False),
)


# ---------------------------------------------------------------------------- matmul
@st.composite
def _matmul_sample(draw, max_dims=4):
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["1d@1d", "1d@2d", "2d@1d", "2d@2d", "batched", "broadcast", "1d@batched"]))
    batch_a, batch_b = draw(mts.broadcastable_shapes(2, 0, 2, 1, 3)) if kind == "broadcast" else ((), ())
    if kind == "batched":
        batch_a = batch_b = (draw(st.integers(1, 3)),)
    shapes = {"1d@1d": ((k,), (k,)), "1d@2d": ((k,), (k, m)), "2d@1d": ((n, k), (k,)), "2d@2d": ((n, k), (k, m)),
              "batched": (batch_a + (n, k), batch_b + (k, m)), "broadcast": (batch_a + (n, k), batch_b + (k, m)),
              "1d@batched": ((k,), (2, k, m))}[kind]
    return Sample(tuple(draw(mts.arrays(s)) for s in shapes), {})


register(OpInfo("matmul", lambda a, b: a @ b, np.matmul, _matmul_sample(), torch_op=_t("matmul"),
                supports_size0=False, float32_tol=(1e-5, 1e-5)))


# ---------------------------------------------------------------------------- shapes
@st.composite
def _reshape_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 1, 4))
    n = int(np.prod(shape))
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    d = draw(st.sampled_from(divisors))
    target = draw(st.sampled_from([(n,), (d, -1), (-1, d, 1), (1, n // d, d)]))
    return Sample((draw(mts.arrays(shape)),), {"shape": target})


@st.composite
def _permute_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 0, 4))
    return Sample((draw(mts.arrays(shape)),), {"dims": tuple(draw(st.permutations(range(len(shape)))))})


@st.composite
def _expand_sample(draw, max_dims=3):
    shape = draw(mts.shapes(0, max_dims, 0, 3))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    target = lead + tuple(draw(st.integers(1, 3)) if n == 1 else n for n in shape)
    return Sample((draw(mts.arrays(shape)),), {"sizes": target})


@st.composite
def _repeat_sample(draw, max_dims=3):
    shape = draw(mts.shapes(0, max_dims, 0, 3))
    reps = tuple(draw(st.lists(st.integers(1, 3), min_size=len(shape), max_size=len(shape) + 1)))
    return Sample((draw(mts.arrays(shape)),), {"repeats": reps})


@st.composite
def _dim_sample(draw, max_dims=3, min_dims=1, extra_dim=False, min_side=0):
    shape = draw(mts.shapes(min_dims, max_dims, min_side, 4))
    n = len(shape) + (1 if extra_dim else 0)
    return Sample((draw(mts.arrays(shape)),), {"dim": draw(st.integers(-n, n - 1))})


@st.composite
def _index_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 1, 5))
    a = draw(mts.arrays(shape))
    kind = draw(st.sampled_from(["int", "slice", "step", "negative_step", "int_array", "mask", "mixed", "none"]))
    n0 = shape[0]
    index = {
        "int": draw(st.integers(-n0, n0 - 1)),
        "slice": slice(draw(st.integers(0, n0)), draw(st.integers(0, n0))),
        "step": (Ellipsis, slice(None, None, draw(st.integers(1, 3)))),
        "negative_step": slice(None, None, -draw(st.integers(1, 2))),
        "int_array": draw(mts.index_arrays(n0)),
        "mask": draw(mts.bool_masks(shape)),
        "mixed": (draw(mts.index_arrays(n0, allow_negative=False)), Ellipsis, slice(1, None))[:3 if len(shape) > 1 else 2],
        "none": (None, Ellipsis, draw(st.integers(-shape[-1], shape[-1] - 1))),
    }[kind]
    return Sample((a,), {"index": index})


@st.composite
def _gather_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 1, 4))
    dim = draw(st.integers(0, len(shape) - 1))
    idx_shape = tuple(draw(st.integers(1, n)) if d != dim else draw(st.integers(1, 5)) for d, n in enumerate(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    index = np.random.default_rng(seed).integers(0, shape[dim], idx_shape)
    return Sample((draw(mts.arrays(shape)),), {"dim": dim, "index": index})


def _np_gather(x, dim, index):
    sub = x[tuple(slice(0, n) if d != dim else slice(None) for d, n in enumerate(index.shape))]
    return np.take_along_axis(sub, index, axis=dim)


@st.composite
def _cat_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 1, 3))
    dim = draw(st.integers(0, len(shape) - 1))
    count = draw(st.integers(1, 3))
    arrays = []
    for _ in range(count):
        s = list(shape)
        s[dim] = draw(st.integers(0, 3))
        arrays.append(draw(mts.arrays(tuple(s))))
    return Sample(tuple(arrays), {"dim": dim})


@st.composite
def _stack_sample(draw, max_dims=3):
    shape = draw(mts.shapes(0, max_dims, 0, 3))
    arrays = tuple(draw(mts.arrays(shape)) for _ in range(draw(st.integers(1, 3))))
    return Sample(arrays, {"dim": draw(st.integers(-len(shape) - 1, len(shape)))})


@st.composite
def _split_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 1, 5))
    dim = draw(st.integers(0, len(shape) - 1))
    return Sample((draw(mts.arrays(shape)),), {"size": draw(st.integers(1, 3)), "dim": dim})


@st.composite
def _matrix_sample(draw, max_dims=3):
    shape = draw(mts.shapes(2, max(max_dims, 2), 0, 4))
    return Sample((draw(mts.arrays(shape)),), {"diagonal": draw(st.integers(-2, 2))})


@st.composite
def _pad_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, max_dims, 0, 3))
    pads = tuple(draw(st.lists(st.integers(0, 2), min_size=2, max_size=2 * len(shape)).filter(lambda p: len(p) % 2 == 0)))
    return Sample((draw(mts.arrays(shape)),), {"pad": pads, "value": 0.5})


def _np_pad(x, pad, value):
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return np.pad(x, widths, constant_values=value)


def _np_last_chunk(x, dim):
    """The last of chunk(2, dim): chunks of ceil(n/2), so the last starts at ceil(n/2) (or 0 if only one)."""
    n = x.shape[dim]
    size = -(-n // 2)
    start = size * (-(-n // size) - 1)
    return np.take(x, range(start, n), axis=dim)


def _cat(*arrays, dim):
    return mt.cat(list(arrays), dim)


def _stack(*arrays, dim):
    return mt.stack(list(arrays), dim)


register(
    OpInfo("reshape", lambda x, shape: x.reshape(shape), lambda x, shape: x.reshape(shape), _reshape_sample(),
           torch_op=lambda x, shape: x.reshape(shape), supports_size0=False),
    OpInfo("flatten", lambda x: x.flatten(1) if x.ndim > 1 else x.flatten(),
           lambda x: x.reshape(x.shape[0], int(np.prod(x.shape[1:]))) if x.ndim > 1 else x.reshape(-1), unary(), torch_op=lambda x: x.flatten(1) if x.ndim > 1 else x.flatten()),
    OpInfo("permute", lambda x, dims: x.permute(*dims), lambda x, dims: np.transpose(x, dims), _permute_sample(),
           torch_op=lambda x, dims: x.permute(*dims)),
    OpInfo("transpose", lambda x: x.transpose(0, -1), lambda x: np.swapaxes(x, 0, -1), unary(min_side=0).filter(
        lambda s: s.arrays[0].ndim > 0), torch_op=lambda x: x.transpose(0, -1)),
    OpInfo("squeeze", lambda x: x.squeeze(), np.squeeze, unary(min_side=0).map(
        lambda s: Sample((s.arrays[0].reshape((1,) + s.arrays[0].shape + (1,)),), {})), torch_op=lambda x: x.squeeze()),
    OpInfo("unsqueeze", lambda x, dim: x.unsqueeze(dim), lambda x, dim: np.expand_dims(x, dim),
           _dim_sample(min_dims=0, extra_dim=True), torch_op=lambda x, dim: x.unsqueeze(dim)),
    OpInfo("expand", lambda x, sizes: x.expand(*sizes), lambda x, sizes: np.broadcast_to(x, sizes), _expand_sample(),
           torch_op=lambda x, sizes: x.expand(sizes)),
    OpInfo("repeat", lambda x, repeats: x.repeat(*repeats), lambda x, repeats: np.tile(x, repeats), _repeat_sample(),
           torch_op=lambda x, repeats: x.repeat(repeats)),
    OpInfo("index", lambda x, index: x[index], lambda x, index: x[index], _index_sample(),
           torch_op=lambda x, index: x[_torch_index(index)], supports_size0=False),
    OpInfo("gather", lambda x, dim, index: x.gather(dim, mt.tensor(index)), _np_gather, _gather_sample(),
           torch_op=lambda x, dim, index: x.gather(dim, _torch().from_numpy(index)), supports_size0=False),
    OpInfo("cat", _cat, lambda *a, dim: np.concatenate(a, axis=dim), _cat_sample(),
           torch_op=lambda *a, dim: _torch().cat(a, dim)),
    OpInfo("stack", _stack, lambda *a, dim: np.stack(a, axis=dim), _stack_sample(),
           torch_op=lambda *a, dim: _torch().stack(a, dim)),
    OpInfo("split", lambda x, size, dim: mt.cat([p * (i + 1) for i, p in enumerate(x.split(size, dim))], dim),
           lambda x, size, dim: np.concatenate([p * (i + 1) for i, p in enumerate(
               np.split(x, range(size, x.shape[dim], size), axis=dim))], axis=dim), _split_sample(),
           torch_op=lambda x, size, dim: _torch().cat([p * (i + 1) for i, p in enumerate(x.split(size, dim))], dim), supports_size0=False),
    OpInfo("chunk", lambda x, dim: x.chunk(2, dim)[-1], _np_last_chunk, _dim_sample(min_side=1),
           torch_op=lambda x, dim: x.chunk(2, dim)[-1], supports_size0=False),
    OpInfo("unbind", lambda x, dim: mt.stack(list(x.unbind(dim))[::2], dim),
           lambda x, dim: np.take(x, range(0, x.shape[dim], 2), axis=dim), _dim_sample(min_side=1),
           supports_size0=False, torch_op=lambda x, dim: _torch().stack(x.unbind(dim)[::2], dim)),
    OpInfo("tril", lambda x, diagonal: x.tril(diagonal), lambda x, diagonal: np.tril(x, diagonal), _matrix_sample(),
           torch_op=lambda x, diagonal: x.tril(diagonal)),
    OpInfo("triu", lambda x, diagonal: x.triu(diagonal), lambda x, diagonal: np.triu(x, diagonal), _matrix_sample(),
           torch_op=lambda x, diagonal: x.triu(diagonal)),
    OpInfo("pad", lambda x, pad, value: mt.ops.shape.pad(x, pad, value=value), _np_pad, _pad_sample(),
           torch_op=lambda x, pad, value: _torch().nn.functional.pad(x, pad, value=value)),
    OpInfo("flip", lambda x: x.flip(0), lambda x: np.flip(x, 0), unary(min_side=0).filter(lambda s: s.arrays[0].ndim),
           torch_op=lambda x: x.flip(0)),
)


def _torch_index(index):
    torch = _torch()
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if isinstance(item, slice) and item.step is not None and item.step < 0:
            raise _NoTorchEquivalent("PyTorch does not support negative slice steps")
        out.append(torch.from_numpy(item) if isinstance(item, np.ndarray) else item)
    return tuple(out) if isinstance(index, tuple) else out[0]


class _NoTorchEquivalent(Exception):
    """Raised by a torch_op for an input PyTorch itself does not accept; the parity test skips that example."""


# ---------------------------------------------------------------------------- nn ops
@st.composite
def _layer_norm_sample(draw, max_dims=3, affine=None, bias=False):
    """x, then weight and bias (affine: True, False, or None = drawn), or a bias alone (bias=True)."""
    shape = draw(mts.shapes(1, max_dims, 1, 5))
    k = draw(st.integers(1, len(shape)))
    norm = shape[len(shape) - k:]
    with_affine = draw(st.booleans()) if affine is None else affine
    arrays = (draw(mts.arrays(shape)),) + ((draw(mts.arrays(norm)), draw(mts.arrays(norm))) if with_affine else ())
    if bias:
        arrays += (draw(mts.arrays(norm)),)
    return Sample(arrays, {"normalized_shape": norm})


def _np_layer_norm(x, *wb, normalized_shape):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + 1e-5)
    return y * wb[0] + wb[1] if wb else y


@st.composite
def _conv_sample(draw, max_dims=3):
    n, c, oc = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 1)), draw(st.integers(0, 1)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 6))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 6))
    arrays = (draw(mts.arrays((n, c, h, w))), draw(mts.arrays((oc, c, kh, kw))), draw(mts.arrays((oc,))))
    return Sample(arrays, {"stride": stride, "padding": padding, "dilation": dilation})


def _np_conv2d(x, w, b, stride, padding, dilation):
    from minitensor.backend import numpy_ref

    return numpy_ref.conv2d(x, w, b, stride, padding, dilation)


register(
    OpInfo("softmax", lambda x, dim: x.softmax(dim), _softmax, last_dim(), torch_op=lambda x, dim: x.softmax(dim), supports_size0=False),
    OpInfo("log_softmax", lambda x, dim: x.log_softmax(dim), lambda x, dim: np.log(_softmax(x, dim)), last_dim(),
           torch_op=lambda x, dim: x.log_softmax(dim), supports_size0=False),
    OpInfo("layer_norm", lambda x, *wb, normalized_shape: mt.layer_norm(x, normalized_shape, *wb), _np_layer_norm,
           _layer_norm_sample(), float32_tol=(1e-4, 1e-4),
           torch_op=lambda x, *wb, normalized_shape: _torch().nn.functional.layer_norm(x, normalized_shape, *wb), supports_size0=False),
    OpInfo("layer_norm_bias_only", lambda x, b, normalized_shape: mt.layer_norm(x, normalized_shape, None, b),
           lambda x, b, normalized_shape: _np_layer_norm(x, normalized_shape=normalized_shape) + b,
           _layer_norm_sample(affine=False, bias=True), float32_tol=(1e-4, 1e-4), supports_size0=False,
           torch_op=lambda x, b, normalized_shape: _torch().nn.functional.layer_norm(x, normalized_shape, None, b)),
    OpInfo("conv2d", lambda x, w, b, **kw: conv2d(x, w, b, **kw), _np_conv2d, _conv_sample(), supports_size0=False,
           float32_tol=(1e-4, 1e-4), torch_op=lambda x, w, b, **kw: _torch().nn.functional.conv2d(x, w, b, **kw)),
)


@st.composite
def _lstm_cell_sample(draw, max_dims=3):
    """gates (N, 4H) in [-3, 3] (every activation off its flat tails) and c (N, H); N or H may be 0."""
    n, h = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    return Sample((draw(mts.arrays((n, 4 * h), -3.0, 3.0)), draw(mts.arrays((n, h)))), {})


def _np_lstm_cell(gates, c):
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_next = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c_next), c_next


def _torch_lstm_cell(gates, c):
    torch = _torch()
    i, f, g, o = gates.chunk(4, dim=-1) if gates.shape[-1] else (gates,) * 4
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_next), c_next


# h' and c' side by side, so one random projection checks both gradients; and each alone, so the other output's
# gradient reaches backward as None (h' feeds the next step and the output, c' only the next step)
register(
    OpInfo("lstm_cell", lambda g, c: mt.cat(list(_F().lstm_cell(g, c)), dim=-1),
           lambda g, c: np.concatenate(_np_lstm_cell(g, c), axis=-1), _lstm_cell_sample(),
           torch_op=lambda g, c: _torch().cat(_torch_lstm_cell(g, c), dim=-1)),
    OpInfo("lstm_cell_h", lambda g, c: _F().lstm_cell(g, c)[0], lambda g, c: _np_lstm_cell(g, c)[0],
           _lstm_cell_sample(), torch_op=lambda g, c: _torch_lstm_cell(g, c)[0]),
    OpInfo("lstm_cell_c", lambda g, c: _F().lstm_cell(g, c)[1], lambda g, c: _np_lstm_cell(g, c)[1],
           _lstm_cell_sample(), torch_op=lambda g, c: _torch_lstm_cell(g, c)[1]),
)



@st.composite
def _lstm_recurrence_sample(draw):
    """xproj (L, N, 4H), h0 and c0 (N, H), w_hh (4H, H); kwargs: a padding mask valid (L, N) or None, reverse."""
    steps, n, h = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    arrays = (draw(mts.arrays((steps, n, 4 * h), -2.0, 2.0)), draw(mts.arrays((n, h), -1.0, 1.0)),
              draw(mts.arrays((n, h), -1.0, 1.0)), draw(mts.arrays((4 * h, h), -1.0, 1.0)))
    valid = draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=steps * n, max_size=steps * n)))
    return Sample(arrays, {"valid": None if valid is None else np.array(valid).reshape(steps, n),
                           "reverse": draw(st.booleans())})


def _np_lstm_recurrence(xproj, h0, c0, w_hh, valid=None, reverse=False):
    h, c = h0, c0
    hs = np.empty(xproj.shape[:2] + (h0.shape[1],))
    for t in range(xproj.shape[0] - 1, -1, -1) if reverse else range(xproj.shape[0]):
        h_new, c_new = _np_lstm_cell(xproj[t] + h @ w_hh.T, c)
        if valid is not None:
            h_new, c_new = np.where(valid[t][:, None], h_new, h), np.where(valid[t][:, None], c_new, c)
        h, c = h_new, c_new
        hs[t] = h
    return hs, h, c


def _lstm_recurrence(*args, **kw):
    from minitensor.ops.nn import lstm_recurrence

    return lstm_recurrence(*args, **kw)


# the whole layer (ops.nn.LSTMRecurrence, nn.LSTM's recurrence): all three outputs side by side, and hs alone and
# h_n alone, so absent output gradients reach backward as None
register(
    OpInfo("lstm_recurrence", lambda *a, **kw: mt.cat([o.reshape(-1) for o in _lstm_recurrence(*a, **kw)]),
           lambda *a, **kw: np.concatenate([o.reshape(-1) for o in _np_lstm_recurrence(*a, **kw)]),
           _lstm_recurrence_sample(), supports_size0=False),
    OpInfo("lstm_recurrence_hs", lambda *a, **kw: _lstm_recurrence(*a, **kw)[0],
           lambda *a, **kw: _np_lstm_recurrence(*a, **kw)[0], _lstm_recurrence_sample(), supports_size0=False),
    OpInfo("lstm_recurrence_hn", lambda *a, **kw: _lstm_recurrence(*a, **kw)[1],
           lambda *a, **kw: _np_lstm_recurrence(*a, **kw)[1], _lstm_recurrence_sample(), supports_size0=False),
)


@st.composite
def _linear_sample(draw):
    """x (..., in), W (out, in), b (out,)."""
    lead = draw(mts.shapes(0, 2, 1, 3))
    k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return Sample((draw(mts.arrays(lead + (k,), -2.0, 2.0)), draw(mts.arrays((n, k), -1.0, 1.0)),
                   draw(mts.arrays((n,), -1.0, 1.0))), {})


def _linear_gelu(x, w, b):
    from minitensor.ops.linalg import LinearGelu

    return LinearGelu.apply(x, w, b)


# Linear + GELU in one kernel call (the GEMM's GELU epilogue; backward recomputes the product)
register(
    OpInfo("linear_gelu", _linear_gelu, lambda x, w, b: 0.5 * (x @ w.T + b) * (1 + _erf((x @ w.T + b) / math.sqrt(2))),
           _linear_sample(), supports_size0=False,
           torch_op=lambda x, w, b: _torch().nn.functional.gelu(_torch().nn.functional.linear(x, w, b))),
)

def get(name):
    for info in OPS:
        if info.name == name:
            return info
    raise KeyError(f"no op named {name!r} in the registry")


# ---------------------------------------------------------------------------- nn.functional ops and losses
def _F():
    from minitensor.nn import functional

    return functional


@st.composite
def _linear_sample(draw, max_dims=3):
    lead = draw(mts.shapes(0, 2, 0, 3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    arrays = (draw(mts.arrays(lead + (n_in,))), draw(mts.arrays((n_out, n_in))))
    if draw(st.booleans()):
        arrays += (draw(mts.arrays((n_out,))),)
    return Sample(arrays, {})


@st.composite
def _embedding_sample(draw, max_dims=3):
    n, d = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    idx_shape = draw(mts.shapes(1, 2, 1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    ids = np.random.default_rng(seed).integers(0, n, idx_shape)
    # no padding_idx here: its row's gradient is zero by definition, not the derivative finite differences see
    # (tests/nn checks padding against PyTorch instead)
    return Sample((draw(mts.arrays((n, d))),), {"ids": ids, "padding_idx": None})


@st.composite
def _class_sample(draw, max_dims=3, probs=False):
    n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=1)))
    logits = draw(mts.arrays((n, c) + extra, -3, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kw = {"reduction": draw(st.sampled_from(["mean", "sum", "none"])),
          "weight": rng.uniform(0.5, 2.0, c) if draw(st.booleans()) else None}
    if probs:
        p = rng.uniform(0.1, 1.0, (n, c) + extra)
        kw["target"] = p / p.sum(axis=1, keepdims=True)
    else:
        target = rng.integers(0, c, (n,) + extra)
        if draw(st.booleans()) and target.size > 1:
            target.flat[0] = -100  # an ignored position
        kw["target"] = target
    return Sample((logits,), kw)


def _np_log_softmax(x, axis):
    s = x - x.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def _np_nll(logp, target, weight, reduction, ignore_index=-100):
    c = logp.shape[1]
    ignored = target == ignore_index
    safe = np.where(ignored, 0, target)
    picked = -np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    w = (weight[safe] if weight is not None else np.ones(safe.shape)) * ~ignored
    loss = picked * w
    return loss.sum() / w.sum() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _np_cross_entropy(x, target, weight, reduction, label_smoothing=0.0):
    logp = _np_log_softmax(x, 1)
    c = x.shape[1]
    if target.dtype.kind == "f":
        t = target * (1 - label_smoothing) + label_smoothing / c
        w = weight.reshape((1, c) + (1,) * (x.ndim - 2)) if weight is not None else 1.0
        loss = -(logp * t * w).sum(axis=1)
        return loss.sum() / loss.size if reduction == "mean" else loss.sum() if reduction == "sum" else loss
    nll = _np_nll(logp, target, weight, reduction)
    if label_smoothing == 0:
        return nll
    ignored = target == -100
    w = weight.reshape((1, c) + (1,) * (x.ndim - 2)) if weight is not None else 1.0
    smooth = np.where(ignored, 0.0, -(logp * w).sum(axis=1))
    if reduction == "mean":
        denom = weight[np.where(ignored, 0, target)][~ignored].sum() if weight is not None else (~ignored).sum()
        smooth = smooth.sum() / denom
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1 - label_smoothing) * nll + smooth * label_smoothing / c


def _t_opt(v):
    return None if v is None else _torch().from_numpy(np.asarray(v))


@st.composite
def _bce_sample(draw, max_dims=3):
    shape = draw(mts.shapes(1, 2, 1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kw = {"target": rng.uniform(0, 1, shape), "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
          "pos_weight": rng.uniform(0.5, 3, shape[-1:]) if draw(st.booleans()) else None}
    return Sample((draw(mts.arrays(shape, -4, 4)),), kw)


def _np_bce(x, target, reduction, pos_weight):
    lw = 1 + (pos_weight - 1) * target if pos_weight is not None else 1.0
    loss = (1 - target) * x + lw * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0))
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


@st.composite
def _sdpa_sample(draw, max_dims=3):
    batch = tuple(draw(st.lists(st.integers(1, 2), max_size=2)))
    L, S, E, Ev = (draw(st.integers(1, 4)) for _ in range(4))
    arrays = tuple(draw(mts.arrays(batch + s)) for s in ((L, E), (S, E), (S, Ev)))
    kind = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    kw = {"is_causal": kind == "causal" and L == S}
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "bool":
        m = rng.random((L, S)) < 0.7
        m[:, 0] = True  # every query keeps at least one key
        kw["attn_mask"] = m
    elif kind == "float":
        kw["attn_mask"] = rng.uniform(-1, 1, (L, S))
    return Sample(arrays, kw)


def _np_sdpa(q, k, v, attn_mask=None, is_causal=False):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if is_causal:
        scores = scores + np.triu(np.full(scores.shape[-2:], -np.inf), 1)
    elif attn_mask is not None:
        scores = scores + (np.where(attn_mask, 0.0, -np.inf) if attn_mask.dtype == np.bool_ else attn_mask)
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


def _with_key_mask(sample):
    """A padding-style additive mask over the last dim: about 30% of positions -inf, never the first."""
    n = sample.arrays[0].shape[-1]
    mask = np.where(np.random.default_rng(sample.arrays[0].size).random(n) < 0.3, -np.inf, 0.0)
    mask[0] = 0.0
    return Sample(sample.arrays, {"mask": mask})


def _masked_softmax_sample():
    return last_dim(min_dims=2).map(_with_key_mask)


register(
    OpInfo("linear", lambda *t: _F().linear(*t), lambda x, w, *b: x @ w.T + (b[0] if b else 0), _linear_sample(),
           torch_op=lambda *t: _torch().nn.functional.linear(*t)),
    OpInfo("embedding", lambda w, ids, padding_idx: _F().embedding(mt.tensor(ids), w, padding_idx),
           lambda w, ids, padding_idx: w[ids], _embedding_sample(), supports_size0=False,
           torch_op=lambda w, ids, padding_idx: _torch().nn.functional.embedding(_torch().from_numpy(ids), w, padding_idx)),
    OpInfo("dropout", lambda x: mt.ops.nn.dropout(x, 0.3, True, mt.Generator(7)),
           lambda x: x * (mt.Generator(7).random(x.shape, np.dtype(np.float64)) >= 0.3) / 0.7, unary(),
           float32_tol=(1e-5, 1e-5)),
    OpInfo("softmax_masked", lambda x, mask: mt.ops.nn.softmax(x, -1, mask=mask),
           lambda x, mask: _softmax(x + mask, -1), _masked_softmax_sample(), supports_size0=False,
           torch_op=lambda x, mask: (x + _torch().from_numpy(mask)).softmax(-1)),
    OpInfo("cross_entropy", lambda x, target, weight, reduction: _F().cross_entropy(
               x, mt.tensor(target), None if weight is None else mt.tensor(weight, dtype=x.dtype), reduction=reduction),
           lambda x, target, weight, reduction: _np_cross_entropy(x, target, weight, reduction), _class_sample(),
           supports_size0=False, float32_tol=(1e-4, 1e-5),
           torch_op=lambda x, target, weight, reduction: _torch().nn.functional.cross_entropy(
               x, _torch().from_numpy(target), _t_opt(weight), reduction=reduction)),
    OpInfo("cross_entropy_smoothed", lambda x, target, weight, reduction: _F().cross_entropy(
               x, mt.tensor(target), None if weight is None else mt.tensor(weight, dtype=x.dtype), reduction=reduction,
               label_smoothing=0.1),
           lambda x, target, weight, reduction: _np_cross_entropy(x, target, weight, reduction, 0.1), _class_sample(),
           supports_size0=False, float32_tol=(1e-4, 1e-5),
           torch_op=lambda x, target, weight, reduction: _torch().nn.functional.cross_entropy(
               x, _torch().from_numpy(target), _t_opt(weight), reduction=reduction, label_smoothing=0.1)),
    OpInfo("cross_entropy_probs", lambda x, target, weight, reduction: _F().cross_entropy(
               x, mt.tensor(target, dtype=x.dtype), None if weight is None else mt.tensor(weight, dtype=x.dtype),
               reduction=reduction, label_smoothing=0.05),
           lambda x, target, weight, reduction: _np_cross_entropy(x, target, weight, reduction, 0.05),
           _class_sample(probs=True), supports_size0=False, float32_tol=(1e-4, 1e-5),
           torch_op=lambda x, target, weight, reduction: _torch().nn.functional.cross_entropy(
               x, _torch().from_numpy(target), _t_opt(weight), reduction=reduction, label_smoothing=0.05)),
    OpInfo("nll_loss", lambda x, target, weight, reduction: _F().nll_loss(
               x, mt.tensor(target), None if weight is None else mt.tensor(weight, dtype=x.dtype), reduction=reduction),
           lambda x, target, weight, reduction: _np_nll(x, target, weight, reduction),
           _class_sample().filter(lambda s: s.arrays[0].ndim == 2), supports_size0=False,
           torch_op=lambda x, target, weight, reduction: _torch().nn.functional.nll_loss(
               x, _torch().from_numpy(target), _t_opt(weight), reduction=reduction)),
    OpInfo("mse_loss", lambda a, b: _F().mse_loss(a, b), lambda a, b: np.mean((a - b) ** 2),
           binary().filter(lambda s: s.arrays[0].shape == s.arrays[1].shape and s.arrays[0].size), supports_size0=False,
           torch_op=lambda a, b: _torch().nn.functional.mse_loss(a, b)),
    OpInfo("l1_loss", lambda a, b: _F().l1_loss(a, b, reduction="sum"), lambda a, b: np.abs(a - b).sum(),
           binary().filter(lambda s: s.arrays[0].shape == s.arrays[1].shape and np.all(np.abs(s.arrays[0] - s.arrays[1]) > 0.05)),
           torch_op=lambda a, b: _torch().nn.functional.l1_loss(a, b, reduction="sum")),
    OpInfo("bce_with_logits", lambda x, target, reduction, pos_weight: _F().binary_cross_entropy_with_logits(
               x, mt.tensor(target, dtype=x.dtype), reduction=reduction,
               pos_weight=None if pos_weight is None else mt.tensor(pos_weight, dtype=x.dtype)),
           lambda x, target, reduction, pos_weight: _np_bce(x, target, reduction, pos_weight), _bce_sample(),
           supports_size0=False, float32_tol=(1e-4, 1e-5),
           torch_op=lambda x, target, reduction, pos_weight: _torch().nn.functional.binary_cross_entropy_with_logits(
               x, _torch().from_numpy(target), reduction=reduction, pos_weight=_t_opt(pos_weight))),
    OpInfo("scaled_dot_product_attention", lambda q, k, v, **kw: _F().scaled_dot_product_attention(q, k, v, **kw),
           _np_sdpa, _sdpa_sample(), supports_size0=False, float32_tol=(1e-4, 1e-5),
           torch_op=lambda q, k, v, attn_mask=None, is_causal=False: _torch().nn.functional.scaled_dot_product_attention(
               q, k, v, attn_mask=_t_opt(attn_mask), is_causal=is_causal)),
)
