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


def add(a, b):
    """a + b with numpy's broadcasting (the native twin adds big same-shape arrays on all threads)."""
    return a + b


def assign(dst, src):
    """dst[...] = src (numpy's broadcasting and casting rules)."""
    dst[...] = src


def contiguous(a):
    """a as a C-contiguous array (a itself if it already is)."""
    return np.ascontiguousarray(a)


def linear(x, w, b, activation=None):
    """x (..., in) @ w (out, in)ᵀ + b (out,): a Linear layer's forward; activation="gelu": gelu of that."""
    y = np.matmul(x, w.T) if b is None else np.matmul(x, w.T) + b
    if activation not in (None, "gelu"):
        raise ValueError(f"linear: activation must be None or 'gelu', got {activation!r}")
    return y if activation is None else gelu(y)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def erf(x):
    """The error function, elementwise (math.erf per element: exact, and slow)."""
    return _erf(x).astype(x.dtype, copy=False)


def gemm(a, b, c, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """c = alpha * op(a) @ op(b) + beta * c, in place (beta == 0 ignores what c held)."""
    a = np.swapaxes(a, -1, -2) if trans_a else a
    b = np.swapaxes(b, -1, -2) if trans_b else b
    product = alpha * np.matmul(a, b)
    c[...] = product if beta == 0 else product + beta * c
    return c


def gelu(x, approximate="none"):
    """x * Phi(x), Phi the standard normal CDF (or its tanh approximation). Where Phi(x) (or 1 + tanh) is 0 the
    result is the limit -0, not -inf * 0: gelu(-inf) = -0, gelu(inf) = inf."""
    # x^3 (tanh form) overflows to inf for |x| > ~1e13, the right limit; inf * 0 is replaced below
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "tanh":
            u = 1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
        else:
            u = 1 + erf(x / math.sqrt(2))
        return np.where(u == 0, -0.0, 0.5 * x * u).astype(x.dtype, copy=False)


def gelu_backward(x, g, approximate="none"):
    """g * d/dx gelu(x): Phi(x) + x * phi(x) (phi the normal density), or the tanh form's derivative. The term
    with x is 0 where its other factor is (so gelu'(inf) = 1, gelu'(-inf) = 0, not inf * 0)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            t = np.tanh(k * (x + 0.044715 * x ** 3))
            s = 1 - t * t  # tanh'
            slope = 0.5 * x * s * k * (1 + 3 * 0.044715 * x * x)
            return g * (0.5 * (1 + t) + np.where(s == 0, 0, slope).astype(x.dtype, copy=False))
        cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return g * (cdf + np.where(pdf == 0, 0, x * pdf).astype(x.dtype, copy=False))


def _masked(x, mask):
    return x if mask is None else x + mask


def softmax(x, mask=None):
    """softmax over the last dim of x + mask (an additive mask: -inf removes a position), max-subtracted so
    exp never overflows. A row with every position masked comes out NaN, as in PyTorch."""
    x = _masked(x, mask)
    if x.shape[-1] == 0:
        return x.copy()
    with np.errstate(invalid="ignore"):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(y, g):
    """d/dx softmax: y * (g - sum(g * y))."""
    return y * (g - (g * y).sum(axis=-1, keepdims=True))


def log_softmax(x, mask=None):
    x = _masked(x, mask)
    if x.shape[-1] == 0:
        return x.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_backward(y, g):
    """d/dx log_softmax: g - exp(y) * sum(g)."""
    return g - np.exp(y) * g.sum(axis=-1, keepdims=True)


def layer_norm(x, weight, bias, eps):
    """Normalise each row of x (..., N) to zero mean and unit variance, then scale and shift.
    Returns (y, mean, rstd) with mean and rstd of shape x.shape[:-1] (rstd = 1/sqrt(var + eps))."""
    # moments of x - k, k each row's first element: the plain mean of a constant row of 3e38 overflows (then NaN)
    k = x[..., :1] if x.shape[-1] else np.zeros(x.shape[:-1] + (1,), x.dtype)
    d = x - k
    dmean = d.mean(axis=-1, keepdims=True)
    centered = d - dmean
    mean = (k + dmean)[..., 0]
    var = (centered ** 2).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    y = centered * rstd[..., None]
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


def _sigmoid(x):
    """1 / (1 + exp(-x)), with exp of a non-positive number only (no overflow for large |x|)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def lstm_cell(gates, c):
    """One LSTM state update: gates (N, 4H), pre-activation, in PyTorch's order i, f, g, o; c (N, H).
    Returns (h', c'):  c' = sigmoid(f) * c + sigmoid(i) * tanh(g),  h' = sigmoid(o) * tanh(c')."""
    i, f, g, o = np.split(gates, 4, axis=-1)
    c_next = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c_next), c_next


def lstm_cell_backward(gates, c, dh, dc):
    """Returns (d_gates (N, 4H), d_c (N, H)) of lstm_cell from the gradients dh of h' and dc of c' (None: zero).

    With i, f, o = sigmoid(.), g = tanh(.) of the gates and t = tanh(c'):
        dc' = dc + dh * o * (1 - t²)
        d_i = dc' * g * i(1 - i),  d_f = dc' * c * f(1 - f),  d_g = dc' * i * (1 - g²),  d_o = dh * t * o(1 - o)
        d_c = dc' * f
    """
    gi, gf, gg, go = np.split(gates, 4, axis=-1)
    i, f, g, o = _sigmoid(gi), _sigmoid(gf), np.tanh(gg), _sigmoid(go)
    t = np.tanh(f * c + i * g)
    dh = np.zeros_like(c) if dh is None else dh
    dc = np.zeros_like(c) if dc is None else dc
    dcn = dc + dh * o * (1 - t * t)
    d_gates = np.concatenate([dcn * g * i * (1 - i), dcn * c * f * (1 - f), dcn * i * (1 - g * g),
                              dh * t * o * (1 - o)], axis=-1)
    return d_gates, dcn * f


def _sdpa_scores(q, k, mask, causal, scale):
    """(scale q) kᵀ + mask, -inf above the diagonal when causal. q is scaled before the product, as the native
    kernel does: q kᵀ itself may overflow where the scaled scores do not (q = 1e38 in float32)."""
    scores = (q * q.dtype.type(scale)) @ np.swapaxes(k, -1, -2)
    if causal:
        scores = scores + np.triu(np.full(scores.shape[-2:], -np.inf, dtype=q.dtype), 1)
    return scores if mask is None else scores + mask


_SDPA_LAYOUTS = {"nhle": ((0, 1, 2, 3), (0, 1, 2, 3)), "lnhe": ((2, 0, 1, 3), (1, 2, 0, 3)),
                 "nlhe": ((0, 2, 1, 3), (0, 2, 1, 3))}  # memory order of (N, H, L, Ev), and back


def sdpa_out(N, H, L, Ev, dtype, out_layout):
    """An uninitialised (N, H, L, Ev) array stored in `out_layout`'s order (see sdpa)."""
    if out_layout not in _SDPA_LAYOUTS:
        raise ValueError(f"sdpa: out_layout must be one of {sorted(_SDPA_LAYOUTS)}, got {out_layout!r}")
    to_memory, back = _SDPA_LAYOUTS[out_layout]
    return np.empty(tuple((N, H, L, Ev)[a] for a in to_memory), dtype).transpose(back)


def sdpa(q, k, v, mask=None, causal=False, scale=1.0, out_layout="nhle"):
    """Scaled dot-product attention over batch dims (N, H): q (N, H, L, E), k (N, H, S, E), v (N, H, S, Ev), mask
    additive, broadcastable to (N, H, L, S), or None; causal masks keys j > i. Returns (out (N, H, L, Ev), lse
    (N, H, L)): out = softmax(scale q kᵀ + mask) v and lse the log-sum-exp of each row of scores (what the backward
    needs to rebuild the weights). A row whose keys are all masked comes out NaN. `out_layout` is the native
    kernel's layout option ("nhle", "lnhe", "nlhe": the order of out's dims in memory); here it only changes the
    memory layout."""
    scores = _sdpa_scores(q, k, mask, causal, scale)
    with np.errstate(invalid="ignore"):
        m = scores.max(axis=-1, keepdims=True)
        e = np.exp(scores - m)
        l = e.sum(axis=-1, keepdims=True)
        out = (e / l) @ v
        lse = np.where(m == -np.inf, -np.inf, m + np.log(l))[..., 0]  # -inf: a row with every key masked
    stored = sdpa_out(*out.shape, q.dtype, out_layout)
    stored[...] = out
    return stored, lse.astype(q.dtype, copy=False)


def sdpa_backward(q, k, v, mask, causal, scale, out, lse, g):
    """(dq, dk, dv) of sdpa from out, lse and the gradient g of out. With the weights p = exp(s - lse):
    dv = pᵀ g,  dp = g vᵀ,  ds = p (dp - rowsum(g * out)),  dq = scale ds k,  dk = scale dsᵀ q."""
    scores = _sdpa_scores(q, k, mask, causal, scale)
    with np.errstate(invalid="ignore"):
        p = np.exp(scores - lse[..., None])
        dv = np.swapaxes(p, -1, -2) @ g
        ds = p * (g @ np.swapaxes(v, -1, -2) - (g * out).sum(axis=-1, keepdims=True))
        return scale * (ds @ k), scale * (np.swapaxes(ds, -1, -2) @ q), dv


def conv_out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col(x, kh, kw, stride, padding, dilation):
    """x (N, C, H, W) -> columns (N, C*kh*kw, OH*OW): each column holds one receptive field.

    Rows are ordered (c, i, j), matching weight.reshape(OC, C*kh*kw)."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    s = xp.strides
    windows = np.lib.stride_tricks.as_strided(
        xp, shape=(n, c, kh, kw, oh, ow), strides=(s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw),
        writeable=False,
    )
    return windows.reshape(n, c * kh * kw, oh * ow)


def col2im(cols, x_shape, kh, kw, stride, padding, dilation):
    """The adjoint of im2col: add each column back onto the receptive field it came from."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n, c, h, w = x_shape
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i * dh: i * dh + sh * oh: sh, j * dw: j * dw + sw * ow: sw] += cols[:, :, i, j]
    return xp[:, :, ph: ph + h, pw: pw + w]


def conv2d(x, weight, bias, stride, padding, dilation):
    """Cross-correlation, as in PyTorch: x (N, C, H, W), weight (OC, C, kh, kw) -> (N, OC, OH, OW)."""
    n, _, h, w = x.shape
    oc, _, kh, kw = weight.shape
    cols = im2col(x, kh, kw, stride, padding, dilation)
    out = np.matmul(weight.reshape(oc, -1), cols)
    if bias is not None:
        out += bias.reshape(1, oc, 1)
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(w, kw, stride[1], padding[1], dilation[1])
    return out.reshape(n, oc, oh, ow)


def conv2d_backward(g, x, weight, stride, padding, dilation, need_input, need_weight, need_bias):
    """Returns (dx, dweight, dbias), None where not needed:
    dweight = sum_n g_n @ cols_nᵀ,  dx = col2im(Wᵀ @ g_n),  dbias = sum of g over N, OH, OW."""
    n = x.shape[0]
    oc, _, kh, kw = weight.shape
    g2 = g.reshape(n, oc, g.shape[2] * g.shape[3])  # (not -1: numpy cannot infer it when n is 0)
    dx = dw = db = None
    if need_weight:
        cols = im2col(x, kh, kw, stride, padding, dilation)
        dw = np.matmul(g2, cols.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)
    if need_input:
        dcols = np.matmul(weight.reshape(oc, -1).T, g2)
        dx = col2im(dcols, x.shape, kh, kw, stride, padding, dilation)
    if need_bias:
        db = g.sum(axis=(0, 2, 3))
    return dx, dw, db
