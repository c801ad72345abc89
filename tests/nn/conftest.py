import numpy as np

import minitensor as mt


def to_mt(t, requires_grad=False):
    return mt.tensor(t.detach().numpy(), requires_grad=requires_grad)


def copy_weights(theirs, ours):
    """Load a PyTorch module's state dict into the minitensor module (keys and shapes must match)."""
    result = ours.load_state_dict(theirs.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    return ours


def assert_same(a, b, rtol=1e-10, atol=1e-12, msg=""):
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=msg)


def compare_grads(theirs, ours, rtol=1e-9, atol=1e-11):
    """Every parameter's gradient, by name."""
    tgrads = {n: p.grad for n, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        assert p.grad is not None, f"{name}: no gradient"
        assert_same(p.grad, tgrads[name], rtol, atol, msg=f"gradient of {name}")
