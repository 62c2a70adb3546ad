"""The model protocol every linear model module implements.

A model is a frozen (hashable, so usable as a static jit argument) dataclass
holding only *static* configuration: latent dimensions and the variance
setting. Everything that is swept -- beta, eta_enc, eta_dec, fixed sigma --
lives in a ``hyper`` dict of arrays, so new values never recompile.

Each model module defines, side by side:

* ``init(key, moments, scale)``  -> parameter pytree (a ``flax.struct`` class
  whose docstring states the model's maths);
* ``loss(params, moments, hyper)`` -> exact per-sample negative beta-ELBO in
  nats, expectations over data and reparameterisation noise in closed form;
* ``paper_loss(params, moments, hyper)`` -> the value in the paper's
  convention (an affine function of ``loss``);
* ``optimum(moments, hyper)`` -> :class:`Optimum`, the closed-form global
  minimiser, with ``model.loss(opt.params, moments, hyper) == opt.loss``;
* ``spectrum(params, moments, hyper)`` -> dict of learned spectra with the
  same keys as ``Optimum.spectra``, each sorted non-increasing;
* ``posterior(params, hyper)`` -> dict latent name -> :class:`Posterior` for
  the per-coordinate collapse metrics;
* ``sampled_loss(params, batch, key, hyper)`` -> minibatch Monte-Carlo
  negative beta-ELBO (reparameterised noise, analytic Gaussian KL).

The grid engine and the comparison layer only use this protocol.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar, Mapping

import flax.struct
import jax
import jax.numpy as jnp

from linvae_jax._src import fastpath, validation
from linvae_jax._src.moments import Moments, psd_sqrt

Hyper = Mapping[str, jax.Array]


@flax.struct.dataclass
class Optimum:
  """Closed-form global optimum of a model's loss.

  Attributes:
    spectra: name -> optimal spectrum, sorted non-increasing; same keys as
      ``model.spectrum`` (e.g. ``omega`` decoder singular values, ``lambda``
      encoder singular values, ``sigma_std`` encoder standard deviations).
    active: latent name -> boolean mask over the sorted modes, True where the
      mode is active (rotation-invariant "rank" view of collapse).
    loss: L*, the optimal exact negative beta-ELBO per sample (nats), in the
      same convention as ``model.loss``.
    thresholds: name -> per-mode critical values (e.g. ``beta``: the beta at
      which mode i collapses, other hyperparameters held fixed).
    params: an optimal parameter pytree; ``model.loss(params) == loss``.
    extras: model-specific diagnostics (regime labels, profiled values, ...).
  """
  spectra: dict
  active: dict
  loss: jax.Array
  thresholds: dict
  params: Any
  extras: dict = flax.struct.field(default_factory=dict)


@flax.struct.dataclass
class Posterior:
  r"""Per-coordinate Gaussian posterior of one latent, for collapse metrics.

  q(z_k | u) = N(mean_map[k] @ u, var[k]) with prior N(0, prior_var), where
  the input ``u`` is x (``input="x"``) or the stacked [x; y] (``input="xy"``).
  ``var`` is a (d,) variance; ``prior_var`` a scalar or a per-coordinate (d,)
  variance (the MHVAE's z1 has the marginal prior of p(z1|z2)p(z2)).
  """
  mean_map: jax.Array
  var: jax.Array
  prior_var: jax.Array
  input: str = flax.struct.field(pytree_node=False, default="x")


def _check_all(model, args):
  model.check(args["moments"], args["hyper"])


def _check_moments(model, args):
  model.check_moments(args["moments"])


EAGER_CHECKS = {"check": _check_all, "check_moments": _check_moments}


class LinearModel(abc.ABC):
  """Abstract base; subclasses are ``@dataclasses.dataclass(frozen=True)``.

  Eager calls of the public pure functions a subclass defines (those named in
  ``fast_methods``) are jitted and cached (``fastpath``): on concrete inputs
  the method's eager checks run first (``fast_methods[name]``, a key of
  ``EAGER_CHECKS`` or None), then one compiled program keyed by the model
  config and the input shapes runs; under jit/vmap/grad the original method
  runs inline. ``fast_prepare[name](model, args) -> dict`` may add eagerly
  computed keyword arguments. A subclass sets ``fast_methods = {}`` to opt out.
  """

  name: ClassVar[str] = ""
  latents: ClassVar[tuple[str, ...]] = ("z",)
  fast_methods: ClassVar[Mapping[str, str | None]] = {
      "optimum": "check", "init": None, "loss": None, "paper_loss": None,
      "spectrum": None, "posterior": None}
  fast_prepare: ClassVar[Mapping[str, Any]] = {}

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    for meth, check in cls.fast_methods.items():
      fn = cls.__dict__.get(meth)
      if fn is None or getattr(fn, "__isabstractmethod__", False) or hasattr(fn, "__fastpath__"):
        continue
      setattr(cls, meth, fastpath.method(
          fn, f"{cls.__name__}.{meth}", check=None if check is None else EAGER_CHECKS[check],
          prepare=cls.fast_prepare.get(meth)))

  # ---- static description ------------------------------------------------
  @property
  @abc.abstractmethod
  def hyper_names(self) -> tuple[str, ...]:
    """Names of the hyperparameters ``loss``/``optimum`` read from ``hyper``."""

  @property
  def positive_hyper(self) -> tuple[str, ...]:
    """Hyperparameters that must be > 0 (default: all of them)."""
    return self.hyper_names

  @property
  def setting(self) -> str:
    """Short human-readable label of the variance setting."""
    return ""

  def label(self) -> str:
    return f"{self.name}[{self.setting}]" if self.setting else self.name

  # ---- validation ---------------------------------------------------------
  def check_hyper(self, hyper: Hyper) -> None:
    validation.check_hyper(hyper, self.hyper_names, self.positive_hyper)

  def check_moments(self, moments: Moments) -> None:
    """Raise ``ValueError`` if ``moments`` do not fit this model."""

  def check(self, moments: Moments, hyper: Hyper) -> None:
    if not isinstance(moments, Moments):
      raise ValueError(f"moments must be a linvae_jax Moments, got {type(moments).__name__}.")
    self.check_moments(moments)
    validation.check_moments_psd(moments)
    self.check_hyper(hyper)

  def input_moments(self, moments: Moments):
    """(second moment, mean) of the input of ``posterior`` mean maps."""
    return moments.xx, moments.mean_x

  def input_factor(self, moments: Moments) -> jax.Array:
    """F with F F^T = E[u u^T], the second moment of ``input_moments``.

    For x itself this is ``moments.x_factor``, the very array ``spectrum``
    multiplies by, so a jitted record that takes both the learned spectrum and
    the rank view computes their shared SVD once (XLA merges the duplicate).
    """
    second, _ = self.input_moments(moments)
    return moments.x_factor if second is moments.xx else psd_sqrt(second)

  # ---- the pure functions -------------------------------------------------
  @abc.abstractmethod
  def init(self, key: jax.Array, moments: Moments, scale: float | jax.Array = 0.1) -> Any: ...

  @abc.abstractmethod
  def loss(self, params, moments: Moments, hyper: Hyper) -> jax.Array: ...

  @abc.abstractmethod
  def paper_loss(self, params, moments: Moments, hyper: Hyper) -> jax.Array: ...

  @abc.abstractmethod
  def optimum(self, moments: Moments, hyper: Hyper) -> Optimum: ...

  @abc.abstractmethod
  def spectrum(self, params, moments: Moments, hyper: Hyper) -> dict: ...

  @abc.abstractmethod
  def posterior(self, params, hyper: Hyper) -> dict: ...

  @abc.abstractmethod
  def sampled_loss(self, params, batch, key: jax.Array, hyper: Hyper) -> jax.Array: ...


def as_hyper(hyper: Mapping[str, Any], dtype=None) -> dict:
  """Convert a hyperparameter mapping to a dict of JAX arrays."""
  dtype = dtype or jnp.zeros(()).dtype
  return {k: jnp.asarray(v, dtype) for k, v in hyper.items()}


def replace(model, **changes):
  """``dataclasses.replace`` for model configs."""
  return dataclasses.replace(model, **changes)
