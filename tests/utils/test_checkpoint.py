"""minitensor.save / load: round trips, interoperability, atomicity under interruption, clear errors."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minitensor as mt
from minitensor import nn, optim
from minitensor.utils import checkpoint


def test_round_trip_of_nested_objects(tmp_path):
    obj = {
        "model": {"w": mt.randn(3, 4), "b": mt.zeros(4, dtype=mt.float64), "ids": mt.arange(5), "m": mt.tensor([True, False])},
        "epoch": 7, "lr": 0.001, "name": "vit", "none": None, "flag": True,
        "history": [1.5, 2.5], "betas": (0.9, 0.999), "state": {0: {"step": mt.tensor(3.0)}, 1: {}},
        "scalar": mt.tensor(2.0), "empty": mt.zeros(0, 3), "array": np.arange(4.0),
    }
    path = tmp_path / "ckpt.safetensors"
    mt.save(obj, path)
    back = mt.load(path)
    assert back.keys() == obj.keys()
    for k in ("w", "b", "ids", "m"):
        assert back["model"][k].dtype == obj["model"][k].dtype
        np.testing.assert_array_equal(back["model"][k].numpy(), obj["model"][k].numpy())
    assert back["epoch"] == 7 and back["lr"] == 0.001 and back["name"] == "vit" and back["none"] is None
    assert back["flag"] is True and back["history"] == [1.5, 2.5] and back["betas"] == (0.9, 0.999)
    assert back["state"][0]["step"].item() == 3.0 and back["state"][1] == {}
    assert back["scalar"].shape == () and back["empty"].shape == (0, 3)
    assert isinstance(back["array"], np.ndarray)


def test_model_and_optimizer_resume(tmp_path):
    model = nn.Linear(3, 2)
    opt = optim.AdamW(model.parameters(), lr=0.01)
    model(mt.randn(4, 3)).sum().backward()
    opt.step()
    mt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}, tmp_path / "c")
    ck = mt.load(tmp_path / "c")
    model2 = nn.Linear(3, 2)
    model2.load_state_dict(ck["model"])
    opt2 = optim.AdamW(model2.parameters(), lr=0.01)
    opt2.load_state_dict(ck["optimizer"])
    for m, o in ((model, opt), (model2, opt2)):
        m.zero_grad()
        m(mt.ones(4, 3)).sum().backward()
        o.step()
    np.testing.assert_array_equal(model.weight.detach().numpy(), model2.weight.detach().numpy())


def test_a_state_dict_file_is_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = nn.Linear(3, 2)
    mt.save(model.state_dict(), tmp_path / "w.safetensors")
    assert sorted(load_file(str(tmp_path / "w.safetensors"))) == ["bias", "weight"]
    save_file({"weight": np.ones((2, 2), np.float32)}, str(tmp_path / "foreign.safetensors"))
    assert mt.load(tmp_path / "foreign.safetensors")["weight"].shape == (2, 2)


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    mt.save({"w": mt.ones(1000)}, path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        mt.save({"w": mt.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary file left behind


def test_save_killed_midway_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "ckpt"
    mt.save({"w": mt.ones(10)}, path)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, sys, time
        import minitensor as mt
        from minitensor.utils import checkpoint
        real = os.fsync
        def stall(fd):          # the payload is written; stop before it is made durable and renamed
            print("writing", flush=True)
            time.sleep(60)
        checkpoint.os.fsync = stall
        mt.save({{"w": mt.zeros(3_000_000)}}, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.read_bytes() == before
    assert mt.load(path)["w"].shape == (10,)


def test_truncated_corrupted_and_foreign_files_give_clear_errors(tmp_path):
    path = tmp_path / "ckpt"
    mt.save({"w": mt.ones(100), "epoch": 1}, path)
    data = path.read_bytes()
    (tmp_path / "truncated").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated.*truncated|truncated"):
        mt.load(tmp_path / "truncated")
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="short is not a minitensor checkpoint"):
        mt.load(tmp_path / "short")
    (tmp_path / "pickle").write_bytes(b"\x80\x04\x95" + os.urandom(200))
    with pytest.raises(ValueError, match="pickle is not a readable checkpoint"):
        mt.load(tmp_path / "pickle")
    corrupted = bytearray(data)
    corrupted[10:20] = b"!!!!!!!!!!"
    (tmp_path / "corrupted").write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match="corrupted is not a readable checkpoint"):
        mt.load(tmp_path / "corrupted")
    with pytest.raises(FileNotFoundError, match="no such file"):
        mt.load(tmp_path / "missing")


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot save a object"):
        mt.save({"bad": object()}, tmp_path / "x")
    assert not (tmp_path / "x").exists()
