r"""Collapse metrics, shared by every model.

Two views of collapse are needed (W&Z/Lucas notes §4.2):

* **rank view** (rotation-invariant): the number of non-zero singular values
  of the encoder or decoder (:func:`rank_active`). Its thresholds are the
  same for fixed isotropic and learnable Sigma.
* **per-coordinate view** (basis-dependent): latent coordinate k is
  (eps, delta)-collapsed (Lucas et al. 2019) if
  P_u[KL(q(z_k|u) || p(z_k)) < eps] >= 1 - delta; AU counts coordinates
  with Var_u(E_q[z_k]) > 0.01 (Burda et al. 2015). These see collapse only
  when the optimum is axis-aligned (learnable or non-isotropic Sigma).

All functions take a :class:`~linvae_jax.Posterior` ``post`` with
q(z_k|u) = N(m_k^T u, v_k) and prior N(0, p), and the input's moments from
``model.input_moments(moments)``: the *uncentred* second moment E[u u^T] and
the mean E[u]. With m = mean_map, the per-sample KL of coordinate k is

.. math:: KL_k(u) = \tfrac12\big[(v_k + (m_k^T u)^2)/p - 1 - \log(v_k/p)\big].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from linvae_jax._src import validation
from linvae_jax._src.model import Posterior


def _var_term(post: Posterior) -> jax.Array:
  """g_k = v_k/p - 1 - log(v_k/p) >= 0: the KL of coordinate k at mu = 0, x2."""
  r = post.var / post.prior_var
  return r - 1.0 - jnp.log(r)


def _quad(m, mat) -> jax.Array:
  """diag(m mat m^T) without forming the product's off-diagonal."""
  return jnp.einsum("ki,ij,kj->k", m, mat, m)


def kl_per_dim(post: Posterior, second_moment) -> jax.Array:
  """Data-mean KL(q(z_k|u) || N(0, p)) per coordinate, shape (d,), nats."""
  e_mu2 = _quad(post.mean_map, second_moment)
  return 0.5 * (_var_term(post) + e_mu2 / post.prior_var)


def mean_variance(post: Posterior, second_moment, mean) -> jax.Array:
  """Var_u(m_k^T u) per coordinate: the AU statistic A_k."""
  cov = second_moment - jnp.outer(mean, mean)
  return _quad(post.mean_map, cov)


def active_units(post: Posterior, second_moment, mean, threshold=0.01) -> jax.Array:
  """AU mask: Var_u(E_q[z_k]) > ``threshold`` (0.01 in Burda et al.), ``threshold >= 0``."""
  validation.check_metric_param("threshold (au_threshold)", threshold)
  return mean_variance(post, second_moment, mean) > threshold


def collapse_prob_gaussian(post: Posterior, mean, second_moment, eps) -> jax.Array:
  r"""P_u[KL_k(u) < eps] per coordinate for Gaussian u, closed form.

  m_k^T u ~ N(a_k, s_k^2) with a_k = m_k^T E[u], s_k^2 = m_k^T Cov(u) m_k.
  KL_k < eps iff (m_k^T u)^2 < t_k := p (2 eps - g_k); so the probability is
  Phi((sqrt t - a)/s) - Phi((-sqrt t - a)/s), or 1[a^2 < t] when s = 0, and
  0 when t <= 0. (Lucas et al. 2019 §4 definition; the zero-mean case is the
  chi^2_1 form of the W&Z/Lucas notes §2.7.)
  """
  a = post.mean_map @ mean
  s2 = mean_variance(post, second_moment, mean)
  validation.check_metric_param("eps", eps)
  t = post.prior_var * (2.0 * eps - _var_term(post))
  tpos = t > 0
  rt = jnp.sqrt(jnp.where(tpos, t, 0.0))
  spos = s2 > 0
  s = jnp.sqrt(jnp.where(spos, s2, 1.0))
  prob_gauss = norm.cdf((rt - a) / s) - norm.cdf((-rt - a) / s)
  prob_point = (a ** 2 < t).astype(prob_gauss.dtype)
  return jnp.where(tpos, jnp.where(spos, prob_gauss, prob_point), 0.0)


def eps_delta_collapsed(post: Posterior, mean, second_moment, eps, delta) -> jax.Array:
  """(eps, delta)-collapse mask under Gaussian u: P[KL_k < eps] >= 1 - delta."""
  validation.check_metric_param("delta", delta, hi=1.0)
  return collapse_prob_gaussian(post, mean, second_moment, eps) >= 1.0 - delta


def kl_samples(post: Posterior, inputs) -> jax.Array:
  """Per-sample, per-coordinate KL for data ``inputs`` of shape (n, D_u)."""
  mu = inputs @ post.mean_map.T
  prior_var = jnp.broadcast_to(post.prior_var, post.var.shape)  # scalar or (d,)
  return 0.5 * (_var_term(post)[None, :] + mu ** 2 / prior_var[None, :])


def collapse_fraction_empirical(post: Posterior, inputs, eps) -> jax.Array:
  """Fraction of the data set with KL_k(u) < eps, per coordinate (the papers' estimate)."""
  validation.check_metric_param("eps", eps)
  kl = kl_samples(post, inputs)
  return jnp.mean((kl < eps).astype(kl.dtype), axis=0)


def eps_delta_collapsed_empirical(post: Posterior, inputs, eps, delta) -> jax.Array:
  validation.check_metric_param("delta", delta, hi=1.0)
  return collapse_fraction_empirical(post, inputs, eps) >= 1.0 - delta


def rank_active(values, rtol=1e-3) -> jax.Array:
  """Number of singular values above ``rtol * max(1, max(values))`` (rank view), ``rtol >= 0``."""
  validation.check_metric_param("rank_rtol", rtol)
  values = jnp.asarray(values)
  scale = jnp.maximum(1.0, jnp.max(values, axis=-1, keepdims=True))
  return jnp.sum(values > rtol * scale, axis=-1)
