"""The training loop behind `python -m minitensor train`: epochs, a progress bar, evaluation, checkpoints, resume.

A *recipe* (minitensor.models.recipes) owns the data, the model and its loss; this module owns everything
around them:

- every epoch starts from RNG states derived from (seed, epoch) alone, so the shuffling, augmentation and
  dropout of epoch e do not depend on what ran before it; together with the model, optimizer and scheduler
  state saved after each epoch, `--resume` ends exactly where an uninterrupted run would;
- the checkpoint (DIR/checkpoint.safetensors) is written atomically after each epoch, so an interrupted run
  (or a failed save) never leaves a broken one;
- DIR/metrics.json holds the per-epoch history and the summary; DIR/curves.png plots it.
"""
import json
import os
import sys
import time

import numpy as np

from . import random as _random
from .utils.checkpoint import load, save

CHECKPOINT = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or written by another recipe or configuration."""


def epoch_seed(seed, epoch):
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _progress(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; a bare environment still trains, without a bar
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr)


def load_checkpoint(path, recipe_name=None):
    """Read a training checkpoint, checking it is one (and, given recipe_name, of that recipe)."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
    if not isinstance(state, dict) or "recipe" not in state or "model" not in state:
        raise CheckpointError(f"{path} is not a minitensor training checkpoint (no recipe/model entries)")
    if recipe_name is not None and state["recipe"] != recipe_name:
        raise CheckpointError(f"checkpoint {path} is a {state['recipe']!r} checkpoint, not {recipe_name!r}")
    return state


def fit(recipe, out_dir, epochs, seed=0, resume=False, progress=True, log=print):
    """Train `recipe` for `epochs` epochs, writing checkpoints and metrics to out_dir. Returns the summary dict."""
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, CHECKPOINT)
    history, start, train_seconds = [], 0, 0.0
    if resume:
        state = load_checkpoint(ckpt_path, recipe.name)
        if state["config"] != recipe.config():
            raise CheckpointError(f"checkpoint {ckpt_path} was trained with another configuration: "
                                  f"{state['config']} (this run: {recipe.config()})")
        recipe.load_state(state)
        history, start = list(state["history"]), int(state["epoch"])
        train_seconds = float(sum(h["train_seconds"] for h in history))
        log(f"resuming {recipe.name} from {ckpt_path} after epoch {start}")
    for epoch in range(start, epochs):
        s = epoch_seed(seed, epoch)
        _random.manual_seed(s)
        rng = np.random.default_rng(s)
        recipe.model.train()
        batches = recipe.train_batches(rng)
        bar = _progress(len(batches), f"epoch {epoch + 1}/{epochs}", progress)
        loss_sum = correct = count = samples = 0.0
        t0 = time.perf_counter()
        for batch in batches:
            # loss (mean over the batch's n predictions), how many of them were right, n, and the batch size
            loss, c, n, b = recipe.train_step(batch)
            loss_sum, correct, count, samples = loss_sum + loss * n, correct + c, count + n, samples + b
            if bar is not None:
                rate = samples / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"loss {loss_sum / count:.4f} acc {correct / count:.2%} {rate:.0f} samples/s",
                                    refresh=False)
                bar.update(1)
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        train_seconds += seconds
        recipe.model.eval()
        t1 = time.perf_counter()
        metrics = recipe.evaluate()
        record = dict(epoch=epoch + 1, train_loss=loss_sum / max(count, 1), train_accuracy=correct / max(count, 1),
                      train_seconds=seconds, eval_seconds=time.perf_counter() - t1,
                      samples_per_second=samples / max(seconds, 1e-9), lr=recipe.current_lr(), **metrics)
        history.append(record)
        log(f"epoch {epoch + 1:3d}/{epochs}  loss {record['train_loss']:.4f}  train acc {record['train_accuracy']:.2%}"
            f"  test acc {metrics['test_accuracy']:.2%}  {record['samples_per_second']:.0f} samples/s"
            f"  ({seconds:.1f}s)")
        save(dict(recipe=recipe.name, config=recipe.config(), epoch=epoch + 1, seed=seed, history=history,
                  **recipe.state()), ckpt_path)
    if not history:
        raise CheckpointError(f"nothing to train: the checkpoint in {out_dir} already has {start} epochs "
                              f"(asked for {epochs})")
    summary = dict(recipe=recipe.name, epochs=epochs, seed=seed, test_accuracy=history[-1]["test_accuracy"],
                   train_seconds=train_seconds, threads=_threads(), checkpoint=ckpt_path,
                   parameters=sum(p.numel() for p in recipe.model.parameters()))
    write_metrics(out_dir, history, summary)
    return summary


def _threads():
    from .backend import get_num_threads

    return get_num_threads()


def write_metrics(out_dir, history, summary):
    """metrics.json (history + summary) and curves.png (loss and accuracy per epoch)."""
    tmp = os.path.join(out_dir, "metrics.json.tmp")
    with open(tmp, "w") as f:
        json.dump(dict(summary=summary, history=history), f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "metrics.json"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", ms=3, label="train loss")
    if "test_loss" in history[0]:
        ax1.plot(epochs, [h["test_loss"] for h in history], "o-", ms=3, label="test loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", ms=3, label="train")
    ax2.plot(epochs, [100 * h["test_accuracy"] for h in history], "o-", ms=3, label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.suptitle(f"{summary['recipe']}: test accuracy {summary['test_accuracy']:.2%}")
    fig.tight_layout()
    path = os.path.join(out_dir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
