r"""Convolutional (beta-)VAE in flax, with the papers' conv stacks (Dang et al.
§5: encoder 3x3 convs 32, 16 with stride 2; decoder 3x3 transposed convs 32,
16 with stride 2, then 3x3 to one channel).

.. math::
   q(z|x) = N(\mu(x), \operatorname{diag}\sigma^2),\quad
   p(x|z) = N(f(z), \eta^2 I_D),\quad p(z) = N(0, \eta_{enc}^2 I_d),

mu = a linear head on the conv features (:class:`cnn_base.ConvEncoder`),
f = :class:`cnn_base.ConvDecoder`, D = H*W*C. The objective, the variance
settings (``encoder_var``, ``decoder_var``), the metrics of ``evaluate`` and
the conversion to each paper's convention (Dang's code: ``paper_loss`` =
||x - f||^2/eta^2 + beta_D KL with **beta_D = 2 beta**; W&Z eq. 5; Lucas at
beta = 1) are those of :class:`mlp_base.SingleLatent`, so a grid of
``cnn_vae`` and of ``mlp_vae`` give comparable numbers (nats per image).

Inputs: flat (n, H*W*C) or images (n, H, W, C) / (n, H, W) (see
:mod:`cnn_base`); ``image_shape`` defaults to MNIST's (28, 28, 1).

Cost: a conv VAE on 28x28 MNIST is roughly 10-100x an MLP VAE's flops per
step; on a 2-core CPU keep grids and epochs small (GPU for the papers'
sizes).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from linvae_jax._src.models import cnn_base as CB
from linvae_jax._src.models import mlp_base as B


class CNNVAENet(CB.ConvVAENet):
  """flax module: ``encode(x) -> (mu, log_var)``, ``decode(z, x) -> flat f(z)``."""

  def setup(self):
    self.trunk = CB.ConvEncoder(self.shape, self.channels, self.hidden, **self._conv_kw())
    self._setup_head_and_decoder()

  def encode(self, x):
    return self.head(self.trunk(x))

  def decode(self, z, x):
    del x
    return self.dec(self.dec_mlp(z))


@dataclasses.dataclass(frozen=True)
class CNNVAE(CB.ConvLayers, B.SingleLatent):
  """Convolutional (beta-)VAE.

  Args:
    latent_dim: d.
    image_shape: (H, W, C) of the images (default MNIST, (28, 28, 1)).
    channels: encoder conv channels, each a ``kernel`` x ``kernel`` conv with
      stride 2 (default (32, 16), Dang et al.).
    dec_channels: decoder transposed-conv channels, stride 2, before the
      final stride-1 transposed conv to C channels (None: ``channels``, as
      in Dang et al.: 32, 16, then 1). The dense input layer maps to
      (H/2^k, W/2^k, dec_channels[0]), k = len(dec_channels).
    hidden: dense widths between the flattened conv features and the
      Gaussian head (default none: flatten -> head, as in the papers); the
      decoder mirrors them before its dense input layer.
    kernel: conv kernel size (3).
    activation: ``"relu"``, ``"tanh"`` or ``"identity"``.
    encoder_var: ``"learnable"``, ``"data_dependent"`` or ``"fixed"``.
    decoder_var: ``"fixed"`` or ``"learnable"``.
    bias: biases in every layer.
    iw_samples, iw_chunk, eval_eps, eval_delta, au_threshold: evaluation
      options (:class:`mlp_base.NonlinearModel`).
  """
  latent_dim: int
  image_shape: tuple = (28, 28, 1)
  channels: tuple = (32, 16)
  dec_channels: tuple | None = None
  hidden: tuple = ()
  kernel: int = 3
  activation: str = "relu"
  encoder_var: str = "learnable"
  decoder_var: str = "fixed"
  bias: bool = True

  name: ClassVar[str] = "cnn_vae"

  def __post_init__(self):
    B.check_pos_int("latent_dim", self.latent_dim)
    self._check_channels()
    CB.check_image_shape("image_shape", self.image_shape,
                         max(len(self.channels), len(self._dec_channels)))
    B.check_widths("hidden", self.hidden)
    B.check_pos_int("kernel", self.kernel)
    self._check_common()

  def _net(self, dtype):
    return CNNVAENet(self.image_shape, self.latent_dim, self.channels, self._dec_channels,
                     self.hidden, self.kernel, self.activation, self.encoder_var,
                     self.decoder_var, self.bias, dtype)

  def _split(self, batch):
    if isinstance(batch, (tuple, list)):
      raise ValueError("cnn_vae reconstructs its input: pass the images x alone, not a "  # noqa: TRY004
                       f"sequence of {len(batch)} arrays.")
    CB.check_images("batch x", batch, self.image_shape, finite=False)
    return batch, CB.flat(batch, self.image_shape)

  def _check_batch(self, x, y, name):
    del y
    CB.check_images(f"{name} x", x, self.image_shape)

  def check_data(self, data) -> None:
    """Shape (flat or image) and finiteness of a data set; ValueError otherwise."""
    self._split(data)
    CB.check_images("data x", data, self.image_shape)

  def _dummy_batch(self, dt):
    return jnp.zeros((1, self.data_dim), dt)


MODELS = {"cnn_vae": CNNVAE}
