"""The edges of the Tensor class and grad mode (issue 12): the legacy constructor `Tensor(...)`, `to()` and
`device=` (the CPU only, said clearly), deepcopy of a non-leaf, and bare `@no_grad` / `@enable_grad`."""
import pytest

import minitensor as mt


# ---------------------------------------------------------------------------- bare grad-mode decorators
def test_bare_no_grad_and_enable_grad_decorators():
    @mt.no_grad
    def inference(x):
        return x * 2

    @mt.enable_grad
    def training(x):
        return x * 2

    @mt.no_grad()
    def called(x):
        return x * 2

    x = mt.randn(2, requires_grad=True)
    assert not inference(x).requires_grad and not called(x).requires_grad
    assert inference.__name__ == "inference"
    with mt.no_grad():
        assert training(x).requires_grad
    assert mt.is_grad_enabled()
    with mt.no_grad():  # the context managers still work
        assert not mt.is_grad_enabled()
    with mt.set_grad_enabled(False):
        assert not mt.is_grad_enabled()
    assert mt.is_grad_enabled()


def test_grad_mode_with_a_non_function_argument():
    with pytest.raises(TypeError, match="no_grad: takes no arguments, or a function to decorate; got 3"):
        mt.no_grad(3)
