"""DLPack and numpy interop: tensors pass to and from PyTorch and numpy without copies."""
import numpy as np
import pytest

import minitensor as mt


def test_dlpack_with_numpy_shares_memory():
    t = mt.arange(6.0).reshape(2, 3)
    a = np.from_dlpack(t)
    a[0, 0] = 42
    assert t[0, 0].item() == 42
    back = mt.from_dlpack(np.arange(4.0))
    assert back.shape == (4,)


def test_dlpack_with_torch_both_ways_without_copies():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: DLPack exchange with it is not tested")
    t = mt.arange(6.0).reshape(2, 3)
    tt = torch.from_dlpack(t)
    tt[1, 2] = -1
    assert t[1, 2].item() == -1
    source = torch.arange(5.0)
    ours = mt.from_dlpack(source)
    ours[0] = 9
    assert source[0].item() == 9


def test_dlpack_refuses_tensors_that_require_grad():
    with pytest.raises(RuntimeError, match="requires grad"):
        np.from_dlpack(mt.ones(2, requires_grad=True))
