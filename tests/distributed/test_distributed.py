"""minitensor.distributed under real MPI: each test launches an `mpiexec -n 2` or `-n 3` job of a worker script
beside this file. Workers assert; a failed assertion aborts the job with a non-zero exit code, and the test prints
the job's output. Every job runs under a timeout, so a hang fails the test instead of hanging CI."""
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

import minitensor as mt
from minitensor import cli, distributed
from minitensor.training import fit
from tests.models.test_cli import TinyVit

HERE = Path(__file__).resolve().parent


def _mpiexec():
    """The mpiexec of the MPI that mpi4py uses: pip's mpich puts it next to the interpreter; an mpi4py built
    against a system MPI records that MPI's compiler wrapper, which sits beside its mpiexec."""
    try:
        import mpi4py
    except ImportError:
        pytest.fail("mpi4py is not installed; the test extra installs it with MPICH: pip install -e '.[test]'")
    wrapper = mpi4py.get_config().get("mpicc")
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts")),
                   Path(wrapper).parent if wrapper else None):
        if folder is not None and (folder / "mpiexec").exists():
            return str(folder / "mpiexec")
    pytest.fail(f"no mpiexec next to {sys.executable} nor mpi4py's MPI; install MPICH with: pip install mpich")


def run_job(n, script, *args, timeout=120):
    """Run `mpiexec -n n python script args`; returns (exit code, merged output, seconds)."""
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(HERE / script), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=HERE.parent.parent, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s; its output:\n{out}")
    return proc.returncode, out, time.monotonic() - t0


def run_ok(n, script, *args):
    code, out, _ = run_job(n, script, *args)
    assert code == 0, f"mpiexec -n {n} {script} exited with {code}; its output:\n{out}"
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_collectives_ddp_gradients_sampler_and_checkpoints(n, tmp_path):
    out = run_ok(n, "worker_collectives.py", tmp_path)
    for r in range(n):  # also proves mpiexec and mpi4py share one MPI (else each rank is a world of one)
        assert f"rank {r} of {n}: all checks passed" in out, out


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    fit(TinyVit(epochs=2, seed=3), out, 2, seed=3, progress=False, log=lambda *a: None)
    return out


@pytest.mark.parametrize("n", [2, 3])
def test_train_distributed_matches_a_single_process(n, tmp_path, single_process_run, capsys):
    out = run_ok(n, "worker_cli.py", tmp_path / "dist", tmp_path / "resumed")
    assert out.count("epoch   1/2") == 1, out  # only rank 0 logs (once in the CLI run; the resumed run logs 1/1)
    assert f"{n} processes x 1 thread," in out
    ours = json.loads((tmp_path / "dist" / "metrics.json").read_text())
    single = json.loads((single_process_run / "metrics.json").read_text())
    for a, b in zip(ours["history"], single["history"]):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
        np.testing.assert_allclose(a["test_loss"], b["test_loss"], rtol=1e-5)
        assert a["train_accuracy"] == b["train_accuracy"] and a["lr"] == b["lr"]
    state = mt.load(tmp_path / "dist" / "checkpoint.safetensors")
    reference = mt.load(single_process_run / "checkpoint.safetensors")["model"]
    assert state["model"].keys() == reference.keys()  # the inner model's keys: no "module." prefix
    for key, value in state["model"].items():
        a, b = value.numpy(), reference[key].numpy()
        if key.endswith("in_proj_bias"):
            # the key projection's bias has an exactly zero gradient (softmax ignores a constant shift), so
            # AdamW turns its rounding noise into full-size steps: compare the query and value thirds only
            a, b = np.delete(a.reshape(3, -1), 1, axis=0), np.delete(b.reshape(3, -1), 1, axis=0)
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=key)
    # the checkpoint of rank 0 loads in a single process, through the recipe and the command line
    assert TinyVit.from_checkpoint(state).evaluate()["test_accuracy"] == ours["summary"]["test_accuracy"]
    assert cli.main(["eval", "vit", "--checkpoint", str(tmp_path / "dist" / "checkpoint.safetensors")]) == 0
    assert "vit: test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("mode, n", [("hang", 2), ("hang", 3), ("exit", 2)])
def test_a_rank_that_hangs_or_leaves_times_out_on_every_waiting_rank(mode, n):
    code, out, seconds = run_job(n, "worker_failures.py", mode, timeout=60)
    assert code != 0 and "all_reduce, which it must not" not in out, out
    assert seconds < 20, f"the job took {seconds:.1f} s to end (timeout 2 s); its output:\n{out}"
    for r in [0] + list(range(2, n)):  # every rank but the culprit reports, naming it
        assert f"timed out after 2 s on rank {r}, waiting for rank(s) [1]; rank(s) [1] did not answer" in out, out
    assert "DistributedTimeoutError" in out and "Aborting the job" in out


def test_a_rank_that_crashes_ends_the_job_at_once():
    code, out, seconds = run_job(3, "worker_failures.py", "crash", timeout=60)
    # the traceback's last line is written in pieces, so another rank's line may land inside it: look for both
    assert code != 0 and "RuntimeError" in out and "rank 1 crashed on purpose" in out, out
    assert seconds < 15, f"the job took {seconds:.1f} s to end (the collective timeout is 300 s); output:\n{out}"


def test_without_mpi4py_the_error_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    assert not distributed.is_available()
    with pytest.raises(ImportError, match=r"pip install minitensor\[distributed\]"):
        distributed.init()
    assert not distributed.is_initialized()
    with pytest.raises(RuntimeError, match=r"all_reduce: minitensor.distributed is not initialized; call "
                                           r"minitensor.distributed.init\(\) first"):
        distributed.all_reduce(mt.ones(2))
    assert cli.main(["train", "vit", "--distributed", "--epochs", "1"]) == 2
    assert "pip install minitensor[distributed]" in capsys.readouterr().err


def test_a_global_batch_too_small_to_split_is_refused():
    from minitensor.training import _check_splittable

    _check_splittable([np.arange(64), np.arange(3)], 3)
    with pytest.raises(ValueError, match="a global batch of 2 samples cannot be split across 3 ranks"):
        _check_splittable([(np.arange(64), np.zeros((64, 2))), (np.arange(2), np.zeros((2, 2)))], 3)


def test_init_timeout_is_checked(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="MINITENSOR_DIST_TIMEOUT must be a number of seconds, got 'soon'"):
        distributed.init()
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got -1"):
        distributed.init(timeout=-1)
    with pytest.raises(ValueError, match="backend 'nccl' is not available"):
        distributed.init_process_group("nccl")
    assert not distributed.is_initialized()
