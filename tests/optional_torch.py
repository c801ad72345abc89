"""PyTorch for the parity tests, where it is installed.

The README's test command must pass on a machine without PyTorch. A test module that mixes parity tests with
tests of minitensor alone takes `torch` from here (None when it is missing) and marks each parity test
`needs_torch`: those skip, printing why, and the tests beside them still run. A module of parity tests only may
skip as a whole with a module-level `pytest.importorskip`.
"""
import pytest

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None,
                                 reason="PyTorch is not installed: parity tests need it (.ci/run installs it)")
