"""The training loop behind `python -m minitensor train`: epochs, a progress bar, evaluation, checkpoints, resume.

A *recipe* (minitensor.models.recipes) owns the data, the model and its loss; this module owns everything
around them:

- every epoch starts from RNG states derived from (seed, epoch) alone, so the shuffling, augmentation and
  dropout of epoch e do not depend on what ran before it; together with the model, optimizer and scheduler
  state saved after each epoch, `--resume` ends exactly where an uninterrupted run would;
- the checkpoint (DIR/checkpoint.safetensors) is written atomically after each epoch, so an interrupted run
  (or a failed save) never leaves a broken one;
- DIR/metrics.json holds the per-epoch history and the summary (strict JSON: a non-finite figure is null);
  DIR/curves.png plots it;
- a non-finite training loss stops the run (TrainingDiverged) before the epoch is saved: the checkpoint stays
  the last good one, and the message says where the loss blew up.

With distributed=True (under `mpiexec -n N`, after minitensor.distributed.init()), every rank draws the same
global batches and trains on its contiguous slice of each (np.array_split: sizes differ by at most one), through
DistributedDataParallel with each rank's gradient weighted by its share of the batch, so the run follows the
single-process run with the same global batch (same samples, same augmentation draws, same averaged gradient).
The epoch's loss and accuracy are summed over ranks; rank 0 alone evaluates, logs and writes the checkpoint
(the inner model's state: it loads in a single process), and reads it for --resume, sending it to the others.
"""
import json
import math
import os
import sys
import time

import numpy as np

from . import random as _random
from .tensor import Tensor
from .utils.checkpoint import load, save

CHECKPOINT = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or written by another recipe or configuration."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (the learning rate is too high, usually)."""


def _reason(e):
    """An exception as a short reason: a KeyError's str is only the quoted key."""
    return f"missing entry {e.args[0]!r}" if isinstance(e, KeyError) and e.args else str(e)


def _first_non_finite(value, where):
    """The path of the first NaN or infinite number in a (nested) checkpoint entry, or None."""
    if isinstance(value, Tensor):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        finite = value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
        return None if finite else where
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, v in items:
        found = _first_non_finite(v, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


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
    if not isinstance(state["model"], dict) or not all(isinstance(v, Tensor) for v in state["model"].values()):
        raise CheckpointError(f"checkpoint {path}: its model entry is not a state dict (names -> tensors)")
    bad = _first_non_finite(state["model"], "")
    if bad is not None:  # a diverged model answers NaN or one fixed class: never a silent wrong answer
        raise CheckpointError(f"checkpoint {path} has NaN or infinite values in model weight {bad!r} (saved from a "
                              "diverged run?)")
    return state


def _config_difference(saved, ours, where=""):
    """The first differing entry of two configs, as 'key is saved (this run: ours)', or None."""
    if isinstance(saved, dict) and isinstance(ours, dict):
        for key in sorted(set(saved) | set(ours), key=str):
            found = _config_difference(saved.get(key, "(none)"), ours.get(key, "(none)"), f"{where}{key}.")
            if found is not None:
                return found
        return None
    return None if saved == ours else f"{where[:-1] or 'config'} is {saved!r:.60} (this run: {ours!r:.60})"


def _read_resume_state(ckpt_path, recipe):
    state = load_checkpoint(ckpt_path, recipe.name)
    missing = [k for k in ("config", "epoch", "history", "optimizer", "scheduler") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {ckpt_path} cannot be resumed: it has no {', '.join(missing)} "
                              "entr" + ("ies" if len(missing) > 1 else "y"))
    difference = _config_difference(state["config"], recipe.config())
    if difference is not None:
        raise CheckpointError(f"checkpoint {ckpt_path} was trained with another configuration: {difference}")
    epoch, history = state["epoch"], state["history"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise CheckpointError(f"checkpoint {ckpt_path}: epoch must be a positive int, got {epoch!r:.60}")
    if (not isinstance(history, list) or len(history) != epoch
            or not all(isinstance(h, dict) and isinstance(h.get("train_seconds"), (int, float)) for h in history)):
        raise CheckpointError(f"checkpoint {ckpt_path}: history must hold one record per epoch ({epoch}), with "
                              "train_seconds")
    bad = _first_non_finite(state["optimizer"], "")
    if bad is not None:
        raise CheckpointError(f"checkpoint {ckpt_path} has NaN or infinite values in optimizer state {bad!r} "
                              "(saved from a diverged run?)")
    return state


def _shard(batch, rank, world):
    """This rank's contiguous slice of a global batch (an index array, or a tuple of per-sample arrays)."""
    if isinstance(batch, tuple):
        return tuple(_shard(part, rank, world) for part in batch)
    return np.array_split(batch, world)[rank]


def _check_splittable(batches, world):
    smallest = min(len(b[0] if isinstance(b, tuple) else b) for b in batches)
    if smallest < world:
        raise ValueError(f"fit: a global batch of {smallest} samples cannot be split across {world} ranks (each "
                         "needs at least one sample); choose a batch size, and a training set size modulo it, of at "
                         f"least {world}")


def fit(recipe, out_dir, epochs, seed=0, resume=False, progress=True, log=print, distributed=False):
    """Train `recipe` for `epochs` epochs, writing checkpoints and metrics to out_dir. Returns the summary dict
    (on rank 0; None on the other ranks of a distributed run)."""
    rank, world = 0, 1
    if distributed:
        from . import distributed as dist

        rank, world = dist.rank(), dist.world_size()
    main = rank == 0
    if not main:
        progress, log = False, lambda *args: None
    else:
        os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, CHECKPOINT)
    history, start, train_seconds = [], 0, 0.0
    if resume:
        if not distributed:
            state = _read_resume_state(ckpt_path, recipe)
        else:  # rank 0 reads it (other machines need not see out_dir) and sends it, or its error, to all
            try:
                shared = [_read_resume_state(ckpt_path, recipe) if main else None]
            except CheckpointError as e:
                shared = [e]
            dist.broadcast_object_list(shared, src=0)
            if isinstance(shared[0], CheckpointError):
                raise shared[0]
            state = shared[0]
        history, start = list(state["history"]), state["epoch"]
        try:  # every rank has the same state and recipe, so the same outcome
            recipe.load_state(state, start)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:  # load_state_dict's mismatches included
            raise CheckpointError(f"checkpoint {ckpt_path} cannot be resumed: {_reason(e)}") from None
        train_seconds = float(sum(h["train_seconds"] for h in history))
        log(f"resuming {recipe.name} from {ckpt_path} after epoch {start}")
    if distributed:
        recipe.distribute()
    for epoch in range(start, epochs):
        s = epoch_seed(seed, epoch)
        _random.manual_seed(s)
        rng = np.random.default_rng(s)
        recipe.model.train()
        batches = recipe.train_batches(rng)
        if distributed:
            _check_splittable(batches, world)
            batches = [_shard(b, rank, world) for b in batches]
        bar = _progress(len(batches), f"epoch {epoch + 1}/{epochs}", progress)
        loss_sum = correct = count = samples = 0.0
        t0 = time.perf_counter()
        for step, batch in enumerate(batches):
            # loss (mean over the batch's n predictions), how many of them were right, n, and the batch size
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a blow-up is caught just below,
                loss, c, n, b = recipe.train_step(batch)                         # with its epoch and step
            if not math.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise TrainingDiverged(_diverged(f"the loss is {loss}", epoch, step, len(batches), recipe, ckpt_path))
            loss_sum, correct, count, samples = loss_sum + loss * n, correct + c, count + n, samples + b
            if bar is not None:
                rate = samples / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"loss {loss_sum / count:.4f} acc {correct / count:.2%} {rate:.0f} samples/s",
                                    refresh=False)
                bar.update(1)
        if distributed:  # the epoch's figures over the global batches
            totals = Tensor._wrap(np.array([loss_sum, correct, count, samples], dtype=np.float64))
            dist.all_reduce(totals)
            loss_sum, correct, count, samples = totals.tolist()
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        train_seconds += seconds
        if not main:
            continue
        bad = _first_non_finite({k: p.detach() for k, p in recipe.model.named_parameters()}, "")
        if bad is not None:  # the last step's update blew up: never save it
            raise TrainingDiverged(_diverged(f"weight {bad!r} is NaN or infinite", epoch, len(batches) - 1,
                                             len(batches), recipe, ckpt_path))
        recipe.model.eval()
        t1 = time.perf_counter()
        metrics = recipe.evaluate()
        record = dict(epoch=epoch + 1, train_loss=loss_sum / max(count, 1), train_accuracy=correct / max(count, 1),
                      train_seconds=seconds, eval_seconds=time.perf_counter() - t1,
                      samples_per_second=samples / max(seconds, 1e-9), lr=recipe.current_lr(), **metrics)
        record = {k: _json_number(v) for k, v in record.items()}  # an infinite test loss is recorded as None
        history.append(record)
        log(f"epoch {epoch + 1:3d}/{epochs}  loss {record['train_loss']:.4f}  train acc {record['train_accuracy']:.2%}"
            f"  test acc {metrics['test_accuracy']:.2%}  {record['samples_per_second']:.0f} samples/s"
            f"  ({seconds:.1f}s)")
        save(dict(recipe=recipe.name, config=recipe.config(), epoch=epoch + 1, seed=seed, history=history,
                  **recipe.state()), ckpt_path)
    if distributed:
        dist.barrier()  # the checkpoint is written: every rank may read it
        if not main:
            return None
    if not history:
        raise CheckpointError(f"nothing to train: the checkpoint in {out_dir} already has {start} epochs "
                              f"(asked for {epochs})")
    summary = dict(recipe=recipe.name, epochs=epochs, seed=seed, test_accuracy=history[-1]["test_accuracy"],
                   train_seconds=train_seconds, threads=_threads(), checkpoint=ckpt_path,
                   parameters=sum(p.numel() for p in recipe.model.parameters()))
    write_metrics(out_dir, history, summary)
    return summary


def _diverged(what, epoch, step, steps, recipe, ckpt_path):
    kept = f"the checkpoint {ckpt_path} holds epoch {epoch}" if epoch > 0 else "no checkpoint was written"
    return (f"training diverged at epoch {epoch + 1}, step {step + 1}/{steps}: {what} (lr {recipe.current_lr():.3g}, "
            f"peak {recipe.lr:g}); {kept}; try a lower --lr")


def _json_number(value):
    """value, or None for a NaN or infinite float (JSON has no NaN: json.dump would write an invalid file)."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _threads():
    from .backend import get_num_threads

    return get_num_threads()


def write_metrics(out_dir, history, summary):
    """metrics.json (history + summary) and curves.png (loss and accuracy per epoch)."""
    summary = {k: _json_number(v) for k, v in summary.items()}
    history = [{k: _json_number(v) for k, v in h.items()} for h in history]
    tmp = os.path.join(out_dir, "metrics.json.tmp")
    with open(tmp, "w") as f:
        json.dump(dict(summary=summary, history=history), f, indent=1, allow_nan=False)
    os.replace(tmp, os.path.join(out_dir, "metrics.json"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    def series(key, scale=1):  # a None (non-finite) figure is a gap in the curve
        return [np.nan if h[key] is None else scale * h[key] for h in history]

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, series("train_loss"), "o-", ms=3, label="train loss")
    if "test_loss" in history[0]:
        ax1.plot(epochs, series("test_loss"), "o-", ms=3, label="test loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot(epochs, series("train_accuracy", 100), "o-", ms=3, label="train")
    ax2.plot(epochs, series("test_accuracy", 100), "o-", ms=3, label="test")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy (%)")
    ax2.legend()
    fig.suptitle(f"{summary['recipe']}: test accuracy {summary['test_accuracy']:.2%}")
    fig.tight_layout()
    path = os.path.join(out_dir, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
