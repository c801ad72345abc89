"""minitensor.save / minitensor.load: nested dicts of tensors, numbers and strings in one safetensors file.

The tensors go into the file as safetensors tensors, named by their path in the object ({"model": {"fc.weight":
t}} -> "model.fc.weight"; a plain state dict keeps its own keys), so any safetensors reader (PyTorch, JAX,
numpy) can use the weights. Everything else (the nesting, numbers, strings, None, tuples, integer dict keys)
is a JSON description stored in the file's metadata. Writes are atomic: the file is written under a
temporary name, flushed to disk, then renamed over the target, so an interrupted or failed save (a crash,
a full disk) leaves the previous file as it was.
"""
import json
import os
import tempfile

import numpy as np

from ..tensor import Tensor

FORMAT = "minitensor.checkpoint"
VERSION = 1
_CHUNK = 1 << 20  # write in 1 MiB pieces (a save interrupted part-way leaves only the temporary file)


def save(obj, f):
    """Save `obj` (dicts, lists, tuples of tensors, numpy arrays, numbers, strings, bools, None) to path `f`."""
    from safetensors.numpy import save as safetensors_bytes

    tensors = {}
    structure = _encode(obj, "", tensors)
    metadata = {"format": FORMAT, "version": str(VERSION), "structure": json.dumps(structure)}
    payload = safetensors_bytes(tensors, metadata=metadata)
    _atomic_write(os.fspath(f), payload)


def load(f):
    """Load what save() wrote. A safetensors file from elsewhere loads as a flat dict of tensors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as safetensors_load

    path = os.fspath(f)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    with open(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8:
        raise ValueError(f"load: {path} is not a minitensor checkpoint (only {len(data)} bytes: truncated or empty)")
    try:
        header_len = int.from_bytes(data[:8], "little")
        if header_len > len(data) - 8:
            raise ValueError(f"its header claims {header_len} bytes but the file has {len(data) - 8}: truncated?")
        header = json.loads(data[8: 8 + header_len])
        arrays = safetensors_load(data)
    except (ValueError, SafetensorError, UnicodeDecodeError) as exc:
        raise ValueError(f"load: {path} is not a readable checkpoint (truncated, corrupted or another format): "
                         f"{exc}") from None
    meta = header.get("__metadata__") or {}
    tensors = {k: Tensor._wrap(np.array(v)) for k, v in arrays.items()}
    if meta.get("format") != FORMAT:
        return tensors  # a plain safetensors file (e.g. a PyTorch state dict): its tensors by name
    if int(meta.get("version", 0)) > VERSION:
        raise ValueError(f"load: {path} was written by a newer minitensor (format version {meta['version']})")
    try:
        return _decode(json.loads(meta["structure"]), tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"load: {path} has a damaged structure description: {exc}") from None


def _encode(obj, path, tensors):
    if isinstance(obj, Tensor) or isinstance(obj, np.ndarray):
        name = path or "tensor"
        while name in tensors:  # two paths that flatten to one name
            name += "_"
        arr = obj._data if isinstance(obj, Tensor) else obj
        tensors[name] = np.asarray(arr, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        return {"__tensor__": name, "kind": "tensor" if isinstance(obj, Tensor) else "ndarray",
                "requires_grad": bool(isinstance(obj, Tensor) and obj.requires_grad)}
    if isinstance(obj, dict):
        items = [(k, _encode(v, _join(path, k), tensors)) for k, v in obj.items()]
        if all(isinstance(k, str) for k, _ in items):
            return {"__dict__": [[k, v] for k, v in items]}
        for k, _ in items:
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"save: dict keys must be str, int, float or bool, got {type(k).__name__} at {path!r}")
        return {"__dict__": [[{"__key__": k}, v] for k, v in items]}
    if isinstance(obj, (list, tuple)):
        kind = "__list__" if isinstance(obj, list) else "__tuple__"
        return {kind: [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"__value__": obj}
    if isinstance(obj, np.generic):
        return {"__value__": obj.item()}
    raise TypeError(f"save: cannot save a {type(obj).__name__} (at {path or 'the top level'}); save tensors, arrays, "
                    "numbers, strings, None, and dicts/lists/tuples of them")


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _decode(node, tensors):
    if "__tensor__" in node:
        arr = tensors[node["__tensor__"]]._data
        if node.get("kind") == "ndarray":
            return arr
        t = Tensor._wrap(arr)
        if node.get("requires_grad"):
            t.requires_grad = True
        return t
    if "__dict__" in node:
        return {(k["__key__"] if isinstance(k, dict) else k): _decode(v, tensors) for k, v in node["__dict__"]}
    if "__list__" in node:
        return [_decode(v, tensors) for v in node["__list__"]]
    if "__tuple__" in node:
        return tuple(_decode(v, tensors) for v in node["__tuple__"])
    return node["__value__"]


def _atomic_write(path, payload):
    """Write payload to path so that at every moment path holds either the old file or the whole new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            view = memoryview(payload)
            for start in range(0, len(view), _CHUNK):
                fh.write(view[start: start + _CHUNK])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
