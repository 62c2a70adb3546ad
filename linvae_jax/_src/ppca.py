r"""Probabilistic PCA and the exact-posterior linear VAE (Lucas et al. 2019).

Notation (LTGN §3; theory notes §2): data x in R^n with mean mu and sample
covariance S (divisor N) = U_e Lambda U_e^T, lambda_1 >= ... >= lambda_n;
latent z in R^k.

* pPCA: p(z) = N(0, I_k), p(x|z) = N(W z + mu, sigma^2 I_n), so
  p(x) = N(mu, C), C = W W^T + sigma^2 I; M = W^T W + sigma^2 I.
* Linear VAE: the same decoder, q(z|x) = N(V (x - mu), diag(D)).

All log-likelihoods and ELBOs are **per-datapoint averages** in nats;
``sigma2`` is always the decoder noise *variance*; ``D`` is a (k,) vector of
encoder *variances*; eigenvalues are sorted non-increasing.

Mapping to linvae_jax (theory notes §3): the LTGN linear VAE is
``models.vae.LinearVAE`` on centred moments (A = S) with beta = 1,
eta_enc = 1, eta_dec^2 = sigma^2, U = W, W_lib = V, Sigma = diag(D), and
-ELBO = ``LinearVAE.loss`` exactly (both include (n/2) log(2 pi sigma^2)).
"""
from __future__ import annotations

import itertools
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from linvae_jax._src import spectra, validation


def _check_cov(name, s):
  validation.check_psd(name, s)


def _sorted_eigh(s):
  w, v = jnp.linalg.eigh(0.5 * (s + s.T))
  return w[::-1], v[:, ::-1]


def _check_k(k, n):
  if not isinstance(k, (int, np.integer)) or k < 1 or k >= n:
    raise ValueError(f"k must be an integer with 1 <= k < n = {n}, got {k!r}.")


# ------------------------------------------------------------ likelihood --

def ppca_loglik(W, sigma2, S, count=None) -> jax.Array:
  r"""pPCA log-likelihood, LTGN §3: -1/2 [n log 2pi + log det C + tr(C^{-1} S)].

  Per-datapoint average for data with sample covariance ``S`` (divisor N)
  and mu = the sample mean (the ML mean); times ``count`` (N) if given.

  Args:
    W: (n, k) decoder. sigma2: noise *variance* > 0. S: (n, n) covariance.
  """
  _check_cov("S", S)
  validation.check_positive("sigma2", sigma2)
  W, S = jnp.asarray(W), jnp.asarray(S)
  n = S.shape[-1]
  if W.ndim != 2 or W.shape[0] != n:
    raise ValueError(f"W must have shape ({n}, k), got {W.shape}.")
  c = W @ W.T + sigma2 * jnp.eye(n, dtype=S.dtype)
  chol = jnp.linalg.cholesky(c)
  logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
  tr = jnp.trace(jax.scipy.linalg.cho_solve((chol, True), S))
  ll = -0.5 * (n * math.log(2.0 * math.pi) + logdet + tr)
  return ll if count is None else count * ll


@flax.struct.dataclass
class PPCASolution:
  """A pPCA (or linear-VAE) solution.

  Attributes:
    W: (n, k) decoder, columns = scaled principal components (sorted).
    sigma2: noise *variance*.
    loglik: per-datapoint log-likelihood at (W, sigma2).
    active: (k,) bool, column j nonzero (lambda_j > sigma2).
    eigvals: (n,) eigenvalues of S, non-increasing.
  """
  W: jax.Array
  sigma2: jax.Array
  loglik: jax.Array
  active: jax.Array
  eigvals: jax.Array


def _fixed_solution(lam, vec, k, sigma2):
  n = lam.shape[0]
  act = (jnp.arange(n) < k) & (lam > sigma2)
  w = vec[:, :k] * spectra.safe_sqrt(jnp.where(act, lam - sigma2, 0.0))[None, :k]
  # L3 maximum: -1/2 [n log 2pi + sum_act (log lam + 1) + sum_rest (log s2 + lam/s2)].
  terms = jnp.where(act, jnp.log(jnp.where(act, lam, 1.0)) + 1.0, jnp.log(sigma2) + lam / sigma2)
  ll = -0.5 * (n * math.log(2.0 * math.pi) + jnp.sum(terms))
  return PPCASolution(W=w, sigma2=jnp.asarray(sigma2, lam.dtype), loglik=ll,
                      active=act[:k], eigvals=lam)


def ppca_ml(S, k: int) -> PPCASolution:
  r"""Maximum-likelihood pPCA (Tipping & Bishop; LTGN §3, L2).

  sigma2_ML = mean of the discarded eigenvalues lambda_{k+1..n};
  W_ML = U_k (Lambda_k - sigma2_ML I)^{1/2} (R = I);
  max loglik = -1/2 [n log 2pi + sum_{j<=k} log lambda_j + (n-k) log sigma2_ML + n].
  """
  _check_cov("S", S)
  S = jnp.asarray(S)
  _check_k(k, S.shape[-1])
  lam, vec = _sorted_eigh(S)
  lam = jnp.clip(lam, 0.0)
  s2 = jnp.mean(lam[k:])
  return _fixed_solution(lam, vec, k, s2)


def ppca_fixed_sigma2(S, k: int, sigma2) -> PPCASolution:
  r"""Global maximiser of the pPCA log-likelihood at fixed noise *variance*.

  W = U_k (Lambda_k - sigma2 I)_+^{1/2} (LTGN App. A, L3): columns with
  lambda_j <= sigma2 are zero (posterior collapse). With m active columns the
  maximum is -1/2[n log 2pi + sum_{j<=m}(log lambda_j + 1) + (n-m) log sigma2
  + sum_{j>m} lambda_j / sigma2].
  """
  _check_cov("S", S)
  validation.check_positive("sigma2", sigma2)
  S = jnp.asarray(S)
  _check_k(k, S.shape[-1] + 1)  # k = n allowed at fixed sigma2
  lam, vec = _sorted_eigh(S)
  return _fixed_solution(jnp.clip(lam, 0.0), vec, k, jnp.asarray(sigma2, S.dtype))


# ---------------------------------------------------------------- ELBO --

def ltgn_elbo(W, V, D, sigma2, S) -> jax.Array:
  r"""Analytic linear-VAE ELBO, LTGN App. C.1, per-datapoint average:

  ELBO = -1/(2 sigma2) [tr(W D W^T) + tr(W V S V^T W^T) - 2 tr(W V S) + tr S]
         - (n/2) log(2 pi sigma2) - 1/2 [-log det D + tr(V S V^T) + tr D - k].

  Args:
    W: (n, k) decoder. V: (k, n) encoder. D: (k,) encoder *variances*.
    sigma2: decoder noise *variance*. S: (n, n) data covariance.

  Gradients: use autodiff; LTGN's printed (23) has DW where WD is meant.
  """
  W, V, D, S = map(jnp.asarray, (W, V, D, S))
  n, k = W.shape
  wv = W @ V
  rec = (jnp.sum(W * W * D[None, :]) + jnp.trace(wv @ S @ wv.T)
         - 2.0 * jnp.trace(wv @ S) + jnp.trace(S))
  kl = -jnp.sum(jnp.log(D)) + jnp.trace(V @ S @ V.T) + jnp.sum(D) - k
  return -0.5 * rec / sigma2 - 0.5 * n * jnp.log(2.0 * math.pi * sigma2) - 0.5 * kl


def ltgn_optimal_encoder(W, sigma2):
  r"""argmax_{V, D} ELBO at fixed (W, sigma2) (theory notes §2.2, L4).

  V* = M^{-1} W^T, D* = sigma2 / (diag(W^T W) + sigma2) (*variances*),
  M = W^T W + sigma2 I. Returns (V*, D*).
  """
  W = jnp.asarray(W)
  k = W.shape[1]
  wtw = W.T @ W
  m = wtw + sigma2 * jnp.eye(k, dtype=W.dtype)
  return jnp.linalg.solve(m, W.T), sigma2 / (jnp.diagonal(wtw) + sigma2)


def ltgn_elbo_gap(W, sigma2) -> jax.Array:
  r"""loglik - max_{V,D} ELBO = KL(q* || p(z|x)) = 1/2 [log det M~ - log det M] >= 0.

  M~ = diag(W^T W) + sigma2 I (Hadamard: zero iff W^T W is diagonal).
  """
  W = jnp.asarray(W)
  k = W.shape[1]
  wtw = W.T @ W
  m = wtw + sigma2 * jnp.eye(k, dtype=W.dtype)
  return 0.5 * (jnp.sum(jnp.log(jnp.diagonal(wtw) + sigma2)) - jnp.linalg.slogdet(m)[1])


def ltgn_profiled_elbo(W, sigma2, S) -> jax.Array:
  """max_{V, D} ELBO(W, V, D, sigma2) = ppca_loglik - ltgn_elbo_gap."""
  return ppca_loglik(W, sigma2, S) - ltgn_elbo_gap(W, sigma2)


@flax.struct.dataclass
class LinearVAESolution:
  """LTGN Lemma 1 / Cor 1 optimum of the linear VAE.

  Attributes: W (n, k), V (k, n), D (k,) encoder *variances*, sigma2 (noise
  *variance*), elbo (per datapoint; equals the pPCA maximum), active (k,).
  """
  W: jax.Array
  V: jax.Array
  D: jax.Array
  sigma2: jax.Array
  elbo: jax.Array
  active: jax.Array


def ltgn_vae_optimum(S, k: int, sigma2=None) -> LinearVAESolution:
  r"""Global ELBO maximiser of the linear VAE (LTGN Lemma 1, Cor 1; L5).

  W = U_k (Lambda_k - sigma2 I)_+^{1/2} (Pi = I; any signed permutation is
  also optimal), V = Lambda_k^{-1} (Lambda_k - sigma2 I)_+^{1/2} U_k^T,
  D = sigma2 / lambda_j on active columns and 1 on collapsed ones. With
  ``sigma2=None`` sigma2 = sigma2_ML (learned); the ELBO maximum then
  equals the pPCA maximum log-likelihood.
  """
  sol = ppca_ml(S, k) if sigma2 is None else ppca_fixed_sigma2(S, k, sigma2)
  v, d = ltgn_optimal_encoder(sol.W, sol.sigma2)
  # W^T W is diagonal here, so the ELBO gap is 0 and ELBO = loglik.
  return LinearVAESolution(W=sol.W, V=v, D=d, sigma2=sol.sigma2, elbo=sol.loglik,
                           active=sol.active)


# --------------------------------------------------- stationary points --

def stationary_points(S, k: int, sigma2):
  r"""All fixed-sigma2 stationary points of the pPCA log-likelihood (plain numpy).

  LTGN App. A: W = U_J (Lambda_J - sigma2 I)^{1/2} R, padded with zero
  columns, for every set J of |J| <= k eigen-indices with lambda_j > sigma2
  (one representative R = I per J; J listed in increasing index order).
  Stability rule (theory notes §2.5, L7): a local maximum iff J = {1..|J|}
  and (|J| = k or lambda_{|J|+1} <= sigma2); otherwise a saddle. Assumes
  distinct eigenvalues.

  Returns a list of dicts with ``J`` (tuple, 0-based), ``W`` (n, k) and
  ``local_max`` (bool).
  """
  _check_cov("S", S)
  validation.check_positive("sigma2", sigma2)
  s = np.asarray(S, np.float64)
  n = s.shape[0]
  _check_k(k, n + 1)
  lam, vec = np.linalg.eigh(0.5 * (s + s.T))
  lam, vec = lam[::-1], vec[:, ::-1]
  sigma2 = float(sigma2)
  above = [j for j in range(n) if lam[j] > sigma2]
  out = []
  for size in range(0, min(k, len(above)) + 1):
    for J in itertools.combinations(above, size):
      w = np.zeros((n, k))
      for c, j in enumerate(J):
        w[:, c] = vec[:, j] * np.sqrt(lam[j] - sigma2)
      top = J == tuple(range(size))
      local_max = top and (size == k or size == n or lam[size] <= sigma2)
      out.append({"J": J, "W": w, "local_max": bool(local_max)})
  return out


def fig2_blue_line(S, qs, q0: int) -> jax.Array:
  r"""LTGN Fig. 2 "blue line": loglik of the q-latent pPCA MLE at fixed sigma_0^2.

  W_q = U_q (Lambda_q - sigma2_ML(q))^{1/2}, evaluated at sigma_0^2 =
  sigma2_ML(q0) (theory notes §2.9):

    l_q = -1/2 [n log 2pi + sum_{j<=q} log(lambda_j - s_q + s_0)
                + (n - q) log s_0 + sum_{j<=q} lambda_j / (lambda_j - s_q + s_0)
                + sum_{j>q} lambda_j / s_0],   s_q = sigma2_ML(q).

  Args:
    S: (n, n) covariance. qs: static sequence of latent sizes 1 <= q < n.
    q0: latent size fixing sigma_0^2.
  Returns: (len(qs),) per-datapoint log-likelihoods.
  """
  _check_cov("S", S)
  S = jnp.asarray(S)
  n = S.shape[-1]
  _check_k(q0, n)
  qs = [int(q) for q in qs]
  for q in qs:
    _check_k(q, n)
  lam = jnp.clip(_sorted_eigh(S)[0], 0.0)
  s0 = jnp.mean(lam[q0:])
  out = []
  for q in qs:
    sq = jnp.mean(lam[q:])
    top = lam[:q] - sq + s0
    out.append(-0.5 * (n * math.log(2.0 * math.pi) + jnp.sum(jnp.log(top))
                       + (n - q) * jnp.log(s0) + jnp.sum(lam[:q] / top)
                       + jnp.sum(lam[q:]) / s0))
  return jnp.stack(out)
