"""dtypes: minitensor stores numpy arrays, so a dtype *is* a numpy dtype (`minitensor.float32 == np.float32`)."""
import numpy as np

float16 = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int8 = np.dtype(np.int8)
int16 = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)

SUPPORTED = (float16, float32, float64, int8, int16, int32, int64, uint8, bool_)
_default_dtype = float32


def get_default_dtype():
    """The dtype of tensors created from Python floats (float32 unless changed)."""
    return _default_dtype


def set_default_dtype(dtype):
    """Like torch.set_default_dtype: float32 or float64."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in (float32, float64):
        raise TypeError(f"set_default_dtype: only float32 and float64 are supported, got {dtype}")
    _default_dtype = dtype


def is_floating(dtype):
    return dtype.kind == "f"


def to_dtype(dtype):
    """Normalise a dtype argument (minitensor/numpy dtype, Python type or name) and check it is supported."""
    if dtype is float:
        return _default_dtype
    if dtype is int:
        return int64
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}") from None
    if dt not in SUPPORTED:
        raise TypeError(f"dtype {dt} is not supported; use one of {', '.join(str(d) for d in SUPPORTED)}")
    return dt


def promote(a, b):
    """Result dtype of a binary op on two tensors, following PyTorch: a float beats an int (keeping the
    float's width), otherwise numpy's rules (float32 + float64 -> float64, int32 + int64 -> int64)."""
    if a is b or a == b:
        return a
    fa, fb = a.kind == "f", b.kind == "f"
    if fa and not fb:
        return a
    if fb and not fa:
        return b
    return np.promote_types(a, b)
