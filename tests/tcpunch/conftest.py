"""Hypothesis profiles for the codec fuzz tests (tests/tcpunch/test_fuzz.py).

``tcpunch-ci`` (the default): derandomized, no example database, a few hundred
examples per property, so every run (and CI) explores the same inputs in a few seconds.
``TCPUNCH_FUZZ=tcpunch-long`` explores random inputs at length, for a local hunt.
The profiles are applied per test (``settings.get_profile``), never loaded globally,
so other hypothesis tests keep their own settings.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "tcpunch-ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "tcpunch-long",
    database=None,
    deadline=None,
    max_examples=20_000,
    suppress_health_check=[HealthCheck.too_slow],
)
