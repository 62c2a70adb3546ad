r"""MLP conditional (beta-)VAE in flax: the nonlinear counterpart of ``cvae``
(Dang et al. Fig 2(b), Fig 3(a), Tables 3-4).

For a condition x in R^{D0} (``cond_dim``) and an output y in R^{D2}
(``data_dim``; Dang's MNIST split: x = the bottom-left quadrant, 196 pixels,
y = the other three, 588):

.. math::
   q(z|x, y) = N(\mu([x; y]), \operatorname{diag}\sigma^2),\quad
   p(y|x, z) = N(f([z; x]), \eta^2 I_{D_2}),\quad p(z|x) = N(0, \eta_{enc}^2 I_d),

mu and f MLPs of the concatenated inputs (``hidden`` / ``dec_hidden``
widths). ``batch`` is the pair (x, y). With the identity activation and no
hidden layer, mu = W1 x + W2 y and f = U1 z + U2 x: exactly
``lv.make_model("cvae", latent_dim=d)``.

Dang's ``MNIST_CVAE_Relu.py`` instead *adds* separate MLPs of x and y (and
of z and x in the decoder); the two agree for linear maps, not with hidden
layers. Objective, variances and the paper conventions:
:class:`mlp_base.SingleLatent` (beta_Dang = 2 beta).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from linvae_jax._src.models import mlp_base as B
from linvae_jax._src.models.mlp_vae import VAENet


class CVAENet(VAENet):
  """flax module: ``encode((x, y))``, ``decode(z, (x, y))`` (y unused). The
  VAE's layers (``target_dim`` = D2), fed [x; y] and [z; x]."""

  def encode(self, inputs):
    x, y = inputs
    return self.head(self.trunk(jnp.concatenate([x, y], axis=-1)))

  def decode(self, z, inputs):
    x, _ = inputs
    return self.dec(jnp.concatenate([z, x], axis=-1))


@dataclasses.dataclass(frozen=True)
class MLPCVAE(B.DenseWidths, B.ConditionalInputs, B.SingleLatent):
  """MLP conditional (beta-)VAE.

  Args:
    data_dim: D2, the output y's dimension.
    cond_dim: D0, the condition x's dimension.
    latent_dim: d.
    hidden, dec_hidden, activation, encoder_var, decoder_var, bias, and the
      evaluation options: as :class:`mlp_vae.MLPVAE`.
  """
  data_dim: int
  cond_dim: int
  latent_dim: int
  hidden: tuple = (16,)
  dec_hidden: tuple | None = None
  activation: str = "relu"
  encoder_var: str = "learnable"
  decoder_var: str = "fixed"
  bias: bool = True

  name: ClassVar[str] = "mlp_cvae"

  def __post_init__(self):
    for arg in ("data_dim", "cond_dim", "latent_dim"):
      B.check_pos_int(arg, getattr(self, arg))
    self._check_widths()
    self._check_common()

  def _net(self, dtype):
    return CVAENet(self.data_dim, self.latent_dim, self.hidden, self._dec_hidden, self.activation,
                   self.encoder_var, self.decoder_var, self.bias, dtype)

  def _split(self, batch):
    x, y = B.as_pair(batch)
    return (x, y), y

  def _check_batch(self, inputs, y, name):
    x, _ = inputs
    B.check_data_array(f"{name} x (condition)", x, self.cond_dim, "cond_dim")
    B.check_data_array(f"{name} y", y, self.data_dim, "data_dim")
    B.check_same_rows(name, x, y)


MODELS = {"mlp_cvae": MLPCVAE}
