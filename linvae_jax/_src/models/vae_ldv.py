r"""Linear VAE with a learnable decoder variance (Wang & Ziyin 2022, App. D).

The model is :class:`~linvae_jax._src.models.vae.LinearVAE` with the decoder
*variance* ``s = eta_dec^2`` promoted to a parameter (``log_s``):

.. math::
   q(z|x) = N(W x, \Sigma),\quad p(y|z) = N(U z, s I_{D2}),\quad
   p(z) = N(0, \eta_{enc}^2 I_{d_1}).

``loss`` is the exact per-sample negative beta-ELBO in nats,
``LinearVAE.loss`` at ``eta_dec^2 = s``; W&Z's ``L^LDV`` (App. D) is
``loss - (D2/2) log(2 pi)``.

Optimum (W&Z App. D, corrected as in the theory notes §1.10; see
``docs/errata.md``). Profiling out U, W, Sigma (Cor. 2 with the
residual R = tr E[yy^T] - ||Z||_F^2 of W&Z Prop. 1 added) leaves

.. math::
   G(s) = \frac{\sum_{i\le d^*}\zeta_i^2 + R}{2s}
     - \frac12\sum_{i\le d_1,\ \zeta_i^2>\beta s}\Big[\frac{\zeta_i^2}{s}
       + \beta\Big(\log\frac{\beta s}{\zeta_i^2} - 1\Big)\Big] + \frac{D_2}{2}\log s .

G is C^1; on [s_{p+1}, s_p), s_p = zeta_p^2/beta, the p leading modes are
active and G'(s) = [(D2 - beta p) s - K_p] / (2 s^2) with
K_p = sum_{i=p+1}^{\hat d^*} zeta_i^2 + R (eq. (49) with the corrected upper
limit \hat d^*, not \hat d_1). So s^* = K_p / (D2 - beta p) for the p with

  b_{p+1} <= beta < b_p,   b_p = D2 zeta_p^2 / (K_p + p zeta_p^2)

(Thm 4 corrected; b_p is non-increasing, so these ranges partition
(0, inf)). Table 1 as printed truncates the sums at \hat d_1 and its rows
leave gaps and overlap. When K_{\hat d_1} = 0 (R = 0 and every nonzero mode
fits in the latent) and beta < D2 / \hat d_1, G -> -inf as s -> 0: the
problem is ill-posed (W&Z App. D, Case 1); the optimum then reports
``loss = -inf``, ``s* = 0`` and ``extras["ill_posed"] = True``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from linvae_jax._src import moments as moments_lib
from linvae_jax._src import spectra, validation
from linvae_jax._src.model import Optimum
from linvae_jax._src.models.vae import LinearVAE, VAEParams


@flax.struct.dataclass
class LDVParams:
  r"""Parameters of the linear VAE with learnable decoder variance.

  Attributes:
    U: decoder, shape (D2, d1).
    W: encoder mean, shape (d1, D0).
    sigma_raw: log encoder *variances* log(sigma_k^2), shape (d1,).
    log_s: log decoder *variance* log(s) = log(eta_dec^2), shape ().
  """
  U: jax.Array
  W: jax.Array
  sigma_raw: jax.Array
  log_s: jax.Array


# ------------------------------------------------------------ profile G(s) --

def _nonzero(z2):
  """Mask of zeta_i^2 that count as nonzero (\\hat d^* of W&Z), relative cut-off."""
  n = max(z2.shape[-1], 1)
  tol = 10.0 * n * jnp.finfo(z2.dtype).eps
  return z2 > tol * jnp.maximum(z2[..., :1], jnp.finfo(z2.dtype).tiny)


def _prep(zeta, residual, latent_dim):
  """zeta^2 zero-padded to length max(d*, d1), with the nonzero mask."""
  z2 = jnp.asarray(zeta) ** 2
  z2 = spectra.pad_to(z2, latent_dim)
  nz = _nonzero(z2)
  z2 = jnp.where(nz, z2, 0.0)
  return z2, nz, jnp.asarray(residual, z2.dtype)


def ldv_profile(s, zeta, residual, beta, latent_dim: int, d2: int) -> jax.Array:
  r"""W&Z's profiled loss G(s) (App. D eq. (44), with R added).

  G(s) = min_{U, W, Sigma} L^LDV at decoder variance s, in W&Z's convention
  (the exact negative beta-ELBO minus (D2/2) log(2 pi)).

  Args:
    s: decoder *variance* eta_dec^2 > 0 (any shape; broadcast over).
    zeta: singular values of Z = E[y x~^T], non-increasing (``moments.zeta``).
    residual: R = tr E[yy^T] - ||Z||_F^2 (``moments.linear_residual``).
    beta: KL weight.
    latent_dim: d1 (static).
    d2: target dimension D2 (static).
  """
  z2, nz, r = _prep(zeta, residual, latent_dim)
  total = jnp.sum(z2) + r
  s = jnp.asarray(s)
  bshape = (1,) * s.ndim + z2.shape  # broadcast modes on a trailing axis
  z2, ok = z2.reshape(bshape), (nz & (jnp.arange(z2.shape[-1]) < latent_dim)).reshape(bshape)
  sb = s[..., None]
  act = ok & (z2 > beta * sb)
  z2s = jnp.where(act, z2, 1.0)
  f = jnp.where(act, z2s / sb + beta * (jnp.log(beta * sb / z2s) - 1.0), 0.0)
  return total / (2.0 * s) - 0.5 * jnp.sum(f, -1) + 0.5 * d2 * jnp.log(s)


def ldv_beta_thresholds(zeta, residual, latent_dim: int, d2: int) -> jax.Array:
  r"""Corrected W&Z Thm 4 critical betas b_p, p = 1..d1 (length d1).

  b_p = D2 zeta_p^2 / (sum_{i>p}^{\hat d^*} zeta_i^2 + R + p zeta_p^2); mode p
  is active at the optimum iff beta < b_p (0 for zeta_p = 0). Non-increasing.
  With R = 0 and \hat d_1 = \hat d^*, b_{\hat d_1} = D2 / \hat d_1 and beta
  below it is the ill-posed regime.
  """
  z2, nz, r = _prep(zeta, residual, latent_dim)
  tail = jnp.sum(z2) - jnp.cumsum(z2) + r  # K_p for p = 1..len
  p = jnp.arange(1, z2.shape[-1] + 1, dtype=z2.dtype)
  b = jnp.where(nz, d2 * z2 / jnp.where(nz, tail + p * z2, 1.0), 0.0)
  return b[:latent_dim]


def ldv_profile_minimum(zeta, residual, beta, latent_dim: int, d2: int) -> dict:
  r"""Global minimiser of G(s) (corrected W&Z Thm 4), jittable, fixed shapes.

  Enumerates the d1 + 1 candidate active counts p; on [s_{p+1}, s_p) the
  piece G_p(s) = K_p/(2s) + ((D2 - beta p)/2) log s + const is unimodal,
  so its minimum is the stationary point K_p/(D2 - beta p) clipped to the
  interval (``G_pieces``). The optimum's p is the count of thresholds
  b_k > beta (Thm 4 corrected); its piece's stationary point is interior, so
  s* and its derivative in beta are those of K_p / (D2 - beta p) on each side
  of a threshold (tested against brute force and central differences).

  Returns a dict: ``s`` (s*, decoder *variance*), ``p`` (active count),
  ``G`` (min G, W&Z convention; -inf if ill-posed), ``ill_posed`` (bool),
  ``G_pieces`` (per-p minima, +inf for empty intervals).
  """
  z2, nz, r = _prep(zeta, residual, latent_dim)
  dt = z2.dtype
  beta = jnp.asarray(beta, dt)
  n = z2.shape[-1]
  ps = np.arange(latent_dim + 1)
  total = jnp.sum(z2) + r
  csum = jnp.concatenate([jnp.zeros((1,), dt), jnp.cumsum(z2)])
  k_p = total - csum[ps]  # K_p = sum_{i>p} zeta_i^2 + R
  z2_ext = jnp.concatenate([jnp.zeros((1,), dt), z2, jnp.zeros((1,), dt)])
  nz_ext = jnp.concatenate([jnp.ones((1,), bool), nz, jnp.zeros((1,), bool)])
  inf = jnp.asarray(jnp.inf, dt)
  hi = jnp.where(ps == 0, inf, z2_ext[ps] / beta)            # s_p
  nxt = np.minimum(ps + 1, n + 1)
  lo = jnp.where((ps + 1 <= latent_dim) & nz_ext[nxt], z2_ext[nxt] / beta, 0.0)  # s_{p+1}
  valid = jnp.asarray(ps == 0) | nz_ext[ps]
  den = d2 - beta * jnp.asarray(ps, dt)
  cand = jnp.where(den > 0, k_p / jnp.where(den > 0, den, 1.0), inf)
  s_p = jnp.clip(cand, lo, hi)
  ktol = 10.0 * max(n, 1) * jnp.finfo(dt).eps * total
  ill = valid & (lo == 0) & (k_p <= ktol) & (den > 0)
  s_safe = jnp.where(valid & ~ill & (s_p > 0), s_p, 1.0)
  # Constant of piece p: -1/2 sum_{i<=p} beta (log(beta / zeta_i^2) - 1).
  incl = (jnp.arange(n)[None, :] < ps[:, None]) & nz[None, :]
  logs = jnp.where(incl, jnp.log(beta / jnp.where(incl, z2[None, :], 1.0)) - 1.0, 0.0)
  const = -0.5 * beta * jnp.sum(logs, -1)
  g = k_p / (2.0 * s_safe) + 0.5 * den * jnp.log(s_safe) + const
  g = jnp.where(valid, jnp.where(ill, -inf, g), inf)
  # The active count comes from the thresholds, not from argmin g: next to b_p
  # two pieces tie to O((beta - b_p)^2), below float64 resolution, and argmin
  # would flip between a clipped bound and the interior point (#13: d omega/d beta
  # off by 1e3 within 1e-9 of b_2). Thm 4 puts that piece's stationary point
  # inside its interval, so s* is the unclipped K_p / (D2 - beta p) (den > 0 as
  # beta < b_p <= D2 / p).
  b = ldv_beta_thresholds(zeta, residual, latent_dim, d2)
  p_thr = jnp.sum(beta < b)
  any_ill = jnp.any(ill)
  best = jnp.where(any_ill, jnp.argmin(g), p_thr)
  s_best = jnp.where(any_ill, 0.0, jnp.where(den > 0, cand, s_p)[best])
  return {"s": s_best, "p": jnp.asarray(ps)[best],
          "G": g[best], "ill_posed": any_ill, "G_pieces": g}


# ------------------------------------------------------- Hessian at origin --

def origin_hessian_eigvals(zeta, sigma, kappa, d0: int, d2: int) -> jax.Array:
  r"""Spectrum of the Hessian of W&Z's L(U, V) at U = V = 0 (Thm 3, generalised).

  L(U, V) = ||U V^T - Z||_F^2 + tr(U Sigma U^T) + kappa ||V||_F^2 (W&Z Prop. 1)
  with Sigma = diag(sigma^2) fixed, kappa = beta eta_dec^2 / eta_enc^2,
  U in R^{d2 x d1}, V in R^{d0 x d1}. For every latent coordinate q and every
  zeta_j (j <= d*) the eigenvalues are

    (sigma_q^2 + kappa) +- 2 sqrt(((sigma_q^2 - kappa)/2)^2 + zeta_j^2),

  plus 2 sigma_q^2 ((d2 - d*)-fold) and 2 kappa ((d0 - d*)-fold): d1 (d0 + d2)
  in all. W&Z (118) is twice the smallest of them for isotropic sigma. The
  Hessian of the exact loss ``LinearVAE.loss`` in (U, V) is this divided by
  2 eta_dec^2; in (U, W) it is congruent (same signs) when A has full rank.

  Args:
    zeta: (d*,) singular values of Z, d* <= min(d0, d2).
    sigma: (d1,) encoder *standard deviations* (or a scalar with d1 = 1).
    kappa: beta eta_dec^2 / eta_enc^2 > 0.
    d0: rank of A (the whitened input dimension), static.
    d2: target dimension, static.

  Returns:
    (d1 (d0 + d2),) eigenvalues, sorted non-increasing.
  """
  zeta = jnp.asarray(zeta)
  sigma = jnp.atleast_1d(jnp.asarray(sigma))
  if zeta.ndim != 1:
    raise ValueError(f"zeta must be 1-D, got shape {zeta.shape}.")
  if sigma.ndim != 1:
    raise ValueError(f"sigma must be a scalar or 1-D, got shape {sigma.shape}.")
  dstar = zeta.shape[0]
  if dstar > min(d0, d2):
    raise ValueError(f"zeta has {dstar} entries, more than min(d0, d2) = {min(d0, d2)}.")
  validation.check_positive("kappa", kappa)
  v2 = sigma[:, None] ** 2
  mid = v2 + kappa
  rad = 2.0 * jnp.sqrt(((v2 - kappa) / 2.0) ** 2 + zeta[None, :] ** 2)
  parts = [(mid + rad).ravel(), (mid - rad).ravel(),
           jnp.repeat(2.0 * sigma ** 2, d2 - dstar),
           jnp.broadcast_to(2.0 * jnp.asarray(kappa, sigma.dtype), (sigma.shape[0] * (d0 - dstar),))]
  return spectra.sort_desc(jnp.concatenate(parts))


def origin_is_global_min(zeta, sigma, kappa) -> jax.Array:
  r"""W&Z Thm 3 criterion, generalised: U = V = 0 is a global minimiser of
  L(U, V) (equivalently its Hessian is PSD) iff zeta_1^2 <= kappa sigma_min^2.

  ``sigma`` are encoder *standard deviations*; kappa = beta eta_dec^2 / eta_enc^2.
  """
  zeta = jnp.asarray(zeta)
  z1 = jnp.max(zeta) if zeta.size else jnp.zeros((), jnp.asarray(sigma).dtype)
  return z1 ** 2 <= kappa * jnp.min(jnp.asarray(sigma)) ** 2


# ------------------------------------------------------------------ model --

@dataclasses.dataclass(frozen=True)
class LinearVAELDV(LinearVAE):
  """Linear beta-VAE with learnable decoder variance s (W&Z App. D).

  Args:
    latent_dim: d1.
    encoder_var: only ``"learnable"`` (diagonal Sigma) is supported.

  Hyperparameters: ``beta``, ``eta_enc`` (prior *std*).
  """
  latent_dim: int
  encoder_var: str = "learnable"

  name: ClassVar[str] = "vae_ldv"

  def __post_init__(self):
    super().__post_init__()
    if self.encoder_var != "learnable":
      raise ValueError(f"encoder_var must be 'learnable' for vae_ldv, got {self.encoder_var!r}.")

  @property
  def hyper_names(self):
    return ("beta", "eta_enc")

  def _vae_hyper(self, params, hyper):
    return {**hyper, "eta_dec": jnp.exp(0.5 * params.log_s)}

  @staticmethod
  def _vae_params(params):
    return VAEParams(U=params.U, W=params.W, sigma_raw=params.sigma_raw)

  def init(self, key, moments, scale=0.1) -> LDVParams:
    p = super().init(key, moments, scale)
    return LDVParams(U=p.U, W=p.W, sigma_raw=p.sigma_raw, log_s=jnp.zeros((), moments.dtype))

  def loss(self, params: LDVParams, moments, hyper) -> jax.Array:
    """Exact negative beta-ELBO (nats): ``LinearVAE.loss`` at eta_dec^2 = s."""
    return super().loss(self._vae_params(params), moments, self._vae_hyper(params, hyper))

  def paper_loss(self, params, moments, hyper, convention: str = "wz") -> jax.Array:
    """W&Z App. D ``L^LDV`` = loss - (D2/2) log(2 pi) (the scale of G(s))."""
    if convention != "wz":
      raise ValueError(f"convention must be 'wz' for vae_ldv, got {convention!r}.")
    return self.loss(params, moments, hyper) - 0.5 * moments.dim_y * math.log(2.0 * math.pi)

  def sampled_loss(self, params: LDVParams, batch, key, hyper) -> jax.Array:
    return super().sampled_loss(self._vae_params(params), batch, key,
                                self._vae_hyper(params, hyper))

  def spectrum(self, params: LDVParams, moments, hyper) -> dict:
    """``LinearVAE.spectrum`` plus ``decoder_std`` = sqrt(s), shape (1,)."""
    out = super().spectrum(self._vae_params(params), moments, hyper)
    out["decoder_std"] = jnp.exp(0.5 * params.log_s)[None]
    return out

  def posterior(self, params: LDVParams, hyper) -> dict:
    return super().posterior(self._vae_params(params), hyper)

  # ---------------------------------------------------------------- theory --
  def optimum(self, moments, hyper) -> Optimum:
    r"""Closed-form global minimiser (corrected W&Z Thm 4 + Thm 2 at s*).

    ``spectra``: ``omega`` (U singular values sqrt((zeta_i^2 - beta s*)_+)/eta_enc),
    ``lambda`` (V singular values eta_enc sqrt((zeta_i^2 - beta s*)_+)/zeta_i),
    ``sigma_std`` (encoder stds sqrt(beta s*) eta_enc / zeta_i if active, else
    eta_enc), ``decoder_std`` (sqrt(s*), shape (1,)); all but ``sigma_std``
    sorted non-increasing, ``sigma_std`` sorted non-increasing too.
    ``thresholds["beta"]``: b_p of :func:`ldv_beta_thresholds`.
    ``extras``: ``decoder_var`` (s*), ``active_count`` (p), ``G`` (min G, W&Z
    convention), ``ill_posed``, ``residual`` (R), ``zeta``.
    """
    self.check(moments, hyper)
    beta, eta_enc = jnp.asarray(hyper["beta"]), jnp.asarray(hyper["eta_enc"])
    d1, d2 = self.latent_dim, moments.dim_y
    p_a, _, inv, _ = moments_lib.whitening(moments)
    zmat = (moments.xy.T @ p_a) * inv[None, :]  # Z = E[y x^T] P Phi^{-1/2}, (D2, D0)
    f, zeta, gt = jnp.linalg.svd(zmat, full_matrices=True)
    resid = moments_lib.linear_residual(moments)
    sol = ldv_profile_minimum(zeta, resid, beta, d1, d2)
    s = sol["s"]
    z2, nz, _ = _prep(zeta, resid, d1)
    z2 = z2[:d1]
    active = (jnp.arange(d1) < sol["p"]) & nz[:d1]
    gap = jnp.where(active, z2 - beta * s, 0.0)
    zsafe = jnp.where(active, z2, 1.0)
    omega = spectra.safe_sqrt(gap) / eta_enc
    theta = eta_enc * spectra.safe_sqrt(gap) / jnp.sqrt(zsafe)
    sig = jnp.where(active, jnp.sqrt(beta * s) * eta_enc / jnp.sqrt(zsafe), eta_enc)
    f = spectra.pad_to(f, d1)[:, :d1]
    u = f * omega[None, :]
    w = (theta[:, None] * gt[:d1, :]) @ (inv[:, None] * p_a.T)
    params = LDVParams(U=u, W=w, sigma_raw=2.0 * jnp.log(sig), log_s=jnp.log(s))
    loss = sol["G"] + 0.5 * d2 * math.log(2.0 * math.pi)
    spec = {"omega": spectra.sort_desc(omega), "lambda": spectra.sort_desc(theta),
            "sigma_std": spectra.sort_desc(sig), "decoder_std": jnp.sqrt(s)[None]}
    return Optimum(
        spectra=spec, active={"z": active}, loss=loss,
        thresholds={"beta": ldv_beta_thresholds(zeta, resid, d1, d2)}, params=params,
        extras={"decoder_var": s, "active_count": sol["p"], "G": sol["G"],
                "ill_posed": sol["ill_posed"], "residual": resid,
                "zeta": spectra.pad_to(zeta, d1)})


MODELS = {"vae_ldv": LinearVAELDV}
