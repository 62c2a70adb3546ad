"""What the engine benchmarks measure the engine against, in one place.

* :func:`random_moments`: uncentred second moments of a random Gaussian (x, y)
  with a decaying spectrum;
* :func:`sequential_trainer`: one jitted single-cell trainer with the engine's
  per-cell maths (``model.init`` with the engine's key, Adam through
  ``optax.inject_hyperparams`` with the engine's static arguments, a
  ``lax.scan`` of value-and-grad steps) and nothing else: no vmap, no record,
  no closed form, so its final loss equals the engine's bitwise.

Imports of jax, optax and linvae_jax happen in the callers, which may set jax's
configuration (x64, compile cache) or choose a linvae_jax tree first.
"""
from __future__ import annotations

import numpy as np


def random_moments(lv, d0, d2=0, seed=0, n_extra=32):
  """``lv.moments_from_second_moments`` of f^T f, f Gaussian with column scales
  1/sqrt(1 + i) over the d0 + d2 coordinates (x first, then y); paired if d2 = 0."""
  rng = np.random.default_rng(seed)
  d = d0 + d2
  scales = 1.0 / np.sqrt(1.0 + np.arange(d))
  f = rng.standard_normal((d + n_extra, d)) * scales / np.sqrt(d + n_extra)
  j = f.T @ f
  if d2 == 0:
    return lv.moments_from_second_moments(j)
  return lv.moments_from_second_moments(j[:d0, :d0], j[d0:, d0:], j[:d0, d0:])


def sequential_trainer(jax, optax, model, moments, steps):
  """``train(hyper, lr, init_scale, seed) -> final analytic loss``, jitted, one cell."""
  from linvae_jax._src.engine.optimizers import _ADAM_STATIC  # only the lr is injected

  @jax.jit
  def train(hyper, lr, init_scale, seed):
    params = model.init(jax.random.fold_in(jax.random.key(seed), 0), moments, init_scale)
    opt = optax.inject_hyperparams(optax.adam, static_args=_ADAM_STATIC)(learning_rate=lr)
    state = opt.init(params)

    def step(c, _):
      p, s = c
      loss, g = jax.value_and_grad(model.loss)(p, moments, hyper)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
    return model.loss(params, moments, hyper)
  return train
