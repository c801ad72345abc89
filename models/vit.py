"""The Vision Transformer (Dosovitskiy et al., 2020), small enough for a laptop CPU.

    image (N, C, H, W)
      -> patchify: a Conv2d with kernel = stride = patch, i.e. one linear projection per patch  (N, D, H/p, W/p)
      -> flatten to tokens                                                                      (N, P, D)
      -> prepend the learned [cls] token                                                        (N, 1 + P, D)
      -> add learned position embeddings                                                        (N, 1 + P, D)
      -> depth pre-norm encoder blocks: x + MSA(LN(x)), then x + MLP(LN(x)) with GELU           (N, 1 + P, D)
      -> LayerNorm, then a linear head on the [cls] token                                       (N, classes)

Built only on minitensor's public API; state-dict keys follow PyTorch's modules of the same names.
"""
import minitensor as mt
from minitensor import nn


class ViT(nn.Module):
    def __init__(self, image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=64, depth=4, heads=4,
                 mlp_dim=128, dropout=0.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"ViT: image_size {image_size} is not a multiple of patch_size {patch_size}")
        if dim % heads:
            raise ValueError(f"ViT: dim {dim} is not divisible by heads {heads}")
        self.config = dict(image_size=image_size, patch_size=patch_size, in_channels=in_channels,
                           num_classes=num_classes, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, dropout=dropout)
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(mt.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(mt.zeros(1, self.num_patches + 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        # each block initialised on its own (not deep copies of one block, as nn.TransformerEncoder makes)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def tokens(self, images):
        """images (N, C, H, W) -> the token sequence entering the first block, (N, 1 + P, D)."""
        n = images.shape[0]
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (N, P, D)
        cls = self.cls_token.expand(n, -1, -1)
        return mt.cat([cls, patches], dim=1) + self.pos_embed

    def forward(self, images):
        x = self.tokens(images)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


def vit_tiny(**overrides):
    """28 x 28 x 1 images (MNIST), patch 7 -> 16 patches, dim 64, depth 4, 4 heads, MLP 128."""
    config = dict(image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=64, depth=4, heads=4, mlp_dim=128)
    config.update(overrides)
    return ViT(**config)


def vit_small(**overrides):
    """32 x 32 x 3 images (CIFAR-sized), patch 4 -> 64 patches, dim 128, depth 6, 4 heads, MLP 256."""
    config = dict(image_size=32, patch_size=4, in_channels=3, num_classes=10, dim=128, depth=6, heads=4, mlp_dim=256)
    config.update(overrides)
    return ViT(**config)
