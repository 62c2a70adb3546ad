"""Encoder covariance settings shared by the models.

``"learnable"``: diagonal Sigma = diag(exp(raw)), raw the log-variances (d,).
``"learnable_full"``: Sigma = L L^T with L = ``gaussian.cholesky_from_raw(raw)``, raw (d, d).
``"fixed"``: Sigma = diag(std^2) from a hyperparameter *std* (scalar =
isotropic, or (d,) = diagonal); raw is an empty (0,) array.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from linvae_jax._src import gaussian, validation

SETTINGS = ("learnable", "learnable_full", "fixed")


def check_setting(arg: str, value: str) -> None:
  if value not in SETTINGS:
    raise ValueError(f"{arg} must be one of {SETTINGS}, got {value!r}.")


def check_dim(arg: str, d) -> None:
  if isinstance(d, bool) or not isinstance(d, int) or d < 1:
    raise ValueError(f"{arg} must be a positive integer, got {d!r}.")


def check_fixed_std(arg: str, value, d: int, *, vector: bool = True) -> None:
  """A fixed std is a scalar, or (with ``vector``) a (d,) per-coordinate vector."""
  if not validation.is_concrete(value):
    return
  s = jnp.shape(value)
  allowed = ((), (1,), (d,)) if vector else ((),)
  if s not in allowed:
    what = f"a scalar or have shape ({d},)" if vector else f"a scalar std (isotropic {arg}^2 I)"
    raise ValueError(f"{arg} must be {what}, got shape {s}.")


def init_raw(setting: str, d: int, dtype) -> jax.Array:
  """Unconstrained parameters of Sigma at Sigma = I (learnable) or empty (fixed)."""
  if setting == "learnable":
    return jnp.zeros((d,), dtype)
  if setting == "learnable_full":
    return jnp.zeros((d, d), dtype)
  return jnp.zeros((0,), dtype)


def covariance(setting: str, raw, std, d: int) -> jax.Array:
  """Sigma as a (d,) diagonal (learnable, fixed) or a (d, d) matrix (full)."""
  if setting == "learnable":
    return jnp.exp(raw)
  if setting == "learnable_full":
    l = gaussian.cholesky_from_raw(raw)
    return l @ l.T
  return jnp.broadcast_to(jnp.asarray(std) ** 2, (d,))


class SingleLatentEncoder:
  """Shared config behaviour of models with one latent z of dimension
  ``latent_dim`` and an ``encoder_var`` setting (the linear VAE and CVAE):
  argument checks, hyperparameter names and the encoder covariance.
  Subclasses are frozen dataclasses declaring those two fields."""

  def __post_init__(self):
    check_setting("encoder_var", self.encoder_var)
    check_dim("latent_dim", self.latent_dim)

  @property
  def hyper_names(self):
    base = ("beta", "eta_enc", "eta_dec")
    return base + ("sigma",) if self.encoder_var == "fixed" else base

  @property
  def setting(self):
    return self.encoder_var

  def check_hyper(self, hyper):
    super().check_hyper(hyper)
    if self.encoder_var == "fixed":
      check_fixed_std("sigma", hyper["sigma"], self.latent_dim)

  def encoder_cov(self, params, hyper):
    """Sigma as a (d1,) diagonal (learnable, fixed) or (d1, d1) matrix (full)."""
    return covariance(self.encoder_var, params.sigma_raw, hyper.get("sigma"), self.latent_dim)
