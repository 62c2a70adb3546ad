r"""Linear two-latent Markovian hierarchical VAE (Dang et al. 2024 §4.2, App. F).

Model, for an input x in R^{D0} (paired moments, y = x):

.. math::
   q(z_1|x) = N(W_1 x, \Sigma_1),\quad q(z_2|z_1) = N(W_2 z_1, \Sigma_2),\\
   p(z_1|z_2) = N(U_2 z_2, \eta_{dec}^2 I_{d_1}),\quad p(x|z_1) = N(U_1 z_1, \eta_{dec}^2 I_{D_0}),
   \quad p(z_2) = N(0, \eta_{enc}^2 I_{d_2}),

with W1 (d1, D0), W2 (d2, d1), U2 (d1, d2), U1 (D0, d1) and
Sigma1 = sigma1^2 I fixed (``hyper["sigma1"]`` is a *standard deviation*).

``loss`` is the exact per-sample negative beta-ELBO in nats,

.. math::
   \mathcal L = E_x E_{q(z_1|x) q(z_2|z_1)}\big[-\log p(x|z_1)
     + \beta_1(\log q(z_1|x) - \log p(z_1|z_2))
     + \beta_2(\log q(z_2|z_1) - \log p(z_2))\big].

With S1 = W1 A W1^T + Sigma1 = E[z1 z1^T] and c = eta_dec / eta_enc, App. F's
objective is (including its -beta1 d1 - beta2 d2, which the main text drops)

.. math::
   L_{HVAE} = \frac1{\eta_{dec}^2}\Big\{\operatorname{tr}[(U_1W_1-I)A(U_1W_1-I)^T]
     + \operatorname{tr}(U_1\Sigma_1U_1^T) + \beta_1\operatorname{tr}[(U_2W_2-I)S_1(U_2W_2-I)^T]
     + \beta_1\operatorname{tr}(U_2\Sigma_2U_2^T) + c^2\beta_2[\operatorname{tr}(W_2S_1W_2^T)
     + \operatorname{tr}\Sigma_2]\Big\} - \beta_1 d_1 - \beta_2 d_2
     - \beta_1\log|\Sigma_1| - \beta_2\log|\Sigma_2|,

and ``2 * loss = L_HVAE + D0 log(2 pi eta_dec^2) + beta1 d1 log eta_dec^2
+ beta2 d2 log eta_enc^2`` (``paper_loss`` returns L_HVAE).

Closed-form optimum (``optimum``), per sorted data singular value
theta_i = sqrt(eig_i(A)) (theta_i = 0 past rank(A)), with
k = c^2 beta2 / beta1 and s_c = beta2 eta_dec^2 / beta1 = eta_enc^2 k:

* ``sigma2_var`` learnable: Theorem 3, **corrected** (see
  ``docs/errata.md``): case (b) has a square root and Sigma2*, W2* carry
  c^2 beta2/beta1 where the statement prints c^2.
* ``sigma2_var="fixed"`` (Sigma2 = sigma2^2 I): Theorem 5 (App. F.2), whose
  printed W2* also needs c^2 beta2/beta1.

Any d1 <= D0 and any d2 >= 1 are allowed (App. F.1 treats all five orders of
d0 = rank(A), d1, d2, including d2 > d1): modes i <= min(d1, d2) follow the
theorem, z1 modes min(d1, d2) < i <= d1 (d2 < d1) have no z2 partner and
follow the VAE rule lambda^2 = max(0, (sigma1/sqrt(beta1))(theta - sqrt(beta1) sigma1)),
and z2 modes past d1 always collapse.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from linvae_jax._src import covariance, gaussian, moments as moments_lib, spectra, validation
from linvae_jax._src.model import LinearModel, Optimum, Posterior
from linvae_jax._src.moments import Moments

SIGMA2_VARS = covariance.SETTINGS

# Integer codes of ``Optimum.extras["regime"]`` (one per z1 mode, theta order):
# the theorem's cases (a)/(b)/(c) (Thm 3) or (i)/(ii)/(iii) (Thm 5), and
# ``no_z2`` for z1 modes i > d2 that have no z2 partner (VAE rule for lambda).
REGIMES = {"learnable": ("a", "b", "c", "no_z2"),
           "fixed": ("i", "ii", "iii", "no_z2")}
NO_Z2 = 3


@flax.struct.dataclass
class MHVAEParams:
  r"""Parameters of the linear two-latent MHVAE.

  Attributes:
    U1: decoder of x, shape (D0, d1); p(x|z1) = N(U1 z1, eta_dec^2 I).
    W1: first encoder mean, shape (d1, D0); q(z1|x) = N(W1 x, sigma1^2 I).
    U2: decoder of z1, shape (d1, d2); p(z1|z2) = N(U2 z2, eta_dec^2 I).
    W2: second encoder mean, shape (d2, d1); q(z2|z1) = N(W2 z1, Sigma2).
    sigma2_raw: Sigma2 parameters. ``learnable``: log-variances
      log(Sigma2_kk), shape (d2,), Sigma2 diagonal. ``learnable_full``: a
      (d2, d2) matrix whose lower triangle, with an exponentiated diagonal, is
      the Cholesky factor L of Sigma2 = L L^T. ``fixed``: an empty (0,) array;
      Sigma2 = hyper["sigma2"]^2 I (sigma2 a std).
  """
  U1: jax.Array
  W1: jax.Array
  U2: jax.Array
  W2: jax.Array
  sigma2_raw: jax.Array


@dataclasses.dataclass(frozen=True)
class LinearMHVAE(LinearModel):
  """Linear two-latent Markovian hierarchical (beta1, beta2)-VAE.

  Args:
    latent_dim1: d1, dimension of z1 (at most D0).
    latent_dim2: d2, dimension of z2 (any positive integer; z2 modes past
      min(d1, d2) always collapse).
    sigma2_var: ``"learnable"`` (diagonal Sigma2, Theorem 3),
      ``"learnable_full"`` (full Sigma2 via Cholesky, same optimum) or
      ``"fixed"`` (Sigma2 = sigma2^2 I, ``hyper["sigma2"]`` a std, Theorem 5).

  Sigma1 = sigma1^2 I is always fixed, ``hyper["sigma1"]`` its std.
  """
  latent_dim1: int
  latent_dim2: int
  sigma2_var: str = "learnable"

  name: ClassVar[str] = "mhvae"
  latents: ClassVar[tuple[str, ...]] = ("z1", "z2")

  def __post_init__(self):
    covariance.check_setting("sigma2_var", self.sigma2_var)
    covariance.check_dim("latent_dim1", self.latent_dim1)
    covariance.check_dim("latent_dim2", self.latent_dim2)

  @property
  def hyper_names(self):
    base = ("beta1", "beta2", "eta_enc", "eta_dec", "sigma1")
    return base + ("sigma2",) if self.sigma2_var == "fixed" else base

  @property
  def setting(self):
    return self.sigma2_var

  def check_moments(self, moments: Moments):
    if not moments.paired:
      raise ValueError("moments must be paired (y = x): the MHVAE reconstructs its input.")
    validation.check_latent_dim("latent_dim1", self.latent_dim1, moments.dim_x,
                                "the data dimension D0")

  def check_hyper(self, hyper):
    super().check_hyper(hyper)
    for k in ("sigma1", "sigma2") if self.sigma2_var == "fixed" else ("sigma1",):
      covariance.check_fixed_std(k, hyper[k], 0, vector=False)

  # ---------------------------------------------------------------- params --
  def init(self, key, moments: Moments, scale=0.1) -> MHVAEParams:
    ks = jax.random.split(key, 4)
    dt = moments.dtype
    d0, d1, d2 = moments.dim_x, self.latent_dim1, self.latent_dim2
    rnd = lambda k, s: scale * jax.random.normal(k, s, dt)
    raw = covariance.init_raw(self.sigma2_var, d2, dt)
    return MHVAEParams(U1=rnd(ks[0], (d0, d1)), W1=rnd(ks[1], (d1, d0)),
                       U2=rnd(ks[2], (d1, d2)), W2=rnd(ks[3], (d2, d1)), sigma2_raw=raw)

  def sigma2_cov(self, params: MHVAEParams, hyper):
    """Sigma2 as a (d2,) diagonal (learnable, fixed) or (d2, d2) matrix (full)."""
    return covariance.covariance(self.sigma2_var, params.sigma2_raw, hyper.get("sigma2"),
                                 self.latent_dim2)

  # ------------------------------------------------------------------ loss --
  def _loss_hvae(self, params: MHVAEParams, moments: Moments, hyper) -> jax.Array:
    """App. F's L_HVAE (twice the negative ELBO less the constants above)."""
    b1, b2 = hyper["beta1"], hyper["beta2"]
    dv, ev = hyper["eta_dec"] ** 2, hyper["eta_enc"] ** 2
    s1v = hyper["sigma1"] ** 2  # Sigma1 = sigma1^2 I: sigma1 is a std
    a = moments.xx
    u1, w1, u2, w2 = params.U1, params.W1, params.U2, params.W2
    d1, d2 = self.latent_dim1, self.latent_dim2
    cov2 = self.sigma2_cov(params, hyper)
    tr2, logdet2 = gaussian.trace_logdet(cov2)
    # d1-sized products only: tr(U1 W1 A W1^T U1^T) = <U1^T U1, W1 A W1^T>.
    wa = w1 @ a
    waw = wa @ w1.T
    recon = (jnp.trace(a) - 2.0 * jnp.sum(wa * u1.T) + jnp.sum((u1.T @ u1) * waw)
             + s1v * jnp.sum(u1 ** 2))
    s1 = waw + s1v * jnp.eye(d1, dtype=a.dtype)
    m = u2 @ w2 - jnp.eye(d1, dtype=a.dtype)
    consist = jnp.trace(m @ s1 @ m.T) + gaussian.trace_quad(u2, cov2)
    top = jnp.trace(w2 @ s1 @ w2.T) + tr2
    return ((recon + b1 * consist) / dv + b2 * top / ev
            - b1 * d1 - b2 * d2 - b1 * d1 * jnp.log(s1v) - b2 * logdet2)

  def _constant(self, moments: Moments, hyper) -> jax.Array:
    """2 * loss - L_HVAE = D0 log(2 pi eta_dec^2) + beta1 d1 log eta_dec^2 + beta2 d2 log eta_enc^2."""
    dv, ev = hyper["eta_dec"] ** 2, hyper["eta_enc"] ** 2
    return (moments.dim_x * jnp.log(2.0 * math.pi * dv)
            + hyper["beta1"] * self.latent_dim1 * jnp.log(dv)
            + hyper["beta2"] * self.latent_dim2 * jnp.log(ev))

  def loss(self, params: MHVAEParams, moments: Moments, hyper) -> jax.Array:
    return 0.5 * (self._loss_hvae(params, moments, hyper) + self._constant(moments, hyper))

  def paper_loss(self, params, moments: Moments, hyper) -> jax.Array:
    """App. F's L_HVAE: ``2 * loss - D0 log(2 pi eta_dec^2) - beta1 d1 log eta_dec^2 - beta2 d2 log eta_enc^2``."""
    return 2.0 * self.loss(params, moments, hyper) - self._constant(moments, hyper)

  def sampled_loss(self, params: MHVAEParams, batch, key, hyper) -> jax.Array:
    """Minibatch negative ELBO: one reparameterised (z1, z2) per sample.

    ``batch`` is x of shape (n, D0). The beta1 term uses the analytic
    E log q(z1|x) = -(d1/2) log(2 pi e sigma1^2) and a sampled -log p(z1|z2);
    the beta2 term is the analytic KL(q(z2|z1) || p(z2)) at the sampled z1.
    Unbiased for ``loss`` when x is drawn from the moments' data.
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    k1, k2 = jax.random.split(key)
    d1 = self.latent_dim1
    dv, ev = hyper["eta_dec"] ** 2, hyper["eta_enc"] ** 2
    s1v = hyper["sigma1"] ** 2
    cov2 = self.sigma2_cov(params, hyper)
    z1 = x @ params.W1.T + jnp.sqrt(s1v) * jax.random.normal(k1, (x.shape[0], d1), x.dtype)
    mean2 = z1 @ params.W2.T
    z2 = gaussian.sample_gauss(k2, mean2, cov2)
    nll_x = gaussian.neg_log_normal_iso(jnp.sum((x - z1 @ params.U1.T) ** 2, -1), x.shape[-1], dv)
    nll_z1 = gaussian.neg_log_normal_iso(jnp.sum((z1 - z2 @ params.U2.T) ** 2, -1), d1, dv)
    neg_ent1 = -0.5 * d1 * (jnp.log(2.0 * math.pi * s1v) + 1.0)
    kl2 = gaussian.kl_gauss_iso_prior(mean2, cov2, ev)
    return jnp.mean(nll_x + hyper["beta1"] * (neg_ent1 + nll_z1) + hyper["beta2"] * kl2)

  # --------------------------------------------------------------- spectra --
  def spectrum(self, params: MHVAEParams, moments: Moments, hyper) -> dict:
    """Learned spectra, non-increasing.

    ``omega``: singular values of U2 (length min(d1, d2)); ``lambda``:
    singular values of V1 = W1 P_A Phi^{1/2}, i.e. sqrt(eig(W1 A W1^T))
    (length d1); ``sigma2_std`` (learnable settings only): standard
    deviations of Sigma2 (sqrt of its diagonal, or of its eigenvalues when
    full), length d2.
    """
    out = {"omega": spectra.svdvals(params.U2),
           "lambda": spectra.svdvals(params.W1 @ moments.x_factor)}
    if self.sigma2_var == "learnable":
      out["sigma2_std"] = spectra.sort_desc(jnp.exp(0.5 * params.sigma2_raw))
    elif self.sigma2_var == "learnable_full":
      cov = self.sigma2_cov(params, hyper)
      out["sigma2_std"] = spectra.sort_desc(spectra.safe_sqrt(jnp.linalg.eigvalsh(cov)))
    return out

  def posterior(self, params: MHVAEParams, hyper) -> dict:
    r"""Per-coordinate posteriors of z2 (the paper's default) and z1.

    ``z2``: the marginal q(z2|x) = N(W2 W1 x, W2 Sigma1 W2^T + Sigma2), per
    coordinate (diagonal of that covariance), against the prior
    p(z2) = N(0, eta_enc^2).

    ``z1``: q(z1|x) = N(W1 x, sigma1^2) per coordinate, against the
    *marginal* prior p(z1) = N(0, eta_dec^2 I + eta_enc^2 U2 U2^T), per
    coordinate ``prior_var`` = eta_dec^2 + eta_enc^2 (U2 U2^T)_kk, shape (d1,).
    With U2 = 0 (complete z2 collapse) this is Remark 1's N(0, eta_dec^2).
    Since Sigma1 is fixed and isotropic, the KL of a coordinate is 0 only if
    sigma1^2 equals its prior variance, and coordinate collapse of z1 is not
    forced at the optimum (its left factor P is arbitrary); the
    rotation-invariant view is ``Optimum.active["z1"]`` (lambda_i > 0).
    """
    s1v = hyper["sigma1"] ** 2
    cov2 = self.sigma2_cov(params, hyper)
    diag2 = cov2 if cov2.ndim == 1 else jnp.diagonal(cov2)
    var2 = s1v * jnp.sum(params.W2 ** 2, axis=1) + diag2
    ev, dv = hyper["eta_enc"] ** 2, hyper["eta_dec"] ** 2
    d1 = self.latent_dim1
    return {
        "z2": Posterior(mean_map=params.W2 @ params.W1, var=var2, prior_var=ev),
        "z1": Posterior(mean_map=params.W1, var=jnp.broadcast_to(s1v, (d1,)),
                        prior_var=dv + ev * jnp.sum(params.U2 ** 2, axis=1)),
    }

  # ---------------------------------------------------------------- theory --
  def optimum(self, moments: Moments, hyper) -> Optimum:
    r"""Closed-form global minimiser (Theorem 3 corrected, or Theorem 5).

    Unified per-mode form (i <= d1, theta_i = sqrt(eig_i(A)) non-increasing,
    0 past rank(A); s_i = lambda_i^2 + sigma1^2 and t_i = omega_i^2 + k with
    k = c^2 beta2/beta1, s_c = beta2 eta_dec^2 / beta1; all std quantities
    below are stds, s and t are squared scales):

    * Theorem 3 (Sigma2 learnable), with theta_A = beta2 eta_dec^2 / (sqrt(beta1) sigma1):
      s0 = sigma1 theta / sqrt(beta1) if theta <= theta_A else
      sigma1^2 theta^2 / (beta2 eta_dec^2); s* = max(sigma1^2, s0);
      lambda*^2 = s* - sigma1^2; omega*^2 = max(0, s* - s_c) / eta_enc^2.
      This reproduces cases (a), (b) with the square root the statement
      misses (eq. 59 has it), (c). Sigma2* = (beta2/beta1) eta_dec^2
      (U2^T U2 + k I)^{-1} (eq. 41; the statement prints c^2 for k).
    * Theorem 5 (Sigma2 = sigma2^2 I fixed), with u_c = c sigma2 sqrt(beta2/beta1),
      b = beta2 c^2 sigma2^2 / (sqrt(beta1) sigma1): u0^2 = sigma1 theta / sqrt(beta1)
      if theta <= b else (sigma1^2 theta^2 / (c sigma2 sqrt(beta1 beta2)))^{2/3};
      s* = max(sigma1^2, u0^2); lambda*^2 = s* - sigma1^2;
      omega*^2 = max(0, (c/sigma2) sqrt(beta2/beta1) sqrt(s*) - k). Equal to
      the printed cube-root formulas of cases (i)-(iii).

    z1 modes without a z2 partner (i > d2) use t = k: lambda^2 =
    max(0, sigma1 theta / sqrt(beta1) - sigma1^2). W2* = U2^T (U2 U2^T + k I)^{-1}
    (eq. 47; both statements print c^2 for k) and U1* = A W1^T (W1 A W1^T + Sigma1)^{-1}.
    The returned params take P = Q = I (V1* = Lambda S^T, U2* = Omega).

    Returns an :class:`Optimum` with spectra ``omega`` (min(d1, d2)),
    ``lambda`` (d1) and, for learnable Sigma2, ``sigma2_std`` (d2), all
    non-increasing; ``active`` {"z1": lambda > 0 (d1,), "z2": omega > 0
    padded with False to (d2,)}; ``thresholds``: ``beta2`` (d2,), the beta2
    above which z2 mode i collapses (others fixed; 0 for modes past
    min(d1, d2)), and ``beta2_z1`` (d1,), the beta2 above which lambda_i = 0
    (inf where lambda_i > 0 for every beta2); ``extras``: ``regime`` (d1,)
    codes into ``REGIMES[...]`` and ``theta`` (d1,).
    """
    self.check(moments, hyper)
    fixed = self.sigma2_var == "fixed"
    dt = moments.dtype
    d1, d2 = self.latent_dim1, self.latent_dim2
    m = min(d1, d2)
    b1, b2 = hyper["beta1"], hyper["beta2"]
    eta_e, eta_d, sig1 = hyper["eta_enc"], hyper["eta_dec"], hyper["sigma1"]
    dv, ev, s1v = eta_d ** 2, eta_e ** 2, sig1 ** 2
    c2 = dv / ev
    k = c2 * b2 / b1
    sb1 = jnp.sqrt(b1)

    phi, vecs, mask = moments_lib.positive_eigh(moments.xx)
    theta_all = jnp.sqrt(phi)
    th = theta_all[:d1]
    has_z2 = jnp.arange(d1) < d2
    s_vae = sig1 * th / sb1  # t = k: the VAE rule (Thm 1 with beta = beta1, c = 1)
    p_thr = sb1 * sig1       # theta above which z1 stays active without z2 help

    if not fixed:
      s_c = b2 * dv / b1
      th_a = b2 * dv / (sb1 * sig1)
      s0 = jnp.where(th <= th_a, s_vae, s1v * th ** 2 / (b2 * dv))
      s = jnp.maximum(s1v, jnp.where(has_z2, s0, s_vae))
      om2 = jnp.where(has_z2, jnp.maximum(s - s_c, 0.0) / ev, 0.0)
      crit_z2 = p_thr * jnp.maximum(p_thr, th) / dv
      crit_z1 = th ** 2 / dv
      reg_a = th ** 2 >= (b2 * dv / s1v) * jnp.maximum(s1v, s_c)
      reg_b = s1v >= s_c
    else:
      sig2 = hyper["sigma2"]
      c = eta_d / eta_e
      q_thr = jnp.sqrt(b2) * c * sig2
      b_thr = q_thr ** 2 / p_thr
      a_thr = jnp.sqrt(p_thr * q_thr)
      cube = has_z2 & (th > b_thr)
      x = s1v * th ** 2 / (c * sig2 * jnp.sqrt(b1 * b2))
      u_cube = jnp.cbrt(jnp.where(cube, x, 1.0))  # cbrt'(0) is inf: keep 0 out
      s = jnp.maximum(s1v, jnp.where(cube, u_cube ** 2, s_vae))
      om2 = jnp.where(has_z2,
                      jnp.maximum((c / sig2) * jnp.sqrt(b2 / b1) * jnp.sqrt(s) - k, 0.0), 0.0)
      crit_z2 = p_thr * jnp.maximum(p_thr, th) / (c2 * sig2 ** 2)
      crit_z1 = th ** 4 / (b1 * s1v * c2 * sig2 ** 2)
      reg_a = th >= jnp.maximum(a_thr, b_thr)
      reg_b = p_thr >= q_thr

    lam = spectra.safe_sqrt(s - s1v)
    omega = spectra.safe_sqrt(om2)
    t = om2 + k
    regime = jnp.where(~has_z2, NO_Z2,
                       jnp.where(reg_a, 0, jnp.where(reg_b, 1, 2))).astype(jnp.int32)

    # ---- L* (App. F reduced objective), then the exact negative ELBO.
    recon = jnp.sum(theta_all ** 2) - jnp.sum(th ** 2 * lam ** 2 / s)
    data = (recon + c2 * b2 * jnp.sum(s / t)) / dv
    if not fixed:
      # Sigma2* eigenvalues (beta2/beta1) eta_dec^2 / t_i; z2 modes past d1 have t = k.
      l_hvae = (data + b2 * (jnp.sum(jnp.log(t[:m])) + (d2 - m) * jnp.log(k))
                - b1 * d1 - b1 * d1 * jnp.log(s1v) - b2 * d2 * jnp.log(b2 * dv / b1))
    else:
      l_hvae = (data + (b1 * sig2 ** 2 * jnp.sum(om2) + c2 * b2 * d2 * sig2 ** 2) / dv
                - b1 * d1 - b2 * d2 - b1 * d1 * jnp.log(s1v) - b2 * d2 * jnp.log(sig2 ** 2))
    loss = 0.5 * (l_hvae + self._constant(moments, hyper))

    # ---- optimal parameters, P = Q = I.
    v = vecs[:, :d1]
    inv_th = jnp.where(mask[:d1], 1.0 / jnp.where(mask[:d1], th, 1.0), 0.0)
    w1 = (lam * inv_th)[:, None] * v.T
    u1 = v * (th * lam / s)[None, :]
    om_m = omega[:m]
    u2 = jnp.zeros((d1, d2), dt).at[jnp.arange(m), jnp.arange(m)].set(om_m)
    w2 = jnp.zeros((d2, d1), dt).at[jnp.arange(m), jnp.arange(m)].set(om_m / t[:m])
    # Sigma2* (eq. 41) variances (beta2/beta1) eta_dec^2 / t with t = omega^2 + k
    # (t = k for z2 modes past d1), multiplied through by beta1: the printed form
    # cancels 1e40-sized terms in d/d beta1 at beta1 = 1e-20 (#13).
    om2_2 = jnp.concatenate([om2[:m], jnp.zeros((d2 - m,), dt)])
    var2 = b2 * dv / (b1 * om2_2 + c2 * b2)
    if self.sigma2_var == "learnable":
      raw = jnp.log(var2)
    elif self.sigma2_var == "learnable_full":
      raw = jnp.diag(0.5 * jnp.log(var2))
    else:
      raw = jnp.zeros((0,), dt)
    params = MHVAEParams(U1=u1, W1=w1, U2=u2, W2=w2, sigma2_raw=raw)

    spec = {"omega": spectra.sort_desc(om_m), "lambda": spectra.sort_desc(lam)}
    if not fixed:
      spec["sigma2_std"] = spectra.sort_desc(jnp.sqrt(var2))
    pad = jnp.zeros((d2 - m,), dt)
    thresholds = {
        "beta2": jnp.concatenate([crit_z2[:m], pad]),
        # partner-less z1 modes do not depend on beta2: active always or never
        "beta2_z1": jnp.where(th > p_thr, jnp.inf, jnp.where(has_z2, crit_z1, 0.0)),
    }
    active = {"z1": spec["lambda"] > 0,
              "z2": jnp.concatenate([spec["omega"] > 0, jnp.zeros((d2 - m,), bool)])}
    return Optimum(spectra=spec, active=active, loss=loss, thresholds=thresholds,
                   params=params, extras={"regime": regime, "theta": th})


MODELS = {"mhvae": LinearMHVAE}
