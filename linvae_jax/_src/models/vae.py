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

Closed-form optimum (``LinearVAE.optimum``). Whiten x on the range of A,
x~ = Phi^{-1/2} P_A^T x, and take the SVD Z = E[y x~^T] = F diag(zeta) G^T
(zeta non-increasing, zeta_i := 0 past min(rank A, D2); for y = x,
zeta_i = theta_i = sqrt(eig_i A)). With kappa = beta eta_dec^2 / eta_enc^2,
R = tr B - ||Z||_F^2 (W&Z Prop. 1, corrected) and V = W P_A Phi^{1/2},

.. math::
   \mathcal L = \frac{\|UV - Z\|_F^2 + \operatorname{tr}(U\Sigma U^T)
     + \kappa\|V\|_F^2 + R}{2\eta_{dec}^2}
     + \frac\beta2\sum_k\Big(\frac{\sigma_k^2}{\eta_{enc}^2} - 1
       - \log\frac{\sigma_k^2}{\eta_{enc}^2}\Big) + \frac{D_2}{2}\log(2\pi\eta_{dec}^2).

Mode i (i <= d1) is paired with an encoder std s_i and contributes the
decoder singular value omega_i, the encoder singular value lambda_i
(of V) and the loss reduction g_i = (zeta_i - sqrt(kappa) s_i)_+^2 / (2 eta_dec^2):

* fixed Sigma (Dang Thm 1; W&Z Prop. 2 / Cor. 1 *corrected*): s_i = sigma_(i),
  the stds sorted **ascending** (largest zeta with smallest sigma);
  omega_i^2 = (sqrt(kappa)/s_i)(zeta_i - sqrt(kappa) s_i)_+,
  lambda_i^2 = (s_i/sqrt(kappa))(zeta_i - sqrt(kappa) s_i)_+.
  s_i = eta_enc is W&Z Thm 1.
* learnable Sigma (Dang Thm 4 / App. D.2; W&Z Prop. 3, Thm 2 *corrected*):
  s_i = sqrt(beta) eta_dec eta_enc / zeta_i if zeta_i^2 > beta eta_dec^2, else
  eta_enc (also for zeta_i = 0, i > d*: W&Z print 0);
  omega_i = sqrt((zeta_i^2 - beta eta_dec^2)_+) / eta_enc,
  lambda_i = eta_enc sqrt((zeta_i^2 - beta eta_dec^2)_+) / zeta_i.

L* = tr B / (2 eta_dec^2) - sum_i g_i + (beta/2) sum_k (s_k^2/eta_enc^2 - 1
- log(s_k^2/eta_enc^2)) + (D2/2) log(2 pi eta_dec^2), with tr B = sum zeta^2 + R.
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


@dataclasses.dataclass(frozen=True)
class LinearVAE(covariance.SingleLatentEncoder, LinearModel):
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

  def check_moments(self, moments: Moments):
    validation.check_moment_blocks(moments)
    validation.check_latent_dim("latent_dim", self.latent_dim, moments.dim_x,
                                "the data dimension D0")

  # ---------------------------------------------------------------- params --
  def init(self, key, moments: Moments, scale=0.1) -> VAEParams:
    k1, k2 = jax.random.split(key)
    dt = moments.dtype
    d1 = self.latent_dim
    u = scale * jax.random.normal(k1, (moments.dim_y, d1), dt)
    w = scale * jax.random.normal(k2, (d1, moments.dim_x), dt)
    return VAEParams(U=u, W=w, sigma_raw=covariance.init_raw(self.encoder_var, d1, dt))

  # ------------------------------------------------------------------ loss --
  def loss(self, params: VAEParams, moments: Moments, hyper) -> jax.Array:
    beta, eta_enc, eta_dec = hyper["beta"], hyper["eta_enc"], hyper["eta_dec"]
    a, b, c = moments.xx, moments.yy, moments.xy
    u, w = params.U, params.W
    cov = self.encoder_cov(params, hyper)
    tr_cov, logdet = gaussian.trace_logdet(cov)
    # Traces through d1 x d1 products: O(d1 D^2) a step, never the D x D
    # product U W (3 D^3 flops, 1.4 GFLOP at MNIST's D = 784):
    # tr(U W C) = <W C, U^T>, tr(U W A W^T U^T) = <U^T U, W A W^T>.
    wa_wt = (w @ a) @ w.T
    recon_sq = (jnp.trace(b) - 2.0 * jnp.sum((w @ c) * u.T)
                + jnp.sum((u.T @ u) * wa_wt) + gaussian.trace_quad(u, cov))
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
    r"""Closed-form global minimiser of :meth:`loss` (module docstring).

    Valid for y = x (paired moments) and a general target y (W&Z's model,
    zeta = singular values of Z, R included in L*), for every ``encoder_var``.

    Returns an :class:`Optimum` with

    * ``spectra``: ``omega`` (singular values of U*), ``lambda`` (singular
      values of V* = W* P_A Phi^{1/2}) and, for learnable Sigma, ``sigma_std``
      (encoder *standard deviations*); each length d1, sorted non-increasing.
    * ``active["z"]``: mode i active iff zeta_i > sqrt(kappa) s_i (a prefix of
      the sorted modes; rank / rotation-invariant view of collapse).
    * ``loss``: L*, same convention as :meth:`loss`.
    * ``thresholds``: per mode (non-increasing), the critical ``beta``
      (fixed: zeta_i^2 eta_enc^2 / (eta_dec^2 sigma_(i)^2); learnable:
      zeta_i^2 / eta_dec^2) and ``eta_dec`` (its square root with beta in
      place of eta_dec^2), other hyperparameters held fixed; mode i is
      active iff the hyperparameter is strictly below its threshold.
    * ``params``: U* = sum_i omega_i f_i e_{pi(i)}^T, W* = sum_i lambda_i
      e_{pi(i)} (P_A Phi^{-1/2} g_i)^T (pseudo-inverse whitening on range A,
      zero on null A) and Sigma*, with ``loss(params) == L*``.
    * ``extras``: ``zeta`` (d1,), ``perm`` (mode i sits on latent coordinate
      perm[i]: the ascending-sigma order for fixed Sigma, identity otherwise),
      ``sigma_std_modes`` (the std paired with each mode, mode order) and
      ``coord_collapse_forced`` (see :func:`coord_collapse_forced`).

    Jittable and vmappable over every hyperparameter (including ``sigma``);
    gradients in the hyperparameters are finite at and beyond thresholds.
    """
    self.check(moments, hyper)
    d1 = self.latent_dim
    dt = moments.dtype
    zeta, f, gx = data_modes(moments, d1)
    if self.encoder_var == "fixed":
      sig = jnp.broadcast_to(jnp.asarray(hyper["sigma"], dt), (d1,))
      s, perm = pair_sigma(sig)
      sig_coord = sig
    else:
      s = learnable_sigma_std(zeta, hyper)
      perm = jnp.arange(d1)
      sig_coord = s
    if self.encoder_var == "fixed":
      omega, lam, active = mode_spectra(zeta, s, hyper)
    else:
      omega, lam, active = learnable_mode_spectra(zeta, hyper)
    loss = optimal_loss(zeta, s, jnp.trace(moments.yy), moments.dim_y, hyper)

    # place mode i on latent coordinate perm[i]
    inv = jnp.argsort(perm)
    u = (f * omega[None, :])[:, inv]
    w = (gx * lam[None, :]).T[inv, :]
    if self.encoder_var == "learnable":
      raw = 2.0 * jnp.log(sig_coord)
    elif self.encoder_var == "learnable_full":
      raw = jnp.diag(jnp.log(sig_coord))  # Cholesky factor diag(sigma*)
    else:
      raw = jnp.zeros((0,), dt)
    params = VAEParams(U=u, W=w, sigma_raw=raw)

    spec = {"omega": spectra.sort_desc(omega), "lambda": spectra.sort_desc(lam)}
    if self.encoder_var != "fixed":
      spec["sigma_std"] = spectra.sort_desc(s)
    sig_thr = None if self.encoder_var != "fixed" else s
    thresholds = {"beta": critical_beta(zeta, hyper, sig_thr),
                  "eta_dec": critical_eta_dec(zeta, hyper, sig_thr)}
    extras = {"zeta": zeta, "perm": perm, "sigma_std_modes": s,
              "coord_collapse_forced": coord_collapse_forced(self.encoder_var, s)}
    return Optimum(spectra=spec, active={"z": active}, loss=loss,
                   thresholds=thresholds, params=params, extras=extras)


# ------------------------------------------------------ closed forms (pure) --
# Plain jnp functions of (zeta, hyper): jittable, vmappable, no value branching.

def kappa(hyper) -> jax.Array:
  """kappa = beta eta_dec^2 / eta_enc^2 (W&Z §3; Dang's beta c^2)."""
  return hyper["beta"] * hyper["eta_dec"] ** 2 / hyper["eta_enc"] ** 2


def data_modes(moments: Moments, n_modes: int):
  r"""(zeta, F, G_x) for the first ``n_modes`` modes of Z = E[y x~^T].

  zeta (n_modes,) non-increasing singular values of Z (zero-padded past
  min(rank A, D2)); F (D2, n_modes) left singular vectors; G_x (D0, n_modes)
  = P_A Phi^{-1/2} G, so that the encoder row of mode i is lambda_i G_x[:, i]
  (V = W P_A Phi^{1/2} then has right singular vectors G). For y = x, Z =
  P_A Phi^{1/2}: zeta = sqrt(eig A) (``moments.theta``), F = P_A, G = I.
  Zero columns are padded past min(D0, D2).
  """
  p, phi, inv, _ = moments_lib.whitening(moments)
  if moments.paired:
    zeta, f, gx = jnp.sqrt(phi), p, p * inv[None, :]
  else:
    z = (moments.xy.T @ p) * inv[None, :]  # E[y x^T] P Phi^{-1/2}, (D2, D0)
    f, zeta, gt = jnp.linalg.svd(z, full_matrices=False)
    gx = (p * inv[None, :]) @ gt.T
  k = zeta.shape[0]
  if k < n_modes:  # more latents than data modes: the extra modes are empty
    zeta = spectra.pad_to(zeta, n_modes)
    f = jnp.pad(f, ((0, 0), (0, n_modes - k)))
    gx = jnp.pad(gx, ((0, 0), (0, n_modes - k)))
  return zeta[:n_modes], f[:, :n_modes], gx[:, :n_modes]


def pair_sigma(sigma):
  """Ascending sort of fixed encoder stds (Dang Thm 1; W&Z Prop. 2 corrected).

  Returns ``(sigma_sorted, perm)``: ``sigma_sorted[i] = sigma[perm[i]]`` is the
  i-th smallest std, the one paired with the i-th largest zeta (the
  rearrangement inequality: (zeta, s) -> (zeta - c s)_+^2 is submodular).
  Ties keep index order (stable sort).
  """
  perm = jnp.argsort(sigma, stable=True)
  return sigma[perm], perm


def learnable_sigma_std(zeta, hyper) -> jax.Array:
  r"""Optimal encoder std per mode, learnable Sigma (W&Z Prop. 3 / Thm 2, Dang Thm 4).

  s_i = sqrt(beta) eta_dec eta_enc / zeta_i if zeta_i^2 > beta eta_dec^2, else
  eta_enc (including zeta_i = 0 past d*; W&Z Thm 2 prints 0 there, which
  makes the loss infinite). A standard deviation, not a variance.
  """
  beta, ee, ed = hyper["beta"], hyper["eta_enc"], hyper["eta_dec"]
  act = zeta ** 2 > beta * ed ** 2
  zs = jnp.where(act, zeta, 1.0)  # guard the division on collapsed modes
  return jnp.where(act, jnp.sqrt(beta) * ed * ee / zs, ee * jnp.ones_like(zeta))


def learnable_mode_spectra(zeta, hyper):
  r"""(omega, lambda, active) at the learnable-Sigma optimum, without sqrt(beta).

  Substituting s_i = sqrt(kappa) eta_enc^2 / zeta_i into :func:`mode_spectra`:
  omega_i^2 = (zeta_i^2 - beta eta_dec^2)_+ / eta_enc^2 and
  lambda_i^2 = eta_enc^2 (zeta_i^2 - beta eta_dec^2)_+ / zeta_i^2. The generic
  form divides sqrt(kappa) by s_i, whose beta-derivatives (each ~ 1/sqrt(beta))
  cancel catastrophically: d(sum omega)/d beta came out +16384 instead of
  -1.75 at beta = 1e-20. Same values, active iff zeta_i^2 > beta eta_dec^2
  (the test :func:`learnable_sigma_std` uses, so both agree at a threshold).
  """
  ee = hyper["eta_enc"]
  gap2 = zeta ** 2 - hyper["beta"] * hyper["eta_dec"] ** 2
  active = gap2 > 0
  z2 = jnp.where(active, zeta ** 2, 1.0)
  omega = spectra.safe_sqrt(gap2) / ee
  lam = spectra.safe_sqrt(jnp.where(active, gap2 / z2, 0.0)) * ee
  return omega, lam, active


def mode_spectra(zeta, s, hyper):
  r"""Per-mode (omega, lambda, active) for modes paired with encoder stds s.

  omega_i^2 = (sqrt(kappa)/s_i)(zeta_i - sqrt(kappa) s_i)_+ (decoder U),
  lambda_i^2 = (s_i/sqrt(kappa))(zeta_i - sqrt(kappa) s_i)_+ (encoder V);
  Dang Thm 1 eq. (b) with sqrt(beta) c = sqrt(kappa), W&Z Prop. 2 eq. (8).
  With the learnable s_i these reduce to Dang Thm 4 / W&Z Thm 2. Mode order
  (not re-sorted); ``active`` is zeta_i > sqrt(kappa) s_i.
  """
  rk = jnp.sqrt(kappa(hyper))
  gap = zeta - rk * s
  omega = spectra.safe_sqrt(rk / s * gap)
  lam = spectra.safe_sqrt(s / rk * gap)
  return omega, lam, gap > 0


def optimal_loss(zeta, s, trace_b, dim_y: int, hyper) -> jax.Array:
  r"""L*: minimum over (U, W) of the exact loss with modes paired to stds s.

  L* = [tr B - sum_i (zeta_i - sqrt(kappa) s_i)_+^2] / (2 eta_dec^2)
       + (beta/2) sum_i (s_i^2/eta_enc^2 - 1 - log(s_i^2/eta_enc^2))
       + (D2/2) log(2 pi eta_dec^2),

  tr B = sum zeta^2 + R (W&Z Cor. 1 / Cor. 2 plus the R they omit, plus the
  decoder partition constant). With the learnable s_i this is W&Z Cor. 2:
  gain_i = zeta_i^2 (1 + r_i (log r_i - 1)), r_i = beta eta_dec^2 / zeta_i^2.
  ``s`` holds all d1 encoder stds (paired with ``zeta``). Nats per sample.
  """
  beta, ee, ed = hyper["beta"], hyper["eta_enc"], hyper["eta_dec"]
  dv = ed ** 2
  gain = jnp.maximum(zeta - jnp.sqrt(kappa(hyper)) * s, 0.0) ** 2
  q = s ** 2 / ee ** 2
  var_kl = 0.5 * beta * jnp.sum(q - 1.0 - jnp.log(q))
  return ((trace_b - jnp.sum(gain)) / (2.0 * dv) + var_kl
          + 0.5 * dim_y * jnp.log(2.0 * math.pi * dv))


def critical_beta(zeta, hyper, sigma_sorted=None) -> jax.Array:
  r"""Per-mode critical beta (mode i active iff beta < beta_i).

  Learnable Sigma (``sigma_sorted=None``; also fixed sigma = eta_enc, W&Z
  Thm 1): beta_i = zeta_i^2 / eta_dec^2. Fixed stds sorted ascending:
  beta_i = zeta_i^2 eta_enc^2 / (eta_dec^2 sigma_(i)^2). Non-increasing.
  """
  base = zeta ** 2 / hyper["eta_dec"] ** 2
  if sigma_sorted is None:
    return base
  return base * hyper["eta_enc"] ** 2 / sigma_sorted ** 2


def critical_eta_dec(zeta, hyper, sigma_sorted=None) -> jax.Array:
  r"""Per-mode critical decoder std (mode i active iff eta_dec < eta_dec_i).

  Learnable Sigma: zeta_i / sqrt(beta); fixed stds sorted ascending:
  zeta_i eta_enc / (sqrt(beta) sigma_(i)). A standard deviation.
  """
  base = zeta / jnp.sqrt(hyper["beta"])
  if sigma_sorted is None:
    return base
  return base * hyper["eta_enc"] / sigma_sorted


def coord_collapse_forced(encoder_var: str, sigma_modes) -> jax.Array:
  """Whether every optimum puts collapsed modes on latent *coordinates*.

  The optimum is unique up to U -> U T, W -> T^T W, Sigma -> T^T Sigma T for
  the T that keep Sigma (and the loss) unchanged. Learnable diagonal Sigma:
  T is a signed permutation (Dang Thm 4 via Hadamard; W&Z Thm 2 corrected),
  so collapsed modes are zero columns of U / rows of W with sigma = eta_enc:
  True. Learnable full Sigma: any orthogonal T: False. Fixed Sigma: T mixes
  coordinates with equal sigma, so True iff all stds are distinct (an
  isotropic sigma, d1 > 1, gives False: the uninformative subspace is
  generally not axis-aligned). Dang §4 / notes §4.2: the two collapse views.
  """
  if encoder_var == "learnable":
    return jnp.asarray(True)
  if encoder_var == "learnable_full":
    return jnp.asarray(False)
  s = jnp.sort(sigma_modes)
  return jnp.all(s[1:] > s[:-1])


MODELS = {"vae": LinearVAE}
