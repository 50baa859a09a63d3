"""Test-wide settings: eight simulated CPU devices, so sharding tests run on any laptop.

Set before JAX is imported anywhere: the device count is fixed when the backend starts.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests (CI runs them; `-m 'not slow'` skips)")
