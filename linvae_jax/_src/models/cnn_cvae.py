r"""Convolutional conditional (beta-)VAE in flax (Dang et al. Fig 3(a), A.1.2:
``MNIST_CVAE_CNN_single_digit``).

The condition x is an image of shape ``cond_shape`` (Dang: one 14x14 MNIST
quadrant) and the output y an image of shape ``image_shape`` (Dang: the
28x28 image with x's quadrant zeroed; building it is the caller's choice,
e.g. with :func:`linvae_jax.data.mnist_view`):

.. math::
   q(z|x, y) = N(\mu(x, y), \operatorname{diag}\sigma^2),\quad
   p(y|x, z) = N(f(z, x), \eta^2 I_{D_2}),\quad p(z|x) = N(0, \eta_{enc}^2 I_d),

mu = a linear head on the concatenated conv features of x and of y (two
:class:`cnn_base.ConvEncoder` stacks, 3x3 stride 2, ``channels``); f = a
:class:`cnn_base.ConvDecoder` (transposed convs ``dec_channels``) of
[z; features of x] (a third conv stack on x, the decoder's own). ``batch`` is
the pair (x, y), each flat or image-shaped (:mod:`cnn_base`). Objective,
variance settings, metrics and the paper conventions (beta_Dang = 2 beta):
:class:`mlp_base.SingleLatent`.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from linvae_jax._src.models import cnn_base as CB
from linvae_jax._src.models import mlp_base as B


class CNNCVAENet(CB.ConvVAENet):
  """flax module: ``encode((x, y))``, ``decode(z, (x, y))`` (y unused); ``shape``
  is y's, ``cond_shape`` x's."""
  cond_shape: tuple

  def setup(self):
    kw = self._conv_kw()
    self.trunk_x = CB.ConvEncoder(self.cond_shape, self.channels, (), **kw)
    self.trunk_y = CB.ConvEncoder(self.shape, self.channels, (), **kw)
    self.trunk = B.MLP(self.hidden, None, self.activation, self.bias, self.param_dtype)
    self.dec_x = CB.ConvEncoder(self.cond_shape, self.channels, (), **kw)
    self._setup_head_and_decoder()

  def encode(self, inputs):
    x, y = inputs
    return self.head(self.trunk(jnp.concatenate([self.trunk_x(x), self.trunk_y(y)], axis=-1)))

  def decode(self, z, inputs):
    x, _ = inputs
    return self.dec(self.dec_mlp(jnp.concatenate([z, self.dec_x(x)], axis=-1)))


@dataclasses.dataclass(frozen=True)
class CNNCVAE(CB.ConvLayers, B.ConditionalInputs, B.SingleLatent):
  """Convolutional conditional (beta-)VAE.

  Args:
    latent_dim: d.
    cond_shape: (H, W, C) of the condition x (default (14, 14, 1), a quadrant).
    image_shape: (H, W, C) of the output y (default (28, 28, 1)).
    channels, dec_channels, hidden, kernel, activation, encoder_var,
      decoder_var, bias, and the evaluation options: as
      :class:`cnn_vae.CNNVAE` (``channels`` for all three conv stacks).
  """
  latent_dim: int
  cond_shape: tuple = (14, 14, 1)
  image_shape: tuple = (28, 28, 1)
  channels: tuple = (32, 16)
  dec_channels: tuple | None = None
  hidden: tuple = ()
  kernel: int = 3
  activation: str = "relu"
  encoder_var: str = "learnable"
  decoder_var: str = "fixed"
  bias: bool = True

  name: ClassVar[str] = "cnn_cvae"

  def __post_init__(self):
    B.check_pos_int("latent_dim", self.latent_dim)
    self._check_channels()
    CB.check_image_shape("cond_shape", self.cond_shape, 0)
    CB.check_image_shape("image_shape", self.image_shape, len(self._dec_channels))
    B.check_widths("hidden", self.hidden)
    B.check_pos_int("kernel", self.kernel)
    self._check_common()

  @property
  def cond_dim(self) -> int:
    """D0 = H*W*C of x."""
    return CB.image_size(self.cond_shape)

  def _net(self, dtype):
    return CNNCVAENet(self.image_shape, self.latent_dim, self.channels, self._dec_channels,
                      self.hidden, self.kernel, self.activation, self.encoder_var,
                      self.decoder_var, self.bias, dtype, cond_shape=self.cond_shape)

  def _split(self, batch):
    x, y = B.as_pair(batch)
    CB.check_images("batch x (condition)", x, self.cond_shape, finite=False)
    CB.check_images("batch y", y, self.image_shape, finite=False)
    return (x, y), CB.flat(y, self.image_shape)

  def _check_batch(self, inputs, y, name):
    x, y = inputs
    CB.check_images(f"{name} x (condition)", x, self.cond_shape)
    CB.check_images(f"{name} y", y, self.image_shape)
    B.check_same_rows(name, x, y)

  def check_data(self, data) -> None:
    """Shapes (flat or image), equal rows and finiteness of a pair (x, y)."""
    inputs, y = self._split(data)
    self._check_batch(inputs, y, "data")


MODELS = {"cnn_cvae": CNNCVAE}
