"""Learned spectra and spectral distances, shared by every model.

Conventions: every spectrum is returned sorted **non-increasing**. Singular
values come from ``svd(..., compute_uv=False)``: gradients through singular
*vectors* are NaN at degenerate (e.g. collapsed, exactly zero) singular
values, gradients of the values alone stay finite.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def svdvals(m) -> jax.Array:
  """Singular values of ``m``, non-increasing, length min(m.shape)."""
  m = jnp.asarray(m)
  if m.ndim >= 2 and m.shape[-2] < m.shape[-1]:
    m = jnp.swapaxes(m, -1, -2)  # same values; LAPACK is ~20% faster on a tall batch
  return jnp.linalg.svd(m, compute_uv=False)


def sort_desc(v) -> jax.Array:
  return -jnp.sort(-jnp.asarray(v), axis=-1)


def safe_sqrt(x) -> jax.Array:
  """sqrt(max(x, 0)) with a zero (not inf/NaN) gradient where x <= 0.

  The double-``where`` keeps the untaken branch's gradient finite.
  """
  x = jnp.asarray(x)
  pos = x > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


def pad_to(v, n: int) -> jax.Array:
  v = jnp.asarray(v)
  if v.shape[-1] >= n:
    return v
  pad = [(0, 0)] * (v.ndim - 1) + [(0, n - v.shape[-1])]
  return jnp.pad(v, pad)


def dma(learned, theory) -> jax.Array:
  r"""Mean absolute difference of sorted spectra, Dang et al. (2024) App. A.

  .. math:: D_{MA}(\{u_i\}, \{v_i\}) = \frac1D \sum_{i=1}^D |u_i - v_i|

  Both sets are sorted non-increasing; the shorter one is padded with zeros
  to the length D of the longer. Works on a trailing axis (batched inputs).
  """
  u, v = jnp.asarray(learned), jnp.asarray(theory)
  n = max(u.shape[-1], v.shape[-1])
  u, v = pad_to(sort_desc(u), n), pad_to(sort_desc(v), n)
  shape = jnp.broadcast_shapes(u.shape, v.shape)  # explicit: rank promotion may be strict
  u, v = jnp.broadcast_to(u, shape), jnp.broadcast_to(v, shape)
  return jnp.mean(jnp.abs(u - v), axis=-1)


def active_count(values, tol) -> jax.Array:
  """Number of entries above ``tol`` (rank view of a singular-value spectrum)."""
  return jnp.sum(jnp.asarray(values) > tol, axis=-1)
