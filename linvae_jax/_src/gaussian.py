"""Small Gaussian helpers shared by the sampled (Monte-Carlo) ELBOs."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def neg_log_normal_iso(resid_sq_norm, dim: int, var) -> jax.Array:
  """-log N(y; mu, var I) given ||y - mu||^2 and the dimension."""
  return 0.5 * resid_sq_norm / var + 0.5 * dim * jnp.log(2.0 * math.pi * var)


def kl_gauss_iso_prior(mean, cov, prior_var) -> jax.Array:
  """KL(N(mean, cov) || N(0, prior_var I)) for a batch of means (n, d).

  ``cov`` is a (d, d) matrix shared by the batch, or a (d,) diagonal.
  """
  d = mean.shape[-1]
  if cov.ndim == 1:
    tr, logdet = jnp.sum(cov), jnp.sum(jnp.log(cov))
  else:
    tr, logdet = jnp.trace(cov), jnp.linalg.slogdet(cov)[1]
  return 0.5 * ((tr + jnp.sum(mean ** 2, axis=-1)) / prior_var - d - logdet
                + d * jnp.log(prior_var))


def sample_gauss(key, mean, cov) -> jax.Array:
  """Reparameterised draws mean + L eps, L L^T = cov (or sqrt of a diagonal)."""
  eps = jax.random.normal(key, mean.shape, mean.dtype)
  if cov.ndim == 1:
    return mean + eps * jnp.sqrt(cov)[None, :]
  return mean + eps @ jnp.linalg.cholesky(cov).T


def cholesky_from_raw(raw) -> jax.Array:
  """Lower-triangular Cholesky factor from an unconstrained square matrix.

  The strict lower triangle is taken as is and the diagonal exponentiated, so
  L L^T is positive definite for every ``raw`` (learnable full covariances).
  """
  return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diagonal(raw)))


def trace_logdet(cov):
  """(tr Sigma, log|Sigma|) for a (d,) diagonal or a (d, d) covariance."""
  if cov.ndim == 1:
    return jnp.sum(cov), jnp.sum(jnp.log(cov))
  return jnp.trace(cov), jnp.linalg.slogdet(cov)[1]


def trace_quad(u, cov) -> jax.Array:
  """tr(U Sigma U^T) without forming the (D, D) product."""
  if cov.ndim == 1:
    return jnp.sum(u * u * cov[None, :])
  return jnp.sum((u @ cov) * u)
