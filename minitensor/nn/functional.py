"""minitensor.nn.functional: the stateless layer functions, named and shaped like torch.nn.functional."""
import math

import numpy as np

from ..ops.conv import conv2d
from ..ops.linalg import Linear as _Linear
from ..ops.linalg import LinearGelu as _LinearGelu
from ..ops.elementwise import gelu, relu, sigmoid, softplus, tanh
from ..ops.loss import binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss, nll_loss, one_hot
from ..ops.nn import dropout as _dropout
from ..ops.nn import embedding as _embedding
from ..ops.nn import layer_norm, log_softmax, lstm_cell
from ..ops.nn import sdpa_fused as _sdpa_fused
from ..ops.nn import softmax as _softmax
from ..ops._util import check_same_dtype
from ..ops.shape import pad
from ..tensor import Tensor

__all__ = [
    "linear", "conv2d", "softmax", "log_softmax", "layer_norm", "dropout", "embedding", "relu", "gelu", "tanh",
    "sigmoid", "softplus", "silu", "scaled_dot_product_attention", "one_hot", "pad", "cross_entropy", "nll_loss",
    "mse_loss", "l1_loss", "binary_cross_entropy_with_logits", "lstm_cell",
]


def linear(input, weight, bias=None):
    """y = x Wᵀ + b:  x (..., in), W (out, in), b (out,) -> (..., out). Wᵀ is a view: no copy. x, W and b must
    share one dtype (TypeError otherwise, as in PyTorch: no silent promotion of the input or the layer)."""
    if weight.ndim != 2 or input.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear: input of shape {tuple(input.shape)} does not fit weight of shape "
                         f"{tuple(weight.shape)} (expected input (..., {weight.shape[-1] if weight.ndim else '?'}))")
    check_same_dtype("linear", input=input, weight=weight, bias=bias)
    if bias is not None and input.ndim >= 1 and bias.shape == weight.shape[:1]:
        return _Linear.apply(input, weight, bias)  # the bias add fused into the GEMM
    out = input @ weight.mT
    return out + bias if bias is not None else out


def _linear_gelu(input, weight, bias):
    """gelu(linear(input, weight, bias)) (erf form). With no gradient to record, one kernel call whose GEMM applies
    GELU to each block of the output while the block is still in cache (one pass over the output instead of
    two); otherwise the two ops, since backward needs the pre-activation."""
    from ..autograd import grad_mode

    fusable = (bias is not None and input.ndim > 0 and input.dtype == weight.dtype == bias.dtype
               and weight.ndim == 2 and input.shape[-1:] == weight.shape[1:] and bias.shape == weight.shape[:1]
               and not (grad_mode.is_grad_enabled()
                        and (input.requires_grad or weight.requires_grad or bias.requires_grad)))
    # (anything else takes the two ops; linear raises the errors of bad shapes)
    return _LinearGelu.apply(input, weight, bias) if fusable else gelu(linear(input, weight, bias))


def softmax(input, dim=None, dtype=None):
    if dim is None:
        raise ValueError("softmax: give dim (PyTorch's implicit choice of dim is deprecated)")
    return _softmax(input.to(dtype) if dtype is not None else input, dim)


def silu(input):
    return input * input.sigmoid()


def dropout(input, p=0.5, training=True, inplace=False):
    return _dropout(input, p, training)


def embedding(input, weight, padding_idx=None, max_norm=None):
    if max_norm is not None:
        raise ValueError("embedding: max_norm is not supported")
    return _embedding(input, weight, padding_idx)


def _additive_mask(mask, dtype, op):
    """A boolean mask (True = attend, as in scaled_dot_product_attention) or float mask as an additive array."""
    m = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype == np.bool_:
        return np.where(m, 0.0, -np.inf).astype(dtype)
    if m.dtype.kind != "f":
        raise TypeError(f"{op}: attn_mask must be bool or floating point, got {m.dtype}")
    return m.astype(dtype)  # a copy: the attention op keeps it for backward, and the caller may edit its tensor


def _check_attention(query, key, value, attn_mask):
    """The errors of scaled_dot_product_attention's inputs, each naming what it saw and what it expected.
    Returns the broadcast batch dims."""
    op = "scaled_dot_product_attention"
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise ValueError(f"{op}: query, key and value need at least 2 dims (..., L, E), got shapes "
                         f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}")
    check_same_dtype(op, query=query, key=key, value=value)
    if query.dtype.kind != "f":
        raise TypeError(f"{op}: expected floating-point query, key and value, got {query.dtype}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{op}: shapes query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                         f"{tuple(value.shape)} do not fit (..., L, E), (..., S, E), (..., S, Ev)")
    try:
        batch = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    except ValueError:
        raise ValueError(f"{op}: the batch dims of query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                         f"{tuple(value.shape)} (all but the last two) cannot be broadcast together") from None
    if attn_mask is not None:
        scores = batch + (query.shape[-2], key.shape[-2])
        mask_shape = tuple(np.shape(attn_mask._data if isinstance(attn_mask, Tensor) else attn_mask))
        try:
            fits = np.broadcast_shapes(mask_shape, scores) == scores
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"{op}: attn_mask of shape {mask_shape} does not broadcast to the attention scores' "
                             f"shape {scores} (..., L, S)")
    return batch


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(Q Kᵀ * scale + mask) V, scale = 1/sqrt(E) by default.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev), one floating dtype. attn_mask: bool
    (True = take part in attention, as in PyTorch's scaled_dot_product_attention; note nn.MultiheadAttention's
    bool masks mean the opposite) or float (added to the scores), broadcastable to (..., L, S); is_causal masks
    j > i. A row whose positions are all masked comes out NaN, as in PyTorch. With E = 0 every score is 0 (an
    empty dot product), so each query gets the mean of the values, as in PyTorch.
    """
    _check_attention(query, key, value, attn_mask)
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give either attn_mask or is_causal, not both")
    L, S, E = query.shape[-2], key.shape[-2], query.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(E) if E else 1.0  # (E = 0: the scores are empty sums, 0 whatever the scale)
    learned_bias = isinstance(attn_mask, Tensor) and attn_mask.requires_grad
    if dropout_p == 0.0 and not learned_bias and L and S and E and value.shape[-1]:
        return _fused_attention(query, key, value, attn_mask, is_causal, scale)
    scores = (query * scale) @ key.mT  # (scaled first, as the fused kernel does: q kᵀ alone may overflow)
    mask = None
    if is_causal:
        mask = np.triu(np.full((L, S), -np.inf, dtype=query.dtype), 1)
    elif attn_mask is not None:
        if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
            scores = scores + attn_mask  # a learned bias: keep it in the graph
        else:
            mask = _additive_mask(attn_mask, query.dtype, "scaled_dot_product_attention")
    weights = _softmax(scores, -1, mask=mask)
    if dropout_p > 0.0:
        weights = _dropout(weights, dropout_p, True)
    return weights @ value


def _fused_attention(query, key, value, attn_mask, is_causal, scale):
    """The fused kernel on (N, H, L, E) views: batch dims broadcast, the last one taken as H and any before it
    flattened into N (no copy for the usual (N, H) or (B,) batches); the mask made additive."""
    L, S, E, Ev = query.shape[-2], key.shape[-2], query.shape[-1], value.shape[-1]
    batch = np.broadcast_shapes(query.shape[:-2], key.shape[:-2], value.shape[:-2])
    q, k, v = (t.expand(batch + t.shape[-2:]) if t.shape[:-2] != batch else t for t in (query, key, value))
    nh = (int(np.prod(batch[:-1])), batch[-1]) if batch else (1, 1)
    q, k, v = q.reshape(nh + (L, E)), k.reshape(nh + (S, E)), v.reshape(nh + (S, Ev))
    mask = None
    if attn_mask is not None:
        mask = _additive_mask(attn_mask, query.dtype, "scaled_dot_product_attention")
        mask = np.broadcast_to(mask, batch + (L, S))
        mask = mask.reshape(nh + (L, S)) if len(batch) != 2 else mask
    return _sdpa_fused(q, k, v, mask, is_causal, scale).reshape(batch + (L, Ev))
