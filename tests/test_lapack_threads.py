"""OpenBLAS thread limit around the engine's LAPACK work (``_src/lapack_threads``)."""
import jax.numpy as jnp
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from linvae_jax._src import lapack_threads


def _blas_threads():
  jnp.linalg.svd(jnp.ones((3, 2)), compute_uv=False).block_until_ready()  # LAPACK loaded
  return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture(autouse=True)
def three_threads():
  """A known count outside (the suite may run BLAS single-threaded): 3, not 1 or 2."""
  _blas_threads()
  with threadpool_limits(limits=3, user_api="blas"):
    yield


def test_limit_inside_restore_after_nested_and_as_decorator(monkeypatch):
  monkeypatch.delenv(lapack_threads.ENV, raising=False)
  before = _blas_threads()
  assert set(before) == {3}
  assert before, "no OpenBLAS loaded: jax's CPU LAPACK should bring scipy's"
  seen = []

  @lapack_threads.limited()
  def inner():
    seen.append(_blas_threads())
    with lapack_threads.limited():
      seen.append(_blas_threads())
    seen.append(_blas_threads())
  inner()
  inner()  # the decorator is reusable
  assert all(s == [1] * len(before) for s in seen)
  assert _blas_threads() == before


def test_env_zero_leaves_openblas_alone_and_bad_values_are_refused(monkeypatch):
  before = _blas_threads()
  assert set(before) == {3}
  monkeypatch.setenv(lapack_threads.ENV, "0")
  with lapack_threads.limited():
    assert _blas_threads() == before
  monkeypatch.setenv(lapack_threads.ENV, "2")
  with lapack_threads.limited():
    assert _blas_threads() == [2] * len(before)
  assert _blas_threads() == before
  for bad in ("-1", "two", "1.5"):
    monkeypatch.setenv(lapack_threads.ENV, bad)
    with pytest.raises(ValueError, match="LINVAE_LAPACK_THREADS must be a non-negative"):
      with lapack_threads.limited():
        pass
  assert _blas_threads() == before
