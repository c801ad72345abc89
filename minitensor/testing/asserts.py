"""assert_close: compare tensors (or arrays, or numbers) with dtype-aware default tolerances."""
import numpy as np

# PyTorch's defaults for torch.testing.assert_close
_DEFAULT_TOLERANCES = {np.dtype(np.float16): (1e-3, 1e-5), np.dtype(np.float32): (1.3e-6, 1e-5),
                       np.dtype(np.float64): (1e-7, 1e-7)}


def _array(x):
    if hasattr(x, "_data"):
        return x._data
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
        return x.detach().numpy()
    return np.asarray(x)


def assert_close(actual, expected, rtol=None, atol=None, equal_nan=False, check_dtype=True, msg=""):
    a, e = _array(actual), _array(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{msg}shapes differ: {a.shape} vs {e.shape}")
    if check_dtype and a.dtype != e.dtype:
        raise AssertionError(f"{msg}dtypes differ: {a.dtype} vs {e.dtype}")
    if rtol is None or atol is None:
        default = _DEFAULT_TOLERANCES.get(a.dtype, (0.0, 0.0))
        rtol = default[0] if rtol is None else rtol
        atol = default[1] if atol is None else atol
    if a.dtype.kind not in "fc":
        if not np.array_equal(a, e):
            raise AssertionError(f"{msg}values differ at {int(np.sum(a != e))} of {a.size} positions")
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    close = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=equal_nan)
    if not close.all():
        err = np.where(close, 0, np.abs(a64 - e64))
        idx = np.unravel_index(np.argmax(np.nan_to_num(err, nan=np.inf)), a.shape)
        raise AssertionError(
            f"{msg}{int((~close).sum())} of {a.size} elements differ (rtol={rtol}, atol={atol}); "
            f"worst at index {tuple(int(i) for i in idx)}: {a64[idx]!r} vs {e64[idx]!r}"
        )
