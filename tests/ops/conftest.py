"""Fixtures for op tests: run on each backend, restoring the previous one afterwards."""
import pytest

import minitensor as mt
from minitensor import backend as backend_module


@pytest.fixture(params=["numpy", "native"])
def backend(request):
    if request.param == "native" and backend_module.native is None:
        pytest.skip("native backend not built (minitensor._C missing): only the numpy backend is tested")
    before = mt.get_backend()
    mt.set_backend(request.param)
    yield request.param
    mt.set_backend(before)
