"""minitensor.save / minitensor.load: nested dicts of tensors, numbers and strings in one safetensors file.

The tensors go into the file as safetensors tensors, named by their path in the object ({"model": {"fc.weight":
t}} -> "model.fc.weight"; a plain state dict keeps its own keys), so any safetensors reader (PyTorch, JAX,
numpy) can use the weights. Everything else (the nesting, numbers, strings, None, tuples, integer dict keys)
is a JSON description stored in the file's metadata.

Saving is atomic: the file is written under a temporary name in the target's directory, flushed to disk,
then renamed over the target, so an interrupted or failed save (a crash, kill -9, a full disk) leaves the
previous file as it was. The temporary name carries the writer's host and pid, so the next save of the same
target deletes the leftovers of writers that no longer exist (and only those). The file's mode follows the
umask, like any other file the user creates.

Loading reads the header first, checks every entry against the file's size, then reads tensor by tensor into
arrays it owns: a damaged file costs at most its header in memory, and a good one about its own size.
"""
import errno
import json
import os
import platform
import re
import stat
import zlib

import numpy as np

from .. import dtypes
from ..tensor import Tensor

FORMAT = "minitensor.checkpoint"
VERSION = 1
_CHUNK = 1 << 20  # write in 1 MiB pieces (a save interrupted part-way leaves only the temporary file)
_MAX_HEADER = 100_000_000  # bytes; the safetensors library refuses larger headers too
_MAX_DEPTH = 64  # nesting of saved objects (a checkpoint needs about 5; deeper is a cycle or a damaged file)
_MAX_DIMS = 64  # numpy's limit on a tensor's dimensions

# safetensors dtype -> the numpy dtype of its bytes (the format is little-endian). BF16 is read as its 16 bits
# and widened to float32, exactly (a bf16 is the top half of a float32).
_FILE_DTYPES = {"BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "F16": "<f2",
                "BF16": "<u2", "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8",
                "F64": "<f8", "C64": "<c8"}
_SAVABLE = {np.dtype(v).newbyteorder("=") for k, v in _FILE_DTYPES.items() if k != "BF16"}
# File dtypes a minitensor tensor cannot hold but a wider supported dtype holds exactly.
_TENSOR_WIDENING = {np.dtype(np.uint16): dtypes.int32, np.dtype(np.uint32): dtypes.int64}


def save(obj, f):
    """Save `obj` (dicts, lists, tuples of tensors, numpy arrays, numbers, strings, bools, None) to path `f`.

    A TypeError or ValueError names what cannot be saved; an OSError names `f` (never the temporary file).
    """
    from safetensors.numpy import save as safetensors_bytes

    tensors = {}
    structure = _encode(obj, "", tensors, 0)
    metadata = {"format": FORMAT, "version": str(VERSION), "structure": json.dumps(structure)}
    payload = safetensors_bytes(tensors, metadata=metadata)
    _atomic_write(os.fspath(f), payload)


def load(f):
    """Load what save() wrote. A safetensors file from elsewhere loads as a flat dict of tensors.

    Every problem with the file's contents is a ValueError naming the path; a file that cannot be opened is an
    OSError naming it (FileNotFoundError if there is none).
    """
    path = os.fspath(f)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "load: no such file", path) from None
    if not stat.S_ISREG(st.st_mode):  # a directory, or a device such as /dev/zero that never ends
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
        raise ValueError(f"load: {path} is {kind}, not a checkpoint file")
    with open(path, "rb", buffering=0) as fh:
        meta, entries, data_start = _read_header(fh, path, st.st_size)
        structure = _read_structure(meta, path)
        arrays = {name: _read_array(fh, path, name, entry, data_start) for name, entry in entries.items()}
    if structure is None:  # a plain safetensors file (e.g. a PyTorch state dict): its tensors by name
        return {name: Tensor._wrap(_tensor_array(arr, name, path)) for name, arr in arrays.items()}
    return _decode(structure, arrays, path, 0)


def _damaged(path, what):
    return ValueError(f"load: {path} is not a readable checkpoint (truncated, corrupted or another format): {what}")


def _read_header(fh, path, size):
    """The metadata dict, {name: entry} and the offset of the tensor bytes, with every entry checked against
    the file's size before any tensor is read."""
    if size < 8:
        raise ValueError(f"load: {path} is not a minitensor checkpoint (only {size} bytes: truncated or empty)")
    header_len = int.from_bytes(_read_bytes(fh, 8, path), "little")
    if header_len > size - 8:
        raise _damaged(path, f"its header claims {header_len} bytes but the file has {size - 8} after the "
                             "length field")
    if header_len > _MAX_HEADER:
        raise _damaged(path, f"its header of {header_len} bytes is larger than the limit of {_MAX_HEADER}")
    try:
        header = json.loads(_read_bytes(fh, header_len, path).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _damaged(path, f"its header is not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _damaged(path, "its __metadata__ is not a map of strings")
    spans = []
    for name, entry in header.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
                and _is_sizes(entry.get("shape")) and len(entry["shape"]) <= _MAX_DIMS
                and _is_sizes(entry.get("data_offsets")) and len(entry["data_offsets"]) == 2):
            raise _damaged(path, f"the header entry of tensor {name!r} is not "
                                 "{dtype, shape, data_offsets: [begin, end]}")
        if entry["dtype"] not in _FILE_DTYPES:
            raise ValueError(f"load: {path}: tensor {name!r} has dtype {entry['dtype']}, which minitensor cannot "
                             f"load (it reads {', '.join(_FILE_DTYPES)})")
        begin, end = entry["data_offsets"]
        nbytes = int(np.prod(entry["shape"], dtype=object)) * np.dtype(_FILE_DTYPES[entry["dtype"]]).itemsize
        if end - begin != nbytes:
            raise _damaged(path, f"tensor {name!r} of dtype {entry['dtype']} and shape {tuple(entry['shape'])} "
                                 f"needs {nbytes} bytes, its offsets [{begin}, {end}] span {end - begin}")
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):  # the format: tensors tile the data exactly, no gaps, no overlaps
        if begin != position:
            raise _damaged(path, f"tensor {name!r} starts at byte {begin} of the data, expected {position}")
        position = end
    if position != size - 8 - header_len:
        raise _damaged(path, f"its tensors take {position} bytes but the file holds {size - 8 - header_len} "
                             "after the header")
    return meta, header, 8 + header_len


def _is_sizes(value):
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _read_structure(meta, path):
    """The JSON structure of a minitensor checkpoint, or None for a plain safetensors file."""
    if meta.get("format") != FORMAT:
        return None
    version = meta.get("version", "")
    if not re.fullmatch(r"[0-9]{1,9}", version) or int(version) < 1:
        raise _damaged(path, f"its format version {version!r} is not a positive integer")
    if int(version) > VERSION:
        raise ValueError(f"load: {path} was written by a newer minitensor (format version {version}; this one "
                         f"reads up to {VERSION})")
    if "structure" not in meta:
        raise _damaged(path, "its metadata has no structure description")
    try:
        return json.loads(meta["structure"])
    except (ValueError, RecursionError) as exc:
        raise _damaged(path, f"its structure description is not valid JSON ({type(exc).__name__}: {exc})") from None


def _read_array(fh, path, name, entry, data_start):
    """One tensor's bytes as a new array of native byte order (BF16 widened to float32)."""
    arr = np.empty(entry["shape"], np.dtype(_FILE_DTYPES[entry["dtype"]]))
    fh.seek(data_start + entry["data_offsets"][0])
    flat = arr.reshape(-1).view(np.uint8)
    done = 0
    while done < flat.size:  # a read may return less than asked (and at most ~2 GiB at once)
        got = fh.readinto(memoryview(flat[done:]))
        if not got:
            raise _damaged(path, f"the file ended inside tensor {name!r} (it shrank while being read?)")
        done += got
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # a no-op on little-endian machines
    if entry["dtype"] == "BF16":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def _read_bytes(fh, n, path):
    data = fh.read(n)
    while len(data) < n:
        more = fh.read(n - len(data))
        if not more:
            raise _damaged(path, f"the file ended after {len(data)} of {n} header bytes")
        data += more
    return data


def _tensor_array(arr, name, path):
    """`arr` in a dtype a minitensor tensor can hold (exactly), or a ValueError naming the tensor."""
    if arr.dtype in dtypes.SUPPORTED:
        return arr
    if arr.dtype in _TENSOR_WIDENING:
        return arr.astype(_TENSOR_WIDENING[arr.dtype])
    raise ValueError(f"load: {path}: tensor {name!r} has dtype {arr.dtype}, which minitensor tensors cannot hold")


def _encode(obj, path, tensors, depth):
    if depth > _MAX_DEPTH:
        raise ValueError(f"save: the object is nested more than {_MAX_DEPTH} levels deep at {path!r} "
                         "(does it contain itself?)")
    if isinstance(obj, Tensor) or isinstance(obj, np.ndarray):
        name = path or "tensor"
        while name in tensors:  # two paths that flatten to one name
            name += "_"
        arr = obj._data if isinstance(obj, Tensor) else obj
        if arr.dtype.newbyteorder("=") not in _SAVABLE:
            raise TypeError(f"save: cannot save an array of dtype {arr.dtype} (at {path or 'the top level'}); "
                            f"safetensors holds {', '.join(sorted(str(d) for d in _SAVABLE))}")
        tensors[name] = np.asarray(arr, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        return {"__tensor__": name, "kind": "tensor" if isinstance(obj, Tensor) else "ndarray",
                "requires_grad": bool(isinstance(obj, Tensor) and obj.requires_grad)}
    if isinstance(obj, dict):
        items = [(k, _encode(v, _join(path, k), tensors, depth + 1)) for k, v in obj.items()]
        if all(isinstance(k, str) for k, _ in items):
            return {"__dict__": [[k, v] for k, v in items]}
        for k, _ in items:
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"save: dict keys must be str, int, float or bool, got {type(k).__name__} at {path!r}")
        return {"__dict__": [[{"__key__": k}, v] for k, v in items]}
    if isinstance(obj, (list, tuple)):
        kind = "__list__" if isinstance(obj, list) else "__tuple__"
        return {kind: [_encode(v, _join(path, i), tensors, depth + 1) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"__value__": obj}
    if isinstance(obj, np.generic):
        return {"__value__": obj.item()}
    raise TypeError(f"save: cannot save a {type(obj).__name__} (at {path or 'the top level'}); save tensors, arrays, "
                    "numbers, strings, None, and dicts/lists/tuples of them")


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _is_scalar(value):
    return value is None or isinstance(value, (bool, int, float, str))


def _decode(node, arrays, path, depth):
    """The object described by a structure `node` (what _encode returned), every node checked."""
    if depth > _MAX_DEPTH:
        raise _damaged(path, f"its structure is nested more than {_MAX_DEPTH} levels deep")
    if not isinstance(node, dict) or len(node) == 0:
        raise _damaged(path, f"its structure has a node that is not a description: {str(node)[:80]}")
    if "__tensor__" in node:
        name = node["__tensor__"]
        if not isinstance(name, str) or name not in arrays:
            raise _damaged(path, f"its structure names a tensor {str(name)[:80]!r} that the file does not hold")
        if node.get("kind") == "ndarray":
            return arrays[name]
        t = Tensor._wrap(_tensor_array(arrays[name], name, path))
        if node.get("requires_grad"):
            if t.dtype.kind != "f":
                raise _damaged(path, f"tensor {name!r} of dtype {t.dtype} is marked as requiring grad")
            t.requires_grad = True
        return t
    if "__dict__" in node:
        items = node["__dict__"]
        if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
            raise _damaged(path, "its structure has a dict that is not a list of [key, value] pairs")
        out = {}
        for key, value in items:
            if isinstance(key, dict) and set(key) == {"__key__"} and _is_scalar(key["__key__"]):
                key = key["__key__"]
            elif not isinstance(key, str):
                raise _damaged(path, f"its structure has a dict key that is not a number or string: {str(key)[:80]}")
            out[key] = _decode(value, arrays, path, depth + 1)
        return out
    for kind, build in (("__list__", list), ("__tuple__", tuple)):
        if kind in node:
            if not isinstance(node[kind], list):
                raise _damaged(path, f"its structure has a {kind.strip('_')} that is not a JSON list")
            return build(_decode(v, arrays, path, depth + 1) for v in node[kind])
    if "__value__" in node and _is_scalar(node["__value__"]):
        return node["__value__"]
    raise _damaged(path, f"its structure has a node of unknown kind: {str(node)[:80]}")


def _atomic_write(path, payload):
    """Write payload to path so that at every moment path holds either the old file or the whole new one.

    Errors name `path` (the user's), never the temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_stale_temporaries(directory, base)
    tmp = os.path.join(directory, f".tmp-{_host_tag()}-{os.getpid()}-{os.urandom(4).hex()}-{base}")
    try:
        # 0o666 minus the umask, like open(path, "w"); tempfile.mkstemp would force 0o600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _save_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            view = memoryview(payload)
            for start in range(0, len(view), _CHUNK):
                fh.write(view[start: start + _CHUNK])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _save_error(exc, path) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _save_error(exc, path):
    """The OSError `exc` of writing the temporary file, reported against the user's `path` (same class)."""
    directory = os.path.dirname(path) or "."
    if exc.errno == errno.ENOENT and not os.path.isdir(directory):
        return FileNotFoundError(errno.ENOENT, f"save: directory {directory} does not exist", path)
    if exc.errno is None:
        return exc
    return OSError(exc.errno, f"save: {exc.strerror}", path)  # OSError(errno, ...) picks the subclass


def _host_tag():
    """8 hex digits naming this machine in temporary names: a pid is only meaningful on its own host."""
    return format(zlib.crc32(platform.node().encode()), "08x")


def _remove_stale_temporaries(directory, base):
    """Delete the temporary files that saves of this target killed mid-write left behind.

    Only files named as this target's temporaries, written on this host by a process that no longer exists.
    A save still running keeps its file: another process saving the same target is alive, and a thread of
    this process has our own pid. So concurrent saves never delete each other's files; at worst a file
    whose pid was reused stays until a later save. (An age rule could not tell a slow live writer from a
    dead one.)
    """
    pattern = re.compile(rf"\.tmp-{_host_tag()}-([0-9]+)-[0-9a-f]{{8}}-{re.escape(base)}\Z")
    try:
        names = os.listdir(directory)
    except OSError:
        return  # a missing directory is reported by the save itself
    for name in names:
        match = pattern.match(name)
        if match and not _process_exists(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:  # another save removed it first, or we may not: leave it
                pass


def _process_exists(pid):
    if os.name != "posix":
        return True  # no safe liveness check here (os.kill would signal the process): keep the file
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it exists but is another user's
        return True
    return True
