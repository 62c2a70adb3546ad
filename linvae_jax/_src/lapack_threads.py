"""One OpenBLAS thread for the LAPACK calls inside the engine's compiled programs.

On CPU, jax's SVD and ``eigh`` call LAPACK from scipy's OpenBLAS, on one of
XLA's threads. OpenBLAS then wakes its own worker threads, which spin-wait for
work; beside XLA's thread pool, a second pytest worker or any other busy
process they fight for the cores. On a 2-core CPU (CVAE on MNIST quadrant
shapes, d1 = 64, float32; ``benchmarks/results/lapack_threads_cpu.md``) one
history record (the loss, D_MA, the rank view) took 1.4x as long with
OpenBLAS's default 2 threads as with one on an idle machine, 2x beside one busy
process and 4x (up to 15x) beside two; a 3-cell L-BFGS grid 1.2-1.5x. Beside a
second jax process running tests (load 3) a record measured 180-730 ms against
10-15 ms with one thread. The matrices the engine decomposes are small (at
most a few hundred rows): one thread was faster even on the idle machine.

:func:`limited` is a context manager and decorator that sets every loaded
OpenBLAS (scipy's, which jax uses, and numpy's) to ``LINVAE_LAPACK_THREADS``
threads (default 1) and restores the previous counts on exit.
``LINVAE_LAPACK_THREADS=0`` leaves them alone. It only covers work that has
*finished* inside the block: jax dispatches asynchronously, so wrapped
functions block on their results before they return.
"""
from __future__ import annotations

import contextlib
import functools
import os

ENV = "LINVAE_LAPACK_THREADS"


def threads_from_env() -> int:
  """The thread count from ``LINVAE_LAPACK_THREADS`` (default 1; 0: leave alone)."""
  raw = os.environ.get(ENV, "1").strip()
  try:
    n = int(raw)
  except ValueError:
    n = -1
  if n < 0:
    raise ValueError(f"{ENV} must be a non-negative integer (0: leave OpenBLAS's thread "
                     f"count alone), got {raw!r}.")
  return n


@functools.lru_cache(maxsize=1)
def _controller():
  # load the LAPACK jax's CPU kernels call before listing the libraries: the
  # controller only knows libraries loaded when it is made
  import scipy.linalg.cython_lapack  # noqa: F401
  from threadpoolctl import ThreadpoolController
  return ThreadpoolController()


class limited(contextlib.ContextDecorator):  # noqa: N801 - used like a function
  """Context manager / decorator: OpenBLAS at ``LINVAE_LAPACK_THREADS`` threads inside."""

  def _recreate_cm(self):  # a fresh instance per decorated call: re-entrant, thread-safe
    return type(self)()

  def __enter__(self):
    n = threads_from_env()
    self._limiter = _controller().limit(limits=n, user_api="blas") if n else None
    return self

  def __exit__(self, *exc):
    if self._limiter is not None:
      self._limiter.restore_original_limits()
    return False
