"""The native backend: the kernels of numpy_ref.py, in C++ (minitensor._C), with the same names and signatures.

This layer keeps numpy's semantics (1-D matmul operands, broadcast batch dims, masks broadcast to the input)
and hands the C++ side arrays it can read safely: float32/float64 only (anything else takes the numpy
reference), aligned, with strides in whole elements (otherwise copied once). Strided views (transposes,
slices, broadcast dims) pass through as they are: the kernels read through strides.
"""
import ctypes
import importlib
import os

import numpy as np

from . import numpy_ref

# How long an idle OpenMP worker spins before it sleeps. libgomp's default is 300,000 rounds (~5 ms here) after
# every parallel region, and numpy's OpenBLAS spins ~0.13 s after every call: a library called right after the
# other shares its cores with those spinning threads, and on a machine busy with other processes the spinning
# threads also burn the time slices their own teammates need. 10,000 rounds (~0.2 ms) bridge most gaps between
# the kernels of a training step (the Python work between two kernels takes ~0.05-0.3 ms), so waking a sleeping
# worker (~15 us) stays rare, and the cores go back to numpy, torch or anyone else right after minitensor's last
# kernel (benchmarks/bench_threads_mixed.py measures both directions).
# libgomp reads GOMP_SPINCOUNT once, when it loads, which is when _C loads: the variable is set for that import
# only and removed after, so child processes, torch's own copy of libgomp and anything loaded later see the
# environment as the user left it. A wait policy the user chose (OMP_WAIT_POLICY or GOMP_SPINCOUNT) is kept.
SPIN_COUNT = 10000
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _libgomp_loaded():
    """Whether libgomp is already in the process (then its wait policy was fixed when it loaded, not by us)."""
    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    except (OSError, AttributeError):  # not loaded, or not a platform with libgomp.so.1 / RTLD_NOLOAD
        return False
    return True


def _load_extension():
    """Import minitensor._C with minitensor's OpenMP wait policy; returns (module, the policy in effect)."""
    chosen = [f"{k}={os.environ[k]}" for k in _WAIT_VARS if k in os.environ]
    if chosen:
        return importlib.import_module("minitensor._C"), " ".join(chosen) + " (the user's)"
    if _libgomp_loaded():
        return importlib.import_module("minitensor._C"), "libgomp's own (it was loaded before minitensor)"
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        return importlib.import_module("minitensor._C"), f"GOMP_SPINCOUNT={SPIN_COUNT} (minitensor's default)"
    finally:
        del os.environ["GOMP_SPINCOUNT"]


_C, _OMP_WAIT = _load_extension()

NAME = "native"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _readable(a):
    """`a` itself if the C++ side can read it through its strides, else an aligned contiguous copy."""
    flags = a.flags
    if flags.aligned and (flags.c_contiguous or all(s % a.itemsize == 0 for s in a.strides)):
        return a
    return np.array(a, order="C")


def _float(*arrays):
    dt = arrays[0].dtype
    return dt in _FLOATS and all(a is None or a.dtype == dt for a in arrays)


def add(a, b):
    """a + b; two big C-contiguous float arrays of one shape (residual streams, gradient sums) are added on all
    threads, anything else by numpy (broadcasting, small arrays: a parallel region costs more than it saves)."""
    if (a.shape == b.shape and a.size >= _PARALLEL_ADD and a.dtype == b.dtype and a.dtype in _FLOATS
            and a.flags.c_contiguous and b.flags.c_contiguous and a.flags.aligned and b.flags.aligned):
        out = np.empty(a.shape, dtype=a.dtype)
        _C.add(a, b, out)
        return out
    return a + b


_PARALLEL_ADD = 1 << 14  # elements: from here on the kernel beats numpy (measured, 1 and 2 threads)


_PARALLEL_COPY = 1 << 15  # elements: below this numpy's single-threaded copy is as fast


def assign(dst, src):
    """dst[...] = src; big float arrays of one shape are copied on all threads (numpy copies on one)."""
    if (isinstance(src, np.ndarray) and src.shape == dst.shape and src.size >= _PARALLEL_COPY
            and src.dtype == dst.dtype and src.dtype in _FLOATS and dst.flags.aligned and dst.flags.writeable):
        _C.copy(_readable(src), dst)
    else:
        dst[...] = src


def contiguous(a):
    """a as a C-contiguous array: a itself, or a copy made on all threads if it is big."""
    if a.flags.c_contiguous:
        return a
    out = np.empty(a.shape, dtype=a.dtype)
    assign(out, a)
    return out


def linear(x, w, b, activation=None):
    """x @ wᵀ + b, the bias added by the GEMM as it stores each tile of the output (a fused epilogue): one pass
    over the output, on every thread. The batch dims fold into the GEMM's rows. activation="gelu" applies GELU
    to each block of the output as the GEMM finishes it, while it is still in cache."""
    if not _float(x, w, b) or x.ndim == 0 or w.ndim != 2 or (b is not None and b.ndim != 1):
        return numpy_ref.linear(x, w, b, activation)
    n = w.shape[0]
    out = np.empty(x.shape[:-1] + (n,), dtype=x.dtype)
    bias = None if b is None else np.ascontiguousarray(b)
    _C.gemm(_readable(x.reshape(-1, x.shape[-1])), _readable(w).T, out.reshape(-1, n), bias=bias,
            activation=activation or "none")
    return out


def tune_malloc():
    """Keep freed memory mapped for reuse (glibc only); True if it applied."""
    return _C.tune_malloc()


def matmul(a, b):
    """numpy.matmul semantics on the GEMM kernel: 1-D operands, batches with broadcast batch dims."""
    if not _float(a, b) or a.ndim == 0 or b.ndim == 0:
        return numpy_ref.matmul(a, b)
    if a.ndim == 2 and b.ndim == 2:  # the common case, without the broadcasting below (it costs ~10 us a call)
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        _C.gemm(_readable(a), _readable(b), out)  # the kernel checks that the inner dims agree
        return out
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0]:  # a batch of products (attention): likewise
        out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype)
        _C.gemm(_readable(a), _readable(b), out)
        return out
    if b.ndim == 2 and a.ndim > 2:
        # (..., M, K) @ (K, N): fold the batch into M, one big GEMM instead of one per batch element
        # re-packing the same B (the shape of every Linear layer)
        out = np.empty(a.shape[:-1] + (b.shape[1],), dtype=a.dtype)
        _C.gemm(_readable(a.reshape(-1, a.shape[-1])), _readable(b), out.reshape(-1, b.shape[1]))
        return out
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    m, k = a2.shape[-2:]
    n = b2.shape[-1]
    if a2.shape[:-2] == b2.shape[:-2]:  # equal batch dims (attention's Q @ Kᵀ): nothing to broadcast
        batch = a2.shape[:-2]
    else:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        a2, b2 = np.broadcast_to(a2, batch + (m, k)), np.broadcast_to(b2, batch + (k, n))
    out = np.empty(batch + (m, n), dtype=a.dtype)
    _C.gemm(_readable(a2), _readable(b2), out)
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


def gemm(a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """c = alpha * op(a) @ op(b) + beta * c in place (op = transpose when asked), for equal batch dims."""
    _C.gemm(_readable(a), _readable(b), c, trans_a, trans_b, alpha, beta)
    return c


def erf(x):
    if not _float(x):
        return numpy_ref.erf(x)
    out = np.empty(x.shape, dtype=x.dtype)
    _C.erf(x, out)
    return out


def gelu(x, approximate="none"):
    if not _float(x):
        return numpy_ref.gelu(x, approximate)
    out = np.empty(x.shape, dtype=x.dtype)
    _C.gelu(x, out, approximate == "tanh")
    return out


def gelu_backward(x, g, approximate="none"):
    if not _float(x, g):
        return numpy_ref.gelu_backward(x, g, approximate)
    out = np.empty(x.shape, dtype=x.dtype)
    _C.gelu_backward(x, g, out, approximate == "tanh")
    return out


def _mask_like(mask, x):
    return None if mask is None else _readable(np.broadcast_to(np.asarray(mask, dtype=x.dtype), x.shape))


def softmax(x, mask=None):
    if not _float(x):
        return numpy_ref.softmax(x, mask)
    out = np.empty(x.shape, dtype=x.dtype)
    _C.softmax_forward(x, out, _mask_like(mask, x), False)
    return out


def log_softmax(x, mask=None):
    if not _float(x):
        return numpy_ref.log_softmax(x, mask)
    out = np.empty(x.shape, dtype=x.dtype)
    _C.softmax_forward(x, out, _mask_like(mask, x), True)
    return out


def softmax_backward(y, g):
    if not _float(y, g):
        return numpy_ref.softmax_backward(y, g)
    out = np.empty(y.shape, dtype=y.dtype)
    _C.softmax_backward(y, g, out, False)
    return out


def log_softmax_backward(y, g):
    if not _float(y, g):
        return numpy_ref.log_softmax_backward(y, g)
    out = np.empty(y.shape, dtype=y.dtype)
    _C.softmax_backward(y, g, out, True)
    return out


def layer_norm(x, weight, bias, eps):
    if not _float(x, weight, bias) or x.ndim == 0 or x.shape[-1] == 0:
        return numpy_ref.layer_norm(x, weight, bias, eps)
    y = np.empty(x.shape, dtype=x.dtype)
    mean = np.empty(x.shape[:-1], dtype=x.dtype)
    rstd = np.empty(x.shape[:-1], dtype=x.dtype)
    _C.layer_norm_forward(x, weight, bias, eps, y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward(g, x, mean, rstd, weight):
    if not _float(g, x, mean, rstd, weight) or x.ndim == 0 or x.shape[-1] == 0:
        return numpy_ref.layer_norm_backward(g, x, mean, rstd, weight)
    dx = np.empty(x.shape, dtype=x.dtype)
    dw = np.empty(x.shape[-1:], dtype=x.dtype) if weight is not None else None
    db = np.empty(x.shape[-1:], dtype=x.dtype) if weight is not None else None
    _C.layer_norm_backward(g, x, mean, rstd, weight, dx, dw, db)
    return dx, dw, db


def _contiguous(a):
    """`a` as an aligned C-contiguous array (a copy only when it is not one already): the LSTM kernels read
    rows directly, not through strides."""
    flags = a.flags
    return a if flags.c_contiguous and flags.aligned else np.require(a, requirements=("C", "A"))


def sdpa(q, k, v, mask=None, causal=False, scale=1.0, out_layout="nhle"):
    """numpy_ref.sdpa on the fused kernel: q, k, v (N, H, ., .) and the mask are read through their strides (no
    copies of the head-split views MultiheadAttention makes, none of a mask broadcast over heads or queries).
    out_layout: out (N, H, L, Ev) is stored C-contiguous ("nhle"), or as the transpose of a C-contiguous
    (L, N, H, Ev) ("lnhe") or (N, L, H, Ev) ("nlhe") array, so putting the heads back side by side ((L, N, H * Ev)
    or (N, L, H * Ev)) needs no copy."""
    if not _float(q, k, v, mask):
        return numpy_ref.sdpa(q, k, v, mask, causal, scale, out_layout)
    N, H, L, Ev = q.shape[0], q.shape[1], q.shape[2], v.shape[-1]
    out = numpy_ref.sdpa_out(N, H, L, Ev, q.dtype, out_layout)
    lse = np.empty((N, H, L), q.dtype)
    _C.sdpa_forward(_readable(q), _readable(k), _readable(v), _mask4(mask, q, k), causal, scale, out, lse)
    return out, lse


def sdpa_backward(q, k, v, mask, causal, scale, out, lse, g):
    if not _float(q, k, v, mask, out, lse, g):
        return numpy_ref.sdpa_backward(q, k, v, mask, causal, scale, out, lse, g)
    dq, dk, dv = np.empty(q.shape, q.dtype), np.empty(k.shape, q.dtype), np.empty(v.shape, q.dtype)
    _C.sdpa_backward(_readable(q), _readable(k), _readable(v), _mask4(mask, q, k), causal, scale, _readable(out), lse,
                     _readable(g), dq, dk, dv)
    return dq, dk, dv


def _mask4(mask, q, k):
    return None if mask is None else _readable(np.broadcast_to(mask, q.shape[:3] + (k.shape[2],)))


def lstm_cell(gates, c):
    if not _float(gates, c):
        return numpy_ref.lstm_cell(gates, c)
    h = np.empty(c.shape, dtype=c.dtype)
    c_next = np.empty(c.shape, dtype=c.dtype)
    _C.lstm_cell_forward(_contiguous(gates), _contiguous(c), h, c_next)
    return h, c_next


def lstm_cell_backward(gates, c, dh, dc):
    if not _float(gates, c, dh, dc):
        return numpy_ref.lstm_cell_backward(gates, c, dh, dc)
    d_gates = np.empty(gates.shape, dtype=gates.dtype)
    d_c = np.empty(c.shape, dtype=c.dtype)
    _C.lstm_cell_backward(_contiguous(gates), _contiguous(c), None if dh is None else _contiguous(dh),
                          None if dc is None else _contiguous(dc), d_gates, d_c)
    return d_gates, d_c


conv_out_size = numpy_ref.conv_out_size


def im2col(x, kh, kw, stride, padding, dilation):
    if not _float(x):
        return numpy_ref.im2col(x, kh, kw, stride, padding, dilation)
    n, c, h, w = x.shape
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(w, kw, stride[1], padding[1], dilation[1])
    out = np.empty((n, c * kh * kw, oh * ow), dtype=x.dtype)
    _C.im2col(x, kh, kw, list(stride), list(padding), list(dilation), out)
    return out


def col2im(cols, x_shape, kh, kw, stride, padding, dilation):
    if not _float(cols):
        return numpy_ref.col2im(cols, x_shape, kh, kw, stride, padding, dilation)
    out = np.empty(tuple(x_shape), dtype=cols.dtype)
    _C.col2im(cols, list(x_shape), kh, kw, list(stride), list(padding), list(dilation), out)
    return out


def conv2d(x, weight, bias, stride, padding, dilation):
    if not _float(x, weight, bias):
        return numpy_ref.conv2d(x, weight, bias, stride, padding, dilation)
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(w, kw, stride[1], padding[1], dilation[1])
    out = np.empty((n, oc, oh, ow), dtype=x.dtype)
    _C.conv2d_forward(x, weight, bias, list(stride), list(padding), list(dilation), out)
    return out


def conv2d_backward(g, x, weight, stride, padding, dilation, need_input, need_weight, need_bias):
    if not _float(g, x, weight):
        return numpy_ref.conv2d_backward(g, x, weight, stride, padding, dilation, need_input, need_weight, need_bias)
    dx = np.empty(x.shape, dtype=x.dtype) if need_input else None
    dw = np.empty(weight.shape, dtype=x.dtype) if need_weight else None
    db = np.empty(weight.shape[:1], dtype=x.dtype) if need_bias else None
    _C.conv2d_backward(g, x, weight, list(stride), list(padding), list(dilation), dx, dw, db)
    return dx, dw, db


def info():
    return dict(_C.info(), omp_wait=_OMP_WAIT)


def set_num_threads(n):
    _C.set_num_threads(n)


def get_num_threads():
    return _C.get_num_threads()
