"""The numpy reference backend: the definition of correct.

Every kernel the native backend (native.py, over minitensor._C) provides is here too, with the same name and
signature, written for reading rather than speed. Arrays in, arrays out; nothing here knows about autograd.
Kernels work on the last dimension (softmax, layer_norm) of arrays of any leading shape.
"""
import math

import numpy as np

NAME = "numpy"


def matmul(a, b):
    """numpy.matmul semantics: 1-D, 2-D and batched with broadcast batch dims."""
    return np.matmul(a, b)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x):
    """The error function, elementwise (math.erf per element: exact, and slow)."""
    return _erf(x).astype(x.dtype, copy=False)


def softmax(x):
    """softmax over the last dim, max-subtracted so exp never overflows."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, g):
    """d/dx softmax: y * (g - sum(g * y))."""
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


def log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, g):
    """d/dx log_softmax: g - exp(y) * sum(g)."""
    return g - np.exp(y) * g.sum(axis=-1, keepdims=True)


def layer_norm(x, weight, bias, eps):
    """Normalise each row of x (..., N) to zero mean and unit variance, then scale and shift.
    Returns (y, mean, rstd) with mean and rstd of shape x.shape[:-1] (rstd = 1/sqrt(var + eps))."""
    mean = x.mean(axis=-1)
    var = ((x - mean[..., None]) ** 2).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean[..., None]) * rstd[..., None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, mean, rstd


def layer_norm_backward(g, x, mean, rstd, weight):
    """Returns (dx, dweight, dbias); dweight/dbias are None when weight is None.

    With xhat = (x - mean) * rstd and gh = g * weight:
        dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))      (means over the normalised dim)
    """
    xhat = (x - mean[..., None]) * rstd[..., None]
    gh = g * weight if weight is not None else g
    dx = rstd[..., None] * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
    if weight is None:
        return dx, None, None
    lead = tuple(range(g.ndim - 1))
    return dx, (g * xhat).sum(axis=lead), g.sum(axis=lead)
