r"""Convolutional two-latent Markovian hierarchical VAE in flax (Dang et al. Fig 9,
A.2.3, ``MNIST_HVAE_CNN``).

The model, objective and metrics are those of :mod:`mlp_mhvae` (its
:class:`mlp_mhvae.TwoLatent` base, ``sampled_loss`` and ``evaluate``
included), with the x <-> z1 maps convolutional:

* mu1(x): 3x3 stride-2 convs (``channels``, default (64, 32): 28 -> 14 -> 7,
  flattened 7*7*32 = 1568), then a linear map to d1
  (:class:`cnn_base.ConvEncoder`);
* f(z1): dense to 7x7x``dec_channels[0]``, 3x3 stride-2 transposed convs
  (``dec_channels``, default (64, 32)), a 3x3 stride-1 transposed conv to C
  channels (:class:`cnn_base.ConvDecoder`);
* mu2(z1), Sigma2 and g(z2): MLPs with ``hidden2`` widths (default (64,),
  Dang's h = 64); ``sigma2_var`` ``"data_dependent"`` is Dang's
  Sigma2 = MLP(z1).

Sigma1 = sigma1^2 I is fixed (``hyper["sigma1"]``). Inputs: flat (n, H*W*C) or
images (:mod:`cnn_base`). Paper conventions: :mod:`mlp_mhvae` (Dang's
L_HVAE = 2 l minus constants; their code's betas are twice these).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from linvae_jax._src.models import cnn_base as CB
from linvae_jax._src.models import mlp_base as B
from linvae_jax._src.models.mlp_mhvae import TwoLatent, TwoLatentNet


class CNNMHVAENet(TwoLatentNet):
  shape: tuple
  latent_dim1: int
  latent_dim2: int
  channels: tuple
  dec_channels: tuple
  hidden2: tuple
  kernel: int
  activation: str
  sigma2_var: str
  decoder_var: str
  bias: bool
  param_dtype: Any

  def setup(self):
    kw = {"kernel": self.kernel, "activation": self.activation, "bias": self.bias,
          "param_dtype": self.param_dtype}
    self.enc1_trunk = CB.ConvEncoder(self.shape, self.channels, (), **kw)
    self.enc1_head = nn.Dense(self.latent_dim1, use_bias=self.bias, param_dtype=self.param_dtype)
    self._setup_z2()
    self.dec1 = CB.ConvDecoder(self.shape, self.dec_channels, **kw)
    self._setup_dec_scale()

  def encode1(self, x):
    return self.enc1_head(self.enc1_trunk(x))


@dataclasses.dataclass(frozen=True)
class CNNMHVAE(CB.ConvLayers, TwoLatent):
  """Convolutional two-latent MHVAE.

  Args:
    latent_dim1, latent_dim2: d1, d2.
    image_shape: (H, W, C) (default (28, 28, 1)).
    channels: x -> z1 conv channels, stride 2 (default (64, 32), Dang).
    dec_channels: z1 -> x transposed-conv channels (None: ``channels``).
    hidden2: widths of the z1 -> z2 MLP (z2 -> z1 reversed); default (64,).
    kernel, activation, decoder_var, bias, evaluation options: as
      :class:`cnn_vae.CNNVAE`.
    sigma2_var: ``"learnable"``, ``"data_dependent"`` or ``"fixed"``.
  """
  latent_dim1: int
  latent_dim2: int
  image_shape: tuple = (28, 28, 1)
  channels: tuple = (64, 32)
  dec_channels: tuple | None = None
  hidden2: tuple = (64,)
  kernel: int = 3
  activation: str = "relu"
  sigma2_var: str = "learnable"
  decoder_var: str = "fixed"
  bias: bool = True

  name: ClassVar[str] = "cnn_mhvae"

  def __post_init__(self):
    for arg in ("latent_dim1", "latent_dim2", "kernel"):
      B.check_pos_int(arg, getattr(self, arg))
    self._check_channels()
    CB.check_image_shape("image_shape", self.image_shape, len(self._dec_channels))
    B.check_widths("hidden2", self.hidden2)
    self._check_common()

  def _net(self, dtype):
    return CNNMHVAENet(self.image_shape, self.latent_dim1, self.latent_dim2, self.channels,
                       self._dec_channels, self.hidden2, self.kernel, self.activation,
                       self.sigma2_var, self.decoder_var, self.bias, dtype)

  def _x(self, params, batch, name="batch"):
    """The images as flat (n, D) in the parameters' dtype, after the shape checks."""
    if isinstance(batch, (tuple, list)):
      if len(batch) != 1:
        raise ValueError("batch must be x (the MHVAE reconstructs its input).")
      batch = batch[0]
    CB.check_images(f"{name} x", batch, self.image_shape)
    return jnp.asarray(CB.flat(batch, self.image_shape), self._param_dtype(params))

  def check_data(self, data) -> None:
    """Shape (flat or image) and finiteness of a data set; ValueError otherwise."""
    if isinstance(data, (tuple, list)):
      if len(data) != 1:
        raise ValueError("data must be x (the MHVAE reconstructs its input).")
      data = data[0]
    CB.check_images("data x", data, self.image_shape)


MODELS = {"cnn_mhvae": CNNMHVAE}
