"""Matrix products: matmul (1-D, 2-D, batched with broadcast batch dims), mm, bmm."""
import numpy as np

from .. import backend
from ..autograd.function import Function
from ._util import binary_operands, grads_by_recompute, unbroadcast


class Matmul(Function):
    """C = A @ B;  dC/dA: g @ Bᵀ,  dC/dB: Aᵀ @ g (each summed over broadcast batch dims).

    A 1-D A is a row (1, K) and a 1-D B a column (K, 1), whose added dim is dropped from C; backward
    puts it back so the same two products serve every case. The transposes are views: the GEMM kernel
    reads them through their strides, never copying.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return backend.kernels.matmul(a._data, b._data)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        a2 = a.unsqueeze(0) if a.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b.ndim == 1 else b
        if b.ndim == 1:  # (first: for 1-D @ 1-D, g is 0-d and becomes (1,) then (1, 1))
            g = g.unsqueeze(-1)
        if a.ndim == 1:
            g = g.unsqueeze(-2)
        ga = unbroadcast(g @ b2.mT, a2.shape).reshape(a.shape) if na else None
        if nb and b.ndim == 2 and a2.ndim > 2:
            # B was shared by every batch element (a Linear weight): its gradient sums over the batch, which is
            # one GEMM over the folded batch, (K, B*M) @ (B*M, N), not B products summed afterwards
            k, n = b.shape
            gb = a2.reshape(-1, k).mT @ g.reshape(-1, n)
        else:
            gb = unbroadcast(a2.mT @ g, b2.shape).reshape(b.shape) if nb else None
        return ga, gb


class Linear(Function):
    """y = x Wᵀ + b in one kernel call (see backend linear); dx = g W, dW = gᵀ x over the folded batch
    (one GEMM), db = g summed over the batch. The backward uses Tensor ops, so it is differentiable again."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return backend.kernels.linear(x._data, w._data, b._data)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad
        n, k = w.shape
        g2 = g.reshape(-1, n)
        gx = (g2 @ w).reshape(x.shape) if nx else None
        gw = g2.mT @ x.reshape(-1, k) if nw else None
        gb = g2.sum(0) if nb else None
        return gx, gw, gb


class LinearGelu(Function):
    """y = gelu(x Wᵀ + b) (erf form) in one kernel call: the GEMM applies GELU to each block of its output as it
    finishes it (backend linear, activation="gelu"), one pass over the output instead of two. Nothing is kept
    but the inputs: backward recomputes x Wᵀ + b and differentiates Linear then gelu (so the op is used where no
    gradient is recorded, inference, and costs a GEMM more where one is)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w, b)
        return backend.kernels.linear(x._data, w._data, b._data, activation="gelu")

    @staticmethod
    def backward(ctx, g):
        from .elementwise import gelu

        return grads_by_recompute(ctx, ctx.saved_tensors, lambda x, w, b: (gelu(Linear.apply(x, w, b)),), (g,))


def matmul(a, b):
    a, b = binary_operands(a, b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both arguments must be at least 1-D, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if ka != kb:
        raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align: {ka} != {kb}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: batch dims of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together"
        ) from None
    return Matmul.apply(a, b)


def mm(a, b):
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"mm: expected 2-D tensors, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return matmul(a, b)


def bmm(a, b):
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"bmm: expected 3-D tensors with equal batch size, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return matmul(a, b)
