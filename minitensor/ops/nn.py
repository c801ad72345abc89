"""Neural-network ops that have fused kernels: softmax, log_softmax, layer_norm.

Their backward has two paths. Without create_graph (grad mode off inside backward: the usual case) it calls
the fused backward kernel of the active backend. With create_graph it spells the same formula in Tensor ops,
so the gradient can itself be differentiated. Tests hold the two paths equal.
"""
from .. import backend
from ..autograd import grad_mode
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_dim


class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) over the last dim;  d/dx: y * (g - sum(g * y))."""

    @staticmethod
    def forward(ctx, x):
        y = Tensor._wrap(backend.kernels.softmax(x._data))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if grad_mode.is_grad_enabled():
            return y * (g - (g * y).sum(dim=-1, keepdim=True))
        return Tensor._wrap(backend.kernels.softmax_backward(y._data, g._data))


class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) over the last dim;  d/dx: g - exp(y) * sum(g)."""

    @staticmethod
    def forward(ctx, x):
        y = Tensor._wrap(backend.kernels.log_softmax(x._data))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if grad_mode.is_grad_enabled():
            return g - y.exp() * g.sum(dim=-1, keepdim=True)
        return Tensor._wrap(backend.kernels.log_softmax_backward(y._data, g._data))


class LayerNorm(Function):
    """y = (x - mean) * rstd * weight + bias over the last dim, rstd = 1/sqrt(var + eps).

    With xhat = (x - mean) * rstd and gh = g * weight:
        dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)),  dweight = sum(g * xhat),  dbias = sum(g)
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        w = weight._data if weight is not None else None
        b = bias._data if bias is not None else None
        y, mean, rstd = backend.kernels.layer_norm(x._data, w, b, eps)
        ctx.save_for_backward(x, weight)
        ctx.stats, ctx.eps = (mean, rstd), eps
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        nx, nw, nb, _ = ctx.needs_input_grad
        if grad_mode.is_grad_enabled():
            dx, dw, db = _layer_norm_backward_composite(g, x, weight, ctx.eps)
        else:
            mean, rstd = ctx.stats
            w = weight._data if weight is not None else None
            dx, dw, db = backend.kernels.layer_norm_backward(g._data, x._data, mean, rstd, w)
            dx = Tensor._wrap(dx)
            dw = Tensor._wrap(dw) if dw is not None else None
            db = Tensor._wrap(db) if db is not None else None
        return (dx if nx else None, dw if nw else None, db if nb else None, None)


def _layer_norm_backward_composite(g, x, weight, eps):
    """The LayerNorm backward in Tensor ops (mean and rstd recomputed from x, so all of it is differentiable)."""
    mean = x.mean(dim=-1, keepdim=True)
    centered = x - mean
    rstd = ((centered * centered).mean(dim=-1, keepdim=True) + eps).rsqrt()
    xhat = centered * rstd
    gh = g * weight if weight is not None else g
    dx = rstd * (gh - gh.mean(dim=-1, keepdim=True) - xhat * (gh * xhat).mean(dim=-1, keepdim=True))
    if weight is None:
        return dx, None, None
    lead = tuple(range(g.ndim - 1))
    if not lead:  # a single row: nothing to sum over (and sum(dim=()) would reduce everything)
        return dx, g * xhat, g
    return dx, (g * xhat).sum(dim=lead), g.sum(dim=lead)


def _last_dim_op(fn, x, dim, op):
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {x.dtype}")
    if x.ndim == 0:
        return fn.apply(x.reshape(1)).reshape(())
    d = normalize_dim(dim, x.ndim, op)
    if d == x.ndim - 1:
        return fn.apply(x)
    return fn.apply(x.transpose(d, -1)).transpose(d, -1)


def softmax(x, dim):
    return _last_dim_op(Softmax, x, dim, "softmax")


def log_softmax(x, dim):
    return _last_dim_op(LogSoftmax, x, dim, "log_softmax")


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dims `normalized_shape`: x (..., *normalized_shape) -> same shape."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or tuple(x.shape[x.ndim - k:]) != normalized_shape or x.ndim < k:
        raise ValueError(
            f"layer_norm: input of shape {tuple(x.shape)} does not end in normalized_shape {normalized_shape}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != normalized_shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(p.shape)}, expected {normalized_shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"layer_norm: input must be floating point, got {x.dtype}")
    n = 1
    for s in normalized_shape:
        n *= s
    flat = x.reshape(x.shape[: x.ndim - k] + (n,)) if k != 1 else x
    w = weight.reshape(n) if weight is not None and k != 1 else weight
    b = bias.reshape(n) if bias is not None and k != 1 else bias
    y = LayerNorm.apply(flat, w, b, eps)
    return y.reshape(x.shape) if k != 1 else y
