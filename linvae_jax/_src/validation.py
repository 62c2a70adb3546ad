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


def check_hyper(hyper: Mapping[str, Any], required: tuple[str, ...],
                positive: tuple[str, ...] | None = None) -> None:
  """Check that ``hyper`` has every ``required`` key and positive values."""
  missing = [k for k in required if k not in hyper]
  if missing:
    raise ValueError(
        f"hyperparameters {missing} are missing; this model needs {list(required)}.")
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
  """Raise if ``mat`` is not square, symmetric and positive semi-definite."""
  if not is_concrete(mat):
    return
  a = np.asarray(mat, dtype=np.float64)
  if a.ndim != 2 or a.shape[0] != a.shape[1]:
    raise ValueError(f"{name} must be a square matrix, got shape {a.shape}.")
  check_finite(name, a)
  scale = max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)
  tol = (rtol if rtol is not None else 1e3 * a.shape[0] * np.finfo(np.asarray(mat).dtype).eps)
  asym = float(np.max(np.abs(a - a.T)))
  if asym > tol * scale:
    raise ValueError(f"{name} is not symmetric (max |A - A^T| = {asym:.3g}).")
  lo = float(np.linalg.eigvalsh(0.5 * (a + a.T))[0])
  if lo < -tol * scale:
    raise ValueError(
        f"{name} is indefinite (smallest eigenvalue {lo:.3g}); a second moment must be PSD.")


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
