r"""Collapse metrics of amortised Gaussian encoders, computed from samples.

Pure JAX on arrays (jittable, vmappable over a cell axis); nothing here
knows about a particular network. The inputs are, for n held-out examples
x_i and a d-dimensional latent z with a diagonal Gaussian posterior,

* ``mu`` (n, d): posterior means mu_k(x_i) = E_q[z_k | x_i];
* ``std`` (n, d) (or broadcastable, e.g. (d,)): posterior *standard
  deviations* sigma_k(x_i);
* ``prior_std``: the std of the prior N(0, prior_std^2 I) (eta_enc);
* ``kl`` (n, d): per-example, per-coordinate KL(q(z_k|x_i) || p(z_k)) in nats
  (:func:`gaussian_kl`);
* ``log_w`` (n, K): importance log-weights log p(x_i, z^(s)) - log q(z^(s)|x_i)
  for K posterior draws per example (:func:`iw_estimate`).

Metric parameters (thresholds, eps, delta) are validated when concrete:
a negative ``eps``, a NaN threshold etc. raise ``ValueError``; under ``jit``
they are traced and not checked.

Definitions follow the papers' cited sources; where the official code of
Dang et al. (2024) computes something else under the same name, that
quantity has its own function (:func:`dang_au`, not :func:`active_units`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from linvae_jax._src import validation

# ------------------------------------------------------------- validation --

def _check_nonneg(name, value) -> None:
  if value is None or not validation.is_concrete(value):
    return
  a = np.asarray(value, dtype=float)
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} must be finite, got {a.ravel()[:8]}.")
  if np.any(a < 0):
    raise ValueError(f"{name} must be >= 0, got {a.ravel()[:8]}.")


def _check_prob(name, value) -> None:
  if value is None or not validation.is_concrete(value):
    return
  a = np.asarray(value, dtype=float)
  if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
    raise ValueError(f"{name} must be a probability in [0, 1], got {a.ravel()[:8]}.")


def _check_2d(name, a) -> None:
  if np.ndim(a) != 2:
    raise ValueError(f"{name} must be 2-D (n examples, d latents), got shape {np.shape(a)}.")
  if np.shape(a)[0] < 2:
    raise ValueError(f"{name} needs at least 2 examples, got shape {np.shape(a)}.")


# ------------------------------------------------------------------- KL ---

def gaussian_kl(mu, std, prior_std) -> jax.Array:
  r"""Per-example, per-coordinate KL(N(mu, std^2) || N(0, prior_std^2)), nats.

  .. math:: KL_k(x) = \tfrac12\Big[\frac{\sigma_k(x)^2 + \mu_k(x)^2}{p^2} - 1
     - \log\frac{\sigma_k(x)^2}{p^2}\Big],\quad p = \text{prior\_std}.

  Shape: broadcast of ``mu`` and ``std`` ((n, d) for the metrics below).
  """
  validation.check_positive("prior_std", prior_std)
  mu = jnp.asarray(mu)
  std = jnp.broadcast_to(jnp.asarray(std, mu.dtype), mu.shape)
  r = (std / prior_std) ** 2
  return 0.5 * (r + (mu / prior_std) ** 2 - 1.0 - jnp.log(r))


def kl_per_dim(kl) -> jax.Array:
  """E_x KL(q(z_k|x) || p(z_k)) per coordinate, shape (d,): the mean over examples."""
  return jnp.mean(jnp.asarray(kl), axis=0)


def kl_total(kl) -> jax.Array:
  """E_x KL(q(z|x) || p(z)) = sum over coordinates of :func:`kl_per_dim` (a diagonal
  posterior against an isotropic prior factorises), nats per example."""
  return jnp.sum(kl_per_dim(kl))


# ------------------------------------------------- per-coordinate collapse --

def mean_variance(mu) -> jax.Array:
  r"""A_k = Var_x(E_q[z_k | x]), the unbiased (divisor n - 1) variance over the
  examples of the posterior mean of coordinate k, shape (d,).

  This is He et al.'s ``calc_au`` statistic (jxhe/vae-lagging-encoder) and
  Burda et al.'s (2015) activity A_u = Cov_x(E_{q(u|x)}[u]).
  """
  _check_2d("mu", mu)
  return jnp.var(jnp.asarray(mu), axis=0, ddof=1)


def active_units(mu, threshold=0.01) -> jax.Array:
  """AU (Burda et al. 2015; He et al. 2019): the number of coordinates k with
  ``mean_variance(mu)[k] > threshold`` (0.01 in both), an int32 scalar."""
  _check_nonneg("threshold", threshold)
  return jnp.sum(mean_variance(mu) > threshold).astype(jnp.int32)


def collapse_fraction(kl, eps) -> jax.Array:
  """P_x[KL_k(x) < eps] per coordinate, shape (d,): the empirical fraction of
  examples whose coordinate-k KL is below ``eps`` (Lucas et al. 2019)."""
  _check_nonneg("eps", eps)
  kl = jnp.asarray(kl)
  return jnp.mean((kl < eps).astype(kl.dtype), axis=0)


def eps_delta_collapsed(kl, eps=0.01, delta=0.05) -> jax.Array:
  r"""(eps, delta)-collapse mask (Lucas et al. 2019 §4, used by Dang et al.):
  coordinate k is collapsed if P_x[KL_k(x) < eps] >= 1 - delta, shape (d,) bool.

  Lucas report delta = 0.01, Dang's figures delta = 0.05 (Fig 5: 0.01).
  """
  _check_prob("delta", delta)
  return collapse_fraction(kl, eps) >= 1.0 - delta


def n_eps_delta_collapsed(kl, eps=0.01, delta=0.05) -> jax.Array:
  """Number of (eps, delta)-collapsed coordinates, an int32 scalar."""
  return jnp.sum(eps_delta_collapsed(kl, eps, delta)).astype(jnp.int32)


def dang_au(kl, threshold=0.01) -> jax.Array:
  r"""Dang et al.'s "AU" as their code computes it: the fraction of
  (example, coordinate) pairs whose KL is at least ``threshold``,

  .. math:: \text{dang\_au} = 1 - \frac{1}{nd}\sum_{i,k} 1[KL_k(x_i) < \text{threshold}],

  a number in [0, 1] (the official ``MNIST_*`` scripts, threshold 0.01). It is
  *not* the variance-based AU of Burda et al. that the paper cites
  (:func:`active_units`); ``1 - dang_au`` is the fraction of pairs with
  KL < threshold.
  """
  _check_nonneg("threshold", threshold)
  kl = jnp.asarray(kl)
  # the mean of the complement, not 1 - mean: XLA's mean multiplies by 1/(nd),
  # and 1 - (nd)(1/(nd)) came out -2e-15 under full collapse
  return jnp.mean((kl >= threshold).astype(kl.dtype))


# ------------------------------------------------------ rotation-invariant --

def mean_cov_eigvals(mu) -> jax.Array:
  """Eigenvalues of the sample covariance Cov_x(mu(x)) (divisor n - 1), non-increasing, (d,)."""
  _check_2d("mu", mu)
  mu = jnp.asarray(mu)
  c = mu - jnp.mean(mu, axis=0, keepdims=True)
  cov = c.T @ c / (mu.shape[0] - 1)
  return jnp.linalg.eigvalsh(0.5 * (cov + cov.T))[::-1]


def mean_cov_rank(mu, threshold=0.01) -> jax.Array:
  r"""Rotation-invariant active count: the number of eigenvalues of
  Cov_x(E_q[z|x]) above ``threshold``, an int32 scalar.

  The per-coordinate AU thresholds the *diagonal* of this matrix, so it
  changes under a rotation z -> Q z of the latent space; the eigenvalues do
  not. For a linear encoder mu = W x they are eig(W Cov(x) W^T): the rank view
  of collapse (Dang et al. §4 caveat; the theory notes' rank of W A W^T). With
  an axis-aligned encoder it equals AU.
  """
  _check_nonneg("threshold", threshold)
  return jnp.sum(mean_cov_eigvals(mu) > threshold).astype(jnp.int32)


def mean_std(std) -> jax.Array:
  """Mean encoder std per coordinate, E_x sigma_k(x), shape (d,) (W&Z's sigma-bar_i)."""
  std = jnp.asarray(std)
  return std if std.ndim == 1 else jnp.mean(std, axis=0)


# ------------------------------------------------------ mutual information --

def log_q_matrix(z, mu, std) -> jax.Array:
  r"""M_ij = log q(z_i | x_j) = sum_k log N(z_ik; mu_jk, std_jk^2), shape (n, n).

  Computed with matrix products (expanding the square), so memory is O(n^2),
  not O(n^2 d).
  """
  mu = jnp.asarray(mu)
  std = jnp.broadcast_to(jnp.asarray(std, mu.dtype), mu.shape)
  d = mu.shape[-1]
  inv = 1.0 / std ** 2                                   # (n, d)
  quad = (z ** 2) @ inv.T - 2.0 * z @ (mu * inv).T + jnp.sum(mu ** 2 * inv, axis=1)[None, :]
  return (-0.5 * quad - jnp.sum(jnp.log(std), axis=1)[None, :]
          - 0.5 * d * math.log(2.0 * math.pi))


def mutual_information(key, mu, std) -> jax.Array:
  r"""I(x; z) under the aggregate posterior, He et al.'s (2019) estimator.

  .. math:: \hat I = \frac1n\sum_i \big[-H(q(z|x_i))\big]
     - \frac1n\sum_i \log\Big(\frac1n\sum_j q(z_i | x_j)\Big),\quad z_i \sim q(z|x_i),

  with -H(q(z|x)) = -(d/2) log(2 pi e) - sum_k log sigma_k(x) in closed form
  and the aggregate posterior q(z) approximated by the mixture over the n
  examples (the j = i term included), as in ``calc_mi_q`` of
  jxhe/vae-lagging-encoder. Nats. It is bounded above by log n and can come
  out slightly negative from sampling noise when I is near 0 (maintainer's
  answer in jxhe/vae-lagging-encoder issue 8). One draw per example.
  """
  _check_2d("mu", mu)
  mu = jnp.asarray(mu)
  std = jnp.broadcast_to(jnp.asarray(std, mu.dtype), mu.shape)
  n, d = mu.shape
  z = mu + std * jax.random.normal(key, mu.shape, mu.dtype)
  neg_ent = -0.5 * d * math.log(2.0 * math.pi * math.e) - jnp.sum(jnp.log(std), axis=1)
  log_qz = _log_mixture(z, mu, std) - math.log(n)
  return jnp.mean(neg_ent) - jnp.mean(log_qz)


MI_ROW_BLOCK = 512


def _log_mixture(z, mu, std) -> jax.Array:
  """log sum_j q(z_i | x_j) for every row i, in blocks of ``MI_ROW_BLOCK`` rows
  (``lax.map``) past that size: memory O(block n), not O(n^2), per cell, which
  a vmapped grid of held-out sets of thousands of examples needs (63 cells at
  n = 4096 ran out of memory)."""
  n = z.shape[0]
  if n <= MI_ROW_BLOCK:
    return jax.scipy.special.logsumexp(log_q_matrix(z, mu, std), axis=1)
  nb = -(-n // MI_ROW_BLOCK)
  zp = jnp.pad(z, ((0, nb * MI_ROW_BLOCK - n), (0, 0))).reshape(nb, MI_ROW_BLOCK, -1)
  out = jax.lax.map(
      lambda zb: jax.scipy.special.logsumexp(log_q_matrix(zb, mu, std), axis=1), zp)
  return out.reshape(-1)[:n]


# --------------------------------------------------- importance weighting --

def iw_estimate(log_w) -> dict:
  r"""Importance-weighted log-likelihood from (n, K) log-weights.

  Per example (Burda et al. 2015), with w_s = p(x, z_s) / q(z_s | x) and
  z_s ~ q(z|x), s = 1..K:

  .. math:: \log\hat p(x) = \log\frac1K\sum_s w_s \le \log p(x),

  a lower bound in expectation that tightens as K grows (K = 1: the ELBO).
  Returns a dict of scalars

  * ``iw_ll``: the mean over the n examples of log p-hat(x_i), nats;
  * ``iw_ll_se``: its standard error over examples, std_i / sqrt(n) (ddof 1):
    the usual "test log-likelihood +- s.e." of a data set;
  * ``iw_ll_mc_se``: the Monte-Carlo standard error of ``iw_ll`` given the
    examples (delta method: log p-hat_i has s.e. sd_s(w) / (sqrt(K) mean_s(w)),
    combined as sqrt(sum_i se_i^2) / n); the error that a larger K removes;
  * ``elbo_iw``: mean_{i,s} log w_{is}, the K-sample Monte-Carlo ELBO.
  """
  log_w = jnp.asarray(log_w)
  if log_w.ndim != 2 or log_w.shape[0] < 2:
    raise ValueError(f"log_w must be (n >= 2 examples, K samples), got shape {log_w.shape}.")
  n, k = log_w.shape
  lse = jax.scipy.special.logsumexp(log_w, axis=1)
  per = lse - math.log(k)
  ll = jnp.mean(per)
  se = jnp.std(per, ddof=1) / math.sqrt(n)
  wn = jnp.exp(log_w - lse[:, None]) * k                   # w_s / mean_s(w), mean 1
  ddof = 1 if k > 1 else 0
  rel_sd = jnp.std(wn, axis=1, ddof=ddof)
  mc_se = jnp.sqrt(jnp.sum(rel_sd ** 2 / k)) / n
  return {"iw_ll": ll, "iw_ll_se": se, "iw_ll_mc_se": mc_se, "elbo_iw": jnp.mean(log_w)}


# --------------------------------------------------------------- summary --

def latent_summary(key, mu, std, prior_std, *, eps=0.01, delta=0.05, au_threshold=0.01,
                   prefix: str = "") -> dict:
  """Every latent metric above for one Gaussian latent, as a flat dict.

  Scalars: ``kl`` (total), ``au`` (Burda/He AU count at ``au_threshold``),
  ``dang_au`` (Dang's pair fraction at ``au_threshold``, 0.01 in their
  code), ``n_collapsed`` ((eps, delta)-collapsed count),
  ``mi`` (He's I(x;z)), ``cov_rank`` (eigenvalues of Cov(mu) above
  ``au_threshold``). Arrays (d,): ``kl_per_dim``, ``mean_var``
  (Var_x mu_k), ``collapse_frac`` (P_x[KL_k < eps]), ``mean_std``. Keys get
  ``prefix`` (e.g. ``"z2_"``).
  """
  kl = gaussian_kl(mu, std, prior_std)
  std_b = jnp.broadcast_to(jnp.asarray(std, jnp.asarray(mu).dtype), jnp.shape(mu))
  out = {
      "kl": kl_total(kl), "kl_per_dim": kl_per_dim(kl),
      "au": active_units(mu, au_threshold), "mean_var": mean_variance(mu),
      "dang_au": dang_au(kl, au_threshold),
      "n_collapsed": n_eps_delta_collapsed(kl, eps, delta),
      "collapse_frac": collapse_fraction(kl, eps),
      "mi": mutual_information(key, mu, std_b),
      "cov_rank": mean_cov_rank(mu, au_threshold),
      "mean_std": mean_std(std_b),
  }
  return {prefix + k: v for k, v in out.items()}
