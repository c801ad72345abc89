"""Reductions: sum, mean, var, std, max/min (with and without dim), amax/amin, logsumexp; argmax/argmin,
all/any without gradient.

The backward of a reduction spreads g back over the reduced dims: `_expand_back` reinserts them as size 1
and broadcasts, the inverse of what forward removed.
"""
import builtins
from collections import namedtuple

import numpy as np

from .. import dtypes
from ..autograd import grad_mode
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_dim, normalize_dims

max_result = namedtuple("max", ["values", "indices"])
min_result = namedtuple("min", ["values", "indices"])


def _kept_shape(shape, dims):
    return tuple(1 if i in dims else n for i, n in enumerate(shape))


def _expand_back(g, shape, dims, keepdim, divisor=None):
    """Broadcast the reduced gradient g back to the input's shape (a read-only view: the engine never writes into
    gradients, it adds them into new arrays)."""
    if not grad_mode.is_grad_enabled():  # a plain backward records nothing: numpy directly, no op calls
        a = g._data if keepdim else g._data.reshape(_kept_shape(shape, dims))
        return Tensor._wrap(np.broadcast_to(a if divisor is None else a / divisor, shape))
    if not keepdim:
        g = g.reshape(_kept_shape(shape, dims))
    return g.expand(shape) if divisor is None else g.expand(shape) / divisor


def _dims(x, dim, op):
    dims = normalize_dims(dim, x.ndim, op)
    if dim is not None and isinstance(dim, (list, tuple)) and len(dim) == 0:
        dims = tuple(range(x.ndim))  # as in PyTorch, an empty dim list reduces everything
    return dims


def _count(shape, dims):
    n = 1
    for d in dims:
        n *= shape[d]
    return n


class Sum(Function):
    """y = sum of x over dims;  dy/dx = 1, so the gradient is g broadcast back."""

    @staticmethod
    def forward(ctx, x, dims, keepdim):
        x = x._data
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, dims, keepdim
        return x.sum(axis=dims, keepdims=keepdim)  # the method: np.sum's Python wrapper costs about a microsecond

    @staticmethod
    def backward(ctx, g):
        return _expand_back(g, ctx.shape, ctx.dims, ctx.keepdim), None, None


class Mean(Function):
    """y = mean of x over dims (n elements each);  dy/dx = 1/n."""

    @staticmethod
    def forward(ctx, x, dims, keepdim):
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, dims, keepdim
        with np.errstate(invalid="ignore", divide="ignore"):  # mean of nothing is nan, as in PyTorch
            return np.mean(x._data, axis=dims, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        n = _count(ctx.shape, ctx.dims)
        return _expand_back(g, ctx.shape, ctx.dims, ctx.keepdim, builtins.max(n, 1)), None, None


class Var(Function):
    """y = sum((x - mean)²) / (n - correction);  dy/dx = 2 (x - mean) / (n - correction)."""

    @staticmethod
    def forward(ctx, x, dims, correction, keepdim):
        ctx.save_for_backward(x)
        ctx.dims, ctx.correction, ctx.keepdim = dims, correction, keepdim
        with np.errstate(invalid="ignore", divide="ignore"):  # n <= correction gives inf/nan, as in PyTorch
            return np.var(x._data, axis=dims, ddof=correction, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        n = _count(x.shape, ctx.dims)
        centered = x - x.mean(dim=ctx.dims, keepdim=True)
        scale = 2.0 / (n - ctx.correction) if n != ctx.correction else float("inf")
        return _expand_back(g, x.shape, ctx.dims, ctx.keepdim) * centered * scale, None, None, None


class Amax(Function):
    """y = max (or min) over dims;  dy/dx = 1/k at each of the k positions that attain it, else 0
    (ties share the gradient evenly, as in PyTorch's amax/amin and full max()/min())."""

    @staticmethod
    def forward(ctx, x, dims, keepdim, largest):
        reduce = np.max if largest else np.min
        y = reduce(x._data, axis=dims, keepdims=True)
        hit = x._data == y
        ctx.save_for_backward(Tensor._wrap(hit / hit.sum(axis=dims, keepdims=True)))
        ctx.shape, ctx.dims, ctx.keepdim = x.shape, dims, keepdim
        return y if keepdim else y.reshape([n for i, n in enumerate(x.shape) if i not in dims])

    @staticmethod
    def backward(ctx, g):
        (weights,) = ctx.saved_tensors
        weights = Tensor._wrap(weights._data.astype(g.dtype))
        return _expand_back(g, ctx.shape, ctx.dims, ctx.keepdim) * weights, None, None, None


class MaxDim(Function):
    """values = x at `indices` (a Tensor, x's shape without dim) along dim;  the gradient goes to that one position.
    The indices are saved: they are also given to the caller (max(dim).indices), who may change them in place."""

    @staticmethod
    def forward(ctx, x, dim, keepdim, indices):
        ctx.shape, ctx.dim, ctx.keepdim = x.shape, dim, keepdim
        ctx.save_for_backward(indices)
        values = np.take_along_axis(x._data, np.expand_dims(indices._data, dim), axis=dim)
        return values if keepdim else np.squeeze(values, axis=dim)

    @staticmethod
    def backward(ctx, g):
        (indices,) = ctx.saved_tensors
        shape, dim, idx = ctx.shape, ctx.dim, indices._data
        positions = np.arange(shape[dim]).reshape([-1 if i == dim else 1 for i in range(len(shape))])
        onehot = Tensor._wrap((positions == np.expand_dims(idx, dim)).astype(g.dtype))
        return _expand_back(g, shape, (dim,), ctx.keepdim) * onehot, None, None, None


class LogSumExp(Function):
    """y = log(sum(exp(x))) over dims, computed as m + log(sum(exp(x - m)));  dy/dx = exp(x - y) (a softmax)."""

    @staticmethod
    def forward(ctx, x, dims, keepdim):
        xd = x._data
        m = np.max(xd, axis=dims, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)  # all -inf rows: avoid inf - inf
        with np.errstate(divide="ignore"):
            y = np.log(np.sum(np.exp(xd - m), axis=dims, keepdims=True)) + m
        y_t = Tensor._wrap(y if keepdim else y.reshape([n for i, n in enumerate(xd.shape) if i not in dims]))
        ctx.save_for_backward(x, y_t)
        ctx.dims, ctx.keepdim = dims, keepdim
        return y_t

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        kept = _kept_shape(x.shape, ctx.dims)
        return _expand_back(g, x.shape, ctx.dims, ctx.keepdim) * (x - y.reshape(kept)).exp(), None, None


# ---------------------------------------------------------------------------- the functions
def sum(x, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype.kind in "biu":
        x = x.to(dtypes.int64)  # integer and bool sums are int64, as in PyTorch
    return Sum.apply(x, _dims(x, dim, "sum"), keepdim)


def mean(x, dim=None, keepdim=False):
    _need_float(x, "mean")
    return Mean.apply(x, _dims(x, dim, "mean"), keepdim)


def _correction(unbiased, correction, op):
    if unbiased is not None and correction is not None:
        raise ValueError(f"{op}: pass either unbiased or correction, not both")
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


def var(x, dim=None, unbiased=None, keepdim=False, correction=None):
    _need_float(x, "var")
    if isinstance(dim, bool):  # var(True): the old positional `unbiased`
        dim, unbiased = None, dim
    return Var.apply(x, _dims(x, dim, "var"), _correction(unbiased, correction, "var"), keepdim)


def std(x, dim=None, unbiased=None, keepdim=False, correction=None):
    return var(x, dim, unbiased, keepdim, correction).sqrt()


def _max_min(x, dim, keepdim, largest):
    op = "max" if largest else "min"
    if isinstance(dim, Tensor):  # max(a, b): the elementwise maximum, as in PyTorch
        from .elementwise import maximum, minimum

        return maximum(x, dim) if largest else minimum(x, dim)
    if dim is None:
        if x.numel() == 0:
            raise RuntimeError(f"{op}(): cannot reduce an empty tensor of shape {tuple(x.shape)}; give dim")
        return Amax.apply(x, tuple(range(x.ndim)), False, largest)
    d = normalize_dim(dim, x.ndim, op)
    if x.ndim and x.shape[d] == 0:
        raise IndexError(f"{op}(): cannot reduce over dim {dim} of size 0 (shape {tuple(x.shape)})")
    data = x._data if x.ndim else x._data.reshape(1)
    indices = Tensor._wrap((np.argmax if largest else np.argmin)(data, axis=d).astype(np.int64, copy=False))
    values = MaxDim.apply(x, d, keepdim, indices) if x.ndim else x.clone()
    result = max_result if largest else min_result
    if indices.shape != values.shape:  # keepdim, or a 0-d x: the same indices (one version counter), reshaped
        shaped = Tensor._wrap(indices._data.reshape(values.shape))
        shaped._vc = indices._vc
        indices = shaped
    return result(values, indices)


def max(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, True)


def min(x, dim=None, keepdim=False):
    return _max_min(x, dim, keepdim, False)


def amax(x, dim=None, keepdim=False):
    dims = _dims(x, dim if dim is not None else (), "amax")
    _nonempty(x, dims, "amax")
    return Amax.apply(x, dims, keepdim, True)


def amin(x, dim=None, keepdim=False):
    dims = _dims(x, dim if dim is not None else (), "amin")
    _nonempty(x, dims, "amin")
    return Amax.apply(x, dims, keepdim, False)


def logsumexp(x, dim, keepdim=False):
    _need_float(x, "logsumexp")
    return LogSumExp.apply(x, _dims(x, dim, "logsumexp"), keepdim)


def argmax(x, dim=None, keepdim=False):
    return _arg(np.argmax, x, dim, keepdim, "argmax")


def argmin(x, dim=None, keepdim=False):
    return _arg(np.argmin, x, dim, keepdim, "argmin")


def _arg(fn, x, dim, keepdim, op):
    if x.numel() == 0:
        raise RuntimeError(f"{op}(): cannot take the {op} of an empty tensor of shape {tuple(x.shape)}")
    if dim is None:
        out = np.asarray(fn(x._data))
        return Tensor._wrap(out.reshape((1,) * x.ndim if keepdim else ()).astype(np.int64))
    d = normalize_dim(dim, x.ndim, op)
    return Tensor._wrap(np.asarray(fn(x._data, axis=d, keepdims=keepdim), dtype=np.int64))


def all(x, dim=None, keepdim=False):
    return Tensor._wrap(np.asarray(np.all(x._data, axis=_dims(x, dim, "all"), keepdims=keepdim)))


def any(x, dim=None, keepdim=False):
    return Tensor._wrap(np.asarray(np.any(x._data, axis=_dims(x, dim, "any"), keepdims=keepdim)))


def _need_float(x, op):
    if x.dtype.kind != "f":
        raise TypeError(f"{op}(): input dtype must be floating point, got {x.dtype}")


def _nonempty(x, dims, op):
    if x.numel() == 0 and builtins.any(x.shape[d] == 0 for d in dims) or (x.numel() == 0 and not dims):
        raise RuntimeError(f"{op}(): cannot reduce an empty tensor of shape {tuple(x.shape)} over dims {dims}")
