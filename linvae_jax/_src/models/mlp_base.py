r"""Shared pieces of the nonlinear (flax) models: config checks, MLPs, variances.

The nonlinear models (``mlp_vae``, ``mlp_cvae``, ``mlp_mhvae``, ``cnn_vae``)
follow the linear models' conventions: hyperparameters ``beta`` (``beta1``,
``beta2``), ``eta_enc``, ``eta_dec`` and fixed ``sigma`` (``sigma1``,
``sigma2``) are **standard deviations** held in a traced ``hyper`` dict, and
the objective is the exact negative beta-ELBO per sample in nats, every
constant included. They have no closed form (no ``optimum``) and train with
the engine's ``objective="sampled"``.

Parameters are a plain pytree: flax.linen variables ``{"params": {...}}``
(``Module.init`` / ``Module.apply``), so a grid vmaps over them.

Initialisation (``init(key, moments, scale)``): kernels are flax's default
LeCun-normal draws (std 1/sqrt(fan_in)) multiplied by ``scale``, biases 0,
log-variances 0. ``scale = 1`` is the standard deep-learning init; the
engine's default ``init_scale = 0.1`` gives a 10x smaller one, so pass
``init_scale`` in the grid. ``moments`` is ignored (may be None): input
dimensions come from the config.

Variance settings:

* ``encoder_var``: ``"learnable"`` (a data-independent diagonal Sigma,
  log-variances initialised at 0, as in the theory and Dang's VAE),
  ``"data_dependent"`` (log sigma^2(x) from a linear head on the encoder's last
  hidden layer, W&Z and Dang's CVAE code) or ``"fixed"`` (Sigma =
  diag(sigma^2), ``hyper["sigma"]`` a std, scalar or (d,)).
* ``decoder_var``: ``"fixed"`` (p(x|z) = N(f(z), eta_dec^2 I)) or
  ``"learnable"`` (Lucas et al.: std eta_dec * exp(s) with a learned scalar s
  initialised at 0, so ``hyper["eta_dec"]`` is the *initial* std, Lucas'
  sigma^2_init = eta_dec^2).
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from linvae_jax._src import nonlinear_metrics as nm
from linvae_jax._src import validation

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "identity": lambda h: h}
ENCODER_VARS = ("learnable", "data_dependent", "fixed")
DECODER_VARS = ("fixed", "learnable")


def default_dtype():
  return jnp.zeros(()).dtype  # float64 under jax_enable_x64, else float32


# ------------------------------------------------------------ config checks --

def check_choice(arg: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"{arg} must be one of {tuple(choices)}, got {value!r}.")


def check_pos_int(arg: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{arg} must be a positive integer, got {value!r}.")


def check_widths(arg: str, widths) -> None:
  """Hidden widths: a tuple of positive integers (empty: no hidden layer)."""
  if not isinstance(widths, tuple):
    raise ValueError(f"{arg} must be a tuple of positive integers, got {widths!r} "  # noqa: TRY004
                     "(use a tuple so the config stays hashable).")
  for i, w in enumerate(widths):
    check_pos_int(f"{arg}[{i}]", w)


def check_data_array(name: str, a, width: int, what: str) -> None:
  """2-D (n, width) array, n >= 1, finite when concrete."""
  shape = np.shape(a)
  if len(shape) != 2:
    raise ValueError(f"{name} must be 2-D (n, {width}), got shape {shape}.")
  if shape[1] != width:
    raise ValueError(f"{name} has {shape[1]} columns but the model's {what} is {width}.")
  if shape[0] < 1:
    raise ValueError(f"{name} is empty (shape {shape}).")
  validation.check_finite(name, a)


def check_fixed_std(arg: str, value, d: int) -> None:
  if not validation.is_concrete(value):
    return
  if np.shape(value) not in ((), (1,), (d,)):
    raise ValueError(f"{arg} must be a scalar or have shape ({d},), got shape {np.shape(value)}.")


def check_same_rows(name: str, x, y) -> None:
  """x and y of a pair have the same number of rows (examples)."""
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"{name}: x has {x.shape[0]} rows and y {y.shape[0]}.")


def as_pair(batch):
  """A conditional model's batch as the pair (x, y), x the condition."""
  if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
    raise ValueError("batch must be a pair (x, y) for a CVAE (x the condition).")
  x, y = batch
  return x, y


# -------------------------------------------------------------- flax parts --

class MLP(nn.Module):
  """Dense layers: ``widths`` hidden layers with ``activation``, then an
  optional linear output of size ``out`` (None: return the last hidden layer)."""
  widths: tuple
  out: int | None
  activation: str
  bias: bool
  param_dtype: Any

  @nn.compact
  def __call__(self, h):
    act = ACTIVATIONS[self.activation]
    for w in self.widths:
      h = act(nn.Dense(w, use_bias=self.bias, param_dtype=self.param_dtype)(h))
    if self.out is not None:
      h = nn.Dense(self.out, use_bias=self.bias, param_dtype=self.param_dtype)(h)
    return h


class DecoderScaleNet(nn.Module):
  """Base of the model networks: a scalar ``dec_log_scale`` parameter when
  ``decoder_var == "learnable"`` (the decoder std is eta_dec * exp of it),
  0 otherwise. Subclasses declare ``decoder_var`` and ``param_dtype`` and call
  ``_setup_dec_scale()`` in ``setup``."""

  def _setup_dec_scale(self):
    if self.decoder_var == "learnable":
      self.log_scale = self.param("dec_log_scale", nn.initializers.zeros, (), self.param_dtype)

  def dec_log_scale(self):
    if self.decoder_var == "learnable":
      return self.log_scale
    return jnp.zeros((), self.param_dtype)


class SingleLatentNet(DecoderScaleNet):
  """Base of the single-latent networks (:class:`SingleLatent`): subclasses
  define ``encode(inputs)`` and ``decode(z, inputs)``; ``__call__`` runs both
  and ``dec_log_scale``, so ``init`` creates every parameter."""

  def __call__(self, inputs, z):
    return self.encode(inputs), self.decode(z, inputs), self.dec_log_scale()


class GaussianHead(nn.Module):
  """Mean and log-variance of a diagonal Gaussian from features ``h``.

  ``var``: ``learnable`` (a data-independent parameter ``log_var`` (d,)),
  ``data_dependent`` (a second linear head) or ``fixed`` (returns None; the
  model reads the std from ``hyper``).
  """
  dim: int
  var: str
  bias: bool
  param_dtype: Any

  @nn.compact
  def __call__(self, h):
    mu = nn.Dense(self.dim, use_bias=self.bias, param_dtype=self.param_dtype, name="mu")(h)
    if self.var == "learnable":
      lv = self.param("log_var", nn.initializers.zeros, (self.dim,), self.param_dtype)
      lv = jnp.broadcast_to(lv, mu.shape)
    elif self.var == "data_dependent":
      lv = nn.Dense(self.dim, use_bias=True, param_dtype=self.param_dtype, name="log_var")(h)
    else:
      lv = None
    return mu, lv


def scale_kernels(params, scale):
  """Multiply every ``kernel`` leaf by ``scale`` (a traced scalar is fine)."""
  def f(path, leaf):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", None))
    return leaf * jnp.asarray(scale, leaf.dtype) if name == "kernel" else leaf
  return jax.tree_util.tree_map_with_path(f, params)


def std_from(log_var, fixed_std, shape, dtype):
  """Encoder std (n, d): exp(log_var / 2), or the fixed std broadcast."""
  if log_var is not None:
    return jnp.exp(0.5 * log_var)
  return jnp.broadcast_to(jnp.asarray(fixed_std, dtype), shape)


def neg_log_normal(resid, std) -> jax.Array:
  """-log N(resid; 0, std^2 I) summed over the last axis (std a scalar)."""
  dim = resid.shape[-1]
  return 0.5 * jnp.sum(resid ** 2, axis=-1) / std ** 2 + dim * (jnp.log(std)
                                                               + 0.5 * math.log(2.0 * math.pi))


def log_normal_diag(z, mu, std) -> jax.Array:
  """log N(z; mu, diag(std^2)) summed over the last axis."""
  shape = jnp.broadcast_shapes(jnp.shape(z), jnp.shape(mu))
  z, mu = jnp.broadcast_to(z, shape), jnp.broadcast_to(mu, shape)
  std = jnp.broadcast_to(std, shape)
  return -jnp.sum(0.5 * ((z - mu) / std) ** 2 + jnp.log(std), axis=-1) - (
      0.5 * mu.shape[-1] * math.log(2.0 * math.pi))


# ------------------------------------------------------------------- base --

@dataclasses.dataclass(frozen=True)
class NonlinearModel(abc.ABC):
  """Common config behaviour (subclasses are frozen dataclasses).

  Evaluation options, keyword-only fields of every model, static (changing
  them recompiles ``evaluate``): ``iw_samples`` K importance samples per example, drawn ``iw_chunk`` at a
  time (K must be a multiple); ``eval_eps``, ``eval_delta`` of the
  (eps, delta)-collapse count; ``au_threshold`` of AU, Dang's AU and the
  covariance rank.
  """
  iw_samples: int = dataclasses.field(default=100, kw_only=True)
  iw_chunk: int = dataclasses.field(default=10, kw_only=True)
  eval_eps: float = dataclasses.field(default=0.01, kw_only=True)
  eval_delta: float = dataclasses.field(default=0.05, kw_only=True)
  au_threshold: float = dataclasses.field(default=0.01, kw_only=True)

  name: ClassVar[str] = ""

  def _check_common(self):
    check_choice("activation", self.activation, tuple(ACTIVATIONS))
    # the variance settings each subclass declares
    for arg, choices in (("encoder_var", ENCODER_VARS), ("sigma2_var", ENCODER_VARS),
                         ("decoder_var", DECODER_VARS)):
      if hasattr(self, arg):
        check_choice(arg, getattr(self, arg), choices)
    check_pos_int("iw_samples", self.iw_samples)
    check_pos_int("iw_chunk", self.iw_chunk)
    if self.iw_samples % self.iw_chunk:
      raise ValueError(f"iw_samples={self.iw_samples} must be a multiple of "
                       f"iw_chunk={self.iw_chunk}.")
    for arg in ("eval_eps", "au_threshold"):
      v = getattr(self, arg)
      if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
        raise ValueError(f"{arg} must be a finite number >= 0, got {v!r}.")
    if not (isinstance(self.eval_delta, (int, float)) and 0 <= self.eval_delta <= 1):
      raise ValueError(f"eval_delta must be in [0, 1], got {self.eval_delta!r}.")

  @property
  @abc.abstractmethod
  def hyper_names(self) -> tuple: ...

  @property
  def positive_hyper(self) -> tuple:
    return self.hyper_names

  @property
  def setting(self) -> str:
    return ""

  def label(self) -> str:
    return f"{self.name}[{self.setting}]" if self.setting else self.name

  def check_hyper(self, hyper) -> None:
    validation.check_hyper(hyper, self.hyper_names, self.positive_hyper)

  def _dtype(self, moments=None):
    return moments.dtype if moments is not None else default_dtype()

  @staticmethod
  def _param_dtype(params):
    return jax.tree.leaves(params)[0].dtype

  def _iw_samples(self, key, fn, n):
    """Stack ``fn(key) -> tuple of (n, iw_chunk)`` over K / iw_chunk calls in
    sequence (``lax.map``: memory of one chunk) into a tuple of (n, K) arrays."""
    keys = jax.random.split(key, self.iw_samples // self.iw_chunk)
    out = jax.lax.map(fn, keys)                       # each (chunks, n, chunk)
    return tuple(jnp.moveaxis(a, 0, 1).reshape(n, self.iw_samples) for a in out)

  def _latent_metrics(self, key, mu, std, prior_std, prefix=""):
    return nm.latent_summary(key, mu, std, prior_std, eps=self.eval_eps, delta=self.eval_delta,
                             au_threshold=self.au_threshold, prefix=prefix)


class SingleLatent(NonlinearModel):
  r"""Shared objective and evaluation of models with one Gaussian latent z.

  Subclasses supply ``_split(batch) -> (inputs, target)``, ``_check_batch``,
  ``_dummy_batch`` and ``_net()``, a :class:`SingleLatentNet` with the flax
  methods ``encode(inputs) -> (mu, log_var or None)`` and
  ``decode(z, inputs) -> mean of the target``. ``_in_dim`` and ``_unflat``
  (``linear_maps``' flat view of the inputs) default to the input x alone;
  :class:`ConditionalInputs` gives the pair (x, y).

  ``sampled_loss`` (per example, averaged over the minibatch; one
  reparameterised z per example, analytic KL):

  .. math:: \ell = \tfrac12\|y - f(z)\|^2/\eta^2 + D\log\eta + \tfrac D2\log 2\pi
     + \beta\, KL(q(z|\cdot)\,\|\,N(0, \eta_{enc}^2 I)),

  with eta the decoder std (``eta_dec``, times exp(s) when learnable). The
  papers' conventions: Dang et al.'s code minimises ``paper_loss`` =
  ||y - f(z)||^2 / eta_dec^2 + beta_D KL = 2 l - D log(2 pi eta_dec^2) with
  **beta_D = 2 beta** (their reconstruction term has no 1/2); W&Z's eq. (5) is
  l - (D/2) log(2 pi eta_dec^2) with the same beta; Lucas et al.'s -ELBO is l at
  beta = 1 (their sigma^2 = eta^2).
  """

  @property
  def hyper_names(self):
    base = ("beta", "eta_enc", "eta_dec")
    return base + ("sigma",) if self.encoder_var == "fixed" else base

  @property
  def setting(self):
    return f"{self.activation},{self.encoder_var},dec={self.decoder_var}"

  def check_hyper(self, hyper):
    super().check_hyper(hyper)
    if self.encoder_var == "fixed":
      check_fixed_std("sigma", hyper["sigma"], self.latent_dim)

  def init(self, key, moments=None, scale=1.0):
    """Parameters (``{"params": ...}``): LeCun-normal kernels times ``scale``."""
    dt = self._dtype(moments)
    inputs, _ = self._split(self._dummy_batch(dt))
    z = jnp.zeros((1, self.latent_dim), dt)
    params = self._net(dt).init(key, inputs, z)
    return scale_kernels(params, scale)

  def encoder(self, params, inputs, hyper):
    """(mu, std), each (n, d): the encoder's posterior mean and standard deviation."""
    dt = self._param_dtype(params)
    mu, lv = self._net(dt).apply(params, inputs, method="encode")
    return mu, std_from(lv, hyper.get("sigma"), mu.shape, dt)

  def decoder_std(self, params, hyper):
    """The decoder std: ``eta_dec`` (fixed) or ``eta_dec * exp(s)`` (learnable)."""
    dt = self._param_dtype(params)
    s = self._net(dt).apply(params, method="dec_log_scale")
    return hyper["eta_dec"] * jnp.exp(s)

  def decode(self, params, z, inputs):
    return self._net(self._param_dtype(params)).apply(params, z, inputs, method="decode")

  def _prepared(self, params, batch, name="batch"):
    inputs, target = self._split(batch)
    self._check_batch(inputs, target, name)
    dt = self._param_dtype(params)
    cast = lambda a: jnp.asarray(a, dt)
    return jax.tree.map(cast, inputs), cast(target)

  def sampled_loss(self, params, batch, key, hyper):
    """Minibatch negative beta-ELBO per example, nats (class docstring)."""
    inputs, y = self._prepared(params, batch)
    mu, std = self.encoder(params, inputs, hyper)
    z = mu + std * jax.random.normal(key, mu.shape, mu.dtype)
    nll = neg_log_normal(y - self.decode(params, z, inputs), self.decoder_std(params, hyper))
    kl = jnp.sum(nm.gaussian_kl(mu, std, hyper["eta_enc"]), axis=-1)
    return jnp.mean(nll + hyper["beta"] * kl)

  def paper_loss(self, params, batch, key, hyper, convention: str = "dang"):
    """``sampled_loss`` in a paper's convention: ``"dang"`` (code: ||.||^2/eta^2 +
    2 beta KL) or ``"wz"`` (eq. 5: without the decoder's normalising constant)."""
    loss = self.sampled_loss(params, batch, key, hyper)
    _, y = self._split(batch)
    const = 0.5 * y.shape[-1] * jnp.log(2.0 * math.pi * self.decoder_std(params, hyper) ** 2)
    if convention == "dang":
      return 2.0 * (loss - const)
    if convention == "wz":
      return loss - const
    raise ValueError(f"convention must be 'dang' or 'wz', got {convention!r}.")

  def evaluate(self, params, hyper, data, key):
    r"""Held-out metrics (a dict of scalars and (d,) arrays), nats per example.

    * ``iw_ll``, ``iw_ll_se``, ``iw_ll_mc_se``, ``elbo_iw``: importance-weighted
      log p(y|inputs) with K = ``iw_samples`` draws from q
      (:func:`nonlinear_metrics.iw_estimate`);
    * ``recon``: -E_q log p(y|z) (one K-sample average), ``elbo`` = -recon - kl
      (beta = 1), ``neg_beta_elbo`` = recon + beta kl (the training objective);
    * ``eta_dec_std``: the decoder std;
    * the latent metrics of :func:`nonlinear_metrics.latent_summary`: ``kl``,
      ``kl_per_dim``, ``au``, ``mean_var``, ``dang_au``, ``n_collapsed``,
      ``collapse_frac``, ``mi``, ``cov_rank``, ``mean_std``.
    """
    inputs, y = self._prepared(params, data, "data")
    k_iw, k_lat = jax.random.split(key)
    mu, std = self.encoder(params, inputs, hyper)
    dstd = self.decoder_std(params, hyper)
    n, d = mu.shape
    c = self.iw_chunk
    tile = lambda a: jnp.broadcast_to(a, (c,) + a.shape).reshape((c * a.shape[0],) + a.shape[1:])

    def chunk(k):
      z = mu[None] + std[None] * jax.random.normal(k, (c, n, d), mu.dtype)  # (c, n, d)
      yhat = self.decode(params, z.reshape(c * n, d), jax.tree.map(tile, inputs))
      log_px = -neg_log_normal(y[None] - yhat.reshape((c, n) + y.shape[1:]), dstd)
      log_pz = log_normal_diag(z, jnp.zeros_like(z), hyper["eta_enc"])
      log_q = log_normal_diag(z, mu[None], std[None])
      return (log_px + log_pz - log_q).T, log_px.T

    log_w, log_px = self._iw_samples(k_iw, chunk, n)
    out = nm.iw_estimate(log_w)
    lat = self._latent_metrics(k_lat, mu, std, hyper["eta_enc"])
    recon = -jnp.mean(log_px)
    out.update(lat)
    out.update(recon=recon, elbo=-recon - lat["kl"], neg_beta_elbo=recon + hyper["beta"] * lat["kl"],
               eta_dec_std=jnp.asarray(dstd, mu.dtype))
    return out

  def _in_dim(self):
    return self.data_dim

  def _unflat(self, u):
    return u

  def linear_maps(self, params, hyper=None):
    r"""For ``activation="identity"``: the affine maps the network computes.

    Returns ``W`` (d, D_in), ``b`` (d,) with mu = W u + b, ``U`` (D_out, d),
    ``c`` (D_out,) with f(z) = U z + c (for a CVAE the decoder's input is
    [z; x] and ``U`` is its z-block), and ``sigma_std`` (d,) for a
    data-independent encoder variance. Read off by evaluating the network at 0
    and at the unit vectors, so it holds for any number of hidden layers.
    """
    if self.activation != "identity":
      raise ValueError("linear_maps needs activation='identity'.")
    dt = self._param_dtype(params)
    d = self.latent_dim
    din = self._in_dim()
    eye_in = jnp.eye(din, dtype=dt)
    net = self._net(dt)
    mu0, lv = net.apply(params, self._unflat(jnp.zeros((1, din), dt)), method="encode")
    mui, _ = net.apply(params, self._unflat(eye_in), method="encode")
    w = (mui - mu0).T
    zin = self._unflat(jnp.zeros((1, din), dt))
    f0 = net.apply(params, jnp.zeros((1, d), dt), zin, method="decode")
    fi = net.apply(params, jnp.eye(d, dtype=dt), jax.tree.map(
        lambda a: jnp.broadcast_to(a, (d,) + a.shape[1:]), zin), method="decode")
    out = {"W": w, "b": mu0[0], "U": (fi - f0).T, "c": f0[0]}
    if lv is not None and self.encoder_var == "learnable":
      out["sigma_std"] = jnp.exp(0.5 * lv[0])
    return out


class DenseWidths:
  """Mixin of the MLP single-latent models: checks of the encoder's ``hidden``
  and decoder's ``dec_hidden`` widths; ``dec_hidden=None`` mirrors the encoder."""

  def _check_widths(self):
    check_widths("hidden", self.hidden)
    if self.dec_hidden is not None:
      check_widths("dec_hidden", self.dec_hidden)

  @property
  def _dec_hidden(self) -> tuple:
    return tuple(reversed(self.hidden)) if self.dec_hidden is None else self.dec_hidden


class ConditionalInputs:
  """Mixin of the conditional models: the inputs are the pair (x, y) of the
  condition x (``cond_dim``) and the output y (``data_dim``), flat [x; y] in
  ``linear_maps`` (list it before :class:`SingleLatent`, whose x-alone
  defaults it replaces)."""

  def _dummy_batch(self, dt):
    return jnp.zeros((1, self.cond_dim), dt), jnp.zeros((1, self.data_dim), dt)

  def _in_dim(self):
    return self.cond_dim + self.data_dim

  def _unflat(self, u):
    return u[:, :self.cond_dim], u[:, self.cond_dim:]
