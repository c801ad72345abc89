"""The command line's error contract: bad input (arguments, environment, files, checkpoints, images, text) ends
with exit code 2 and exactly one line on stderr naming the problem, never a traceback; a diverged training run
ends with exit code 1 and one line; an unexpected exception (a bug) keeps its traceback.

The table runs each case in a subprocess (`python -m minitensor ...`), as a user would. Checkpoints are tiny and
crafted here with mt.save, once per module: nothing is trained.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minitensor as mt
from minitensor import cli
from minitensor.data.vocab import Vocab, char_tokenize
from minitensor.models.recipes import VitRecipe
from minitensor.models.seq2seq import Seq2Seq
from minitensor.models.transformer import TransformerClassifier
from minitensor.training import TrainingDiverged, write_metrics

PHRASES = ["hai mươi mốt", "một trăm", "ba"]


def _vit_checkpoint():
    """What `train vit --epochs 2` saves after epoch 1 (the default model, untrained), without training: the
    scheduler is stepped through one epoch so that --resume accepts it."""
    recipe = VitRecipe(epochs=2, seed=0)
    for p in recipe.model.parameters():  # one optimizer step on zero gradients: the optimizer has a state
        p.grad = mt.zeros_like(p)
    recipe.optimizer.step()
    for _ in range(-(-recipe.num_train() // recipe.batch_size)):  # the steps of one epoch
        recipe.scheduler.step()
    history = [dict(epoch=1, train_loss=2.0, train_accuracy=0.1, train_seconds=1.0, test_accuracy=0.1)]
    return dict(recipe="vit", config=recipe.config(), epoch=1, seed=0, history=history, **recipe.state())


def _seq2seq_checkpoint():
    src, tgt = Vocab.build(PHRASES), Vocab.build(["twenty-one", "one hundred", "three"])
    config = dict(src_vocab_size=len(src), tgt_vocab_size=len(tgt), emb_dim=8, hidden_size=8, num_layers=1,
                  attention=True, pad_id=tgt.pad_id, start_id=tgt.start_id, end_id=tgt.end_id, dropout=0.0)
    mt.manual_seed(0)
    return dict(recipe="seq2seq", config=dict(model=config, epochs=1, batch_size=8, lr=1e-3, seed=0, attention=True),
                epoch=1, seed=0, history=[], model=Seq2Seq(**config).state_dict(),
                extra=dict(src_vocab=src.state_dict(), tgt_vocab=tgt.state_dict()))


def _textcls_checkpoint():
    vocab = Vocab.build(["vingt et un", "twenty-one", "ba"], tokenizer=char_tokenize)
    config = dict(vocab_size=len(vocab), num_classes=3, dim=8, depth=1, heads=2, mlp_dim=8, dropout=0.0, max_len=32,
                  pad_id=vocab.pad_id, pooling="mean", norm_first=False)
    mt.manual_seed(0)
    return dict(recipe="textcls", config=dict(model=config, epochs=1, batch_size=8, lr=1e-3, seed=0), epoch=1,
                seed=0, history=[], model=TransformerClassifier(**config).state_dict(),
                extra=dict(vocab=vocab.state_dict(), classes=["en", "fr", "vi"]))


def _without(state, key):
    return {k: v for k, v in state.items() if k != key}


def _replace(state, key, **changes):
    return dict(state, **{key: dict(state[key], **changes)})


def _model_config(state, **changes):
    return _replace(state, "config", model=dict(state["config"]["model"], **changes))


def _png(width, height, data=b"\0"):
    """A grey PNG whose header claims width x height (the pixel data need not be there)."""
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A directory of crafted checkpoints (NAME.safetensors, and resume_NAME/checkpoint.safetensors for --resume)
    and images."""
    d = tmp_path_factory.mktemp("cli_errors")
    vit, s2s, txt = _vit_checkpoint(), _seq2seq_checkpoint(), _textcls_checkpoint()
    nan_weight = dict(vit["model"], **{"head.weight": vit["model"]["head.weight"] * float("nan")})
    optimizer = vit["optimizer"]
    first = next(iter(optimizer["state"]))
    exp_avg = optimizer["state"][first]["exp_avg"]
    moments = dict(optimizer["state"])
    moments[first] = dict(moments[first], exp_avg=mt.full(tuple(exp_avg.shape), float("inf")))
    nan_moment = dict(optimizer, state=moments)
    checkpoints = {
        "vit": vit, "s2s": s2s, "txt": txt,
        "no_model": _without(vit, "model"),
        "no_config": _without(vit, "config"),
        "no_epoch": _without(vit, "epoch"),
        "no_history": _without(vit, "history"),
        "no_optimizer": _without(vit, "optimizer"),
        "no_scheduler": _without(vit, "scheduler"),
        "bad_epoch": dict(vit, epoch="one"),
        "short_history": dict(vit, history=[]),
        "wrong_shape": _replace(vit, "model", **{"head.weight": mt.zeros(3, 3)}),
        "missing_key": dict(vit, model=_without(vit["model"], "head.bias")),
        "nan_weights": dict(vit, model=nan_weight),
        "nan_optimizer": dict(vit, optimizer=nan_moment),
        "huge_dim": _model_config(vit, dim=2**20),
        "huge_model": _model_config(vit, dim=4096, depth=128, mlp_dim=65536),
        "float_dim": _model_config(vit, dim=64.5),
        "bad_lr": _replace(vit, "config", lr=float("inf")),
        "empty_scheduler": dict(vit, scheduler={}),
        "other_schedule": _replace(vit, "scheduler", total_steps=999),
        "restarted_schedule": _replace(vit, "scheduler", last_epoch=0, _step_count=1),
        "bad_optimizer": dict(vit, optimizer=dict(state={}, param_groups=[])),
        "s2s_no_extra": _without(s2s, "extra"),
        "s2s_no_config": _without(s2s, "config"),
        "s2s_huge_hidden": _model_config(s2s, hidden_size=2**20),
        "txt_missing_key": dict(txt, model=_without(txt["model"], "head.weight")),
        "s2s_big_vocab": _model_config(s2s, src_vocab_size=3),
        "txt_huge_vocab": _model_config(txt, vocab_size=10**6, dim=4096),
    }
    for name, state in checkpoints.items():
        mt.save(state, d / f"{name}.safetensors")
        os.makedirs(d / f"resume_{name}")
        mt.save(state, d / f"resume_{name}" / "checkpoint.safetensors")
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(d / "digit.png")
    good = (d / "digit.png").read_bytes()
    (d / "truncated.png").write_bytes(good[:len(good) // 2])
    (d / "bomb.png").write_bytes(_png(100_000, 100_000))  # 10^10 pixels: Pillow's DecompressionBombError
    (d / "large.png").write_bytes(_png(10_000, 10_000))  # Pillow only warns, then would decode 100 MB
    (d / "no_pixels.png").write_bytes(_png(1000, 1000))  # a valid header, then too little data
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not an image")
    (d / "a_file").write_text("a file, not a directory")
    os.makedirs(d / "a_dir.png")
    return d


def _run(argv, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MINITENSOR_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "minitensor", *argv], env=full_env, cwd=cwd, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=240)


def _assert_one_line(result, code, message):
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
    assert "error: " in lines[0]


C = "--checkpoint"
# (argv with {d} for the files' directory, extra environment, what the one stderr line must say)
TABLE = [
    # 1. empty or whitespace-only text
    (["classify", "", C, "{d}/txt.safetensors"], {}, "text 0 is empty or only whitespace"),
    (["classify", "one", "", C, "{d}/txt.safetensors"], {}, "text 1 is empty or only whitespace"),
    (["classify", "  \t ", C, "{d}/txt.safetensors"], {}, "text 0 is empty or only whitespace"),
    (["translate", "", C, "{d}/s2s.safetensors"], {}, "text 0 is empty or only whitespace"),
    (["translate", "   ", C, "{d}/s2s.safetensors"], {}, "text 0 is empty or only whitespace"),
    (["translate", "ba", "   ", "--beam-size", "2", C, "{d}/s2s.safetensors"], {}, "text 1 is empty"),
    # 2. --out that is a file
    (["train", "vit", "--out", "{d}/a_file"], {}, "--out {d}/a_file is a file, not a directory"),
    (["explain", "vit", C, "{d}/vit.safetensors", "--out", "{d}/a_file"], {}, "is a file, not a directory"),
    # 2. images predict cannot read
    (["predict", "{d}/bomb.png", C, "{d}/vit.safetensors"], {}, "could be decompression bomb"),
    (["predict", "{d}/large.png", C, "{d}/vit.safetensors"], {}, "could be decompression bomb"),
    (["predict", "{d}/no_pixels.png", C, "{d}/vit.safetensors"], {}, "cannot read image {d}/no_pixels.png"),
    (["predict", "{d}/truncated.png", C, "{d}/vit.safetensors"], {}, "cannot read image {d}/truncated.png"),
    (["predict", "{d}/empty.png", C, "{d}/vit.safetensors"], {}, "cannot read image {d}/empty.png"),
    (["predict", "{d}/text.png", C, "{d}/vit.safetensors"], {}, "cannot identify image file"),
    (["predict", "{d}/a_dir.png", C, "{d}/vit.safetensors"], {}, "it is a directory"),
    (["predict", "{d}/missing.png", C, "{d}/vit.safetensors"], {}, "No such file or directory"),
    # 2. checkpoints that lack an entry, or whose entries do not fit the model
    (["eval", "vit", C, "{d}/no_model.safetensors"], {}, "not a minitensor training checkpoint"),
    (["eval", "vit", C, "{d}/no_config.safetensors"], {}, "config must be a dict with entries model"),
    (["predict", "{d}/digit.png", C, "{d}/wrong_shape.safetensors"], {}, "size mismatch for head.weight"),
    (["predict", "{d}/digit.png", C, "{d}/missing_key.safetensors"], {}, 'Missing key(s) in state_dict: "head.bias"'),
    (["explain", "vit", C, "{d}/wrong_shape.safetensors", "--out", "{d}/x"], {}, "size mismatch for head.weight"),
    (["eval", "vit", C, "{d}/missing_key.safetensors"], {}, 'Missing key(s) in state_dict: "head.bias"'),
    (["explain", "vit", C, "{d}/no_config.safetensors", "--out", "{d}/x"], {}, "config must be a dict"),
    (["translate", "ba", C, "{d}/s2s_no_config.safetensors"], {}, "config must be a dict with entries model"),
    (["translate", "ba", C, "{d}/s2s_no_extra.safetensors"], {}, "extra must be a dict with entries src_vocab"),
    (["classify", "ba", C, "{d}/txt_missing_key.safetensors"], {}, 'Missing key(s) in state_dict: "head.weight"'),
    (["translate", "ba", C, "{d}/s2s_big_vocab.safetensors"], {}, "src_vocab_size is 3, but its vocabulary gives"),
    (["classify", "ba", C, "{d}/wrong_shape.safetensors"], {}, "is a 'vit' checkpoint, not 'textcls'"),
    (["eval", "vit", C, "{d}"], {}, "cannot be read"),
    # 2. crafted configs: checked before anything is allocated
    (["predict", "{d}/digit.png", C, "{d}/huge_dim.safetensors"], {}, "dim must be an int in [1, 8192], got 1048576"),
    (["predict", "{d}/digit.png", C, "{d}/huge_model.safetensors"], {}, "more than the 100,000,000"),
    (["predict", "{d}/digit.png", C, "{d}/float_dim.safetensors"], {}, "dim must be an int"),
    (["predict", "{d}/digit.png", C, "{d}/bad_lr.safetensors"], {}, "lr a finite positive number"),
    (["classify", "ba", C, "{d}/txt_huge_vocab.safetensors"], {}, "more than the 100,000,000"),
    (["translate", "ba", C, "{d}/s2s_huge_hidden.safetensors"], {}, "hidden_size must be an int in [1, 8192]"),
    # 2. --resume from checkpoints that lack an entry
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_no_config"], {}, "it has no config entry"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_no_epoch"], {}, "it has no epoch entry"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_no_history"], {}, "it has no history entry"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_no_optimizer"], {},
     "it has no optimizer entry"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_no_scheduler"], {},
     "it has no scheduler entry"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_no_model"], {},
     "not a minitensor training checkpoint"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_bad_epoch"], {},
     "epoch must be a positive int"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_short_history"], {},
     "history must hold one record per epoch"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_wrong_shape"], {},
     "size mismatch for head.weight"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_bad_optimizer"], {},
     "cannot be resumed: loaded state dict has 0 parameter groups"),
    (["train", "vit", "--epochs", "3", "--resume", "--out", "{d}/resume_vit"], {},
     "another configuration: epochs is 2 (this run: 3)"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/missing"], {}, "does not exist"),
    # 3. thread counts
    (["train", "vit", "--threads", "0"], {}, "argument --threads: expected a positive int, got '0'"),
    (["train", "vit", "--threads", "-1"], {}, "argument --threads: expected a positive int, got '-1'"),
    (["train", "vit", "--threads", "abc"], {}, "argument --threads: expected a positive int, got 'abc'"),
    # 4. hyper-parameters out of range
    (["train", "vit", "--lr", "inf"], {}, "argument --lr: expected a positive finite float, got 'inf'"),
    (["train", "vit", "--lr", "nan"], {}, "argument --lr: expected a positive finite float, got 'nan'"),
    (["train", "vit", "--lr", "-0.1"], {}, "argument --lr: expected a positive finite float, got '-0.1'"),
    (["train", "vit", "--lr", "0"], {}, "argument --lr: expected a positive finite float, got '0'"),
    (["train", "vit", "--epochs", "0"], {}, "argument --epochs: expected a positive int, got '0'"),
    (["train", "vit", "--epochs", "inf"], {}, "argument --epochs: expected a positive int, got 'inf'"),
    (["train", "vit", "--batch-size", "-8"], {}, "argument --batch-size: expected a positive int, got '-8'"),
    (["train", "vit", "--batch-size", "nan"], {}, "argument --batch-size: expected a positive int, got 'nan'"),
    (["train", "vit", "--seed", "-1"], {}, "argument --seed: expected an int of at least 0, got '-1'"),
    (["translate", "ba", "--beam-size", "1000000000"], {}, "argument --beam-size: expected an int in [1, 64]"),
    # 5. --resume from NaN weights or a schedule this run cannot continue
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_nan_weights"], {},
     "NaN or infinite values in model weight 'head.weight'"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_nan_optimizer"], {},
     "NaN or infinite values in optimizer state"),
    (["eval", "vit", C, "{d}/nan_weights.safetensors"], {}, "NaN or infinite values in model weight 'head.weight'"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_empty_scheduler"], {},
     "the saved scheduler state is not a OneCycleLR's"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_other_schedule"], {},
     "total_steps is 999, this run's is 64"),
    (["train", "vit", "--epochs", "2", "--resume", "--out", "{d}/resume_restarted_schedule"], {},
     "the saved scheduler is at step 0, but 1 epochs of 32 steps end at step 32"),
]


@pytest.mark.parametrize("argv, env, message", TABLE, ids=[" ".join(row[0])[:70] for row in TABLE])
def test_bad_input_gives_one_line_and_exit_2(files, argv, env, message):
    d = str(files)
    result = _run([a.format(d=d) for a in argv], env)
    _assert_one_line(result, 2, message.format(d=d))


ENVIRONMENT = [
    ({"MINITENSOR_BACKEND": "cuda"}, "MINITENSOR_BACKEND"),
    ({"MINITENSOR_ISA": "avx9000"}, "MINITENSOR_ISA"),
    ({"MINITENSOR_MALLOC": "never"}, "MINITENSOR_MALLOC"),
]


@pytest.mark.parametrize("env, message", ENVIRONMENT, ids=[next(iter(e)) for e, _ in ENVIRONMENT])
def test_a_bad_environment_variable_gives_one_line_and_exit_2(files, env, message):
    for argv in (["info"], ["predict", "--index", "0", "--checkpoint", str(files / "vit.safetensors")]):
        _assert_one_line(_run(argv, env), 2, message)


def test_main_reports_the_recorded_environment_error_first(monkeypatch, capsys):
    from minitensor import backend

    message = "MINITENSOR_ISA='avx9000': expected 'scalar', 'avx2' or 'avx512'"
    monkeypatch.setattr(backend, "environment_error", lambda: message)
    assert cli.main(["info"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"minitensor: error: {message}\n"


def test_text_the_terminal_cannot_encode_is_replaced(files):
    result = _run(["translate", "hai mươi mốt", "ba", C, str(files / "s2s.safetensors")],
                  {"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("hai m??i m?t -> ") and lines[1].startswith("ba -> ")


def test_too_many_threads_are_capped_with_one_warning(capsys):
    cores = cli._available_cores()
    before = mt.get_num_threads()
    try:
        cli._set_threads(argparse.Namespace(threads=2**31 - 1, command="train"))
        if mt.backend_info()["compiled"]:  # without the C++ kernels there is one thread, whatever is asked
            assert mt.get_num_threads() == cores
        out, err = capsys.readouterr()
        assert err == (f"minitensor train: warning: --threads 2147483647 is more than the {cores} core(s) this "
                       f"process may use; using {cores}\n")
        cli._set_threads(argparse.Namespace(threads=1, command="train"))
        assert capsys.readouterr().err == ""
    finally:
        mt.set_num_threads(before)


def test_a_huge_thread_count_does_not_kill_the_process(files):
    result = _run(["train", "vit", "--threads", "2147483647", "--epochs", "2", "--resume", "--out",
                   str(files / "missing")])
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert "warning: --threads 2147483647 is more than" in lines[0] and "does not exist" in lines[1]


def test_a_diverging_run_stops_with_one_line_and_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "vit", "--lr", "1e30", "--epochs", "1", "--quiet", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("minitensor train: error: training diverged at epoch 1, step ")
    assert "the loss is nan" in err or "the loss is inf" in err
    assert "try a lower --lr" in err
    assert not (out / "checkpoint.safetensors").exists() and not (out / "metrics.json").exists()


def test_fit_raises_training_diverged_before_saving(tmp_path):
    from minitensor.training import fit

    class Tiny(VitRecipe):
        def load_data(self):
            super().load_data()
            self.y_train, self._windows = self.y_train[:128], self._windows[:128]
            self.x_test, self.y_test = self.x_test[:10], self.y_test[:10]

    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1, step \d+/2: "):
        fit(Tiny(epochs=1, batch_size=64, lr=1e30), tmp_path, 1, progress=False, log=lambda *a: None)
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_metrics_json_is_strict_json(tmp_path):
    history = [dict(epoch=1, train_loss=float("nan"), train_accuracy=0.5, test_accuracy=0.5,
                    test_loss=float("inf"))]
    summary = dict(recipe="vit", test_accuracy=0.5, train_seconds=float("-inf"))
    write_metrics(tmp_path, history, summary)

    def refuse(constant):
        raise AssertionError(f"metrics.json holds {constant}, which is not JSON")

    metrics = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["history"][0]["train_loss"] is None and metrics["history"][0]["test_loss"] is None
    assert metrics["summary"]["train_seconds"] is None and metrics["summary"]["test_accuracy"] == 0.5


@pytest.mark.parametrize("error", [KeyError("x"), TypeError("x"), IndexError("x"), AssertionError("x")])
def test_an_unexpected_exception_keeps_its_traceback(monkeypatch, error):
    def broken(args):
        raise error

    monkeypatch.setattr(cli, "_info", broken)
    with pytest.raises(type(error)):
        cli.main(["info"])
