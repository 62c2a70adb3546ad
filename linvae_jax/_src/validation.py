"""Eager input checks that raise ``ValueError`` naming the offending argument.

The jittable cores never branch on values. Public entry points call these
helpers first; each check runs only on *concrete* values and is a no-op on
tracers, so the same function is safe inside ``jit``/``vmap`` and loud outside.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
  """True when no leaf of ``x`` is a JAX tracer (so its value can be read)."""
  return not any(isinstance(l, jax.core.Tracer) for l in jax.tree.leaves(x))


def check_positive(name: str, value: Any) -> None:
  """Raise if any entry of ``value`` is not a finite number > 0."""
  if value is None or not is_concrete(value):
    return
  a = np.asarray(value, dtype=float)
  if a.size == 0:
    raise ValueError(f"{name} is empty; it needs at least one value > 0.")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} must be finite, got {a.ravel()[:8]}.")
  if np.any(a <= 0):
    raise ValueError(
        f"{name} must be > 0, got min {a.min():.6g} (values {a.ravel()[:8]}).")


VECTOR_HYPER = ("sigma", "sigma1", "sigma2")  # fixed encoder stds may be diagonals


def check_metric_param(name: str, value: Any, *, lo: float = 0.0, hi: float = np.inf,
                       open_lo: bool = False) -> None:
  """A finite metric parameter in [lo, hi] (``(lo, hi]`` with ``open_lo``); no-op on tracers."""
  if value is None or not is_concrete(value):
    return
  a = np.asarray(value, dtype=float)
  bad = ~np.isfinite(a) | (a < lo) | (a > hi) | ((a <= lo) if open_lo else False)
  if np.any(bad):
    rng = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
    raise ValueError(f"{name} must be a finite number in {rng}, got {a.ravel()[:8]}.")


def check_hyper(hyper: Mapping[str, Any], required: tuple[str, ...],
                positive: tuple[str, ...] | None = None) -> None:
  """Check that ``hyper`` has every ``required`` key and positive values."""
  missing = [k for k in required if k not in hyper]
  if missing:
    raise ValueError(
        f"hyperparameters {missing} are missing; this model needs {list(required)}.")
  for k in required:
    v = hyper[k]
    if k not in VECTOR_HYPER and is_concrete(v) and np.ndim(v) != 0:
      raise ValueError(f"hyperparameter {k!r} must be a scalar per cell, got shape "
                       f"{np.shape(v)}; sweep several values with lv.grid.product({k}=[...]).")
  for k in (required if positive is None else positive):
    check_positive(k, hyper[k])


def check_finite(name: str, value: Any) -> None:
  if value is None or not is_concrete(value):
    return
  a = np.asarray(value)
  if not np.all(np.isfinite(a)):
    bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    raise ValueError(f"{name} has {bad} non-finite entries (NaN or inf).")


def check_shape(name: str, value: Any, shape: tuple) -> None:
  """``shape`` may contain ``None`` for a free axis."""
  s = np.shape(value)
  if len(s) != len(shape) or any(e is not None and e != a for a, e in zip(s, shape)):
    want = tuple("*" if e is None else e for e in shape)
    raise ValueError(f"{name} has shape {s}, expected {want}.")


def check_psd(name: str, mat: Any, *, rtol: float | None = None) -> None:
  """Raise if ``mat`` is not square, symmetric and positive semi-definite.

  PSD within ``rtol * max|A|``: a Cholesky factorisation of
  ``A + rtol max|A| I`` (about 10x cheaper than ``eigvalsh`` at MNIST's
  784 x 784); only a failure pays for the eigenvalues named in the message.
  """
  if not is_concrete(mat):
    return
  a = np.asarray(mat, dtype=np.float64)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"{name} must be a square matrix, got shape {a.shape}.")
  check_finite(name, a)
  scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny) if a.size else 1.0
  tol = (rtol if rtol is not None else 1e3 * a.shape[0] * np.finfo(np.asarray(mat).dtype).eps)
  asym = float(np.max(np.abs(a - a.T))) if a.size else 0.0
  if asym > tol * scale:
    raise ValueError(f"{name} is not symmetric (max |A - A^T| = {asym:.3g}).")
  sym = 0.5 * (a + a.T)
  try:
    np.linalg.cholesky(sym + (tol * scale) * np.eye(a.shape[0]))
    return
  except np.linalg.LinAlgError:
    pass
  lo = float(np.linalg.eigvalsh(sym)[0])
  if lo < -tol * scale:
    raise ValueError(
        f"{name} is indefinite (smallest eigenvalue {lo:.3g}); a second moment must be PSD.")


_PSD_CHECKED: list = []  # the last few moments found PSD: (xx, yy, xy) held, compared by identity


def check_moments_psd(moments) -> None:
  """A, B and the joint [[A, C], [C^T, B]] of ``moments`` symmetric and PSD.

  ``LinearModel.check`` calls this, so hand-built :class:`Moments` that skip
  ``moments_from_*`` are checked too: one Cholesky of the joint moment (A and
  B are its diagonal blocks; A alone for paired moments, whose joint is
  [[A, A], [A, A]]). Moments already found PSD (the same arrays) are not
  checked again, so repeated ``optimum`` calls on MNIST pay once.
  """
  blocks = (moments.xx, moments.yy, moments.xy)
  if not is_concrete(blocks):
    return
  if any(all(a is b for a, b in zip(entry, blocks)) for entry in _PSD_CHECKED):
    return
  check_moment_blocks(moments)
  xx = np.asarray(moments.xx, np.float64)
  if getattr(moments, "paired", False):
    check_psd("moments.xx (A = E[x x^T])", xx)
  else:
    yy, xy = np.asarray(moments.yy, np.float64), np.asarray(moments.xy, np.float64)
    try:
      check_psd("joint moment [[A, C], [C^T, B]]", np.block([[xx, xy], [xy.T, yy]]))
    except ValueError:
      check_psd("moments.xx (A = E[x x^T])", xx)  # name the block at fault, if one is
      check_psd("moments.yy (B = E[y y^T])", yy)
      raise
  _PSD_CHECKED.append(blocks)
  del _PSD_CHECKED[:-4]


def check_latent_dim(name: str, d: int, limit: int, what: str) -> None:
  if not isinstance(d, (int, np.integer)) or d < 1:
    raise ValueError(f"{name} must be a positive integer, got {d!r}.")
  if d > limit:
    raise ValueError(f"{name}={d} is larger than {what} ({limit}).")


def check_moment_blocks(moments) -> None:
  """Shapes of A, B, C and the means agree, and every block is finite."""
  d0, d2 = moments.xx.shape[-1], moments.yy.shape[-1]
  for name, a, shape in (("moments.xx (A = E[x x^T])", moments.xx, (d0, d0)),
                         ("moments.yy (B = E[y y^T])", moments.yy, (d2, d2)),
                         ("moments.xy (C = E[x y^T])", moments.xy, (d0, d2)),
                         ("moments.mean_x", moments.mean_x, (d0,)),
                         ("moments.mean_y", moments.mean_y, (d2,))):
    check_shape(name, a, shape)
    check_finite(name, a)
