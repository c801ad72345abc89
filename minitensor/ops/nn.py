"""Neural-network ops: softmax, log_softmax, layer_norm, the LSTM cell (fused kernels), embedding and dropout.

Their backward has two paths. Without create_graph (grad mode off inside backward: the usual case) it calls
the fused backward kernel of the active backend. With create_graph it spells the same formula in Tensor ops,
so the gradient can itself be differentiated. Tests hold the two paths equal.
"""
import numpy as np

from .. import backend
from ..autograd import grad_mode
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import check_same_dtype, grads_by_recompute, normalize_dim


class Softmax(Function):
    """y = exp(x + mask - max) / sum(exp(x + mask - max)) over the last dim (mask: an optional additive array,
    -inf where a position must get no weight);  d/dx: y * (g - sum(g * y))."""

    @staticmethod
    def forward(ctx, x, mask):
        y = Tensor._wrap(backend.kernels.softmax(x._data, mask))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if grad_mode.is_grad_enabled():
            return y * (g - (g * y).sum(dim=-1, keepdim=True)), None
        return Tensor._wrap(backend.kernels.softmax_backward(y._data, g._data)), None


class LogSoftmax(Function):
    """y = x + mask - max - log(sum(exp(x + mask - max))) over the last dim (mask as in Softmax);
    d/dx: g - exp(y) * sum(g)."""

    @staticmethod
    def forward(ctx, x, mask):
        y = Tensor._wrap(backend.kernels.log_softmax(x._data, mask))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        if grad_mode.is_grad_enabled():
            return g - y.exp() * g.sum(dim=-1, keepdim=True), None
        return Tensor._wrap(backend.kernels.log_softmax_backward(y._data, g._data)), None


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
        ctx.save_for_backward(x, weight, Tensor._wrap(mean), Tensor._wrap(rstd))
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        nx, nw, nb, _ = ctx.needs_input_grad
        if grad_mode.is_grad_enabled():
            dx, dw, db = _layer_norm_backward_composite(g, x, weight, ctx.eps)
        else:
            w = weight._data if weight is not None else None
            dx, dw, db = backend.kernels.layer_norm_backward(g._data, x._data, mean._data, rstd._data, w)
            dx = Tensor._wrap(dx)
            dw = Tensor._wrap(dw) if dw is not None else None
            db = Tensor._wrap(db) if db is not None else None
        if nb and db is None:  # a bias without a weight: the kernels leave dbias out when there is no weight
            db = _sum_rows(g)
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
    return dx, _sum_rows(g * xhat), _sum_rows(g)


def _sum_rows(t):
    """t (..., N) summed over its leading dims -> (N,) (the gradient of a weight or bias shared by every row)."""
    lead = tuple(range(t.ndim - 1))
    return t.sum(dim=lead) if lead else t  # (a single row: sum(dim=()) would reduce everything)


def _last_dim_op(fn, x, dim, op, mask=None):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {x.dtype}")
    if mask is not None:
        mask = _additive_mask(mask, x, dim, op)
    if x.ndim == 0:
        return fn.apply(x.reshape(1), mask).reshape(())
    d = normalize_dim(dim, x.ndim, op)
    if d == x.ndim - 1:
        return fn.apply(x, mask)
    return fn.apply(x.transpose(d, -1), mask).transpose(d, -1)


def _additive_mask(mask, x, dim, op):
    """softmax's `mask` as the additive array the kernels take: bool True keeps a position and False removes it
    (-inf), as in torch.masked.softmax; a float mask is added as it is."""
    m = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if normalize_dim(dim, x.ndim, op) != max(x.ndim - 1, 0):
        raise ValueError(f"{op}: a mask is supported for the last dim only, got dim={dim} for shape {tuple(x.shape)}")
    try:
        shape = np.broadcast_shapes(m.shape, x.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"{op}: mask of shape {m.shape} does not broadcast to the input's shape {tuple(x.shape)}")
    if m.dtype == np.bool_:
        return np.where(m, x.dtype.type(0), x.dtype.type(-np.inf))
    if m.dtype.kind != "f":
        raise TypeError(f"{op}: mask must be bool (True = keep) or floating point (added), got {m.dtype}")
    return m.astype(x.dtype, copy=False)


def softmax(x, dim, mask=None):
    """softmax over `dim`. `mask` (last dim only), broadcastable to x: bool, True = the position takes part and
    False = it gets weight 0 (as in torch.masked.softmax), or float, added to x before the softmax (-inf
    removes a position). A row with every position removed comes out NaN, as in PyTorch."""
    return _last_dim_op(Softmax, x, dim, "softmax", mask)


def log_softmax(x, dim, mask=None):
    """log_softmax over `dim`; `mask` as in softmax (a removed position comes out -inf)."""
    return _last_dim_op(LogSoftmax, x, dim, "log_softmax", mask)


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
    check_same_dtype("layer_norm", input=x, weight=weight, bias=bias)
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


class FusedLSTMCell(Function):
    """The LSTM state update from pre-activation gates (N, 4H), in PyTorch's order i, f, g, o, and the cell
    state c (N, H), as one fused kernel each way:

        c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c')

    Backward (t = tanh(c'), activations recomputed from the saved gates):
        dc' = dc + dh * o * (1 - t²);  d_i = dc' g i(1-i),  d_f = dc' c f(1-f),  d_g = dc' i (1-g²),
        d_o = dh t o(1-o);  d_c = dc' f
    Either output's gradient may be absent (h' feeds the next step and the output, c' only the next step): it
    reaches backward as None and the kernel treats it as zero, without a zeros array being made.

    Only the inputs are saved (gates and c, no copies): the backward kernel recomputes the four activations
    and tanh(c') in registers (about the forward kernel's time again) rather than keeping a (N, 5H) workspace
    alive for every step; the gates are what the create_graph path needs anyway, so a workspace would come on
    top of them. (The unfused ops kept 5H per row per step; this keeps 4H.)
    """

    @staticmethod
    def forward(ctx, gates, c):
        h, c_next = backend.kernels.lstm_cell(gates._data, c._data)
        ctx.save_for_backward(gates, c)
        ctx.set_materialize_grads(False)
        return h, c_next

    @staticmethod
    def backward(ctx, dh, dc):
        gates, c = ctx.saved_tensors
        n_gates, n_c = ctx.needs_input_grad
        if grad_mode.is_grad_enabled():
            d_gates, d_c = _lstm_cell_backward_composite(gates, c, dh, dc)
        else:
            d_gates, d_c = backend.kernels.lstm_cell_backward(
                gates._data, c._data, None if dh is None else dh._data, None if dc is None else dc._data)
            d_gates, d_c = Tensor._wrap(d_gates), Tensor._wrap(d_c)
        return (d_gates if n_gates else None, d_c if n_c else None)


def _lstm_cell_backward_composite(gates, c, dh, dc):
    """The FusedLSTMCell backward in Tensor ops, activations recomputed from the gates (all of it differentiable)."""
    from .shape import cat

    H = c.shape[-1]
    i, f = gates[:, :H].sigmoid(), gates[:, H: 2 * H].sigmoid()
    g, o = gates[:, 2 * H: 3 * H].tanh(), gates[:, 3 * H:].sigmoid()
    t = (f * c + i * g).tanh()
    zero = c * 0.0
    dh = zero if dh is None else dh
    dcn = (zero if dc is None else dc) + dh * o * (1 - t * t)
    d_gates = cat([dcn * g * i * (1 - i), dcn * c * f * (1 - f), dcn * i * (1 - g * g), dh * t * o * (1 - o)], dim=-1)
    return d_gates, dcn * f


def lstm_cell(gates, c):
    """One LSTM step from pre-activation gates (N, 4H) (x W_ihᵀ + b_ih + h W_hhᵀ + b_hh, gates in PyTorch's order
    i, f, g, o) and the cell state c (N, H): returns (h', c'), each (N, H), with
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g) and h' = sigmoid(o) * tanh(c'). One fused op forward and backward."""
    if not isinstance(gates, Tensor) or not isinstance(c, Tensor):
        raise TypeError(f"lstm_cell: expected Tensors, got {type(gates).__name__} and {type(c).__name__}")
    if gates.ndim != 2 or c.ndim != 2 or gates.shape[1] % 4 or gates.shape != (c.shape[0], 4 * c.shape[1]):
        raise ValueError(f"lstm_cell: gates of shape {tuple(gates.shape)} and c of shape {tuple(c.shape)} do not fit "
                         "gates (N, 4H) and c (N, H)")
    if gates.dtype.kind != "f" or gates.dtype != c.dtype:
        raise ValueError(f"lstm_cell: gates ({gates.dtype}) and c ({c.dtype}) must have the same floating dtype")
    return FusedLSTMCell.apply(gates, c)


class LSTMRecurrence(Function):
    """A whole LSTM layer's recurrence as one op: from the input projections of every step xproj (L, N, 4H)
    (x W_ihᵀ + b_ih + b_hh, time-major), the initial state h0, c0 (N, H) and W_hh (4H, H), run

        gates_t = xproj[t] + h_{t-1} W_hhᵀ,   (h_t, c_t) = lstm_cell(gates_t, c_{t-1})

    over t = 0 .. L-1 (L-1 .. 0 with `reverse`), and return (hs (L, N, H), h_n, c_n). `valid` (a constant bool
    tensor (L, N), or None) freezes the state of row n at steps where it is False (padding: h_t = h_{t-1},
    c_t = c_{t-1} there), as a masked loop of lstm_cell and where does.

    Forward calls the kernels on arrays, step by step, with no graph per step (a GEMM with beta = 1 onto the
    step's projection, then the fused cell), and keeps the gates, hs and cs, all through save_for_backward: hs is
    the output itself (saved as the very tensor returned, so an in-place edit of the output is caught, not
    differentiated as if it had not happened), and valid is the caller's. Backward walks the steps in reverse:
    the cell's backward kernel, then dh_{t-1} = d_gates_t W_hh; the gradient of W_hh is one GEMM over all the
    steps at the end (d_gates of every step against h_{t-1} of every step) instead of one per step, and the
    gradient of xproj is the array of d_gates itself. With create_graph, backward instead rebuilds the layer
    from the same ops spelled out (lstm_recurrence_reference) and differentiates that, so it can be
    differentiated again."""

    @staticmethod
    def forward(ctx, xproj, h0, c0, w_hh, valid, reverse):
        k = backend.kernels
        xp, w = xproj._data, w_hh._data
        steps, n, g4 = xp.shape
        gates = np.empty(xp.shape, dtype=xp.dtype)
        hs = np.empty((steps, n, g4 // 4), dtype=xp.dtype)
        cs = np.empty_like(hs)
        h, c = h0._data, c0._data
        mask = None if valid is None else valid._data
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            gates[t] = xp[t]
            k.gemm(h, w, gates[t], beta=1.0, trans_b=True)
            h_new, c_new = k.lstm_cell(gates[t], c)
            if mask is not None:
                keep = mask[t][:, None]
                h_new, c_new = np.where(keep, h_new, h), np.where(keep, c_new, c)
            hs[t], cs[t] = h_new, c_new
            h, c = hs[t], cs[t]
        hs_out = Tensor._wrap(hs)
        ctx.save_for_backward(xproj, h0, c0, w_hh, valid, hs_out, Tensor._wrap(gates), Tensor._wrap(cs))
        ctx.reverse = reverse
        ctx.set_materialize_grads(False)
        return hs_out, h.copy(), c.copy()

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        xproj, h0, c0, w_hh, valid, hs, gates, cs = ctx.saved_tensors
        reverse = ctx.reverse
        if grad_mode.is_grad_enabled():  # create_graph: differentiate the spelled-out layer
            return grads_by_recompute(
                ctx, (xproj, h0, c0, w_hh),
                lambda *t: lstm_recurrence_reference(*t, valid, reverse), (d_hs, d_hn, d_cn))
        k = backend.kernels
        gates, hs, cs = gates._data, hs._data, cs._data
        valid = None if valid is None else valid._data
        steps = gates.shape[0]
        w = w_hh._data
        d_gates_all = np.empty_like(gates)
        dh = None if d_hn is None else d_hn._data
        dc = None if d_cn is None else d_cn._data
        d_hs = None if d_hs is None else d_hs._data
        for t in range(steps) if reverse else range(steps - 1, -1, -1):
            prev = t + 1 if reverse else t - 1  # the step before t, in the order the forward ran
            if d_hs is not None:
                dh = d_hs[t] if dh is None else dh + d_hs[t]
            c_prev = cs[prev] if 0 <= prev < steps else c0._data
            dh_carry = dc_carry = None
            if valid is not None:  # a frozen row passes its gradient straight to the previous step
                keep = valid[t][:, None]
                if dh is not None:
                    dh, dh_carry = np.where(keep, dh, 0), np.where(keep, 0, dh)
                if dc is not None:
                    dc, dc_carry = np.where(keep, dc, 0), np.where(keep, 0, dc)
            d_gates, dc = k.lstm_cell_backward(gates[t], c_prev, dh, dc)
            d_gates_all[t] = d_gates
            dh = k.matmul(d_gates, w)
            if dh_carry is not None:
                dh += dh_carry
            if dc_carry is not None:
                dc += dc_carry
        need_x, need_h0, need_c0, need_w = ctx.needs_input_grad[:4]
        dw = None
        if need_w:  # sum over steps of d_gates_tᵀ h_{t-1}: the steps after the first against hs, then h0
            g4, hidden = gates.shape[2], hs.shape[2]
            first, rest, h_rest = (steps - 1, slice(0, steps - 1), slice(1, steps)) if reverse else \
                (0, slice(1, steps), slice(0, steps - 1))
            dw = k.matmul(d_gates_all[rest].reshape(-1, g4).T, hs[h_rest].reshape(-1, hidden))
            k.gemm(d_gates_all[first], h0._data, dw, beta=1.0, trans_a=True)
        wrap = Tensor._wrap
        return (wrap(d_gates_all) if need_x else None, wrap(dh) if need_h0 else None,
                wrap(dc) if need_c0 else None, wrap(dw) if need_w else None, None, None)


def lstm_recurrence_reference(xproj, h0, c0, w_hh, valid=None, reverse=False):
    """LSTMRecurrence spelled out in Tensor ops (lstm_cell, matmul, where, stack): the reference twin the tests
    hold it to, and what its create_graph backward differentiates."""
    from .elementwise import where
    from .shape import stack

    if isinstance(valid, Tensor):
        valid = valid._data
    steps = xproj.shape[0]
    h, c = h0, c0
    hs = [None] * steps
    for t in range(steps - 1, -1, -1) if reverse else range(steps):
        h_new, c_new = lstm_cell(xproj[t] + h @ w_hh.mT, c)
        if valid is not None:
            keep = Tensor._wrap(valid[t][:, None])
            h_new, c_new = where(keep, h_new, h), where(keep, c_new, c)
        h, c = h_new, c_new
        hs[t] = h
    return stack(hs), h, c


def lstm_recurrence(xproj, h0, c0, w_hh, valid=None, reverse=False):
    """An LSTM layer's recurrence over precomputed input projections (see LSTMRecurrence): xproj (L, N, 4H),
    h0 and c0 (N, H), w_hh (4H, H), optional valid (L, N) bool (False: the row's state is carried through that
    step). Returns (hs (L, N, H), h_n, c_n)."""
    if xproj.ndim != 3 or xproj.shape[2] % 4 or xproj.shape[0] == 0:
        raise ValueError(f"lstm_recurrence: xproj must be (L, N, 4H) with L > 0, got {tuple(xproj.shape)}")
    steps, n, g4 = xproj.shape
    hidden = g4 // 4
    for name, t, shape in (("h0", h0, (n, hidden)), ("c0", c0, (n, hidden)), ("w_hh", w_hh, (g4, hidden))):
        if tuple(t.shape) != shape:
            raise ValueError(f"lstm_recurrence: {name} has shape {tuple(t.shape)}, expected {shape}")
        if t.dtype != xproj.dtype:
            raise ValueError(f"lstm_recurrence: {name} has dtype {t.dtype}, expected {xproj.dtype} (xproj's)")
    if valid is not None:
        # a Tensor is kept as it is (its in-place changes before backward are caught); an array is copied
        valid = valid if isinstance(valid, Tensor) else Tensor._from_data(valid)
        if valid.shape != (steps, n) or valid.dtype != np.bool_:
            raise ValueError(f"lstm_recurrence: valid must be a bool array of shape {(steps, n)}, got "
                             f"{valid.dtype} {tuple(valid.shape)}")
    return LSTMRecurrence.apply(xproj, h0, c0, w_hh, valid, bool(reverse))


class ScaledDotProductAttention(Function):
    """out = softmax(scale q kᵀ + mask) v over batch dims (N, H): q (N, H, L, E), k (N, H, S, E), v (N, H, S, Ev),
    one fused op each way. Forward keeps only the log-sum-exp of each row of scores (N, H, L), not the weights
    (N, H, L, S); backward
    rebuilds the weights from it, one row at a time:
        p = exp(scale q kᵀ + mask - lse),  dv = pᵀ g,  ds = p (g vᵀ - rowsum(g * out)),
        dq = scale ds k,  dk = scale dsᵀ q.
    The mask (additive, numpy, -inf to exclude, broadcastable to (N, H, L, S)) and `causal` are constants, not
    differentiated. `out_layout` asks the kernel to store out in another order ("lnhe", "nlhe": the transpose of
    an (L, N, H, Ev) or (N, L, H, Ev) array, so MultiheadAttention's head concat is a free reshape)."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, out_layout):
        out, lse = backend.kernels.sdpa(q._data, k._data, v._data, mask, causal, scale, out_layout)
        out = Tensor._wrap(out)
        # the mask is the caller's own array (nn.functional makes it, as a copy where it comes from a tensor)
        ctx.save_for_backward(q, k, v, out, Tensor._wrap(lse), None if mask is None else Tensor._wrap(mask))
        ctx.causal, ctx.scale = causal, scale
        return out

    @staticmethod
    def backward(ctx, g):
        q, k, v, out, lse, mask = ctx.saved_tensors
        mask = None if mask is None else mask._data
        if grad_mode.is_grad_enabled():
            dq, dk, dv = _sdpa_backward_composite(q, k, v, mask, ctx.causal, ctx.scale, g)
        else:
            dq, dk, dv = (Tensor._wrap(a) for a in backend.kernels.sdpa_backward(
                q._data, k._data, v._data, mask, ctx.causal, ctx.scale, out._data, lse._data, g._data))
        need = ctx.needs_input_grad
        return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None, None, None, None)


def _sdpa_mask(mask, causal, L, S, dtype):
    """The additive mask the composite formulas use: the given one, plus -inf above the diagonal if causal."""
    if causal:
        tri = np.triu(np.full((L, S), -np.inf, dtype=dtype), 1)
        return tri if mask is None else mask + tri
    return mask


def _sdpa_backward_composite(q, k, v, mask, causal, scale, g):
    """The ScaledDotProductAttention backward in Tensor ops (weights recomputed; all of it differentiable)."""
    p = softmax((q * scale) @ k.mT, -1, mask=_sdpa_mask(mask, causal, q.shape[-2], k.shape[-2], q.dtype))
    dp = g @ v.mT
    ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True))
    return (ds @ k) * scale, (ds.mT @ q) * scale, p.mT @ g


def sdpa_fused(q, k, v, mask=None, causal=False, scale=1.0, out_layout="nhle"):
    """scaled dot-product attention of 4-D q (N, H, L, E), k (N, H, S, E), v (N, H, S, Ev) as one fused op; mask an
    additive numpy array broadcastable to (N, H, L, S) or None. Callers check shapes (F.scaled_dot_product_attention,
    MultiheadAttention)."""
    return ScaledDotProductAttention.apply(q, k, v, mask, causal, scale, out_layout)


class Embedding(Function):
    """y = weight[indices];  the gradient adds each g row into the weight row it came from (repeated indices
    add up), except the padding row, which gets none."""

    @staticmethod
    def forward(ctx, weight, indices, padding_idx):
        ctx.padding_idx, ctx.shape = padding_idx, weight.shape
        ctx.save_for_backward(indices)
        return weight._data[indices._data]

    @staticmethod
    def backward(ctx, g):
        from .shape import IndexAdd

        (indices,) = ctx.saved_tensors
        if ctx.padding_idx is not None:
            keep = (indices._data != ctx.padding_idx)[..., None].astype(g.dtype)
            g = g * Tensor._wrap(keep)
        return IndexAdd.apply(g, (indices,), ctx.shape), None, None


def embedding(input, weight, padding_idx=None):
    """input: integer indices of any shape (...); weight: (num_embeddings, D) -> (..., D)."""
    input = input if isinstance(input, Tensor) else Tensor._from_data(input)  # a Tensor is saved, an array copied
    idx = input._data
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be an integer tensor, got {idx.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got {tuple(weight.shape)}")
    n = weight.shape[0]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"embedding: indices must be in [0, {n}), got values in [{idx.min()}, {idx.max()}]")
    if padding_idx is not None and padding_idx < 0:
        padding_idx += n
    return Embedding.apply(weight, input if idx.dtype == np.int64 else Tensor._wrap(idx.astype(np.int64)),
                           padding_idx)


class Dropout(Function):
    """y = x * mask / (1 - p), mask ~ Bernoulli(1 - p);  dy/dx = mask / (1 - p)."""

    @staticmethod
    def forward(ctx, x, scaled_mask):
        ctx.save_for_backward(scaled_mask)
        return x._data * scaled_mask._data

    @staticmethod
    def backward(ctx, g):
        (scaled_mask,) = ctx.saved_tensors
        return g * scaled_mask, None


def dropout(x, p=0.5, training=True, generator=None):
    """Zero each element with probability p (from minitensor's seeded generator) and scale the rest by 1/(1-p)."""
    from ..random import get_generator

    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be between 0 and 1, got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    draws = get_generator(generator).random(x.shape, np.dtype(np.float64))  # float64 draws: one mask for any dtype
    scaled_mask = np.greater_equal(draws, p).astype(dtype)
    scaled_mask *= dtype.type(1.0 / (1.0 - p))
    return Dropout.apply(x, Tensor._wrap(scaled_mask))
