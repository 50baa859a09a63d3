"""Test-wide settings: eight simulated CPU devices, so sharding tests run on any laptop.

Set before JAX is imported anywhere: the device count is fixed when the backend starts.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Most of a small test's time is XLA compilation; tests in subprocesses (multi-process training,
# resume after SIGKILL, CLIs, notebooks) compile the same programs again. One persistent cache
# for the whole suite makes every compilation after the first a disk read.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(__file__)), ".cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests (CI runs them; `-m 'not slow'` skips)")
