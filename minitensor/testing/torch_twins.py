"""PyTorch twins of the model zoo's ViT and TransformerClassifier, built from torch.nn with the same parameter
names, so a minitensor state dict loads into them as it is. Shared by the parity tests
(tests/models/test_model_parity.py) and the model benchmark (benchmarks/bench_models.py). Importing this module
imports torch."""
import math

import torch
from torch import nn as tnn


class TorchViT(tnn.Module):
    """minitensor.models.vit.ViT: strided-conv patches, [cls] token, position embeddings, pre-norm encoder blocks
    with GELU, final LayerNorm, head on [cls]."""

    def __init__(self, image_size, patch_size, in_channels, num_classes, dim, depth, heads, mlp_dim):
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = tnn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = tnn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = tnn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = tnn.ModuleList([
            tnn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, activation="gelu", batch_first=True,
                                        norm_first=True) for _ in range(depth)])
        self.norm = tnn.LayerNorm(dim)
        self.head = tnn.Linear(dim, num_classes)

    def forward(self, images):
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(images.shape[0], -1, -1), patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class TorchClassifier(tnn.Module):
    """minitensor.models.transformer.TransformerClassifier: scaled embeddings plus the sinusoidal table `pe`,
    post-norm encoder with a key padding mask, then mean pooling over real tokens or the [cls] token."""

    def __init__(self, pe, vocab_size, num_classes, dim, depth, heads, mlp_dim, pad_id, pooling="mean"):
        super().__init__()
        self.dim, self.pad_id, self.pooling = dim, pad_id, pooling
        self.embedding = tnn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.register_buffer("pe", torch.tensor(pe), persistent=False)
        if pooling == "cls":
            self.cls_token = tnn.Parameter(torch.zeros(1, 1, dim))
        layer = tnn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, batch_first=True)
        self.encoder = tnn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = tnn.Linear(dim, num_classes)

    def forward(self, ids):
        mask = ids == self.pad_id
        x = self.embedding(ids) * math.sqrt(self.dim) + self.pe[: ids.shape[1]]
        if self.pooling == "cls":
            n = ids.shape[0]
            x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
            mask = torch.cat([torch.zeros(n, 1, dtype=torch.bool), mask], dim=1)
        x = self.encoder(x, src_key_padding_mask=mask)
        if self.pooling == "cls":
            pooled = x[:, 0]
        else:
            keep = (~mask).to(x.dtype).unsqueeze(-1)
            pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)
