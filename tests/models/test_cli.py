"""The training loop and the command line: resume, checkpoints, metrics, errors (fast: tiny models, few samples)."""
import json
import os

import numpy as np
import pytest

import minitensor as mt
from minitensor import cli
from minitensor.models.recipes import VitRecipe
from minitensor.models.vit import ViT, vit_tiny
from minitensor.training import CheckpointError, fit


class TinyVit(VitRecipe):
    """The ViT recipe on 192 training and 100 test images with a 1-block, 16-wide model."""

    defaults = dict(VitRecipe.defaults, epochs=3, batch_size=64)

    def load_data(self):
        super().load_data()
        self.y_train, self._windows = self.y_train[:192], self._windows[:192]
        self.x_test, self.y_test = self.x_test[:100], self.y_test[:100]

    def build_model(self, config):
        return ViT(**config) if config else vit_tiny(dim=16, depth=1, heads=2, mlp_dim=32)


def _state(recipe):
    return {k: v.numpy().copy() for k, v in recipe.model.state_dict().items()}


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    straight = TinyVit(seed=3)
    fit(straight, tmp_path / "a", straight.epochs, seed=3, progress=False, log=lambda *a: None)
    interrupted = TinyVit(seed=3)
    fit(interrupted, tmp_path / "b", 1, seed=3, progress=False, log=lambda *a: None)  # stops after epoch 1 of 3
    resumed = TinyVit(seed=3)
    summary = fit(resumed, tmp_path / "b", resumed.epochs, seed=3, resume=True, progress=False, log=lambda *a: None)
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    history = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert summary["test_accuracy"] == json.loads((tmp_path / "a" / "metrics.json").read_text())["summary"][
        "test_accuracy"]


def test_fit_writes_checkpoint_metrics_and_curves(tmp_path):
    recipe = TinyVit(epochs=2)
    summary = fit(recipe, tmp_path, 2, progress=False, log=lambda *a: None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert 0.0 <= metrics["summary"]["test_accuracy"] <= 1.0
    assert metrics["summary"]["test_accuracy"] == summary["test_accuracy"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = mt.load(tmp_path / "checkpoint.safetensors")
    assert state["recipe"] == "vit" and state["epoch"] == 2
    again = TinyVit.from_checkpoint(state)
    assert again.evaluate()["test_accuracy"] == summary["test_accuracy"]


def test_resume_refuses_another_configuration(tmp_path):
    fit(TinyVit(epochs=2), tmp_path, 1, progress=False, log=lambda *a: None)
    with pytest.raises(CheckpointError, match="another configuration"):
        fit(TinyVit(epochs=2, lr=1e-3), tmp_path, 2, resume=True, progress=False, log=lambda *a: None)
    with pytest.raises(CheckpointError, match="does not exist"):
        fit(TinyVit(epochs=2), tmp_path / "empty", 2, resume=True, progress=False, log=lambda *a: None)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    recipe = TinyVit(epochs=2)
    fit(recipe, tmp_path, 1, progress=False, log=lambda *a: None)
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    import minitensor.utils.checkpoint as checkpoint

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full_disk)
    with pytest.raises(OSError):
        fit(TinyVit(epochs=2), tmp_path, 2, resume=True, progress=False, log=lambda *a: None)
    monkeypatch.undo()
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before
    assert mt.load(tmp_path / "checkpoint.safetensors")["epoch"] == 1


def _run(capsys, *argv):
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["train", "resnet"], "invalid choice: 'resnet'"),
    (["train", "vit", "--epochs", "0"], "expected a positive int, got '0'"),
    (["train", "vit", "--lr", "fast"], "expected a positive finite float, got 'fast'"),
    (["train", "vit", "--batch-size", "-3"], "expected a positive int, got '-3'"),
    (["eval", "vit", "--checkpoint", "/nonexistent/ckpt.safetensors"], "does not exist"),
    (["translate"], "the following arguments are required: text"),
    (["predict"], "one of the arguments image --index is required"),
])
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_mismatched_or_broken_checkpoints_give_one_line_and_exit_2(capsys, tmp_path):
    fit(TinyVit(epochs=1), tmp_path, 1, progress=False, log=lambda *a: None)
    ckpt = str(tmp_path / "checkpoint.safetensors")
    code, _, err = _run(capsys, "translate", "hai mươi mốt", "--checkpoint", ckpt)
    assert code == 2 and "is a 'vit' checkpoint, not 'seq2seq'" in err and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    code, _, err = _run(capsys, "eval", "vit", "--checkpoint", str(broken))
    assert code == 2 and "cannot be read" in err and len(err.strip().splitlines()) == 1
    weights = tmp_path / "weights.safetensors"
    mt.save({"fc.weight": mt.zeros(2, 2)}, weights)
    code, _, err = _run(capsys, "eval", "vit", "--checkpoint", str(weights))
    assert code == 2 and "not a minitensor training checkpoint" in err
    code, _, err = _run(capsys, "predict", "--index", "5000", "--checkpoint", ckpt)
    assert code == 2 and "--index must be in [0, 1000)" in err


def test_eval_predict_and_explain_from_a_checkpoint(capsys, tmp_path):
    summary = fit(TinyVit(epochs=1), tmp_path, 1, progress=False, log=lambda *a: None)
    ckpt = str(tmp_path / "checkpoint.safetensors")
    code, out, _ = _run(capsys, "predict", "--index", "7", "--checkpoint", ckpt)
    assert code == 0 and out.startswith("predicted ") and "(true label " in out
    code, out, _ = _run(capsys, "explain", "vit", "--checkpoint", ckpt, "--index", "2", "--out", str(tmp_path / "x"))
    assert code == 0
    for stage in ["1x28x28", "16x1x7x7", "16x16", "17x16", "2x17x8", "2x17x17", "17x32", "prediction:"]:
        assert stage in out, stage
    assert (tmp_path / "x" / "patches_2.png").exists() and (tmp_path / "x" / "cls_attention_2.png").exists()
    assert summary["test_accuracy"] >= 0.0


def test_explain_default_model_prints_the_issue_shapes(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/vit checkpoint here: an untrained vit_tiny
    code, out, _ = _run(capsys, "explain", "vit", "--index", "0", "--out", str(tmp_path / "x"))
    assert code == 0 and "untrained model" in out
    for stage in ["16x1x7x7", "16x64", "17x64", "4x17x16", "4x17x17", "17x128", "logits"]:
        assert stage in out, stage
    assert os.path.exists(tmp_path / "x" / "cls_attention_0.png")


def test_predict_reads_an_image_file(capsys, tmp_path):
    from PIL import Image

    fit(TinyVit(epochs=1), tmp_path, 1, progress=False, log=lambda *a: None)
    digit = TinyVit(epochs=1).x_test[0, 0] * 0.3081 + 0.1307  # back to [0, 1]
    Image.fromarray((255 * (1 - digit)).clip(0, 255).astype(np.uint8)).save(tmp_path / "digit.png")  # dark on light
    code, out, _ = _run(capsys, "predict", str(tmp_path / "digit.png"), "--checkpoint",
                        str(tmp_path / "checkpoint.safetensors"))
    assert code == 0 and out.startswith("predicted ")
    (tmp_path / "not_an_image.png").write_text("hello")
    code, _, err = _run(capsys, "predict", str(tmp_path / "not_an_image.png"), "--checkpoint",
                        str(tmp_path / "checkpoint.safetensors"))
    assert code == 2 and "cannot read image" in err


def test_translate_and_classify_from_checkpoints(capsys, tmp_path):
    from minitensor.models.recipes import Seq2SeqRecipe, TextClsRecipe

    class TinySeq2Seq(Seq2SeqRecipe):
        defaults = dict(Seq2SeqRecipe.defaults, epochs=1, num_train=256, num_test=32)

    class TinyTextCls(TextClsRecipe):
        defaults = dict(TextClsRecipe.defaults, epochs=1, num_train=40, num_test=10)

    fit(TinySeq2Seq(), tmp_path / "s2s", 1, progress=False, log=lambda *a: None)
    code, out, _ = _run(capsys, "translate", "hai mươi mốt", "một trăm", "--checkpoint",
                        str(tmp_path / "s2s" / "checkpoint.safetensors"))
    assert code == 0 and out.startswith("hai mươi mốt -> ") and len(out.strip().splitlines()) == 2
    code, out, _ = _run(capsys, "translate", "hai mươi mốt", "--beam-size", "3", "--checkpoint",
                        str(tmp_path / "s2s" / "checkpoint.safetensors"))
    assert code == 0 and len(out.strip().splitlines()) == 1
    fit(TinyTextCls(), tmp_path / "txt", 1, progress=False, log=lambda *a: None)
    code, out, _ = _run(capsys, "classify", "vingt et un", "--checkpoint", str(tmp_path / "txt" / "checkpoint.safetensors"))
    names = ("en", "fr", "de", "es", "it", "pt", "vi", "id", "nl", "pl")
    assert code == 0 and out.split()[0] in names and out.strip().endswith("%)")
