"""Small shared test problems (imported by test modules, like ``bruteforce``)."""
import numpy as np

import linvae_jax as lv
from linvae_jax._src import moments as moments_lib


def cvae_moments_partial_collapse(seed: int = 3):
  """Moments of (x in R^3, y in R^4) from a random PSD joint, and three betas
  placed by its residual eigenvalues (different active counts), float64."""
  f = np.random.default_rng(seed).standard_normal((40, 7)) / np.sqrt(40)
  j = f.T @ f  # joint second moment of (x, y)
  m = lv.moments_from_second_moments(j[:3, :3], j[3:, 3:], j[:3, 3:])
  theta = np.asarray(moments_lib.residual_eigvals(m))
  # beta * eta_dec^2 between the residual eigenvalues: partial collapse
  betas = [0.5 * theta[0], 0.5 * (theta[0] + theta[1]), 0.3 * theta[-1]]
  return m, betas
