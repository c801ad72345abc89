"""A Transformer encoder that classifies a token sequence through one pooled vector.

    token ids (N, S), <pad> = pad_id
      -> embedding * sqrt(D) + sinusoidal positional encoding            (N, S, D)
      -> [cls] pooling only: prepend a learned [cls] token               (N, 1 + S, D)
      -> depth encoder blocks (multi-head self-attention, add & norm, feed-forward, add & norm); <pad> keys are
         masked, so no position ever attends to padding                 (N, S', D)
      -> pooling to one vector per sequence: the [cls] token's output, or the mean over the non-<pad>
         positions                                                       (N, D)
      -> a linear classifier                                             (N, num_classes)

Built only on minitensor's public API; state-dict keys follow PyTorch's modules of the same names.
"""
import math

import minitensor as mt
from minitensor import nn


class TransformerClassifier(nn.Module):
    def __init__(self, vocab_size, num_classes, dim=64, depth=2, heads=4, mlp_dim=128, dropout=0.1, max_len=512,
                 pad_id=0, pooling="mean", norm_first=False):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"TransformerClassifier: pooling must be 'mean' or 'cls', got {pooling!r}")
        if dim % heads:
            raise ValueError(f"TransformerClassifier: dim {dim} is not divisible by heads {heads}")
        self.config = dict(vocab_size=vocab_size, num_classes=num_classes, dim=dim, depth=depth, heads=heads,
                           mlp_dim=mlp_dim, dropout=dropout, max_len=max_len, pad_id=pad_id, pooling=pooling,
                           norm_first=norm_first)
        self.pad_id, self.pooling, self.dim = pad_id, pooling, dim
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.positional = nn.SinusoidalPositionalEncoding(dim, max_len=max_len + 1)
        if pooling == "cls":
            self.cls_token = nn.Parameter(mt.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=dropout, batch_first=True,
                                           norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, num_classes)

    def encode(self, ids, padding_mask=None):
        """ids (N, S) -> (the encoder output (N, S', D), its padding mask (N, S'), True at <pad>)."""
        if ids.ndim != 2:
            raise ValueError(f"TransformerClassifier: expected token ids of shape (N, S), got {tuple(ids.shape)}")
        if padding_mask is None:
            padding_mask = ids == self.pad_id
        x = self.positional(self.embedding(ids) * math.sqrt(self.dim))
        if self.pooling == "cls":
            n = ids.shape[0]
            x = mt.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
            padding_mask = mt.cat([mt.zeros(n, 1, dtype=mt.bool), padding_mask], dim=1)
        return self.encoder(x, src_key_padding_mask=padding_mask), padding_mask

    def pool(self, x, padding_mask):
        """(N, S', D) -> (N, D): the [cls] output, or the mean over non-<pad> positions."""
        if self.pooling == "cls":
            return x[:, 0]
        keep = (~padding_mask).to(x.dtype).unsqueeze(-1)  # (N, S, 1)
        return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)

    def forward(self, ids, padding_mask=None):
        x, padding_mask = self.encode(ids, padding_mask)
        return self.head(self.pool(x, padding_mask))
