"""Jitted, cached eager entry points for the public closed forms.

Called eagerly, a closed form such as ``model.optimum`` runs op by op: on a
shape not seen before every primitive is compiled on its own (about 2.5 s
for a VAE optimum at D <= 8 on a 2-core CPU). :func:`method` and
:func:`function` wrap such a function so that a call on *concrete* inputs

1. runs the eager input checks (``ValueError`` on bad input, never a NaN
   from inside a compiled program),
2. optionally computes eager-only quantities (``prepare``: e.g. the CVAE's
   float64 numpy residual moment, which a traced call could only compute in
   the moments' dtype),
3. dispatches into one ``jax.jit`` of the whole function, cached by jit on
   the static configuration (the frozen, hashable model dataclass and the
   non-array arguments: strings, booleans, ``None``, dtypes), the pytree
   structure and the shapes, dtypes and weak types of the array arguments.
   A repeat call on a shape already seen costs the jit dispatch (well under
   a millisecond) plus the checks.

Calls with a tracer anywhere in their arguments (under an outer ``jit``,
``vmap`` or ``grad``) bypass the cache and run the original function inline,
exactly as before, so they stay traceable and differentiable. Arguments that
are not pytrees of arrays and Python numbers and are not hashable (e.g. a
pandas Series of hyperparameters) also take the original, eager path.

Values: the compiled function computes the same maths as the op-by-op path,
but XLA fuses and simplifies across operations, so results agree to a few
ulp rather than bitwise (measured in ``tests/test_fastpath.py``). For
bit-exact reproduction of the op-by-op numbers, run under
:func:`disabled` or set ``LINVAE_JAX_EAGER=1``.

:func:`trace_count` counts traces per wrapped function, so tests can check
that a repeat call does not retrace.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import os
import threading
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from linvae_jax._src import validation

_TRACES: collections.Counter = collections.Counter()
_STATE = threading.local()


def _env_enabled() -> bool:
  return os.environ.get("LINVAE_JAX_EAGER", "").strip().lower() not in ("1", "true", "yes", "on")


def is_enabled() -> bool:
  """Whether wrapped functions dispatch into their cached jit (this thread)."""
  flag = getattr(_STATE, "enabled", None)
  return _env_enabled() if flag is None else flag


@contextlib.contextmanager
def disabled():
  """Run wrapped functions on the original op-by-op path inside the block."""
  old = getattr(_STATE, "enabled", None)
  _STATE.enabled = False
  try:
    yield
  finally:
    _STATE.enabled = old


def trace_count(name: Optional[str] = None):
  """Traces so far of the wrapped function ``name`` (e.g. ``"LinearVAE.optimum"``);
  with no name, a dict of all counts."""
  return dict(_TRACES) if name is None else _TRACES[name]


def compiler_options(backend: str) -> Optional[dict]:
  """XLA options of the fast-path programs: on CPU, LLVM at -O0.

  These are small programs run once per call whose time goes into LAPACK
  (eigh, svd) and library matmuls, not generated loops: -O0 cuts their
  compile time about 3x (VAE optimum at D = 6: 1.9 s -> 0.7 s; init 2.9 s
  -> 0.9 s on a loaded 2-core CPU) and leaves the run time at D = 784 within
  noise. Other backends keep XLA's defaults.
  """
  return {"xla_backend_optimization_level": 0} if backend == "cpu" else None


def _is_dynamic_leaf(x) -> bool:
  if isinstance(x, bool):
    return False
  return isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, complex))


def _split(arguments: Mapping[str, Any]):
  """(dynamic, static) arguments: pytrees of array-likes are traced, the rest
  (strings, booleans, None, dtypes, ...) is static. ``None`` if a mixed tree
  or an unhashable static value makes the call uncacheable."""
  dyn, static = {}, []
  for name, value in arguments.items():
    leaves = jax.tree.leaves(value)
    if leaves and all(_is_dynamic_leaf(leaf) for leaf in leaves):
      dyn[name] = value
    elif any(_is_dynamic_leaf(leaf) for leaf in leaves):
      return None
    else:
      try:
        hash(value)
      except TypeError:
        return None
      static.append((name, value))
  return dyn, tuple(static)


def _wrap(fn: Callable, name: str, *, bound: bool,
          check: Optional[Callable] = None, prepare: Optional[Callable] = None) -> Callable:
  sig = inspect.signature(fn)
  if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values()):
    raise TypeError(f"fastpath cannot wrap {name}: *args/**kwargs are not supported.")
  params = list(sig.parameters)
  self_name = params[0] if bound else None

  def core(owner, dyn, static):
    _TRACES[name] += 1
    kwargs = {**dyn, **dict(static)}
    return fn(owner, **kwargs) if bound else fn(**kwargs)

  compiled = {}

  def jitted(owner, dyn, static):
    backend = jax.default_backend()
    if backend not in compiled:
      compiled[backend] = jax.jit(core, static_argnums=(0, 2),
                                  compiler_options=compiler_options(backend))
    return compiled[backend](owner, dyn, static)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    if not is_enabled():
      return fn(*args, **kwargs)
    ba = sig.bind(*args, **kwargs)
    ba.apply_defaults()
    arguments = dict(ba.arguments)
    owner = arguments.pop(self_name) if bound else None
    if not validation.is_concrete(arguments):
      return fn(*args, **kwargs)
    split = _split(arguments)
    if split is None:
      return fn(*args, **kwargs)
    try:
      hash(owner)
    except TypeError:
      return fn(*args, **kwargs)
    if check is not None:
      check(owner, arguments) if bound else check(arguments)
    dyn, static = split
    if prepare is not None:
      extra = prepare(owner, arguments) if bound else prepare(arguments)
      dyn = {**dyn, **extra}
    return jitted(owner, dyn, static)

  wrapper.__fastpath__ = fn
  return wrapper


def method(fn: Callable, name: str, *, check: Optional[Callable] = None,
           prepare: Optional[Callable] = None) -> Callable:
  """Wrap the method ``fn(self, ...)`` of a hashable (frozen dataclass) class.

  ``check(self, arguments)`` and ``prepare(self, arguments) -> dict`` get the
  bound arguments by parameter name (defaults applied) and run eagerly on
  concrete inputs, in that order, before the jitted call; ``prepare``'s dict
  is passed to ``fn`` as extra keyword arguments (traced).
  """
  return _wrap(fn, name, bound=True, check=check, prepare=prepare)


def function(fn: Callable, name: Optional[str] = None, *, check: Optional[Callable] = None,
             prepare: Optional[Callable] = None) -> Callable:
  """Wrap a free function; as :func:`method` with ``check(arguments)``."""
  return _wrap(fn, name or fn.__qualname__, bound=False, check=check, prepare=prepare)


def original(fn: Callable) -> Callable:
  """The unwrapped function behind a fastpath wrapper (``fn`` itself if none)."""
  return getattr(fn, "__fastpath__", fn)
