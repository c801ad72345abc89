"""Testing tools: gradcheck, gradgradcheck, assert_close, and hypothesis strategies (testing.strategies)."""
from .asserts import assert_close
from .gradcheck import GradcheckError, gradcheck, gradgradcheck

__all__ = ["assert_close", "gradcheck", "gradgradcheck", "GradcheckError"]
