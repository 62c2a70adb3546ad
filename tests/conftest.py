"""Test configuration: float64, strict dtype/rank promotion, 4 CPU devices.

Device count and x64 must be set before JAX initialises its backend.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_ENABLE_X64", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
  # `pytest -n N` runs N workers on the cores: OpenBLAS threads per worker (numpy's,
  # and scipy's, which jax's CPU LAPACK calls) would only oversubscribe them
  import scipy.linalg.cython_lapack  # noqa: E402,F401 - load it before limiting it
  from threadpoolctl import threadpool_limits  # noqa: E402
  threadpool_limits(limits=1, user_api="blas")

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def rng():
  return np.random.default_rng(0)
