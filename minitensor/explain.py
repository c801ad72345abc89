"""`python -m minitensor explain vit`: one MNIST image walked through the ViT forward pass, stage by stage.

Each stage is recomputed by hand from the model's parameters (patches, projection, [cls], positions, Q/K/V per
head, attention, concatenation, MLP) and checked against the model's own modules, so what is printed is what
the model does. PNGs: the image cut into patches, and each block's [cls]-token attention over the patches.
"""
import math
import os

import numpy as np

import minitensor as mt
from minitensor.nn import functional as F


def _line(stage, shape, what):
    shape = "x".join(str(s) for s in shape)
    print(f"  {stage:<28s} {shape:>10s}   {what}")


def explain_vit(args, load, UsageError):
    from minitensor.models.recipes import MNIST_MEAN, MNIST_STD, VitRecipe

    default = os.path.join("runs", "vit", "checkpoint.safetensors")
    if args.checkpoint or os.path.exists(default):
        recipe = load("vit", args.checkpoint or default)
        source = args.checkpoint or default
    else:
        recipe = VitRecipe()
        recipe.model.eval()
        source = "an untrained model (no checkpoint: train one with `python -m minitensor train vit`)"
    n = len(recipe.y_test)
    if not 0 <= args.index < n:
        raise UsageError(f"--index must be in [0, {n}) (the bundled MNIST test images), got {args.index}")
    model = recipe.model
    cfg = model.config
    p, d, heads = cfg["patch_size"], cfg["dim"], cfg["heads"]
    image = recipe.x_test[args.index]  # (C, H, W), normalised
    label = int(recipe.y_test[args.index])
    c, h, w = image.shape
    gh, gw = h // p, w // p
    print(f"ViT forward pass of bundled MNIST test image {args.index} (label {label}), {source}")
    with mt.no_grad():
        x = mt.from_numpy(image[None])
        _line("image", (c, h, w), "grey levels, normalised with the MNIST mean and std")
        patches = image.reshape(c, gh, p, gw, p).transpose(1, 3, 0, 2, 4).reshape(gh * gw, c * p * p)
        _line("patches", (gh * gw, c, p, p), f"cut into a {gh}x{gw} grid of {p}x{p} patches")
        proj = model.patch_embed(x).flatten(2).transpose(1, 2)[0]  # (P, D)
        by_hand = patches @ model.patch_embed.weight.detach().numpy().reshape(d, -1).T + model.patch_embed.bias.detach().numpy()
        _check(proj, by_hand, "patch projection")
        _line("projection", tuple(proj.shape), f"each patch flattened ({c * p * p}) times a {c * p * p}x{d} matrix: "
              f"a Conv2d with kernel = stride = {p}")
        tokens = model.tokens(x)
        _line("+ [cls]", (gh * gw + 1, d), "a learned token prepended: its output will summarise the image")
        _line("+ positions", tuple(tokens.shape[1:]), "learned position embeddings added (one per token)")
        maps = []
        for k, block in enumerate(model.blocks):
            attn = block.self_attn
            y = block.norm1(tokens)
            qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)[0]  # (S, 3D)
            q, kk, v = (t.reshape(-1, heads, d // heads).transpose(0, 1) for t in qkv.chunk(3, dim=-1))
            s = q.shape[1]
            weights = F.softmax(q @ kk.mT / math.sqrt(d // heads), dim=-1)  # (H, S, S)
            concat = (weights @ v).transpose(0, 1).reshape(s, d)
            after_attn = tokens[0] + attn.out_proj(concat)
            hidden = block.linear1(block.norm2(after_attn))
            out = after_attn + block.linear2(block.activation(hidden))
            _check(out, block(tokens)[0].numpy(), f"block {k + 1}")
            print(f"  block {k + 1}:")
            _line("  LayerNorm", (s, d), "each token normalised (mean 0, variance 1, then scale and shift)")
            _line("  Q, K, V", (heads, s, d // heads), f"one linear map to 3x{d}, split into {heads} heads of "
                  f"{s}x{d // heads}")
            _line("  attention", tuple(weights.shape), "softmax(Q K^T / sqrt(d_k)) per head: who looks at whom")
            _line("  heads @ V, concat", (s, d), "each head's weighted sum of values, heads side by side")
            _line("  out proj + residual", (s, d), "x + MSA(LN(x))")
            _line("  MLP hidden", tuple(hidden.shape), "LayerNorm, Linear, GELU")
            _line("  MLP out + residual", (s, d), "x + MLP(LN(x))")
            maps.append(weights[:, 0, 1:].numpy().reshape(heads, gh, gw))
            tokens = out.unsqueeze(0)
        cls_out = model.norm(tokens)[:, 0]
        logits = model.head(cls_out)[0]
        _check(logits, model(x)[0].numpy(), "logits")
        _line("LayerNorm, [cls] token", (d,), "the summary vector of the image")
        _line("head -> logits", tuple(logits.shape), "one score per digit")
        probs = F.softmax(logits, dim=-1).numpy()
        print(f"  prediction: {int(probs.argmax())} ({probs.max():.1%}); true label {label}")
    saved = _save_pngs(args.out, image * MNIST_STD + MNIST_MEAN, p, maps, args.index)
    if saved:
        print("saved " + ", ".join(saved))
    return 0


def _check(ours, reference, what):
    ours = ours.numpy() if hasattr(ours, "numpy") else ours
    if not np.allclose(ours, reference, rtol=1e-4, atol=1e-4):
        raise AssertionError(f"explain: the by-hand {what} differs from the model's "
                             f"(max error {np.abs(ours - reference).max():.3g})")


def _save_pngs(out, image, p, maps, index):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no PNGs)")
        return []
    os.makedirs(out, exist_ok=True)
    c, h, w = image.shape
    gh, gw = h // p, w // p
    fig, axes = plt.subplots(gh, gw, figsize=(gw * 0.9, gh * 0.9))
    for i in range(gh):
        for j in range(gw):
            ax = axes[i][j]
            ax.imshow(image[0, i * p:(i + 1) * p, j * p:(j + 1) * p], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(i * gw + j + 1), fontsize=7)
    fig.suptitle(f"image {index}: {gh * gw} patches of {p}x{p}", fontsize=9)
    fig.tight_layout()
    first = os.path.join(out, f"patches_{index}.png")
    fig.savefig(first, dpi=100)
    plt.close(fig)
    heads = maps[0].shape[0]
    fig, axes = plt.subplots(len(maps), heads + 1, figsize=(1.6 * (heads + 1), 1.6 * len(maps)), squeeze=False)
    for k, m in enumerate(maps):
        axes[k][0].imshow(image[0], cmap="gray")
        axes[k][0].set_ylabel(f"block {k + 1}", fontsize=8)
        for hd in range(heads):
            axes[k][hd + 1].imshow(image[0], cmap="gray")
            axes[k][hd + 1].imshow(np.kron(m[hd], np.ones((p, p))), cmap="inferno", alpha=0.6)
            if k == 0:
                axes[k][hd + 1].set_title(f"head {hd + 1}", fontsize=8)
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("[cls] attention over the patches", fontsize=9)
    fig.tight_layout()
    second = os.path.join(out, f"cls_attention_{index}.png")
    fig.savefig(second, dpi=100)
    plt.close(fig)
    return [first, second]
