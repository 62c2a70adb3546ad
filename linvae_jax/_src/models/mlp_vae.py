r"""MLP (beta-)VAE in flax: the nonlinear counterpart of ``vae`` (Dang et al.
Table 2, W&Z Figs 1-2 and 5, Lucas et al. Table 2).

.. math::
   q(z|x) = N(\mu(x), \operatorname{diag}\sigma^2),\quad
   p(y|z) = N(f(z), \eta^2 I_{D_y}),\quad p(z) = N(0, \eta_{enc}^2 I_d),

with mu an MLP of x (``hidden`` widths, then a linear head), f an MLP of z
(``dec_hidden`` widths, default ``hidden`` reversed, then a linear output)
and y = x unless the data are a pair (x, y) (W&Z's regression VAE, Fig 1).
Variance settings and the objective: :mod:`mlp_base` and
:class:`mlp_base.SingleLatent`.

**Bridge to the theory.** With ``activation="identity"``, no hidden layer,
``encoder_var="learnable"`` and ``decoder_var="fixed"``, this is exactly
``lv.make_model("vae", latent_dim=d)``: without biases its optimum is the
closed form on *uncentred* moments, with biases (W&Z App. B) the closed form
on *centred* moments (``tests/test_nonlinear_bridge.py``).

Not reproduced: Dang's ``MNIST_VAE_Relu_learnable_sigma.py`` puts a ReLU on
mu (every mean >= 0) and mixes std/variance conventions; here mu is linear in
the last hidden layer and sigma is always a std.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from linvae_jax._src.models import mlp_base as B


class VAENet(B.SingleLatentNet):
  """flax module: ``encode(x) -> (mu, log_var)``, ``decode(z, x) -> f(z)``."""
  target_dim: int
  latent_dim: int
  hidden: tuple
  dec_hidden: tuple
  activation: str
  encoder_var: str
  decoder_var: str
  bias: bool
  param_dtype: Any

  def setup(self):
    kw = {"activation": self.activation, "bias": self.bias, "param_dtype": self.param_dtype}
    self.trunk = B.MLP(self.hidden, None, **kw)
    self.head = B.GaussianHead(self.latent_dim, self.encoder_var, self.bias, self.param_dtype)
    self.dec = B.MLP(self.dec_hidden, self.target_dim, **kw)
    self._setup_dec_scale()

  def encode(self, x):
    return self.head(self.trunk(x))

  def decode(self, z, x):
    del x
    return self.dec(z)


@dataclasses.dataclass(frozen=True)
class MLPVAE(B.DenseWidths, B.SingleLatent):
  """MLP (beta-)VAE.

  Args:
    data_dim: D, the input dimension.
    latent_dim: d.
    hidden: encoder hidden widths (``()``: a linear encoder).
    dec_hidden: decoder hidden widths (None: ``hidden`` reversed).
    activation: ``"relu"``, ``"tanh"`` or ``"identity"``.
    encoder_var: ``"learnable"``, ``"data_dependent"`` or ``"fixed"``.
    decoder_var: ``"fixed"`` or ``"learnable"``.
    bias: biases in every dense layer.
    target_dim: dimension of a separate target y (None: y = x).
    iw_samples, iw_chunk, eval_eps, eval_delta, au_threshold: evaluation
      options (:class:`mlp_base.NonlinearModel`).
  """
  data_dim: int
  latent_dim: int
  hidden: tuple = (256,)
  dec_hidden: tuple | None = None
  activation: str = "relu"
  encoder_var: str = "learnable"
  decoder_var: str = "fixed"
  bias: bool = True
  target_dim: int | None = None

  name: ClassVar[str] = "mlp_vae"

  def __post_init__(self):
    B.check_pos_int("data_dim", self.data_dim)
    B.check_pos_int("latent_dim", self.latent_dim)
    if self.target_dim is not None:
      B.check_pos_int("target_dim", self.target_dim)
    self._check_widths()
    self._check_common()

  @property
  def out_dim(self) -> int:
    return self.data_dim if self.target_dim is None else self.target_dim

  def _net(self, dtype):
    return VAENet(self.out_dim, self.latent_dim, self.hidden, self._dec_hidden, self.activation,
                  self.encoder_var, self.decoder_var, self.bias, dtype)

  def _split(self, batch):
    if isinstance(batch, (tuple, list)):
      if len(batch) != 2:
        raise ValueError(f"batch must be x or a pair (x, y), got a sequence of {len(batch)}.")
      if self.target_dim is None:
        raise ValueError("this VAE reconstructs x (target_dim=None); pass x alone, or "
                         "set target_dim for a pair (x, y).")
      return batch[0], batch[1]
    if self.target_dim is not None:
      raise ValueError(f"target_dim={self.target_dim}: the batch must be a pair (x, y).")
    return batch, batch

  def _check_batch(self, x, y, name):
    B.check_data_array(f"{name} x", x, self.data_dim, "data_dim")
    if y is not x:
      B.check_data_array(f"{name} y", y, self.out_dim, "target_dim")
      B.check_same_rows(name, x, y)

  def _dummy_batch(self, dt):
    x = jnp.zeros((1, self.data_dim), dt)
    return x if self.target_dim is None else (x, jnp.zeros((1, self.out_dim), dt))


MODELS = {"mlp_vae": MLPVAE}
