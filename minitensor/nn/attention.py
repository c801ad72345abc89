"""MultiheadAttention: split the model dim into H heads of E/H, attend in each, concatenate, project.

    q, k, v = query W_qᵀ + b_q, key W_kᵀ + b_k, value W_vᵀ + b_v        (W_q, W_k, W_v stacked in in_proj_weight)
    head_h  = softmax(q_h k_hᵀ / sqrt(E/H) + mask) v_h                 for h = 1..H
    output  = concat(head_1 .. head_H) W_oᵀ + b_o                        (out_proj)
"""
import math

import numpy as np

from .. import creation
from ..ops.nn import sdpa_fused
from ..tensor import Tensor, check_device
from . import functional as F
from . import init
from .linear import Linear
from .module import Module
from .parameter import Parameter


def _mha_mask(mask, dtype, op):
    """A MultiheadAttention mask as an additive array: bool True means *masked* (-inf), floats are added."""
    m = mask._data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype == np.bool_:
        return np.where(m, -np.inf, 0.0).astype(dtype)
    if m.dtype.kind != "f":
        raise TypeError(f"{op}: masks must be bool or floating point, got {m.dtype}")
    return m.astype(dtype)  # a copy: the attention op keeps it for backward, and the caller may edit its tensor


class MultiheadAttention(Module):
    """Self- or cross-attention over (L, N, E) queries and (S, N, E) keys/values ((N, L, E) with batch_first).

    forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
            average_attn_weights=True, is_causal=False) -> (output (L, N, E), weights or None)
    key_padding_mask (N, S): True (or -inf) marks keys to ignore, e.g. <pad>. attn_mask (L, S) or (N*H, L, S):
    True (or -inf) marks pairs that may not attend. weights: (N, L, S) averaged over heads, or (N, H, L, S).
    A query whose keys are all masked gets NaN, as in PyTorch: keep at least one key unmasked per query.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        super().__init__()
        check_device(device, "MultiheadAttention")
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if add_bias_kv or add_zero_attn or (kdim not in (None, embed_dim)) or (vdim not in (None, embed_dim)):
            raise ValueError("MultiheadAttention: add_bias_kv, add_zero_attn and kdim/vdim != embed_dim are not supported")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        self.in_proj_weight = Parameter(creation.empty(3 * embed_dim, embed_dim, dtype=dtype))
        if bias:
            self.in_proj_bias = Parameter(creation.empty(3 * embed_dim, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        init.xavier_uniform_(self.in_proj_weight)
        if bias:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _project(self, query, key, value):
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key and key is value:  # self-attention: one GEMM for q, k and v
            return F.linear(query, w, b).chunk(3, dim=-1)
        ws = w.chunk(3)
        bs = b.chunk(3) if b is not None else (None, None, None)
        return tuple(F.linear(x, wi, bi) for x, wi, bi in zip((query, key, value), ws, bs))

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"MultiheadAttention: query, key and value must all be 3-D (batched) or 2-D, got "
                             f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        if query.shape[-1] != self.embed_dim or key.shape[-1] != self.embed_dim or value.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: the last dim of query, key and value must be embed_dim "
                             f"{self.embed_dim}, got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
        same = query is key and key is value
        fused = not need_weights and not (self.dropout > 0.0 and self.training)
        if not batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            key_padding_mask = None if key_padding_mask is None else _unsqueeze0(key_padding_mask)
        if fused and batched and self.batch_first and query.numel() * key.numel() > 0:
            # batch-major all the way: the heads of the (N, L, E) projections and the output stored (N, L, H, hd),
            # so out_proj's result is (N, L, E) as it is: no transposes, and the residual add after this layer
            # meets two contiguous arrays
            N, L, _ = query.shape
            q, k, v = self._project(query, key, value)
            mask = self._combined_mask(attn_mask, key_padding_mask, is_causal, N, L, key.shape[1], q.dtype)
            return self.out_proj(self._attend_fused(q, k, v, mask, batch_major=True)), None
        if batched and self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if same:
            key = value = query
        L, N, E = query.shape
        S, H, hd = key.shape[0], self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value)  # (L, N, E), (S, N, E), (S, N, E)
        mask = self._combined_mask(attn_mask, key_padding_mask, is_causal, N, L, S, q.dtype)
        if fused and L * S * N > 0:
            out = self._attend_fused(q, k, v, mask, batch_major=False)
        else:  # the weights themselves are wanted (or dropped out): spelled out
            q = q.reshape(L, N * H, hd).transpose(0, 1)  # (N*H, L, hd)
            k = k.reshape(S, N * H, hd).transpose(0, 1)  # (N*H, S, hd)
            v = v.reshape(S, N * H, hd).transpose(0, 1)
            scores = (q * (1.0 / math.sqrt(hd))) @ k.mT  # (N*H, L, S)
            weights = F.softmax(scores, -1) if mask is None else _masked_softmax(scores, mask)
            if self.dropout > 0.0 and self.training:
                weights = F.dropout(weights, self.dropout, True)
            out = (weights @ v).transpose(0, 1).reshape(L, N, E)  # concatenate the heads
        out = self.out_proj(out)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        weights = weights.reshape(N, H, L, S)
        if average_attn_weights:
            weights = weights.mean(dim=1)
        return out, (weights if batched else weights.squeeze(0))

    def _attend_fused(self, q, k, v, mask, batch_major):
        """Attention of the projections q (L), k, v (S), batch-major (N, ., E) or time-major (., N, E), with the fused
        kernel, on (N, H, ., hd) views of them (no copies); its output is stored with the heads side by side in the
        same layout ((N, L, H, hd) or (L, N, H, hd)), so the (N, L, E) or (L, N, E) result is a free reshape."""
        H, hd = self.num_heads, self.head_dim
        if batch_major:
            (N, L, E), S = q.shape, k.shape[1]
            q, k, v = (t.reshape(N, t.shape[1], H, hd).permute(0, 2, 1, 3) for t in (q, k, v))
        else:
            (L, N, E), S = q.shape, k.shape[0]
            q, k, v = (t.reshape(t.shape[0], N, H, hd).permute(1, 2, 0, 3) for t in (q, k, v))
        if mask is not None and mask.ndim == 3:
            mask = mask.reshape(N, H, mask.shape[1], S)
        out = sdpa_fused(q, k, v, mask, False, 1.0 / math.sqrt(hd), out_layout="nlhe" if batch_major else "lnhe")
        return out.permute(0, 2, 1, 3).reshape(N, L, E) if batch_major else out.permute(2, 0, 1, 3).reshape(L, N, E)

    def _combined_mask(self, attn_mask, key_padding_mask, is_causal, N, L, S, dtype):
        mask = None
        if attn_mask is not None:
            mask = _mha_mask(attn_mask, dtype, "MultiheadAttention")
            if mask.shape not in ((L, S), (N * self.num_heads, L, S)):
                raise ValueError(f"MultiheadAttention: attn_mask must have shape ({L}, {S}) or "
                                 f"({N * self.num_heads}, {L}, {S}), got {mask.shape}")
        elif is_causal:
            mask = np.triu(np.full((L, S), -np.inf, dtype=dtype), 1)
        if key_padding_mask is not None:
            pad = _mha_mask(key_padding_mask, dtype, "MultiheadAttention")
            if pad.shape != (N, S):
                raise ValueError(f"MultiheadAttention: key_padding_mask must have shape ({N}, {S}), got {pad.shape}")
            pad = np.broadcast_to(pad[:, None, None, :], (N, self.num_heads, 1, S)).reshape(N * self.num_heads, 1, S)
            mask = pad if mask is None else mask + pad
        return mask

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def _masked_softmax(scores, mask):
    from ..ops.nn import softmax

    return softmax(scores, -1, mask=mask)


def _unsqueeze0(mask):
    return mask.unsqueeze(0) if isinstance(mask, Tensor) else np.asarray(mask)[None]
