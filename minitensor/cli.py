"""The command line: `python -m minitensor <command>` (also installed as `minitensor`).

Exit codes: 0 success; 2 bad input (arguments, environment variables, files, checkpoints, images, text), reported
as one line on stderr; 1 a training run that diverged (a NaN or infinite loss), also one line. Anything else is
a bug and keeps its traceback.
"""
import argparse
import io
import math
import os
import sys

from .backend import _available_cores  # the cores in this process's affinity mask (the library's cap too)


def _demo(args):
    """A few autograd steps: fit y = 3x - 1 with a weight and a bias, printing the loss as it falls."""
    import minitensor as mt

    mt.manual_seed(args.seed)
    x = mt.linspace(-1, 1, 32).reshape(32, 1)
    y = 3 * x - 1
    w = mt.zeros(1, 1, requires_grad=True)
    b = mt.zeros(1, requires_grad=True)
    for step in range(args.steps):
        loss = ((x @ w + b - y) ** 2).mean()
        w.grad = b.grad = None
        loss.backward()
        with mt.no_grad():
            w -= 0.5 * w.grad
            b -= 0.5 * b.grad
        if step % max(args.steps // 5, 1) == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.6f}  w {w.item():+.4f}  b {b.item():+.4f}")
    print(f"learned y = {w.item():.3f} x {b.item():+.3f}  (target: y = 3 x - 1)")
    info = mt.backend_info()
    print(f"backend {info['backend']} ({info['isa']}, {info['threads']} threads), engine {info['engine']}")
    return 0


def _info(args):
    import minitensor as mt

    for key, value in mt.backend_info().items():
        print(f"{key:10s} {value}")
    return 0


class UsageError(Exception):
    """Bad arguments or a bad checkpoint: reported as one line, exit code 2."""


EXIT_DIVERGED, EXIT_BAD_INPUT = 1, 2
EPILOG = ("exit codes: 0 success; 2 bad input (arguments, environment, files, checkpoints, images, text), "
          "reported in one line on stderr; 1 a training run that diverged (NaN or infinite loss)")


def _positive(kind):
    """An argparse type: a positive int, or a positive finite float (nan and inf are not learning rates)."""
    what = "int" if kind is int else "finite float"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


def _beam_size(text):
    """1..MAX_BEAM: the live hypotheses grow up to the beam size, each decoded step by step, so a huge beam runs
    for hours (and a beam wider than a few dozen finds nothing a narrower one does not)."""
    value = _positive(int)(text)
    if value > MAX_BEAM:
        raise argparse.ArgumentTypeError(f"expected an int in [1, {MAX_BEAM}], got {text!r}")
    return value


MAX_BEAM = 64


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int of at least 0, got {text!r}")
    return value


def _set_threads(args):
    """--threads, capped at the cores this process may use (more only slows the kernels down, and an absurd count
    makes the OpenMP runtime abort the process), with one warning line when capped."""
    import minitensor as mt

    cores = _available_cores()
    if args.threads > cores:
        print(f"minitensor {args.command}: warning: --threads {args.threads} is more than the {cores} core(s) this "
              f"process may use; using {cores}", file=sys.stderr)
    mt.set_num_threads(min(args.threads, cores))


def _recipes():
    from minitensor.models.recipes import RECIPES

    return RECIPES


def _load(model, checkpoint, data=True):
    """A trained recipe from a checkpoint (default: runs/MODEL/checkpoint.safetensors)."""
    from .training import CheckpointError, load_checkpoint

    path = checkpoint or os.path.join("runs", model, "checkpoint.safetensors")
    try:
        state = load_checkpoint(path, model)
    except CheckpointError as e:
        hint = "" if checkpoint or os.path.exists(path) else f" (train one with: python -m minitensor train {model})"
        raise UsageError(f"{e}{hint}") from None
    try:
        return _recipes()[model].from_checkpoint(state, data=data)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:  # load_state_dict's mismatches included
        raise UsageError(f"checkpoint {path} does not match the {model} model: {_reason(e)}") from None


def _reason(e):
    from .training import _reason

    return _reason(e)


def _out_dir(path):
    """--out must be a directory (or not exist yet): a file there would fail only after minutes of work."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out {path} is a file, not a directory")
    return path


def _train(args):
    import time

    import minitensor as mt

    from .training import CheckpointError, fit

    rank, world = _join(args) if args.distributed else (0, 1)
    if args.threads:
        _set_threads(args)
    recipe_cls = _recipes()[args.model]
    extra = {}
    if args.model == "seq2seq" and args.no_attention:
        extra["attention"] = False
    out = _out_dir(args.out or os.path.join("runs", args.model))
    t0 = time.perf_counter()
    try:
        recipe = recipe_cls(args.epochs, args.batch_size, args.lr, args.seed, **extra)
        if rank == 0:
            threads = f"{mt.get_num_threads()} thread{'s' if mt.get_num_threads() > 1 else ''}"
            where = f"{world} processes x {threads}" if args.distributed else threads
            print(f"training {args.model}: {sum(p.numel() for p in recipe.model.parameters()):,} parameters, "
                  f"{recipe.epochs} epochs, batch size {recipe.batch_size}, lr {recipe.lr}, seed {args.seed}, "
                  f"{where}, backend {mt.backend_info()['backend']}", flush=True)
        summary = fit(recipe, out, recipe.epochs, seed=args.seed, resume=args.resume, progress=not args.quiet,
                      distributed=args.distributed)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    if rank != 0:
        return 0
    wall = time.perf_counter() - t0
    summary["wall_seconds"] = wall
    print(f"{args.model}: test accuracy {summary['test_accuracy']:.2%} after {summary['epochs']} epochs; "
          f"training {summary['train_seconds']:.1f}s, wall {wall:.1f}s; checkpoint {summary['checkpoint']}; "
          f"metrics {os.path.join(out, 'metrics.json')}")
    return 0


def _join(args):
    """Join the MPI job (`mpiexec -n N python -m minitensor train MODEL --distributed`); without --threads, the
    cores are shared among the ranks on this machine."""
    import minitensor as mt
    from minitensor import distributed as dist

    try:
        dist.init()
    except ImportError as e:
        raise UsageError(str(e)) from None
    if not args.threads:
        mt.set_num_threads(max(1, (os.cpu_count() or 1) // dist.comm._local_size()))
    return dist.rank(), dist.world_size()


def _eval(args):
    recipe = _load(args.model, args.checkpoint)
    metrics = recipe.evaluate()
    print(f"{args.model}: test accuracy {metrics['test_accuracy']:.2%}")
    return 0


def _translate(args):
    recipe = _load("seq2seq", args.checkpoint, data=False)
    for text, out in zip(args.text, recipe.translate(args.text, beam_size=args.beam_size)):
        print(out if len(args.text) == 1 else f"{text} -> {out}")
    return 0


def _classify(args):
    recipe = _load("textcls", args.checkpoint, data=False)
    names, probs = recipe.classify(args.text)
    for text, name, p in zip(args.text, names, probs):
        print(f"{name} ({p.max():.1%})" if len(args.text) == 1 else f"{text} -> {name} ({p.max():.1%})")
    return 0


MAX_IMAGE_PIXELS = 4096 * 4096  # a digit needs far fewer; a larger image is decoded only to be shrunk to 28 x 28


def _read_image(path):
    """A PNG/JPEG digit -> (1, 28, 28) float in [0, 1], white digit on black like MNIST (inverted if the
    background is light)."""
    import struct
    import warnings
    import zlib

    import numpy as np

    try:
        from PIL import Image
    except ImportError:
        raise UsageError("predict IMAGE needs Pillow (pip install pillow)") from None
    if os.path.isdir(path):
        raise UsageError(f"cannot read image {path}: it is a directory")
    # What Pillow raises on a file that is not a readable image: OSError (UnidentifiedImageError, truncated data),
    # and from its decoders SyntaxError, EOFError, struct.error, zlib.error and ValueError; DecompressionBombError
    # (not an OSError) for a huge image, and its warning, made an error here, for a merely large one.
    unreadable = (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error, Image.DecompressionBombError,
                  Image.DecompressionBombWarning)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise UsageError(f"cannot read image {path}: {width}x{height} pixels is larger than the "
                                     f"{MAX_IMAGE_PIXELS:,} pixels a digit image may have")
                img = img.convert("L").resize((28, 28))
    except unreadable as e:
        raise UsageError(f"cannot read image {path}: {_reason(e) or type(e).__name__}") from None
    x = np.asarray(img, dtype=np.float32) / 255.0
    if x.mean() > 0.5:
        x = 1.0 - x
    return x[None]


def _predict(args):
    import numpy as np

    recipe = _load("vit", args.checkpoint, data=args.index is not None)
    if args.index is not None:
        n = len(recipe.y_test)
        if not 0 <= args.index < n:
            raise UsageError(f"--index must be in [0, {n}) (the bundled MNIST test images), got {args.index}")
        images = recipe.x_test[args.index:args.index + 1] * 0.3081 + 0.1307
        label = f" (true label {recipe.y_test[args.index]})"
    else:
        images, label = _read_image(args.image)[None], ""
    pred, probs = recipe.predict(images)
    top = np.argsort(-probs[0])[:3]
    print(f"predicted {pred[0]}{label}; " + ", ".join(f"{k}: {probs[0][k]:.1%}" for k in top))
    return 0


def _explain(args):
    from .explain import explain_vit

    _out_dir(args.out)
    return explain_vit(args, _load, UsageError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line (argparse also prints the whole usage), exit code 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(prog="minitensor", description="minitensor: deep learning on the CPU", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a few autograd steps (fit a line)")
    demo.add_argument("--steps", type=_positive(int), default=50)
    demo.add_argument("--seed", type=_non_negative_int, default=0)
    demo.set_defaults(run=_demo)
    info = sub.add_parser("info", help="show the backend, ISA path, threads and engine")
    info.set_defaults(run=_info)
    models = ["vit", "seq2seq", "textcls"]

    train = sub.add_parser("train", help="train a model of the zoo: vit, seq2seq or textcls", epilog=EPILOG)
    train.add_argument("model", choices=models)
    train.add_argument("--epochs", type=_positive(int), help="number of epochs (default: the recipe's)")
    train.add_argument("--batch-size", type=_positive(int), help="batch size (default: the recipe's)")
    train.add_argument("--lr", type=_positive(float), help="peak learning rate (default: the recipe's)")
    train.add_argument("--seed", type=_non_negative_int, default=0)
    train.add_argument("--threads", type=_positive(int),
                       help="kernel threads (default: all cores; more than the cores available is capped there)")
    train.add_argument("--out", help="output directory (default: runs/MODEL)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    train.add_argument("--no-attention", action="store_true", help="seq2seq only: train without attention")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--distributed", action="store_true",
                       help="under mpiexec -n N: split each batch across the N processes (rank 0 logs and saves)")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="evaluate a trained checkpoint on the test split")
    ev.add_argument("model", choices=models)
    ev.add_argument("--checkpoint", help="default: runs/MODEL/checkpoint.safetensors")
    ev.set_defaults(run=_eval)

    tr = sub.add_parser("translate", help="Vietnamese number words -> English (seq2seq)")
    tr.add_argument("text", nargs="+")
    tr.add_argument("--checkpoint")
    tr.add_argument("--beam-size", type=_beam_size, default=1, help=f"1 (greedy) to {MAX_BEAM}")
    tr.set_defaults(run=_translate)

    cl = sub.add_parser("classify", help="the language of a number written in words (textcls)")
    cl.add_argument("text", nargs="+")
    cl.add_argument("--checkpoint")
    cl.set_defaults(run=_classify)

    pr = sub.add_parser("predict", help="the digit in an image, or in bundled test image --index N (vit)")
    what = pr.add_mutually_exclusive_group(required=True)
    what.add_argument("image", nargs="?")
    what.add_argument("--index", type=int)
    pr.add_argument("--checkpoint")
    pr.set_defaults(run=_predict)

    ex = sub.add_parser("explain", help="walk one image through the ViT forward pass, stage by stage")
    ex.add_argument("model", choices=["vit"])
    ex.add_argument("--checkpoint", help="a trained ViT (default: runs/vit/checkpoint.safetensors if it exists, "
                                         "else an untrained model)")
    ex.add_argument("--index", type=int, default=0, help="which bundled MNIST test image")
    ex.add_argument("--out", default="runs/explain", help="where the PNGs go")
    ex.set_defaults(run=_explain)
    return parser


def _environment_error():
    """The message of an invalid MINITENSOR_* variable, recorded when minitensor was imported (None if valid)."""
    from . import backend

    return backend.environment_error()


# What bad input raises, by the project's rules: ValueError for a wrong value (the library's checks, a checkpoint
# that does not fit), OSError for a file (missing, a directory, unwritable, a full disk), UsageError and
# CheckpointError (a ValueError) for what the CLI itself checks. KeyError, TypeError, IndexError, RuntimeError or
# AssertionError escaping to here would be a bug in minitensor, so they keep their traceback.
BAD_INPUT = (UsageError, ValueError, OSError)


def _one_line(e):
    """An exception as one line: a multi-line message (load_state_dict lists its mismatches) is joined."""
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text or type(e).__name__


def _tolerant_stdout():
    """Print what the terminal cannot encode (Vietnamese words on an ASCII stdout) as '?' instead of crashing.
    Returns the previous error handler, to restore."""
    stream = sys.stdout
    if not isinstance(stream, io.TextIOWrapper) or stream.errors != "strict":
        return None
    stream.reconfigure(errors="replace")
    return "strict"


def main(argv=None):
    error = _environment_error()
    if error is not None:
        print(f"minitensor: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from .training import TrainingDiverged

    restore = _tolerant_stdout()
    try:
        return args.run(args)
    except BrokenPipeError:  # `minitensor ... | head`: the reader has gone, nothing more to say to anyone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 1  # as Python's documentation suggests for a closed pipe (neither bad input nor success)
    except TrainingDiverged as e:
        code, message = EXIT_DIVERGED, _one_line(e)
    except BAD_INPUT as e:
        code, message = EXIT_BAD_INPUT, _one_line(e)
    finally:
        if restore is not None and isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors=restore)
    print(f"minitensor {args.command}: error: {message}", file=sys.stderr)
    _end_job_on_error(code)
    return code


def _end_job_on_error(code):
    """In a distributed run, an error on one rank ends the job: the others would wait for it in vain."""
    distributed = sys.modules.get("minitensor.distributed")
    if distributed is not None and distributed.is_initialized() and distributed.world_size() > 1:
        sys.stderr.flush()
        distributed.comm._abort(code)
