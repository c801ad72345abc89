"""Every registry op against PyTorch in float64: forward values and gradients (tight tolerances)."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minitensor as mt
from minitensor import autograd
from minitensor.testing.op_db import OPS, _NoTorchEquivalent

torch = pytest.importorskip("torch", reason="PyTorch is not installed: parity tests need it (.ci/run installs it)")

WITH_TORCH = [info for info in OPS if info.torch_op is not None]


@pytest.mark.parametrize("info", WITH_TORCH, ids=[i.name for i in WITH_TORCH])
@given(data=st.data())
def test_matches_pytorch(info, data):
    sample = data.draw(info.sample, label="sample")
    assume(info.supports_size0 or all(a.size for a in sample.arrays))
    diff = info.diff_indices(sample)
    ours = [mt.tensor(a, requires_grad=i in diff) for i, a in enumerate(sample.arrays)]
    theirs = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate(sample.arrays)]
    try:
        expected = info.torch_op(*theirs, **sample.kwargs)
    except _NoTorchEquivalent:
        assume(False)
    out = info.op(*ours, **sample.kwargs)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)

    g = np.random.default_rng(0).standard_normal(tuple(out.shape))
    our_grads = autograd.grad(out, [ours[i] for i in diff], mt.tensor(g), allow_unused=True)
    their_grads = torch.autograd.grad(expected, [theirs[i] for i in diff], torch.tensor(g), allow_unused=True)
    for i, (a, b) in zip(diff, zip(our_grads, their_grads)):
        a = np.zeros(sample.arrays[i].shape) if a is None else a.numpy()
        b = np.zeros(sample.arrays[i].shape) if b is None else b.numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"{info.name}: gradient of input {i}")
