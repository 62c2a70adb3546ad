"""Independent brute-force minimiser for the closed-form checks (float64).

Multi-start scipy L-BFGS on the flattened parameter pytree with exact JAX
gradients, polished by a second L-BFGS pass at tighter tolerances. It knows
nothing about the closed forms: it only sees a scalar loss.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree


def minimize(loss: Callable, init: Callable, *, n_starts: int = 6, seed: int = 0,
             maxiter: int = 20000, polish: bool = True):
  """Minimise ``loss(params)`` from ``n_starts`` random ``init(key)`` pytrees.

  Returns ``(best_value, best_params, values)`` with ``values`` the final loss
  of every start (their spread shows whether starts agree).
  """
  assert jax.config.jax_enable_x64, "brute force must run in float64"
  p0 = init(jax.random.key(seed))
  flat0, unravel = ravel_pytree(p0)
  f = jax.jit(lambda v: loss(unravel(v)))
  vg = jax.jit(jax.value_and_grad(lambda v: loss(unravel(v))))

  def fun(v):
    val, g = vg(jnp.asarray(v))
    return float(val), np.asarray(g, dtype=np.float64)

  best_val, best_v, values = np.inf, None, []
  for s in range(n_starts):
    v0 = np.asarray(ravel_pytree(init(jax.random.key(seed + 1000 * s)))[0], np.float64)
    res = scipy.optimize.minimize(fun, v0, jac=True, method="L-BFGS-B",
                                  options=dict(maxiter=maxiter, maxcor=50, ftol=1e-16, gtol=1e-12))
    v = res.x
    if polish:
      res = scipy.optimize.minimize(fun, v, jac=True, method="BFGS",
                                    options=dict(maxiter=maxiter, gtol=1e-11))
      if np.isfinite(res.fun) and res.fun <= float(f(jnp.asarray(v))):
        v = res.x
    val = float(f(jnp.asarray(v)))
    values.append(val)
    if val < best_val:
      best_val, best_v = val, v
  return best_val, unravel(jnp.asarray(best_v)), np.asarray(values)
