"""The results the model zoo promises, trained with the CLI's defaults (slow: minutes; `pytest -m "not slow"`
skips them). Wall times are printed, not asserted: speed is measured in benchmarks, not in tests."""
import subprocess
import sys
import time

import numpy as np
import pytest

from minitensor.models.recipes import Seq2SeqRecipe, TextClsRecipe, VitRecipe
from minitensor.training import fit

pytestmark = pytest.mark.slow


def _train(recipe, tmp_path):
    t0 = time.perf_counter()
    summary = fit(recipe, tmp_path, recipe.epochs, seed=0, progress=False, log=lambda *a: None)
    print(f"\n{recipe.name}: test accuracy {summary['test_accuracy']:.2%}, training {summary['train_seconds']:.1f}s, "
          f"wall {time.perf_counter() - t0:.1f}s")
    return summary


def test_vit_reaches_96_percent_on_bundled_mnist(tmp_path):
    assert _train(VitRecipe(), tmp_path)["test_accuracy"] >= 0.96


def test_seq2seq_with_attention_reaches_97_percent_exact_match(tmp_path):
    recipe = Seq2SeqRecipe()
    summary = _train(recipe, tmp_path)
    assert summary["test_accuracy"] >= 0.97
    assert recipe.translate(["hai mươi mốt"]) == ["twenty-one"]
    assert recipe.translate(["hai mươi mốt"], beam_size=4) == ["twenty-one"]


def test_textcls_reaches_99_percent(tmp_path):
    recipe = TextClsRecipe()
    assert _train(recipe, tmp_path)["test_accuracy"] >= 0.99
    names, _ = recipe.classify(["vingt et un", "einundzwanzig", "dua puluh satu"])
    assert names == ["fr", "de", "id"]


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads resident memory from /proc/self/statm")
def test_vit_memory_holds_steady_over_2000_steps():
    """2,000 training steps (batch 32): resident memory after step 200 and after step 2,000 within 5%."""
    recipe = VitRecipe(epochs=16, batch_size=32)
    rng = np.random.default_rng(0)
    step, rss = 0, {}
    while step < 2000:
        for batch in recipe.train_batches(rng):
            recipe.train_step(batch)
            step += 1
            if step in (200, 2000):
                rss[step] = _rss_bytes()
            if step == 2000:
                break
    growth = rss[2000] / rss[200] - 1
    print(f"\nresident memory: step 200 {rss[200] / 2**20:.1f} MiB, step 2000 {rss[2000] / 2**20:.1f} MiB "
          f"({growth:+.2%})")
    assert abs(growth) <= 0.05


def test_readme_main_command_prints_test_accuracy(tmp_path):
    """The CLI end to end (a short run: the full one is the test above)."""
    out = subprocess.run([sys.executable, "-m", "minitensor", "train", "vit", "--epochs", "1", "--out",
                          str(tmp_path), "--quiet"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "vit: test accuracy " in out.stdout
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "curves.png").exists()
