r"""MLP two-latent Markovian hierarchical VAE in flax: the nonlinear
counterpart of ``mhvae`` (Dang et al. Fig 2(c), Figs 3(b)-4, Table 5).

.. math::
   q(z_1|x) = N(\mu_1(x), \sigma_1^2 I),\quad q(z_2|z_1) = N(\mu_2(z_1), \Sigma_2),\\
   p(z_1|z_2) = N(g(z_2), \eta_{dec}^2 I_{d_1}),\quad p(x|z_1) = N(f(z_1), \eta^2 I_D),
   \quad p(z_2) = N(0, \eta_{enc}^2 I_{d_2}),

mu1 and f MLPs with ``hidden`` widths (f reversed), mu2 and g MLPs with
``hidden2`` widths. Sigma1 = sigma1^2 I is fixed (``hyper["sigma1"]``, a
std). ``sigma2_var``: ``"learnable"`` (data-independent diagonal),
``"data_dependent"`` (log-variance head of the z1 -> z2 MLP: Dang's
"Sigma2 = MLP(z1)") or ``"fixed"`` (``hyper["sigma2"]``). ``decoder_var``
applies to p(x|z1) (eta = eta_dec, or eta_dec exp(s) learned); p(z1|z2)
keeps the std eta_dec.

``sampled_loss`` is the linear model's estimator: per example, with one
z1 ~ q(z1|x) and z2 ~ q(z2|z1),

.. math:: \ell = -\log p(x|z_1) + \beta_1\big[-\tfrac{d_1}{2}\log(2\pi e\sigma_1^2)
   - \log p(z_1|z_2)\big] + \beta_2\,KL(q(z_2|z_1)\,\|\,p(z_2)),

in nats; with the identity activation, no hidden layers, ``sigma2_var``
learnable and no biases it is ``lv.make_model("mhvae", ...)``'s
``sampled_loss``. Dang's L_HVAE (App. F) is 2 l minus the constants
D log(2 pi eta_dec^2) + beta1 d1 log eta_dec^2 + beta2 d2 log eta_enc^2 (see
``LinearMHVAE.paper_loss``); their code's beta's are twice these.

Metrics (``evaluate``): IW log-likelihood with the joint proposal
q(z1|x) q(z2|z1); the latent metrics of z2 (prefix ``z2_``), computed at one
z1 ~ q(z1|x) per example against p(z2) (Dang's per-dimension z2 KL); for z1,
``z1_au``, ``z1_mean_var`` and ``z1_cov_rank`` of mu1(x) (its prior is not
Gaussian, so no KL).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from linvae_jax._src import nonlinear_metrics as nm
from linvae_jax._src.models import mlp_base as B


class TwoLatentNet(B.DecoderScaleNet):
  """Base of the MHVAE networks: subclasses declare ``latent_dim1``,
  ``latent_dim2``, ``hidden2``, ``sigma2_var``, ``activation``, ``bias``,
  ``decoder_var`` and ``param_dtype``, define ``encode1`` (x -> mu1) and
  ``dec1`` (z1 -> x), and call ``_setup_z2()`` and ``_setup_dec_scale()`` in
  ``setup``."""

  def _setup_z2(self):
    """The z1 -> z2 encoder (``hidden2``) and the z2 -> z1 decoder (reversed)."""
    kw = {"activation": self.activation, "bias": self.bias, "param_dtype": self.param_dtype}
    self.trunk2 = B.MLP(self.hidden2, None, **kw)
    self.head2 = B.GaussianHead(self.latent_dim2, self.sigma2_var, self.bias, self.param_dtype)
    self.dec2 = B.MLP(tuple(reversed(self.hidden2)), self.latent_dim1, **kw)

  def encode2(self, z1):
    return self.head2(self.trunk2(z1))

  def decode2(self, z2):
    return self.dec2(z2)

  def decode1(self, z1):
    return self.dec1(z1)

  def __call__(self, x, z1, z2):
    return (self.encode1(x), self.encode2(z1), self.decode2(z2), self.decode1(z1),
            self.dec_log_scale())


class MHVAENet(TwoLatentNet):
  data_dim: int
  latent_dim1: int
  latent_dim2: int
  hidden: tuple
  hidden2: tuple
  activation: str
  sigma2_var: str
  decoder_var: str
  bias: bool
  param_dtype: Any

  def setup(self):
    kw = {"activation": self.activation, "bias": self.bias, "param_dtype": self.param_dtype}
    self.enc1 = B.MLP(self.hidden, self.latent_dim1, **kw)
    self._setup_z2()
    self.dec1 = B.MLP(tuple(reversed(self.hidden)), self.data_dim, **kw)
    self._setup_dec_scale()

  def encode1(self, x):
    return self.enc1(x)


class TwoLatent(B.NonlinearModel):
  """Shared objective and evaluation of the two-latent MHVAEs (module
  docstring). Subclasses supply ``data_dim``, ``_net()`` (a
  :class:`TwoLatentNet`) and ``_x(params, batch, name)``: the data x as flat
  (n, D) in the parameters' dtype, after the shape checks."""

  @property
  def hyper_names(self):
    base = ("beta1", "beta2", "eta_enc", "eta_dec", "sigma1")
    return base + ("sigma2",) if self.sigma2_var == "fixed" else base

  @property
  def setting(self):
    return f"{self.activation},sigma2={self.sigma2_var},dec={self.decoder_var}"

  def check_hyper(self, hyper):
    super().check_hyper(hyper)
    B.check_fixed_std("sigma1", hyper["sigma1"], 1)
    if self.sigma2_var == "fixed":
      B.check_fixed_std("sigma2", hyper["sigma2"], self.latent_dim2)

  def init(self, key, moments=None, scale=1.0):
    """Parameters (``{"params": ...}``): LeCun-normal kernels times ``scale``."""
    dt = self._dtype(moments)
    args = (jnp.zeros((1, self.data_dim), dt), jnp.zeros((1, self.latent_dim1), dt),
            jnp.zeros((1, self.latent_dim2), dt))
    return B.scale_kernels(self._net(dt).init(key, *args), scale)

  def _apply(self, params, method, *args):
    return self._net(self._param_dtype(params)).apply(params, *args, method=method)

  def encoder2(self, params, z1, hyper):
    """(mu2, std2) of q(z2|z1), each (n, d2)."""
    mu, lv = self._apply(params, "encode2", z1)
    return mu, B.std_from(lv, hyper.get("sigma2"), mu.shape, mu.dtype)

  def decoder_std(self, params, hyper):
    return hyper["eta_dec"] * jnp.exp(self._apply(params, "dec_log_scale"))

  def sampled_loss(self, params, batch, key, hyper):
    """Minibatch negative (beta1, beta2)-ELBO per example, nats (module docstring)."""
    x = self._x(params, batch)
    k1, k2 = jax.random.split(key)
    s1 = hyper["sigma1"]
    mu1 = self._apply(params, "encode1", x)
    z1 = mu1 + s1 * jax.random.normal(k1, mu1.shape, mu1.dtype)
    mu2, std2 = self.encoder2(params, z1, hyper)
    z2 = mu2 + std2 * jax.random.normal(k2, mu2.shape, mu2.dtype)
    nll_x = B.neg_log_normal(x - self._apply(params, "decode1", z1), self.decoder_std(params, hyper))
    nll_z1 = B.neg_log_normal(z1 - self._apply(params, "decode2", z2), hyper["eta_dec"])
    d1 = self.latent_dim1
    neg_ent1 = -0.5 * d1 * (jnp.log(2.0 * math.pi * s1 ** 2) + 1.0)
    kl2 = jnp.sum(nm.gaussian_kl(mu2, std2, hyper["eta_enc"]), axis=-1)
    return jnp.mean(nll_x + hyper["beta1"] * (neg_ent1 + nll_z1) + hyper["beta2"] * kl2)

  def evaluate(self, params, hyper, data, key):
    r"""Held-out metrics (module docstring): ``iw_ll`` (+ ``_se``, ``_mc_se``),
    ``elbo_iw``, ``recon`` (-E_q log p(x|z1)), ``eta_dec_std``, the z2 latent
    summary (prefix ``z2_``) and ``z1_au``, ``z1_mean_var``, ``z1_cov_rank``."""
    x = self._x(params, data, "data")
    k_iw, k_z1, k_lat = jax.random.split(key, 3)
    s1, ee, ed = hyper["sigma1"], hyper["eta_enc"], hyper["eta_dec"]
    dstd = self.decoder_std(params, hyper)
    mu1 = self._apply(params, "encode1", x)
    n, d1 = mu1.shape
    c = self.iw_chunk

    def chunk(k):
      ka, kb = jax.random.split(k)
      z1 = mu1[None] + s1 * jax.random.normal(ka, (c, n, d1), mu1.dtype)
      z1f = z1.reshape(c * n, d1)
      mu2, std2 = self.encoder2(params, z1f, hyper)
      z2 = mu2 + std2 * jax.random.normal(kb, mu2.shape, mu2.dtype)
      log_px = -B.neg_log_normal(jnp.broadcast_to(x[None], (c, n, self.data_dim)).reshape(
          c * n, self.data_dim) - self._apply(params, "decode1", z1f), dstd)
      log_pz1 = -B.neg_log_normal(z1f - self._apply(params, "decode2", z2), ed)
      log_pz2 = B.log_normal_diag(z2, jnp.zeros_like(z2), ee)
      log_q1 = B.log_normal_diag(z1, mu1[None], s1).reshape(c * n)
      log_q2 = B.log_normal_diag(z2, mu2, std2)
      lw = log_px + log_pz1 + log_pz2 - log_q1 - log_q2
      return lw.reshape(c, n).T, log_px.reshape(c, n).T

    log_w, log_px = self._iw_samples(k_iw, chunk, n)
    out = nm.iw_estimate(log_w)
    z1 = mu1 + s1 * jax.random.normal(k_z1, mu1.shape, mu1.dtype)
    mu2, std2 = self.encoder2(params, z1, hyper)
    out.update(self._latent_metrics(k_lat, mu2, std2, ee, prefix="z2_"))
    out.update(recon=-jnp.mean(log_px), eta_dec_std=jnp.asarray(dstd, mu1.dtype),
               z1_au=nm.active_units(mu1, self.au_threshold), z1_mean_var=nm.mean_variance(mu1),
               z1_cov_rank=nm.mean_cov_rank(mu1, self.au_threshold))
    return out


@dataclasses.dataclass(frozen=True)
class MLPMHVAE(TwoLatent):
  """MLP two-latent MHVAE.

  Args:
    data_dim: D.
    latent_dim1, latent_dim2: d1, d2.
    hidden: widths of the x -> z1 encoder (the z1 -> x decoder reversed).
    hidden2: widths of the z1 -> z2 encoder (z2 -> z1 decoder reversed);
      None: ``hidden``.
    activation, decoder_var, bias and the evaluation options: as
      :class:`mlp_vae.MLPVAE`.
    sigma2_var: ``"learnable"``, ``"data_dependent"`` or ``"fixed"``.
  """
  data_dim: int
  latent_dim1: int
  latent_dim2: int
  hidden: tuple = (256,)
  hidden2: tuple | None = None
  activation: str = "relu"
  sigma2_var: str = "learnable"
  decoder_var: str = "fixed"
  bias: bool = True

  name: ClassVar[str] = "mlp_mhvae"

  def __post_init__(self):
    for arg in ("data_dim", "latent_dim1", "latent_dim2"):
      B.check_pos_int(arg, getattr(self, arg))
    B.check_widths("hidden", self.hidden)
    if self.hidden2 is not None:
      B.check_widths("hidden2", self.hidden2)
    self._check_common()

  def _net(self, dtype):
    h2 = self.hidden if self.hidden2 is None else self.hidden2
    return MHVAENet(self.data_dim, self.latent_dim1, self.latent_dim2, self.hidden, h2,
                    self.activation, self.sigma2_var, self.decoder_var, self.bias, dtype)

  def _x(self, params, batch, name="batch"):
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(batch, (tuple, list)) and len(batch) != 1:
      raise ValueError("batch must be x (the MHVAE reconstructs its input).")
    B.check_data_array(f"{name} x", x, self.data_dim, "data_dim")
    return jnp.asarray(x, self._param_dtype(params))


MODELS = {"mlp_mhvae": MLPMHVAE}
