"""Checkpoints at their edges: killed saves, file modes, load memory, foreign dtypes, damaged files, save errors,
and load_state_dict / optimizer.load_state_dict that check everything before changing anything."""
import json
import os
import re
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitensor as mt
from minitensor import nn, optim
from minitensor.utils import checkpoint


def safetensors_file(path, tensors, metadata=None):
    """Write a safetensors file by hand: tensors is {name: (dtype name, shape, raw bytes)}."""
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def with_metadata(path, out, **changes):
    """Copy the checkpoint at `path` to `out` with some metadata entries replaced."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + n])
    header["__metadata__"].update(changes)
    blob = json.dumps(header).encode()
    out.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n:])
    return out


def temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))


# ---------------------------------------------------------------------------------------------- killed saves
STALLED_SAVE = """
import os, sys
import minitensor as mt
from minitensor.utils import checkpoint
def stall(fd):          # the payload is written; stop before it is made durable and renamed
    print("writing", flush=True)
    sys.stdin.readline()
checkpoint.os.fsync = stall
mt.save({{"w": mt.full((500_000,), {value})}}, {path!r})
"""


def stalled_save(path, value):
    """A process saving to `path` that stops after writing its temporary file (answer a line to let it go on)."""
    proc = subprocess.Popen([sys.executable, "-c", STALLED_SAVE.format(path=str(path), value=value)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_the_next_save_removes_what_killed_saves_left(tmp_path):
    path = tmp_path / "ckpt"
    mt.save({"w": mt.ones(10)}, path)
    for _ in range(3):
        proc = stalled_save(path, 2.0)
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait()
        assert len(temporaries(tmp_path)) == 1  # this one's: the save after a kill removed the one before
    mt.save({"w": mt.zeros(10)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    np.testing.assert_array_equal(mt.load(path)["w"].numpy(), np.zeros(10))


def test_only_leftovers_of_dead_writers_of_this_target_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = checkpoint._host_tag()
    names = {
        "dead writer": f".tmp-{host}-{dead.pid}-0123abcd-ckpt",
        "live writer (this process)": f".tmp-{host}-{os.getpid()}-0123abcd-ckpt",
        "dead writer, another host": f".tmp-{int(host, 16) ^ 1:08x}-{dead.pid}-0123abcd-ckpt",
        "dead writer, another target": f".tmp-{host}-{dead.pid}-0123abcd-other",
        "dead writer, target with ckpt as suffix": f".tmp-{host}-{dead.pid}-0123abcd-my-ckpt",
        "no pid (older minitensor)": ".tmp-k3j9x0q1-ckpt",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    mt.save({"w": mt.ones(3)}, tmp_path / "ckpt")
    assert temporaries(tmp_path) == sorted(v for k, v in names.items() if k != "dead writer")


def test_a_concurrent_save_keeps_a_live_writers_file_and_both_saves_complete(tmp_path):
    # Two processes saving one target: the second must not delete the first one's temporary file, since
    # the first is still running and will rename it over the target.
    path = tmp_path / "ckpt"
    proc = stalled_save(path, 5.0)
    try:
        mt.save({"w": mt.ones(3)}, path)
        assert len(temporaries(tmp_path)) == 1
        np.testing.assert_array_equal(mt.load(path)["w"].numpy(), np.ones(3))
    finally:
        out, _ = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    np.testing.assert_array_equal(mt.load(path)["w"].numpy(), np.full(500_000, 5.0, np.float32))


# ---------------------------------------------------------------------------------------------- file mode
@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_the_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        mt.save({"w": mt.ones(3)}, tmp_path / "ckpt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------- load memory
MEASURE_LOAD = """
import resource, sys, tracemalloc
import minitensor as mt
path = sys.argv[1]
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
state = mt.load(path)
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
rss_unit = 1 if sys.platform == "darwin" else 1024    # ru_maxrss is in bytes on macOS, KiB on Linux
print(traced_peak, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * rss_unit)
"""


@pytest.mark.skipif(os.name != "posix", reason="the resource module (peak RSS) is POSIX only")
def test_loading_needs_about_the_checkpoints_size_in_memory(tmp_path):
    path = tmp_path / "big"
    rng = np.random.default_rng(0)
    mt.save({"model": {f"w{i}": mt.tensor(rng.random(6_500_000, dtype=np.float32)) for i in range(4)},
             "epoch": 1}, path)
    size = path.stat().st_size
    assert size > 100e6
    result = subprocess.run([sys.executable, "-c", MEASURE_LOAD, str(path)], capture_output=True, text=True,
                            check=True)
    traced_peak, rss_growth = map(int, result.stdout.split())
    # The loaded tensors themselves are 1x; reading the whole file and copying it (the old way) was 3x.
    assert traced_peak < 1.5 * size, traced_peak / size
    assert rss_growth < 1.5 * size, rss_growth / size


def test_loaded_tensors_are_writable_own_their_memory_and_train(tmp_path):
    model = nn.Linear(4, 2)
    opt = optim.SGD(model.parameters(), lr=0.1)
    mt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "w": mt.ones(3)}, tmp_path / "c")
    state = mt.load(tmp_path / "c")
    w = state["w"]
    assert w.numpy().flags.writeable and w.numpy().flags.owndata
    w.add_(1.0)
    np.testing.assert_array_equal(w.numpy(), [2, 2, 2])

    # The loaded tensors as a model's parameters: one SGD step changes them as computed by hand.
    weight, bias = nn.Parameter(state["model"]["weight"]), nn.Parameter(state["model"]["bias"])
    before = weight.detach().numpy().copy()
    x = mt.ones(1, 4)
    (x @ weight.T + bias).sum().backward()
    optim.SGD([weight, bias], lr=0.5).step()
    np.testing.assert_allclose(weight.detach().numpy(), before - 0.5)
    np.testing.assert_array_equal(model.weight.detach().numpy(), before)  # the saved model is untouched


# ---------------------------------------------------------------------------------------------- dtypes
def test_bf16_loads_as_float32_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 2.0**100, -0.0, np.inf], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # these values are exact in bfloat16
    back = mt.load(safetensors_file(tmp_path / "f", {"w": ("BF16", (2, 3), bf16.tobytes())}))["w"]
    assert back.dtype == mt.float32 and back.shape == (2, 3)
    np.testing.assert_array_equal(back.numpy().ravel(), values)


def test_bf16_file_written_by_pytorch_loads(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch writes the bfloat16 file")
    from safetensors.torch import save_file

    t = torch.randn(3, 5).to(torch.bfloat16)
    save_file({"w": t}, str(tmp_path / "f"))
    np.testing.assert_array_equal(mt.load(tmp_path / "f")["w"].numpy(), t.float().numpy())


@pytest.mark.parametrize("name,dtype,expected", [
    ("F16", "<f2", mt.float16), ("F32", "<f4", mt.float32), ("F64", "<f8", mt.float64), ("I8", "i1", mt.int8),
    ("I16", "<i2", mt.int16), ("I32", "<i4", mt.int32), ("I64", "<i8", mt.int64), ("U8", "u1", mt.uint8),
    ("BOOL", "?", mt.bool),
    ("U16", "<u2", mt.int32), ("U32", "<u4", mt.int64),  # minitensor has no uint16/32 tensors: widened exactly
])
def test_every_dtype_a_tensor_can_hold_exactly_loads(tmp_path, name, dtype, expected):
    values = np.array([0, 1, 1, 0, 1, 1] if name == "BOOL" else [0, 1, 2, 3, 100, 127], dtype)
    if name in ("U16", "U32"):
        values[-1] = np.iinfo(dtype).max
    back = mt.load(safetensors_file(tmp_path / "f", {"w": (name, (3, 2), values.tobytes())}))["w"]
    assert back.dtype == expected
    np.testing.assert_array_equal(back.numpy(), values.reshape(3, 2))


@pytest.mark.parametrize("name,nbytes,message", [
    ("U64", 8, "tensor 'w' has dtype uint64, which minitensor tensors cannot hold"),
    ("C64", 8, "tensor 'w' has dtype complex64, which minitensor tensors cannot hold"),
    ("F8_E4M3", 1, "tensor 'w' has dtype F8_E4M3, which minitensor cannot load"),
    ("F4", 1, "tensor 'w' has dtype F4, which minitensor cannot load"),
])
def test_other_dtypes_are_a_clear_error_naming_the_tensor(tmp_path, name, nbytes, message):
    path = safetensors_file(tmp_path / "f", {"ok": ("F32", (1,), bytes(4)), "w": (name, (2,), bytes(2 * nbytes))})
    with pytest.raises(ValueError, match=f"load: {path}: {message}"):
        mt.load(path)


def test_numpy_arrays_keep_their_dtype_even_where_tensors_cannot(tmp_path):
    obj = {"u16": np.arange(3, dtype=np.uint16), "u64": np.arange(3, dtype=np.uint64), "c": np.ones(2, np.complex64)}
    mt.save(obj, tmp_path / "c")
    back = mt.load(tmp_path / "c")
    for k, v in obj.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


@pytest.mark.parametrize("dtype", [object, "U3", np.complex128, "M8[s]"])
def test_saving_an_array_safetensors_cannot_hold_is_a_type_error(tmp_path, dtype):
    with pytest.raises(TypeError, match=re.escape(f"save: cannot save an array of dtype {np.dtype(dtype)} (at a.b)")):
        mt.save({"a": {"b": np.zeros(2, dtype)}}, tmp_path / "c")
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------- damaged files
@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good"
    mt.save({"model": {"w": mt.ones(2, 3), "b": mt.zeros(3)}, "epoch": 1, "opt": {0: {"step": 3}}}, path)
    return path


@pytest.mark.parametrize("version,message", [
    ("abc", "its format version 'abc' is not a positive integer"),
    ("", "its format version '' is not a positive integer"),
    ("0", "its format version '0' is not a positive integer"),
    ("1e999", "its format version '1e999' is not a positive integer"),
    ("99", r"was written by a newer minitensor \(format version 99; this one reads up to 1\)"),
])
def test_a_bad_version_is_a_clear_error(good, version, message):
    path = with_metadata(good, good.parent / "bad", version=version)
    with pytest.raises(ValueError, match=f"load: {path} .*{message}"):
        mt.load(path)


@pytest.mark.parametrize("depth,message", [
    (100, "its structure is nested more than 64 levels deep"),
    (100_000, "its structure description is not valid JSON"),  # deeper than Python's JSON parser goes
])
def test_a_deeply_nested_structure_is_a_clear_error(good, depth, message):
    structure = '{"__list__": [' * depth + '{"__value__": 1}' + "]}" * depth
    path = with_metadata(good, good.parent / "deep", structure=structure)
    with pytest.raises(ValueError, match=f"load: {path} is not a readable checkpoint.*{message}"):
        mt.load(path)


def test_saving_an_object_nested_too_deeply_or_containing_itself_is_a_clear_error(tmp_path):
    loop = []
    loop.append(loop)
    deep = 1
    for _ in range(100):
        deep = [deep]
    for obj in (loop, deep):
        with pytest.raises(ValueError, match="save: the object is nested more than 64 levels deep"):
            mt.save(obj, tmp_path / "c")
    nested = 1
    for _ in range(30):  # 60 levels, within the limit: round trips
        nested = {"a": [nested]}
    mt.save(nested, tmp_path / "c")
    assert mt.load(tmp_path / "c") == nested
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


@pytest.mark.parametrize("structure,message", [
    ('{"__tensor__": "nope"}', "names a tensor 'nope' that the file does not hold"),
    ('{"__dict__": [["a"]]}', "has a dict that is not a list of"),
    ('{"__dict__": [[[1], {"__value__": 1}]]}', "has a dict key that is not a number or string"),
    ('{"__list__": 5}', "has a list that is not a JSON list"),
    ('{"__value__": [1, 2]}', "has a node of unknown kind"),
    ("[1, 2]", "has a node that is not a description"),
    ('{"__tensor__": "model.w", "requires_grad": true, "kind": "tensor"}', None),
])
def test_a_damaged_structure_is_a_clear_error(good, structure, message):
    path = with_metadata(good, good.parent / "bad", structure=structure)
    if message is None:  # a valid structure: loads
        assert mt.load(path).requires_grad
        return
    with pytest.raises(ValueError, match=f"load: {path} is not a readable checkpoint.*{message}"):
        mt.load(path)


def test_a_huge_header_length_is_refused_without_reading(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(ValueError, match=f"load: {path} .*its header claims {2**62} bytes but the file has 2"):
        mt.load(path)
    big = tmp_path / "bigheader"  # larger than the limit, and the file really is that long
    with open(big, "wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001))
        fh.truncate(8 + 100_000_001)  # sparse: costs no disk
    with pytest.raises(ValueError, match="its header of 100000001 bytes is larger than the limit of 100000000"):
        mt.load(big)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="/dev/zero exists only on POSIX systems")
def test_devices_and_directories_are_refused_without_reading(tmp_path):
    with pytest.raises(ValueError, match="load: /dev/zero is a device, pipe or socket, not a checkpoint file"):
        mt.load("/dev/zero")
    with pytest.raises(ValueError, match=f"load: {tmp_path} is a directory, not a checkpoint file"):
        mt.load(tmp_path)


@pytest.mark.parametrize("header,message", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, "needs 8 bytes, its offsets"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, "the header entry of tensor 'w' is not"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, "tensor 'w' starts at byte 4 of the data"),
    ({"w": [1, 2]}, "the header entry of tensor 'w' is not"),
    ({"w": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, "the header entry of tensor 'w' is not"),
    ({"__metadata__": {"a": 1}}, "its __metadata__ is not a map of strings"),
])
def test_inconsistent_headers_are_clear_errors(tmp_path, header, message):
    blob = json.dumps(header).encode()
    path = tmp_path / "f"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(8))
    with pytest.raises(ValueError, match=f"load: {path} is not a readable checkpoint.*{message}"):
        mt.load(path)


def test_trailing_bytes_are_an_error(good):
    (good.parent / "long").write_bytes(good.read_bytes() + b"\0" * 8)
    with pytest.raises(ValueError, match="its tensors take 36 bytes but the file holds 44 after the header"):
        mt.load(good.parent / "long")


@given(data=st.data())
def test_every_truncation_is_a_clear_error(good, data):
    raw = good.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    path = good.parent / "cut"
    path.write_bytes(raw[:cut])
    with pytest.raises(ValueError, match=f"load: {path} is not a (minitensor|readable) checkpoint"):
        mt.load(path)


@given(data=st.data())
def test_corrupted_bytes_load_or_give_a_clear_error(good, data):
    raw = bytearray(good.read_bytes())
    for _ in range(data.draw(st.integers(1, 4), label="count")):
        raw[data.draw(st.integers(0, len(raw) - 1), label="at")] = data.draw(st.integers(0, 255), label="byte")
    path = good.parent / "corrupt"
    path.write_bytes(bytes(raw))
    try:
        mt.load(path)  # a flipped byte in the tensor data still makes a valid file
    except ValueError as exc:
        assert str(exc).startswith(f"load: {path}")


# ---------------------------------------------------------------------------------------------- save errors
def test_saving_into_a_missing_directory_names_the_users_path(tmp_path):
    target = tmp_path / "missing" / "ckpt"
    with pytest.raises(FileNotFoundError) as info:
        mt.save({"w": mt.ones(2)}, target)
    assert info.value.filename == str(target)
    assert str(info.value) == f"[Errno 2] save: directory {tmp_path / 'missing'} does not exist: '{target}'"
    assert ".tmp" not in str(info.value)


def test_saving_over_a_directory_names_the_users_path_and_leaves_nothing(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        mt.save({"w": mt.ones(2)}, tmp_path / "d")
    assert info.value.filename == str(tmp_path / "d") and ".tmp" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and not any((tmp_path / "d").iterdir())


def test_a_write_error_names_the_users_path_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    mt.save({"w": mt.ones(5)}, path)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        mt.save({"w": mt.zeros(5)}, path)
    assert str(info.value) == f"[Errno 28] save: No space left on device: '{path}'"
    monkeypatch.undo()
    np.testing.assert_array_equal(mt.load(path)["w"].numpy(), np.ones(5))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# ---------------------------------------------------------------------------------------------- load_state_dict
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.out = nn.Linear(4, 2)


def snapshot(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("bad,message", [
    ("abc", 'While copying the parameter named "out.weight", expected a tensor or array from checkpoint but '
            "received str"),
    (None, 'While copying the parameter named "out.weight", expected a tensor or array from checkpoint but '
           "received NoneType"),
    ([[1.0] * 4] * 2, 'While copying the parameter named "out.weight", expected a tensor or array from checkpoint '
                      "but received list"),
    (np.array([["a"] * 4] * 2), 'While copying the parameter named "out.weight", expected a real number dtype '
                                "from checkpoint but received <U1"),
    (np.ones((2, 4), np.complex64), 'While copying the parameter named "out.weight", expected a real number dtype '
                                    "from checkpoint but received complex64"),
    (mt.ones(4, 2), "size mismatch for out.weight: copying a param with shape (4, 2) from checkpoint, the shape in "
                    "current model is (2, 4)."),
])
def test_one_bad_value_names_its_key_and_changes_nothing(bad, message):
    m = Net()
    before = snapshot(m)
    sd = {k: v + 1 for k, v in m.state_dict().items()}  # every other value is good and differs
    sd["out.weight"] = bad
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value) == f"Error(s) in loading state_dict for Net:\n\t{message}"
    after = snapshot(m)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def test_every_problem_is_reported_at_once():
    m = Net()
    sd = dict(m.state_dict())
    sd["fc.weight"] = mt.zeros(3, 4)
    sd["out.bias"] = "x"
    sd.pop("fc.bias")
    sd["extra"] = mt.zeros(1)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    assert str(info.value).split("\n\t")[1:] == [
        'Unexpected key(s) in state_dict: "extra".', 'Missing key(s) in state_dict: "fc.bias".',
        "size mismatch for fc.weight: copying a param with shape (3, 4) from checkpoint, the shape in current "
        "model is (4, 3).",
        'While copying the parameter named "out.bias", expected a tensor or array from checkpoint but received str']


def test_values_of_other_real_dtypes_are_cast_like_pytorch():
    m = nn.Linear(2, 1)
    m.load_state_dict({"weight": np.array([[1, 2]], np.int64), "bias": np.array([True])})
    assert m.weight.dtype == mt.float32
    np.testing.assert_array_equal(m.weight.detach().numpy(), [[1, 2]])
    np.testing.assert_array_equal(m.bias.detach().numpy(), [1])


def test_a_read_only_parameter_is_reported_before_anything_changes():
    m = nn.Linear(2, 1)
    before = snapshot(m)
    m.bias._data.flags.writeable = False
    with pytest.raises(RuntimeError, match='parameter named "bias", the tensor in the current model is read-only'):
        m.load_state_dict({"weight": mt.ones(1, 2), "bias": mt.ones(1)})
    np.testing.assert_array_equal(m.weight.detach().numpy(), before["weight"])


def test_a_state_dict_that_is_not_a_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like, got list"):
        nn.Linear(2, 1).load_state_dict([("weight", mt.ones(1, 2))])


def test_pytorch_bfloat16_values_load():
    torch = pytest.importorskip("torch", reason="compares with a PyTorch bfloat16 tensor")
    m = nn.Linear(2, 1)
    w = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16)
    m.load_state_dict({"weight": w, "bias": torch.zeros(1)})
    np.testing.assert_array_equal(m.weight.detach().numpy(), [[1.5, -2.0]])


# ---------------------------------------------------------------------------------------------- optimizer
def trained_adam():
    params = [nn.Parameter(mt.ones(2, 3)), nn.Parameter(mt.ones(3))]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = mt.ones(*p.shape)
    opt.step()
    return params, opt


@pytest.mark.parametrize("edit,message", [
    (lambda sd: sd["state"][1].update(exp_avg=mt.zeros(2)),
     r"loaded optimizer state 'exp_avg' of parameter 1 has shape \(2,\), the parameter has shape \(3,\)"),
    (lambda sd: sd["state"][1].update(exp_avg_sq="x"),
     "loaded optimizer state 'exp_avg_sq' of parameter 1 is a str, not a number or tensor"),
    (lambda sd: sd["state"][1].update(step=mt.ones(2)),
     r"loaded optimizer state 'step' of parameter 1 has shape \(2,\), not one number"),
    (lambda sd: sd["state"].update({7: {}}), "has an entry for parameter 7, which no parameter group lists"),
    (lambda sd: sd.pop("state"), "must be a dict with 'state' and 'param_groups'"),
])
def test_optimizer_checks_everything_before_changing_anything(edit, message):
    params, opt = trained_adam()
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.5
    sd["state"] = {i: dict(s) for i, s in sd["state"].items()}
    edit(sd)
    before = {i: {k: v.numpy().copy() for k, v in opt.state[p].items()} for i, p in enumerate(params)}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.1
    for i, p in enumerate(params):
        assert opt.state[p].keys() == before[i].keys()
        for k, v in before[i].items():
            np.testing.assert_array_equal(opt.state[p][k].numpy(), v)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    params, opt = trained_adam()
    mt.save(opt.state_dict(), tmp_path / "o")
    fresh = [nn.Parameter(mt.ones(2, 3)), nn.Parameter(mt.ones(3))]
    opt2 = optim.Adam(fresh, lr=0.1)
    opt2.load_state_dict(mt.load(tmp_path / "o"))
    for a, b in zip(params, fresh):
        for k in ("step", "exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[a][k].numpy(), opt2.state[b][k].numpy())
