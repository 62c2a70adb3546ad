r"""Linear conditional VAE (Dang et al. 2024 §4.1, eq. 5, Thm 2, App. E).

Model, for a condition x in R^{D0} and an output y in R^{D2}:

.. math::
   q(z|x,y) = N(W_1 x + W_2 y, \Sigma),\quad
   p(y|x,z) = N(U_1 z + U_2 x, \eta_{dec}^2 I_{D2}),\quad
   p(z|x) = N(0, \eta_{enc}^2 I_{d_1}).

With A = E[xx^T], B = E[yy^T], C = E[xy^T], the joint second moment
J = [[A, C], [C^T, B]] of u = [x; y], M = [U1 W1 + U2, U1 W2 - I] and
W = [W1, W2], ``loss`` is the exact per-sample negative beta-ELBO in nats,

.. math::
   \mathcal L = \frac{1}{2\eta_{dec}^2}\big[\operatorname{tr}(MJM^T)
     + \operatorname{tr}(U_1\Sigma U_1^T)\big] + \frac{D_2}{2}\log(2\pi\eta_{dec}^2)
     + \frac{\beta}{2}\Big[\frac{\operatorname{tr}\Sigma + \operatorname{tr}(WJW^T)}{\eta_{enc}^2}
       - d_1 - \log|\Sigma| + d_1\log\eta_{enc}^2\Big].

Dang et al.'s eq. (5) is ``L_CVAE = 2 * loss - D2 log(2 pi eta_dec^2)
- beta d1 log eta_enc^2`` (``paper_loss``).

Closed form (``optimum``). Eliminating U2 and W1 (both enter quadratically
and Sigma-independently) leaves exactly the linear-VAE loss with A replaced
by the regression-residual moment

.. math:: E = B - C^T A^+ C = E[(y - Kx)(y - Kx)^T],\quad K = C^T A^+,

at U2* = K, W1* = -W2* K (relations (7)). Hence, with
theta_i = eig_i(E) (a *variance*, not square-rooted; non-increasing,
0 past rank(E) and past D2):

* learnable Sigma (Thm 2, eq. 6): omega_i* = sqrt(max(0, theta_i - beta
  eta_dec^2)) / eta_enc, sigma_i*^2 = beta eta_dec^2 eta_enc^2 /
  max(theta_i, beta eta_dec^2); mode i collapses iff theta_i <= beta
  eta_dec^2 (then sigma_i* = eta_enc exactly);
* fixed Sigma = diag(sigma^2) (not in the paper): Thm 1 with the VAE theta
  replaced by sqrt(theta_i), the largest theta paired with the smallest sigma.

Errata (docs/errata.md): the Thm 2 proof (eq. 37-39) uses theta^2 where
the theorem uses theta (only the theorem's linear-theta form is the minimum);
Z must be E[x~ y~^T] in R^{d0 x d2}, not the printed E[y~ x~^T]; the authors'
code switches sigma* at theta = sqrt(beta) eta_dec instead of beta eta_dec^2.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from linvae_jax._src import covariance, gaussian, spectra, validation
from linvae_jax._src import moments as moments_lib
from linvae_jax._src.model import LinearModel, Optimum, Posterior
from linvae_jax._src.moments import Moments

ENCODER_VARS = covariance.SETTINGS


@flax.struct.dataclass
class CVAEParams:
  r"""Parameters of the linear CVAE.

  Attributes:
    U1: decoder latent map, shape (D2, d1).
    U2: decoder condition map, shape (D2, D0); p(y|x,z) = N(U1 z + U2 x,
      eta_dec^2 I).
    W1: encoder condition map, shape (d1, D0).
    W2: encoder output map, shape (d1, D2); q(z|x,y) = N(W1 x + W2 y, Sigma).
    sigma_raw: encoder covariance parameters. ``learnable``: log-variances
      log(sigma_k^2), shape (d1,), Sigma = diag(exp(sigma_raw)).
      ``learnable_full``: a (d1, d1) matrix whose lower triangle, with an
      exponentiated diagonal, is the Cholesky factor L of Sigma = L L^T.
      ``fixed``: an empty (0,) array; Sigma = diag(hyper["sigma"]^2).
  """
  U1: jax.Array
  U2: jax.Array
  W1: jax.Array
  W2: jax.Array
  sigma_raw: jax.Array


def _joint(m: Moments):
  """J = E[u u^T] for u = [x; y], shape (D0 + D2, D0 + D2)."""
  return jnp.block([[m.xx, m.xy], [m.xy.T, m.yy]])


def regression(m: Moments, rtol=None) -> jax.Array:
  """K = C^T A^+ (D2, D0): least-squares regression of y on x.

  A^+ is the pseudo-inverse on the eigenvalues of A above
  ``rtol * max eig(A)`` (``moments.positive_eigh``).
  """
  phi, p, mask = moments_lib.positive_eigh(m.xx, rtol)
  inv = jnp.where(mask, 1.0 / jnp.where(mask, phi, 1.0), 0.0)
  return ((m.xy.T @ p) * inv[None, :]) @ p.T


def residual_moment(m: Moments, rtol=None) -> jax.Array:
  """E = B - C^T A^+ C (D2, D2): ``moments.residual_moment`` (the expanded,
  second-order-stable form E[(y - Kx)(y - Kx)^T] at K = C^T A^+)."""
  return moments_lib.residual_moment(m, rtol)


def residual_eigh(m: Moments, rtol=None, e=None):
  """(theta, P_E): eig(E) non-increasing, eigenvectors as columns.

  Eigenvalues at or below ``rtol * tr B`` (default rtol = (D0 + D2) eps)
  are round-off of an exact zero (e.g. y = x gives E = 0) and are set to 0.
  ``e``: E if already computed (``residual_moment(m, rtol)``).
  """
  e = residual_moment(m, rtol) if e is None else e
  w, v = jnp.linalg.eigh(e)
  w, v = w[::-1], v[:, ::-1]
  cut = (moments_lib.default_rtol(m.dim_x + m.dim_y, e.dtype) if rtol is None else rtol)
  w = jnp.where(w > cut * jnp.trace(m.yy), w, 0.0)
  return w, v


@dataclasses.dataclass(frozen=True)
class LinearCVAE(covariance.SingleLatentEncoder, LinearModel):
  """Linear conditional (beta-)VAE; needs unpaired moments of (x, y).

  Args:
    latent_dim: d1. Any positive integer: latent modes past D2 (or past
      rank(E)) have theta = 0 and are always collapsed (Thm 2: "if d2 < d1,
      theta_i = 0").
    encoder_var: ``"learnable"`` (diagonal Sigma), ``"learnable_full"`` (full
      Sigma via Cholesky) or ``"fixed"`` (Sigma = diag(sigma^2), with
      ``hyper["sigma"]`` the encoder *standard deviation*, a scalar or a (d1,)
      vector).
  """
  latent_dim: int
  encoder_var: str = "learnable"

  name: ClassVar[str] = "cvae"
  latents: ClassVar[tuple[str, ...]] = ("z",)
  # init and loss check their inputs too; the optimum gets E computed eagerly
  # (float64 numpy on concrete moments, see ``moments.residual_moment``).
  fast_methods: ClassVar[dict] = {**LinearModel.fast_methods, "init": "check_moments",
                                  "loss": "check"}
  fast_prepare: ClassVar[dict] = {
      "optimum": lambda model, args: {"_residual": residual_moment(args["moments"])}}

  def check_moments(self, moments: Moments):
    if moments.paired:
      raise ValueError("moments must be unpaired moments of (x, y) for a CVAE "
                       "(moments.paired is True: build them with a y).")
    validation.check_moment_blocks(moments)

  def input_moments(self, moments: Moments):
    """(J, mean): second moment and mean of u = [x; y], the posterior input."""
    return _joint(moments), jnp.concatenate([moments.mean_x, moments.mean_y])

  # ---------------------------------------------------------------- params --
  def init(self, key, moments: Moments, scale=0.1) -> CVAEParams:
    self.check_moments(moments)
    ks = jax.random.split(key, 4)
    dt = moments.dtype
    d0, d1, d2 = moments.dim_x, self.latent_dim, moments.dim_y
    nrm = lambda k, s: scale * jax.random.normal(k, s, dt)
    raw = covariance.init_raw(self.encoder_var, d1, dt)
    return CVAEParams(U1=nrm(ks[0], (d2, d1)), U2=nrm(ks[1], (d2, d0)),
                      W1=nrm(ks[2], (d1, d0)), W2=nrm(ks[3], (d1, d2)), sigma_raw=raw)

  # ------------------------------------------------------------------ loss --
  def loss(self, params: CVAEParams, moments: Moments, hyper) -> jax.Array:
    self.check(moments, hyper)
    beta, ev, dv = hyper["beta"], hyper["eta_enc"] ** 2, hyper["eta_dec"] ** 2
    d1, d2 = self.latent_dim, moments.dim_y
    a, b, c = moments.xx, moments.yy, moments.xy
    u1, u2, w1, w2 = params.U1, params.U2, params.W1, params.W2
    # M = U1 P + N with P = [W1, W2], N = [U2, -I], J = [[A, C], [C^T, B]]:
    # tr(M J M^T) = <U1^T U1, P J P^T> + 2 tr(P J N^T U1) + tr(N J N^T), all
    # through d1-sized products (O(d1 D^2 + D0^2 D2) a step, no D^3 product).
    pj_x = w1 @ a + w2 @ c.T            # (P J)[:, :D0]
    pj_y = w1 @ c + w2 @ b              # (P J)[:, D0:]
    pjp = pj_x @ w1.T + pj_y @ w2.T     # P J P^T
    cross = pj_x @ (u2.T @ u1) - pj_y @ u1
    njn = jnp.sum((u2 @ a) * u2) - 2.0 * jnp.sum(u2 * c.T) + jnp.trace(b)
    cov = self.encoder_cov(params, hyper)
    tr_cov, logdet = gaussian.trace_logdet(cov)
    recon_sq = (jnp.sum((u1.T @ u1) * pjp) + 2.0 * jnp.trace(cross) + njn
                + gaussian.trace_quad(u1, cov))
    recon = 0.5 * recon_sq / dv + 0.5 * d2 * jnp.log(2.0 * math.pi * dv)
    kl = 0.5 * ((tr_cov + jnp.trace(pjp)) / ev - d1 - logdet + d1 * jnp.log(ev))
    return recon + beta * kl

  def paper_loss(self, params, moments: Moments, hyper) -> jax.Array:
    """Dang et al. eq. (5): 2 loss - D2 log(2 pi eta_dec^2) - beta d1 log eta_enc^2."""
    l = self.loss(params, moments, hyper)
    return (2.0 * l - moments.dim_y * jnp.log(2.0 * math.pi * hyper["eta_dec"] ** 2)
            - hyper["beta"] * self.latent_dim * jnp.log(hyper["eta_enc"] ** 2))

  def sampled_loss(self, params: CVAEParams, batch, key, hyper) -> jax.Array:
    """Minibatch negative beta-ELBO: one reparameterised z per sample.

    ``batch`` is the pair (x, y), shapes (n, D0) and (n, D2).
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
      raise ValueError("batch must be a pair (x, y) for a CVAE.")
    x, y = batch
    cov = self.encoder_cov(params, hyper)
    mean = x @ params.W1.T + y @ params.W2.T
    z = gaussian.sample_gauss(key, mean, cov)
    resid = y - z @ params.U1.T - x @ params.U2.T
    nll = gaussian.neg_log_normal_iso(jnp.sum(resid ** 2, -1), y.shape[-1], hyper["eta_dec"] ** 2)
    kl = gaussian.kl_gauss_iso_prior(mean, cov, hyper["eta_enc"] ** 2)
    return jnp.mean(nll + hyper["beta"] * kl)

  # --------------------------------------------------------------- spectra --
  def spectrum(self, params: CVAEParams, moments: Moments, hyper) -> dict:
    """Learned spectra, non-increasing.

    ``omega``: singular values of U1, length min(D2, d1); ``sigma_std``
    (learnable settings only): encoder standard deviations (sqrt of the
    diagonal of Sigma, or of its eigenvalues for a full Sigma), length d1.
    """
    out = {"omega": spectra.svdvals(params.U1)}
    if self.encoder_var == "learnable":
      out["sigma_std"] = spectra.sort_desc(jnp.exp(0.5 * params.sigma_raw))
    elif self.encoder_var == "learnable_full":
      cov = self.encoder_cov(params, hyper)
      out["sigma_std"] = spectra.sort_desc(spectra.safe_sqrt(jnp.linalg.eigvalsh(cov)))
    return out

  def posterior(self, params: CVAEParams, hyper) -> dict:
    """q(z_k|x,y) = N([W1 W2]_k [x; y], var_k), prior p(z|x) = N(0, eta_enc^2)."""
    cov = self.encoder_cov(params, hyper)
    var = cov if cov.ndim == 1 else jnp.diagonal(cov)
    return {"z": Posterior(mean_map=jnp.concatenate([params.W1, params.W2], axis=1),
                           var=var, prior_var=hyper["eta_enc"] ** 2, input="xy")}

  # ---------------------------------------------------------------- theory --
  def optimum(self, moments: Moments, hyper, *, _residual=None) -> Optimum:
    r"""Closed-form global minimum of ``loss`` (Dang et al. Thm 2; fixed Sigma: Thm 1 on E).

    theta = eig(E), E = B - C^T A^+ C (variances, non-increasing, padded
    with zeros to d1). Both settings share U2* = K = C^T A^+,
    W2* = (U1*^T U1* + beta c^2 I)^{-1} U1*^T, W1* = -W2* K, c = eta_dec/eta_enc.

    Learnable Sigma (Thm 2, eq. 6, with the sigma switch at theta =
    beta eta_dec^2): omega_i = sqrt(max(0, theta_i - beta eta_dec^2)) / eta_enc,
    U1* = P_E Omega (R = I), Sigma* = beta eta_dec^2 (U1*^T U1* + beta c^2 I)^{-1},
    i.e. sigma_i^2 = beta eta_dec^2 eta_enc^2 / max(theta_i, beta eta_dec^2)
    (std sqrt(beta) eta_enc eta_dec / sqrt(theta_i) when active, eta_enc when
    collapsed). Active iff theta_i > beta eta_dec^2; thresholds
    ``beta`` = theta_i / eta_dec^2 and ``eta_dec`` = sqrt(theta_i / beta).
    L* (eq. 5 convention) = sum_{i>d1} theta_i / eta_dec^2 + sum_{i<=d1}
    [min(theta_i, b) / eta_dec^2 + beta log(max(theta_i, b) / b) - beta log eta_enc^2],
    b = beta eta_dec^2; ``loss`` = (L* + D2 log(2 pi eta_dec^2) + beta d1 log eta_enc^2) / 2.

    Fixed Sigma = diag(sigma^2) (std ``hyper["sigma"]``): with t_i = sqrt(theta_i)
    and sigma'_1 <= ... <= sigma'_{d1} the stds sorted ascending, mode i (the
    i-th largest theta) uses latent coordinate pi(i) of the i-th smallest
    sigma and a_i = sqrt(beta) c sigma'_i: omega_i^2 = max(0, (sqrt(beta) c /
    sigma'_i)(t_i - a_i)); U1* = sum_i omega_i p_i e_{pi(i)}^T. Active iff
    t_i > a_i; thresholds ``beta`` = theta_i / (c sigma'_i)^2, ``eta_dec`` =
    sqrt(theta_i / beta) eta_enc / sigma'_i, ``sigma`` = sqrt(theta_i / beta) / c.
    L* (eq. 5) = [sum_{i>d1} theta_i + sum_{i<=d1} (theta_i - max(0, t_i - a_i)^2)] / eta_dec^2
    + beta sum sigma^2 / eta_enc^2 - beta d1 - beta sum log sigma^2.

    Spectra: ``omega`` (length min(D2, d1)) and, for learnable Sigma,
    ``sigma_std`` (length d1), both non-increasing. ``extras["theta"]`` is
    eig(E) padded/truncated to d1 (variance units). ``_residual`` (internal):
    E precomputed by the eager fast path.
    """
    self.check(moments, hyper)
    beta, eta_enc, eta_dec = hyper["beta"], hyper["eta_enc"], hyper["eta_dec"]
    ev, dv = eta_enc ** 2, eta_dec ** 2
    d1, d2 = self.latent_dim, moments.dim_y
    k = min(d1, d2)
    theta_all, p_e = residual_eigh(moments, e=_residual)
    theta = spectra.pad_to(theta_all, d1)[:d1]
    tail = jnp.sum(theta_all[d1:])  # empty (0) when d1 >= D2
    kreg = regression(moments)
    bc2 = beta * dv / ev  # beta c^2
    const = d2 * jnp.log(2.0 * math.pi * dv) + beta * d1 * jnp.log(ev)

    if self.encoder_var == "fixed":
      s = jnp.broadcast_to(jnp.asarray(hyper["sigma"]), (d1,))
      order = jnp.argsort(s)  # ascending: largest theta meets smallest sigma
      s_asc = s[order]
      t = spectra.safe_sqrt(theta)
      a = jnp.sqrt(bc2) * s_asc
      excess = jnp.maximum(t - a, 0.0)
      omega = spectra.safe_sqrt(jnp.sqrt(bc2) / s_asc * excess)
      modes = spectra.pad_to(p_e[:, :k] * omega[None, :k], d1)  # (D2, d1), column i = mode i
      u1 = modes @ jax.nn.one_hot(order, d1, dtype=modes.dtype)  # mode i -> coord order[i]
      active = t > a
      thresholds = {"beta": theta / (bc2 / beta * s_asc ** 2),
                    "eta_dec": spectra.safe_sqrt(theta / beta) * eta_enc / s_asc,
                    "sigma": spectra.safe_sqrt(theta / beta) * eta_enc / eta_dec}
      paper = ((tail + jnp.sum(theta - excess ** 2)) / dv
               + beta * jnp.sum(s ** 2) / ev - beta * d1 - beta * jnp.sum(jnp.log(s ** 2)))
      raw = jnp.zeros((0,), u1.dtype)
      spec = {"omega": spectra.sort_desc(omega)[:k]}
    else:
      b = beta * dv
      omega = spectra.safe_sqrt(theta - b) / eta_enc
      u1 = spectra.pad_to(p_e[:, :k] * omega[None, :k], d1)
      var = ev * b / jnp.maximum(theta, b)  # Sigma* = b (U1^T U1 + beta c^2 I)^{-1}
      active = theta > b
      thresholds = {"beta": theta / dv, "eta_dec": spectra.safe_sqrt(theta / beta)}
      paper = (tail / dv + jnp.sum(jnp.minimum(theta, b) / dv
                                   + beta * jnp.log(jnp.maximum(theta, b) / b))
               - beta * d1 * jnp.log(ev))
      if self.encoder_var == "learnable":
        raw = jnp.log(var)
      else:
        raw = jnp.diag(0.5 * jnp.log(var))
      spec = {"omega": spectra.sort_desc(omega)[:k],
              "sigma_std": spectra.sort_desc(jnp.sqrt(var))}

    # U1^T U1 is diagonal (orthonormal P_E columns), so the inverse is a division.
    w2 = u1.T / (jnp.sum(u1 ** 2, axis=0) + bc2)[:, None]
    params = CVAEParams(U1=u1, U2=kreg, W1=-w2 @ kreg, W2=w2, sigma_raw=raw)
    return Optimum(spectra=spec, active={"z": active}, loss=0.5 * (paper + const),
                   thresholds=thresholds, params=params, extras={"theta": theta})


MODELS = {"cvae": LinearCVAE}
