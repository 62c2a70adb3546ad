"""The library's analytic losses, rewritten without D x D x D products.

``LinearVAE.loss`` forms U W (D2 x D0) and then (U W) A (U W)^T, and the CVAE
and MHVAE losses do the same: about 3 D^3 flops per evaluation (1.4 GFLOP for
MNIST's D = 784), where the traces only need d1-sized products:

  tr(U W C) = <W C, U^T>,   tr(U W A W^T U^T) = <U^T U, W A W^T>,

so a step costs O(d1 D^2). These subclasses override only ``loss`` (the
closed forms, spectra and posteriors are the library's) and are equal to
the library's losses to round-off (``tests/test_reproduce.py`` checks 1e-10
relative in float64). Proposed upstream; until then the reproductions use
them because the shared 2-core CPU cannot afford the D^3 version on MNIST.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from linvae_jax._src.models.cvae import LinearCVAE
from linvae_jax._src.models.mhvae import LinearMHVAE
from linvae_jax._src.models.vae import LinearVAE
from linvae_jax._src.models.vae_ldv import LinearVAELDV


def _u_cov_trace(u, cov):
  return jnp.sum(u * u * cov[None, :]) if cov.ndim == 1 else jnp.sum((u @ cov) * u)


def _tr_logdet(cov):
  if cov.ndim == 1:
    return jnp.sum(cov), jnp.sum(jnp.log(cov))
  return jnp.trace(cov), jnp.linalg.slogdet(cov)[1]


def vae_loss(model, params, moments, hyper):
  beta, ev, dv = hyper["beta"], hyper["eta_enc"] ** 2, hyper["eta_dec"] ** 2
  a, b, c = moments.xx, moments.yy, moments.xy
  u, w = params.U, params.W
  cov = model.encoder_cov(params, hyper)
  tr_cov, logdet = _tr_logdet(cov)
  waw = (w @ a) @ w.T
  recon_sq = (jnp.trace(b) - 2.0 * jnp.sum((w @ c) * u.T) + jnp.sum((u.T @ u) * waw)
              + _u_cov_trace(u, cov))
  d1, d2 = model.latent_dim, moments.dim_y
  recon = 0.5 * recon_sq / dv + 0.5 * d2 * jnp.log(2.0 * math.pi * dv)
  kl = 0.5 * ((tr_cov + jnp.trace(waw)) / ev - d1 - logdet + d1 * jnp.log(ev))
  return recon + beta * kl


class FastVAE(LinearVAE):
  def loss(self, params, moments, hyper):
    return vae_loss(self, params, moments, hyper)


class FastVAELDV(LinearVAELDV):
  def loss(self, params, moments, hyper):
    return vae_loss(self, self._vae_params(params), moments, self._vae_hyper(params, hyper))


class FastCVAE(LinearCVAE):
  def loss(self, params, moments, hyper):
    beta, ev, dv = hyper["beta"], hyper["eta_enc"] ** 2, hyper["eta_dec"] ** 2
    d1, d2 = self.latent_dim, moments.dim_y
    a, b, c = moments.xx, moments.yy, moments.xy
    u1, u2, w1, w2 = params.U1, params.U2, params.W1, params.W2
    # m = U1 P + N with P = [W1, W2], N = [U2, -I]; J = [[A, C], [C^T, B]]
    pj_x = w1 @ a + w2 @ c.T            # (P J)[:, :D0]
    pj_y = w1 @ c + w2 @ b              # (P J)[:, D0:]
    pjp = pj_x @ w1.T + pj_y @ w2.T     # P J P^T (d1 x d1)
    cross = pj_x @ (u2.T @ u1) - pj_y @ u1  # P J N^T U1
    njn = jnp.sum((u2 @ a) * u2) - 2.0 * jnp.sum(u2 * c.T) + jnp.trace(b)
    cov = self.encoder_cov(params, hyper)
    tr_cov, logdet = _tr_logdet(cov)
    recon_sq = (jnp.sum((u1.T @ u1) * pjp) + 2.0 * jnp.trace(cross) + njn
                + _u_cov_trace(u1, cov))
    recon = 0.5 * recon_sq / dv + 0.5 * d2 * jnp.log(2.0 * math.pi * dv)
    kl = 0.5 * ((tr_cov + jnp.trace(pjp)) / ev - d1 - logdet + d1 * jnp.log(ev))
    return recon + beta * kl


class FastMHVAE(LinearMHVAE):
  def _loss_hvae(self, params, moments, hyper):
    b1, b2 = hyper["beta1"], hyper["beta2"]
    dv, ev = hyper["eta_dec"] ** 2, hyper["eta_enc"] ** 2
    s1v = hyper["sigma1"] ** 2
    a = moments.xx
    u1, w1, u2, w2 = params.U1, params.W1, params.U2, params.W2
    d1, d2 = self.latent_dim1, self.latent_dim2
    cov2 = self.sigma2_cov(params, hyper)
    tr2, logdet2 = _tr_logdet(cov2)
    wa = w1 @ a
    waw = wa @ w1.T
    recon = (jnp.trace(a) - 2.0 * jnp.sum(wa * u1.T) + jnp.sum((u1.T @ u1) * waw)
             + s1v * jnp.sum(u1 ** 2))
    s1 = waw + s1v * jnp.eye(d1, dtype=a.dtype)
    m = u2 @ w2 - jnp.eye(d1, dtype=a.dtype)
    consist = jnp.trace(m @ s1 @ m.T) + _u_cov_trace(u2, cov2)
    top = jnp.trace(w2 @ s1 @ w2.T) + tr2
    return ((recon + b1 * consist) / dv + b2 * top / ev
            - b1 * d1 - b2 * d2 - b1 * d1 * jnp.log(s1v) - b2 * logdet2)


FAST = {"vae": FastVAE, "vae_ldv": FastVAELDV, "cvae": FastCVAE, "mhvae": FastMHVAE}


def make(name: str, **config):
  """``lv.make_model`` with the O(d1 D^2) loss."""
  return FAST[name](**config)
