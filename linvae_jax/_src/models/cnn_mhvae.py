r"""Convolutional two-latent Markovian hierarchical VAE in flax (Dang et al. Fig 9,
A.2.3, ``MNIST_HVAE_CNN``).

The model, objective and metrics are those of :mod:`mlp_mhvae` (its
``sampled_loss`` and ``evaluate`` are reused unchanged), with the x <-> z1
maps convolutional:

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

from linvae_jax._src import validation
from linvae_jax._src.models import cnn_base as CB
from linvae_jax._src.models import mlp_base as B
from linvae_jax._src.models.mlp_mhvae import MLPMHVAE


class CNNMHVAENet(B.DecoderScaleNet):
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
    kw = {"activation": self.activation, "bias": self.bias, "param_dtype": self.param_dtype}
    ckw = dict(kw, kernel=self.kernel)
    self.enc1_trunk = CB.ConvEncoder(self.shape, self.channels, (), **ckw)
    self.enc1_head = nn.Dense(self.latent_dim1, use_bias=self.bias, param_dtype=self.param_dtype)
    self.trunk2 = B.MLP(self.hidden2, None, **kw)
    self.head2 = B.GaussianHead(self.latent_dim2, self.sigma2_var, self.bias, self.param_dtype)
    self.dec2 = B.MLP(tuple(reversed(self.hidden2)), self.latent_dim1, **kw)
    self.dec1 = CB.ConvDecoder(self.shape, self.dec_channels, **ckw)
    self._setup_dec_scale()

  def encode1(self, x):
    return self.enc1_head(self.enc1_trunk(x))

  def encode2(self, z1):
    return self.head2(self.trunk2(z1))

  def decode2(self, z2):
    return self.dec2(z2)

  def decode1(self, z1):
    return self.dec1(z1)

  def __call__(self, x, z1, z2):
    return (self.encode1(x), self.encode2(z1), self.decode2(z2), self.decode1(z1),
            self.dec_log_scale())


@dataclasses.dataclass(frozen=True)
class CNNMHVAE(B.NonlinearModel):
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

  # the objective and metrics of the MLP MHVAE, unchanged
  hyper_names = MLPMHVAE.hyper_names
  encoder2 = MLPMHVAE.encoder2
  decoder_std = MLPMHVAE.decoder_std
  sampled_loss = MLPMHVAE.sampled_loss
  evaluate = MLPMHVAE.evaluate
  _apply = MLPMHVAE._apply

  def __post_init__(self):
    for arg in ("latent_dim1", "latent_dim2", "kernel"):
      B.check_pos_int(arg, getattr(self, arg))
    CB.check_channels("channels", self.channels)
    if self.dec_channels is not None:
      CB.check_channels("dec_channels", self.dec_channels)
    CB.check_image_shape("image_shape", self.image_shape, len(self._dec_channels))
    B.check_widths("hidden2", self.hidden2)
    self._check_common()

  @property
  def _dec_channels(self) -> tuple:
    return self.channels if self.dec_channels is None else self.dec_channels

  @property
  def data_dim(self) -> int:
    """D = H*W*C."""
    return CB.image_size(self.image_shape)

  @property
  def setting(self):
    return (f"{self.activation},sigma2={self.sigma2_var},dec={self.decoder_var},"
            f"conv={'-'.join(map(str, self.channels))}")

  def check_hyper(self, hyper):
    validation.check_hyper(hyper, self.hyper_names, self.positive_hyper)
    B.check_fixed_std("sigma1", hyper["sigma1"], 1)
    if self.sigma2_var == "fixed":
      B.check_fixed_std("sigma2", hyper["sigma2"], self.latent_dim2)

  def _net(self, dtype):
    return CNNMHVAENet(self.image_shape, self.latent_dim1, self.latent_dim2, self.channels,
                       self._dec_channels, self.hidden2, self.kernel, self.activation,
                       self.sigma2_var, self.decoder_var, self.bias, dtype)

  def init(self, key, moments=None, scale=1.0):
    """Parameters (``{"params": ...}``): LeCun-normal kernels times ``scale``."""
    dt = self._dtype(moments)
    args = (jnp.zeros((1, self.data_dim), dt), jnp.zeros((1, self.latent_dim1), dt),
            jnp.zeros((1, self.latent_dim2), dt))
    return B.scale_kernels(self._net(dt).init(key, *args), scale)

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
