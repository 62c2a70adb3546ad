"""Optimisers of the grid engine and the identity each contributes to a run's spec.

The cell's learning rate is a traced array (one compile for every lr), so an
optimiser is given as a *factory* ``lr -> GradientTransformation`` called
inside the compiled program, or as ``None`` (Adam with the cell's lr).
:func:`identity` describes an optimiser completely (every hyperparameter) for
the resume hash; an optimiser it cannot describe needs an explicit
``optimizer_id`` before a run may be resumed from disk.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class AdamDecay:
  """Optimiser factory: Adam with lr decaying exponentially to ``lr * final_ratio``.

  The learning rate at step t is ``lr * final_ratio ** min(t / decay_steps, 1)``;
  ``lr`` is the cell's traced learning rate (wrapped in
  ``optax.inject_hyperparams``, so it lives in the optimiser state).

  >>> import jax.numpy as jnp
  >>> opt = AdamDecay(decay_steps=100, final_ratio=1e-3)(jnp.asarray(3e-2))
  """
  decay_steps: int
  final_ratio: float = 1e-3

  def __call__(self, lr):
    if self.decay_steps < 1 or not 0 < self.final_ratio <= 1:
      raise ValueError(f"AdamDecay needs decay_steps >= 1 and 0 < final_ratio <= 1, got {self}.")

    def schedule(count):
      frac = jnp.minimum(count.astype(lr.dtype) / self.decay_steps, 1.0)
      return lr * jnp.power(jnp.asarray(self.final_ratio, lr.dtype), frac)
    return inject_adam(schedule)


@dataclasses.dataclass(frozen=True)
class LBFGS:
  """Optimiser factory: L-BFGS with a zoom line search (``optax.lbfgs``).

  For ``objective="analytic"`` only: the analytic loss is deterministic, so
  a line search is sound (on a minibatch estimate it is not, and
  :func:`~linvae_jax.train_grid` refuses it). The cell's ``lr`` is ignored:
  step sizes come from the line search (strong Wolfe conditions). Each step
  evaluates the loss and gradient once or a few times (the line search), and
  reuses the value and gradient the line search stored at the accepted point.

  On ill-conditioned moments (MNIST: A = E[x x^T] has eigenvalues down to
  1e-9 of its largest) it reaches the closed form in tens to hundreds of
  steps where Adam needs many thousands (``benchmarks/time_to_answer.py``).

  >>> opt = LBFGS(memory_size=10)(None)
  """
  memory_size: int = 10
  max_linesearch_steps: int = 20

  uses_value_fn: ClassVar[bool] = True

  def __call__(self, lr):
    del lr  # the line search picks the step
    if self.memory_size < 1 or self.max_linesearch_steps < 1:
      raise ValueError(f"LBFGS needs memory_size >= 1 and max_linesearch_steps >= 1, got {self}.")
    return optax.lbfgs(memory_size=self.memory_size,
                       linesearch=optax.scale_by_zoom_linesearch(
                           max_linesearch_steps=self.max_linesearch_steps,
                           initial_guess_strategy="one"))  # the quasi-Newton step


def uses_value_fn(optimizer) -> bool:
  return bool(getattr(optimizer, "uses_value_fn", False))


# only the learning rate is injected (b1, b2, ... stay Python constants)
_ADAM_STATIC = ("b1", "b2", "eps", "eps_root", "mu_dtype", "nesterov")


def inject_adam(learning_rate):
  return optax.inject_hyperparams(optax.adam, static_args=_ADAM_STATIC)(
      learning_rate=learning_rate)


def make(optimizer, lr):
  """The transformation for one cell: ``optimizer`` applied to its traced ``lr``."""
  if optimizer is None:
    return inject_adam(lr)
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  return optimizer(lr)


def optax_promotion():
  # optax computes ``b1 ** count`` (float ** int32), which strict dtype
  # promotion rejects; optimiser internals run under standard promotion
  return jax.numpy_dtype_promotion("standard")


def set_lr(optimizer, state, lr):
  """Put the cell's lr into an ``inject_hyperparams`` state (user transformations)."""
  if isinstance(optimizer, optax.GradientTransformation) and has_lr(state):
    hp = dict(state.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, jnp.asarray(hp["learning_rate"]).dtype)
    state = state._replace(hyperparams=hp)
  return state


def has_lr(state) -> bool:
  return hasattr(state, "hyperparams") and "learning_rate" in getattr(state, "hyperparams")


# optax.adam's defaults, written out so the identity changes if we ever pass others
_ADAM_DEFAULTS = dict(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, nesterov=False)


def identity(optimizer, optimizer_id: Optional[str] = None) -> Optional[str]:
  """A complete description of ``optimizer`` for the run's spec, or None.

  ``None`` (Adam), :class:`AdamDecay` and :class:`LBFGS` are described with
  every hyperparameter. An arbitrary optax transformation or factory cannot
  be described from outside (two ``optax.adam`` with different rates look
  the same), so it yields None unless the caller names it with
  ``optimizer_id``; :func:`~linvae_jax.train_grid` then refuses to resume.

  >>> identity(None)
  'adam(b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, nesterov=False, lr=per cell)'
  >>> identity(AdamDecay(decay_steps=10))
  'AdamDecay(decay_steps=10, final_ratio=0.001)'
  """
  if optimizer_id is not None:
    if not isinstance(optimizer_id, str) or not optimizer_id.strip():
      raise ValueError(f"optimizer_id must be a non-empty string, got {optimizer_id!r}.")
    return "id:" + optimizer_id
  if optimizer is None:
    args = ", ".join(f"{k}={v}" for k, v in _ADAM_DEFAULTS.items())
    return f"adam({args}, lr=per cell)"
  if isinstance(optimizer, (AdamDecay, LBFGS)):
    return repr(optimizer)
  return None


def describe(optimizer) -> str:
  """A short human-readable name (for messages, not for identity)."""
  if optimizer is None or isinstance(optimizer, (AdamDecay, LBFGS)):
    return identity(optimizer)
  if isinstance(optimizer, optax.GradientTransformation):
    return "GradientTransformation " + getattr(optimizer.init, "__qualname__", "?")
  return "factory " + getattr(optimizer, "__qualname__", type(optimizer).__qualname__)
