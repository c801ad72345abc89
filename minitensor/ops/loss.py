"""Losses, composed of differentiable ops (so their gradients, and gradients of gradients, come for free).

Conventions follow PyTorch: class scores are in dim 1 of (N, C, d1, ...) inputs (dim 0 of an unbatched
(C,) input); `reduction` is 'mean', 'sum' or 'none'; for weighted or partly ignored targets, 'mean' divides
by the total weight of the counted targets.
"""
import numpy as np

from .. import dtypes
from ..tensor import Tensor
from .nn import log_softmax


def _check_reduction(reduction, op):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _class_weight_shape(ndim, class_dim):
    return tuple(-1 if d == class_dim else 1 for d in range(ndim))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """input: log-probabilities (N, C, ...) or (C,); target: class indices (N, ...) or ()."""
    _check_reduction(reduction, "nll_loss")
    class_dim = 1 if input.ndim > 1 else 0
    c = input.shape[class_dim]
    t = target._data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold class indices (an integer tensor), got {t.dtype}")
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if t.shape != expected:
        raise ValueError(f"nll_loss: input of shape {tuple(input.shape)} needs a target of shape {expected}, "
                         f"got {t.shape}")
    ignored = t == ignore_index
    bad = (~ignored) & ((t < 0) | (t >= c))
    if bad.any():
        raise IndexError(f"nll_loss: target {int(t[bad].flat[0])} is out of bounds for {c} classes")
    safe = np.where(ignored, 0, t).astype(np.int64)
    picked = -input.gather(class_dim, Tensor._wrap(np.expand_dims(safe, class_dim))).squeeze(class_dim)
    counted = (~ignored).astype(input.dtype)
    w = counted if weight is None else weight._data[safe].astype(input.dtype) * counted
    loss = picked * Tensor._wrap(w)
    if reduction == "mean":
        return _weighted_mean(loss.sum(), w.sum(), input.dtype)
    return loss.sum() if reduction == "sum" else loss


def _weighted_mean(total, weight_sum, dtype):
    """total / weight_sum, the 'mean' of a loss over the weight of its counted targets. With none counted (every
    target ignored) it is NaN, as in PyTorch, but the gradient is zero like PyTorch's, not 0/0 = NaN."""
    if weight_sum == 0:
        return total + np.nan  # total is 0 (every term has weight 0) and its gradient flows with factor 1
    return total / Tensor._wrap(np.asarray(weight_sum, dtype=dtype))


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """log_softmax over the class dim, then the negative log-likelihood of the target.

    target: class indices (N, ...) or class probabilities of input's shape. With label_smoothing = e the
    target becomes (1 - e) * target + e / C (for indices: (1 - e) * nll + e * the mean over classes of -logp).
    """
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if input.ndim == 0:
        raise ValueError("cross_entropy: input must have a class dim, got a 0-d tensor")
    class_dim = 1 if input.ndim > 1 else 0
    c = input.shape[class_dim]
    logp = log_softmax(input, class_dim)
    w_shape = _class_weight_shape(input.ndim, class_dim)
    if weight is not None and tuple(weight.shape) != (c,):
        raise ValueError(f"cross_entropy: weight must have shape ({c},), got {tuple(weight.shape)}")
    t = target._data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind == "f":  # class probabilities
        if t.shape != tuple(input.shape):
            raise ValueError(f"cross_entropy: probability targets must have the input's shape {tuple(input.shape)}, "
                             f"got {t.shape}")
        probs = target if isinstance(target, Tensor) else Tensor._wrap(t.astype(input.dtype))
        if label_smoothing > 0:
            probs = probs * (1 - label_smoothing) + label_smoothing / c
        terms = logp * probs
        if weight is not None:
            terms = terms * weight.reshape(w_shape)
        loss = -terms.sum(dim=class_dim)
        if reduction == "mean":
            return loss.sum() / max(input.numel() // max(c, 1), 1)
        return loss.sum() if reduction == "sum" else loss
    nll = nll_loss(logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0:
        return nll
    ignored = t == ignore_index
    smooth = -(logp * weight.reshape(w_shape) if weight is not None else logp).sum(dim=class_dim)
    smooth = smooth.masked_fill(Tensor._wrap(np.asarray(ignored)), 0.0)
    if reduction == "mean":
        if weight is not None:
            denominator = weight._data[np.where(ignored, 0, t).astype(np.int64)][~ignored].sum()
        else:
            denominator = (~ignored).sum()
        smooth = _weighted_mean(smooth.sum(), denominator, input.dtype)
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / c)


def mse_loss(input, target, reduction="mean"):
    _check_reduction(reduction, "mse_loss")
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input, target, reduction="mean"):
    _check_reduction(reduction, "l1_loss")
    return _reduce((input - target).abs(), reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """-[p t log s(x) + (1 - t) log(1 - s(x))] with s the sigmoid, computed stably as
    (1 - t) x + (1 + (p - 1) t) softplus(-x)   (p = pos_weight, 1 if not given)."""
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    target = target if isinstance(target, Tensor) else Tensor(target, dtype=input.dtype)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target shape {tuple(target.shape)} differs from input "
                         f"shape {tuple(input.shape)}")
    softplus_neg = (-input).relu() + ((-input.abs()).exp() + 1).log()  # softplus(-x), stable for any x
    log_weight = 1 if pos_weight is None else (pos_weight - 1) * target + 1
    loss = (1 - target) * input + log_weight * softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def one_hot(tensor, num_classes=-1):
    """Class indices (...) -> int64 one-hot vectors (..., num_classes)."""
    idx = tensor._data if isinstance(tensor, Tensor) else np.asarray(tensor)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got {idx.dtype}")
    if num_classes == -1:
        num_classes = int(idx.max()) + 1 if idx.size else 0
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise IndexError(f"one_hot: class values must be in [0, {num_classes}), got [{idx.min()}, {idx.max()}]")
    return Tensor._wrap((idx[..., None] == np.arange(num_classes)).astype(dtypes.int64))
