"""Hypothesis profile for the operator suite: enough examples to find bugs, fast on 2 cores."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "operators", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("operators")
