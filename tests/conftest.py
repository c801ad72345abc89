"""Shared test setup: hypothesis profiles, and the `engine` / `backend` fixtures that run a test on each autograd
engine and each kernel backend.

The default profile is derandomized, so a red run reproduces exactly (CI and the README command use it).
`pytest --hypothesis-profile=explore` searches with fresh random examples; when it finds a failure,
add it to the test as an explicit @example.
"""
import pytest
from hypothesis import HealthCheck, settings

import minitensor as mt
from minitensor import autograd
from minitensor import backend as backend_module

settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "explore", max_examples=300, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci")


@pytest.fixture(params=["python", "cython"])
def engine(request):
    """Run the test on each autograd engine, restoring the previous one afterwards."""
    if request.param == "cython" and autograd._cython_engine is None:
        pytest.skip("the Cython engine is not built (no C compiler at install time)")
    before = autograd.get_engine()
    autograd.set_engine(request.param)
    yield request.param
    autograd.set_engine(before)


@pytest.fixture(params=["numpy", "native"])
def backend(request):
    """Run the test on each kernel backend, restoring the previous one afterwards."""
    if request.param == "native" and backend_module.native is None:
        pytest.skip("native backend not built (minitensor._C missing): only the numpy backend is tested")
    before = mt.get_backend()
    mt.set_backend(request.param)
    yield request.param
    mt.set_backend(before)
