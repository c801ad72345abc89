"""Position encodings: the fixed sinusoidal table and a learned embedding, added to token vectors.

Sinusoidal (Vaswani et al.):  PE[p, 2i] = sin(p / 10000^(2i/D)),  PE[p, 2i+1] = cos(p / 10000^(2i/D)).
"""
import math

import numpy as np

from .. import creation
from ..tensor import Tensor
from . import init
from .module import Module
from .parameter import Parameter


def sinusoidal_table(max_len, d_model, dtype=np.float32):
    position = np.arange(max_len)[:, None]
    div = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = np.zeros((max_len, d_model))
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div[: d_model // 2])
    return table.astype(dtype)


class SinusoidalPositionalEncoding(Module):
    """x + PE[:S]:  x (N, S, D) with batch_first (the default), else (S, N, D). The table is a buffer (not saved)."""

    def __init__(self, d_model, max_len=5000, batch_first=True):
        super().__init__()
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.register_buffer("pe", Tensor._wrap(sinusoidal_table(max_len, d_model)), persistent=False)

    def forward(self, x):
        s = x.shape[1] if self.batch_first else x.shape[0]
        if s > self.max_len:
            raise ValueError(f"SinusoidalPositionalEncoding: sequence of length {s} exceeds max_len {self.max_len}")
        pe = self.pe[:s].to(x.dtype)
        return x + (pe if self.batch_first else pe.unsqueeze(1))

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(Module):
    """x + weight[:S] with a learned weight (max_len, D) ~ truncated N(0, 0.02), as in ViT and BERT."""

    def __init__(self, max_len, d_model, batch_first=True, dtype=None):
        super().__init__()
        self.max_len, self.d_model, self.batch_first = max_len, d_model, batch_first
        self.weight = Parameter(creation.empty(max_len, d_model, dtype=dtype))
        init.trunc_normal_(self.weight, std=0.02, a=-0.04, b=0.04)

    def forward(self, x):
        s = x.shape[1] if self.batch_first else x.shape[0]
        if s > self.max_len:
            raise ValueError(f"LearnedPositionalEmbedding: sequence of length {s} exceeds max_len {self.max_len}")
        pe = self.weight[:s]
        return x + (pe if self.batch_first else pe.unsqueeze(1))

    def extra_repr(self):
        return f"max_len={self.max_len}, d_model={self.d_model}"
