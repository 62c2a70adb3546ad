r"""Linear VAE (Dang et al. 2024 §3; Wang & Ziyin 2022; Lucas et al. 2019).

Model, for an input x in R^{D0} and a target y in R^{D2} (y = x for a VAE):

.. math::
   q(z|x) = N(W x, \Sigma),\quad p(y|z) = N(U z, \eta_{dec}^2 I_{D2}),\quad
   p(z) = N(0, \eta_{enc}^2 I_{d_1}).

``loss`` is the exact per-sample negative beta-ELBO in nats,

.. math::
   \mathcal L = \frac{1}{2\eta_{dec}^2}\Big[\operatorname{tr}B - 2\operatorname{tr}(UWC)
     + \operatorname{tr}(UWAW^TU^T) + \operatorname{tr}(U\Sigma U^T)\Big]
     + \frac{D_2}{2}\log(2\pi\eta_{dec}^2)
     + \frac{\beta}{2}\Big[\frac{\operatorname{tr}\Sigma + \operatorname{tr}(WAW^T)}{\eta_{enc}^2}
       - d_1 - \log|\Sigma| + d_1\log\eta_{enc}^2\Big],

with A = E[xx^T], B = E[yy^T], C = E[xy^T]. Dang et al.'s eq. (3) is
``2 * loss - D0 log(2 pi eta_dec^2) - beta d1 (log eta_enc^2 - 1)``; W&Z's
eq. (5) is ``loss - (D2/2) log(2 pi eta_dec^2)``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from linvae_jax._src import gaussian, spectra, validation
from linvae_jax._src.model import LinearModel, Optimum, Posterior
from linvae_jax._src.moments import Moments

ENCODER_VARS = ("learnable", "learnable_full", "fixed")


@flax.struct.dataclass
class VAEParams:
  r"""Parameters of the linear VAE.

  Attributes:
    U: decoder, shape (D2, d1); p(y|z) = N(U z, eta_dec^2 I).
    W: encoder mean, shape (d1, D0); q(z|x) = N(W x, Sigma).
    sigma_raw: encoder covariance parameters. ``learnable``: log-variances
      log(sigma_k^2), shape (d1,), Sigma = diag(exp(sigma_raw)).
      ``learnable_full``: a (d1, d1) matrix whose lower triangle, with an
      exponentiated diagonal, is the Cholesky factor L of Sigma = L L^T.
      ``fixed``: an empty (0,) array; Sigma = diag(hyper["sigma"]^2).
  """
  U: jax.Array
  W: jax.Array
  sigma_raw: jax.Array


def _cholesky_from_raw(raw):
  low = jnp.tril(raw, -1)
  return low + jnp.diag(jnp.exp(jnp.diagonal(raw)))


@dataclasses.dataclass(frozen=True)
class LinearVAE(LinearModel):
  """Linear (beta-)VAE with a target y (y = x unless the moments are paired).

  Args:
    latent_dim: d1.
    encoder_var: ``"learnable"`` (diagonal Sigma), ``"learnable_full"`` (full
      Sigma via Cholesky) or ``"fixed"`` (Sigma = diag(sigma^2), with
      ``hyper["sigma"]`` the encoder *standard deviation*, a scalar for the
      isotropic case or a (d1,) vector for the diagonal case).
  """
  latent_dim: int
  encoder_var: str = "learnable"

  name: ClassVar[str] = "vae"
  latents: ClassVar[tuple[str, ...]] = ("z",)

  def __post_init__(self):
    if self.encoder_var not in ENCODER_VARS:
      raise ValueError(f"encoder_var must be one of {ENCODER_VARS}, got {self.encoder_var!r}.")
    if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
      raise ValueError(f"latent_dim must be a positive integer, got {self.latent_dim!r}.")

  @property
  def hyper_names(self):
    base = ("beta", "eta_enc", "eta_dec")
    return base + ("sigma",) if self.encoder_var == "fixed" else base

  @property
  def setting(self):
    return self.encoder_var

  def check_moments(self, moments: Moments):
    validation.check_latent_dim("latent_dim", self.latent_dim, moments.dim_x,
                                "the data dimension D0")

  def check_hyper(self, hyper):
    super().check_hyper(hyper)
    if self.encoder_var == "fixed" and validation.is_concrete(hyper["sigma"]):
      s = jnp.shape(hyper["sigma"])
      if s not in ((), (1,), (self.latent_dim,)):
        raise ValueError(f"sigma must be a scalar or have shape ({self.latent_dim},), got {s}.")

  # ---------------------------------------------------------------- params --
  def init(self, key, moments: Moments, scale=0.1) -> VAEParams:
    k1, k2 = jax.random.split(key)
    dt = moments.dtype
    d1 = self.latent_dim
    u = scale * jax.random.normal(k1, (moments.dim_y, d1), dt)
    w = scale * jax.random.normal(k2, (d1, moments.dim_x), dt)
    if self.encoder_var == "learnable":
      raw = jnp.zeros((d1,), dt)
    elif self.encoder_var == "learnable_full":
      raw = jnp.zeros((d1, d1), dt)
    else:
      raw = jnp.zeros((0,), dt)
    return VAEParams(U=u, W=w, sigma_raw=raw)

  def encoder_cov(self, params: VAEParams, hyper):
    """Sigma as a (d1,) diagonal (learnable, fixed) or (d1, d1) matrix (full)."""
    if self.encoder_var == "learnable":
      return jnp.exp(params.sigma_raw)
    if self.encoder_var == "learnable_full":
      l = _cholesky_from_raw(params.sigma_raw)
      return l @ l.T
    return jnp.broadcast_to(jnp.asarray(hyper["sigma"]) ** 2, (self.latent_dim,))

  @staticmethod
  def _tr_logdet(cov):
    if cov.ndim == 1:
      return jnp.sum(cov), jnp.sum(jnp.log(cov))
    return jnp.trace(cov), jnp.linalg.slogdet(cov)[1]

  # ------------------------------------------------------------------ loss --
  def loss(self, params: VAEParams, moments: Moments, hyper) -> jax.Array:
    beta, eta_enc, eta_dec = hyper["beta"], hyper["eta_enc"], hyper["eta_dec"]
    a, b, c = moments.xx, moments.yy, moments.xy
    u, w = params.U, params.W
    cov = self.encoder_cov(params, hyper)
    tr_cov, logdet = self._tr_logdet(cov)
    uw = u @ w
    wa_wt = w @ a @ w.T
    u_cov_ut = (u * cov) @ u.T if cov.ndim == 1 else u @ cov @ u.T
    recon_sq = (jnp.trace(b) - 2.0 * jnp.trace(uw @ c)
                + jnp.trace(uw @ a @ uw.T) + jnp.trace(u_cov_ut))
    d1, d2 = self.latent_dim, moments.dim_y
    ev, dv = eta_enc ** 2, eta_dec ** 2
    recon = 0.5 * recon_sq / dv + 0.5 * d2 * jnp.log(2.0 * math.pi * dv)
    kl = 0.5 * ((tr_cov + jnp.trace(wa_wt)) / ev - d1 - logdet + d1 * jnp.log(ev))
    return recon + beta * kl

  def paper_loss(self, params, moments: Moments, hyper, convention: str = "dang") -> jax.Array:
    """Dang et al. eq. (3) (``convention="dang"``) or W&Z eq. (5) (``"wz"``)."""
    l = self.loss(params, moments, hyper)
    dv, ev = hyper["eta_dec"] ** 2, hyper["eta_enc"] ** 2
    if convention == "dang":
      return (2.0 * l - moments.dim_y * jnp.log(2.0 * math.pi * dv)
              - hyper["beta"] * self.latent_dim * (jnp.log(ev) - 1.0))
    if convention == "wz":
      return l - 0.5 * moments.dim_y * jnp.log(2.0 * math.pi * dv)
    raise ValueError(f"convention must be 'dang' or 'wz', got {convention!r}.")

  def sampled_loss(self, params: VAEParams, batch, key, hyper) -> jax.Array:
    """Minibatch negative beta-ELBO: one reparameterised z per sample.

    ``batch`` is x of shape (n, D0) or a pair (x, y).
    """
    x, y = batch if isinstance(batch, (tuple, list)) else (batch, batch)
    cov = self.encoder_cov(params, hyper)
    mean = x @ params.W.T
    z = gaussian.sample_gauss(key, mean, cov)
    resid = y - z @ params.U.T
    nll = gaussian.neg_log_normal_iso(jnp.sum(resid ** 2, -1), y.shape[-1], hyper["eta_dec"] ** 2)
    kl = gaussian.kl_gauss_iso_prior(mean, cov, hyper["eta_enc"] ** 2)
    return jnp.mean(nll + hyper["beta"] * kl)

  # --------------------------------------------------------------- spectra --
  def spectrum(self, params: VAEParams, moments: Moments, hyper) -> dict:
    """Learned spectra, non-increasing.

    ``omega``: singular values of U; ``lambda``: singular values of
    V = W P_A Phi^{1/2}, i.e. sqrt(eig(W A W^T)); ``sigma_std`` (learnable
    settings only): encoder standard deviations (sqrt of the diagonal of
    Sigma, or of its eigenvalues for a full Sigma).
    """
    out = {"omega": spectra.svdvals(params.U),
           "lambda": spectra.svdvals(params.W @ moments.x_factor)}
    if self.encoder_var == "learnable":
      out["sigma_std"] = spectra.sort_desc(jnp.exp(0.5 * params.sigma_raw))
    elif self.encoder_var == "learnable_full":
      cov = self.encoder_cov(params, hyper)
      out["sigma_std"] = spectra.sort_desc(spectra.safe_sqrt(jnp.linalg.eigvalsh(cov)))
    return out

  def posterior(self, params: VAEParams, hyper) -> dict:
    cov = self.encoder_cov(params, hyper)
    var = cov if cov.ndim == 1 else jnp.diagonal(cov)
    return {"z": Posterior(mean_map=params.W, var=var, prior_var=hyper["eta_enc"] ** 2)}

  # ---------------------------------------------------------------- theory --
  def optimum(self, moments: Moments, hyper) -> Optimum:
    raise NotImplementedError  # owned by the theory work on this module


MODELS = {"vae": LinearVAE}
