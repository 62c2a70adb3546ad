r"""Shared pieces of the convolutional (flax) models: image shapes, conv stacks.

The CNN models (``cnn_vae``, ``cnn_cvae``) use the papers' conv stacks
(Dang et al. §5, A.1.2 and A.2.3): an encoder of 3x3 convolutions with
stride 2 (e.g. 32 then 16 channels on 28x28 MNIST: 14x14x32 -> 7x7x16),
flattened into the Gaussian head; a decoder that maps its input with a dense
layer to the encoder's last feature map (e.g. 7x7x``dec_channels[0]``), then
3x3 transposed convolutions with stride 2 (``dec_channels``), then a 3x3
transposed convolution with stride 1 to the image's channels, linear (the
decoder mean). Padding is ``SAME`` throughout, so each stride-2 layer halves
(encoder) or doubles (decoder) the side: the image sides must be divisible
by 2^(number of stride-2 layers).

**Input format.** Images are accepted flat, ``(n, H*W*C)`` (what
:func:`linvae_jax.data.load_mnist` returns and what the MLP models take), or
as images ``(n, H, W, C)``, or ``(n, H, W)`` when C = 1; any other shape is a
``ValueError`` naming the accepted ones. Inside, the encoder reshapes to
``(n, H, W, C)`` (NHWC, flax's layout) and the reconstruction target is the
flat image ``(n, H*W*C)``, so every metric of :class:`mlp_base.SingleLatent`
(sums over the last axis) applies unchanged.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from linvae_jax._src import validation
from linvae_jax._src.models import mlp_base as B


def check_image_shape(arg: str, shape, n_down: int) -> None:
  """``shape`` = (H, W, C) of positive ints, H and W divisible by 2**n_down."""
  if not (isinstance(shape, tuple) and len(shape) == 3):
    raise ValueError(f"{arg} must be a tuple (H, W, C), got {shape!r}.")
  for i, v in enumerate(shape):
    B.check_pos_int(f"{arg}[{i}]", v)
  f = 2 ** n_down
  if shape[0] % f or shape[1] % f:
    raise ValueError(f"{arg}={shape}: H and W must be divisible by 2**{n_down} = {f} "
                     f"({n_down} stride-2 layers, SAME padding), so the decoder returns the "
                     "image's size.")


def check_channels(arg: str, channels, allow_empty: bool = False) -> None:
  if not isinstance(channels, tuple) or (not channels and not allow_empty):
    raise ValueError(f"{arg} must be a {'' if allow_empty else 'non-empty '}tuple of positive "
                     f"integers, got {channels!r} (a tuple keeps the config hashable).")
  for i, c in enumerate(channels):
    B.check_pos_int(f"{arg}[{i}]", c)


def image_size(shape) -> int:
  return int(math.prod(shape))


def check_images(name: str, a, shape, finite: bool = True) -> None:
  """``a`` is (n, H*W*C), (n, H, W, C) or, for C = 1, (n, H, W); n >= 1; finite
  (when concrete and ``finite``)."""
  got = tuple(np.shape(a))
  h, w, c = shape
  ok = [(image_size(shape),), (h, w, c)] + ([(h, w)] if c == 1 else [])
  if len(got) < 2 or got[1:] not in ok:
    forms = ", ".join(f"(n, {', '.join(map(str, s))})" for s in ok)
    raise ValueError(f"{name} has shape {got}; for images of shape (H, W, C) = {shape} "
                     f"it must be one of {forms}.")
  if got[0] < 1:
    raise ValueError(f"{name} is empty (shape {got}).")
  if finite:
    validation.check_finite(name, a)


class ConvLayers:
  """Mixin of the CNN models: the checks of ``channels`` and ``dec_channels``
  (None: ``channels``), the flat image size ``data_dim`` and the conv channels
  appended to the objective base's ``setting`` (so list it before that base)."""

  def _check_channels(self):
    check_channels("channels", self.channels)
    if self.dec_channels is not None:
      check_channels("dec_channels", self.dec_channels)

  @property
  def _dec_channels(self) -> tuple:
    return self.channels if self.dec_channels is None else self.dec_channels

  @property
  def data_dim(self) -> int:
    """D = H*W*C of ``image_shape`` (the reconstructed or output image)."""
    return image_size(self.image_shape)

  @property
  def setting(self):
    return f"{super().setting},conv={'-'.join(map(str, self.channels))}"


def flat(a, shape):
  """(n, ...) images of ``shape`` as (n, H*W*C)."""
  return jnp.reshape(a, (a.shape[0], image_size(shape)))


def as_nhwc(a, shape):
  return jnp.reshape(a, (a.shape[0],) + tuple(shape))


class ConvEncoder(nn.Module):
  """3x3 (``kernel``) stride-2 convolutions with ``activation``, flattened, then
  ``hidden`` dense layers: the features fed to the Gaussian head."""
  shape: tuple
  channels: tuple
  hidden: tuple
  kernel: int
  activation: str
  bias: bool
  param_dtype: Any

  @nn.compact
  def __call__(self, x):
    act = B.ACTIVATIONS[self.activation]
    h = as_nhwc(x, self.shape)
    k = (self.kernel, self.kernel)
    for c in self.channels:
      h = act(nn.Conv(c, k, strides=(2, 2), padding="SAME", use_bias=self.bias,
                      param_dtype=self.param_dtype)(h))
    h = jnp.reshape(h, (h.shape[0], -1))
    return B.MLP(self.hidden, None, self.activation, self.bias, self.param_dtype)(h)


class ConvDecoder(nn.Module):
  """Dense to (H/2^k, W/2^k, channels[0]), k = len(channels) stride-2 transposed
  convolutions with ``activation``, a stride-1 transposed convolution to C
  channels (linear); returns the flat mean (n, H*W*C)."""
  shape: tuple
  channels: tuple
  kernel: int
  activation: str
  bias: bool
  param_dtype: Any

  @nn.compact
  def __call__(self, u):
    act = B.ACTIVATIONS[self.activation]
    h, w, c_out = self.shape
    f = 2 ** len(self.channels)
    c0 = self.channels[0]
    t = act(nn.Dense((h // f) * (w // f) * c0, use_bias=self.bias,
                     param_dtype=self.param_dtype)(u))
    t = jnp.reshape(t, (u.shape[0], h // f, w // f, c0))
    k = (self.kernel, self.kernel)
    for c in self.channels:
      t = act(nn.ConvTranspose(c, k, strides=(2, 2), padding="SAME", use_bias=self.bias,
                               param_dtype=self.param_dtype)(t))
    t = nn.ConvTranspose(c_out, k, strides=(1, 1), padding="SAME", use_bias=self.bias,
                         param_dtype=self.param_dtype)(t)
    return jnp.reshape(t, (u.shape[0], h * w * c_out))


class ConvVAENet(B.SingleLatentNet):
  """Base of the single-latent CNN networks: their config and, set up by
  ``_setup_head_and_decoder()`` after the encoder, the Gaussian head ``head``
  and the decoder ``dec_mlp`` (``hidden`` reversed) then ``dec``
  (:class:`ConvDecoder` to ``shape``)."""
  shape: tuple
  latent_dim: int
  channels: tuple
  dec_channels: tuple
  hidden: tuple
  kernel: int
  activation: str
  encoder_var: str
  decoder_var: str
  bias: bool
  param_dtype: Any

  def _conv_kw(self) -> dict:
    """Keywords of every conv stack of the net (all but its sizes)."""
    return {"kernel": self.kernel, "activation": self.activation, "bias": self.bias,
            "param_dtype": self.param_dtype}

  def _setup_head_and_decoder(self):
    self.head = B.GaussianHead(self.latent_dim, self.encoder_var, self.bias, self.param_dtype)
    self.dec_mlp = B.MLP(tuple(reversed(self.hidden)), None, self.activation, self.bias,
                         self.param_dtype)
    self.dec = ConvDecoder(self.shape, self.dec_channels, **self._conv_kw())
    self._setup_dec_scale()
