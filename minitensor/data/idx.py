"""The IDX file format of MNIST: a magic number (2 zero bytes, a type code, the number of dims), the dims as
big-endian int32, then the data in C order. Plain or gzipped."""
import gzip

import numpy as np

_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def _open(path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path):
    """The array stored in an IDX file (gzip detected from the content, not the name)."""
    with _open(path) as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"read_idx: {path} is not an IDX file (bad magic number {raw[:4]!r})")
    dtype, ndim = _TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated (header)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    count = int(np.prod(shape))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(f"read_idx: {path} should hold {count} values of shape {shape} but has "
                         f"{(len(raw) - header) // dtype.itemsize}: truncated or corrupted")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array, compress=True):
    """Write a uint8/int8 array as an IDX file (gzipped with a fixed timestamp, so the bytes are reproducible)."""
    array = np.asarray(array)
    if array.dtype not in _CODES:
        raise TypeError(f"write_idx: only uint8 and int8 arrays are supported, got {array.dtype}")
    payload = bytes([0, 0, _CODES[array.dtype], array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    payload += np.ascontiguousarray(array).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(payload, mtime=0) if compress else payload)
