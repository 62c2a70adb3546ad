"""A test-only model with no closed form: the engine must train it generically.

x ~ data in R^D; "encoder" mean m = w * x (elementwise), loss per sample
0.5 * ||x - m||^2 / eta_dec^2 + beta * 0.5 * ||w||^2 + noise term, so the
minimiser is w_k = E[x_k^2] / (E[x_k^2] + beta eta_dec^2): simple enough to
check, but the model offers no ``optimum``, only ``sampled_loss`` and
``evaluate``.
"""
import dataclasses

import jax
import jax.numpy as jnp

from linvae_jax._src import validation


@dataclasses.dataclass(frozen=True)
class ToyModel:
  dim: int = 3
  name = "toy"
  hyper_names = ("beta", "eta_dec")
  positive_hyper = ("beta", "eta_dec")

  def label(self):
    return "toy"

  def check_hyper(self, hyper):
    validation.check_hyper(hyper, self.hyper_names, self.positive_hyper)

  def check_data(self, data):
    if data.shape[1:] != (self.dim,):
      raise ValueError(f"toy data must have shape (n, {self.dim}), got {data.shape}.")

  def init(self, key, moments, scale):
    del moments
    return {"w": scale * jax.random.normal(key, (self.dim,), jnp.zeros(()).dtype)}

  def sampled_loss(self, params, batch, key, hyper):
    noise = 1e-3 * jax.random.normal(key, batch.shape, batch.dtype)
    rec = batch - params["w"][None] * (batch + noise)
    return (0.5 * jnp.mean(jnp.sum(rec ** 2, -1)) / hyper["eta_dec"] ** 2
            + hyper["beta"] * 0.5 * jnp.sum(params["w"] ** 2))

  def evaluate(self, params, hyper, data, key):
    del hyper, key
    rec = data - params["w"][None] * data
    return {"mse": jnp.mean(jnp.sum(rec ** 2, -1)), "w_abs": jnp.abs(params["w"])}
