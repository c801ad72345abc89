"""Shared test setup: hypothesis profiles.

The default profile is derandomized, so a red run reproduces exactly (CI and the README command use it).
`pytest --hypothesis-profile=explore` searches with fresh random examples; when it finds a failure,
add it to the test as an explicit @example.
"""
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "explore", max_examples=300, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci")
