"""Hyperparameter grids: named axes, Cartesian products, zipped axes, seeds.

A :class:`Grid` is a product of *groups*; a group is one or more axes of equal
length that vary together (``zipped``), and different groups combine as a
Cartesian product (``product`` or ``*``). Constants are axes of length one.

Axis names are the model's ``hyper_names`` (``beta``, ``beta1``, ``beta2``,
``eta_enc``, ``eta_dec``, ``sigma``, ``sigma1``, ``sigma2``) plus the engine
axes :data:`ENGINE_AXES` (``lr``, ``init_scale``, ``seed``). A value may be a
scalar or, for vector hyperparameters such as a diagonal ``sigma`` of shape
(d1,), an array: the grid keeps the trailing shape.

>>> g = product(beta=[0.5, 1.0, 2.0]) * zipped(eta_enc=[1.0, 2.0], eta_dec=[0.5, 1.0])
>>> g = g * seeds(2) * constant(lr=1e-2)
>>> len(g)
12
>>> g.names
('beta', 'eta_enc', 'eta_dec', 'seed', 'lr')

:meth:`Grid.resolve` validates the grid for a model and flattens it to
arrays of length G (row-major: the last group varies fastest).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

import numpy as np
import pandas as pd

ENGINE_AXES = ("lr", "init_scale", "seed")
ENGINE_DEFAULTS = {"lr": 1e-2, "init_scale": 0.1, "seed": 0}
KNOWN_AXES = ("beta", "beta1", "beta2", "eta_enc", "eta_dec", "sigma", "sigma1",
              "sigma2") + ENGINE_AXES


def _as_values(name: str, values: Any) -> np.ndarray:
  if name == "seed":
    a = np.asarray(values)
    if a.ndim == 0:
      a = a[None]
    if a.size and (not np.issubdtype(a.dtype, np.integer) and
                   not (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))):
      raise ValueError(f"seed values must be integers, got {a.ravel()[:8]}.")
    a = a.astype(np.int64)
    if a.ndim != 1:
      raise ValueError(f"seed must be a 1-D list of integers, got shape {a.shape}.")
    if np.any(a < 0) or np.any(a >= 2 ** 32):
      raise ValueError(f"seed values must be in [0, 2**32), got {a.ravel()[:8]}.")
    return a
  try:
    a = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"axis {name!r} must hold numbers, got {values!r}.") from e
  if a.ndim == 0:
    a = a[None]
  if not np.all(np.isfinite(a)):
    raise ValueError(f"axis {name!r} has non-finite values {a.ravel()[:8]}.")
  return a


@dataclasses.dataclass(frozen=True)
class Grid:
  """A Cartesian product of groups of zipped axes.

  Build grids with :func:`product`, :func:`zipped`, :func:`constant`,
  :func:`seeds` and combine them with ``*``. ``groups`` is a tuple of groups;
  each group is a tuple of ``(name, values)`` pairs whose values share their
  leading length.
  """
  groups: tuple = ()

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(n for g in self.groups for n, _ in g)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(len(g[0][1]) for g in self.groups)

  def __len__(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64)) if self.groups else 0

  def __mul__(self, other: "Grid") -> "Grid":
    if not isinstance(other, Grid):
      return NotImplemented
    dup = set(self.names) & set(other.names)
    if dup:
      raise ValueError(f"axes {sorted(dup)} appear in both grids of a product.")
    return Grid(self.groups + other.groups)

  def with_defaults(self, **values) -> "Grid":
    """Add constants for the axes not already in the grid."""
    extra = {k: v for k, v in values.items() if k not in self.names}
    return self * constant(**extra) if extra else self

  def spec(self) -> list:
    """A JSON-able canonical description (exact float bits via ``float.hex``)."""
    out = []
    for g in self.groups:
      out.append([[n, list(v.shape), [float(x).hex() if n != "seed" else int(x)
                                      for x in v.ravel()]] for n, v in g])
    return out

  def spec_hash(self) -> str:
    """Stable hex digest of the grid's axes and values (for resume)."""
    return hashlib.sha256(json.dumps(self.spec()).encode()).hexdigest()[:16]

  def flatten(self) -> tuple[dict, pd.DataFrame]:
    """Flatten to ``(cells, coords)``: name -> array with leading length G.

    Row-major: the last group varies fastest. ``coords`` is a DataFrame with
    one row per cell; a non-scalar value is shown as a tuple.
    """
    if len(self) == 0:
      raise ValueError("the grid is empty: every axis needs at least one value.")
    idx = np.indices(self.shape).reshape(len(self.shape), -1)
    cells = {}
    for gi, g in enumerate(self.groups):
      for n, v in g:
        cells[n] = v[idx[gi]]
    return cells, coords_frame(cells)

  def resolve(self, model, defaults: Mapping[str, Any] | None = None):
    """Validate for ``model`` and flatten.

    Args:
      model: a :class:`~linvae_jax.LinearModel`; the grid's axes must be among
        ``model.hyper_names`` + :data:`ENGINE_AXES`.
      defaults: values for axes the grid does not set (engine axes default to
        :data:`ENGINE_DEFAULTS`); a model hyperparameter that is neither in
        the grid nor in ``defaults`` is an error.

    Returns:
      ``(grid, cells, coords)``: the completed grid, name -> (G, ...) arrays,
      and the coordinate DataFrame.
    """
    if len(self) == 0:
      raise ValueError("the grid is empty: give at least one axis with at least one value "
                       "(constants from defaults do not make a grid).")
    for n, v in (kv for grp in self.groups for kv in grp):  # hand-built grids skip _group
      if n != "seed" and not np.all(np.isfinite(np.asarray(v, np.float64))):
        raise ValueError(f"axis {n!r} has non-finite values {np.asarray(v).ravel()[:8]}.")
    allowed = tuple(model.hyper_names) + ENGINE_AXES
    unknown = [n for n in self.names if n not in allowed]
    if unknown:
      raise ValueError(f"unknown grid axes {unknown} for model {model.label()}; "
                       f"allowed axes are {list(allowed)}.")
    g = self.with_defaults(**{k: v for k, v in (defaults or {}).items() if k in allowed})
    g = g.with_defaults(**ENGINE_DEFAULTS)
    missing = [n for n in model.hyper_names if n not in g.names]
    if missing:
      raise ValueError(f"hyperparameters {missing} of model {model.label()} are neither grid "
                       "axes nor given as constants/defaults.")
    for n, v in (kv for grp in g.groups for kv in grp):
      if (n in model.positive_hyper or n in ("lr", "init_scale")) and np.any(v <= 0):
        raise ValueError(f"axis {n!r} must be > 0, got min {v.min():.6g}.")
    cells, coords = g.flatten()
    return g, cells, coords


def coords_frame(cells: Mapping[str, np.ndarray]) -> pd.DataFrame:
  """One row per cell; a non-scalar value (a diagonal ``sigma``) shown as a tuple."""
  cols = {}
  for n, v in cells.items():
    v = np.asarray(v)
    cols[n] = v if v.ndim == 1 else [tuple(r.ravel().tolist()) for r in v]
  return pd.DataFrame(cols)


def _group(axes: Mapping[str, Any], *, check_equal: bool) -> tuple:
  if not axes:
    raise ValueError("a grid group needs at least one axis.")
  items = []
  for n, v in axes.items():
    if n not in KNOWN_AXES:
      raise ValueError(f"unknown grid axis {n!r}; known axes are {list(KNOWN_AXES)}.")
    a = _as_values(n, v)
    if len(a) == 0:
      raise ValueError(f"axis {n!r} is empty; give at least one value.")
    items.append((n, a))
  if check_equal:
    lens = {n: len(a) for n, a in items}
    if len(set(lens.values())) > 1:
      raise ValueError(f"zipped axes must have equal lengths, got {lens}.")
  return tuple(items)


def product(**axes) -> Grid:
  """Cartesian product of independent axes, e.g. ``product(beta=[1, 2], lr=[1e-2])``."""
  return Grid(tuple(_group({n: v}, check_equal=False) for n, v in axes.items()))


def zipped(**axes) -> Grid:
  """Axes that vary together (equal lengths), e.g. ``zipped(beta=[1, 2], eta_dec=[1, .5])``."""
  return Grid((_group(axes, check_equal=True),))


def constant(**values) -> Grid:
  """Length-one axes; a vector value (e.g. diagonal ``sigma``) is one value."""
  return Grid(tuple(_group({n: np.asarray(v)[None]}, check_equal=False)
                    for n, v in values.items()))


def seeds(n_or_list) -> Grid:
  """A ``seed`` axis: ``seeds(4)`` is seeds 0..3, or an explicit list."""
  if np.ndim(n_or_list) == 0:
    n = int(n_or_list)
    if n < 1:
      raise ValueError(f"seeds(n) needs n >= 1, got {n}.")
    return product(seed=np.arange(n))
  return product(seed=n_or_list)
